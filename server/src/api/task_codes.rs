//! Reaching a task by its `code` rather than its id, as shops do (OpenCart's
//! `deleteTaskByCode` when a plugin is uninstalled), and "run every due task
//! now" (OpenCart's Run Tasks button, AbanteCart's `task.php`).
//!
//! The paths start with a word (`by-code`, `run-due`) where `/tasks/{id}`
//! has a number, so neither can be read as the other.

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, Result};
use super::extract::{PathArgs, QueryArgs};
use super::task_actions::{RunAnswers, RunQuery, start_run};
use super::tasks::remove_task;
use super::{validate, waiting};
use crate::store::{Role, Task, TaskFilter};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Serialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/tasks/by-code/{code}",
            get(get_by_code).delete(delete_by_code),
        )
        .route("/tasks/by-code/{code}/run", post(run_by_code))
        .route("/tasks/run-due", post(run_due))
}

/// The id of the task with this code, or 404 saying so.
async fn task_id_of(state: &AppState, code: &str) -> Result<i64> {
    validate::name("code", code)?;
    let filter = TaskFilter {
        code: Some(code.to_string()),
        limit: 1,
        ..Default::default()
    };
    let found = state.store().list_tasks(&filter).await?;
    found.first().map(|task| task.id).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no task has the code `{code}`; POST /api/v1/tasks with this code creates one"
        ))
    })
}

#[utoipa::path(get, path = "/api/v1/tasks/by-code/{code}", tag = "tasks",
    params(("code" = String, Path, description = "The task's unique code")),
    responses((status = 200, body = Task), (status = 401, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 422, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_by_code(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(code): PathArgs<String>,
) -> Result<Json<Task>> {
    caller.require(Role::Viewer)?;
    let id = task_id_of(&state, &code).await?;
    let mut task = super::tasks::load_task(&state, id).await?;
    waiting::explain(&state, std::slice::from_mut(&mut task)).await?;
    Ok(Json(task))
}

#[utoipa::path(delete, path = "/api/v1/tasks/by-code/{code}", tag = "tasks",
    params(("code" = String, Path, description = "The task's unique code")),
    responses((status = 204, description = "deleted"), (status = 401, body = super::ErrorBody),
        (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody), (status = 422, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_by_code(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(code): PathArgs<String>,
) -> Result<StatusCode> {
    caller.require(Role::Operator)?;
    let id = task_id_of(&state, &code).await?;
    remove_task(&state, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/tasks/by-code/{code}/run", tag = "tasks",
    params(("code" = String, Path, description = "The task's unique code"), RunQuery),
    responses(RunAnswers),
    security(("bearer" = [])))]
pub async fn run_by_code(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(code): PathArgs<String>,
    QueryArgs(query): QueryArgs<RunQuery>,
) -> Result<(StatusCode, Json<Task>)> {
    caller.require(Role::Operator)?;
    let id = task_id_of(&state, &code).await?;
    start_run(&state, id, &query).await
}

/// Body of `POST /tasks/run-due`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunDue {
    /// How many scheduled tasks are due now: those brought forward and those
    /// that already were. Each runs as soon as a slot is free (disabled,
    /// running and finished tasks are left alone).
    pub due: u64,
}

#[utoipa::path(post, path = "/api/v1/tasks/run-due", tag = "tasks",
    responses((status = 200, body = RunDue), (status = 401, body = super::ErrorBody),
        (status = 403, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn run_due(State(state): State<AppState>, caller: Caller) -> Result<Json<RunDue>> {
    caller.require(Role::Operator)?;
    let due = state.store().make_scheduled_due(Utc::now()).await?;
    state.engine().wake();
    Ok(Json(RunDue { due }))
}
