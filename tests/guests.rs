//! Python and JavaScript steps in the sandbox: components built by componentize-py and
//! componentize-js import much of WASI 0.2 (CPython the filesystem and sockets) and must
//! load, find no file and no network, use every host call, and be stopped by fuel, the
//! memory cap, the deadline and cancel like a Rust step. End to end through the server:
//! `tests/guests_server.rs`.
//!
//! The components are built once per source (`common::guests`) and compiled once per
//! engine into a cache shared by these tests, since each takes seconds to compile.

mod common;

use common::guests::{Lang, component};
use common::recording::{RecordingHost, request};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stepwise::runtime::{
    DEFAULT_FUEL_PER_SECOND, LoadedModule, Runtime, RuntimeConfig, StepOutcome, StepReport,
};
use tokio_util::sync::CancellationToken;

/// Memory cap for a guest that should not hit it: CPython's heap and SpiderMonkey's
/// need tens of MiB before the step does anything.
const ROOMY: u64 = 256 << 20;

/// The probe fixture of one language in a runtime of its own, with a host that
/// records what it did and holds the one secret the probe reads.
struct Probe {
    rt: Runtime,
    module: Arc<LoadedModule>,
    host: Arc<RecordingHost>,
}

impl Probe {
    /// `None` when skipped (no toolchain, not CI).
    async fn start(lang: Lang, test: &str, fuel_per_second: u64) -> Option<Probe> {
        Self::start_with(lang, test, fuel_per_second, 4).await
    }

    /// In a runtime whose pool holds `max_instances` steps at once.
    async fn start_with(
        lang: Lang,
        test: &str,
        fuel_per_second: u64,
        max_instances: u32,
    ) -> Option<Probe> {
        // One compile at a time: tests in parallel would each compile the same component.
        static COMPILING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let test = test.to_string();
        let bytes = tokio::task::spawn_blocking(move || component(lang, "fixture/probe", &test))
            .await
            .unwrap()?;
        // Compiled code is shared by every runtime here: the cache key is the module
        // hash and the engine's compatibility, not the fuel rate.
        let mut config =
            RuntimeConfig::local(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("guest-compiled"));
        config.fuel_per_second = fuel_per_second;
        config.pool.max_instances = max_instances;
        let rt = Runtime::new(config).unwrap();
        let _one = COMPILING.lock().await;
        let module = rt
            .prepare(&bytes)
            .await
            .unwrap_or_else(|e| panic!("{lang:?} probe refused: {e}"));
        let host = Arc::new(RecordingHost {
            secrets: [("api_key".to_string(), "k-123456".to_string())].into(),
            ..RecordingHost::default()
        });
        Some(Probe { rt, module, host })
    }

    async fn run(&self, settings: Value, seconds: f64, attempt: u32) -> StepReport {
        self.run_until(settings, seconds, attempt, CancellationToken::new())
            .await
    }

    async fn run_until(
        &self,
        settings: Value,
        seconds: f64,
        attempt: u32,
        cancel: CancellationToken,
    ) -> StepReport {
        let request = request(settings, seconds, ROOMY, attempt);
        self.rt
            .run(&self.module, request, self.host.clone(), cancel)
            .await
    }
}

fn output(report: &StepReport) -> &Value {
    match &report.outcome {
        StepOutcome::Completed { output } => output,
        other => panic!("expected completion, got {other:?}"),
    }
}

/// One test body for each language.
macro_rules! in_both {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn python() {
                let test = concat!(stringify!($name), "::python");
                super::$body(super::Lang::Python, test).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn js() {
                super::$body(super::Lang::Js, concat!(stringify!($name), "::js")).await;
            }
        }
    };
}

in_both!(no_file_no_socket_only_errors, sandbox);
async fn sandbox(lang: Lang, test: &str) {
    let Some(probe) = Probe::start(lang, test, DEFAULT_FUEL_PER_SECOND).await else {
        return;
    };
    let report = probe.run(json!({"mode": "sandbox"}), 10.0, 1).await;
    let probes = output(&report);
    println!("{lang:?} step's errors: {probes}");
    for attempt in ["read", "list", "tcp", "resolve"] {
        let error = probes[attempt].as_str().unwrap_or_default();
        assert!(
            !error.is_empty() && error != "ok",
            "{lang:?} {attempt}: {probes}"
        );
    }
}

