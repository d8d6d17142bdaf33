//! The last panic a step reported, so that its trap can say what panicked.
//!
//! A Rust panic aborts on wasm: all the host sees is an `unreachable` trap.
//! The panic's text reaches the host just before that, as a log line: from
//! the SDK's panic hook as an error log (`step panicked at src/lib.rs:8:5:
//! boom`, see guest-sdk/src/step.rs), or from std's own hook on stderr
//! (`thread '<unnamed>' panicked at src/lib.rs:8:5:`, the message on the
//! next line). Both are watched here; the last panic wins.

use super::host::LogLevel;
use parking_lot::Mutex;
use std::sync::Arc;

/// What a panic said, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panic {
    pub message: String,
    /// `file:line:column`, when the panic said.
    pub location: Option<String>,
}

impl std::fmt::Display for Panic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.location {
            Some(at) => write!(f, "panicked: {} (at {at})", self.message),
            None => write!(f, "panicked: {}", self.message),
        }
    }
}

#[derive(Debug, Default)]
struct Seen {
    last: Option<Panic>,
    /// The location of std's stderr header, whose message is the next line.
    header: Option<String>,
}

/// Shared by a step's log import and its stderr.
#[derive(Debug, Clone, Default)]
pub struct PanicWatch {
    seen: Arc<Mutex<Seen>>,
}

/// The SDK's panic hook (guest-sdk/src/step.rs).
const SDK_PREFIX: &str = "step panicked";
/// std's default panic hook: `thread 'NAME' panicked at LOCATION:`.
const STD_MARKER: &str = "' panicked at ";

impl PanicWatch {
    /// A line the step logged through the `log` import.
    pub fn log_line(&self, level: LogLevel, line: &str) {
        if level != LogLevel::Error {
            return;
        }
        let Some(rest) = line.strip_prefix(SDK_PREFIX) else {
            return;
        };
        let panic = if let Some(message) = rest.strip_prefix(": ") {
            Panic {
                message: message.to_string(),
                location: None,
            }
        } else if let Some((at, message)) = rest
            .strip_prefix(" at ")
            .and_then(|located| located.split_once(": "))
        {
            Panic {
                message: message.to_string(),
                location: Some(at.to_string()),
            }
        } else {
            return;
        };
        self.seen.lock().last = Some(panic);
    }

    /// A line the step wrote to stderr.
    pub fn stderr_line(&self, line: &str) {
        let mut seen = self.seen.lock();
        if let Some(location) = seen.header.take() {
            seen.last = Some(Panic {
                message: line.to_string(),
                location: Some(location),
            });
            return;
        }
        if line.starts_with("thread '")
            && let Some((_, at)) = line.split_once(STD_MARKER)
        {
            seen.header = Some(at.trim_end_matches(':').to_string());
        }
    }

    /// The last panic seen, if any.
    pub fn last(&self) -> Option<Panic> {
        let seen = self.seen.lock();
        seen.last.clone().or_else(|| {
            // A header whose message never came (the step died first).
            seen.header.clone().map(|location| Panic {
                message: "(no message)".into(),
                location: Some(location),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_sdk_hook_line() {
        let watch = PanicWatch::default();
        watch.log_line(LogLevel::Info, "step panicked at a.rs:1:1: not a panic");
        assert_eq!(watch.last(), None);
        watch.log_line(
            LogLevel::Error,
            "step panicked at src/lib.rs:8:5: boom: twice",
        );
        assert_eq!(
            watch.last().unwrap().to_string(),
            "panicked: boom: twice (at src/lib.rs:8:5)"
        );
        watch.log_line(LogLevel::Error, "step panicked: later");
        assert_eq!(watch.last().unwrap().to_string(), "panicked: later");
    }

    #[test]
    fn reads_the_std_hook_on_stderr() {
        let watch = PanicWatch::default();
        watch.stderr_line("some output");
        assert_eq!(watch.last(), None);
        watch.stderr_line("thread '<unnamed>' panicked at src/lib.rs:12:9:");
        watch.stderr_line("boom");
        watch.stderr_line("note: run with `RUST_BACKTRACE=1` to display a backtrace");
        assert_eq!(
            watch.last(),
            Some(Panic {
                message: "boom".into(),
                location: Some("src/lib.rs:12:9".into()),
            })
        );
    }
}
