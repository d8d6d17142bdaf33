//! Conversions between PostgreSQL rows and the model, and the batched
//! loaders that turn task rows into full [`Task`]s (steps, details, secret
//! names) with one query per child table, whatever the number of tasks
//! (ids travel as one `BIGINT[]`, matched with `= ANY($1)`).

use crate::store::{Run, SealedSecret, Task};
use anyhow::{Context, Result};
use sqlx::Row;
use sqlx::postgres::PgConnection;
use std::collections::HashMap;
use std::sync::LazyLock;

pub(super) use crate::store::row_mapping::{
    MISSING_MODULE_COLUMNS, MODULE_SELECT, NODE_COLUMNS, Prefixed, RUN_COLUMNS, STEP_COLUMNS,
    STEP_RUN_COLUMNS, TOKEN_COLUMNS, event_from_row, metadata_text, missing_module_task_from_row,
    module_from_row, ms, node_from_row, opt_ms, parse, parse_json, performance_from_rows,
    prefixed_columns, run_from_row, step_from_row, step_run_from_row, task_columns, task_from_row,
    time, token_from_row,
};

/// The next id of a table's identity column, for an id a statement takes
/// before it inserts the row (`table` is SQL for the table's name: a quoted
/// name or a parameter). The sequence is looked up once per statement, as an
/// `InitPlan`: written inline, `pg_get_serial_sequence` searched the catalogs
/// again for every row, which cost several times the `nextval` itself.
pub(super) fn next_id(table: &str) -> String {
    format!("nextval((SELECT pg_get_serial_sequence({table}, 'id')::regclass))")
}

/// Columns of a task row `t` saying whether it has details and secrets:
/// most tasks have neither, and a round trip that finds nothing costs what
/// one that finds something does (see [`Kin`]).
pub(super) const KIN_COLUMNS: &str = "EXISTS (SELECT 1 FROM task_details AS kd WHERE kd.task_id = t.id) AS has_details, \
     EXISTS (SELECT 1 FROM task_secrets AS ks WHERE ks.task_id = t.id) AS has_secrets";

/// Which tasks have details and which have secrets: the ones whose rows
/// [`load_children`] reads.
#[derive(Default)]
pub(super) struct Kin {
    details: Vec<i64>,
    secrets: Vec<i64>,
}

impl Kin {
    /// Every task may have both (for rows read without [`KIN_COLUMNS`]).
    pub(super) fn unknown(tasks: &[Task]) -> Self {
        let ids: Vec<i64> = tasks.iter().map(|t| t.id).collect();
        Kin {
            details: ids.clone(),
            secrets: ids,
        }
    }

    /// Forget the tasks `keep` says no to (a claim that does not start them).
    pub(super) fn keep(&mut self, keep: impl Fn(i64) -> bool) {
        self.details.retain(|id| keep(*id));
        self.secrets.retain(|id| keep(*id));
    }

    /// Note one task's row, read with [`KIN_COLUMNS`].
    pub(super) fn note(&mut self, task_id: i64, row: &sqlx::postgres::PgRow) -> Result<()> {
        if row.try_get("has_details")? {
            self.details.push(task_id);
        }
        if row.try_get("has_secrets")? {
            self.secrets.push(task_id);
        }
        Ok(())
    }
}

/// Fill in the steps, details and secret names of these tasks (a query
/// each, the last two only for the tasks `kin` names). With `sealed`, also
/// return each task's sealed secrets (for a claim).
pub(super) async fn load_children(
    conn: &mut PgConnection,
    tasks: &mut [Task],
    sealed: bool,
    kin: &Kin,
) -> Result<HashMap<i64, Vec<SealedSecret>>> {
    if tasks.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<i64> = tasks.iter().map(|t| t.id).collect();
    let index: HashMap<i64, usize> = tasks.iter().enumerate().map(|(i, t)| (t.id, i)).collect();

    let rows = sqlx::query(&format!(
        "SELECT {STEP_COLUMNS} FROM steps WHERE task_id = ANY($1) ORDER BY task_id, sort_order, id"
    ))
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await
    .context("loading steps")?;
    for row in &rows {
        let step = step_from_row(row)?;
        tasks[index[&step.task_id]].steps.push(step);
    }
    load_kin(conn, tasks, sealed, kin).await
}

