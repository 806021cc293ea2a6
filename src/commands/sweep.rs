//! `facerec bench sweep`: for each engine batch size x worker count, a fresh `facerec up`
//! child (this binary) on a free port with its own data directory, the gallery copied in or
//! enrolled over HTTP, a short unmeasured warm-up, then the harness at each concurrency;
//! then the child is stopped. Writes `sweep.json`, `sweep.md` and `sweep.svg` under `--out`,
//! rewritten after every point so an interrupted sweep keeps what it measured. Rendering is
//! in `loadgen/src/sweep.rs`.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use facerec_loadgen::sweep::{Point, Sweep};
use facerec_loadgen::{self as loadgen, Config, Item, Route};

use crate::cli::bench::SweepArgs;

pub fn run(args: &SweepArgs) -> Result<ExitCode> {
    anyhow::ensure!(
        !args.batch.is_empty() && !args.workers.is_empty() && !args.concurrency.is_empty(),
        "--batch, --workers and --concurrency each need at least one value"
    );
    anyhow::ensure!(
        args.route != Route::Health,
        "a sweep measures recognition: --route original, recognize or batch"
    );
    let items = loadgen::load(&args.images, args.expected.as_deref())?;
    let requests = args.requests.unwrap_or(items.len()).max(1);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let exe = std::env::current_exe().context("locating the facerec binary")?;
    let rt = crate::support::runtime::runtime()?;
    let mut sweep = Sweep {
        route: args.route,
        images: items.len(),
        requests,
        points: Vec::new(),
    };
    for &batch in &args.batch {
        for &workers in &args.workers {
            let name = format!("b{batch}-w{workers}");
            let log = args.out.join(format!("up-{name}.log"));
            eprintln!(
                "starting facerec up --batch {batch} --workers {workers} (log: {})",
                log.display()
            );
            let up = Up::start(
                &exe,
                args,
                batch,
                workers,
                &log,
                &args.out.join(format!("data-{name}")),
            )?;
            let server = Server {
                addr: &up.addr,
                batch,
                workers,
            };
            rt.block_on(measure(args, &server, &items, requests, &mut sweep))
                .with_context(|| {
                    format!("batch {batch}, {workers} workers (log: {})", log.display())
                })?;
            drop(up);
        }
    }
    print!("{}", sweep.markdown());
    let clean = sweep
        .points
        .iter()
        .all(|p| p.report.ok == p.report.requests && p.report.wrong == 0);
    Ok(if args.strict && !clean {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The server a group of points runs against.
struct Server<'a> {
    addr: &'a str,
    batch: usize,
    workers: u32,
}

async fn measure(
    args: &SweepArgs,
    server: &Server<'_>,
    items: &[Item],
    requests: usize,
    sweep: &mut Sweep,
) -> Result<()> {
    let key = args.api_key.key.clone().filter(|k| !k.is_empty());
    wait_ready(server.addr).await?;
    if args.enroll_from_expected {
        let n = enroll(server.addr, key.as_deref(), items).await?;
        eprintln!("enrolled {n} distinct images");
    }
    let base = Config {
        addr: server.addr.to_string(),
        route: args.route,
        requests,
        concurrency: 1,
        timeout: Duration::from_secs(args.timeout.max(1)),
        api_key: key,
        batch_files: args.batch_files,
    };
    let warmup = args.warmup.unwrap_or(2 * server.batch);
    if warmup > 0 {
        let cfg = Config {
            requests: warmup,
            concurrency: server.batch.max(1),
            ..base.clone()
        };
        let r = loadgen::run(&cfg, items, || {}).await;
        eprintln!("warm-up: {} images, {} ok", r.requests, r.ok);
    }
    for &clients in &args.concurrency {
        let prefix = format!(
            "batch {} workers {} clients {clients}",
            server.batch, server.workers
        );
        let bar = indicatif::ProgressBar::new(requests as u64).with_prefix(prefix.clone());
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} {bar:30} {pos}/{len} {per_sec} eta {eta}",
            )
            .context("progress template")?,
        );
        let cfg = Config {
            concurrency: clients.max(1),
            ..base.clone()
        };
        let report = {
            let bar = bar.clone();
            loadgen::run(&cfg, items, move || bar.inc(1)).await
        };
        bar.finish_and_clear();
        eprintln!(
            "{prefix}: {:.1} img/s, p50 {:.0} ms, p95 {:.0} ms, {}/{} ok, {}/{} correct",
            report.ok_throughput,
            report.latency_ms.p50,
            report.latency_ms.p95,
            report.ok,
            report.requests,
            report.correct,
            report.correct + report.wrong
        );
        for w in &report.wrong_examples {
            eprintln!("wrong: {w}");
        }
        sweep.points.push(Point {
            batch: server.batch,
            workers: server.workers,
            report,
        });
        write(&args.out, sweep)?;
    }
    Ok(())
}

