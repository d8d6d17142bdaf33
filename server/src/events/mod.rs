//! The event bus: progress, status and log events, published by the engine and
//! read by the WebSocket, the CLI's `--watch` and the progress endpoint.
//!
//! It knows no sockets. Every event carries a per-task sequence number; the bus
//! also keeps the latest task state in memory, so a (re)connecting client's
//! snapshot is the truth even between database writes, and a slow client can
//! be caught up with the latest state per task instead of every event.
//!
//! Subscribers of the live view read the [`feed`]: batches of events, paced
//! per task and serialised once for all of them. [`EventBus::subscribe`] is
//! every event, for in-process waiters.

mod batch;
mod feed;
mod pacer;

pub use batch::{Batch, Published, coalesce, frame, join};
pub use feed::{Class, FLUSH_INTERVAL, PROGRESS_INTERVAL};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Events kept for subscribers that are briefly behind; past this a subscriber
/// lags and is caught up from the latest state instead.
const CHANNEL_CAPACITY: usize = 8192;
/// Tasks whose latest state the bus keeps in memory. Past this, the states of
/// tasks that are not running (the store has those) are forgotten, oldest
/// first: a busy server runs millions of tasks, and keeping every one was a
/// leak of ~0.5 KB a task.
const TASKS_KEPT: usize = 10_000;

/// The live state of a task, as shown by progress bars. Fields without a
/// value are left out (not `null`): with many subscribers every byte is
/// written and parsed once per subscriber.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskState {
    pub task_id: i64,
    pub seq: u64,
    pub name: String,
    pub status: String,
    /// 0–100 with two decimals, never lower than before within a run.
    pub progress: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_step: Option<i64>,
    /// With one decimal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl TaskState {
    /// The state of a task as stored (no run in flight, or right after a change).
    pub fn stored(task: &crate::store::Task, seq: u64) -> Self {
        TaskState {
            task_id: task.id,
            seq,
            name: task.name.clone(),
            status: task.status.to_string(),
            progress: task.progress,
            message: task.message.clone(),
            run_id: task.current_run_id,
            current_step: None,
            eta_seconds: None,
            last_result: task.last_result.map(|r| r.to_string()),
            next_run_at: task.next_run_at,
            updated_at: task.updated_at,
        }
    }
}

#[cfg(test)]
impl TaskState {
    /// A state of run `run_id` with only what the tests look at.
    pub(crate) fn for_test(task_id: i64, status: &str, run_id: i64, progress: f64) -> Self {
        TaskState {
            task_id,
            seq: 0,
            name: "t".into(),
            status: status.into(),
            progress,
            message: None,
            run_id: Some(run_id),
            current_step: None,
            eta_seconds: None,
            last_result: None,
            next_run_at: None,
            updated_at: Utc::now(),
        }
    }
}

/// A step's live state within a run (fields without a value left out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepState {
    pub task_id: i64,
    pub seq: u64,
    pub run_id: i64,
    pub step_id: i64,
    pub status: String,
    /// 0–100 with two decimals.
    pub progress: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For a failed or interrupted step: what stopped it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One log line of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogLine {
    pub task_id: i64,
    pub seq: u64,
    pub run_id: i64,
    pub step_id: i64,
    pub level: String,
    pub message: String,
    pub at: DateTime<Utc>,
}

/// What the bus carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event {
    Task(TaskState),
    Step(StepState),
    Log(LogLine),
    /// The task was deleted.
    Deleted {
        task_id: i64,
        seq: u64,
    },
}

impl Event {
    pub fn task_id(&self) -> i64 {
        match self {
            Event::Task(e) => e.task_id,
            Event::Step(e) => e.task_id,
            Event::Log(e) => e.task_id,
            Event::Deleted { task_id, .. } => *task_id,
        }
    }

    pub fn seq(&self) -> u64 {
        match self {
            Event::Task(e) => e.seq,
            Event::Step(e) => e.seq,
            Event::Log(e) => e.seq,
            Event::Deleted { seq, .. } => *seq,
        }
    }

    fn set_seq(&mut self, seq: u64) {
        match self {
            Event::Task(e) => e.seq = seq,
            Event::Step(e) => e.seq = seq,
            Event::Log(e) => e.seq = seq,
            Event::Deleted { seq: s, .. } => *s = seq,
        }
    }
}

#[derive(Default)]
struct Latest {
    /// Events published so far, all tasks (the last one's [`Published::index`]).
    published: u64,
    /// Set once tasks have been forgotten (see [`TASKS_KEPT`]): a task seen
    /// again then continues from the publish index, which is above any seq
    /// it had (a task's seq never exceeds the events published in all).
    forgot: bool,
    /// Look for tasks to forget when this many are kept (more than
    /// [`TASKS_KEPT`] while most are running: a scan per publish would cost
    /// more than the memory).
    forget_at: usize,
    /// What the bus knows of each task, in one entry, so that a publish
    /// looks its task up once: hash lookups by task id, most of them cache
    /// misses on a busy server, are most of what a publish costs.
    tasks: HashMap<i64, Known>,
}

