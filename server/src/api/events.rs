//! `GET /api/v1/events`: the WebSocket. A client authenticates (header, or a
//! first `auth` message from a browser — never a token in a logged URL),
//! subscribes, gets a snapshot, then events with per-task sequence numbers.
//!
//! The bus never waits for a socket: a client that falls behind loses its
//! place in the broadcast channel and is sent a fresh snapshot instead (the
//! latest state per task — coalescing); one that keeps falling behind, or
//! takes nothing for [`SEND_TIMEOUT`] (a dead peer), is closed. Events the
//! snapshot already covers are not sent after it, so `seq` only increases.
//!
//! The session is generic over `Sink`/`Stream` so it is tested without a socket.

use super::AppState;
use super::auth::{Caller, authenticate, bearer};
use super::error::ApiError;
use crate::events::{Event, StepState, TaskState};
use crate::store::{Role, Task, TaskFilter};
use axum::Router;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use futures::{Sink, SinkExt, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;

/// How long a browser has to send its `auth` message.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that takes no message for this long is taken for dead and closed.
/// A slow or briefly stalled one (a busy browser, a bad network) is not: it
/// is caught up with a snapshot when it reads again.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Catch-up snapshots allowed within [`LAG_WINDOW`] before the client is closed.
const MAX_LAGS: usize = 5;
const LAG_WINDOW: Duration = Duration::from_secs(30);
/// Most waiting events taken (and coalesced) at once.
const MAX_DRAIN: usize = 4096;
/// Read buffer of a socket. Clients send only small messages, and the
/// WebSocket library zero-fills this buffer before every read attempt, which
/// the session makes each time it sends an event: 128 KiB (the default) per
/// event and subscriber was most of the server's time with 1,000 subscribers.
const READ_BUFFER_BYTES: usize = 4 << 10;
/// Tasks in an "all" snapshot (newest first, plus every live one).
const SNAPSHOT_TASKS: i64 = 500;

pub fn router() -> Router<AppState> {
    Router::new().route("/events", get(upgrade))
}

/// What a client sends.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ClientMessage {
    /// First message from a browser: the token.
    Auth { token: String },
    /// Which tasks to follow: `"all"` or a list of ids; `logs` adds log lines.
    Subscribe {
        tasks: Subscription,
        #[serde(default)]
        logs: bool,
    },
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Subscription {
    /// The text `"all"`.
    All(String),
    Ids(Vec<i64>),
}

/// What the server sends besides events.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ServerMessage<'a> {
    Snapshot {
        tasks: Vec<TaskState>,
        steps: Vec<StepState>,
    },
    Error {
        message: &'a str,
    },
}

#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    description = "WebSocket upgrade. See docs/API.md for the protocol.",
    responses((status = 101, description = "switching to the WebSocket protocol"),
        (status = 401, body = super::ErrorBody), (status = 400, body = super::ErrorBody)),
    security(("bearer" = []), ()))]
pub async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // A token in the header is checked before upgrading (programs get a plain 401).
    let caller = match bearer(&headers) {
        Some(token) => Some(authenticate(&state, token).await?),
        None => None,
    };
    if let Some(caller) = &caller {
        caller.require(Role::Viewer)?;
    }
    let ws = ws.map_err(|e| {
        ApiError::BadRequest(format!("expected a WebSocket upgrade: {}", e.body_text()))
    })?;
    Ok(ws
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |socket: WebSocket| async move {
            let (sink, stream) = socket.split();
            session(state, caller, sink, stream).await;
        }))
}

