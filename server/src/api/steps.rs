//! A task's steps: how a step in a request is checked (when a task is
//! created and when its steps are edited, with the same validators), and
//! editing them without re-posting the task (AbanteCart's addStep and
//! updateStep): add, change, remove, reorder.
//!
//! An edit while the task runs is allowed and leaves that run alone: the run
//! executes the steps it was claimed with, and its progress and ETA are
//! computed from them. The next run uses the edited steps.

use super::auth::Caller;
use super::error::{ApiError, Result};
use super::extract::{JsonBody, PathArgs};
use super::module_metadata::SettingsSchema;
use super::tasks::load_task;
use super::{AppState, schedules, task_actions, validate};
use crate::store::{NewStep, Role, StepChanges, StepEdit, StepStatus, Task, TaskStatus};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{patch, post, put};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use std::sync::Arc;

/// Steps a task may have.
pub const MAX_STEPS: usize = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/tasks/{id}/steps", post(add_step))
        .route("/tasks/{id}/steps/order", put(reorder_steps))
        .route(
            "/tasks/{id}/steps/{step_id}",
            patch(change_step).delete(remove_step),
        )
}

/// A step in a create request, or one added to a task.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepRequest {
    /// Module path, e.g. `tool/backup/dumptables`.
    pub controller: String,
    /// JSON handed to the module's `run`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub settings: serde_json::Value,
    /// Seconds (1–604800, default 60).
    #[serde(default = "default_step_time")]
    pub max_execution_time: i64,
    /// Bytes across all memories and tables (default 256 MiB).
    pub max_memory: Option<i64>,
    /// A failure of this step ends the run (default true).
    #[serde(default = "yes")]
    pub interrupt_on_step_fault: bool,
    #[serde(default = "scheduled")]
    pub status: StepStatus,
    /// Order within the task (default: at a create, the position in the
    /// list; when added, after the task's last step).
    pub sort_order: Option<i64>,
}

fn default_step_time() -> i64 {
    60
}
fn yes() -> bool {
    true
}
fn scheduled() -> StepStatus {
    StepStatus::Scheduled
}

impl StepRequest {
    /// Check every field; `field` turns a field's name into its path in the
    /// request (`steps[0].controller` at a create). `sort_order` is used
    /// when the request gives none.
    pub async fn validate(
        self,
        state: &AppState,
        field: impl Fn(&str) -> String,
        sort_order: i64,
    ) -> Result<NewStep> {
        let schema = controller(state, &field("controller"), &self.controller).await?;
        validate::step_settings(&field("settings"), &self.settings)?;
        if let Some(schema) = schema {
            schema.check(&field("settings"), &self.settings)?;
        }
        validate::step_time(&field("max_execution_time"), self.max_execution_time)?;
        if let Some(memory) = self.max_memory {
            validate::step_memory(&field("max_memory"), memory, max_memory(state))?;
        }
        Ok(NewStep {
            sort_order: self.sort_order.unwrap_or(sort_order),
            controller: self.controller,
            settings: self.settings,
            max_execution_time: self.max_execution_time,
            max_memory: self.max_memory,
            interrupt_on_step_fault: self.interrupt_on_step_fault,
            status: self.status,
        })
    }
}

/// A step's module: a valid path that is registered. Its settings schema,
/// when it declares one, is what the step's settings must match.
async fn controller(
    state: &AppState,
    field: &str,
    path: &str,
) -> Result<Option<Arc<SettingsSchema>>> {
    validate::module_path(field, path)?;
    match state.known_module(path).await? {
        Some(known) => Ok(known.schema),
        None => Err(ApiError::invalid(
            field,
            format!("module `{path}` is not registered; upload it with PUT /api/v1/modules/{path}"),
        )),
    }
}

/// The largest memory cap a step may ask for: the runtime's.
fn max_memory(state: &AppState) -> i64 {
    state.runtime().max_memory_bytes() as i64
}

/// Body of `PATCH /tasks/{id}/steps/{step_id}`; absent fields are unchanged.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepChangeRequest {
    pub sort_order: Option<i64>,
    /// Another module path (registered).
    pub controller: Option<String>,
    /// Replaces the settings whole.
    #[schema(value_type = Option<Object>)]
    pub settings: Option<serde_json::Value>,
    /// Seconds (1–604800).
    pub max_execution_time: Option<i64>,
    /// Bytes; null removes the step's own cap (the server's default applies).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, nullable)]
    pub max_memory: Option<Option<i64>>,
    pub interrupt_on_step_fault: Option<bool>,
    pub status: Option<StepStatus>,
}

/// A field that may be set to null: absent → `None`, null → `Some(None)`.
pub fn present<'de, D, T>(deserializer: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Body of `PUT /tasks/{id}/steps/order`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepOrderRequest {
    /// Every step id of the task once, in the order they are to run; they
    /// are numbered 1, 2, … (`sort_order`).
    pub steps: Vec<i64>,
}

/// Store an edit and answer with the task as it now is. A task that is not
/// running is published as stored; a running one keeps its live state (the
/// run's progress and ETA are its own, and the edit does not change them).
async fn apply(state: &AppState, id: i64, edit: StepEdit) -> Result<Task> {
    let since = state.bus().published();
    let mut task = state.store().edit_steps(id, &edit, Utc::now()).await?;
    if task.status != TaskStatus::Running {
        task_actions::publish_stored(state, &task, since);
    }
    // Removing a step on a deactivated module can make the task claimable.
    state.engine().wake();
    schedules::fill_next_runs(std::slice::from_mut(&mut task), Utc::now());
    Ok(task)
}

