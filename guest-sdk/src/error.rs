//! The one error type a step returns, and helpers to build it.

use std::fmt;

/// Why a step failed. Its message becomes the step's error in the run history.
///
/// Any [`std::error::Error`] converts into it, so `?` works on I/O, serde, parse and
/// other errors; the message then includes the error's chain of sources. Build one
/// yourself with [`StepError::new`], [`bail!`](crate::bail) or
/// [`ErrorContext::context`].
///
/// `StepError` deliberately does not implement `std::error::Error` itself (as
/// `anyhow::Error` does not): that is what allows the blanket `From` conversion.
///
/// An error is *transient* by default: the task's retry policy applies, which is right
/// for a database that was down or a mail server that timed out. An error that no
/// retry can fix (settings that do not parse, a secret the task lacks) is *permanent*:
/// build it with [`StepError::permanent`] and the task fails at once instead of being
/// retried with backoff. Settings that do not parse and
/// [`require_secret`](crate::require_secret) already give permanent errors.
pub struct StepError {
    message: String,
    permanent: bool,
}

impl StepError {
    /// A transient error with this message, e.g. `StepError::new("mail server timed out")`:
    /// the task is retried while it has attempts left.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: false,
        }
    }

    /// A permanent error: trying again cannot help, so the task is not retried.
    ///
    /// ```
    /// use stepwise_guest::StepError;
    ///
    /// fn table_name(name: &str) -> Result<&str, StepError> {
    ///     if name.is_empty() {
    ///         return Err(StepError::permanent("`table` must not be empty"));
    ///     }
    ///     Ok(name)
    /// }
    /// assert!(table_name("").unwrap_err().is_permanent());
    /// ```
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: true,
        }
    }

    /// The same error, made permanent: for checks of the settings (or of data the
    /// settings carry) that give the same answer on every attempt.
    ///
    /// ```
    /// use stepwise_guest::{ErrorContext, StepError};
    ///
    /// fn rows(text: &str) -> Result<u32, StepError> {
    ///     text.parse::<u32>()
    ///         .context("`rows` is not a number")
    ///         .map_err(StepError::into_permanent)
    /// }
    /// assert!(rows("many").unwrap_err().is_permanent());
    /// ```
    pub fn into_permanent(self) -> Self {
        Self {
            permanent: true,
            ..self
        }
    }

    /// The message that the run history will show.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True for an error built with [`StepError::permanent`].
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }
}

impl<E: std::error::Error> From<E> for StepError {
    fn from(error: E) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::new(message)
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.message, f)
    }
}

/// Adds a sentence that says what the step was doing when something failed.
///
/// ```
/// use stepwise_guest::{ErrorContext, StepError};
///
/// fn price(text: &str) -> Result<f64, StepError> {
///     text.parse::<f64>().context(format!("price `{text}` is not a number"))
/// }
/// assert_eq!(
///     price("abc").unwrap_err().message(),
///     "price `abc` is not a number: invalid float literal"
/// );
/// ```
pub trait ErrorContext<T> {
    /// On failure, a [`StepError`] whose message is `message` followed by the cause.
    fn context(self, message: impl fmt::Display) -> Result<T, StepError>;
}

impl<T, E: fmt::Display> ErrorContext<T> for Result<T, E> {
    fn context(self, message: impl fmt::Display) -> Result<T, StepError> {
        self.map_err(|error| StepError::new(format!("{message}: {error}")))
    }
}

impl<T> ErrorContext<T> for Option<T> {
    fn context(self, message: impl fmt::Display) -> Result<T, StepError> {
        self.ok_or_else(|| StepError::new(message.to_string()))
    }
}

/// Returns early with a [`StepError`] built like `format!`.
///
/// ```
/// use stepwise_guest::{bail, StepError};
///
/// fn check(rows: usize) -> Result<(), StepError> {
///     if rows == 0 {
///         bail!("the table has no rows");
///     }
///     Ok(())
/// }
/// assert_eq!(check(0).unwrap_err().message(), "the table has no rows");
/// ```
#[macro_export]
macro_rules! bail {
    ($($arg:tt)+) => {
        return ::core::result::Result::Err($crate::StepError::new(::std::format!($($arg)+)))
    };
}

/// Returns early with a permanent [`StepError`] (see [`StepError::permanent`]) built
/// like `format!`: for failures no retry can fix.
///
/// ```
/// use stepwise_guest::{bail_permanent, StepError};
///
/// fn check(format: &str) -> Result<(), StepError> {
///     if format != "csv" {
///         bail_permanent!("format `{format}` is not supported; use `csv`");
///     }
///     Ok(())
/// }
/// assert!(check("xml").unwrap_err().is_permanent());
/// ```
#[macro_export]
macro_rules! bail_permanent {
    ($($arg:tt)+) => {
        return ::core::result::Result::Err($crate::StepError::permanent(::std::format!($($arg)+)))
    };
}

/// Returns early with a permanent [`StepError`] unless the condition holds: for
/// checks that no retry can change, such as a setting out of range.
///
/// ```
/// use stepwise_guest::{ensure_permanent, StepError};
///
/// fn check(batch: u32) -> Result<(), StepError> {
///     ensure_permanent!(batch > 0, "`batch` must be at least 1");
///     Ok(())
/// }
/// assert!(check(0).unwrap_err().is_permanent());
/// ```
#[macro_export]
macro_rules! ensure_permanent {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            $crate::bail_permanent!($($arg)+);
        }
    };
}

/// Returns early with a [`StepError`] unless the condition holds.
///
/// ```
/// use stepwise_guest::{ensure, StepError};
///
/// fn check(price: f64) -> Result<(), StepError> {
///     ensure!(price >= 0.0, "price {price} is negative");
///     Ok(())
/// }
/// assert_eq!(check(-1.0).unwrap_err().message(), "price -1 is negative");
/// ```
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            $crate::bail!($($arg)+);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_mark_keeps_the_cause_chain() {
        fn read() -> Result<(), StepError> {
            Err(Wrapper(std::io::Error::other("disk on fire")))?
        }
        #[derive(Debug)]
        struct Wrapper(std::io::Error);
        impl fmt::Display for Wrapper {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("writing dump")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        assert_eq!(read().unwrap_err().message(), "writing dump: disk on fire");
    }

    #[test]
    fn errors_are_transient_unless_built_permanent() {
        assert!(!StepError::new("timed out").is_permanent());
        let converted: StepError = std::io::Error::other("reset").into();
        assert!(!converted.is_permanent());
        assert!(StepError::permanent("bad format").is_permanent());
    }

    #[test]
    fn option_context_uses_the_message_alone() {
        let missing: Option<u8> = None;
        assert_eq!(
            missing.context("no such table").unwrap_err().message(),
            "no such table"
        );
    }
}
