//! Statistics and the facts alerts are made of, computed by SQL aggregates
//! (SQLite's `stats.rs`, in PostgreSQL's dialect: `count(*) FILTER (…)` for
//! SQLite's `sum(condition)`, averages over `float8` so they decode as
//! `f64`). Each method reads in one REPEATABLE READ transaction, so its
//! numbers come from one snapshot and agree with each other.

use super::PostgresStore;
use super::rows::{performance_from_rows, time};
use crate::store::{AlertFacts, DueTask, FailingModule, PerformanceStats, RunningRun, StoreResult};
use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgConnection;

/// A failed run: it ended `failed`, or `interrupted` by a limit (a run the
/// rescuer ended because its node stopped is no verdict on the task).
macro_rules! run_failed {
    () => {
        "(status = 'failed' OR (status = 'interrupted' AND NOT rescued))"
    };
}

/// A judged run: a success or a failure (not cancelled, running or rescued).
macro_rules! run_judged {
    () => {
        concat!("(status = 'completed' OR ", run_failed!(), ")")
    };
}

/// Run totals over the runs started in `[$1, $2]`.
const RUN_TOTALS: &str = concat!(
    "SELECT count(*) AS runs, \
            count(*) FILTER (WHERE status = 'completed') AS completed, \
            count(*) FILTER (WHERE ",
    run_failed!(),
    ") AS failed, \
            count(*) FILTER (WHERE status = 'interrupted' AND rescued) AS rescued, \
            avg((finished_at - started_at)::float8 / 1000) FILTER (WHERE ",
    run_judged!(),
    ") AS average_duration \
     FROM runs WHERE started_at >= $1 AND started_at <= $2"
);

/// Per module, the step runs that ran within the runs started in `[$1, $2]`.
/// A step interrupted because its run was cancelled or rescued is not judged.
const MODULE_TOTALS: &str = "\
    SELECT module, count(*) AS runs, \
           count(*) FILTER (WHERE status = 'completed') AS completed, \
           count(*) FILTER (WHERE judged AND status <> 'completed') AS failed, \
           avg(duration) FILTER (WHERE judged) AS average_duration, \
           avg(fuel_used::float8) FILTER (WHERE judged) AS average_fuel, \
           avg(peak_memory::float8) FILTER (WHERE judged) AS average_peak_memory, \
           max(started_at) AS last_run \
    FROM (SELECT s.controller AS module, s.status, s.fuel_used, s.peak_memory, s.started_at, \
                 (s.finished_at - s.started_at)::float8 / 1000 AS duration, \
                 s.status IN ('completed', 'failed') \
                   OR (s.status = 'interrupted' AND r.status <> 'cancelled' AND NOT r.rescued) \
                   AS judged \
          FROM runs AS r JOIN step_runs AS s ON s.run_id = r.id \
          WHERE r.started_at >= $1 AND r.started_at <= $2 \
            AND s.status IN ('running', 'completed', 'failed', 'interrupted')) AS ran \
    GROUP BY module ORDER BY module";

/// Judged runs started in `[$1, $2]`, by the UTC hour they ended in.
const THROUGHPUT: &str = concat!(
    "SELECT finished_at / 3600000 * 3600000 AS hour, \
            count(*) FILTER (WHERE status = 'completed') AS completed, \
            count(*) FILTER (WHERE status <> 'completed') AS failed \
     FROM runs WHERE started_at >= $1 AND started_at <= $2 AND finished_at IS NOT NULL \
       AND ",
    run_judged!(),
    " GROUP BY 1 ORDER BY 1"
);

/// A read-only transaction on one snapshot.
async fn snapshot(
    store: &PostgresStore,
) -> StoreResult<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut tx = store.pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

