//! The live event stream (`GET /api/v1/events`, docs/API.md "Live events")
//! through the real binary with a real `tokio-tungstenite` client:
//! authentication, subscriptions, frames of events, ordering, pacing of
//! progress, coalescing for a slow reader, and the snapshot after a reconnect. Timeouts are generous (a loaded machine is
//! slow, not wrong); speed is measured in `server/benches/websocket.rs`.

mod common;

use common::TestServer;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};
use stepwise::events::PROGRESS_INTERVAL;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Longest wait for anything; only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(90);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Open the event socket, with the token in the `Authorization` header or not.
async fn connect(server: &TestServer, token: Option<&str>) -> Result<Socket, WsError> {
    let url = format!("{}/api/v1/events", server.url.replacen("http", "ws", 1));
    let mut request = url.into_client_request().expect("request");
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().expect("header value");
        request.headers_mut().insert("authorization", value);
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

/// The event socket over a TCP connection that buffers only a few KiB, so a
/// client that stops reading soon stalls the server's sends.
async fn connect_small_buffer(server: &TestServer) -> Socket {
    let address = server.url.trim_start_matches("http://").parse().unwrap();
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let stream = tcp.connect(address).await.expect("TCP connect");
    let url = format!("{}/api/v1/events", server.url.replacen("http", "ws", 1));
    let mut request = url.into_client_request().expect("request");
    let value = format!("Bearer {}", server.token).parse().unwrap();
    request.headers_mut().insert("authorization", value);
    tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
        .await
        .expect("upgrade")
        .0
}

/// A subscriber that checks the protocol's promises on every message it reads:
/// per-task `seq` only increases, a run's progress never goes back, and no
/// message is an `error`.
struct Client {
    socket: Socket,
    /// Latest task state per task id, from snapshots and `task` events.
    tasks: HashMap<i64, Value>,
    /// Highest `seq` seen per task.
    seqs: HashMap<i64, u64>,
    /// Every message read, in order, events one by one out of their frames.
    seen: Vec<Value>,
    /// Events of the last frame not read yet.
    unread: VecDeque<Value>,
    /// Event frames received.
    frames: usize,
}

impl Client {
    async fn open(server: &TestServer) -> Client {
        let socket = connect(server, Some(&server.token))
            .await
            .expect("connect with the header token");
        Client::over(socket)
    }

    fn over(socket: Socket) -> Client {
        Client {
            socket,
            tasks: HashMap::new(),
            seqs: HashMap::new(),
            seen: Vec::new(),
            unread: VecDeque::new(),
            frames: 0,
        }
    }

    async fn send(&mut self, message: Value) {
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .expect("send");
    }

    /// Subscribe and return the snapshot, which must be the first message.
    async fn subscribe(&mut self, tasks: Value, logs: bool) -> Value {
        self.send(json!({"type": "subscribe", "tasks": tasks, "logs": logs}))
            .await;
        let snapshot = self.next().await.expect("a snapshot");
        assert_eq!(snapshot["type"], "snapshot", "first message: {snapshot}");
        snapshot
    }

    /// The next message or event (checked and applied), or None when the
    /// server closed.
    async fn next(&mut self) -> Option<Value> {
        let message = match self.unread.pop_front() {
            Some(event) => event,
            None => {
                let message = raw_next(&mut self.socket).await?;
                if message["type"] != "events" {
                    message
                } else {
                    self.frames += 1;
                    let events = message["events"].as_array().expect("events array");
                    assert!(!events.is_empty(), "an empty frame was sent");
                    self.unread.extend(events.iter().cloned());
                    self.unread.pop_front().expect("an event")
                }
            }
        };
        self.apply(&message);
        self.seen.push(message.clone());
        Some(message)
    }

    /// Read until `done` holds for this client's view.
    async fn until(&mut self, what: &str, done: impl Fn(&Client) -> bool) {
        while !done(self) {
            if self.next().await.is_none() {
                panic!("the server closed the socket while waiting for {what}");
            }
        }
    }

    fn status(&self, id: i64) -> Option<&str> {
        self.tasks.get(&id).and_then(|t| t["status"].as_str())
    }

    fn all_in(&self, ids: &[i64], statuses: &[&str]) -> bool {
        ids.iter()
            .all(|id| self.status(*id).is_some_and(|s| statuses.contains(&s)))
    }

    fn apply(&mut self, message: &Value) {
        match message["type"].as_str().unwrap_or("") {
            "snapshot" => {
                for task in message["tasks"].as_array().expect("snapshot tasks") {
                    let id = task["task_id"].as_i64().expect("task_id");
                    let seq = task["seq"].as_u64().expect("seq");
                    let previous = self.seqs.get(&id).copied().unwrap_or(0);
                    assert!(
                        seq >= previous,
                        "a snapshot went back for task {id}: seq {seq} after {previous}"
                    );
                    self.seqs.insert(id, seq);
                    self.update_task(task);
                }
            }
            kind @ ("task" | "step" | "log" | "deleted") => {
                let id = message["task_id"].as_i64().expect("task_id");
                let seq = message["seq"].as_u64().expect("seq");
                let previous = self.seqs.get(&id).copied().unwrap_or(0);
                assert!(
                    seq > previous,
                    "seq must increase per task: {kind} event with seq {seq} after {previous}: {message}"
                );
                self.seqs.insert(id, seq);
                match kind {
                    "task" => self.update_task(message),
                    "deleted" => {
                        self.tasks.remove(&id);
                    }
                    _ => {}
                }
            }
            _ => panic!("unexpected message: {message}"),
        }
    }

    /// Within one run, a task's progress never goes back.
    fn update_task(&mut self, state: &Value) {
        let id = state["task_id"].as_i64().expect("task_id");
        if let Some(previous) = self.tasks.get(&id)
            && previous["run_id"] == state["run_id"]
            && !state["run_id"].is_null()
        {
            let (before, now) = (progress(previous), progress(state));
            assert!(
                now >= before,
                "progress of task {id} went back from {before} to {now} within a run: {state}"
            );
        }
        let mut state = state.clone();
        state.as_object_mut().expect("task state").remove("type");
        self.tasks.insert(id, state);
    }

    /// Messages of `kind` read so far for one task.
    fn count(&self, kind: &str, id: i64) -> usize {
        self.seen
            .iter()
            .filter(|m| m["type"] == kind && m["task_id"] == id)
            .count()
    }
}

/// The next text message as JSON, or None when the socket closed.
async fn raw_next(socket: &mut Socket) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("no message from the server in time");
        match message {
            Some(Ok(Message::Text(text))) => {
                return Some(serde_json::from_str(&text).expect("JSON message"));
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// Read to the end of the stream: every text message, then the close.
async fn read_to_close(socket: &mut Socket) -> Vec<Value> {
    let mut messages = Vec::new();
    while let Some(message) = raw_next(socket).await {
        messages.push(message);
    }
    messages
}

fn progress(state: &Value) -> f64 {
    state["progress"].as_f64().expect("progress")
}

fn snapshot_task(snapshot: &Value, id: i64) -> Option<&Value> {
    snapshot["tasks"]
        .as_array()
        .expect("snapshot tasks")
        .iter()
        .find(|t| t["task_id"] == id)
}

/// A task of one `fixture/progress` step.
async fn progress_task(server: &TestServer, updates: u32, sleep_ms: u64, extra: Value) -> i64 {
    let settings = json!({"updates": updates, "sleep_ms": sleep_ms});
    server
        .create_step_task("fixture/progress", settings, extra)
        .await
}

/// A task that only runs when asked (`POST /tasks/{id}/run`).
async fn parked_progress_task(server: &TestServer, updates: u32, sleep_ms: u64) -> i64 {
    progress_task(
        server,
        updates,
        sleep_ms,
        json!({"start_at": "2999-01-01T00:00:00Z"}),
    )
    .await
}

async fn run_now(server: &TestServer, id: i64) {
    let (status, body) = server.post_empty(&format!("/tasks/{id}/run")).await;
    assert!(status.is_success(), "run {id}: {status} {body}");
}

#[tokio::test]
async fn the_header_token_and_a_first_auth_message_both_authenticate() {
    let server = TestServer::start().await;

    let mut header = Client::open(&server).await;
    header.subscribe(json!("all"), false).await;

    let socket = connect(&server, None)
        .await
        .expect("upgrade without a header");
    let mut browser = Client::over(socket);
    browser
        .send(json!({"type": "auth", "token": server.token}))
        .await;
    browser.subscribe(json!("all"), false).await;
}

#[tokio::test]
async fn bad_tokens_and_a_missing_auth_message_are_refused() {
    let server = TestServer::start().await;

    // A bad header token: a plain 401 before any upgrade.
    match connect(&server, Some("sw_not_a_token")).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 401),
        Err(e) => panic!("expected HTTP 401, got {e}"),
        Ok(_) => panic!("a bad header token was upgraded"),
    }

    // A bad token in the first message: an `error` message, then the close.
    let mut socket = connect(&server, None).await.expect("upgrade");
    let auth = json!({"type": "auth", "token": "sw_not_a_token"});
    socket.send(Message::text(auth.to_string())).await.unwrap();
    let messages = read_to_close(&mut socket).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["type"], "error");
    assert!(
        messages[0]["message"].as_str().unwrap().contains("token"),
        "{messages:?}"
    );

    // Anything but `auth` first (here a subscribe) is refused the same way.
    let mut socket = connect(&server, None).await.expect("upgrade");
    let subscribe = json!({"type": "subscribe", "tasks": "all"});
    socket
        .send(Message::text(subscribe.to_string()))
        .await
        .unwrap();
    let messages = read_to_close(&mut socket).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["type"], "error");
    assert!(
        messages[0]["message"].as_str().unwrap().contains("auth"),
        "{messages:?}"
    );
}

