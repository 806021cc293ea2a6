//! Command-line interface: one clap derive tree; every flag has an environment variable.
//! The argument types live here, one module per family of commands; `commands/` runs them.

pub mod bench;
pub mod engine;
pub mod faces;
pub mod infra;
pub mod offline;
pub mod scaler;
pub mod serve;
pub mod shared;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "facerec", version, about = "Face recognition at volume")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log as JSON lines on stderr (level from FACEREC_LOG, e.g. `info`).
    #[arg(long, env = "FACEREC_LOG_JSON", global = true)]
    pub log_json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add faces to a gallery file (the largest face of each image).
    Enroll(offline::EnrollArgs),
    /// Recognise the faces in images: `<stem>:<name>` per image (or JSON lines).
    Identify(offline::IdentifyArgs),
    /// Are two faces the same person? (largest face of each image)
    Verify(offline::VerifyArgs),
    /// Face boxes and 128-d embeddings.
    Embed(offline::EmbedArgs),
    /// Group the faces of images into people: who appears where, with no one enrolled.
    Cluster(offline::ClusterArgs),
    /// Recognition worker: pulls requests from SQS, reads uploads from S3, writes results.
    Worker(serve::WorkerCommandArgs),
    /// Create, remove or inspect the AWS resources of `ID`; print their IAM policies.
    Infra(infra::InfraArgs),
    /// The embedded default: web tier + recognition workers in one process, local queue,
    /// filesystem store under --data. No cloud account needed.
    Up(Box<serve::UpArgs>),
    /// Controller: keeps the worker fleet (EC2 or local processes) sized to the backlog.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Scaler(scaler::ScalerCommandArgs),
    /// The load harness: send images to a running edge, report throughput, latency
    /// percentiles, errors and correctness; `bench sweep` tunes batch x workers x clients.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Bench(bench::BenchCommandArgs),
    /// Web tier only, in front of SQS/S3 (or AWS_ENDPOINT_URL).
    Edge(serve::EdgeCommandArgs),
    /// The faces seen in uploads, as the face store keeps them: where a person appears, the
    /// faces like a face, re-tagging, forgetting a bulk job's faces.
    Faces(Box<faces::FacesArgs>),
}
