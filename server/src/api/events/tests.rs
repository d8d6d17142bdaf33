//! The session without a socket: channels stand in for the WebSocket, events
//! are published on the bus by hand. The real socket is in `tests/events.rs`.

use super::*;
use crate::api::{ApiConfig, generate_token, hash_token};
use crate::engine::{EngineConfig, engine_for_tests};
use crate::events::{FLUSH_INTERVAL, LogLine, PROGRESS_INTERVAL, TaskState};
use crate::store::{NewStep, NewTask};
use chrono::Utc;
use futures::channel::mpsc;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::convert::Infallible;

struct Harness {
    state: AppState,
    viewer: String,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_for_tests(dir.path(), EngineConfig::new("test")).await;
    let store = engine.store().clone();
    let viewer = generate_token();
    store
        .create_token("viewer", Role::Viewer, &hash_token(&viewer), Utc::now())
        .await
        .unwrap();
    Harness {
        state: AppState::new(engine, ApiConfig::default()),
        viewer,
        _dir: dir,
    }
}

impl Harness {
    async fn task(&self) -> i64 {
        let mut step = NewStep::new("fixture/noop", json!({}));
        step.max_execution_time = 10;
        let task = NewTask {
            disabled: true,
            ..NewTask::new("watched", vec![step])
        };
        let store = self.state.store();
        store.create_task(task, Utc::now()).await.unwrap().0.id
    }

    fn publish_task(&self, task_id: i64, status: &str, progress: f64) -> u64 {
        let state = TaskState::for_test(task_id, status, 1, progress);
        self.state.bus().publish(Event::Task(state))
    }

    fn publish_log(&self, task_id: i64, message: &str) -> u64 {
        self.state.bus().publish(Event::Log(LogLine {
            task_id,
            seq: 0,
            run_id: 1,
            step_id: 1,
            level: "info".into(),
            message: message.into(),
            at: Utc::now(),
        }))
    }

    /// A session whose outgoing side holds `buffer` + 1 messages unread.
    fn open(&self, buffer: usize) -> Client {
        let (to_server, incoming) = mpsc::unbounded();
        let (outgoing, from_server) = mpsc::channel(buffer);
        tokio::spawn(session(self.state.clone(), None, outgoing, incoming));
        Client {
            to_server,
            from_server,
            unread: VecDeque::new(),
            frames: 0,
        }
    }

    /// A viewer's session (see [`Harness::open`]) following all tasks
    /// without logs, its snapshot read.
    async fn watch_all(&self, buffer: usize) -> Client {
        let mut client = self.open(buffer);
        client.send(json!({"type": "auth", "token": self.viewer}));
        client.subscribe(json!("all"), false).await;
        client
    }
}

struct Client {
    to_server: mpsc::UnboundedSender<Result<Message, Infallible>>,
    from_server: mpsc::Receiver<Message>,
    /// Events of the last frame not read yet.
    unread: VecDeque<Value>,
    /// Event frames received.
    frames: usize,
}

impl Client {
    fn send(&self, message: Value) {
        let text = Message::Text(message.to_string().into());
        self.to_server.unbounded_send(Ok(text)).unwrap();
    }

    /// The next message as JSON, events one by one out of their frames;
    /// `{"close": code}` for a close frame; None when the session ended.
    async fn next(&mut self) -> Option<Value> {
        if let Some(event) = self.unread.pop_front() {
            return Some(event);
        }
        let message = tokio::time::timeout(Duration::from_secs(30), self.from_server.next())
            .await
            .expect("the session sent nothing in time")?;
        let value: Value = match message {
            Message::Text(text) => serde_json::from_str(&text).unwrap(),
            Message::Close(frame) => return Some(json!({"close": frame.map(|f| f.code)})),
            other => panic!("unexpected {other:?}"),
        };
        if value["type"] != "events" {
            return Some(value);
        }
        self.frames += 1;
        let events = value["events"].as_array().expect("events array").clone();
        assert!(!events.is_empty(), "an empty frame was sent");
        self.unread.extend(events);
        self.unread.pop_front()
    }

