//! What becomes of a task when a run ends: retry with backoff, the next
//! occurrence of a recurring task, or a final status.

use crate::schedule;
use crate::store::{RunEnd, RunResult, RunStatus, RunTrigger, Task, TaskStatus};
use chrono::{DateTime, Utc};
use rand::Rng;
use std::time::Duration;

/// Backoff between retries: `base × 2^(attempt-1)`, capped, with ±25 % jitter
/// so tasks that failed together do not retry together.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(2),
            max: Duration::from_secs(3600),
        }
    }
}

impl RetryPolicy {
    pub fn delay(&self, attempt: i64) -> Duration {
        let exponent = attempt.clamp(1, 30) as u32 - 1;
        let raw = self
            .base
            .saturating_mul(1u32 << exponent.min(20))
            .min(self.max);
        let jitter = rand::rng().random_range(0.75..=1.25);
        raw.mul_f64(jitter)
    }
}

/// How the steps of a run went, as the executor saw them. Declared from the
/// mildest to the gravest: when steps end differently the run takes the
/// gravest (`max`). A permanent failure outranks a limit, since retrying the
/// run cannot help; a limit outranks a plain failure, since the run was
/// stopped rather than refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RunVerdict {
    Succeeded,
    /// A step failed (error, trap, missing module).
    Failed,
    /// A limit stopped a step, or the node died.
    Interrupted,
    /// A step failed with an error it marked permanent (bad settings, a
    /// missing secret): a retry cannot help, so there is none.
    FailedPermanently,
    Cancelled,
}

/// When a recurring task is due again after a run that ended at `now`: its
/// cron schedule's next time after `now` (on its zone's wall clock, see
/// [`crate::schedule`]), or `run_interval` seconds from `now`. `None` for a
/// task that runs once, or whose schedule has no time left.
pub fn next_occurrence(task: &Task, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if task.cron.is_some() {
        return schedule::of(task.cron.as_deref(), &task.timezone)?.next_after(now);
    }
    (task.run_interval > 0).then(|| now + chrono::Duration::seconds(task.run_interval))
}

/// Decide the run's end and the task's next state.
#[allow(clippy::too_many_arguments)] // each input is one independent fact of the run
pub fn run_end(
    task: &Task,
    attempt: i64,
    trigger: RunTrigger,
    verdict: RunVerdict,
    message: Option<String>,
    progress: f64,
    now: DateTime<Utc>,
    retry: &RetryPolicy,
) -> RunEnd {
    let recurring_next = next_occurrence(task, now);
    let (run_status, last_result) = match verdict {
        RunVerdict::Succeeded => (RunStatus::Completed, RunResult::Success),
        RunVerdict::Failed | RunVerdict::FailedPermanently => {
            (RunStatus::Failed, RunResult::Failed)
        }
        RunVerdict::Interrupted => (RunStatus::Interrupted, RunResult::Interrupted),
        RunVerdict::Cancelled => (RunStatus::Cancelled, RunResult::Interrupted),
    };
    let mut end = RunEnd {
        run_status,
        message,
        finished_at: now,
        task_status: TaskStatus::Completed,
        last_result,
        next_run_at: None,
        attempts: attempt,
        resume_next: false,
        progress,
        rescued: false,
    };
    match verdict {
        RunVerdict::Cancelled => end.task_status = TaskStatus::Cancelled,
        RunVerdict::Succeeded if recurring_next.is_some() => {
            end.task_status = TaskStatus::Scheduled;
            end.next_run_at = recurring_next;
            end.attempts = 0;
        }
        RunVerdict::Succeeded => end.task_status = TaskStatus::Completed,
        // A single step run on its own is not retried: the user is watching it.
        RunVerdict::Failed | RunVerdict::Interrupted
            if attempt < task.max_attempts && trigger != RunTrigger::Step =>
        {
            end.task_status = TaskStatus::Scheduled;
            let delay =
                chrono::Duration::from_std(retry.delay(attempt)).unwrap_or(chrono::Duration::MAX);
            end.next_run_at = Some(now + delay);
            end.resume_next = true;
        }
        RunVerdict::Failed | RunVerdict::FailedPermanently | RunVerdict::Interrupted
            if recurring_next.is_some() =>
        {
            end.task_status = TaskStatus::Scheduled;
            end.next_run_at = recurring_next;
            end.attempts = 0;
        }
        RunVerdict::Failed | RunVerdict::FailedPermanently | RunVerdict::Interrupted => {
            end.task_status = TaskStatus::Failed
        }
    }
    end
}

/// The end of a run taken back from its node (it died, hung, or handed its
/// runs back when it stopped): the run is `interrupted` and marked rescued,
/// and the task is due again at once, resuming at its first unfinished step
/// with its checkpoint. A rescued attempt does not count against
/// `max_attempts`: a node's death says nothing about the task, and a task
/// acknowledged to its user must not fail because a server went away.
pub fn rescued_end(task: &Task, attempt: i64, message: String, now: DateTime<Utc>) -> RunEnd {
    RunEnd {
        run_status: RunStatus::Interrupted,
        message: Some(message),
        finished_at: now,
        task_status: TaskStatus::Scheduled,
        last_result: RunResult::Interrupted,
        next_run_at: Some(now),
        attempts: (attempt - 1).max(0),
        resume_next: true,
        progress: task.progress,
        rescued: true,
    }
}

