//! The labelled evaluation faces (`tests/data/eval/faces.csv`: identities labelled by eye,
//! images from registry packages under [`crate::eval_dir`]) as the accuracy and grouping
//! tests read them: the rows, which detected face a row means, how two rows relate, and the
//! real binary run over images with its JSON lines back.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use crate::data::{models_dir, repo_root};

/// One row of the list: an image, the point that names one of its faces (or none: the
/// largest), and the person (`?`: unnamed).
#[derive(Debug, Clone)]
pub struct EvalRow {
    pub image: String,
    pub point: Option<(f32, f32)>,
    pub identity: String,
}

impl EvalRow {
    /// Same person (`Some(true)`), different (`Some(false)`) or not known (`None`): unnamed
    /// people differ from everyone named and from the other faces of their photo, and are
    /// not compared with unnamed faces of other photos in the same folder.
    pub fn relation(&self, other: &EvalRow) -> Option<bool> {
        match (self.identity.as_str(), other.identity.as_str()) {
            ("?", "?") if self.image == other.image => Some(false),
            ("?", "?") => {
                let folder = |r: &EvalRow| Path::new(&r.image).parent().map(Path::to_path_buf);
                (folder(self) != folder(other)).then_some(false)
            }
            ("?", _) | (_, "?") => Some(false),
            (x, y) => Some(x == y),
        }
    }
}

/// The rows of `tests/data/eval/faces.csv`, in order.
pub fn eval_rows() -> Vec<EvalRow> {
    let list = repo_root().join("tests/data/eval/faces.csv");
    std::fs::read_to_string(&list)
        .unwrap_or_else(|e| panic!("{}: {e}", list.display()))
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 4, "{l}");
            let point =
                (!f[1].is_empty()).then(|| (f[1].parse().expect("x"), f[2].parse().expect("y")));
            EvalRow {
                image: f[0].to_string(),
                point,
                identity: f[3].to_string(),
            }
        })
        .collect()
}

/// Which of `boxes` (`[x, y, w, h]`) a row means: the box holding its point nearest the
/// box's centre, or the largest when it has none.
pub fn pick(boxes: &[[f32; 4]], point: Option<(f32, f32)>) -> Option<usize> {
    let area = |b: &[f32; 4]| b[2] * b[3];
    match point {
        None => (0..boxes.len()).max_by(|&a, &b| area(&boxes[a]).total_cmp(&area(&boxes[b]))),
        Some((x, y)) => {
            let centre = |b: &[f32; 4]| {
                let (cx, cy) = (b[0] + b[2] / 2.0, b[1] + b[3] / 2.0);
                (cx - x).powi(2) + (cy - y).powi(2)
            };
            (0..boxes.len())
                .filter(|&k| {
                    let b = boxes[k];
                    (b[0]..=b[0] + b[2]).contains(&x) && (b[1]..=b[1] + b[3]).contains(&y)
                })
                .min_by(|&a, &b| centre(&boxes[a]).total_cmp(&centre(&boxes[b])))
        }
    }
}

/// `BIN --log-json ARGS... IMAGES...` run in `dir` with the committed models: each JSON
/// line of its output by its `image`. Panics with its stderr when it fails.
pub fn run_json(
    bin: &str,
    dir: &Path,
    args: &[&str],
    images: &[String],
) -> HashMap<String, serde_json::Value> {
    let out = Command::new(bin)
        .arg("--log-json")
        .args(args)
        .args(images)
        .current_dir(dir)
        .env("FACEREC_MODELS", models_dir())
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
            (v["image"].as_str().expect("image").to_string(), v)
        })
        .collect()
}

/// The faces of one image's JSON answer (none for an error).
pub fn faces_of(answer: &serde_json::Value) -> &[serde_json::Value] {
    answer["faces"].as_array().map_or(&[], Vec::as_slice)
}

/// A face's `box` in a JSON answer.
pub fn face_box(face: &serde_json::Value) -> [f32; 4] {
    std::array::from_fn(|k| face["box"][k].as_f64().expect("box") as f32)
}
