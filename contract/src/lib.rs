//! facerec's contract: the types every tier agrees on, with no inference and no runtime.
//!
//! The edge, the workers, the scaler and the CLI all speak these: the per-image error
//! kinds ([`ErrorKind`]), the JSON reports ([`ImageReport`]), the gallery file
//! ([`Gallery`]), the queue messages and the object keys they name ([`message`]), the
//! same-person rule ([`Threshold`]) and the magic-byte check of an upload ([`format`]).
//! It depends on neither Burn nor tokio, so the tiers that do no inference build without
//! the engine.

pub mod error;
pub mod format;
pub mod gallery;
pub mod grouping;
pub mod message;
pub mod report;
pub mod threshold;

pub use error::{ErrorKind, ImageError};
pub use gallery::{FormatError, Gallery, GalleryError, IdentitySummary, Match};
pub use message::{DeadLetter, MessageError, Request, ResultMessage};
pub use report::{FaceQuality, FaceReport, ImageReport};
pub use threshold::{Threshold, ThresholdError};
