//! Module upload and management. An upload is validated and compiled (in a
//! bounded child process, one at a time) before it is accepted; a re-upload is
//! a new version, and runs keep the version they started with.
//!
//! Listing and reading a module show what it says of itself (its metadata)
//! and how its step runs went over the last [`STATS_DAYS`] days; tasks whose
//! steps name a module that is not registered are listed apart.

use super::auth::Caller;
use super::error::{ApiError, Result};
use super::extract::JsonBody;
use super::extract::{PathArgs, QueryArgs};
use super::{AppState, module_metadata, module_scan, validate};
use crate::store::{
    MissingModuleTask, Module, ModuleLimits, ModuleMetadata, ModulePerformance, Role, TaskFilter,
    TaskStatus,
};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Days of step runs the per-module statistics cover.
pub const STATS_DAYS: i64 = 30;

/// Module paths the API's own routes take (`/modules/rescan`,
/// `/modules/missing`); no module may be registered under them.
const RESERVED_PATHS: [&str; 2] = ["rescan", "missing"];

/// Tasks listed by `GET /modules/missing` at most.
const MISSING_LIMIT: i64 = 1000;

pub fn router(max_module_bytes: usize) -> Router<AppState> {
    Router::new()
        .route("/modules", get(list_modules))
        .route("/modules/rescan", post(module_scan::rescan))
        .route("/modules/missing", get(missing_modules))
        .route(
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
    pub stats: ModuleRunStats,
    /// What it uses of its limits now; null when it has none.
    pub usage: Option<LimitCounts>,
}

/// A module in the list, with its statistics.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModuleSummary {
    #[serde(flatten)]
    pub module: Module,
    pub stats: ModuleRunStats,
    /// What it uses of its limits now; null when it has none.
    pub usage: Option<LimitCounts>,
}

/// What a limited module uses of its limits now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LimitCounts {
    /// Runs holding one of its slots that are running.
    pub running: i64,
    /// Runs that took one of its slots in the last 60 seconds.
    pub starts_last_minute: i64,
}

/// Each limited module's counts, by path.
async fn limit_counts(state: &AppState) -> Result<HashMap<String, LimitCounts>> {
    Ok(state
        .store()
        .module_usage(Utc::now())
        .await?
        .into_iter()
        .map(|u| {
            let counts = LimitCounts {
                running: u.running,
                starts_last_minute: u.starts_last_minute,
            };
            (u.path, counts)
        })
        .collect())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModuleList {
    pub modules: Vec<ModuleSummary>,
}

/// How a module's step runs went, within the runs started in the last
/// `days` days (sTask's worker statistics). A step run is a success when it
/// completed and a failure when it failed or a limit stopped it; one stopped
/// because its run was cancelled is judged neither way.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ModuleRunStats {
    /// The window, in days.
    pub days: i64,
    /// When its latest step run started; null when none did in the window.
    pub last_run_at: Option<chrono::DateTime<Utc>>,
    /// Step runs that executed or are executing.
    pub runs: i64,
    pub completed: i64,
    pub failed: i64,
    /// completed / (completed + failed); null when none was judged.
    pub success_rate: Option<f64>,
    /// Mean seconds of the judged step runs; null when none was judged.
    pub average_duration_seconds: Option<f64>,
}

impl ModuleRunStats {
    fn of(days: i64, performance: Option<&ModulePerformance>) -> Self {
        let Some(p) = performance else {
            return ModuleRunStats {
                days,
                ..ModuleRunStats::default()
            };
        };
        let judged = p.completed + p.failed;
        ModuleRunStats {
            days,
            last_run_at: p.last_run_at,
            runs: p.runs,
            completed: p.completed,
            failed: p.failed,
            success_rate: (judged > 0).then(|| p.completed as f64 / judged as f64),
            average_duration_seconds: p.average_duration_seconds,
        }
    }
}

