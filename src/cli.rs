//! Command-line interface: one clap derive tree; every flag has an environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use facerec_engine::{BackendChoice, Detector};

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
    /// Compute backend: auto (a GPU adapter if present, else CPU), wgpu or cpu.
    #[arg(long, env = "FACEREC_BACKEND", default_value = "auto")]
    pub backend: BackendChoice,
    /// Directory holding the ONNX models [default: ./models, else the source tree's models/].
    #[arg(long, env = "FACEREC_MODELS")]
    pub models: Option<PathBuf>,
    /// Face detector: ssd (accurate) or tiny (fast).
    #[arg(long, env = "FACEREC_DETECTOR", default_value = "ssd")]
    pub detector: Detector,
    /// Same-person threshold: euclidean distance between descriptors (models/face_recognition.md).
    #[arg(long, env = "FACEREC_THRESHOLD", default_value_t = facerec_engine::DEFAULT_THRESHOLD)]
    pub threshold: f32,
    /// Minimum detector confidence, 0..1.
    #[arg(long, env = "FACEREC_MIN_SCORE", default_value_t = 0.5)]
    pub min_score: f32,
    /// Largest batch per forward pass.
    #[arg(long, env = "FACEREC_BATCH", default_value_t = 32)]
    pub batch: usize,
    /// Largest accepted image, in pixels (width x height); larger ones are rejected unread.
    #[arg(long, env = "FACEREC_MAX_PIXELS", default_value_t = 64 * 1024 * 1024)]
    pub max_pixels: u64,
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
}
