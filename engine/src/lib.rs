//! facerec's recognition engine: decoding, face detection, landmarks, alignment,
//! embedding and gallery matching, on Burn (wgpu, or the `flex` CPU backend) or
//! onnxruntime (`net::Network` is the seam).
//!
//! The same library backs the offline CLI (`facerec enroll|identify|verify|embed`), the
//! worker that serves queued requests, and the edge.

pub mod align;
pub mod backend;
pub mod decode;
pub mod detect;
pub mod error;
pub mod gpu;
pub mod matcher;
pub mod models;
pub mod net;
pub mod onnxruntime;
pub mod pipeline;
pub mod prep;
pub mod quality;
pub mod report;
pub mod tune;

/// The gallery file and its search, from the contract.
pub use facerec_contract::gallery;
/// The same-person rule, from the contract.
pub use facerec_contract::threshold;

pub use backend::{BackendChoice, BackendKind};
pub use decode::DecodeLimits;
pub use error::{EngineError, ErrorKind, ImageError};
pub use gallery::{Gallery, IdentitySummary, Match};
pub use matcher::{Matcher, SearchChoice};
pub use models::{Precision, Recognizer};
pub use pipeline::{Analysis, Detector, Engine, EngineConfig, Face, StageTimes};
pub use report::{FaceReport, ImageReport};
pub use threshold::Threshold;
