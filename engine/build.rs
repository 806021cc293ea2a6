//! Generates the Burn model code from the committed ONNX files (burn-onnx `ModelGen`).
//! Only the code is used from here: weights are loaded at run time from the models
//! directory the user configures (see `src/models.rs`).

use std::path::Path;

use burn_onnx::{LoadStrategy, ModelGen};

/// The ONNX models compiled into the engine (`models/<name>.onnx`).
const MODELS: [&str; 4] = [
    "ssd_mobilenetv1",
    "tiny_face_detector",
    "face_landmark_68",
    "face_recognition",
];

fn main() {
    // Read at run time, not with env!(): a build script binary compiled for one checkout
    // is reused by cargo for another checkout sharing the same target directory.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let models_dir = Path::new(&manifest_dir).join("../models");
    let mut model_gen = ModelGen::new();
    for name in MODELS {
        let onnx = models_dir.join(format!("{name}.onnx"));
        println!("cargo:rerun-if-changed={}", onnx.display());
        model_gen.input(onnx.to_str().expect("the repository path is UTF-8"));
    }
    model_gen
        .out_dir("model/")
        .load_strategy(LoadStrategy::None)
        .run_from_script();
}
