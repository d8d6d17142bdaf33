//! Crash safety through the real binary: 200 tasks of several steps running,
//! `kill -9`, start again: every task ends by its own rule, none is lost or
//! stuck, no step attempt is recorded as completed twice, and the runs the
//! crash interrupted are not counted as the tasks' failures.

mod common;

use common::TestServer;
use serde_json::json;
use std::collections::HashSet;
use std::time::{Duration, Instant};

#[tokio::test]
async fn kill_9_in_the_middle_loses_nothing() {
    let mut server = TestServer::start_with(&["--workers", "16"]).await;
    let mut ids = Vec::new();
    for i in 0..200 {
        let body = json!({
            "name": format!("crash {i}"),
            "max_attempts": 3,
            "steps": [
                {"controller": "demo/count", "settings": {"to": 20000, "sleep_ms_per_report": 2}, "max_execution_time": 30},
                {"controller": "tool/backup/dumptables", "settings": {"tables": [
                    {"name": "t", "columns": ["x"], "rows": [[1], [2]]}]}, "max_execution_time": 30},
                {"controller": "demo/count", "settings": {"to": 20000, "sleep_ms_per_report": 2}, "max_execution_time": 30}
            ]
        });
        let (status, task) = server.post("/tasks", body).await;
        assert_eq!(status, 201, "{task}");
        ids.push(task["id"].as_i64().unwrap());
    }
    // Let some finish and many be in flight.
    let started = Instant::now();
    loop {
        let (_, stats) = server.get("/stats").await;
        if stats["tasks"]["completed"].as_i64().unwrap_or(0) >= 10
            || started.elapsed() > Duration::from_secs(60)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, stats) = server.get("/stats").await;
    assert!(
        stats["tasks"]["running"].as_i64().unwrap() > 0,
        "tasks are running when the server dies: {stats}"
    );
    let dir = server.dir.clone();
    let temp = server.kill9();

    let server = TestServer::spawn(&dir, &["--workers", "16"]).await;
    for id in &ids {
        let task = server
            .wait_for(*id, &["completed", "failed"], Duration::from_secs(240))
            .await;
        assert_eq!(task["status"], "completed", "task {id} ended {task}");
        let mut completed_steps = HashSet::new();
        for run in server.runs(*id).await {
            assert_ne!(run["status"], "running", "no run is left running: {run}");
            for step in run["steps"].as_array().unwrap() {
                if step["status"] == "completed" {
                    let step_id = step["step_id"].as_i64().unwrap();
                    assert!(
                        completed_steps.insert(step_id),
                        "step {step_id} of task {id} completed twice"
                    );
                }
            }
        }
    }
    let (_, stats) = server.get("/stats").await;
    assert_eq!(stats["tasks"]["running"], 0, "{stats}");

    // The runs the kill interrupted say nothing about their tasks (each
    // completed on retry): counted apart, not as failures, and no alert.
    let (_, perf) = server.get("/stats/performance?hours=1").await;
    assert!(perf["rescued"].as_i64().unwrap() > 0, "{perf}");
    assert_eq!(perf["failed"], 0, "{perf}");
    assert_eq!(perf["success_rate"], 1.0, "{perf}");
    let (_, alerts) = server.get("/alerts").await;
    let kinds: Vec<&str> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert!(!kinds.contains(&"success_rate"), "{alerts}");
    drop(temp);
}
