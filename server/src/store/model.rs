//! The data of Stepwise as the store keeps it: tasks, steps, runs, modules,
//! artifacts, events, tokens. States are enums whose docs say what moves them on;
//! they are stored as lowercase text with a CHECK constraint.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &[$name] = &[$($name::$variant,)+];

            /// The stored (and serialized) text.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(text: &str) -> Result<Self, String> {
                match text {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "`{other}` is not one of: {}",
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        /// Read from its text; anything else (`"status": 1`) is refused
        /// with the list of allowed texts, so an API client learns what to send.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Text;
                impl serde::de::Visitor<'_> for Text {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(f, "one of: {}", [$($text),+].join(", "))
                    }
                    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<$name, E> {
                        text.parse().map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(Text)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum! {
    /// Where a task is in its lifecycle.
    TaskStatus {
        /// Created or switched off by a user; only a user (PATCH/run now) moves it on.
        Disabled = "disabled",
        /// Waiting for `next_run_at`; the scheduler claims it (→ running), a user may cancel it.
        Scheduled = "scheduled",
        /// A node holds its lease and runs it; the executor ends the run, the rescuer
        /// takes it back when the lease expires.
        Running = "running",
        /// Its last run succeeded and it does not recur. Final until run again by a user.
        Completed = "completed",
        /// Its last run failed with no attempts left. Final until retried by a user.
        Failed = "failed",
        /// A user cancelled it. Final until run again by a user.
        Cancelled = "cancelled",
    }
}

text_enum! {
    /// How urgent a task is; higher priorities are claimed first.
    Priority {
        Low = "low",
        Normal = "normal",
        High = "high",
    }
}

impl Priority {
    /// Sort key stored in the database (higher runs first).
    pub fn rank(self) -> i64 {
        match self {
            Priority::Low => 0,
            Priority::Normal => 1,
            Priority::High => 2,
        }
    }

    pub fn from_rank(rank: i64) -> Priority {
        match rank {
            i64::MIN..=0 => Priority::Low,
            1 => Priority::Normal,
            _ => Priority::High,
        }
    }
}

text_enum! {
    /// How a task's last run ended.
    RunResult {
        Success = "success",
        Failed = "failed",
        Interrupted = "interrupted",
    }
}

text_enum! {
    /// One execution attempt of a task.
    RunStatus {
        /// The executor is running its steps; it ends the run, or the rescuer does
        /// (→ interrupted) when the lease expires.
        Running = "running",
        Completed = "completed",
        Failed = "failed",
        Cancelled = "cancelled",
        /// Its node died or a limit stopped it; retried if attempts remain.
        Interrupted = "interrupted",
    }
}

text_enum! {
    /// What a node is doing, as it last said.
    NodeState {
        /// Claiming and running tasks.
        Running = "running",
        /// Stopping (SIGTERM): claims nothing new, lets its running steps end.
        Draining = "draining",
        /// Stopped cleanly; its runs were finished or handed back.
        Stopped = "stopped",
    }
}

text_enum! {
    /// Whether a step takes part in runs.
    StepStatus {
        Scheduled = "scheduled",
        /// Skipped by every run until enabled again.
        Disabled = "disabled",
    }
}

text_enum! {
    /// One step within one run.
    StepRunStatus {
        /// Not reached yet; the executor starts it.
        Pending = "pending",
        /// The executor is running it; it finishes it, or the rescuer interrupts it.
        Running = "running",
        Completed = "completed",
        /// The module returned an error, trapped, or was missing/inactive.
        Failed = "failed",
        /// A limit (fuel, deadline, memory), a cancel or a dead node stopped it.
        Interrupted = "interrupted",
        /// Disabled, or not reached because an earlier step ended the run.
        Skipped = "skipped",
        /// Succeeded in an earlier run that this retry continues.
        Reused = "reused",
    }
}

text_enum! {
    /// Why a run started.
    RunTrigger {
        Schedule = "schedule",
        Manual = "manual",
        Retry = "retry",
        /// A single step run on its own (step-by-step mode).
        Step = "step",
    }
}

text_enum! {
    /// Token roles; each includes the rights of the ones before it.
    Role {
        /// Read everything, open the WebSocket.
        Viewer = "viewer",
        /// + create, change, run and cancel tasks.
        Operator = "operator",
        /// + modules, tokens, cleanup.
        Admin = "admin",
    }
}

/// A step as the user defined it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NewStep {
    pub sort_order: i64,
    pub controller: String,
    pub settings: Value,
    pub max_execution_time: i64,
    pub max_memory: Option<i64>,
    pub interrupt_on_step_fault: bool,
    pub status: StepStatus,
}

