//! onnxruntime as a compute backend (the `ort` crate, loading `libonnxruntime` at run time:
//! nothing is downloaded at build time and the binary runs without it).
//!
//! Where the library comes from, in order: `FACEREC_ORT_LIB` (the file, or a directory
//! holding it), `ORT_DYLIB_PATH`, `libonnxruntime.so` beside the executable or in its
//! `../lib`, the `onnxruntime` Python package that `python3` imports (the PyPI wheel ships
//! `onnxruntime/capi/libonnxruntime.so.<version>`), and last the system loader's search path.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, TryLockError};

use ort::environment::{Environment, GlobalThreadPoolOptions};
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;

use crate::error::EngineError;
use crate::net::{NetInput, Network};

/// The oldest onnxruntime release this build talks to (the `api-22` feature of `ort`).
pub const MIN_VERSION: &str = "1.22";

/// The loaded runtime: where it came from and its version, for logs.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub library: PathBuf,
    pub version: String,
    /// Threads of the one intra-op pool all sessions share (`threads`).
    pub threads: usize,
}

struct Loaded {
    env: Environment,
    runtime: Runtime,
}

static LOADED: OnceLock<Result<Loaded, LoadError>> = OnceLock::new();

/// Why onnxruntime did not load: no library anywhere, or each one tried failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("no libonnxruntime found")]
    NotFound,
    #[error("{}", join(.0))]
    Failed(Vec<LibraryError>),
}

/// One library file that was found but would not start.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {stage}: {message}", library.display())]
pub struct LibraryError {
    pub library: PathBuf,
    /// `"loading"`, `"thread pool"` or `"environment"`.
    pub stage: &'static str,
    pub message: String,
}

fn join(failures: &[LibraryError]) -> String {
    let all: Vec<String> = failures.iter().map(ToString::to_string).collect();
    all.join("; ")
}

/// Loads onnxruntime once per process (an environment with one global thread pool sized
/// to the machine's cores); later calls return the first answer.
pub fn load() -> Result<Runtime, LoadError> {
    load_for(1)
}

/// `load` for `lanes` threads running networks at once: the pool gets the cores shared
/// out between them (`threads`). The first call in a process sizes the pool.
pub fn load_for(lanes: usize) -> Result<Runtime, LoadError> {
    loaded(lanes).map(|l| l.runtime.clone())
}

fn loaded(lanes: usize) -> Result<&'static Loaded, LoadError> {
    LOADED
        .get_or_init(|| {
            let mut tried = Vec::new();
            for path in candidates() {
                if path.components().count() > 1 && !path.exists() {
                    continue;
                }
                match init(&path, lanes) {
                    Ok(l) => return Ok(l),
                    Err(e) => tried.push(e),
                }
            }
            Err(if tried.is_empty() {
                LoadError::NotFound
            } else {
                LoadError::Failed(tried)
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn init(path: &Path, lanes: usize) -> Result<Loaded, LibraryError> {
    let failed = |stage: &'static str, e: &dyn std::fmt::Display| LibraryError {
        library: path.to_path_buf(),
        stage,
        message: e.to_string(),
    };
    let builder = ort::init_from(path).map_err(|e| failed("loading", &e))?;
    let threads = threads(lanes);
    let pool = GlobalThreadPoolOptions::default()
        .with_intra_threads(threads)
        .and_then(|p| p.with_inter_threads(1))
        .and_then(|p| p.with_spin_control(spin()))
        .map_err(|e| failed("thread pool", &e))?;
    let env = builder
        .with_name("facerec")
        .with_global_thread_pool(pool)
        .build()
        .map_err(|e| failed("environment", &e))?;
    let version = version_of(path, ort::info());
    Ok(Loaded {
        env,
        runtime: Runtime {
            library: path.to_path_buf(),
            version,
            threads,
        },
    })
}

/// The runtime's version, for logs: from a versioned file name
/// (`libonnxruntime.so.1.31.1`), else the build info's release branch
/// (`ORT Build Info: git-branch=rel-1.31.1, ...`).
fn version_of(path: &Path, info: &str) -> String {
    let from_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix(&format!("{LIB_NAME}.")))
        .filter(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'));
    let from_info = || {
        info.split(',')
            .find_map(|kv| kv.split_once("git-branch=rel-").map(|(_, b)| b.trim()))
    };
    from_name
        .or_else(from_info)
        .map_or_else(|| "(version unknown)".into(), str::to_string)
}

/// Intra-op threads: the cores shared out between `lanes` callers, rounded up
/// (`FACEREC_ORT_THREADS` overrides). One caller gets a thread per core. Several (the
/// engine threads of `facerec up`, each running its own batch on its own session) get
/// fewer each: on 2 cores with two lanes, each lane runs its networks on one core without
/// waiting for the other, which keeps both cores busier than two lanes taking turns on a
/// 2-thread pool (measured in `benches/RESULTS.md`, "A copy of each network and a core per
/// engine thread").
fn threads(lanes: usize) -> usize {
    std::env::var("FACEREC_ORT_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            cores.div_ceil(lanes.max(1))
        })
}

/// Whether idle pool threads spin (`FACEREC_ORT_SPIN=1`) instead of sleeping. They sleep
/// by default: a spinning thread takes a core from the rayon pre-processing and the other
/// engine thread between networks (on 2 cores, `facerec up`: ~10% more images/s with two
/// engine threads and no spinning than with one and spinning, ~0.2 cores less burnt).
/// Spinning wins only for one small network run back to back on an idle machine.
fn spin() -> bool {
    std::env::var("FACEREC_ORT_SPIN").is_ok_and(|v| v == "1" || v == "true")
}

const LIB_NAME: &str = "libonnxruntime.so";

/// Library paths to try, most explicit first. Lazy: `python3` is asked only when nothing
/// before it loaded (a `FACEREC_ORT_LIB` that loads saves the interpreter's start-up).
fn candidates() -> impl Iterator<Item = PathBuf> {
    let explicit = ["FACEREC_ORT_LIB", "ORT_DYLIB_PATH"]
        .into_iter()
        .filter_map(|var| std::env::var_os(var).filter(|v| !v.is_empty()))
        .flat_map(|v| {
            let p = PathBuf::from(v);
            if p.is_dir() { in_dir(&p) } else { vec![p] }
        });
    let beside_exe = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
        .into_iter()
        .flat_map(|dir| [in_dir(&dir), in_dir(&dir.join("../lib"))].concat());
    let python = std::iter::once_with(python_package_dir)
        .flatten()
        .flat_map(|dir| in_dir(&dir.join("capi")));
    explicit
        .chain(beside_exe)
        .chain(python)
        .chain(std::iter::once(PathBuf::from(LIB_NAME)))
}

/// `libonnxruntime.so` or `libonnxruntime.so.<version>` files in `dir`, newest name last.
fn in_dir(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == LIB_NAME || n.starts_with(&format!("{LIB_NAME}.")))
        })
        .collect();
    found.sort();
    found
}

