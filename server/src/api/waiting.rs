//! Why a due task does not run. The scheduler does not claim a task while one
//! of its enabled steps names a deactivated module, or while a concurrency or
//! rate limit holds it back (see `store/limits.rs`); without a word, such a
//! task looks stuck. Reads
//! of tasks say why in the task's `message`, computed when read, so it is
//! never stale: activating the module makes it go away at once.

use super::AppState;
use super::error::Result;
use crate::store::{LIMIT_WINDOW_MS, StepStatus, Task, TaskStatus};
use chrono::Utc;
use std::collections::{HashMap, HashSet};

/// Set the `message` of each due task that waits for a deactivated module
/// or that a concurrency or rate limit holds back.
pub async fn explain(state: &AppState, tasks: &mut [Task]) -> Result<()> {
    let now = Utc::now();
    let is_due = |task: &Task| {
        task.status == TaskStatus::Scheduled && task.next_run_at.is_some_and(|at| at <= now)
    };
    if !tasks.iter().any(is_due) {
        return Ok(());
    }
    let store = state.store();
    let inactive: HashSet<String> = store
        .list_modules()
        .await?
        .into_iter()
        .filter(|module| !module.active)
        .map(|module| module.path)
        .collect();
    let held: HashMap<String, String> = store
        .module_usage(now)
        .await?
        .into_iter()
        .filter_map(|usage| usage.holds_back().map(|reason| (usage.path, reason)))
        .collect();
    for task in tasks.iter_mut().filter(|task| is_due(task)) {
        let mut enabled = task
            .steps
            .iter()
            .filter(|step| step.status == StepStatus::Scheduled);
        if let Some(step) = enabled
            .clone()
            .find(|step| inactive.contains(&step.controller))
        {
            task.message = Some(message(&step.controller));
        } else if let Some(reason) = enabled.find_map(|step| held.get(&step.controller)) {
            task.message = Some(reason.clone());
        } else if let Some(max) = task.max_starts_per_minute {
            let since = now - chrono::Duration::milliseconds(LIMIT_WINDOW_MS);
            let started = store.task_starts_since(task.id, since).await?;
            if started >= max {
                task.message = Some(format!(
                    "waiting: the task started {started} runs in the last minute, its max_starts_per_minute is {max}"
                ));
            }
        }
    }
    Ok(())
}

fn message(path: &str) -> String {
    format!(
        "waiting: module `{path}` is deactivated; activate it with PATCH /api/v1/modules/{path} {{\"active\": true}}"
    )
}
