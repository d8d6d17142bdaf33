//! Log lines, paged: one task's (`GET /tasks/{id}/logs`) and every task's
//! (`GET /logs`, the dashboard's log view). Both take the same filters (run,
//! minimum level, time) and page by line id: `before` walks back into the
//! past, `after` walks forward (and follows a live run). `next` in the answer
//! is the cursor for the next page in the same direction.

use super::auth::Caller;
use super::error::{ApiError, Result};
use super::extract::{PathArgs, QueryArgs};
use super::tasks::load_task;
use super::{AppState, validate};
use crate::store::{LogEntry, LogQuery, Role};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/tasks/{id}/logs", get(task_logs))
        .route("/logs", get(all_logs))
}

/// Levels from least to most severe: `level=warn` keeps `warn` and `error`.
const LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    /// Only this task's lines (`GET /logs`; the task's own page is its task).
    pub task_id: Option<i64>,
    /// How many lines (one task: default 500, at most 10000; all tasks: default 100, at most 1000).
    pub limit: Option<i64>,
    /// Only this run's lines.
    pub run_id: Option<i64>,
    /// Only lines at this level or more severe: trace, debug, info, warn or error.
    pub level: Option<String>,
    /// Only lines written at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Only lines written before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Lines older than the line with this id (page back with the answer's `next`).
    pub before: Option<i64>,
    /// Lines newer than the line with this id (page forward, or follow a run).
    pub after: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LogPage {
    pub logs: Vec<LogEntry>,
    /// The cursor for the next page in the same direction: pass it as
    /// `before` (paging back) or `after` (paging forward). Absent when this
    /// page was the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<i64>,
}

impl LogParams {
    /// The store's query; `forward` when paging with `after`.
    fn query(&self, default: i64, max: i64) -> Result<(LogQuery, bool)> {
        let limit = self.limit.unwrap_or(default);
        validate::range("limit", limit, 1, max, "lines")?;
        let levels = match &self.level {
            None => Vec::new(),
            Some(level) => {
                let from = LEVELS.iter().position(|l| l == level).ok_or_else(|| {
                    ApiError::invalid(
                        "level",
                        format!("`{level}` is not a level: use trace, debug, info, warn or error"),
                    )
                })?;
                LEVELS[from..].iter().map(|l| l.to_string()).collect()
            }
        };
        if self.before.is_some() && self.after.is_some() {
            return Err(ApiError::invalid(
                "after",
                "give `before` (page back) or `after` (page forward), not both",
            ));
        }
        let forward = self.after.is_some();
        Ok((
            LogQuery {
                task_id: self.task_id,
                run_id: self.run_id,
                levels,
                after_id: self.after,
                before_id: self.before,
                since: self.since,
                until: self.until,
                newest_first: !forward,
                limit,
            },
            forward,
        ))
    }
}

/// Read a page; `newest_first` orders the answer (the store's order is the paging direction's).
async fn page(
    state: &AppState,
    query: LogQuery,
    forward: bool,
    newest_first: bool,
) -> Result<LogPage> {
    // Lines still in the event writer's batch would be missing from this page.
    state.engine().event_writer().flush_soon().await;
    let mut logs = state.store().list_logs(&query).await?;
    let full = logs.len() as i64 == query.limit;
    let next = full.then(|| logs.last().map(|l| l.id)).flatten();
    if newest_first == forward {
        logs.reverse();
    }
    Ok(LogPage { logs, next })
}

#[utoipa::path(get, path = "/api/v1/tasks/{id}/logs", tag = "history", params(("id" = i64, Path), LogParams),
    description = "A task's log lines, oldest first: the last `limit` matching lines (before `before`), \
        or with `after` the first `limit` lines after it.",
    responses((status = 200, body = LogPage), (status = 401, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 422, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn task_logs(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(id): PathArgs<i64>,
    QueryArgs(params): QueryArgs<LogParams>,
) -> Result<Json<LogPage>> {
    caller.require(Role::Viewer)?;
    if params.task_id.is_some_and(|other| other != id) {
        return Err(ApiError::invalid(
            "task_id",
            format!("this page is task {id}'s: leave `task_id` out, or use GET /api/v1/logs"),
        ));
    }
    let params = LogParams {
        task_id: Some(id),
        ..params
    };
    let (query, forward) = params.query(500, 10_000)?;
    load_task(&state, id).await?;
    Ok(Json(page(&state, query, forward, false).await?))
}

#[utoipa::path(get, path = "/api/v1/logs", tag = "history", params(LogParams),
    description = "Log lines of all tasks, newest first (the dashboard's log view).",
    responses((status = 200, body = LogPage), (status = 401, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn all_logs(
    State(state): State<AppState>,
    caller: Caller,
    QueryArgs(params): QueryArgs<LogParams>,
) -> Result<Json<LogPage>> {
    caller.require(Role::Viewer)?;
    let (query, forward) = params.query(100, 1000)?;
    Ok(Json(page(&state, query, forward, true).await?))
}
