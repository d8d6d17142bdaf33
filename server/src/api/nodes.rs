//! `GET /nodes`: the Stepwise servers sharing this store, and how each is.

use super::AppState;
use super::auth::Caller;
use super::error::Result;
use crate::store::{Node, NodeState, Role};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use serde::Serialize;

pub fn router() -> Router<AppState> {
    Router::new().route("/nodes", get(nodes))
}

/// A node as it last reported itself, and what that says now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodeView {
    #[serde(flatten)]
    pub node: Node,
    /// Running (or draining) and heard from within one lease: a node
    /// silent for longer is dead or cut off, and its runs are rescued.
    pub alive: bool,
    /// The node that answers this request.
    pub this_node: bool,
}

#[utoipa::path(get, path = "/api/v1/nodes", tag = "operations",
    responses((status = 200, body = Vec<NodeView>, description = "every node that ever ran on this store, by id"),
        (status = 401, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn nodes(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<NodeView>>> {
    caller.require(Role::Viewer)?;
    let config = state.engine().config();
    let lease = chrono::Duration::from_std(config.lease).unwrap_or(chrono::Duration::MAX);
    let now = Utc::now();
    let nodes = state.store().list_nodes().await?;
    Ok(Json(
        nodes
            .into_iter()
            .map(|node| NodeView {
                alive: node.state != NodeState::Stopped && now - node.last_heartbeat_at <= lease,
                this_node: node.id == config.node_id,
                node,
            })
            .collect(),
    ))
}
