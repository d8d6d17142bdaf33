//! Concurrency and rate limits through the real server: a module limited to
//! one running run makes tasks on it take turns, and the waiting ones say
//! why; a module's and a task's starts per minute hold runs back until the
//! limit is lifted; bad limits are refused with the field named; two nodes
//! sharing a PostgreSQL database never run more than the module allows.

mod common;

use common::TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const SLEEP: &str = "fixture/sleep";

async fn set_limits(server: &TestServer, path: &str, limits: Value) -> Value {
    let (status, module) = server
        .patch(&format!("/modules/{path}"), json!({ "limits": limits }))
        .await;
    assert_eq!(status, StatusCode::OK, "{module}");
    module
}

/// Create `count` one-step tasks sleeping `seconds` on [`SLEEP`].
async fn sleepers(server: &TestServer, count: usize, seconds: u64) -> Vec<i64> {
    let mut ids = Vec::new();
    for _ in 0..count {
        ids.push(
            server
                .create_step_task(SLEEP, json!({ "seconds": seconds }), json!({}))
                .await,
        );
    }
    ids
}

/// Each task's runs as (started_at, finished_at) in milliseconds.
async fn run_spans(server: &TestServer, ids: &[i64]) -> Vec<(i64, i64)> {
    let mut spans = Vec::new();
    for id in ids {
        for run in server.runs(*id).await {
            let at = |field: &str| {
                chrono::DateTime::parse_from_rfc3339(run[field].as_str().expect(field))
                    .expect("a time")
                    .timestamp_millis()
            };
            spans.push((at("started_at"), at("finished_at")));
        }
    }
    spans.sort_unstable();
    spans
}

fn assert_no_overlap(spans: &[(i64, i64)]) {
    for pair in spans.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "a run started before the one before it ended: {spans:?}"
        );
    }
}

