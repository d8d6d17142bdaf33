//! `GET /api/v1/events`: the WebSocket. A client authenticates (header, or a
//! first `auth` message from a browser — never a token in a logged URL),
//! subscribes, gets a snapshot, then frames of events
//! (`{"type":"events","events":[…]}`) with per-task sequence numbers.
//!
//! A session writes the batches of the bus's feed: one frame per flush,
//! serialised once for every subscriber of its class, so a thousand
//! subscribers cost a thousand socket writes per flush and nothing more.
//! Only a session with a list of tasks, or one that is behind, builds a
//! frame of its own (by joining events already serialised).
//!
//! The bus never waits for a socket: a client that falls behind takes every
//! batch waiting at once, coalesced to the latest state per task and step;
//! one that falls further behind than the feed keeps is sent a fresh
//! snapshot instead; one that keeps falling behind, or takes nothing for
//! [`SEND_TIMEOUT`] (a dead peer), is closed. Events the snapshot already
//! covers are not sent after it, so `seq` only increases.
//!
//! The session is generic over `Sink`/`Stream` so it is tested without a socket.

mod snapshot;
#[cfg(test)]
mod tests;

use super::AppState;
use super::auth::{Caller, authenticate, bearer};
use super::error::ApiError;
use crate::events::{Batch, Class, Event, Published, coalesce, frame, join};
use crate::store::Role;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use futures::{Sink, SinkExt, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use snapshot::{Covered, send_snapshot};
use std::collections::HashSet;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

/// How long a browser has to send its `auth` message.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that takes no message for this long is taken for dead and closed.
/// A slow or briefly stalled one (a busy browser, a bad network) is not: it
/// is caught up with a snapshot when it reads again.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the reply to a client's close may take to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Catch-up snapshots allowed within [`LAG_WINDOW`] before the client is closed.
const MAX_LAGS: usize = 5;
const LAG_WINDOW: Duration = Duration::from_secs(30);
/// Most waiting batches taken at once.
const MAX_DRAIN: usize = 64;
/// Up to this many batches taken at once are joined as they are; more are
/// coalesced to the latest state per task and step.
const MAX_JOINED: usize = 8;
/// Read buffer of a socket. Clients send only small messages, and the
/// WebSocket library zero-fills this buffer before every read attempt:
/// 128 KiB (the default) per wake-up and subscriber was most of the
/// server's time with 1,000 subscribers.
const READ_BUFFER_BYTES: usize = 4 << 10;

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

/// What the server sends besides event frames.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ServerMessage<'a> {
    Error { message: &'a str },
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
            let _connected = state.websocket_clients().connect();
            let (sink, stream) = socket.split();
            session(state, caller, sink, stream).await;
        }))
}

/// A subscribed session: what it follows and where it is.
struct Following {
    /// `None`: all tasks.
    ids: Option<HashSet<i64>>,
    batches: Receiver<Arc<Batch>>,
    /// Until the feed has moved past the last snapshot: what it covers.
    covered: Option<Covered>,
}

impl Following {
    fn wants(&self, event: &Event) -> bool {
        let task_id = event.task_id();
        self.ids.as_ref().is_none_or(|ids| ids.contains(&task_id))
            && self
                .covered
                .as_ref()
                .is_none_or(|covered| !covered.covers(task_id, event.seq()))
    }

    /// The frame to send for batches taken together, if any event is wanted.
    fn frame(&mut self, batches: &[Arc<Batch>]) -> Option<Utf8Bytes> {
        let all = self.ids.is_none() && self.covered.is_none();
        let text = if all && batches.len() == 1 {
            Some(batches[0].frame.clone())
        } else if all && batches.len() <= MAX_JOINED {
            Some(join(batches))
        } else {
            let events: Vec<Arc<Published>> = batches
                .iter()
                .flat_map(|b| b.events.iter().cloned())
                .collect();
            let events = coalesce(events);
            let mut wanted = events.iter().filter(|p| self.wants(&p.event)).peekable();
            wanted.peek().is_some().then(|| frame(wanted.map(|p| &**p)))
        };
        let settled = batches.last().map_or(0, |b| b.settled);
        if self.covered.as_ref().is_some_and(|c| c.settled_by(settled)) {
            self.covered = None;
        }
        Utf8Bytes::try_from(text?).ok()
    }
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