impl NewStep {
    /// A scheduled step with a 60 s limit, no memory cap of its own, that ends
    /// the run when it fails: the API's defaults.
    pub fn new(controller: impl Into<String>, settings: Value) -> Self {
        NewStep {
            sort_order: 1,
            controller: controller.into(),
            settings,
            max_execution_time: 60,
            max_memory: None,
            interrupt_on_step_fault: true,
            status: StepStatus::Scheduled,
        }
    }
}

/// A task as the user defined it. Validated before it reaches the store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NewTask {
    pub name: String,
    pub code: Option<String>,
    pub priority: Priority,
    /// `None` = now.
    pub start_at: Option<DateTime<Utc>>,
    pub run_interval: i64,
    /// A cron expression (see [`crate::schedule`]); with one, the task is
    /// first due at its first time from `start_at` (or now) and, after each
    /// run, at its next time. Exclusive with a non-zero `run_interval`.
    pub cron: Option<String>,
    /// The IANA zone `cron` is read in.
    pub timezone: String,
    pub max_execution_time: i64,
    pub max_attempts: i64,
    pub created_by: Option<String>,
    pub details: Map<String, Value>,
    /// Names and ciphertexts (the store never sees plaintext).
    pub secrets: Vec<SealedSecret>,
    /// When this create replaces a task (same `code`): keep that task's
    /// secrets as they are, and ignore `secrets` (a request that does not
    /// mention secrets must not delete them). A new task gets `secrets`.
    pub keep_secrets: bool,
    /// Create it `disabled` instead of `scheduled`.
    pub disabled: bool,
    /// The URL that gets a signed POST when a run of the task ends
    /// (AbanteCart's complete-task-url); the API checks its host.
    pub hook_url: Option<String>,
    /// At most this many of its runs start in any minute (None: no limit).
    pub max_starts_per_minute: Option<i64>,
    pub steps: Vec<NewStep>,
}

impl NewTask {
    /// A normal-priority task due now, run once, one attempt, no task-wide
    /// limit; steps are numbered in the order given.
    pub fn new(name: impl Into<String>, steps: Vec<NewStep>) -> Self {
        let steps = steps
            .into_iter()
            .enumerate()
            .map(|(i, step)| NewStep {
                sort_order: i as i64 + 1,
                ..step
            })
            .collect();
        NewTask {
            name: name.into(),
            code: None,
            priority: Priority::Normal,
            start_at: None,
            run_interval: 0,
            cron: None,
            timezone: crate::schedule::DEFAULT_TIMEZONE.to_string(),
            max_execution_time: 0,
            max_attempts: 1,
            created_by: None,
            details: Map::new(),
            secrets: Vec::new(),
            keep_secrets: false,
            disabled: false,
            hook_url: None,
            max_starts_per_minute: None,
            steps,
        }
    }

    /// Whether it may start in its create ([`super::Store::create_and_claim`]):
    /// a plain new task (no code that could replace one, no sealed secrets),
    /// enabled, with steps, due at once (no cron, no start in the future) and
    /// no starts-per-minute limit of its own (only a claim admits by limits).
    pub fn starts_at_create(&self, now: DateTime<Utc>) -> bool {
        self.code.is_none()
            && self.secrets.is_empty()
            && !self.disabled
            && !self.steps.is_empty()
            && self.cron.is_none()
            && self.start_at.is_none_or(|at| at <= now)
            && self.max_starts_per_minute.is_none()
    }
}

