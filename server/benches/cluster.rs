//! Several nodes on one PostgreSQL database: `cargo bench -p stepwise --bench cluster`.
//!
//! Three `stepwise serve` processes (the binary cargo built for this bench)
//! share a fresh database on the PostgreSQL at `STEPWISE_BENCH_POSTGRES`
//! (default `postgres://postgres@127.0.0.1:5432/test`; the bench creates and
//! drops a database of its own there, with `psql`). Measured, as a client of
//! the API and the live view sees it:
//!
//! - enqueue → done on an idle cluster: `POST /tasks?wait=5s` of a one-step
//!   `fixture/noop` task, one at a time, through one node;
//! - a cancel sent to one node for a step running on another: from the
//!   `POST …/cancel` to the first `GET` (every 2 ms) that says `cancelled`;
//! - the delay of an event crossing nodes: a WebSocket subscriber on every
//!   node; for each task's `completed` event, how much later it reached the
//!   other nodes' subscribers than the first (the node that ran it);
//! - a node's death → its run resuming elsewhere: `kill -9` of the node
//!   running a long step, until another node's run of the task is running.
//!
//! Throughput beside graphile-worker is measured by the peer benchmark with
//! several nodes (see BENCHMARKS.md), not here. Smaller runs:
//! `STEPWISE_BENCH_SAMPLES` (default 200), `STEPWISE_BENCH_LEASE` (seconds,
//! default 10: the death series waits about that long per sample).

mod bench_server;
mod yardstick;

use bench_server::{Server, row, setting};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Every node opens the secrets the others sealed.
const SHARED_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const LIMIT: Duration = Duration::from_secs(60);

