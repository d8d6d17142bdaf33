//! `GET /alerts`: what an operator should look at now. The store reports
//! facts ([`AlertFacts`]); [`evaluate`] turns them into alerts with the
//! thresholds below, each message saying what is wrong and what to do.

use super::AppState;
use super::auth::Caller;
use super::error::Result;
use crate::store::{AlertFacts, Role, RunningRun};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

/// The window of the success-rate and failing-module alerts.
pub const RECENT_WINDOW: TimeDelta = TimeDelta::hours(1);
/// A success rate (runs that ended in the window) below this is a warning.
pub const SUCCESS_RATE_WARNING: f64 = 0.8;
/// A success rate below this is critical.
pub const SUCCESS_RATE_CRITICAL: f64 = 0.5;
/// Fewer ended runs in the window than this say nothing about a rate.
pub const SUCCESS_RATE_MIN_RUNS: i64 = 5;
/// Seconds the oldest due task may wait past its `next_run_at` before a
/// queue-latency warning.
pub const QUEUE_LATENCY_WARNING_SECONDS: i64 = 60;
/// Seconds of waiting that make queue latency critical.
pub const QUEUE_LATENCY_CRITICAL_SECONDS: i64 = 600;
/// Seconds after its lease expired that a run still marked running is stuck
/// (critical): the rescuer looks every half lease (15 s by default).
pub const LEASE_GRACE_SECONDS: i64 = 60;
/// A run running longer than this many times its task's `max_execution_time`
/// (when it has one) is stuck (warning): the limits should have stopped it.
pub const OVERTIME_FACTOR: i64 = 2;
/// Consecutive failed step runs of one module in the window that make it a
/// failing module (warning).
pub const FAILING_MODULE_STREAK: i64 = 3;
/// Runs named in one stuck-run message at most.
const NAMED_RUNS: usize = 3;
/// Characters of a step error quoted in a message at most.
const QUOTED_ERROR_CHARS: usize = 200;

