//! A task's upcoming runs (`next_runs`), computed when the API reads the
//! task from its status, `next_run_at` and schedule (see
//! [`crate::store::Task::next_runs`]); never stored, so never stale.

use crate::schedule::{self, NEXT_RUNS};
use crate::store::{Task, TaskStatus};
use chrono::{DateTime, Utc};

/// Fill in `next_runs` of each task.
pub fn fill_next_runs(tasks: &mut [Task], now: DateTime<Utc>) {
    for task in tasks {
        task.next_runs = next_runs(task, now);
    }
}

/// When the task will run by itself, soonest first: a scheduled task at its
/// `next_run_at` and then, on a cron schedule, at the schedule's times after
/// that run (a run ends before the next is due: the times after `now` if it
/// is overdue); a running cron task at the schedule's times after now. A
/// task on `run_interval` shows only its `next_run_at`: the one after
/// depends on when that run ends. Nothing for a task that waits for a user.
pub fn next_runs(task: &Task, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let cron = || schedule::of(task.cron.as_deref(), &task.timezone);
    match task.status {
        TaskStatus::Scheduled => {
            let Some(due) = task.next_run_at else {
                return Vec::new();
            };
            let mut runs = vec![due];
            if let Some(cron) = cron()
                && let Some(after) = cron.next_after(due.max(now))
            {
                runs.extend(cron.upcoming(after, NEXT_RUNS - 1));
            }
            runs
        }
        TaskStatus::Running => cron()
            .and_then(|cron| Some(cron.upcoming(cron.next_after(now)?, NEXT_RUNS)))
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Priority;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn task(status: TaskStatus, cron: Option<&str>, next_run_at: Option<&str>) -> Task {
        let now = at("2026-01-01T00:00:00Z");
        Task {
            id: 1,
            name: "t".into(),
            code: None,
            status,
            priority: Priority::Normal,
            start_at: None,
            run_interval: if cron.is_some() { 0 } else { 60 },
            cron: cron.map(str::to_string),
            timezone: "Europe/Berlin".into(),
            max_execution_time: 0,
            max_attempts: 1,
            attempts: 0,
            progress: 0.0,
            message: None,
            last_result: None,
            last_run_at: None,
            next_run_at: next_run_at.map(at),
            created_by: None,
            details: Default::default(),
            secret_names: Vec::new(),
            current_run_id: None,
            hook_url: None,
            max_starts_per_minute: None,
            created_at: now,
            updated_at: now,
            steps: Vec::new(),
            next_runs: Vec::new(),
        }
    }

    #[test]
    fn a_scheduled_cron_task_lists_its_next_five_times() {
        let now = at("2026-01-10T12:00:00Z");
        let nightly = task(
            TaskStatus::Scheduled,
            Some("0 3 * * *"),
            Some("2026-01-11T02:00:00Z"),
        );
        assert_eq!(
            next_runs(&nightly, now),
            [
                at("2026-01-11T02:00:00Z"),
                at("2026-01-12T02:00:00Z"),
                at("2026-01-13T02:00:00Z"),
                at("2026-01-14T02:00:00Z"),
                at("2026-01-15T02:00:00Z"),
            ]
        );
        // Overdue (a node was down): due now, then the times after now.
        let overdue = task(
            TaskStatus::Scheduled,
            Some("0 3 * * *"),
            Some("2026-01-09T02:00:00Z"),
        );
        let runs = next_runs(&overdue, now);
        assert_eq!(runs[0], at("2026-01-09T02:00:00Z"));
        assert_eq!(runs[1], at("2026-01-11T02:00:00Z"));
        assert_eq!(runs.len(), NEXT_RUNS);
    }

    #[test]
    fn other_tasks_list_what_is_known() {
        let now = at("2026-01-10T12:00:00Z");
        let running = task(TaskStatus::Running, Some("0 3 * * *"), None);
        assert_eq!(next_runs(&running, now)[0], at("2026-01-11T02:00:00Z"));
        assert_eq!(next_runs(&running, now).len(), NEXT_RUNS);
        let interval = task(TaskStatus::Scheduled, None, Some("2026-01-10T12:01:00Z"));
        assert_eq!(next_runs(&interval, now), [at("2026-01-10T12:01:00Z")]);
        let disabled = task(TaskStatus::Disabled, Some("0 3 * * *"), None);
        assert!(next_runs(&disabled, now).is_empty());
        assert!(next_runs(&task(TaskStatus::Running, None, None), now).is_empty());
    }
}