/// The WebSocket's own protocol: a ping gets its pong, a close its echo (a
/// clean close handshake), a refusal its close code, and a request that is no
/// upgrade a plain 400.
#[tokio::test]
async fn pings_closes_and_plain_requests_are_answered() {
    let server = TestServer::start().await;

    let (status, body) = server.get("/events").await;
    assert_eq!(status, 400, "{body}");

    let mut client = Client::open(&server).await;
    client.subscribe(json!("all"), false).await;
    let mut socket = client.socket;
    socket
        .send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next()).await;
        match message.expect("no pong in time") {
            Some(Ok(Message::Pong(payload))) => {
                assert_eq!(&payload[..], b"are you there");
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a pong, got {other:?}"),
        }
    }
    socket.close(None).await.unwrap();
    loop {
        match tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("no close echo")
        {
            // The echo, then the end of the stream.
            Some(Ok(_)) => continue,
            None | Some(Err(WsError::ConnectionClosed)) => break,
            Some(Err(e)) => panic!("not a clean close: {e}"),
        }
    }

    // A refusal closes with 1008 and its reason.
    let mut socket = connect(&server, None).await.expect("upgrade");
    socket
        .send(Message::text(
            json!({"type": "auth", "token": "sw_nope"}).to_string(),
        ))
        .await
        .unwrap();
    let code = loop {
        match tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("no close")
        {
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, 1008);
}

