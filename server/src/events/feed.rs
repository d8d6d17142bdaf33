//! The feed: what the bus publishes, gathered into batches for each class of
//! subscriber (without log lines, with them), paced per task (see
//! [`super::pacer`]) and serialised once for all the subscribers of a batch.
//!
//! It runs on a thread of its own, not on a tokio runtime: building the
//! batches is never queued behind the socket work it feeds, nor behind steps.
//!
//! Each subscriber gets at most one frame per [`FLUSH_INTERVAL`], but not
//! all at the same instant: subscribers are spread over [`GROUPS`] groups,
//! and the feed flushes every [`BATCH_INTERVAL`], each time to the group
//! whose turn it is (a group that has had nothing for a whole interval is
//! sent at once). A flush to every subscriber at once was a burst of
//! 1,000 socket writes that the last subscribers waited ~10 ms for; a tenth
//! of them at a time, the work is the same and the wait is gone. What the
//! pacer lets out goes into every group's pending list at once, so a group's
//! frame holds what came since its last one, coalesced to the latest state
//! per task and step.
use super::Event;
use super::batch::{Batch, Published, coalesce};
use super::pacer::Pacer;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Shortest time between two frames to one subscriber; also the longest a
/// change waits for one while frames follow each other.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(10);
/// Groups of subscribers, each flushed in its turn.
pub const GROUPS: usize = 10;
/// How often the feed flushes (one group's turn each time).
const BATCH_INTERVAL: Duration = Duration::from_millis(1);
/// How long a flush after a quiet spell waits for events published with the first.
const GATHER: Duration = Duration::from_millis(1);
/// How often a running task's progress is sent (see [`super::pacer`]).
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// Batches kept for a subscriber that is behind (2.5 s of flushes at the
/// shortest interval); past this it lags and is caught up with a snapshot.
const BATCHES_KEPT: usize = 256;

/// Which batches a subscriber gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    NoLogs = 0,
    WithLogs = 1,
}

/// Per class, one channel per group of subscribers.
type Groups = [Vec<broadcast::Sender<Arc<Batch>>>; 2];

pub struct Feed {
    input: Arc<Input>,
    classes: Arc<Groups>,
    started: AtomicBool,
    start: Once,
}

struct Input {
    queue: Mutex<Queue>,
    wake: Condvar,
}

#[derive(Default)]
struct Queue {
    events: Vec<Arc<Published>>,
    /// The thread waits for the first event.
    idle: bool,
    /// The bus is gone: the thread ends.
    closed: bool,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            input: Arc::new(Input {
                queue: Mutex::default(),
                wake: Condvar::new(),
            }),
            classes: Arc::new(std::array::from_fn(|_| {
                (0..GROUPS)
                    .map(|_| broadcast::channel(BATCHES_KEPT).0)
                    .collect()
            })),
            started: AtomicBool::new(false),
            start: Once::new(),
        }
    }
}

impl Feed {
    /// Queue a published event; nothing is kept (or even made: a node with
    /// no live view publishes every run's events) before the first subscriber.
    /// The caller holds the bus's lock, so the queue is in publish order.
    pub fn push(&self, index: u64, event: &Event) {
        if !self.started.load(Ordering::Acquire) {
            return;
        }
        let published = Arc::new(Published::new(index, event.clone()));
        let mut queue = self.input.queue.lock();
        queue.events.push(published);
        if queue.idle {
            queue.idle = false;
            self.input.wake.notify_one();
        }
    }

    /// Batches from now on, in the group with the fewest subscribers (the
    /// thread starts with the first subscriber).
    pub fn subscribe(&self, class: Class) -> broadcast::Receiver<Arc<Batch>> {
        let receiver = self.classes[class as usize]
            .iter()
            .min_by_key(|sender| sender.receiver_count())
            .expect("at least one group")
            .subscribe();
        self.start.call_once(|| {
            let (input, classes) = (self.input.clone(), self.classes.clone());
            std::thread::Builder::new()
                .name("stepwise-feed".into())
                .spawn(move || run(&input, &classes))
                .expect("spawn the event feed thread");
            self.started.store(true, Ordering::Release);
        });
        receiver
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.input.queue.lock().closed = true;
        self.input.wake.notify_one();
    }
}

