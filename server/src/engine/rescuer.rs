//! Takes back runs whose node stopped heartbeating, or that a stopping node
//! hands back: the run is marked interrupted (rescued) and the task is due
//! again at once, resuming at its first unfinished step, on whichever node
//! claims it (see [`policy::rescued_end`]). Nothing stays `running` forever.

use super::Inner;
use super::executor::publish_task_final;
use super::policy;
use crate::store::{RunEnd, Task};
use chrono::Utc;
use std::sync::Arc;

/// Why a run is taken back.
#[derive(Debug, Clone, Copy)]
pub(super) enum Rescue<'a> {
    /// Runs whose lease expired, of any node: their node died or hung.
    Expired,
    /// This node's own runs found at its start: it died while they ran.
    Orphans(&'a str),
    /// Every run of this node, handed back as it stops (SIGTERM).
    HandBack(&'a str),
}

impl Rescue<'_> {
    fn message(self) -> &'static str {
        match self {
            Rescue::Expired => "interrupted: its node stopped renewing the lease (it died or hung)",
            Rescue::Orphans(_) => "interrupted: the server died while the run was in progress",
            Rescue::HandBack(_) => "interrupted: handed back to the queue as its server stopped",
        }
    }
}

/// Rescues in a row that a task gets for free. A node's death says nothing
/// about the task, so a rescue does not count against `max_attempts`; but a
/// task whose runs keep ending with their node may be what brings the nodes
/// down (a host bug its step triggers), and must not take node after node
/// down forever. From the next such rescue on, each counts as a failed
/// attempt: retried with backoff while attempts remain, then failed.
/// A stopping node's hand-back is always free (a rolling restart is not the
/// task's doing), though it is part of a row like any other rescue.
pub(super) const FREE_RESCUES_IN_A_ROW: usize = 3;

/// Take back runs (see [`Rescue`]). Returns how many were rescued.
pub(super) async fn rescue(inner: &Arc<Inner>, which: Rescue<'_>) -> anyhow::Result<usize> {
    let now = Utc::now();
    let node = match which {
        Rescue::Expired => None,
        Rescue::Orphans(node) | Rescue::HandBack(node) => Some(node),
    };
    let expired = inner.store.expired_runs(now, node).await?;
    let mut rescued = 0;
    for (task, run_id) in expired {
        let end = rescue_end(inner, &task, run_id, which).await?;
        if inner.store.finish_run(task.id, run_id, &end).await? {
            rescued += 1;
            tracing::warn!(task_id = task.id, run_id, "rescued an interrupted run");
            if let Some(task) = inner.store.get_task(task.id).await? {
                publish_task_final(inner, &task);
            }
        }
    }
    if rescued > 0 {
        inner.metrics.rescued(rescued);
        inner.wake.notify_one();
    }
    Ok(rescued)
}

/// How the rescued run ends: free, or counted once the task's runs have
/// ended with their node too often in a row (see [`FREE_RESCUES_IN_A_ROW`]).
async fn rescue_end(
    inner: &Inner,
    task: &Task,
    run_id: i64,
    which: Rescue<'_>,
) -> anyhow::Result<RunEnd> {
    let now = Utc::now();
    let free = || policy::rescued_end(task, task.attempts, which.message().to_string(), now);
    if matches!(which, Rescue::HandBack(_)) {
        return Ok(free());
    }
    let recent = inner
        .store
        .list_runs(task.id, FREE_RESCUES_IN_A_ROW as i64 + 1)
        .await?;
    let Some(run) = recent.iter().find(|r| r.id == run_id) else {
        return Ok(free());
    };
    let in_a_row = recent
        .iter()
        .filter(|r| r.id < run_id)
        .take_while(|r| r.rescued)
        .count();
    if in_a_row < FREE_RESCUES_IN_A_ROW {
        return Ok(free());
    }
    let message = format!(
        "{}; its runs ended with their node {} times in a row, so this one counts as an \
         attempt (the step may be what brings its node down)",
        which.message(),
        in_a_row + 1
    );
    Ok(policy::rescued_end_counted(
        task,
        task.attempts,
        run.trigger,
        message,
        now,
        &inner.config.retry,
    ))
}