fn write(out: &Path, sweep: &Sweep) -> Result<()> {
    for (file, text) in [
        ("sweep.json", serde_json::to_string_pretty(sweep)?),
        ("sweep.md", sweep.markdown()),
        ("sweep.svg", sweep.svg()),
    ] {
        let path = out.join(file);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Polls `GET /ready` until it answers 200.
async fn wait_ready(addr: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let last = match loadgen::call(addr, "GET", "/ready", None, &[]).await {
            Ok((200, _)) => return Ok(()),
            Ok((status, body)) => format!("{status} {}", String::from_utf8_lossy(&body)),
            Err(e) => e,
        };
        if Instant::now() > deadline {
            bail!("http://{addr}/ready never answered 200: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Enrolls each distinct image (by content) that has an expected name under that name;
/// returns how many were enrolled. An image the server refuses (no face) is skipped.
async fn enroll(addr: &str, key: Option<&str>, items: &[Item]) -> Result<usize> {
    let mut seen = HashSet::new();
    let mut enrolled = 0;
    for item in items {
        let Some(name) = &item.expected else {
            continue;
        };
        if !seen.insert(item.bytes.clone()) {
            continue;
        }
        let path = format!("/v1/identities/{}/faces", percent_encode(name));
        let part = [("image", item.filename.as_str(), &item.bytes[..])];
        let (status, body) = loadgen::call(addr, "POST", &path, key, &part)
            .await
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("enrolling {}", item.filename))?;
        match status {
            200 => enrolled += 1,
            401 => bail!("enrolling needs the server's API key (--api-key or FACEREC_API_KEY)"),
            _ => eprintln!(
                "not enrolled: {} as {name}: {status} {}",
                item.filename,
                String::from_utf8_lossy(&body).trim()
            ),
        }
    }
    anyhow::ensure!(enrolled > 0, "no image could be enrolled");
    Ok(enrolled)
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A `facerec up` child process, killed (and its data directory removed) on drop.
struct Up {
    child: Child,
    addr: String,
    data: PathBuf,
}

impl Up {
    fn start(
        exe: &Path,
        args: &SweepArgs,
        batch: usize,
        workers: u32,
        log: &Path,
        data: &Path,
    ) -> Result<Self> {
        if data.exists() {
            std::fs::remove_dir_all(data)
                .with_context(|| format!("clearing {}", data.display()))?;
        }
        if let Some(gallery) = &args.gallery {
            // Where `facerec up`'s filesystem store keeps the gallery object.
            let dest = data.join("out").join(facerec_seams::gallery::GALLERY_KEY);
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::copy(gallery, &dest)
                .with_context(|| format!("copying {} to {}", gallery.display(), dest.display()))?;
        }
        let mut log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let workers = workers.to_string();
        let mut cmd = Command::new(exe);
        cmd.args(["up", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(["--batch", &batch.to_string()])
            .args(["--workers", &workers, "--max-workers", &workers])
            .args(&args.up_args)
            // Flags win over the environment, so `-- --request-timeout N` still can.
            .env("REQUEST_TIMEOUT", args.timeout.max(1).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(key) = &args.api_key.key {
            cmd.env("FACEREC_API_KEY", key);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {} up", exe.display()))?;
        let stderr = child.stderr.take();
        let mut up = Up {
            child,
            addr: String::new(),
            data: data.to_path_buf(),
        };
        let stderr = stderr.context("the server's stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log_file, "{line}");
                if let Some(addr) = line.strip_prefix("facerec listening on http://")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        // Loading the models comes before listening; a cold GPU may take minutes.
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(addr) => {
                    up.addr = addr;
                    return Ok(up);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(200))
                }
            }
            if let Some(status) = up.child.try_wait()? {
                bail!(
                    "facerec up exited ({status}) before listening; see {}",
                    log.display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "facerec up did not listen within 10 minutes; see {}",
                    log.display()
                );
            }
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_percent_encoded() {
        assert_eq!(percent_encode("Paul"), "Paul");
        assert_eq!(percent_encode("Anne Marie/é"), "Anne%20Marie%2F%C3%A9");
    }
}
