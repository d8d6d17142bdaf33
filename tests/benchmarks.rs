//! The benchmark scripts that replay SQL against the real schema still run on
//! it: `scripts/bench-pg-rows` writes tasks, runs and step runs column by
//! column, so a migration that renames or drops one would break it silently,
//! long after. Each of its designs drains a small queue here. Needs
//! PostgreSQL and `pgbench` (skips with a reason without them; under CI it
//! must run).

mod common;

use common::database::{postgres_base, postgres_reachable};
use common::skip::skip_or_fail;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Clients the script runs at once, times one batch each: the queue it is given.
const TASKS: u64 = 16 * 8;

#[test]
fn every_row_design_of_bench_pg_rows_drains_its_queue_on_the_current_schema() {
    let test = "every_row_design_of_bench_pg_rows_drains_its_queue_on_the_current_schema";
    if let Err(why) = postgres_reachable() {
        skip_or_fail(test, &why);
        return;
    }
    if Command::new("pgbench").arg("--version").output().is_err() {
        skip_or_fail(test, "pgbench is not installed (PostgreSQL's client tools)");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench-pg-rows");
    let output = Command::new(script)
        .args([
            "--database",
            &postgres_base(),
            "--rounds",
            "1",
            "--batches",
            "8",
        ])
        .args(["--tasks", &TASKS.to_string()])
        .output()
        .expect("run scripts/bench-pg-rows");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench-pg-rows failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let designs: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    let names: Vec<&str> = designs
        .iter()
        .filter_map(|d| d["design"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "today",
            "history-at-end",
            "task-row-only",
            "queue-row",
            "peer-one-row"
        ],
        "every design measured, in order"
    );
    for design in &designs {
        assert_eq!(
            design["tasks"].as_u64(),
            Some(TASKS),
            "every queued task done: {design}"
        );
        assert!(
            design["wal_bytes_per_task"]
                .as_u64()
                .is_some_and(|bytes| bytes > 0),
            "each design writes: {design}"
        );
    }
}
