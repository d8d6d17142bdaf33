//! Group commit for task creation: concurrent `POST /tasks` requests are
//! queued and written in one transaction, so a burst of creates pays one
//! fsync instead of one each. A request waits only for its batch's commit.

use super::{NewTask, Store, StoreError, StoreResult, Task};
use chrono::Utc;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most creates in one transaction.
const BATCH: usize = 256;

type Request = (NewTask, oneshot::Sender<StoreResult<(Task, bool)>>);

pub struct CreateBatcher {
    sender: mpsc::UnboundedSender<Request>,
}

impl CreateBatcher {
    pub fn start(store: Arc<dyn Store>) -> Arc<Self> {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(store, receiver));
        Arc::new(CreateBatcher { sender })
    }

    /// Create (or update by code) a task; returns once it is committed.
    pub async fn create(&self, task: NewTask) -> StoreResult<(Task, bool)> {
        let stopped = || StoreError::Internal(anyhow::anyhow!("the task writer has stopped"));
        let (reply, answer) = oneshot::channel();
        self.sender.send((task, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn write_batches(store: Arc<dyn Store>, mut receiver: mpsc::UnboundedReceiver<Request>) {
    let mut batch = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut batch, BATCH).await > 0 {
        let (tasks, replies): (Vec<NewTask>, Vec<_>) = batch.drain(..).unzip();
        match store.create_tasks(tasks, Utc::now()).await {
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
