//! The node's own row in the store's nodes table (`GET /api/v1/nodes`): who
//! it is, where it listens, and how it is, written at start, at every
//! heartbeat and when it stops.

use super::Inner;
use crate::store::{Node, NodeState};
use chrono::Utc;

/// Write this node's row as it is now, in `state`. A failure is logged, not
/// returned: the nodes view is a report, and the node works without it.
pub(super) async fn report(inner: &Inner, state: NodeState) {
    let node = Node {
        id: inner.config.node_id.clone(),
        address: inner.config.address.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        state,
        started_at: inner.started_at,
        last_heartbeat_at: Utc::now(),
        running_runs: match state {
            // What still ran was handed back.
            NodeState::Stopped => 0,
            _ => inner.running.run_ids().len() as i64,
        },
    };
    if let Err(error) = inner.store.beat_node(&node).await {
        tracing::warn!("recording this node's heartbeat failed: {error:#}");
    }
}
