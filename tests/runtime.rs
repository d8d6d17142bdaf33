//! The sandbox on its own: every example module and misbehaving fixture, by
//! typed outcome; refusals of bad binaries; the process keeps working after
//! each hostile module.

mod common;

use common::module_bytes;
use common::recording::{RecordingHost, request};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stepwise::runtime::{
    DataCaps, ModuleError, Runtime, RuntimeConfig, StepOutcome, StepReport, StepRequest,
};
use tokio_util::sync::CancellationToken;

fn runtime() -> Runtime {
    let dir = tempfile::tempdir().unwrap().keep();
    let mut config = RuntimeConfig::local(dir);
    config.output_cap = 64 * 1024;
    Runtime::new(config).unwrap()
}

async fn run_with(
    runtime: &Runtime,
    module: &str,
    req: StepRequest,
    host: Arc<RecordingHost>,
) -> StepReport {
    let loaded = runtime
        .prepare(&module_bytes(module))
        .await
        .unwrap_or_else(|e| panic!("{module}: {e}"));
    runtime
        .run(&loaded, req, host, CancellationToken::new())
        .await
}

async fn run(runtime: &Runtime, module: &str, settings: Value) -> (StepReport, Arc<RecordingHost>) {
    let host = Arc::new(RecordingHost::default());
    let report = run_with(
        runtime,
        module,
        request(settings, 10.0, 64 << 20, 1),
        host.clone(),
    )
    .await;
    (report, host)
}

fn output(report: &StepReport) -> &Value {
    match &report.outcome {
        StepOutcome::Completed { output } => output,
        other => panic!("expected completion, got {other:?}"),
    }
}

#[tokio::test]
async fn demo_count_counts_with_progress() {
    let rt = runtime();
    let (report, host) = run(&rt, "demo/count", json!({"to": 100000})).await;
    assert_eq!(output(&report)["counted"], 100000);
    let progress = host.progress.lock().unwrap();
    assert!(
        progress.len() >= 10,
        "progress reported {} times",
        progress.len()
    );
    assert_eq!(*progress.last().unwrap(), 100.0);
    assert!(progress.windows(2).all(|w| w[0] <= w[1]));
    assert!(report.fuel_used > 0 && report.peak_memory > 0);
}

fn tables() -> Value {
    json!({"tables": [
        {"name": "customers", "columns": ["id", "name"], "rows": [[1, "Ann O'Neil"], [2, "Bob"]]},
        {"name": "orders", "columns": ["id", "total"], "rows": [[10, 9.5]]},
        {"name": "products", "columns": ["sku"], "rows": [["A-1"], ["B-2"], ["C-3"]]}
    ]})
}

#[tokio::test]
async fn dumptables_writes_an_sql_dump_and_resumes_from_its_checkpoint() {
    let rt = runtime();
    let host = Arc::new(RecordingHost::default());
    let mut settings = tables();
    settings["fail_after_tables"] = json!(2);
    let first = run_with(
        &rt,
        "tool/backup/dumptables",
        request(settings.clone(), 10.0, 64 << 20, 1),
        host.clone(),
    )
    .await;
    assert!(
        matches!(
            first.outcome,
            StepOutcome::ReturnedError {
                permanent: false,
                ..
            }
        ),
        "a failure half-way is worth a retry: {:?}",
        first.outcome
    );
    assert!(host.checkpoint.lock().unwrap().is_some());

    let second = run_with(
        &rt,
        "tool/backup/dumptables",
        request(settings, 10.0, 64 << 20, 2),
        host.clone(),
    )
    .await;
    let out = output(&second);
    assert_eq!(out["resumed_from"], 2, "{out}");
    let dump = String::from_utf8(host.artifacts.lock().unwrap()["backup.sql"].clone()).unwrap();
    assert!(dump.contains("INSERT INTO"), "{dump}");
    assert!(
        dump.contains(r"O\'Neil"),
        "quotes are escaped (MySQL dialect by default): {dump}"
    );
    assert_eq!(
        dump.matches("CREATE TABLE").count(),
        3,
        "each table once: {dump}"
    );
}

