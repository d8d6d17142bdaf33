//! The nodes table: each server's own report of itself.

use super::PostgresStore;
use super::rows::{ms, parse, time};
use crate::store::{Node, StoreResult};
use anyhow::Context;
use sqlx::Row;

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
    let rows = sqlx::query(
        "SELECT id, address, version, state, started_at, last_heartbeat_at, running_runs \
         FROM nodes ORDER BY id",
    )
    .fetch_all(&store.pool)
    .await
    .context("listing nodes")?;
    let nodes = rows
        .iter()
        .map(|row| {
            Ok(Node {
                id: row.try_get("id")?,
                address: row.try_get("address")?,
                version: row.try_get("version")?,
                state: parse(row.try_get::<&str, _>("state")?)?,
                started_at: time(row.try_get("started_at")?),
                last_heartbeat_at: time(row.try_get("last_heartbeat_at")?),
                running_runs: row.try_get("running_runs")?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(nodes)
}
