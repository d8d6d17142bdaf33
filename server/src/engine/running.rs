//! The runs executing on this node, each with its cancel token, and the
//! cancels that arrived before their run's executor registered.
//!
//! A claim is committed by the engine's writer, answered to the claim loop,
//! and only then does the run's executor start and register here. A cancel
//! that lands in between finds no token: without a note of it, the run would
//! go on until the next heartbeat read the flag from the store. So a cancel
//! that finds no token leaves an early note, and the executor that registers
//! next for that task asks the store whether the cancel is for its run (the
//! note may be about a run on another node).
//!
//! Both sides take the one lock, so there is no gap: either the cancel sees
//! the token, or the registration sees the note (and the store already holds
//! the flag, written before the cancel looked here).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub(crate) struct RunningRuns {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Task id → (run id, cancel token).
    runs: HashMap<i64, (i64, CancellationToken)>,
    /// Task id → when a cancel found no registered run for it.
    early_cancels: HashMap<i64, Instant>,
}

/// A run's registration: its token, and whether a cancel for its task came
/// before it (to be checked against the store: see the module notes).
pub(crate) struct Registration {
    pub token: CancellationToken,
    pub cancel_came_early: bool,
}

/// What a cancel did on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LocalCancel {
    /// The run executing here was told to stop.
    Stopped,
    /// No run of the task executes here yet: noted for its executor.
    Noted,
}

impl RunningRuns {
    fn state(&self) -> parking_lot::MutexGuard<'_, State> {
        self.state.lock()
    }

    /// The executor of `run_id` starts.
    pub fn register(&self, task_id: i64, run_id: i64) -> Registration {
        let token = CancellationToken::new();
        let mut state = self.state();
        state.runs.insert(task_id, (run_id, token.clone()));
        let cancel_came_early = state.early_cancels.remove(&task_id).is_some();
        Registration {
            token,
            cancel_came_early,
        }
    }

    /// The executor of the task's run is done with it.
    pub fn remove(&self, task_id: i64) {
        self.state().runs.remove(&task_id);
    }

    /// A cancel of a running task was recorded in the store: stop its run if
    /// it executes here, otherwise note it for the executor to come.
    pub fn cancel(&self, task_id: i64) -> LocalCancel {
        let mut state = self.state();
        match state.runs.get(&task_id) {
            Some((_, token)) => {
                token.cancel();
                LocalCancel::Stopped
            }
            None => {
                state.early_cancels.insert(task_id, Instant::now());
                LocalCancel::Noted
            }
        }
    }

    /// Forget notes older than `age`: a claim reaches its executor within
    /// moments, so an older note is about a run on another node (whose
    /// heartbeat reads the flag from the store).
    pub fn forget_early_cancels_older_than(&self, age: Duration) {
        let now = Instant::now();
        self.state()
            .early_cancels
            .retain(|_, at| now.duration_since(*at) < age);
    }

    /// (run id, token) of every run executing here.
    pub fn tokens(&self) -> Vec<(i64, CancellationToken)> {
        self.state()
            .runs
            .values()
            .map(|(run, token)| (*run, token.clone()))
            .collect()
    }

    /// Ids of the runs executing here.
    pub fn run_ids(&self) -> Vec<i64> {
        self.state().runs.values().map(|(run, _)| *run).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_after_registration_stops_the_run() {
        let runs = RunningRuns::default();
        let registered = runs.register(7, 70);
        assert!(!registered.cancel_came_early);
        assert_eq!(runs.cancel(7), LocalCancel::Stopped);
        assert!(registered.token.is_cancelled());
    }

    #[test]
    fn a_cancel_before_registration_is_handed_to_the_executor_once() {
        let runs = RunningRuns::default();
        assert_eq!(runs.cancel(7), LocalCancel::Noted);
        assert!(runs.register(7, 70).cancel_came_early);
        runs.remove(7);
        // The note was taken: the task's next run starts clean.
        assert!(!runs.register(7, 71).cancel_came_early);
    }

    #[test]
    fn old_notes_are_forgotten() {
        let runs = RunningRuns::default();
        runs.cancel(7);
        runs.forget_early_cancels_older_than(Duration::from_secs(60));
        assert!(runs.register(7, 70).cancel_came_early);
        runs.cancel(8);
        std::thread::sleep(Duration::from_millis(5));
        runs.forget_early_cancels_older_than(Duration::from_millis(1));
        assert!(!runs.register(8, 80).cancel_came_early);
    }
}
