//! `GET /stats`: task counts by status; `GET /stats/performance`: how the
//! runs of the last hours went, overall, per module and per hour.

use super::auth::Caller;
use super::error::Result;
use super::extract::QueryArgs;
use super::{AppState, validate};
use crate::store::{HourThroughput, ModulePerformance, Role, TaskStatus};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/stats", get(stats))
        .route("/stats/performance", get(performance))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Stats {
    /// Tasks by status (every status present, zero included).
    pub tasks: BTreeMap<String, i64>,
    pub total: i64,
    /// Runs executing on this node now.
    pub running_here: usize,
}

#[utoipa::path(get, path = "/api/v1/stats", tag = "operations",
    responses((status = 200, body = Stats), (status = 401, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn stats(State(state): State<AppState>, caller: Caller) -> Result<Json<Stats>> {
    caller.require(Role::Viewer)?;
    let counts = state.store().count_by_status().await?;
    let mut tasks: BTreeMap<String, i64> =
        TaskStatus::ALL.iter().map(|s| (s.to_string(), 0)).collect();
    for (status, n) in counts {
        tasks.insert(status.to_string(), n);
    }
    let total = tasks.values().sum();
    Ok(Json(Stats {
        tasks,
        total,
        running_here: state.engine().running_runs().len(),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PerformanceQuery {
    /// The window: runs started in the last `hours` (1–720, default 24).
    pub hours: Option<i64>,
}

/// How the runs started in the window went. A run counts as a success when it
/// ended `completed`, as a failure when it ended `failed` or `interrupted`;
/// cancelled and still-running runs are in `runs` only, and so are rescued
/// runs (interrupted because their node stopped), which `rescued` counts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Performance {
    pub hours: i64,
    /// Runs started in the window, whatever their status.
    pub runs: i64,
    pub completed: i64,
    /// Ended `failed` or `interrupted` (not rescued).
    pub failed: i64,
    /// Ended `interrupted` by the rescuer because their node stopped (a crash
    /// or a restart of the server): no verdict on the task, so neither
    /// successes nor failures, and out of `success_rate`. Each was retried
    /// (or failed for lack of attempts) by a run of its own, counted as usual.
    pub rescued: i64,
    /// `completed / (completed + failed)`, 0–1; null when no run ended.
    pub success_rate: Option<f64>,
    /// Mean wall-clock time of the runs that ended completed, failed or
    /// interrupted; null when none did.
    pub average_duration_seconds: Option<f64>,
    /// Per module (step controller), by path.
    pub modules: Vec<ModuleStats>,
    /// One entry per UTC hour of the window, oldest first, zeros included:
    /// the runs that ended in that hour.
    pub throughput: Vec<HourStats>,
}

/// The step runs of one module in the window's runs. A step run interrupted
/// because its run was cancelled is in `runs` only.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModuleStats {
    /// Module path.
    pub module: String,
    /// Step runs that ran this module (or are running it).
    pub runs: i64,
    pub completed: i64,
    /// Ended `failed` or `interrupted`.
    pub failed: i64,
    pub success_rate: Option<f64>,
    pub average_duration_seconds: Option<f64>,
    pub average_fuel: Option<f64>,
    /// Bytes.
    pub average_peak_memory: Option<f64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HourStats {
    /// Start of the hour (RFC 3339, UTC).
    pub hour: DateTime<Utc>,
    pub completed: i64,
    /// Ended `failed` or `interrupted`.
    pub failed: i64,
}

#[utoipa::path(get, path = "/api/v1/stats/performance", tag = "operations", params(PerformanceQuery),
    responses((status = 200, body = Performance), (status = 401, body = super::ErrorBody),
        (status = 422, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn performance(
    State(state): State<AppState>,
    caller: Caller,
    QueryArgs(query): QueryArgs<PerformanceQuery>,
) -> Result<Json<Performance>> {
    caller.require(Role::Viewer)?;
    let hours = query.hours.unwrap_or(24);
    validate::range("hours", hours, 1, 720, "hours")?;
    let now = Utc::now();
    let since = now - TimeDelta::hours(hours);
    let stats = state.store().performance(since, now).await?;
    Ok(Json(Performance {
        hours,
        runs: stats.runs,
        completed: stats.completed,
        failed: stats.failed,
        rescued: stats.rescued,
        success_rate: rate(stats.completed, stats.failed),
        average_duration_seconds: stats.average_duration_seconds,
        modules: stats.modules.into_iter().map(module_stats).collect(),
        throughput: every_hour(since, now, &stats.throughput),
    }))
}

/// Successes among judged runs; `None` when there is none.
fn rate(completed: i64, failed: i64) -> Option<f64> {
    let judged = completed + failed;
    (judged > 0).then(|| completed as f64 / judged as f64)
}

fn module_stats(m: ModulePerformance) -> ModuleStats {
    ModuleStats {
        success_rate: rate(m.completed, m.failed),
        module: m.module,
        runs: m.runs,
        completed: m.completed,
        failed: m.failed,
        average_duration_seconds: m.average_duration_seconds,
        average_fuel: m.average_fuel,
        average_peak_memory: m.average_peak_memory,
    }
}

/// The store's hours with runs, spread over every hour from `since` to `now`
/// (a chart needs the empty hours too).
fn every_hour(since: DateTime<Utc>, now: DateTime<Utc>, busy: &[HourThroughput]) -> Vec<HourStats> {
    let hour = |t: DateTime<Utc>| t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t);
    let mut hours: BTreeMap<DateTime<Utc>, (i64, i64)> = BTreeMap::new();
    let mut at = hour(since);
    while at <= now {
        hours.insert(at, (0, 0));
        at += TimeDelta::hours(1);
    }
    for h in busy {
        hours.insert(h.hour, (h.completed, h.failed));
    }
    hours
        .into_iter()
        .map(|(hour, (completed, failed))| HourStats {
            hour,
            completed,
            failed,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().expect("a time")
    }

    #[test]
    fn every_hour_of_the_window_is_listed_once() {
        let busy = [HourThroughput {
            hour: at("2025-06-01T11:00:00Z"),
            completed: 2,
            failed: 1,
        }];
        let hours = every_hour(
            at("2025-06-01T09:30:00Z"),
            at("2025-06-01T12:10:00Z"),
            &busy,
        );
        let got: Vec<(String, i64, i64)> = hours
            .iter()
            .map(|h| (h.hour.to_rfc3339(), h.completed, h.failed))
            .collect();
        assert_eq!(
            got,
            [
                ("2025-06-01T09:00:00+00:00".to_string(), 0, 0),
                ("2025-06-01T10:00:00+00:00".to_string(), 0, 0),
                ("2025-06-01T11:00:00+00:00".to_string(), 2, 1),
                ("2025-06-01T12:00:00+00:00".to_string(), 0, 0),
            ]
        );
    }

    #[test]
    fn rates_need_judged_runs() {
        assert_eq!(rate(0, 0), None);
        assert_eq!(rate(3, 1), Some(0.75));
    }
}
