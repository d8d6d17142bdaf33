//! Group commit for task creation: concurrent `POST /tasks` requests are
//! queued and written in one transaction, so a burst of creates pays one
//! fsync instead of one each. A request waits only for its batch's commit.

use super::{NewTask, Store, StoreError, StoreResult, Task};
use chrono::Utc;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most creates in one transaction.
const BATCH: usize = 256;

/// A task, whether its commit may be deferred (see
/// [`Store::create_tasks_deferred`]), and whom to answer.
type Request = (NewTask, bool, oneshot::Sender<StoreResult<(Task, bool)>>);

pub struct CreateBatcher {
    sender: mpsc::UnboundedSender<Request>,
}

impl CreateBatcher {
    pub fn start(store: Arc<dyn Store>) -> Arc<Self> {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(store, receiver));
        Arc::new(CreateBatcher { sender })
    }

    /// Create (or update by code) a task; returns once it is committed and
    /// on disk.
    pub async fn create(&self, task: NewTask) -> StoreResult<(Task, bool)> {
        self.send(task, false).await
    }

    /// Create a task whose answer waits for something else first: it may
    /// not be on disk yet when this returns. Call [`Store::sync_deferred`]
    /// before answering.
    pub async fn create_deferred(&self, task: NewTask) -> StoreResult<(Task, bool)> {
        self.send(task, true).await
    }

    async fn send(&self, task: NewTask, deferred: bool) -> StoreResult<(Task, bool)> {
        let stopped = || StoreError::Internal(anyhow::anyhow!("the task writer has stopped"));
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((task, deferred, reply))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn write_batches(store: Arc<dyn Store>, mut receiver: mpsc::UnboundedReceiver<Request>) {
    let mut batch = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut batch, BATCH).await > 0 {
        // One synced create in the batch syncs the whole transaction.
        let deferred = batch.iter().all(|(_, deferred, _)| *deferred);
        let (tasks, replies): (Vec<NewTask>, Vec<_>) = batch
            .drain(..)
            .map(|(task, _, reply)| (task, reply))
            .unzip();
        let created = if deferred {
            store.create_tasks_deferred(tasks, Utc::now()).await
        } else {
            store.create_tasks(tasks, Utc::now()).await
        };
        match created {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(error) => {
                let message = format!("{error:#}");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Internal(anyhow::anyhow!("{message}"))));
                }
            }
        }
    }
}
