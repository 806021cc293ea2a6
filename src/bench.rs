//! `facerec bench`: the load harness (code in `benches/src/harness.rs`); `facerec bench
//! sweep` is in `sweep.rs`, `facerec bench models` in `bench_models.rs`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use facerec_benches::harness::{self, Config, Report, Route};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Start a fresh `facerec up` per engine batch size x worker count, run the harness at
    /// each concurrency; write sweep.json, sweep.md and sweep.svg (throughput vs p95).
    Sweep(crate::sweep::SweepArgs),
    /// Items/s per batch size of each network, of the whole pipeline and of gallery search
    /// (GPU kernel and CPU) on this machine's backend; a markdown table on stdout, `--json`
    /// for the report script; `--autotune` shows what `--batch auto` would choose.
    Models(crate::bench_models::ModelsArgs),
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The edge to load, e.g. http://127.0.0.1:8000.
    #[arg(
        long,
        env = "FACEREC_BENCH_URL",
        default_value = "http://127.0.0.1:8000"
    )]
    pub url: String,
    /// original (`POST /`), recognize (`POST /v1/recognize`), health (`GET /health`) or
    /// batch (`POST /v1/batches`, results streamed from `/v1/batches/{id}/results`).
    #[arg(long, default_value = "original")]
    pub route: Route,
    /// Folder of images (e.g. the unzipped CSE546 `face_images_1000/`), or a .zip of them
    /// (e.g. `face_images_1000.zip`; extracted with `python3 -m zipfile`).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// CSV of `stem,name` (header skipped) to check the answers against.
    #[arg(long)]
    pub expected: Option<PathBuf>,
    /// Requests in all (images are cycled) [default: one per image].
    #[arg(short = 'n', long)]
    pub requests: Option<usize>,
    /// Concurrent clients (batch route: batches in flight at once).
    #[arg(short = 'c', long, default_value_t = 100)]
    pub concurrency: usize,
    /// Batch route: images per uploaded batch [default: the requests split evenly over the
    /// clients]. At most the edge's bound (10,000).
    #[arg(long)]
    pub batch_files: Option<usize>,
    /// Seconds before a request (batch route: a whole batch) counts as timed out.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    #[arg(long, env = "FACEREC_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Append the report as a markdown table row here (header when the file is new).
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Exit non-zero when any answer is wrong or not 2xx.
    #[arg(long)]
    pub strict: bool,
}

pub fn bench_cmd(args: &BenchArgs) -> Result<ExitCode> {
    let addr = args
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    anyhow::ensure!(!addr.contains('/'), "--url is http://host:port");
    let items = match (&args.images, args.route) {
        (Some(dir), _) => {
            harness::load(dir, args.expected.as_deref()).map_err(anyhow::Error::msg)?
        }
        (None, Route::Health) => vec![harness::Item {
            filename: String::new(),
            bytes: Default::default(),
            expected: None,
        }],
        (None, _) => anyhow::bail!("--images is required for the {:?} route", args.route),
    };
    let requests = args.requests.unwrap_or(items.len()).max(1);
    let config = Config {
        addr,
        route: args.route,
        requests,
        concurrency: args.concurrency.max(1),
        timeout: Duration::from_secs(args.timeout.max(1)),
        api_key: args.api_key.clone(),
        batch_files: args.batch_files,
    };
    let bar = indicatif::ProgressBar::new(requests as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta}")
            .context("progress template")?,
    );
    let report: Report = crate::serve::runtime()?.block_on({
        let bar = bar.clone();
        async move { harness::run(&config, &items, move || bar.inc(1)).await }
    });
    bar.finish_and_clear();
    println!("{}\n{}", Report::MARKDOWN_HEADER, report.markdown_row());
    for w in &report.wrong_examples {
        eprintln!("wrong: {w}");
    }
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &args.markdown {
        use std::io::Write;
        let new = !p.exists();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .with_context(|| format!("opening {}", p.display()))?;
        if new {
            writeln!(f, "{}", Report::MARKDOWN_HEADER)?;
        }
        writeln!(f, "{}", report.markdown_row())?;
    }
    let clean = report.ok == report.requests && report.wrong == 0;
    Ok(if args.strict && !clean {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
