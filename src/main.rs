//! `facerec`: one binary, several roles (see `docs/interfaces.md` and the README). This
//! file parses the command line and dispatches; `cli/` holds the argument types,
//! `commands/` one module per command, `support/` what commands share.

mod cli;
mod commands;
mod support;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use cli::bench::BenchCommand;
use cli::scaler::ScalerCommand;
use cli::{Cli, Command};

fn main() -> ExitCode {
    // `.env` in the working directory is read first; real environment variables win.
    let _ = dotenvy::dotenv();
    let args = Cli::parse();
    init_tracing(args.log_json);
    match dispatch(args.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Enroll(a) => commands::enroll::run(&a),
        Command::Identify(a) => commands::identify::run(&a),
        Command::Verify(a) => commands::verify::run(&a),
        Command::Embed(a) => commands::embed::run(&a),
        Command::Cluster(a) => commands::cluster::run(&a),
        Command::Worker(a) => commands::worker::run(&a),
        Command::Infra(a) => commands::infra::run(&a),
        Command::Up(a) => commands::up::run(&a),
        Command::Edge(a) => commands::edge::run(&a),
        Command::Faces(a) => commands::faces::run(&a),
        Command::Scaler(a) => match a.command {
            Some(ScalerCommand::Simulate(sim)) => commands::simulate::run(&sim),
            None => commands::scaler::run(&a.args),
        },
        Command::Bench(a) => match a.command {
            Some(BenchCommand::Sweep(sweep)) => commands::sweep::run(&sweep),
            Some(BenchCommand::Models(models)) => commands::bench_models::run(&models),
            Some(BenchCommand::Faces(faces)) => commands::bench_faces::run(&faces),
            Some(BenchCommand::Grouping(g)) => commands::bench_grouping::run(&g),
            None => commands::bench::run(&a.args),
        },
    }
}

fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("FACEREC_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
