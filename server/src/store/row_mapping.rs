//! One mapping from stored rows to the model, shared by both drivers: the
//! tables have the same columns with the same meaning on SQLite and
//! PostgreSQL (times as integer milliseconds, enums as their text, JSON as
//! text), so what a row means is written once, here. Each driver only says
//! how it reads one column, through [`Columns`], which every sqlx row type
//! implements; a column added to a table is mapped in one place.

use super::{
    DueHook, EventRecord, HookAttempt, HookDelivery, HookStatus, HourThroughput, MissingModuleTask,
    Module, ModuleLimits, ModuleMetadata, ModulePerformance, ModuleUsage, Node, PerformanceStats,
    Priority, Role, Run, RunResult, RunStatus, RunTrigger, Step, StepRun, StepRunStatus,
    StepStatus, Task, TaskStatus, Token,
};
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::str::FromStr;

/// Milliseconds since the epoch, the stored form of every time.
pub(super) fn ms(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

pub(super) fn opt_ms(time: Option<DateTime<Utc>>) -> Option<i64> {
    time.map(ms)
}

pub(super) fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

pub(super) fn opt_time(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.map(time)
}

/// A stored enum text back into its enum.
pub(super) fn parse<E: FromStr<Err = String>>(text: &str) -> Result<E> {
    text.parse().map_err(anyhow::Error::msg)
}

fn opt_parse<E: FromStr<Err = String>>(text: Option<String>) -> Result<Option<E>> {
    text.as_deref().map(parse).transpose()
}

pub(super) fn parse_json(text: &str) -> Result<Value> {
    serde_json::from_str(text).context("stored JSON is malformed")
}

fn opt_json(text: Option<String>) -> Result<Option<Value>> {
    text.as_deref().map(parse_json).transpose()
}

/// Reading one named column of a row, in the few stored types there are.
pub(super) trait Columns {
    fn int(&self, column: &str) -> Result<i64>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>>;
    fn float(&self, column: &str) -> Result<f64>;
    fn opt_float(&self, column: &str) -> Result<Option<f64>>;
    fn flag(&self, column: &str) -> Result<bool>;
    fn text(&self, column: &str) -> Result<String>;
    fn opt_text(&self, column: &str) -> Result<Option<String>>;
}

impl<R> Columns for R
where
    R: sqlx::Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn int(&self, column: &str) -> Result<i64> {
        Ok(self.try_get(column)?)
    }
    fn opt_int(&self, column: &str) -> Result<Option<i64>> {
        Ok(self.try_get(column)?)
    }
    fn float(&self, column: &str) -> Result<f64> {
        Ok(self.try_get(column)?)
    }
    fn opt_float(&self, column: &str) -> Result<Option<f64>> {
        Ok(self.try_get(column)?)
    }
    fn flag(&self, column: &str) -> Result<bool> {
        Ok(self.try_get(column)?)
    }
    fn text(&self, column: &str) -> Result<String> {
        Ok(self.try_get(column)?)
    }
    fn opt_text(&self, column: &str) -> Result<Option<String>> {
        Ok(self.try_get(column)?)
    }
}

/// The columns of a row that holds two tables' columns, the second set
/// under a prefix (`step_id`, `step_status`, …), read under their own names:
/// a task and its steps come in one query, with one mapping of each.
pub(super) struct Prefixed<'r, R> {
    prefix: &'static str,
    row: &'r R,
}

impl<'r, R: Columns> Prefixed<'r, R> {
    pub(super) fn new(prefix: &'static str, row: &'r R) -> Self {
        Prefixed { prefix, row }
    }

    fn name(&self, column: &str) -> String {
        format!("{}{column}", self.prefix)
    }
}

impl<R: Columns> Columns for Prefixed<'_, R> {
    fn int(&self, column: &str) -> Result<i64> {
        self.row.int(&self.name(column))
    }
    fn opt_int(&self, column: &str) -> Result<Option<i64>> {
        self.row.opt_int(&self.name(column))
    }
    fn float(&self, column: &str) -> Result<f64> {
        self.row.float(&self.name(column))
    }
    fn opt_float(&self, column: &str) -> Result<Option<f64>> {
        self.row.opt_float(&self.name(column))
    }
    fn flag(&self, column: &str) -> Result<bool> {
        self.row.flag(&self.name(column))
    }
    fn text(&self, column: &str) -> Result<String> {
        self.row.text(&self.name(column))
    }
    fn opt_text(&self, column: &str) -> Result<Option<String>> {
        self.row.opt_text(&self.name(column))
    }
}

