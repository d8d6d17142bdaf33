//! The node's workers, and the runs it claims ahead of them.
//!
//! A run holds a [`WorkerSlot`] while its steps run, so at most
//! `EngineConfig::workers` steps run at once. A claim goes through the
//! store's writer, which on a busy node answers after its next commit; a
//! claim for only the workers free when it was asked leaves every worker
//! that frees meanwhile idle until the claim after it. With short runs that
//! was most of the node's time: its workers waited on the claims, and the
//! node ran no-op steps far slower with its default workers than with eight
//! times as many.
//!
//! So the claim loop claims ahead: besides the free workers, as many runs
//! as the node's workers have lately freed in a short horizon
//! (`EngineConfig::claim_ahead`, [`AHEAD_HORIZON`] by default), and each
//! waits for the next slot to free. Runs that end quickly keep the
//! pipeline full; long runs free slots seldom, so nothing is claimed ahead
//! of them and no task waits here while another node could run it. A run
//! claimed ahead is registered as running from its claim (its lease is
//! renewed, a cancel finds it, a drain waits for it).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How far ahead the node claims by default: the runs its workers will
/// likely take within this time, at the rate they freed lately. About a busy
/// writer's commit, so that a run claimed ahead waits about as long as the
/// claim itself took.
pub(super) const AHEAD_HORIZON: Duration = Duration::from_millis(10);
/// How quickly the measured rate follows a change (the time constant of
/// its moving average).
const RATE_SMOOTHING: Duration = Duration::from_millis(100);

/// Cheap to clone: every clone counts the same workers.
#[derive(Clone)]
pub(crate) struct Workers {
    slots: Arc<Semaphore>,
    /// Slots given back so far.
    freed: Arc<AtomicU64>,
    /// Runs claimed ahead and waiting for a slot.
    waiting: Arc<AtomicI64>,
    /// The most runs that waited at once: kept, because a sample of
    /// `waiting` misses a queue that drains within a millisecond.
    most_waiting: Arc<AtomicI64>,
}

/// A worker held by a run; freed when dropped.
pub(crate) struct WorkerSlot {
    _permit: OwnedSemaphorePermit,
    freed: Arc<AtomicU64>,
}

impl Drop for WorkerSlot {
    fn drop(&mut self) {
        self.freed.fetch_add(1, Ordering::Relaxed);
    }
}

/// A run claimed ahead, counted as waiting until it takes its slot.
pub(crate) struct WaitingRun {
    slots: Arc<Semaphore>,
    freed: Arc<AtomicU64>,
    waiting: Arc<AtomicI64>,
}

impl Workers {
    pub(super) fn new(count: usize) -> Self {
        Workers {
            slots: Arc::new(Semaphore::new(count.max(1))),
            freed: Arc::default(),
            waiting: Arc::default(),
            most_waiting: Arc::default(),
        }
    }

    /// A free worker, if there is one and no run claimed ahead waits for it.
    pub(super) fn try_take(&self) -> Option<WorkerSlot> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        Some(WorkerSlot {
            _permit: permit,
            freed: self.freed.clone(),
        })
    }

    /// Count a run as waiting for a slot, from now until
    /// [`WaitingRun::slot`] gives it one.
    pub(super) fn wait(&self) -> WaitingRun {
        let now_waiting = self.waiting.fetch_add(1, Ordering::AcqRel) + 1;
        self.most_waiting.fetch_max(now_waiting, Ordering::AcqRel);
        WaitingRun {
            slots: self.slots.clone(),
            freed: self.freed.clone(),
            waiting: self.waiting.clone(),
        }
    }

    /// Runs claimed ahead and waiting for a slot.
    pub(super) fn waiting(&self) -> i64 {
        self.waiting.load(Ordering::Acquire)
    }

    /// The most runs that were claimed ahead and waiting at once, so far.
    pub(super) fn most_waiting(&self) -> i64 {
        self.most_waiting.load(Ordering::Acquire)
    }

    /// How many runs the claim loop may claim now: the free workers, and
    /// `ahead` more less those already claimed ahead and waiting.
    pub(super) fn room(&self, ahead: i64) -> i64 {
        let free = self.slots.available_permits() as i64;
        free + (ahead - self.waiting.load(Ordering::Acquire)).max(0)
    }
}

