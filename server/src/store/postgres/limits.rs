//! Concurrency and rate limits on PostgreSQL: the settings, the usage, and
//! the claim's part (the SQL and the admission are the drivers' shared
//! [`crate::store::limits`]).

use super::PostgresStore;
use super::blobs::update_module;
use super::rows::ms;
use crate::store::limits::{admit, prune_slots_sql, task_modules_sql, usage_sql};
use crate::store::row_mapping::module_usage_from_row;
use crate::store::{Module, ModuleLimits, ModuleUsage, StoreResult};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnection;
use std::collections::HashMap;

/// The advisory lock that claims touching limited modules take, so two
/// nodes never both count a module's last slot as free ("StepLimt").
const LIMITS_LOCK: i64 = 0x5374_6570_4c69_6d74;

pub(super) async fn set_module_limits(
    store: &PostgresStore,
    path: &str,
    limits: ModuleLimits,
    now: DateTime<Utc>,
) -> StoreResult<Module> {
    update_module(store, path, None, Some(limits), now).await
}

pub(super) async fn module_usage(
    store: &PostgresStore,
    now: DateTime<Utc>,
) -> StoreResult<Vec<ModuleUsage>> {
    let mut conn = store.pool.acquire().await?;
    Ok(usage(&mut conn, now).await?)
}

async fn usage(conn: &mut PgConnection, now: DateTime<Utc>) -> Result<Vec<ModuleUsage>> {
    let rows = sqlx::query(&format!("{} ORDER BY m.path", usage_sql("$1")))
        .bind(ms(now))
        .fetch_all(&mut *conn)
        .await
        .context("reading the limited modules' usage")?;
    rows.iter().map(module_usage_from_row).collect()
}

pub(super) async fn task_starts_since(
    store: &PostgresStore,
    task_id: i64,
    since: DateTime<Utc>,
) -> StoreResult<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM runs WHERE task_id = $1 AND started_at > $2")
            .bind(task_id)
            .bind(ms(since))
            .fetch_one(&store.pool)
            .await?,
    )
}

/// Of the picked tasks (in claim order), those that fit the limited modules'
/// room, with the modules each takes a slot of. Called only when a picked
/// task uses a limited module; holds the limits' lock until the claim ends.
pub(super) async fn admit_due(
    tx: &mut PgConnection,
    now: DateTime<Utc>,
    order: &[i64],
) -> Result<HashMap<i64, Vec<String>>> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(LIMITS_LOCK)
        .execute(&mut *tx)
        .await
        .context("taking the limits' lock")?;
    // Read after the lock: a claim that held it has committed its slots.
    let usage = usage(tx, now).await?;
    let pairs: Vec<(i64, String)> = sqlx::query_as(&task_modules_sql("= ANY($1)"))
        .bind(order)
        .fetch_all(&mut *tx)
        .await
        .context("reading the picked tasks' modules")?;
    let mut modules_of: HashMap<i64, Vec<String>> = HashMap::new();
    for (task, module) in pairs {
        modules_of.entry(task).or_default().push(module);
    }
    Ok(admit(order, &modules_of, &usage))
}

/// Write the slots the started runs take (`(module, run_id)` pairs) and
/// drop those that no longer count.
pub(super) async fn take_slots(
    tx: &mut PgConnection,
    now: DateTime<Utc>,
    slots: &[(String, i64)],
) -> Result<()> {
    sqlx::query(&prune_slots_sql("$1"))
        .bind(ms(now))
        .execute(&mut *tx)
        .await
        .context("pruning module slots")?;
    if slots.is_empty() {
        return Ok(());
    }
    let modules: Vec<&str> = slots.iter().map(|(m, _)| m.as_str()).collect();
    let runs: Vec<i64> = slots.iter().map(|(_, r)| *r).collect();
    sqlx::query(
        "INSERT INTO module_starts (module, run_id, started_at) \
         SELECT module, run_id, $3 FROM unnest($1::text[], $2::bigint[]) AS u(module, run_id)",
    )
    .bind(&modules)
    .bind(&runs)
    .bind(ms(now))
    .execute(&mut *tx)
    .await
    .context("taking module slots")?;
    Ok(())
}
