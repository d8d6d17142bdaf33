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

mod yardstick;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How often the client asks for the task's status.
const POLL: Duration = Duration::from_millis(2);
/// A sample that takes longer is a failure of the bench, not a figure.
const SAMPLE_LIMIT: Duration = Duration::from_secs(30);

fn setting(name: &str, default: usize) -> usize {
    std::env::var(format!("STEPWISE_BENCH_{name}"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `stepwise` server as a child process on a random loopback port.
struct Server {
    child: Child,
    base: String,
    token: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(workers: usize) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_stepwise"))
            .args(["serve", "--listen", "127.0.0.1:0", "--no-examples"])
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--workers")
            .arg(workers.to_string())
            .env("STEPWISE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn stepwise");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let base = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("stepwise listening on ") {
                        break url.trim_end_matches('/').to_string();
                    }
                }
                _ => panic!("the server exited before listening"),
            }
        };
        // Keep reading so the server never blocks on a full stderr pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let token = std::fs::read_to_string(dir.path().join("admin-token"))
            .expect("admin token")
            .trim()
            .to_string();
        Server {
            child,
            base,
            token,
            http: reqwest::Client::builder()
                .timeout(SAMPLE_LIMIT)
                .build()
                .expect("HTTP client"),
            _dir: dir,
        }
    }

    async fn request(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.expect("JSON body")
    }

    async fn upload(&self, path: &str) {
        let file = Path::new(env!("STEPWISE_BUILT_MODULES_DIR"))
            .join(format!("{}.wasm", path.replace('/', "__")));
        let response = self
            .http
            .put(format!("{}/api/v1/modules/{path}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/wasm")
            .body(std::fs::read(file).expect("module file"))
            .send()
            .await
            .expect("upload");
        assert!(response.status().is_success(), "upload {path}");
    }

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

    async fn status(&self, id: i64) -> String {
        let task = self
            .request(reqwest::Method::GET, &format!("/tasks/{id}"), None)
            .await;
        task["status"].as_str().expect("status").to_string()
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

    async fn wait_for_status(&self, id: i64, status: &str) {
        let started = Instant::now();
        while self.status(id).await != status {
            assert!(
                started.elapsed() < SAMPLE_LIMIT,
                "task {id} never became {status}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Cancel a running task; the time until `GET` says `cancelled`, in ms.
    async fn cancel(&self, id: i64) -> f64 {
        let started = Instant::now();
        self.request(reqwest::Method::POST, &format!("/tasks/{id}/cancel"), None)
            .await;
        self.wait_for_status(id, "cancelled").await;
        started.elapsed().as_secs_f64() * 1e3
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn row(what: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    let p = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    println!(
        "| {what} | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
        ms.len(),
        p(0.5),
        p(0.99),
        ms[ms.len() - 1]
    );
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

    let server = Server::start(runaways);
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
        server.wait_for_status(id, "running").await;
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
