//! The CSE546 workload as the `up` tests use it: the images, the ten distinct photos, enrolling them.

use std::path::{Path, PathBuf};
use std::process::Command;

use facerec_testkit as kit;
use facerec_testkit::post_files;

// `facerec up` on a free port, killed on drop.
pub(crate) use facerec_testkit::Up as Server;

pub(crate) struct Workload {
    _dir: tempfile::TempDir,
    pub(crate) images: PathBuf,
    pub(crate) expected: Vec<(String, String)>,
}

impl Workload {
    pub(crate) fn new() -> Self {
        let (dir, expected) = kit::Cse546::unzip().into_parts();
        Self {
            images: dir.path().join("face_images_1000"),
            _dir: dir,
            expected,
        }
    }

    pub(crate) fn bytes(&self, stem: &str) -> Vec<u8> {
        std::fs::read(self.images.join(format!("{stem}.jpg"))).unwrap()
    }

    /// `(name, stem)` of the first occurrence of each distinct photo: the set has ten
    /// distinct 64x64 crops of eight people, each repeated 100 times. Emily's and Gerry's
    /// two photos are too far apart for one to stand for the other at the validated
    /// threshold, so the gallery holds every distinct photo (as the original system's did).
    pub(crate) fn first_of_each(&self) -> Vec<(String, String)> {
        let mut seen: Vec<Vec<u8>> = Vec::new();
        let mut out = Vec::new();
        for (stem, name) in &self.expected {
            let bytes = self.bytes(stem);
            if !seen.contains(&bytes) {
                seen.push(bytes);
                out.push((name.clone(), stem.clone()));
            }
        }
        out
    }

    /// The first `n` images of the workload as a tar body (Python's tarfile), each named
    /// `<i>_<stem>.jpg`: (stem, expected name) per file, the names, the body.
    pub(crate) fn first_as_tar(&self, n: usize) -> (Vec<(String, String)>, Vec<String>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let picks: Vec<(String, String)> = self.expected.iter().take(n).cloned().collect();
        let mut names = Vec::new();
        for (i, (stem, _)) in picks.iter().enumerate() {
            let name = format!("{i:03}_{stem}.jpg");
            std::fs::write(dir.path().join(&name), self.bytes(stem)).unwrap();
            names.push(name);
        }
        let tar = python_tar(dir.path(), &names);
        (picks, names, tar)
    }

    /// The server at `addr` still recognises: `POST /` of test_000 answers Paul.
    pub(crate) fn assert_answers(&self, addr: &str) {
        let r = post_files(
            addr,
            "/",
            &[("inputFile", "test_000.jpg", &self.bytes("test_000"))],
            &[],
        );
        assert_eq!(r.text(), "test_000:Paul");
    }

    /// Enrolls every distinct photo under its name through the API (`headers`: e.g. the
    /// API key), one face each.
    pub(crate) fn enroll(&self, addr: &str, headers: &[(&str, &str)]) {
        self.enroll_at(addr, "/v1", headers);
    }

    /// As `enroll`, through the routes under `prefix` (`/v1/collections/<name>`: in a
    /// collection).
    pub(crate) fn enroll_at(&self, addr: &str, prefix: &str, headers: &[(&str, &str)]) {
        for (name, stem) in self.first_of_each() {
            let r = post_files(
                addr,
                &format!("{prefix}/identities/{name}/faces"),
                &[("image", "x.jpg", &self.bytes(&stem))],
                headers,
            );
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.json()["added"], 1);
        }
    }
}

/// A tar of the files `names` in `dir`, made by Python's `tarfile` (an independent writer).
pub(crate) fn python_tar(dir: &Path, names: &[String]) -> Vec<u8> {
    let ok = Command::new("python3")
        .args(["-m", "tarfile", "-c", "batch.tar"])
        .args(names)
        .current_dir(dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "python3 -m tarfile");
    std::fs::read(dir.join("batch.tar")).unwrap()
}

/// Files under `dir` (recursively).
pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}
