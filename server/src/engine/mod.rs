//! The task engine: claims due tasks, runs their steps in the sandbox, decides
//! retries, rescues runs of dead nodes. It runs without a web server; the API
//! and tests call it directly.

mod cluster;
mod event_writer;
mod executor;
mod hooks;
mod masking;
mod metrics;
mod node_report;
mod policy;
mod progress;
mod rescuer;
mod retention;
mod run_end_watch;
mod run_logs;
mod running;
mod scheduler;
mod start_at_create;
mod step_host;
mod step_threads;
mod step_weights;
mod stopping;
mod workers;

pub use event_writer::EventWriter;
pub use executor::RunSummary;
pub use masking::{MASK, MIN_MASKED_BYTES};
pub use metrics::EngineMetrics;
pub use policy::{RetryPolicy, RunVerdict};
pub use progress::{RunProgress, eta_seconds};
pub use run_end_watch::RunEndWatch;
pub use scheduler::EngineHandle;
pub use start_at_create::StartSlot;
pub use stopping::Drained;

use crate::events::EventBus;
use crate::runtime::Runtime;
use crate::secrets::SecretBox;
use crate::store::{Claimant, RunWriter, Store, StoreResult};
use chrono::Utc;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::sync::Notify;

/// How the engine of one node behaves. Defaults are documented on each field.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This node's name in leases (stable across restarts so it can rescue its own runs).
    pub node_id: String,
    /// Runs executed at the same time on this node (default 32). Steps mostly
    /// wait (on host calls, sleeps, the store's commits), so this is well above
    /// the core count; a CPU-bound guest yields its core every epoch tick.
    pub workers: usize,
    /// How often the scheduler looks for due tasks when nothing wakes it (default 50 ms).
    pub poll_interval: Duration,
    /// How long a claim is valid without a heartbeat (default 30 s).
    pub lease: Duration,
    /// How often leases are renewed and remote cancels are checked (default lease / 3).
    pub heartbeat_interval: Duration,
    /// How often expired leases are looked for (default lease / 6: a dead
    /// node's runs resume within about 1.2 leases of its last heartbeat).
    pub rescue_interval: Duration,
    pub retry: RetryPolicy,
    /// Memory cap of a step that sets none (default 256 MiB).
    pub default_max_memory: u64,
    /// Log lines kept per run (default 10,000): the first half and the last
    /// half, with one line between saying how many were dropped.
    pub max_log_lines_per_run: u64,
    /// Finished runs and events older than this are pruned (default 30 days; `None` keeps all).
    pub retention: Option<Duration>,
    /// Tasks claimed per query (default 64).
    pub claim_batch: i64,
    /// How far ahead of its workers the node claims when runs end quickly:
    /// the runs its workers will likely take within this time, at the rate
    /// they freed lately, at most `claim_batch` (default 10 ms, about a busy
    /// writer's commit; see `engine/workers.rs`).
    pub claim_ahead: Duration,
    /// Where this node's API listens, for the nodes view (default none).
    pub address: Option<String>,
    /// Completion hooks: allowed hosts, retry waits (see [`crate::hooks`]).
    pub hooks: crate::hooks::HookSettings,
}

impl EngineConfig {
    pub fn new(node_id: impl Into<String>) -> Self {
        let lease = Duration::from_secs(30);
        EngineConfig {
            node_id: node_id.into(),
            workers: 32,
            poll_interval: Duration::from_millis(50),
            lease,
            heartbeat_interval: lease / 3,
            rescue_interval: lease / 6,
            retry: RetryPolicy::default(),
            default_max_memory: 256 << 20,
            max_log_lines_per_run: 10_000,
            retention: Some(Duration::from_secs(30 * 24 * 3600)),
            claim_batch: 64,
            claim_ahead: workers::AHEAD_HORIZON,
            address: None,
            hooks: crate::hooks::HookSettings::default(),
        }
    }
}

/// An engine on a fresh SQLite file in `dir`, for the crate's own tests.
#[cfg(test)]
pub(crate) async fn engine_for_tests(dir: &std::path::Path, config: EngineConfig) -> Engine {
    use crate::runtime::RuntimeConfig;
    use crate::store::{Durability, SqliteStore};
    let store = SqliteStore::open(&dir.join("db.sqlite"), Durability::Normal)
        .await
        .expect("opening a fresh SQLite store");
    let runtime = Runtime::new(RuntimeConfig::local(dir.join("compiled"))).expect("the runtime");
    Engine::new(
        Arc::new(store),
        Arc::new(runtime),
        Arc::new(EventBus::new()),
        Arc::new(SecretBox::from_key(&[7; 32])),
        config,
    )
}

