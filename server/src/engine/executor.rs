//! Runs one claimed run: its steps in order, each in the sandbox, then ends the
//! run and moves the task on through [`super::policy`].

use super::Inner;
use super::masking::SecretMask;
use super::metrics::StepFacts;
use super::policy::{self, RunVerdict};
use super::progress::RunProgress;
use super::run_logs::RunLogs;
use super::step_host::{EngineStepHost, RunContext};
use super::step_threads::Lingering;
use super::step_weights;
use super::workers::{WaitingRun, WorkerSlot};
use crate::events::{Event, StepState, TaskState};
use crate::runtime::{LogLevel, StepContext, StepLimits, StepOutcome, StepRequest};
use crate::store::{
    ClaimedRun, PlannedStep, StepRunEnd, StepRunStatus, Task, TaskStatus, WriteAnswer, WriteOp,
};
use chrono::Utc;
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What a finished run did (for tests and the CLI).
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub task_id: i64,
    pub run_id: i64,
    pub verdict: RunVerdict,
    pub task_status: TaskStatus,
    /// Whether this node's end of the run was applied (false if it was rescued meanwhile).
    pub applied: bool,
    /// Step id and outcome of each step this run executed.
    pub steps: Vec<(i64, StepOutcome)>,
}

/// `slot` is the worker slot the run holds while its steps run; it is given
/// back before the run's end is awaited on disk, so the node keeps its
/// configured number of steps running while commits are in flight.
pub(super) async fn execute(
    inner: Arc<Inner>,
    claimed: ClaimedRun,
    slot: Option<WorkerSlot>,
) -> RunSummary {
    let token = register(&inner, &claimed).await;
    execute_registered(inner, claimed, token, slot).await
}

/// A run claimed ahead of a free worker (see `workers.rs`): registered at
/// once, so that its lease is renewed and a cancel finds it while it waits,
/// then executed on the next worker that frees. One cancelled meanwhile ends
/// at once, without a worker: it runs no step.
pub(super) async fn execute_when_free(
    inner: Arc<Inner>,
    claimed: ClaimedRun,
    waiting: WaitingRun,
) -> RunSummary {
    let token = register(&inner, &claimed).await;
    let slot = tokio::select! {
        slot = waiting.slot() => Some(slot),
        _ = token.cancelled() => None,
    };
    execute_registered(inner, claimed, token, slot).await
}

/// Register the run as executing here, and take up a cancel that came
/// between its claim and now (see `running.rs`). That cancel is this run's
/// if the store says so: the note may be about a run of the task on another
/// node. If the store cannot say, the next heartbeat will. Done before a run
/// claimed ahead waits for a worker, so that such a cancel ends it at once,
/// not when a worker frees.
async fn register(inner: &Inner, claimed: &ClaimedRun) -> CancellationToken {
    let registered = inner.running.register(claimed.task.id, claimed.run_id);
    if registered.cancel_came_early
        && inner
            .store
            .cancel_requested(claimed.run_id)
            .await
            .unwrap_or(false)
    {
        registered.token.cancel();
    }
    registered.token
}

async fn execute_registered(
    inner: Arc<Inner>,
    claimed: ClaimedRun,
    token: CancellationToken,
    slot: Option<WorkerSlot>,
) -> RunSummary {
    if let Some(due) = claimed.task.next_run_at {
        inner
            .metrics
            .queue_waited((Utc::now() - due).to_std().unwrap_or_default());
    }
    // Every log line of the run (and of its steps, below) carries these.
    let span = tracing::info_span!("run", task_id = claimed.task.id, run_id = claimed.run_id);
    // Boxed, as each step is below: a future held inline is moved whole
    // every time the future around it is built or spawned, and a run's
    // future with its step's inline was tens of kilobytes, copied several
    // times per run (see `spawned_run_futures_stay_small`).
    Box::pin(execute_run(inner, claimed, token, slot))
        .instrument(span)
        .await
}

