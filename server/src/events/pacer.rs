//! How often a running task's progress reaches subscribers.
//!
//! A step may report progress as often as it likes (the benchmark's tasks do
//! 50 times a second); a progress bar does not need more than a few states a
//! second, and sending every one to every subscriber is what made 1,000
//! subscribers cost more than the steps themselves. So, per task:
//! - a change of status or run, a step starting or ending, a log line and a
//!   deletion go out at the next flush;
//! - a running task's progress goes out about once per `interval`, and
//!   always as the latest state: what was held back is replaced by newer
//!   progress, or sent `interval` after it was published if nothing newer
//!   comes. A state is sent soon after it is published, never stale.
//!
//! Each task's sends keep to a phase of the interval set by its id: tasks
//! that report in step (the benchmark starts 100 at one instant) would
//! otherwise all be due in the same flush, and one frame of all of them to
//! every subscriber at once is a burst that the last subscribers wait for.
//!
//! Pure logic over given instants, so it is tested without waiting.

use super::Event;
use super::batch::{Published, coalesce};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One task's events not sent yet, and what was last sent of it.
#[derive(Default)]
struct TaskPace {
    pending: Vec<Arc<Published>>,
    /// Something pending must go at the next flush.
    urgent: bool,
    /// When the oldest and the newest pending event came.
    first_pending: Option<Instant>,
    last_pending: Option<Instant>,
    /// When running progress may go next.
    next_due: Option<Instant>,
    /// The task's last state pushed (status, run) and its running step.
    status: Option<(String, Option<i64>)>,
    running_step: Option<(i64, i64)>,
    /// The task ended or was deleted: forget it once sent.
    finished: bool,
}

/// Pending events of one class of subscribers, paced per task.
pub struct Pacer {
    interval: Duration,
    tasks: HashMap<i64, TaskPace>,
}

impl Pacer {
    pub fn new(interval: Duration) -> Self {
        Pacer {
            interval,
            tasks: HashMap::new(),
        }
    }

    /// Forget everything (no subscriber is left to send to).
    pub fn clear(&mut self) {
        self.tasks.clear();
    }

    pub fn is_idle(&self) -> bool {
        self.tasks.values().all(|t| t.pending.is_empty())
    }

    /// An event came at `now`.
    pub fn push(&mut self, published: Arc<Published>, now: Instant) {
        let pace = self.tasks.entry(published.event.task_id()).or_default();
        let urgent = match &published.event {
            Event::Task(state) => {
                let changed = pace
                    .status
                    .as_ref()
                    .is_none_or(|(status, run)| *status != state.status || *run != state.run_id);
                if changed {
                    pace.status = Some((state.status.clone(), state.run_id));
                }
                pace.finished = state.status != "running";
                changed || pace.finished
            }
            Event::Step(step) => {
                let this = (step.run_id, step.step_id);
                let same_running = step.status == "running" && pace.running_step == Some(this);
                pace.running_step = (step.status == "running").then_some(this);
                !same_running
            }
            Event::Log(_) => true,
            Event::Deleted { .. } => {
                pace.finished = true;
                true
            }
        };
        pace.urgent |= urgent;
        pace.first_pending.get_or_insert(now);
        pace.last_pending = Some(now);
        pace.pending.push(published);
    }

    /// What to send at a flush at `now` (the previous one was at `previous`),
    /// in publish order.
    pub fn take(&mut self, now: Instant, previous: Instant) -> Vec<Arc<Published>> {
        let interval = self.interval;
        let mut out = Vec::new();
        self.tasks.retain(|&task_id, pace| {
            if pace.pending.is_empty() {
                return !pace.finished;
            }
            let due = pace.next_due.is_none_or(|at| now >= at);
            let fresh = pace.last_pending.is_some_and(|at| at > previous);
            let held_long = pace.first_pending.is_some_and(|at| now >= at + interval);
            if pace.urgent || (due && (fresh || held_long)) {
                out.append(&mut coalesce(std::mem::take(&mut pace.pending)));
                pace.urgent = false;
                pace.first_pending = None;
                pace.last_pending = None;
                pace.next_due = Some(match pace.next_due {
                    // On time: keep to the phase.
                    Some(due) if now < due + interval => due + interval,
                    _ => now + interval - phase(task_id, interval),
                });
                return !pace.finished;
            }
            // Held: keep only the latest state per task and step.
            pace.pending = coalesce(std::mem::take(&mut pace.pending));
            true
        });
        out.sort_by_key(|p| p.index);
        out
    }

    /// The lowest index still held back, if any.
    pub fn oldest_held(&self) -> Option<u64> {
        self.tasks
            .values()
            .filter_map(|t| t.pending.first().map(|p| p.index))
            .min()
    }
}

