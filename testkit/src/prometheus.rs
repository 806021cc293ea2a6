//! A real Prometheus server (Debian's `prometheus` package) for the PromQL tests.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;
use crate::http::http;

/// A real Prometheus server (Debian's `prometheus`) on a free port, scraping `targets`
/// every second; killed on drop.
pub struct Prometheus {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(targets: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config =
            String::from("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n");
        if !targets.is_empty() {
            let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
            config.push_str(&format!(
                "scrape_configs:\n  - job_name: facerec\n    static_configs:\n      - targets: [{}]\n",
                list.join(", ")
            ));
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus runs: install Debian's `prometheus` package (.ci/run does)");
        let start = Instant::now();
        while !Self::ready(&addr) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "prometheus did not become ready on {addr}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Self {
            child,
            addr,
            _dir: dir,
        }
    }

    /// `/-/ready` answers 200; any connection or protocol failure is "not yet".
    fn ready(addr: &str) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(addr) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let req = format!("GET /-/ready HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
        let mut answer = String::new();
        s.write_all(req.as_bytes()).is_ok()
            && s.read_to_string(&mut answer).is_ok()
            && answer.starts_with("HTTP/1.1 200")
    }

    /// The API's JSON answer to an instant query.
    pub fn query_json(&self, promql: &str) -> serde_json::Value {
        let encoded: String = promql
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let r = http(
            &self.addr,
            "GET",
            &format!("/api/v1/query?query={encoded}"),
            &[],
            b"",
        );
        serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&r.body)))
    }

    /// The first sample's value of an instant query, once it has one.
    pub fn query_value(&self, promql: &str) -> Option<f64> {
        self.query_json(promql)["data"]["result"][0]["value"][1]
            .as_str()?
            .parse()
            .ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
