//! facerec's test kit, a dev-dependency of the tests and benches only.
//!
//! - [`data`]: where the test data lives and how it is read: the CSE546 workload (committed
//!   under `tests/data/cse546`), face-api's demo photos and the evaluation faces (fetched
//!   from registry packages by `scripts/fetch-test-data.sh`), the committed models.
//! - [`eval`]: the labelled evaluation faces as the accuracy and grouping tests read them.
//! - [`moto`], [`prometheus`] and [`postgres`]: the real servers the AWS, PromQL and face
//!   store tests run against, each on a free port and killed on drop.
//! - [`http`]: a raw HTTP/1.1 client that sends exactly the bytes a test writes (a body the
//!   server refuses before reading it, a malformed multipart), and the edge's batch calls.
//!
//! A helper that cannot do its job panics with what to install or fetch: that is how a
//! test using it fails.
#![allow(clippy::unwrap_used)]

pub mod data;
pub mod eval;
pub mod http;
pub mod moto;
pub mod postgres;
pub mod prometheus;
pub mod up;

pub use data::{
    Cse546, cse546_csv, cse546_dir, cse546_expected, eval_dir, faceapi_dir, models_dir, repo_root,
    sample,
};
pub use eval::{EvalRow, eval_rows, face_box, faces_of, pick, run_json};
pub use http::{
    BOUNDARY, Reply, batch_results, dechunk, http, multipart, post_files, wait_finished,
};
pub use moto::Moto;
pub use postgres::Postgres;
pub use prometheus::Prometheus;
pub use up::{Up, enroll_gallery_file, facerec_bin};

/// A TCP port that was free a moment ago, for a child process that cannot report the port
/// it bound (moto, Prometheus). Servers of this repository bind port 0 and say which.
pub fn free_port() -> u16 {
    // The system may hand the same just-released port to two tests running at once (each
    // then starts a server on it, one fails to bind, and both talk to the other's until it
    // stops): a port is handed out once per test process.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Waits until `addr` accepts TCP connections, at most `limit`; `what` names the server in
/// the panic.
pub(crate) fn wait_listening(addr: &str, limit: std::time::Duration, what: &str) {
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(start.elapsed() < limit, "{what} did not start on {addr}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
