//! Why a due task does not run. The scheduler does not claim a task while one
//! of its enabled steps names a deactivated module (see the claim's query in
//! `store/sqlite/claim.rs`); without a word, such a task looks stuck. Reads
//! of tasks say why in the task's `message`, computed when read, so it is
//! never stale: activating the module makes it go away at once.

use super::AppState;
use super::error::Result;
use crate::store::{StepStatus, Task, TaskStatus};
use chrono::Utc;
use std::collections::HashSet;

/// Set the `message` of each due task that waits for a deactivated module.
pub async fn explain(state: &AppState, tasks: &mut [Task]) -> Result<()> {
    let now = Utc::now();
    let is_due = |task: &Task| {
        task.status == TaskStatus::Scheduled && task.next_run_at.is_some_and(|at| at <= now)
    };
    if !tasks.iter().any(is_due) {
        return Ok(());
    }
    let inactive: HashSet<String> = state
        .store()
        .list_modules()
        .await?
        .into_iter()
        .filter(|module| !module.active)
        .map(|module| module.path)
        .collect();
    if inactive.is_empty() {
        return Ok(());
    }
    for task in tasks.iter_mut().filter(|task| is_due(task)) {
        if let Some(step) = task.steps.iter().find(|step| {
            step.status == StepStatus::Scheduled && inactive.contains(&step.controller)
        }) {
            task.message = Some(message(&step.controller));
        }
    }
    Ok(())
}

fn message(path: &str) -> String {
    format!(
        "waiting: module `{path}` is deactivated; activate it with PATCH /api/v1/modules/{path} {{\"active\": true}}"
    )
}
