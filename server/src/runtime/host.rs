//! The capabilities a step may use, and the per-step state wasmtime carries.
//!
//! The runtime knows nothing of tasks or databases: whoever runs a step hands
//! in a [`StepHost`] that decides where progress, logs, checkpoints and
//! artifacts go.

use super::limits::{CapExceeded, DataCaps, StepLimiter};
use super::panic::PanicWatch;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use wasmtime::StoreContextMut;
use wasmtime::component::{HasSelf, Linker, ResourceTable, WasmList};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

wasmtime::component::bindgen!({
    path: "../guest-sdk/wit",
    world: "step",
    imports: {
        "stepwise:step/host.checkpoint-save": async,
        "stepwise:step/host.checkpoint-load": async,
        "stepwise:step/host.artifact-write": async,
    },
    exports: { default: async },
});

use self::stepwise::step::host as wit;

/// Severity of a step log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

impl From<wit::Level> for LogLevel {
    fn from(level: wit::Level) -> Self {
        match level {
            wit::Level::Trace => LogLevel::Trace,
            wit::Level::Debug => LogLevel::Debug,
            wit::Level::Info => LogLevel::Info,
            wit::Level::Warn => LogLevel::Warn,
            wit::Level::Error => LogLevel::Error,
        }
    }
}

/// Why the host did not take an artifact write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRefusal {
    /// Over a [`DataCaps`] cap: the step ends with the cap's typed outcome.
    Cap(CapExceeded),
    /// Anything else: the call returns this error to the step, which may handle it.
    Error(String),
}

impl From<String> for HostRefusal {
    fn from(message: String) -> Self {
        HostRefusal::Error(message)
    }
}

/// Where a step's capabilities lead. Implemented by the engine (to the store and
/// the event bus) and by the local runner (to the terminal).
///
/// Sync methods must return at once; async ones are bounded by the step's
/// deadline, since the runtime drops them when it passes. A checkpoint or an
/// artifact write larger than its [`DataCaps`] cap never reaches the host;
/// appends that together pass the artifact cap are the host's to refuse.
pub trait StepHost: Send + Sync + 'static {
    fn progress(&self, percent: f32, message: &str);
    fn log(&self, level: LogLevel, message: &str);
    fn checkpoint_save(&self, data: Vec<u8>) -> BoxFuture<'static, Result<(), String>>;
    fn checkpoint_load(&self) -> BoxFuture<'static, Option<Vec<u8>>>;
    fn secret(&self, name: &str) -> Option<String>;
    fn artifact_write(
        &self,
        name: String,
        data: Vec<u8>,
        append: bool,
    ) -> BoxFuture<'static, Result<(), HostRefusal>>;
}

/// A host that accepts everything and keeps nothing (no secrets, no saved
/// checkpoint): for measuring the sandbox itself (`stepwise calibrate`, the
/// runtime benchmark).
pub struct NullHost;

impl StepHost for NullHost {
    fn progress(&self, _percent: f32, _message: &str) {}

    fn log(&self, _level: LogLevel, _message: &str) {}

    fn checkpoint_save(&self, _data: Vec<u8>) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    fn checkpoint_load(&self) -> BoxFuture<'static, Option<Vec<u8>>> {
        Box::pin(async { None })
    }

    fn secret(&self, _name: &str) -> Option<String> {
        None
    }

    fn artifact_write(
        &self,
        _name: String,
        _data: Vec<u8>,
        _append: bool,
    ) -> BoxFuture<'static, Result<(), HostRefusal>> {
        Box::pin(async { Ok(()) })
    }
}

/// Ids and details a step sees through `context()`.
#[derive(Debug, Clone, Default)]
pub struct StepContext {
    pub task_id: i64,
    pub run_id: i64,
    pub step_id: i64,
    pub attempt: u32,
    /// The task's details as a JSON object.
    pub details: serde_json::Value,
}

/// Everything one step's `Store` holds. Dropped with the store after one call.
pub struct StepState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limiter: StepLimiter,
    caps: DataCaps,
    pub(super) panics: PanicWatch,
    host: Arc<dyn StepHost>,
    context: StepContext,
    pub(super) deadline: Instant,
    pub(super) cancel: CancellationToken,
    /// Set by `mark-permanent`: the error the step returns is not worth a retry.
    pub(super) permanent_error: bool,
}

impl StepState {
    #[allow(clippy::too_many_arguments)] // each part of the state is distinct
    pub(super) fn new(
        wasi: WasiCtx,
        limiter: StepLimiter,
        caps: DataCaps,
        panics: PanicWatch,
        host: Arc<dyn StepHost>,
        context: StepContext,
        deadline: Instant,
        cancel: CancellationToken,
    ) -> Self {
        StepState {
            wasi,
            table: ResourceTable::new(),
            limiter,
            caps,
            panics,
            host,
            context,
            deadline,
            cancel,
            permanent_error: false,
        }
    }
}

