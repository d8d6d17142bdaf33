//! What crosses between the nodes that share a store: their events (so a
//! WebSocket or `--watch` on any node sees every task), cancels (so a cancel
//! sent to any node stops the step where it runs, at once rather than at
//! that node's next heartbeat) and uploads (so every node compiles a new
//! module ahead of its first run).
//!
//! Messages travel as the store's node messages (PostgreSQL's NOTIFY), which
//! carry at most 8,000 bytes and are delivered at most once: they are small
//! and coalesced (a task's progress states in one send keep only the last),
//! and what must not be lost is in the tables (a cancel is the task's flag,
//! which heartbeats read too; logs are in the events table). A store that one
//! node has to itself has no node messages, and nothing here runs.

use super::Inner;
use crate::events::Event;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

/// The largest payload sent: PostgreSQL refuses 8,000 bytes and more.
const MAX_PAYLOAD: usize = 7_500;
/// Most events read from the outbox for one round of sends.
const ROUND: usize = 1_024;

#[derive(Debug, Serialize, Deserialize)]
struct Message {
    /// The sending node: a node ignores its own messages.
    from: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    events: Vec<Event>,
    /// Tasks whose cancel was requested (already flagged in the store).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    cancel: Vec<i64>,
    /// Hashes of modules just uploaded: each node compiles them into its
    /// own cache now, so that no run waits for it later.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    modules: Vec<String>,
}

impl Message {
    fn from(inner: &Inner) -> Message {
        Message {
            from: inner.config.node_id.clone(),
            events: Vec::new(),
            cancel: Vec::new(),
            modules: Vec::new(),
        }
    }
}

/// Start relaying, if the store is shared with other nodes.
pub(super) fn start(inner: &Arc<Inner>) {
    let Some(messages) = inner.store.node_messages() else {
        return;
    };
    let (outbox, own_events) = mpsc::unbounded_channel();
    inner.bus.send_own_events_to(outbox);
    tokio::spawn(send_own_events(inner.clone(), own_events));
    tokio::spawn(receive(inner.clone(), messages));
}

/// Tell the other nodes that a running task's cancel was requested.
pub(super) async fn send_cancel(inner: &Inner, task_id: i64) {
    let message = Message {
        cancel: vec![task_id],
        ..Message::from(inner)
    };
    send(inner, &message).await;
}

/// Tell the other nodes that a module was uploaded here.
pub(super) async fn send_module(inner: &Inner, hash: &str) {
    let message = Message {
        modules: vec![hash.to_string()],
        ..Message::from(inner)
    };
    send(inner, &message).await;
}

/// How long a round of events gathers what follows its first event before
/// it is sent. Without it a busy node sent a message per handful of events,
/// each a transaction on the database that wakes every node's listener: a
/// few thousand a second, for what a few hundred full messages carry. An
/// idle node gathers too: a short task's events (created, running, ended)
/// come within a few milliseconds, and sent one by one, their statements
/// and the listeners' wake-ups competed with the task's own statements for
/// the cores.
const PACE: Duration = Duration::from_millis(3);

