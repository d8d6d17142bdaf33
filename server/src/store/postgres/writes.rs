//! The executor's writes (step starts, progress, step ends, run ends) applied
//! in one transaction: one commit (one WAL flush) for a batch of many runs.
//!
//! The batch is applied set by set, not op by op: each kind of write is one
//! statement whose rows travel as arrays (`unnest`), so a batch of hundreds
//! of runs costs five statements, not several per run. Op by op (a PL/pgSQL
//! loop over a JSON array, migration 0001's `stepwise_apply_writes`) cost
//! PostgreSQL about three times as much per run end: every statement paid
//! the executor's start-up, every field a JSON lookup. That function stays
//! in the schema, unused by this version, so that nodes of the earlier one
//! keep working while a cluster is upgraded node by node.
//!
//! Applying by kind keeps the order that matters. An executor writes a step
//! run's start before its progress and its end, and a run's step ends before
//! the run's end, so the sets go in that order: starts, progress, step ends,
//! run ends. Within a set, each row is a different step run or run (the
//! repeated ones are folded here first: a step's progress keeps its last
//! value and its last message, as applying them one by one would).
//!
//! Every statement states its own condition (a step run ends only while
//! pending or running, a run only while its task is still on it), which
//! PostgreSQL re-checks on the latest row version: a rescuer on another node
//! and this node's executor cannot both end the same run.

use super::PostgresStore;
use super::rows::{ms, opt_ms};
use crate::store::{StoreError, StoreResult, WriteAnswer, WriteOp};
use anyhow::Context;
use sqlx::postgres::PgConnection;
use std::collections::{HashMap, HashSet};

pub(super) async fn apply_writes(
    store: &PostgresStore,
    ops: &[WriteOp],
) -> StoreResult<Vec<WriteAnswer>> {
    if ops.is_empty() {
        return Ok(Vec::new());
    }
    let batch = Batch::from_ops(ops);
    let deferred_mark = store.deferred.mark();
    let mut attempt = 1;
    loop {
        let applied = if batch.one_statement() {
            let mut conn = store.hot.writes.acquire().await?;
            batch.apply(&mut conn).await.map_err(StoreError::from)
        } else {
            let mut tx = store.hot.writes.begin().await?;
            let applied = batch.apply(&mut tx).await.map_err(StoreError::from);
            super::settle(tx, applied).await
        };
        match applied {
            Err(error) if attempt < ATTEMPTS && super::retryable(&error) => {
                tracing::warn!(
                    "applying {} executor writes: {error:#}; trying again",
                    ops.len()
                );
                attempt += 1;
            }
            Ok(applied) => {
                let answers = batch.answers(&applied);
                // A run end that applied updated its task: the commit wrote,
                // and waited for the WAL flush (see `super::deferred`).
                let ended_a_run = ops.iter().zip(&answers).any(|(op, answer)| {
                    answer.applied() && matches!(op, WriteOp::FinishRun { .. })
                });
                if ended_a_run {
                    store.deferred.covered_by(deferred_mark);
                }
                return Ok(answers);
            }
            Err(error) => return Err(error),
        }
    }
}

/// Tries of a batch that lost a deadlock (see [`super::retryable`]).
const ATTEMPTS: u32 = 3;

/// Step starts that did not end in the same batch.
const START_STEPS: &str = "UPDATE step_runs AS sr SET status = 'running', \
        module_hash = u.hash, started_at = u.at \
     FROM unnest($1::bigint[], $2::text[], $3::bigint[]) AS u(id, hash, at) \
     WHERE sr.id = u.id AND sr.status = 'pending'";

/// The last progress of each running step run, and of its task while the
/// task is still on that run.
const STEP_PROGRESS: &str = "UPDATE step_runs AS sr SET progress = u.progress, \
        message = COALESCE(u.message, sr.message) \
     FROM unnest($1::bigint[], $2::bigint[], $3::float8[], $4::text[]) \
          AS u(id, run, progress, message) \
     WHERE sr.id = u.id AND sr.run_id = u.run AND sr.status = 'running'";

