//! The WAL's fsyncs for the engine writer's turns, on a thread of their own.
//!
//! A turn of run ends and a claim commits without an fsync, hands its
//! claimed runs over, and answers its writes only once the WAL is synced
//! (see `turn.rs`). When the writer synced it itself, it could neither
//! record nor claim anything while the disk worked, and under load that
//! wait was a large share of its time: the writer is the one resource every
//! claim and run end needs. So when more work is already queued, the writer
//! leaves the sync to this thread and goes on with the next turn.
//!
//! Nothing is answered earlier than before: a turn's writes wait for an
//! fsync that began after their commit. One fsync covers every turn
//! committed before it began (SQLite's WAL is one file, written in order),
//! so turns that queue here while the disk works share the next one.

use super::direct::HotConnection;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};

/// What to do once the WAL is synced (or its sync failed).
pub(super) type AfterSync = Box<dyn FnOnce(anyhow::Result<()>) + Send>;

/// The syncing thread's queue. The thread ends once this is dropped and
/// everything queued is answered.
pub(super) struct WalSyncer {
    hot: Arc<HotConnection>,
    sender: Option<Sender<AfterSync>>,
}

impl WalSyncer {
    pub(super) fn start(hot: Arc<HotConnection>) -> Self {
        let (sender, receiver) = mpsc::channel();
        let thread_hot = hot.clone();
        let started = std::thread::Builder::new()
            .name("stepwise-wal-sync".into())
            .spawn(move || sync_while_asked(&thread_hot, receiver));
        let sender = match started {
            Ok(_) => Some(sender),
            Err(error) => {
                // Slower, not wrong: the writer then syncs each turn itself.
                tracing::warn!("starting the WAL's sync thread failed: {error}");
                None
            }
        };
        WalSyncer { hot, sender }
    }

    /// Call `after` once an fsync of the WAL that begins after this call is
    /// done: on the syncing thread, or here and now if that thread is gone.
    pub(super) fn after_sync(&self, after: AfterSync) {
        let Some(sender) = &self.sender else {
            return after(self.hot.sync_all());
        };
        if let Err(mpsc::SendError(after)) = sender.send(after) {
            after(self.hot.sync_all());
        }
    }
}

/// Sync for whatever waits, as many at a time as are queued when the sync
/// begins, until the writer drops its [`WalSyncer`].
fn sync_while_asked(hot: &HotConnection, receiver: Receiver<AfterSync>) {
    while let Ok(first) = receiver.recv() {
        let waiting: Vec<AfterSync> = std::iter::once(first).chain(receiver.try_iter()).collect();
        let synced = hot.sync_all().map_err(|error| format!("{error:#}"));
        for after in waiting {
            after(synced.clone().map_err(anyhow::Error::msg));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Durability, NewStep, NewTask, SqliteStore, Store};
    use std::time::Duration;

    /// A store at FULL with a create not yet known to be on disk.
    async fn store_with_a_deferred_create(dir: &tempfile::TempDir) -> SqliteStore {
        let store = SqliteStore::open(&dir.path().join("s.db"), Durability::Full)
            .await
            .expect("open");
        let task = NewTask::new("waited", vec![NewStep::new("m/a", serde_json::json!({}))]);
        store
            .create_tasks_deferred(vec![task], chrono::Utc::now())
            .await
            .expect("create");
        assert!(store.deferred_uncovered());
        store
    }

    /// Each waiter is answered once the WAL is synced, and that sync covers
    /// the creates deferred before it (a waited create's answer relies on it).
    #[tokio::test]
    async fn waiters_are_answered_by_a_sync_that_covers_deferred_creates() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store_with_a_deferred_create(&dir).await;
        let syncer = WalSyncer::start(store.hot.clone());
        let (sender, receiver) = mpsc::channel();
        for waiter in 0..3 {
            let sender = sender.clone();
            syncer.after_sync(Box::new(move |synced| {
                let _ = sender.send((waiter, synced.is_ok()));
            }));
        }
        let answers: Vec<(i32, bool)> = (0..3)
            .map(|_| {
                receiver
                    .recv_timeout(Duration::from_secs(30))
                    .expect("an answer")
            })
            .collect();
        assert_eq!(answers, [(0, true), (1, true), (2, true)], "in order");
        assert!(!store.deferred_uncovered(), "the sync covered the create");
    }

    /// Without its thread, the syncer syncs at once, on the caller's thread.
    #[tokio::test]
    async fn without_its_thread_it_syncs_in_the_call() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = store_with_a_deferred_create(&dir).await;
        let syncer = WalSyncer {
            hot: store.hot.clone(),
            sender: None,
        };
        let answered = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = answered.clone();
        syncer.after_sync(Box::new(move |synced| {
            flag.store(synced.is_ok(), std::sync::atomic::Ordering::SeqCst);
        }));
        assert!(answered.load(std::sync::atomic::Ordering::SeqCst));
        assert!(!store.deferred_uncovered());
    }
}
