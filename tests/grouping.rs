//! Grouping on real faces: `facerec cluster --json` over the labelled evaluation faces
//! (`tests/data/eval/faces.csv`, identities labelled by eye), scored with BCubed against the
//! labels, as `benches/cluster.py` scores it (the figures are in `models/grouping.md`).
//!
//! The labels' rules are the accuracy test's: an unnamed face (`?`) differs from every named
//! face and from the other faces of its photo, and its relation to unnamed faces of other
//! photos of the same folder is unknown (counted neither way). The collage `bald_guys.jpg`
//! (six faces each of four people in one image) is scored apart: faces of one image are
//! never grouped together, which is right everywhere but there.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;

use facerec_testkit::eval_dir;

struct Row {
    image: String,
    point: Option<(f32, f32)>,
    identity: String,
}

fn rows() -> Vec<Row> {
    let list = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/eval/faces.csv");
    std::fs::read_to_string(list)
        .expect("faces.csv")
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let point =
                (!f[1].is_empty()).then(|| (f[1].parse().expect("x"), f[2].parse().expect("y")));
            Row {
                image: f[0].to_string(),
                point,
                identity: f[3].to_string(),
            }
        })
        .collect()
}

/// A face as `cluster --json` answers it.
struct Found {
    bbox: [f32; 4],
    cluster: Option<u64>,
}

/// `facerec cluster --json` on `images` (relative to the evaluation tree).
fn cluster(images: &[String]) -> HashMap<String, Vec<Found>> {
    let out = Command::new(env!("CARGO_BIN_EXE_facerec"))
        .args(["--log-json", "cluster", "--json"])
        .args(images)
        .current_dir(eval_dir())
        .env("FACEREC_MODELS", facerec_testkit::models_dir())
        .output()
        .expect("facerec runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            let faces = v["faces"]
                .as_array()
                .map(|fs| {
                    fs.iter()
                        .map(|f| Found {
                            bbox: std::array::from_fn(|k| {
                                f["box"][k].as_f64().expect("box") as f32
                            }),
                            cluster: f["cluster"].as_u64(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            (v["image"].as_str().expect("image").to_string(), faces)
        })
        .collect()
}

/// The face a row means: the box holding its point nearest the box's centre, or the
/// largest face when it has none.
fn pick(faces: &[Found], point: Option<(f32, f32)>) -> Option<usize> {
    let area = |f: &Found| f.bbox[2] * f.bbox[3];
    match point {
        None => (0..faces.len()).max_by(|&a, &b| area(&faces[a]).total_cmp(&area(&faces[b]))),
        Some((x, y)) => {
            let centre = |f: &Found| {
                let (cx, cy) = (f.bbox[0] + f.bbox[2] / 2.0, f.bbox[1] + f.bbox[3] / 2.0);
                (cx - x).powi(2) + (cy - y).powi(2)
            };
            (0..faces.len())
                .filter(|&k| {
                    let b = faces[k].bbox;
                    (b[0]..=b[0] + b[2]).contains(&x) && (b[1]..=b[1] + b[3]).contains(&y)
                })
                .min_by(|&a, &b| centre(&faces[a]).total_cmp(&centre(&faces[b])))
        }
    }
}

fn relation(a: &Row, b: &Row) -> Option<bool> {
    match (a.identity.as_str(), b.identity.as_str()) {
        ("?", "?") if a.image == b.image => Some(false),
        ("?", "?") => {
            let folder = |r: &Row| Path::new(&r.image).parent().map(Path::to_path_buf);
            (folder(a) != folder(b)).then_some(false)
        }
        ("?", _) | (_, "?") => Some(false),
        (x, y) => Some(x == y),
    }
}

/// BCubed (precision, recall) over `items` (a row and its face's group; `None`: alone).
fn bcubed(items: &[(&Row, Option<u64>)]) -> (f64, f64) {
    let (mut p, mut r) = (0.0, 0.0);
    for (i, (a, ga)) in items.iter().enumerate() {
        let together = |j: usize| j == i || (ga.is_some() && items[j].1 == *ga);
        let same = |j: usize| j == i || relation(a, items[j].0) == Some(true);
        let known = |j: usize| j == i || relation(a, items[j].0).is_some();
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
    let rows = rows();
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

    let items: Vec<(&Row, Option<u64>)> = rows
        .iter()
        .filter_map(|r| {
            let faces = found.get(&r.image)?;
            pick(faces, r.point).map(|k| (r, faces[k].cluster))
        })
        .collect();
    assert!(items.len() >= 150, "{} labelled faces found", items.len());
    let apart: Vec<(&Row, Option<u64>)> = items
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
