//! Helpers shared by the integration tests that need real servers.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
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

/// The CSE546 workload (`tests/data/cse546`) unzipped into a new temporary
/// directory (images under `face_images_1000/`), and its expected `(stem, name)` pairs.
pub fn cse546() -> (tempfile::TempDir, Vec<(String, String)>) {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cse546");
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

/// An HTTP answer; header names lower-cased.
pub struct Reply {
    pub status: u16,
    pub headers: std::collections::HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.1 request on its own connection (`connection: close`); the body is read to
/// the end, so only for answers that are not chunked.
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(600))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // The server may answer (413) before reading the whole body.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

pub const BOUNDARY: &str = "facerec-test-boundary";

/// A `multipart/form-data` body of `(field, filename, bytes)` parts.
pub fn multipart(files: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, filename, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\ncontent-disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\ncontent-type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// POSTs the parts as `multipart/form-data`, with extra headers.
pub fn post_files(
    addr: &str,
    path: &str,
    files: &[(&str, &str, &[u8])],
    extra: &[(&str, &str)],
) -> Reply {
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let mut headers = vec![("content-type", ct.as_str())];
    headers.extend_from_slice(extra);
    http(addr, "POST", path, &headers, &multipart(files))
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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_facerec"));
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
        .env(
            "FACEREC_MODELS",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("models"),
        )
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

/// Undoes `transfer-encoding: chunked` (streamed answers).
pub fn dechunk(r: &Reply) -> Vec<u8> {
    if r.headers.get("transfer-encoding").map(String::as_str) != Some("chunked") {
        return r.body.clone();
    }
    let (mut out, mut rest) = (Vec::new(), r.body.as_slice());
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16)
                .unwrap();
        rest = &rest[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Waits until `GET /v1/batches/{id}` at `addr` says finished; its progress.
pub fn wait_finished(addr: &str, id: &str, limit: Duration) -> serde_json::Value {
    let t = std::time::Instant::now();
    loop {
        let r = http(addr, "GET", &format!("/v1/batches/{id}"), &[], b"");
        assert_eq!(r.status, 200, "{addr}: {}", r.text());
        let v = r.json();
        if v["finished"] == true {
            return v;
        }
        assert!(t.elapsed() < limit, "{addr}: not finished: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `GET /v1/batches/{id}/results`: filename → name (or error kind), one line per image.
pub fn batch_results(addr: &str, id: &str, auth: &[(&str, &str)]) -> HashMap<String, String> {
    let r = http(addr, "GET", &format!("/v1/batches/{id}/results"), auth, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some("application/x-ndjson")
    );
    let body = String::from_utf8(dechunk(&r)).unwrap();
    body.lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            let name = v["name"]
                .as_str()
                .or(v["error"]["kind"].as_str())
                .unwrap_or("?")
                .to_string();
            (v["filename"].as_str().unwrap().to_string(), name)
        })
        .collect()
}