pub(super) async fn performance(
    store: &PostgresStore,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> StoreResult<PerformanceStats> {
    let (since, now) = (since.timestamp_millis(), now.timestamp_millis());
    let mut tx = snapshot(store).await?;
    let conn: &mut PgConnection = &mut tx;
    let totals = sqlx::query(RUN_TOTALS)
        .bind(since)
        .bind(now)
        .fetch_one(&mut *conn)
        .await
        .context("totalling runs")?;
    let modules = sqlx::query(MODULE_TOTALS)
        .bind(since)
        .bind(now)
        .fetch_all(&mut *conn)
        .await
        .context("totalling step runs per module")?;
    let hours = sqlx::query(THROUGHPUT)
        .bind(since)
        .bind(now)
        .fetch_all(&mut *conn)
        .await
        .context("totalling runs per hour")?;
    tx.rollback().await?;

    Ok(performance_from_rows(&totals, &modules, &hours)?)
}

/// Outcomes of the runs that ended in `[$1, $2]` (rescued ones are neither).
const RECENT_OUTCOMES: &str = concat!(
    "SELECT count(*) FILTER (WHERE status = 'completed') AS completed, \
            count(*) FILTER (WHERE ",
    run_failed!(),
    ") AS failed \
     FROM runs WHERE finished_at >= $1 AND finished_at <= $2"
);

/// The claimable backlog at `$1` (the claim's own condition): its size and
/// its oldest task.
const DUE_BACKLOG: &str = "\
    WITH due AS ( \
        SELECT id, name, next_run_at FROM tasks AS t \
        WHERE status = 'scheduled' AND next_run_at <= $1 \
          AND NOT EXISTS (SELECT 1 FROM steps AS s JOIN modules AS m ON m.path = s.controller \
                          WHERE s.task_id = t.id AND s.status = 'scheduled' AND NOT m.active)) \
    SELECT (SELECT count(*) FROM due) AS due_tasks, id, name, next_run_at \
    FROM due ORDER BY next_run_at, id LIMIT 1";

/// Every running task with its run.
const RUNNING: &str = "\
    SELECT t.id, t.name, t.current_run_id, t.lease_owner, t.lease_expires_at, \
           t.max_execution_time, r.started_at \
    FROM tasks AS t JOIN runs AS r ON r.id = t.current_run_id \
    WHERE t.status = 'running' ORDER BY r.started_at, t.id";

/// Per module, the `failed` step runs that ended in `[$1, $2]` after its last
/// `completed` one there (interrupted ones neither count nor break the streak).
const FAILING_MODULES: &str = "\
    WITH recent AS ( \
        SELECT id, controller, status, error, finished_at FROM step_runs \
        WHERE finished_at >= $1 AND finished_at <= $2 AND status IN ('completed', 'failed')), \
    last_ok AS ( \
        SELECT controller, max(finished_at) AS at FROM recent \
        WHERE status = 'completed' GROUP BY controller), \
    streak AS ( \
        SELECT f.id, f.controller, f.error, f.finished_at FROM recent AS f \
        LEFT JOIN last_ok AS o ON o.controller = f.controller \
        WHERE f.status = 'failed' AND (o.at IS NULL OR f.finished_at > o.at)) \
    SELECT controller, count(*) AS failures, max(finished_at) AS last_failed_at, \
           (SELECT l.error FROM streak AS l WHERE l.controller = s.controller \
            ORDER BY l.finished_at DESC, l.id DESC LIMIT 1) AS last_error \
    FROM streak AS s GROUP BY controller ORDER BY failures DESC, controller";

pub(super) async fn alert_facts(
    store: &PostgresStore,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> StoreResult<AlertFacts> {
    let (since, now) = (since.timestamp_millis(), now.timestamp_millis());
    let mut tx = snapshot(store).await?;
    let conn: &mut PgConnection = &mut tx;
    let outcomes = sqlx::query(RECENT_OUTCOMES)
        .bind(since)
        .bind(now)
        .fetch_one(&mut *conn)
        .await
        .context("counting recent run outcomes")?;
    let oldest = sqlx::query(DUE_BACKLOG)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await
        .context("measuring the due backlog")?;
    let running = sqlx::query(RUNNING)
        .fetch_all(&mut *conn)
        .await
        .context("listing running runs")?;
    let failing = sqlx::query(FAILING_MODULES)
        .bind(since)
        .bind(now)
        .fetch_all(&mut *conn)
        .await
        .context("finding failing modules")?;
    tx.rollback().await?;

    let (due_tasks, oldest_due) = match oldest {
        None => (0, None),
        Some(row) => (
            row.try_get("due_tasks")?,
            Some(DueTask {
                task_id: row.try_get("id")?,
                name: row.try_get("name")?,
                next_run_at: time(row.try_get("next_run_at")?),
            }),
        ),
    };
    let running = running
        .iter()
        .map(|row| {
            let lease: Option<i64> = row.try_get("lease_expires_at")?;
            Ok(RunningRun {
                task_id: row.try_get("id")?,
                name: row.try_get("name")?,
                run_id: row.try_get("current_run_id")?,
                node: row.try_get("lease_owner")?,
                started_at: time(row.try_get("started_at")?),
                lease_expires_at: lease.map(time),
                max_execution_time: row.try_get("max_execution_time")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    let failing_modules = failing
        .iter()
        .map(|row| {
            Ok(FailingModule {
                module: row.try_get("controller")?,
                consecutive_failures: row.try_get("failures")?,
                last_error: row.try_get("last_error")?,
                last_failed_at: time(row.try_get("last_failed_at")?),
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(AlertFacts {
        recent_completed: outcomes.try_get("completed")?,
        recent_failed: outcomes.try_get("failed")?,
        due_tasks,
        oldest_due,
        running,
        failing_modules,
    })
}
