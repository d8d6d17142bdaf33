//! Task counts by status, kept in `task_counts` (migration 0014) so that a
//! count reads six rows instead of walking every task.
//!
//! The two connections that write tasks keep it:
//! - the store's sqlx writer (creates with a code, edits, actions, rescues,
//!   deletes, retention: rare writes) with TEMP triggers (its own: the other
//!   connection does not fire them) that update `task_counts` row by row;
//! - the engine's hot connection ([`super::direct`]) claims and ends runs by
//!   the thousand a second, and a trigger, even one that only called a Rust
//!   function, made each claimed task measurably slower. It has no trigger:
//!   its three statements that move tasks (a plain create, a claim's
//!   `MARK_RUNNING`, a run end's `END_RUN_TASK`) report what they moved to
//!   [`TaskMoves`], and [`fold`] writes the sums once per transaction, just
//!   before the commit. A new hot statement that moves tasks must report
//!   too; the conformance suite compares the counts with the tasks after
//!   every case.
//!
//! Either way the counts change in the transaction that moved the tasks: they
//! commit, roll back and survive a crash with them.

use super::SqliteStore;
use crate::store::{StatusCounts, StoreResult, TaskStatus, status_counts};
use anyhow::Context;
use rusqlite::{Transaction, params};

/// The sqlx writer's triggers: each row moved updates its statuses' counts.
pub(super) const WRITER_TRIGGERS: &str = "\
    CREATE TEMP TRIGGER count_inserted_tasks AFTER INSERT ON main.tasks BEGIN \
        INSERT INTO task_counts (status, n) VALUES (NEW.status, 1) \
            ON CONFLICT (status) DO UPDATE SET n = n + 1; \
    END; \
    CREATE TEMP TRIGGER count_deleted_tasks AFTER DELETE ON main.tasks BEGIN \
        UPDATE task_counts SET n = n - 1 WHERE status = OLD.status; \
    END; \
    CREATE TEMP TRIGGER count_moved_tasks AFTER UPDATE OF status ON main.tasks \
    WHEN OLD.status IS NOT NEW.status BEGIN \
        UPDATE task_counts SET n = n - 1 WHERE status = OLD.status; \
        INSERT INTO task_counts (status, n) VALUES (NEW.status, 1) \
            ON CONFLICT (status) DO UPDATE SET n = n + 1; \
    END;";

const ADD: &str = "INSERT INTO task_counts (status, n) VALUES (?1, ?2) \
                   ON CONFLICT (status) DO UPDATE SET n = n + excluded.n";

/// The tasks a hot transaction moved, per status (in [`TaskStatus::ALL`]
/// order): what its statements report, for [`fold`] to write.
#[derive(Debug, Default)]
pub(super) struct TaskMoves([i64; TaskStatus::ALL.len()]);

impl TaskMoves {
    /// `n` tasks came into `status` (a negative `n`: left it).
    pub(super) fn add(&mut self, status: TaskStatus, n: i64) {
        // `ALL` is in declaration order, which is the variants' order.
        self.0[status as usize] += n;
    }

    /// `n` tasks moved from `from` to `to`.
    pub(super) fn moved(&mut self, from: TaskStatus, to: TaskStatus, n: i64) {
        self.add(from, -n);
        self.add(to, n);
    }
}

/// Add `moves` to `task_counts`, in `tx` (a hot transaction, before its
/// commit).
pub(super) fn fold(tx: &Transaction, moves: &TaskMoves) -> anyhow::Result<()> {
    for (status, delta) in TaskStatus::ALL.iter().zip(moves.0) {
        if delta != 0 {
            tx.prepare_cached(ADD)?
                .execute(params![status.as_str(), delta])
                .context("counting the tasks moved")?;
        }
    }
    Ok(())
}

pub(super) async fn count_by_status(store: &SqliteStore) -> StoreResult<StatusCounts> {
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT status, n FROM task_counts")
        .fetch_all(&store.reader)
        .await
        .context("reading the task counts")?;
    Ok(status_counts(rows.iter().map(|(s, n)| (s.as_str(), *n))))
}
