//! Concurrency and rate limits on SQLite: the settings, the usage, and the
//! claim's part (the SQL and the admission are the drivers' shared
//! [`crate::store::limits`]). Claims are the one writer's, so the counts a
//! claim reads cannot change under it: no lock is needed.

use super::SqliteStore;
use super::blobs::update_module;
use super::rows::{json_ids, ms};
use crate::store::limits::{admit, prune_slots_sql, task_modules_sql, usage_sql};
use crate::store::row_mapping::module_usage_from_row;
use crate::store::{Module, ModuleLimits, ModuleUsage, StoreResult};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use rusqlite::{Transaction, params};
use std::collections::HashMap;

pub(super) async fn set_module_limits(
    store: &SqliteStore,
    path: &str,
    limits: ModuleLimits,
    now: DateTime<Utc>,
) -> StoreResult<Module> {
    update_module(store, path, None, Some(limits), now).await
}

pub(super) async fn module_usage(
    store: &SqliteStore,
    now: DateTime<Utc>,
) -> StoreResult<Vec<ModuleUsage>> {
    let rows = sqlx::query(&format!("{} ORDER BY m.path", usage_sql("?1")))
        .bind(ms(now))
        .fetch_all(&store.reader)
        .await?;
    Ok(rows
        .iter()
        .map(module_usage_from_row)
        .collect::<Result<_, _>>()?)
}

pub(super) async fn task_starts_since(
    store: &SqliteStore,
    task_id: i64,
    since: DateTime<Utc>,
) -> StoreResult<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM runs WHERE task_id = ?1 AND started_at > ?2")
            .bind(task_id)
            .bind(ms(since))
            .fetch_one(&store.reader)
            .await?,
    )
}

/// Of the picked tasks (in claim order), those that fit the limited modules'
/// room, with the modules each takes a slot of. Called only when a picked
/// task uses a limited module.
pub(super) fn admit_due(
    tx: &Transaction,
    now: DateTime<Utc>,
    order: &[i64],
) -> Result<HashMap<i64, Vec<String>>> {
    let mut statement = tx.prepare_cached(&usage_sql("?1"))?;
    let usage = statement
        .query_map([ms(now)], |row| {
            Ok(ModuleUsage {
                path: row.get(0)?,
                limits: ModuleLimits {
                    max_running: row.get(1)?,
                    max_starts_per_minute: row.get(2)?,
                },
                running: row.get(3)?,
                starts_last_minute: row.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()
        .context("reading the limited modules' usage")?;
    let mut statement =
        tx.prepare_cached(&task_modules_sql("IN (SELECT value FROM json_each(?1))"))?;
    let mut modules_of: HashMap<i64, Vec<String>> = HashMap::new();
    let mut rows = statement.query([json_ids(order.iter().copied())])?;
    while let Some(row) = rows.next().context("reading the picked tasks' modules")? {
        modules_of.entry(row.get(0)?).or_default().push(row.get(1)?);
    }
    Ok(admit(order, &modules_of, &usage))
}

/// Write the slots the started runs take (`(module, run_id)` pairs) and
/// drop those that no longer count.
pub(super) fn take_slots(
    tx: &Transaction,
    now: DateTime<Utc>,
    slots: &[(String, i64)],
) -> Result<()> {
    tx.prepare_cached(&prune_slots_sql("?1"))?
        .execute([ms(now)])
        .context("pruning module slots")?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO module_starts (module, run_id, started_at) VALUES (?1, ?2, ?3)",
    )?;
    for (module, run) in slots {
        insert
            .execute(params![module, run, ms(now)])
            .context("taking a module slot")?;
    }
    Ok(())
}
