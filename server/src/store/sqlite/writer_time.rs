//! How long the hot connection is held by the engine's hot transactions,
//! and by which part. The engine's throughput on SQLite is bounded by this
//! one connection, so the engine benchmark prints these next to the wall
//! time: held time well under the wall time means the writer waits on the
//! pipeline; near it, the transactions themselves are what to make cheaper.
//! A hold counts from the lock to its release: the engine's writer runs many
//! transactions in one (see `turn.rs`), and the time between them counts.
//!
//! Process-wide counters (relaxed atomics, a few nanoseconds per transaction).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static HELD: AtomicU64 = AtomicU64::new(0);
static CLAIMS: AtomicU64 = AtomicU64::new(0);
static COMMITS: AtomicU64 = AtomicU64::new(0);
static TRANSACTIONS: AtomicU64 = AtomicU64::new(0);
static HOLDS: AtomicU64 = AtomicU64::new(0);

/// Time spent so far, since the process started.
#[derive(Debug, Clone, Copy)]
pub struct WriterTime {
    /// The handle held for hot transactions (claims and write batches).
    pub held: Duration,
    /// Of which claims (their commit included).
    pub claims: Duration,
    /// Of which `COMMIT` statements of either kind (a FULL one waits for the
    /// disk), and the WAL syncs the writer makes itself after a turn's
    /// relaxed commit (see `turn.rs`; those left to the sync thread, see
    /// `wal_syncer.rs`, are not held time).
    pub commits: Duration,
    /// Hot transactions committed (the writer's turns).
    pub transactions: u64,
    /// Holds of the write lock they ran in.
    pub holds: u64,
}

impl WriterTime {
    pub fn now() -> Self {
        let read = |counter: &AtomicU64| Duration::from_nanos(counter.load(Ordering::Relaxed));
        WriterTime {
            held: read(&HELD),
            claims: read(&CLAIMS),
            commits: read(&COMMITS),
            transactions: TRANSACTIONS.load(Ordering::Relaxed),
            holds: HOLDS.load(Ordering::Relaxed),
        }
    }

    /// What was spent between `earlier` and `self`.
    pub fn since(self, earlier: WriterTime) -> WriterTime {
        WriterTime {
            held: self.held.saturating_sub(earlier.held),
            claims: self.claims.saturating_sub(earlier.claims),
            commits: self.commits.saturating_sub(earlier.commits),
            transactions: self.transactions.saturating_sub(earlier.transactions),
            holds: self.holds.saturating_sub(earlier.holds),
        }
    }
}

pub(super) enum Part {
    Held,
    Claim,
    Commit,
    /// An fsync of the WAL that made a relaxed commit durable.
    Sync,
}

/// Add the time since `started` to `part` (a commit also counts one
/// transaction, a hold one hold).
pub(super) fn add(part: Part, started: Instant) {
    let counter = match part {
        Part::Held => {
            HOLDS.fetch_add(1, Ordering::Relaxed);
            &HELD
        }
        Part::Claim => &CLAIMS,
        Part::Commit => {
            TRANSACTIONS.fetch_add(1, Ordering::Relaxed);
            &COMMITS
        }
        Part::Sync => &COMMITS,
    };
    counter.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
}