/// An encrypted secret value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SealedSecret {
    pub name: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Step {
    pub id: i64,
    pub task_id: i64,
    pub sort_order: i64,
    pub controller: String,
    #[schema(value_type = Object)]
    pub settings: Value,
    pub max_execution_time: i64,
    pub max_memory: Option<i64>,
    pub interrupt_on_step_fault: bool,
    pub status: StepStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Task {
    pub id: i64,
    pub name: String,
    pub code: Option<String>,
    pub status: TaskStatus,
    pub priority: Priority,
    pub start_at: Option<DateTime<Utc>>,
    /// Seconds between the end of a run and the next; 0 = not on an interval.
    pub run_interval: i64,
    /// A cron expression the task recurs on (instead of `run_interval`).
    pub cron: Option<String>,
    /// The IANA zone `cron` is read in (`UTC` unless set).
    pub timezone: String,
    pub max_execution_time: i64,
    pub max_attempts: i64,
    pub attempts: i64,
    pub progress: f64,
    pub message: Option<String>,
    pub last_result: Option<RunResult>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub next_run_at: Option<DateTime<Utc>>,
    pub created_by: Option<String>,
    #[schema(value_type = Object)]
    pub details: Map<String, Value>,
    /// Names only: values are never read back out of the store except by the executor.
    pub secret_names: Vec<String>,
    pub current_run_id: Option<i64>,
    /// The URL that gets a signed POST when a run ends (null: none).
    #[serde(default)]
    pub hook_url: Option<String>,
    /// At most this many of its runs start in any minute (a sliding window
    /// of 60 seconds); null: no limit. A due task it holds back waits, and
    /// its `message` says so.
    #[serde(default)]
    pub max_starts_per_minute: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub steps: Vec<Step>,
    /// When the task will run next by itself, soonest first (at most five):
    /// for a scheduled task its `next_run_at`, then, on a cron schedule, the
    /// schedule's following times; for a running cron task the schedule's
    /// times after now. Computed when the API reads the task, never stored
    /// (the store leaves it empty).
    #[serde(default)]
    pub next_runs: Vec<DateTime<Utc>>,
}

impl Task {
    /// The task as an applied run end leaves it in the store, given the task
    /// as its claim returned it and nothing else changed it since (the store
    /// says so: [`WriteAnswer::AppliedToClaimed`]). Times as stored, to the
    /// millisecond; a run end without a message keeps the stored one.
    pub fn after_run_end(mut self, end: &RunEnd) -> Task {
        let stored = |at: DateTime<Utc>| {
            DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or(at)
        };
        self.status = end.task_status;
        self.last_result = Some(end.last_result);
        self.next_run_at = end.next_run_at.map(stored);
        self.attempts = end.attempts;
        self.progress = if end.progress.is_finite() {
            end.progress
        } else {
            0.0
        };
        if end.message.is_some() {
            self.message.clone_from(&end.message);
        }
        self.updated_at = stored(end.finished_at);
        self.current_run_id = None;
        self
    }
}

/// A Stepwise server sharing the store, as it last reported itself (see
/// [`super::Store::beat_node`]). Whether it is alive is the reader's call:
/// a node whose heartbeat is older than a lease is dead or cut off.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Node {
    /// The node's id (`--node-id`, by default the host name).
    pub id: String,
    /// Where its API listens, as it was told (`--listen`).
    pub address: Option<String>,
    /// The Stepwise version it runs.
    pub version: String,
    pub state: NodeState,
    pub started_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
    /// Runs executing on it at its last heartbeat.
    pub running_runs: i64,
}

