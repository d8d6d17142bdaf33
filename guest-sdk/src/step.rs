//! Turning a plain function into the component's `run` export.

use std::sync::Once;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::StepError;

/// A function that can be a step: `fn(Settings) -> Result<Output, StepError>`, or
/// `fn() -> Result<Output, StepError>` for a step without settings.
///
/// Implemented for every such function; [`export_step!`](crate::export_step) requires it,
/// so a wrong signature fails to compile with the note below instead of an error deep in
/// generated bindings. `Marker` only lets the settings and output types be inferred.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a step function",
    label = "a step takes its settings and returns `Result<Output, StepError>`",
    note = "write: fn my_step(settings: MySettings) -> Result<MyOutput, StepError>",
    note = "with #[derive(serde::Deserialize)] on MySettings and #[derive(serde::Serialize)] on MyOutput"
)]
pub trait StepFn<Marker> {
    /// Parses `settings`, calls the function and serializes its output.
    fn call_json(self, settings: &str) -> Result<String, StepError>;
}

impl<F, S, O> StepFn<(S, O)> for F
where
    F: FnOnce(S) -> Result<O, StepError>,
    S: DeserializeOwned,
    O: Serialize,
{
    fn call_json(self, settings: &str) -> Result<String, StepError> {
        to_json(&self(parse_settings(settings)?)?)
    }
}

/// A step that needs no settings: whatever settings the task gives are ignored.
impl<F, O> StepFn<(O,)> for F
where
    F: FnOnce() -> Result<O, StepError>,
    O: Serialize,
{
    fn call_json(self, _settings: &str) -> Result<String, StepError> {
        to_json(&self()?)
    }
}

fn to_json<O: Serialize>(output: &O) -> Result<String, StepError> {
    serde_json::to_string(output)
        .map_err(|e| StepError::new(format!("could not serialize the step's output: {e}")))
}

/// Parses the settings JSON; absent settings (empty text or `null`) read as `{}` so a
/// settings struct whose fields all have defaults works without any settings.
fn parse_settings<S: DeserializeOwned>(settings: &str) -> Result<S, StepError> {
    let text = match settings.trim() {
        "" | "null" => "{}",
        text => text,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed: S = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let reason = without_position(e.inner());
        if path == "." {
            StepError::permanent(format!("invalid settings: {reason}"))
        } else {
            StepError::permanent(format!("invalid settings at `{path}`: {reason}"))
        }
    })?;
    de.end()
        .map_err(|e| StepError::permanent(format!("invalid settings: {e}")))?;
    Ok(parsed)
}

/// serde_json's message without its " at line L column C": the settings a step
/// receives are the server's compact re-serialisation, not the text the user
/// wrote, so a position in them misleads; the field path says where instead.
fn without_position(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    match message.strip_suffix(&position) {
        Some(reason) => reason.to_owned(),
        None => message,
    }
}

/// The body of the exported `run`; called by the code [`export_step!`](crate::export_step)
/// generates.
#[doc(hidden)]
pub fn run<M, F: StepFn<M>>(settings: &str, step: F) -> Result<String, String> {
    install_panic_hook();
    step.call_json(settings).map_err(|e| {
        if e.is_permanent() {
            crate::__bindings::stepwise::step::host::mark_permanent();
        }
        e.message().to_owned()
    })
}

/// Sends a panic's message and location to the step log at error level, once per
/// instance. Panics abort on wasm, so without this the run would only show a trap.
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            match info.location() {
                Some(at) => crate::log::error(format_args!("step panicked at {at}: {message}")),
                None => crate::log::error(format_args!("step panicked: {message}")),
            }
        }));
    });
}

/// Exports a function as the step's `run`.
///
/// The function takes the settings (any `serde::Deserialize` type) and returns
/// `Result<Output, StepError>` (any `serde::Serialize` output). Settings that do not parse
/// fail the step with serde's message and the path of the offending field, e.g.
/// ``invalid settings at `tables[0].rows`: invalid type: ...``.
///
/// Use it once, in a `cdylib` crate built for `wasm32-wasip2`. The dependency must keep
/// its name `stepwise-guest` (the generated bindings refer to `::stepwise_guest`).
///
/// A function with the wrong shape does not compile, and the error says what to write:
///
/// ```compile_fail,E0277
/// use stepwise_guest::export_step;
///
/// // The output is not wrapped in `Result<_, StepError>`.
/// fn count(to: u64) -> u64 {
///     to
/// }
/// export_step!(count);
/// ```
///
/// ```compile_fail,E0277
/// use stepwise_guest::{export_step, StepError};
///
/// // Two parameters: settings are one value.
/// fn add(a: u64, b: u64) -> Result<u64, StepError> {
///     Ok(a + b)
/// }
/// export_step!(add);
/// ```
#[macro_export]
macro_rules! export_step {
    ($step:path) => {
        const _: () = {
            struct __StepwiseStep;

            impl $crate::__bindings::Guest for __StepwiseStep {
                fn run(
                    settings: ::std::string::String,
                ) -> ::core::result::Result<::std::string::String, ::std::string::String> {
                    $crate::__private::run(&settings, $step)
                }
            }

            $crate::__bindings::__export_step_world!(__StepwiseStep);
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    struct Settings {
        #[serde(default)]
        tables: Vec<Table>,
    }

    #[derive(Deserialize, Debug)]
    struct Table {
        name: String,
    }

    fn dump(settings: Settings) -> Result<usize, StepError> {
        Ok(settings
            .tables
            .iter()
            .filter(|t| !t.name.is_empty())
            .count())
    }

    #[test]
    fn output_is_json() {
        assert_eq!(dump.call_json(r#"{"tables":[{"name":"a"}]}"#).unwrap(), "1");
    }

    #[test]
    fn a_step_without_settings_ignores_them() {
        fn ping() -> Result<&'static str, StepError> {
            Ok("pong")
        }
        assert_eq!(ping.call_json(r#"{"any":1}"#).unwrap(), r#""pong""#);
    }

    #[test]
    fn absent_settings_read_as_empty_object() {
        assert_eq!(dump.call_json("").unwrap(), "0");
        assert_eq!(dump.call_json("null").unwrap(), "0");
    }

    #[test]
    fn a_bad_field_is_named() {
        let error = dump.call_json(r#"{"tables":[{"name":3}]}"#).unwrap_err();
        assert!(
            error.message().starts_with(
                "invalid settings at `tables[0].name`: invalid type: integer `3`, expected a string"
            ),
            "{error}"
        );
    }

    #[test]
    fn settings_errors_are_permanent() {
        assert!(
            dump.call_json(r#"{"tables":3}"#)
                .unwrap_err()
                .is_permanent()
        );
        assert!(dump.call_json("{} x").unwrap_err().is_permanent());
    }

    #[test]
    fn no_position_in_the_compact_text_is_given() {
        let error = dump.call_json(r#"{"tables":[{"name":3}]}"#).unwrap_err();
        assert!(!error.message().contains("line 1"), "{error}");
        assert!(error.message().ends_with("expected a string"), "{error}");
    }

    #[test]
    fn a_missing_field_is_named() {
        let error = dump.call_json(r#"{"tables":[{}]}"#).unwrap_err();
        assert!(error.message().contains("missing field `name`"), "{error}");
    }

    #[test]
    fn trailing_text_is_refused() {
        assert!(dump.call_json("{} x").is_err());
    }
}
