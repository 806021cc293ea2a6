//! `enroll`, `identify`, `verify`, `embed`: the offline commands.

use std::path::PathBuf;

use clap::Args;

use super::engine::EngineArgs;

/// Add faces to a gallery file (the largest face of each image).
#[derive(Debug, Args)]
pub struct EnrollArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Gallery file (created if missing).
    #[arg(long, env = "FACEREC_GALLERY")]
    pub gallery: PathBuf,
    /// Enroll every sub-folder of DIR as an identity named after the folder.
    #[arg(long, conflicts_with_all = ["name", "images"])]
    pub dir: Option<PathBuf>,
    /// Identity name.
    #[arg(required_unless_present = "dir")]
    pub name: Option<String>,
    /// Images of that person.
    #[arg(required_unless_present = "dir")]
    pub images: Vec<PathBuf>,
    /// One JSON line per image instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// Recognise the faces in images: `<stem>:<name>` per image (or JSON lines).
#[derive(Debug, Args)]
pub struct IdentifyArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Gallery file.
    #[arg(long, env = "FACEREC_GALLERY")]
    pub gallery: PathBuf,
    #[arg(long)]
    pub json: bool,
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

/// Are two faces the same person? (largest face of each image)
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    #[arg(long)]
    pub json: bool,
    /// Headerless CSV of two image paths per line; one answer per line.
    #[arg(long, conflicts_with_all = ["image_a", "image_b"])]
    pub pairs: Option<PathBuf>,
    #[arg(required_unless_present = "pairs")]
    pub image_a: Option<PathBuf>,
    #[arg(required_unless_present = "pairs")]
    pub image_b: Option<PathBuf>,
}

/// Face boxes and 128-d embeddings.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    #[arg(long)]
    pub json: bool,
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

/// Group the faces of images into people: who appears where, with no one enrolled.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Gallery file: faces of enrolled people are named, not grouped.
    #[arg(long, env = "FACEREC_GALLERY")]
    pub gallery: Option<PathBuf>,
    /// One JSON line per image, in `identify --json`'s shape, each face with a `cluster`
    /// field: its group's id, or `null` (left alone, or under the quality floor).
    #[arg(long)]
    pub json: bool,
    /// Every image under DIR (recursively) instead of a list.
    #[arg(long, conflicts_with = "images")]
    pub dir: Option<PathBuf>,
    #[arg(required_unless_present = "dir")]
    pub images: Vec<PathBuf>,
}