/// Changes a user may make to a task (PATCH). `None` = unchanged.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TaskPatch {
    pub name: Option<String>,
    pub priority: Option<Priority>,
    pub start_at: Option<DateTime<Utc>>,
    pub run_interval: Option<i64>,
    /// `Some(None)` removes the cron schedule. A new cron or zone moves a
    /// scheduled task's next run to the schedule's first time from now.
    pub cron: Option<Option<String>>,
    pub timezone: Option<String>,
    pub max_execution_time: Option<i64>,
    pub max_attempts: Option<i64>,
    /// Merged into the details; a JSON null removes a key.
    pub details: Option<Map<String, Value>>,
    /// `true` → disabled (only from scheduled/completed/failed/cancelled);
    /// `false` → scheduled (from disabled), due at `start_at` or now.
    pub disabled: Option<bool>,
    /// (step id, enabled)
    pub step_status: Vec<(i64, StepStatus)>,
    /// Secrets to add, or to replace if the task has one of that name.
    pub set_secrets: Vec<SealedSecret>,
    /// Names of secrets to remove (a name the task lacks is no error).
    pub remove_secrets: Vec<String>,
    /// `Some(None)` removes the completion hook. Runs that already ended
    /// keep their deliveries (to the URL of their time).
    pub hook_url: Option<Option<String>>,
    /// `Some(None)` removes the task's rate limit.
    pub max_starts_per_minute: Option<Option<i64>>,
}

/// One change to a task's steps, made without re-posting the task
/// ([`super::Store::edit_steps`]). A run keeps the steps it was claimed
/// with: an edit while it runs changes the runs after it.
#[derive(Debug, Clone, PartialEq)]
pub enum StepEdit {
    /// Add a step at its `sort_order`.
    Add(NewStep),
    /// Change some fields of a step.
    Change { step_id: i64, changes: StepChanges },
    /// Remove a step (not the last one: a task has at least one).
    Remove { step_id: i64 },
    /// Number the task's steps 1, 2, … in this order; lists each step once.
    Reorder(Vec<i64>),
}

/// Fields of a step to change; `None` = unchanged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepChanges {
    pub sort_order: Option<i64>,
    pub controller: Option<String>,
    pub settings: Option<Value>,
    pub max_execution_time: Option<i64>,
    /// `Some(None)` removes the step's own cap (the server's default applies).
    pub max_memory: Option<Option<i64>>,
    pub interrupt_on_step_fault: Option<bool>,
    pub status: Option<StepStatus>,
}

impl StepChanges {
    /// Whether the step would do something else: another module, settings
    /// or limits. Such a step is run again by a retry (not reused from the
    /// run it continues) and loses its checkpoint.
    pub fn changes_the_work(&self) -> bool {
        self.controller.is_some()
            || self.settings.is_some()
            || self.max_execution_time.is_some()
            || self.max_memory.is_some()
    }
}

/// Filters for listing tasks, newest first, with a cursor.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub status: Option<TaskStatus>,
    pub code: Option<String>,
    /// Tasks with a step whose controller is this module path.
    pub module: Option<String>,
    /// Only ids below this (the cursor: stable under concurrent inserts).
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// A run claimed by a node: what the executor needs to run it.
#[derive(Debug, Clone)]
pub struct ClaimedRun {
    pub run_id: i64,
    pub task: Task,
    pub attempt: i64,
    pub trigger: RunTrigger,
    /// Steps of this run in order, with their step-run rows.
    pub steps: Vec<PlannedStep>,
    /// Sealed secrets, for the executor to open for `secret(name)`.
    pub secrets: Vec<SealedSecret>,
    /// How long the task's last completed runs took (seconds, newest first, at
    /// most five): the ETA's prior before this run has a rate of its own.
    pub past_durations: Vec<f64>,
}

/// The module a step's controller names, as registered when the run was
/// claimed: the run pins this version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleRef {
    pub hash: String,
    pub active: bool,
    /// The module has a concurrency or rate limit: the end of a run of it
    /// may let a task the limit held back start.
    pub limited: bool,
}

#[derive(Debug, Clone)]
pub struct PlannedStep {
    pub step: Step,
    pub step_run_id: i64,
    /// `Pending` to run; `Reused` (done in the run this retry continues) or
    /// `Skipped` (disabled, or not the single step of a step run) to pass over.
    pub status: StepRunStatus,
    /// The controller's module at claim time; `None` when it is not registered.
    pub module: Option<ModuleRef>,
}