/// Wait until `check` holds of the task, which is read every 20 ms.
async fn wait_until(
    server: &TestServer,
    id: i64,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let (_, task) = server.get(&format!("/tasks/{id}")).await;
        if check(&task) {
            return task;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "task {id} never {what}: {task}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn tasks_on_a_module_limited_to_one_take_turns_and_say_why_they_wait() {
    let server = TestServer::start().await;
    server.upload(SLEEP).await;
    let module = set_limits(&server, SLEEP, json!({"max_running": 1})).await;
    assert_eq!(
        module["limits"],
        json!({"max_running": 1, "max_starts_per_minute": null})
    );
    let ids = sleepers(&server, 3, 1).await;

    let waiting = wait_until(&server, ids[1], "said why it waits", |task| {
        task["status"] == "scheduled"
            && task["message"]
                .as_str()
                .is_some_and(|m| m.contains("max_running"))
    })
    .await;
    assert!(
        waiting["message"].as_str().unwrap().contains(SLEEP),
        "the message names the module: {waiting}"
    );
    let (_, info) = server.get(&format!("/modules/{SLEEP}")).await;
    assert_eq!(info["usage"]["running"], 1, "{info}");

    for id in &ids {
        server
            .wait_for(*id, &["completed"], Duration::from_secs(30))
            .await;
    }
    assert_no_overlap(&run_spans(&server, &ids).await);
    let (_, list) = server.get("/modules").await;
    let listed = list["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["path"] == SLEEP)
        .cloned()
        .unwrap();
    assert_eq!(listed["usage"]["running"], 0, "{listed}");
    assert_eq!(listed["usage"]["starts_last_minute"], 3, "{listed}");
}

#[tokio::test]
async fn starts_per_minute_hold_runs_back_until_the_limit_is_lifted() {
    let server = TestServer::start().await;
    server.upload(SLEEP).await;
    set_limits(&server, SLEEP, json!({"max_starts_per_minute": 1})).await;
    let ids = sleepers(&server, 2, 0).await;
    server
        .wait_for(ids[0], &["completed"], Duration::from_secs(30))
        .await;
    let held = wait_until(&server, ids[1], "said why it waits", |task| {
        task["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_starts_per_minute"))
    })
    .await;
    assert_eq!(held["status"], "scheduled", "{held}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, still) = server.get(&format!("/tasks/{}", ids[1])).await;
    assert_eq!(
        still["status"], "scheduled",
        "the minute is not over: {still}"
    );

    let module = set_limits(&server, SLEEP, json!({})).await;
    assert_eq!(
        module["limits"],
        json!({"max_running": null, "max_starts_per_minute": null})
    );
    server
        .wait_for(ids[1], &["completed"], Duration::from_secs(30))
        .await;

    // A task's own rate: it ran once this minute, so "run now" waits.
    let (status, task) = server
        .post(
            "/tasks",
            json!({"name": "once a minute", "max_starts_per_minute": 1,
                   "steps": [{"controller": SLEEP, "settings": {"seconds": 0}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let id = task["id"].as_i64().unwrap();
    assert_eq!(task["max_starts_per_minute"], 1);
    server
        .wait_for(id, &["completed"], Duration::from_secs(30))
        .await;
    let (status, _) = server.post_empty(&format!("/tasks/{id}/run")).await;
    assert!(status.is_success(), "run now: {status}");
    let held = wait_until(&server, id, "said why it waits", |task| {
        task["message"]
            .as_str()
            .is_some_and(|m| m.contains("the task started 1 runs in the last minute"))
    })
    .await;
    assert_eq!(held["status"], "scheduled", "{held}");
    let (status, patched) = server
        .patch(
            &format!("/tasks/{id}"),
            json!({"max_starts_per_minute": null}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["max_starts_per_minute"], Value::Null);
    server
        .wait_for(id, &["completed"], Duration::from_secs(30))
        .await;
    assert_eq!(server.runs(id).await.len(), 2);
}

#[tokio::test]
async fn bad_limits_are_refused_with_the_field_named() {
    let server = TestServer::start().await;
    server.upload(SLEEP).await;
    let cases = [
        (json!({"limits": {"max_running": 0}}), "limits.max_running"),
        (
            json!({"limits": {"max_starts_per_minute": -3}}),
            "limits.max_starts_per_minute",
        ),
        (json!({"limits": {"max_runing": 2}}), "max_runing"),
    ];
    for (body, field) in cases {
        let (status, error) = server.patch(&format!("/modules/{SLEEP}"), body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
        assert!(error.to_string().contains(field), "{field}: {error}");
    }
    let (status, error) = server
        .post(
            "/tasks",
            json!({"name": "x", "max_starts_per_minute": 0,
                   "steps": [{"controller": SLEEP}]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert!(
        error.to_string().contains("max_starts_per_minute"),
        "{error}"
    );
    let (status, _) = server
        .patch("/modules/no/such", json!({"limits": {"max_running": 1}}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Two nodes on one PostgreSQL database and a module limited to one running
/// run: the runs never overlap, whichever node runs them. Needs PostgreSQL
/// (skips with a reason without it; under CI it must run).
#[tokio::test]
async fn two_nodes_never_run_more_than_the_module_allows() {
    use common::database::{fresh_postgres_database, postgres_reachable};
    if let Err(why) = postgres_reachable() {
        common::skip::skip_or_fail("two_nodes_never_run_more_than_the_module_allows", &why);
        return;
    }
    let url = fresh_postgres_database();
    let args = ["--database", url.as_str()];
    let (first_dir, second_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = TestServer::spawn(first_dir.path(), &args).await;
    std::fs::write(second_dir.path().join("admin-token"), &first.token).unwrap();
    let second = TestServer::spawn(second_dir.path(), &args).await;
    first.upload(SLEEP).await;
    set_limits(&first, SLEEP, json!({"max_running": 1})).await;

    let mut ids = sleepers(&first, 3, 1).await;
    ids.extend(sleepers(&second, 3, 1).await);
    for id in &ids {
        first
            .wait_for(*id, &["completed"], Duration::from_secs(60))
            .await;
    }
    assert_no_overlap(&run_spans(&first, &ids).await);
}
