//! The OpenAPI 3 document, generated from the handlers' annotations and served
//! at `/api/v1/openapi.json`. A test checks that every documented path is routed.

use super::AppState;
use super::{
    alerts, cache, events, focus, health, hooks, logs, metrics, module_scan, modules, nodes, stats,
    steps, task_actions, task_codes, task_history, tasks, tokens,
};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Stepwise", description = "A task server whose steps are sandboxed WebAssembly components."),
    paths(
        tasks::create_task, tasks::list_tasks, tasks::get_task, tasks::patch_task, tasks::delete_task,
        task_actions::progress, task_actions::run_now, task_actions::cancel, task_actions::retry,
        task_actions::run_step,
        task_codes::get_by_code, task_codes::delete_by_code, task_codes::run_by_code,
        task_codes::run_due,
        steps::add_step, steps::change_step, steps::remove_step, steps::reorder_steps,
        task_history::runs, logs::task_logs, logs::all_logs, task_history::artifacts, task_history::download,
        task_history::cleanup,
        modules::put_module, modules::list_modules, modules::get_module, modules::patch_module,
        modules::delete_module, modules::missing_modules, module_scan::rescan,
        tokens::create_token, tokens::list_tokens, tokens::revoke_token,
        hooks::retry_delivery, hooks::signing_key,
        stats::stats, stats::performance, nodes::nodes, cache::cache_stats, cache::clear_cache, alerts::alerts, events::upgrade, health::healthz, metrics::metrics,
        focus::focus_page,
    ),
    components(schemas(crate::events::Event, events::ClientMessage, focus::RedirectTarget)),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as JSON.
pub fn openapi_json() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serializes")
}

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(|| async { Json(openapi_json()) }))
}