/// What [`load_children`] reads beside the steps: the details and secret
/// names (with `sealed`, the sealed secrets too) of the tasks `kin` names.
pub(super) async fn load_kin(
    conn: &mut PgConnection,
    tasks: &mut [Task],
    sealed: bool,
    kin: &Kin,
) -> Result<HashMap<i64, Vec<SealedSecret>>> {
    let index: HashMap<i64, usize> = tasks.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
    let rows = if kin.details.is_empty() {
        Vec::new()
    } else {
        sqlx::query(
            "SELECT task_id, key, value FROM task_details WHERE task_id = ANY($1) ORDER BY task_id, key",
        )
        .bind(&kin.details)
        .fetch_all(&mut *conn)
        .await
        .context("loading task details")?
    };
    for row in &rows {
        let task_id: i64 = row.try_get("task_id")?;
        let value = parse_json(row.try_get("value")?)?;
        tasks[index[&task_id]]
            .details
            .insert(row.try_get("key")?, value);
    }

    let sql = if sealed {
        "SELECT task_id, name, nonce, ciphertext FROM task_secrets \
         WHERE task_id = ANY($1) ORDER BY task_id, name"
    } else {
        "SELECT task_id, name FROM task_secrets WHERE task_id = ANY($1) ORDER BY task_id, name"
    };
    let rows = if kin.secrets.is_empty() {
        Vec::new()
    } else {
        sqlx::query(sql)
            .bind(&kin.secrets)
            .fetch_all(&mut *conn)
            .await
            .context("loading secrets")?
    };
    let mut secrets: HashMap<i64, Vec<SealedSecret>> = HashMap::new();
    for row in &rows {
        let task_id: i64 = row.try_get("task_id")?;
        let name: String = row.try_get("name")?;
        tasks[index[&task_id]].secret_names.push(name.clone());
        if sealed {
            secrets.entry(task_id).or_default().push(SealedSecret {
                name,
                nonce: row.try_get("nonce")?,
                ciphertext: row.try_get("ciphertext")?,
            });
        }
    }
    Ok(secrets)
}

/// One task with its steps, in one round trip (a task read is on the path of
/// every `GET` and of every `?wait=` answer): the steps come as the rows of
/// a lateral join, their columns prefixed with `step_`.
static TASK_WITH_STEPS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {task}, {KIN_COLUMNS}, s.* FROM tasks AS t \
         LEFT JOIN LATERAL (SELECT {steps} FROM steps WHERE task_id = t.id) AS s ON TRUE \
         WHERE t.id = $1 ORDER BY s.step_sort_order, s.step_id",
        task = task_columns!(),
        steps = prefixed_columns(STEP_COLUMNS, "", "step_"),
    )
});

pub(super) async fn load_task(conn: &mut PgConnection, id: i64) -> Result<Option<Task>> {
    let rows = sqlx::query(&TASK_WITH_STEPS_SQL)
        .bind(id)
        .fetch_all(&mut *conn)
        .await
        .context("loading a task")?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut task = task_from_row(first)?;
    let mut kin = Kin::default();
    kin.note(task.id, first)?;
    for row in &rows {
        // A task without steps comes as one row with NULL step columns.
        if row.try_get::<Option<i64>, _>("step_id")?.is_some() {
            task.steps
                .push(step_from_row(&Prefixed::new("step_", row))?);
        }
    }
    load_kin(conn, std::slice::from_mut(&mut task), false, &kin).await?;
    Ok(Some(task))
}

/// Fill in the step runs of these runs (one query), in step order.
pub(super) async fn load_step_runs(conn: &mut PgConnection, runs: &mut [Run]) -> Result<()> {
    if runs.is_empty() {
        return Ok(());
    }
    let index: HashMap<i64, usize> = runs.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
    let ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
    let rows = sqlx::query(&format!(
        "SELECT {STEP_RUN_COLUMNS} FROM step_runs WHERE run_id = ANY($1) \
         ORDER BY run_id, sort_order, step_id"
    ))
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await
    .context("loading step runs")?;
    for row in &rows {
        let step_run = step_run_from_row(row)?;
        runs[index[&step_run.run_id]].steps.push(step_run);
    }
    Ok(())
}
