//! Write Stepwise steps as plain Rust functions.
//!
//! A step is one function from typed settings to a typed output. Stepwise hands the
//! step's settings (JSON) to it and stores its output (JSON) with the run; the function
//! reports progress, logs, saves checkpoints for retries, reads the task's secrets and
//! writes artifacts through the functions of this crate. Nothing else of the host is
//! reachable: no files, no network, no environment.
//!
//! # A complete step
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "export-orders"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! stepwise-guest = { path = "../guest-sdk" }
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! `src/lib.rs`:
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use stepwise_guest::{Progress, StepError, artifact, checkpoint, ensure, export_step, log};
//!
//! /// What the task's author configures for this step.
//! #[derive(Deserialize)]
//! struct Settings {
//!     /// Order ids to export.
//!     orders: Vec<u64>,
//!     /// Name of the CSV artifact.
//!     #[serde(default = "default_file")]
//!     file: String,
//! }
//!
//! fn default_file() -> String {
//!     "orders.csv".into()
//! }
//!
//! /// What the run history shows when the step succeeds.
//! #[derive(Serialize)]
//! struct Output {
//!     exported: usize,
//!     file: String,
//! }
//!
//! /// Saved after each order so a retry does not export it twice.
//! #[derive(Serialize, Deserialize, Default)]
//! struct Done {
//!     orders: usize,
//! }
//!
//! fn export_orders(settings: Settings) -> Result<Output, StepError> {
//!     ensure!(!settings.orders.is_empty(), "no orders to export");
//!     let mut done: Done = checkpoint::load()?.unwrap_or_default();
//!     if done.orders == 0 {
//!         artifact::write(&settings.file, "order_id\n")?;
//!     } else {
//!         log::info(format_args!("resuming after {} orders", done.orders));
//!     }
//!     let progress = Progress::new(settings.orders.len() as u64);
//!     progress.set(done.orders as u64, "starting");
//!     for id in &settings.orders[done.orders..] {
//!         artifact::append(&settings.file, format!("{id}\n"))?;
//!         done.orders += 1;
//!         checkpoint::save(&done)?;
//!         progress.advance(format_args!("exported order {id}"));
//!     }
//!     Ok(Output {
//!         exported: done.orders,
//!         file: settings.file,
//!     })
//! }
//!
//! export_step!(export_orders);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` and upload
//! `target/wasm32-wasip2/release/export_orders.wasm` with
//! `PUT /api/v1/modules/shop/orders/export`.
//!
//! # Failing
//!
//! Return `Err(StepError)` (with `?`, [`bail!`], [`ensure!`] or
//! [`ErrorContext::context`]): the step fails with that message and the task's retry
//! policy applies. When no retry can help (a setting out of range, a format the step
//! does not support), return [`StepError::permanent`], use [`bail_permanent!`] or
//! [`ensure_permanent!`], or mark an error with [`StepError::into_permanent`]: the
//! task then fails at once instead of retrying with backoff. Settings that do not parse
//! and a missing [`require_secret`] are permanent already. A panic also fails the step;
//! its message and location go to the step log at error level.
//!
//! # Host calls outside a step
//!
//! The crate also compiles for the machine you develop on, so its pure parts (settings
//! parsing, errors, your own helpers) can be unit-tested there; the host calls themselves
//! only work inside Stepwise and panic elsewhere.

#![deny(missing_docs)]

// The bindings generated below, and the macros they export, name this crate by its path
// `::stepwise_guest` because `$crate` is not available to them; this makes that path work
// inside the crate too.
extern crate self as stepwise_guest;

pub mod artifact;
pub mod checkpoint;
mod error;
mod host;
pub mod log;
mod step;

pub use error::{ErrorContext, StepError};
pub use host::{Budget, Context, Progress, context, progress, remaining, require_secret, secret};
pub use step::StepFn;

/// The bindings `wit-bindgen` generates from `wit/step.wit`, the interface shared with the
/// server. Public only so that [`export_step!`] expands in the step's crate.
#[doc(hidden)]
#[allow(missing_docs, unsafe_code)] // generated FFI glue
pub mod __bindings {
    wit_bindgen::generate!({
        world: "step",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_step_world",
        default_bindings_module: "::stepwise_guest::__bindings",
        runtime_path: "::stepwise_guest::__private::wit_bindgen::rt",
    });
}

/// What the macros of this crate expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::step::run;
    pub use wit_bindgen;

    /// The bytes of `text` as an array, in a constant (a custom section's
    /// static must be an array, and `str::as_bytes` gives a slice).
    pub const fn bytes<const N: usize>(text: &str) -> [u8; N] {
        let from = text.as_bytes();
        let mut out = [0u8; N];
        let mut i = 0;
        while i < N {
            out[i] = from[i];
            i += 1;
        }
        out
    }
}

/// Describe the module to the server: a title, a description, a version and
/// the JSON Schema of its settings, as JSON text. The server reads it when
/// the module is uploaded (refusing metadata that is not such JSON, or a
/// schema that is not valid), shows it in the dashboard, renders the New
/// task form from the schema, and checks each step's settings against the
/// schema when a task is created or a step edited, naming the field at
/// fault.
///
/// ```no_run
/// stepwise_guest::metadata!(r#"{
///     "title": "Export orders",
///     "description": "Writes the given orders as a CSV artifact.",
///     "version": "1.0.0",
///     "settings_schema": {
///         "type": "object",
///         "required": ["orders"],
///         "properties": {
///             "orders": {"type": "array", "items": {"type": "integer", "minimum": 1}},
///             "file": {"type": "string", "default": "orders.csv"}
///         },
///         "additionalProperties": false
///     }
/// }"#);
/// ```
///
/// Any constant `&str` will do, e.g. `include_str!("../metadata.json")`.
/// The keys are `title`, `description`, `version` and `settings_schema`,
/// all optional. It is written to the `stepwise:metadata` custom section of
/// the WebAssembly module, so it costs nothing at run time.
#[macro_export]
macro_rules! metadata {
    ($json:expr $(,)?) => {
        const _: () = {
            const JSON: &str = $json;
            #[allow(unsafe_code)] // a custom section is a static with a link section
            #[used]
            #[cfg_attr(target_family = "wasm", unsafe(link_section = "stepwise:metadata"))]
            static METADATA: [u8; JSON.len()] = $crate::__private::bytes(JSON);
        };
    };
}
