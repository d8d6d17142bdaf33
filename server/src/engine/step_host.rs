//! The engine's side of a step's capabilities: progress and logs go to the
//! event bus (and, throttled or batched, to the store); checkpoints and
//! artifacts go to the store; secrets come from the run's opened secrets.
//! Every text a step hands over is masked here (see [`super::masking`]),
//! before it is stored or published.

use super::Inner;
use super::masking::SecretMask;
use super::progress::{RunProgress, eta_seconds};
use super::run_logs::RunLogs;
use crate::events::{Event, LogLine, StepState, TaskState};
use crate::runtime::{CapExceeded, HostRefusal, LogLevel, StepHost};
use crate::store::{EventRecord, WriteOp};
use chrono::Utc;
use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a step's in-flight progress is written to the store. The bus
/// carries every update; the store only needs to survive a restart.
const PROGRESS_SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// State shared by the steps of one run.
pub(super) struct RunContext {
    pub inner: Arc<Inner>,
    pub task_id: i64,
    pub task_name: String,
    pub run_id: i64,
    pub started: Instant,
    pub past_runs: Vec<f64>,
    pub secrets: HashMap<String, String>,
    /// The secrets' values, masked out of what the run's steps say.
    pub mask: SecretMask,
    pub progress: Mutex<RunProgress>,
    pub message: Mutex<Option<String>>,
    /// The run's log lines, capped (first and last kept).
    pub logs: RunLogs,
}

impl RunContext {
    /// Publish the task's running state with the current percent and ETA.
    pub fn publish_task(&self, current_step: Option<i64>) -> f64 {
        let percent = self.progress.lock().percent();
        let eta = eta_seconds(percent, self.started.elapsed(), &self.past_runs);
        self.inner.bus.publish(Event::Task(TaskState {
            task_id: self.task_id,
            seq: 0,
            name: self.task_name.clone(),
            status: "running".into(),
            progress: percent,
            message: self.message.lock().clone(),
            run_id: Some(self.run_id),
            current_step,
            eta_seconds: eta,
            last_result: None,
            next_run_at: None,
            updated_at: Utc::now(),
        }));
        percent
    }

    /// Record a log line: within the run's head (see [`super::run_logs`]) on
    /// the bus at once and in the store in batches; past it, held for the
    /// run's end, where the last lines are kept. Secret values are masked
    /// out of it first.
    pub fn log(&self, step_id: i64, level: LogLevel, message: &str) {
        let line = EventRecord {
            task_id: self.task_id,
            run_id: Some(self.run_id),
            step_id: Some(step_id),
            kind: "log".into(),
            level: Some(level.as_str().into()),
            message: self.mask.text(message).into_owned(),
            data: None,
            created_at: Utc::now(),
        };
        match self.logs.admit(line) {
            Some(line) => self.write_log(line),
            None if self.logs.head_just_filled() => self.publish_log(&EventRecord {
                level: Some(LogLevel::Warn.as_str().into()),
                message: format!(
                    "log limit of {} lines per run reached: the run's last lines are \
                     kept and shown when it ends",
                    self.inner.config.max_log_lines_per_run
                ),
                step_id: Some(step_id),
                ..self.run_line()
            }),
            None => {}
        }
    }

    /// At the run's end: write the lines held past the head, after a line
    /// that says how many were dropped.
    pub fn finish_logs(&self) {
        self.inner.metrics.log_lines_dropped(self.logs.dropped());
        for line in self.logs.finish(self.task_id, self.run_id, Utc::now()) {
            self.write_log(line);
        }
    }

    fn write_log(&self, line: EventRecord) {
        self.publish_log(&line);
        self.inner.event_writer.push(line);
    }

    fn publish_log(&self, line: &EventRecord) {
        self.inner.bus.publish(Event::Log(LogLine {
            task_id: self.task_id,
            seq: 0,
            run_id: self.run_id,
            step_id: line.step_id.unwrap_or(0),
            level: line.level.clone().unwrap_or_default(),
            message: line.message.clone(),
            at: line.created_at,
        }));
    }