impl WaitingRun {
    /// The next slot that frees (in the order the runs began to wait).
    pub(super) async fn slot(self) -> WorkerSlot {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the workers' semaphore is never closed");
        WorkerSlot {
            _permit: permit,
            freed: self.freed.clone(),
        }
    }
}

impl Drop for WaitingRun {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How many runs to claim ahead: what the workers freed lately, per
/// horizon, as a moving average of the rate.
pub(super) struct Ahead {
    horizon: Duration,
    at: Instant,
    freed: u64,
    /// Slots freed per second.
    rate: f64,
}

impl Ahead {
    pub(super) fn new(workers: &Workers, horizon: Duration) -> Self {
        Ahead {
            horizon,
            at: Instant::now(),
            freed: workers.freed.load(Ordering::Relaxed),
            rate: 0.0,
        }
    }

    /// The runs to claim ahead now, at most `most`.
    pub(super) fn now(&mut self, workers: &Workers, most: i64) -> i64 {
        let now = Instant::now();
        let elapsed = now.duration_since(self.at).as_secs_f64();
        let freed = workers.freed.load(Ordering::Relaxed);
        // Too short a span says nothing about a rate; it joins the next one.
        if elapsed >= 0.001 {
            let recent = (freed - self.freed) as f64 / elapsed;
            let weight = 1.0 - (-elapsed / RATE_SMOOTHING.as_secs_f64()).exp();
            self.rate += weight * (recent - self.rate);
            (self.at, self.freed) = (now, freed);
        }
        ((self.rate * self.horizon.as_secs_f64()) as i64).clamp(0, most.max(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_run_claimed_ahead_waits_for_the_next_slot_and_counts_as_waiting() {
        let workers = Workers::new(1);
        let first = workers.try_take().expect("one free worker");
        assert!(workers.try_take().is_none());
        assert_eq!(workers.room(3), 3, "no worker free: only the runs ahead");
        let waiting = workers.wait();
        assert_eq!(workers.room(3), 2);
        drop(waiting);
        assert_eq!(workers.room(3), 3, "a dropped wait is no longer counted");
        assert_eq!(
            workers.most_waiting(),
            1,
            "but the most that waited is kept"
        );

        let taker = tokio::spawn(workers.wait().slot());
        assert_eq!(
            workers.room(1),
            0,
            "counted from the claim, before it is polled"
        );
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), taker)
            .await
            .expect("the freed slot goes to the waiting run")
            .unwrap();
        assert_eq!(workers.room(0), 0, "its slot is taken, no one waits");
        drop(second);
        assert_eq!(workers.room(0), 1);
        assert_eq!(workers.freed.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn nothing_is_claimed_ahead_of_slow_runs() {
        let workers = Workers::new(32);
        let mut ahead = Ahead::new(&workers, AHEAD_HORIZON);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(ahead.now(&workers, 64), 0, "no slot freed: nothing ahead");
        // One run a second ends: far less than one per horizon.
        drop(workers.try_take());
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(ahead.now(&workers, 64), 0);
    }

    #[test]
    fn quick_runs_are_claimed_ahead_up_to_the_most() {
        let workers = Workers::new(32);
        let mut ahead = Ahead::new(&workers, AHEAD_HORIZON);
        let mut claimed = 0;
        // 20,000 runs a second for half a second, in 5 ms steps.
        for _ in 0..100 {
            for _ in 0..100 {
                drop(workers.try_take());
            }
            std::thread::sleep(Duration::from_millis(5));
            claimed = ahead.now(&workers, 1_000);
        }
        // About 200 per 10 ms (less what the sleeps overran).
        assert!((100..=200).contains(&claimed), "{claimed}");
        assert_eq!(ahead.now(&workers, 64), 64);
    }
}
