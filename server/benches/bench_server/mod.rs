//! The `stepwise` server as a child process on a random loopback port, for
//! the benches that measure it as a client would (`cancel`, `cluster`,
//! `websocket`): requests every bench makes are here, and a bench adds its
//! own in an `impl Server` of its own.

// Each bench uses a part of it.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `STEPWISE_BENCH_<name>` setting of the bench, or its default.
pub fn setting(name: &str, default: usize) -> usize {
    std::env::var(format!("STEPWISE_BENCH_{name}"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One row of a latency table: `| what | samples | p50 | p99 | max |`.
pub fn row(what: &str, mut ms: Vec<f64>) {
    if ms.is_empty() {
        println!("| {what} | 0 | – | – | – |");
        return;
    }
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

/// A running server with a fresh data directory, killed when dropped.
pub struct Server {
    pub child: Child,
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Start the binary cargo built for this bench with `workers` workers and
    /// no example modules; its HTTP client gives up on a request after
    /// `request_timeout`.
    pub fn start(workers: usize, request_timeout: Duration) -> Server {
        Self::start_with(workers, request_timeout, &[], &[], None)
    }

    /// [`Server::start`] with more flags and environment variables (a
    /// `--database` and the shared secret key of a cluster's nodes, say),
    /// and the admin token of a database another node made first.
    pub fn start_with(
        workers: usize,
        request_timeout: Duration,
        args: &[&str],
        env: &[(&str, &str)],
        token: Option<&str>,
    ) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        if let Some(token) = token {
            std::fs::write(dir.path().join("admin-token"), token).expect("admin token");
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_stepwise"))
            .args(["serve", "--listen", "127.0.0.1:0", "--no-examples"])
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--workers")
            .arg(workers.to_string())
            .args(args)
            .env("STEPWISE_LOG", "warn")
            .envs(env.iter().copied())
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
                .timeout(request_timeout)
                .build()
                .expect("HTTP client"),
            _dir: dir,
        }
    }

    /// A request to the API; panics unless it succeeds. Returns the JSON body.
    pub async fn request(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
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

    /// A task's status, as `GET /tasks/{id}` says it.
    pub async fn status(&self, id: i64) -> String {
        let task = self
            .request(reqwest::Method::GET, &format!("/tasks/{id}"), None)
            .await;
        task["status"].as_str().expect("status").to_string()
    }

    /// Poll every 2 ms until the task has `status`; panics after `limit`.
    pub async fn wait_for_status(&self, id: i64, status: &str, limit: Duration) {
        let started = Instant::now();
        while self.status(id).await != status {
            assert!(started.elapsed() < limit, "task {id} never became {status}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Register the built module `path` (a fixture or example).
    pub async fn upload(&self, path: &str) {
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
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
