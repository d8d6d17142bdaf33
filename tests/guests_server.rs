//! Python and JavaScript steps through the real server, as a user runs them: the
//! examples (`catalog/product/import` in Python, `sale/contact/send` in JavaScript) and
//! the Python probe are uploaded, run as tasks, and watched over the WebSocket and REST:
//! progress arrives, a checkpoint resumes a retry after a forced failure, a secret is
//! read, an artifact is downloaded, and a permanent error is not retried.
//!
//! Each upload compiles a 10–20 MB component (seconds in a debug build), so each
//! language shares one server.

mod common;

use common::TestServer;
use common::guests::{Lang, component};
use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Long enough for a loaded 2-core machine; reached only when something is broken.
const PATIENCE: Duration = Duration::from_secs(120);

/// A server that gives compiles of big components time (a debug build compiles slowly).
async fn server() -> TestServer {
    TestServer::start_with(&["--compile-timeout", "600", "--no-examples"]).await
}

/// Build and upload `modules/<lang>/<path>` under `path`; `None` when skipped.
async fn upload(s: &TestServer, lang: Lang, path: &str, test: &str) -> Option<()> {
    let test = test.to_string();
    let owned = path.to_string();
    let bytes = tokio::task::spawn_blocking(move || component(lang, &owned, &test))
        .await
        .unwrap()?;
    let (status, body) = s.put_module(path, bytes).await;
    assert!(
        status.is_success(),
        "upload {lang:?} {path}: {status} {body}"
    );
    // The module record says which language built it (the component's
    // `producers` section), as the dashboard's Modules view shows.
    let language = match lang {
        Lang::Python => "Python",
        Lang::Js => "JavaScript",
    };
    assert_eq!(body["language"], language, "{body}");
    Some(())
}

/// Create a task of one step; returns its id.
async fn task(s: &TestServer, controller: &str, settings: Value, extra: Value) -> i64 {
    let mut body = json!({
        "name": format!("{controller} test"),
        "steps": [{"controller": controller, "settings": settings, "max_execution_time": 30}],
    });
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    let (status, task) = s.post("/tasks", body).await;
    assert!(status.is_success(), "create: {status} {task}");
    task["id"].as_i64().unwrap()
}

async fn artifact(s: &TestServer, id: i64, name: &str) -> String {
    let url = format!("{}/api/v1/tasks/{id}/artifacts/{name}", s.url);
    let response = s.http.get(url).bearer_auth(&s.token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "artifact {name}");
    response.text().await.unwrap()
}

/// The step results of a task's runs, newest first.
async fn results(s: &TestServer, id: i64) -> Vec<Value> {
    let runs = s.runs(id).await;
    runs.iter().map(|run| run["steps"][0].clone()).collect()
}

