//! What both readers share: the buffered body ([`Input`]), the entries they yield and
//! their errors.

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("truncated archive")]
    Truncated,
    #[error("malformed archive header: {0}")]
    Header(&'static str),
    #[error("unsupported archive: {0}")]
    Unsupported(String),
    #[error("reading the body: {0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
}

/// A byte stream with a buffer in front.
pub(super) struct Input<S> {
    stream: S,
    pub(super) buf: BytesMut,
}

impl<S, E> Input<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub(super) fn new(stream: S) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Ensures `n` bytes are buffered; false at a clean end of stream.
    pub(super) async fn fill(&mut self, n: usize) -> Result<bool, ArchiveError> {
        while self.buf.len() < n {
            match self.stream.next().await {
                Some(Ok(b)) => self.buf.extend_from_slice(&b),
                Some(Err(e)) => return Err(ArchiveError::Body(e.into())),
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Discards `n` bytes without keeping more than one frame.
    pub(super) async fn skip(&mut self, mut n: u64) -> Result<(), ArchiveError> {
        while n > 0 {
            if self.buf.is_empty() && !self.fill(1).await? {
                return Err(ArchiveError::Truncated);
            }
            let take = n.min(self.buf.len() as u64) as usize;
            self.buf.advance(take);
            n -= take as u64;
        }
        Ok(())
    }

    pub(super) async fn take(&mut self, n: usize) -> Result<Bytes, ArchiveError> {
        if !self.fill(n).await? {
            return Err(ArchiveError::Truncated);
        }
        Ok(self.buf.split_to(n).freeze())
    }
}

/// One file of an archive, or the reason it was skipped.
#[derive(Debug)]
pub enum Entry {
    File {
        name: String,
        bytes: Bytes,
    },
    /// A regular file over the size limit: its bytes were skipped, never buffered.
    TooLarge {
        name: String,
        size: u64,
    },
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// `bytes` as a request body arriving in `chunk`-byte frames.
    pub(in crate::archive) fn stream(
        bytes: Vec<u8>,
        chunk: usize,
    ) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        let chunks: Vec<Result<Bytes, String>> = bytes
            .chunks(chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures_util::stream::iter(chunks)
    }
}
