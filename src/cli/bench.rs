//! `bench`, `bench sweep`, `bench models`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use facerec_engine::{BackendChoice, Detector};
use facerec_loadgen::Route;

use super::shared::{ApiKeyArg, ModelsArg, RecognizerArg};

/// The load harness: send images to a running edge, report throughput, latency
/// percentiles, errors and correctness; `bench sweep` tunes batch x workers x clients.
#[derive(Debug, Args)]
pub struct BenchCommandArgs {
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    #[command(flatten)]
    pub args: Box<BenchArgs>,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Start a fresh `facerec up` per engine batch size x worker count, run the harness at
    /// each concurrency; write sweep.json, sweep.md and sweep.svg (throughput vs p95).
    Sweep(SweepArgs),
    /// Items/s per batch size of each network, of the whole pipeline and of gallery search
    /// (GPU kernel and CPU) on this machine's backend; a markdown table on stdout, `--json`
    /// for the report script; `--autotune` shows what `--batch auto` would choose.
    Models(ModelsArgs),
    /// The face store at scale: a synthetic gallery of --faces faces, then one enrolment
    /// (latency, bytes written) and a start-up (time, peak RSS, in a child process) on
    /// SQLite and, with --database-url, PostgreSQL, beside the gallery file of earlier
    /// versions in the same run; a markdown table on stdout.
    Faces(FacesArgs),
    /// Grouping at scale: --faces descriptors (synthetic people, or read from a file)
    /// grouped from scratch, then --joins more faces added one at a time as they would be
    /// recognised (latency of each); one JSON line on stdout.
    Grouping(GroupingArgs),
}

#[derive(Debug, Args)]
pub struct GroupingArgs {
    /// Faces grouped from scratch (synthetic: --per-person faces of each person).
    #[arg(long, default_value_t = 100_000)]
    pub faces: usize,
    /// Faces per synthetic person.
    #[arg(long, default_value_t = 50)]
    pub per_person: usize,
    /// Faces added one at a time after the full grouping.
    #[arg(long, default_value_t = 1000)]
    pub joins: usize,
    /// Read the descriptors from this file instead (little-endian f32, 128 per face, each
    /// face an image of its own): --faces from the start, then --joins more.
    #[arg(long)]
    pub descriptors: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FacesArgs {
    /// Faces in the gallery.
    #[arg(long, default_value_t = 1_000_000)]
    pub faces: usize,
    /// Faces per identity.
    #[arg(long, default_value_t = 4)]
    pub per_identity: usize,
    /// Enrolments timed (one face each) per store.
    #[arg(long, default_value_t = 20)]
    pub enrolments: usize,
    /// Seen faces recorded per face store (as workers record them, 64 per transaction),
    /// then "where does this person appear?" timed; 0 skips it.
    #[arg(long, default_value_t = 1_000_000)]
    pub seen: usize,
    /// Where the SQLite store and the gallery file are written [default: a temporary
    /// directory].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// A PostgreSQL database to measure as well (its facerec_* tables are dropped first).
    #[command(flatten)]
    pub database: super::shared::DatabaseArg,
    /// Internal: load the store at this URL (or the gallery file at this path) as a
    /// starting process does and print its time and peak RSS.
    #[arg(long, hide = true)]
    pub child_load: Option<String>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The edge to load, e.g. http://127.0.0.1:8000.
    #[arg(
        long,
        env = "FACEREC_BENCH_URL",
        default_value = "http://127.0.0.1:8000"
    )]
    pub url: String,
    /// original (`POST /`), recognize (`POST /v1/recognize`), health (`GET /health`) or
    /// batch (`POST /v1/batches`, results streamed from `/v1/batches/{id}/results`).
    #[arg(long, default_value = "original")]
    pub route: Route,
    /// Folder of images (e.g. the unzipped CSE546 `face_images_1000/`), or a .zip of them
    /// (e.g. `face_images_1000.zip`; extracted with `python3 -m zipfile`).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// CSV of `stem,name` (header skipped) to check the answers against.
    #[arg(long)]
    pub expected: Option<PathBuf>,
    /// Requests in all (images are cycled) [default: one per image].
    #[arg(short = 'n', long)]
    pub requests: Option<usize>,
    /// Concurrent clients (batch route: batches in flight at once).
    #[arg(short = 'c', long, default_value_t = 100)]
    pub concurrency: usize,
    /// Batch route: images per uploaded batch [default: the requests split evenly over the
    /// clients]. At most the edge's bound (10,000).
    #[arg(long)]
    pub batch_files: Option<usize>,
    /// Seconds before a request (batch route: a whole batch) counts as timed out.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    #[command(flatten)]
    pub api_key: ApiKeyArg,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Append the report as a markdown table row here (header when the file is new).
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Exit non-zero when any answer is wrong or not 2xx.
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Folder of images, or a .zip of them (extracted with `python3 -m zipfile`).
    #[arg(long)]
    pub images: PathBuf,
    /// CSV of `stem,name` (header skipped) to check the answers against.
    #[arg(long)]
    pub expected: Option<PathBuf>,
    /// Engine batch sizes to try, comma-separated (`facerec up --batch`, FACEREC_BATCH:
    /// the largest batch per forward pass).
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub batch: Vec<usize>,
    /// Worker counts to try, comma-separated (each run with `--workers W --max-workers W`,
    /// so the local autoscaler keeps the count fixed).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub workers: Vec<u32>,
    /// Concurrent clients to try against each server, comma-separated.
    #[arg(short = 'c', long, value_delimiter = ',', default_value = "8,32,128")]
    pub concurrency: Vec<usize>,
    /// Requests per point (images are cycled) [default: one per image].
    #[arg(short = 'n', long)]
    pub requests: Option<usize>,
    /// The route to load: original, recognize or batch (see `facerec bench --help`).
    #[arg(long, default_value = "original")]
    pub route: Route,
    /// Batch route: images per uploaded batch [default: the requests split evenly over the
    /// clients].
    #[arg(long)]
    pub batch_files: Option<usize>,
    /// A gallery file (`facerec enroll --gallery`) copied into each server's data directory.
    #[arg(long, conflicts_with = "enroll_from_expected")]
    pub gallery: Option<PathBuf>,
    /// Enroll each distinct image (by content) under its expected name through
    /// `POST /v1/identities/{name}/faces` on each server: CSE546's ten distinct photos, as
    /// the original system's gallery held. In a set without repeats that is every image.
    #[arg(long, requires = "expected")]
    pub enroll_from_expected: bool,
    /// Unmeasured images sent to each new server first, at concurrency = batch size
    /// [default: 2 x batch size; 0: none].
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Seconds before a request (batch route: a whole batch) counts as timed out; also each
    /// server's REQUEST_TIMEOUT.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    #[command(flatten)]
    pub api_key: ApiKeyArg,
    /// Folder for sweep.json, sweep.md, sweep.svg and each server's log (created).
    #[arg(long)]
    pub out: PathBuf,
    /// Exit non-zero when any answer of any point is wrong or not 2xx.
    #[arg(long)]
    pub strict: bool,
    /// More arguments for each `facerec up`, after `--` (e.g. `-- --backend cpu`); the
    /// servers also inherit this process's environment.
    #[arg(last = true)]
    pub up_args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Compute backend for the networks: auto (a GPU adapter if present, else CPU), wgpu
    /// or cpu. `search_gpu` always runs on the wgpu adapter when one exists.
    #[arg(long, env = "FACEREC_BACKEND", default_value = "auto")]
    pub backend: BackendChoice,
    #[command(flatten)]
    pub models: ModelsArg,
    /// Detector of the `pipeline` net and of `--autotune`: ssd or tiny.
    #[arg(long, env = "FACEREC_DETECTOR", default_value = "ssd")]
    pub detector: Detector,
    #[command(flatten)]
    pub recognizer: RecognizerArg,
    /// Batch sizes, comma-separated (images per call; queries per call for search).
    #[arg(long, default_value = "1,16,64,256")]
    pub batches: BatchList,
    /// What to time, comma-separated: recognition, ssd, tiny, landmarks, pipeline, search
    /// [default: all; none with --autotune].
    #[arg(long)]
    pub nets: Option<NetList>,
    /// Timed seconds per point, after one unmeasured warm-up call (at least one timed call).
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Gallery rows for `search`: the parity descriptors, each repeated with a small
    /// deterministic perturbation (±0.1 per dimension).
    #[arg(long, default_value_t = 1_000_000)]
    pub gallery_faces: usize,
    /// On wgpu, pre-process the `pipeline` on the GPU (the engine's default) or, with false,
    /// on the CPU: that row is then named `pipeline_host_prep`.
    #[arg(long, env = "FACEREC_DEVICE_PREP", default_value_t = true, action = clap::ArgAction::Set)]
    pub device_prep: bool,
    /// Photos for `pipeline`: a folder or a .zip (extracted with `python3 -m zipfile`)
    /// [default: the PNGs in <models>/parity/].
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Run the batch autotune of `--batch auto` and print its table and choice.
    #[arg(long)]
    pub autotune: bool,
}

