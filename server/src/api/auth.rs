//! Bearer tokens with roles. Tokens are random, shown once, stored as sha256
//! hashes; a short in-memory cache keeps lookups off the database for busy
//! clients (a revoke on this node clears it at once).

use super::AppState;
use super::error::ApiError;
use crate::store::{Role, Store, Token};
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use parking_lot::Mutex;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a looked-up token is trusted without asking the store again.
const CACHE_TTL: Duration = Duration::from_secs(5);

/// Prefix of every token, so one found in a log or a repo is recognisable.
pub const TOKEN_PREFIX: &str = "sw_";

/// A new random token (192 bits).
pub fn generate_token() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Recently seen tokens by hash.
#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<String, (Token, Instant)>>,
}

impl TokenCache {
    pub async fn lookup(&self, store: &dyn Store, token: &str) -> Result<Option<Token>, ApiError> {
        let hash = hash_token(token);
        if let Some((token, at)) = self.entries.lock().get(&hash)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(Some(token.clone()));
        }
        let found = store.find_token(&hash).await?;
        let mut entries = self.entries.lock();
        match &found {
            Some(token) => {
                entries.insert(hash, (token.clone(), Instant::now()));
            }
            None => {
                entries.remove(&hash);
            }
        }
        Ok(found)
    }

    pub fn clear(&self) {
        self.entries.lock().clear();
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token: Token,
}

impl Caller {
    /// 403 unless the caller's role includes `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.token.role >= role {
            Ok(())
        } else {
            Err(ApiError::Forbidden(role.as_str()))
        }
    }

    pub fn name(&self) -> &str {
        &self.token.name
    }
}

/// The token from `Authorization: Bearer …`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or(ApiError::Unauthorized)?;
        authenticate(state, token).await
    }
}

/// Check a token (from a header or a WebSocket's first message).
pub async fn authenticate(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    let token = state
        .tokens()
        .lookup(state.store().as_ref(), token)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    Ok(Caller { token })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Durability, SqliteStore};
    use chrono::Utc;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_panic_while_the_cache_lock_is_held_does_not_break_sign_in() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db.sqlite"), Durability::Normal)
            .await
            .unwrap();
        let token = generate_token();
        store
            .create_token("ops", Role::Operator, &hash_token(&token), Utc::now())
            .await
            .unwrap();
        let cache = Arc::new(TokenCache::default());
        assert!(cache.lookup(&store, &token).await.unwrap().is_some());

        let holder = cache.clone();
        let panicked = std::thread::spawn(move || {
            let _held = holder.entries.lock();
            panic!("a bug while the token cache lock is held");
        })
        .join();
        assert!(panicked.is_err(), "the thread panicked holding the lock");

        // Cached, uncached (after a clear) and unknown tokens are all answered.
        let found = cache.lookup(&store, &token).await.unwrap();
        assert_eq!(found.map(|t| t.name).as_deref(), Some("ops"));
        cache.clear();
        assert!(cache.lookup(&store, &token).await.unwrap().is_some());
        assert!(cache.lookup(&store, "sw_unknown").await.unwrap().is_none());
    }
}