/// What the engine's parts share.
pub(crate) struct Inner {
    pub store: Arc<dyn Store>,
    pub runtime: Arc<Runtime>,
    pub bus: Arc<EventBus>,
    pub secrets: Arc<SecretBox>,
    pub config: EngineConfig,
    pub event_writer: Arc<EventWriter>,
    /// The store's lane for claims and the writes of running runs.
    pub run_writer: Arc<dyn RunWriter>,
    /// Runs executing on this node, and cancels that came before their run did.
    pub running: running::RunningRuns,
    /// Wakes the scheduler (a task became due, a worker became free).
    pub wake: Notify,
    /// The scheduler would claim more if woken: its last claim took all it
    /// asked for (a backlog), or it left free workers waiting for a batch or
    /// had none. When false, the last claim found nothing more due, and a
    /// run's end wakes it only if the end can make a task due (see
    /// [`executor`]): on an idle node, a claim after every run found nothing
    /// and competed with the answer to the client waiting on that run.
    pub claims_wanted: AtomicBool,
    /// The node's workers: a run holds one while it executes.
    pub workers: workers::Workers,
    /// Whether a create may start its run here (see [`start_at_create`]).
    pub starts: start_at_create::StartsAtCreate,
    /// Where the steps' guests run, apart from the node's control work.
    pub steps: step_threads::StepThreads,
    /// What each module's steps took lately here, for the progress bar's weights.
    pub module_durations: step_weights::ModuleDurations,
    /// When this node's engine started (the nodes view).
    pub started_at: chrono::DateTime<Utc>,
    /// What the engine counts; `/metrics` shows it.
    pub metrics: Arc<EngineMetrics>,
    /// Requests waiting on a task's run end (see [`run_end_watch`]).
    pub run_end_watches: Arc<run_end_watch::RunEndWatches>,
}

/// A task claimed for this node and not run yet (see [`Engine::claim_next`]).
pub struct ClaimedTask(crate::store::ClaimedRun);

impl ClaimedTask {
    pub fn task_id(&self) -> i64 {
        self.0.task.id
    }
}

