//! Stepwise: a task server whose steps are sandboxed WebAssembly components.

pub mod api;
pub mod app;
pub mod calibration;
pub mod cli;
pub mod engine;
pub mod events;
pub mod examples;
pub mod fsutil;
pub mod hooks;
pub mod runtime;
pub mod schedule;
pub mod secrets;
pub mod store;