    let mut following: Option<Following> = None;
    let mut lags: Vec<Instant> = Vec::new();
    loop {
        tokio::select! {
            incoming = stream.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) => {
                        // Flush the close handshake's reply (queued by the
                        // WebSocket library) before the socket is dropped.
                        let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
                        return;
                    }
                    None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                match serde_json::from_str::<ClientMessage>(&text) {
                    Ok(ClientMessage::Subscribe { tasks, logs }) => {
                        let ids = match tasks {
                            Subscription::All(all) if all == "all" => None,
                            Subscription::Ids(ids) => Some(ids.into_iter().collect()),
                            Subscription::All(other) => {
                                let message = format!("`tasks` must be \"all\" or a list of ids, not \"{other}\"");
                                if send_error(&mut sink, &message).await.is_err() {
                                    return;
                                }
                                continue;
                            }
                        };
                        // Subscribe first so nothing between snapshot and feed is
                        // missed; what the snapshot covers is then skipped.
                        let class = if logs { Class::WithLogs } else { Class::NoLogs };
                        let batches = state.bus().subscribe_batches(class);
                        let Ok(covered) = send_snapshot(&state, &mut sink, ids.as_ref()).await else {
                            return;
                        };
                        following = Some(Following { ids, batches, covered: Some(covered) });
                    }
                    Ok(ClientMessage::Auth { .. }) => {}
                    Err(e) => {
                        let message = format!("unrecognised message: {e}; send {{\"type\":\"subscribe\",\"tasks\":\"all\"}}");
                        if send_error(&mut sink, &message).await.is_err() {
                            return;
                        }
                    }
                }
            }
            batches = waiting_batches(following.as_mut()) => {
                let Some(f) = following.as_mut() else { continue };
                match batches {
                    Ok(batches) => {
                        if let Some(text) = f.frame(&batches)
                            && send(&mut sink, Message::Text(text)).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        lags.retain(|at| at.elapsed() < LAG_WINDOW);
                        lags.push(Instant::now());
                        if lags.len() > MAX_LAGS {
                            return close_with_error(&mut sink, "closed: this client keeps falling behind the event stream").await;
                        }
                        f.batches = f.batches.resubscribe();
                        match send_snapshot(&state, &mut sink, f.ids.as_ref()).await {
                            Ok(covered) => f.covered = Some(covered),
                            Err(()) => return,
                        }
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        }
    }
}

/// The next batch and whatever else is already waiting (a client that is
/// behind takes it all at once); never ready before a subscribe.
async fn waiting_batches(following: Option<&mut Following>) -> Result<Vec<Arc<Batch>>, RecvError> {
    let Some(following) = following else {
        return std::future::pending().await;
    };
    let mut batches = vec![following.batches.recv().await?];
    while batches.len() < MAX_DRAIN {
        match following.batches.try_recv() {
            Ok(batch) => batches.push(batch),
            Err(TryRecvError::Lagged(n)) => return Err(RecvError::Lagged(n)),
            Err(TryRecvError::Closed) => return Err(RecvError::Closed),
            Err(TryRecvError::Empty) => break,
        }
    }
    Ok(batches)
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

/// Send one message; a peer that takes nothing for [`SEND_TIMEOUT`] is gone.
/// Most sends finish at once (the socket has room), and those set no timer:
/// a timer per send was a measurable share of the fan-out's cost.
async fn send<S: Sink<Message> + Unpin>(sink: &mut S, message: Message) -> Result<(), ()> {
    let mut sending = sink.send(message);
    if let Poll::Ready(result) = futures::poll!(&mut sending) {
        return result.map_err(drop);
    }
    match tokio::time::timeout(SEND_TIMEOUT, sending).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn send_json<S, T>(sink: &mut S, value: &T) -> Result<(), ()>
where
    S: Sink<Message> + Unpin,
    T: Serialize,
{
    let text = serde_json::to_string(value).map_err(|_| ())?;
    send(sink, Message::Text(text.into())).await
}

async fn send_error<S: Sink<Message> + Unpin>(sink: &mut S, message: &str) -> Result<(), ()> {
    send_json(sink, &ServerMessage::Error { message }).await
}

async fn close_with_error<S: Sink<Message> + Unpin>(sink: &mut S, message: &str) {
    let _ = send_error(sink, message).await;
    let frame = CloseFrame {
        code: 1008,
        reason: message.chars().take(100).collect::<String>().into(),
    };
    let _ = send(sink, Message::Close(Some(frame))).await;
}
