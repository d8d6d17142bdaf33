//! The engine writer's turn: the executor's writes, then a claim, in one
//! transaction on the hot connection (see [`super::direct`]). A busy node
//! records its runs' ends and claims their successors with one commit.
//!
//! A turn's writes are answered only once they are on disk (with the store at
//! FULL: an fsync of the WAL). Its claim does not wait for that fsync:
//!
//! - A turn that only claims commits with `synchronous=NORMAL`. In WAL mode a
//!   commit's frames are made durable by the next synced commit, so the claim
//!   is on disk as soon as any later FULL commit (a step end, a run end) is.
//!   If power fails before that, the task is simply still scheduled and is
//!   claimed again: no step was recorded as completed. That saves an fsync
//!   per claim on a node that is not busy, where it would delay the steps'
//!   start.
//! - A turn with writes commits the same way, hands its claimed runs over
//!   ([`WriterTurns::claimed`]), and only then syncs the WAL and answers its
//!   writes. A busy node's next runs start while the disk syncs the last
//!   ones' ends, and their ends meet in the next turn: each fsync covers the
//!   ends of every worker, not only of those that ended during the last one.
//!   When more work is waiting, the sync is left to a thread of its own
//!   ([`WriterTurns::sync_later`], `wal_syncer.rs`) and the writer goes on
//!   with the next turn meanwhile. For readers, a turn's writes are visible
//!   up to one fsync before they are durable (as a claim's always were);
//!   nothing is acknowledged before it — not a run's end to its executor, so
//!   no event, no `?wait=` answer and no hook.

use super::direct::{Hold, Relaxed};
use super::writer_time::{self, Part};
use super::{Durability, SqliteStore, claim, direct, writes};
use crate::store::{ClaimedRun, StoreError, StoreResult, WriteAnswer, WriteOp};
use chrono::{DateTime, Utc};
use rusqlite::Connection;
use std::time::Instant;

/// Where [`SqliteStore::write_turns`] takes its turns from, and reports them to.
pub(crate) trait WriterTurns {
    /// The next turn, if one is ready now; `None` ends the hold on the writer
    /// (the caller waits for more work outside it, so other writers get in).
    fn next_turn(&mut self) -> Option<&WriterTurn>;
    /// The claim of the turn last given committed: its runs may start,
    /// before the turn's writes are synced (see the module docs). Not called
    /// if the turn failed before its commit.
    fn claimed(&mut self, runs: Vec<ClaimedRun>);
    /// The turn last given committed, its writes not synced yet (see the
    /// module docs): when more work is waiting, take them, to answer after
    /// a sync off this thread (see `wal_syncer.rs`), and return `None`: the
    /// writer goes on with the next turn. Otherwise give them back: the
    /// caller syncs now, and reports through [`WriterTurns::turn_done`].
    fn sync_later(&mut self, answers: Vec<WriteAnswer>) -> Option<Vec<WriteAnswer>>;
    /// How the turn last given went: per op whether it applied, once on
    /// disk. An error before [`WriterTurns::claimed`] means nothing of the
    /// turn was written; one after it, that the sync failed.
    fn turn_done(&mut self, result: StoreResult<Vec<WriteAnswer>>);
}

/// One transaction of the engine's writer: writes, then a claim.
#[derive(Debug)]
pub(crate) struct WriterTurn {
    pub ops: Vec<WriteOp>,
    pub claim: Option<ClaimDue>,
}

/// A claim as a writer turn carries it (see [`crate::store::Store::claim_due`]).
#[derive(Debug, Clone)]
pub(crate) struct ClaimDue {
    pub node: String,
    pub now: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
    pub limit: i64,
}

impl SqliteStore {
    /// The engine writer's turns, one after the other, for as long as
    /// `turns` has one ready. Each turn applies its ops as
    /// `Store::apply_writes` does, then claims as `Store::claim_due` does,
    /// and commits both together: under load a node records a batch of run
    /// ends and claims their successors with one commit (and one fsync). The
    /// claimed runs are handed over before the writes are synced (see the
    /// module docs). Errs only if no turn could be run at all.
    pub(crate) async fn write_turns(
        &self,
        turns: &mut (dyn WriterTurns + Send),
    ) -> StoreResult<()> {
        write_turns(self, turns).await
    }
}

