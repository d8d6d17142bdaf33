//! Creating, listing, changing and deleting tasks.

use super::auth::Caller;
use super::error::{ApiError, Result};
use super::extract::PathArgs;
use super::extract::{JsonBody, QueryArgs};
use super::steps::{MAX_STEPS, StepRequest, present};
use super::{
    AppState, schedules, steps, task_actions, task_codes, task_history, timestamp, validate,
    waiting,
};
use crate::events::Event;
use crate::store::{NewTask, Priority, Role, StepStatus, Task, TaskFilter, TaskPatch, TaskStatus};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Longest `?wait=`.
const MAX_WAIT: Duration = Duration::from_secs(60);

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/tasks",
            get(list_tasks)
                .post(create_task)
                .delete(task_history::cleanup),
        )
        .route(
            "/tasks/{id}",
            get(get_task).patch(patch_task).delete(delete_task),
        )
        .merge(task_actions::router())
        .merge(task_history::router())
        .merge(task_codes::router())
        .merge(steps::router())
}

fn normal() -> Priority {
    Priority::Normal
}
fn one_hour() -> i64 {
    3600
}
fn three() -> i64 {
    3
}

/// Body of `POST /tasks`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    pub name: String,
    /// Unique key: creating a task with an existing code updates that task.
    pub code: Option<String>,
    #[serde(default = "normal")]
    pub priority: Priority,
    /// When it first becomes due (default now). RFC 3339, or
    /// `YYYY-MM-DD HH:MM:SS` read as UTC.
    #[serde(default, deserialize_with = "timestamp::optional")]
    pub start_at: Option<DateTime<Utc>>,
    /// Seconds between runs; 0 = run once (or on `cron`).
    #[serde(default)]
    pub run_interval: i64,
    /// A cron expression to recur on instead of `run_interval` (five
    /// fields, or six with seconds first, e.g. `0 3 * * *`): first due at
    /// its first time from `start_at` (or now), then at its next time after
    /// each run.
    pub cron: Option<String>,
    /// The IANA zone `cron` is read in, e.g. `Europe/Berlin` (default `UTC`).
    pub timezone: Option<String>,
    /// Seconds for the whole task; 0 = no task-wide limit (steps keep theirs).
    #[serde(default = "one_hour")]
    pub max_execution_time: i64,
    #[serde(default = "three")]
    pub max_attempts: i64,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub details: serde_json::Map<String, serde_json::Value>,
    /// name → value; write-only. Replacing a task by `code`: omitted (or
    /// null) keeps its secrets, `{}` removes them all, an object replaces them.
    pub secrets: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub disabled: bool,
    /// A URL that gets a signed JSON POST each time a run of the task ends
    /// (AbanteCart's complete-task-url): http, on a loopback host or a host
    /// the admin allows (`--hook-allow-hosts`).
    pub hook_url: Option<String>,
    /// At most this many runs of the task start in any minute (a sliding
    /// window of 60 seconds); omitted or null: no limit. A due task it holds
    /// back waits, and its `message` says so.
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_starts_per_minute: Option<i64>,
    pub steps: Vec<StepRequest>,
}

