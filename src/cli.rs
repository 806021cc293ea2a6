//! Command-line interface: one clap derive tree; every flag has an environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use facerec_engine::{BackendChoice, Detector, Precision, Recognizer, SearchChoice, Threshold};

#[derive(Debug, Parser)]
#[command(name = "facerec", version, about = "Face recognition at volume")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log as JSON lines on stderr (level from FACEREC_LOG, e.g. `info`).
    #[arg(long, env = "FACEREC_LOG_JSON", global = true)]
    pub log_json: bool,
}

/// Flags shared by every command that runs the models.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Compute backend: auto (a hardware GPU adapter if present, else onnxruntime when
    /// its library loads, else Burn's pure-Rust CPU backend), wgpu, ort (onnxruntime on the
    /// CPU; library from FACEREC_ORT_LIB or the `onnxruntime` Python package) or cpu (Burn
    /// flex).
    #[arg(long, env = "FACEREC_BACKEND", default_value = "auto")]
    pub backend: BackendChoice,
    /// Directory holding the ONNX models [default: ./models, else the source tree's models/].
    #[arg(long, env = "FACEREC_MODELS")]
    pub models: Option<PathBuf>,
    /// Face detector: auto (tiny for images that look like face crops, at most 200 px and
    /// roughly square; ssd for photos), ssd (every image at 512x512) or tiny (every image,
    /// fastest; misses faces in photos).
    #[arg(long, env = "FACEREC_DETECTOR", default_value = "auto")]
    pub detector: Detector,
    /// Recognition weights: faceapi (face-api's quantised port of dlib's ResNet) or dlib
    /// (dlib's own float model). A gallery only matches the weights that enrolled it.
    #[arg(long, env = "FACEREC_RECOGNIZER", default_value = "faceapi")]
    pub recognizer: Recognizer,
    /// Same-person threshold on the euclidean distance between descriptors: `auto` (0.6,
    /// or 0.5 when the smaller face of the pair is under 64 px; calibrated on real faces,
    /// models/face_recognition.md) or one distance for every face size.
    #[arg(long, env = "FACEREC_THRESHOLD", default_value = "auto")]
    pub threshold: Threshold,
    /// Minimum detector confidence, 0..1.
    #[arg(long, env = "FACEREC_MIN_SCORE", default_value_t = 0.5)]
    pub min_score: f32,
    /// Largest input side of the tiny detector on photos, pixels (a multiple of 32): a
    /// photo is detected at its longer side, at most this (face crops always at 128).
    #[arg(long, env = "FACEREC_TINY_MAX", default_value_t = facerec_engine::engine::TINY_MAX_SIDE)]
    pub tiny_max: u32,
    /// Largest batch per forward pass: a number, or `auto` to time the recognition net and
    /// the detector at batches 1, 2, 4, ... 256 after loading and take the smallest batch
    /// within 90% of the best throughput (a few seconds at start-up; logged at info).
    #[arg(long, env = "FACEREC_BATCH", default_value = "16")]
    pub batch: BatchSize,
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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add faces to a gallery file (the largest face of each image).
    Enroll {
        #[command(flatten)]
        engine: EngineArgs,
        /// Gallery file (created if missing).
        #[arg(long, env = "FACEREC_GALLERY")]
        gallery: PathBuf,
        /// Enroll every sub-folder of DIR as an identity named after the folder.
        #[arg(long, conflicts_with_all = ["name", "images"])]
        dir: Option<PathBuf>,
        /// Identity name.
        #[arg(required_unless_present = "dir")]
        name: Option<String>,
        /// Images of that person.
        #[arg(required_unless_present = "dir")]
        images: Vec<PathBuf>,
        /// One JSON line per image instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Recognise the faces in images: `<stem>:<name>` per image (or JSON lines).
    Identify {
        #[command(flatten)]
        engine: EngineArgs,
        /// Gallery file.
        #[arg(long, env = "FACEREC_GALLERY")]
        gallery: PathBuf,
        #[arg(long)]
        json: bool,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Are two faces the same person? (largest face of each image)
    Verify {
        #[command(flatten)]
        engine: EngineArgs,
        #[arg(long)]
        json: bool,
        /// Headerless CSV of two image paths per line; one answer per line.
        #[arg(long, conflicts_with_all = ["image_a", "image_b"])]
        pairs: Option<PathBuf>,
        #[arg(required_unless_present = "pairs")]
        image_a: Option<PathBuf>,
        #[arg(required_unless_present = "pairs")]
        image_b: Option<PathBuf>,
    },
    /// Face boxes and 128-d embeddings.
    Embed {
        #[command(flatten)]
        engine: EngineArgs,
        #[arg(long)]
        json: bool,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Recognition worker: pulls requests from SQS, reads uploads from S3, writes results.
    Worker {
        #[command(flatten)]
        engine: EngineArgs,
        #[command(flatten)]
        aws: crate::serve::AwsArgs,
        #[command(flatten)]
        worker: crate::serve::WorkerArgs,
    },
    /// Create, remove or inspect the AWS resources of `ID`; print their IAM policies.
    Infra {
        #[command(flatten)]
        aws: crate::serve::AwsArgs,
        #[command(subcommand)]
        action: crate::infra::InfraAction,
    },
    /// The embedded default: web tier + recognition workers in one process, local queue,
    /// filesystem store under --data. No cloud account needed.
    Up {
        #[command(flatten)]
        engine: EngineArgs,
        #[command(flatten)]
        edge: crate::serve::EdgeArgs,
        #[command(flatten)]
        worker: crate::serve::WorkerArgs,
        /// State directory: uploads, results, gallery.
        #[arg(long, env = "FACEREC_DATA", default_value = "facerec-data")]
        data: PathBuf,
        /// In-process workers kept running, sharing the models (0 with --max-workers 0:
        /// the web tier alone).
        #[arg(long, env = "FACEREC_WORKERS", default_value_t = 1)]
        workers: u32,
        /// The local autoscaler adds workers up to this many while a backlog lasts. They
        /// share the one engine, so more of them hold more requests in hand without adding
        /// compute (and answer less in arrival order): 1 unless the store is slow.
        #[arg(long, env = "FACEREC_MAX_WORKERS", default_value_t = 1)]
        max_workers: u32,
        /// Seconds between the local autoscaler's decisions.
        #[arg(long, env = "CHECK_INTERVAL", default_value_t = 5.0)]
        check_interval: f64,
        /// Deliveries after which a failing request is dead-lettered.
        #[arg(long, env = "MAX_RETRIES", default_value_t = 3)]
        max_retries: u32,
        /// Keep every upload under --data/in (by default an upload is deleted once its
        /// result is stored and answered; dead-lettered ones are kept until --retention-hours).
        #[arg(long, env = "FACEREC_KEEP_UPLOADS", value_parser = clap::builder::BoolishValueParser::new())]
        keep_uploads: bool,
        /// Hours that results (and uploads still there) stay under --data before they are
        /// deleted; swept every minute. The gallery is never swept.
        #[arg(long, env = "FACEREC_RETENTION_HOURS", default_value_t = 168.0)]
        retention_hours: f64,
    },
    /// Controller: keeps the worker fleet (EC2 or local processes) sized to the backlog.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Scaler {
        #[command(subcommand)]
        command: Option<crate::scale::ScalerCommand>,
        #[command(flatten)]
        args: Box<crate::scale::ScalerArgs>,
    },
    /// The load harness: send images to a running edge, report throughput, latency
    /// percentiles, errors and correctness; `bench sweep` tunes batch x workers x clients.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Bench {
        #[command(subcommand)]
        command: Option<crate::bench::BenchCommand>,
        #[command(flatten)]
        args: Box<crate::bench::BenchArgs>,
    },
    /// Web tier only, in front of SQS/S3 (or AWS_ENDPOINT_URL).
    Edge {
        #[command(flatten)]
        aws: crate::serve::AwsArgs,
        #[command(flatten)]
        edge: crate::serve::EdgeArgs,
        /// Directory holding the ONNX models (for the recognition model's id).
        #[arg(long, env = "FACEREC_MODELS")]
        models: Option<PathBuf>,
        /// The workers' recognition weights (faceapi or dlib), for the gallery's model id.
        #[arg(long, env = "FACEREC_RECOGNIZER", default_value = "faceapi")]
        recognizer: Recognizer,
        #[arg(long, env = "FACEREC_THRESHOLD", default_value = "auto")]
        threshold: Threshold,
    },
}
