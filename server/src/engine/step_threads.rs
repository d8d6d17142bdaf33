//! The threads steps run on, apart from the node's control work.
//!
//! A running guest holds a tokio worker until the next epoch tick. On the
//! runtime the API, the claim loop and the executors use, every wakeup of
//! theirs (a request, a commit's answer, a cancel) waited in the queue behind
//! the runnable guests: with hundreds of CPU-bound steps on a few cores, a
//! cancel took a second to be answered, then another to be recorded. Here
//! the guests share threads of their own, and the operating system shares
//! the cores between those and the control threads, which are mostly idle
//! and so get a core at once when they wake.
//!
//! A step runs its first poll where its executor is, though: most steps end
//! in it, and only one that yields (at an epoch tick, or waiting in a host
//! call) moves to these threads.
//!
//! A cancel does not wait for the guest's own answer either (that is one
//! more turn of the guests' queue): the executor records the step as
//! cancelled and the guest's task is aborted, dropped at its next turn. The
//! worker slot is given back only then (see [`Lingering`]), so the node never
//! holds more sandboxes than it has workers for.

use crate::runtime::{LoadedModule, Runtime, StepHost, StepOutcome, StepReport, StepRequest};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The steps' runtime; shut down (without waiting) when the engine is dropped.
pub(crate) struct StepThreads {
    runtime: Option<tokio::runtime::Runtime>,
}

/// A cancelled guest whose task is still to be dropped by its thread.
pub(crate) struct Lingering(JoinHandle<StepReport>);

impl Lingering {
    /// Until the guest's task is gone (and its sandbox with it).
    pub async fn gone(self) {
        let _ = self.0.await;
    }
}

impl StepThreads {
    /// One thread per core: the guests are CPU-bound.
    pub fn start() -> std::io::Result<Self> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("stepwise-step")
            .enable_all()
            .build()?;
        Ok(StepThreads {
            runtime: Some(runtime),
        })
    }

    /// Run one step on the steps' threads. A cancel answers at once with a
    /// cancelled report, and hands back the guest still to be dropped.
    pub async fn run(
        &self,
        runtime: &Arc<Runtime>,
        module: Arc<LoadedModule>,
        request: StepRequest,
        host: Arc<dyn StepHost>,
        cancel: &CancellationToken,
    ) -> (StepReport, Option<Lingering>) {
        let started = Instant::now();
        let runtime = runtime.clone();
        let guest_cancel = cancel.child_token();
        let mut guest =
            Box::pin(async move { runtime.run(&module, request, host, guest_cancel).await });
        // A short step ends within its first poll, before any epoch tick:
        // run that poll here and spare it two hand-offs between threads.
        // Only a step that yields moves to the steps' threads.
        if let Poll::Ready(report) = futures::poll!(&mut guest) {
            return (report, None);
        }
        let mut guest = self
            .runtime
            .as_ref()
            .expect("the steps' runtime lives as long as the engine")
            .spawn(guest);
        tokio::select! {
            biased;
            report = &mut guest => (report.unwrap_or_else(|e| crashed(e, started)), None),
            _ = cancel.cancelled() => {
                guest.abort();
                let report = StepReport {
                    outcome: StepOutcome::Cancelled,
                    fuel_used: 0,
                    peak_memory: 0,
                    duration: started.elapsed(),
                };
                (report, Some(Lingering(guest)))
            }
        }
    }
}

/// The step's task panicked (the runtime never does on guest behaviour).
fn crashed(error: tokio::task::JoinError, started: Instant) -> StepReport {
    tracing::error!("a step's task ended abnormally: {error}");
    StepReport {
        outcome: StepOutcome::Failed {
            message: "the server failed while running this step".into(),
        },
        fuel_used: 0,
        peak_memory: 0,
        duration: started.elapsed(),
    }
}

impl Drop for StepThreads {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which async code may not: the last
        // engine handle is often dropped inside one.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
