//! Burn vs onnxruntime: every network, run through Burn on the committed parity inputs,
//! must reproduce onnxruntime's outputs on the same ONNX file (produced independently by
//! `models/scripts/make_parity.py`) within the tolerance in `models/parity/parity.json`.

use std::path::{Path, PathBuf};

use facerec_engine::backend::{self, BackendChoice};
use facerec_engine::models::{Models, Precision, Recognizer};
use facerec_engine::prep;
use facerec_engine::{Engine, EngineConfig};
use serde_json::Value;

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn manifest() -> Value {
    let text =
        std::fs::read_to_string(models_dir().join("parity/parity.json")).expect("parity.json");
    serde_json::from_str(&text).expect("valid JSON")
}

fn load_on_cpu(dir: &Path) -> Result<Models, facerec_engine::EngineError> {
    Models::load(
        dir,
        backend::resolve(BackendChoice::Cpu).expect("the CPU backend always resolves"),
    )
}

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The batch input of one model: its PNG files decoded to planar floats, concatenated.
fn input(spec: &Value) -> (Vec<f32>, usize) {
    let files = spec["files"].as_array().expect("files");
    let mut data = Vec::new();
    for f in files {
        let path = models_dir()
            .join("parity")
            .join(f.as_str().expect("file name"));
        let img = image::open(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .to_rgb8();
        data.extend(prep::to_planar(&img));
    }
    (data, files.len())
}

fn expected(spec: &Value, output: &str) -> Vec<f32> {
    let file = spec["outputs"][output]["file"]
        .as_str()
        .expect("output file");
    read_f32(&models_dir().join("parity").join(file))
}

fn assert_close(name: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{name}: output length");
    let (mut worst, mut at) = (0f32, 0usize);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        if d > worst || d.is_nan() {
            (worst, at) = (d, i);
        }
    }
    eprintln!("{name}: max abs diff {worst:.3e} (at {at})");
    assert!(
        worst <= tol,
        "{name}: max abs diff {worst:e} at {at} over {tol:e}"
    );
}

/// onnxruntime as a backend: CI installs the PyPI wheel, so here it must load.
fn load_on_ort(dir: &Path) -> Result<Models, facerec_engine::EngineError> {
    let backend = backend::resolve(BackendChoice::Ort).unwrap_or_else(|e| {
        panic!("{e} (the test command installs onnxruntime: models/scripts/requirements.txt)")
    });
    Models::load(dir, backend)
}

#[test]
fn every_model_matches_onnxruntime_on_the_cpu_backend() {
    every_model_matches_the_reference(&load_on_cpu(&models_dir()).expect("models load"));
}

/// The onnxruntime backend (the Rust `ort` binding on the C library) against the Python
/// reference outputs: the same runtime, so the same numbers to within 1e-4.
#[test]
fn every_model_matches_onnxruntime_on_the_ort_backend() {
    let models = load_on_ort(&models_dir()).expect("models load on onnxruntime");
    assert_eq!(models.backend().name, "ort");
    every_model_matches_the_reference(&models);
}

/// The four networks load at once on onnxruntime: a models folder with one file missing,
/// or one that is not an ONNX graph, is an error that names that file (not a panic, not
/// another file), whichever thread met it.
#[test]
fn a_missing_or_broken_model_is_named_when_loading_on_onnxruntime() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in [
        "ssd_mobilenetv1",
        "tiny_face_detector",
        "face_landmark_68",
        "face_recognition",
    ] {
        let file = format!("{name}.onnx");
        std::fs::copy(models_dir().join(&file), dir.path().join(&file)).expect("copy a model");
    }
    let broken = dir.path().join("face_landmark_68.onnx");
    std::fs::write(&broken, b"not an onnx graph").expect("write");
    let err = load_on_ort(dir.path()).err().expect("a broken model fails");
    let text = err.to_string();
    assert!(
        matches!(err, facerec_engine::EngineError::Model { ref path, .. } if path.ends_with("face_landmark_68.onnx")),
        "{text}"
    );

    std::fs::remove_file(dir.path().join("tiny_face_detector.onnx")).expect("remove");
    std::fs::copy(models_dir().join("face_landmark_68.onnx"), &broken).expect("restore");
    let err = load_on_ort(dir.path())
        .err()
        .expect("a missing model fails");
    let text = err.to_string();
    assert!(
        matches!(err, facerec_engine::EngineError::Model { ref path, .. } if path.ends_with("tiny_face_detector.onnx")),
        "{text}"
    );
}

/// Two lanes (`facerec up`'s two engine threads, each network in two sessions), warmed up
/// as a server warms them (every session at its largest batch), then running every
/// network at the same time: each answers as one lane does, to within 1e-4 of the Python
/// reference.
#[test]
fn two_lanes_at_once_match_onnxruntime_on_the_ort_backend() {
    let backend = backend::resolve_for(BackendChoice::Ort, 2).expect("onnxruntime loads");
    assert_eq!(backend.lanes, 2);
    let models = Models::load(&models_dir(), backend).expect("models load on onnxruntime");
    models
        .warm(4, (16, 128), 16)
        .expect("every session warms up");
    std::thread::scope(|s| {
        let lanes: Vec<_> = (0..2)
            .map(|_| s.spawn(|| every_model_matches_the_reference(&models)))
            .collect();
        for lane in lanes {
            lane.join().expect("a lane matched the reference");
        }
    });
}

