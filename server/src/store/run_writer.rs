//! The engine's lane to the store on the run path: claims of due tasks, and
//! the writes of running runs (step starts and ends, progress, run ends).
//!
//! Every durable commit costs an fsync (SQLite) or a WAL flush (PostgreSQL),
//! so the engine never commits each write on its own: it queues them, and the
//! lane writes whatever is queued together. How a lane batches is its
//! driver's business: SQLite's claims ride in the same transactions as the
//! writes on its one writer connection (`sqlite/group_commit.rs`), while a
//! store with many connections uses [`BatchedRunWriter`], which claims on one
//! connection while it writes on another.
//!
//! Order is kept: writes are applied in the order they were queued. A run's
//! end is awaited, so a task is reported finished only once everything before
//! it is durable. If the node dies first, the queued writes are lost together
//! with the run, which a rescue then retries: a step attempt is never
//! recorded as completed twice.

use super::{ClaimedRun, Store, StoreError, StoreResult, WriteAnswer, WriteOp};
use async_trait::async_trait;
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Who claims, and for how long (from the engine's configuration).
#[derive(Debug, Clone)]
pub struct Claimant {
    pub node: String,
    pub lease: Duration,
}

/// How many due tasks a claim may take, asked when the claim is made: a
/// claim that waits for its turn on a busy writer takes the room there is
/// by then (the workers freed meanwhile), not the room there was when it
/// was asked for.
#[derive(Clone)]
pub struct ClaimRoom(Arc<dyn Fn() -> i64 + Send + Sync>);

impl ClaimRoom {
    /// Room for `limit`, whenever the claim is made.
    pub fn fixed(limit: i64) -> Self {
        ClaimRoom(Arc::new(move || limit))
    }

    /// Room as `measure` says at the moment the claim is made.
    pub fn measured(measure: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        ClaimRoom(Arc::new(measure))
    }

    pub fn now(&self) -> i64 {
        (self.0)()
    }
}

impl std::fmt::Debug for ClaimRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClaimRoom")
    }
}

/// See the module docs. Made by [`Store::run_writer`].
#[async_trait]
pub trait RunWriter: Send + Sync {
    /// Queue a write; it is applied in order with the others.
    fn queue(&self, op: WriteOp);
    /// Queue a write and wait until it (and everything queued before it) is
    /// durable. Returns what it did (see [`Store::apply_writes`]).
    async fn commit(&self, op: WriteOp) -> StoreResult<WriteAnswer>;
    /// Claim due tasks for the claimant's node, as many as `room` says when
    /// the claim is made, with a lease of the claimant's length from then
    /// (see [`Store::claim_due`]).
    async fn claim(&self, room: ClaimRoom) -> StoreResult<Vec<ClaimedRun>>;
}

/// Most writes in one transaction.
pub(crate) const WRITE_BATCH: usize = 512;

type Reply = oneshot::Sender<StoreResult<WriteAnswer>>;

/// A [`RunWriter`] over any store: one task writes whatever is queued with
/// [`Store::apply_writes`] (one transaction per batch, in order), and claims
/// go straight to [`Store::claim_due`], beside the writes.
pub struct BatchedRunWriter {
    store: Arc<dyn Store>,
    claimant: Claimant,
    sender: mpsc::UnboundedSender<(WriteOp, Option<Reply>)>,
}

impl BatchedRunWriter {
    /// Start the writing task (inside a tokio runtime). It ends once the
    /// writer is dropped and everything queued is written.
    pub fn start(store: Arc<dyn Store>, claimant: Claimant) -> Arc<Self> {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(store.clone(), receiver));
        Arc::new(BatchedRunWriter {
            store,
            claimant,
            sender,
        })
    }
}

#[async_trait]
impl RunWriter for BatchedRunWriter {
    fn queue(&self, op: WriteOp) {
        let _ = self.sender.send((op, None));
    }

    async fn commit(&self, op: WriteOp) -> StoreResult<WriteAnswer> {
        let (reply, answer) = oneshot::channel();
        self.sender.send((op, Some(reply))).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn claim(&self, room: ClaimRoom) -> StoreResult<Vec<ClaimedRun>> {
        let limit = room.now();
        if limit <= 0 {
            return Ok(Vec::new());
        }
        let now = Utc::now();
        let lease_until = now + self.claimant.lease;
        self.store
            .claim_due(&self.claimant.node, now, lease_until, limit)
            .await
    }
}

/// How long a batch that nobody waits for (step starts and ends, progress:
/// queued, not committed) waits for more before it is written. A run's
/// step start is followed within microseconds by its end and the run's end
/// for most steps; written apart, an idle node paid a commit (a WAL flush or
/// an fsync) for each, and the run's end, which a client may be waiting on,
/// queued behind them. A batch with anything awaited in it is written at once.
pub(crate) const UNAWAITED_LINGER: Duration = Duration::from_millis(1);

/// While nothing in `batch` is awaited, receive more into it for up to
/// [`UNAWAITED_LINGER`] (both drivers' run writers do, see there).
pub(crate) async fn linger<T>(
    receiver: &mut mpsc::UnboundedReceiver<T>,
    batch: &mut Vec<T>,
    awaited: impl Fn(&T) -> bool,
) {
    let until = tokio::time::Instant::now() + UNAWAITED_LINGER;
    while batch.len() < WRITE_BATCH && !batch.iter().any(&awaited) {
        let room = WRITE_BATCH - batch.len();
        match tokio::time::timeout_at(until, receiver.recv_many(batch, room)).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

async fn write_batches(
    store: Arc<dyn Store>,
    mut receiver: mpsc::UnboundedReceiver<(WriteOp, Option<Reply>)>,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while receiver.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        linger(&mut receiver, &mut batch, |(_, reply)| reply.is_some()).await;
        let (ops, replies): (Vec<WriteOp>, Vec<Option<Reply>>) = batch.drain(..).unzip();
        match store.apply_writes(&ops).await {
            Ok(applied) => {
                for (reply, applied) in replies.into_iter().zip(applied) {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(applied));
                    }
                }
            }
            Err(error) => {
                tracing::error!("committing {} executor writes failed: {error:#}", ops.len());
                let message = format!("{error:#}");
                for reply in replies.into_iter().flatten() {
                    let _ = reply.send(Err(internal(&message)));
                }
            }
        }
    }
}

fn stopped() -> StoreError {
    internal("the store's run writer has stopped")
}

pub(crate) fn internal(message: &str) -> StoreError {
    StoreError::Internal(anyhow::anyhow!("{message}"))
}
