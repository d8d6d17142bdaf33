//! Modules with a face, through the real server: the metadata a module
//! declares (its `stepwise:metadata` section, or given beside the upload),
//! settings checked against its schema at create and at step edits with the
//! field named, a rescan of `--modules-dir` without a restart, the tasks
//! whose module is missing, and each module's step-run statistics.

mod common;

use common::{BIN, TestServer, module_bytes};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

/// The field and message of an error body.
fn field_error(body: &Value) -> (String, String) {
    (
        body["error"]["field"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// A one-step create's answer.
async fn create(s: &TestServer, controller: &str, settings: Value) -> (StatusCode, Value) {
    s.post(
        "/tasks",
        json!({"name": "face", "disabled": true,
               "steps": [{"controller": controller, "settings": settings}]}),
    )
    .await
}

/// Upload `bytes` at `path` with `metadata` as the query parameter.
async fn put_with_metadata(
    s: &TestServer,
    path: &str,
    bytes: Vec<u8>,
    metadata: &str,
) -> (StatusCode, Value) {
    s.put_module_with(path, bytes, &[("metadata", metadata)])
        .await
}

#[tokio::test]
async fn example_metadata_is_shown_and_settings_are_checked_against_it() {
    let s = TestServer::start().await;
    let (status, dump) = s.get("/modules/tool/backup/dumptables").await;
    assert_eq!(status, StatusCode::OK, "{dump}");
    assert_eq!(dump["metadata"]["title"], "Dump tables");
    assert_eq!(
        dump["metadata"]["settings_schema"]["required"],
        json!(["tables"])
    );
    assert_eq!(dump["stats"]["days"], 30);
    assert_eq!(dump["stats"]["runs"], 0);
    let (_, list) = s.get("/modules").await;
    let send = list["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["path"] == "sale/contact/send")
        .expect("the mail example is listed");
    assert_eq!(send["metadata"]["title"], "Send templated mail");
    assert!(send["stats"].is_object(), "{send}");

    // Each violation names its field below the step's settings.
    let cases = [
        (
            json!({"tables": "x"}),
            "steps[0].settings.tables",
            "is not of type \"array\"",
        ),
        (json!({}), "steps[0].settings.tables", "required"),
        (
            json!({"tables": [], "dialect": "oracle"}),
            "steps[0].settings.dialect",
            "oracle",
        ),
        (
            json!({"tables": [], "rows_per_insert": 0}),
            "steps[0].settings.rows_per_insert",
            "minimum",
        ),
        (
            json!({"tables": [{"name": "t", "columns": [7]}]}),
            "steps[0].settings.tables[0].columns[0]",
            "",
        ),
    ];
    for (settings, field, said) in cases {
        let (status, body) = create(&s, "tool/backup/dumptables", settings.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{settings}: {body}"
        );
        let (got, message) = field_error(&body);
        assert_eq!(got, field, "{settings}: {body}");
        assert!(message.contains(said), "{settings}: {message}");
    }
    // The step's index is in the field.
    let (status, body) = s
        .post(
            "/tasks",
            json!({"name": "two", "disabled": true, "steps": [
                {"controller": "demo/count", "settings": {"to": 1}},
                {"controller": "sale/contact/send",
                 "settings": {"subject": "s", "template": "t", "recipients": "ann@example.com"}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(field_error(&body).0, "steps[1].settings.recipients");

    // Valid settings pass; a module without a schema takes any settings.
    let (status, task) = create(
        &s,
        "tool/backup/dumptables",
        json!({"tables": [], "dialect": "standard"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let (status, other) = create(&s, "demo/count", json!({"anything": true})).await;
    assert_eq!(status, StatusCode::CREATED, "{other}");

    // Step edits are checked the same way.
    let id = task["id"].as_i64().unwrap();
    let step_id = task["steps"][0]["id"].as_i64().unwrap();
    let steps = format!("/tasks/{id}/steps");
    let (status, body) = s
        .post(
            &steps,
            json!({"controller": "tool/backup/dumptables", "settings": {"tables": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(field_error(&body).0, "settings.tables");
    let (status, body) = s
        .patch(
            &format!("{steps}/{step_id}"),
            json!({"settings": {"file": "x.sql"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        field_error(&body).0,
        "settings.tables",
        "settings are replaced whole"
    );
    let (status, body) = s
        .patch(
            &format!("{steps}/{step_id}"),
            json!({"settings": {"tables": [], "file": "x.sql"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A new module is checked against the settings the step keeps.
    let other_id = other["id"].as_i64().unwrap();
    let other_step = other["steps"][0]["id"].as_i64().unwrap();
    let (status, body) = s
        .patch(
            &format!("/tasks/{other_id}/steps/{other_step}"),
            json!({"controller": "tool/backup/dumptables"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(field_error(&body).0.starts_with("settings"), "{body}");
}

#[tokio::test]
async fn metadata_given_at_upload_is_checked_and_replaced_by_each_version() {
    let s = TestServer::start().await;
    let metadata = json!({
        "title": "No-op", "version": "2.0.0",
        "settings_schema": {"type": "object", "required": ["level"],
                            "properties": {"level": {"enum": ["low", "high"]}}}
    });
    let (status, module) = put_with_metadata(
        &s,
        "my/noop",
        module_bytes("fixture/noop"),
        &metadata.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{module}");
    assert_eq!(module["metadata"], metadata);
    let (status, body) = create(&s, "my/noop", json!({"level": "medium"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(field_error(&body).0, "steps[0].settings.level");
    let (status, body) = create(&s, "my/noop", json!({"level": "high"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Refused, saying why, and nothing is registered.
    let bad = [
        ("{not json", "not valid metadata JSON"),
        (r#"{"title": "x", "colour": "red"}"#, "colour"),
        (
            r#"{"settings_schema": {"type": "nonsense"}}"#,
            "not a valid JSON Schema",
        ),
        (
            r#"{"settings_schema": {"$ref": "http://127.0.0.1:9/s.json"}}"#,
            "not a valid JSON Schema",
        ),
    ];
    for (text, said) in bad {
        let (status, body) =
            put_with_metadata(&s, "my/bad", module_bytes("fixture/noop"), text).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}: {body}");
        let (field, message) = field_error(&body);
        assert_eq!(field, "metadata", "{body}");
        assert!(message.contains(said), "{text}: {message}");
    }
    let (status, _) = s.get("/modules/my/bad").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The API's own routes are not module paths.
    for reserved in ["rescan", "missing"] {
        let (status, body) = s.put_module(reserved, module_bytes("fixture/noop")).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    }

    // A new version without metadata has none: its settings are not checked.
    let (status, module) = s.put_module("my/noop", module_bytes("fixture/noop")).await;
    assert_eq!(status, StatusCode::OK, "{module}");
    assert_eq!(module["metadata"], Value::Null);
    let (status, body) = create(&s, "my/noop", json!({"level": "medium"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// `names` of a rescan report's `key` list.
fn listed(report: &Value, key: &str) -> Vec<String> {
    report[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key}: {report}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn rescan_registers_the_modules_dir_without_a_restart() {
    let modules = tempfile::tempdir().unwrap();
    let dir = modules.path();
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("a/noop.wasm"), module_bytes("fixture/noop")).unwrap();
    let s = TestServer::start_with(&["--modules-dir", dir.to_str().unwrap()]).await;
    let (status, _) = s.get("/modules/a/noop").await;
    assert_eq!(status, StatusCode::OK, "registered at start");

    // Nothing new: everything is unchanged (and nothing is compiled again).
    let (status, report) = s.post_empty("/modules/rescan").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert!(listed(&report, "added").is_empty(), "{report}");
    assert!(listed(&report, "unchanged").contains(&"a/noop".to_string()));
    assert!(
        listed(&report, "unchanged").contains(&"demo/count".to_string()),
        "the examples too"
    );

    // A new module with its metadata beside it, a changed one, a broken one.
    std::fs::create_dir_all(dir.join("b")).unwrap();
    std::fs::write(dir.join("b/count.wasm"), module_bytes("demo/count")).unwrap();
    std::fs::write(
        dir.join("b/count.metadata.json"),
        r#"{"title": "Counter", "settings_schema": {"type": "object", "properties": {"to": {"type": "integer", "minimum": 1}}}}"#,
    )
    .unwrap();
    std::fs::write(dir.join("a/noop.wasm"), module_bytes("fixture/fail")).unwrap();
    std::fs::write(dir.join("c.wasm"), b"\0asm\x0d\0\x01\0 not a component").unwrap();
    let (status, report) = s.post_empty("/modules/rescan").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(listed(&report, "added"), ["b/count"], "{report}");
    assert_eq!(listed(&report, "updated"), ["a/noop"], "{report}");
    let failed = report["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{report}");
    assert_eq!(failed[0]["module"], "c");
    assert!(!failed[0]["error"].as_str().unwrap().is_empty(), "{report}");

    let (_, counter) = s.get("/modules/b/count").await;
    assert_eq!(counter["metadata"]["title"], "Counter");
    let (status, body) = create(&s, "b/count", json!({"to": 0})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(field_error(&body).0, "steps[0].settings.to");

    // Admins only.
    let (status, _) = s
        .request(reqwest::Method::POST, "/modules/rescan", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, viewer) = s
        .post("/tokens", json!({"name": "v", "role": "viewer"}))
        .await;
    let viewer = viewer["token"]
        .as_str()
        .expect("a viewer token")
        .to_string();
    let (status, _) = s
        .request(
            reqwest::Method::POST,
            "/modules/rescan",
            Some(&viewer),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // The CLI says the same, and fails while a file cannot be registered.
    let out = std::process::Command::new(BIN)
        .args(["module", "rescan"])
        .env("STEPWISE_URL", &s.url)
        .env("STEPWISE_TOKEN", &s.token)
        .output()
        .expect("run stepwise");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("unchanged  b/count"), "{stdout}");
    assert!(stdout.contains("failed     c"), "{stdout}");
    std::fs::remove_file(dir.join("c.wasm")).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["module", "rescan", "--json"])
        .env("STEPWISE_URL", &s.url)
        .env("STEPWISE_TOKEN", &s.token)
        .output()
        .expect("run stepwise");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert!(report["failed"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn module_stats_and_tasks_whose_module_is_missing() {
    let s = TestServer::start().await;
    s.upload("fixture/noop").await;
    s.upload("fixture/fail").await;
    for _ in 0..2 {
        let (status, task) = s
            .post(
                "/tasks?wait=10s",
                json!({"name": "ok", "steps": [{"controller": "fixture/noop"}]}),
            )
            .await;
        assert!(status.is_success(), "{status} {task}");
        assert_eq!(task["status"], "completed", "{task}");
    }
    let failing = s
        .create_step_task("fixture/fail", json!({}), json!({"max_attempts": 1}))
        .await;
    s.wait_for(failing, &["failed"], Duration::from_secs(10))
        .await;

    let (_, noop) = s.get("/modules/fixture/noop").await;
    let stats = &noop["stats"];
    assert_eq!(
        (stats["runs"].as_i64(), stats["completed"].as_i64()),
        (Some(2), Some(2)),
        "{noop}"
    );
    assert_eq!(stats["success_rate"], 1.0);
    assert!(
        stats["average_duration_seconds"].as_f64().is_some(),
        "{noop}"
    );
    let last = stats["last_run_at"].as_str().expect("a last run");
    assert!(chrono::DateTime::parse_from_rfc3339(last).is_ok(), "{last}");
    let (_, list) = s.get("/modules").await;
    let fail = list["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["path"] == "fixture/fail")
        .expect("listed");
    assert_eq!(
        (
            fail["stats"]["failed"].as_i64(),
            fail["stats"]["success_rate"].as_f64()
        ),
        (Some(1), Some(0.0)),
        "{fail}"
    );
    let (_, count) = s.get("/modules/demo/count").await;
    assert_eq!(count["stats"]["runs"], 0);
    assert_eq!(count["stats"]["success_rate"], Value::Null);
    assert_eq!(count["stats"]["last_run_at"], Value::Null);

    // Nothing is missing; then a finished task's module is deleted.
    let (status, missing) = s.get("/modules/missing").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(missing["tasks"], json!([]));
    let (status, _) = s.delete("/modules/fixture/fail").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, missing) = s.get("/modules/missing").await;
    assert_eq!(
        missing["tasks"],
        json!([{"module": "fixture/fail", "task_id": failing,
                "task_name": "test fixture/fail", "task_status": "failed"}])
    );
    // The CLI lists them too.
    let out = std::process::Command::new(BIN)
        .args(["module", "missing"])
        .env("STEPWISE_URL", &s.url)
        .env("STEPWISE_TOKEN", &s.token)
        .output()
        .expect("run stepwise");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("fixture/fail") && stdout.contains(&failing.to_string()),
        "{stdout}"
    );
    // Uploaded again, it is no longer missing.
    s.upload("fixture/fail").await;
    let (_, missing) = s.get("/modules/missing").await;
    assert_eq!(missing["tasks"], json!([]));
}