/// `--batches`: one or more positive batch sizes.
#[derive(Debug, Clone)]
pub struct BatchList(pub Vec<usize>);

impl std::str::FromStr for BatchList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let sizes = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| match p.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!(
                    "{p:?} is not a batch size (a positive whole number)"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if sizes.is_empty() {
            return Err("give at least one batch size, e.g. 1,16,64".into());
        }
        Ok(Self(sizes))
    }
}

/// One thing to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    Recognition,
    Ssd,
    Tiny,
    Landmarks,
    Pipeline,
    Search,
}

impl Net {
    pub const ALL: [Net; 6] = [
        Net::Recognition,
        Net::Ssd,
        Net::Tiny,
        Net::Landmarks,
        Net::Pipeline,
        Net::Search,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Net::Recognition => "recognition",
            Net::Ssd => "ssd",
            Net::Tiny => "tiny",
            Net::Landmarks => "landmarks",
            Net::Pipeline => "pipeline",
            Net::Search => "search",
        }
    }
}

/// `--nets`: one or more of `Net`, in the order given.
#[derive(Debug, Clone)]
pub struct NetList(pub Vec<Net>);

impl std::str::FromStr for NetList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut nets = Vec::new();
        for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let net = Net::ALL
                .into_iter()
                .find(|n| n.name() == p)
                .ok_or_else(|| {
                    format!(
                        "unknown net {p:?} (recognition, ssd, tiny, landmarks, pipeline, search)"
                    )
                })?;
            if !nets.contains(&net) {
                nets.push(net);
            }
        }
        if nets.is_empty() {
            return Err("give at least one net, e.g. recognition,ssd".into());
        }
        Ok(Self(nets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_lists_and_net_lists_parse_or_explain() {
        let b: BatchList = "1, 16,64".parse().expect("parses");
        assert_eq!(b.0, vec![1, 16, 64]);
        assert!("".parse::<BatchList>().is_err());
        assert!("1,0".parse::<BatchList>().is_err());
        assert!("1,x".parse::<BatchList>().is_err());
        let n: NetList = "search,recognition,search".parse().expect("parses");
        assert_eq!(n.0, vec![Net::Search, Net::Recognition]);
        assert!("".parse::<NetList>().is_err());
        assert!("resnet".parse::<NetList>().is_err());
    }
}