/// `columns` (a list like [`STEP_COLUMNS`]) of the relation `from` (`"p."`,
/// or `""` for the only one) each renamed with `prefix`, for reading through
/// [`Prefixed`].
pub(super) fn prefixed_columns(columns: &str, from: &str, prefix: &str) -> String {
    columns
        .split(',')
        .map(|column| format!("{from}{0} AS {prefix}{0}", column.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The columns [`task_from_row`] reads, for SELECT and RETURNING alike.
macro_rules! task_columns {
    () => {
        "id, name, code, status, priority, start_at, run_interval, max_execution_time, \
         max_attempts, attempts, progress, message, last_result, last_run_at, next_run_at, \
         created_by, current_run_id, created_at, updated_at, cron, timezone, hook_url, \
         max_starts_per_minute"
    };
}
pub(super) use task_columns;

/// A task row without its children (steps, details, secret names), which
/// each driver loads in batches.
pub(super) fn task_from_row(row: &impl Columns) -> Result<Task> {
    Ok(Task {
        id: row.int("id")?,
        name: row.text("name")?,
        code: row.opt_text("code")?,
        status: parse::<TaskStatus>(&row.text("status")?)?,
        priority: Priority::from_rank(row.int("priority")?),
        start_at: opt_time(row.opt_int("start_at")?),
        run_interval: row.int("run_interval")?,
        cron: row.opt_text("cron")?,
        timezone: row.text("timezone")?,
        max_execution_time: row.int("max_execution_time")?,
        max_attempts: row.int("max_attempts")?,
        attempts: row.int("attempts")?,
        progress: row.float("progress")?,
        message: row.opt_text("message")?,
        last_result: opt_parse::<RunResult>(row.opt_text("last_result")?)?,
        last_run_at: opt_time(row.opt_int("last_run_at")?),
        next_run_at: opt_time(row.opt_int("next_run_at")?),
        created_by: row.opt_text("created_by")?,
        details: Map::new(),
        secret_names: Vec::new(),
        current_run_id: row.opt_int("current_run_id")?,
        hook_url: row.opt_text("hook_url")?,
        max_starts_per_minute: row.opt_int("max_starts_per_minute")?,
        created_at: time(row.int("created_at")?),
        updated_at: time(row.int("updated_at")?),
        steps: Vec::new(),
        next_runs: Vec::new(),
    })
}

/// The columns [`step_from_row`] reads.
pub(super) const STEP_COLUMNS: &str = "id, task_id, sort_order, controller, settings, \
     max_execution_time, max_memory, interrupt_on_step_fault, status";

pub(super) fn step_from_row(row: &impl Columns) -> Result<Step> {
    Ok(Step {
        id: row.int("id")?,
        task_id: row.int("task_id")?,
        sort_order: row.int("sort_order")?,
        controller: row.text("controller")?,
        settings: parse_json(&row.text("settings")?)?,
        max_execution_time: row.int("max_execution_time")?,
        max_memory: row.opt_int("max_memory")?,
        interrupt_on_step_fault: row.flag("interrupt_on_step_fault")?,
        status: parse::<StepStatus>(&row.text("status")?)?,
    })
}

/// The columns [`run_from_row`] reads.
pub(super) const RUN_COLUMNS: &str =
    "id, task_id, attempt, status, trigger, node, message, started_at, finished_at, rescued";

/// A run row without its step runs.
pub(super) fn run_from_row(row: &impl Columns) -> Result<Run> {
    Ok(Run {
        id: row.int("id")?,
        task_id: row.int("task_id")?,
        attempt: row.int("attempt")?,
        status: parse::<RunStatus>(&row.text("status")?)?,
        trigger: parse::<RunTrigger>(&row.text("trigger")?)?,
        node: row.text("node")?,
        message: row.opt_text("message")?,
        rescued: row.flag("rescued")?,
        started_at: time(row.int("started_at")?),
        finished_at: opt_time(row.opt_int("finished_at")?),
        steps: Vec::new(),
        hook_deliveries: Vec::new(),
    })
}

/// The columns [`step_run_from_row`] reads.
pub(super) const STEP_RUN_COLUMNS: &str = "id, run_id, step_id, sort_order, controller, status, \
     module_hash, outcome, result, error, progress, message, fuel_used, peak_memory, started_at, \
     finished_at";

pub(super) fn step_run_from_row(row: &impl Columns) -> Result<StepRun> {
    Ok(StepRun {
        id: row.int("id")?,
        run_id: row.int("run_id")?,
        step_id: row.int("step_id")?,
        sort_order: row.int("sort_order")?,
        controller: row.text("controller")?,
        status: parse::<StepRunStatus>(&row.text("status")?)?,
        module_hash: row.opt_text("module_hash")?,
        outcome: opt_json(row.opt_text("outcome")?)?,
        result: opt_json(row.opt_text("result")?)?,
        error: row.opt_text("error")?,
        progress: row.float("progress")?,
        message: row.opt_text("message")?,
        fuel_used: row.int("fuel_used")?,
        peak_memory: row.int("peak_memory")?,
        started_at: opt_time(row.opt_int("started_at")?),
        finished_at: opt_time(row.opt_int("finished_at")?),
    })
}

pub(super) fn event_from_row(row: &impl Columns) -> Result<EventRecord> {
    Ok(EventRecord {
        task_id: row.int("task_id")?,
        run_id: row.opt_int("run_id")?,
        step_id: row.opt_int("step_id")?,
        kind: row.text("kind")?,
        level: row.opt_text("level")?,
        message: row.text("message")?,
        data: opt_json(row.opt_text("data")?)?,
        created_at: time(row.int("created_at")?),
    })
}

/// The columns [`token_from_row`] reads.
pub(super) const TOKEN_COLUMNS: &str = "id, name, role, created_at, last_used_at";

pub(super) fn token_from_row(row: &impl Columns) -> Result<Token> {
    Ok(Token {
        id: row.int("id")?,
        name: row.text("name")?,
        role: parse::<Role>(&row.text("role")?)?,
        created_at: time(row.int("created_at")?),
        last_used_at: opt_time(row.opt_int("last_used_at")?),
    })
}

/// A module's path and its blob's facts: `modules AS m` joined with
/// `module_blobs AS b`.
pub(super) const MODULE_SELECT: &str = "SELECT m.path, m.hash, b.size, b.language, m.active, \
     m.created_at, m.updated_at, m.metadata, m.max_running, m.max_starts_per_minute \
     FROM modules AS m JOIN module_blobs AS b ON b.hash = m.hash";

pub(super) fn module_from_row(row: &impl Columns) -> Result<Module> {
    Ok(Module {
        path: row.text("path")?,
        hash: row.text("hash")?,
        size: row.int("size")?,
        language: row.opt_text("language")?,
        active: row.flag("active")?,
        created_at: time(row.int("created_at")?),
        updated_at: time(row.int("updated_at")?),
        metadata: row
            .opt_text("metadata")?
            .map(|text| serde_json::from_str(&text).context("stored module metadata is malformed"))
            .transpose()?,
        limits: ModuleLimits {
            max_running: row.opt_int("max_running")?,
            max_starts_per_minute: row.opt_int("max_starts_per_minute")?,
        },
    })
}

/// A limited module's row of [`super::limits::usage_sql`].
pub(super) fn module_usage_from_row(row: &impl Columns) -> Result<ModuleUsage> {
    Ok(ModuleUsage {
        path: row.text("path")?,
        limits: ModuleLimits {
            max_running: row.opt_int("max_running")?,
            max_starts_per_minute: row.opt_int("max_starts_per_minute")?,
        },
        running: row.int("running")?,
        starts_last_minute: row.int("starts")?,
    })
}

/// A module's metadata as stored (JSON text).
pub(super) fn metadata_text(metadata: Option<&ModuleMetadata>) -> Result<Option<String>> {
    metadata
        .map(|m| serde_json::to_string(m).context("writing module metadata"))
        .transpose()
}

/// The columns [`missing_module_task_from_row`] reads, for a `steps AS s`
/// joined with `tasks AS t`.
pub(super) const MISSING_MODULE_COLUMNS: &str =
    "s.controller AS module, t.id AS task_id, t.name AS task_name, t.status AS task_status";

pub(super) fn missing_module_task_from_row(row: &impl Columns) -> Result<MissingModuleTask> {
    Ok(MissingModuleTask {
        module: row.text("module")?,
        task_id: row.int("task_id")?,
        task_name: row.text("task_name")?,
        task_status: parse(&row.text("task_status")?)?,
    })
}

/// The columns [`node_from_row`] reads.
pub(super) const NODE_COLUMNS: &str =
    "id, address, version, state, started_at, last_heartbeat_at, running_runs";

pub(super) fn node_from_row(row: &impl Columns) -> Result<Node> {
    Ok(Node {
        id: row.text("id")?,
        address: row.opt_text("address")?,
        version: row.text("version")?,
        state: parse(&row.text("state")?)?,
        started_at: time(row.int("started_at")?),
        last_heartbeat_at: time(row.int("last_heartbeat_at")?),
        running_runs: row.int("running_runs")?,
    })
}

/// The performance statistics from the rows of their three aggregates (each
/// driver's `stats.rs` writes those in its dialect): the run totals (`runs`,
/// `completed`, `failed`, `rescued`, `average_duration`), one row per module
/// and one per hour.
pub(super) fn performance_from_rows(
    totals: &impl Columns,
    modules: &[impl Columns],
    hours: &[impl Columns],
) -> Result<PerformanceStats> {
    let modules = modules
        .iter()
        .map(|row| {
            Ok(ModulePerformance {
                module: row.text("module")?,
                runs: row.int("runs")?,
                completed: row.int("completed")?,
                failed: row.int("failed")?,
                average_duration_seconds: row.opt_float("average_duration")?,
                average_fuel: row.opt_float("average_fuel")?,
                average_peak_memory: row.opt_float("average_peak_memory")?,
                last_run_at: opt_time(row.opt_int("last_run")?),
            })
        })
        .collect::<Result<_>>()?;
    let throughput = hours
        .iter()
        .map(|row| {
            Ok(HourThroughput {
                hour: time(row.int("hour")?),
                completed: row.int("completed")?,
                failed: row.int("failed")?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(PerformanceStats {
        runs: totals.int("runs")?,
        completed: totals.int("completed")?,
        failed: totals.int("failed")?,
        rescued: totals.int("rescued")?,
        average_duration_seconds: totals.opt_float("average_duration")?,
        modules,
        throughput,
    })
}

/// The columns [`hook_delivery_from_row`] reads.
pub(super) const HOOK_DELIVERY_COLUMNS: &str =
    "id, task_id, run_id, url, status, attempts, next_attempt_at, created_at, finished_at";

/// A delivery row without its tries. A pending delivery's `next_attempt_at`
/// is shown; a final one has none.
pub(super) fn hook_delivery_from_row(row: &impl Columns) -> Result<HookDelivery> {
    let status = parse::<HookStatus>(&row.text("status")?)?;
    Ok(HookDelivery {
        id: row.int("id")?,
        task_id: row.int("task_id")?,
        run_id: row.int("run_id")?,
        url: row.text("url")?,
        status,
        attempts: row.int("attempts")?,
        next_attempt_at: opt_time(row.opt_int("next_attempt_at")?)
            .filter(|_| status == HookStatus::Pending),
        created_at: time(row.int("created_at")?),
        finished_at: opt_time(row.opt_int("finished_at")?),
        attempt_log: Vec::new(),
    })
}

/// The columns [`hook_attempt_from_row`] reads.
pub(super) const HOOK_ATTEMPT_COLUMNS: &str =
    "delivery_id, attempt, node, started_at, duration_ms, status_code, error";

/// A try, with the id of its delivery.
pub(super) fn hook_attempt_from_row(row: &impl Columns) -> Result<(i64, HookAttempt)> {
    Ok((
        row.int("delivery_id")?,
        HookAttempt {
            attempt: row.int("attempt")?,
            node: row.text("node")?,
            started_at: time(row.int("started_at")?),
            duration_ms: row.int("duration_ms")?,
            status_code: row.opt_int("status_code")?,
            error: row.opt_text("error")?,
        },
    ))
}

/// What a claimed delivery's POST needs: the delivery, its task, its run.
/// `{ids}` is where the driver puts its list of delivery ids.
pub(super) const DUE_HOOK_SELECT: &str = "SELECT r.id, r.task_id, r.attempt, r.status, r.trigger, \
     r.node, r.message, r.started_at, r.finished_at, r.rescued, d.id AS delivery_id, \
     d.attempts AS delivery_attempt, d.attempts - d.retry_from AS round_attempt, d.url, \
     t.name AS task_name, t.code AS task_code \
     FROM hook_deliveries AS d JOIN runs AS r ON r.id = d.run_id JOIN tasks AS t ON t.id = d.task_id \
     WHERE d.id IN ({ids}) ORDER BY d.next_attempt_at, d.id";

pub(super) fn due_hook_from_row(row: &impl Columns) -> Result<DueHook> {
    Ok(DueHook {
        delivery_id: row.int("delivery_id")?,
        attempt: row.int("delivery_attempt")?,
        round_attempt: row.int("round_attempt")?,
        url: row.text("url")?,
        task_id: row.int("task_id")?,
        task_name: row.text("task_name")?,
        task_code: row.opt_text("task_code")?,
        run: run_from_row(row)?,
    })
}

/// Put each try under its delivery (both in id order).
pub(super) fn attach_hook_attempts(
    deliveries: &mut [HookDelivery],
    attempts: Vec<(i64, HookAttempt)>,
) {
    let index: std::collections::HashMap<i64, usize> = deliveries
        .iter()
        .enumerate()
        .map(|(i, d)| (d.id, i))
        .collect();
    for (delivery_id, attempt) in attempts {
        if let Some(&i) = index.get(&delivery_id) {
            deliveries[i].attempt_log.push(attempt);
        }
    }
}