async fn execute_run(
    inner: Arc<Inner>,
    claimed: ClaimedRun,
    token: CancellationToken,
    slot: Option<WorkerSlot>,
) -> RunSummary {
    let (secrets, secret_errors) = inner.secrets.open_all(&claimed.secrets);
    let progress = run_progress(&inner, &claimed).await;
    let task = claimed.task;
    let past_runs = claimed.past_durations;
    let run = Arc::new(RunContext {
        inner: inner.clone(),
        task_id: task.id,
        task_name: task.name.clone(),
        run_id: claimed.run_id,
        started: Instant::now(),
        past_runs,
        mask: SecretMask::new(&secrets),
        secrets,
        progress: Mutex::new(progress),
        message: Mutex::new(None),
        logs: RunLogs::new(inner.config.max_log_lines_per_run),
    });
    run.publish_task(None);
    for error in secret_errors {
        run.log(0, LogLevel::Error, &error);
    }

    let task_deadline = (task.max_execution_time > 0)
        .then(|| run.started + Duration::from_secs(task.max_execution_time as u64));
    let mut verdict = RunVerdict::Succeeded;
    let mut message = None;
    let mut outcomes = Vec::new();
    // A cancelled step's guest still to be dropped: the worker slot waits for it.
    let mut lingering = None;
    for planned in claimed
        .steps
        .iter()
        .filter(|s| s.status == StepRunStatus::Pending)
    {
        if token.is_cancelled() {
            verdict = RunVerdict::Cancelled;
            break;
        }
        let span = tracing::info_span!(
            "step",
            step_id = planned.step.id,
            module = %planned.step.controller
        );
        let (status, outcome, error) = Box::pin(execute_step(
            &run,
            &task,
            claimed.attempt,
            planned,
            &token,
            task_deadline,
            &mut lingering,
        ))
        .instrument(span)
        .await;
        if status == StepRunStatus::Completed {
            // Only a finished step fills its share of the bar: a failed one
            // leaves the bar where the step stopped, which is the honest answer.
            run.progress.lock().step_done();
        }
        run.publish_task(None);
        outcomes.push((planned.step.id, outcome.clone()));
        if outcome == StepOutcome::Cancelled {
            verdict = RunVerdict::Cancelled;
            message = Some("cancelled".to_string());
            break;
        }
        let step_verdict = match status {
            StepRunStatus::Completed => continue,
            StepRunStatus::Interrupted => RunVerdict::Interrupted,
            _ if outcome.is_permanent() => RunVerdict::FailedPermanently,
            _ => RunVerdict::Failed,
        };
        verdict = verdict.max(step_verdict);
        message = error.map(|e| {
            format!(
                "step {} ({}): {e}",
                planned.step.sort_order, planned.step.controller
            )
        });
        let task_time_over = task_deadline.is_some_and(|d| Instant::now() >= d);
        if planned.step.interrupt_on_step_fault || task_time_over {
            break;
        }
    }

    run.finish_logs();
    let percent = run.progress.lock().percent();
    // Without an error, the run ends with its last progress message: the
    // stored one is only saved now and then, and would be stale.
    let message = message.or_else(|| run.message.lock().clone());
    let end = policy::run_end(
        &task,
        claimed.attempt,
        claimed.trigger,
        verdict,
        message,
        percent,
        Utc::now(),
        &inner.config.retry,
    );
    // Someone here waits on this end: ask whether the task is still as
    // claimed, so that they can be handed it (see `run_end_watch`).
    let claimed_version = inner
        .run_end_watches
        .is_watched(task.id)
        .then_some(task.updated_at);
    let finish = WriteOp::FinishRun {
        task_id: task.id,
        run_id: claimed.run_id,
        end: end.clone(),
        claimed_version,
    };
    match (slot, lingering) {
        (Some(slot), Some(guest)) => {
            tokio::spawn(async move {
                guest.gone().await;
                drop(slot);
            });
        }
        (slot, _) => drop(slot),
    }
    let answer = match inner.run_writer.commit(finish).await {
        Ok(answer) => answer,
        Err(e) => {
            // The lease will expire and the rescuer will end the run: nothing is lost.
            tracing::error!(
                task_id = task.id,
                run_id = claimed.run_id,
                "ending the run failed: {e:#}"
            );
            WriteAnswer::Skipped
        }
    };
    inner.running.remove(task.id);
    let applied = answer.applied();
    if answer == WriteAnswer::AppliedToClaimed {
        inner
            .run_end_watches
            .ended(task.clone().after_run_end(&end));
    }
    if applied {
        inner.metrics.run_ended(verdict);
        // Debug: at info, a busy node would write a line per run on its hot path.
        tracing::debug!(?verdict, status = %end.task_status, "run ended");
        inner.bus.publish(Event::Task(TaskState {
            task_id: task.id,
            seq: 0,
            name: task.name.clone(),
            status: end.task_status.to_string(),
            progress: end.progress,
            message: end.message.clone(),
            run_id: Some(claimed.run_id),
            current_step: None,
            eta_seconds: None,
            last_result: Some(end.last_result.to_string()),
            next_run_at: end.next_run_at,
            updated_at: end.finished_at,
        }));
    }
    // A worker is free: claim again if the scheduler wants more, or if this
    // end can make a task due (the task itself again, or one a limit of a
    // module it ran held back). Else the last claim found nothing more due,
    // and new tasks wake the scheduler themselves. Those waiting on this run
    // have heard of its end first (on a small machine the claim would run
    // first).
    let due_again = end.task_status == TaskStatus::Scheduled
        && end.next_run_at.is_some_and(|at| at <= Utc::now());
    let freed_a_limit = claimed
        .steps
        .iter()
        .any(|planned| planned.module.as_ref().is_some_and(|m| m.limited));
    if inner.claims_wanted.load(Ordering::Acquire) || due_again || freed_a_limit {
        inner.wake.notify_one();
    }
    RunSummary {
        task_id: task.id,
        run_id: claimed.run_id,
        verdict,
        task_status: end.task_status,
        applied,
        steps: outcomes,
    }
}