/// The engine writer's turns on one hold of the write lock, for as long as
/// `turns` has one ready: a busy writer takes the lock once for many turns.
async fn write_turns(store: &SqliteStore, turns: &mut (dyn WriterTurns + Send)) -> StoreResult<()> {
    let durability = store.durability;
    with_writer(store, |db, hold| {
        while let Some(turn) = turns.next_turn() {
            let committed = commit_turn(db, durability, &turn.ops, turn.claim.as_ref(), hold);
            let result = committed.and_then(|committed| {
                turns.claimed(committed.claimed);
                if !committed.unsynced {
                    return Ok(Some(committed.answers));
                }
                let Some(answers) = turns.sync_later(committed.answers) else {
                    return Ok(None);
                };
                hold.sync_wal()?;
                Ok(Some(answers))
            });
            match result {
                Ok(None) => {}
                Ok(Some(answers)) => turns.turn_done(Ok(answers)),
                Err(error) => turns.turn_done(Err(StoreError::Internal(error))),
            }
            if !hold.full_again {
                break;
            }
        }
        Ok(())
    })
    .await
}

/// One turn on its own (the single-op store methods and `claim_due`).
pub(super) async fn write_then_claim(
    store: &SqliteStore,
    ops: &[WriteOp],
    claim: Option<&ClaimDue>,
) -> StoreResult<(Vec<WriteAnswer>, Vec<ClaimedRun>)> {
    if nothing_to_do(ops, claim) {
        return Ok((Vec::new(), Vec::new()));
    }
    let durability = store.durability;
    with_writer(store, |db, hold| {
        let committed = commit_turn(db, durability, ops, claim, hold)?;
        if committed.unsynced {
            hold.sync_wal()?;
        }
        Ok((committed.answers, committed.claimed))
    })
    .await
}

/// Run `work` on the store's hot connection (see [`direct`]), holding the
/// sqlx writer meanwhile: no other write runs beside it.
async fn with_writer<R>(
    store: &SqliteStore,
    work: impl FnOnce(&Connection, &mut Hold) -> anyhow::Result<R>,
) -> StoreResult<R> {
    let _write_lock = store.writer.acquire().await?;
    Ok(store.hot.with(work)?)
}

/// No writes and no task to claim: no transaction either.
fn nothing_to_do(ops: &[WriteOp], claim: Option<&ClaimDue>) -> bool {
    ops.is_empty() && claim.is_none_or(|c| c.limit <= 0)
}

/// A turn's transaction, committed.
struct Committed {
    answers: Vec<WriteAnswer>,
    claimed: Vec<ClaimedRun>,
    /// Its writes are not on disk until the WAL is synced ([`Hold::sync_wal`]).
    unsynced: bool,
}

/// One transaction: `ops` in order, then the claim. With the store at FULL it
/// commits without an fsync, and its writes are synced after (see the module
/// docs).
fn commit_turn(
    db: &Connection,
    durability: Durability,
    ops: &[WriteOp],
    claim: Option<&ClaimDue>,
    hold: &mut Hold,
) -> anyhow::Result<Committed> {
    if nothing_to_do(ops, claim) {
        return Ok(Committed {
            answers: Vec::new(),
            claimed: Vec::new(),
            unsynced: false,
        });
    }
    let claim = claim.filter(|c| c.limit > 0);
    let relax = durability == Durability::Full;
    let _relaxed = relax
        .then(|| Relaxed::on(db, &mut hold.full_again))
        .transpose()?;
    let (answers, claimed) = direct::hot_transaction(db, |tx, moves| {
        let applied = writes::apply_in(tx, ops, moves)?;
        let claimed = match claim {
            Some(due) => {
                let started = Instant::now();
                let claimed = claim::claim_in_transaction(tx, due, moves)?;
                writer_time::add(Part::Claim, started);
                claimed
            }
            None => Vec::new(),
        };
        Ok((applied, claimed))
    })?;
    hold.committed = !relax;
    Ok(Committed {
        answers,
        claimed,
        unsynced: relax && !ops.is_empty(),
    })
}
