//! `GET /api/v1/events`: the WebSocket. A client authenticates (header, or a
//! first `auth` message from a browser — never a token in a logged URL),
//! subscribes, gets a snapshot, then events with per-task sequence numbers.
//!
//! The bus never waits for a socket: a client that falls behind loses its
//! place in the broadcast channel and is sent a fresh snapshot instead (the
//! latest state per task — coalescing); one that keeps falling behind, or does
//! not take a message within [`SEND_TIMEOUT`], is closed.
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
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;

/// How long a browser has to send its `auth` message.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that does not take one message within this is closed.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Catch-up snapshots allowed within [`LAG_WINDOW`] before the client is closed.
const MAX_LAGS: usize = 5;
const LAG_WINDOW: Duration = Duration::from_secs(30);
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
    Ok(ws.on_upgrade(move |socket: WebSocket| async move {
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
                        // Resubscribe first so nothing between snapshot and stream is missed;
                        // the client drops events whose seq is not above the snapshot's.
                        events = state.bus().subscribe();
                        if send_snapshot(&state, &mut sink, ids.as_ref()).await.is_err() {
                            return;
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
                    Ok(event) => {
                        let wanted = ids.as_ref().is_none_or(|ids| ids.contains(&event.task_id()))
                            && (*logs || !matches!(event, Event::Log(_)));
                        if wanted && send_json(&mut sink, &event).await.is_err() {
                            return;
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
                        if send_snapshot(&state, &mut sink, ids.as_ref()).await.is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        }
    }
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
async fn send_snapshot<S: Sink<Message> + Unpin>(
    state: &AppState,
    sink: &mut S,
    ids: Option<&HashSet<i64>>,
) -> Result<(), ()> {
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
            _ => tasks.push(stored_state(task, bus.seq(task.id))),
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
    send_json(sink, &ServerMessage::Snapshot { tasks, steps }).await
}

fn stored_state(task: &Task, seq: u64) -> TaskState {
    TaskState {
        task_id: task.id,
        seq,
        name: task.name.clone(),
        status: task.status.to_string(),
        progress: task.progress,
        message: task.message.clone(),
        run_id: task.current_run_id,
        current_step: None,
        eta_seconds: None,
        last_result: task.last_result.map(|r| r.to_string()),
        next_run_at: task.next_run_at,
        updated_at: task.updated_at,
    }
}
