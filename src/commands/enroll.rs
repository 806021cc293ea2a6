//! `facerec enroll`: the largest face of each image into a gallery file.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use facerec_engine::{ErrorKind, ImageError};

use crate::cli::engine::EngineArgs;
use crate::cli::offline::EnrollArgs;
use crate::support::engine::{build_engine, offline_lanes};
use crate::support::offline::{analyze_paths, load_gallery_for};

pub fn run(args: &EnrollArgs) -> Result<ExitCode> {
    let jobs = match &args.dir {
        Some(dir) => jobs_from_dir(dir)?,
        None => {
            let name = args
                .name
                .clone()
                .context("a NAME is required without --dir")?;
            args.images
                .iter()
                .map(|p| (name.clone(), p.clone()))
                .collect()
        }
    };
    enroll(&args.engine, &args.gallery, jobs, args.json)
}

fn jobs_from_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut jobs = Vec::new();
    let mut people: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .collect();
    people.sort_by_key(|e| e.file_name());
    for person in people {
        let name = person.file_name().to_string_lossy().into_owned();
        let mut files: Vec<PathBuf> = std::fs::read_dir(person.path())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        jobs.extend(files.into_iter().map(|f| (name.clone(), f)));
    }
    if jobs.is_empty() {
        bail!("no images found in the sub-folders of {}", dir.display());
    }
    Ok(jobs)
}

fn enroll(
    args: &EngineArgs,
    gallery_path: &Path,
    jobs: Vec<(String, PathBuf)>,
    json: bool,
) -> Result<ExitCode> {
    let engine = build_engine(args, offline_lanes(args, jobs.len()))?;
    let mut gallery = load_gallery_for(&engine, gallery_path, true)?;
    let paths: Vec<PathBuf> = jobs.iter().map(|j| j.1.clone()).collect();
    let mut names = jobs.iter().map(|j| j.0.clone());
    let (mut added, mut failed) = (0usize, 0usize);
    let mut out = BufWriter::new(std::io::stdout().lock());
    analyze_paths(&engine, &paths, |path, result| {
        let name = names.next().unwrap_or_default();
        let outcome: Result<(), ImageError> = match result {
            Err(e) => Err(e.clone()),
            Ok(a) => match a.faces.first() {
                Some(face) => {
                    gallery.add_face(&name, &face.embedding, face.bbox.side());
                    Ok(())
                }
                None => Err(ImageError::new(
                    ErrorKind::Unusable,
                    "no face found to enroll",
                )),
            },
        };
        match &outcome {
            Ok(()) => added += 1,
            Err(e) => {
                failed += 1;
                if !json {
                    eprintln!("{}: {}", path.display(), e);
                }
            }
        }
        if json {
            let line = match outcome {
                Ok(()) => {
                    serde_json::json!({"image": path.display().to_string(), "identity": name, "enrolled": true})
                }
                Err(e) => {
                    serde_json::json!({"image": path.display().to_string(), "identity": name, "error": e})
                }
            };
            writeln!(out, "{line}")?;
        }
        Ok(())
    })?;
    gallery.save(gallery_path)?;
    if !json {
        writeln!(
            out,
            "enrolled {added} face(s), {failed} failed; gallery {} now has {} identities, {} faces",
            gallery_path.display(),
            gallery.identities().len(),
            gallery.len()
        )?;
    }
    out.flush()?;
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
