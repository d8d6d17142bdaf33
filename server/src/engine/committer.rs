//! Group commit for the run path. Every durable commit costs an fsync
//! (milliseconds on real disks), so the executor does not commit each step
//! start, step end and run end on its own: it queues them here, and one writer
//! applies whatever is queued in one transaction.
//!
//! Order is kept (one queue, one writer). Step starts and ends are queued
//! without waiting; a run's end is awaited, so a task is reported finished
//! only once everything before it is on disk. If the node dies first, the
//! queued writes are lost together with the run, which the rescuer then
//! retries: a step attempt is never recorded as completed twice.

use crate::store::{Store, StoreError, StoreResult, WriteOp};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most writes in one transaction.
const BATCH: usize = 512;

type Reply = oneshot::Sender<StoreResult<bool>>;

pub struct Committer {
    sender: mpsc::UnboundedSender<(WriteOp, Option<Reply>)>,
}

impl Committer {
    pub fn start(store: Arc<dyn Store>) -> Arc<Self> {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(commit_batches(store, receiver));
        Arc::new(Committer { sender })
    }

    /// Queue a write; it is applied in order with the others.
    pub fn queue(&self, op: WriteOp) {
        let _ = self.sender.send((op, None));
    }

    /// Queue a write and wait until it (and everything before it) is committed.
    pub async fn commit(&self, op: WriteOp) -> StoreResult<bool> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((op, Some(reply)))
            .map_err(|_| StoreError::Internal(anyhow::anyhow!("the committer has stopped")))?;
        answer
            .await
            .map_err(|_| StoreError::Internal(anyhow::anyhow!("the committer has stopped")))?
    }
}

async fn commit_batches(
    store: Arc<dyn Store>,
    mut receiver: mpsc::UnboundedReceiver<(WriteOp, Option<Reply>)>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut batch, BATCH).await > 0 {
        let (ops, replies): (Vec<WriteOp>, Vec<Option<Reply>>) = batch.drain(..).unzip();
        match store.apply_writes(&ops).await {
            Ok(results) => {
                for (reply, applied) in replies.into_iter().zip(results) {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(applied));
                    }
                }
            }
            Err(error) => {
                tracing::error!("committing {} executor writes failed: {error:#}", ops.len());
                let message = format!("{error:#}");
                for reply in replies.into_iter().flatten() {
                    let _ = reply.send(Err(StoreError::Internal(anyhow::anyhow!("{message}"))));
                }
            }
        }
    }
}