const TASK_PROGRESS: &str = "UPDATE tasks AS t SET progress = u.progress, \
        message = COALESCE(u.message, t.message) \
     FROM unnest($1::bigint[], $2::float8[], $3::text[]) AS u(run, progress, message) \
     JOIN runs AS r ON r.id = u.run \
     WHERE t.id = r.task_id AND t.current_run_id = u.run AND t.status = 'running'";

/// Step ends and run ends, in one statement (`$1`–`$12` the step ends,
/// `$13`–`$25` the run ends); it answers which step runs (`kind` 's') and
/// runs ('r') it ended, and of a run end that gave its task's claimed
/// version, whether the task was still at it (`claimed`).
///
/// Step ends: a start that came in the same batch rides on its end (and
/// applies as a start would: only to a pending step run).
///
/// Run ends: the task leaves the run (only if it is still on it), then the
/// run ends and its unfinished step runs with it, and a task with a
/// completion hook gets its delivery (migration 0010), in the run end's
/// transaction so that a crash never loses one. The other writes read what
/// the task update returned, the hook's URL included (the update does not
/// change it): not `tasks` again, which was one more index lookup per task.
///
/// A waited run end's task version is read locked (`versions`), so it is the
/// latest committed one, which the task update then replaces: a snapshot's
/// read could miss an edit committed while the statement waited for the row.
///
/// All parts of one statement see the rows as they were before it, so the
/// step runs a run end closes leave out those this statement ends itself
/// (PostgreSQL would apply only one of two updates of a row).
const ENDS: &str = "WITH steps_done AS ( \
        UPDATE step_runs AS sr SET status = u.status, outcome = u.outcome, \
               result = u.result, error = u.error, progress = u.progress, message = u.message, \
               fuel_used = u.fuel, peak_memory = u.memory, finished_at = u.at, \
               module_hash = CASE WHEN sr.status = 'pending' AND u.start_at IS NOT NULL \
                                  THEN u.start_hash ELSE sr.module_hash END, \
               started_at = CASE WHEN sr.status = 'pending' AND u.start_at IS NOT NULL \
                                 THEN u.start_at ELSE sr.started_at END \
        FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::float8[], \
                    $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::text[], \
                    $12::bigint[]) \
             AS u(id, status, outcome, result, error, progress, message, fuel, memory, at, \
                  start_hash, start_at) \
        WHERE sr.id = u.id AND sr.status IN ('pending', 'running') \
        RETURNING sr.id), \
     u AS ( \
        SELECT * FROM unnest($13::bigint[], $14::bigint[], $15::text[], $16::text[], \
                             $17::text[], $18::bigint[], $19::bigint[], $20::float8[], \
                             $21::text[], $22::bigint[], $23::bigint[], $24::bool[], \
                             $25::bigint[]) \
          AS u(task, run, run_status, task_status, last_result, next_run_at, attempts, progress, \
               message, at, resume, rescued, claimed)), \
     versions AS ( \
        SELECT t.id, t.updated_at FROM tasks AS t JOIN u ON t.id = u.task \
        WHERE u.claimed IS NOT NULL FOR UPDATE OF t), \
     ended AS ( \
        UPDATE tasks AS t SET status = u.task_status, last_result = u.last_result, \
               next_run_at = u.next_run_at, attempts = u.attempts, progress = u.progress, \
               message = COALESCE(u.message, t.message), finished_at = u.at, updated_at = u.at, \
               resume_from_run_id = u.resume, current_run_id = NULL, lease_owner = NULL, \
               lease_expires_at = NULL, cancel_requested = FALSE, pending_trigger = NULL, \
               pending_step_id = NULL \
        FROM u LEFT JOIN versions AS v ON v.id = u.task \
        WHERE t.id = u.task AND t.current_run_id = u.run AND t.status = 'running' \
        RETURNING u.task, u.run, u.run_status, u.message, u.at, u.rescued, t.hook_url, \
                  COALESCE(v.updated_at = u.claimed, FALSE) AS claimed), \
     runs_ended AS ( \
        UPDATE runs AS r SET status = e.run_status, message = e.message, finished_at = e.at, \
               rescued = e.rescued \
        FROM ended AS e WHERE r.id = e.run), \
     steps_ended AS ( \
        UPDATE step_runs AS sr SET \
               status = CASE sr.status WHEN 'pending' THEN 'skipped' ELSE 'interrupted' END, \
               error = CASE sr.status WHEN 'running' THEN 'interrupted: the run ended' \
                                      ELSE sr.error END, \
               finished_at = CASE sr.status WHEN 'running' THEN e.at ELSE sr.finished_at END \
        FROM ended AS e WHERE sr.run_id = e.run AND sr.status IN ('pending', 'running') \
          AND sr.id <> ALL($1::bigint[])), \
     hooks_queued AS ( \
        INSERT INTO hook_deliveries (task_id, run_id, url, status, next_attempt_at, created_at) \
        SELECT e.task, e.run, e.hook_url, 'pending', e.at, e.at \
        FROM ended AS e WHERE e.hook_url IS NOT NULL \
        ON CONFLICT (run_id) DO NOTHING) \
     SELECT 's' AS kind, id, FALSE AS claimed FROM steps_done \
     UNION ALL SELECT 'r', run, claimed FROM ended";