/// A rescue that counts as an attempt (see `rescuer::FREE_RESCUES_IN_A_ROW`):
/// the run ends as an interrupted one would, retried with backoff while
/// attempts remain, otherwise failed (or on to the next interval), and is
/// still marked rescued for the statistics.
pub fn rescued_end_counted(
    task: &Task,
    attempt: i64,
    trigger: RunTrigger,
    message: String,
    now: DateTime<Utc>,
    retry: &RetryPolicy,
) -> RunEnd {
    let mut end = run_end(
        task,
        attempt,
        trigger,
        RunVerdict::Interrupted,
        Some(message),
        task.progress,
        now,
        retry,
    );
    end.rescued = true;
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(max_attempts: i64, run_interval: i64) -> Task {
        let now = Utc::now();
        Task {
            id: 1,
            name: "nightly export".into(),
            code: None,
            status: TaskStatus::Running,
            priority: crate::store::Priority::Normal,
            start_at: None,
            run_interval,
            cron: None,
            timezone: "UTC".into(),
            max_execution_time: 0,
            max_attempts,
            attempts: 1,
            progress: 0.0,
            message: None,
            last_result: None,
            last_run_at: Some(now),
            next_run_at: None,
            created_by: None,
            details: Default::default(),
            secret_names: Vec::new(),
            current_run_id: Some(1),
            hook_url: None,
            max_starts_per_minute: None,
            created_at: now,
            updated_at: now,
            steps: Vec::new(),
            next_runs: Vec::new(),
        }
    }

    fn end(task: &Task, verdict: RunVerdict) -> RunEnd {
        let now = Utc::now();
        run_end(
            task,
            1,
            RunTrigger::Schedule,
            verdict,
            None,
            0.0,
            now,
            &RetryPolicy::default(),
        )
    }

    #[test]
    fn a_failure_is_retried_while_attempts_remain() {
        let ended = end(&task(3, 0), RunVerdict::Failed);
        assert_eq!(ended.task_status, TaskStatus::Scheduled);
        assert!(ended.resume_next && ended.next_run_at.is_some());
    }

    #[test]
    fn a_permanent_failure_is_not_retried() {
        let ended = end(&task(3, 0), RunVerdict::FailedPermanently);
        assert_eq!(ended.task_status, TaskStatus::Failed);
        assert_eq!(ended.run_status, RunStatus::Failed);
        assert!(!ended.resume_next);
        assert_eq!(ended.next_run_at, None);
    }

    #[test]
    fn a_recurring_task_goes_on_after_a_permanent_failure() {
        let ended = end(&task(3, 60), RunVerdict::FailedPermanently);
        assert_eq!(ended.task_status, TaskStatus::Scheduled);
        assert!(!ended.resume_next);
        assert_eq!(ended.attempts, 0);
    }

    fn on_cron(cron: &str, timezone: &str) -> Task {
        Task {
            cron: Some(cron.into()),
            timezone: timezone.into(),
            ..task(1, 0)
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_cron_task_is_due_at_its_next_time_after_the_run() {
        let nightly = on_cron("0 3 * * *", "Europe/Berlin");
        for verdict in [
            RunVerdict::Succeeded,
            RunVerdict::Failed,
            RunVerdict::FailedPermanently,
        ] {
            let ended = run_end(
                &nightly,
                1,
                RunTrigger::Schedule,
                verdict,
                None,
                100.0,
                at("2026-03-28T02:00:05Z"),
                &RetryPolicy::default(),
            );
            assert_eq!(ended.task_status, TaskStatus::Scheduled, "{verdict:?}");
            // 03:00 in Berlin on the night the clocks go forward is 01:00 UTC.
            assert_eq!(ended.next_run_at, Some(at("2026-03-29T01:00:00Z")));
            assert_eq!(ended.attempts, 0);
            assert!(!ended.resume_next);
        }
    }

    #[test]
    fn a_cron_task_retries_before_its_next_time() {
        let ended = end(
            &Task {
                max_attempts: 3,
                ..on_cron("0 3 * * *", "UTC")
            },
            RunVerdict::Failed,
        );
        assert!(ended.resume_next);
        assert!(ended.next_run_at.unwrap() < Utc::now() + chrono::Duration::seconds(10));
    }

    #[test]
    fn the_next_occurrence_is_the_schedule_or_the_interval() {
        let now = at("2026-01-01T10:00:30Z");
        assert_eq!(
            next_occurrence(&on_cron("*/15 * * * *", "UTC"), now),
            Some(at("2026-01-01T10:15:00Z"))
        );
        assert_eq!(
            next_occurrence(&task(1, 60), now),
            Some(at("2026-01-01T10:01:30Z"))
        );
        assert_eq!(next_occurrence(&task(1, 0), now), None);
    }

    #[test]
    fn backoff_grows_and_is_capped_with_jitter() {
        let policy = RetryPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(10),
        };
        for _ in 0..50 {
            let first = policy.delay(1).as_secs_f64();
            assert!((0.75..=1.25).contains(&first), "{first}");
            let third = policy.delay(3).as_secs_f64();
            assert!((3.0..=5.0).contains(&third), "{third}");
            let late = policy.delay(20).as_secs_f64();
            assert!((7.5..=12.5).contains(&late), "{late}");
        }
    }
}
