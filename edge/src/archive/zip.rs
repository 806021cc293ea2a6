//! Zip: local headers in order, stored or deflated, zip64 sizes and data descriptors.

use bytes::{Buf, Bytes, BytesMut};
use futures_util::Stream;

use super::input::{ArchiveError, Entry, Input};

/// Most bytes one deflated entry of unknown size may inflate to before the body is
/// refused (a zip bomb); an entry past `MAX_FILE_SIZE` but below this is `TooLarge`.
const MAX_INFLATE: u64 = 1 << 30;

/// Reads a zip stream entry by entry through its local headers (see the module notes).
pub struct ZipReader<S> {
    input: Input<S>,
    max_file: u64,
    done: bool,
}

const LOCAL: &[u8; 4] = b"PK\x03\x04";
const CENTRAL: &[u8; 4] = b"PK\x01\x02";
const END: &[u8; 4] = b"PK\x05\x06";
const DESCRIPTOR: &[u8; 4] = b"PK\x07\x08";

fn u16_at(b: &[u8], i: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[i], b[i + 1]]))
}

fn u32_at(b: &[u8], i: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]))
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"))
}

impl<S, E> ZipReader<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(stream: S, max_file: u64) -> Self {
        Self {
            input: Input::new(stream),
            max_file,
            done: false,
        }
    }

    /// The next file, or `None` at the central directory (the end of the entries).
    pub async fn next_entry(&mut self) -> Result<Option<Entry>, ArchiveError> {
        loop {
            if self.done {
                return Ok(None);
            }
            if !self.input.fill(4).await? {
                return Err(ArchiveError::Truncated);
            }
            let sig = &self.input.buf[..4];
            if sig == CENTRAL || sig == END {
                self.done = true;
                return Ok(None);
            }
            if sig != LOCAL {
                return Err(ArchiveError::Header("not a zip local file header"));
            }
            let h = self.input.take(30).await?;
            let flags = u16_at(&h, 6);
            let method = u16_at(&h, 8);
            let (mut comp, mut size) = (u32_at(&h, 18), u32_at(&h, 22));
            let name = self.input.take(u16_at(&h, 26) as usize).await?;
            let name = String::from_utf8_lossy(&name).into_owned();
            let extra = self.input.take(u16_at(&h, 28) as usize).await?;
            let zip64 = zip64_sizes(&extra, &mut size, &mut comp);
            let descriptor = flags & 0x08 != 0;
            if flags & 0x01 != 0 {
                return Err(ArchiveError::Unsupported(format!("{name} is encrypted")));
            }
            let skip = name.ends_with('/')
                || name.starts_with("__MACOSX/")
                || name.rsplit('/').next().is_some_and(|f| f.starts_with("._"));
            let entry = match method {
                0 if descriptor => {
                    return Err(ArchiveError::Unsupported(format!(
                        "{name}: a stored entry with its size after the data (a streamed zip); \
                         deflate it, or send a tar"
                    )));
                }
                0 if size > self.max_file || skip => {
                    self.input.skip(comp).await?;
                    Entry::TooLarge { name, size }
                }
                0 => {
                    let bytes = self.input.take(comp as usize).await?;
                    Entry::File { name, bytes }
                }
                8 if !descriptor && (size > self.max_file || skip) => {
                    self.input.skip(comp).await?;
                    Entry::TooLarge { name, size }
                }
                8 => {
                    let (bytes, used, out) = self.inflate(!skip).await?;
                    if !descriptor && used < comp {
                        self.input.skip(comp - used).await?;
                    }
                    match bytes {
                        Some(bytes) => Entry::File { name, bytes },
                        None => Entry::TooLarge {
                            name,
                            size: if descriptor { out } else { size },
                        },
                    }
                }
                m => {
                    if descriptor {
                        return Err(ArchiveError::Unsupported(format!(
                            "{name}: compression method {m} with its size after the data"
                        )));
                    }
                    self.input.skip(comp).await?;
                    return Err(ArchiveError::Unsupported(format!(
                        "{name}: compression method {m} (only stored and deflate)"
                    )));
                }
            };
            if descriptor {
                self.skip_descriptor(zip64).await?;
            }
            if skip {
                continue;
            }
            return Ok(Some(entry));
        }
    }

    /// Inflates one raw deflate stream from the input: its bytes (when `keep` and at most
    /// `max_file`), the compressed bytes it used, and the inflated size.
    async fn inflate(&mut self, keep: bool) -> Result<(Option<Bytes>, u64, u64), ArchiveError> {
        let mut z = flate2::Decompress::new(false);
        let mut out = keep.then(BytesMut::new);
        let mut scratch = vec![0u8; 64 * 1024];
        loop {
            if self.input.buf.is_empty() && !self.input.fill(1).await? {
                return Err(ArchiveError::Truncated);
            }
            let (in0, out0) = (z.total_in(), z.total_out());
            let status = z
                .decompress(&self.input.buf, &mut scratch, flate2::FlushDecompress::None)
                .map_err(|_| ArchiveError::Header("corrupt deflate data"))?;
            let used = (z.total_in() - in0) as usize;
            let made = (z.total_out() - out0) as usize;
            self.input.buf.advance(used);
            if z.total_out() > self.max_file {
                out = None;
            }
            if let Some(o) = out.as_mut() {
                o.extend_from_slice(&scratch[..made]);
            }
            if z.total_out() > MAX_INFLATE {
                return Err(ArchiveError::Unsupported(format!(
                    "an entry inflates past {MAX_INFLATE} bytes"
                )));
            }
            match status {
                flate2::Status::StreamEnd => {
                    return Ok((out.map(BytesMut::freeze), z.total_in(), z.total_out()));
                }
                _ if used == 0 && made == 0 => {
                    // Needs more input than is buffered.
                    let have = self.input.buf.len();
                    if !self.input.fill(have + 1).await? {
                        return Err(ArchiveError::Truncated);
                    }
                }
                _ => {}
            }
        }
    }

    /// The data descriptor after an entry: an optional signature, the CRC and both sizes
    /// (8 bytes each in zip64).
    async fn skip_descriptor(&mut self, zip64: bool) -> Result<(), ArchiveError> {
        if !self.input.fill(4).await? {
            return Err(ArchiveError::Truncated);
        }
        if &self.input.buf[..4] == DESCRIPTOR {
            self.input.skip(4).await?;
        }
        self.input.skip(if zip64 { 20 } else { 12 }).await
    }
}

