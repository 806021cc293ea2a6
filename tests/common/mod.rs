//! Helpers shared by the integration tests that need real servers.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A moto server on a free port, killed on drop.
pub struct Moto {
    child: Child,
    pub url: String,
}

impl Moto {
    pub fn start() -> Self {
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let url = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "moto server did not start: install it with `pip install 'moto[server]'` (.ci/run does)"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Self { child, url }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The CSE546 workload (`../shared/datasets/cse546`) unzipped into a new temporary
/// directory (images under `face_images_1000/`), and its expected `(stem, name)` pairs.
pub fn cse546() -> (tempfile::TempDir, Vec<(String, String)>) {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/cse546");
    let dir = tempfile::tempdir().unwrap();
    let ok = Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(shared.join("face_images_1000.zip"))
        .arg(dir.path())
        .status()
        .unwrap()
        .success();
    assert!(ok, "unzipping the CSE546 images failed");
    let expected = std::fs::read_to_string(shared.join("expected.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(','))
        .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
        .collect();
    (dir, expected)
}
