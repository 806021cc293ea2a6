//! The blob-store seam: uploads in the input bucket, results (and the gallery) in the
//! output bucket. Implementations: a filesystem store with atomic writes (the embedded
//! default) and S3 (`crate::aws::S3Store`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use crate::SeamError;

/// The two buckets of the design.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    In,
    Out,
}

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Reads an object; a `NotFound` error (`SeamError::is_not_found`) when it does not exist.
    async fn get(&self, bucket: Bucket, key: &str) -> Result<Bytes, SeamError>;
    /// Writes (replaces) an object atomically.
    async fn put(&self, bucket: Bucket, key: &str, body: Bytes) -> Result<(), SeamError>;
    /// Writes an object only if none exists under `key`; returns false (writing nothing)
    /// when one does. This is what makes results idempotent under redelivery.
    async fn put_if_absent(
        &self,
        bucket: Bucket,
        key: &str,
        body: Bytes,
    ) -> Result<bool, SeamError>;
    /// Deletes an object; deleting a missing object is not an error.
    async fn delete(&self, bucket: Bucket, key: &str) -> Result<(), SeamError>;
    /// A token that changes whenever the object changes (ETag, mtime+size); `None` when
    /// it does not exist.
    async fn version(&self, bucket: Bucket, key: &str) -> Result<Option<String>, SeamError>;
    /// Checks that the store is reachable (readiness).
    async fn ping(&self) -> Result<(), SeamError>;
    /// The objects whose keys start with `prefix` (a "folder", e.g. `batches/`): key and
    /// last write, in no particular order.
    async fn list(&self, bucket: Bucket, prefix: &str) -> Result<Vec<Listed>, SeamError>;
}

/// One object of `BlobStore::list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub modified: SystemTime,
}

/// Objects as files under `root/in/` and `root/out/`. Writes go to a temporary file in
/// the same directory and are renamed into place, so readers never see a partial object.
pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, SeamError> {
        let root = root.into();
        for b in ["in", "out"] {
            std::fs::create_dir_all(root.join(b))
                .map_err(|e| SeamError::permanent(format!("{}: {e}", root.join(b).display())))?;
        }
        Ok(Self { root })
    }

    fn path(&self, bucket: Bucket, key: &str) -> Result<PathBuf, SeamError> {
        let safe = !key.is_empty()
            && !key.starts_with('/')
            && key.split('/').all(|part| {
                !part.is_empty()
                    && part != "."
                    && part != ".."
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            });
        if !safe {
            return Err(SeamError::permanent(format!("invalid object key {key:?}")));
        }
        Ok(self.bucket_dir(bucket).join(key))
    }

    fn bucket_dir(&self, bucket: Bucket) -> PathBuf {
        self.root.join(match bucket {
            Bucket::In => "in",
            Bucket::Out => "out",
        })
    }
}

/// What one retention sweep of an `FsStore` found and removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepStats {
    /// Bytes and objects left per bucket (`[in, out]`), the gallery included.
    pub bytes: [u64; 2],
    pub objects: [u64; 2],
    /// Objects removed per bucket for being older than the retention.
    pub expired: [u64; 2],
}

impl FsStore {
    /// Removes uploads (`in/uploads/`), results (`out/results/`) and bulk-job manifests
    /// (`out/batches/`) last written more than `retention` ago, and temporary files of
    /// writes that never finished; counts what is left. The gallery and anything else is
    /// only counted. Blocking: run it off the async threads.
    pub fn sweep(&self, retention: Duration) -> SweepStats {
        let now = SystemTime::now();
        let mut stats = SweepStats::default();
        let expiring: [(&str, &[&str]); 2] =
            [("in", &["uploads"]), ("out", &["results", "batches"])];
        for (i, (bucket, prefixes)) in expiring.iter().enumerate() {
            let root = self.root.join(bucket);
            let mut stack = vec![root.clone()];
            while let Some(dir) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for e in entries.flatten() {
                    let Ok(meta) = e.metadata() else { continue };
                    let path = e.path();
                    if meta.is_dir() {
                        stack.push(path);
                        continue;
                    }
                    let age = meta
                        .modified()
                        .ok()
                        .and_then(|t| now.duration_since(t).ok())
                        .unwrap_or_default();
                    let temp = e.file_name().to_string_lossy().starts_with(".tmp-");
                    let expires = prefixes.iter().any(|p| path.starts_with(root.join(p))) || temp;
                    if expires && age > retention && std::fs::remove_file(&path).is_ok() {
                        stats.expired[i] += 1;
                        continue;
                    }
                    stats.bytes[i] += meta.len();
                    stats.objects[i] += 1;
                }
            }
        }
        stats
    }
}

