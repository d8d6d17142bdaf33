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
pub struct StepError {
    message: String,
}

impl StepError {
    /// An error with this message, e.g. `StepError::new("no tables to dump")`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The message that the run history will show.
    pub fn message(&self) -> &str {
        &self.message
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
        Self { message }
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
    fn option_context_uses_the_message_alone() {
        let missing: Option<u8> = None;
        assert_eq!(
            missing.context("no such table").unwrap_err().message(),
            "no such table"
        );
    }
}
