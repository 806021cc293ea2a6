//! The flags of every command that runs the models.

use clap::Args;
use facerec_engine::{BackendChoice, Detector, Precision, SearchChoice};

use super::shared::{ModelsArg, RecognizerArg, ThresholdArg};

/// Flags shared by every command that runs the models.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Compute backend: auto (a hardware GPU adapter if present, else onnxruntime when
    /// its library loads, else Burn's pure-Rust CPU backend), wgpu, ort (onnxruntime on the
    /// CPU; library from FACEREC_ORT_LIB or the `onnxruntime` Python package) or cpu (Burn
    /// flex).
    #[arg(long, env = "FACEREC_BACKEND", default_value = "auto")]
    pub backend: BackendChoice,
    #[command(flatten)]
    pub models: ModelsArg,
    /// Face detector: auto (tiny for images that look like face crops, at most 200 px and
    /// roughly square; ssd for photos), ssd (every image at 512x512) or tiny (every image,
    /// fastest; misses faces in photos).
    #[arg(long, env = "FACEREC_DETECTOR", default_value = "auto")]
    pub detector: Detector,
    #[command(flatten)]
    pub recognizer: RecognizerArg,
    #[command(flatten)]
    pub threshold: ThresholdArg,
    /// Minimum detector confidence, 0..1.
    #[arg(long, env = "FACEREC_MIN_SCORE", default_value_t = 0.5)]
    pub min_score: f32,
    /// Largest input side of the tiny detector on photos, pixels (a multiple of 32): a
    /// photo is detected at its longer side, at most this (face crops always at 128).
    #[arg(long, env = "FACEREC_TINY_MAX", default_value_t = facerec_engine::pipeline::TINY_MAX_SIDE)]
    pub tiny_max: u32,
    /// Largest batch per forward pass: a number, or `auto` to time the recognition net and
    /// the detector at batches 1, 2, 4, ... 256 after loading and take the smallest batch
    /// within 90% of the best throughput (a few seconds at start-up; logged at info).
    /// Default: 8 on the CPU backends (onnxruntime, flex), 16 on wgpu.
    #[arg(long, env = "FACEREC_BATCH")]
    pub batch: Option<BatchSize>,
    /// Float precision of the recognition network: f32, or f16 (half the memory traffic;
    /// descriptors move by about 1e-3; needs a device with f16 support).
    #[arg(long, env = "FACEREC_PRECISION", default_value = "f32")]
    pub precision: Precision,
    /// On the wgpu backend, pre-process on the GPU (WGSL warp: images go up once, the
    /// networks' inputs never come back); false pre-processes on the CPU (rayon), with
    /// the same resampling.
    #[arg(long, env = "FACEREC_DEVICE_PREP", default_value_t = true, action = clap::ArgAction::Set)]
    pub device_prep: bool,
    /// Largest accepted image, in pixels (width x height); larger ones are rejected unread.
    #[arg(long, env = "FACEREC_MAX_PIXELS", default_value_t = 64 * 1024 * 1024)]
    pub max_pixels: u64,
    /// Where gallery search runs: auto (the GPU when the backend resolved to wgpu on a
    /// hardware adapter and the gallery has at least 4096 faces, else the CPU), gpu (always,
    /// a software adapter too; an error at start when none opens) or cpu.
    #[arg(long, env = "FACEREC_GALLERY_SEARCH", default_value = "auto")]
    pub gallery_search: SearchChoice,
}

/// `--batch`: a fixed batch size, or `auto` (see `facerec_engine::tune`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    Auto,
    Fixed(usize),
}

impl std::str::FromStr for BatchSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
        match s.parse::<usize>() {
            Ok(0) => Err("the batch size must be at least 1 (or auto)".into()),
            Ok(n) => Ok(Self::Fixed(n)),
            Err(_) => Err(format!(
                "{s:?} is not a batch size: a positive whole number, or auto"
            )),
        }
    }
}
