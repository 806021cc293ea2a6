//! Loading the engine from its flags.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use facerec_engine::tune::{self, TuneOptions};
use facerec_engine::{BackendKind, DecodeLimits, Engine, EngineConfig};

use crate::cli::engine::{BatchSize, EngineArgs};
use crate::cli::shared::ModelsArg;

/// The models directory: the flag (`--models`, `FACEREC_MODELS`), else the first of
/// `./models`; `models/` beside the binary (a binary copied next to its models);
/// `<prefix>/models` for a binary in `<prefix>/bin` (an install such as
/// `/opt/facerec/{bin,models}`, as the worker AMI is); the `models/` of the source tree
/// it was built from (`cargo install --path .`, or a build run from another directory).
/// An error, naming the flag and the places looked in, where none has the models.
pub fn models_dir(arg: &ModelsArg) -> Result<PathBuf> {
    if let Some(dir) = &arg.dir {
        if !dir.is_dir() {
            bail!(
                "--models {} (FACEREC_MODELS): no such directory",
                dir.display()
            );
        }
        return Ok(dir.clone());
    }
    let exe = std::env::current_exe().ok();
    let beside = exe.as_ref().and_then(|e| Some(e.parent()?.join("models")));
    let prefix = exe
        .as_ref()
        .and_then(|e| Some(e.parent()?.parent()?.join("models")));
    let source = Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"));
    let candidates: Vec<PathBuf> = [Some(PathBuf::from("models")), beside, prefix, source]
        .into_iter()
        .flatten()
        .collect();
    if let Some(found) = candidates.iter().find(|d| d.join(MARKER).is_file()) {
        return Ok(found.clone());
    }
    let looked: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
    bail!(
        "no models directory found (looked for {MARKER} in {}); give one with --models DIR \
         or FACEREC_MODELS",
        looked.join(", ")
    )
}

/// A file every models directory has.
const MARKER: &str = "face_recognition.onnx";

/// `--batch`'s default on the CPU backends (onnxruntime, flex). A worker takes at most a
/// batch from the queue at once, and the requests of one batch are answered together: with
/// two engine threads on 2 cores, 8 keeps a busy `facerec up` closer to arrival order (p99 /
/// p50 under 100 clients: median 1.23 over 14 runs, against 1.34 at 16) at the same images/s
/// (`benches/RESULTS.md`).
pub const CPU_BATCH: usize = 8;

/// `--batch`'s default on wgpu: a GPU gains from larger batches (`--batch auto` measures
/// the device).
pub const GPU_BATCH: usize = 16;

/// `--batch`'s default for the backend the engine resolved to.
pub fn default_batch(kind: BackendKind) -> usize {
    match kind {
        BackendKind::Wgpu => GPU_BATCH,
        BackendKind::Ort | BackendKind::Flex => CPU_BATCH,
    }
}

/// The batch `--batch` gives before the backend is known: the number, 1 for `auto` (timed
/// after loading), else the CPU backends' default (`build_engine` replaces it with the
/// resolved backend's).
fn batch_before_load(args: &EngineArgs) -> usize {
    match args.batch {
        Some(BatchSize::Fixed(n)) => n.max(1),
        Some(BatchSize::Auto) => 1,
        None => CPU_BATCH,
    }
}

/// The engine for `lanes` threads running batches at once (`EngineConfig::lanes`).
pub fn build_engine(args: &EngineArgs, lanes: usize) -> Result<Engine> {
    let mut config = EngineConfig::new(models_dir(&args.models)?);
    config.lanes = lanes;
    config.backend = args.backend;
    config.detector = args.detector;
    config.recognizer = args.recognizer.weights;
    config.min_score = args.min_score;
    if args.tiny_max < 128 || !args.tiny_max.is_multiple_of(32) {
        bail!(
            "--tiny-max must be a multiple of 32, at least 128 (got {})",
            args.tiny_max
        );
    }
    config.tiny_max = args.tiny_max;
    config.max_batch = batch_before_load(args);
    config.device_prep = args.device_prep;
    config.precision = args.precision;
    config.limits = DecodeLimits {
        max_pixels: args.max_pixels,
        ..DecodeLimits::default()
    };
    config.gallery_search = args.gallery_search;
    let mut engine = Engine::new(config).context("loading the models")?;
    let backend = engine.models().backend();
    let (kind, name) = (backend.kind, backend.name);
    let from = match args.batch {
        Some(BatchSize::Fixed(_)) => "--batch",
        None => {
            engine.set_max_batch(default_batch(kind));
            "the backend's default"
        }
        Some(BatchSize::Auto) => {
            let report = tune::autotune(engine.models(), args.detector, &TuneOptions::default())
                .context("timing the networks for --batch auto")?;
            tracing::info!(
                batch = report.chosen,
                detector = report.detector,
                stop = %report.stop,
                points = report.points.len(),
                "batch autotune chose a batch size"
            );
            engine.set_max_batch(report.chosen);
            "--batch auto"
        }
    };
    tracing::info!(
        batch = engine.config().max_batch,
        backend = name,
        from,
        "batch size"
    );
    Ok(engine)
}

/// Lanes for an offline command over `images` files (`offline::analyze_batches`): one
/// batch's reading and decoding overlap another's networks when there is more than one
/// batch; a single batch keeps the whole machine for itself.
pub fn offline_lanes(args: &EngineArgs, images: usize) -> usize {
    if images > batch_before_load(args) {
        facerec_worker::compute::DEFAULT_THREADS
    } else {
        1
    }
}

/// A server's engine, warmed before it takes work (`Engine::warm_up`), with a log line.
pub fn warmed(engine: Engine) -> Result<Engine> {
    let t = std::time::Instant::now();
    if engine.warm_up().context("warming the networks up")? {
        tracing::info!(
            ms = t.elapsed().as_millis() as u64,
            lanes = engine.config().lanes,
            batch = engine.config().max_batch,
            "networks warmed up"
        );
    }
    Ok(engine)
}