/// The run's progress bar, its steps weighed by how long they took in the
/// task's past runs, or else by what their modules took lately on this node.
/// A task that never completed a run, or runs one counted step, is spared
/// the read of its history.
async fn run_progress(inner: &Inner, claimed: &ClaimedRun) -> RunProgress {
    let counted: Vec<&PlannedStep> = claimed
        .steps
        .iter()
        .filter(|s| s.status != StepRunStatus::Skipped)
        .collect();
    let past = if counted.len() > 1 && !claimed.past_durations.is_empty() {
        // Without its history the bar weighs steps the same: no reason to fail the run.
        inner
            .store
            .list_runs(claimed.task.id, step_weights::PAST_RUNS + 1)
            .await
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let weights = step_weights::from_history(&counted, &past, &inner.module_durations);
    let mut done = 0.0;
    let mut to_run = Vec::new();
    for (planned, weight) in counted.iter().zip(weights) {
        match planned.status {
            StepRunStatus::Pending => to_run.push(weight),
            _ => done += weight,
        }
    }
    RunProgress::weighted(done, to_run)
}

/// Publish a task's stored state (after a run ended, or a cancel).
pub(super) fn publish_task_final(inner: &Inner, task: &Task) {
    inner.bus.publish(Event::Task(TaskState::stored(task, 0)));
}

/// Run one step; returns its stored status, the typed outcome and the error text.
async fn execute_step(
    run: &Arc<RunContext>,
    task: &Task,
    attempt: i64,
    planned: &PlannedStep,
    token: &CancellationToken,
    task_deadline: Option<Instant>,
    lingering: &mut Option<Lingering>,
) -> (StepRunStatus, StepOutcome, Option<String>) {
    let inner = &run.inner;
    let step = &planned.step;
    let started = Utc::now();
    publish_step(inner, run, step.id, "running", 0.0, None, None);

    let module = match resolve_module(inner, planned).await {
        Ok(module) => module,
        Err(message) => {
            inner.run_writer.queue(WriteOp::StartStep {
                step_run_id: planned.step_run_id,
                module_hash: None,
                at: started,
            });
            let outcome = StepOutcome::Failed {
                message: message.clone(),
            };
            return finish_step(inner, run, planned, outcome, 0, 0, 0.0).await;
        }
    };
    // Queued, not awaited: it commits with the step's end (or before it). If
    // the node dies first the step run stays pending and the rescuer ends the
    // run as interrupted; nothing is recorded as done that was not.
    inner.run_writer.queue(WriteOp::StartStep {
        step_run_id: planned.step_run_id,
        module_hash: Some(module.hash().to_string()),
        at: started,
    });

    let mut time = Duration::from_secs(step.max_execution_time.max(1) as u64);
    if let Some(deadline) = task_deadline {
        time = time.min(deadline.saturating_duration_since(Instant::now()));
    }
    let max_memory = step
        .max_memory
        .map(|m| m as u64)
        .unwrap_or(inner.config.default_max_memory)
        .min(inner.runtime.max_memory_bytes());
    let request = StepRequest {
        settings: step.settings.to_string(),
        limits: StepLimits {
            max_execution_time: time,
            max_memory,
        },
        context: StepContext {
            task_id: task.id,
            run_id: run.run_id,
            step_id: step.id,
            attempt: attempt.max(1) as u32,
            details: serde_json::Value::Object(task.details.clone()),
        },
    };
    let host = Arc::new(EngineStepHost {
        run: run.clone(),
        step_id: step.id,
        step_run_id: planned.step_run_id,
        last_saved: Mutex::new(None),
    });
    let running_since = Instant::now();
    let (report, guest) = inner
        .steps
        .run(&inner.runtime, module, request, host, token)
        .await;
    *lingering = guest;
    inner.metrics.step_ended(&StepFacts {
        module: &step.controller,
        outcome: &report.outcome,
        duration: running_since.elapsed(),
        fuel_used: report.fuel_used,
        peak_memory: report.peak_memory,
    });
    tracing::debug!(outcome = report.outcome.kind(), "step ended");
    if report.outcome.is_success() {
        inner
            .module_durations
            .record(&step.controller, running_since.elapsed().as_secs_f64());
    }
    let step_progress = if report.outcome.is_success() {
        100.0
    } else {
        0.0
    };
    finish_step(
        inner,
        run,
        planned,
        report.outcome,
        report.fuel_used as i64,
        report.peak_memory as i64,
        step_progress,
    )
    .await
}

/// The module version pinned when the run was claimed, loaded (and compiled)
/// once per version by the runtime's cache.
async fn resolve_module(
    inner: &Arc<Inner>,
    planned: &PlannedStep,
) -> Result<Arc<crate::runtime::LoadedModule>, String> {
    let path = &planned.step.controller;
    let Some(module) = &planned.module else {
        return Err(format!(
            "module `{path}` is not registered; upload it with PUT /api/v1/modules/{path}"
        ));
    };
    if !module.active {
        return Err(format!(
            "module `{path}` is inactive; enable it with PATCH /api/v1/modules/{path} {{\"active\": true}}"
        ));
    }
    let store = inner.store.clone();
    let hash = module.hash.clone();
    inner
        .runtime
        .module(&module.hash, || async move {
            store.module_bytes(&hash).await.ok().flatten()
        })
        .await
        .map_err(|e| format!("module `{path}` could not be loaded: {e}"))
}

async fn finish_step(
    inner: &Arc<Inner>,
    run: &Arc<RunContext>,
    planned: &PlannedStep,
    outcome: StepOutcome,
    fuel_used: i64,
    peak_memory: i64,
    progress: f64,
) -> (StepRunStatus, StepOutcome, Option<String>) {
    // The step's output and error are its text too: masked before anything keeps them.
    let outcome = run.mask.outcome(outcome);
    let status = if outcome.is_success() {
        StepRunStatus::Completed
    } else if outcome.is_interrupted() {
        StepRunStatus::Interrupted
    } else {
        StepRunStatus::Failed
    };
    let error = (!outcome.is_success()).then(|| outcome.summary());
    let result = match &outcome {
        StepOutcome::Completed { output } => Some(output.clone()),
        _ => None,
    };
    if let Some(error) = &error {
        run.log(planned.step.id, LogLevel::Error, error);
    }
    let end = StepRunEnd {
        status,
        outcome: serde_json::to_value(&outcome).unwrap_or_default(),
        result,
        error: error.clone(),
        progress,
        message: run.message.lock().clone(),
        fuel_used,
        peak_memory,
        finished_at: Utc::now(),
    };
    inner.run_writer.queue(WriteOp::FinishStep {
        step_run_id: planned.step_run_id,
        end: end.clone(),
    });
    publish_step(
        inner,
        run,
        planned.step.id,
        status.as_str(),
        progress,
        end.message.clone(),
        error.clone(),
    );
    (status, outcome, error)
}

fn publish_step(
    inner: &Inner,
    run: &RunContext,
    step_id: i64,
    status: &str,
    progress: f64,
    message: Option<String>,
    error: Option<String>,
) {
    inner.bus.publish(Event::Step(StepState {
        task_id: run.task_id,
        seq: 0,
        run_id: run.run_id,
        step_id,
        status: status.into(),
        progress,
        message,
        error,
    }));
}

#[cfg(test)]
mod tests;
