//! The test data: where each set lives and how it is read.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root (the directory holding `Cargo.lock`): found from the package whose
/// tests run (cargo sets `CARGO_MANIFEST_DIR` for them), else from where the kit was
/// built. The first comes first because a build cache moved with a checkout keeps the
/// old compile-time path.
pub fn repo_root() -> PathBuf {
    let runtime = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf();
    let candidates: Vec<PathBuf> = runtime.into_iter().chain([built]).collect();
    candidates
        .iter()
        .flat_map(|start| start.ancestors())
        .find(|dir| dir.join("Cargo.lock").exists())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| panic!("no Cargo.lock above {candidates:?}"))
}

/// The committed models (`models/`).
pub fn models_dir() -> PathBuf {
    repo_root().join("models")
}

/// A fetched data set: `$var` when set, else `~/.cache/facerec/testdata/<default>`, checked
/// for `marker` so a missing download is a clear failure.
fn fetched(var: &str, default: &str, marker: &str, fetch: &str) -> PathBuf {
    let dir = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").expect("HOME is set");
        PathBuf::from(home)
            .join(".cache/facerec/testdata")
            .join(default)
    });
    assert!(
        dir.join(marker).exists(),
        "test data missing at {}: run `scripts/fetch-test-data.sh{fetch}` (or set {var})",
        dir.display()
    );
    dir
}

/// The unpacked npm package `@vladmandic/face-api` 1.7.15: its demo photos (1920 px wide,
/// several faces each) and weights. `FACEAPI_DIR` or the fetch script's cache.
pub fn faceapi_dir() -> PathBuf {
    fetched(
        "FACEAPI_DIR",
        "face-api-1.7.15/package",
        "demo/sample1.jpg",
        "",
    )
}

/// The bytes of face-api's `demo/sample{i}.jpg` (1 to 6).
pub fn sample(i: usize) -> Vec<u8> {
    let path = faceapi_dir().join(format!("demo/sample{i}.jpg"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The accuracy evaluation's faces (`tests/data/eval/faces.csv` names them):
/// `FACEREC_EVAL_DIR` or the fetch script's cache.
pub fn eval_dir() -> PathBuf {
    fetched("FACEREC_EVAL_DIR", "eval-1", ".complete", " eval")
}

/// The CSE546 workload (public course data, `tests/data/cse546`): 1000 64x64 face crops
/// `face_images_1000/test_NNN.jpg` unzipped into a temporary directory of its own, and
/// the expected name of each.
pub struct Cse546 {
    dir: tempfile::TempDir,
    /// `(stem, name)` in the CSV's order: the first ten are ten distinct people.
    pub expected: Vec<(String, String)>,
}

impl Cse546 {
    /// Unzips the workload into a new temporary directory (removed on drop).
    pub fn unzip() -> Self {
        let dir = tempfile::tempdir().unwrap();
        unzip_into(dir.path());
        Self {
            dir,
            expected: cse546_expected(),
        }
    }

    /// The temporary directory (the images are under `face_images_1000/`).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The directory of the 1000 images.
    pub fn images(&self) -> PathBuf {
        self.dir.path().join("face_images_1000")
    }

    /// The path of the image `stem` (`test_000` ...).
    pub fn image(&self, stem: &str) -> PathBuf {
        self.images().join(format!("{stem}.jpg"))
    }

    /// The temporary directory and the expected pairs, the directory kept alive by the caller.
    pub fn into_parts(self) -> (tempfile::TempDir, Vec<(String, String)>) {
        (self.dir, self.expected)
    }
}

fn cse546_data() -> PathBuf {
    repo_root().join("tests/data/cse546")
}

fn unzip_into(dir: &Path) {
    let zip = cse546_data().join("face_images_1000.zip");
    assert!(zip.exists(), "CSE546 data set missing at {}", zip.display());
    let ok = Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&zip)
        .arg(dir)
        .status()
        .expect("python3 runs")
        .success();
    assert!(ok, "unzipping {} failed", zip.display());
}

/// The CSE546 images directory, unzipped once per process (for tests that only read it).
pub fn cse546_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = std::env::temp_dir().join(format!("facerec-cse546-{}", std::process::id()));
        std::fs::create_dir_all(&out).expect("temp dir");
        unzip_into(&out);
        out.join("face_images_1000")
    })
    .clone()
}

/// The CSE546 expected-names CSV (`stem,name` per line after a header), for commands that
/// read it (`facerec bench --expected`).
pub fn cse546_csv() -> PathBuf {
    cse546_data().join("expected.csv")
}

/// The expected name per CSE546 stem, `(stem, name)` in the CSV's order.
pub fn cse546_expected() -> Vec<(String, String)> {
    let csv = cse546_csv();
    std::fs::read_to_string(&csv)
        .unwrap_or_else(|e| panic!("{}: {e}", csv.display()))
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(','))
        .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
        .collect()
}
