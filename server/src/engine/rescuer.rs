//! Takes back runs whose node stopped heartbeating, or that a stopping node
//! hands back: the run is marked interrupted (rescued) and the task is due
//! again at once, resuming at its first unfinished step, on whichever node
//! claims it (see [`policy::rescued_end`]). Nothing stays `running` forever.

use super::Inner;
use super::executor::publish_task_final;
use super::policy;
use chrono::Utc;
use std::sync::Arc;

/// Why a run is taken back.
#[derive(Debug, Clone, Copy)]
pub(super) enum Rescue<'a> {
    /// Runs whose lease expired, of any node.
    Expired,
    /// Every run of this node, whatever its lease: its own orphans at
    /// start-up, or the runs it hands back when it stops.
    OfNode(&'a str),
}

/// Take back runs (see [`Rescue`]). Returns how many were rescued.
pub(super) async fn rescue(inner: &Arc<Inner>, which: Rescue<'_>) -> anyhow::Result<usize> {
    let now = Utc::now();
    let node = match which {
        Rescue::Expired => None,
        Rescue::OfNode(node) => Some(node),
    };
    let expired = inner.store.expired_runs(now, node).await?;
    let mut rescued = 0;
    for (task, run_id) in expired {
        let message = match which {
            Rescue::OfNode(_) => "interrupted: the server stopped while the run was in progress",
            Rescue::Expired => "interrupted: its node stopped renewing the lease (it died or hung)",
        };
        let end = policy::rescued_end(&task, task.attempts, message.to_string(), now);
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