/// How a step run ended, written once.
#[derive(Debug, Clone)]
pub struct StepRunEnd {
    pub status: StepRunStatus,
    /// The typed outcome (StepOutcome as JSON).
    pub outcome: Value,
    /// The step's output JSON when it completed.
    pub result: Option<Value>,
    pub error: Option<String>,
    pub progress: f64,
    pub message: Option<String>,
    pub fuel_used: i64,
    pub peak_memory: i64,
    pub finished_at: DateTime<Utc>,
}

/// How a run ended and what becomes of its task, applied in one transaction.
#[derive(Debug, Clone)]
pub struct RunEnd {
    pub run_status: RunStatus,
    pub message: Option<String>,
    pub finished_at: DateTime<Utc>,
    pub task_status: TaskStatus,
    pub last_result: RunResult,
    pub next_run_at: Option<DateTime<Utc>>,
    /// New value of the task's attempt counter (reset to 0 when a new cycle starts).
    pub attempts: i64,
    /// `true` when the next run continues this one (a retry): it reuses the
    /// steps this run completed and their checkpoints.
    pub resume_next: bool,
    pub progress: f64,
    /// The rescuer ended this run because its node stopped (a crash or a
    /// restart), not the executor: the run is `interrupted`, but statistics
    /// and alerts judge it neither a success nor a failure.
    pub rescued: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Run {
    pub id: i64,
    pub task_id: i64,
    pub attempt: i64,
    pub status: RunStatus,
    pub trigger: RunTrigger,
    pub node: String,
    pub message: Option<String>,
    /// Ended by the rescuer, not by its executor: its node died, hung or
    /// stopped while it ran (see `RunEnd::rescued`).
    #[serde(default)]
    pub rescued: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub steps: Vec<StepRun>,
    /// The completion hook sent when the run ended (a task with a
    /// `hook_url`), with its tries. Filled when the API lists runs (the
    /// store leaves it empty).
    #[serde(default)]
    pub hook_deliveries: Vec<HookDelivery>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct StepRun {
    pub id: i64,
    pub run_id: i64,
    pub step_id: i64,
    pub sort_order: i64,
    pub controller: String,
    pub status: StepRunStatus,
    pub module_hash: Option<String>,
    #[schema(value_type = Option<Object>, nullable)]
    pub outcome: Option<Value>,
    #[schema(value_type = Value)]
    pub result: Option<Value>,
    pub error: Option<String>,
    pub progress: f64,
    pub message: Option<String>,
    pub fuel_used: i64,
    pub peak_memory: i64,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

text_enum! {
    /// Where the completion-hook delivery of one run end is.
    HookStatus {
        /// Waiting for its next try (or being tried by a node now).
        Pending = "pending",
        /// The receiver answered 2xx.
        Delivered = "delivered",
        /// Every try failed; a user may retry it.
        Failed = "failed",
    }
}

/// The completion-hook delivery of one run end (a task with a `hook_url`),
/// with its tries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct HookDelivery {
    pub id: i64,
    pub task_id: i64,
    pub run_id: i64,
    /// Where it is sent: the task's URL when the run ended.
    pub url: String,
    pub status: HookStatus,
    /// Tries so far.
    pub attempts: i64,
    /// When a pending delivery is tried next (null once final).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// When it was delivered or given up.
    pub finished_at: Option<DateTime<Utc>>,
    /// Each try, oldest first.
    pub attempt_log: Vec<HookAttempt>,
}

/// One try of a [`HookDelivery`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct HookAttempt {
    /// 1 for the first try of the delivery, counting on across user retries.
    pub attempt: i64,
    /// The node that sent it.
    pub node: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
    /// The receiver's HTTP status; null when none came (refused, timed out).
    pub status_code: Option<i64>,
    /// Why it failed; null when it was delivered.
    pub error: Option<String>,
}

/// A delivery claimed by a node, with what its POST says
/// ([`super::Store::claim_hooks`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DueHook {
    pub delivery_id: i64,
    /// The number of this try (the delivery's `attempts` after the claim).
    pub attempt: i64,
    /// Tries since the delivery was created or a user last retried it: the
    /// retry budget counts these.
    pub round_attempt: i64,
    pub url: String,
    pub task_id: i64,
    pub task_name: String,
    pub task_code: Option<String>,
    /// The run that ended (without its step runs).
    pub run: Run,
}

