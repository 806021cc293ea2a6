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
    /// Starts `python3 -m moto.server` and waits until it listens.
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
        wait_listening(
            &format!("127.0.0.1:{port}"),
            Duration::from_secs(60),
            "moto's server (`pip install 'moto[server]'`, as .ci/run does)",
        );
        Self { child, url }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
