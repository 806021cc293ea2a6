//! The images a run sends: a folder or a zip, and their expected names from a CSV.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// Why the images of a run could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ItemsError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: neither a folder nor a .zip", .0.display())]
    NotAFolderOrZip(PathBuf),
    #[error("{}: python3 -m zipfile -e failed: {detail}", path.display())]
    Unzip { path: PathBuf, detail: String },
    #[error("no files in {}", .0.display())]
    Empty(PathBuf),
}

/// An I/O error of `path`.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ItemsError + '_ {
    move |source| ItemsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One image to send, with the name it should come back with when known.
#[derive(Debug, Clone)]
pub struct Item {
    pub filename: String,
    pub bytes: Bytes,
    pub expected: Option<String>,
}

/// Loads the images of a folder (its files, sorted by name) or of a `.zip` (every file
/// inside at any depth, sorted by path), and, from a CSV of `stem,name` lines (a header line
/// is skipped), their expected names. A zip is extracted with the system's
/// `python3 -m zipfile -e` into a temporary folder, removed once the images are read: no zip
/// reader is among the workspace's dependencies (the tests unzip CSE546 the same way).
pub fn load(path: &Path, expected_csv: Option<&Path>) -> Result<Vec<Item>, ItemsError> {
    if path.is_dir() {
        return load_dir(path, expected_csv);
    }
    let is_zip = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("zip"));
    if !is_zip {
        return Err(ItemsError::NotAFolderOrZip(path.to_path_buf()));
    }
    let expected = read_expected(expected_csv)?;
    let tmp = tempfile::tempdir().map_err(io(&std::env::temp_dir()))?;
    let out = std::process::Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(path)
        .arg(tmp.path())
        .output()
        .map_err(|e| ItemsError::Unzip {
            path: path.to_path_buf(),
            detail: format!("running python3: {e}"),
        })?;
    if !out.status.success() {
        return Err(ItemsError::Unzip {
            path: path.to_path_buf(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let mut paths = Vec::new();
    walk(tmp.path(), &mut paths)?;
    paths.sort();
    let items = read_items(paths, &expected)?;
    if items.is_empty() {
        return Err(ItemsError::Empty(path.to_path_buf()));
    }
    Ok(items)
}

/// Loads the images of a folder (sorted by name) and, from a CSV of `stem,name` lines (a
/// header line is skipped), their expected names.
pub fn load_dir(dir: &Path, expected_csv: Option<&Path>) -> Result<Vec<Item>, ItemsError> {
    let expected = read_expected(expected_csv)?;
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    let items = read_items(paths, &expected)?;
    if items.is_empty() {
        return Err(ItemsError::Empty(dir.to_path_buf()));
    }
    Ok(items)
}

fn read_expected(csv: Option<&Path>) -> Result<BTreeMap<String, String>, ItemsError> {
    Ok(match csv {
        Some(p) => std::fs::read_to_string(p)
            .map_err(io(p))?
            .lines()
            .filter_map(|l| l.split_once(','))
            .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
            .collect(),
        None => BTreeMap::new(),
    })
}

/// The files under `dir` at any depth, leaving out hidden ones and macOS's `__MACOSX`.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ItemsError> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let name = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.') || name == "__MACOSX" {
            continue;
        }
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

fn read_items(
    paths: Vec<PathBuf>,
    expected: &BTreeMap<String, String>,
) -> Result<Vec<Item>, ItemsError> {
    let mut items = Vec::with_capacity(paths.len());
    for p in paths {
        let filename = p
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = p
            .file_stem()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = std::fs::read(&p).map_err(io(&p))?;
        items.push(Item {
            filename,
            bytes: Bytes::from(bytes),
            expected: expected.get(&stem).cloned(),
        });
    }
    Ok(items)
}
