//! A waited task (`POST /tasks?wait=`) that an idle node starts in its
//! create: the store creates it and claims it for this node in the same go
//! ([`crate::store::Store::create_and_claim`]), and its run starts here at
//! once, without the claim loop's wake and claim in between. On an idle
//! node those were a large part of the time from create to done.
//!
//! Only when the node is idle, so that nothing changes for a busy one: its
//! claim loop runs (not stopping), its last claim found nothing more due, a
//! worker is free, and no other create is starting a run this way (a burst
//! of creates goes through the create batcher, in batches, as before).

use super::workers::WorkerSlot;
use super::{Engine, Inner, RunEndWatch, executor};
use crate::store::{NewTask, StoreResult, Task};
use chrono::Utc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A free worker held for a task started in its create, and the node's one
/// such start in flight.
pub struct StartSlot {
    permit: WorkerSlot,
    _starting: Starting,
}

/// Holds [`StartsAtCreate::starting`] until dropped.
struct Starting(Arc<Inner>);

impl Drop for Starting {
    fn drop(&mut self) {
        self.0.starts.starting.store(false, Ordering::Release);
    }
}

/// Whether creates may start their runs on this node now.
#[derive(Default)]
pub(crate) struct StartsAtCreate {
    /// The claim loop runs and is not stopping.
    pub(super) open: AtomicBool,
    /// A create is starting its run.
    starting: AtomicBool,
}

impl Engine {
    /// A worker for `task` to start in its create, if the task may
    /// ([`NewTask::starts_at_create`]) and this node is idle (see the
    /// module docs); `None` sends the create the usual way.
    pub fn start_slot(&self, task: &NewTask) -> Option<StartSlot> {
        let inner = &self.inner;
        if !inner.starts.open.load(Ordering::Acquire)
            || inner.claims_wanted.load(Ordering::Acquire)
            || !task.starts_at_create(Utc::now())
        {
            return None;
        }
        let permit = inner.workers.try_take()?;
        if inner.starts.starting.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(StartSlot {
            permit,
            _starting: Starting(inner.clone()),
        })
    }

    /// Create `task` and run what the store claimed with it on the slot's
    /// worker (its own run, when nothing else was due). Returns the task as
    /// the create (or its claim) left it, and when a run started, a watch on
    /// the task's run end, begun before the run (a short one ends before the
    /// request's wait begins; hold the watch until the answer). When no run
    /// started, the scheduler is woken to claim as usual.
    pub async fn create_started(
        &self,
        slot: StartSlot,
        task: NewTask,
    ) -> StoreResult<(Task, Option<RunEndWatch>)> {
        let inner = &self.inner;
        let now = Utc::now();
        let (task, claimed) = inner
            .store
            .create_and_claim(task, &inner.config.node_id, now, now + inner.config.lease)
            .await?;
        let StartSlot { permit, .. } = slot;
        match claimed {
            Some(run) => {
                let watch = RunEndWatch::new(&inner.run_end_watches, task.id);
                tokio::spawn(executor::execute(inner.clone(), run, Some(permit)));
                Ok((task, Some(watch)))
            }
            None => {
                drop(permit);
                inner.wake.notify_one();
                Ok((task, None))
            }
        }
    }
}
