//! Fleets: what the scaler launches and terminates. EC2 instances ([`crate::ec2`]), local
//! `facerec worker` processes ([`Processes`]), or workers inside this process ([`InProcess`],
//! what `facerec up` uses).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use facerec_seams::sync::lock;
use tokio_util::sync::CancellationToken;

use crate::decide::{Member, MemberState};

/// A failed fleet call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FleetError {
    /// The fleet has no member by this id.
    #[error("no worker {0}")]
    NoWorker(String),
    /// A worker process could not be started.
    #[error("starting {}: {message}", program.display())]
    Start {
        program: std::path::PathBuf,
        message: String,
    },
    /// A worker process could not be sent SIGTERM.
    #[error("could not signal worker {id} (pid {pid})")]
    Signal { id: String, pid: u32 },
    /// A cloud API call failed (the AWS error code and kind are kept).
    #[error("{source}")]
    Cloud { source: facerec_seams::SeamError },
}

#[async_trait]
pub trait Fleet: Send + Sync {
    /// `ec2`, `processes` or `in-process`.
    fn name(&self) -> &'static str;
    /// The fleet's members in every state but gone.
    async fn members(&self) -> Result<Vec<Member>, FleetError>;
    /// Launches (or starts stopped) workers; returns how many were started.
    async fn launch(&self, n: u32) -> Result<u32, FleetError>;
    /// Terminates (or stops) these workers.
    async fn terminate(&self, ids: &[String]) -> Result<(), FleetError>;
}

/// Seconds since the UNIX epoch: the scaler's clock.
pub fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Something that runs one worker inside this process until its token is cancelled and
/// reports how many messages it holds.
pub trait LocalWorker: Send + Sync {
    fn in_hand(&self) -> usize;
}

/// A probe that counts what the worker holds is a local worker (the scaler needs no more).
impl<F: Fn() -> usize + Send + Sync> LocalWorker for F {
    fn in_hand(&self) -> usize {
        self()
    }
}

/// Starts one in-process worker: given its name and stop token, returns the worker and the
/// task running it.
pub type Spawn = Box<
    dyn Fn(String, CancellationToken) -> (Arc<dyn LocalWorker>, tokio::task::JoinHandle<()>)
        + Send
        + Sync,
>;

struct Running {
    worker: Arc<dyn LocalWorker>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    launched_at: f64,
    stopping: bool,
}

/// Workers as tokio tasks in this process (sharing one engine); terminating one cancels
/// its token, and it finishes or releases what it holds before it ends.
pub struct InProcess {
    spawn: Spawn,
    running: Mutex<BTreeMap<String, Running>>,
    next: Mutex<u64>,
}

impl InProcess {
    pub fn new(spawn: Spawn) -> Self {
        InProcess {
            spawn,
            running: Mutex::new(BTreeMap::new()),
            next: Mutex::new(0),
        }
    }

    /// Stops every worker and waits for them (used at shutdown of `facerec up`).
    pub async fn stop_all(&self) {
        let tasks: Vec<_> = {
            let mut running = lock(&self.running);
            let all = std::mem::take(&mut *running);
            all.into_values()
                .map(|r| {
                    r.stop.cancel();
                    r.task
                })
                .collect()
        };
        for t in tasks {
            let _ = t.await;
        }
    }
}

#[async_trait]
impl Fleet for InProcess {
    fn name(&self) -> &'static str {
        "in-process"
    }

    async fn members(&self) -> Result<Vec<Member>, FleetError> {
        let mut running = lock(&self.running);
        running.retain(|_, r| !r.task.is_finished());
        Ok(running
            .iter()
            .map(|(id, r)| Member {
                id: id.clone(),
                state: if r.stopping {
                    MemberState::Stopping
                } else {
                    MemberState::Running
                },
                idle: Some(r.worker.in_hand() == 0),
                launched_at: r.launched_at,
            })
            .collect())
    }

    async fn launch(&self, n: u32) -> Result<u32, FleetError> {
        for _ in 0..n {
            let id = {
                let mut next = lock(&self.next);
                *next += 1;
                format!("local-{}", *next - 1)
            };
            let stop = CancellationToken::new();
            let (worker, task) = (self.spawn)(id.clone(), stop.clone());
            lock(&self.running).insert(
                id,
                Running {
                    worker,
                    stop,
                    task,
                    launched_at: now_seconds(),
                    stopping: false,
                },
            );
        }
        Ok(n)
    }

    async fn terminate(&self, ids: &[String]) -> Result<(), FleetError> {
        let mut running = lock(&self.running);
        for id in ids {
            match running.get_mut(id) {
                Some(r) => {
                    r.stop.cancel();
                    r.stopping = true;
                }
                None => return Err(FleetError::NoWorker(id.clone())),
            }
        }
        Ok(())
    }
}

/// `facerec worker` processes on this machine, started with this binary and the
/// environment it was given; terminated with SIGTERM (they finish or release their
/// messages and exit).
pub struct Processes {
    program: std::path::PathBuf,
    args: Vec<String>,
    children: tokio::sync::Mutex<BTreeMap<String, (tokio::process::Child, f64, bool)>>,
    next: Mutex<u64>,
}

impl Processes {
    pub fn new(program: std::path::PathBuf, args: Vec<String>) -> Self {
        Processes {
            program,
            args,
            children: tokio::sync::Mutex::new(BTreeMap::new()),
            next: Mutex::new(0),
        }
    }
}

#[async_trait]
impl Fleet for Processes {
    fn name(&self) -> &'static str {
        "processes"
    }

    async fn members(&self) -> Result<Vec<Member>, FleetError> {
        let mut children = self.children.lock().await;
        children.retain(|_, (child, _, _)| matches!(child.try_wait(), Ok(None)));
        Ok(children
            .iter()
            .map(|(id, (_, at, stopping))| Member {
                id: id.clone(),
                state: if *stopping {
                    MemberState::Stopping
                } else {
                    MemberState::Running
                },
                idle: None,
                launched_at: *at,
            })
            .collect())
    }

    async fn launch(&self, n: u32) -> Result<u32, FleetError> {
        let mut children = self.children.lock().await;
        for i in 0..n {
            let id = {
                let mut next = lock(&self.next);
                *next += 1;
                format!("worker-{}", *next - 1)
            };
            let child = tokio::process::Command::new(&self.program)
                .args(&self.args)
                .env("FACEREC_WORKER_NAME", &id)
                .stdin(Stdio::null())
                .kill_on_drop(false)
                .spawn();
            match child {
                Ok(c) => {
                    children.insert(id, (c, now_seconds(), false));
                }
                Err(e) => {
                    return if i == 0 {
                        Err(FleetError::Start {
                            program: self.program.clone(),
                            message: e.to_string(),
                        })
                    } else {
                        Ok(i)
                    };
                }
            }
        }
        Ok(n)
    }

    async fn terminate(&self, ids: &[String]) -> Result<(), FleetError> {
        let mut children = self.children.lock().await;
        for id in ids {
            let (child, _, stopping) = children
                .get_mut(id)
                .ok_or_else(|| FleetError::NoWorker(id.clone()))?;
            if let Some(pid) = child.id() {
                // SIGTERM: the worker stops receiving, finishes or releases, and exits.
                let status = std::process::Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status();
                if !status.is_ok_and(|s| s.success()) {
                    return Err(FleetError::Signal {
                        id: id.clone(),
                        pid,
                    });
                }
            }
            *stopping = true;
        }
        Ok(())
    }
}
