//! Archive bodies of bulk jobs, read as a stream one entry at a time: at most one file
//! (at most `MAX_FILE_SIZE` bytes) is ever buffered, and a file over the limit is an entry
//! of its own (its bytes skipped, or inflated and dropped), not the end of the body.
//!
//! Tar: ustar, GNU long names and pax paths. Zip: the local headers in order (stored or
//! deflated, zip64 sizes, and data descriptors after deflated entries, as streaming zip
//! writers make them), ending at the central directory, so the body never has to be
//! spooled to find it. macOS's `__MACOSX/` and `._` resource forks are skipped.
//!
//! Both readers are written here: the `tar` and `zip` crates read from `std::io::Read`
//! (a blocking reader, or the whole body spooled), not entry by entry from the request's
//! async body with a bound on each file.

mod input;
mod tar;
mod zip;

use bytes::Bytes;
use futures_util::Stream;

pub use input::{ArchiveError, Entry};
pub use tar::TarReader;
pub use zip::ZipReader;

/// A tar or zip body, read entry by entry alike.
pub enum Archive<S> {
    Tar(TarReader<S>),
    Zip(ZipReader<S>),
}

impl<S, E> Archive<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// The next file, or `None` at the end of the archive.
    pub async fn next_entry(&mut self) -> Result<Option<Entry>, ArchiveError> {
        match self {
            Archive::Tar(r) => r.next_entry().await,
            Archive::Zip(r) => r.next_entry().await,
        }
    }

    /// `"tar"` or `"zip"`, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Archive::Tar(_) => "tar",
            Archive::Zip(_) => "zip",
        }
    }
}
