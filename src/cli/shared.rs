//! Flags that several commands take, each declared once and flattened where it is used
//! (`#[command(flatten)]`), so a name, its environment variable, default and help agree.

use std::path::PathBuf;

use clap::Args;
use facerec_engine::{Recognizer, Threshold};
use facerec_seams::aws::AwsSettings;

/// `MAX_RETRIES`.
#[derive(Debug, Clone, Copy, Args)]
pub struct Retries {
    /// Deliveries after which a failing request is dead-lettered; where AWS is called, also
    /// the retries of a failed AWS call (standard retry mode).
    #[arg(long, env = "MAX_RETRIES", default_value_t = 3)]
    pub max_retries: u32,
}

/// How AWS is reached: `AWS_REGION`, `AWS_ENDPOINT_URL`, `MAX_RETRIES`.
#[derive(Debug, Clone, Args)]
pub struct AwsClientArgs {
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub region: String,
    /// An AWS-compatible endpoint (an emulator such as moto); AWS itself when unset.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint: Option<String>,
    #[command(flatten)]
    pub retries: Retries,
}

impl AwsClientArgs {
    pub fn settings(&self) -> AwsSettings {
        AwsSettings {
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            max_retries: self.retries.max_retries,
        }
    }
}

/// `FACEREC_MODELS`.
#[derive(Debug, Clone, Args)]
pub struct ModelsArg {
    /// Directory holding the ONNX models [default: the first that has them of ./models,
    /// models/ beside the binary, <prefix>/models for <prefix>/bin/facerec (an install such
    /// as /opt/facerec/{bin,models}), and the source tree's models/ it was built from].
    #[arg(id = "models", long = "models", env = "FACEREC_MODELS")]
    pub dir: Option<PathBuf>,
}

/// `FACEREC_RECOGNIZER`.
#[derive(Debug, Clone, Copy, Args)]
pub struct RecognizerArg {
    /// Recognition weights: faceapi (face-api's quantised port of dlib's ResNet) or dlib
    /// (dlib's own float model). A gallery only matches the weights that enrolled it.
    #[arg(
        long = "recognizer",
        env = "FACEREC_RECOGNIZER",
        default_value = "faceapi"
    )]
    pub weights: Recognizer,
}

/// `FACEREC_THRESHOLD`.
#[derive(Debug, Clone, Copy, Args)]
pub struct ThresholdArg {
    /// Same-person threshold on the euclidean distance between descriptors: `auto` (0.6,
    /// or 0.5 when the smaller face of the pair is under 64 px; calibrated on real faces,
    /// models/face_recognition.md) or one distance in (0, 2] for every face size.
    #[arg(
        id = "threshold",
        long = "threshold",
        env = "FACEREC_THRESHOLD",
        default_value = "auto"
    )]
    pub rule: Threshold,
}

/// `FACEREC_API_KEY`.
#[derive(Debug, Clone, Args)]
pub struct ApiKeyArg {
    /// The edge's API key: when a server has one, gallery changes and batches need
    /// `Authorization: Bearer <key>`; clients send it.
    #[arg(
        id = "api_key",
        long = "api-key",
        env = "FACEREC_API_KEY",
        hide_env_values = true
    )]
    pub key: Option<String>,
}

/// `DATABASE_URL`: the face store.
#[derive(Clone, Args)]
pub struct DatabaseArg {
    /// The face store (enrolled identities and their faces):
    /// `postgres://USER:PASSWORD@HOST:PORT/DB`, the database a fleet's edges and workers
    /// share (on AWS an RDS or Aurora PostgreSQL), or `sqlite:PATH`. `facerec up` keeps
    /// SQLite at `--data/faces.db` without it; `edge` and `worker` without it match
    /// against the gallery object of earlier versions, read-only.
    #[arg(
        id = "database_url",
        long = "database-url",
        env = "DATABASE_URL",
        hide_env_values = true
    )]
    pub url: Option<String>,
}

impl std::fmt::Debug for DatabaseArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseArg")
            .field(
                "url",
                &self.url.as_deref().map(facerec_seams::faces::redact),
            )
            .finish()
    }
}