/// What a try leaves a delivery with ([`super::Store::record_hook_attempt`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HookNext {
    Delivered,
    /// Try again at this time.
    RetryAt(DateTime<Utc>),
    /// No try is left: `failed`.
    GiveUp,
}

/// A registered module (the bytes live in a content-addressed blob).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Module {
    pub path: String,
    pub hash: String,
    pub size: i64,
    /// The language its component says it was written in (`Rust`,
    /// `Python`, `JavaScript`, …); null when it does not say.
    pub language: Option<String>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// What the module says of itself (its `stepwise:metadata` section, or
    /// the metadata given beside it at upload); null when it says nothing.
    pub metadata: Option<ModuleMetadata>,
    /// How many runs using it may run at once and start a minute.
    #[serde(default)]
    pub limits: ModuleLimits,
}

/// A module's concurrency and rate limits; null is "no limit". A run holds
/// a slot of every limited module among its enabled steps from its start to
/// its end (a bulk mail task holds its mail module's slot while it runs),
/// and counts as a start of each of them when it starts. A due task that a
/// full module holds back waits, and its `message` says which limit.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModuleLimits {
    /// Runs using the module that may run at once, across every node.
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_running: Option<i64>,
    /// Runs using the module that may start in any minute (a sliding
    /// window of 60 seconds).
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_starts_per_minute: Option<i64>,
}

/// A limited module and what it uses of its limits now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ModuleUsage {
    pub path: String,
    pub limits: ModuleLimits,
    /// Runs holding one of its slots that are running.
    pub running: i64,
    /// Runs that took one of its slots in the last 60 seconds.
    pub starts_last_minute: i64,
}

impl ModuleUsage {
    /// How many more runs may start on it now.
    pub fn room(&self) -> i64 {
        let running = self.limits.max_running.map(|max| max - self.running);
        let starts = self
            .limits
            .max_starts_per_minute
            .map(|max| max - self.starts_last_minute);
        running
            .into_iter()
            .chain(starts)
            .min()
            .unwrap_or(i64::MAX)
            .max(0)
    }

    /// Why no run of it may start now, when none may.
    pub fn holds_back(&self) -> Option<String> {
        let path = &self.path;
        if let Some(max) = self.limits.max_running
            && self.running >= max
        {
            return Some(format!(
                "waiting: module `{path}` has {} runs running, its max_running is {max}",
                self.running
            ));
        }
        if let Some(max) = self.limits.max_starts_per_minute
            && self.starts_last_minute >= max
        {
            return Some(format!(
                "waiting: module `{path}` started {} runs in the last minute, its max_starts_per_minute is {max}",
                self.starts_last_minute
            ));
        }
        None
    }
}

/// A task with a step whose module is not registered (never was, or was
/// deleted): it cannot run until the module is uploaded again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct MissingModuleTask {
    /// The module path the step names.
    pub module: String,
    pub task_id: i64,
    pub task_name: String,
    pub task_status: TaskStatus,
}

/// A module's title, description, version and the JSON Schema its step
/// settings must match (checked by the API at upload; stored as given).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModuleMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// A JSON Schema (draft 2020-12 unless `$schema` says otherwise) that a
    /// step's `settings` must match at task create and step edit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub settings_schema: Option<JsonText>,
}

/// JSON kept as it was written, its keys in their order: a form rendered
/// from a settings schema shows the fields in the order the module's author
/// gave them, where a [`Value`] would sort them by name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JsonText(Box<serde_json::value::RawValue>);

impl JsonText {
    /// The JSON as a value (to check it, or to check against it).
    pub fn value(&self) -> Value {
        serde_json::from_str(self.0.get()).expect("a RawValue holds valid JSON")
    }
}