fn run(input: &Input, classes: &Groups) {
    let mut pacers = [Pacer::new(PROGRESS_INTERVAL), Pacer::new(PROGRESS_INTERVAL)];
    // Per class and group: what the pacer let out that the group has not
    // been sent yet, and when the group was last sent something.
    let mut pending: [Vec<Vec<Arc<Published>>>; 2] =
        std::array::from_fn(|_| vec![Vec::new(); GROUPS]);
    // When each group may be sent to next (None: at once).
    let mut group_due: [Vec<Option<Instant>>; 2] = std::array::from_fn(|_| vec![None; GROUPS]);
    let origin = Instant::now();
    let mut last_flush = origin;
    // Every event below this index has been taken from the queue.
    let mut taken_below = 1;
    let mut events = Vec::new();
    loop {
        let waiting =
            pacers.iter().any(|p| !p.is_idle()) || pending.iter().flatten().any(|p| !p.is_empty());
        if !wait_for_events(input, waiting) {
            return;
        }
        let flush_at = (Instant::now() + GATHER).max(last_flush + BATCH_INTERVAL);
        std::thread::sleep(flush_at.saturating_duration_since(Instant::now()));
        std::mem::swap(&mut events, &mut input.queue.lock().events);
        if let Some(last) = events.last() {
            taken_below = last.index + 1;
        }
        let now = Instant::now();
        for (class, pacer) in pacers.iter_mut().enumerate() {
            let (senders, pending, due) =
                (&classes[class], &mut pending[class], &mut group_due[class]);
            if senders.iter().all(|s| s.receiver_count() == 0) {
                pacer.clear();
                pending.iter_mut().for_each(Vec::clear);
                continue;
            }
            for published in &events {
                if class == Class::NoLogs as usize && matches!(published.event, Event::Log(_)) {
                    continue;
                }
                pacer.push(published.clone(), published.at);
            }
            let out = pacer.take(now, last_flush);
            let settled = pacer.oldest_held().unwrap_or(taken_below);
            for (group, sender) in senders.iter().enumerate() {
                if sender.receiver_count() == 0 {
                    pending[group].clear();
                    continue;
                }
                pending[group].extend(out.iter().cloned());
                if pending[group].is_empty() || due[group].is_some_and(|at| now < at) {
                    continue;
                }
                let batch = coalesce(std::mem::take(&mut pending[group]));
                let _ = sender.send(Arc::new(Batch::new(batch, settled)));
                due[group] = Some(next_turn(origin, group, now));
            }
        }
        last_flush = now;
        events.clear();
    }
}

/// A group's turns are [`FLUSH_INTERVAL`] apart, group `g` at `g` batch
/// intervals into each. After a send at `now`, the group's next turn at
/// least half an interval later: a group sent at once after a quiet spell
/// is back on its turns after one shorter gap.
fn next_turn(origin: Instant, group: usize, now: Instant) -> Instant {
    let first = origin + BATCH_INTERVAL * group as u32;
    let earliest = now + FLUSH_INTERVAL / 2;
    let elapsed = earliest.saturating_duration_since(first).as_nanos();
    let turns = elapsed.div_ceil(FLUSH_INTERVAL.as_nanos()) as u32;
    first + FLUSH_INTERVAL * turns
}

/// Wait until events are queued, or one batch interval while some are held
/// back or waiting for their group's turn. False when the bus is gone.
fn wait_for_events(input: &Input, held: bool) -> bool {
    let mut queue = input.queue.lock();
    while queue.events.is_empty() && !queue.closed {
        queue.idle = true;
        if held {
            if input.wake.wait_for(&mut queue, BATCH_INTERVAL).timed_out() {
                break;
            }
        } else {
            input.wake.wait(&mut queue);
        }
    }
    queue.idle = false;
    !queue.closed
}