/// Where `python3` would import the `onnxruntime` package from (without importing it).
fn python_package_dir() -> Option<PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import importlib.util as u; s = u.find_spec('onnxruntime'); \
             print(s.submodule_search_locations[0] if s else '')",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let dir = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

/// One ONNX graph in onnxruntime sessions (CPU execution provider, all graph
/// optimisations, the shared thread pool): one session per lane, as one session runs one
/// call at a time (`ort`'s `Session::run` takes `&mut self`; its notes advise a session
/// per thread).
pub struct OrtNet {
    sessions: Vec<Mutex<Session>>,
    outputs: Vec<String>,
}

impl OrtNet {
    /// Opens `onnx` (already read by the caller, so the bytes hashed are the bytes run) in
    /// `lanes` sessions (at least one).
    pub fn load(onnx: &Path, bytes: &[u8], lanes: usize) -> Result<Self, EngineError> {
        let model_err = |message: String| EngineError::Model {
            path: onnx.display().to_string(),
            message,
        };
        let loaded = loaded(lanes).map_err(|e| EngineError::Device(format!("onnxruntime: {e}")))?;
        let open = || {
            Session::builder(&loaded.env)
                .and_then(|b| {
                    b.with_optimization_level(GraphOptimizationLevel::Level3)
                        .map_err(Into::into)
                })
                .and_then(|mut b| b.commit_from_memory(bytes))
                .map_err(|e| model_err(format!("onnxruntime could not load it: {e}")))
        };
        let first = open()?;
        let outputs = first
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let mut sessions = vec![Mutex::new(first)];
        for _ in 1..lanes {
            sessions.push(Mutex::new(open()?));
        }
        Ok(Self { sessions, outputs })
    }

    /// One call on `session`.
    fn run_on(&self, session: &mut Session, input: NetInput) -> Result<Vec<Vec<f32>>, EngineError> {
        let err = |e: ort::Error| EngineError::Inference(format!("onnxruntime: {e}"));
        let (data, shape) = input.into_host()?;
        let tensor = Tensor::from_array((shape, data)).map_err(err)?;
        let outputs = session.run(ort::inputs![tensor]).map_err(err)?;
        self.outputs
            .iter()
            .map(|name| {
                let (_, values) = outputs[name.as_str()]
                    .try_extract_tensor::<f32>()
                    .map_err(err)?;
                Ok(values.to_vec())
            })
            .collect()
    }
}

fn panicked<T>(_: T) -> EngineError {
    EngineError::Inference("an earlier onnxruntime run panicked".into())
}

impl Network for OrtNet {
    fn run(&self, input: NetInput) -> Result<Vec<Vec<f32>>, EngineError> {
        // A free session if there is one, else wait for the first.
        let free = self.sessions.iter().find_map(|s| match s.try_lock() {
            Ok(guard) => Some(Ok(guard)),
            Err(TryLockError::Poisoned(p)) => Some(Err(panicked(p))),
            Err(TryLockError::WouldBlock) => None,
        });
        let mut session = match free {
            Some(s) => s?,
            None => self.sessions[0].lock().map_err(panicked)?,
        };
        self.run_on(&mut session, input)
    }

    /// Every session in turn, each growing its own memory arena to `input`'s shape.
    fn warm(&self, input: NetInput) -> Result<(), EngineError> {
        for session in &self.sessions {
            let mut session = session.lock().map_err(panicked)?;
            self.run_on(&mut session, input.clone())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_file_name_or_the_build_info() {
        let info = "ORT Build Info: git-branch=rel-1.24.2, git-commit-id=abc, build type=Release";
        let so = |name: &str| version_of(Path::new(name), info);
        assert_eq!(so("/x/capi/libonnxruntime.so.1.31.1"), "1.31.1");
        assert_eq!(so("/usr/lib/libonnxruntime.so"), "1.24.2");
        assert_eq!(
            version_of(Path::new("libonnxruntime.so"), "git-branch=HEAD"),
            "(version unknown)"
        );
    }
}
