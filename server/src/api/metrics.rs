//! `GET /metrics`: Prometheus text (OpenMetrics) for a scraper. The engine's
//! counters and histograms (see `engine/metrics.rs`), this node's WebSocket
//! clients, and facts read at scrape time (tasks by status, runs in progress).
//!
//! It needs a token of any role (viewer is enough), sent as a bearer token as
//! Prometheus's `authorization` setting does: module names and counts are not
//! for anonymous eyes. Create one with `stepwise token create --role viewer --name prometheus`.

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, Result};
use crate::store::{Role, TaskStatus};
use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The content type of the OpenMetrics text format, which Prometheus reads.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

/// WebSocket sessions open on this node: one guard per session.
#[derive(Debug, Default)]
pub struct WebSocketClients(Gauge);

impl WebSocketClients {
    /// Count a session until the guard is dropped.
    pub fn connect(&self) -> Connected {
        self.0.inc();
        Connected(self.0.clone())
    }
}

/// One open WebSocket session (see [`WebSocketClients::connect`]).
pub struct Connected(Gauge);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    description = "Prometheus text (OpenMetrics). Any token (viewer is enough), as a bearer token.",
    responses((status = 200, description = "OpenMetrics text exposition", content_type = "application/openmetrics-text"),
        (status = 401, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn metrics(State(state): State<AppState>, caller: Caller) -> Result<impl IntoResponse> {
    caller.require(Role::Viewer)?;
    let mut registry = Registry::with_prefix("stepwise");
    state.engine().metrics().register(&mut registry);

    let tasks = Family::<StatusLabel, Gauge>::default();
    let counts = state.store().count_by_status().await?;
    for status in TaskStatus::ALL {
        let n = counts
            .iter()
            .find(|(s, _)| s == status)
            .map_or(0, |(_, n)| *n);
        tasks
            .get_or_create(&StatusLabel {
                status: status.as_str(),
            })
            .set(n);
    }
    registry.register("tasks", "Tasks by status (all nodes)", tasks);
    registry.register(
        "runs_in_progress",
        "Runs executing on this node",
        gauge(state.engine().running_runs().len() as i64),
    );
    registry.register(
        "websocket_clients",
        "WebSocket sessions open on this node",
        state.websocket_clients().0.clone(),
    );
    let dropped = Counter::<u64>::default();
    dropped.inc_by(state.engine().event_writer().dropped());
    registry.register(
        "log_lines_dropped",
        "Log lines dropped because the store fell behind",
        dropped,
    );
    registry.register(
        "uptime_seconds",
        "Seconds since this server started",
        gauge(state.uptime().as_secs() as i64),
    );

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("encoding the metrics: {e}")))?;
    Ok(([(CONTENT_TYPE, OPENMETRICS)], text))
}

fn gauge(value: i64) -> Gauge {
    let gauge = Gauge::default();
    gauge.set(value);
    gauge
}