pub fn router() -> Router<AppState> {
    Router::new().route("/alerts", get(alerts))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Work is not getting done: act now. (Sorts first.)
    Critical,
    /// Work is slow or failing: have a look.
    Warning,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Too few of the runs that ended in the last hour succeeded.
    SuccessRate,
    /// Due tasks wait for a node.
    QueueLatency,
    /// A run is marked running but its node is gone, or it runs far past its limit.
    StuckRun,
    /// A module failed its latest step runs in a row.
    FailingModule,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Alert {
    pub kind: AlertKind,
    pub severity: Severity,
    /// What is wrong and what to do.
    pub message: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertList {
    /// Critical ones first; empty when all is well.
    pub alerts: Vec<Alert>,
}

#[utoipa::path(get, path = "/api/v1/alerts", tag = "operations",
    responses((status = 200, body = AlertList), (status = 401, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn alerts(State(state): State<AppState>, caller: Caller) -> Result<Json<AlertList>> {
    caller.require(Role::Viewer)?;
    let now = Utc::now();
    let facts = state.store().alert_facts(now - RECENT_WINDOW, now).await?;
    Ok(Json(AlertList {
        alerts: evaluate(&facts, now),
    }))
}

/// The alerts these facts deserve at `now`, critical ones first.
pub fn evaluate(facts: &AlertFacts, now: DateTime<Utc>) -> Vec<Alert> {
    let mut alerts: Vec<Alert> = success_rate(facts)
        .into_iter()
        .chain(queue_latency(facts, now))
        .chain(stuck_runs(&facts.running, now))
        .chain(failing_modules(facts))
        .collect();
    alerts.sort_by_key(|a| a.severity);
    alerts
}

fn success_rate(facts: &AlertFacts) -> Option<Alert> {
    let (completed, failed) = (facts.recent_completed, facts.recent_failed);
    let ended = completed + failed;
    if ended < SUCCESS_RATE_MIN_RUNS {
        return None;
    }
    let rate = completed as f64 / ended as f64;
    if rate >= SUCCESS_RATE_WARNING {
        return None;
    }
    let severity = if rate < SUCCESS_RATE_CRITICAL {
        Severity::Critical
    } else {
        Severity::Warning
    };
    Some(Alert {
        kind: AlertKind::SuccessRate,
        severity,
        message: format!(
            "only {} of the {ended} runs that ended in the last hour succeeded ({completed} completed, \
             {failed} failed or interrupted; alert below {}). See which modules fail in \
             GET /api/v1/stats/performance?hours=1 and read the failed tasks' logs \
             (GET /api/v1/tasks?status=failed).",
            percent(rate),
            percent(SUCCESS_RATE_WARNING),
        ),
    })
}

fn queue_latency(facts: &AlertFacts, now: DateTime<Utc>) -> Option<Alert> {
    let oldest = facts.oldest_due.as_ref()?;
    let waited = (now - oldest.next_run_at).num_seconds();
    if waited <= QUEUE_LATENCY_WARNING_SECONDS {
        return None;
    }
    let severity = if waited > QUEUE_LATENCY_CRITICAL_SECONDS {
        Severity::Critical
    } else {
        Severity::Warning
    };
    let waiting = match facts.due_tasks {
        1 => "1 due task is".to_string(),
        n => format!("{n} due tasks are"),
    };
    Some(Alert {
        kind: AlertKind::QueueLatency,
        severity,
        message: format!(
            "{waiting} waiting for a node; the oldest, task {} `{}`, has waited {} past its start \
             time (alert after {}). Check that a server is running and its log shows no errors; if \
             the workers are all busy, raise --workers or spread the tasks' start times.",
            oldest.task_id,
            oldest.name,
            human(waited),
            human(QUEUE_LATENCY_WARNING_SECONDS),
        ),
    })
}

/// One critical alert for the runs whose lease expired long ago, one warning
/// for those far past their time limit (a run in both is named once, as the
/// former).
fn stuck_runs(running: &[RunningRun], now: DateTime<Utc>) -> Vec<Alert> {
    let lease_expired_for = |run: &RunningRun| {
        run.lease_expires_at
            .map(|at| (now - at).num_seconds())
            .filter(|late| *late > LEASE_GRACE_SECONDS)
    };
    let orphans: Vec<String> = running
        .iter()
        .filter_map(|run| {
            lease_expired_for(run)
                .map(|late| describe(run, &format!("lease expired {} ago", human(late))))
        })
        .collect();
    let overtime: Vec<String> = running
        .iter()
        .filter(|run| lease_expired_for(run).is_none() && run.max_execution_time > 0)
        .filter_map(|run| {
            let running_for = (now - run.started_at).num_seconds();
            (running_for > run.max_execution_time * OVERTIME_FACTOR).then(|| {
                let detail = format!(
                    "running {}, limit {}",
                    human(running_for),
                    human(run.max_execution_time)
                );
                describe(run, &detail)
            })
        })
        .collect();
    let mut alerts = Vec::new();
    if !orphans.is_empty() {
        alerts.push(Alert {
            kind: AlertKind::StuckRun,
            severity: Severity::Critical,
            message: format!(
                "{} still marked running although {} lease expired more than {} ago: {}. The rescuer \
                 should have taken {} back and retried {}: check that a server is running on this \
                 database and look for rescuer errors in its log.",
                count(orphans.len(), "run is", "runs are"),
                if orphans.len() == 1 { "its" } else { "their" },
                human(LEASE_GRACE_SECONDS),
                list(&orphans),
                if orphans.len() == 1 { "it" } else { "them" },
                if orphans.len() == 1 { "it" } else { "them" },
            ),
        });
    }
    if !overtime.is_empty() {
        alerts.push(Alert {
            kind: AlertKind::StuckRun,
            severity: Severity::Warning,
            message: format!(
                "{} been running more than {OVERTIME_FACTOR}× {} max_execution_time: {}. A step \
                 may be blocked outside its module's code; cancel with \
                 POST /api/v1/tasks/{{id}}/cancel and check the node's log.",
                count(overtime.len(), "run has", "runs have"),
                if overtime.len() == 1 { "its" } else { "their" },
                list(&overtime),
            ),
        });
    }
    alerts
}

fn failing_modules(facts: &AlertFacts) -> Vec<Alert> {
    facts
        .failing_modules
        .iter()
        .filter(|m| m.consecutive_failures >= FAILING_MODULE_STREAK)
        .map(|m| {
            let error = m
                .last_error
                .as_deref()
                .map(|e| format!(" (latest error: {})", quote(e)))
                .unwrap_or_default();
            Alert {
                kind: AlertKind::FailingModule,
                severity: Severity::Warning,
                message: format!(
                    "module `{0}` failed its last {1} step runs in the last hour{error}. Fix it and \
                     upload it again with PUT /api/v1/modules/{0}, or pause the tasks using it with \
                     PATCH /api/v1/modules/{0} {{\"active\": false}}.",
                    m.module, m.consecutive_failures,
                ),
            }
        })
        .collect()
}

/// "task 5 `name` (run 12 on node `a`, <detail>)".
fn describe(run: &RunningRun, detail: &str) -> String {
    let node = run
        .node
        .as_deref()
        .map(|n| format!(" on node `{n}`"))
        .unwrap_or_default();
    format!(
        "task {} `{}` (run {}{node}, {detail})",
        run.task_id, run.name, run.run_id
    )
}

/// The first few items, then how many more.
fn list(items: &[String]) -> String {
    let shown = items[..items.len().min(NAMED_RUNS)].join(", ");
    match items.len().saturating_sub(NAMED_RUNS) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

fn count(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

fn percent(rate: f64) -> String {
    format!("{:.0}%", rate * 100.0)
}

/// Seconds as people say them: "45 s", "12 min", "3 h", "2 d".
fn human(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 2 * 3600 => format!("{} min", s / 60),
        s if s < 2 * 86_400 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

fn quote(error: &str) -> String {
    let line = error.lines().next().unwrap_or("");
    if line.chars().count() > QUOTED_ERROR_CHARS || line.len() < error.len() {
        let cut: String = line.chars().take(QUOTED_ERROR_CHARS).collect();
        format!("{cut}…")
    } else {
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DueTask, FailingModule};

    fn now() -> DateTime<Utc> {
        "2025-06-01T12:00:00Z".parse().expect("a time")
    }

    fn ago(seconds: i64) -> DateTime<Utc> {
        now() - TimeDelta::seconds(seconds)
    }

    fn quiet() -> AlertFacts {
        AlertFacts {
            recent_completed: 0,
            recent_failed: 0,
            due_tasks: 0,
            oldest_due: None,
            running: Vec::new(),
            failing_modules: Vec::new(),
        }
    }

    fn running(task_id: i64, started: i64, lease_expired: i64, max_time: i64) -> RunningRun {
        RunningRun {
            task_id,
            name: format!("task {task_id}"),
            run_id: task_id * 10,
            node: Some("node-a".into()),
            started_at: ago(started),
            lease_expires_at: Some(ago(lease_expired)),
            max_execution_time: max_time,
        }
    }

    fn kinds(alerts: &[Alert]) -> Vec<(AlertKind, Severity)> {
        alerts.iter().map(|a| (a.kind, a.severity)).collect()
    }

    #[test]
    fn all_quiet_is_no_alert() {
        assert!(evaluate(&quiet(), now()).is_empty());
    }

    #[test]
    fn success_rate_needs_enough_runs_and_a_low_rate() {
        let with = |completed, failed| AlertFacts {
            recent_completed: completed,
            recent_failed: failed,
            ..quiet()
        };
        assert!(evaluate(&with(0, 4), now()).is_empty(), "too few runs");
        assert!(evaluate(&with(4, 1), now()).is_empty(), "80% is fine");
        let alerts = evaluate(&with(3, 2), now());
        assert_eq!(
            kinds(&alerts),
            [(AlertKind::SuccessRate, Severity::Warning)]
        );
        assert!(
            alerts[0].message.contains("only 60% of the 5 runs"),
            "{}",
            alerts[0].message
        );
        assert_eq!(
            kinds(&evaluate(&with(1, 9), now())),
            [(AlertKind::SuccessRate, Severity::Critical)]
        );
    }

    #[test]
    fn queue_latency_grows_from_warning_to_critical() {
        let waiting = |seconds| AlertFacts {
            due_tasks: 12,
            oldest_due: Some(DueTask {
                task_id: 5,
                name: "nightly".into(),
                next_run_at: ago(seconds),
            }),
            ..quiet()
        };
        assert!(evaluate(&waiting(60), now()).is_empty());
        let alerts = evaluate(&waiting(95), now());
        assert_eq!(
            kinds(&alerts),
            [(AlertKind::QueueLatency, Severity::Warning)]
        );
        let message = &alerts[0].message;
        assert!(
            message.starts_with("12 due tasks are waiting")
                && message.contains("task 5 `nightly`, has waited 95 s")
                && message.contains("--workers"),
            "{message}"
        );
        assert_eq!(
            kinds(&evaluate(&waiting(601), now())),
            [(AlertKind::QueueLatency, Severity::Critical)]
        );
    }

    #[test]
    fn stuck_runs_are_orphans_or_far_past_their_limit() {
        let facts = AlertFacts {
            running: vec![
                running(1, 300, 61, 600),    // lease expired 61 s ago: orphan
                running(2, 1_300, -20, 600), // 1300 s > 2 × 600: overtime
                running(3, 1_300, -20, 0),   // no limit: fine
                running(4, 100, 30, 10),     // lease just expired (rescuer's turn), overtime
                running(5, 5_000, 3_600, 1), // both: named once, as an orphan
            ],
            ..quiet()
        };
        let alerts = evaluate(&facts, now());
        assert_eq!(
            kinds(&alerts),
            [
                (AlertKind::StuckRun, Severity::Critical),
                (AlertKind::StuckRun, Severity::Warning),
            ]
        );
        let orphans = &alerts[0].message;
        assert!(
            orphans.starts_with("2 runs are still marked running")
                && orphans
                    .contains("task 1 `task 1` (run 10 on node `node-a`, lease expired 61 s ago)")
                && orphans.contains("task 5")
                && orphans.contains("rescuer"),
            "{orphans}"
        );
        let overtime = &alerts[1].message;
        assert!(
            overtime.contains("task 2 `task 2`")
                && overtime.contains("running 21 min, limit 10 min)")
                && overtime.contains("task 4")
                && !overtime.contains("task 3")
                && !overtime.contains("task 5")
                && overtime.contains("/cancel"),
            "{overtime}"
        );
    }

    #[test]
    fn a_module_failing_three_times_in_a_row_is_named() {
        let failing = |module: &str, n| FailingModule {
            module: module.into(),
            consecutive_failures: n,
            last_error: Some(format!("{}\nsecond line", "x".repeat(300))),
            last_failed_at: ago(10),
        };
        let facts = AlertFacts {
            failing_modules: vec![failing("shop/sync", 4), failing("shop/flaky", 2)],
            ..quiet()
        };
        let alerts = evaluate(&facts, now());
        assert_eq!(
            kinds(&alerts),
            [(AlertKind::FailingModule, Severity::Warning)]
        );
        let message = &alerts[0].message;
        assert!(
            message.starts_with("module `shop/sync` failed its last 4 step runs")
                && message.contains(&format!("{}…", "x".repeat(200)))
                && !message.contains("second line")
                && message.contains("PUT /api/v1/modules/shop/sync"),
            "{message}"
        );
    }
}