#[tokio::test]
async fn contact_send_renders_messages_with_the_secret_key() {
    let rt = runtime();
    let host = Arc::new(RecordingHost {
        secrets: [("mail_api_key".to_string(), "key-123".to_string())].into(),
        ..Default::default()
    });
    let settings = json!({"template": "Hello {{name}}", "subject": "News",
        "recipients": [{"email": "a@example.com", "name": "Ann"}, {"email": "b@example.com", "name": "Bob"}]});
    let report = run_with(
        &rt,
        "sale/contact/send",
        request(settings.clone(), 10.0, 64 << 20, 1),
        host.clone(),
    )
    .await;
    assert_eq!(output(&report)["sent"], 2);
    let outbox = String::from_utf8(host.artifacts.lock().unwrap()["outbox.jsonl"].clone()).unwrap();
    assert!(
        outbox.contains("Hello Ann") && outbox.contains("Hello Bob"),
        "{outbox}"
    );
    assert!(!outbox.contains("key-123") && !output(&report).to_string().contains("key-123"));

    let (missing, _) = run(&rt, "sale/contact/send", settings).await;
    match missing.outcome {
        StepOutcome::ReturnedError { message, permanent } => {
            assert!(message.contains("mail_api_key"), "{message}");
            assert!(permanent, "a missing secret is not retried");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn product_import_validates_rows() {
    let rt = runtime();
    let csv = "sku,name,price,quantity\nA-1,Chair,19.90,4\n,Nameless,1.00,1\nB-2,\"Table, oak\",120,2\nC-3,Lamp,-5,1\n";
    let (report, _) = run(&rt, "catalog/product/import", json!({"csv": csv})).await;
    let out = output(&report);
    assert_eq!(out["imported"], 2, "{out}");
    assert_eq!(out["rejected"].as_array().unwrap().len(), 2, "{out}");
}

#[tokio::test]
async fn an_endless_loop_runs_out_of_fuel() {
    // A small fuel rate makes the budget run out in milliseconds, so fuel,
    // not the wall-clock backstop, stops the loop even on a machine busy
    // with other tests (CI once gave the loop under a quarter of a core).
    let dir = tempfile::tempdir().unwrap().keep();
    let mut config = RuntimeConfig::local(dir);
    config.fuel_per_second = 100_000_000;
    let rt = Runtime::new(config).unwrap();
    let host = Arc::new(RecordingHost::default());
    let report = run_with(
        &rt,
        "fixture/loop",
        request(json!({}), 0.5, 64 << 20, 1),
        host,
    )
    .await;
    assert!(
        matches!(report.outcome, StepOutcome::OutOfFuel { .. }),
        "{:?}",
        report.outcome
    );
}

#[tokio::test]
async fn a_memory_bomb_hits_the_cap() {
    let rt = runtime();
    let host = Arc::new(RecordingHost::default());
    let report = run_with(
        &rt,
        "fixture/membomb",
        request(json!({}), 10.0, 32 << 20, 1),
        host,
    )
    .await;
    assert_eq!(
        report.outcome,
        StepOutcome::MemoryCap {
            limit_bytes: 32 << 20
        }
    );
    assert!(report.peak_memory <= 32 << 20);
}

fn trap_of(report: &StepReport) -> &str {
    match &report.outcome {
        StepOutcome::Trapped { trap, .. } => trap,
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[tokio::test]
async fn unbounded_recursion_overflows_the_stack() {
    let rt = runtime();
    let (report, _) = run(&rt, "fixture/recursion", json!({})).await;
    assert_eq!(trap_of(&report), "stack_overflow");
}

#[tokio::test]
async fn a_panic_traps_and_its_message_reaches_the_log() {
    let rt = runtime();
    let (report, host) = run(&rt, "fixture/panic", json!({})).await;
    assert_eq!(trap_of(&report), "unreachable_code_reached");
    match &report.outcome {
        StepOutcome::Trapped { message, .. } => assert!(
            message.starts_with("panicked: fixture panicked on purpose (at "),
            "{message}"
        ),
        _ => unreachable!(),
    }
    let logs = host.logs.lock().unwrap();
    assert!(
        logs.iter()
            .any(|(_, m)| m.contains("fixture panicked on purpose")),
        "{logs:?}"
    );
}

#[tokio::test]
async fn a_trap_reports_its_backtrace() {
    let rt = runtime();
    let (report, _) = run(&rt, "fixture/trap", json!({})).await;
    assert_eq!(trap_of(&report), "unreachable_code_reached");
    match &report.outcome {
        StepOutcome::Trapped { backtrace, .. } => assert!(!backtrace.is_empty()),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn sleeping_past_the_deadline_is_stopped_by_the_wall_clock() {
    let rt = runtime();
    let host = Arc::new(RecordingHost::default());
    let report = run_with(
        &rt,
        "fixture/sleep",
        request(json!({"seconds": 3600}), 0.2, 64 << 20, 1),
        host,
    )
    .await;
    assert!(
        matches!(report.outcome, StepOutcome::Deadline { .. }),
        "{:?}",
        report.outcome
    );
}

#[tokio::test]
async fn exit_ends_the_step_as_failed() {
    let rt = runtime();
    let (report, _) = run(&rt, "fixture/exit", json!({})).await;
    // wasi:cli/exit@0.2 carries only success or failure: any non-zero code is 1.
    assert_eq!(report.outcome, StepOutcome::Exited { code: 1 });
}

#[tokio::test]
async fn a_module_built_before_mark_permanent_still_runs() {
    let rt = runtime();
    let (report, host) = run(&rt, "fixture/legacy", json!({})).await;
    assert_eq!(
        report.outcome,
        StepOutcome::ReturnedError {
            message: "failed the old way".into(),
            permanent: false,
        },
        "it instantiates against today's host, and its error stays retryable"
    );
    assert_eq!(host.progress.lock().unwrap().last().copied(), Some(50.0));
}

#[tokio::test]
async fn a_returned_error_is_typed() {
    let rt = runtime();
    let (report, _) = run(&rt, "fixture/fail", json!({})).await;
    assert!(
        matches!(
            report.outcome,
            StepOutcome::ReturnedError {
                permanent: false,
                ..
            }
        ),
        "{:?}",
        report.outcome
    );
    // Permanent: said by the step, by the SDK for settings that do not parse,
    // and by the examples' own checks of their settings.
    for (path, settings) in [
        ("fixture/fail", json!({"permanent": true})),
        ("fixture/fail", json!({"permanent": "yes"})),
        ("demo/count", json!({"to": 0})),
        (
            "catalog/product/import",
            json!({"csv": "sku,name\nA,Chair\n"}),
        ),
    ] {
        let (report, _) = run(&rt, path, settings.clone()).await;
        assert!(
            report.outcome.is_permanent(),
            "{path} {settings}: {:?}",
            report.outcome
        );
        assert!(report.outcome.summary().contains("permanent, not retried"));
    }
}

#[tokio::test]
async fn stdout_goes_to_the_log_with_a_cap() {
    let rt = runtime();
    let (report, host) = run(&rt, "fixture/stdout", json!({})).await;
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
    let logs = host.logs.lock().unwrap();
    let bytes: usize = logs.iter().map(|(_, m)| m.len() + 1).sum();
    assert!(bytes <= 64 * 1024 + 200, "{bytes} bytes logged");
    assert!(
        logs.iter().any(|(_, m)| m.starts_with("output truncated")),
        "the cut is reported"
    );
}

#[tokio::test]
async fn a_running_step_can_be_cancelled_from_outside() {
    let rt = runtime();
    let loaded = rt.prepare(&module_bytes("fixture/loop")).await.unwrap();
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let host = Arc::new(RecordingHost::default());
    let report = rt
        .run(&loaded, request(json!({}), 60.0, 64 << 20, 1), host, cancel)
        .await;
    assert_eq!(report.outcome, StepOutcome::Cancelled);
    // The latency itself is measured in the benchmark; here: it did stop.
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn bad_binaries_are_refused_before_they_run() {
    let rt = runtime();
    assert_eq!(rt.prepare(b"").await.err(), Some(ModuleError::Empty));
    assert_eq!(
        rt.prepare(b"MZ\x90\0not wasm at all").await.err(),
        Some(ModuleError::NotWasm)
    );
    assert_eq!(
        rt.prepare(b"\0asm\x01\0\0\0").await.err(),
        Some(ModuleError::CoreModule)
    );
    let mut truncated = module_bytes("fixture/noop");
    truncated.truncate(truncated.len() / 2);
    assert!(matches!(
        rt.prepare(&truncated).await,
        Err(ModuleError::Malformed(_))
    ));
    match rt.prepare(&module_bytes("fixture/foreign")).await {
        Err(ModuleError::ForbiddenImport(name)) => {
            assert!(name.starts_with("acme:crm/contacts"), "{name}")
        }
        Err(other) => panic!("expected a forbidden import, got {other:?}"),
        Ok(_) => panic!("an import outside WASI 0.2 was accepted"),
    }
}

/// WASI is linked deny-all: a step importing the filesystem and sockets loads, and each
/// attempt to reach the host is an ordinary error the step handles and goes on from.
#[tokio::test]
async fn files_sockets_and_name_lookup_fail_as_ordinary_errors() {
    let rt = runtime();
    let (report, _) = run(&rt, "fixture/fs", json!({})).await;
    let probes = output(&report);
    for probe in ["read", "list", "tcp", "resolve"] {
        let error = probes[probe].as_str().unwrap_or_default();
        assert!(!error.is_empty() && error != "ok", "{probe}: {probes}");
    }
}

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn after_every_hostile_module_a_good_step_still_runs_and_memory_returns() {
    let rt = runtime();
    let hostile: &[(&str, f64)] = &[
        ("fixture/loop", 0.2),
        ("fixture/membomb", 10.0),
        ("fixture/recursion", 10.0),
        ("fixture/panic", 10.0),
        ("fixture/trap", 10.0),
        ("fixture/sleep", 0.1),
        ("fixture/exit", 10.0),
    ];
    let good = || async {
        let (report, _) = run(&rt, "demo/count", json!({"to": 1000})).await;
        assert!(report.outcome.is_success(), "{:?}", report.outcome);
    };
    // Warm up once so the baseline includes the pool's resident pages.
    for (module, seconds) in hostile {
        let host = Arc::new(RecordingHost::default());
        run_with(
            &rt,
            module,
            request(json!({"seconds": 3600}), *seconds, 128 << 20, 1),
            host,
        )
        .await;
        good().await;
    }
    let baseline = resident_kib();
    for _ in 0..3 {
        for (module, seconds) in hostile {
            let host = Arc::new(RecordingHost::default());
            let report = run_with(
                &rt,
                module,
                request(json!({"seconds": 3600}), *seconds, 128 << 20, 1),
                host,
            )
            .await;
            assert!(!report.outcome.is_success(), "{module} should not succeed");
            good().await;
        }
    }
    let after = resident_kib();
    assert!(
        after < baseline + 64 * 1024,
        "resident memory grew from {baseline} KiB to {after} KiB"
    );
}

#[tokio::test]
async fn an_oversized_checkpoint_never_reaches_the_host() {
    let rt = runtime();
    let host = Arc::new(RecordingHost::default());
    let size = 160u64 << 20;
    let report = run_with(
        &rt,
        "fixture/oversized",
        request(json!({"checkpoint_bytes": size}), 10.0, 512 << 20, 1),
        host.clone(),
    )
    .await;
    assert_eq!(
        report.outcome,
        StepOutcome::CheckpointCap {
            size_bytes: size,
            limit_bytes: DataCaps::DEFAULT.checkpoint_bytes,
        }
    );
    assert!(host.checkpoint.lock().unwrap().is_none());

    // At the cap exactly, it is saved.
    let size = DataCaps::DEFAULT.checkpoint_bytes;
    let (report, host) = run(&rt, "fixture/oversized", json!({"checkpoint_bytes": size})).await;
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
    assert_eq!(
        host.checkpoint.lock().unwrap().as_ref().map(Vec::len),
        Some(size as usize)
    );
}

async fn run_noop(runtime: &Runtime, module: &stepwise::runtime::LoadedModule) {
    let report = runtime
        .run(
            module,
            request(json!({}), 10.0, 64 << 20, 1),
            Arc::new(RecordingHost::default()),
            CancellationToken::new(),
        )
        .await;
    assert!(
        matches!(report.outcome, StepOutcome::Completed { .. }),
        "{:?}",
        report.outcome
    );
}

/// Clears of the compiled-code cache while steps load and run: a step that
/// holds its module runs on, and one that starts during a clear waits and
/// compiles again; none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearing_the_cache_while_steps_load_and_run_breaks_none() {
    let runtime = Arc::new(runtime());
    let bytes = module_bytes("fixture/noop");
    let hash = stepwise::runtime::module_hash(&bytes);
    let held = runtime.prepare(&bytes).await.expect("noop compiles");
    let mut steps = Vec::new();
    for _ in 0..3 {
        let (runtime, bytes, hash) = (runtime.clone(), bytes.clone(), hash.clone());
        steps.push(tokio::spawn(async move {
            for _ in 0..3 {
                let fetch = || {
                    let bytes = bytes.clone();
                    async move { Some(bytes) }
                };
                let module = runtime
                    .module(&hash, fetch)
                    .await
                    .expect("loads through clears");
                run_noop(&runtime, &module).await;
            }
        }));
    }
    for _ in 0..4 {
        runtime.clear_cache().await.expect("clear");
        tokio::task::yield_now().await;
    }
    for step in steps {
        step.await.expect("no step panicked");
    }
    run_noop(&runtime, &held).await;

    let stats = runtime.cache_stats().expect("stats");
    assert_eq!(
        stats.hits + stats.misses,
        10,
        "one lookup per load: {stats:?}"
    );
    runtime.clear_cache().await.expect("clear");
    let empty = runtime.cache_stats().expect("stats");
    assert_eq!(
        (empty.entries, empty.bytes, empty.loaded),
        (0, 0, 0),
        "{empty:?}"
    );
}
