//! `facerec verify`: are two faces the same person (one pair, or a CSV of pairs)?

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use facerec_engine::report::{self};
use facerec_engine::{ErrorKind, ImageError};

use crate::cli::engine::EngineArgs;
use crate::cli::offline::VerifyArgs;
use crate::support::engine::{build_engine, offline_lanes};
use crate::support::offline::analyze_paths;

pub fn run(args: &VerifyArgs) -> Result<ExitCode> {
    let pairs = match &args.pairs {
        Some(csv) => read_pairs(csv)?,
        None => vec![(
            args.image_a.clone().context("IMAGE_A is required")?,
            args.image_b.clone().context("IMAGE_B is required")?,
        )],
    };
    verify(&args.engine, &pairs, args.json)
}

fn read_pairs(csv: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let text =
        std::fs::read_to_string(csv).with_context(|| format!("reading {}", csv.display()))?;
    let base = csv.parent().unwrap_or(Path::new("."));
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let mut parts = line.split(',').map(str::trim);
            match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => {
                    let resolve = |p: &str| {
                        let p = PathBuf::from(p);
                        if p.is_absolute() || p.exists() {
                            p
                        } else {
                            base.join(p)
                        }
                    };
                    Ok((resolve(a), resolve(b)))
                }
                _ => bail!(
                    "{}:{}: expected two image paths separated by a comma",
                    csv.display(),
                    i + 1
                ),
            }
        })
        .collect()
}

fn verify(args: &EngineArgs, pairs: &[(PathBuf, PathBuf)], json: bool) -> Result<ExitCode> {
    let engine = build_engine(args, offline_lanes(args, 2 * pairs.len()))?;
    // Every distinct image is analysed once, in batches.
    let mut unique: Vec<PathBuf> = pairs
        .iter()
        .flat_map(|(a, b)| [a.clone(), b.clone()])
        .collect();
    unique.sort();
    unique.dedup();
    // The largest face of each image: its descriptor and size (`FaceBox::side`).
    type Found = Result<(Vec<f32>, f32), ImageError>;
    let mut found: std::collections::HashMap<PathBuf, Found> = std::collections::HashMap::new();
    analyze_paths(&engine, &unique, |path, result| {
        let emb = result.map_err(Clone::clone).and_then(|a| {
            a.faces
                .first()
                .map(|f| (f.embedding.clone(), f.bbox.side()))
                .ok_or_else(|| ImageError::new(ErrorKind::Unusable, "no face found"))
        });
        found.insert(path.to_path_buf(), emb);
        Ok(())
    })?;
    let mut failed = 0usize;
    let mut out = BufWriter::new(std::io::stdout().lock());
    for (a, b) in pairs {
        let ea = found
            .get(a)
            .cloned()
            .unwrap_or_else(|| Err(ImageError::new(ErrorKind::Io, "missing")));
        let eb = found
            .get(b)
            .cloned()
            .unwrap_or_else(|| Err(ImageError::new(ErrorKind::Io, "missing")));
        match (ea, eb) {
            (Ok((x, sx)), Ok((y, sy))) => {
                let d = report::distance(&x, &y);
                let rule = args.threshold.rule;
                let same = rule.is_same(d, sx, sy);
                if json {
                    let line = serde_json::json!({
                        "a": a, "b": b, "same": same, "distance": d,
                        "threshold": rule.for_sides(sx, sy),
                        "confidence": rule.confidence(d, sx, sy),
                    });
                    writeln!(out, "{line}")?;
                } else {
                    let verdict = if same { "same" } else { "different" };
                    writeln!(out, "{},{},{verdict},{d:.4}", a.display(), b.display())?;
                }
            }
            (ea, eb) => {
                failed += 1;
                let (which, e) = match (ea, eb) {
                    (Err(e), _) => (a, e),
                    (_, Err(e)) => (b, e),
                    _ => unreachable!("one side failed"),
                };
                if json {
                    let line = serde_json::json!({"a": a, "b": b, "image": which, "error": e});
                    writeln!(out, "{line}")?;
                } else {
                    eprintln!("{}: {e}", which.display());
                    writeln!(out, "{},{},error,", a.display(), b.display())?;
                }
            }
        }
    }
    out.flush()?;
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
