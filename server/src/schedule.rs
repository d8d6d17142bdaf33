//! Cron schedules: when a task with a `cron` expression is due, read on the
//! wall clock of its IANA time zone.
//!
//! The expressions are croner's (the `croner` crate): five fields (minute,
//! hour, day of month, month, day of week), or six with seconds first, with
//! `*`, `,`, `-`, `/`, `L`, `W`, `#`, month and weekday names and the
//! nicknames (`@daily`, `@hourly`, …). Zones come from the IANA database
//! (`chrono-tz`). Daylight saving time follows croner, as cron daemons do: a
//! fixed time the clock skips (02:30 on the night it springs forward) runs
//! at the first instant after the gap, and a fixed time the clock passes
//! twice (when it falls back) runs once, the first time; a schedule that
//! repeats within the hour (`*/15 * * * *`) runs on both passes.
//!
//! Pure maths: the store uses it for a new task's first due time, the
//! engine's policy for the next one after a run, the API to validate and to
//! list the next runs.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use std::str::FromStr;

/// The zone of a task that names none.
pub const DEFAULT_TIMEZONE: &str = "UTC";

/// How many upcoming runs a task shows.
pub const NEXT_RUNS: usize = 5;

/// Longest expression accepted.
const MAX_EXPRESSION: usize = 200;

/// Why an expression or a zone cannot be used. Each message says what would do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "`{expression}` is not a cron expression ({reason}); use five fields \
         (minute hour day-of-month month day-of-week, e.g. `0 3 * * *`) or six with seconds first"
    )]
    Expression { expression: String, reason: String },
    #[error("`{0}` never matches a time (e.g. the 30th of February); check its day and month")]
    Never(String),
    #[error("`{0}` is not an IANA time zone name such as `Europe/Berlin` or `UTC`")]
    Zone(String),
}

impl ScheduleError {
    /// The request field the error is about: `cron` or `timezone`.
    pub fn field(&self) -> &'static str {
        match self {
            ScheduleError::Expression { .. } | ScheduleError::Never(_) => "cron",
            ScheduleError::Zone(_) => "timezone",
        }
    }
}

/// A parsed cron expression in its zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    zone: Tz,
}

/// An IANA zone name, exactly as the database spells it.
pub fn zone(name: &str) -> Result<Tz, ScheduleError> {
    Tz::from_str(name).map_err(|_| ScheduleError::Zone(name.to_string()))
}

impl CronSchedule {
    /// Parse `expression` for `timezone`. An expression that never matches
    /// (checked from now on) is refused too: a task on it would never run.
    pub fn new(expression: &str, timezone: &str) -> Result<Self, ScheduleError> {
        let zone = zone(timezone)?;
        let refused = |reason: String| ScheduleError::Expression {
            expression: expression.to_string(),
            reason,
        };
        if expression.len() > MAX_EXPRESSION {
            return Err(refused(format!("longer than {MAX_EXPRESSION} characters")));
        }
        let cron = Cron::from_str(expression).map_err(|e| refused(e.to_string()))?;
        let schedule = CronSchedule { cron, zone };
        if schedule.next_after(Utc::now()).is_none() {
            return Err(ScheduleError::Never(expression.to_string()));
        }
        Ok(schedule)
    }

    /// The first time strictly after `after` (whole seconds: a run that
    /// ends within the second it was due for is not due again).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.find(after, false)
    }

    /// The first time at or after `at`.
    pub fn first_from(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.find(at, true)
    }

    /// `count` times in a row, the first at or after `from`.
    pub fn upcoming(&self, from: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
        let mut times = Vec::with_capacity(count);
        let mut next = self.first_from(from);
        while let Some(at) = next {
            times.push(at);
            if times.len() == count {
                break;
            }
            next = self.next_after(at);
        }
        times
    }

    fn find(&self, from: DateTime<Utc>, inclusive: bool) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&from.with_timezone(&self.zone), inclusive)
            .ok()
            .map(|at| at.with_timezone(&Utc))
    }
}

/// The schedule of a task's `cron` and `timezone`; `None` without a cron,
/// or (logged) for a stored expression this build cannot read, which the
/// API never lets in.
pub fn of(cron: Option<&str>, timezone: &str) -> Option<CronSchedule> {
    let expression = cron?;
    match CronSchedule::new(expression, timezone) {
        Ok(schedule) => Some(schedule),
        Err(error) => {
            tracing::error!("a stored cron schedule cannot be read: {error}");
            None
        }
    }
}

