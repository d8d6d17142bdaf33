//! The test harness: spawns the real `stepwise` binary on a random port with a
//! fresh data directory, and talks to it over HTTP like a user would.
//! `TEST_LOG=1` shows the server's log.

#![allow(dead_code)]

pub mod database;
pub mod guests;
pub mod recording;
pub mod skip;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_stepwise");

/// Path of a fixture or example module's component, built by build.rs.
pub fn module_file(path: &str) -> PathBuf {
    let name = path.replace('/', "__");
    Path::new(env!("STEPWISE_BUILT_MODULES_DIR")).join(format!("{name}.wasm"))
}

pub fn module_bytes(path: &str) -> Vec<u8> {
    std::fs::read(module_file(path)).unwrap_or_else(|e| panic!("module {path}: {e}"))
}

pub struct TestServer {
    child: Option<Child>,
    pub url: String,
    pub token: String,
    pub dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    pub http: reqwest::Client,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    /// A fresh server with the example modules registered.
    pub async fn start() -> TestServer {
        Self::start_with(&[]).await
    }

    pub async fn start_with(args: &[&str]) -> TestServer {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().to_path_buf();
        let mut server = Self::spawn(&dir, args).await;
        server._temp = Some(temp);
        server
    }

    /// Start (or restart) a server on an existing data directory.
    pub async fn spawn(dir: &Path, args: &[&str]) -> TestServer {
        Self::spawn_with_env(dir, args, &[]).await
    }

    /// [`TestServer::spawn`] with these environment variables set (the
    /// nodes of a cluster share `STEPWISE_SECRET_KEY`, say).
    pub async fn spawn_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> TestServer {
        let mut command = Command::new(BIN);
        command
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir)
            .args(database::database_args(dir, args))
            .args(args)
            .env(
                "STEPWISE_LOG",
                std::env::var("STEPWISE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env_remove("STEPWISE_SECRET_KEY")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn stepwise");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            let show = std::env::var("TEST_LOG").is_ok();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if show {
                    eprintln!("[server] {line}");
                }
                // With `--log-format json` the address is a JSON log line's message.
                let said = serde_json::from_str::<Value>(&line)
                    .ok()
                    .and_then(|v| v["fields"]["message"].as_str().map(str::to_string));
                let said = said.as_deref().unwrap_or(&line);
                if let Some(url) = said.strip_prefix("stepwise listening on ") {
                    let _ = tx.send(url.trim_end_matches('/').to_string());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "the server did not start:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        let token = std::fs::read_to_string(dir.join("admin-token"))
            .expect("admin token file")
            .trim()
            .to_string();
        TestServer {
            child: Some(child),
            url,
            token,
            dir: dir.to_path_buf(),
            _temp: None,
            http: reqwest::Client::new(),
            log,
        }
    }

    /// Kill the server as a crash would (SIGKILL), keeping its data directory.
    pub fn kill9(&mut self) -> Option<tempfile::TempDir> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self._temp.take()
    }

    /// Send the server a signal by name (`TERM`, `INT`), as `kill -TERM` would.
    pub fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("the server runs");
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Wait for the server's process to end; `None` if it is still running
    /// after `timeout`. Keeps the data directory.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let started = Instant::now();
        loop {
            let child = self.child.as_mut().expect("the server was started");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Some(status);
            }
            if started.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The data directory's guard, for a restart on it (see [`TestServer::spawn`]).
    pub fn take_dir(&mut self) -> Option<tempfile::TempDir> {
        self._temp.take()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The log once a line contains `needle`, waiting up to 10 s for it.
    /// A line can trail what a client sees: a run end is committed (and
    /// readable) before its fsync is answered and the engine logs it, and the
    /// server's output reaches the test through a pipe and a reader thread.
    pub async fn wait_for_log(&self, needle: &str) -> String {
        let started = Instant::now();
        loop {
            let log = self.log_text();
            if log.contains(needle) || started.elapsed() > Duration::from_secs(10) {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Any request with a token (None = no Authorization header).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = if path.starts_with('/')
            && !path.starts_with("/api/")
            && path != "/healthz"
            && path != "/metrics"
            && !path.starts_with("/focus/")
            && !path.starts_with("/#")
        {
            format!("{}/api/v1{path}", self.url)
        } else {
            format!("{}{path}", self.url)
        };
        let mut request = self.http.request(method, url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.request(Method::GET, path, Some(&self.token.clone()), None)
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, Some(&self.token.clone()), Some(body))
            .await
    }

    pub async fn post_empty(&self, path: &str) -> (StatusCode, Value) {
        self.request(Method::POST, path, Some(&self.token.clone()), None)
            .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.request(Method::PATCH, path, Some(&self.token.clone()), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.request(Method::DELETE, path, Some(&self.token.clone()), None)
            .await
    }

    pub async fn put_module(&self, path: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
        self.put_module_with(path, bytes, &[]).await
    }

    /// [`Self::put_module`] with query parameters (e.g. `metadata`).
    pub async fn put_module_with(
        &self,
        path: &str,
        bytes: Vec<u8>,
        query: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let response = self
            .http
            .put(format!("{}/api/v1/modules/{path}", self.url))
            .query(query)
            .bearer_auth(&self.token)
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .expect("upload");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Upload a fixture/example module under its own path.
    pub async fn upload(&self, path: &str) {
        let (status, body) = self.put_module(path, module_bytes(path)).await;
        assert!(status.is_success(), "upload {path}: {status} {body}");
    }

    /// Create a one-step task and return its id.
    pub async fn create_step_task(&self, controller: &str, settings: Value, extra: Value) -> i64 {
        let mut body = json!({
            "name": format!("test {controller}"),
            "steps": [{"controller": controller, "settings": settings, "max_execution_time": 10}],
        });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                body.insert(k.clone(), v.clone());
            }
        }
        let (status, task) = self.post("/tasks", body).await;
        assert!(status.is_success(), "create: {status} {task}");
        task["id"].as_i64().unwrap()
    }

    /// Wait until the task's status is one of `statuses`; returns the task.
    pub async fn wait_for(&self, id: i64, statuses: &[&str], timeout: Duration) -> Value {
        let started = Instant::now();
        loop {
            let (_, task) = self.get(&format!("/tasks/{id}")).await;
            if statuses.contains(&task["status"].as_str().unwrap_or("")) {
                return task;
            }
            if started.elapsed() > timeout {
                panic!(
                    "task {id} did not reach {statuses:?} in {timeout:?}: {task}\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn runs(&self, id: i64) -> Vec<Value> {
        let (_, runs) = self.get(&format!("/tasks/{id}/runs?limit=100")).await;
        runs["runs"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