/// What the bus knows of one task.
#[derive(Default)]
struct Known {
    /// The task's last sequence number.
    seq: u64,
    /// The index of its last event.
    last_index: u64,
    /// Its latest state (none before its first task event, or once deleted).
    state: Option<TaskState>,
    /// Its current run's steps.
    steps: Vec<StepState>,
}

impl Known {
    fn is_running(&self) -> bool {
        self.state.as_ref().is_some_and(|s| s.status == "running")
    }
}

/// In-process publish/subscribe with the latest state per task.
pub struct EventBus {
    sender: broadcast::Sender<Event>,
    feed: feed::Feed,
    latest: Mutex<Latest>,
    /// Where this node's own events also go, to reach the other nodes (set
    /// when the store is shared: see `engine/cluster.rs`).
    outbox: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Event>>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            sender: broadcast::channel(CHANNEL_CAPACITY).0,
            feed: feed::Feed::default(),
            latest: Mutex::default(),
            outbox: std::sync::OnceLock::new(),
        }
    }
}

/// Two decimals are plenty for a percent and keep the JSON short (an `f32`
/// percent from a guest widens to digits like 33.33333206176758).
fn round_to(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

impl EventBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Assign the task's next sequence number, remember the state and send.
    /// Never blocks: a subscriber that falls behind lags, the publisher does not wait.
    pub fn publish(&self, event: Event) -> u64 {
        let mut latest = self.latest.lock();
        self.publish_locked(&mut latest, event, Origin::Here)
    }

    /// Publish an event another node published (it reached this node as a
    /// node message): subscribers here see it like their own node's, and it
    /// is not sent back out. Its sequence number is this bus's own.
    pub fn publish_remote(&self, event: Event) -> u64 {
        let mut latest = self.latest.lock();
        self.publish_locked(&mut latest, event, Origin::Elsewhere)
    }

    /// From now on, every event published here (not those from elsewhere)
    /// is also sent to `outbox`. Set once; later calls are ignored.
    pub fn send_own_events_to(&self, outbox: tokio::sync::mpsc::UnboundedSender<Event>) {
        let _ = self.outbox.set(outbox);
    }

    /// Publish a state read from the store after a change made at index
    /// `since` (see [`EventBus::published`]), unless the task has had an
    /// event since: then that event is newer than the stored state (the
    /// engine claimed the task in between) and must not be overwritten.
    pub fn publish_unless_newer(&self, event: Event, since: u64) -> Option<u64> {
        let mut latest = self.latest.lock();
        if latest
            .tasks
            .get(&event.task_id())
            .is_some_and(|known| known.last_index > since)
        {
            return None;
        }
        Some(self.publish_locked(&mut latest, event, Origin::Here))
    }

    fn publish_locked(&self, latest: &mut Latest, mut event: Event, origin: Origin) -> u64 {
        let task_id = event.task_id();
        let first = if latest.forgot { latest.published } else { 0 };
        latest.published += 1;
        let index = latest.published;
        let known = latest.tasks.entry(task_id).or_insert_with(|| Known {
            seq: first,
            ..Known::default()
        });
        known.seq += 1;
        known.last_index = index;
        let seq = known.seq;
        event.set_seq(seq);
        match &mut event {
            Event::Task(state) => {
                state.progress = round_to(state.progress, 2);
                state.eta_seconds = state.eta_seconds.map(|eta| round_to(eta, 1));
                if let Some(previous) = &known.state
                    && previous.run_id == state.run_id
                    && state.status == "running"
                {
                    // Progress never goes backwards within a run.
                    state.progress = state.progress.max(previous.progress);
                }
                let previous_run_differs = known.steps.first().is_some_and(|step| {
                    Some(step.run_id) != state.run_id && state.run_id.is_some()
                });
                if previous_run_differs {
                    known.steps.clear();
                }
                known.state = Some(state.clone());
            }
            Event::Step(state) => {
                state.progress = round_to(state.progress, 2);
                known
                    .steps
                    .retain(|s| s.run_id == state.run_id && s.step_id != state.step_id);
                known.steps.push(state.clone());
            }
            Event::Log(_) => {}
            Event::Deleted { .. } => {
                known.state = None;
                known.steps = Vec::new();
            }
        }
        if latest.tasks.len() > latest.forget_at.max(TASKS_KEPT) {
            forget_idle(latest);
        }
        // Sent under the lock so subscribers see each task's events in seq order.
        self.feed.push(index, &event);
        if origin == Origin::Here
            && let Some(outbox) = self.outbox.get()
        {
            let _ = outbox.send(event.clone());
        }
        if self.sender.receiver_count() > 0 {
            let _ = self.sender.send(event);
        }
        seq
    }

    /// Every event from now on, one by one.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }

    /// The live view's batches from now on (see [`feed`]).
    pub fn subscribe_batches(&self, class: Class) -> broadcast::Receiver<Arc<Batch>> {
        self.feed.subscribe(class)
    }

    /// The index of the last event published (0 before the first).
    pub fn published(&self) -> u64 {
        self.latest.lock().published
    }

    /// The latest known state of a task and its current run's steps.
    pub fn latest(&self, task_id: i64) -> Option<(TaskState, Vec<StepState>)> {
        let latest = self.latest.lock();
        let known = latest.tasks.get(&task_id)?;
        Some((known.state.clone()?, known.steps.clone()))
    }

    /// The latest state of every task the bus has seen, by task id.
    pub fn latest_all(&self) -> Vec<TaskState> {
        let latest = self.latest.lock();
        let mut all: Vec<TaskState> = latest
            .tasks
            .values()
            .filter_map(|known| known.state.clone())
            .collect();
        all.sort_by_key(|t| t.task_id);
        all
    }

    /// Current sequence number of a task (0 if none yet).
    pub fn seq(&self, task_id: i64) -> u64 {
        self.latest
            .lock()
            .tasks
            .get(&task_id)
            .map_or(0, |known| known.seq)
    }
}

