//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use facerec_engine::{BackendChoice, Engine, EngineConfig};

/// The workspace root (the directory holding `Cargo.lock`), from whichever crate's tests
/// include this module.
pub fn repo_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("Cargo.lock").exists() {
        assert!(
            dir.pop(),
            "no Cargo.lock above {}",
            env!("CARGO_MANIFEST_DIR")
        );
    }
    dir
}

pub fn models_dir() -> PathBuf {
    repo_root().join("models")
}

/// The unpacked npm package `@vladmandic/face-api` 1.7.15 (`scripts/fetch-test-data.sh`).
pub fn faceapi_dir() -> PathBuf {
    let dir = std::env::var_os("FACEAPI_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache/facerec/testdata/face-api-1.7.15/package")
        });
    assert!(
        dir.join("demo/sample1.jpg").exists(),
        "test photos missing at {}: run scripts/fetch-test-data.sh (or set FACEAPI_DIR)",
        dir.display()
    );
    dir
}

pub fn sample(i: usize) -> Vec<u8> {
    let path = faceapi_dir().join(format!("demo/sample{i}.jpg"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The CSE546 workload (`tests/data/cse546`), unzipped once per test run.
pub fn cse546_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let zip = repo_root().join("tests/data/cse546/face_images_1000.zip");
        assert!(zip.exists(), "CSE546 data set missing at {}", zip.display());
        let out = std::env::temp_dir().join(format!("facerec-cse546-{}", std::process::id()));
        std::fs::create_dir_all(&out).expect("temp dir");
        let status = std::process::Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&zip)
            .arg(&out)
            .status()
            .expect("python3 runs");
        assert!(status.success(), "unzip failed");
        out.join("face_images_1000")
    })
    .clone()
}

/// Expected name per CSE546 stem.
pub fn cse546_expected() -> Vec<(String, String)> {
    let csv = repo_root().join("tests/data/cse546/expected.csv");
    std::fs::read_to_string(csv)
        .expect("expected.csv")
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(','))
        .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
        .collect()
}

/// One CPU engine per test binary: loading the models is the slow part.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = EngineConfig::new(models_dir());
        config.backend = BackendChoice::Cpu;
        Engine::new(config).expect("engine loads")
    })
}