/// One client's session, over any sink and stream of WebSocket messages.
pub async fn session<S, R, E>(state: AppState, caller: Option<Caller>, mut sink: S, mut stream: R)
where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, E>> + Unpin,
{
    let caller = match caller {
        Some(caller) => caller,
        None => match first_message_auth(&state, &mut stream).await {
            Ok(caller) => caller,
            Err(message) => return close_with_error(&mut sink, &message).await,
        },
    };
    if caller.require(Role::Viewer).is_err() {
        return close_with_error(&mut sink, "this token may not open the event stream").await;
    }

    let mut events = state.bus().subscribe();
    let mut subscription: Option<(Option<HashSet<i64>>, bool)> = None;
    // Per task, the highest seq the last snapshot covers: older events that
    // were queued meanwhile are dropped instead of sent out of order.
    let mut covered: HashMap<i64, u64> = HashMap::new();
    let mut lags: Vec<Instant> = Vec::new();
    loop {
        tokio::select! {
            incoming = stream.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text.to_string(),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                match serde_json::from_str::<ClientMessage>(&text) {
                    Ok(ClientMessage::Subscribe { tasks, logs }) => {
                        let ids = match tasks {
                            Subscription::All(all) if all == "all" => None,
                            Subscription::Ids(ids) => Some(ids.into_iter().collect()),
                            Subscription::All(other) => {
                                let message = format!("`tasks` must be \"all\" or a list of ids, not \"{other}\"");
                                if send_json(&mut sink, &ServerMessage::Error { message: &message }).await.is_err() {
                                    return;
                                }
                                continue;
                            }
                        };
                        // Resubscribe first so nothing between snapshot and stream is
                        // missed; what the snapshot covers is then skipped.
                        events = state.bus().subscribe();
                        match send_snapshot(&state, &mut sink, ids.as_ref()).await {
                            Ok(seqs) => covered = seqs,
                            Err(()) => return,
                        }
                        subscription = Some((ids, logs));
                    }
                    Ok(ClientMessage::Auth { .. }) => {}
                    Err(e) => {
                        let message = format!("unrecognised message: {e}; send {{\"type\":\"subscribe\",\"tasks\":\"all\"}}");
                        if send_json(&mut sink, &ServerMessage::Error { message: &message }).await.is_err() {
                            return;
                        }
                    }
                }
            }
            event = events.recv() => {
                let Some((ids, logs)) = &subscription else { continue };
                match event {
                    Ok(first) => {
                        // Whatever else is already waiting is taken now and
                        // coalesced: a client that is behind gets the latest
                        // state of each task and step, not every step between.
                        let mut pending = vec![first];
                        while pending.len() < MAX_DRAIN
                            && let Ok(next) = events.try_recv()
                        {
                            pending.push(next);
                        }
                        for event in coalesce(pending) {
                            if let Some(&seq) = covered.get(&event.task_id()) {
                                if event.seq() <= seq {
                                    continue;
                                }
                                covered.remove(&event.task_id());
                            }
                            let wanted = ids.as_ref().is_none_or(|ids| ids.contains(&event.task_id()))
                                && (*logs || !matches!(event, Event::Log(_)));
                            if wanted && send_json(&mut sink, &event).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        lags.retain(|at| at.elapsed() < LAG_WINDOW);
                        lags.push(Instant::now());
                        if lags.len() > MAX_LAGS {
                            return close_with_error(&mut sink, "closed: this client keeps falling behind the event stream").await;
                        }
                        let ids = ids.clone();
                        events = events.resubscribe();
                        match send_snapshot(&state, &mut sink, ids.as_ref()).await {
                            Ok(seqs) => covered = seqs,
                            Err(()) => return,
                        }
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        }
    }
}

/// Keep, of a run of events, the last task state per task and the last step
/// state per step (logs and deletions all), in their original order — which
/// is each task's seq order, so seqs still only go up.
fn coalesce(events: Vec<Event>) -> Vec<Event> {
    if events.len() < 2 {
        return events;
    }
    let mut last = HashMap::new();
    for (index, event) in events.iter().enumerate() {
        match event {
            Event::Task(t) => {
                last.insert((t.task_id, i64::MIN), index);
            }
            Event::Step(s) => {
                last.insert((s.task_id, s.step_id), index);
            }
            Event::Log(_) | Event::Deleted { .. } => {}
        }
    }
    events
        .into_iter()
        .enumerate()
        .filter(|(index, event)| match event {
            Event::Task(t) => last[&(t.task_id, i64::MIN)] == *index,
            Event::Step(s) => last[&(s.task_id, s.step_id)] == *index,
            Event::Log(_) | Event::Deleted { .. } => true,
        })
        .map(|(_, event)| event)
        .collect()
}

async fn first_message_auth<R, E>(state: &AppState, stream: &mut R) -> Result<Caller, String>
where
    R: Stream<Item = Result<Message, E>> + Unpin,
{
    let first = tokio::time::timeout(AUTH_TIMEOUT, stream.next())
        .await
        .map_err(|_| "send {\"type\":\"auth\",\"token\":\"...\"} first".to_string())?;
    let Some(Ok(Message::Text(text))) = first else {
        return Err("send {\"type\":\"auth\",\"token\":\"...\"} first".into());
    };
    match serde_json::from_str::<ClientMessage>(&text) {
        Ok(ClientMessage::Auth { token }) => authenticate(state, &token)
            .await
            .map_err(|_| "unknown or revoked token".to_string()),
        _ => Err("send {\"type\":\"auth\",\"token\":\"...\"} first".into()),
    }
}

async fn send_json<S, T>(sink: &mut S, value: &T) -> Result<(), ()>
where
    S: Sink<Message> + Unpin,
    T: Serialize,
{
    let text = serde_json::to_string(value).map_err(|_| ())?;
    match tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Text(text.into()))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn close_with_error<S: Sink<Message> + Unpin>(sink: &mut S, message: &str) {
    let _ = send_json(sink, &ServerMessage::Error { message }).await;
    let frame = CloseFrame {
        code: 1008,
        reason: message.chars().take(100).collect::<String>().into(),
    };
    let _ = tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
}

/// The truth for the subscribed tasks: live state from the bus where a run is
/// in flight, stored state otherwise, each with the task's current seq.
/// Returns the highest seq the snapshot covers per task.
async fn send_snapshot<S: Sink<Message> + Unpin>(
    state: &AppState,
    sink: &mut S,
    ids: Option<&HashSet<i64>>,
) -> Result<HashMap<i64, u64>, ()> {
    let stored: Vec<Task> = match ids {
        None => {
            let filter = TaskFilter {
                limit: SNAPSHOT_TASKS,
                ..TaskFilter::default()
            };
            state.store().list_tasks(&filter).await.map_err(|_| ())?
        }
        Some(ids) => {
            let mut tasks = Vec::new();
            for id in ids {
                if let Ok(Some(task)) = state.store().get_task(*id).await {
                    tasks.push(task);
                }
            }
            tasks
        }
    };
    let bus = state.bus();
    let mut tasks = Vec::new();
    let mut steps = Vec::new();
    let mut seen = HashSet::new();
    for task in &stored {
        seen.insert(task.id);
        match bus.latest(task.id) {
            Some((live, live_steps))
                if task.status.as_str() == "running" || live.status != "running" =>
            {
                tasks.push(live);
                steps.extend(live_steps);
            }
            _ => tasks.push(TaskState::stored(task, bus.seq(task.id))),
        }
    }
    if ids.is_none() {
        for live in bus.latest_all() {
            if live.status == "running" && !seen.contains(&live.task_id) {
                if let Some((_, live_steps)) = bus.latest(live.task_id) {
                    steps.extend(live_steps);
                }
                tasks.push(live);
            }
        }
    }
    let mut covered: HashMap<i64, u64> = HashMap::new();
    let seqs = tasks.iter().map(|t| (t.task_id, t.seq));
    for (task_id, seq) in seqs.chain(steps.iter().map(|s| (s.task_id, s.seq))) {
        let highest = covered.entry(task_id).or_default();
        *highest = (*highest).max(seq);
    }
    send_json(sink, &ServerMessage::Snapshot { tasks, steps }).await?;
    Ok(covered)
}

/// The session without a socket: channels stand in for the WebSocket, events
/// are published on the bus by hand.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApiConfig, generate_token, hash_token};
    use crate::engine::{Engine, EngineConfig};
    use crate::events::{EventBus, LogLine};
    use crate::runtime::{Runtime, RuntimeConfig};
    use crate::secrets::SecretBox;
    use crate::store::{Durability, NewStep, NewTask, SqliteStore, Store};
    use chrono::Utc;
    use futures::channel::mpsc;
    use serde_json::{Value, json};
    use std::convert::Infallible;
    use std::sync::Arc;

    struct Harness {
        state: AppState,
        viewer: String,
        _dir: tempfile::TempDir,
    }

    async fn harness() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("db.sqlite"), Durability::Normal)
                .await
                .unwrap(),
        );
        let runtime = Runtime::new(RuntimeConfig::local(dir.path().join("compiled"))).unwrap();
        let engine = Engine::new(
            store.clone(),
            Arc::new(runtime),
            Arc::new(EventBus::new()),
            Arc::new(SecretBox::from_key(&[7; 32])),
            EngineConfig::new("test"),
        );
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
            self.state.bus().publish(Event::Task(TaskState {
                task_id,
                seq: 0,
                name: "watched".into(),
                status: status.into(),
                progress,
                message: None,
                run_id: Some(1),
                current_step: None,
                eta_seconds: None,
                last_result: None,
                next_run_at: None,
                updated_at: Utc::now(),
            }))
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
            }
        }
    }

    struct Client {
        to_server: mpsc::UnboundedSender<Result<Message, Infallible>>,
        from_server: mpsc::Receiver<Message>,
    }

    impl Client {
        fn send(&self, message: Value) {
            let text = Message::Text(message.to_string().into());
            self.to_server.unbounded_send(Ok(text)).unwrap();
        }

        /// The next JSON message; `{"close": code}` for a close frame; None
        /// when the session ended.
        async fn next(&mut self) -> Option<Value> {
            let message = tokio::time::timeout(Duration::from_secs(30), self.from_server.next())
                .await
                .expect("the session sent nothing in time")?;
            Some(match message {
                Message::Text(text) => serde_json::from_str(&text).unwrap(),
                Message::Close(frame) => json!({"close": frame.map(|f| f.code)}),
                other => panic!("unexpected {other:?}"),
            })
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
        // All four were published before the session could read: it is behind,
        // so it coalesces to the latest task state (seq 3), skipping seq 1.
        let latest = client.next().await.unwrap();
        assert_eq!(
            (latest["type"].as_str(), latest["seq"].as_u64()),
            (Some("task"), Some(3))
        );
        assert_eq!(latest["progress"], 60.0);
        let deleted = client.next().await.unwrap();
        assert_eq!(deleted, json!({"type": "deleted", "task_id": id, "seq": 4}));
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
    async fn a_stalled_client_is_caught_up_with_a_snapshot_not_closed() {
        let h = harness().await;
        let id = h.task().await;
        // One message fits in the channel; the next send waits for the reader.
        let mut client = h.open(0);
        client.send(json!({"type": "auth", "token": h.viewer}));
        client.subscribe(json!("all"), false).await;

        // Far more events than the bus keeps for a subscriber that is behind.
        let updates = 20_000;
        for i in 1..updates {
            h.publish_task(id, "running", i as f64 * 100.0 / updates as f64);
        }
        let last = h.publish_task(id, "completed", 100.0);
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
}
