//! `/healthz` for load balancers and `/metrics` for Prometheus.

use super::AppState;
use crate::store::TaskStatus;
use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use std::fmt::Write;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
}

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "the server answers and its store is reachable"),
        (status = 503, description = "the store is not reachable")))]
pub async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    match state.store().count_tokens().await {
        Ok(_) => (
            axum::http::StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ok"})),
        ),
        Err(_) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "store unreachable"})),
        ),
    }
}

/// Prometheus text format. Public like `/healthz` (it shows counts, no data);
/// put it behind the network policy of your scraper if that matters.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP stepwise_tasks Tasks by status.\n# TYPE stepwise_tasks gauge"
    );
    if let Ok(counts) = state.store().count_by_status().await {
        for status in TaskStatus::ALL {
            let n = counts
                .iter()
                .find(|(s, _)| s == status)
                .map(|(_, n)| *n)
                .unwrap_or(0);
            let _ = writeln!(out, "stepwise_tasks{{status=\"{status}\"}} {n}");
        }
    }
    let _ = writeln!(
        out,
        "# HELP stepwise_runs_in_progress Runs executing on this node.\n# TYPE stepwise_runs_in_progress gauge"
    );
    let _ = writeln!(
        out,
        "stepwise_runs_in_progress {}",
        state.engine().running_runs().len()
    );
    let _ = writeln!(
        out,
        "# HELP stepwise_log_lines_dropped_total Log lines dropped because the store fell behind.\n# TYPE stepwise_log_lines_dropped_total counter"
    );
    let _ = writeln!(
        out,
        "stepwise_log_lines_dropped_total {}",
        state.engine().event_writer().dropped()
    );
    let _ = writeln!(
        out,
        "# HELP stepwise_uptime_seconds Seconds since this server started.\n# TYPE stepwise_uptime_seconds gauge"
    );
    let _ = writeln!(
        out,
        "stepwise_uptime_seconds {:.0}",
        state.uptime().as_secs_f64()
    );
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
