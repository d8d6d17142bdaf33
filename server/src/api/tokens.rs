//! Token management for admins: create (the token is shown once), list, revoke.

use super::AppState;
use super::auth::{Caller, generate_token, hash_token};
use super::error::{ApiError, Result};
use super::extract::JsonBody;
use super::extract::PathArgs;
use super::validate;
use crate::store::{Role, Token};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/tokens", get(list_tokens).post(create_token))
        .route("/tokens/{id}", delete(revoke_token))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Who or what uses it, e.g. `ci` or `shop-cron`.
    pub name: String,
    pub role: Role,
}

/// A new token: `token` is shown this once and never again.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NewToken {
    #[serde(flatten)]
    pub info: Token,
    pub token: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenList {
    pub tokens: Vec<Token>,
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = TokenRequest,
    responses((status = 201, body = NewToken), (status = 400, body = super::ErrorBody),
        (status = 401, body = super::ErrorBody), (status = 403, body = super::ErrorBody),
        (status = 415, body = super::ErrorBody), (status = 422, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<TokenRequest>,
) -> Result<(StatusCode, Json<NewToken>)> {
    caller.require(Role::Admin)?;
    validate::name("name", &request.name)?;
    let token = generate_token();
    let info = state
        .store()
        .create_token(&request.name, request.role, &hash_token(&token), Utc::now())
        .await?;
    Ok((StatusCode::CREATED, Json(NewToken { info, token })))
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    responses((status = 200, body = TokenList), (status = 401, body = super::ErrorBody),
        (status = 403, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_tokens(State(state): State<AppState>, caller: Caller) -> Result<Json<TokenList>> {
    caller.require(Role::Admin)?;
    Ok(Json(TokenList {
        tokens: state.store().list_tokens().await?,
    }))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", params(("id" = i64, Path)),
    responses((status = 204, description = "revoked"), (status = 401, body = super::ErrorBody),
        (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    PathArgs(id): PathArgs<i64>,
) -> Result<StatusCode> {
    caller.require(Role::Admin)?;
    if caller.token.id == id {
        return Err(ApiError::Conflict(
            "a token cannot revoke itself; use another admin token".into(),
        ));
    }
    state.store().revoke_token(id).await?;
    state.tokens().clear();
    Ok(StatusCode::NO_CONTENT)
}
