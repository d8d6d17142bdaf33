//! Requests waiting on a task's run end (`?wait=`), and the task as the end
//! left it, handed to them so that their answer needs no read of it.
//!
//! A waited answer is the stored task once its run ended. Reading it back
//! was a round trip to the store after the end's own commit, on the path of
//! every waited request. The executor knows the task as its claim returned
//! it and what the end changed; the store tells whether anything else
//! changed the task since the claim (see `WriteOp::FinishRun`'s
//! `claimed_version`). When nothing did, the task with the end applied is
//! what a read would return, and it is left here for the waiters of this
//! node. In every other case (a task edited while it ran, a run on another
//! node, an end the waiter missed) the waiter reads the task as before.

use crate::store::Task;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

/// The tasks someone on this node waits on (see the module docs).
#[derive(Default)]
pub(crate) struct RunEndWatches {
    tasks: Mutex<HashMap<i64, Watched>>,
}

#[derive(Default)]
struct Watched {
    watchers: usize,
    /// The task as its last run end left it (when that end could tell).
    ended: Option<Arc<Task>>,
}

impl RunEndWatches {
    /// Whether a run end of this task has someone to hand the task to.
    pub(crate) fn is_watched(&self, task_id: i64) -> bool {
        self.tasks.lock().contains_key(&task_id)
    }

    /// Leave the task as its run end left it for the watchers (before the
    /// end's event is published, which wakes them).
    pub(crate) fn ended(&self, task: Task) {
        if let Some(watched) = self.tasks.lock().get_mut(&task.id) {
            watched.ended = Some(Arc::new(task));
        }
    }
}

/// One request's watch on a task's run ends; dropping it ends the watch.
pub struct RunEndWatch {
    watches: Arc<RunEndWatches>,
    task_id: i64,
}

impl RunEndWatch {
    pub(crate) fn new(watches: &Arc<RunEndWatches>, task_id: i64) -> Self {
        watches.tasks.lock().entry(task_id).or_default().watchers += 1;
        RunEndWatch {
            watches: watches.clone(),
            task_id,
        }
    }

    /// The task as the run end published with `updated_at` left it, if the
    /// executor could tell (else read it from the store).
    pub fn ended_task(&self, updated_at: DateTime<Utc>) -> Option<Task> {
        let tasks = self.watches.tasks.lock();
        let ended = tasks.get(&self.task_id)?.ended.as_ref()?;
        // Published times have the stored millisecond precision or finer.
        (ended.updated_at.timestamp_millis() == updated_at.timestamp_millis())
            .then(|| Task::clone(ended))
    }
}

impl Drop for RunEndWatch {
    fn drop(&mut self) {
        let mut tasks = self.watches.tasks.lock();
        if let Some(watched) = tasks.get_mut(&self.task_id) {
            watched.watchers -= 1;
            if watched.watchers == 0 {
                tasks.remove(&self.task_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: i64, updated_at: DateTime<Utc>) -> Task {
        serde_json::from_value(serde_json::json!({
            "id": id, "name": "t", "code": null, "status": "completed", "priority": "normal",
            "start_at": null, "run_interval": 0, "cron": null, "timezone": "UTC",
            "max_execution_time": 0, "max_attempts": 1, "attempts": 0, "progress": 100.0,
            "message": null, "last_result": "success", "last_run_at": null, "next_run_at": null,
            "created_by": null, "details": {}, "secret_names": [], "current_run_id": null,
            "created_at": updated_at, "updated_at": updated_at, "steps": []
        }))
        .expect("a task")
    }

    #[test]
    fn a_watched_end_is_handed_over_until_the_last_watch_ends() {
        let watches = Arc::new(RunEndWatches::default());
        let at = DateTime::from_timestamp_millis(1_700_000_000_123).expect("a time");
        watches.ended(task(7, at));
        assert!(!watches.is_watched(7), "an unwatched end is not kept");

        let first = RunEndWatch::new(&watches, 7);
        let second = RunEndWatch::new(&watches, 7);
        assert!(watches.is_watched(7));
        assert!(first.ended_task(at).is_none(), "no end yet");
        watches.ended(task(7, at));
        assert_eq!(first.ended_task(at).map(|t| t.id), Some(7));
        assert!(
            second
                .ended_task(at + chrono::Duration::seconds(1))
                .is_none(),
            "another end's event is not this task's state"
        );
        drop(first);
        assert!(watches.is_watched(7), "one watch is left");
        drop(second);
        assert!(!watches.is_watched(7));
    }
}
