//! The sandbox: the only part of Stepwise that touches wasmtime.
//!
//! It owns the `Engine`, the compiled-code cache (see [`cache`]), the `InstancePre`s, the
//! memory limiter and the deadline. It knows nothing of tasks or databases:
//! callers hand in settings, limits and a [`StepHost`], and get a typed
//! [`StepReport`] back.

mod cache;
mod compile;
mod engine;
mod host;
mod language;
mod limits;
mod metadata;
mod outcome;
mod output;
mod panic;
mod validate;
mod wasi;

pub use cache::{CacheCleared, CacheStats};
pub use compile::{Compiler, child_main as compile_child_main};
pub use engine::{EPOCH_TICK, MAX_WASM_STACK, PoolSizing};
pub use host::{HostRefusal, LogLevel, NullHost, StepContext, StepHost};
pub use language::language_of;
pub use limits::{CapExceeded, DataCaps, MemoryCapExceeded, StepLimits};
pub use metadata::{METADATA_SECTION, metadata_section};
pub use outcome::{StepOutcome, StepReport};
pub use validate::ModuleError;

use cache::CacheCounters;
use host::{StepPre, StepState};
use limits::StepLimiter;
use output::CapturedOutput;
use panic::PanicWatch;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store, Trap, UpdateDeadline, WasmBacktrace};

/// Fuel units per second of `max_execution_time` where nothing was measured
/// (`stepwise step run`, tests): about what typical step code (branchy, with
/// host calls, like `demo/count`) burns in a second on a 2-core machine of the
/// reference kind. The server measures its own machine instead and keeps the
/// figure in its data directory; straight-line code burns fuel faster than
/// this, so it gets less time than its budget says (BENCHMARKS.md).
pub const DEFAULT_FUEL_PER_SECOND: u64 = 13_000_000_000;

/// Most stdout + stderr a step may write to its log.
pub const DEFAULT_OUTPUT_CAP: usize = 1 << 20;

/// Largest output JSON a step may return; bigger results belong in an artifact.
pub const MAX_OUTPUT_BYTES: usize = 1 << 20;

/// How the sandbox is set up on this node.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled code is cached, keyed by module sha256 and engine compatibility.
    pub cache_dir: PathBuf,
    pub fuel_per_second: u64,
    pub compiler: Compiler,
    pub pool: PoolSizing,
    pub output_cap: usize,
    /// Caps on checkpoints and artifacts, enforced before the data is copied.
    pub caps: DataCaps,
    /// Fuel metering (on in production: it is how `max_execution_time` is
    /// enforced independently of load). Off only to measure its cost.
    pub consume_fuel: bool,
}

impl RuntimeConfig {
    /// Defaults with an in-process compiler, for tests and local runs.
    pub fn local(cache_dir: PathBuf) -> Self {
        RuntimeConfig {
            cache_dir,
            fuel_per_second: DEFAULT_FUEL_PER_SECOND,
            compiler: Compiler::InProcess,
            pool: PoolSizing {
                max_instances: 64,
                max_memory_bytes: 4 << 30,
            },
            output_cap: DEFAULT_OUTPUT_CAP,
            caps: DataCaps::DEFAULT,
            consume_fuel: true,
        }
    }
}

/// A compiled, validated module ready to instantiate.
pub struct LoadedModule {
    hash: String,
    pre: StepPre<StepState>,
}

impl LoadedModule {
    /// The sha256 of the component bytes, hex.
    pub fn hash(&self) -> &str {
        &self.hash
    }
}

/// What one step execution gets.
#[derive(Debug, Clone)]
pub struct StepRequest {
    /// The step's settings, JSON text.
    pub settings: String,
    pub limits: StepLimits,
    pub context: StepContext,
}

/// The sandbox of one node.
pub struct Runtime {
    engine: Engine,
    linker: Linker<StepState>,
    config: RuntimeConfig,
    compat: String,
    loaded: Mutex<HashMap<String, Arc<LoadedModule>>>,
    /// Told how long each compilation took (the engine's metrics listen).
    compile_observers: Mutex<Vec<CompileObserver>>,
    counters: CacheCounters,
    /// Held shared while a module is looked up, compiled and loaded, and
    /// exclusively by a clear: a clear never deletes a file between its
    /// compile and its load, and a lookup during a clear waits, then compiles.
    clearing: tokio::sync::RwLock<()>,
}

/// Called with the duration of each module compilation.
type CompileObserver = Box<dyn Fn(Duration) + Send + Sync>;