impl TaskRequest {
    /// Check every field; the first problem is returned with its path.
    async fn validate(self, state: &AppState, created_by: &str) -> Result<NewTask> {
        validate::text("name", &self.name, 200)?;
        if let Some(code) = &self.code {
            validate::name("code", code)?;
        }
        if let Some(start_at) = self.start_at {
            let year = chrono::Datelike::year(&start_at);
            if !(2000..=9999).contains(&year) {
                return Err(ApiError::invalid(
                    "start_at",
                    "must be a date between the years 2000 and 9999",
                ));
            }
        }
        validate::range(
            "run_interval",
            self.run_interval,
            0,
            366 * 86_400,
            "seconds",
        )?;
        validate::range(
            "max_execution_time",
            self.max_execution_time,
            0,
            7 * 86_400,
            "seconds",
        )?;
        validate::range("max_attempts", self.max_attempts, 1, 100, "attempts")?;
        if let Some(max) = self.max_starts_per_minute {
            validate::limit("max_starts_per_minute", max)?;
        }
        if let Some(url) = &self.hook_url {
            check_hook_url(state, url)?;
        }
        let timezone = self
            .timezone
            .unwrap_or_else(|| crate::schedule::DEFAULT_TIMEZONE.to_string());
        validate::schedule(self.cron.as_deref(), &timezone, self.run_interval, false)?;
        validate::json_size(
            "details",
            &serde_json::Value::Object(self.details.clone()),
            64 << 10,
        )?;
        let keep_secrets = self.secrets.is_none();
        let secrets = self.secrets.unwrap_or_default();
        if secrets.len() > MAX_SECRETS {
            return Err(too_many_secrets());
        }
        for (name, value) in &secrets {
            validate_secret(name, value)?;
        }
        if self.steps.is_empty() {
            return Err(ApiError::invalid("steps", "a task needs at least one step"));
        }
        if self.steps.len() > MAX_STEPS {
            return Err(ApiError::invalid(
                "steps",
                format!("at most {MAX_STEPS} steps per task"),
            ));
        }
        let mut steps = Vec::with_capacity(self.steps.len());
        for (i, step) in self.steps.into_iter().enumerate() {
            let field = |name: &str| format!("steps[{i}].{name}");
            steps.push(step.validate(state, field, i as i64 + 1).await?);
        }
        let secrets = secrets
            .iter()
            .map(|(name, value)| state.engine().secrets().seal(name, value))
            .collect();
        Ok(NewTask {
            name: self.name.trim().to_string(),
            code: self.code,
            priority: self.priority,
            start_at: self.start_at,
            run_interval: self.run_interval,
            cron: self.cron,
            timezone,
            max_execution_time: self.max_execution_time,
            max_attempts: self.max_attempts,
            created_by: Some(created_by.to_string()),
            details: self.details,
            secrets,
            keep_secrets,
            disabled: self.disabled,
            hook_url: self.hook_url,
            max_starts_per_minute: self.max_starts_per_minute,
            steps,
        })
    }
}

/// A completion hook's URL, checked against the server's hook settings.
fn check_hook_url(state: &AppState, url: &str) -> Result<()> {
    state
        .engine()
        .config()
        .hooks
        .check_url(url)
        .map(drop)
        .map_err(|message| ApiError::invalid("hook_url", message))
}

/// Secrets a task may hold.
const MAX_SECRETS: usize = 50;

fn too_many_secrets() -> ApiError {
    ApiError::invalid(
        "secrets",
        format!("at most {MAX_SECRETS} secrets per task; remove some first"),
    )
}

