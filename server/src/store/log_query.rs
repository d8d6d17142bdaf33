//! Which log lines to read ([`super::Store::list_logs`]): one task's or all
//! tasks', by run, level, time and id cursor. Both drivers build the same
//! statement from it here; only their placeholders differ, which sqlx's
//! `QueryBuilder` writes for each.

use super::EventRecord;
use super::row_mapping::{Columns, event_from_row};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Database, Encode, QueryBuilder, Type};

/// A log-line filter. Every `None` (or empty `levels`) matches all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogQuery {
    pub task_id: Option<i64>,
    pub run_id: Option<i64>,
    /// Exact levels to keep (`info`, `warn`, ...); empty keeps every level.
    pub levels: Vec<String>,
    /// Only lines with a larger id (a cursor: the `id` of the last line seen).
    pub after_id: Option<i64>,
    /// Only lines with a smaller id.
    pub before_id: Option<i64>,
    /// Only lines written at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only lines written before this time.
    pub until: Option<DateTime<Utc>>,
    /// Newest first (the cross-task view); otherwise oldest first.
    pub newest_first: bool,
    pub limit: i64,
}

/// A stored log line with its id: the id is the cursor for the next page.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LogEntry {
    /// Increases with every line written; pass it as `after` or `before`.
    pub id: i64,
    #[serde(flatten)]
    pub event: EventRecord,
}

/// `SELECT … FROM events WHERE kind = 'log' AND <filter> ORDER BY id … LIMIT …`,
/// with `ms` turning a time into the stored milliseconds.
pub(super) fn log_statement<'a, DB>(
    query: &'a LogQuery,
    ms: fn(DateTime<Utc>) -> i64,
) -> QueryBuilder<'a, DB>
where
    DB: Database,
    DB::Arguments<'a>: Default,
    i64: Encode<'a, DB> + Type<DB>,
    &'a str: Encode<'a, DB> + Type<DB>,
{
    let mut sql = QueryBuilder::new(
        "SELECT id, task_id, run_id, step_id, kind, level, message, data, created_at \
         FROM events WHERE kind = 'log'",
    );
    let ids = [
        (" AND task_id = ", query.task_id),
        (" AND run_id = ", query.run_id),
        (" AND id > ", query.after_id),
        (" AND id < ", query.before_id),
        (" AND created_at >= ", query.since.map(ms)),
        (" AND created_at < ", query.until.map(ms)),
    ];
    for (condition, value) in ids {
        if let Some(value) = value {
            sql.push(condition).push_bind(value);
        }
    }
    if !query.levels.is_empty() {
        sql.push(" AND level IN (");
        let mut levels = sql.separated(", ");
        for level in &query.levels {
            levels.push_bind(level.as_str());
        }
        sql.push(")");
    }
    sql.push(if query.newest_first {
        " ORDER BY id DESC LIMIT "
    } else {
        " ORDER BY id LIMIT "
    })
    .push_bind(query.limit.max(0));
    sql
}

/// The rows of [`log_statement`] as entries.
pub(super) fn log_entries(rows: &[impl Columns]) -> anyhow::Result<Vec<LogEntry>> {
    rows.iter()
        .map(|row| {
            Ok(LogEntry {
                id: row.int("id")?,
                event: event_from_row(row)?,
            })
        })
        .collect()
}