    /// A log line of this run with no text yet.
    fn run_line(&self) -> EventRecord {
        EventRecord {
            task_id: self.task_id,
            run_id: Some(self.run_id),
            step_id: None,
            kind: "log".into(),
            level: None,
            message: String::new(),
            data: None,
            created_at: Utc::now(),
        }
    }
}

/// The capabilities of one step of one run.
pub(super) struct EngineStepHost {
    pub run: Arc<RunContext>,
    pub step_id: i64,
    pub step_run_id: i64,
    pub last_saved: Mutex<Option<Instant>>,
}

impl StepHost for EngineStepHost {
    fn progress(&self, percent: f32, message: &str) {
        let run = &self.run;
        let task_percent = run.progress.lock().step_progress(percent as f64);
        let message = (!message.is_empty()).then(|| run.mask.text(message).into_owned());
        *run.message.lock() = message.clone();
        run.inner.bus.publish(Event::Step(StepState {
            task_id: run.task_id,
            seq: 0,
            run_id: run.run_id,
            step_id: self.step_id,
            status: "running".into(),
            progress: percent as f64,
            message: message.clone(),
            error: None,
        }));
        run.publish_task(Some(self.step_id));

        let mut last_saved = self.last_saved.lock();
        if last_saved.is_none_or(|at| at.elapsed() >= PROGRESS_SAVE_INTERVAL) {
            *last_saved = Some(Instant::now());
            // Queued with the run's other writes: it rides on their next
            // group commit instead of costing a commit (and an fsync) of its own.
            run.inner.run_writer.queue(WriteOp::SaveProgress {
                run_id: run.run_id,
                step_run_id: self.step_run_id,
                step_progress: percent as f64,
                task_progress: task_percent,
                message,
            });
        }
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.run.log(self.step_id, level, message);
    }

    fn checkpoint_save(&self, data: Vec<u8>) -> BoxFuture<'static, Result<(), String>> {
        let inner = self.run.inner.clone();
        let (task_id, step_id) = (self.run.task_id, self.step_id);
        // The runtime refused a checkpoint over the cap before it got here.
        async move {
            inner
                .store
                .save_checkpoint(task_id, step_id, &data, Utc::now())
                .await
                .map_err(|e| {
                    tracing::error!(task_id, "saving a checkpoint failed: {e:#}");
                    "the checkpoint could not be saved".to_string()
                })
        }
        .boxed()
    }

    fn checkpoint_load(&self) -> BoxFuture<'static, Option<Vec<u8>>> {
        let store = self.run.inner.store.clone();
        let (task_id, step_id) = (self.run.task_id, self.step_id);
        async move { store.load_checkpoint(task_id, step_id).await.ok().flatten() }.boxed()
    }

    fn secret(&self, name: &str) -> Option<String> {
        self.run.secrets.get(name).cloned()
    }

    fn artifact_write(
        &self,
        name: String,
        data: Vec<u8>,
        append: bool,
    ) -> BoxFuture<'static, Result<(), HostRefusal>> {
        let inner = self.run.inner.clone();
        let (task_id, run_id, step_id) = (self.run.task_id, self.run.run_id, self.step_id);
        // Checked as the step wrote it, then masked: artifact listings are
        // shown to every viewer. A masked name holds `***`, which downloads
        // accept (see `api/task_history.rs`).
        let checked = crate::store::validate_artifact_name(&name);
        let name = self.run.mask.string(name);
        async move {
            checked?;
            let limit = inner.runtime.caps().artifact_bytes;
            let max = i64::try_from(limit).unwrap_or(i64::MAX);
            let written = inner
                .store
                .write_artifact(
                    task_id,
                    run_id,
                    step_id,
                    &name,
                    &data,
                    append,
                    max,
                    Utc::now(),
                )
                .await;
            match written {
                Ok(()) => Ok(()),
                Err(crate::store::StoreError::ArtifactOverCap(over)) => {
                    Err(HostRefusal::Cap(CapExceeded::Artifact {
                        name,
                        size: u64::try_from(over.size).unwrap_or(u64::MAX),
                        limit,
                    }))
                }
                Err(other) => {
                    tracing::error!(task_id, "writing artifact failed: {other:#}");
                    Err(format!("artifact `{name}` could not be written").into())
                }
            }
        }
        .boxed()
    }
}
