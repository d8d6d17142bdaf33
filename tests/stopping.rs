//! A server asked to stop (SIGTERM) through the real binary: it claims
//! nothing new, lets its running steps finish within the grace period, and
//! hands back what runs past it, which resumes from its checkpoint on the
//! next start (on PostgreSQL, on any other node at once). Nothing is lost.

mod common;

use common::TestServer;
use serde_json::json;
use std::time::{Duration, Instant};

/// Wait until the task's status is one of `statuses` (its step started, say).
async fn wait_running(server: &TestServer, id: i64) {
    server
        .wait_for(id, &["running"], Duration::from_secs(30))
        .await;
}

#[tokio::test]
async fn a_step_that_ends_within_the_grace_period_completes_before_the_server_exits() {
    let mut server = TestServer::start_with(&["--shutdown-grace-seconds", "30"]).await;
    server.upload("fixture/sleep").await;
    let id = server
        .create_step_task("fixture/sleep", json!({"seconds": 2}), json!({}))
        .await;
    wait_running(&server, id).await;
    let asked = Instant::now();
    server.signal("TERM");
    let status = server
        .wait_exit(Duration::from_secs(20))
        .expect("the server exits once its step is done");
    assert!(status.success(), "{status:?}: {}", server.log_text());
    assert!(
        asked.elapsed() >= Duration::from_millis(500),
        "it waited for the step"
    );
    let log = server.log_text();
    assert!(log.contains("1 run(s) finished, 0 handed back"), "{log}");

    let dir = server.dir.clone();
    let _temp = server.take_dir();
    let server = TestServer::spawn(&dir, &[]).await;
    let task = server
        .wait_for(id, &["completed", "failed"], Duration::from_secs(5))
        .await;
    assert_eq!(task["status"], "completed", "{task}");
    let runs = server.runs(id).await;
    assert_eq!(runs.len(), 1, "one run, not rescued: {runs:?}");
}

#[tokio::test]
async fn a_step_past_the_grace_period_is_handed_back_and_resumes_at_its_checkpoint() {
    let mut server = TestServer::start_with(&["--shutdown-grace-seconds", "1"]).await;
    server.upload("fixture/noop").await;
    server.upload("fixture/sleep").await;
    // Two steps: the first completes, the second is still running when the
    // grace period ends, so the next run reuses the first.
    let body = json!({
        "name": "handed back",
        "max_attempts": 1,
        "steps": [
            {"controller": "fixture/noop", "settings": {}},
            {"controller": "fixture/sleep", "settings": {"seconds": 3600}, "max_execution_time": 7200}
        ]
    });
    let (status, task) = server.post("/tasks", body).await;
    assert_eq!(status, 201, "{task}");
    let id = task["id"].as_i64().unwrap();
    wait_running(&server, id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = Instant::now();
    server.signal("TERM");
    let status = server
        .wait_exit(Duration::from_secs(15))
        .expect("the server exits after its grace period");
    assert!(status.success(), "{status:?}: {}", server.log_text());
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    let log = server.log_text();
    assert!(log.contains("0 run(s) finished, 1 handed back"), "{log}");

    let dir = server.dir.clone();
    let _temp = server.take_dir();
    let server = TestServer::spawn(&dir, &[]).await;
    // Even with max_attempts 1 the task is due again (a stop is not its
    // failure), and the new run reuses the completed first step.
    let task = server
        .wait_for(id, &["running"], Duration::from_secs(10))
        .await;
    assert_eq!(task["status"], "running", "{task}");
    let runs = server.runs(id).await;
    assert_eq!(runs.len(), 2, "{runs:?}");
    let handed_back = runs
        .iter()
        .find(|r| r["status"] == "interrupted")
        .expect("the handed-back run");
    assert_eq!(
        handed_back["steps"][0]["status"], "completed",
        "{handed_back}"
    );
    let resumed = runs
        .iter()
        .find(|r| r["status"] == "running")
        .expect("the new run");
    assert_eq!(resumed["steps"][0]["status"], "reused", "{resumed}");
    let (_, cancelled) = server.post_empty(&format!("/tasks/{id}/cancel")).await;
    assert!(cancelled.is_object(), "{cancelled}");
}

#[tokio::test]
async fn a_second_signal_hands_back_at_once() {
    let mut server = TestServer::start_with(&["--shutdown-grace-seconds", "600"]).await;
    server.upload("fixture/sleep").await;
    let id = server
        .create_step_task(
            "fixture/sleep",
            json!({"seconds": 3600}),
            json!({"max_attempts": 1}),
        )
        .await;
    wait_running(&server, id).await;
    server.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        server.wait_exit(Duration::from_millis(10)).is_none(),
        "still draining"
    );
    server.signal("TERM");
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("the second signal ends the drain");
    assert!(status.success(), "{status:?}");
    assert!(
        server.log_text().contains("1 handed back"),
        "{}",
        server.log_text()
    );
}

#[tokio::test]
async fn the_nodes_endpoint_shows_this_node() {
    let server = TestServer::start().await;
    let (status, nodes) = server.get("/nodes").await;
    assert_eq!(status, 200, "{nodes}");
    let nodes = nodes.as_array().expect("a list");
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    let node = &nodes[0];
    assert_eq!(node["this_node"], true);
    assert_eq!(node["alive"], true);
    assert_eq!(node["state"], "running");
    assert_eq!(node["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        node["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{node}"
    );
}
