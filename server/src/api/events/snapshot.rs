//! The snapshot a subscriber gets first, and again when it fell too far
//! behind: the truth for the subscribed tasks, which the events after it
//! only move forward.

use super::send_json;
use crate::api::AppState;
use crate::events::{StepState, TaskState};
use crate::store::{Task, TaskFilter};
use axum::extract::ws::Message;
use futures::Sink;
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// Tasks in an "all" snapshot (newest first, plus every live one).
const SNAPSHOT_TASKS: i64 = 500;

#[derive(Serialize)]
#[serde(tag = "type", rename = "snapshot")]
struct Snapshot {
    tasks: Vec<TaskState>,
    steps: Vec<StepState>,
}

/// What a snapshot covers: events published before it that reach the
/// session after it must not be sent (their seq is not above the snapshot's).
#[derive(Debug)]
pub struct Covered {
    /// Per task, the highest seq the snapshot shows.
    seqs: HashMap<i64, u64>,
    /// The bus's publish index when the snapshot was taken.
    before: u64,
}

impl Covered {
    pub fn covers(&self, task_id: i64, seq: u64) -> bool {
        self.seqs
            .get(&task_id)
            .is_some_and(|&covered| seq <= covered)
    }

    /// Once the feed has sent everything published up to the snapshot (a
    /// batch's `settled` is past it), nothing later can be covered.
    pub fn settled_by(&self, settled: u64) -> bool {
        settled > self.before
    }
}

/// Send the truth for the subscribed tasks: live state from the bus where a
/// run is in flight, stored state otherwise, each with the task's current seq.
pub async fn send_snapshot<S: Sink<Message> + Unpin>(
    state: &AppState,
    sink: &mut S,
    ids: Option<&HashSet<i64>>,
) -> Result<Covered, ()> {
    let stored: Vec<Task> = match ids {
        None => {
            let filter = TaskFilter {
                limit: SNAPSHOT_TASKS,
                ..TaskFilter::default()
            };
            state.store().list_tasks(&filter).await.map_err(|_| ())?
        }
        Some(ids) => {
            let mut tasks = Vec::new();
            for id in ids {
                if let Ok(Some(task)) = state.store().get_task(*id).await {
                    tasks.push(task);
                }
            }
            tasks
        }
    };
    let bus = state.bus();
    let mut tasks = Vec::new();
    let mut steps = Vec::new();
    let mut seen = HashSet::new();
    for task in &stored {
        seen.insert(task.id);
        match bus.latest(task.id) {
            Some((live, live_steps))
                if task.status.as_str() == "running" || live.status != "running" =>
            {
                tasks.push(live);
                steps.extend(live_steps);
            }
            _ => tasks.push(TaskState::stored(task, bus.seq(task.id))),
        }
    }
    if ids.is_none() {
        for live in bus.latest_all() {
            if live.status == "running" && !seen.contains(&live.task_id) {
                if let Some((_, live_steps)) = bus.latest(live.task_id) {
                    steps.extend(live_steps);
                }
                tasks.push(live);
            }
        }
    }
    // Read after every state above: what is published later is not covered.
    let before = bus.published();
    let mut seqs: HashMap<i64, u64> = HashMap::new();
    let task_seqs = tasks.iter().map(|t| (t.task_id, t.seq));
    for (task_id, seq) in task_seqs.chain(steps.iter().map(|s| (s.task_id, s.seq))) {
        let highest = seqs.entry(task_id).or_default();
        *highest = (*highest).max(seq);
    }
    send_json(sink, &Snapshot { tasks, steps }).await?;
    Ok(Covered { seqs, before })
}
