//! Events as subscribers receive them: each published event is serialised
//! once, however many subscribers it goes to, and a flush of the feed is one
//! batch that every subscriber of a class writes as one frame,
//! `{"type":"events","events":[…]}`. With 1,000 subscribers, serialising per
//! subscriber and one socket write per event were most of the server's time.

use super::Event;
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// An event as published: its place in the bus's order and its JSON.
#[derive(Debug)]
pub struct Published {
    /// Position in the bus's publish order (1, 2, …), across all tasks.
    pub index: u64,
    pub event: Event,
    /// When it was published (the pacer's clock).
    pub at: Instant,
    json: OnceLock<Bytes>,
}

impl Published {
    pub fn new(index: u64, event: Event) -> Self {
        Published {
            index,
            event,
            at: Instant::now(),
            json: OnceLock::new(),
        }
    }

    /// The event's JSON, made on first use (an event that is coalesced away
    /// before any flush is never serialised).
    pub fn json(&self) -> &Bytes {
        self.json
            .get_or_init(|| Bytes::from(serde_json::to_vec(&self.event).expect("events serialise")))
    }
}

/// What one flush of the feed sends to every subscriber of one class.
#[derive(Debug)]
pub struct Batch {
    /// In publish order, so each task's `seq` increases along it.
    pub events: Vec<Arc<Published>>,
    /// All of `events` as one frame, for subscribers that take them all.
    pub frame: Bytes,
    /// Every event published before this index has been sent in this batch or
    /// an earlier one (or was coalesced away): a subscriber whose snapshot was
    /// taken before it has nothing older left to skip.
    pub settled: u64,
}

impl Batch {
    pub fn new(events: Vec<Arc<Published>>, settled: u64) -> Self {
        let frame = frame(events.iter().map(|e| &**e));
        Batch {
            events,
            frame,
            settled,
        }
    }
}

const HEAD: &[u8] = br#"{"type":"events","events":["#;
const TAIL: &[u8] = b"]}";

/// `{"type":"events","events":[…]}` of already serialised events.
pub fn frame<'a>(events: impl Iterator<Item = &'a Published>) -> Bytes {
    let mut out = BytesMut::with_capacity(1024);
    out.put_slice(HEAD);
    for (i, event) in events.enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(event.json());
    }
    out.put_slice(TAIL);
    out.freeze()
}

/// One frame of all the events of several batches, copied from their frames
/// as they are: for a subscriber a few flushes behind, cheaper than
/// coalescing, which saves little when progress is paced.
pub fn join(batches: &[Arc<Batch>]) -> Bytes {
    let size = batches.iter().map(|b| b.frame.len()).sum();
    let mut out = BytesMut::with_capacity(size);
    out.put_slice(HEAD);
    for (i, batch) in batches.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(&batch.frame[HEAD.len()..batch.frame.len() - TAIL.len()]);
    }
    out.put_slice(TAIL);
    out.freeze()
}

/// Which events a later one of the same key replaces: a task's state, a
/// step's state. Logs and deletions are never replaced.
pub fn key(event: &Event) -> Option<(i64, i64)> {
    match event {
        Event::Task(t) => Some((t.task_id, i64::MIN)),
        Event::Step(s) => Some((s.task_id, s.step_id)),
        Event::Log(_) | Event::Deleted { .. } => None,
    }
}

/// Keep, of a run of events in publish order, the last task state per task
/// and the last step state per step (logs and deletions all), in their order
/// — which is each task's seq order, so seqs still only go up.
pub fn coalesce(events: Vec<Arc<Published>>) -> Vec<Arc<Published>> {
    if events.len() < 2 {
        return events;
    }
    let mut last = HashMap::new();
    for (position, published) in events.iter().enumerate() {
        if let Some(key) = key(&published.event) {
            last.insert(key, position);
        }
    }
    events
        .into_iter()
        .enumerate()
        .filter(|(position, published)| key(&published.event).is_none_or(|k| last[&k] == *position))
        .map(|(_, published)| published)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deleted(index: u64, task_id: i64) -> Arc<Published> {
        Arc::new(Published::new(
            index,
            Event::Deleted {
                task_id,
                seq: index,
            },
        ))
    }

    #[test]
    fn a_frame_is_the_events_json_in_order() {
        let events = [deleted(1, 7), deleted(2, 8)];
        let frame = frame(events.iter().map(|e| &**e));
        let value: serde_json::Value = serde_json::from_slice(&frame).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"type": "events", "events": [
                {"type": "deleted", "task_id": 7, "seq": 1},
                {"type": "deleted", "task_id": 8, "seq": 2},
            ]})
        );
        let empty = super::frame(std::iter::empty());
        assert_eq!(&empty[..], br#"{"type":"events","events":[]}"#);
    }

    #[test]
    fn batches_join_into_one_frame() {
        let batches = [
            Arc::new(Batch::new(vec![deleted(1, 7), deleted(2, 8)], 3)),
            Arc::new(Batch::new(vec![deleted(3, 9)], 4)),
        ];
        let joined: serde_json::Value = serde_json::from_slice(&join(&batches)).unwrap();
        let all = [deleted(1, 7), deleted(2, 8), deleted(3, 9)];
        let expected: serde_json::Value =
            serde_json::from_slice(&frame(all.iter().map(|e| &**e))).unwrap();
        assert_eq!(joined, expected);
    }
}