/// A secret's name and value, as a create or a patch sets it.
fn validate_secret(name: &str, value: &str) -> Result<()> {
    validate::name(&format!("secrets.{name}"), name)?;
    if value.len() > 64 << 10 {
        return Err(ApiError::invalid(
            format!("secrets.{name}"),
            "must be at most 64 KiB",
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CreateQuery {
    /// Wait up to this long (e.g. `2s`, `500ms`; at most 60 s) for the task to finish.
    pub wait: Option<String>,
}

/// Parse `2s`, `500ms`, `1m`.
pub fn parse_wait(text: &str) -> Result<Duration> {
    let wait = humantime::parse_duration(text).map_err(|e| {
        ApiError::invalid(
            "wait",
            format!("`{text}` is not a duration like `2s` or `500ms`: {e}"),
        )
    })?;
    if wait > MAX_WAIT {
        return Err(ApiError::invalid("wait", "must be at most 60s"));
    }
    Ok(wait)
}

#[utoipa::path(post, path = "/api/v1/tasks", tag = "tasks", params(CreateQuery),
    request_body = TaskRequest,
    responses(
        (status = 201, description = "created", body = Task),
        (status = 200, description = "updated by code, or finished within `wait`", body = Task),
        (status = 202, description = "still running after `wait`", body = Task),
        (status = 400, body = super::ErrorBody), (status = 401, body = super::ErrorBody),
        (status = 403, body = super::ErrorBody), (status = 409, body = super::ErrorBody),
        (status = 413, body = super::ErrorBody), (status = 415, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_task(
    State(state): State<AppState>,
    caller: Caller,
    QueryArgs(query): QueryArgs<CreateQuery>,
    JsonBody(request): JsonBody<TaskRequest>,
) -> Result<Response> {
    caller.require(Role::Operator)?;
    let wait = query.wait.as_deref().map(parse_wait).transpose()?;
    let new_task = request.validate(&state, caller.name()).await?;
    let wait = wait.map(|wait| task_actions::Wait::begin(&state, wait));
    let since = state.bus().published();
    // A waited create is answered after its run: its commit may wait for
    // the disk until then (the run's end is synced, and covers it). On an
    // idle node its run starts in the create (`engine/start_at_create.rs`).
    let slot = wait
        .as_ref()
        .and_then(|_| state.engine().start_slot(&new_task));
    let (mut task, created, run_end) = if let Some(slot) = slot {
        let (task, run_end) = state.engine().create_started(slot, new_task).await?;
        (task, true, run_end)
    } else if wait.is_some() {
        let (task, created) = state.creator().create_deferred(new_task).await?;
        (task, created, None)
    } else {
        let (task, created) = state.creator().create(new_task).await?;
        (task, created, None)
    };
    let started = run_end.is_some();
    // Live views show the task at once (a replaced one as scheduled again,
    // not with its previous run's final state).
    task_actions::publish_stored(&state, &task, since);
    if !started {
        state.engine().wake();
    }
    if let Some(wait) = wait {
        let settled = wait.until_settled(&state, task).await;
        drop(run_end);
        // Whatever the answer, the create is on disk before it.
        state.store().sync_deferred().await?;
        let mut task = settled?;
        schedules::fill_next_runs(std::slice::from_mut(&mut task), Utc::now());
        return Ok((task_actions::Wait::status_of(&task), Json(task)).into_response());
    }
    schedules::fill_next_runs(std::slice::from_mut(&mut task), Utc::now());
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(task)).into_response())
}

/// A task that will not move on by itself.
pub fn is_final(status: TaskStatus) -> bool {
    matches!(
        status,
        TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled | TaskStatus::Disabled
    )
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub status: Option<TaskStatus>,
    pub code: Option<String>,
    /// Tasks with a step on this module path.
    pub module: Option<String>,
    /// 1–500, default 50.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TaskPage {
    pub tasks: Vec<Task>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks", params(ListQuery),
    responses((status = 200, body = TaskPage), (status = 401, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_tasks(
    State(state): State<AppState>,
    caller: Caller,
    QueryArgs(query): QueryArgs<ListQuery>,
) -> Result<Json<TaskPage>> {
    caller.require(Role::Viewer)?;
    let limit = query.limit.unwrap_or(50);
    validate::range("limit", limit, 1, 500, "tasks")?;
    let before_id =
        match &query.cursor {
            Some(cursor) => Some(cursor.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(
                || ApiError::invalid("cursor", "is not a cursor this server returned"),
            )?),
            None => None,
        };
    let filter = TaskFilter {
        status: query.status,
        code: query.code,
        module: query.module,
        before_id,
        limit,
    };
    let mut tasks = state.store().list_tasks(&filter).await?;
    waiting::explain(&state, &mut tasks).await?;
    schedules::fill_next_runs(&mut tasks, Utc::now());
    let next_cursor = (tasks.len() as i64 == limit)
        .then(|| tasks.last().map(|t| t.id.to_string()))
        .flatten();
    Ok(Json(TaskPage { tasks, next_cursor }))
}

/// The task or 404.
pub async fn load_task(state: &AppState, id: i64) -> Result<Task> {
    state
        .store()
        .get_task(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("task {id} not found")))
}

#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "tasks", params(("id" = i64, Path)),
    responses((status = 200, body = Task), (status = 401, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_task(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(id): PathArgs<i64>,
) -> Result<Json<Task>> {
    caller.require(Role::Viewer)?;
    let mut task = load_task(&state, id).await?;
    waiting::explain(&state, std::slice::from_mut(&mut task)).await?;
    schedules::fill_next_runs(std::slice::from_mut(&mut task), Utc::now());
    Ok(Json(task))
}

/// A step's new status in a PATCH.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepPatch {
    pub id: i64,
    pub status: StepStatus,
}

/// Body of `PATCH /tasks/{id}`; absent fields are unchanged.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskPatchRequest {
    pub name: Option<String>,
    pub priority: Option<Priority>,
    /// RFC 3339, or `YYYY-MM-DD HH:MM:SS` read as UTC.
    #[serde(default, deserialize_with = "timestamp::optional")]
    pub start_at: Option<DateTime<Utc>>,
    pub run_interval: Option<i64>,
    /// A cron expression to recur on; null removes it. A new expression
    /// (or zone) moves a scheduled task's next run to the schedule's first
    /// time from now (or `start_at`).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable)]
    pub cron: Option<Option<String>>,
    /// The IANA zone `cron` is read in.
    pub timezone: Option<String>,
    pub max_execution_time: Option<i64>,
    pub max_attempts: Option<i64>,
    /// Merged into the details; a null value removes a key.
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Map<String, serde_json::Value>>,
    /// Merged into the secrets: a string sets a secret (adds it or replaces
    /// its value), a null removes it; names not mentioned are kept. Write-only.
    pub secrets: Option<BTreeMap<String, Option<String>>>,
    /// true: disable; false: enable (scheduled again).
    pub disabled: Option<bool>,
    /// The completion hook's URL (see `POST /tasks`); null removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable)]
    pub hook_url: Option<Option<String>>,
    /// Runs of the task that may start in any minute; null removes the limit.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, nullable, minimum = 1, maximum = 1000000)]
    pub max_starts_per_minute: Option<Option<i64>>,
    #[serde(default)]
    pub steps: Vec<StepPatch>,
}

#[utoipa::path(patch, path = "/api/v1/tasks/{id}", tag = "tasks", params(("id" = i64, Path)),
    request_body = TaskPatchRequest,
    responses((status = 200, body = Task), (status = 400, body = super::ErrorBody),
        (status = 401, body = super::ErrorBody), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody),
        (status = 415, body = super::ErrorBody), (status = 422, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn patch_task(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(id): PathArgs<i64>,
    JsonBody(patch): JsonBody<TaskPatchRequest>,
) -> Result<Json<Task>> {
    caller.require(Role::Operator)?;
    if let Some(name) = &patch.name {
        validate::text("name", name, 200)?;
    }
    if let Some(v) = patch.run_interval {
        validate::range("run_interval", v, 0, 366 * 86_400, "seconds")?;
    }
    if let Some(v) = patch.max_execution_time {
        validate::range("max_execution_time", v, 0, 7 * 86_400, "seconds")?;
    }
    if let Some(v) = patch.max_attempts {
        validate::range("max_attempts", v, 1, 100, "attempts")?;
    }
    if let Some(Some(url)) = &patch.hook_url {
        check_hook_url(&state, url)?;
    }
    if let Some(Some(max)) = patch.max_starts_per_minute {
        validate::limit("max_starts_per_minute", max)?;
    }
    let task = load_task(&state, id).await?;
    if patch.cron.is_some() || patch.timezone.is_some() || patch.run_interval.is_some() {
        let cron = patch.cron.clone().unwrap_or(task.cron.clone());
        let timezone = patch.timezone.as_ref().unwrap_or(&task.timezone);
        let run_interval = patch.run_interval.unwrap_or(task.run_interval);
        let interval_is_new = patch.run_interval.is_some() && patch.cron.is_none();
        validate::schedule(cron.as_deref(), timezone, run_interval, interval_is_new)?;
    }
    for (i, step) in patch.steps.iter().enumerate() {
        if !task.steps.iter().any(|s| s.id == step.id) {
            return Err(ApiError::invalid(
                format!("steps[{i}].id"),
                format!("task {id} has no step {}", step.id),
            ));
        }
    }
    let mut set_secrets = Vec::new();
    let mut remove_secrets = Vec::new();
    for (name, value) in patch.secrets.iter().flatten() {
        match value {
            Some(value) => {
                validate_secret(name, value)?;
                set_secrets.push(state.engine().secrets().seal(name, value));
            }
            None => remove_secrets.push(name.clone()),
        }
    }
    let kept = task
        .secret_names
        .iter()
        .filter(|name| !patch.secrets.iter().flatten().any(|(n, _)| n == *name));
    if kept.count() + set_secrets.len() > MAX_SECRETS {
        return Err(too_many_secrets());
    }
    let store_patch = TaskPatch {
        name: patch.name.map(|n| n.trim().to_string()),
        priority: patch.priority,
        start_at: patch.start_at,
        run_interval: patch.run_interval,
        cron: patch.cron,
        timezone: patch.timezone,
        max_execution_time: patch.max_execution_time,
        max_attempts: patch.max_attempts,
        details: patch.details,
        disabled: patch.disabled,
        step_status: patch.steps.iter().map(|s| (s.id, s.status)).collect(),
        set_secrets,
        remove_secrets,
        hook_url: patch.hook_url,
        max_starts_per_minute: patch.max_starts_per_minute,
    };
    let since = state.bus().published();
    let mut task = state
        .store()
        .update_task(id, &store_patch, Utc::now())
        .await?;
    state.engine().wake();
    task_actions::publish_stored(&state, &task, since);
    schedules::fill_next_runs(std::slice::from_mut(&mut task), Utc::now());
    Ok(Json(task))
}

#[utoipa::path(delete, path = "/api/v1/tasks/{id}", tag = "tasks", params(("id" = i64, Path)),
    responses((status = 204, description = "deleted"), (status = 401, body = super::ErrorBody),
        (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_task(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(id): PathArgs<i64>,
) -> Result<StatusCode> {
    caller.require(Role::Operator)?;
    remove_task(&state, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete a task and tell live views (shared with the delete by code).
pub async fn remove_task(state: &AppState, id: i64) -> Result<()> {
    state.store().delete_task(id).await?;
    state.bus().publish(Event::Deleted {
        task_id: id,
        seq: 0,
    });
    Ok(())
}
