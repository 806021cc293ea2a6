//! A real PostgreSQL server (Debian's `postgresql` package) for the face store's tests: a
//! private cluster in a temporary directory, on a free port, killed on drop.
//!
//! `initdb` and `postgres` refuse to run as root, so as root they run as the `postgres`
//! user (which the package creates) over a directory handed to it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// A PostgreSQL cluster of its own on a free port on 127.0.0.1, trusting local
/// connections; killed on drop.
pub struct Postgres {
    child: Option<Child>,
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    dir: tempfile::TempDir,
    databases: std::sync::atomic::AtomicUsize,
    /// With TLS: TCP connections must use it (`hostssl`), the server's certificate signed
    /// by a CA of its own (`ca.pem` here).
    tls: bool,
}

impl Postgres {
    /// `initdb`, then the server; waits until it accepts connections.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// As [`Postgres::start`], the server taking TCP connections over TLS only, with a
    /// certificate for 127.0.0.1 and localhost signed by a CA made here by `openssl`
    /// ([`Postgres::ca_file`]).
    pub fn start_tls() -> Self {
        Self::start_with(true)
    }

    /// The CA that signed a TLS server's certificate (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn start_with(tls: bool) -> Self {
        let bin = bin_dir();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        if is_root() {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path()));
        }
        run(as_postgres(&bin.join("initdb"))
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data));
        if tls {
            make_certificates(dir.path());
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .unwrap();
        }
        let mut pg = Self {
            child: None,
            port: free_port(),
            bin,
            data,
            dir,
            databases: Default::default(),
            tls,
        };
        pg.resume();
        pg
    }

    /// Starts the server again (after [`Postgres::halt`]) on the same port and data.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        let mut server = as_postgres(&self.bin.join("postgres"));
        server
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ]);
        if self.tls {
            let at = |f: &str| self.dir.path().join(f).display().to_string();
            server.args([
                "-c".to_string(),
                "ssl=on".to_string(),
                "-c".to_string(),
                format!("ssl_cert_file={}", at("server.pem")),
                "-c".to_string(),
                format!("ssl_key_file={}", at("server.key")),
            ]);
        }
        let child = server
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres runs");
        self.child = Some(child);
        let start = Instant::now();
        while !self.accepts() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "postgres did not accept connections on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server at once, as a crash would (PostgreSQL's immediate shutdown: no
    /// checkpoint, recovery at the next start); the data stays.
    pub fn halt(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-QUIT", &child.id().to_string()])
                .status();
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(20) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// A new, empty database; its URL.
    pub fn database(&self) -> String {
        let n = self
            .databases
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("facerec_test_{n}");
        self.psql(&format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs one SQL command in the `postgres` database and returns its output (unaligned,
    /// tuples only).
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("postgres", sql)
    }

    /// Runs one SQL command in database `db` and returns its output.
    pub fn psql_in(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U",
                "postgres",
                "-d",
                db,
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
            ])
            .arg(sql)
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn accepts(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Where the server's binaries are: Debian keeps them under
/// `/usr/lib/postgresql/<major>/bin` (the newest is taken).
fn bin_dir() -> PathBuf {
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    majors.sort();
    majors.pop().map(|(_, bin)| bin).expect(
        "PostgreSQL's server binaries (Debian's `postgresql` package, as .ci/run installs) under /usr/lib/postgresql/<major>/bin",
    )
}

/// A CA, and a server certificate for 127.0.0.1 and localhost it signs, by `openssl`, in
/// `dir` (the key readable by the server only).
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        run(Command::new("openssl").args(args).current_dir(dir));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=facerec test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    if is_root() {
        run(Command::new("chown")
            .args(["postgres:postgres", "server.key", "server.pem"])
            .current_dir(dir));
    }
    run(Command::new("chmod")
        .args(["600", "server.key"])
        .current_dir(dir));
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The command, run as the `postgres` user when this process is root (`setpriv` execs
/// it in place, so the child is the server itself and a signal reaches it).
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
