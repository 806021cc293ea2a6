//! `facerec`: one binary, several roles (see `docs/interfaces.md` and the README).

mod bench;
mod bench_models;
mod cli;
mod infra;
mod offline;
mod scale;
mod serve;
mod sweep;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // `.env` in the working directory is read first; real environment variables win.
    let _ = dotenvy::dotenv();
    let args = cli::Cli::parse();
    init_tracing(args.log_json);
    match offline::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
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