impl PartialEq for JsonText {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Artifact {
    pub run_id: i64,
    pub step_id: Option<i64>,
    pub name: String,
    pub size: i64,
    pub created_at: DateTime<Utc>,
}

/// Where an artifact's bytes are: one chunk per write or append, in order
/// (see [`super::Store::artifact_chunks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactChunks {
    /// Total bytes, the chunks' sizes added up.
    pub size: i64,
    pub chunk_ids: Vec<i64>,
}

/// A persisted event (status change or log line).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct EventRecord {
    pub task_id: i64,
    pub run_id: Option<i64>,
    pub step_id: Option<i64>,
    /// `task`, `step` or `log`.
    pub kind: String,
    /// Log level for `log` events.
    pub level: Option<String>,
    pub message: String,
    #[schema(value_type = Option<Object>, nullable)]
    pub data: Option<Value>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Token {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// One write of the executor, applied with others in one transaction
/// ([`super::Store::apply_writes`]): group commit for the run path.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Like [`super::Store::start_step`].
    StartStep {
        step_run_id: i64,
        module_hash: Option<String>,
        at: DateTime<Utc>,
    },
    /// Like [`super::Store::finish_step`].
    FinishStep { step_run_id: i64, end: StepRunEnd },
    /// Like [`super::Store::finish_run`].
    FinishRun {
        task_id: i64,
        run_id: i64,
        end: RunEnd,
        /// The task's `updated_at` as its claim returned it, when someone
        /// waits on this run's end: the answer then says whether the task
        /// was still as the claim left it ([`WriteAnswer::AppliedToClaimed`]),
        /// so that the waiter can be answered without reading it again.
        claimed_version: Option<DateTime<Utc>>,
    },
    /// Like [`super::Store::save_step_progress`].
    SaveProgress {
        run_id: i64,
        step_run_id: i64,
        step_progress: f64,
        task_progress: f64,
        message: Option<String>,
    },
}

/// What one executor write did (see [`super::Store::apply_writes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteAnswer {
    /// Not applied: its step run or run had ended already (rescued, say).
    Skipped,
    Applied,
    /// A run end that gave a `claimed_version` applied to a task nothing
    /// else had changed since its claim (its `updated_at` was that version):
    /// the task is now the claimed one with the end applied
    /// ([`Task::after_run_end`]).
    AppliedToClaimed,
}

impl WriteAnswer {
    /// A write that either applied or found its row ended already.
    pub fn from_applied(applied: bool) -> Self {
        if applied {
            WriteAnswer::Applied
        } else {
            WriteAnswer::Skipped
        }
    }

    pub fn applied(self) -> bool {
        self != WriteAnswer::Skipped
    }
}

/// So that a batch's answers compare with the `applied` flags they carry.
impl PartialEq<bool> for WriteAnswer {
    fn eq(&self, applied: &bool) -> bool {
        self.applied() == *applied
    }
}

/// Counts of tasks by status.
pub type StatusCounts = Vec<(TaskStatus, i64)>;

/// Every status's count from a store's `(status, count)` rows, zero for a
/// status they lack.
pub fn status_counts<'a>(rows: impl Iterator<Item = (&'a str, i64)> + Clone) -> StatusCounts {
    TaskStatus::ALL
        .iter()
        .map(|status| {
            let mut rows = rows.clone();
            let count = rows
                .find(|(s, _)| *s == status.as_str())
                .map_or(0, |(_, n)| n);
            (*status, count)
        })
        .collect()
}

/// Artifact names are file names: 1–128 of `[A-Za-z0-9._-]`, not starting with a dot.
pub fn validate_artifact_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "artifact name `{name}` is not allowed: use 1–128 letters, digits, `.`, `_` or `-`, not starting with `.`"
        ))
    }
}

// ---- statistics and alerts ---------------------------------------------------

