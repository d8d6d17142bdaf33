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

#[cfg(test)]
mod tests {
    use super::*;

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
