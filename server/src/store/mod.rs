//! Persistence behind one trait, so SQLite (one node) and PostgreSQL (many
//! nodes) pass the same conformance tests. The store knows no HTTP and no wasm.
//!
//! Times are stored as integer milliseconds since the Unix epoch (UTC); every
//! method that takes `now` uses it instead of the database clock, so tests can
//! drive time.

mod create_batcher;
mod limits;
mod log_query;
mod model;
mod postgres;
mod row_mapping;
mod run_writer;
mod sqlite;
#[cfg(test)]
mod tests;

pub use create_batcher::CreateBatcher;
pub use limits::LIMIT_WINDOW_MS;
pub use log_query::{LogEntry, LogQuery};
pub use model::*;
pub use postgres::PostgresStore;
pub use run_writer::{BatchedRunWriter, ClaimRoom, Claimant, RunWriter};
pub use sqlite::{Durability, SqliteStore, WriterTime};

use crate::schedule;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// What went wrong in the store. `Conflict`, `NotFound` and
/// `ArtifactOverCap` are the caller's business; `Internal` is logged and
/// shown as an opaque error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// An artifact write refused before any byte of it was written.
    #[error(transparent)]
    ArtifactOverCap(ArtifactOverCap),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// An artifact write that would take the artifact past its size cap. The
/// store checks the cap inside the write's transaction, before it writes
/// anything: the artifact is left as it was. Typed, so that the step host can
/// tell the step which cap it hit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "artifact `{name}` would be {size} bytes, over the limit of {limit} bytes; \
     write less, or split the output into several artifacts"
)]
pub struct ArtifactOverCap {
    pub name: String,
    /// The size the write would have given the artifact.
    pub size: i64,
    /// The cap the caller passed (`max_bytes`).
    pub limit: i64,
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        StoreError::Internal(error.into())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything Stepwise persists.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- tasks -------------------------------------------------------------