in_both!(host_calls_checkpoint_and_resume, host_calls);
async fn host_calls(lang: Lang, test: &str) {
    let Some(probe) = Probe::start(lang, test, DEFAULT_FUEL_PER_SECOND).await else {
        return;
    };
    let settings = json!({"mode": "host", "fail_first": true});
    let first = probe.run(settings.clone(), 10.0, 1).await;
    let failed = StepOutcome::ReturnedError {
        message: "failed on purpose after the checkpoint".into(),
        permanent: false,
    };
    assert_eq!(first.outcome, failed);
    let second = probe.run(settings, 10.0, 2).await;
    let resumed = json!({"resumed": true, "attempt": 2, "key_length": 8});
    assert_eq!(output(&second), &resumed);
    let host = &probe.host;
    let report = host.artifacts.lock().unwrap()["report.txt"].clone();
    assert_eq!(report, b"first part\nsecond part\n");
    let messages = host.progress_messages.lock().unwrap().clone();
    assert!(
        messages.iter().any(|m| m == "first part written"),
        "{messages:?}"
    );
    assert_eq!(host.progress.lock().unwrap().last(), Some(&100.0));
    let logs = host.logs.lock().unwrap().clone();
    assert!(
        logs.iter().any(|(_, m)| m == "resuming after 1 part(s)"),
        "{logs:?}"
    );

    let permanent = probe.run(json!({"mode": "permanent"}), 10.0, 1).await;
    let expected = StepOutcome::ReturnedError {
        message: "permanent on purpose".into(),
        permanent: true,
    };
    assert_eq!(permanent.outcome, expected);
    match probe.run(json!({"mode": 3}), 10.0, 1).await.outcome {
        StepOutcome::ReturnedError { message, permanent } => {
            assert!(permanent, "settings errors are permanent");
            let named = "invalid settings at `mode`: expected a string";
            assert!(message.starts_with(named), "{message}");
        }
        other => panic!("expected a settings error, got {other:?}"),
    }
}

in_both!(an_endless_loop_runs_out_of_fuel, out_of_fuel);
async fn out_of_fuel(lang: Lang, test: &str) {
    // A small fuel rate: fuel, not the wall-clock backstop, stops the loop.
    let Some(probe) = Probe::start(lang, test, 1_000_000_000).await else {
        return;
    };
    let report = probe.run(json!({"mode": "loop"}), 1.0, 1).await;
    let stopped = matches!(report.outcome, StepOutcome::OutOfFuel { .. });
    assert!(stopped, "{:?}", report.outcome);
}

in_both!(a_memory_bomb_hits_the_cap, memory_cap);
async fn memory_cap(lang: Lang, test: &str) {
    let Some(probe) = Probe::start(lang, test, DEFAULT_FUEL_PER_SECOND).await else {
        return;
    };
    let report = probe.run(json!({"mode": "memory"}), 30.0, 1).await;
    // The cap stops the growth; CPython may first turn the refused growth into a
    // MemoryError that fails the step, and SpiderMonkey may trap on it.
    match &report.outcome {
        StepOutcome::MemoryCap { limit_bytes } => assert_eq!(*limit_bytes, ROOMY),
        StepOutcome::ReturnedError { message, .. } => {
            assert!(
                message.contains("MemoryError") || message.contains("memory"),
                "{message}"
            )
        }
        StepOutcome::Trapped { .. } => {}
        other => panic!("{lang:?}: expected the memory cap, got {other:?}"),
    }
    assert!(report.peak_memory <= ROOMY, "{}", report.peak_memory);
}

in_both!(the_deadline_stops_what_fuel_does_not, deadline);
async fn deadline(lang: Lang, test: &str) {
    // Fuel enough for hours: only the wall clock can stop it.
    let Some(probe) = Probe::start(lang, test, u64::MAX / 1_000_000).await else {
        return;
    };
    let mode = if lang == Lang::Python {
        "sleep"
    } else {
        "loop"
    };
    let started = Instant::now();
    let report = probe.run(json!({"mode": mode}), 0.5, 1).await;
    let stopped = matches!(report.outcome, StepOutcome::Deadline { .. });
    assert!(stopped, "{:?}", report.outcome);
    assert!(started.elapsed() < Duration::from_secs(30));
}

in_both!(cancel_stops_a_running_step, cancel);
async fn cancel(lang: Lang, test: &str) {
    let Some(probe) = Probe::start(lang, test, DEFAULT_FUEL_PER_SECOND).await else {
        return;
    };
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let report = probe
        .run_until(json!({"mode": "loop"}), 60.0, 1, cancel)
        .await;
    assert_eq!(report.outcome, StepOutcome::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(10));
}

in_both!(a_full_pool_runs_as_many_as_with_rust, full_pool);
/// The pool is sized in steps (`max_instances`), with room for a few core instances,
/// memories and tables each: a Python or JS component, several core modules linked
/// together, must fit that room, so a node runs as many of them at once as Rust steps.
async fn full_pool(lang: Lang, test: &str) {
    let Some(probe) = Probe::start_with(lang, test, DEFAULT_FUEL_PER_SECOND, 2).await else {
        return;
    };
    let mode = if lang == Lang::Python {
        "sleep"
    } else {
        "loop"
    };
    let (a, b) = tokio::join!(
        probe.run(json!({"mode": mode}), 0.5, 1),
        probe.run(json!({"mode": mode}), 0.5, 1),
    );
    for report in [a, b] {
        let limited = matches!(
            report.outcome,
            StepOutcome::Deadline { .. } | StepOutcome::OutOfFuel { .. }
        );
        assert!(limited, "{lang:?}: {:?}", report.outcome);
    }
}