/// sha256 of module bytes, lowercase hex: the module's identity everywhere.
pub fn module_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Self> {
        let engine = engine::runtime_engine(config.pool, config.consume_fuel)
            .map_err(anyhow::Error::from)?;
        engine::start_epoch_ticker(&engine);
        let mut linker = Linker::new(&engine);
        host::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;
        std::fs::create_dir_all(&config.cache_dir)?;
        let compat = engine::compatibility_key(&engine);
        Ok(Runtime {
            engine,
            linker,
            config,
            compat,
            loaded: Mutex::new(HashMap::new()),
            compile_observers: Mutex::new(Vec::new()),
            counters: CacheCounters::default(),
            clearing: tokio::sync::RwLock::new(()),
        })
    }

    pub fn fuel_per_second(&self) -> u64 {
        self.config.fuel_per_second
    }

    /// The checkpoint and artifact caps of this node.
    pub fn caps(&self) -> DataCaps {
        self.config.caps
    }

    /// Largest memory cap a step may ask for on this node.
    pub fn max_memory_bytes(&self) -> u64 {
        self.config.pool.max_memory_bytes
    }

    fn cache_path(&self, hash: &str) -> PathBuf {
        self.config.cache_dir.join(format!(
            "{hash}-{}.{}",
            self.compat,
            cache::COMPILED_EXTENSION
        ))
    }

    /// Validate and compile uploaded bytes (bounded), cache the result and
    /// return the loaded module. Refusals say exactly what is wrong.
    pub async fn prepare(&self, bytes: &[u8]) -> Result<Arc<LoadedModule>, ModuleError> {
        validate::check_bytes(bytes)?;
        let _not_clearing = self.clearing.read().await;
        self.prepare_checked(bytes).await
    }

    /// [`Runtime::prepare`] for bytes already checked, under the caller's
    /// guard against a clear.
    async fn prepare_checked(&self, bytes: &[u8]) -> Result<Arc<LoadedModule>, ModuleError> {
        let hash = module_hash(bytes);
        if let Some(module) = self.cached(&hash) {
            self.counters.hit();
            return Ok(module);
        }
        let path = self.cache_path(&hash);
        let compiled = path.exists();
        if !compiled {
            let started = Instant::now();
            compile::compile_to_file(&self.config.compiler, &self.engine, bytes, &path).await?;
            let took = started.elapsed();
            for observer in self.compile_observers.lock().iter() {
                observer(took);
            }
        }
        let module = self.load_file(hash, path).await?;
        if compiled {
            self.counters.hit();
        } else {
            self.counters.miss();
        }
        Ok(module)
    }

    /// The module with this hash: from memory, the disk cache, or compiled from
    /// the bytes `fetch` returns (the store keeps them).
    pub async fn module<F, Fut>(
        &self,
        hash: &str,
        fetch: F,
    ) -> Result<Arc<LoadedModule>, ModuleError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Option<Vec<u8>>>,
    {
        let _not_clearing = self.clearing.read().await;
        if let Some(module) = self.cached(hash) {
            self.counters.hit();
            return Ok(module);
        }
        let path = self.cache_path(hash);
        if path.exists()
            && let Ok(module) = self.load_file(hash.to_string(), path).await
        {
            self.counters.hit();
            return Ok(module);
        }
        let bytes = fetch().await.ok_or_else(|| {
            ModuleError::CompileFailed(format!("no module with hash {hash} is stored"))
        })?;
        validate::check_bytes(&bytes)?;
        self.prepare_checked(&bytes).await
    }

    /// The compiled-code cache now: files, bytes, modules in memory, hits, misses.
    pub fn cache_stats(&self) -> std::io::Result<CacheStats> {
        let (entries, bytes) = cache::on_disk(&self.config.cache_dir)?;
        let (hits, misses) = self.counters.read();
        Ok(CacheStats {
            entries,
            bytes,
            loaded: self.loaded.lock().len() as u64,
            hits,
            misses,
        })
    }

    /// Empty the compiled-code cache, on disk and in memory. Waits for the
    /// lookups and compiles under way; steps already running keep their code,
    /// and the next run of each module compiles it again (a miss).
    pub async fn clear_cache(&self) -> std::io::Result<CacheCleared> {
        let _clearing = self.clearing.write().await;
        let loaded = {
            let mut loaded = self.loaded.lock();
            let count = loaded.len() as u64;
            loaded.clear();
            count
        };
        let dir = self.config.cache_dir.clone();
        let (entries, bytes) = tokio::task::spawn_blocking(move || cache::remove_all(&dir))
            .await
            .map_err(std::io::Error::other)??;
        Ok(CacheCleared {
            entries,
            bytes,
            loaded,
        })
    }

    /// Call `observer` with the duration of every compilation from now on
    /// (a hook, so the runtime knows nothing of who counts).
    pub fn on_compile(&self, observer: impl Fn(Duration) + Send + Sync + 'static) {
        self.compile_observers.lock().push(Box::new(observer));
    }

    /// Forget a compiled module (after it was deleted everywhere).
    pub fn evict(&self, hash: &str) {
        self.loaded.lock().remove(hash);
        let _ = std::fs::remove_file(self.cache_path(hash));
    }

    fn cached(&self, hash: &str) -> Option<Arc<LoadedModule>> {
        self.loaded.lock().get(hash).cloned()
    }

    /// Loads compiled code from the cache. Off the async threads: a Python or JS
    /// component's code is ~40 MB, tens of milliseconds to map and check, which
    /// would stall every other step and request on that thread meanwhile.
    async fn load_file(
        &self,
        hash: String,
        path: PathBuf,
    ) -> Result<Arc<LoadedModule>, ModuleError> {
        let engine = self.engine.clone();
        let file = path.clone();
        let component = tokio::task::spawn_blocking(move || deserialize(&engine, &file))
            .await
            .map_err(|e| ModuleError::CompileFailed(e.to_string()))?
            .inspect_err(|_| {
                // A stale or damaged artifact: drop it so the next try recompiles.
                let _ = std::fs::remove_file(&path);
            })?;
        validate::check_imports(&self.engine, &component)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| ModuleError::WrongExports(format!("{e:#}")))?;
        let pre = StepPre::new(instance_pre).map_err(|e| {
            ModuleError::WrongExports(format!(
                "{e:#}; a step must export `run: func(settings: string) -> result<string, string>` (use stepwise_guest::export_step!)"
            ))
        })?;
        let module = Arc::new(LoadedModule {
            hash: hash.clone(),
            pre,
        });
        self.loaded.lock().insert(hash, module.clone());
        Ok(module)
    }

    /// Run one step to its end and say how it ended. Never panics on guest
    /// behaviour; the store is dropped afterwards, never reused.
    pub async fn run(
        &self,
        module: &LoadedModule,
        request: StepRequest,
        host: Arc<dyn StepHost>,
        cancel: CancellationToken,
    ) -> StepReport {
        let started = Instant::now();
        let wall = request.limits.wall_deadline();
        let deadline = started + wall;
        let output = CapturedOutput::new(host.clone(), self.config.output_cap);
        let panics = PanicWatch::default();
        let stdout = output.stream(LogLevel::Info, None);
        let stderr = output.stream(LogLevel::Warn, Some(panics.clone()));
        let wasi = wasi::deny_all(stdout.clone(), stderr.clone());
        let limiter = StepLimiter::new(request.limits.max_memory);
        let state = StepState::new(
            wasi,
            limiter,
            self.config.caps,
            panics,
            host,
            request.context,
            deadline,
            cancel.clone(),
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        // What the guest may pass in one host call (wasmtime's default is
        // 128 MiB, past which it traps without saying which call). A guest
        // cannot pass more than its memory holds; checkpoint and artifact
        // data is measured against its cap before it is copied (host.rs).
        store.set_hostcall_fuel(usize::try_from(request.limits.max_memory).unwrap_or(usize::MAX));
        let budget = request.limits.fuel_budget(self.config.fuel_per_second);
        if self.config.consume_fuel {
            store.set_fuel(budget).expect("fuel is enabled");
        }
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            let state = ctx.data();
            if state.cancel.is_cancelled() || Instant::now() >= state.deadline {
                return Err(Trap::Interrupt.into());
            }
            Ok(UpdateDeadline::Yield(1))
        });

        let settings = request.settings;
        let call = async {
            let step = module.pre.instantiate_async(&mut store).await?;
            step.call_run(&mut store, &settings).await
        };
        // The epoch callback stops guest code; this select also stops a guest
        // that waits inside a host call (a sleep), which epochs cannot reach.
        let result = tokio::select! {
            biased;
            result = call => Some(result),
            _ = cancel.cancelled() => None,
            _ = tokio::time::sleep_until(deadline.into()) => None,
        };
        let outcome = match result {
            Some(result) => {
                let permanent = store.data().permanent_error;
                let panicked = store.data().panics.last();
                let outcome = classify(result, permanent, &cancel, budget, &request.limits, wall);
                with_panic(outcome, panicked)
            }
            None if cancel.is_cancelled() => StepOutcome::Cancelled,
            None => StepOutcome::Deadline {
                seconds: wall.as_secs_f64(),
            },
        };
        stdout.flush_partial();
        stderr.flush_partial();
        output.finish();
        let fuel_left = if self.config.consume_fuel {
            store.get_fuel().unwrap_or(0)
        } else {
            budget
        };
        let peak_memory = store.data().limiter.peak();
        drop(store);
        StepReport {
            outcome,
            fuel_used: budget.saturating_sub(fuel_left),
            peak_memory,
            duration: started.elapsed(),
        }
    }
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &std::path::Path) -> Result<Component, ModuleError> {
    // SAFETY: the file is in this node's own cache directory and was written
    // by this server (in-process or by its compile child) from a component
    // that passed validation; wasmtime additionally checks that it was
    // produced by a compatible engine and configuration.
    unsafe { Component::deserialize_file(engine, path) }
        .map_err(|e| ModuleError::CompileFailed(format!("cannot load compiled code: {e:#}")))
}

