//! The per-run log cap: a run keeps its first and its last lines, and says how
//! many it dropped in between. The first half of the cap is written as it
//! comes; later lines wait in a ring of the other half's size, and when the
//! run ends the ring is written after one marker line that counts the lines
//! dropped. A step that fails after a flood of output thus keeps what it said
//! last (usually why it failed), not only what it said first.
//!
//! The ring lives in memory: if the node dies mid-run, the tail is lost, and
//! the rescued run's log ends at the head (the run is retried anyway).

use crate::store::EventRecord;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde_json::json;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

/// The lines of one run, counted and capped.
pub(super) struct RunLogs {
    max: u64,
    head: u64,
    seen: AtomicU64,
    tail: Mutex<VecDeque<EventRecord>>,
}

impl RunLogs {
    /// Keep at most `max` lines: the first `ceil(max / 2)` and the last `floor(max / 2)`.
    pub fn new(max: u64) -> Self {
        RunLogs {
            max,
            head: max.div_ceil(2),
            seen: AtomicU64::new(0),
            tail: Mutex::new(VecDeque::new()),
        }
    }

    /// Count a line; a line past the head is taken into the ring (dropping
    /// the ring's oldest when it is full). Returns the line when it is to be
    /// written and published now. The head's lines cost one atomic.
    pub fn admit(&self, line: EventRecord) -> Option<EventRecord> {
        let seen = self.seen.fetch_add(1, Ordering::Relaxed);
        if seen < self.head {
            return Some(line);
        }
        let room = (self.max - self.head) as usize;
        if room > 0 {
            let mut tail = self.tail.lock();
            if tail.len() == room {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        None
    }

    /// Whether this line was the first one past the head (the moment to tell
    /// live watchers that the rest comes at the run's end).
    pub fn head_just_filled(&self) -> bool {
        self.seen.load(Ordering::Relaxed) == self.head + 1
    }

    /// Lines neither in the head nor in the ring.
    pub fn dropped(&self) -> u64 {
        self.seen.load(Ordering::Relaxed).saturating_sub(self.max)
    }

    /// The lines to write at the run's end: the marker (when lines were
    /// dropped), then the ring's lines oldest first. Empty when the run stayed
    /// within its head.
    pub fn finish(&self, task_id: i64, run_id: i64, now: DateTime<Utc>) -> Vec<EventRecord> {
        let tail: Vec<EventRecord> = self.tail.lock().drain(..).collect();
        let dropped = self.dropped();
        let mut lines = Vec::with_capacity(tail.len() + 1);
        if dropped > 0 {
            lines.push(EventRecord {
                task_id,
                run_id: Some(run_id),
                step_id: None,
                kind: "log".into(),
                level: Some("warn".into()),
                message: format!(
                    "{dropped} log lines dropped here: a run keeps its first {} and last {} \
                     lines (max_log_lines_per_run = {})",
                    self.head,
                    self.max - self.head,
                    self.max
                ),
                data: Some(json!({ "dropped": dropped })),
                // Dated like the first line kept after it, so time order matches id order.
                created_at: tail.first().map_or(now, |line| line.created_at),
            });
        }
        lines.extend(tail);
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: u64) -> EventRecord {
        EventRecord {
            task_id: 1,
            run_id: Some(2),
            step_id: Some(3),
            kind: "log".into(),
            level: Some("info".into()),
            message: format!("line {n}"),
            data: None,
            created_at: Utc::now(),
        }
    }

    fn run(max: u64, lines: u64) -> (Vec<String>, Vec<EventRecord>) {
        let logs = RunLogs::new(max);
        let now_written = (1..=lines)
            .filter_map(|n| logs.admit(line(n)))
            .map(|l| l.message)
            .collect();
        (now_written, logs.finish(1, 2, Utc::now()))
    }

    #[test]
    fn a_flood_keeps_the_first_and_last_lines_and_counts_the_rest() {
        let (head, end) = run(10, 50);
        assert_eq!(
            head,
            (1..=5).map(|n| format!("line {n}")).collect::<Vec<_>>()
        );
        assert_eq!(end.len(), 6, "the marker and the last five");
        assert_eq!(end[0].data, Some(json!({"dropped": 40})));
        assert!(
            end[0].message.starts_with("40 log lines dropped"),
            "{}",
            end[0].message
        );
        let tail: Vec<_> = end[1..].iter().map(|l| l.message.clone()).collect();
        assert_eq!(
            tail,
            (46..=50).map(|n| format!("line {n}")).collect::<Vec<_>>()
        );
    }

    #[test]
    fn fifty_thousand_lines_keep_the_first_and_last_five_thousand() {
        let (head, end) = run(10_000, 50_000);
        assert_eq!(head.len(), 5_000);
        assert_eq!(head[4_999], "line 5000");
        assert_eq!(end[0].data, Some(json!({"dropped": 40_000})));
        assert_eq!(end.len(), 5_001);
        assert_eq!(end[1].message, "line 45001");
        assert_eq!(end[5_000].message, "line 50000");
    }

    #[test]
    fn a_run_within_the_cap_drops_nothing() {
        let (head, end) = run(10, 8);
        assert_eq!(head.len(), 5);
        assert_eq!(end.len(), 3, "lines 6-8, no marker");
        assert!(end.iter().all(|l| l.data.is_none()));
    }

    #[test]
    fn a_cap_of_zero_keeps_only_the_marker() {
        let (head, end) = run(0, 3);
        assert!(head.is_empty());
        assert_eq!(end.len(), 1);
        assert_eq!(end[0].data, Some(json!({"dropped": 3})));
    }
}