/// When a task on a cron schedule is first due (created, enabled, or given
/// a new schedule): the schedule's first time at or after `start_at` or
/// `now`, whichever is later. `None` without a cron.
pub fn first_due(
    cron: Option<&str>,
    timezone: &str,
    start_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let from = start_at.map_or(now, |at| at.max(now));
    of(cron, timezone)?.first_from(from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("an RFC 3339 time")
            .with_timezone(&Utc)
    }

    fn berlin(schedule: &str) -> CronSchedule {
        CronSchedule::new(schedule, "Europe/Berlin").expect("a valid schedule")
    }

    #[test]
    fn the_next_time_is_read_in_the_zone() {
        let nightly = berlin("0 3 * * *");
        // 03:00 in Berlin is 02:00 UTC in winter (CET) …
        assert_eq!(
            nightly.next_after(utc("2026-01-10T12:00:00Z")),
            Some(utc("2026-01-11T02:00:00Z"))
        );
        // … and 01:00 UTC in summer (CEST).
        assert_eq!(
            nightly.next_after(utc("2026-07-10T12:00:00Z")),
            Some(utc("2026-07-11T01:00:00Z"))
        );
        let in_utc = CronSchedule::new("0 3 * * *", "UTC").unwrap();
        assert_eq!(
            in_utc.next_after(utc("2026-01-10T12:00:00Z")),
            Some(utc("2026-01-11T03:00:00Z"))
        );
    }

    #[test]
    fn next_after_is_strict_and_first_from_is_not() {
        let nightly = berlin("0 3 * * *");
        let due = utc("2026-01-11T02:00:00Z");
        assert_eq!(nightly.first_from(due), Some(due));
        assert_eq!(nightly.next_after(due), Some(utc("2026-01-12T02:00:00Z")));
        // A run that ends within the second it was due for is not due again.
        let ended = due + chrono::Duration::milliseconds(400);
        assert_eq!(nightly.next_after(ended), Some(utc("2026-01-12T02:00:00Z")));
    }

    #[test]
    fn a_time_the_clock_skips_runs_after_the_gap() {
        // Berlin springs forward on 2026-03-29: 02:00 CET becomes 03:00 CEST,
        // so 02:30 does not exist that night.
        let half_past_two = berlin("30 2 * * *");
        let runs = half_past_two.upcoming(utc("2026-03-27T12:00:00Z"), 3);
        let zone: Tz = "Europe/Berlin".parse().unwrap();
        let local: Vec<String> = runs
            .iter()
            .map(|at| at.with_timezone(&zone).format("%m-%d %H:%M %Z").to_string())
            .collect();
        assert_eq!(
            local,
            ["03-28 02:30 CET", "03-29 03:00 CEST", "03-30 02:30 CEST"]
        );
    }

    #[test]
    fn a_time_the_clock_passes_twice_runs_once() {
        // Berlin falls back on 2026-10-25: 03:00 CEST becomes 02:00 CET, so
        // 02:30 happens twice that night; a nightly job runs once.
        let half_past_two = berlin("30 2 * * *");
        let runs = half_past_two.upcoming(utc("2026-10-24T12:00:00Z"), 3);
        assert_eq!(
            runs,
            [
                utc("2026-10-25T00:30:00Z"),
                utc("2026-10-26T01:30:00Z"),
                utc("2026-10-27T01:30:00Z"),
            ]
        );
        // A job every half hour runs on both passes.
        let every_half_hour = berlin("*/30 * * * *");
        let runs = every_half_hour.upcoming(utc("2026-10-25T00:00:00Z"), 4);
        assert_eq!(
            runs,
            [
                utc("2026-10-25T00:00:00Z"),
                utc("2026-10-25T00:30:00Z"),
                utc("2026-10-25T01:00:00Z"),
                utc("2026-10-25T01:30:00Z"),
            ]
        );
    }

    #[test]
    fn seconds_nicknames_and_names_are_read() {
        let every_two_seconds = CronSchedule::new("*/2 * * * * *", "UTC").unwrap();
        assert_eq!(
            every_two_seconds.next_after(utc("2026-01-01T00:00:01.500Z")),
            Some(utc("2026-01-01T00:00:02Z"))
        );
        let daily = CronSchedule::new("@daily", "UTC").unwrap();
        assert_eq!(
            daily.next_after(utc("2026-01-01T10:00:00Z")),
            Some(utc("2026-01-02T00:00:00Z"))
        );
        let mondays = CronSchedule::new("0 9 * * MON", "America/New_York").unwrap();
        let next = mondays.next_after(utc("2026-01-01T00:00:00Z")).unwrap();
        let zone: Tz = "America/New_York".parse().unwrap();
        assert_eq!(
            next,
            zone.with_ymd_and_hms(2026, 1, 5, 9, 0, 0)
                .unwrap()
                .with_timezone(&Utc)
        );
    }

    #[test]
    fn bad_input_is_refused_with_its_field() {
        for bad in ["", "not cron", "61 * * * *", "* * * *", "0 3 * * * * * *"] {
            let error = CronSchedule::new(bad, "UTC").expect_err(bad);
            assert_eq!(error.field(), "cron", "{bad}: {error}");
        }
        let never = CronSchedule::new("0 0 30 2 *", "UTC").expect_err("February 30th");
        assert_eq!(never, ScheduleError::Never("0 0 30 2 *".into()));
        assert_eq!(never.field(), "cron");
        for bad in ["Mars/Olympus", "europe/berlin", "", "+02:00"] {
            let error = CronSchedule::new("0 3 * * *", bad).expect_err(bad);
            assert_eq!(error, ScheduleError::Zone(bad.into()));
            assert_eq!(error.field(), "timezone");
        }
        assert!(CronSchedule::new(&"1,".repeat(150), "UTC").is_err());
    }

    #[test]
    fn upcoming_lists_times_in_order() {
        let hourly = CronSchedule::new("0 * * * *", "UTC").unwrap();
        let runs = hourly.upcoming(utc("2026-01-01T00:30:00Z"), NEXT_RUNS);
        assert_eq!(runs.len(), NEXT_RUNS);
        assert_eq!(runs[0], utc("2026-01-01T01:00:00Z"));
        assert_eq!(runs[4], utc("2026-01-01T05:00:00Z"));
        assert!(of(None, "UTC").is_none());
        assert!(of(Some("0 * * * *"), "UTC").is_some());
    }
}