/// One batch, sorted into its sets (see the module docs).
#[derive(Default)]
struct Batch {
    starts: Starts,
    progress: Progress,
    step_ends: StepEnds,
    run_ends: RunEnds,
    /// Per op, where its answer comes from.
    answers: Vec<Answer>,
    /// Step runs and runs whose end is in the batch already.
    steps_ending: HashSet<i64>,
    runs_ending: HashSet<i64>,
}

/// An op's answer: applied whatever happened (starts and progress: nobody
/// waits on them), or applied if its step run or run was updated.
#[derive(Clone, Copy)]
enum Answer {
    Always,
    StepEnded(i64),
    RunEnded(i64),
    /// A second end of the same step run or run in one batch: the first
    /// took it, as it would have op by op.
    Never,
}

/// What the statements updated: step runs, and runs (whether their task
/// was at its claimed version).
struct Applied {
    steps: HashSet<i64>,
    runs: HashMap<i64, bool>,
}

#[derive(Default)]
struct Starts {
    id: Vec<i64>,
    hash: Vec<Option<String>>,
    at: Vec<i64>,
}

/// Progress folded per step run and per run, in first-seen order: columns
/// as the statements bind them, and where each step run's and run's row is.
#[derive(Default)]
struct Progress {
    step_run: Vec<i64>,
    step_run_of: Vec<i64>,
    step_progress: Vec<f64>,
    step_message: Vec<Option<String>>,
    step_row: HashMap<i64, usize>,
    run: Vec<i64>,
    task_progress: Vec<f64>,
    task_message: Vec<Option<String>>,
    run_row: HashMap<i64, usize>,
}

#[derive(Default)]
struct StepEnds {
    id: Vec<i64>,
    status: Vec<&'static str>,
    outcome: Vec<String>,
    result: Vec<Option<String>>,
    error: Vec<Option<String>>,
    progress: Vec<f64>,
    message: Vec<Option<String>>,
    fuel: Vec<i64>,
    memory: Vec<i64>,
    at: Vec<i64>,
    start_hash: Vec<Option<String>>,
    start_at: Vec<Option<i64>>,
}

#[derive(Default)]
struct RunEnds {
    task: Vec<i64>,
    run: Vec<i64>,
    run_status: Vec<&'static str>,
    task_status: Vec<&'static str>,
    last_result: Vec<&'static str>,
    next_run_at: Vec<Option<i64>>,
    attempts: Vec<i64>,
    progress: Vec<f64>,
    message: Vec<Option<String>>,
    at: Vec<i64>,
    resume: Vec<Option<i64>>,
    rescued: Vec<bool>,
    claimed: Vec<Option<i64>>,
}

