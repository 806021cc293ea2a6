//! `facerec embed`: face boxes and 128-d descriptors.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::cli::engine::EngineArgs;
use crate::cli::offline::EmbedArgs;
use crate::support::engine::{build_engine, offline_lanes};
use crate::support::offline::print_reports;

pub fn run(args: &EmbedArgs) -> Result<ExitCode> {
    embed(&args.engine, &args.images, args.json)
}

fn embed(args: &EngineArgs, images: &[PathBuf], json: bool) -> Result<ExitCode> {
    let engine = build_engine(args, offline_lanes(args, images.len()))?;
    print_reports(&engine, images, None, args.threshold.rule, json, true)
}
