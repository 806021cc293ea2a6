//! `facerec bench grouping`: grouping at scale (`facerec_contract::grouping`).
//!
//! `--faces` descriptors are grouped from scratch (`Grouper::with_faces`, what a full regroup
//! does), then `--joins` more are added one at a time (`Grouper::add`, what a face being
//! recognised costs), each timed. The descriptors are synthetic people — a random direction
//! of length 0.6 each (different people about 0.85 apart) and faces scattered around it
//! (the same person about 0.32 apart), the distances of real descriptors — or read from
//! `--descriptors` (`benches/cluster.py --scale` writes the file it also gives the peer).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use facerec_contract::gallery::DIM;
use facerec_contract::grouping::{Face, Grouper, Params};

use crate::cli::bench::GroupingArgs;

pub fn run(args: &GroupingArgs) -> Result<ExitCode> {
    let total = args.faces + args.joins;
    let descriptors = match &args.descriptors {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            ensure!(
                bytes.len() % (4 * DIM) == 0,
                "{}: not a whole number of {DIM}-float descriptors",
                path.display()
            );
            let floats: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            ensure!(
                floats.len() / DIM >= total,
                "{} holds {} descriptors, --faces + --joins is {total}",
                path.display(),
                floats.len() / DIM
            );
            floats
        }
        None => {
            ensure!(args.per_person > 0, "--per-person must be positive");
            synthetic(total, args.per_person)
        }
    };
    let mut faces: Vec<Face> = descriptors
        .chunks_exact(DIM)
        .take(total)
        .enumerate()
        .map(|(i, e)| Face {
            image: format!("image-{i:08}"),
            index: 0,
            embedding: e.to_vec(),
            side: 100.0,
            quality: None,
            pin: None,
        })
        .collect();
    let joins = faces.split_off(args.faces);

    eprintln!("grouping {} faces from scratch", args.faces);
    let start = Instant::now();
    let mut grouper = Grouper::with_faces(Params::DEFAULT, faces);
    let full = start.elapsed();
    let groups = count_groups(&grouper);
    eprintln!(
        "{groups} groups, {} near pairs, {full:.2?}; adding {} faces one at a time",
        grouper.pairs(),
        joins.len()
    );
    let mut each: Vec<Duration> = joins
        .into_iter()
        .map(|f| {
            let t = Instant::now();
            grouper.add(f);
            t.elapsed()
        })
        .collect();
    each.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: f64| {
        each.get(((each.len() as f64 - 1.0) * q).round() as usize)
            .copied()
    };
    let report = serde_json::json!({
        "faces": args.faces,
        "groups": groups,
        "near_pairs": grouper.pairs(),
        "full_seconds": full.as_secs_f64(),
        "joins": each.len(),
        "join_ms_median": at(0.5).map(ms),
        "join_ms_p99": at(0.99).map(ms),
        "join_ms_max": each.last().copied().map(ms),
        "groups_after_joins": count_groups(&grouper),
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
    });
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

fn count_groups(g: &Grouper) -> usize {
    let mut ids: Vec<u32> = g.placements().iter().filter_map(|p| p.group()).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

/// `n` descriptors of `n / per_person` synthetic people, face `i` of person `i % people`.
fn synthetic(n: usize, per_person: usize) -> Vec<f32> {
    let mut state: u64 = 0x5EED_F00D_CAFE_F00D;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f32 / (1u64 << 53) as f32 - 0.5
    };
    let people = (n / per_person).max(1);
    let centres: Vec<Vec<f32>> = (0..people)
        .map(|_| {
            let v: Vec<f32> = (0..DIM).map(|_| next()).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter().map(|x| x / norm * 0.6).collect()
        })
        .collect();
    (0..n)
        .flat_map(|i| {
            let c = &centres[i % people];
            c.iter().map(|x| x + 0.07 * next()).collect::<Vec<f32>>()
        })
        .collect()
}