#[tokio::test]
async fn snapshot_first_then_ordered_events_until_completed() {
    let server = TestServer::start().await;
    server.upload("fixture/progress").await;
    let earlier = progress_task(&server, 2, 1, json!({})).await;
    server.wait_for(earlier, &["completed"], PATIENCE).await;

    let mut client = Client::open(&server).await;
    let snapshot = client.subscribe(json!("all"), false).await;
    let existing = snapshot_task(&snapshot, earlier).expect("the existing task is in the snapshot");
    assert_eq!(existing["status"], "completed");
    assert_eq!(progress(existing), 100.0);

    let id = progress_task(&server, 100, 5, json!({})).await;
    client
        .until("the task to complete", |c| c.all_in(&[id], &["completed"]))
        .await;

    // Every `task` event of the run: seq and progress checked by the client;
    // here, the shape of the run as a whole.
    let events: Vec<&Value> = client
        .seen
        .iter()
        .filter(|m| m["type"] == "task" && m["task_id"] == id)
        .collect();
    let running: Vec<&&Value> = events.iter().filter(|e| e["status"] == "running").collect();
    assert!(
        running.len() >= 2,
        "progress events expected, got {running:?}"
    );
    // Progress is paced: about one state per interval after the first.
    let at = |e: &Value| {
        e["updated_at"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    };
    let span = at(running[running.len() - 1]) - at(running[0]);
    assert!(
        running.len() as i64 <= 3 + span.num_milliseconds() / PROGRESS_INTERVAL.as_millis() as i64,
        "{} running states over {span} for 100 reports",
        running.len()
    );
    assert!(client.frames > 0);
    let last = events.last().unwrap();
    assert_eq!(last["status"], "completed");
    assert_eq!(last["last_result"], "success");
    assert_eq!(progress(last), 100.0);
    // The task as created (scheduled, no run yet) may arrive in a frame of
    // its own before the run starts; every state after it is of one run.
    let run_ids: HashSet<String> = events
        .iter()
        .filter(|e| e["status"] != "scheduled")
        .map(|e| e["run_id"].to_string())
        .collect();
    assert_eq!(run_ids.len(), 1, "one run: {run_ids:?}");
    assert!(
        !run_ids.contains("null"),
        "every state of the run names it: {run_ids:?}"
    );
    let steps: Vec<&Value> = client
        .seen
        .iter()
        .filter(|m| m["type"] == "step" && m["task_id"] == id)
        .collect();
    assert_eq!(steps[0]["status"], "running", "{steps:?}");
    assert_eq!(steps[steps.len() - 1]["status"], "completed", "{steps:?}");
    assert!(
        client
            .seen
            .iter()
            .all(|m| m["type"] != "log" && m["task_id"] != earlier),
        "no logs without asking, nothing for the finished task"
    );
}

#[tokio::test]
async fn a_list_subscription_sees_only_its_tasks() {
    let server = TestServer::start().await;
    server.upload("fixture/progress").await;
    let wanted = parked_progress_task(&server, 10, 5).await;
    let other = parked_progress_task(&server, 10, 5).await;

    let mut client = Client::open(&server).await;
    let snapshot = client.subscribe(json!([wanted]), false).await;
    assert!(snapshot_task(&snapshot, wanted).is_some(), "{snapshot}");
    assert!(snapshot_task(&snapshot, other).is_none(), "{snapshot}");

    // The other task runs to the end first, so any leaked event of it would be
    // read before the wanted task's events.
    run_now(&server, other).await;
    server.wait_for(other, &["completed"], PATIENCE).await;
    run_now(&server, wanted).await;
    client
        .until("the wanted task to complete", |c| {
            c.all_in(&[wanted], &["completed"])
        })
        .await;
    assert!(
        client.seen.iter().all(|m| m["task_id"] != other),
        "an event of an unsubscribed task was sent"
    );
    assert!(client.count("task", wanted) >= 2);
}

#[tokio::test]
async fn log_events_only_when_asked() {
    let server = TestServer::start().await;
    server.upload("fixture/panic").await;
    let mut with_logs = Client::open(&server).await;
    with_logs.subscribe(json!("all"), true).await;
    let mut without = Client::open(&server).await;
    without.subscribe(json!("all"), false).await;

    let id = server
        .create_step_task("fixture/panic", json!({}), json!({"max_attempts": 1}))
        .await;
    for client in [&mut with_logs, &mut without] {
        client
            .until("the task to fail", |c| c.all_in(&[id], &["failed"]))
            .await;
    }
    let logs: Vec<&Value> = with_logs
        .seen
        .iter()
        .filter(|m| m["type"] == "log")
        .collect();
    assert!(
        logs.iter().any(|l| l["task_id"] == id
            && l["message"]
                .as_str()
                .unwrap()
                .contains("fixture panicked on purpose")),
        "the panic message is a log event: {logs:?}"
    );
    let log = logs[0];
    for field in ["run_id", "step_id", "level", "at"] {
        assert!(!log[field].is_null(), "log event without {field}: {log}");
    }
    assert_eq!(without.count("log", id), 0, "logs sent without asking");
}

#[tokio::test]
async fn secret_values_reach_the_socket_masked() {
    let server = TestServer::start().await;
    server.upload("fixture/echosecret").await;
    let mut client = Client::open(&server).await;
    client.subscribe(json!("all"), true).await;
    let secret = "Tr0ub4dor-and-3";
    let id = server
        .create_step_task(
            "fixture/echosecret",
            json!({"secret": "api_key", "fail": true}),
            json!({"max_attempts": 1, "secrets": {"api_key": secret}}),
        )
        .await;
    client
        .until("the task to fail", |c| c.all_in(&[id], &["failed"]))
        .await;
    let seen = serde_json::to_string(&client.seen).unwrap();
    assert!(!seen.contains(secret), "the secret was sent: {seen}");
    for masked in ["the secret is ***", "stdout: ***", "login with *** failed"] {
        assert!(seen.contains(masked), "no `{masked}` in {seen}");
    }
}

#[tokio::test]
async fn a_stalled_reader_catches_up_and_never_holds_back_a_fast_one() {
    let server = TestServer::start().await;
    server.upload("fixture/progress").await;
    server.upload("fixture/stdout").await;
    let mut fast = Client::open(&server).await;
    fast.subscribe(json!("all"), true).await;
    let mut slow = Client::over(connect_small_buffer(&server).await);
    slow.subscribe(json!("all"), true).await;

    // Log lines are never paced: 4 × 10,000 of them, some 6 MB, are more
    // than the socket buffers hold (loopback grows the server's to 4 MB), so
    // the server's sends to the stalled client wait. Meanwhile 20 tasks
    // report progress for 4 s, a frame at nearly every flush: more than the
    // feed keeps for a subscriber that is behind, so it falls behind.
    let mut ids = Vec::new();
    for _ in 0..4 {
        let id = server
            .create_step_task("fixture/stdout", json!({}), json!({}))
            .await;
        ids.push(id);
    }
    for _ in 0..20 {
        ids.push(progress_task(&server, 400, 10, json!({})).await);
    }

    // The slow client reads nothing while the fast one sees every task end.
    let stalled = Instant::now();
    fast.until("every task to complete (fast client)", |c| {
        c.all_in(&ids, &["completed"])
    })
    .await;
    for id in &ids {
        assert_eq!(
            fast.tasks[id]["progress"], 100.0,
            "final state of task {id}"
        );
    }

    // And stays away a while longer (a tab in the background, a bad network):
    // a stalled client is caught up when it reads again, not dropped.
    tokio::time::sleep(Duration::from_secs(8)).await;

    // The slow client wakes up: a catch-up snapshot or the events themselves
    // bring it to the final state, without a gap in any task's seq.
    slow.until("every task to complete (slow client)", |c| {
        c.all_in(&ids, &["completed"])
    })
    .await;
    for id in &ids {
        assert_eq!(slow.tasks[id], fast.tasks[id], "final state of task {id}");
    }
    let logs = |c: &Client| c.seen.iter().filter(|m| m["type"] == "log").count();
    eprintln!(
        "stalled {:.1} s; fast client: {} events in {} frames, {} logs; slow client: {} events, {} logs, {} snapshot(s)",
        stalled.elapsed().as_secs_f64(),
        fast.seen.len(),
        fast.frames,
        logs(&fast),
        slow.seen.len(),
        logs(&slow),
        slow.seen.iter().filter(|m| m["type"] == "snapshot").count()
    );
    assert!(
        logs(&fast) >= 4 * 10_000,
        "the fast client got every log line"
    );
}

#[tokio::test]
async fn after_a_reconnect_the_snapshot_is_the_truth() {
    let server = TestServer::start().await;
    server.upload("fixture/progress").await;
    let short = progress_task(&server, 5, 10, json!({})).await;
    let long = progress_task(&server, 200, 25, json!({})).await;

    let mut client = Client::open(&server).await;
    client.subscribe(json!("all"), false).await;
    client
        .until("the long task to make progress", |c| {
            c.tasks
                .get(&long)
                .is_some_and(|t| t["status"] == "running" && progress(t) > 0.0)
        })
        .await;
    let before = progress(&client.tasks[&long]);
    let run_id = client.tasks[&long]["run_id"].clone();
    drop(client);

    // Disconnected while the short task ends and the long one moves on.
    server.wait_for(short, &["completed"], PATIENCE).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut client = Client::open(&server).await;
    let snapshot = client.subscribe(json!("all"), false).await;
    let (_, rest) = server.get(&format!("/tasks/{long}/progress")).await;
    let short_state = snapshot_task(&snapshot, short).expect("short task in the snapshot");
    assert_eq!(short_state["status"], "completed", "{snapshot}");
    assert_eq!(progress(short_state), 100.0);
    let long_state = snapshot_task(&snapshot, long).expect("long task in the snapshot");
    if long_state["status"] == "running" {
        // The current progress: not older than what the first connection saw,
        // not newer than what the server reports right after.
        assert_eq!(long_state["run_id"], run_id);
        assert!(
            progress(long_state) >= before,
            "{long_state} after {before}"
        );
        if rest["status"] == "running" {
            assert!(
                progress(long_state) <= rest["progress"].as_f64().unwrap_or(100.0),
                "{long_state} vs {rest}"
            );
        }
    } else {
        assert_eq!(long_state["status"], "completed", "{long_state}");
    }

    // Disconnected again until the end: the next snapshot shows the end.
    drop(client);
    server.wait_for(long, &["completed"], PATIENCE).await;
    let mut client = Client::open(&server).await;
    let snapshot = client.subscribe(json!([short, long]), false).await;
    let long_state = snapshot_task(&snapshot, long).expect("long task in the snapshot");
    assert_eq!(long_state["status"], "completed", "{snapshot}");
    assert_eq!(progress(long_state), 100.0);
    assert_eq!(long_state["last_result"], "success");
}