async fn send_own_events(inner: Arc<Inner>, mut own_events: mpsc::UnboundedReceiver<Event>) {
    let mut round = Vec::with_capacity(ROUND);
    while own_events.recv_many(&mut round, ROUND).await > 0 {
        let pace_ends = Instant::now() + PACE;
        while round.len() < ROUND {
            let room = ROUND - round.len();
            tokio::select! {
                gathered = own_events.recv_many(&mut round, room) => {
                    if gathered == 0 {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(pace_ends) => break,
            }
        }
        let events = coalesce(std::mem::take(&mut round));
        let payloads = event_payloads(&inner.config.node_id, events);
        if let Err(error) = inner.store.notify_nodes(&payloads).await {
            tracing::warn!("telling the other nodes failed: {error:#}");
        }
    }
}

/// Keep each task's last state and each step's last state of the round
/// (where the last one of each stands), and every log line and deletion.
fn coalesce(events: Vec<Event>) -> Vec<Event> {
    let mut last: HashMap<(u8, i64, i64), usize> = HashMap::new();
    for (index, event) in events.iter().enumerate() {
        match event {
            Event::Task(state) => {
                last.insert((0, state.task_id, 0), index);
            }
            Event::Step(state) => {
                last.insert((1, state.task_id, state.step_id), index);
            }
            Event::Log(_) | Event::Deleted { .. } => {}
        }
    }
    events
        .into_iter()
        .enumerate()
        .filter(|(index, event)| match event {
            Event::Task(state) => last.get(&(0, state.task_id, 0)) == Some(index),
            Event::Step(state) => last.get(&(1, state.task_id, state.step_id)) == Some(index),
            Event::Log(_) | Event::Deleted { .. } => true,
        })
        .map(|(_, event)| event)
        .collect()
}

/// A round's events as the payloads of [`Message`]s from `node_id`, each
/// under [`MAX_PAYLOAD`]: every event is written as JSON once, and the
/// messages are put together from those texts (a message is its node's
/// name, then its events). An event too large for any payload (a log line
/// of kilobytes) is cut short; one still too large, or that cannot be
/// written, is left out (a malformed text would spoil its whole message).
fn event_payloads(node_id: &str, events: Vec<Event>) -> Vec<String> {
    let head = format!("{},\"events\":[", own_prefix(node_id));
    let fits = |text: &String| head.len() + text.len() + 2 <= MAX_PAYLOAD;
    let mut payloads = Vec::new();
    let mut payload = String::new();
    for mut event in events {
        let Ok(mut text) = serde_json::to_string(&event) else {
            continue;
        };
        if text.len() > MAX_PAYLOAD / 2 {
            shorten(&mut event);
            let Ok(shortened) = serde_json::to_string(&event) else {
                continue;
            };
            text = shortened;
        }
        if !fits(&text) {
            tracing::debug!("an event too large for a node message was left out");
            continue;
        }
        if !payload.is_empty() && payload.len() + 1 + text.len() + 2 > MAX_PAYLOAD {
            payload.push_str("]}");
            payloads.push(std::mem::take(&mut payload));
        }
        if payload.is_empty() {
            payload.push_str(&head);
        } else {
            payload.push(',');
        }
        payload.push_str(&text);
    }
    if !payload.is_empty() {
        payload.push_str("]}");
        payloads.push(payload);
    }
    payloads
}

/// Cut an event's free text to fit a node message (the full text is in the
/// store: the task's row, the run's events).
fn shorten(event: &mut Event) {
    const KEEP: usize = 1_000;
    let cut = |text: &mut String| {
        if text.len() > KEEP {
            let mut end = KEEP;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push('…');
        }
    };
    match event {
        Event::Task(state) => {
            state.name.truncate(state.name.len().min(200));
            if let Some(message) = &mut state.message {
                cut(message);
            }
        }
        Event::Step(state) => {
            for text in [&mut state.message, &mut state.error].into_iter().flatten() {
                cut(text);
            }
        }
        Event::Log(line) => cut(&mut line.message),
        Event::Deleted { .. } => {}
    }
}

async fn send(inner: &Inner, message: &Message) {
    let payload = match serde_json::to_string(message) {
        Ok(payload) => payload,
        Err(error) => {
            tracing::warn!("a node message could not be written: {error}");
            return;
        }
    };
    if let Err(error) = inner.store.notify_nodes(&[payload]).await {
        tracing::warn!("telling the other nodes failed: {error:#}");
    }
}

async fn receive(inner: Arc<Inner>, mut messages: broadcast::Receiver<Arc<str>>) {
    let own_prefix = own_prefix(&inner.config.node_id);
    loop {
        let payload = match messages.recv().await {
            Ok(payload) => payload,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!("{missed} node message(s) were missed: this node is behind");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        // Every node hears its own messages too: they begin with its name
        // (`from` is the first field written), so they are passed over
        // without being read.
        if payload.starts_with(&own_prefix) {
            continue;
        }
        let message: Message = match serde_json::from_str(&payload) {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!("ignored a node message that is not Stepwise's: {error}");
                continue;
            }
        };
        if message.from == inner.config.node_id {
            continue;
        }
        for task_id in message.cancel {
            // The flag is in the store; a note for a run not here is
            // checked against it by the executor that would register.
            inner.running.cancel(task_id);
        }
        for event in message.events {
            inner.bus.publish_remote(event);
        }
        for hash in message.modules {
            tokio::spawn(compile_ahead(inner.clone(), hash));
        }
    }
}

/// How this node's messages begin (see [`Message`]: `from` comes first).
fn own_prefix(node_id: &str) -> String {
    format!("{{\"from\":{}", Value::from(node_id))
}

/// Compile a module another node registered into this node's cache, off
/// any run's path (a compile of a big module takes seconds).
async fn compile_ahead(inner: Arc<Inner>, hash: String) {
    let store = inner.store.clone();
    let fetched = hash.clone();
    let compiled = inner
        .runtime
        .module(&hash, || async move {
            store.module_bytes(&fetched).await.ok().flatten()
        })
        .await;
    if let Err(error) = compiled {
        tracing::warn!("compiling module {hash}, registered on another node, failed: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{LogLine, TaskState};
    use chrono::Utc;

    fn task_state(task_id: i64, progress: f64) -> Event {
        Event::Task(TaskState {
            task_id,
            seq: 0,
            name: "t".into(),
            status: "running".into(),
            progress,
            message: None,
            run_id: Some(1),
            current_step: None,
            eta_seconds: None,
            last_result: None,
            next_run_at: None,
            updated_at: Utc::now(),
        })
    }

    fn log(task_id: i64, message: String) -> Event {
        Event::Log(LogLine {
            task_id,
            seq: 0,
            run_id: 1,
            step_id: 1,
            level: "info".into(),
            message,
            at: Utc::now(),
        })
    }

    #[test]
    fn a_round_keeps_each_tasks_last_state_and_every_log_line() {
        let events = vec![
            task_state(1, 10.0),
            log(1, "a".into()),
            task_state(2, 5.0),
            task_state(1, 20.0),
            log(1, "b".into()),
        ];
        let kept = coalesce(events);
        let progress: Vec<(i64, f64)> = kept
            .iter()
            .filter_map(|e| match e {
                Event::Task(s) => Some((s.task_id, s.progress)),
                _ => None,
            })
            .collect();
        assert_eq!(progress, [(2, 5.0), (1, 20.0)]);
        assert_eq!(kept.len(), 4, "both log lines stay");
    }

    #[test]
    fn a_nodes_own_messages_are_known_by_their_beginning() {
        let message = |from: &str| {
            serde_json::to_string(&Message {
                from: from.into(),
                events: vec![task_state(1, 10.0)],
                cancel: vec![2],
                modules: Vec::new(),
            })
            .expect("json")
        };
        let prefix = own_prefix("node \"a\"");
        assert!(message("node \"a\"").starts_with(&prefix));
        assert!(!message("node \"a\"-2").starts_with(&prefix));
        assert!(!message("node b").starts_with(&prefix));
    }

    #[test]
    fn every_message_fits_a_notify_payload_and_reads_back_as_sent() {
        let node = "node-with-a-long-name-\"0123456789\"";
        let mut events: Vec<Event> = (0..500).map(|i| task_state(i, 50.0)).collect();
        events.push(log(1, "x".repeat(20_000)));
        let payloads = event_payloads(node, events);
        assert!(payloads.len() > 1);
        let mut read: Vec<Event> = Vec::new();
        for payload in payloads {
            assert!(payload.len() <= MAX_PAYLOAD, "{} bytes", payload.len());
            assert!(payload.starts_with(&own_prefix(node)));
            let message: Message = serde_json::from_str(&payload).expect("a message");
            assert_eq!(message.from, node);
            read.extend(message.events);
        }
        assert_eq!(read.len(), 501, "nothing dropped");
        let task_ids: Vec<i64> = read.iter().take(500).map(Event::task_id).collect();
        assert_eq!(task_ids, (0..500).collect::<Vec<_>>(), "in order");
        let Some(Event::Log(line)) = read.last() else {
            panic!("the log line comes last");
        };
        assert!(line.message.len() < 2_000, "cut short");
    }
}
