//! Messages between the nodes sharing the database: `NOTIFY` to send, one
//! `LISTEN` connection per node to receive, forwarded into a broadcast
//! channel that [`crate::store::Store::node_messages`] subscribes to.
//!
//! The channel is `stepwise` for the tables in the `public` schema, and
//! `stepwise_<schema>` for tables elsewhere: `LISTEN` channels belong to the
//! database, not to a schema, and two Stepwise installations in two schemas
//! of one database (or two tests) must not hear each other.

use super::PostgresStore;
use crate::store::StoreResult;
use anyhow::Context;
use sqlx::postgres::{PgListener, PgPool};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// Messages kept for a slow subscriber before it starts losing the oldest.
pub(super) const CAPACITY: usize = 4096;

/// PostgreSQL's longest identifier (longer channel names are truncated).
const MAX_IDENTIFIER: usize = 63;

/// The channel of the schema the store's tables are in (see the module docs).
pub(super) async fn channel(pool: &PgPool) -> anyhow::Result<String> {
    let schema: Option<String> = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(pool)
        .await
        .context("reading the current schema")?;
    Ok(match schema.as_deref() {
        None | Some("public") => "stepwise".to_string(),
        Some(schema) => {
            let mut channel = format!("stepwise_{schema}");
            while channel.len() > MAX_IDENTIFIER {
                channel.pop();
            }
            channel
        }
    })
}

/// Start listening on `channel` (before returning, so that a message sent
/// once the store is open is heard), and forward what arrives into `sender`
/// from a task of its own, until it is aborted. After a lost connection
/// `PgListener` reconnects and listens again by itself; messages sent
/// meanwhile are lost (the trait says so).
pub(super) async fn listen(
    pool: &PgPool,
    channel: &str,
    sender: broadcast::Sender<Arc<str>>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    let channel = channel.to_string();
    Ok(tokio::spawn(async move {
        loop {
            match listener.recv().await {
                Ok(notification) => {
                    // No subscriber yet is no error: the message is for nobody.
                    let _ = sender.send(Arc::from(notification.payload()));
                }
                Err(error) => {
                    tracing::warn!(
                        "listening for other nodes on channel `{channel}` failed: {error}; \
                         reconnecting (messages sent meanwhile are lost)"
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }))
}

/// Every payload in one statement (one round trip, however many), in order:
/// PostgreSQL delivers a transaction's notifications in the order sent. It
/// folds two equal payloads of one transaction into one, which a node
/// message never repeats (each carries other events).
pub(super) async fn send(store: &PostgresStore, payloads: &[String]) -> StoreResult<()> {
    if payloads.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "SELECT pg_notify($1, payload) FROM unnest($2::text[]) WITH ORDINALITY AS u(payload, n) \
         ORDER BY n",
    )
    .bind(&store.channel)
    .bind(payloads)
    .execute(&store.pool)
    .await
    .context("notifying the other nodes")?;
    Ok(())
}
