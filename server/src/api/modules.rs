//! Module upload and management. An upload is validated and compiled (in a
//! bounded child process, one at a time) before it is accepted; a re-upload is
//! a new version, and runs keep the version they started with.

use super::auth::Caller;
use super::error::{ApiError, Result};
use super::extract::JsonBody;
use super::extract::PathArgs;
use super::{AppState, validate};
use crate::store::{Module, Role, TaskFilter, TaskStatus};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};

pub fn router(max_module_bytes: usize) -> Router<AppState> {
    Router::new().route("/modules", get(list_modules)).route(
        "/modules/{*path}",
        get(get_module)
            .put(put_module)
            .patch(patch_module)
            .delete(delete_module)
            .layer(DefaultBodyLimit::max(max_module_bytes)),
    )
}

/// The module path in the URL, e.g. `tool/backup/dumptables` (for the
/// OpenAPI document; the handlers take the wildcard as a string).
#[derive(Debug, utoipa::IntoParams)]
#[allow(dead_code)]
#[into_params(parameter_in = Path)]
pub struct ModulePathParam {
    /// 1–8 segments of `[a-z0-9_-]`.
    #[param(pattern = r"^[a-z0-9_-]{1,24}(/[a-z0-9_-]{1,24}){0,7}$")]
    pub path: String,
}

/// A component's bytes (the request body of an upload).
#[derive(Debug, utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct ComponentBytes(#[allow(dead_code)] Vec<u8>);

/// A module and how many tasks use it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModuleInfo {
    #[serde(flatten)]
    pub module: Module,
    /// Tasks with a step on this module (counted up to 1000).
    pub tasks: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModuleList {
    pub modules: Vec<Module>,
}

async fn usage(state: &AppState, path: &str, status: Option<TaskStatus>) -> Result<i64> {
    let filter = TaskFilter {
        module: Some(path.to_string()),
        status,
        limit: 1000,
        ..TaskFilter::default()
    };
    Ok(state.store().list_tasks(&filter).await?.len() as i64)
}

fn check_path(path: &str) -> Result<()> {
    validate::module_path("path", path)
}

#[utoipa::path(put, path = "/api/v1/modules/{path}", tag = "modules", params(ModulePathParam),
    request_body(content = ComponentBytes, content_type = "application/octet-stream", description = "the component (.wasm); `application/wasm` is accepted too"),
    responses((status = 201, description = "registered", body = Module),
        (status = 200, description = "new version of an existing module", body = Module),
        (status = 401, body = super::ErrorBody), (status = 403, body = super::ErrorBody),
        (status = 413, body = super::ErrorBody), (status = 422, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn put_module(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(path): PathArgs<String>,
    body: std::result::Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<Module>)> {
    caller.require(Role::Admin)?;
    check_path(&path)?;
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(format!(
                "the module is larger than the {} MiB upload limit (--max-module-bytes)",
                state.config().max_module_bytes >> 20
            ))
        } else {
            ApiError::BadRequest(e.body_text())
        }
    })?;
    let (module, created) = register(&state, &path, &bytes).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(module)))
}

/// Validate, compile and store a module (also used for start-up discovery).
pub async fn register(state: &AppState, path: &str, bytes: &[u8]) -> Result<(Module, bool)> {
    let _permit = state
        .compiles()
        .acquire()
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    let loaded = state
        .runtime()
        .prepare(bytes)
        .await
        .map_err(|e| ApiError::Invalid {
            field: Some("body".into()),
            message: e.to_string(),
        })?;
    let stored = state
        .store()
        .put_module(
            path,
            loaded.hash(),
            bytes,
            crate::runtime::language_of(bytes).as_deref(),
            Utc::now(),
        )
        .await?;
    state.forget_modules();
    state.engine().module_registered(loaded.hash()).await;
    Ok(stored)
}

#[utoipa::path(get, path = "/api/v1/modules", tag = "modules",
    responses((status = 200, body = ModuleList), (status = 401, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_modules(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ModuleList>> {
    caller.require(Role::Viewer)?;
    Ok(Json(ModuleList {
        modules: state.store().list_modules().await?,
    }))
}

async fn load(state: &AppState, path: &str) -> Result<Module> {
    check_path(path)?;
    state
        .store()
        .get_module(path)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("module `{path}` not found")))
}

#[utoipa::path(get, path = "/api/v1/modules/{path}", tag = "modules", params(ModulePathParam),
    responses((status = 200, body = ModuleInfo), (status = 401, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 422, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_module(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(path): PathArgs<String>,
) -> Result<Json<ModuleInfo>> {
    caller.require(Role::Viewer)?;
    let module = load(&state, &path).await?;
    let tasks = usage(&state, &path, None).await?;
    Ok(Json(ModuleInfo { module, tasks }))
}

/// Body of `PATCH /modules/{path}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModulePatch {
    /// false: tasks using it are not claimed until it is active again.
    pub active: bool,
}

#[utoipa::path(patch, path = "/api/v1/modules/{path}", tag = "modules", params(ModulePathParam),
    request_body = ModulePatch,
    responses((status = 200, body = Module), (status = 400, body = super::ErrorBody),
        (status = 401, body = super::ErrorBody), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 415, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn patch_module(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(path): PathArgs<String>,
    JsonBody(patch): JsonBody<ModulePatch>,
) -> Result<Json<Module>> {
    caller.require(Role::Admin)?;
    load(&state, &path).await?;
    let module = state
        .store()
        .set_module_active(&path, patch.active, Utc::now())
        .await?;
    state.engine().wake();
    Ok(Json(module))
}

#[utoipa::path(delete, path = "/api/v1/modules/{path}", tag = "modules", params(ModulePathParam),
    responses((status = 204, description = "deleted"), (status = 401, body = super::ErrorBody),
        (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody), (status = 422, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_module(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(path): PathArgs<String>,
) -> Result<StatusCode> {
    caller.require(Role::Admin)?;
    load(&state, &path).await?;
    let waiting = usage(&state, &path, Some(TaskStatus::Scheduled)).await?
        + usage(&state, &path, Some(TaskStatus::Running)).await?;
    if waiting > 0 {
        return Err(ApiError::Conflict(format!(
            "module `{path}` is used by {waiting} scheduled or running task(s); disable it (PATCH {{\"active\": false}}) or delete those tasks first"
        )));
    }
    state.store().delete_module(&path).await?;
    state.forget_modules();
    Ok(StatusCode::NO_CONTENT)
}