/// Where in the interval a task's progress goes out: spread over the
/// interval by a multiplicative hash of the task id.
fn phase(task_id: i64, interval: Duration) -> Duration {
    let fraction = (task_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54;
    interval * fraction as u32 / 1024
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{StepState, TaskState};

    const INTERVAL: Duration = Duration::from_millis(100);

    fn task(index: u64, status: &str, run_id: i64, progress: f64) -> Arc<Published> {
        let state = TaskState {
            seq: index,
            ..TaskState::for_test(1, status, run_id, progress)
        };
        Arc::new(Published::new(index, Event::Task(state)))
    }

    fn step(index: u64, step_id: i64, status: &str) -> Arc<Published> {
        Arc::new(Published::new(
            index,
            Event::Step(StepState {
                task_id: 1,
                seq: index,
                run_id: 1,
                step_id,
                status: status.into(),
                progress: 0.0,
                message: None,
                error: None,
            }),
        ))
    }

    fn indexes(events: &[Arc<Published>]) -> Vec<u64> {
        events.iter().map(|p| p.index).collect()
    }

    #[test]
    fn progress_goes_about_once_per_interval_as_the_latest_state() {
        let mut pacer = Pacer::new(INTERVAL);
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // The run starting is a change: it goes at the first flush.
        pacer.push(task(1, "running", 1, 0.0), ms(0));
        assert_eq!(indexes(&pacer.take(ms(10), ms(0))), [1]);
        // Progress every 20 ms, a flush 5 ms after each: held until due,
        // then the newest state goes.
        let mut sent = Vec::new();
        for (i, at) in (20..=1010).step_by(20).enumerate() {
            let index = 2 + i as u64;
            pacer.push(task(index, "running", 1, i as f64), ms(at));
            for published in pacer.take(ms(at + 5), ms(at - 15)) {
                assert_eq!(published.index, index, "the newest state");
                sent.push(at);
            }
        }
        let gaps: Vec<u64> = sent.windows(2).map(|w| w[1] - w[0]).collect();
        assert!((9..=11).contains(&sent.len()), "one a 100 ms: {sent:?}");
        assert!(gaps.iter().all(|gap| (80..=120).contains(gap)), "{gaps:?}");
    }

    #[test]
    fn tasks_reporting_in_step_are_spread_over_the_interval() {
        let phases: Vec<Duration> = (1..=100).map(|id| phase(id, INTERVAL)).collect();
        assert!(phases.iter().all(|p| *p < INTERVAL));
        for tenth in 0..10 {
            let (from, to) = (INTERVAL * tenth / 10, INTERVAL * (tenth + 1) / 10);
            let here = phases.iter().filter(|p| (from..to).contains(*p)).count();
            assert!(
                (5..=15).contains(&here),
                "{here} of 100 in {from:?}..{to:?}"
            );
        }
    }

    #[test]
    fn held_progress_goes_after_the_interval_when_nothing_newer_comes() {
        let mut pacer = Pacer::new(INTERVAL);
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        pacer.push(task(1, "running", 1, 0.0), ms(0));
        pacer.take(ms(10), ms(0));
        pacer.push(task(2, "running", 1, 50.0), ms(20));
        assert!(pacer.take(ms(30), ms(10)).is_empty(), "too soon");
        assert_eq!(pacer.oldest_held(), Some(2));
        assert!(pacer.take(ms(110), ms(100)).is_empty(), "held 90 ms");
        assert_eq!(indexes(&pacer.take(ms(121), ms(110))), [2], "held 101 ms");
        assert_eq!(pacer.oldest_held(), None);
    }

    #[test]
    fn changes_go_at_once_with_what_was_held_in_seq_order() {
        let mut pacer = Pacer::new(INTERVAL);
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        pacer.push(step(1, 5, "running"), ms(0));
        pacer.push(task(2, "running", 1, 0.0), ms(0));
        assert_eq!(indexes(&pacer.take(ms(5), ms(0))), [1, 2]);
        pacer.push(step(3, 5, "running"), ms(10));
        pacer.push(task(4, "running", 1, 10.0), ms(10));
        assert!(pacer.take(ms(15), ms(5)).is_empty(), "progress is held");
        // The step ends and the task completes: everything goes, newest per key.
        pacer.push(step(5, 5, "succeeded"), ms(20));
        pacer.push(task(6, "running", 1, 100.0), ms(20));
        pacer.push(task(7, "completed", 1, 100.0), ms(21));
        assert_eq!(indexes(&pacer.take(ms(25), ms(15))), [5, 7]);
        assert!(pacer.tasks.is_empty(), "a finished task is forgotten");
        // A new step of a run is a change too.
        pacer.push(step(8, 6, "running"), ms(30));
        assert_eq!(indexes(&pacer.take(ms(35), ms(25))), [8]);
    }
}
