//! Completion hooks beyond a task's `hook_url`: retrying a delivery by
//! hand, and the key receivers check signatures with. The deliveries
//! themselves are shown with their runs (`GET /tasks/{id}/runs`).

use super::AppState;
use super::auth::Caller;
use super::error::Result;
use super::extract::PathArgs;
use super::tasks::load_task;
use crate::store::{HookDelivery, Role};
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Serialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/tasks/{id}/hook-deliveries/{delivery_id}/retry",
            post(retry_delivery),
        )
        .route("/hooks/signing-key", get(signing_key))
}

#[utoipa::path(post, path = "/api/v1/tasks/{id}/hook-deliveries/{delivery_id}/retry", tag = "history",
    params(("id" = i64, Path), ("delivery_id" = i64, Path)),
    responses((status = 200, description = "due again now, with a full set of tries", body = HookDelivery),
        (status = 401, body = super::ErrorBody), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn retry_delivery(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs((id, delivery_id)): PathArgs<(i64, i64)>,
) -> Result<Json<HookDelivery>> {
    caller.require(Role::Operator)?;
    load_task(&state, id).await?;
    let delivery = state
        .store()
        .retry_hook_delivery(id, delivery_id, Utc::now())
        .await?;
    Ok(Json(delivery))
}

/// How receivers check a completion hook's POST.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SigningKey {
    /// The HMAC-SHA256 key, as 64 hex digits: a receiver computes the HMAC
    /// of the request body's exact bytes with the key's 32 bytes (decode the
    /// hex) and compares `sha256=<hex>` with the signature header.
    pub key: String,
    /// `HMAC-SHA256`.
    pub algorithm: String,
    /// `X-Stepwise-Signature`.
    pub header: String,
}

#[utoipa::path(get, path = "/api/v1/hooks/signing-key", tag = "tokens",
    responses((status = 200, body = SigningKey), (status = 401, body = super::ErrorBody),
        (status = 403, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn signing_key(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<SigningKey>> {
    caller.require(Role::Admin)?;
    Ok(Json(SigningKey {
        key: hex::encode(state.engine().secrets().hook_key()),
        algorithm: "HMAC-SHA256".to_string(),
        header: crate::hooks::SIGNATURE_HEADER.to_string(),
    }))
}