/// How runs went over a window ([`super::Store::performance`]): counts and
/// averages the database computes, rates left to the caller.
///
/// The runs counted are those *started* in the window. A run is *judged* once
/// it ended `completed` (a success), or `failed` or `interrupted` (a failure);
/// `cancelled` runs (a user's decision), running ones and rescued ones (ended
/// by the rescuer because their node stopped: a crash says nothing about the
/// task, its retry does) are counted in `runs` but judged neither way.
#[derive(Debug, Clone, PartialEq)]
pub struct PerformanceStats {
    /// Runs started in the window, whatever their status.
    pub runs: i64,
    /// Of those, runs that ended `completed`.
    pub completed: i64,
    /// Of those, runs that ended `failed` or `interrupted` (not rescued).
    pub failed: i64,
    /// Of those, runs the rescuer ended because their node stopped.
    pub rescued: i64,
    /// Mean wall-clock time of the judged runs; `None` when there is none.
    pub average_duration_seconds: Option<f64>,
    /// Per module (step controller), by module path.
    pub modules: Vec<ModulePerformance>,
    /// Judged runs by the UTC hour they ended in, oldest first; hours with no
    /// ended run are absent.
    pub throughput: Vec<HourThroughput>,
}

/// The step runs of one module within the runs of a [`PerformanceStats`].
/// A step run is judged like a run: `completed` is a success, `failed` or
/// `interrupted` a failure — except a step interrupted because its run was
/// cancelled or rescued, which is judged neither way.
#[derive(Debug, Clone, PartialEq)]
pub struct ModulePerformance {
    /// The module path (`step_runs.controller`).
    pub module: String,
    /// Step runs that executed or are executing (pending, skipped and reused
    /// ones did not run this module).
    pub runs: i64,
    pub completed: i64,
    pub failed: i64,
    /// Means over the judged step runs; `None` when there is none.
    pub average_duration_seconds: Option<f64>,
    pub average_fuel: Option<f64>,
    /// Bytes.
    pub average_peak_memory: Option<f64>,
    /// When the latest of these step runs started.
    pub last_run_at: Option<DateTime<Utc>>,
}

/// Judged runs that ended within one UTC hour.
#[derive(Debug, Clone, PartialEq)]
pub struct HourThroughput {
    /// Start of the hour.
    pub hour: DateTime<Utc>,
    pub completed: i64,
    /// `failed` or `interrupted`.
    pub failed: i64,
}

/// What alerting looks at ([`super::Store::alert_facts`]). The store reports
/// facts; the caller decides with its thresholds what deserves an alert.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertFacts {
    /// Runs that ended in the recent window `completed`.
    pub recent_completed: i64,
    /// Runs that ended in the recent window `failed` or `interrupted`
    /// (cancelled and rescued runs are left out).
    pub recent_failed: i64,
    /// Tasks a node could claim now (scheduled, due, no enabled step on an
    /// inactive module).
    pub due_tasks: i64,
    /// The one of them due the longest.
    pub oldest_due: Option<DueTask>,
    /// Every running task (few: at most the nodes' workers), oldest run first.
    pub running: Vec<RunningRun>,
    /// Modules whose latest step runs in the recent window failed in a row,
    /// most failures first.
    pub failing_modules: Vec<FailingModule>,
}

/// A due task waiting for a node.
#[derive(Debug, Clone, PartialEq)]
pub struct DueTask {
    pub task_id: i64,
    pub name: String,
    pub next_run_at: DateTime<Utc>,
}

/// A running task and its run, with what tells whether it is stuck.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningRun {
    pub task_id: i64,
    pub name: String,
    pub run_id: i64,
    /// The node holding the lease.
    pub node: Option<String>,
    pub started_at: DateTime<Utc>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The task's limit in seconds (0 = none).
    pub max_execution_time: i64,
}

/// A module whose latest step runs in the recent window all failed.
#[derive(Debug, Clone, PartialEq)]
pub struct FailingModule {
    pub module: String,
    /// `failed` step runs since its last `completed` one in the window
    /// (interrupted step runs neither count nor break the streak).
    pub consecutive_failures: i64,
    /// The error of the latest of them.
    pub last_error: Option<String>,
    pub last_failed_at: DateTime<Utc>,
}
