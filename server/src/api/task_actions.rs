//! Acting on a task: run now, cancel, retry, run one step, and its live progress.

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, Result};
use super::extract::{PathArgs, QueryArgs};
use super::tasks::{is_final, load_task, parse_wait};
use crate::engine::eta_seconds;
use crate::events::{Event, StepState, TaskState};
use crate::store::{Role, RunResult, Task, TaskStatus};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::broadcast;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/tasks/{id}/progress", get(progress))
        .route("/tasks/{id}/run", post(run_now))
        .route("/tasks/{id}/cancel", post(cancel))
        .route("/tasks/{id}/retry", post(retry))
        .route("/tasks/{id}/steps/{step_id}/run", post(run_step))
}

/// Publish a task's stored state so live views follow a change made over
/// REST; `since` is the bus's index before the change (see
/// [`crate::events::EventBus::publish_unless_newer`]: if the engine has
/// published for the task since, say claimed it, its state is the newer one).
pub fn publish_stored(state: &AppState, task: &Task, since: u64) {
    state
        .bus()
        .publish_unless_newer(Event::Task(TaskState::stored(task, 0)), since);
}

/// A `?wait=`: begun before the change that starts the task moving (so no
/// event of it is missed), then awaited with [`Wait::until_settled`].
pub struct Wait {
    events: broadcast::Receiver<Event>,
    began: DateTime<Utc>,
    deadline: tokio::time::Instant,
}

impl Wait {
    pub fn begin(state: &AppState, wait: Duration) -> Self {
        Wait {
            events: state.bus().subscribe(),
            began: Utc::now(),
            deadline: tokio::time::Instant::now() + wait,
        }
    }

    /// Wait until the task settles or the wait is over; returns the stored
    /// task. Settled: a final status; or scheduled once a run started since
    /// the wait began, unless a retry of that run is due before the wait
    /// ends (then its result is what the caller waits for). `task` is the
    /// task as the change left it: it is judged first, without reading it
    /// again (the events of what happened since are waiting in the
    /// subscription, which began before the change). A run that ends on this
    /// node hands over the task as it left it, when nothing else changed it
    /// meanwhile (see [`crate::engine::RunEndWatch`]); else it is read.
    pub async fn until_settled(mut self, state: &AppState, task: Task) -> Result<Task> {
        let task_id = task.id;
        let run_ends = state.engine().watch_run_end(task_id);
        let mut task = task;
        loop {
            if self.settled(&task) {
                return Ok(task);
            }
            // Wake on this task's next event that is not progress (its
            // time), or re-check after a lag.
            let woke = tokio::time::timeout_at(self.deadline, async {
                loop {
                    match self.events.recv().await {
                        // Not the state already judged (the change's own
                        // event says what `task` says).
                        Ok(Event::Task(t))
                            if t.task_id == task_id
                                && t.status != "running"
                                && (t.status != task.status.as_str()
                                    || t.updated_at != task.updated_at) =>
                        {
                            return Some(t.updated_at);
                        }
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => return None,
                        Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                    }
                }
            })
            .await;
            task = match woke {
                Err(_) => return load_task(state, task_id).await,
                Ok(Some(updated_at)) => match run_ends.ended_task(updated_at) {
                    Some(ended) => ended,
                    None => load_task(state, task_id).await?,
                },
                Ok(None) => load_task(state, task_id).await?,
            };
        }
    }

    fn settled(&self, task: &Task) -> bool {
        if is_final(task.status) {
            return true;
        }
        if task.status != TaskStatus::Scheduled {
            return false;
        }
        // Stored times have millisecond precision.
        let ran_since = task
            .last_run_at
            .is_some_and(|at| at.timestamp_millis() >= self.began.timestamp_millis());
        if ran_since && task.last_result == Some(RunResult::Success) {
            // A repeating task's run ended: its next run is another request's.
            return true;
        }
        let wait_ends = Utc::now()
            + chrono::Duration::from_std(
                self.deadline
                    .saturating_duration_since(tokio::time::Instant::now()),
            )
            .unwrap_or_default();
        // The run (or the retry of a failed one) is not due within the wait.
        task.next_run_at.is_none_or(|due| due > wait_ends)
    }

    /// The status code of a waited-for answer: 200 once final, else 202.
    pub fn status_of(task: &Task) -> StatusCode {
        if is_final(task.status) {
            StatusCode::OK
        } else {
            StatusCode::ACCEPTED
        }
    }
}

/// The query of the actions that start a run.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RunQuery {
    /// Wait up to this long (e.g. `2s`, `500ms`; at most 60 s) for the run to
    /// finish, and for a retry of it that is due within the wait.
    pub wait: Option<String>,
}

/// The answers of the actions that start a run (run, run by code, retry),
/// as the OpenAPI document lists them.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // documentation only: the handlers answer `(StatusCode, Json<Task>)`
pub enum RunAnswers {
    /// started (or still running after `wait`)
    #[response(status = 202)]
    Started(Task),
    /// finished within `wait`
    #[response(status = 200)]
    Finished(Task),
    #[response(status = 401)]
    Unauthorized(super::ErrorBody),
    #[response(status = 403)]
    Forbidden(super::ErrorBody),
    #[response(status = 404)]
    NotFound(super::ErrorBody),
    #[response(status = 409)]
    Conflict(super::ErrorBody),
    #[response(status = 422)]
    Invalid(super::ErrorBody),
}

/// Answer an action that started a run: at once (202), or after `wait`.
async fn answer_run(
    state: &AppState,
    task: Task,
    wait: Option<Wait>,
) -> Result<(StatusCode, Json<Task>)> {
    match wait {
        Some(wait) => {
            let task = wait.until_settled(state, task).await?;
            Ok((Wait::status_of(&task), Json(task)))
        }
        None => Ok((StatusCode::ACCEPTED, Json(task))),
    }
}

