//! Lines in the step's log, shown with the run and streamed to subscribers.
//!
//! What a step prints to stdout and stderr lands in the step log too, but these
//! functions say how severe a line is.

use std::fmt;

use crate::__bindings::stepwise::step::host;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Details that help debugging.
    Debug,
    /// Normal progress worth keeping.
    Info,
    /// Something odd that did not stop the step.
    Warn,
    /// Something failed.
    Error,
}

/// Writes `message` to the step's log at `level`.
pub fn log(level: Level, message: impl fmt::Display) {
    let level = match level {
        Level::Trace => host::Level::Trace,
        Level::Debug => host::Level::Debug,
        Level::Info => host::Level::Info,
        Level::Warn => host::Level::Warn,
        Level::Error => host::Level::Error,
    };
    host::log(level, &message.to_string());
}

/// Writes `message` at [`Level::Trace`].
pub fn trace(message: impl fmt::Display) {
    log(Level::Trace, message);
}

/// Writes `message` at [`Level::Debug`].
pub fn debug(message: impl fmt::Display) {
    log(Level::Debug, message);
}

/// Writes `message` at [`Level::Info`].
pub fn info(message: impl fmt::Display) {
    log(Level::Info, message);
}

/// Writes `message` at [`Level::Warn`].
pub fn warn(message: impl fmt::Display) {
    log(Level::Warn, message);
}

/// Writes `message` at [`Level::Error`].
pub fn error(message: impl fmt::Display) {
    log(Level::Error, message);
}
