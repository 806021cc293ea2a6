//! `faces`: what the face store keeps of the faces seen.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::engine::EngineArgs;
use super::shared::DatabaseArg;

/// Stored faces: where a person appears, the seen faces like a face, re-tagging, forgetting
/// a bulk job's faces, the unknown faces grouped into people.
#[derive(Debug, Args)]
pub struct FacesArgs {
    /// State directory of `facerec up`: its face store is `--data/faces.db` when no
    /// `--database-url` is given.
    #[arg(long, env = "FACEREC_DATA", default_value = "facerec-data")]
    pub data: PathBuf,
    #[command(flatten)]
    pub database: DatabaseArg,
    /// The collection to work in (`/v1/collections/{collection}/…` of the API).
    #[arg(long, default_value = "default")]
    pub collection: String,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(subcommand)]
    pub action: FacesAction,
}

#[derive(Debug, Subcommand)]
pub enum FacesAction {
    /// Where an identity was recognised in what was uploaded, newest first (JSON lines).
    Appearances {
        name: String,
        /// Most faces listed (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Only faces with an id below this one (the last id of the previous page).
        #[arg(long)]
        before: Option<i64>,
    },
    /// The seen faces nearest to the largest face of an image, or to a seen face (JSON
    /// lines, nearest first; exact).
    Similar {
        /// An image: its largest face is searched for (the models run here).
        #[arg(long, conflicts_with = "id", required_unless_present = "id")]
        image: Option<PathBuf>,
        /// A seen face's id (left out of the answer).
        #[arg(long)]
        id: Option<i64>,
        /// How many (1 to 1000).
        #[arg(short, long, default_value_t = 10)]
        k: usize,
        /// Only the faces of this bulk job.
        #[arg(long)]
        batch: Option<String>,
        /// Only faces seen at or after this time (ms since 1970).
        #[arg(long)]
        since_ms: Option<i64>,
        /// Only faces seen before this time (ms since 1970).
        #[arg(long)]
        until_ms: Option<i64>,
    },
    /// How far the seen faces have followed the gallery's changes (JSON); with `--run`,
    /// brings them up to date here, showing progress (the edges do it in the background).
    Retag {
        #[arg(long)]
        run: bool,
    },
    /// Forgets the faces seen in a bulk job.
    ForgetBatch { id: String },
    /// The collections, with their identities and enrolled faces (JSON lines).
    Collections,
    /// The unknown faces grouped into people, largest group first (JSON lines: each
    /// group's id, size, the faces to show it by and its faces' ids); how many faces are
    /// grouped, alone or waiting on stderr. Name, merge, split and reject through the API.
    Groups {
        /// Most groups listed.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}