    /// Create a task, or — when `code` names an existing task — replace its
    /// definition (steps, details, secrets, schedule) and keep its id and history
    /// (OpenCart's register by code). Returns the task and whether it was created.
    /// `Conflict` when the task to replace is running.
    async fn create_task(&self, task: NewTask, now: DateTime<Utc>) -> StoreResult<(Task, bool)>;
    /// Several creates in one transaction, one result per task in order (a
    /// `Conflict` fails only its own item). Used to group-commit API creates.
    async fn create_tasks(
        &self,
        tasks: Vec<NewTask>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<(Task, bool)>>>;
    /// As [`Store::create_tasks`], for creates that are answered only later
    /// (`POST /tasks?wait=`): the commit need not be on disk yet, provided
    /// the caller calls [`Store::sync_deferred`] before it answers. On an
    /// idle node the run's end, which is synced, then makes the create
    /// durable with it, and the task's path costs one fsync instead of two.
    /// A driver may sync at once (the default).
    async fn create_tasks_deferred(
        &self,
        tasks: Vec<NewTask>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<StoreResult<(Task, bool)>>> {
        self.create_tasks(tasks, now).await
    }
    /// Create a task that [`NewTask::starts_at_create`] as
    /// [`Store::create_tasks_deferred`] does, and claim a due task for
    /// `node` as [`Store::claim_due`] does (a batch of one) in the same go:
    /// an idle node's waited task starts without a claim of its own. The
    /// new task is claimed only when no task due before it waits (it never
    /// jumps the queue). Returns the task as created (as claimed, when the
    /// run is its own) and the run claimed, if any; a driver may claim
    /// nothing, and the scheduler then claims as usual.
    ///
    /// The default is the two calls one after the other
    /// ([`create_then_claim`]). PostgreSQL does it in one statement, which
    /// claims only the new task, and only when no other is due and its steps'
    /// modules are registered, active and not limited
    /// (`postgres/create_and_claim.rs`); SQLite in one transaction
    /// (`sqlite/create_and_claim.rs`).
    async fn create_and_claim(
        &self,
        task: NewTask,
        node: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<(Task, Option<ClaimedRun>)> {
        create_then_claim(self, task, node, now, lease_until).await
    }
    /// Make every create of [`Store::create_tasks_deferred`] committed so far
    /// durable; nothing to do (and no fsync) when a synced commit since has.
    async fn sync_deferred(&self) -> StoreResult<()> {
        Ok(())
    }
    async fn get_task(&self, id: i64) -> StoreResult<Option<Task>>;
    async fn list_tasks(&self, filter: &TaskFilter) -> StoreResult<Vec<Task>>;
    /// Apply a patch. `Conflict` when disabling a running task.
    async fn update_task(
        &self,
        id: i64,
        patch: &TaskPatch,
        now: DateTime<Utc>,
    ) -> StoreResult<Task>;
    /// Add, change, remove or reorder a task's steps (see [`StepEdit`]),
    /// also while it runs: the running run keeps the steps it was claimed
    /// with. Returns the task as it now is. `NotFound` for a task or step
    /// that does not exist; `Conflict` when removing its last step or the
    /// step a single-step run is about to run, or for a reorder that does not
    /// list each of its steps once.
    async fn edit_steps(
        &self,
        task_id: i64,
        edit: &StepEdit,
        now: DateTime<Utc>,
    ) -> StoreResult<Task>;
    /// Delete a task and everything it owns. `Conflict` when it is running.
    async fn delete_task(&self, id: i64) -> StoreResult<()>;
    /// Make a task due now (run now): from any status but running.
    /// `only_step` runs that single step (step-by-step mode). `Conflict` when running.
    async fn run_task_now(
        &self,
        id: i64,
        only_step: Option<i64>,
        now: DateTime<Utc>,
    ) -> StoreResult<Task>;
    /// Make every scheduled task due now (OpenCart's "Run tasks" button,
    /// AbanteCart's `task.php`): a task due later is brought forward to
    /// `now`; one already due keeps its time, and so its place in the queue.
    /// Disabled, running and finished tasks are left alone. Returns how many
    /// scheduled tasks are due now (those brought forward and those already due).
    async fn make_scheduled_due(&self, now: DateTime<Utc>) -> StoreResult<u64>;
    /// Retry (a user's "run again, continuing"): like `run_task_now` but the run
    /// resumes the task's last run — reusing the steps it completed and their
    /// checkpoints (`resume_from_run_id` = the last run, `pending_trigger` = 'retry').
    /// The attempt counter is kept: the retry is the next attempt, whatever
    /// `max_attempts` says (a user asked for it); automatic retries after it
    /// happen only while attempts remain.
    /// Conflict when running; Conflict when the task never ran ("nothing to retry").
    async fn retry_task(&self, id: i64, now: DateTime<Utc>) -> StoreResult<Task>;
    /// Cancel: a task that is not running becomes `cancelled` at once (returns
    /// `true`); a running one gets `cancel_requested` set (returns `false`) and
    /// its executor stops it.
    async fn request_cancel(&self, id: i64, now: DateTime<Utc>) -> StoreResult<bool>;
    /// Whether a cancel was requested for this run's task.
    async fn cancel_requested(&self, run_id: i64) -> StoreResult<bool>;
    /// Delete finished tasks (completed/failed/cancelled, or the given status)
    /// whose last update is older than `finished_before`. Returns how many.
    async fn delete_finished_tasks(
        &self,
        finished_before: DateTime<Utc>,
        status: Option<TaskStatus>,
    ) -> StoreResult<u64>;
    /// Tasks by status, every status included. Dashboards poll it, so it
    /// must not count the tasks: each store keeps the counts as tasks move,
    /// in the transactions that move them.
    async fn count_by_status(&self) -> StoreResult<StatusCounts>;

    // ---- runs --------------------------------------------------------------

    /// Claim up to `limit` due tasks (status scheduled, next_run_at <= now, no
    /// enabled step on an inactive module), highest priority first, then oldest
    /// due, then lowest id. Each becomes `running` with a lease until
    /// `lease_until` held by `node`, `attempts + 1`, and a new run with its step
    /// runs (pending / reused / skipped, see [`PlannedStep`]).
    async fn claim_due(
        &self,
        node: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<ClaimedRun>>;
    /// The engine's lane for the run path (see [`RunWriter`]): how this
    /// store batches the writes of running runs and the node's claims.
    fn run_writer(self: Arc<Self>, claimant: Claimant) -> Arc<dyn RunWriter>;
    /// Extend the leases of these runs (only those still held by `node`), and
    /// return those among them whose cancel was requested (through any node):
    /// one round trip per heartbeat, whatever the number of runs.
    async fn heartbeat(
        &self,
        node: &str,
        run_ids: &[i64],
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Vec<i64>>;
    /// Runs whose lease expired before `now` (their node died). With
    /// `node = Some(n)`, runs of node `n` whatever their lease (start-up rescue).
    async fn expired_runs(
        &self,
        now: DateTime<Utc>,
        node: Option<&str>,
    ) -> StoreResult<Vec<(Task, i64)>>;
    /// Apply several executor writes in order in one transaction (one commit
    /// for many runs). Returns, per op, whether it applied: a `FinishStep`
    /// only if the step run was not final yet (no step attempt is recorded
    /// twice), a `FinishRun` as [`Store::finish_run`] (and, if it gave a
    /// `claimed_version`, whether its task was still at that version just
    /// before: [`WriteAnswer::AppliedToClaimed`]); `StartStep` and
    /// `SaveProgress` are always applied.
    async fn apply_writes(&self, ops: &[WriteOp]) -> StoreResult<Vec<WriteAnswer>>;
    /// End a run and move its task on, in one transaction, only if the task is
    /// still on this run (a rescued run cannot be ended twice): pending and
    /// running step runs become skipped/interrupted. Returns whether applied.
    async fn finish_run(&self, task_id: i64, run_id: i64, end: &RunEnd) -> StoreResult<bool>;
    async fn list_runs(&self, task_id: i64, limit: i64) -> StoreResult<Vec<Run>>;
    /// Durations in seconds of the last `limit` completed runs (for the ETA).
    async fn recent_run_durations(&self, task_id: i64, limit: i64) -> StoreResult<Vec<f64>>;

    // ---- completion hooks --------------------------------------------------

    /// Claim up to `limit` pending hook deliveries due at `now` for `node`,
    /// oldest due first: each counts a try and is held until `lease_until`
    /// (a node that dies while sending leaves it to be claimed again then).
    /// On PostgreSQL two nodes never claim the same delivery (SKIP LOCKED).
    /// The delivery row itself is written by the run end, in its transaction
    /// (see [`Store::apply_writes`]).
    async fn claim_hooks(
        &self,
        node: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<DueHook>>;
    /// Record a try of a claimed delivery and what follows it. The try is
    /// always kept (it happened); the delivery moves on only if it is still
    /// on that try (`attempt`, not re-claimed after its claim expired, not
    /// retried by a user meanwhile). Returns whether it moved on.
    async fn record_hook_attempt(
        &self,
        delivery_id: i64,
        attempt: &HookAttempt,
        next: HookNext,
        now: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// The deliveries of these runs of a task, with their tries, by run id
    /// then delivery id.
    async fn list_hook_deliveries(
        &self,
        task_id: i64,
        run_ids: &[i64],
    ) -> StoreResult<Vec<HookDelivery>>;
    /// Make a delivered or failed delivery of this task due now, with a full
    /// retry budget again. `NotFound` for a delivery that is not the task's,
    /// `Conflict` while it is pending.
    async fn retry_hook_delivery(
        &self,
        task_id: i64,
        delivery_id: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<HookDelivery>;

    // ---- nodes -------------------------------------------------------------

    /// Record how a node is (insert or replace the row of `node.id`); each
    /// node calls this at start, at every heartbeat and when it stops.
    async fn beat_node(&self, node: &Node) -> StoreResult<()>;
    /// Every node that ever reported itself, by id.
    async fn list_nodes(&self) -> StoreResult<Vec<Node>>;
    /// Send short messages (PostgreSQL's NOTIFY payloads stop at 8,000
    /// bytes), in order, to every node sharing this store, this one
    /// included. A store that one node has to itself sends nothing and
    /// answers `Ok`.
    async fn notify_nodes(&self, payloads: &[String]) -> StoreResult<()>;
    /// The messages [`Store::notify_nodes`] sends, from any node, as they
    /// arrive (at most once each: one lost while the store reconnects is
    /// gone). `None` for a store that one node has to itself.
    fn node_messages(&self) -> Option<tokio::sync::broadcast::Receiver<Arc<str>>>;

    // ---- checkpoints and artifacts ----------------------------------------

    /// Save a step's checkpoint. A step removed since its run was claimed
    /// (see [`Store::edit_steps`]) keeps none: the save is dropped, not
    /// refused, so the run that still executes it goes on undisturbed.
    async fn save_checkpoint(
        &self,
        task_id: i64,
        step_id: i64,
        data: &[u8],
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    async fn load_checkpoint(&self, task_id: i64, step_id: i64) -> StoreResult<Option<Vec<u8>>>;
    /// Write or append to an artifact of a run. An append costs what it adds
    /// (the bytes already there are neither read nor rewritten).
    /// [`StoreError::ArtifactOverCap`] when the artifact would pass
    /// `max_bytes`, and then nothing is written.
    #[allow(clippy::too_many_arguments)] // three ids, a name, the bytes, the mode, the cap, the time
    async fn write_artifact(
        &self,
        task_id: i64,
        run_id: i64,
        step_id: i64,
        name: &str,
        data: &[u8],
        append: bool,
        max_bytes: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Artifacts of a task, newest run first.
    async fn list_artifacts(&self, task_id: i64) -> StoreResult<Vec<Artifact>>;
    /// The newest artifact of this name for the task (or of the given run),
    /// as its size and the ids of its chunks in order, for a reader that
    /// streams it with [`Store::artifact_chunk`] instead of holding it whole
    /// in memory.
    async fn artifact_chunks(
        &self,
        task_id: i64,
        name: &str,
        run_id: Option<i64>,
    ) -> StoreResult<Option<ArtifactChunks>>;
    /// One chunk's bytes; `None` once the artifact was overwritten or deleted.
    async fn artifact_chunk(&self, chunk_id: i64) -> StoreResult<Option<Vec<u8>>>;

    // ---- events ------------------------------------------------------------

    async fn append_events(&self, events: &[EventRecord]) -> StoreResult<()>;
    /// Events of a task, oldest first, optionally only logs, at most `limit`.
    async fn list_events(
        &self,
        task_id: i64,
        logs_only: bool,
        limit: i64,
    ) -> StoreResult<Vec<EventRecord>>;
    /// Log lines of one task or of all, filtered and paged by id (see
    /// [`LogQuery`]): the task's logs page and the cross-task log view.
    async fn list_logs(&self, query: &LogQuery) -> StoreResult<Vec<LogEntry>>;

    // ---- modules -----------------------------------------------------------

    /// Register (or re-register) a module at `path` with these bytes. The blob
    /// is stored once per hash; old blobs stay for runs that pinned them.
    async fn put_module(
        &self,
        path: &str,
        hash: &str,
        bytes: &[u8],
        language: Option<&str>,
        metadata: Option<&ModuleMetadata>,
        now: DateTime<Utc>,
    ) -> StoreResult<(Module, bool)>;
    async fn get_module(&self, path: &str) -> StoreResult<Option<Module>>;
    async fn list_modules(&self) -> StoreResult<Vec<Module>>;
    async fn set_module_active(
        &self,
        path: &str,
        active: bool,
        now: DateTime<Utc>,
    ) -> StoreResult<Module>;
    /// Replace a module's concurrency and rate limits.
    async fn set_module_limits(
        &self,
        path: &str,
        limits: ModuleLimits,
        now: DateTime<Utc>,
    ) -> StoreResult<Module>;
    /// Every limited module and what it uses of its limits at `now`.
    async fn module_usage(&self, now: DateTime<Utc>) -> StoreResult<Vec<ModuleUsage>>;
    /// Runs of a task started after `since` (its own rate limit's count).
    async fn task_starts_since(&self, task_id: i64, since: DateTime<Utc>) -> StoreResult<i64>;
    async fn delete_module(&self, path: &str) -> StoreResult<()>;
    async fn module_bytes(&self, hash: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Tasks with a step on a module that is not registered, by module path
    /// then task id, at most `limit` (task, module) pairs.
    async fn missing_module_tasks(&self, limit: i64) -> StoreResult<Vec<MissingModuleTask>>;

    // ---- secrets and tokens ------------------------------------------------

    async fn create_token(
        &self,
        name: &str,
        role: Role,
        token_hash: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Token>;
    async fn find_token(&self, token_hash: &str) -> StoreResult<Option<Token>>;
    async fn list_tokens(&self) -> StoreResult<Vec<Token>>;
    async fn revoke_token(&self, id: i64) -> StoreResult<()>;
    async fn count_tokens(&self) -> StoreResult<i64>;

    // ---- retention ---------------------------------------------------------

    /// Remove finished runs (and their step runs, artifacts) and events older
    /// than `before`, keeping each task's latest run. Returns rows removed.
    async fn prune(&self, before: DateTime<Utc>) -> StoreResult<u64>;

    // ---- statistics and alerts ---------------------------------------------

    /// How the runs started in `[since, now]` went, overall, per module and per
    /// hour (see [`PerformanceStats`]), computed by the database.
    async fn performance(
        &self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<PerformanceStats>;
    /// What alerting needs at `now`: run outcomes and failing modules over the
    /// recent window `[since, now]`, the due backlog, and the running runs.
    async fn alert_facts(
        &self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<AlertFacts>;
}

/// The schedule of a task row as a patch finds it, read in the patch's
/// transaction (times in stored milliseconds since the epoch).
struct ScheduleRow {
    status: TaskStatus,
    start_at: Option<i64>,
    next_run_at: Option<i64>,
    cron: Option<String>,
    timezone: String,
    /// No run now, single-step run or retry is pending: the task waits for
    /// its schedule.
    on_schedule: bool,
}

/// The schedule a patch leaves a task with (both stores write it).
struct PatchedSchedule {
    status: TaskStatus,
    start_at: Option<i64>,
    next_run_at: Option<i64>,
    cron: Option<String>,
    timezone: String,
}

/// Apply a patch's schedule fields to a task row: `disabled`, `start_at`,
/// `cron` and `timezone`. A new start time moves a waiting task's next run,
/// and so does a new cron schedule or zone unless a run now, a step run or a
/// retry is what it waits for; a task on cron is due at the schedule's first
/// time from its start (or now). `Conflict` when disabling a running task.
fn patch_schedule(
    id: i64,
    row: ScheduleRow,
    patch: &TaskPatch,
    now: DateTime<Utc>,
) -> StoreResult<PatchedSchedule> {
    let ms = |at: DateTime<Utc>| at.timestamp_millis();
    let start_at = patch.start_at.map(ms).or(row.start_at);
    let cron = patch.cron.clone().unwrap_or(row.cron);
    let timezone = patch.timezone.clone().unwrap_or(row.timezone);
    let cron_due = || {
        let start_at = start_at.and_then(DateTime::from_timestamp_millis);
        schedule::first_due(cron.as_deref(), &timezone, start_at, now).map(ms)
    };
    let (mut status, mut next_run_at) = (row.status, row.next_run_at);
    match patch.disabled {
        Some(true) if status == TaskStatus::Running => {
            return Err(StoreError::Conflict(format!(
                "task {id} is running; cancel it or wait until it finishes before disabling it"
            )));
        }
        Some(true) => {
            status = TaskStatus::Disabled;
            next_run_at = None;
        }
        Some(false) if status == TaskStatus::Disabled => {
            status = TaskStatus::Scheduled;
            next_run_at = cron_due().or(Some(start_at.unwrap_or(0).max(ms(now))));
        }
        _ if status == TaskStatus::Scheduled => {
            let new_schedule = patch.cron.is_some() || patch.timezone.is_some();
            if patch.start_at.is_some() {
                next_run_at = cron_due().or(start_at);
            } else if new_schedule && row.on_schedule {
                next_run_at = cron_due().or(next_run_at);
            }
        }
        _ => {}
    }
    Ok(PatchedSchedule {
        status,
        start_at,
        next_run_at,
        cron,
        timezone,
    })
}

/// A retry of a hook delivery still on its way (both stores refuse it alike).
fn hook_still_pending(delivery_id: i64) -> StoreError {
    StoreError::Conflict(format!(
        "hook delivery {delivery_id} is still pending: it is tried again by itself; \
         retry it once it is delivered or failed"
    ))
}

/// The checks of [`Store::edit_steps`] both stores make in the edit's
/// transaction, on the task's step ids and the step its pending
/// single-step run is for (if any).
fn check_step_edit(
    task_id: i64,
    edit: &StepEdit,
    step_ids: &[i64],
    pending_step: Option<i64>,
) -> StoreResult<()> {
    let of_task = |step_id: i64| {
        if step_ids.contains(&step_id) {
            Ok(())
        } else {
            Err(StoreError::NotFound(format!(
                "step {step_id} of task {task_id}"
            )))
        }
    };
    match edit {
        StepEdit::Add(_) => Ok(()),
        StepEdit::Change { step_id, .. } => of_task(*step_id),
        StepEdit::Remove { step_id } => {
            of_task(*step_id)?;
            if step_ids.len() == 1 {
                return Err(StoreError::Conflict(format!(
                    "step {step_id} is the only step of task {task_id}, and a task needs at \
                     least one; add another step first, or delete the task"
                )));
            }
            if pending_step == Some(*step_id) {
                return Err(StoreError::Conflict(format!(
                    "step {step_id} of task {task_id} is about to run on its own; remove it \
                     once that run has started"
                )));
            }
            Ok(())
        }
        StepEdit::Reorder(order) => {
            let mut given = order.clone();
            given.sort_unstable();
            let mut have = step_ids.to_vec();
            have.sort_unstable();
            if given == have {
                Ok(())
            } else {
                Err(StoreError::Conflict(format!(
                    "the order must list each step of task {task_id} once: {have:?}"
                )))
            }
        }
    }
}

/// The newest artifact of this name for the task (or of the given run),
/// whole: its chunks read one after the other (see [`Store::artifact_chunks`];
/// a download streams them instead).
pub async fn read_artifact<S: Store + ?Sized>(
    store: &S,
    task_id: i64,
    name: &str,
    run_id: Option<i64>,
) -> StoreResult<Option<Vec<u8>>> {
    let Some(found) = store.artifact_chunks(task_id, name, run_id).await? else {
        return Ok(None);
    };
    let mut bytes = Vec::with_capacity(usize::try_from(found.size).unwrap_or(0));
    for id in found.chunk_ids {
        bytes.extend(store.artifact_chunk(id).await?.unwrap_or_default());
    }
    Ok(Some(bytes))
}

/// [`Store::create_and_claim`] as two calls: the create, then a claim of one.
pub(crate) async fn create_then_claim<S: Store + ?Sized>(
    store: &S,
    task: NewTask,
    node: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> StoreResult<(Task, Option<ClaimedRun>)> {
    let created = store
        .create_tasks_deferred(vec![task], now)
        .await?
        .pop()
        .expect("one result per task")?
        .0;
    // The task is in: a failed claim must not fail its create (the caller
    // would create it again); the scheduler claims it later.
    let claimed = match store.claim_due(node, now, lease_until, 1).await {
        Ok(mut runs) => runs.pop(),
        Err(error) => {
            tracing::warn!("claiming after a create failed: {error:#}");
            None
        }
    };
    Ok((as_claimed(created, claimed.as_ref()), claimed))
}

/// The task a create-and-claim returns: as its claim left it when the run
/// claimed is its own, as created otherwise.
pub(crate) fn as_claimed(created: Task, claimed: Option<&ClaimedRun>) -> Task {
    match claimed {
        Some(run) if run.task.id == created.id => run.task.clone(),
        _ => created,
    }
}
