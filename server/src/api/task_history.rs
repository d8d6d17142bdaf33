//! What a task did: its runs and artifacts (logs are in `logs.rs`); and cleanup of old tasks.

use super::auth::Caller;
use super::error::{ApiError, Result};
use super::extract::PathArgs;
use super::extract::QueryArgs;
use super::tasks::load_task;
use super::{AppState, validate};
use crate::store::{Artifact, Role, Run, Store, TaskStatus};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/tasks/{id}/runs", get(runs))
        .route("/tasks/{id}/artifacts", get(artifacts))
        .route("/tasks/{id}/artifacts/{name}", get(download))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    /// How many runs (default 20, at most 1000).
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RunList {
    pub runs: Vec<Run>,
}

#[utoipa::path(get, path = "/api/v1/tasks/{id}/runs", tag = "history", params(("id" = i64, Path), LimitQuery),
    responses((status = 200, body = RunList), (status = 401, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 422, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn runs(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(id): PathArgs<i64>,
    QueryArgs(query): QueryArgs<LimitQuery>,
) -> Result<Json<RunList>> {
    caller.require(Role::Viewer)?;
    let limit = query.limit.unwrap_or(20);
    validate::range("limit", limit, 1, 1000, "runs")?;
    load_task(&state, id).await?;
    let mut runs = state.store().list_runs(id, limit).await?;
    let run_ids: Vec<i64> = runs.iter().map(|run| run.id).collect();
    for delivery in state.store().list_hook_deliveries(id, &run_ids).await? {
        if let Some(run) = runs.iter_mut().find(|run| run.id == delivery.run_id) {
            run.hook_deliveries.push(delivery);
        }
    }
    Ok(Json(RunList { runs }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ArtifactList {
    pub artifacts: Vec<Artifact>,
}

#[utoipa::path(get, path = "/api/v1/tasks/{id}/artifacts", tag = "history", params(("id" = i64, Path)),
    responses((status = 200, body = ArtifactList), (status = 401, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn artifacts(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(id): PathArgs<i64>,
) -> Result<Json<ArtifactList>> {
    caller.require(Role::Viewer)?;
    load_task(&state, id).await?;
    Ok(Json(ArtifactList {
        artifacts: state.store().list_artifacts(id).await?,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DownloadQuery {
    /// A specific run's artifact (default: the newest run that wrote one by this name).
    pub run_id: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/tasks/{id}/artifacts/{name}", tag = "history",
    params(("id" = i64, Path), ("name" = String, Path), DownloadQuery),
    responses((status = 200, description = "the artifact's bytes", content_type = "application/octet-stream"),
        (status = 401, body = super::ErrorBody), (status = 404, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn download(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs((id, name)): PathArgs<(i64, String)>,
    QueryArgs(query): QueryArgs<DownloadQuery>,
) -> Result<Response> {
    caller.require(Role::Viewer)?;
    // A name whose secret was masked when the step wrote it holds `***`.
    crate::store::validate_artifact_name(&name.replace(crate::engine::MASK, "_"))
        .map_err(|m| ApiError::invalid("name", m))?;
    load_task(&state, id).await?;
    let chunks = state
        .store()
        .artifact_chunks(id, &name, query.run_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("task {id} has no artifact `{name}`")))?;
    let mime = mime_guess::from_path(&name).first_or_octet_stream();
    Ok((
        [
            (CONTENT_TYPE, mime.essence_str().to_string()),
            (
                CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (CONTENT_LENGTH, chunks.size.to_string()),
        ],
        stream_chunks(state.store().clone(), chunks.chunk_ids),
    )
        .into_response())
}

/// The artifact's chunks one after the other, each read when the client is
/// ready for it: a download holds one chunk in memory, not the artifact. A
/// chunk that is gone (the artifact was overwritten meanwhile) ends the body
/// short of its `Content-Length`, so the client sees a failed download rather
/// than a mix of two versions.
fn stream_chunks(store: Arc<dyn Store>, chunk_ids: Vec<i64>) -> Body {
    let chunks = futures::stream::iter(chunk_ids).then(move |chunk_id| {
        let store = store.clone();
        async move {
            match store.artifact_chunk(chunk_id).await {
                Ok(Some(bytes)) => Ok(Bytes::from(bytes)),
                Ok(None) => Err(std::io::Error::other(
                    "the artifact was overwritten during the download; download it again",
                )),
                Err(error) => {
                    tracing::error!("reading an artifact chunk failed: {error:#}");
                    Err(std::io::Error::other("the artifact could not be read"))
                }
            }
        }
    });
    Body::from_stream(chunks)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CleanupQuery {
    /// Delete finished tasks last updated before this time (RFC 3339).
    pub finished_before: DateTime<Utc>,
    /// Only tasks in this final status (completed, failed or cancelled).
    pub status: Option<TaskStatus>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Deleted {
    pub deleted: u64,
}

#[utoipa::path(delete, path = "/api/v1/tasks", tag = "tasks", params(CleanupQuery),
    responses((status = 200, body = Deleted), (status = 401, body = super::ErrorBody),
        (status = 403, body = super::ErrorBody), (status = 422, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn cleanup(
    State(state): State<AppState>,
    caller: Caller,
    QueryArgs(query): QueryArgs<CleanupQuery>,
) -> Result<Json<Deleted>> {
    caller.require(Role::Admin)?;
    if let Some(status) = query.status
        && !matches!(
            status,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled
        )
    {
        return Err(ApiError::invalid(
            "status",
            "only completed, failed or cancelled tasks can be cleaned up",
        ));
    }
    let deleted = state
        .store()
        .delete_finished_tasks(query.finished_before, query.status)
        .await?;
    Ok(Json(Deleted { deleted }))
}