/// Subscribes to every task with logs and returns the events until `id` completes.
async fn watch_until_completed(url: String, token: String, id: i64) -> Vec<Value> {
    let url = format!("{}/api/v1/events", url.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    let bearer = format!("Bearer {token}").parse().unwrap();
    request.headers_mut().insert("authorization", bearer);
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let subscribe = json!({"type": "subscribe", "tasks": [id], "logs": true});
    socket
        .send(Message::text(subscribe.to_string()))
        .await
        .unwrap();
    let mut events = Vec::new();
    let read = async {
        while let Some(Ok(message)) = socket.next().await {
            let Ok(text) = message.to_text() else {
                continue;
            };
            let message: Value = serde_json::from_str(text).unwrap();
            let batch = match message["type"].as_str() {
                Some("events") => message["events"].as_array().unwrap().clone(),
                Some("snapshot") => message["tasks"].as_array().unwrap().clone(),
                _ => vec![message],
            };
            for event in batch {
                let done = event["status"] == "completed"
                    && event.get("run_id").is_some()
                    && event["type"] == "task";
                events.push(event);
                if done {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .unwrap_or_else(|_| panic!("task {id} did not complete on the socket: {events:?}"));
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_steps_run_through_the_server() {
    let test = "python_steps_run_through_the_server";
    let s = server().await;
    let import = "catalog/product/import";
    if upload(&s, Lang::Python, import, test).await.is_none() {
        return;
    }
    upload(&s, Lang::Python, "fixture/probe", test)
        .await
        .unwrap();

    // The CSV import: progress and a log line reach the WebSocket, the artifact the API.
    let csv = "sku,name,price,quantity,brand\nA-1,\"Mug, large\",07.50,12,Acme\nA-2,Plate,-1,3,Acme\nA-3,Bowl,2,1,\n";
    let settings = json!({"csv": csv, "required": ["brand"]});
    // Not due for an hour: it runs when told, once the watcher listens.
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let id = task(&s, import, settings, json!({"start_at": later})).await;
    let watcher = tokio::spawn(watch_until_completed(s.url.clone(), s.token.clone(), id));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = s.post_empty(&format!("/tasks/{id}/run")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let events = watcher.await.unwrap();
    let step_progress = events
        .iter()
        .filter(|e| e["type"] == "step" || e["type"] == "task")
        .filter_map(|e| e["progress"].as_f64())
        .fold(0.0, f64::max);
    assert_eq!(step_progress, 100.0, "{events:?}");
    let step = &results(&s, id).await[0];
    assert_eq!(step["result"]["imported"], 1, "{step}");
    assert_eq!(step["result"]["rejected_total"], 2, "{step}");
    assert_eq!(
        step["result"]["rejected"][0],
        json!({"line": 3, "reason": "sku `A-2`: price `-1` is negative"})
    );
    let products = artifact(&s, id, "products.jsonl").await;
    let product: Value = serde_json::from_str(products.lines().next().unwrap()).unwrap();
    assert_eq!(
        product,
        json!({"sku": "A-1", "name": "Mug, large", "price": "7.50", "quantity": 12, "attributes": {"brand": "Acme"}})
    );

    // A CSV without a price column can never import: failed once, not retried.
    let id = task(
        &s,
        import,
        json!({"csv": "sku,name\nA,B\n"}),
        json!({"max_attempts": 3}),
    )
    .await;
    let failed = s.wait_for(id, &["failed"], PATIENCE).await;
    let runs = results(&s, id).await;
    assert_eq!(runs.len(), 1, "a permanent error is not retried: {failed}");
    assert!(
        runs[0]["error"]
            .as_str()
            .unwrap()
            .contains("no `price` column"),
        "{}",
        runs[0]
    );

    // The probe fails after its checkpoint; the automatic retry resumes from it and
    // reads the secret.
    let id = task(
        &s,
        "fixture/probe",
        json!({"mode": "host", "fail_first": true}),
        json!({"max_attempts": 2, "secrets": {"api_key": "k-123456"}}),
    )
    .await;
    s.wait_for(id, &["completed"], PATIENCE).await;
    let runs = results(&s, id).await;
    assert_eq!(runs.len(), 2);
    assert_eq!(
        runs[0]["result"],
        json!({"resumed": true, "attempt": 2, "key_length": 8})
    );
    assert_eq!(
        artifact(&s, id, "report.txt").await,
        "first part\nsecond part\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_steps_run_through_the_server() {
    let test = "javascript_steps_run_through_the_server";
    let s = server().await;
    let send = "sale/contact/send";
    if upload(&s, Lang::Js, send, test).await.is_none() {
        return;
    }
    let recipients = json!([
        {"email": "ann@example.com", "name": "Ann", "order": "A-1001"},
        {"email": "bob@example.com", "name": "Bob", "order": "A-1002"},
        {"email": "cy@example.com", "name": "Cy", "order": "A-1003"},
    ]);
    let settings = json!({
        "subject": "Your order {{order}} has shipped",
        "template": "Hello {{name}},\nyour order {{ order }} is on its way.",
        "recipients": recipients,
        "fail_after": 2,
    });
    // Fails after two messages; the retry resumes from the checkpoint and sends the third.
    // Not due for an hour: it runs when told, once the watcher listens.
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let id = task(
        &s,
        send,
        settings,
        json!({"max_attempts": 2, "secrets": {"mail_api_key": "secret"}, "start_at": later}),
    )
    .await;
    let watcher = tokio::spawn(watch_until_completed(s.url.clone(), s.token.clone(), id));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = s.post_empty(&format!("/tasks/{id}/run")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // Its progress reaches the WebSocket, up to the end.
    let events = watcher.await.unwrap();
    let live_progress = events
        .iter()
        .filter(|e| e["type"] == "step" || e["type"] == "task")
        .filter_map(|e| e["progress"].as_f64())
        .fold(0.0, f64::max);
    assert_eq!(live_progress, 100.0, "{events:?}");
    s.wait_for(id, &["completed"], PATIENCE).await;
    let runs = results(&s, id).await;
    assert_eq!(runs.len(), 2, "{runs:?}");
    let failed = &runs[1]["outcome"];
    assert_eq!(
        failed["message"], "failed on purpose after 2 messages",
        "{failed}"
    );
    let result = &runs[0]["result"];
    assert_eq!(result["sent"], 3, "{result}");
    assert_eq!(result["resumed_from"], 2, "{result}");
    // The secret was read: its fingerprint is the Rust example's for the same key.
    assert_eq!(result["key_fingerprint"], "2bb80d53");
    let outbox = artifact(&s, id, "outbox.jsonl").await;
    let lines: Vec<Value> = outbox
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "no one is mailed twice: {outbox}");
    assert_eq!(lines[2]["subject"], "Your order A-1003 has shipped");
    assert_eq!(
        lines[0]["body"],
        "Hello Ann,\nyour order A-1001 is on its way."
    );
    let (_, progress) = s.get(&format!("/tasks/{id}/progress")).await;
    assert_eq!(progress["progress"], 100.0, "{progress}");

    // Without the secret the step cannot work: failed once, not retried.
    let bare = json!({"subject": "s", "template": "t", "recipients": recipients});
    let id = task(&s, send, bare, json!({"max_attempts": 3})).await;
    s.wait_for(id, &["failed"], PATIENCE).await;
    let runs = results(&s, id).await;
    assert_eq!(runs.len(), 1, "a permanent error is not retried");
    assert!(
        runs[0]["error"]
            .as_str()
            .unwrap()
            .contains("secret `mail_api_key` is not set"),
        "{}",
        runs[0]
    );
}