/// The models on Burn flex and on onnxruntime, and the parity photo (sample1 letterboxed
/// to 512: its first 341 rows are the photo).
fn flex_ort_and_photo() -> (Models, Models, image::RgbImage) {
    let flex = load_on_cpu(&models_dir()).expect("models load");
    let ort = load_on_ort(&models_dir()).expect("models load on onnxruntime");
    let photo = image::load_from_memory(
        &std::fs::read(models_dir().join("parity/ssd_input.png")).expect("png"),
    )
    .expect("decode")
    .to_rgb8();
    (flex, ort, photo)
}

/// The tiny detector at the other sides the engine runs it at (a face crop at 160, a photo
/// at 608, a non-square batch side): Burn flex against onnxruntime on the same real input.
#[test]
fn tiny_detector_at_other_sides_matches_onnxruntime() {
    let (flex, ort, photo) = flex_ort_and_photo();
    for side in [128u32, 160, 608] {
        let (x, _) = prep::letterbox(&photo, side);
        let want = ort
            .tiny_input(ort.input(x.clone(), 1, side))
            .expect("tiny on onnxruntime");
        let got = flex
            .tiny_input(flex.input(x, 1, side))
            .expect("tiny on flex");
        let grid = (side / 32) as usize;
        assert_eq!(want.len(), 25 * grid * grid, "side {side}");
        assert_close(&format!("tiny at {side}"), &got, &want, 1e-4);
    }
}

/// SSD on the top-left cut of its square (the rows and columns a letterboxed photo covers):
/// Burn flex against onnxruntime on the same real input (the anchors cut in the graph by
/// `Shape` + `Slice`), and the faces the same as on the whole square.
#[test]
fn ssd_on_a_cut_input_matches_onnxruntime() {
    let (flex, ort, photo) = flex_ort_and_photo();
    let faces = |boxes: &[f32], scores: &[f32]| -> Vec<[i32; 4]> {
        let mut f: Vec<[i32; 4]> = scores
            .iter()
            .enumerate()
            .filter(|&(_, &s)| s > 0.5)
            .map(|(i, _)| std::array::from_fn(|k| (boxes[i * 4 + k] * 512.0).round() as i32))
            .collect();
        f.sort();
        f
    };
    let (square, _) = prep::letterbox(&photo, 512);
    let (full_boxes, full_scores) = ort.ssd(square, 1).expect("ssd on onnxruntime");
    for (w, h) in [(512u32, 352u32), (512, 384), (352, 512)] {
        let mut x = vec![0f32; (3 * w * h) as usize];
        prep::letterbox_cut_into(&photo, 512, w, h, &mut x);
        let (want_boxes, want_scores) = ort
            .ssd_input(facerec_engine::net::NetInput::host(x.clone(), 1, h, w))
            .expect("ssd on onnxruntime");
        let (boxes, scores) = flex
            .ssd_input(facerec_engine::net::NetInput::host(x, 1, h, w))
            .expect("ssd on flex");
        assert!(
            want_scores.len() < 5118,
            "{w}x{h}: {} anchors",
            want_scores.len()
        );
        assert_close(&format!("ssd boxes at {w}x{h}"), &boxes, &want_boxes, 1e-4);
        assert_close(
            &format!("ssd scores at {w}x{h}"),
            &scores,
            &want_scores,
            1e-4,
        );
        if w == 512 {
            let (a, b) = (faces(&full_boxes, &full_scores), faces(&boxes, &scores));
            assert!(a.len() >= 3, "{a:?}");
            assert_eq!(a.len(), b.len(), "{w}x{h}");
            for (p, q) in a.iter().zip(&b) {
                assert!(
                    (0..4).all(|k| (p[k] - q[k]).abs() <= 1),
                    "{w}x{h}: {p:?} vs {q:?}"
                );
            }
        }
    }
}

fn every_model_matches_the_reference(models: &Models) {
    let m = manifest();
    let spec = |name: &str| m["models"][name].clone();
    let tol = |s: &Value| s["tolerance_abs"].as_f64().expect("tolerance") as f32;

    let s = spec("ssd_mobilenetv1");
    let (x, n) = input(&s["inputs"]["input"]);
    let (boxes, scores) = models.ssd(x, n).expect("ssd runs");
    assert_close("ssd boxes", &boxes, &expected(&s, "boxes"), tol(&s));
    assert_close("ssd scores", &scores, &expected(&s, "scores"), tol(&s));

    let s = spec("tiny_face_detector");
    let (x, n) = input(&s["inputs"]["input"]);
    let raw = models.tiny(x, n).expect("tiny runs");
    assert_close("tiny raw", &raw, &expected(&s, "raw"), tol(&s));

    let s = spec("face_landmark_68");
    let (x, n) = input(&s["inputs"]["input"]);
    let lm = models.landmarks(x, n).expect("landmarks run");
    assert_close("landmarks", &lm, &expected(&s, "landmarks"), tol(&s));

    let s = spec("face_recognition");
    let (x, n) = input(&s["inputs"]["input"]);
    let d = models.embed(x.clone(), n).expect("recognition runs");
    assert_close("descriptors", &d, &expected(&s, "descriptor"), tol(&s));

    // Batch 1 gives the same answer as the batch: rows are independent.
    let one = models
        .embed(x[..3 * 150 * 150].to_vec(), 1)
        .expect("batch of one");
    assert_close(
        "descriptor batch 1",
        &one,
        &expected(&s, "descriptor")[..128],
        tol(&s),
    );
}

