//! The blob-store seam: uploads in the input bucket, results (and the gallery) in the
//! output bucket. Implementations: a filesystem store with atomic writes (the embedded
//! default) and S3 (`crate::aws::S3Store`).

use std::path::{Path, PathBuf};

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
    /// Reads an object; `SeamError::NotFound` when it does not exist.
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
                .map_err(|e| SeamError::Permanent(format!("{}: {e}", root.join(b).display())))?;
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
            return Err(SeamError::Permanent(format!("invalid object key {key:?}")));
        }
        let dir = match bucket {
            Bucket::In => "in",
            Bucket::Out => "out",
        };
        Ok(self.root.join(dir).join(key))
    }
}

fn io_err(path: &Path, e: std::io::Error) -> SeamError {
    if e.kind() == std::io::ErrorKind::NotFound {
        SeamError::NotFound(path.display().to_string())
    } else {
        SeamError::Transient(format!("{}: {e}", path.display()))
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

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SeamError> + Send + 'static,
) -> Result<T, SeamError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SeamError::Transient(format!("store task failed: {e}")))?
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
            })
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
                Ok(()) => Ok(true),
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

    #[tokio::test]
    async fn fs_store_semantics() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStore::new(dir.path()).unwrap();
        assert!(matches!(
            s.get(Bucket::In, "uploads/a").await,
            Err(SeamError::NotFound(_))
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
                Err(SeamError::Permanent(_))
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
}
