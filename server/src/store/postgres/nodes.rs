//! The nodes table: each server's own report of itself.

use super::PostgresStore;
use super::rows::{NODE_COLUMNS, ms, node_from_row};
use crate::store::{Node, StoreResult};
use anyhow::Context;

pub(super) async fn beat_node(store: &PostgresStore, node: &Node) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO nodes (id, address, version, state, started_at, last_heartbeat_at, running_runs) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (id) DO UPDATE SET address = excluded.address, version = excluded.version, \
             state = excluded.state, started_at = excluded.started_at, \
             last_heartbeat_at = excluded.last_heartbeat_at, running_runs = excluded.running_runs",
    )
    .bind(&node.id)
    .bind(&node.address)
    .bind(&node.version)
    .bind(node.state.as_str())
    .bind(ms(node.started_at))
    .bind(ms(node.last_heartbeat_at))
    .bind(node.running_runs)
    .execute(&store.pool)
    .await
    .context("recording the node's heartbeat")?;
    Ok(())
}

pub(super) async fn list_nodes(store: &PostgresStore) -> StoreResult<Vec<Node>> {
    let rows = sqlx::query(&format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY id"))
        .fetch_all(&store.pool)
        .await
        .context("listing nodes")?;
    let nodes = rows
        .iter()
        .map(node_from_row)
        .collect::<anyhow::Result<_>>()?;
    Ok(nodes)
}
