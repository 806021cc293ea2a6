//! Grouping on real faces: `facerec cluster --json` over the labelled evaluation faces
//! (`tests/data/eval/faces.csv`, identities labelled by eye), scored with BCubed against the
//! labels, as `benches/cluster.py` scores it (the figures are in `models/grouping.md`).
//!
//! The labels' rules are the accuracy test's: an unnamed face (`?`) differs from every named
//! face and from the other faces of its photo, and its relation to unnamed faces of other
//! photos of the same folder is unknown (counted neither way). The collage `bald_guys.jpg`
//! (six faces each of four people in one image) is scored apart: faces of one image are
//! never grouped together, which is right everywhere but there.

use facerec_testkit::{EvalRow, eval_dir, eval_rows, face_box, faces_of, pick, run_json};
use std::collections::{BTreeMap, HashMap};

/// A face as `cluster --json` answers it.
struct Found {
    bbox: [f32; 4],
    cluster: Option<u64>,
}

/// `facerec cluster --json` on `images` (relative to the evaluation tree).
fn cluster(images: &[String]) -> HashMap<String, Vec<Found>> {
    run_json(
        env!("CARGO_BIN_EXE_facerec"),
        &eval_dir(),
        &["cluster", "--json"],
        images,
    )
    .into_iter()
    .map(|(image, v)| {
        let faces = faces_of(&v)
            .iter()
            .map(|f| Found {
                bbox: face_box(f),
                cluster: f["cluster"].as_u64(),
            })
            .collect();
        (image, faces)
    })
    .collect()
}

/// BCubed (precision, recall) over `items` (a row and its face's group; `None`: alone).
fn bcubed(items: &[(&EvalRow, Option<u64>)]) -> (f64, f64) {
    let (mut p, mut r) = (0.0, 0.0);
    for (i, (a, ga)) in items.iter().enumerate() {
        let together = |j: usize| j == i || (ga.is_some() && items[j].1 == *ga);
        let same = |j: usize| j == i || a.relation(items[j].0) == Some(true);
        let known = |j: usize| j == i || a.relation(items[j].0).is_some();
        let n = items.len();
        let mates_same = (0..n).filter(|&j| together(j) && same(j)).count() as f64;
        let mates_known = (0..n).filter(|&j| together(j) && known(j)).count() as f64;
        let all_same = (0..n).filter(|&j| same(j)).count() as f64;
        p += mates_same / mates_known;
        r += mates_same / all_same;
    }
    (p / items.len() as f64, r / items.len() as f64)
}

#[test]
fn real_faces_group_into_their_people_in_any_order() {
    let rows = eval_rows();
    let mut images: Vec<String> = rows.iter().map(|r| r.image.clone()).collect();
    images.sort();
    images.dedup();
    let found = cluster(&images);

    // Faces of one image are never in one group.
    for (image, faces) in &found {
        let mut seen = BTreeMap::new();
        for (k, f) in faces.iter().enumerate() {
            if let Some(c) = f.cluster {
                assert!(
                    seen.insert(c, k).is_none(),
                    "{image}: two faces in group {c}"
                );
            }
        }
    }

    let items: Vec<(&EvalRow, Option<u64>)> = rows
        .iter()
        .filter_map(|r| {
            let faces = found.get(&r.image)?;
            let boxes: Vec<[f32; 4]> = faces.iter().map(|f| f.bbox).collect();
            pick(&boxes, r.point).map(|k| (r, faces[k].cluster))
        })
        .collect();
    assert!(items.len() >= 150, "{} labelled faces found", items.len());
    let apart: Vec<(&EvalRow, Option<u64>)> = items
        .iter()
        .filter(|(r, _)| !r.image.ends_with("bald_guys.jpg"))
        .copied()
        .collect();
    let (p, r) = bcubed(&apart);
    eprintln!("BCubed without the collage: precision {p:.3}, recall {r:.3}");
    // models/grouping.md's figures.
    assert!(p >= 0.98, "precision {p:.3}");
    assert!(r >= 0.90, "recall {r:.3}");
    let (p_all, r_all) = bcubed(&items);
    eprintln!("BCubed on every labelled face: precision {p_all:.3}, recall {r_all:.3}");
    assert!(p_all >= 0.98, "precision {p_all:.3}");

    // The same faces in another order: the same groups, with the same ids.
    let mut shuffled = images.clone();
    shuffled.reverse();
    let n = shuffled.len();
    for i in 0..n {
        shuffled.swap(i, (i * 7 + 3) % n);
    }
    let again = cluster(&shuffled);
    for (image, faces) in &found {
        let ids: Vec<Option<u64>> = faces.iter().map(|f| f.cluster).collect();
        let theirs: Vec<Option<u64>> = again[image].iter().map(|f| f.cluster).collect();
        assert_eq!(ids, theirs, "{image}");
    }
}