/// The engine of one node. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Must be called inside a tokio runtime (it starts the event writer).
    pub fn new(
        store: Arc<dyn Store>,
        runtime: Arc<Runtime>,
        bus: Arc<EventBus>,
        secrets: Arc<SecretBox>,
        config: EngineConfig,
    ) -> Self {
        let event_writer = EventWriter::start(store.clone());
        let run_writer = store.clone().run_writer(Claimant {
            node: config.node_id.clone(),
            lease: config.lease,
        });
        let workers = workers::Workers::new(config.workers);
        let metrics = Arc::new(EngineMetrics::default());
        let compiles = metrics.clone();
        runtime.on_compile(move |took| compiles.compiled(took));
        let engine = Engine {
            inner: Arc::new(Inner {
                store,
                runtime,
                bus,
                secrets,
                config,
                event_writer,
                run_writer,
                running: running::RunningRuns::default(),
                wake: Notify::new(),
                claims_wanted: AtomicBool::new(true),
                workers,
                starts: Default::default(),
                steps: step_threads::StepThreads::start()
                    .expect("starting the steps' threads (the system is out of threads)"),
                module_durations: step_weights::ModuleDurations::default(),
                started_at: Utc::now(),
                metrics,
                run_end_watches: Default::default(),
            }),
        };
        cluster::start(&engine.inner);
        engine
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.inner.runtime
    }

    pub fn bus(&self) -> &Arc<EventBus> {
        &self.inner.bus
    }

    pub fn secrets(&self) -> &Arc<SecretBox> {
        &self.inner.secrets
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// What the engine counted (runs, steps, rescues, ...), for `/metrics`.
    pub fn metrics(&self) -> &EngineMetrics {
        &self.inner.metrics
    }

    pub fn event_writer(&self) -> &Arc<EventWriter> {
        &self.inner.event_writer
    }

    /// Tell the scheduler to look for due tasks now (after a create or run-now).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Watch a task's run ends until the watch is dropped: a run of it that
    /// ends on this node leaves the task as it ended there, for a `?wait=`
    /// answer to take instead of reading it (see [`RunEndWatch::ended_task`]).
    pub fn watch_run_end(&self, task_id: i64) -> RunEndWatch {
        RunEndWatch::new(&self.inner.run_end_watches, task_id)
    }

    /// Claim one due task and run it to its end, here and now. Returns `None`
    /// when nothing is due. The polling loop is a thin wrapper around this.
    pub async fn try_execute_next(&self) -> anyhow::Result<Option<RunSummary>> {
        match self.claim_next().await? {
            Some(claimed) => Ok(Some(self.execute(claimed).await)),
            None => Ok(None),
        }
    }

    /// Claim one due task for this node without running it yet (`None` when
    /// nothing is due): the first half of [`Engine::try_execute_next`], for
    /// tests that act between a claim and its run.
    pub async fn claim_next(&self) -> anyhow::Result<Option<ClaimedTask>> {
        let now = Utc::now();
        let lease_until = now + self.inner.config.lease;
        let mut claimed = self
            .inner
            .store
            .claim_due(&self.inner.config.node_id, now, lease_until, 1)
            .await?;
        Ok(claimed.pop().map(ClaimedTask))
    }

    /// Run a claimed task to its end, here and now.
    pub async fn execute(&self, claimed: ClaimedTask) -> RunSummary {
        executor::execute(self.inner.clone(), claimed.0, None).await
    }

    /// Run due tasks until none is due (tests and benchmarks).
    pub async fn drain(&self) -> anyhow::Result<Vec<RunSummary>> {
        let mut done = Vec::new();
        while let Some(summary) = self.try_execute_next().await? {
            done.push(summary);
        }
        Ok(done)
    }

    /// Cancel a task: at once when it is not running; a running one is stopped
    /// within one epoch tick on this node, even if its executor has not
    /// started yet (see `engine/running.rs`); on another node as soon as
    /// the node message reaches it (`engine/cluster.rs`), or at its next
    /// heartbeat if the message is lost. Returns `true` when it was cancelled at once.
    pub async fn cancel(&self, task_id: i64) -> StoreResult<bool> {
        let immediate = self.inner.store.request_cancel(task_id, Utc::now()).await?;
        if immediate {
            if let Some(task) = self.inner.store.get_task(task_id).await? {
                executor::publish_task_final(&self.inner, &task);
            }
        } else if self.inner.running.cancel(task_id) == running::LocalCancel::Noted {
            // Not running here (or not yet): the node that runs it stops it.
            cluster::send_cancel(&self.inner, task_id).await;
        }
        Ok(immediate)
    }

    /// Write this node's row in the nodes table now (`running`), so that it
    /// is listed from its first moment; the heartbeat keeps it fresh.
    pub async fn report_running(&self) {
        node_report::report(&self.inner, crate::store::NodeState::Running).await;
    }

    /// A module was registered through this node: the other nodes compile
    /// it ahead of its first run there (see `engine/cluster.rs`).
    pub async fn module_registered(&self, hash: &str) {
        if self.inner.store.node_messages().is_some() {
            cluster::send_module(&self.inner, hash).await;
        }
    }

    /// Runs claimed ahead of the workers, waiting for one to free (see
    /// `workers.rs`).
    pub fn runs_claimed_ahead(&self) -> i64 {
        self.inner.workers.waiting()
    }

    /// The most runs that waited claimed ahead at once since the engine
    /// was made.
    pub fn most_runs_claimed_ahead(&self) -> i64 {
        self.inner.workers.most_waiting()
    }

    /// Run ids currently executing on this node.
    pub fn running_runs(&self) -> Vec<i64> {
        self.inner.running.run_ids()
    }

    /// Rescue runs whose lease expired (see [`rescuer`]). Returns how many.
    pub async fn rescue_expired(&self) -> anyhow::Result<usize> {
        rescuer::rescue(&self.inner, rescuer::Rescue::Expired).await
    }

    /// At start-up: rescue this node's own runs left from before a crash.
    pub async fn rescue_own_orphans(&self) -> anyhow::Result<usize> {
        let node = self.inner.config.node_id.clone();
        rescuer::rescue(&self.inner, rescuer::Rescue::Orphans(&node)).await
    }

    /// Remove finished runs (with their step runs and artifacts) and events
    /// older than `before`, keeping each task's latest run. The background
    /// retention pass calls this with `now - retention`; operators can call it
    /// with any cut-off. Returns rows removed.
    pub async fn prune_history(&self, before: chrono::DateTime<Utc>) -> StoreResult<u64> {
        self.inner.store.prune(before).await
    }

    /// Start the scheduler, heartbeat, rescuer, retention and completion
    /// hook loops.
    pub fn start(&self) -> EngineHandle {
        scheduler::start(self.inner.clone())
    }
}