fn postgres_base() -> String {
    std::env::var("STEPWISE_BENCH_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

fn psql(sql: &str) -> Result<(), String> {
    let output = Command::new("psql")
        .arg(postgres_base())
        .args(["-qAtc", sql])
        .output()
        .map_err(|e| format!("psql: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

/// A database of this bench's own, dropped at the end.
struct Database {
    name: String,
    url: String,
}

impl Database {
    fn create() -> Result<Database, String> {
        let name = format!("stepwise_bench_{}", std::process::id());
        psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?;
        psql(&format!("CREATE DATABASE {name}"))?;
        let base = postgres_base();
        let server = base.rsplit_once('/').map_or(base.as_str(), |(s, _)| s);
        Ok(Database {
            url: format!("{server}/{name}"),
            name,
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = psql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

/// `count` nodes on the database; the first one's admin token is handed to
/// the others, as an operator would (only a database's first node makes one).
fn start_nodes(count: usize, database: &Database, lease: u64, token: Option<&str>) -> Vec<Server> {
    let lease = lease.to_string();
    let mut nodes: Vec<Server> = Vec::with_capacity(count);
    let mut token: Option<String> = token.map(str::to_string);
    for _ in 0..count {
        let node = Server::start_with(
            32,
            LIMIT,
            &["--database", &database.url, "--lease-seconds", &lease],
            &[("STEPWISE_SECRET_KEY", SHARED_KEY)],
            token.as_deref(),
        );
        token.get_or_insert_with(|| node.token.clone());
        nodes.push(node);
    }
    nodes
}

fn one_step(controller: &str, settings: Value, max_time: i64) -> Value {
    json!({
        "name": format!("bench {controller}"),
        "steps": [{"controller": controller, "settings": settings, "max_execution_time": max_time}],
    })
}

async fn create(server: &Server, body: Value) -> i64 {
    let task = server
        .request(reqwest::Method::POST, "/tasks", Some(body))
        .await;
    task["id"].as_i64().expect("task id")
}

/// The node a task's latest run is on, once it has one.
async fn runner(server: &Server, id: i64) -> String {
    let started = Instant::now();
    loop {
        let runs = server
            .request(reqwest::Method::GET, &format!("/tasks/{id}/runs"), None)
            .await;
        if let Some(node) = runs["runs"]
            .as_array()
            .and_then(|r| r.first())
            .and_then(|r| r["node"].as_str())
        {
            return node.to_string();
        }
        assert!(started.elapsed() < LIMIT, "task {id} never ran");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn node_ids(nodes: &[Server]) -> Vec<String> {
    let mut ids = Vec::new();
    for node in nodes {
        let list = node.request(reqwest::Method::GET, "/nodes", None).await;
        let id = list
            .as_array()
            .and_then(|l| l.iter().find(|n| n["this_node"] == true))
            .and_then(|n| n["id"].as_str())
            .expect("this node")
            .to_string();
        ids.push(id);
    }
    ids
}

async fn enqueue_to_done(node: &Server, samples: usize) -> Vec<f64> {
    let mut ms = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let task = node
            .request(
                reqwest::Method::POST,
                "/tasks?wait=5s",
                Some(one_step("fixture/noop", json!({}), 10)),
            )
            .await;
        assert_eq!(task["status"], "completed", "{task}");
        ms.push(started.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ms
}

async fn cross_node_cancels(nodes: &[Server], ids: &[String], samples: usize) -> Vec<f64> {
    let mut ms = Vec::with_capacity(samples);
    for sample in 0..samples {
        let via = &nodes[sample % nodes.len()];
        let id = create(via, one_step("fixture/loop", json!({}), 3600)).await;
        via.wait_for_status(id, "running", LIMIT).await;
        let on = runner(via, id).await;
        let Some(other) = ids.iter().position(|n| *n != on) else {
            continue;
        };
        let started = Instant::now();
        nodes[other]
            .request(reqwest::Method::POST, &format!("/tasks/{id}/cancel"), None)
            .await;
        nodes[other].wait_for_status(id, "cancelled", LIMIT).await;
        ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    ms
}

/// When each task's `completed` event reached each node's subscriber.
type Arrivals = Arc<Mutex<HashMap<i64, Vec<Instant>>>>;

async fn subscribe(node: &Server, arrivals: Arrivals) {
    let url = format!("{}/api/v1/events", node.base.replacen("http", "ws", 1));
    let mut request = url.into_client_request().expect("request");
    let value = format!("Bearer {}", node.token).parse().expect("header");
    request.headers_mut().insert("authorization", value);
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("connect the live view");
    socket
        .send(Message::text(
            json!({"type": "subscribe", "tasks": "all", "logs": false}).to_string(),
        ))
        .await
        .expect("subscribe");
    tokio::spawn(async move {
        while let Some(Ok(Message::Text(text))) = socket.next().await {
            let at = Instant::now();
            let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            for event in frame["events"].as_array().into_iter().flatten() {
                if event["type"] == "task"
                    && event["status"] == "completed"
                    && let Some(id) = event["task_id"].as_i64()
                {
                    arrivals.lock().await.entry(id).or_default().push(at);
                }
            }
        }
    });
}

async fn event_delays(nodes: &[Server], samples: usize) -> Vec<f64> {
    let arrivals: Arrivals = Arc::default();
    for node in nodes {
        subscribe(node, arrivals.clone()).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut ids = Vec::with_capacity(samples);
    for sample in 0..samples {
        let via = &nodes[sample % nodes.len()];
        ids.push(create(via, one_step("fixture/noop", json!({}), 10)).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    loop {
        let all_seen = {
            let seen = arrivals.lock().await;
            ids.iter()
                .all(|id| seen.get(id).is_some_and(|a| a.len() == nodes.len()))
        };
        if all_seen || started.elapsed() > LIMIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = arrivals.lock().await;
    let mut ms = Vec::new();
    for id in &ids {
        let Some(times) = seen.get(id) else { continue };
        let first = times.iter().min().copied().expect("one arrival");
        ms.extend(
            times
                .iter()
                .filter(|t| **t != first)
                .map(|t| t.duration_since(first).as_secs_f64() * 1e3),
        );
    }
    let missing: usize = ids
        .iter()
        .map(|id| nodes.len() - seen.get(id).map_or(0, Vec::len))
        .sum();
    if missing > 0 {
        eprintln!("{missing} (task, node) arrivals never came");
    }
    ms
}

async fn death_to_resume(database: &Database, token: &str, lease: u64, samples: usize) -> Vec<f64> {
    let mut ms = Vec::with_capacity(samples);
    for _ in 0..samples {
        let mut nodes = start_nodes(3, database, lease, Some(token));
        for node in &nodes {
            node.upload("fixture/sleep").await;
        }
        let ids = node_ids(&nodes).await;
        let id = create(
            &nodes[0],
            one_step("fixture/sleep", json!({"seconds": 3600}), 7200),
        )
        .await;
        nodes[0].wait_for_status(id, "running", LIMIT).await;
        let on = runner(&nodes[0], id).await;
        let victim = ids.iter().position(|n| *n == on).expect("a node runs it");
        let killed = nodes.remove(victim);
        let started = Instant::now();
        drop(killed);
        let survivor = &nodes[0];
        loop {
            let runs = survivor
                .request(reqwest::Method::GET, &format!("/tasks/{id}/runs"), None)
                .await;
            let resumed = runs["runs"]
                .as_array()
                .and_then(|r| r.first())
                .is_some_and(|r| r["status"] == "running" && r["node"] != on.as_str());
            if resumed {
                break;
            }
            assert!(started.elapsed() < LIMIT * 3, "task {id} never resumed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    ms
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let samples = setting("SAMPLES", 200);
    let lease = setting("LEASE", 10) as u64;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!("# Stepwise cluster benchmark: 3 nodes on one PostgreSQL ({cores} cores)\n");
    let database = match Database::create() {
        Ok(database) => database,
        Err(why) => {
            println!(
                "skipped: PostgreSQL at {} is not usable: {why}",
                postgres_base()
            );
            return;
        }
    };
    let probe = tempfile::tempdir().expect("temp dir");
    println!("{}\n", yardstick::Yardstick::measure(probe.path()));

    let nodes = start_nodes(3, &database, 30, None);
    let token = nodes[0].token.clone();
    for module in ["fixture/noop", "fixture/loop"] {
        nodes[0].upload(module).await;
    }
    let ids = node_ids(&nodes).await;
    // Every node compiles the modules once, off the measured path.
    for node in &nodes {
        enqueue_to_done(node, 3).await;
    }

    println!("| 3 nodes, PostgreSQL | samples | p50 | p99 | max |\n|---|---|---|---|---|");
    row(
        "enqueue → done, idle (`POST /tasks?wait=5s`, one `fixture/noop` step)",
        enqueue_to_done(&nodes[0], samples).await,
    );
    row(
        "cancel through one node of a step running on another → `GET` shows `cancelled`",
        cross_node_cancels(&nodes, &ids, (samples / 4).max(10)).await,
    );
    row(
        "an event reaching another node's WebSocket after the running node's",
        event_delays(&nodes, samples).await,
    );
    drop(nodes);
    row(
        &format!("`kill -9` of the running node → its run resumed on another (lease {lease} s)"),
        death_to_resume(&database, &token, lease, 3).await,
    );
}
