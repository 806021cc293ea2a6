//! `facerec scaler simulate`: replays an arrival trace through the scaling rule.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use facerec_scaler::simulate::{SimConfig, Summary, Tick, parse_trace, simulate};
use facerec_scaler::{Decide, PerMessages, Scaler};

use crate::cli::scaler::{RuleChoice, SimulateArgs};

pub fn run(args: &SimulateArgs) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&args.trace)
        .with_context(|| format!("reading {}", args.trace.display()))?;
    let trace = parse_trace(&text).map_err(|e| anyhow::anyhow!("{}: {e}", args.trace.display()))?;
    anyhow::ensure!(
        args.rate.is_finite() && args.rate > 0.0,
        "--rate must be positive"
    );
    let policy = args.policy.policy()?;
    let cfg = SimConfig {
        tick: args.policy.check_interval,
        boot_delay: args.boot_delay.max(0.0),
        rate: args.rate,
        ..SimConfig::default()
    };
    let mut backlog = Scaler::new(policy.clone());
    let mut baseline = PerMessages {
        per_worker: args.per_worker.max(1),
        max_workers: policy.max_workers,
    };
    let (chosen, other): (&mut dyn Decide, &mut dyn Decide) = match args.rule {
        RuleChoice::Backlog => (&mut backlog, &mut baseline),
        RuleChoice::PerMessages => (&mut baseline, &mut backlog),
    };
    let (ticks, summary) = simulate(&trace, &cfg, chosen);
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", Tick::CSV_HEADER)?;
    for t in &ticks {
        writeln!(out, "{}", t.csv())?;
    }
    let name = |r: RuleChoice| match r {
        RuleChoice::Backlog => "backlog-per-worker".to_string(),
        RuleChoice::PerMessages => format!("one-per-{}-messages", args.per_worker.max(1)),
    };
    eprintln!("{}", summary_line(&name(args.rule), &summary));
    if args.compare {
        let (_, other_summary) = simulate(&trace, &cfg, other);
        let other_rule = match args.rule {
            RuleChoice::Backlog => RuleChoice::PerMessages,
            RuleChoice::PerMessages => RuleChoice::Backlog,
        };
        eprintln!("{}", summary_line(&name(other_rule), &other_summary));
    }
    Ok(ExitCode::SUCCESS)
}

fn summary_line(name: &str, s: &Summary) -> String {
    format!(
        "{name}: arrivals={} worker_seconds={:.0} drain_s={} mean_wait_s={:.1} peak_workers={} direction_changes={}",
        s.arrivals,
        s.worker_seconds,
        s.drain_seconds
            .map_or("never".to_string(), |d| format!("{d:.0}")),
        s.mean_wait,
        s.peak_workers,
        s.direction_changes
    )
}
