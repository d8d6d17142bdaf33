//! The writer connection with `synchronous=NORMAL` for one transaction whose
//! loss on power failure is harmless: a claim. In WAL mode a commit's frames
//! are made durable by the next synced commit, so a claim is on disk as soon as
//! any later `FULL` commit (a step end, a run end) is — and if power fails
//! before that, the task is simply still scheduled and is claimed again: no
//! step was recorded as completed. That saves one fsync per claim batch.

use super::SqliteStore;
use crate::store::StoreResult;
use sqlx::Sqlite;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::SqliteConnection;
use std::ops::{Deref, DerefMut};

pub(super) struct Relaxed {
    conn: PoolConnection<Sqlite>,
    /// Whether `synchronous` must be set back before the connection is reused.
    relaxed: bool,
}

impl Relaxed {
    /// The writer connection; relaxed only when the store syncs every commit.
    pub(super) async fn acquire(store: &SqliteStore) -> StoreResult<Relaxed> {
        let conn = store.writer.acquire().await?;
        // Guarded before the pragma is sent: if this future is dropped while
        // it runs, the connection is closed, not returned relaxed.
        let mut guard = Relaxed {
            conn,
            relaxed: store.durability == super::Durability::Full,
        };
        if guard.relaxed {
            sqlx::query("PRAGMA synchronous = NORMAL")
                .execute(&mut *guard.conn)
                .await?;
        }
        Ok(guard)
    }

    /// Put `synchronous=FULL` back for the writes that follow.
    pub(super) async fn restore(mut self) -> StoreResult<()> {
        if self.relaxed {
            sqlx::query("PRAGMA synchronous = FULL")
                .execute(&mut *self.conn)
                .await?;
            self.relaxed = false;
        }
        Ok(())
    }
}

impl Drop for Relaxed {
    /// Dropped still relaxed (an error, a cancelled future): close the
    /// connection rather than let a later write commit without an fsync. The
    /// pool opens a fresh one with the configured `synchronous`.
    fn drop(&mut self) {
        if self.relaxed {
            self.conn.close_on_drop();
        }
    }
}

impl Deref for Relaxed {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl DerefMut for Relaxed {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}