/// Body of `GET /tasks/{id}/progress`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Progress {
    pub task_id: i64,
    pub status: String,
    /// 0–100.
    pub progress: f64,
    pub message: Option<String>,
    pub run_id: Option<i64>,
    pub current_step: Option<i64>,
    /// Seconds left, from the run's rate so far (or past runs); null when unknown.
    pub eta_seconds: Option<f64>,
    pub steps: Vec<StepState>,
}

#[utoipa::path(get, path = "/api/v1/tasks/{id}/progress", tag = "tasks", params(("id" = i64, Path)),
    responses((status = 200, body = Progress), (status = 401, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn progress(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(id): PathArgs<i64>,
) -> Result<Json<Progress>> {
    caller.require(Role::Viewer)?;
    let task = load_task(&state, id).await?;
    if task.status == TaskStatus::Running
        && let Some((live, steps)) = state.bus().latest(id)
        && live.status == "running"
    {
        return Ok(Json(Progress {
            task_id: id,
            status: live.status,
            progress: live.progress,
            message: live.message,
            run_id: live.run_id,
            current_step: live.current_step,
            eta_seconds: live.eta_seconds,
            steps,
        }));
    }
    let eta = match task.status {
        TaskStatus::Running => {
            let elapsed = task
                .last_run_at
                .map(|at| (Utc::now() - at).to_std().unwrap_or_default())
                .unwrap_or_default();
            let past = state.store().recent_run_durations(id, 5).await?;
            eta_seconds(task.progress, elapsed, &past)
        }
        TaskStatus::Completed => Some(0.0),
        _ => None,
    };
    Ok(Json(Progress {
        task_id: id,
        status: task.status.to_string(),
        progress: task.progress,
        message: task.message,
        run_id: task.current_run_id,
        current_step: None,
        eta_seconds: eta,
        steps: Vec::new(),
    }))
}

#[utoipa::path(post, path = "/api/v1/tasks/{id}/run", tag = "tasks", params(("id" = i64, Path), RunQuery),
    responses(RunAnswers),
    security(("bearer" = [])))]
pub async fn run_now(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(id): PathArgs<i64>,
    QueryArgs(query): QueryArgs<RunQuery>,
) -> Result<(StatusCode, Json<Task>)> {
    caller.require(Role::Operator)?;
    start_run(&state, id, &query).await
}

/// Run a task now and answer as `POST /tasks/{id}/run` does (shared with
/// the run by code).
pub async fn start_run(
    state: &AppState,
    id: i64,
    query: &RunQuery,
) -> Result<(StatusCode, Json<Task>)> {
    let wait = query.wait.as_deref().map(parse_wait).transpose()?;
    let wait = wait.map(|wait| Wait::begin(state, wait));
    let since = state.bus().published();
    let task = state.store().run_task_now(id, None, Utc::now()).await?;
    state.engine().wake();
    publish_stored(state, &task, since);
    answer_run(state, task, wait).await
}

#[utoipa::path(post, path = "/api/v1/tasks/{id}/retry", tag = "tasks", params(("id" = i64, Path), RunQuery),
    responses(RunAnswers),
    security(("bearer" = [])))]
pub async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(id): PathArgs<i64>,
    QueryArgs(query): QueryArgs<RunQuery>,
) -> Result<(StatusCode, Json<Task>)> {
    caller.require(Role::Operator)?;
    let wait = query.wait.as_deref().map(parse_wait).transpose()?;
    let wait = wait.map(|wait| Wait::begin(&state, wait));
    let since = state.bus().published();
    let task = state.store().retry_task(id, Utc::now()).await?;
    state.engine().wake();
    publish_stored(&state, &task, since);
    answer_run(&state, task, wait).await
}

#[utoipa::path(post, path = "/api/v1/tasks/{id}/steps/{step_id}/run", tag = "tasks",
    params(("id" = i64, Path), ("step_id" = i64, Path)),
    responses((status = 202, body = Task), (status = 401, body = super::ErrorBody),
        (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn run_step(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs((id, step_id)): PathArgs<(i64, i64)>,
) -> Result<(StatusCode, Json<Task>)> {
    caller.require(Role::Operator)?;
    let task = load_task(&state, id).await?;
    if !task.steps.iter().any(|s| s.id == step_id) {
        return Err(ApiError::NotFound(format!(
            "task {id} has no step {step_id}"
        )));
    }
    let since = state.bus().published();
    let task = state
        .store()
        .run_task_now(id, Some(step_id), Utc::now())
        .await?;
    state.engine().wake();
    publish_stored(&state, &task, since);
    Ok((StatusCode::ACCEPTED, Json(task)))
}

/// Body of `POST /tasks/{id}/cancel`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CancelResult {
    /// true: cancelled at once; false: running, it stops within 100 ms.
    pub cancelled: bool,
}

#[utoipa::path(post, path = "/api/v1/tasks/{id}/cancel", tag = "tasks", params(("id" = i64, Path)),
    responses((status = 200, description = "cancelled at once", body = CancelResult),
        (status = 202, description = "running; being stopped", body = CancelResult),
        (status = 401, body = super::ErrorBody), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(id): PathArgs<i64>,
) -> Result<(StatusCode, Json<CancelResult>)> {
    caller.require(Role::Operator)?;
    let immediate = state.engine().cancel(id).await?;
    let status = if immediate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((
        status,
        Json(CancelResult {
            cancelled: immediate,
        }),
    ))
}