/// The optional f16 recognition network against onnxruntime's f32 descriptors: the
/// accuracy cost of half precision, per descriptor, far below the 0.5 same-person
/// threshold.
#[test]
fn f16_recognition_stays_near_onnxruntime_f32() {
    let cpu = backend::resolve(BackendChoice::Cpu).expect("the CPU backend always resolves");
    let models =
        Models::load_with_precision(&models_dir(), cpu, Recognizer::FaceApi, Precision::F16)
            .expect("f16 recognition loads on the CPU backend");
    assert_eq!(models.precision(), Precision::F16);
    let s = manifest()["models"]["face_recognition"].clone();
    let (x, n) = input(&s["inputs"]["input"]);
    let got = models.embed(x, n).expect("f16 recognition runs");
    let want = expected(&s, "descriptor");
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got
        .chunks_exact(128)
        .zip(want.chunks_exact(128))
        .enumerate()
    {
        let distance = facerec_engine::report::distance(g, w);
        eprintln!("chip {i}: f16 vs f32 descriptor distance {distance:.2e}");
        assert!(distance <= F16_MAX_DISTANCE, "chip {i}: {distance}");
    }
    assert_close("f16 descriptors", &got, &want, F16_MAX_ABS);
}

/// Half precision keeps 11 significant bits: on the parity chips the descriptors moved by
/// at most 3.6e-4 per component and 1.4e-3 in distance (Burn flex, 2026-11-23). The bounds
/// leave about 3x headroom.
const F16_MAX_ABS: f32 = 1e-3;
const F16_MAX_DISTANCE: f32 = 5e-3;

#[test]
fn model_ids_are_the_onnx_sha256_recorded_by_the_reference() {
    let models = load_on_cpu(&models_dir()).expect("models load");
    let m = manifest();
    assert_eq!(
        models.recognition_id(),
        m["models"]["face_recognition"]["model_sha256"]
            .as_str()
            .expect("sha"),
    );
}

#[test]
fn a_missing_models_directory_is_a_clear_error() {
    let err = load_on_cpu(Path::new("/nonexistent/models"))
        .err()
        .expect("must fail");
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent/models/"), "{msg}");
}

/// dlib's float weights through the same compiled network reproduce dlib's own
/// `compute_face_descriptor` (recorded by `models/scripts/dlib_reference.py`).
#[test]
fn dlib_weights_match_dlib_itself() {
    let text = std::fs::read_to_string(models_dir().join("parity_dlib/reference.json"))
        .expect("parity_dlib/reference.json");
    let reference: Value = serde_json::from_str(&text).expect("valid JSON");
    let models = Models::load_with(
        &models_dir(),
        backend::resolve(BackendChoice::Cpu).expect("the CPU backend always resolves"),
        Recognizer::Dlib,
    )
    .expect("dlib weights load into the recognition network");
    // Galleries made with one set of weights must not match the other's descriptors.
    assert_ne!(
        models.recognition_id(),
        manifest()["models"]["face_recognition"]["model_sha256"]
            .as_str()
            .expect("sha"),
    );
    let inputs = reference["inputs"].as_array().expect("inputs");
    let mut x = Vec::new();
    for i in inputs {
        let path = models_dir().join(i["file"].as_str().expect("file"));
        x.extend(prep::to_planar(
            &image::open(&path).expect("chip").to_rgb8(),
        ));
    }
    let got = models.embed(x, inputs.len()).expect("recognition runs");
    let want: Vec<f32> = reference["descriptors"]
        .as_array()
        .expect("descriptors")
        .iter()
        .flat_map(|d| d.as_array().expect("descriptor").iter())
        .map(|v| v.as_f64().expect("number") as f32)
        .collect();
    assert_close("dlib descriptors", &got, &want, 1e-4);
}

/// A server warms the networks up on onnxruntime only (`Engine::warm_up`); Burn's backends
/// build their kernels on first use.
#[test]
fn engines_warm_up_on_onnxruntime() {
    let engine = |backend| {
        let mut config = EngineConfig::new(models_dir());
        config.backend = backend;
        config.lanes = 2;
        config.max_batch = 4;
        Engine::new(config).expect("engine loads")
    };
    assert!(engine(BackendChoice::Ort).warm_up().expect("warms up"));
    assert!(!engine(BackendChoice::Cpu).warm_up().expect("nothing to do"));
}
