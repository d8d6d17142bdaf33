//! The feed: what the bus publishes, gathered into one batch per flush for
//! each class of subscriber (without log lines, with them), paced per task
//! (see [`super::pacer`]) and serialised once for all its subscribers.
//!
//! It runs on a thread of its own, not on a tokio runtime: building the
//! batches is never queued behind the socket work it feeds, nor behind steps.
//! A flush follows the first event after a quiet spell by [`GATHER`] (a
//! progress call publishes a step and a task state together), and flushes
//! are at least [`FLUSH_INTERVAL`] apart: each subscriber gets at most one
//! frame per interval, however many tasks report.

use super::Event;
use super::batch::{Batch, Published};
use super::pacer::Pacer;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Shortest time between two flushes; also the longest a change waits for
/// one while flushes follow each other.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(10);
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

pub struct Feed {
    input: Arc<Input>,
    classes: [broadcast::Sender<Arc<Batch>>; 2],
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
            classes: [
                broadcast::channel(BATCHES_KEPT).0,
                broadcast::channel(BATCHES_KEPT).0,
            ],
            started: AtomicBool::new(false),
            start: Once::new(),
        }
    }
}

impl Feed {
    /// Queue a published event; nothing is kept before the first subscriber.
    /// The caller holds the bus's lock, so the queue is in publish order.
    pub fn push(&self, published: Arc<Published>) {
        if !self.started.load(Ordering::Acquire) {
            return;
        }
        let mut queue = self.input.queue.lock().expect("feed queue");
        queue.events.push(published);
        if queue.idle {
            queue.idle = false;
            self.input.wake.notify_one();
        }
    }

    /// Batches from now on (the thread starts with the first subscriber).
    pub fn subscribe(&self, class: Class) -> broadcast::Receiver<Arc<Batch>> {
        let receiver = self.classes[class as usize].subscribe();
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
        self.input.queue.lock().expect("feed queue").closed = true;
        self.input.wake.notify_one();
    }
}

fn run(input: &Input, classes: &[broadcast::Sender<Arc<Batch>>; 2]) {
    let mut pacers = [Pacer::new(PROGRESS_INTERVAL), Pacer::new(PROGRESS_INTERVAL)];
    let mut last_flush = Instant::now();
    // Every event below this index has been taken from the queue.
    let mut taken_below = 1;
    let mut events = Vec::new();
    loop {
        let held = pacers.iter().any(|p| !p.is_idle());
        if !wait_for_events(input, held) {
            return;
        }
        let flush_at = (Instant::now() + GATHER).max(last_flush + FLUSH_INTERVAL);
        std::thread::sleep(flush_at.saturating_duration_since(Instant::now()));
        std::mem::swap(
            &mut events,
            &mut input.queue.lock().expect("feed queue").events,
        );
        if let Some(last) = events.last() {
            taken_below = last.index + 1;
        }
        let now = Instant::now();
        for (class, (pacer, sender)) in pacers.iter_mut().zip(classes).enumerate() {
            if sender.receiver_count() == 0 {
                pacer.clear();
                continue;
            }
            for published in &events {
                if class == Class::NoLogs as usize && matches!(published.event, Event::Log(_)) {
                    continue;
                }
                pacer.push(published.clone(), published.at);
            }
            let out = pacer.take(now, last_flush);
            if !out.is_empty() {
                let settled = pacer.oldest_held().unwrap_or(taken_below);
                let _ = sender.send(Arc::new(Batch::new(out, settled)));
            }
        }
        last_flush = now;
        events.clear();
    }
}

/// Wait until events are queued, or one flush interval while some are held
/// back. False when the bus is gone.
fn wait_for_events(input: &Input, held: bool) -> bool {
    let mut queue = input.queue.lock().expect("feed queue");
    while queue.events.is_empty() && !queue.closed {
        queue.idle = true;
        if held {
            let (q, timeout) = input
                .wake
                .wait_timeout(queue, FLUSH_INTERVAL)
                .expect("feed queue");
            queue = q;
            if timeout.timed_out() {
                break;
            }
        } else {
            queue = input.wake.wait(queue).expect("feed queue");
        }
    }
    queue.idle = false;
    !queue.closed
}
