//! Takes back runs whose node stopped heartbeating: the run is marked
//! interrupted and the task retried (resuming at its first unfinished step)
//! or failed, per its attempts. Nothing stays `running` forever.

use super::Inner;
use super::executor::publish_task_final;
use super::policy::{self, RunVerdict};
use crate::store::RunTrigger;
use chrono::Utc;
use std::sync::Arc;

/// Rescue expired runs; with `node`, every run of that node (its own orphans
/// at start-up, whatever their lease). Returns how many were rescued.
pub(super) async fn rescue(inner: &Arc<Inner>, node: Option<&str>) -> anyhow::Result<usize> {
    let now = Utc::now();
    let expired = inner.store.expired_runs(now, node).await?;
    let mut rescued = 0;
    for (task, run_id) in expired {
        let message = match node {
            Some(_) => "interrupted: the server stopped while the run was in progress".to_string(),
            None => {
                "interrupted: its node stopped renewing the lease (it died or hung)".to_string()
            }
        };
        let mut end = policy::run_end(
            &task,
            task.attempts,
            RunTrigger::Schedule,
            RunVerdict::Interrupted,
            Some(message),
            task.progress,
            now,
            &inner.config.retry,
        );
        end.rescued = true;
        if inner.store.finish_run(task.id, run_id, &end).await? {
            rescued += 1;
            tracing::warn!(task_id = task.id, run_id, "rescued an interrupted run");
            if let Some(task) = inner.store.get_task(task.id).await? {
                publish_task_final(inner, &task);
            }
        }
    }
    if rescued > 0 {
        inner.wake.notify_one();
    }
    Ok(rescued)
}