fn io_err(path: &Path, e: std::io::Error) -> SeamError {
    if e.kind() == std::io::ErrorKind::NotFound {
        SeamError::not_found(path.display().to_string())
    } else {
        SeamError::transient(format!("{}: {e}", path.display()))
    }
}

/// Writes `body` to a fresh temporary file next to `path` and returns its path.
fn write_temp(path: &Path, body: &[u8]) -> Result<PathBuf, SeamError> {
    use std::io::Write;
    let dir = path.parent().expect("object paths have a parent");
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
    let mut f = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    f.write_all(body)
        .and_then(|()| f.sync_data())
        .map_err(|e| io_err(&tmp, e))?;
    Ok(tmp)
}

/// Makes a rename or link in `path`'s directory durable: fsync of the directory, so after
/// a crash (power loss, not just `kill -9`) the new name is there or the old one is.
fn sync_dir(path: &Path) -> Result<(), SeamError> {
    let dir = path.parent().expect("object paths have a parent");
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SeamError> + Send + 'static,
) -> Result<T, SeamError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SeamError::transient(format!("store task failed: {e}")))?
}

#[async_trait]
impl BlobStore for FsStore {
    async fn get(&self, bucket: Bucket, key: &str) -> Result<Bytes, SeamError> {
        let path = self.path(bucket, key)?;
        match tokio::fs::read(&path).await {
            Ok(b) => Ok(Bytes::from(b)),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    async fn put(&self, bucket: Bucket, key: &str, body: Bytes) -> Result<(), SeamError> {
        let path = self.path(bucket, key)?;
        blocking(move || {
            let tmp = write_temp(&path, &body)?;
            std::fs::rename(&tmp, &path).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                io_err(&path, e)
            })?;
            sync_dir(&path)
        })
        .await
    }

