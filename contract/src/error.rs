//! Per-image errors: every failure has a machine-readable kind, so callers (CLI, edge,
//! worker) can report it without parsing messages.

use std::fmt;

/// Why one image could not be processed. The string forms are part of the public
/// contract (`"kind"` in JSON answers and result messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The input had zero bytes.
    Empty,
    /// The bytes are not in any image format we recognise (checked by magic bytes).
    NotAnImage,
    /// A recognised image format that this build cannot decode (e.g. TIFF, AVIF).
    UnsupportedFormat,
    /// The image format was recognised but the data is corrupt or truncated.
    Corrupt,
    /// Pixel count or decoded size over the configured limit (decompression bomb guard).
    TooLarge,
    /// The image decodes but cannot be used (e.g. smaller than a face can be).
    Unusable,
    /// Reading the input failed (file missing, permission denied, ...).
    Io,
    /// Model inference failed for this image's batch.
    Inference,
    /// The request named a collection that does not exist (deleted since it was sent).
    UnknownCollection,
}

impl ErrorKind {
    /// The contract string of this kind, as used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Empty => "empty",
            ErrorKind::NotAnImage => "not_an_image",
            ErrorKind::UnsupportedFormat => "unsupported_format",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Unusable => "unusable",
            ErrorKind::Io => "io",
            ErrorKind::Inference => "inference",
            ErrorKind::UnknownCollection => "unknown_collection",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure to process one image: a kind plus a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{kind}: {message}")]
pub struct ImageError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ImageError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}
