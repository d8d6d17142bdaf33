//! WebSocket fan-out benchmark: `cargo bench -p stepwise --bench websocket`.
//!
//! 1,000 subscribers (`"tasks": "all"`, no logs) on loopback watch 100 tasks
//! that each report progress 50 times a second for 10 s (`fixture/progress`,
//! 500 updates, 20 ms apart). Measured: the delay from the guest's progress
//! call to each subscriber's receipt, the server's CPU time and peak RSS.
//!
//! The delay is `receipt − updated_at` of each `task` event with status
//! `running` that a progress call published (those carry `current_step`):
//! the engine sets `updated_at` (`Utc::now()`) when it publishes the
//! progress, inside the guest's `progress` host call, so it is the call's time
//! to within microseconds; both clocks are this machine's wall clock. The
//! state published when a run starts is a status change, not a progress
//! call: its delay is reported on a row of its own (the 100 tasks start at
//! one instant, so those states reach every subscriber as one burst). The
//! server sends a running task's progress about every 250 ms (its latest
//! state, see `server/src/events/pacer.rs`), so a subscriber receives some
//! of the 50 reports a second per task, and the delay is that of the states
//! it receives; the table says how many that was.
//!
//! The server is the `stepwise` binary cargo built for this bench (same
//! profile), run as a child process, so its CPU time and RSS are its own and
//! not the 1,000 clients'. CPU time is read from `/proc/PID/stat` around the
//! run; peak RSS is `VmHWM`, reset (`clear_refs`) when the run starts.
//!
//! The subscribers run in this process on a runtime of their own (two
//! threads); on a small machine they share its cores with the server, so the
//! delay includes their parsing and waiting for a core. The whole run is
//! bounded: about 20 s when the server keeps up, at most about 95 s.
//!
//! Smaller runs for a quick check: `STEPWISE_BENCH_CLIENTS`, `_TASKS`,
//! `_UPDATES` and `_SLEEP_MS` override 1000, 100, 500 and 20.

mod bench_server;
mod yardstick;

use bench_server::{Server, setting};

use chrono::{DateTime, Utc};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The tasks are due this long after they are created: time to subscribe.
const START_LEAD: chrono::TimeDelta = chrono::TimeDelta::seconds(5);
/// The run stops here even if tasks are not done (the bench is bounded).
const RUN_LIMIT: Duration = Duration::from_secs(75);
/// Seconds of the run whose delays are also reported apart (the last holds
/// the rest of the run).
const BY_SECOND: usize = 12;
/// After the last task ends, how long subscribers get to read its final event.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// Connections opened at the same time while subscribing.
const CONNECT_CONCURRENCY: usize = 64;
/// Read buffer of each subscriber's socket. The WebSocket library zero-fills
/// it before every read attempt: at the default 128 KiB, 1,000 subscribers
/// spent more of the shared cores clearing memory than the server spent
/// serving them (and at 16 KiB it was still 2 %). Frames are one or two
/// KiB; a larger one takes a few reads.
const CLIENT_READ_BUFFER: usize = 4 << 10;
/// `/proc/PID/stat` counts CPU time in USER_HZ ticks, 100 per second on Linux.
const USER_HZ: f64 = 100.0;

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn create_task(&self, updates: usize, sleep_ms: usize, start_at: DateTime<Utc>) -> i64 {
        let body = json!({
            "name": "websocket bench",
            "start_at": start_at,
            "steps": [{
                "controller": "fixture/progress",
                "settings": {"updates": updates, "sleep_ms": sleep_ms},
                "max_execution_time": 120,
            }],
        });
        let response = self
            .http
            .post(format!("{}/api/v1/tasks", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("create task");
        let task: serde_json::Value = response.json().await.expect("task JSON");
        task["id"].as_i64().expect("task id")
    }

    /// Tasks that ended (completed or failed), from `GET /stats`; None if
    /// the server did not answer in time.
    async fn ended_tasks(&self) -> Option<usize> {
        let response = self
            .http
            .get(format!("{}/api/v1/stats", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .ok()?;
        let stats: serde_json::Value = response.json().await.ok()?;
        let count = |status: &str| stats["tasks"][status].as_u64().unwrap_or(0) as usize;
        Some(count("completed") + count("failed"))
    }

    async fn subscriber(&self) -> Socket {
        let url = format!("{}/api/v1/events", self.base.replacen("http", "ws", 1));
        let mut request = url.into_client_request().expect("request");
        let auth = format!("Bearer {}", self.token).parse().expect("header");
        request.headers_mut().insert("authorization", auth);
        let config = WebSocketConfig::default().read_buffer_size(CLIENT_READ_BUFFER);
        let (mut socket, _) =
            tokio_tungstenite::connect_async_with_config(request, Some(config), false)
                .await
                .expect("connect");
        let subscribe = json!({"type": "subscribe", "tasks": "all", "logs": false});
        socket
            .send(Message::text(subscribe.to_string()))
            .await
            .expect("subscribe");
        match socket.next().await {
            Some(Ok(Message::Text(text))) if text.contains("\"snapshot\"") => socket,
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }

    /// CPU time (user + system) so far, in seconds.
    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&self.pid().to_string())
    }

    /// Reset the peak resident set size (Linux ≥ 4.0), so VmHWM covers the run.
    fn reset_peak_rss(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5");
    }

    fn peak_rss_mib(&self) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        kib / 1024.0
    }
}

/// CPU time (user + system) of a process (`self` for this one), in seconds.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split(' ')
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / USER_HZ
}

