//! Why a gallery file could not be read or written.

use std::path::Path;

/// A gallery file that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum GalleryError {
    /// The bytes are not a gallery of a format this build reads.
    #[error("gallery {path}: {source}")]
    Format {
        path: String,
        #[source]
        source: FormatError,
    },
    /// Reading or writing the file failed.
    #[error("gallery {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl GalleryError {
    pub(super) fn io(path: &Path, source: std::io::Error) -> Self {
        GalleryError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Why bytes are not a gallery this build reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not a facerec gallery file")]
    NotAGallery,
    #[error("gallery format version {found} is not supported (this build reads {supported})")]
    Version { found: u32, supported: u32 },
    #[error("checksum mismatch: the file is truncated or corrupt")]
    Checksum,
    #[error("unexpected end of gallery file")]
    Truncated,
    #[error("embedding width {found}, expected {expected}")]
    Width { found: usize, expected: usize },
    #[error("{0}")]
    Invalid(&'static str),
}