impl wasmtime_wasi_io::IoView for StepState {
    fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl WasiView for StepState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Most a step may write to its log in one call, so a hostile step cannot
/// push megabytes through one `log`.
const MAX_MESSAGE: usize = 8 * 1024;

fn bounded(message: &str) -> &str {
    if message.len() <= MAX_MESSAGE {
        return message;
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

impl wit::Host for StepState {
    fn progress(&mut self, percent: f32, message: String) {
        let percent = if percent.is_finite() {
            percent.clamp(0.0, 100.0)
        } else {
            0.0
        };
        self.host.progress(percent, bounded(&message));
    }

    fn log(&mut self, level: wit::Level, message: String) {
        let message = bounded(&message);
        self.panics.log_line(level.into(), message);
        self.host.log(level.into(), message);
    }

    async fn checkpoint_save(&mut self, _data: Vec<u8>) -> Result<(), String> {
        // Replaced in `add_to_linker` by a version that checks the size before copying.
        Err("checkpoint-save is not linked".into())
    }

    async fn checkpoint_load(&mut self) -> Option<Vec<u8>> {
        self.host.checkpoint_load().await
    }

    fn secret(&mut self, name: String) -> Option<String> {
        self.host.secret(&name)
    }

    async fn artifact_write(
        &mut self,
        _name: String,
        _data: Vec<u8>,
        _append: bool,
    ) -> Result<(), String> {
        // Replaced in `add_to_linker` by a version that checks the size before copying.
        Err("artifact-write is not linked".into())
    }

    fn context(&mut self) -> wit::StepContext {
        wit::StepContext {
            task_id: self.context.task_id,
            run_id: self.context.run_id,
            step_id: self.context.step_id,
            attempt: self.context.attempt,
            details: self.context.details.to_string(),
        }
    }

    fn mark_permanent(&mut self) {
        self.permanent_error = true;
    }

    fn remaining(&mut self) -> wit::Budget {
        // Replaced in `add_to_linker` by a version that can read the fuel.
        wit::Budget {
            fuel: 0,
            millis: millis_left(self.deadline),
        }
    }
}

fn millis_left(deadline: Instant) -> u64 {
    deadline
        .saturating_duration_since(Instant::now())
        .as_millis() as u64
}

/// The interface name of the host imports, as components import it.
pub const HOST_INTERFACE: &str = "stepwise:step/host@0.1.0";

/// Link the step interface and all of WASI 0.2 (see [`super::wasi`]: each
/// step's context grants nothing of the filesystem or network).
pub fn add_to_linker(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    Step::add_to_linker::<StepState, HasSelf<StepState>>(linker, |state| state)?;
    // `remaining` needs the store (for fuel), and the checkpoint and artifact
    // data must be measured in guest memory before it is copied: bindgen's
    // `Host` sees neither.
    linker.allow_shadowing(true);
    let mut host = linker.instance(HOST_INTERFACE)?;
    host.func_wrap_async(
        "checkpoint-save",
        |store: StoreContextMut<'_, StepState>, (data,): (WasmList<u8>,)| {
            Box::new(async move {
                let limit = store.data().caps.checkpoint_bytes;
                let size = data.len() as u64;
                if size > limit {
                    return Err(wasmtime::Error::new(CapExceeded::Checkpoint {
                        size,
                        limit,
                    }));
                }
                let bytes = data.as_le_slice(&store).to_vec();
                let host = store.data().host.clone();
                Ok((host.checkpoint_save(bytes).await,))
            })
        },
    )?;
    host.func_wrap_async(
        "artifact-write",
        |store: StoreContextMut<'_, StepState>,
         (name, data, append): (String, WasmList<u8>, bool)| {
            Box::new(async move {
                let limit = store.data().caps.artifact_bytes;
                let size = data.len() as u64;
                if size > limit {
                    let cap = CapExceeded::Artifact { name, size, limit };
                    return Err(wasmtime::Error::new(cap));
                }
                let bytes = data.as_le_slice(&store).to_vec();
                let host = store.data().host.clone();
                match host.artifact_write(name, bytes, append).await {
                    Ok(()) => Ok((Ok(()),)),
                    Err(HostRefusal::Error(message)) => Ok((Err(message),)),
                    Err(HostRefusal::Cap(cap)) => Err(wasmtime::Error::new(cap)),
                }
            })
        },
    )?;
    host.func_wrap(
        "remaining",
        |store: StoreContextMut<'_, StepState>, (): ()| {
            let fuel = store.get_fuel().unwrap_or(0);
            Ok((wit::Budget {
                fuel,
                millis: millis_left(store.data().deadline),
            },))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