/// What all subscribers share: the delays, and how many have seen every task
/// end; and what `GET /stats` said.
struct Shared {
    /// Delays of the states published by progress calls.
    delays: Histogram,
    /// The same, by the second of the run the state was published in: a
    /// tail made in one part of the run (the start's burst) shows apart.
    delays_by_second: Vec<Histogram>,
    /// When the tasks were due (all at once).
    start_at: DateTime<Utc>,
    /// Delays of the `running` states published when a run starts or its
    /// step ends (all 100 tasks start at one instant: one burst to everyone).
    starts: Histogram,
    /// Per frame, the delay of its freshest progress state: about the time
    /// from the flush to the receipt (the fan-out's share of the delay).
    frame_delays: Histogram,
    /// Per frame, the delay of its oldest progress state.
    frame_oldest: Histogram,
    done: AtomicU64,
    tasks: usize,
    ended: AtomicU64,
    slowest_stats: AtomicU64,
}

/// Ask `GET /stats` every half second how many tasks ended, and keep the
/// slowest answer's time (microseconds).
async fn poll_stats(server: Arc<Server>, shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let asked = Instant::now();
        let ended = server.ended_tasks().await;
        let micros = asked.elapsed().as_micros() as u64;
        shared.slowest_stats.fetch_max(micros, Ordering::Relaxed);
        if let Some(ended) = ended {
            shared.ended.fetch_max(ended as u64, Ordering::Relaxed);
        }
    }
}

/// Delays in 50 µs buckets up to 5 s (the last bucket holds everything above).
struct Histogram {
    buckets: Vec<AtomicU64>,
}

const BUCKET_MICROS: u64 = 50;