/// The task, and 404 when it has no step `step_id`.
async fn task_with_step(state: &AppState, id: i64, step_id: i64) -> Result<Task> {
    let task = load_task(state, id).await?;
    if !task.steps.iter().any(|s| s.id == step_id) {
        return Err(ApiError::NotFound(format!(
            "task {id} has no step {step_id}"
        )));
    }
    Ok(task)
}

#[utoipa::path(post, path = "/api/v1/tasks/{id}/steps", tag = "steps", params(("id" = i64, Path)),
    request_body = StepRequest,
    responses(
        (status = 201, description = "added; the new step is the task's step with the highest id", body = Task),
        (status = 400, body = super::ErrorBody), (status = 401, body = super::ErrorBody),
        (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody), (status = 415, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn add_step(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(id): PathArgs<i64>,
    JsonBody(request): JsonBody<StepRequest>,
) -> Result<(StatusCode, Json<Task>)> {
    caller.require(Role::Operator)?;
    let task = load_task(&state, id).await?;
    if task.steps.len() >= MAX_STEPS {
        return Err(ApiError::Conflict(format!(
            "task {id} has {MAX_STEPS} steps, the most a task may have; remove one first"
        )));
    }
    let last = task.steps.iter().map(|s| s.sort_order).max().unwrap_or(0);
    let step = request
        .validate(&state, |name| name.to_string(), last + 1)
        .await?;
    let task = apply(&state, id, StepEdit::Add(step)).await?;
    Ok((StatusCode::CREATED, Json(task)))
}

#[utoipa::path(patch, path = "/api/v1/tasks/{id}/steps/{step_id}", tag = "steps",
    params(("id" = i64, Path), ("step_id" = i64, Path)),
    request_body = StepChangeRequest,
    responses((status = 200, body = Task), (status = 400, body = super::ErrorBody),
        (status = 401, body = super::ErrorBody), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 415, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn change_step(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs((id, step_id)): PathArgs<(i64, i64)>,
    JsonBody(request): JsonBody<StepChangeRequest>,
) -> Result<Json<Task>> {
    caller.require(Role::Operator)?;
    let task = task_with_step(&state, id, step_id).await?;
    let schema = match &request.controller {
        Some(path) => controller(&state, "controller", path).await?,
        None => None,
    };
    if let Some(settings) = &request.settings {
        validate::step_settings("settings", settings)?;
    }
    // The step as it will be must match its module's schema: new settings,
    // or the kept settings under a new module.
    if request.controller.is_some() || request.settings.is_some() {
        let step = task.steps.iter().find(|s| s.id == step_id);
        let schema = match (&request.controller, step) {
            (Some(_), _) => schema,
            (None, Some(step)) => state
                .known_module(&step.controller)
                .await?
                .and_then(|known| known.schema),
            (None, None) => None,
        };
        let settings = request.settings.as_ref().or(step.map(|s| &s.settings));
        if let (Some(schema), Some(settings)) = (schema, settings) {
            schema.check("settings", settings)?;
        }
    }
    if let Some(seconds) = request.max_execution_time {
        validate::step_time("max_execution_time", seconds)?;
    }
    if let Some(Some(bytes)) = request.max_memory {
        validate::step_memory("max_memory", bytes, max_memory(&state))?;
    }
    let changes = StepChanges {
        sort_order: request.sort_order,
        controller: request.controller,
        settings: request.settings,
        max_execution_time: request.max_execution_time,
        max_memory: request.max_memory,
        interrupt_on_step_fault: request.interrupt_on_step_fault,
        status: request.status,
    };
    let task = apply(&state, id, StepEdit::Change { step_id, changes }).await?;
    Ok(Json(task))
}

#[utoipa::path(delete, path = "/api/v1/tasks/{id}/steps/{step_id}", tag = "steps",
    params(("id" = i64, Path), ("step_id" = i64, Path)),
    responses((status = 200, description = "removed; the task without it", body = Task),
        (status = 401, body = super::ErrorBody), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody),
        (status = 409, description = "its only step, or about to run on its own", body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove_step(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs((id, step_id)): PathArgs<(i64, i64)>,
) -> Result<Json<Task>> {
    caller.require(Role::Operator)?;
    task_with_step(&state, id, step_id).await?;
    let task = apply(&state, id, StepEdit::Remove { step_id }).await?;
    Ok(Json(task))
}

#[utoipa::path(put, path = "/api/v1/tasks/{id}/steps/order", tag = "steps", params(("id" = i64, Path)),
    request_body = StepOrderRequest,
    responses((status = 200, body = Task), (status = 400, body = super::ErrorBody),
        (status = 401, body = super::ErrorBody), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody),
        (status = 415, body = super::ErrorBody), (status = 422, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn reorder_steps(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(id): PathArgs<i64>,
    JsonBody(request): JsonBody<StepOrderRequest>,
) -> Result<Json<Task>> {
    caller.require(Role::Operator)?;
    let task = load_task(&state, id).await?;
    let mut given = request.steps.clone();
    given.sort_unstable();
    let mut have: Vec<i64> = task.steps.iter().map(|s| s.id).collect();
    have.sort_unstable();
    if given != have {
        return Err(ApiError::invalid(
            "steps",
            format!("must list each step of task {id} once, in the new order: {have:?}"),
        ));
    }
    let task = apply(&state, id, StepEdit::Reorder(request.steps)).await?;
    Ok(Json(task))
}
