//! The one wasmtime `Engine` of a node: which wasm features are on, how
//! instances are allocated, and the epoch ticker behind deadlines and cancel.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances. A running step checks its deadline and the
/// cancel flag at every tick and yields to the async runtime, so this bounds
/// cancel latency (goal: 100 ms) and how long a guest holds a tokio worker.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Largest wasm stack a step may use; deeper recursion traps with `stack_overflow`.
pub const MAX_WASM_STACK: usize = 512 * 1024;

/// Core instances a step's component may have (componentize-py's have 14).
const CORE_INSTANCES_PER_STEP: u32 = 16;

/// Host stack per running step (must exceed the wasm stack plus host frames).
const ASYNC_STACK: usize = 2 * 1024 * 1024;

/// Sizing of the pooling allocator.
#[derive(Debug, Clone, Copy)]
pub struct PoolSizing {
    /// Steps that may be instantiated at the same time on this node.
    pub max_instances: u32,
    /// Largest memory one step may ever ask for (each step's own cap is lower).
    pub max_memory_bytes: u64,
}

/// The engine configuration shared by the node and its compile child process,
/// so compiled artifacts from one load in the other.
fn base_config(consume_fuel: bool) -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(consume_fuel)
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .async_stack_size(ASYNC_STACK)
        // Off: steps do not need them, and recent advisories cluster there.
        // Threads, exceptions, function references and component-model async
        // are not even compiled in (see the wasmtime features in Cargo.toml).
        .wasm_memory64(false)
        .wasm_multi_memory(false)
        .wasm_gc(false)
        .wasm_stack_switching(false)
        .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(64))
        .cranelift_opt_level(wasmtime::OptLevel::Speed)
        .parallel_compilation(true);
    config
}

/// Engine that runs steps: pooling allocator, pages kept resident between
/// instances so teardown does not pay for `madvise` and page faults.
pub fn runtime_engine(pool: PoolSizing, consume_fuel: bool) -> wasmtime::Result<Engine> {
    let mut config = base_config(consume_fuel);
    let mut pooling = PoolingAllocationConfig::new();
    // Room per step for the largest components the standard toolchains write:
    // a Rust step is 2-4 core instances (main module, shims); componentize-py
    // links CPython from 14 (libc, libpython, the WASI adapter, shims), all on
    // one memory and two tables; componentize-js 4. A slot that is never used
    // costs address space, not memory.
    pooling
        .total_component_instances(pool.max_instances)
        .total_core_instances(pool.max_instances * CORE_INSTANCES_PER_STEP)
        .total_memories(pool.max_instances * 2)
        .total_tables(pool.max_instances * 4)
        .total_stacks(pool.max_instances)
        .max_memory_size(pool.max_memory_bytes as usize)
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(64 << 10)
        .pagemap_scan(Enabled::Auto);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    Engine::new(&config)
}

/// Engine used only to compile (in the bounded child process): same code
/// generation, no pool to reserve, so a memory rlimit stays meaningful.
pub fn compile_engine() -> wasmtime::Result<Engine> {
    Engine::new(&base_config(true))
}

/// A short text that changes whenever compiled code from an older build or a
/// different configuration could not be loaded; part of the cache key.
pub fn compatibility_key(engine: &Engine) -> String {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Advance the engine's epoch every [`EPOCH_TICK`] until the engine is dropped.
pub fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("stepwise-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawn the epoch ticker thread");
}
