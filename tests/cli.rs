//! The command line as a user runs it: the local step runner and the client
//! commands against a real server.

mod common;

use common::{BIN, TestServer, module_file};
use serde_json::Value;
use std::process::{Child, Command, Output, Stdio};

/// The CLI, pointed at `server` (or at none: no address, no token).
fn command(args: &[&str], server: Option<&TestServer>) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("STEPWISE_TOKEN")
        .env_remove("STEPWISE_URL");
    if let Some(server) = server {
        command
            .env("STEPWISE_URL", &server.url)
            .env("STEPWISE_TOKEN", &server.token);
    }
    command
}

fn stepwise(args: &[&str], server: Option<&TestServer>) -> Output {
    command(args, server).output().expect("run stepwise")
}

/// The CLI started in the background, its output piped.
fn spawn(args: &[&str], server: &TestServer) -> Child {
    command(args, Some(server))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run stepwise")
}

/// Wait for a started CLI (`--watch`): killed after `limit`, so a watch that
/// never ends fails the test instead of hanging it.
fn finish_within(mut child: Child, limit: std::time::Duration) -> Output {
    let started = std::time::Instant::now();
    while child.try_wait().expect("wait for stepwise").is_none() {
        if started.elapsed() > limit {
            child.kill().ok();
            let out = child.wait_with_output().expect("stepwise output");
            panic!(
                "stepwise did not end within {limit:?}: {}",
                text(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("stepwise output")
}

fn stepwise_within(args: &[&str], server: &TestServer, limit: std::time::Duration) -> Output {
    finish_within(spawn(args, server), limit)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn step_run_prints_the_result_and_progress() {
    let module = module_file("demo/count");
    let out = stepwise(
        &[
            "step",
            "run",
            module.to_str().unwrap(),
            "--settings",
            r#"{"to": 5000}"#,
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(result["counted"], 5000);
    assert!(
        text(&out.stderr).contains("100.0%"),
        "progress on stderr: {}",
        text(&out.stderr)
    );
}

#[test]
fn step_run_fails_with_one_line_naming_the_limit() {
    let module = module_file("fixture/loop");
    let out = stepwise(
        &[
            "step",
            "run",
            module.to_str().unwrap(),
            "--max-execution-time",
            "1",
            // Fuel runs out within milliseconds, long before the wall-clock
            // backstop, however busy the machine is.
            "--fuel-per-second",
            "100000000",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let last = stderr.lines().last().unwrap();
    assert!(last.starts_with("error: step ran out of fuel"), "{stderr}");

    let module = module_file("fixture/membomb");
    let out = stepwise(
        &[
            "step",
            "run",
            module.to_str().unwrap(),
            "--max-memory",
            "33554432",
        ],
        None,
    );
    assert!(
        text(&out.stderr)
            .lines()
            .last()
            .unwrap()
            .contains("memory cap of 33554432 bytes")
    );
}

#[test]
fn step_run_passes_secrets_and_writes_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let module = module_file("sale/contact/send");
    let settings = r#"{"template": "Hi {{name}}", "subject": "s", "recipients": [{"email": "a@b.c", "name": "Ann"}]}"#;
    let artifacts = dir.path().join("out");
    let out = stepwise(
        &[
            "step",
            "run",
            module.to_str().unwrap(),
            "--settings",
            settings,
            "--secret",
            "mail_api_key=k",
            "--artifacts-dir",
            artifacts.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        std::fs::read_to_string(artifacts.join("outbox.jsonl"))
            .unwrap()
            .contains("Hi Ann")
    );
}

#[test]
fn step_run_refuses_a_bad_file_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.wasm");
    std::fs::write(&bad, b"\0asm\x01\0\0\0").unwrap();
    let out = stepwise(&["step", "run", bad.to_str().unwrap()], None);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("core WebAssembly module"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn client_commands_drive_a_server() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("task.json");
    std::fs::write(&file, r#"{"name": "from the cli", "steps": [{"controller": "demo/count", "settings": {"to": 20000}}]}"#).unwrap();
    let s = &server;
    let out = stepwise(
        &["task", "create", file.to_str().unwrap(), "--watch"],
        Some(s),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("completed"),
        "{}",
        text(&out.stderr)
    );

    let out = stepwise(&["task", "list", "--json"], Some(s));
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["tasks"][0]["name"], "from the cli");
    let out = stepwise(&["task", "list"], Some(s));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines.len() >= 2, "{table}");
    let status_column = |line: &str, word: &str| line.find(word);
    assert_eq!(
        status_column(lines[0], "STATUS"),
        status_column(lines[1], "completed"),
        "columns line up:\n{table}"
    );

    let noop = module_file("fixture/noop");
    let out = stepwise(
        &["module", "upload", "my/noop", noop.to_str().unwrap()],
        Some(s),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = stepwise(&["module", "list"], Some(s));
    assert!(text(&out.stdout).contains("my/noop"));
    let out = stepwise(
        &["module", "limit", "my/noop", "--max-running", "2"],
        Some(s),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("limits: 2 running at once, any starts a minute; now 0 running"),
        "{shown}"
    );
    let (_, module) = server.get("/modules/my/noop").await;
    assert_eq!(module["limits"]["max_running"], 2, "{module}");
    let out = stepwise(
        &["module", "limit", "my/noop", "--max-running", "0"],
        Some(s),
    );
    assert!(!out.status.success(), "a limit of 0 is refused");
    let out = stepwise(&["module", "limit", "my/noop"], Some(s));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("limits:"), "lifted");

    let out = stepwise(
        &["token", "create", "--role", "viewer", "--name", "dash"],
        Some(s),
    );
    assert!(text(&out.stdout).trim().starts_with("sw_"));

    let out = stepwise(&["task", "show", "424242"], Some(s));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("not found"));
}

#[tokio::test]
async fn serve_reads_a_config_file_below_flags_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stepwise.toml");
    std::fs::write(
        &config,
        "no_examples = true\nretention_days = 7\nmax_module_bytes = 2000\n",
    )
    .unwrap();
    let server = TestServer::start_with(&[
        "--config",
        config.to_str().unwrap(),
        "--max-module-bytes",
        "100000000",
    ])
    .await;
    let (_, modules) = server.get("/modules").await;
    assert_eq!(
        modules["modules"],
        serde_json::json!([]),
        "no_examples from the file"
    );
    // The flag wins over the file's 2000-byte limit.
    server.upload("fixture/noop").await;

    std::fs::write(&config, "wrokers = 3\n").unwrap();
    let out = stepwise(
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            dir.path().join("d").to_str().unwrap(),
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unknown setting `wrokers`"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn a_second_server_on_the_same_data_is_refused() {
    let server = TestServer::start_with(&["--no-examples"]).await;
    let out = stepwise(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            server.dir.to_str().unwrap(),
        ],
        None,
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("another Stepwise server is already using"),
        "{stderr}"
    );
    // The first one keeps serving.
    let (status, _) = server.get("/stats").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn calibrate_prints_a_fuel_rate_the_server_accepts() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let out = stepwise(
        &["calibrate", "--seconds", "0.2", "--data-dir", data_dir],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let rate: u64 = stdout
        .trim()
        .strip_prefix("fuel_per_second = ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a config-file line on stdout: {stdout:?}"));
    // Any machine that runs the tests burns more than 10^8 units a second
    // and fewer than 10^12 (the reference machine: 1.3 × 10^10).
    assert!((100_000_000..1_000_000_000_000).contains(&rate), "{rate}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("--fuel-per-second"), "{stderr}");

    // The printed line is a config file `serve` starts with.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stepwise.toml");
    std::fs::write(&config, &stdout).unwrap();
    let server = TestServer::start_with(&["--config", config.to_str().unwrap()]).await;
    let (status, _) = server.get("/modules").await;
    assert!(status.is_success());

    let out = stepwise(
        &["calibrate", "--seconds", "0", "--data-dir", data_dir],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--seconds must be between"));
}

fn calibration(dir: &std::path::Path) -> Value {
    let path = dir.join("calibration.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The fuel rate the server gives steps, as its start-up log says. (Running a
/// step out of fuel would show it too, but on a busy machine a short budget
/// can meet the wall-clock backstop first.)
async fn fuel_per_second_of(server: &TestServer) -> u64 {
    let log = server.log.lock().unwrap().join("\n");
    let line = log
        .lines()
        .find_map(|line| line.split("steps get ").nth(1))
        .unwrap_or_else(|| panic!("no fuel rate in the server's log:\n{log}"));
    line.split(' ').next().unwrap().parse().expect("a number")
}

#[tokio::test]
async fn serve_calibrates_at_its_first_start_and_keeps_it() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::spawn(data.path(), &[]).await;
    let first = calibration(data.path());
    assert_eq!(first["module"], "demo/count");
    let measured = first["fuel_per_second"].as_u64().unwrap();
    assert!(
        (100_000_000..1_000_000_000_000).contains(&measured),
        "{first}"
    );
    assert_eq!(fuel_per_second_of(&server).await, measured);
    drop(server);

    // A later start reads the file instead of measuring: a planted rate is used.
    let mut planted = first.clone();
    planted["fuel_per_second"] = 123_456_789.into();
    std::fs::write(data.path().join("calibration.json"), planted.to_string()).unwrap();
    let server = TestServer::spawn(data.path(), &[]).await;
    assert_eq!(fuel_per_second_of(&server).await, 123_456_789);
    assert_eq!(
        calibration(data.path()),
        planted,
        "the file is kept as it is"
    );
    drop(server);

    // An explicit rate wins over the file.
    let server = TestServer::spawn(data.path(), &["--fuel-per-second", "222222222"]).await;
    assert_eq!(fuel_per_second_of(&server).await, 222_222_222);
    drop(server);

    // `stepwise calibrate` measures again and rewrites the file.
    let dir = data.path().to_str().unwrap();
    let out = stepwise(&["calibrate", "--seconds", "0.2", "--data-dir", dir], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let again = calibration(data.path());
    assert_ne!(again["fuel_per_second"], 123_456_789, "{again}");
    assert_ne!(again["measured_at"], first["measured_at"]);
    assert_eq!(
        text(&out.stdout).trim(),
        format!("fuel_per_second = {}", again["fuel_per_second"])
    );
}

#[test]
fn step_run_uses_the_calibration_of_its_data_dir() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(
        data.path().join("calibration.json"),
        r#"{"fuel_per_second": 100000000, "module": "demo/count", "measured_seconds": 2.0, "measured_at": "2026-12-02T00:00:00Z"}"#,
    )
    .unwrap();
    let module = module_file("fixture/loop");
    let out = stepwise(
        &[
            "step",
            "run",
            module.to_str().unwrap(),
            "--max-execution-time",
            "1",
            "--data-dir",
            data.path().to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains("budget of 100000000 units"), "{stderr}");
}

#[test]
fn step_run_holds_checkpoints_and_artifacts_to_the_server_caps() {
    let module = module_file("fixture/oversized");
    let mib = 1u64 << 20;
    let artifacts = tempfile::tempdir().unwrap();
    let cases = [
        (
            format!(r#"{{"checkpoint_bytes": {}}}"#, 32 * mib),
            format!(
                "{} bytes, over the checkpoint cap of {} bytes",
                32 * mib,
                16 * mib
            ),
        ),
        (
            format!(
                r#"{{"artifact_bytes": {}, "chunk_bytes": {}}}"#,
                80 * mib,
                16 * mib
            ),
            format!(
                "{} bytes, over the artifact cap of {} bytes",
                80 * mib,
                64 * mib
            ),
        ),
    ];
    for (settings, cap) in cases {
        let out = stepwise(
            &[
                "step",
                "run",
                module.to_str().unwrap(),
                "--settings",
                &settings,
                "--artifacts-dir",
                artifacts.path().to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(out.status.code(), Some(1), "{settings}");
        let stderr = text(&out.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.contains(&cap), "{settings}: {stderr}");
    }
    let kept = std::fs::metadata(artifacts.path().join("big.bin"))
        .unwrap()
        .len();
    assert_eq!(kept, 64 * mib, "the writes within the cap were kept");
}

#[tokio::test]
async fn watching_a_recurring_task_ends_with_its_run() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("task.json");
    std::fs::write(
        &file,
        r#"{"name": "hourly", "run_interval": 3600, "steps": [{"controller": "demo/count", "settings": {"to": 1000}}]}"#,
    )
    .unwrap();
    let limit = std::time::Duration::from_secs(60);
    let out = stepwise_within(
        &["task", "create", file.to_str().unwrap(), "--watch"],
        &server,
        limit,
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("the run ended: success"), "{stderr}");
    assert!(stderr.contains("next run at"), "{stderr}");

    // Run it again now: the watch follows that run, not the one before.
    let id = serde_json::from_slice::<Value>(
        &stepwise(&["task", "list", "--json"], Some(&server)).stdout,
    )
    .unwrap()["tasks"][0]["id"]
        .to_string();
    let out = stepwise_within(&["task", "run", &id, "--watch"], &server, limit);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (_, runs) = server.get(&format!("/tasks/{id}/runs")).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 2, "{runs}");
}

#[tokio::test]
async fn watching_a_task_replaced_by_code_follows_its_new_run() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("task.json");
    let limit = std::time::Duration::from_secs(60);
    std::fs::write(
        &file,
        r#"{"name": "nightly", "code": "nightly", "max_attempts": 1, "steps": [{"controller": "demo/count", "settings": {"to": 0}}]}"#,
    )
    .unwrap();
    let out = stepwise_within(
        &["task", "create", file.to_str().unwrap(), "--watch"],
        &server,
        limit,
    );
    assert!(
        !out.status.success(),
        "`to: 0` fails: {}",
        text(&out.stderr)
    );

    // Replaced (same code) with good settings, due later: the watch must
    // wait for that run, not stop at the failed state of the run before.
    std::fs::write(
        &file,
        r#"{"name": "nightly", "code": "nightly", "start_at": "2999-01-01T00:00:00Z", "steps": [{"controller": "demo/count", "settings": {"to": 1000}}]}"#,
    )
    .unwrap();
    let mut watch = spawn(
        &["task", "create", file.to_str().unwrap(), "--watch"],
        &server,
    );
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    if watch.try_wait().unwrap().is_some() {
        let out = watch.wait_with_output().unwrap();
        panic!(
            "the watch ended before the task ran ({}): {}",
            out.status,
            text(&out.stderr)
        );
    }
    let (_, page) = server.get("/tasks?code=nightly").await;
    let id = page["tasks"][0]["id"].as_i64().unwrap();
    let (status, _) = server.post_empty(&format!("/tasks/{id}/run")).await;
    assert!(status.is_success());
    let out = finish_within(watch, limit);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("completed"), "{stderr}");
}

/// Everything the API does to a task, from the command line: disable and
/// enable, run one step, delete, clean up; and the server-wide commands.
#[tokio::test]
async fn the_cli_does_what_the_api_does() {
    let server = TestServer::start().await;
    let s = Some(&server);
    let body = serde_json::json!({"name": "two steps", "disabled": true, "steps": [
        {"controller": "demo/count", "settings": {"to": 10}},
        {"controller": "demo/count", "settings": {"to": 20}}]});
    let (status, task) = server.post("/tasks", body).await;
    assert_eq!(status, 201, "{task}");
    let id = task["id"].as_i64().unwrap().to_string();
    let second_step = task["steps"][1]["id"].as_i64().unwrap().to_string();

    let out = stepwise(&["task", "enable", &id], s);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("scheduled"),
        "{}",
        text(&out.stderr)
    );
    server
        .wait_for(
            id.parse().unwrap(),
            &["completed"],
            std::time::Duration::from_secs(30),
        )
        .await;

    let out = stepwise_within(
        &["task", "run", &id, "--step", &second_step, "--watch"],
        &server,
        std::time::Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let runs = server.runs(id.parse().unwrap()).await;
    assert_eq!(runs[0]["trigger"], "step", "{:?}", runs[0]);

    let out = stepwise(&["task", "disable", &id], s);
    assert!(
        text(&out.stderr).contains("disabled"),
        "{}",
        text(&out.stderr)
    );

    let out = stepwise(&["stats", "--hours", "1"], s);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stats = text(&out.stdout);
    assert!(stats.contains("runs started in the last 1 h: 2"), "{stats}");
    let out = stepwise(&["alerts"], s);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let out = stepwise(&["nodes", "--json"], s);
    let nodes: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(nodes[0]["this_node"], true, "{nodes}");

    let out = stepwise(&["task", "delete", &id], s);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = stepwise(&["task", "show", &id], s);
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );

    let (_, done) = server
        .post(
            "/tasks?wait=10s",
            serde_json::json!({"name": "old", "steps": [
        {"controller": "demo/count", "settings": {"to": 10}}]}),
        )
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    let out = stepwise(&["task", "cleanup", "--older-than", "1x"], s);
    assert!(
        text(&out.stderr).contains("unit must be d, h, m or s"),
        "{}",
        text(&out.stderr)
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = stepwise(&["task", "cleanup", "--older-than", "1s", "--json"], s);
    let deleted: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(deleted["deleted"], 1, "{deleted}");
}

/// A client command finds a server from the server's own config file: its
/// `listen` address and the admin token in its `data_dir`.
#[tokio::test]
async fn client_commands_find_the_server_from_its_config_file() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stepwise.toml");
    let listen = server.url.trim_start_matches("http://");
    std::fs::write(
        &config,
        format!(
            "listen = \"{listen}\"\ndata_dir = \"{}\"\n",
            server.dir.display()
        ),
    )
    .unwrap();
    let out = stepwise(
        &[
            "task",
            "list",
            "--json",
            "--config",
            config.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(page["tasks"].is_array(), "{page}");
}

#[tokio::test]
async fn tasks_by_code_run_due_and_the_cache_from_the_cli() {
    let server = TestServer::start().await;
    let s = &server;
    let (status, task) = s
        .post(
            "/tasks",
            serde_json::json!({"name": "plugin feed", "code": "plugin.feed",
                "start_at": "2999-01-01T00:00:00Z",
                "steps": [{"controller": "demo/count", "settings": {"to": 1000}}]}),
        )
        .await;
    assert!(status.is_success(), "{task}");
    let id = task["id"].as_i64().unwrap();

    let out = stepwise(
        &["task", "show", "--code", "plugin.feed", "--json"],
        Some(s),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["id"].as_i64(), Some(id));
    let out = stepwise(&["task", "show", "7", "--code", "plugin.feed"], Some(s));
    assert!(!out.status.success(), "an id and a code are one too many");

    let out = stepwise_within(
        &["task", "run", "--code", "plugin.feed", "--watch"],
        s,
        std::time::Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("completed"),
        "{}",
        text(&out.stderr)
    );

    let (_, later) = s
        .post(
            "/tasks",
            serde_json::json!({"name": "later", "start_at": "2999-01-01T00:00:00Z",
                "steps": [{"controller": "demo/count", "settings": {"to": 10}}]}),
        )
        .await;
    let out = stepwise(&["task", "run-due"], Some(s));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("1 scheduled task(s) due now"),
        "{}",
        text(&out.stderr)
    );
    s.wait_for(
        later["id"].as_i64().unwrap(),
        &["completed"],
        std::time::Duration::from_secs(60),
    )
    .await;

    let out = stepwise(&["task", "delete", "--code", "plugin.feed"], Some(s));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = stepwise(&["task", "show", "--code", "plugin.feed"], Some(s));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no task has the code"),
        "{}",
        text(&out.stderr)
    );

    let out = stepwise(&["cache", "stats", "--json"], Some(s));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(stats["entries"].as_u64().unwrap() >= 1, "{stats}");
    let out = stepwise(&["cache", "clear"], Some(s));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cleared"),
        "{}",
        text(&out.stderr)
    );
    let out = stepwise(&["cache", "stats"], Some(s));
    assert!(
        text(&out.stdout).contains("entries  0"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test]
async fn task_steps_commands_edit_a_task_and_show_prints_its_schedule() {
    let s = TestServer::start().await;
    let (_, task) = s
        .post(
            "/tasks",
            serde_json::json!({"name": "edited", "cron": "0 3 * * *", "timezone": "Europe/Berlin",
                   "steps": [{"controller": "demo/count"}]}),
        )
        .await;
    let id = task["id"].as_i64().unwrap().to_string();
    let first = task["steps"][0]["id"].as_i64().unwrap();

    let out = stepwise(
        &[
            "task",
            "steps",
            "add",
            &id,
            r#"{"controller": "demo/count", "settings": {"to": 7}}"#,
        ],
        Some(&s),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("added to task"),
        "{}",
        text(&out.stderr)
    );
    let (_, got) = s.get(&format!("/tasks/{id}")).await;
    let second = got["steps"][1]["id"].as_i64().unwrap();
    assert_eq!(got["steps"][1]["settings"]["to"], 7);

    let dir = tempfile::tempdir().unwrap();
    let changes = dir.path().join("changes.json");
    std::fs::write(
        &changes,
        r#"{"settings": {"to": 9}, "max_execution_time": 5}"#,
    )
    .unwrap();
    let out = stepwise(
        &[
            "task",
            "steps",
            "change",
            &id,
            &second.to_string(),
            changes.to_str().unwrap(),
        ],
        Some(&s),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = stepwise(
        &[
            "task",
            "steps",
            "order",
            &id,
            &second.to_string(),
            &first.to_string(),
        ],
        Some(&s),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    assert!(
        listed.find(&format!("step {second} ")) < listed.find(&format!("step {first} ")),
        "{listed}"
    );
    let (_, got) = s.get(&format!("/tasks/{id}")).await;
    assert_eq!(got["steps"][0]["id"], second);
    assert_eq!(got["steps"][0]["settings"]["to"], 9);
    assert_eq!(got["steps"][0]["max_execution_time"], 5);

    let out = stepwise(
        &["task", "steps", "remove", &id, &first.to_string()],
        Some(&s),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = stepwise(
        &["task", "steps", "remove", &id, &second.to_string()],
        Some(&s),
    );
    assert_eq!(out.status.code(), Some(1), "the last step stays");
    assert!(
        text(&out.stderr).contains("at least one"),
        "{}",
        text(&out.stderr)
    );
    let out = stepwise(&["task", "steps", "add", &id, "{not json"], Some(&s));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not valid JSON"),
        "{}",
        text(&out.stderr)
    );

    let out = stepwise(&["task", "show", &id], Some(&s));
    let shown = text(&out.stdout);
    assert!(shown.contains("0 3 * * *"), "{shown}");
    assert!(shown.contains("Europe/Berlin"), "{shown}");
    assert!(shown.contains("next_runs"), "{shown}");
}
