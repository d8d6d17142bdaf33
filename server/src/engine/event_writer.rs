//! Persists log events in batches, off the step's path: a step that logs in a
//! loop costs one channel send per line, and the store sees one transaction
//! per batch. When the queue is full, lines are dropped (and counted) rather
//! than slowing the step.

use crate::store::{EventRecord, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

const QUEUE: usize = 65_536;
const BATCH: usize = 1_024;
const LINGER: Duration = Duration::from_millis(50);

pub struct EventWriter {
    sender: mpsc::Sender<EventRecord>,
    dropped: AtomicU64,
    pushed: AtomicU64,
    done: Arc<AtomicU64>,
}

impl EventWriter {
    /// Start the writer task; it ends when the writer is dropped, after
    /// writing what was queued.
    pub fn start(store: Arc<dyn Store>) -> Arc<Self> {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let done = Arc::new(AtomicU64::new(0));
        tokio::spawn(write_batches(store, receiver, done.clone()));
        Arc::new(EventWriter {
            sender,
            dropped: AtomicU64::new(0),
            pushed: AtomicU64::new(0),
            done,
        })
    }

    pub fn push(&self, event: EventRecord) {
        if self.sender.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            self.pushed.fetch_add(1, Ordering::Release);
        }
    }

    /// Lines dropped because the store could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Wait until everything pushed so far is written, at most `limit`.
    pub async fn flush(&self, limit: Duration) {
        let target = self.pushed.load(Ordering::Acquire);
        let deadline = tokio::time::Instant::now() + limit;
        while self.done.load(Ordering::Acquire) < target && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Before reading logs back: wait briefly for lines still queued.
    pub async fn flush_soon(&self) {
        self.flush(LINGER * 4).await;
    }
}

async fn write_batches(
    store: Arc<dyn Store>,
    mut receiver: mpsc::Receiver<EventRecord>,
    done: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut batch, BATCH).await > 0 {
        if batch.len() < BATCH {
            tokio::time::sleep(LINGER).await;
            while batch.len() < BATCH
                && let Ok(event) = receiver.try_recv()
            {
                batch.push(event);
            }
        }
        if let Err(e) = store.append_events(&batch).await {
            tracing::warn!("writing {} log events failed: {e:#}", batch.len());
        }
        done.fetch_add(batch.len() as u64, Ordering::Release);
        batch.clear();
    }
}