    async fn subscribe(&mut self, tasks: Value, logs: bool) -> Value {
        self.send(json!({"type": "subscribe", "tasks": tasks, "logs": logs}));
        let snapshot = self.next().await.unwrap();
        assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
        snapshot
    }
}

#[tokio::test]
async fn auth_message_subscribe_snapshot_then_events_in_order() {
    let h = harness().await;
    let id = h.task().await;
    let mut client = h.open(16);
    client.send(json!({"type": "auth", "token": h.viewer}));
    let snapshot = client.subscribe(json!("all"), false).await;
    assert_eq!(snapshot["tasks"][0]["task_id"], id);
    assert_eq!(snapshot["tasks"][0]["status"], "disabled");

    h.publish_task(id, "running", 10.0);
    h.publish_log(id, "not asked for");
    h.publish_task(id, "running", 60.0);
    h.state.bus().publish(Event::Deleted {
        task_id: id,
        seq: 0,
    });
    // Usually all four land in one flush: one frame, coalesced to the latest
    // task state (seq 3, skipping seq 1), without the log. On a loaded
    // machine the feed may flush between two publishes (it gathers for 1 ms),
    // so what must hold whatever the frames: no log, seqs only increase, the
    // last task state is seq 3, the deletion comes last.
    let mut events = Vec::new();
    loop {
        let event = client.next().await.unwrap();
        let deleted = event["type"] == "deleted";
        events.push(event);
        if deleted {
            break;
        }
    }
    assert!(events.iter().all(|e| e["type"] != "log"), "{events:?}");
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.is_sorted_by(|a, b| a < b), "{seqs:?}");
    let latest = &events[events.len() - 2];
    assert_eq!(
        (latest["type"].as_str(), latest["seq"].as_u64()),
        (Some("task"), Some(3))
    );
    assert_eq!(latest["progress"], 60.0);
    assert!(latest.get("message").is_none(), "no nulls sent: {latest}");
    assert_eq!(
        events.last().unwrap(),
        &json!({"type": "deleted", "task_id": id, "seq": 4})
    );
    if client.frames == 1 {
        assert_eq!(seqs, [3, 4], "one frame holds the latest state only");
    }
}

#[tokio::test]
async fn a_bad_token_or_no_auth_message_gets_an_error_and_a_close() {
    let h = harness().await;
    for first in [
        json!({"type": "auth", "token": "sw_wrong"}),
        json!({"type": "subscribe", "tasks": "all"}),
    ] {
        let mut client = h.open(16);
        client.send(first);
        let error = client.next().await.unwrap();
        assert_eq!(error["type"], "error", "{error}");
        assert_eq!(client.next().await.unwrap(), json!({"close": 1008}));
        assert_eq!(client.next().await, None, "the session ended");
    }
}

#[tokio::test]
async fn a_list_subscription_with_logs_gets_only_its_tasks() {
    let h = harness().await;
    let (wanted, other) = (h.task().await, h.task().await);
    let mut client = h.open(16);
    client.send(json!({"type": "auth", "token": h.viewer}));
    let snapshot = client.subscribe(json!([wanted]), true).await;
    assert_eq!(snapshot["tasks"].as_array().unwrap().len(), 1, "{snapshot}");

    h.publish_task(other, "running", 5.0);
    h.publish_log(other, "other");
    h.publish_task(wanted, "running", 5.0);
    h.publish_log(wanted, "wanted");
    let task = client.next().await.unwrap();
    assert_eq!(
        (task["type"].as_str(), task["task_id"].as_i64()),
        (Some("task"), Some(wanted))
    );
    let log = client.next().await.unwrap();
    assert_eq!(
        (log["type"].as_str(), log["message"].as_str()),
        (Some("log"), Some("wanted"))
    );
}

