//! `facerec bench`: the load generator (`facerec_loadgen`) against a running edge.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use facerec_loadgen::{self as loadgen, Config, Report, Route};

use crate::cli::bench::BenchArgs;

pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    let addr = args
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    anyhow::ensure!(!addr.contains('/'), "--url is http://host:port");
    let items = match (&args.images, args.route) {
        (Some(dir), _) => loadgen::load(dir, args.expected.as_deref())?,
        (None, Route::Health) => vec![loadgen::Item {
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
        api_key: args.api_key.key.clone(),
        batch_files: args.batch_files,
    };
    let bar = indicatif::ProgressBar::new(requests as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} eta {eta}")
            .context("progress template")?,
    );
    let report: Report = crate::support::runtime::runtime()?.block_on({
        let bar = bar.clone();
        async move { loadgen::run(&config, &items, move || bar.inc(1)).await }
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