/// Which node an event comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Here,
    Elsewhere,
}

/// Forget the oldest tenth of the tasks that are not running (their state is
/// in the store, which snapshots read).
fn forget_idle(latest: &mut Latest) {
    let mut idle: Vec<(u64, i64)> = latest
        .tasks
        .iter()
        .filter(|(_, known)| !known.is_running())
        .map(|(&task_id, known)| (known.last_index, task_id))
        .collect();
    // Only which are the oldest matters, not their order: a partial sort.
    let forget = (TASKS_KEPT / 10).min(idle.len());
    if forget < idle.len() {
        idle.select_nth_unstable(forget);
    }
    for (_, task_id) in &idle[..forget] {
        latest.tasks.remove(task_id);
    }
    latest.forgot = true;
    latest.forget_at = latest.tasks.len() + TASKS_KEPT / 10;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(task_id: i64, run_id: i64, progress: f64) -> Event {
        Event::Task(TaskState::for_test(task_id, "running", run_id, progress))
    }

    #[test]
    fn sequence_numbers_are_per_task() {
        let bus = EventBus::new();
        assert_eq!(bus.publish(task(1, 1, 0.0)), 1);
        assert_eq!(bus.publish(task(2, 1, 0.0)), 1);
        assert_eq!(bus.publish(task(1, 1, 5.0)), 2);
    }

    #[test]
    fn states_of_idle_tasks_are_forgotten_and_seqs_still_increase() {
        let bus = EventBus::new();
        let done = |id: i64| Event::Task(TaskState::for_test(id, "completed", 1, 100.0));
        let first_seq = bus.publish(done(1));
        bus.publish(task(2, 1, 50.0));
        for id in 3..(TASKS_KEPT as i64 + 3) {
            bus.publish(done(id));
        }
        assert!(bus.latest_all().len() <= TASKS_KEPT, "bounded");
        assert!(bus.latest(1).is_none(), "the oldest idle task is forgotten");
        assert!(bus.latest(2).is_some(), "a running task is kept");
        // One forgetting so far: exactly the oldest tenth of the idle tasks.
        let last = TASKS_KEPT as i64 + 2;
        let oldest_kept = TASKS_KEPT as i64 / 10 + 2;
        assert!((3..oldest_kept).all(|id| bus.latest(id).is_none()));
        assert!((oldest_kept..=last).all(|id| bus.latest(id).is_some()));
        // Seen again, task 1 goes on above every seq it had.
        assert!(bus.publish(done(1)) > first_seq);
        assert_eq!(bus.seq(1), bus.latest(1).unwrap().0.seq);
    }

    #[test]
    fn a_deleted_task_has_no_state_and_its_seq_goes_on() {
        let bus = EventBus::new();
        bus.publish(task(1, 1, 10.0));
        let deleted = bus.publish(Event::Deleted { task_id: 1, seq: 0 });
        assert_eq!(deleted, 2);
        assert!(bus.latest(1).is_none());
        assert!(bus.latest_all().is_empty());
        assert_eq!(bus.seq(1), 2);
        assert_eq!(bus.publish(task(1, 2, 0.0)), 3);
        assert_eq!(bus.latest(1).unwrap().1, []);
    }

    #[test]
    fn progress_never_goes_backwards_within_a_run() {
        let bus = EventBus::new();
        bus.publish(task(1, 7, 40.0));
        bus.publish(task(1, 7, 30.0));
        assert_eq!(bus.latest(1).unwrap().0.progress, 40.0);
        bus.publish(task(1, 8, 10.0));
        assert_eq!(bus.latest(1).unwrap().0.progress, 10.0);
    }

    #[test]
    fn a_panic_while_the_bus_lock_is_held_does_not_break_the_bus() {
        let bus = Arc::new(EventBus::new());
        bus.publish(task(1, 1, 10.0));
        let holder = bus.clone();
        let panicked = std::thread::spawn(move || {
            let _held = holder.latest.lock();
            panic!("a bug while the bus lock is held");
        })
        .join();
        assert!(panicked.is_err(), "the thread panicked holding the lock");
        // Every later use works: publishing, reading, the snapshot.
        assert_eq!(bus.publish(task(1, 1, 20.0)), 2);
        assert_eq!(bus.published(), 2);
        assert_eq!(bus.latest(1).unwrap().0.progress, 20.0);
        assert_eq!(bus.latest_all().len(), 1);
    }

    #[test]
    fn progress_is_rounded_for_the_wire() {
        let bus = EventBus::new();
        bus.publish(task(1, 7, 100.0 / 3.0));
        assert_eq!(bus.latest(1).unwrap().0.progress, 33.33);
    }

    #[tokio::test]
    async fn the_feed_batches_each_class_once() {
        let bus = EventBus::new();
        let mut without_logs = bus.subscribe_batches(Class::NoLogs);
        let mut with_logs = bus.subscribe_batches(Class::WithLogs);
        bus.publish(task(1, 1, 5.0));
        bus.publish(Event::Log(LogLine {
            task_id: 1,
            seq: 0,
            run_id: 1,
            step_id: 1,
            level: "info".into(),
            message: "hello".into(),
            at: Utc::now(),
        }));
        let seqs =
            |batch: &Batch| -> Vec<u64> { batch.events.iter().map(|p| p.event.seq()).collect() };
        let first = without_logs.recv().await.unwrap();
        assert_eq!(seqs(&first), [1]);
        let frame: serde_json::Value = serde_json::from_slice(&first.frame).unwrap();
        assert_eq!(frame["events"][0]["progress"], 5.0);
        assert_eq!(first.settled, 3, "both events were taken");
        let second = with_logs.recv().await.unwrap();
        assert_eq!(seqs(&second), [1, 2]);
        assert!(
            Arc::ptr_eq(&first.events[0], &second.events[0]),
            "one event, serialised once, in both classes"
        );
    }

    #[tokio::test]
    async fn subscribers_are_served_in_groups_at_most_once_per_interval() {
        let bus = EventBus::new();
        let mut first = bus.subscribe_batches(Class::NoLogs);
        let mut second = bus.subscribe_batches(Class::NoLogs);
        // Changes (not paced) every 2 ms or so, 100 of them.
        let started = std::time::Instant::now();
        let mut last_seq = 0;
        for i in 0..100 {
            let status = if i % 2 == 0 { "running" } else { "scheduled" };
            let mut state = TaskState::for_test(1, status, 1, 0.0);
            state.run_id = Some(i);
            last_seq = bus.publish(Event::Task(state));
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let intervals = started.elapsed().as_millis() / FLUSH_INTERVAL.as_millis();
        tokio::time::sleep(FLUSH_INTERVAL * 3).await;
        let mut frames = [Vec::new(), Vec::new()];
        for (receiver, frames) in [&mut first, &mut second].into_iter().zip(&mut frames) {
            while let Ok(batch) = receiver.try_recv() {
                frames.push(batch);
            }
        }
        for frames in &frames {
            // One a 10 ms (one more after the first, sent at once), each
            // with the latest states so far, ending with the last.
            let most = intervals as usize + 3;
            assert!(
                frames.len() <= most,
                "{} frames, at most {most}",
                frames.len()
            );
            assert!(
                frames.len() >= most / 4,
                "{} frames for {most}",
                frames.len()
            );
            let seqs: Vec<u64> = frames
                .iter()
                .flat_map(|b| b.events.iter().map(|p| p.event.seq()))
                .collect();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
            assert_eq!(seqs.last(), Some(&last_seq));
        }
        assert!(
            frames[0]
                .iter()
                .all(|a| frames[1].iter().all(|b| !Arc::ptr_eq(a, b))),
            "the two subscribers are in different groups"
        );
    }

    #[tokio::test]
    async fn subscribers_receive_in_order() {
        let bus = EventBus::new();
        let mut rx = bus.subscribe();
        bus.publish(task(1, 1, 1.0));
        bus.publish(task(1, 1, 2.0));
        assert_eq!(rx.recv().await.unwrap().seq(), 1);
        assert_eq!(rx.recv().await.unwrap().seq(), 2);
    }
}