/// Every module's step-run statistics over the last [`STATS_DAYS`] days.
async fn module_stats(state: &AppState) -> Result<Vec<ModulePerformance>> {
    let now = Utc::now();
    let since = now - chrono::Duration::days(STATS_DAYS);
    Ok(state.store().performance(since, now).await?.modules)
}

fn stats_of(all: &[ModulePerformance], path: &str) -> ModuleRunStats {
    ModuleRunStats::of(STATS_DAYS, all.iter().find(|p| p.module == path))
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

/// Query of `PUT /modules/{path}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// The module's metadata as JSON text (`{"title", "description",
    /// "version", "settings_schema"}`), for components that carry no
    /// `stepwise:metadata` section (e.g. built with componentize-py or
    /// componentize-js); it replaces the section's when both are given.
    pub metadata: Option<String>,
}

#[utoipa::path(put, path = "/api/v1/modules/{path}", tag = "modules", params(ModulePathParam, UploadQuery),
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
    QueryArgs(query): QueryArgs<UploadQuery>,
    body: std::result::Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<Module>)> {
    caller.require(Role::Admin)?;
    check_path(&path)?;
    if RESERVED_PATHS.contains(&path.as_str()) {
        return Err(ApiError::invalid(
            "path",
            format!(
                "`{path}` is taken by the API's own route /api/v1/modules/{path}; choose another path"
            ),
        ));
    }
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
    let metadata = module_metadata::read(&bytes, query.metadata.as_deref().map(str::as_bytes))?;
    let (module, created) = register(&state, &path, &bytes, metadata).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(module)))
}

/// Validate, compile and store a module with its (checked) metadata; also
/// used for the examples and `--modules-dir`.
pub async fn register(
    state: &AppState,
    path: &str,
    bytes: &[u8],
    metadata: Option<ModuleMetadata>,
) -> Result<(Module, bool)> {
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
            metadata.as_ref(),
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
    let stats = module_stats(&state).await?;
    let mut counts = limit_counts(&state).await?;
    let modules = state
        .store()
        .list_modules()
        .await?
        .into_iter()
        .map(|module| ModuleSummary {
            stats: stats_of(&stats, &module.path),
            usage: counts.remove(&module.path),
            module,
        })
        .collect();
    Ok(Json(ModuleList { modules }))
}

/// Tasks whose steps name a module that is not registered.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MissingModules {
    /// One entry per task and missing module, by module path then task id
    /// (at most 1000).
    pub tasks: Vec<MissingModuleTask>,
}

#[utoipa::path(get, path = "/api/v1/modules/missing", tag = "modules",
    responses((status = 200, description = "tasks that cannot run until a module is uploaded", body = MissingModules),
        (status = 401, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn missing_modules(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<MissingModules>> {
    caller.require(Role::Viewer)?;
    Ok(Json(MissingModules {
        tasks: state.store().missing_module_tasks(MISSING_LIMIT).await?,
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
    let stats = stats_of(&module_stats(&state).await?, &path);
    let usage = limit_counts(&state).await?.remove(&path);
    Ok(Json(ModuleInfo {
        module,
        tasks,
        stats,
        usage,
    }))
}

/// Body of `PATCH /modules/{path}`; what is omitted stays as it is.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModulePatch {
    /// false: tasks using it are not claimed until it is active again.
    pub active: Option<bool>,
    /// Replaces both limits: a field omitted or null is no limit, so
    /// `{"limits": {}}` removes them.
    pub limits: Option<ModuleLimits>,
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
    if let Some(limits) = &patch.limits {
        if let Some(max) = limits.max_running {
            validate::limit("limits.max_running", max)?;
        }
        if let Some(max) = limits.max_starts_per_minute {
            validate::limit("limits.max_starts_per_minute", max)?;
        }
    }
    let mut module = load(&state, &path).await?;
    if let Some(active) = patch.active {
        module = state
            .store()
            .set_module_active(&path, active, Utc::now())
            .await?;
    }
    if let Some(limits) = patch.limits {
        module = state
            .store()
            .set_module_limits(&path, limits, Utc::now())
            .await?;
    }
    // A module activated or given room may let waiting tasks run.
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