impl Batch {
    fn from_ops(ops: &[WriteOp]) -> Batch {
        // Starts whose step run ends in this batch ride on the end.
        let ending: HashSet<i64> = ops
            .iter()
            .filter_map(|op| match op {
                WriteOp::FinishStep { step_run_id, .. } => Some(*step_run_id),
                _ => None,
            })
            .collect();
        let mut folded_starts: HashMap<i64, (Option<String>, i64)> = HashMap::new();
        let mut batch = Batch::default();
        for op in ops {
            let answer = match op {
                WriteOp::StartStep {
                    step_run_id,
                    module_hash,
                    at,
                } => {
                    if ending.contains(step_run_id) {
                        folded_starts.insert(*step_run_id, (module_hash.clone(), ms(*at)));
                    } else {
                        batch.starts.id.push(*step_run_id);
                        batch.starts.hash.push(module_hash.clone());
                        batch.starts.at.push(ms(*at));
                    }
                    Answer::Always
                }
                WriteOp::SaveProgress {
                    run_id,
                    step_run_id,
                    step_progress,
                    task_progress,
                    message,
                } => {
                    batch.progress.add(
                        *run_id,
                        *step_run_id,
                        finite(*step_progress),
                        finite(*task_progress),
                        message,
                    );
                    Answer::Always
                }
                WriteOp::FinishStep { step_run_id, end } => {
                    if !batch.steps_ending.insert(*step_run_id) {
                        Answer::Never
                    } else {
                        let start = folded_starts.remove(step_run_id);
                        let ends = &mut batch.step_ends;
                        ends.id.push(*step_run_id);
                        ends.status.push(end.status.as_str());
                        ends.outcome.push(end.outcome.to_string());
                        ends.result
                            .push(end.result.as_ref().map(|result| result.to_string()));
                        ends.error.push(end.error.clone());
                        ends.progress.push(finite(end.progress));
                        ends.message.push(end.message.clone());
                        ends.fuel.push(end.fuel_used);
                        ends.memory.push(end.peak_memory);
                        ends.at.push(ms(end.finished_at));
                        ends.start_at.push(start.as_ref().map(|(_, at)| *at));
                        ends.start_hash.push(start.and_then(|(hash, _)| hash));
                        Answer::StepEnded(*step_run_id)
                    }
                }
                WriteOp::FinishRun {
                    task_id,
                    run_id,
                    end,
                    claimed_version,
                } => {
                    if !batch.runs_ending.insert(*run_id) {
                        Answer::Never
                    } else {
                        let ends = &mut batch.run_ends;
                        ends.task.push(*task_id);
                        ends.run.push(*run_id);
                        ends.run_status.push(end.run_status.as_str());
                        ends.task_status.push(end.task_status.as_str());
                        ends.last_result.push(end.last_result.as_str());
                        ends.next_run_at.push(opt_ms(end.next_run_at));
                        ends.attempts.push(end.attempts);
                        ends.progress.push(finite(end.progress));
                        ends.message.push(end.message.clone());
                        ends.at.push(ms(end.finished_at));
                        ends.resume.push(end.resume_next.then_some(*run_id));
                        ends.rescued.push(end.rescued);
                        ends.claimed.push(claimed_version.map(ms));
                        Answer::RunEnded(*run_id)
                    }
                }
            };
            batch.answers.push(answer);
        }
        batch
    }

    /// Runs the sets' statements in order, inside the caller's transaction
    /// (or on a bare connection, when there is [one](Batch::one_statement)).
    async fn apply(&self, tx: &mut PgConnection) -> anyhow::Result<Applied> {
        if !self.starts.id.is_empty() {
            sqlx::query(START_STEPS)
                .bind(&self.starts.id)
                .bind(&self.starts.hash)
                .bind(&self.starts.at)
                .execute(&mut *tx)
                .await
                .context("recording step starts")?;
        }
        self.progress.apply(tx).await?;
        self.apply_ends(tx).await
    }

    /// Whether the batch is one statement (starts only, or ends only): it
    /// needs no transaction around it (PostgreSQL commits it as one, and the
    /// commit waits for the WAL flush like any other), which saves the round
    /// trips of `BEGIN` and `COMMIT`.
    fn one_statement(&self) -> bool {
        let starts = !self.starts.id.is_empty();
        let progress = !self.progress.step_run.is_empty();
        let ends = !self.step_ends.id.is_empty() || !self.run_ends.run.is_empty();
        !(progress || starts && ends)
    }

