//! Registering the modules the server is started with — the examples built
//! into the binary and every `*.wasm` under `--modules-dir` — at start and
//! again on `POST /api/v1/modules/rescan`, without a restart.
//!
//! A file whose bytes and metadata match what is registered is left alone
//! (no compile), so a rescan costs a read and a hash per file. Examples are
//! registered only when missing: a user's own upload under an example's path
//! is never replaced. Modules whose file disappeared stay registered (tasks
//! may use them; `DELETE /api/v1/modules/{path}` removes one).

use super::error::{ApiError, Result};
use super::{AppState, auth::Caller, module_metadata, modules, validate};
use crate::store::{ModuleMetadata, Role};
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What a scan did, by module path.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ScanReport {
    /// Registered for the first time.
    pub added: Vec<String>,
    /// Registered before, now with other bytes or metadata (a new version).
    pub updated: Vec<String>,
    /// Registered with these bytes and metadata already.
    pub unchanged: Vec<String>,
    /// Files that could not be registered, and why.
    pub failed: Vec<ScanFailure>,
}

/// A file a scan could not register.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScanFailure {
    /// The file under `--modules-dir`.
    pub file: String,
    /// The module path it would have had.
    pub module: String,
    pub error: String,
}

/// The file beside `dir/a/b.wasm` that gives its metadata: `dir/a/b.metadata.json`
/// (for modules whose toolchain cannot write a `stepwise:metadata` section).
pub fn sidecar(wasm: &Path) -> PathBuf {
    wasm.with_extension("metadata.json")
}

/// Register the examples (when `examples`) and every module under `dir`.
/// Only an unreadable `dir` is an error; each file's failure is reported.
pub async fn scan_modules(
    state: &AppState,
    examples: bool,
    dir: Option<&Path>,
) -> anyhow::Result<ScanReport> {
    let mut report = ScanReport::default();
    if examples {
        for (path, bytes) in crate::examples::EXAMPLE_MODULES {
            if state.store().get_module(path).await?.is_some() {
                report.unchanged.push(path.to_string());
                continue;
            }
            let metadata = module_metadata::read(bytes, None)
                .map_err(|e| anyhow::anyhow!("example module `{path}`: {e}"))?;
            modules::register(state, path, bytes, metadata)
                .await
                .map_err(|e| anyhow::anyhow!("registering example module `{path}`: {e}"))?;
            report.added.push(path.to_string());
        }
    }
    if let Some(dir) = dir {
        for file in wasm_files(dir)? {
            let relative = file.strip_prefix(dir).unwrap_or(&file).with_extension("");
            let module = relative.to_string_lossy().replace('\\', "/");
            match register_file(state, &module, &file).await {
                Ok(outcome) => {
                    if !matches!(outcome, Outcome::Unchanged) {
                        tracing::info!("registered {module} from {}", file.display());
                    }
                    match outcome {
                        Outcome::Added => report.added.push(module),
                        Outcome::Updated => report.updated.push(module),
                        Outcome::Unchanged => report.unchanged.push(module),
                    }
                }
                Err(e) => {
                    tracing::warn!("skipped {}: {e}", file.display());
                    report.failed.push(ScanFailure {
                        file: file.display().to_string(),
                        module,
                        error: e.to_string(),
                    });
                }
            }
        }
    }
    Ok(report)
}

enum Outcome {
    Added,
    Updated,
    Unchanged,
}

async fn register_file(state: &AppState, module: &str, file: &Path) -> Result<Outcome> {
    validate::module_path("path", module)?;
    let read = |path: &Path| {
        std::fs::read(path)
            .map_err(|e| ApiError::BadRequest(format!("reading {}: {e}", path.display())))
    };
    let bytes = read(file)?;
    let beside = sidecar(file);
    let given = if beside.is_file() {
        Some(read(&beside)?)
    } else {
        None
    };
    let metadata: Option<ModuleMetadata> = module_metadata::read(&bytes, given.as_deref())?;
    let hash = crate::runtime::module_hash(&bytes);
    let existing = state.store().get_module(module).await?;
    if let Some(existing) = &existing
        && existing.hash == hash
        && existing.metadata == metadata
    {
        return Ok(Outcome::Unchanged);
    }
    let (_, created) = modules::register(state, module, &bytes, metadata).await?;
    Ok(if created {
        Outcome::Added
    } else {
        Outcome::Updated
    })
}

/// Every `*.wasm` under `dir`, sorted (a report in a stable order).
fn wasm_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    use anyhow::Context;
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let entries = std::fs::read_dir(&folder)
            .with_context(|| format!("reading --modules-dir {}", folder.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "wasm") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

#[utoipa::path(post, path = "/api/v1/modules/rescan", tag = "modules",
    responses((status = 200, description = "what the scan added, updated, left alone and could not register", body = ScanReport),
        (status = 401, body = super::ErrorBody), (status = 403, body = super::ErrorBody),
        (status = 409, description = "--modules-dir cannot be read", body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn rescan(State(state): State<AppState>, caller: Caller) -> Result<Json<ScanReport>> {
    caller.require(Role::Admin)?;
    let config = state.config();
    let report = scan_modules(
        &state,
        config.register_examples,
        config.modules_dir.as_deref(),
    )
    .await
    .map_err(|e| {
        ApiError::Conflict(format!(
            "{e:#}; check that --modules-dir exists and is readable"
        ))
    })?;
    Ok(Json(report))
}
