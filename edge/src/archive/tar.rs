//! Tar: ustar names with prefixes, GNU long names and pax paths.

use bytes::Bytes;
use futures_util::Stream;

use super::input::{ArchiveError, Entry, Input};

/// Reads a tar stream entry by entry, buffering at most one file (≤ `max_file` bytes).
/// Understands ustar names with prefixes, GNU long names (`L`) and pax `path` records;
/// directories, links and other entries are skipped.
pub struct TarReader<S> {
    input: Input<S>,
    max_file: u64,
    long_name: Option<String>,
}

impl<S, E> TarReader<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(stream: S, max_file: u64) -> Self {
        TarReader {
            input: Input::new(stream),
            max_file,
            long_name: None,
        }
    }

    /// The next file, or `None` at the end of the archive.
    pub async fn next_entry(&mut self) -> Result<Option<Entry>, ArchiveError> {
        loop {
            if !self.input.fill(512).await? {
                return if self.input.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ArchiveError::Truncated)
                };
            }
            let header = self.input.buf.split_to(512);
            if header.iter().all(|&b| b == 0) {
                return Ok(None); // end-of-archive block
            }
            let stored: u32 =
                octal(&header[148..156]).ok_or(ArchiveError::Header("checksum"))? as u32;
            let sum: u32 = header
                .iter()
                .enumerate()
                .map(|(i, &b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        u32::from(b)
                    }
                })
                .sum();
            if sum != stored {
                return Err(ArchiveError::Header("checksum mismatch"));
            }
            let size = size_field(&header[124..136]).ok_or(ArchiveError::Header("size"))?;
            let padded = size.div_ceil(512) * 512;
            let kind = header[156];
            let mut name = cstr(&header[0..100]);
            if &header[257..262] == b"ustar" {
                let prefix = cstr(&header[345..500]);
                if !prefix.is_empty() {
                    name = format!("{prefix}/{name}");
                }
            }
            match kind {
                b'L' | b'x' => {
                    // GNU long name, or a pax header: both name the next entry.
                    if size > 64 * 1024 {
                        return Err(ArchiveError::Header("oversized extended header"));
                    }
                    let data = self.input.take(size as usize).await?;
                    self.input.skip(padded - size).await?;
                    self.long_name = if kind == b'L' {
                        Some(cstr(&data))
                    } else {
                        pax_path(&data).or(self.long_name.take())
                    };
                }
                b'0' | 0 | b'7' => {
                    let name = self.long_name.take().unwrap_or(name);
                    if size > self.max_file {
                        self.input.skip(padded).await?;
                        return Ok(Some(Entry::TooLarge { name, size }));
                    }
                    let bytes = self.input.take(size as usize).await?;
                    self.input.skip(padded - size).await?;
                    return Ok(Some(Entry::File { name, bytes }));
                }
                _ => {
                    self.long_name = None;
                    self.input.skip(padded).await?;
                }
            }
        }
    }
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn octal(b: &[u8]) -> Option<u64> {
    let s = cstr(b);
    let s = s.trim_matches(|c: char| c == ' ' || c == '\0');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// The size field: octal, or GNU base-256 for large files.
fn size_field(b: &[u8]) -> Option<u64> {
    if b[0] & 0x80 != 0 {
        return b[1..].iter().try_fold(0u64, |acc, &x| {
            acc.checked_mul(256).map(|v| v | u64::from(x))
        });
    }
    octal(b)
}

/// The `path` record of a pax extended header (`"<len> path=<value>\n"` records).
fn pax_path(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    text.lines().find_map(|rec| {
        let (_, kv) = rec.split_once(' ')?;
        kv.strip_prefix("path=").map(str::to_string)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::input::tests::stream;

    fn header(name: &str, size: usize, kind: u8) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    fn entry(out: &mut Vec<u8>, name: &str, data: &[u8], kind: u8) {
        out.extend(header(name, data.len(), kind));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    #[tokio::test]
    async fn reads_files_skips_others_and_bounds_sizes() {
        let mut tar = Vec::new();
        entry(&mut tar, "dir/", b"", b'5');
        entry(&mut tar, "dir/a.jpg", b"hello", b'0');
        let long = format!("{}/b.png", "x".repeat(120));
        entry(
            &mut tar,
            "././@LongLink",
            format!("{long}\0").as_bytes(),
            b'L',
        );
        entry(&mut tar, "truncated-name", &[7u8; 600], b'0');
        entry(&mut tar, "big.jpg", &[1u8; 3000], b'0');
        entry(&mut tar, "pax", b"20 path=c/pax.gif\n", b'x');
        entry(&mut tar, "short", b"gif", b'0');
        tar.extend([0u8; 1024]);
        for chunk in [1, 7, 512, 100_000] {
            let mut r = TarReader::new(stream(tar.clone(), chunk), 1000);
            let mut got = Vec::new();
            while let Some(e) = r.next_entry().await.expect("valid tar") {
                got.push(match e {
                    Entry::File { name, bytes } => format!("{name}:{}", bytes.len()),
                    Entry::TooLarge { name, size } => format!("{name}:too large {size}"),
                });
            }
            assert_eq!(
                got,
                vec![
                    "dir/a.jpg:5".to_string(),
                    format!("{long}:600"),
                    "big.jpg:too large 3000".into(),
                    "c/pax.gif:3".into()
                ]
            );
        }
    }

    #[tokio::test]
    async fn rejects_truncated_and_corrupt_archives() {
        let mut tar = Vec::new();
        entry(&mut tar, "a.jpg", &[1u8; 700], b'0');
        let mut r = TarReader::new(stream(tar[..800].to_vec(), 64), 10_000);
        assert!(matches!(r.next_entry().await, Err(ArchiveError::Truncated)));
        let mut bad = tar.clone();
        bad[0] ^= 1;
        let mut r = TarReader::new(stream(bad, 64), 10_000);
        assert!(matches!(r.next_entry().await, Err(ArchiveError::Header(_))));
        let mut r = TarReader::new(stream(b"not a tar at all".to_vec(), 64), 10_000);
        assert!(r.next_entry().await.is_err());
    }
}