#[tokio::test]
async fn running_progress_is_paced_and_always_the_latest() {
    let h = harness().await;
    let id = h.task().await;
    let mut client = h.watch_all(64).await;

    // Progress every 2 ms for half a second, then the end.
    let started = Instant::now();
    let mut updates = 0;
    while started.elapsed() < Duration::from_millis(500) {
        updates += 1;
        h.publish_task(id, "running", updates as f64 / 10.0);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    let last = h.publish_task(id, "completed", 100.0);

    let mut seqs = Vec::new();
    loop {
        let event = client.next().await.unwrap();
        assert_eq!(event["type"], "task", "{event}");
        let seq = event["seq"].as_u64().unwrap();
        assert!(seqs.last().is_none_or(|&s| seq > s), "{seq} after {seqs:?}");
        seqs.push(seq);
        if event["status"] == "completed" {
            assert_eq!(seq, last);
            break;
        }
    }
    // The first running state goes at once, then one per interval at most,
    // then the end.
    let most = 2 + (elapsed.as_millis() / PROGRESS_INTERVAL.as_millis()) as usize + 1;
    assert!(
        seqs.len() <= most,
        "{} states for {updates} updates in {elapsed:?}",
        seqs.len()
    );
    assert!(seqs.len() >= 3, "progress was sent while running: {seqs:?}");
}

#[tokio::test]
async fn a_stalled_client_is_caught_up_with_a_snapshot_not_closed() {
    let h = harness().await;
    let id = h.task().await;
    // One message fits in the channel; the next send waits for the reader.
    let mut client = h.watch_all(0).await;

    // A change (not paced) at every flush, for more flushes than the feed
    // keeps for a subscriber that is behind.
    for i in 0..300 {
        let status = if i % 2 == 0 { "running" } else { "scheduled" };
        h.publish_task(id, status, 0.0);
        tokio::time::sleep(FLUSH_INTERVAL + Duration::from_millis(1)).await;
    }
    let last = h.publish_task(id, "completed", 100.0);
    tokio::time::sleep(FLUSH_INTERVAL * 2).await;
    let mut seqs = Vec::new();
    let caught_up = loop {
        let message = client.next().await.expect("the stalled client was closed");
        match message["type"].as_str() {
            Some("task") => seqs.push(message["seq"].as_u64().unwrap()),
            Some("snapshot") => break message,
            _ => panic!("unexpected {message}"),
        }
    };
    assert!(seqs.len() <= 2, "only what was in flight: {seqs:?}");
    let state = &caught_up["tasks"][0];
    assert_eq!(state["seq"].as_u64(), Some(last), "{state}");
    assert_eq!(
        (state["status"].as_str(), state["progress"].as_f64()),
        (Some("completed"), Some(100.0))
    );

    // And the stream goes on from there.
    h.state.bus().publish(Event::Deleted {
        task_id: id,
        seq: 0,
    });
    let event = client.next().await.unwrap();
    assert_eq!(
        event,
        json!({"type": "deleted", "task_id": id, "seq": last + 1})
    );
}

#[tokio::test]
async fn a_client_a_few_flushes_behind_gets_them_in_one_frame() {
    let h = harness().await;
    let id = h.task().await;
    let mut client = h.watch_all(0).await;

    // Six changes, one per flush, none read: the first frame waits in the
    // channel, the session waits to send the second, the rest wait for it.
    let mut published = Vec::new();
    for i in 0..6 {
        let status = if i % 2 == 0 { "running" } else { "scheduled" };
        published.push(h.publish_task(id, status, 0.0));
        tokio::time::sleep(FLUSH_INTERVAL * 2).await;
    }
    let mut seqs = Vec::new();
    while seqs.len() < published.len() {
        seqs.push(client.next().await.unwrap()["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs, published, "every change, in order");
    assert!(client.frames <= 3, "{} frames", client.frames);
}