/// Turn what wasmtime returned into a typed outcome.
fn classify(
    result: wasmtime::Result<Result<String, String>>,
    permanent: bool,
    cancel: &CancellationToken,
    budget: u64,
    limits: &StepLimits,
    wall: Duration,
) -> StepOutcome {
    let error = match result {
        Ok(Ok(text)) => return completed(text),
        Ok(Err(message)) => return StepOutcome::ReturnedError { message, permanent },
        Err(error) => error,
    };
    if error.downcast_ref::<MemoryCapExceeded>().is_some() {
        return StepOutcome::MemoryCap {
            limit_bytes: limits.max_memory,
        };
    }
    if let Some(cap) = error.downcast_ref::<CapExceeded>() {
        return match cap.clone() {
            CapExceeded::Checkpoint { size, limit } => StepOutcome::CheckpointCap {
                size_bytes: size,
                limit_bytes: limit,
            },
            CapExceeded::Artifact { name, size, limit } => StepOutcome::ArtifactCap {
                name,
                size_bytes: size,
                limit_bytes: limit,
            },
        };
    }
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return StepOutcome::Exited { code: exit.0 };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => StepOutcome::OutOfFuel {
            fuel_budget: budget,
        },
        Some(Trap::Interrupt) if cancel.is_cancelled() => StepOutcome::Cancelled,
        Some(Trap::Interrupt) => StepOutcome::Deadline {
            seconds: wall.as_secs_f64(),
        },
        Some(trap) => StepOutcome::Trapped {
            trap: trap_code(trap),
            message: trap.to_string(),
            backtrace: error
                .downcast_ref::<WasmBacktrace>()
                .map(|bt| bt.to_string())
                .unwrap_or_default(),
        },
        None => StepOutcome::Failed {
            message: format!("{error:#}"),
        },
    }
}

