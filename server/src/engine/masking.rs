//! Secret values are replaced by [`MASK`] in everything a step says that
//! someone else can read: log lines (its `log` calls and its stdout/stderr),
//! progress messages, artifact names, its output and its error. A step may
//! read a secret, and a careless one echoes it; the host masks the text where
//! it enters, before it is stored or sent on the event bus.
//!
//! Values shorter than [`MIN_MASKED_BYTES`] are not masked: replacing every
//! `1` or `on` of a step's text would garble it and protect nothing (a value
//! that short is guessed faster than it is read off a log).

use crate::runtime::StepOutcome;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashMap;

/// What a secret's value is replaced with.
pub const MASK: &str = "***";

/// Shortest value that is masked, in bytes.
pub const MIN_MASKED_BYTES: usize = 4;

/// The secret values of one run, ready to be masked out of text.
#[derive(Debug, Default)]
pub struct SecretMask {
    /// Longest first, so a value that contains another is masked whole.
    values: Vec<String>,
}

impl SecretMask {
    pub fn new(secrets: &HashMap<String, String>) -> Self {
        let mut values: Vec<String> = secrets
            .values()
            .filter(|value| value.len() >= MIN_MASKED_BYTES)
            .cloned()
            .collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        SecretMask { values }
    }

    /// `text` with every secret value replaced by [`MASK`]; borrowed (no
    /// copy) when it holds none, which is nearly always.
    pub fn text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut masked = Cow::Borrowed(text);
        for value in &self.values {
            if masked.contains(value.as_str()) {
                masked = Cow::Owned(masked.replace(value.as_str(), MASK));
            }
        }
        masked
    }

    /// Like [`SecretMask::text`], for an owned string.
    pub fn string(&self, text: String) -> String {
        match self.text(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(masked) => masked,
        }
    }

    /// A JSON value with every string (keys included) masked; a number whose
    /// digits hold a secret becomes the masked text of those digits.
    pub fn json(&self, value: Value) -> Value {
        if self.values.is_empty() {
            return value;
        }
        match value {
            Value::String(text) => Value::String(self.string(text)),
            Value::Number(number) => {
                let digits = number.to_string();
                match self.text(&digits) {
                    Cow::Borrowed(_) => Value::Number(number),
                    Cow::Owned(masked) => Value::String(masked),
                }
            }
            Value::Array(items) => Value::Array(items.into_iter().map(|v| self.json(v)).collect()),
            Value::Object(fields) => Value::Object(
                fields
                    .into_iter()
                    .map(|(key, v)| (self.string(key), self.json(v)))
                    .collect(),
            ),
            other => other,
        }
    }

    /// A step's outcome with its output, error message and backtrace masked.
    pub fn outcome(&self, outcome: StepOutcome) -> StepOutcome {
        if self.values.is_empty() {
            return outcome;
        }
        match outcome {
            StepOutcome::Completed { output } => StepOutcome::Completed {
                output: self.json(output),
            },
            StepOutcome::ReturnedError { message, permanent } => StepOutcome::ReturnedError {
                message: self.string(message),
                permanent,
            },
            StepOutcome::Trapped {
                trap,
                message,
                backtrace,
            } => StepOutcome::Trapped {
                trap,
                message: self.string(message),
                backtrace: self.string(backtrace),
            },
            StepOutcome::Failed { message } => StepOutcome::Failed {
                message: self.string(message),
            },
            // The runtime refuses an oversized artifact before the engine's
            // host sees (and masks) its name.
            StepOutcome::ArtifactCap {
                name,
                size_bytes,
                limit_bytes,
            } => StepOutcome::ArtifactCap {
                name: self.string(name),
                size_bytes,
                limit_bytes,
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mask(values: &[&str]) -> SecretMask {
        let secrets = values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("s{i}"), v.to_string()))
            .collect();
        SecretMask::new(&secrets)
    }

    #[test]
    fn every_occurrence_is_masked_and_clean_text_is_not_copied() {
        let mask = mask(&["hunter22", "abc"]);
        assert_eq!(
            mask.text("pw=hunter22, again hunter22"),
            "pw=***, again ***"
        );
        assert!(matches!(mask.text("nothing here"), Cow::Borrowed(_)));
        // Shorter than MIN_MASKED_BYTES: left alone.
        assert_eq!(mask.text("abc"), "abc");
    }

    #[test]
    fn a_value_containing_another_is_masked_whole() {
        let mask = mask(&["pass", "password123"]);
        assert_eq!(mask.text("password123 / pass"), "*** / ***");
    }

    #[test]
    fn json_strings_keys_and_numbers_are_masked() {
        let mask = mask(&["s3cr3t-value", "987654"]);
        let output =
            json!({"token": "Bearer s3cr3t-value", "s3cr3t-value": [1, 9876540], "ok": true});
        assert_eq!(
            mask.json(output),
            json!({"token": "Bearer ***", "***": [1, "***0"], "ok": true})
        );
    }

    #[test]
    fn outcomes_lose_the_value_and_keep_their_kind() {
        let mask = mask(&["s3cr3t-value"]);
        let failed = mask.outcome(StepOutcome::ReturnedError {
            message: "login as s3cr3t-value refused".into(),
            permanent: true,
        });
        assert_eq!(
            failed,
            StepOutcome::ReturnedError {
                message: "login as *** refused".into(),
                permanent: true
            }
        );
        let trapped = mask.outcome(StepOutcome::Trapped {
            trap: "unreachable".into(),
            message: "panicked: s3cr3t-value".into(),
            backtrace: "0: f".into(),
        });
        assert!(!format!("{trapped:?}").contains("s3cr3t-value"));
    }
}
