//! `facerec identify`: `<stem>:<name>` per image (or JSON lines).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;

use crate::cli::engine::EngineArgs;
use crate::cli::offline::IdentifyArgs;
use crate::support::engine::{build_engine, offline_lanes};
use crate::support::offline::{load_gallery_for, print_reports};

pub fn run(args: &IdentifyArgs) -> Result<ExitCode> {
    identify(&args.engine, &args.gallery, &args.images, args.json)
}

fn identify(
    args: &EngineArgs,
    gallery_path: &Path,
    images: &[PathBuf],
    json: bool,
) -> Result<ExitCode> {
    let engine = build_engine(args, offline_lanes(args, images.len()))?;
    let gallery = load_gallery_for(&engine, gallery_path, false)?;
    print_reports(
        &engine,
        images,
        Some(&gallery),
        args.threshold.rule,
        json,
        false,
    )
}
