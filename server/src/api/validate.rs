//! Field-level validation of what clients send, with messages that say what
//! is allowed. Shared by the task and module routes.

use super::error::ApiError;

/// Module paths: 1–8 segments of `[a-z0-9_-]`, like `tool/backup/dumptables`.
pub fn module_path(field: &str, path: &str) -> Result<(), ApiError> {
    let segments: Vec<&str> = path.split('/').collect();
    let ok = path.len() <= 200
        && (1..=8).contains(&segments.len())
        && segments.iter().all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            format!(
                "`{path}` is not a valid module path: use 1 to 8 segments of lowercase letters, digits, `_` or `-`, separated by `/` (e.g. `tool/backup/dumptables`)"
            ),
        ))
    }
}

/// A number within bounds.
pub fn range(field: &str, value: i64, min: i64, max: i64, unit: &str) -> Result<(), ApiError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            format!("must be between {min} and {max} {unit}, got {value}"),
        ))
    }
}

/// A concurrency or rate limit: at least one (a module that may run nothing
/// is deactivated instead, with PATCH `{"active": false}`).
pub fn limit(field: &str, value: i64) -> Result<(), ApiError> {
    range(field, value, 1, MAX_LIMIT, "runs")
}

/// The largest concurrency or rate limit accepted.
pub const MAX_LIMIT: i64 = 1_000_000;

/// Text of bounded length that is not blank.
pub fn text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::invalid(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(ApiError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(())
}

/// Names of codes and secrets: 1–100 of `[A-Za-z0-9_.:-]`.
pub fn name(field: &str, value: &str) -> Result<(), ApiError> {
    let ok = !value.is_empty()
        && value.len() <= 100
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            format!("`{value}` must be 1–100 letters, digits, `_`, `.`, `:` or `-`"),
        ))
    }
}

/// A JSON value whose serialized size is bounded.
pub fn json_size(field: &str, value: &serde_json::Value, max: usize) -> Result<(), ApiError> {
    let size = value.to_string().len();
    if size > max {
        return Err(ApiError::invalid(
            field,
            format!("is {size} bytes of JSON; at most {max} are allowed"),
        ));
    }
    Ok(())
}

/// A task's schedule: a cron expression read in an IANA zone, never beside
/// a non-zero `run_interval` (a task recurs one way). The error names the
/// field at fault: `cron`, `timezone`, or — when both are set and only the
/// interval is new (`interval_is_new`, a PATCH of a cron task's interval) —
/// `run_interval`.
pub fn schedule(
    cron: Option<&str>,
    timezone: &str,
    run_interval: i64,
    interval_is_new: bool,
) -> Result<(), ApiError> {
    crate::schedule::zone(timezone).map_err(|e| ApiError::invalid(e.field(), e.to_string()))?;
    let Some(cron) = cron else {
        return Ok(());
    };
    crate::schedule::CronSchedule::new(cron, timezone)
        .map_err(|e| ApiError::invalid(e.field(), e.to_string()))?;
    if run_interval != 0 {
        let message = "a task recurs either on `cron` or on `run_interval`, not both; \
                       set run_interval to 0 to use cron, or cron to null to use run_interval";
        // The field the request set; the stored one is not the client's mistake.
        let field = if interval_is_new {
            "run_interval"
        } else {
            "cron"
        };
        return Err(ApiError::invalid(field, message));
    }
    Ok(())
}

/// A step's `max_execution_time`: 1 s to a week.
pub fn step_time(field: &str, seconds: i64) -> Result<(), ApiError> {
    range(field, seconds, 1, 7 * 86_400, "seconds")
}

/// A step's `max_memory`: 1 MiB to the server's cap.
pub fn step_memory(field: &str, bytes: i64, max: i64) -> Result<(), ApiError> {
    range(field, bytes, 1 << 20, max, "bytes")
}

/// A step's `settings`: at most 1 MiB of JSON.
pub fn step_settings(field: &str, settings: &serde_json::Value) -> Result<(), ApiError> {
    json_size(field, settings, 1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(error: ApiError) -> Option<String> {
        match error {
            ApiError::Invalid { field, .. } => field,
            other => panic!("not a field error: {other}"),
        }
    }

    #[test]
    fn schedules() {
        assert!(schedule(None, "UTC", 60, true).is_ok());
        assert!(schedule(Some("0 3 * * *"), "Europe/Berlin", 0, false).is_ok());
        let bad = |cron, zone, interval, given| {
            field_of(schedule(cron, zone, interval, given).unwrap_err())
        };
        assert_eq!(
            bad(Some("0 3 * *"), "UTC", 0, false).as_deref(),
            Some("cron")
        );
        assert_eq!(bad(None, "Berlin", 0, false).as_deref(), Some("timezone"));
        assert_eq!(
            bad(Some("0 3 * * *"), "Moon/Base", 0, false).as_deref(),
            Some("timezone")
        );
        assert_eq!(
            bad(Some("0 3 * * *"), "UTC", 60, false).as_deref(),
            Some("cron")
        );
        assert_eq!(
            bad(Some("0 3 * * *"), "UTC", 60, true).as_deref(),
            Some("run_interval")
        );
    }

    #[test]
    fn module_paths() {
        assert!(module_path("p", "tool/backup/dumptables").is_ok());
        assert!(module_path("p", "demo").is_ok());
        for bad in [
            "",
            "../etc",
            "a//b",
            "A/b",
            "a/b/c/d/e/f/g/h/i",
            "a/./b",
            "a b",
            "/a",
        ] {
            assert!(module_path("p", bad).is_err(), "{bad}");
        }
    }
}
