//! `facerec up` as a child process for the binary's end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::models_dir;

/// The `facerec` binary cargo builds for the root package's integration tests: `FACEREC_BIN`
/// when set, else the one beside the test executable's `deps/` directory
/// (`target/<profile>/facerec`, where `CARGO_BIN_EXE_facerec` points).
pub fn facerec_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("FACEREC_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .filter(|d| d.ends_with("deps"))
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("{} is not in a cargo target's deps/", exe.display()));
    let bin = profile_dir.join(format!("facerec{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "no facerec binary at {}: run the root package's tests with cargo (it builds the binary first) or set FACEREC_BIN",
        bin.display()
    );
    bin
}

/// A gallery file as the offline CLI writes it: `facerec enroll --backend cpu --gallery
/// GALLERY --dir PEOPLE`, each sub-folder of PEOPLE an identity.
pub fn enroll_gallery_file(gallery: &Path, people: &Path) {
    let out = Command::new(facerec_bin())
        .args(["enroll", "--backend", "cpu", "--gallery"])
        .arg(gallery)
        .arg("--dir")
        .arg(people)
        .env("FACEREC_MODELS", models_dir())
        .output()
        .expect("facerec runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `facerec up` on a free port with the repo's models and a temporary data directory,
/// killed on drop.
pub struct Up {
    child: Child,
    pub addr: String,
    _data: tempfile::TempDir,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Up {
    /// Starts `facerec up` with extra flags and environment, logging JSON at `info` on a
    /// stderr this helper reads for the listening address.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let data = tempfile::tempdir().unwrap();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, addr) = Self::spawn(data.path(), &args, &env);
        Self {
            child,
            addr,
            _data: data,
            args,
            env,
        }
    }

    fn spawn(data: &Path, args: &[String], env: &[(String, String)]) -> (Child, String) {
        use std::io::BufRead;
        let mut cmd = Command::new(facerec_bin());
        cmd.args([
            "--log-json",
            "up",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "cpu",
        ])
        .arg("--data")
        .arg(data)
        .args(args)
        .env("FACEREC_MODELS", models_dir())
        .env("FACEREC_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("facerec up starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(addr) = line.strip_prefix("facerec listening on http://")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("facerec up reports its address");
        (child, addr)
    }

    /// SIGKILL (no chance to clean up), then the same command on the same `--data`.
    pub fn kill_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let (child, addr) = Self::spawn(self._data.path(), &self.args, &self.env);
        self.child = child;
        self.addr = addr;
    }

    /// The `--data` directory.
    pub fn data(&self) -> &Path {
        self._data.path()
    }

    /// Sends SIGTERM and waits for the exit, at most `limit`: how long it took.
    pub fn terminate(&mut self, limit: Duration) -> Duration {
        let start = Instant::now();
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM");
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "facerec up exited with {status}");
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "still running {limit:?} after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