/// Reads the zip64 extended-information extra field into the sizes that are `0xFFFFFFFF`
/// in the local header; whether there was one.
fn zip64_sizes(extra: &[u8], size: &mut u64, comp: &mut u64) -> bool {
    let mut i = 0;
    while i + 4 <= extra.len() {
        let (id, len) = (u16_at(extra, i), u16_at(extra, i + 2) as usize);
        let data = &extra[(i + 4).min(extra.len())..(i + 4 + len).min(extra.len())];
        if id == 0x0001 {
            let mut j = 0;
            for field in [&mut *size, &mut *comp] {
                if *field == 0xFFFF_FFFF && j + 8 <= data.len() {
                    *field = u64_at(data, j);
                    j += 8;
                }
            }
            return true;
        }
        i += 4 + len;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::input::tests::stream;

    /// A local header (no descriptor: sizes given) or, with `descriptor`, zeros and the
    /// descriptor after the data, as streaming writers do.
    fn zip_entry(out: &mut Vec<u8>, name: &str, data: &[u8], deflate: bool, descriptor: bool) {
        let body = if deflate {
            use std::io::Write;
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).expect("deflate");
            e.finish().expect("deflate")
        } else {
            data.to_vec()
        };
        out.extend_from_slice(LOCAL);
        out.extend_from_slice(&20u16.to_le_bytes());
        out.extend_from_slice(&(if descriptor { 8u16 } else { 0 }).to_le_bytes());
        out.extend_from_slice(&(if deflate { 8u16 } else { 0 }).to_le_bytes());
        out.extend_from_slice(&[0; 8]); // time, date, crc (unchecked)
        let (c, u) = if descriptor {
            (0, 0)
        } else {
            (body.len() as u32, data.len() as u32)
        };
        out.extend_from_slice(&c.to_le_bytes());
        out.extend_from_slice(&u.to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&body);
        if descriptor {
            out.extend_from_slice(DESCRIPTOR);
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        }
    }

    #[tokio::test]
    async fn reads_stored_deflated_and_streamed_zip_entries() {
        let mut zip = Vec::new();
        zip_entry(&mut zip, "dir/", b"", false, false);
        zip_entry(&mut zip, "dir/a.jpg", b"hello", false, false);
        zip_entry(&mut zip, "b.png", &[7u8; 600], true, false);
        zip_entry(&mut zip, "__MACOSX/dir/._a.jpg", b"fork", false, false);
        zip_entry(&mut zip, "big.jpg", &[1u8; 3000], false, false);
        zip_entry(&mut zip, "streamed.gif", &[3u8; 900], true, true);
        zip_entry(&mut zip, "big-streamed.jpg", &[5u8; 5000], true, true);
        zip_entry(&mut zip, "big-deflated.jpg", &[6u8; 4000], true, false);
        zip_entry(&mut zip, "last.jpg", b"end", true, true);
        zip.extend_from_slice(CENTRAL);
        zip.extend_from_slice(&[0; 60]);
        for chunk in [1, 7, 512, 100_000] {
            let mut r = ZipReader::new(stream(zip.clone(), chunk), 1000);
            let mut got = Vec::new();
            while let Some(e) = r.next_entry().await.expect("valid zip") {
                got.push(match e {
                    Entry::File { name, bytes } => format!("{name}:{}", bytes.len()),
                    Entry::TooLarge { name, size } => format!("{name}:too large {size}"),
                });
            }
            assert_eq!(
                got,
                [
                    "dir/a.jpg:5",
                    "b.png:600",
                    "big.jpg:too large 3000",
                    "streamed.gif:900",
                    "big-streamed.jpg:too large 5000",
                    "big-deflated.jpg:too large 4000",
                    "last.jpg:3",
                ],
                "chunk {chunk}"
            );
        }
    }

    #[tokio::test]
    async fn rejects_truncated_and_unreadable_zips() {
        let mut zip = Vec::new();
        zip_entry(&mut zip, "a.jpg", &[1u8; 700], true, false);
        let cut = zip.len() - 10;
        let mut r = ZipReader::new(stream(zip[..cut].to_vec(), 64), 10_000);
        assert!(matches!(r.next_entry().await, Err(ArchiveError::Truncated)));
        let mut streamed_stored = Vec::new();
        zip_entry(&mut streamed_stored, "a.jpg", b"abc", false, true);
        let mut r = ZipReader::new(stream(streamed_stored, 64), 10_000);
        assert!(matches!(
            r.next_entry().await,
            Err(ArchiveError::Unsupported(_))
        ));
        let mut r = ZipReader::new(stream(b"not a zip at all".to_vec(), 64), 10_000);
        assert!(matches!(r.next_entry().await, Err(ArchiveError::Header(_))));
    }
}