    async fn put_if_absent(
        &self,
        bucket: Bucket,
        key: &str,
        body: Bytes,
    ) -> Result<bool, SeamError> {
        let path = self.path(bucket, key)?;
        blocking(move || {
            let tmp = write_temp(&path, &body)?;
            // link(2) fails if the target exists: an atomic create-if-absent of a
            // complete file.
            let r = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            match r {
                Ok(()) => sync_dir(&path).map(|()| true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(io_err(&path, e)),
            }
        })
        .await
    }

    async fn delete(&self, bucket: Bucket, key: &str) -> Result<(), SeamError> {
        let path = self.path(bucket, key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    async fn version(&self, bucket: Bucket, key: &str) -> Result<Option<String>, SeamError> {
        let path = self.path(bucket, key)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) => {
                let mtime = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                Ok(Some(format!("{mtime}-{}", m.len())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    async fn list(&self, bucket: Bucket, prefix: &str) -> Result<Vec<Listed>, SeamError> {
        // Keys are paths under the bucket's directory; a prefix names a directory.
        let dir = self.path(bucket, prefix.trim_end_matches('/'))?;
        let root = self.bucket_dir(bucket);
        blocking(move || {
            let mut out = Vec::new();
            let mut stack = vec![dir];
            while let Some(d) = stack.pop() {
                let entries = match std::fs::read_dir(&d) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err(&d, e)),
                };
                for e in entries.flatten() {
                    let (path, Ok(meta)) = (e.path(), e.metadata()) else {
                        continue;
                    };
                    if meta.is_dir() {
                        stack.push(path);
                    } else if !e.file_name().to_string_lossy().starts_with(".tmp-")
                        && let Ok(rel) = path.strip_prefix(&root)
                    {
                        out.push(Listed {
                            key: rel.to_string_lossy().replace('\\', "/"),
                            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        });
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn ping(&self) -> Result<(), SeamError> {
        tokio::fs::metadata(&self.root)
            .await
            .map(|_| ())
            .map_err(|e| io_err(&self.root, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SeamErrorKind;

    #[tokio::test]
    async fn fs_store_semantics() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStore::new(dir.path()).unwrap();
        assert!(matches!(
            s.get(Bucket::In, "uploads/a").await,
            Err(e) if e.is_not_found()
        ));
        s.put(Bucket::In, "uploads/a", Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(s.get(Bucket::In, "uploads/a").await.unwrap(), "x");
        assert!(s.version(Bucket::In, "uploads/a").await.unwrap().is_some());
        assert!(s.version(Bucket::Out, "uploads/a").await.unwrap().is_none());
        assert!(
            s.put_if_absent(Bucket::Out, "results/r.json", Bytes::from_static(b"1"))
                .await
                .unwrap()
        );
        assert!(
            !s.put_if_absent(Bucket::Out, "results/r.json", Bytes::from_static(b"2"))
                .await
                .unwrap()
        );
        assert_eq!(s.get(Bucket::Out, "results/r.json").await.unwrap(), "1");
        s.delete(Bucket::In, "uploads/a").await.unwrap();
        s.delete(Bucket::In, "uploads/a").await.unwrap();
        for bad in ["../x", "/etc/passwd", "a/../../b", "", "a//b"] {
            assert!(matches!(
                s.get(Bucket::In, bad).await,
                Err(e) if e.kind() == SeamErrorKind::Permanent
            ));
        }
        // No temporary files left behind.
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("out/results"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[tokio::test]
    async fn list_names_the_objects_under_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStore::new(dir.path()).unwrap();
        assert!(s.list(Bucket::Out, "batches/").await.unwrap().is_empty());
        for key in ["batches/a.json", "batches/b.json", "results/a-0.json"] {
            s.put(Bucket::Out, key, Bytes::from_static(b"{}"))
                .await
                .unwrap();
        }
        let mut keys: Vec<String> = s
            .list(Bucket::Out, "batches/")
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.key)
            .collect();
        keys.sort();
        assert_eq!(keys, ["batches/a.json", "batches/b.json"]);
        assert!(s.list(Bucket::In, "batches/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn sweep_expires_old_uploads_results_and_manifests_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStore::new(dir.path()).unwrap();
        for (bucket, key) in [
            (Bucket::In, "uploads/old"),
            (Bucket::In, "uploads/new"),
            (Bucket::Out, "results/old.json"),
            (Bucket::Out, "results/new.json"),
            (Bucket::Out, "batches/old.json"),
            (Bucket::Out, "gallery/gallery.frg"),
        ] {
            s.put(bucket, key, Bytes::from_static(b"12345"))
                .await
                .unwrap();
        }
        let day_ago = SystemTime::now() - Duration::from_secs(86_400);
        for p in [
            "in/uploads/old",
            "out/results/old.json",
            "out/batches/old.json",
            "out/gallery/gallery.frg",
        ] {
            let f = std::fs::File::options()
                .write(true)
                .open(dir.path().join(p))
                .unwrap();
            f.set_modified(day_ago).unwrap();
        }
        let stats = s.sweep(Duration::from_secs(3600));
        assert_eq!(stats.expired, [1, 2]);
        assert_eq!(stats.objects, [1, 2], "the new ones and the gallery stay");
        assert_eq!(stats.bytes, [5, 10]);
        assert!(s.get(Bucket::In, "uploads/old").await.is_err());
        assert!(s.get(Bucket::In, "uploads/new").await.is_ok());
        assert!(s.get(Bucket::Out, "gallery/gallery.frg").await.is_ok());
    }
}
