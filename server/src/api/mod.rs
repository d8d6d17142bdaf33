//! The HTTP API under `/api/v1`, the WebSocket, health, metrics and the
//! embedded dashboard. Each route module owns its `router()`.

mod alerts;
mod auth;
mod cache;
mod error;
mod events;
mod extract;
mod focus;
mod health;
mod hooks;
mod linger;
mod logs;
mod metrics;
mod module_metadata;
mod module_scan;
mod modules;
mod nodes;
mod openapi;
mod schedules;
mod stats;
mod steps;
mod task_actions;
mod task_codes;
mod task_history;
mod tasks;
mod timestamp;
mod tokens;
mod validate;
mod waiting;
mod web;

pub use auth::{TOKEN_PREFIX, generate_token, hash_token};
pub use error::{ApiError, ErrorBody};
pub use focus::parse_embed_origin;
pub use openapi::openapi_json;

use crate::engine::Engine;
use crate::events::EventBus;
use crate::runtime::Runtime;
use crate::store::Store;
use auth::TokenCache;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;

/// Limits the API enforces.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest module upload (default 32 MiB).
    pub max_module_bytes: usize,
    /// Largest JSON body (default 4 MiB).
    pub max_json_bytes: usize,
    /// Module compilations at the same time (default 1: compiling is heavy).
    pub concurrent_compiles: usize,
    /// Origins (`https://shop.example`) that may frame the focus page and
    /// that it may redirect to; see `focus.rs`.
    pub embed_origins: Vec<String>,
    /// Whether the built-in examples are registered (at start and rescan).
    pub register_examples: bool,
    /// `--modules-dir`, read at start and by `POST /modules/rescan`.
    pub modules_dir: Option<std::path::PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_module_bytes: 32 << 20,
            max_json_bytes: 4 << 20,
            concurrent_compiles: 1,
            embed_origins: Vec::new(),
            register_examples: false,
            modules_dir: None,
        }
    }
}

/// How long a module's registration is trusted without asking the store
/// (task validation looks every step's module up; a burst of creates should
/// not cost a query each). Uploads and deletes on this node clear it at once.
const MODULE_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(2);

struct Shared {
    engine: Engine,
    known_modules: parking_lot::Mutex<std::collections::HashMap<String, KnownModule>>,
    creator: Arc<crate::store::CreateBatcher>,
    config: ApiConfig,
    tokens: TokenCache,
    compiles: Semaphore,
    started: Instant,
    websocket_clients: metrics::WebSocketClients,
}

/// A registered module as task validation needs it, cached briefly.
#[derive(Clone)]
struct KnownModule {
    at: Instant,
    /// Its settings schema, compiled; `None` when it declares none.
    schema: Option<Arc<module_metadata::SettingsSchema>>,
}

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    shared: Arc<Shared>,
}

impl AppState {
    pub fn new(engine: Engine, config: ApiConfig) -> Self {
        let compiles = Semaphore::new(config.concurrent_compiles.max(1));
        AppState {
            shared: Arc::new(Shared {
                creator: crate::store::CreateBatcher::start(engine.store().clone()),
                known_modules: Default::default(),
                engine,
                config,
                tokens: TokenCache::default(),
                compiles,
                started: Instant::now(),
                websocket_clients: Default::default(),
            }),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        self.shared.engine.store()
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        self.shared.engine.runtime()
    }

    pub fn bus(&self) -> &Arc<EventBus> {
        self.shared.engine.bus()
    }

    pub fn config(&self) -> &ApiConfig {
        &self.shared.config
    }

    pub(crate) fn tokens(&self) -> &TokenCache {
        &self.shared.tokens
    }

    /// Task creation, group-committed.
    pub fn creator(&self) -> &crate::store::CreateBatcher {
        &self.shared.creator
    }

    /// Whether a module is registered at `path` (cached briefly).
    pub async fn module_registered(&self, path: &str) -> Result<bool, ApiError> {
        Ok(self.known_module(path).await?.is_some())
    }

    /// The module registered at `path` with its compiled settings schema, or
    /// `None` (cached briefly, like [`AppState::module_registered`]).
    async fn known_module(&self, path: &str) -> Result<Option<KnownModule>, ApiError> {
        if let Some(known) = self.shared.known_modules.lock().get(path)
            && known.at.elapsed() < MODULE_CACHE_TTL
        {
            return Ok(Some(known.clone()));
        }
        let Some(module) = self.store().get_module(path).await? else {
            return Ok(None);
        };
        let schema = module
            .metadata
            .and_then(|m| m.settings_schema)
            .and_then(
                |schema| match module_metadata::SettingsSchema::compile(&schema.value()) {
                    Ok(schema) => Some(Arc::new(schema)),
                    // Checked at upload; a schema this build cannot compile is
                    // not the task author's fault, so their settings pass.
                    Err(e) => {
                        tracing::warn!("module `{path}`: its settings schema is not used: {e}");
                        None
                    }
                },
            );
        let known = KnownModule {
            at: Instant::now(),
            schema,
        };
        self.shared
            .known_modules
            .lock()
            .insert(path.to_string(), known.clone());
        Ok(Some(known))
    }

    /// Forget cached registrations (after a module upload or delete).
    pub(crate) fn forget_modules(&self) {
        self.shared.known_modules.lock().clear();
    }

    pub(crate) fn compiles(&self) -> &Semaphore {
        &self.shared.compiles
    }

    /// The WebSocket sessions open on this node (`/metrics`).
    pub(crate) fn websocket_clients(&self) -> &metrics::WebSocketClients {
        &self.shared.websocket_clients
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.shared.started.elapsed()
    }
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let max_json = state.config().max_json_bytes;
    let api = Router::new()
        .merge(tasks::router())
        .merge(logs::router())
        .merge(modules::router(state.config().max_module_bytes))
        .merge(stats::router())
        .merge(nodes::router())
        .merge(cache::router())
        .merge(alerts::router())
        .merge(events::router())
        .merge(tokens::router())
        .merge(hooks::router())
        .merge(openapi::router())
        .layer(DefaultBodyLimit::max(max_json));
    Router::new()
        .nest("/api/v1", api)
        .merge(health::router())
        .merge(metrics::router())
        .merge(focus::router())
        // Last: the dashboard's static files, and a JSON 404 for anything else.
        .merge(web::router())
        .layer(middleware::from_fn(log_errors))
        .layer(middleware::from_fn(linger::drain_unread_body))
        .with_state(state)
}

/// Log server errors with their cause (the response shows none), and client
/// errors at debug level.
async fn log_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let status = response.status();
    if status.is_server_error() {
        let cause = response
            .extensions()
            .get::<error::InternalCause>()
            .map(|c| c.0.to_string());
        tracing::error!(%method, %path, %status, cause = cause.as_deref().unwrap_or("-"), "request failed");
    } else if status.is_client_error() {
        tracing::debug!(%method, %path, %status, "request refused");
    }
    response
}

pub use module_scan::{ScanReport, scan_modules};
