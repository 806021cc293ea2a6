//! The engine and the threads its blocking work runs on, shared by every worker of a
//! process (text-embeddings-inference's backend thread, with a FIFO in front).
//!
//! Workers hand whole batches (analysis and matching) to a fixed set of engine threads
//! through one first-in, first-out queue, each with a oneshot reply, instead of each worker
//! taking a blocking-pool thread and contending for the engine: batches run in the order
//! they were formed, so under a closed loop every request waits about as long as the others.
//! Two threads are the default, and the engine is built for them (`EngineConfig::lanes`):
//! on onnxruntime each thread runs its batch in sessions of its own on its share of the
//! cores (one each on 2 cores), so neither waits for the other's network and one batch's
//! decoding and pre-processing overlap the other's networks; the order stays nearly
//! strict. On the 2-core machine, 1000 requests from 100 clients: ~10% more images/s with
//! two threads than one on a shared 2-thread pool, and ~13% more again with a session and
//! a core per thread (1.85-1.87 cores busy). One thread makes the order strict. On the CPU
//! backends each thread also runs its batch's decoding and pre-processing in a rayon pool
//! of its own, the thread itself the first of it (`Engine::lane_pool`): 1.88-1.93 cores
//! busy instead of 1.80-1.87.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, mpsc};

use facerec_engine::Engine;
use tokio::sync::oneshot;

type Task = Box<dyn FnOnce() + Send>;

/// Engine threads by default (see the module notes).
pub const DEFAULT_THREADS: usize = 2;

/// A task that could not run to completion.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    #[error("the engine threads have stopped")]
    Stopped,
    #[error("engine task panicked: {0}")]
    Panicked(String),
}

/// Threads that run blocking tasks first in, first out.
pub struct Lanes {
    queue: mpsc::Sender<Task>,
}

/// A submitted task's answer.
pub type Pending<T> = oneshot::Receiver<Result<T, ComputeError>>;

impl Lanes {
    /// Starts `threads` threads (at least one) named `<name>-<i>`.
    pub fn new(threads: usize, name: &str) -> Self {
        Self::with_setup(threads, name, || ())
    }

    /// `new`, each thread first calling `setup` and keeping what it returns until it
    /// ends (an engine lane's rayon pool, `Engine::lane_pool`).
    pub fn with_setup<G: 'static>(
        threads: usize,
        name: &str,
        setup: impl Fn() -> G + Send + Sync + 'static,
    ) -> Self {
        let (queue, rx) = mpsc::channel::<Task>();
        let rx = Arc::new(Mutex::new(rx));
        let setup = Arc::new(setup);
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let setup = setup.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    let _kept = setup();
                    loop {
                        // Take the oldest task; the lock is released before it runs.
                        let task = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match task {
                            Ok(task) => task(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start an engine thread");
            }
        }
        Self { queue }
    }

    /// Queues `f` behind every task submitted before it; the answer (or the panic's
    /// message) arrives on the returned receiver.
    pub fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<Pending<T>, ComputeError> {
        let (tx, rx) = oneshot::channel();
        let span = tracing::Span::current();
        let task: Task = Box::new(move || {
            let _entered = span.enter();
            let out = std::panic::catch_unwind(AssertUnwindSafe(f));
            let _ = tx.send(out.map_err(|p| {
                ComputeError::Panicked(
                    p.downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into()),
                )
            }));
        });
        self.queue.send(task).map_err(|_| ComputeError::Stopped)?;
        Ok(rx)
    }

    /// `submit`, then waits for the answer.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ComputeError> {
        answer(self.submit(f)?).await
    }
}

/// Waits for a submitted task's answer.
pub async fn answer<T>(pending: Pending<T>) -> Result<T, ComputeError> {
    pending.await.unwrap_or(Err(ComputeError::Stopped))
}

/// The engine with its threads.
#[derive(Clone)]
pub struct Compute {
    engine: Arc<Engine>,
    lanes: Arc<Lanes>,
    threads: usize,
}

impl Compute {
    /// Starts `threads` engine threads (at least one) for `engine`.
    pub fn new(engine: Arc<Engine>, threads: usize) -> Self {
        let threads = threads.max(1);
        let lanes = {
            let engine = engine.clone();
            Lanes::with_setup(threads, "facerec-engine", move || engine.lane_pool(threads))
        };
        Self {
            engine,
            lanes: Arc::new(lanes),
            threads,
        }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// How many tasks run at once.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Queues `f` with the engine behind every task submitted before it (see
    /// `Lanes::submit`).
    pub fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine) -> T + Send + 'static,
    ) -> Result<Pending<T>, ComputeError> {
        let engine = self.engine.clone();
        self.lanes.submit(move || f(&engine))
    }

    /// Runs `f` with the engine on an engine thread, after every task submitted before it
    /// has started.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine) -> T + Send + 'static,
    ) -> Result<T, ComputeError> {
        answer(self.submit(f)?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tasks start in submission order, and a panic is the task's error, not the end of
    /// its thread.
    #[test]
    fn tasks_run_in_order_and_panics_are_errors() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let lanes = Lanes::new(1, "test-lane");
        let order = Arc::new(Mutex::new(Vec::new()));
        let pending: Vec<_> = (0..20)
            .map(|i| {
                let order = order.clone();
                lanes
                    .submit(move || order.lock().expect("lock").push(i))
                    .expect("queued")
            })
            .collect();
        rt.block_on(async {
            for p in pending {
                answer(p).await.expect("task runs");
            }
            let err = lanes
                .run(|| panic!("boom"))
                .await
                .expect_err("a panic is an error");
            assert!(err.to_string().contains("boom"), "{err}");
            assert_eq!(lanes.run(|| 7).await.expect("the thread still serves"), 7);
        });
        assert_eq!(*order.lock().expect("lock"), (0..20).collect::<Vec<_>>());
    }
}