/// A trap after a panic says what panicked (a panic aborts: the trap itself
/// only says `unreachable`).
fn with_panic(outcome: StepOutcome, panicked: Option<panic::Panic>) -> StepOutcome {
    match (outcome, panicked) {
        (
            StepOutcome::Trapped {
                trap, backtrace, ..
            },
            Some(panic),
        ) => StepOutcome::Trapped {
            trap,
            message: panic.to_string(),
            backtrace,
        },
        (outcome, _) => outcome,
    }
}

fn completed(text: String) -> StepOutcome {
    if text.len() > MAX_OUTPUT_BYTES {
        return StepOutcome::Failed {
            message: format!(
                "step output is {} bytes, more than the {MAX_OUTPUT_BYTES} allowed; write large results as an artifact",
                text.len()
            ),
        };
    }
    match serde_json::from_str(&text) {
        Ok(output) => StepOutcome::Completed { output },
        Err(e) => StepOutcome::Failed {
            message: format!("step output is not valid JSON: {e}"),
        },
    }
}

/// `UnreachableCodeReached` → `unreachable_code_reached`.
fn trap_code(trap: &Trap) -> String {
    let name = format!("{trap:?}");
    let mut code = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                code.push('_');
            }
            code.extend(c.to_lowercase());
        } else {
            code.push(c);
        }
    }
    code
}
