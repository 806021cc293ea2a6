//! moto's server (PyPI `moto[server]`): S3, SQS and EC2 for the AWS tests.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_listening};

/// A moto server on a free port, killed on drop.
pub struct Moto {
    child: Child,
    pub url: String,
}

impl Moto {
    /// Starts `python3 -m moto.server` and waits until it listens. A server that exits
    /// instead (its port taken by another process in between, so what listens there is
    /// not ours) is started again on another port.
    pub fn start() -> Self {
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new("python3")
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
            let addr = format!("127.0.0.1:{port}");
            wait_listening(
                &addr,
                Duration::from_secs(60),
                "moto's server (`pip install 'moto[server]'`, as .ci/run does)",
            );
            // A server that could not bind exits at once.
            std::thread::sleep(Duration::from_millis(300));
            if child.try_wait().expect("moto's status").is_none() {
                let url = format!("http://{addr}");
                return Self { child, url };
            }
        }
        panic!("moto's server exited at start five times (ports taken?)")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