    async fn apply_ends(&self, conn: &mut PgConnection) -> anyhow::Result<Applied> {
        let mut applied = Applied {
            steps: HashSet::new(),
            runs: HashMap::new(),
        };
        let (steps, runs) = (&self.step_ends, &self.run_ends);
        if steps.id.is_empty() && runs.run.is_empty() {
            return Ok(applied);
        }
        let rows: Vec<(String, i64, bool)> = sqlx::query_as(ENDS)
            .bind(&steps.id)
            .bind(&steps.status)
            .bind(&steps.outcome)
            .bind(&steps.result)
            .bind(&steps.error)
            .bind(&steps.progress)
            .bind(&steps.message)
            .bind(&steps.fuel)
            .bind(&steps.memory)
            .bind(&steps.at)
            .bind(&steps.start_hash)
            .bind(&steps.start_at)
            .bind(&runs.task)
            .bind(&runs.run)
            .bind(&runs.run_status)
            .bind(&runs.task_status)
            .bind(&runs.last_result)
            .bind(&runs.next_run_at)
            .bind(&runs.attempts)
            .bind(&runs.progress)
            .bind(&runs.message)
            .bind(&runs.at)
            .bind(&runs.resume)
            .bind(&runs.rescued)
            .bind(&runs.claimed)
            .fetch_all(&mut *conn)
            .await
            .context("recording step and run ends")?;
        for (kind, id, claimed) in rows {
            if kind == "s" {
                applied.steps.insert(id);
            } else {
                applied.runs.insert(id, claimed);
            }
        }
        Ok(applied)
    }

    fn answers(&self, applied: &Applied) -> Vec<WriteAnswer> {
        self.answers
            .iter()
            .map(|answer| match answer {
                Answer::Always => WriteAnswer::Applied,
                Answer::StepEnded(id) => WriteAnswer::from_applied(applied.steps.contains(id)),
                Answer::RunEnded(id) => match applied.runs.get(id) {
                    Some(true) => WriteAnswer::AppliedToClaimed,
                    Some(false) => WriteAnswer::Applied,
                    None => WriteAnswer::Skipped,
                },
                Answer::Never => WriteAnswer::Skipped,
            })
            .collect()
    }
}

impl Progress {
    /// Folds one progress op into what was seen: the last value, and the
    /// last message given (a progress without one keeps the earlier one).
    fn add(
        &mut self,
        run: i64,
        step_run: i64,
        step_progress: f64,
        task_progress: f64,
        message: &Option<String>,
    ) {
        let row = *self.step_row.entry(step_run).or_insert_with(|| {
            self.step_run.push(step_run);
            self.step_run_of.push(run);
            self.step_progress.push(0.0);
            self.step_message.push(None);
            self.step_run.len() - 1
        });
        self.step_progress[row] = step_progress;
        if message.is_some() {
            self.step_message[row].clone_from(message);
        }
        let row = *self.run_row.entry(run).or_insert_with(|| {
            self.run.push(run);
            self.task_progress.push(0.0);
            self.task_message.push(None);
            self.run.len() - 1
        });
        self.task_progress[row] = task_progress;
        if message.is_some() {
            self.task_message[row].clone_from(message);
        }
    }

    async fn apply(&self, tx: &mut PgConnection) -> anyhow::Result<()> {
        if self.step_run.is_empty() {
            return Ok(());
        }
        sqlx::query(STEP_PROGRESS)
            .bind(&self.step_run)
            .bind(&self.step_run_of)
            .bind(&self.step_progress)
            .bind(&self.step_message)
            .execute(&mut *tx)
            .await
            .context("recording step progress")?;
        sqlx::query(TASK_PROGRESS)
            .bind(&self.run)
            .bind(&self.task_progress)
            .bind(&self.task_message)
            .execute(&mut *tx)
            .await
            .context("recording task progress")?;
        Ok(())
    }
}

/// A broken progress (NaN or infinite) counts as none: the NOT NULL
/// progress columns must get a number, and the dashboard a finite one.
fn finite(progress: f64) -> f64 {
    if progress.is_finite() { progress } else { 0.0 }
}
