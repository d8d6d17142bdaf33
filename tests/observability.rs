//! What an operator watches, through the real server: `/metrics` read by a
//! Prometheus text parser, the server's own log as JSON, and log pages (one
//! task's, every task's, and a run that logged past the cap).

mod common;

use common::TestServer;
use prometheus_parse::{Scrape, Value as Sample};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const PATIENCE: Duration = Duration::from_secs(60);

async fn scrape(server: &TestServer) -> Scrape {
    let response = server
        .http
        .get(format!("{}/metrics", server.url))
        .bearer_auth(&server.token)
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("metrics text");
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format")
}

/// The sum of the samples named `name` whose labels include `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => *v,
            other => panic!("{name} is not a single number: {other:?}"),
        })
        .sum()
}

/// Run a one-step task to its end; returns it.
async fn run(server: &TestServer, module: &str, settings: Value) -> Value {
    let id = server.create_step_task(module, settings, json!({})).await;
    server
        .wait_for(id, &["completed", "failed", "cancelled"], PATIENCE)
        .await
}

#[tokio::test]
async fn metrics_count_runs_steps_and_clients() {
    let server = TestServer::start().await;
    server.upload("fixture/noop").await;
    server.upload("fixture/fail").await;

    let (status, _) = server.request(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "metrics need a token");

    let before = scrape(&server).await;
    let noop = [("module", "fixture/noop")];
    assert_eq!(
        value(&before, "stepwise_runs_total", &[("outcome", "succeeded")]),
        0.0
    );
    assert_eq!(
        value(&before, "stepwise_step_duration_seconds_count", &noop),
        0.0
    );

    run(&server, "fixture/noop", json!({})).await;
    run(&server, "fixture/noop", json!({})).await;
    let failed = run(&server, "fixture/fail", json!({"permanent": true})).await;
    assert_eq!(failed["status"], "failed");

    // A run is counted once its end is durable, which can trail the task showing it.
    let failed_runs = [("outcome", "failed_permanently")];
    let started = std::time::Instant::now();
    let mut after = scrape(&server).await;
    while value(&after, "stepwise_runs_total", &failed_runs) == 0.0
        && started.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
        after = scrape(&server).await;
    }
    assert_eq!(
        value(&after, "stepwise_runs_total", &[("outcome", "succeeded")]),
        2.0
    );
    assert_eq!(
        value(
            &after,
            "stepwise_runs_total",
            &[("outcome", "failed_permanently")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "stepwise_steps_total",
            &[("module", "fixture/noop"), ("outcome", "completed")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &after,
            "stepwise_steps_total",
            &[("module", "fixture/fail"), ("outcome", "returned_error")]
        ),
        1.0
    );
    assert_eq!(
        value(&after, "stepwise_step_duration_seconds_count", &noop),
        2.0
    );
    assert_eq!(value(&after, "stepwise_step_fuel_used_count", &noop), 2.0);
    assert!(
        value(&after, "stepwise_step_fuel_used_sum", &noop) > 0.0,
        "a step uses fuel"
    );
    assert!(value(&after, "stepwise_step_peak_memory_bytes_sum", &noop) > 0.0);
    assert_eq!(value(&after, "stepwise_queue_wait_seconds_count", &[]), 3.0);
    assert!(
        value(&after, "stepwise_module_compile_seconds_count", &[]) >= 2.0,
        "both uploads compiled"
    );
    assert_eq!(
        value(&after, "stepwise_tasks", &[("status", "completed")]),
        2.0
    );
    assert_eq!(
        value(&after, "stepwise_tasks", &[("status", "failed")]),
        1.0
    );
    assert_eq!(value(&after, "stepwise_rescues_total", &[]), 0.0);

    assert_eq!(value(&after, "stepwise_websocket_clients", &[]), 0.0);
    let url = format!("{}/api/v1/events", server.url.replacen("http", "ws", 1));
    let mut request = url.into_client_request().expect("request");
    let bearer = format!("Bearer {}", server.token).parse().expect("header");
    request.headers_mut().insert("authorization", bearer);
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("connect");
    // The session counts from the upgrade on; wait for the server to see it.
    let mut clients = 0.0;
    for _ in 0..500 {
        clients = value(&scrape(&server).await, "stepwise_websocket_clients", &[]);
        if clients > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(clients, 1.0);
    drop(socket);
}

#[tokio::test]
async fn json_log_lines_carry_the_run() {
    // A run's start and end are debug lines of the engine.
    let dir = tempfile::tempdir().expect("data directory");
    let server = TestServer::spawn_with_env(
        dir.path(),
        &["--log-format", "json"],
        &[("STEPWISE_LOG", "info,stepwise::engine=debug")],
    )
    .await;
    server.upload("fixture/noop").await;
    let task = run(&server, "fixture/noop", json!({})).await;
    let id = task["id"].as_i64().unwrap();
    let run_id = server.runs(id).await[0]["id"].clone();
    // The run's end is logged once its end is durable, which can trail the task showing it.
    let log = server.wait_for_log("run ended").await;
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let ended: Vec<&Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "run ended")
        .collect();
    assert_eq!(ended.len(), 1, "{lines:#?}");
    let span = &ended[0]["span"];
    assert_eq!(span["name"], "run");
    assert_eq!(span["task_id"], id);
    assert_eq!(span["run_id"], run_id, "{span}");
    // A step's lines carry its span inside the run's.
    let step = lines
        .iter()
        .find(|l| l["fields"]["message"] == "step ended")
        .unwrap_or_else(|| panic!("no step line: {lines:#?}"));
    assert_eq!(step["span"]["name"], "step");
    assert_eq!(step["span"]["module"], "fixture/noop");
    assert!(step["span"]["step_id"].as_i64().is_some(), "{step}");
    assert_eq!(step["spans"][0]["name"], "run");
    assert_eq!(step["spans"][0]["run_id"], run_id, "{step}");
}

/// A text log that is not a terminal (a file, a pipe, a journal) is plain
/// text: no colour escape codes around levels and field names, and a run's
/// lines still name their run and step.
#[tokio::test]
async fn a_redirected_text_log_is_plain_and_names_the_run() {
    let dir = tempfile::tempdir().expect("data directory");
    let server = TestServer::spawn_with_env(
        dir.path(),
        &[],
        &[("STEPWISE_LOG", "info,stepwise::engine=debug")],
    )
    .await;
    server.upload("fixture/noop").await;
    let task = run(&server, "fixture/noop", json!({})).await;
    let run_id = server.runs(task["id"].as_i64().unwrap()).await[0]["id"].clone();
    let log = server.wait_for_log("run ended").await;
    assert!(
        !log.contains('\x1b'),
        "escape codes in a redirected log:\n{log}"
    );
    let ended = log
        .lines()
        .find(|line| line.contains("run ended"))
        .unwrap_or_else(|| panic!("no run end in the log:\n{log}"));
    assert!(ended.contains(" DEBUG "), "{ended}");
    assert!(
        ended.contains(&format!("run{{task_id={} run_id={run_id}}}", task["id"])),
        "{ended}"
    );
}

/// The log lines of a task as the page answers them.
async fn task_logs(server: &TestServer, query: &str) -> (Vec<Value>, Option<i64>) {
    let (status, page) = server.get(query).await;
    assert_eq!(status, StatusCode::OK, "{query}: {page}");
    (
        page["logs"].as_array().cloned().unwrap_or_default(),
        page["next"].as_i64(),
    )
}

/// Wait until the task's last stored line is `message`: a finished run's
/// lines reach the store in batches, shortly after the task shows its end.
async fn wait_for_last_line(server: &TestServer, id: i64, message: &str) {
    let started = std::time::Instant::now();
    loop {
        let (last, _) = task_logs(server, &format!("/tasks/{id}/logs?limit=1")).await;
        if last.first().is_some_and(|l| l["message"] == message) {
            return;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "task {id}'s last line is not `{message}`: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn messages(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn a_flooding_run_keeps_its_first_and_last_lines() {
    let server = TestServer::start().await;
    server.upload("fixture/stdout").await;
    let task = run(&server, "fixture/stdout", json!({})).await;
    assert_eq!(task["status"], "completed", "{task}");
    let id = task["id"].as_i64().unwrap();
    wait_for_last_line(&server, id, "stderr line 99 of 100").await;

    // 10,000 stdout lines and 100 stderr lines: 100 past the cap of 10,000.
    let (lines, _) = task_logs(&server, &format!("/tasks/{id}/logs?limit=10000&after=0")).await;
    let (rest, _) = task_logs(
        &server,
        &format!("/tasks/{id}/logs?after={}", lines.last().unwrap()["id"]),
    )
    .await;
    let all: Vec<Value> = lines.into_iter().chain(rest).collect();
    assert_eq!(
        all.len(),
        10_001,
        "the first 5,000, a marker, the last 5,000"
    );
    let text = messages(&all);
    assert_eq!(text[0], "stdout line 0 of 10000");
    assert_eq!(text[4999], "stdout line 4999 of 10000");
    let marker = &all[5000];
    assert_eq!(marker["data"]["dropped"], 100, "{marker}");
    assert_eq!(marker["level"], "warn");
    assert!(
        text[5000].starts_with("100 log lines dropped"),
        "{}",
        text[5000]
    );
    assert_eq!(text[5001], "stdout line 5100 of 10000");
    assert_eq!(
        text[10_000], "stderr line 99 of 100",
        "the last line is kept"
    );
}

#[tokio::test]
async fn log_pages_by_run_level_time_and_cursor() {
    let server = TestServer::start().await;
    server.upload("fixture/fail").await;
    server.upload("fixture/stdout").await;
    let failed = run(&server, "fixture/fail", json!({"permanent": true})).await;
    let fail_id = failed["id"].as_i64().unwrap();
    let flood = run(&server, "fixture/stdout", json!({})).await;
    let flood_id = flood["id"].as_i64().unwrap();
    wait_for_last_line(&server, flood_id, "stderr line 99 of 100").await;

    // Old clients: `limit` alone is the last lines, oldest first.
    let (tail, next) = task_logs(&server, &format!("/tasks/{flood_id}/logs?limit=2")).await;
    assert_eq!(
        messages(&tail),
        ["stderr line 98 of 100", "stderr line 99 of 100"]
    );
    assert!(tail[0]["id"].as_i64() < tail[1]["id"].as_i64());
    assert_eq!(tail[0]["kind"], "log", "the old fields are all there");
    let next = next.expect("more lines before these");
    let (older, _) = task_logs(
        &server,
        &format!("/tasks/{flood_id}/logs?limit=2&before={next}"),
    )
    .await;
    assert_eq!(
        messages(&older),
        ["stderr line 96 of 100", "stderr line 97 of 100"]
    );

    // By level: the failed step's error line, not the flood's info lines.
    let (errors, _) = task_logs(&server, "/logs?level=error").await;
    assert!(!errors.is_empty());
    assert!(
        errors
            .iter()
            .all(|l| l["task_id"] == fail_id && l["level"] == "error"),
        "{errors:?}"
    );
    // The flood's stderr lines are warnings, and so is the marker of the lines dropped.
    let (warnings, _) = task_logs(
        &server,
        &format!("/logs?level=warn&task_id={flood_id}&limit=1000"),
    )
    .await;
    assert_eq!(warnings.len(), 101, "100 stderr lines and the marker");
    assert_eq!(
        warnings
            .iter()
            .filter(|l| l["data"]["dropped"] == 100)
            .count(),
        1
    );

    // By run, and every task's lines newest first.
    let run_id = tail[0]["run_id"].as_i64().unwrap();
    let (of_run, _) = task_logs(
        &server,
        &format!("/tasks/{flood_id}/logs?run_id={run_id}&limit=3"),
    )
    .await;
    assert_eq!(of_run.len(), 3);
    let (newest, next) = task_logs(&server, "/logs?limit=3").await;
    assert!(
        newest[0]["id"].as_i64() > newest[2]["id"].as_i64(),
        "newest first"
    );
    assert_eq!(newest[0]["message"], "stderr line 99 of 100");
    let (page2, _) = task_logs(&server, &format!("/logs?limit=3&before={}", next.unwrap())).await;
    assert_eq!(page2[0]["message"], "stderr line 96 of 100");

    // By time: nothing is written before the epoch or after the far future.
    let (none, next) = task_logs(&server, "/logs?until=1970-01-02T00:00:00Z").await;
    assert!(none.is_empty() && next.is_none());
    let (none, _) = task_logs(&server, "/logs?since=2999-01-01T00:00:00Z").await;
    assert!(none.is_empty());

    // Bad input names the field.
    for (query, field) in [
        ("/logs?level=loud", "level"),
        ("/logs?limit=0", "limit"),
        ("/logs?before=5&after=3", "after"),
        ("/logs?since=yesterday", "since"),
    ] {
        let (status, body) = server.get(query).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    let (status, _) = server
        .get(&format!("/tasks/{fail_id}/logs?task_id={flood_id}"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}
