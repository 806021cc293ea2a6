//! Failures of the engine as a whole; the per-image kinds are the contract's.

pub use facerec_contract::error::{ErrorKind, ImageError};
use facerec_contract::gallery::GalleryError;

/// Failures of the engine as a whole (models, gallery files), as opposed to one image.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("model file {path}: {message}")]
    Model { path: String, message: String },
    #[error("no usable compute device: {0}")]
    Device(String),
    #[error(transparent)]
    Gallery(#[from] GalleryError),
    #[error("inference failed: {0}")]
    Inference(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
