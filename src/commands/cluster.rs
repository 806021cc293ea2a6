//! `facerec cluster`: the faces of images grouped into people (`grouping::group`), with no
//! one enrolled; with a gallery, enrolled people are named and only the others grouped.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use facerec_contract::grouping::{self, Member, Params, Placement};
use facerec_contract::report::FaceQuality;
use facerec_engine::report::{self, ImageReport};

use crate::cli::offline::ClusterArgs;
use crate::support::engine::{build_engine, offline_lanes};
use crate::support::offline::{analyze_batches, load_gallery_for};

/// A face to group: where it is in the reports, and what the grouping needs.
struct Unnamed {
    image: usize,
    index: u32,
    embedding: Vec<f32>,
    side: f32,
    quality: FaceQuality,
}

pub fn run(args: &ClusterArgs) -> Result<ExitCode> {
    let images = match &args.dir {
        Some(dir) => {
            let found = images_under(dir)?;
            if found.is_empty() {
                bail!("no images found under {}", dir.display());
            }
            found
        }
        None => args.images.clone(),
    };
    let engine = build_engine(&args.engine, offline_lanes(&args.engine, images.len()))?;
    let gallery = match &args.gallery {
        Some(path) => Some(load_gallery_for(&engine, path, false)?),
        None => None,
    };
    let threshold = args.engine.threshold.rule;
    let mut reports: Vec<ImageReport> = Vec::with_capacity(images.len());
    let mut unnamed: Vec<Unnamed> = Vec::new();
    analyze_batches(&engine, &images, |paths, results| {
        let matches = report::match_faces(engine.matcher(), gallery.as_ref(), results);
        for ((path, result), found) in paths.iter().zip(results).zip(matches) {
            let r = report::report(
                &path.display().to_string(),
                *result,
                found,
                threshold,
                false,
            );
            if let (Ok(analysis), Some(faces)) = (result, &r.faces) {
                for (k, (face, answer)) in analysis.faces.iter().zip(faces).enumerate() {
                    if answer.identity.is_none() {
                        unnamed.push(Unnamed {
                            image: reports.len(),
                            index: k as u32,
                            embedding: face.embedding.clone(),
                            side: face.bbox.side(),
                            quality: face.quality,
                        });
                    }
                }
            }
            reports.push(r);
        }
        Ok(())
    })?;

    let members: Vec<Member> = unnamed
        .iter()
        .map(|u| Member {
            image: &reports[u.image].image,
            index: u.index,
            embedding: &u.embedding,
            side: u.side,
            quality: Some(u.quality),
        })
        .collect();
    let grouping = grouping::group(&members, &Params::DEFAULT);
    // Groups numbered 1.. in the order of their ids (which do not depend on the input's order).
    let mut ids: Vec<u32> = grouping
        .placements
        .iter()
        .filter_map(|p| p.group())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let number = |g: u32| ids.binary_search(&g).map(|k| k as u32 + 1).ok();
    let mut placement: BTreeMap<(usize, u32), Placement> = BTreeMap::new();
    for (u, p) in unnamed.iter().zip(&grouping.placements) {
        placement.insert((u.image, u.index), *p);
    }
    let cluster_of = |image: usize, index: u32| -> Option<u32> {
        placement
            .get(&(image, index))
            .and_then(|p| p.group())
            .and_then(number)
    };

    let mut out = BufWriter::new(std::io::stdout().lock());
    let failed = reports.iter().filter(|r| r.error.is_some()).count();
    if args.json {
        for (i, r) in reports.iter().enumerate() {
            let mut v = serde_json::to_value(r)?;
            if let Some(faces) = v.get_mut("faces").and_then(|f| f.as_array_mut()) {
                for (k, f) in faces.iter_mut().enumerate() {
                    f["cluster"] = cluster_of(i, k as u32).into();
                }
            }
            writeln!(out, "{v}")?;
        }
    } else {
        let mut groups: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for (i, r) in reports.iter().enumerate() {
            if let Some(e) = &r.error {
                eprintln!("{}: {e}", r.image);
            }
            for k in 0..r.faces.as_ref().map_or(0, Vec::len) {
                if let Some(g) = cluster_of(i, k as u32) {
                    groups
                        .entry(g)
                        .or_default()
                        .push(format!("{}#{k}", r.image));
                }
            }
        }
        for (g, faces) in &groups {
            writeln!(
                out,
                "person {g} ({} faces): {}",
                faces.len(),
                faces.join(" ")
            )?;
        }
    }
    out.flush()?;
    let count =
        |want: fn(&Placement) -> bool| grouping.placements.iter().filter(|p| want(p)).count();
    eprintln!(
        "{} images, {} faces not enrolled: {} groups; {} faces alone, {} under the quality floor{}",
        reports.len(),
        unnamed.len(),
        grouping.groups,
        count(|p| *p == Placement::Alone),
        count(|p| *p == Placement::Waiting),
        if failed > 0 {
            format!("; {failed} images could not be read")
        } else {
            String::new()
        }
    );
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Every file under `dir`, recursively, in path order (hidden entries skipped).
fn images_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}
