//! The compiled-code cache of the node that answers (sTask's cache stats and
//! clear), for admins: `GET /cache` and `DELETE /cache`. Each node of a
//! cluster keeps its own cache; these act on the one answering.

use super::AppState;
use super::auth::Caller;
use super::error::Result;
use crate::store::Role;
use anyhow::Context;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

pub fn router() -> Router<AppState> {
    Router::new().route("/cache", get(cache_stats).delete(clear_cache))
}

/// Body of `GET /cache`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CacheStats {
    /// The node whose cache this is.
    pub node_id: String,
    /// Compiled modules on disk.
    pub entries: u64,
    /// Their size in bytes.
    pub bytes: u64,
    /// Compiled modules held in memory, ready to run.
    pub loaded: u64,
    /// Modules found compiled when a step or an upload needed them, since the node started.
    pub hits: u64,
    /// Modules that had to be compiled, since the node started.
    pub misses: u64,
}

/// Body of `DELETE /cache`: what the clear removed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CacheCleared {
    pub node_id: String,
    /// Compiled modules deleted from disk.
    pub entries: u64,
    /// Their size in bytes.
    pub bytes: u64,
    /// Compiled modules dropped from memory.
    pub loaded: u64,
}

#[utoipa::path(get, path = "/api/v1/cache", tag = "operations",
    responses((status = 200, body = CacheStats), (status = 401, body = super::ErrorBody),
        (status = 403, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn cache_stats(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<CacheStats>> {
    caller.require(Role::Admin)?;
    let stats = state
        .runtime()
        .cache_stats()
        .context("reading the compiled-code cache directory")?;
    Ok(Json(CacheStats {
        node_id: state.engine().config().node_id.clone(),
        entries: stats.entries,
        bytes: stats.bytes,
        loaded: stats.loaded,
        hits: stats.hits,
        misses: stats.misses,
    }))
}

#[utoipa::path(delete, path = "/api/v1/cache", tag = "operations",
    responses((status = 200, body = CacheCleared), (status = 401, body = super::ErrorBody),
        (status = 403, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn clear_cache(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<CacheCleared>> {
    caller.require(Role::Admin)?;
    let cleared = state
        .runtime()
        .clear_cache()
        .await
        .context("clearing the compiled-code cache directory")?;
    tracing::info!(
        entries = cleared.entries,
        bytes = cleared.bytes,
        by = caller.name(),
        "compiled-code cache cleared"
    );
    Ok(Json(CacheCleared {
        node_id: state.engine().config().node_id.clone(),
        entries: cleared.entries,
        bytes: cleared.bytes,
        loaded: cleared.loaded,
    }))
}
