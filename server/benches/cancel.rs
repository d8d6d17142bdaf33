//! Cancel latency benchmark: `cargo bench -p stepwise --bench cancel`.
//!
//! The server (the `stepwise` binary cargo built for this bench, as a child
//! process) runs 200 runaway steps (`fixture/loop`, one worker each), all of
//! them burning CPU on this machine's cores. Measured: from sending
//! `POST /tasks/{id}/cancel` to the first `GET /tasks/{id}` that answers
//! `cancelled` (polled every 2 ms), what a user of the API sees. Two series:
//!
//! - a step that has been running a while (its executor long registered);
//! - a task cancelled the moment `GET` shows it `running`: the claim is
//!   committed, and its executor may not have started yet.
//!
//! After each sample a new runaway task replaces the cancelled one, so the
//! load stays at 200 running steps. The client runs on one thread; it shares
//! the machine's cores with the server.
//!
//! Smaller runs for a quick check: `STEPWISE_BENCH_RUNAWAYS` and
//! `STEPWISE_BENCH_SAMPLES` override 200 and 100.

mod bench_server;
mod yardstick;

use bench_server::{Server, row, setting};

use serde_json::json;
use std::time::{Duration, Instant};

/// A sample that takes longer is a failure of the bench, not a figure.
const SAMPLE_LIMIT: Duration = Duration::from_secs(30);

impl Server {
    async fn create_runaway(&self) -> i64 {
        let body = json!({
            "name": "runaway",
            "steps": [{"controller": "fixture/loop", "settings": {}, "max_execution_time": 3600}],
        });
        let task = self
            .request(reqwest::Method::POST, "/tasks", Some(body))
            .await;
        task["id"].as_i64().expect("task id")
    }

    async fn running(&self) -> i64 {
        let stats = self.request(reqwest::Method::GET, "/stats", None).await;
        stats["tasks"]["running"].as_i64().expect("running count")
    }

    async fn wait_until_running(&self, count: i64) {
        let started = Instant::now();
        while self.running().await < count {
            assert!(started.elapsed() < SAMPLE_LIMIT, "{count} never ran");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Cancel a running task; the time until `GET` says `cancelled`, in ms.
    async fn cancel(&self, id: i64) -> f64 {
        let started = Instant::now();
        self.request(reqwest::Method::POST, &format!("/tasks/{id}/cancel"), None)
            .await;
        self.wait_for_status(id, "cancelled", SAMPLE_LIMIT).await;
        started.elapsed().as_secs_f64() * 1e3
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let runaways = setting("RUNAWAYS", 200);
    let samples = setting("SAMPLES", 100);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!("# Stepwise cancel benchmark ({cores} cores)\n");
    let probe = tempfile::tempdir().unwrap();
    println!("{}\n", yardstick::Yardstick::measure(probe.path()));

    let server = Server::start(runaways, SAMPLE_LIMIT);
    server.upload("fixture/loop").await;
    let mut running = Vec::new();
    for _ in 0..runaways {
        running.push(server.create_runaway().await);
    }
    server.wait_until_running(runaways as i64).await;
    eprintln!("{runaways} runaway steps running; {samples} samples per series");

    let mut long_running = Vec::new();
    let mut at_claim = Vec::new();
    for sample in 0..samples {
        // A step that has run for a while: the oldest.
        let id = running.remove(0);
        long_running.push(server.cancel(id).await);
        // Its replacement, cancelled the moment it shows `running`.
        let id = server.create_runaway().await;
        server.wait_for_status(id, "running", SAMPLE_LIMIT).await;
        at_claim.push(server.cancel(id).await);
        // And one more replacement that keeps running: back to full load.
        running.push(server.create_runaway().await);
        server.wait_until_running(runaways as i64).await;
        // Vary the phase against the epoch ticks and heartbeats.
        tokio::time::sleep(Duration::from_millis(20 + (sample as u64 * 7) % 50)).await;
    }

    println!(
        "| cancel → `GET` shows `cancelled`, {runaways} runaway steps running | samples | p50 | p99 | max |\n|---|---|---|---|---|"
    );
    row("a step running for a while", long_running);
    row("a task cancelled as soon as it shows `running`", at_claim);
}
