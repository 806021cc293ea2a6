//! The gallery file: `FRGALLRY`, a version, the model id, the names, the faces' owners,
//! sizes and embeddings, and a sha256 of it all; written atomically, read with a typed
//! reason for every way a file can be wrong.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;

use sha2::{Digest, Sha256};

use super::error::{FormatError, GalleryError};
use super::{DIM, GENERATIONS, Gallery, dot};

const MAGIC: &[u8; 8] = b"FRGALLRY";
/// Version 2 added each face's size (`sides`); version 1 files load with sizes unknown.
const VERSION: u32 = 2;

impl Gallery {
    /// Serialises the gallery (see `load` for the format).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(64 + self.len() * (DIM + 2) * 4);
        put_str(&mut body, &self.model_id);
        body.extend_from_slice(&(DIM as u32).to_le_bytes());
        body.extend_from_slice(&(self.names.len() as u32).to_le_bytes());
        for n in &self.names {
            put_str(&mut body, n);
        }
        body.extend_from_slice(&(self.len() as u64).to_le_bytes());
        for c in &self.chunks {
            for &o in &c.owner {
                body.extend_from_slice(&o.to_le_bytes());
            }
        }
        for c in &self.chunks {
            for &side in &c.sides {
                body.extend_from_slice(&side.to_le_bytes());
            }
        }
        for c in &self.chunks {
            for &v in &c.matrix {
                body.extend_from_slice(&v.to_le_bytes());
            }
        }
        let mut out = Vec::with_capacity(body.len() + 48);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(&Sha256::digest(&body));
        out
    }

    /// Parses a gallery file: `FRGALLRY`, version u32, model id, dim u32, names, face
    /// count u64, owners u32 each, face sides f32 each (from version 2), embeddings f32
    /// each (all little-endian), then the sha256 of everything between the version and
    /// the checksum.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FormatError> {
        if bytes.len() < 12 + 32 || &bytes[..8] != MAGIC {
            return Err(FormatError::NotAGallery);
        }
        let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if version != VERSION && version != 1 {
            return Err(FormatError::Version {
                found: version,
                supported: VERSION,
            });
        }
        let (body, sum) = bytes[12..].split_at(bytes.len() - 12 - 32);
        if Sha256::digest(body).as_slice() != sum {
            return Err(FormatError::Checksum);
        }
        let mut r = Reader { buf: body, pos: 0 };
        let model_id = r.string()?;
        let dim = r.u32()? as usize;
        if dim != DIM {
            return Err(FormatError::Width {
                found: dim,
                expected: DIM,
            });
        }
        let n_names = r.u32()? as usize;
        let names = (0..n_names)
            .map(|_| r.string().map(std::sync::Arc::<str>::from))
            .collect::<Result<Vec<_>, _>>()?;
        let n =
            usize::try_from(r.u64()?).map_err(|_| FormatError::Invalid("face count overflows"))?;
        let owner = (0..n).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
        if owner.iter().any(|&o| o as usize >= names.len()) {
            return Err(FormatError::Invalid("a face refers to a missing identity"));
        }
        let sides = if version >= 2 {
            (0..n).map(|_| r.f32()).collect::<Result<Vec<_>, _>>()?
        } else {
            vec![0.0; n]
        };
        let matrix = (0..n * DIM)
            .map(|_| r.f32())
            .collect::<Result<Vec<_>, _>>()?;
        if r.pos != body.len() {
            return Err(FormatError::Invalid("trailing bytes after the embeddings"));
        }
        let mut gallery = Self {
            model_id,
            index: super::index_of(&names),
            names,
            ..Self::default()
        };
        for (r, e) in matrix.chunks_exact(DIM).enumerate() {
            gallery.push_row(owner[r], e, dot(e, e), sides[r]);
        }
        gallery.generation = GENERATIONS.fetch_add(1, Ordering::Relaxed);
        Ok(gallery)
    }

    /// Loads a gallery file.
    pub fn load(path: &Path) -> Result<Self, GalleryError> {
        let bytes = fs::read(path).map_err(|e| GalleryError::io(path, e))?;
        Self::from_bytes(&bytes).map_err(|source| GalleryError::Format {
            path: path.display().to_string(),
            source,
        })
    }

    /// Saves atomically: written to a temporary file beside `path`, synced, renamed over
    /// it and the directory synced, so a reader never sees a half-written gallery and a
    /// crash at any point leaves the old gallery or the new one.
    pub fn save(&self, path: &Path) -> Result<(), GalleryError> {
        self.write_atomically(path)
            .map_err(|e| GalleryError::io(path, e))
    }

    fn write_atomically(&self, path: &Path) -> std::io::Result<()> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let file_name = path
            .file_name()
            .map(|f| f.to_string_lossy())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&self.to_bytes())?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // The rename itself survives a crash only once the directory is on disk.
        fs::File::open(dir)?.sync_all()?;
        Ok(())
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], FormatError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or(FormatError::Truncated)?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u32(&mut self) -> Result<u32, FormatError> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, FormatError> {
        self.array().map(u64::from_le_bytes)
    }
    fn f32(&mut self) -> Result<f32, FormatError> {
        self.array().map(f32::from_le_bytes)
    }
    fn string(&mut self) -> Result<String, FormatError> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| FormatError::Invalid("a name is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::vector;
    use super::*;
    use crate::gallery::IdentitySummary;

    #[test]
    fn save_load_round_trip_and_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("g.bin");
        let mut g = Gallery::new("model-x");
        g.add("alice", &vector(1));
        g.add("bob", &vector(2));
        g.add("alice", &vector(3));
        g.save(&path).expect("save");
        let back = Gallery::load(&path).expect("load");
        assert_eq!(back.model_id(), "model-x");
        assert_eq!(
            back.identities(),
            vec![
                IdentitySummary {
                    name: "alice".into(),
                    faces: 2
                },
                IdentitySummary {
                    name: "bob".into(),
                    faces: 1
                },
            ]
        );
        let mut back = back;
        assert_eq!(back.remove("alice"), 2);
        assert_eq!(back.remove("nobody"), 0);
        let m = back.nearest(&[&vector(3)]).remove(0).expect("bob left");
        assert_eq!(m.name, "bob");
    }

    #[test]
    fn corrupt_files_are_rejected_with_reasons() {
        let mut g = Gallery::new("m");
        g.add("a", &vector(1));
        let bytes = g.to_bytes();
        assert_eq!(
            Gallery::from_bytes(b"hello").unwrap_err(),
            FormatError::NotAGallery
        );
        let mut flipped = bytes.clone();
        flipped[40] ^= 1;
        assert_eq!(
            Gallery::from_bytes(&flipped).unwrap_err(),
            FormatError::Checksum
        );
        let mut future = bytes.clone();
        future[8] = 9;
        let err = Gallery::from_bytes(&future).unwrap_err();
        assert_eq!(
            err,
            FormatError::Version {
                found: 9,
                supported: VERSION
            }
        );
        assert!(err.to_string().contains("version 9"), "{err}");
        assert!(Gallery::from_bytes(&bytes[..bytes.len() - 5]).is_err());
    }

    #[test]
    fn face_sizes_round_trip_and_version_1_files_load_without_them() {
        let mut g = Gallery::new("m");
        g.add_face("a", &vector(1), 120.0);
        g.add_face("b", &vector(2), 40.0);
        let back = Gallery::from_bytes(&g.to_bytes()).expect("round trip");
        let found = back.nearest(&[&vector(2)]);
        assert_eq!(
            found[0].as_ref().map(|m| (m.name.as_str(), m.side)),
            Some(("b", 40.0))
        );
        // The same gallery as version 1 wrote it: no sides, checksum over the rest.
        let mut body = Vec::new();
        put_str(&mut body, "m");
        body.extend_from_slice(&(DIM as u32).to_le_bytes());
        body.extend_from_slice(&2u32.to_le_bytes());
        put_str(&mut body, "a");
        put_str(&mut body, "b");
        body.extend_from_slice(&2u64.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        body.extend_from_slice(&1u32.to_le_bytes());
        for v in vector(1).into_iter().chain(vector(2)) {
            body.extend_from_slice(&v.to_le_bytes());
        }
        let mut v1 = MAGIC.to_vec();
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&body);
        v1.extend_from_slice(&Sha256::digest(&body));
        let old = Gallery::from_bytes(&v1).expect("version 1 loads");
        let found = old.nearest(&[&vector(1)]);
        assert_eq!(
            found[0].as_ref().map(|m| (m.name.as_str(), m.side)),
            Some(("a", 0.0))
        );
        assert_eq!(old.identities().len(), 2);
    }
}