impl Histogram {
    fn new() -> Self {
        Histogram {
            buckets: (0..100_001).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn record(&self, micros: u64) {
        let index = ((micros / BUCKET_MICROS) as usize).min(self.buckets.len() - 1);
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Upper edge of the bucket holding quantile `q`, in milliseconds.
    fn quantile_ms(&self, q: f64) -> f64 {
        let total = self.count();
        let rank = ((total as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= rank {
                return ((i as u64 + 1) * BUCKET_MICROS) as f64 / 1000.0;
            }
        }
        f64::NAN
    }
}

/// What one subscriber saw.
#[derive(Default)]
struct Seen {
    /// WebSocket messages (event frames, snapshots) and events in them.
    messages: u64,
    events: u64,
    progress_events: u64,
    catch_up_snapshots: u64,
    completed: HashSet<i64, IdHash>,
    /// Highest seq seen per task, and how often an event came with a lower one.
    seqs: HashMap<i64, u64, IdHash>,
    seq_regressions: u64,
    closed_by_server: bool,
    error: Option<String>,
}

/// Hashing for task ids: the subscribers look one up per event, and the
/// default SipHash was a tenth of their time, which the server's cores pay
/// for on this machine.
type IdHash = std::hash::BuildHasherDefault<IdHasher>;

#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_i64(&mut self, id: i64) {
        self.0 = (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A message: a snapshot, an error, or a frame of events.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: Option<String>,
    #[serde(default, borrow)]
    tasks: Vec<SnapshotTask<'a>>,
    #[serde(default, borrow)]
    events: Vec<IncomingEvent<'a>>,
}

#[derive(Deserialize)]
struct IncomingEvent<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    task_id: i64,
    seq: u64,
    status: Option<&'a str>,
    /// Set on the states a guest's progress call publishes (the run's start
    /// and a step's end publish the task's state without it).
    current_step: Option<i64>,
    updated_at: Option<&'a str>,
}

#[derive(Deserialize)]
struct SnapshotTask<'a> {
    task_id: i64,
    seq: u64,
    status: &'a str,
}

/// Open `clients` subscribed sockets and start watching each.
async fn subscribe_all(
    server: Arc<Server>,
    clients: usize,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> Vec<tokio::task::JoinHandle<Seen>> {
    let sockets: Vec<Socket> = futures::stream::iter(0..clients)
        .map(|_| {
            let server = server.clone();
            async move { server.subscriber().await }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    sockets
        .into_iter()
        .map(|socket| tokio::spawn(watch(socket, shared.clone(), stop.clone())))
        .collect()
}

/// Read events until `stop`, recording each progress event's delay.
async fn watch(mut socket: Socket, shared: Arc<Shared>, stop: CancellationToken) -> Seen {
    let mut seen = Seen::default();
    let mut done = false;
    loop {
        if !done && seen.completed.len() >= shared.tasks {
            done = true;
            shared.done.fetch_add(1, Ordering::Relaxed);
        }
        let message = tokio::select! {
            _ = stop.cancelled() => return seen,
            message = socket.next() => message,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                seen.closed_by_server = true;
                return seen;
            }
            Some(Ok(_)) => continue,
        };
        let received = Utc::now();
        seen.messages += 1;
        let Ok(message) = serde_json::from_str::<Incoming>(&text) else {
            continue;
        };
        match message.kind {
            "events" => {
                let (mut freshest, mut oldest) = (None, None);
                for event in &message.events {
                    if let Some(delay) = seen.event(event, received, &shared) {
                        freshest = Some(freshest.map_or(delay, |f: u64| f.min(delay)));
                        oldest = Some(oldest.map_or(delay, |f: u64| f.max(delay)));
                    }
                }
                if let (Some(freshest), Some(oldest)) = (freshest, oldest) {
                    shared.frame_delays.record(freshest);
                    shared.frame_oldest.record(oldest);
                }
            }
            "snapshot" => {
                seen.catch_up_snapshots += 1;
                for task in &message.tasks {
                    seen.seqs.insert(task.task_id, task.seq);
                    if task.status == "completed" {
                        seen.completed.insert(task.task_id);
                    }
                }
            }
            "error" => seen.error = message.message,
            _ => {}
        }
    }
}

impl Seen {
    /// Check one event's seq; record (and return) a progress event's delay.
    fn event(
        &mut self,
        event: &IncomingEvent,
        received: DateTime<Utc>,
        shared: &Shared,
    ) -> Option<u64> {
        self.events += 1;
        let last = self.seqs.entry(event.task_id).or_default();
        if event.seq <= *last {
            self.seq_regressions += 1;
        }
        *last = event.seq;
        match (event.kind, event.status) {
            ("task", Some("running")) => {
                let at = event
                    .updated_at
                    .and_then(|at| DateTime::parse_from_rfc3339(at).ok())?;
                let micros = received
                    .signed_duration_since(at)
                    .num_microseconds()
                    .unwrap_or(0)
                    .max(0) as u64;
                if event.current_step.is_none() {
                    // A run starting or its step ending: not a progress call.
                    shared.starts.record(micros);
                    return None;
                }
                shared.delays.record(micros);
                let second = at.signed_duration_since(shared.start_at).num_seconds();
                let last = shared.delays_by_second.len() - 1;
                shared.delays_by_second[(second.max(0) as usize).min(last)].record(micros);
                self.progress_events += 1;
                return Some(micros);
            }
            ("task", Some("completed")) => {
                self.completed.insert(event.task_id);
            }
            _ => {}
        }
        None
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let clients = setting("CLIENTS", 1000);
    let tasks = setting("TASKS", 100);
    let updates = setting("UPDATES", 500);
    let sleep_ms = setting("SLEEP_MS", 20);
    // Two sockets per subscriber on this machine (ours and the server's, which
    // inherits the limit), plus files, the database and the listener.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("could not raise the open-files limit: {e}");
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    // Before anything runs: it needs the machine to itself.
    let probe = tempfile::tempdir().expect("temp dir");
    let machine = yardstick::Yardstick::measure(probe.path());

    let server = Arc::new(Server::start(tasks + 8, Duration::from_secs(30)));
    server.upload("fixture/progress").await;

    // The tasks are created first, all due at one instant after the
    // subscribers are in: no API call competes with the fan-out during the run.
    let start_at = Utc::now() + START_LEAD;
    let ids: Vec<i64> = futures::stream::iter(0..tasks)
        .map(|_| {
            let server = server.clone();
            async move { server.create_task(updates, sleep_ms, start_at).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;

    // The subscribers run on their own runtime, so that reading 1,000 sockets
    // never delays this (the control) side's requests and clock.
    let subscribers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("subscriber runtime");
    let shared = Arc::new(Shared {
        delays: Histogram::new(),
        delays_by_second: (0..BY_SECOND).map(|_| Histogram::new()).collect(),
        start_at,
        starts: Histogram::new(),
        frame_delays: Histogram::new(),
        frame_oldest: Histogram::new(),
        done: AtomicU64::new(0),
        tasks,
        ended: AtomicU64::new(0),
        slowest_stats: AtomicU64::new(0),
    });
    let stop = CancellationToken::new();
    let connecting = Instant::now();
    let watchers = subscribers
        .spawn(subscribe_all(
            server.clone(),
            clients,
            shared.clone(),
            stop.clone(),
        ))
        .await
        .expect("subscribing");
    let connect_time = connecting.elapsed();
    eprintln!(
        "{clients} subscribers in {:.1} s",
        connect_time.as_secs_f64()
    );
    if Utc::now() > start_at {
        eprintln!("warning: the tasks started before every subscriber was in");
    }

    let wait = (start_at - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;
    server.reset_peak_rss();
    let cpu_before = server.cpu_seconds();
    let own_cpu_before = cpu_seconds("self");
    let started = Instant::now();
    eprintln!("{tasks} tasks due; running");
    // The run is over when the server says every task ended, or when every
    // subscriber still connected has seen it (whichever is first: under load
    // `GET /stats` itself can take seconds, which is measured too).
    let polling = tokio::spawn(poll_stats(server.clone(), shared.clone()));
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let closed = watchers.iter().filter(|w| w.is_finished()).count();
        let seen_by_all = shared.done.load(Ordering::Relaxed) as usize + closed >= clients;
        if shared.ended.load(Ordering::Relaxed) as usize >= tasks
            || seen_by_all
            || started.elapsed() >= RUN_LIMIT
        {
            break;
        }
    }
    let run_time = started.elapsed();
    polling.abort();
    // A subscriber that saw every task end is as good a witness as `/stats`.
    let ended = if shared.done.load(Ordering::Relaxed) > 0 {
        tasks
    } else {
        shared.ended.load(Ordering::Relaxed) as usize
    };
    let slowest_stats = Duration::from_micros(shared.slowest_stats.load(Ordering::Relaxed));
    let cpu = server.cpu_seconds() - cpu_before;
    let own_cpu = cpu_seconds("self") - own_cpu_before;
    let peak_rss = server.peak_rss_mib();
    eprintln!("run over after {:.1} s; draining", run_time.as_secs_f64());

    // Let subscribers read the final events, then stop them.
    let draining = Instant::now();
    while draining.elapsed() < DRAIN_LIMIT
        && (shared.done.load(Ordering::Relaxed) as usize)
            < clients - watchers.iter().filter(|w| w.is_finished()).count()
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    let mut seen = Vec::new();
    for watcher in watchers {
        seen.push(watcher.await.expect("watcher"));
    }
    subscribers.shutdown_background();
    report(Report {
        cores,
        machine,
        clients,
        tasks,
        updates,
        sleep_ms,
        ids,
        ended,
        connect_time,
        run_time,
        slowest_stats,
        cpu,
        own_cpu,
        peak_rss,
        delays: &shared.delays,
        delays_by_second: &shared.delays_by_second,
        starts: &shared.starts,
        frame_delays: &shared.frame_delays,
        frame_oldest: &shared.frame_oldest,
        seen,
    });
}

struct Report<'a> {
    cores: usize,
    machine: yardstick::Yardstick,
    clients: usize,
    tasks: usize,
    updates: usize,
    sleep_ms: usize,
    ids: Vec<i64>,
    ended: usize,
    connect_time: Duration,
    run_time: Duration,
    slowest_stats: Duration,
    cpu: f64,
    /// This process's: the subscribers reading and parsing.
    own_cpu: f64,
    peak_rss: f64,
    delays: &'a Histogram,
    delays_by_second: &'a [Histogram],
    starts: &'a Histogram,
    frame_delays: &'a Histogram,
    frame_oldest: &'a Histogram,
    seen: Vec<Seen>,
}

fn report(r: Report) {
    let Report {
        cores,
        clients,
        tasks,
        updates,
        sleep_ms,
        ..
    } = r;
    let seen = &r.seen;
    let received: Vec<u64> = seen.iter().map(|s| s.progress_events).collect();
    let mean_received = received.iter().sum::<u64>() as f64 / clients.max(1) as f64;
    let min_received = received.iter().min().copied().unwrap_or(0);
    let closed = seen.iter().filter(|s| s.closed_by_server).count();
    let complete_view = seen
        .iter()
        .filter(|s| r.ids.iter().all(|id| s.completed.contains(id)))
        .count();
    let snapshots: u64 = seen.iter().map(|s| s.catch_up_snapshots).sum();
    let regressions: u64 = seen.iter().map(|s| s.seq_regressions).sum();
    let messages: u64 = seen.iter().map(|s| s.messages).sum();
    let events: u64 = seen.iter().map(|s| s.events).sum();
    let first_error = seen.iter().find_map(|s| s.error.clone());
    let p99 = r.delays.quantile_ms(0.99);

    println!(
        "# Stepwise WebSocket benchmark ({cores} cores, loopback, server in its own process)\n"
    );
    println!("{}\n", r.machine);
    println!("| measure | value |\n|---|---|");
    println!(
        "| workload | {clients} subscribers (all tasks, no logs); {tasks} tasks × {updates} progress reports, {sleep_ms} ms apart |"
    );
    println!(
        "| subscribing ({clients} sockets) | {:.2} s |",
        r.connect_time.as_secs_f64()
    );
    let unfinished = if r.ended < tasks {
        format!(" (only {} of {tasks} tasks ended in time)", r.ended)
    } else {
        String::new()
    };
    println!(
        "| run (tasks due → all ended; {:.0} s without overhead) | {:.1} s{unfinished} |",
        (updates * sleep_ms) as f64 / 1000.0,
        r.run_time.as_secs_f64()
    );
    println!(
        "| `running` task events received per subscriber | mean {mean_received:.0}, min {min_received}, for {} progress reports ({:.0} %) |",
        tasks * updates,
        100.0 * mean_received / (tasks * updates).max(1) as f64
    );
    println!(
        "| messages (frames) and events received, all subscribers | {messages}, {events} ({:.1} events a frame) |",
        events as f64 / messages.max(1) as f64
    );
    println!(
        "| slowest `GET /stats` during the run (one every 0.5 s) | {:.0} ms |",
        r.slowest_stats.as_secs_f64() * 1000.0
    );
    println!("| catch-up snapshots (after the first) | {snapshots} |");
    println!("| events whose seq was not above the last for their task | {regressions} |");
    println!(
        "| subscribers closed by the server | {closed}{} |",
        first_error
            .map(|e| format!(" (\"{e}\")"))
            .unwrap_or_default()
    );
    println!("| subscribers that saw every task end | {complete_view} of {clients} |");
    println!(
        "| delay, progress call → receipt ({} samples) | p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.0} ms |",
        r.delays.count(),
        r.delays.quantile_ms(0.5),
        r.delays.quantile_ms(0.9),
        p99,
        r.delays.quantile_ms(1.0)
    );
    let by_second: Vec<String> = r
        .delays_by_second
        .iter()
        .enumerate()
        .filter(|(_, h)| h.count() > 0)
        .map(|(second, h)| format!("{second}: {:.1}", h.quantile_ms(0.99)))
        .collect();
    println!(
        "| the same delay's p99 by the second of the run it was published in (ms; the last counts the rest) | {} |",
        by_second.join(" · ")
    );
    println!(
        "| delay of the other `running` states (a run starting, its step ending; all 100 at once; {} samples) | p50 {:.2} ms, p99 {:.2} ms, max {:.0} ms |",
        r.starts.count(),
        r.starts.quantile_ms(0.5),
        r.starts.quantile_ms(0.99),
        r.starts.quantile_ms(1.0)
    );
    println!(
        "| freshest state's delay per frame (≈ flush → receipt) | p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms |",
        r.frame_delays.quantile_ms(0.5),
        r.frame_delays.quantile_ms(0.9),
        r.frame_delays.quantile_ms(0.99)
    );
    println!(
        "| oldest state's delay per frame | p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms |",
        r.frame_oldest.quantile_ms(0.5),
        r.frame_oldest.quantile_ms(0.9),
        r.frame_oldest.quantile_ms(0.99)
    );
    println!(
        "| server CPU time (user + system) | {:.1} s ({:.0} % of one core) |",
        r.cpu,
        100.0 * r.cpu / r.run_time.as_secs_f64()
    );
    println!("| server peak RSS during the run | {:.0} MiB |", r.peak_rss);
    println!(
        "| subscribers' CPU time (this process) | {:.1} s ({:.0} % of one core) |",
        r.own_cpu,
        100.0 * r.own_cpu / r.run_time.as_secs_f64()
    );
    println!(
        "\nGoal: p99 ≤ 20 ms — {}.",
        if p99 <= 20.0 { "met" } else { "not met" }
    );
}
