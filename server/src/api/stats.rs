//! `GET /stats`: task counts by status.

use super::AppState;
use super::auth::Caller;
use super::error::Result;
use crate::store::{Role, TaskStatus};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::collections::BTreeMap;

pub fn router() -> Router<AppState> {
    Router::new().route("/stats", get(stats))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Stats {
    /// Tasks by status (every status present, zero included).
    pub tasks: BTreeMap<String, i64>,
    pub total: i64,
    /// Runs executing on this node now.
    pub running_here: usize,
}

#[utoipa::path(get, path = "/api/v1/stats", tag = "operations",
    responses((status = 200, body = Stats), (status = 401, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn stats(State(state): State<AppState>, caller: Caller) -> Result<Json<Stats>> {
    caller.require(Role::Viewer)?;
    let counts = state.store().count_by_status().await?;
    let mut tasks: BTreeMap<String, i64> =
        TaskStatus::ALL.iter().map(|s| (s.to_string(), 0)).collect();
    for (status, n) in counts {
        tasks.insert(status.to_string(), n);
    }
    let total = tasks.values().sum();
    Ok(Json(Stats {
        tasks,
        total,
        running_here: state.engine().running_runs().len(),
    }))
}
