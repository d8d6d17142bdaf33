//! `/healthz` for load balancers (`/metrics` is in `metrics.rs`).

use super::AppState;
use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz))
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
