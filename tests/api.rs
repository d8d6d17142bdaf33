//! The REST API through the real binary: every endpoint, its failure cases and
//! its role; validation errors name their field; nothing a client sends makes a 500.

mod common;

use common::{TestServer, module_bytes};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

fn simple_task(controller: &str) -> Value {
    json!({"name": "simple", "steps": [{"controller": controller, "settings": {}}]})
}

#[tokio::test]
async fn create_get_list_patch_delete_a_task() {
    let s = TestServer::start().await;
    let body = json!({
        "name": "Nightly backup", "priority": "high", "max_attempts": 2,
        "start_at": "2999-01-01T00:00:00Z", "details": {"shop": "main"},
        "secrets": {"db_password": "hunter2"},
        "steps": [{"controller": "tool/backup/dumptables", "settings": {"tables": []}, "max_execution_time": 30}]
    });
    let (status, task) = s.post("/tasks", body).await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    assert_eq!(task["status"], "scheduled");
    assert_eq!(task["priority"], "high");
    assert_eq!(task["secret_names"], json!(["db_password"]));
    assert!(
        !task.to_string().contains("hunter2"),
        "secrets are never returned"
    );
    let id = task["id"].as_i64().unwrap();

    let (status, got) = s.get(&format!("/tasks/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["details"]["shop"], "main");

    let (status, page) = s.get("/tasks?status=scheduled").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == id)
    );

    let (status, patched) = s
        .patch(
            &format!("/tasks/{id}"),
            json!({"name": "Renamed", "details": {"shop": null, "x": 1}, "disabled": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["name"], "Renamed");
    assert_eq!(patched["status"], "disabled");
    assert_eq!(patched["details"], json!({"x": 1}));

    let (status, _) = s.delete(&format!("/tasks/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = s.get(&format!("/tasks/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn wait_returns_the_finished_task_or_202() {
    let s = TestServer::start().await;
    let (status, task) = s.post("/tasks?wait=10s", json!({"name": "quick", "steps": [{"controller": "demo/count", "settings": {"to": 1000}}]})).await;
    assert_eq!(status, StatusCode::OK, "{task}");
    assert_eq!(task["status"], "completed");
    assert_eq!(task["progress"], 100.0);
    // The answer is the stored task (the run's end hands it over unread).
    let (_, stored) = s.get(&format!("/tasks/{}", task["id"])).await;
    assert_eq!(task, stored);

    let (status, task) = s.post("/tasks?wait=100ms", json!({"name": "slow", "steps": [{"controller": "demo/count", "settings": {"to": 100, "sleep_ms_per_report": 50}}]})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    let (status, body) = s
        .post("/tasks?wait=forever", simple_task("demo/count"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["field"], "wait");
}

#[tokio::test]
async fn run_and_retry_wait_for_the_run_they_start() {
    let s = TestServer::start().await;
    s.upload("fixture/fail").await;
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let id = s
        .create_step_task(
            "demo/count",
            json!({"to": 1000}),
            json!({"start_at": later}),
        )
        .await;
    let (status, task) = s.post_empty(&format!("/tasks/{id}/run?wait=10s")).await;
    assert_eq!(status, StatusCode::OK, "{task}");
    assert_eq!(task["status"], "completed");

    // Fails its one attempt; the retry is its second, which succeeds.
    let id = s
        .create_step_task(
            "fixture/fail",
            json!({"fail_until_attempt": 2}),
            json!({"max_attempts": 1}),
        )
        .await;
    s.wait_for(id, &["failed"], Duration::from_secs(10)).await;
    let (status, task) = s.post_empty(&format!("/tasks/{id}/retry?wait=10s")).await;
    assert_eq!(status, StatusCode::OK, "{task}");
    assert_eq!(task["status"], "completed");

    let (status, body) = s.post_empty(&format!("/tasks/{id}/run?wait=forever")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["field"], "wait");
}

#[tokio::test]
async fn wait_goes_on_through_a_retry_due_within_it() {
    let s = TestServer::start().await;
    s.upload("fixture/fail").await;
    // The first attempt fails; its retry is due about 2 s later and succeeds.
    let body = json!({"name": "flaky", "max_attempts": 2, "steps": [
        {"controller": "fixture/fail", "settings": {"fail_until_attempt": 2}, "max_execution_time": 10}]});
    let (status, task) = s.post("/tasks?wait=20s", body).await;
    assert_eq!(status, StatusCode::OK, "{task}");
    assert_eq!(task["status"], "completed");
    assert_eq!(s.runs(task["id"].as_i64().unwrap()).await.len(), 2);
    let (_, stored) = s.get(&format!("/tasks/{}", task["id"])).await;
    assert_eq!(
        task, stored,
        "the answer is the task as its second run left it"
    );
}

#[tokio::test]
async fn cursor_pages_are_stable_under_concurrent_inserts() {
    let s = TestServer::start().await;
    for _ in 0..5 {
        s.post(
            "/tasks",
            json!({"name": "p", "disabled": true, "steps": [{"controller": "demo/count"}]}),
        )
        .await;
    }
    let (_, first) = s.get("/tasks?limit=2").await;
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    s.post(
        "/tasks",
        json!({"name": "new", "disabled": true, "steps": [{"controller": "demo/count"}]}),
    )
    .await;
    let (_, second) = s.get(&format!("/tasks?limit=2&cursor={cursor}")).await;
    let ids = |page: &Value| {
        page["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    let (a, b) = (ids(&first), ids(&second));
    assert_eq!(a.len(), 2);
    assert_eq!(b.len(), 2);
    assert!(a[1] > b[0], "no overlap, no gap: {a:?} then {b:?}");
    assert_eq!(a[1] - 1, b[0]);
}

#[tokio::test]
async fn code_upsert_updates_the_existing_task() {
    let s = TestServer::start().await;
    let body = |name: &str| json!({"name": name, "code": "shop:backup", "disabled": true, "steps": [{"controller": "demo/count"}]});
    let (status, first) = s.post("/tasks", body("first")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, second) = s.post("/tasks", body("second")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["id"], second["id"]);
    assert_eq!(second["name"], "second");
    let (_, page) = s.get("/tasks?code=shop:backup").await;
    assert_eq!(page["tasks"].as_array().unwrap().len(), 1);
}

/// Secrets through a create by code and a patch (docs/API.md, "Secrets"):
/// omitted keeps them, `{}` removes them all, an object replaces them; a
/// patch sets (string) or removes (null) one by one.
#[tokio::test]
async fn secrets_are_kept_replaced_or_patched_as_asked() {
    let s = TestServer::start().await;
    let by_code = |secrets: Option<Value>| {
        let mut body = json!({"name": "mail", "code": "shop:mail", "disabled": true,
                              "steps": [{"controller": "demo/count"}]});
        if let Some(secrets) = secrets {
            body["secrets"] = secrets;
        }
        body
    };
    let names = |task: &Value| task["secret_names"].clone();
    let (status, task) = s
        .post(
            "/tasks",
            by_code(Some(json!({"api_key": "k1", "smtp_password": "p1"}))),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let id = task["id"].as_i64().unwrap();

    let (status, task) = s.post("/tasks", by_code(None)).await;
    assert_eq!(status, StatusCode::OK, "{task}");
    assert_eq!(
        names(&task),
        json!(["api_key", "smtp_password"]),
        "omitted: kept"
    );
    let (_, task) = s.post("/tasks", by_code(Some(Value::Null))).await;
    assert_eq!(
        names(&task),
        json!(["api_key", "smtp_password"]),
        "null: kept"
    );

    let (status, task) = s
        .patch(
            &format!("/tasks/{id}"),
            json!({"secrets": {"api_key": "k2", "smtp_password": null, "webhook": "w1"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{task}");
    assert_eq!(names(&task), json!(["api_key", "webhook"]));
    assert!(
        !task.to_string().contains("k2"),
        "values are never returned"
    );
    let (status, body) = s
        .patch(
            &format!("/tasks/{id}"),
            json!({"secrets": {"bad name!": "x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "secrets.bad name!");

    let (_, task) = s.post("/tasks", by_code(Some(json!({"token": "t"})))).await;
    assert_eq!(names(&task), json!(["token"]), "an object replaces them");
    let (_, task) = s.post("/tasks", by_code(Some(json!({})))).await;
    assert_eq!(names(&task), json!([]), "{{}} removes them all");
}

#[tokio::test]
async fn validation_errors_name_the_field() {
    let s = TestServer::start().await;
    let cases = [
        (json!({"name": "x", "steps": []}), "steps"),
        (
            json!({"name": "", "steps": [{"controller": "demo/count"}]}),
            "name",
        ),
        (
            json!({"name": "x", "priority": "urgent", "steps": [{"controller": "demo/count"}]}),
            "priority",
        ),
        (
            json!({"name": "x", "max_attempts": 0, "steps": [{"controller": "demo/count"}]}),
            "max_attempts",
        ),
        (
            json!({"name": "x", "run_interval": -5, "steps": [{"controller": "demo/count"}]}),
            "run_interval",
        ),
        (
            json!({"name": "x", "steps": [{"controller": "no/such/module"}]}),
            "steps[0].controller",
        ),
        (
            json!({"name": "x", "steps": [{"controller": "../etc/passwd"}]}),
            "steps[0].controller",
        ),
        (
            json!({"name": "x", "steps": [{"controller": "demo/count", "max_execution_time": 99999999}]}),
            "steps[0].max_execution_time",
        ),
        (
            json!({"name": "x", "steps": [{"controller": "demo/count", "max_memory": 10}]}),
            "steps[0].max_memory",
        ),
        (
            json!({"name": "x", "bogus": 1, "steps": [{"controller": "demo/count"}]}),
            "",
        ),
        (
            json!({"name": 5, "steps": [{"controller": "demo/count"}]}),
            "name",
        ),
    ];
    for (body, field) in cases {
        let (status, error) = s.post("/tasks", body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} → {error}");
        assert_eq!(error["error"]["code"], "invalid");
        if !field.is_empty() {
            assert_eq!(error["error"]["field"], field, "{body} → {error}");
        }
        assert!(!error["error"]["message"].as_str().unwrap().is_empty());
    }
    // The unknown module error tells what to do.
    let (_, error) = s
        .post(
            "/tasks",
            json!({"name": "x", "steps": [{"controller": "no/such"}]}),
        )
        .await;
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("PUT /api/v1/modules/no/such")
    );
}

#[tokio::test]
async fn malformed_bodies_and_wrong_content_types_are_client_errors() {
    let s = TestServer::start().await;
    let send = |body: &'static str, content_type: &'static str| {
        s.http
            .post(format!("{}/api/v1/tasks", s.url))
            .bearer_auth(&s.token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    assert_eq!(
        send("{not json", "application/json")
            .await
            .unwrap()
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        send("{}", "text/plain").await.unwrap().status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(
        send("[1,2]", "application/json").await.unwrap().status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    // Bodies the server refuses unread, far larger than the socket buffers: the
    // client is still sending when the answer is ready, and must get the answer
    // (not "broken pipe"), on a connection that stays usable.
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(16 << 20));
    for (token, expected) in [
        (s.token.as_str(), StatusCode::PAYLOAD_TOO_LARGE),
        ("not-a-token", StatusCode::UNAUTHORIZED),
        (s.token.as_str(), StatusCode::PAYLOAD_TOO_LARGE),
    ] {
        let response = s
            .http
            .post(format!("{}/api/v1/tasks", s.url))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(huge.clone())
            .send()
            .await
            .expect("the refusal arrives while the body is still being sent");
        assert_eq!(response.status(), expected);
    }
    let (status, _) = s.get("/tasks/not-a-number").await;
    assert!(status.is_client_error());
    let (status, _) = s.get("/tasks?limit=abc").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = s.get("/tasks/999999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn run_cancel_retry_step_run_progress_runs_logs_and_artifacts() {
    let s = TestServer::start().await;
    // A failing task, retried after fixing nothing: the retry resumes.
    let tables = json!({"tables": [{"name": "a", "columns": ["x"], "rows": [[1]]}, {"name": "b", "columns": ["x"], "rows": [[2]]}], "fail_after_tables": 1});
    let (_, task) = s
        .post(
            "/tasks",
            json!({"name": "backup", "max_attempts": 1,
        "steps": [{"controller": "tool/backup/dumptables", "settings": tables}]}),
        )
        .await;
    let id = task["id"].as_i64().unwrap();
    let failed = s.wait_for(id, &["failed"], Duration::from_secs(30)).await;
    assert_eq!(failed["last_result"], "failed");
    let (status, _) = s.post_empty(&format!("/tasks/{id}/retry")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    s.wait_for(id, &["completed"], Duration::from_secs(30))
        .await;
    let runs = s.runs(id).await;
    assert_eq!(runs.len(), 2);
    assert_eq!(
        runs[0]["steps"][0]["result"]["resumed_from"], 1,
        "{}",
        runs[0]
    );
    assert_eq!(runs[1]["steps"][0]["outcome"]["kind"], "returned_error");

    let (status, list) = s.get(&format!("/tasks/{id}/artifacts")).await;
    assert_eq!(status, StatusCode::OK);
    let listed = list["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "backup.sql")
        .unwrap_or_else(|| panic!("backup.sql is listed: {list}"));
    let size = listed["size"].as_u64().unwrap();
    let response = s
        .http
        .get(format!("{}/api/v1/tasks/{id}/artifacts/backup.sql", s.url))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("backup.sql")
    );
    // Streamed chunk by chunk, with its length announced.
    assert_eq!(
        response.headers()["content-length"].to_str().unwrap(),
        size.to_string()
    );
    let body = response.text().await.unwrap();
    assert_eq!(body.len() as u64, size);
    assert!(body.contains("CREATE TABLE"));
    let (status, _) = s.get(&format!("/tasks/{id}/artifacts/missing.txt")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, logs) = s.get(&format!("/tasks/{id}/logs")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!logs["logs"].as_array().unwrap().is_empty());

    let (status, progress) = s.get(&format!("/tasks/{id}/progress")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(progress["status"], "completed");
    assert_eq!(progress["eta_seconds"], 0.0);

    // Run now, then run only its step.
    // A fresh run starts at attempt 1 again, where this step fails on purpose.
    let (status, _) = s.post_empty(&format!("/tasks/{id}/run")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    s.wait_for(id, &["failed"], Duration::from_secs(30)).await;
    assert_eq!(s.runs(id).await.len(), 3);
    let step_id = failed["steps"][0]["id"].as_i64().unwrap();
    let (status, _) = s
        .post_empty(&format!("/tasks/{id}/steps/{step_id}/run"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = s.post_empty(&format!("/tasks/{id}/steps/999999/run")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Cancel a running task: it stops for real.
    let (_, task) = s.post("/tasks", json!({"name": "endless", "steps": [{"controller": "demo/count", "settings": {"to": 1000000000u64, "sleep_ms_per_report": 100}, "max_execution_time": 600}]})).await;
    let id = task["id"].as_i64().unwrap();
    s.wait_for(id, &["running"], Duration::from_secs(30)).await;
    let (status, body) = s.post_empty(&format!("/tasks/{id}/cancel")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    s.wait_for(id, &["cancelled"], Duration::from_secs(10))
        .await;
    let (status, body) = s.post_empty(&format!("/tasks/{id}/cancel")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn module_upload_validation_versions_and_management() {
    let s = TestServer::start().await;
    let (status, module) = s.put_module("my/noop", module_bytes("fixture/noop")).await;
    assert_eq!(status, StatusCode::CREATED, "{module}");
    let first_hash = module["hash"].as_str().unwrap().to_string();
    let (status, module) = s.put_module("my/noop", module_bytes("demo/count")).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(
        module["hash"],
        first_hash.as_str(),
        "a re-upload is a new version"
    );

    for (bytes, needle) in [
        (Vec::new(), "empty"),
        (b"hello".to_vec(), "not a WebAssembly"),
        (b"\0asm\x01\0\0\0".to_vec(), "core WebAssembly module"),
        (module_bytes("fixture/foreign"), "acme:crm/contacts"),
    ] {
        let (status, error) = s.put_module("bad/one", bytes).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
        assert!(
            error["error"]["message"].as_str().unwrap().contains(needle),
            "{error}"
        );
    }
    let (status, _) = s.put_module("Bad/Path", module_bytes("fixture/noop")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = s.put_module("a/..%2Fb", module_bytes("fixture/noop")).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a traversal is refused"
    );

    let (status, list) = s.get("/modules").await;
    assert_eq!(status, StatusCode::OK);
    let paths: Vec<&str> = list["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["path"].as_str().unwrap())
        .collect();
    for example in [
        "demo/count",
        "tool/backup/dumptables",
        "sale/contact/send",
        "catalog/product/import",
        "my/noop",
    ] {
        assert!(paths.contains(&example), "{paths:?}");
    }
    let (status, shown) = s.get("/modules/my/noop").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["tasks"], 0);
    let (status, patched) = s.patch("/modules/my/noop", json!({"active": false})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["active"], false);
    let (status, _) = s.delete("/modules/my/noop").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = s.get("/modules/my/noop").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // In use by a scheduled task: refused with a way out.
    s.post("/tasks", json!({"name": "later", "start_at": "2999-01-01T00:00:00Z", "steps": [{"controller": "demo/count"}]})).await;
    let (status, error) = s.delete("/modules/demo/count").await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
}

#[tokio::test]
async fn an_upload_above_the_limit_is_413() {
    let s = TestServer::start_with(&["--max-module-bytes", "1000", "--no-examples"]).await;
    let (status, error) = s.put_module("big/one", module_bytes("demo/count")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{error}");
}

#[tokio::test]
async fn every_route_checks_its_role() {
    let s = TestServer::start().await;
    let (_, viewer) = s
        .post("/tokens", json!({"name": "viewer", "role": "viewer"}))
        .await;
    let (_, operator) = s
        .post("/tokens", json!({"name": "op", "role": "operator"}))
        .await;
    let viewer = viewer["token"].as_str().unwrap().to_string();
    let operator = operator["token"].as_str().unwrap().to_string();
    let (_, task) = s
        .post(
            "/tasks",
            json!({"name": "t", "disabled": true, "steps": [{"controller": "demo/count"}]}),
        )
        .await;
    let id = task["id"].as_i64().unwrap();
    let step = task["steps"][0]["id"].as_i64().unwrap();

    // (method, path, body, weakest role allowed)
    let routes: Vec<(Method, String, Option<Value>, &str)> = vec![
        (Method::GET, "/tasks".into(), None, "viewer"),
        (Method::GET, format!("/tasks/{id}"), None, "viewer"),
        (Method::GET, format!("/tasks/{id}/progress"), None, "viewer"),
        (Method::GET, format!("/tasks/{id}/runs"), None, "viewer"),
        (Method::GET, format!("/tasks/{id}/logs"), None, "viewer"),
        (
            Method::GET,
            format!("/tasks/{id}/artifacts"),
            None,
            "viewer",
        ),
        (Method::GET, "/modules".into(), None, "viewer"),
        (Method::GET, "/modules/demo/count".into(), None, "viewer"),
        (Method::GET, "/stats".into(), None, "viewer"),
        (
            Method::POST,
            "/tasks".into(),
            Some(json!({"name": "x", "disabled": true, "steps": [{"controller": "demo/count"}]})),
            "operator",
        ),
        (
            Method::PATCH,
            format!("/tasks/{id}"),
            Some(json!({"name": "y"})),
            "operator",
        ),
        (Method::POST, format!("/tasks/{id}/run"), None, "operator"),
        (
            Method::POST,
            format!("/tasks/{id}/cancel"),
            None,
            "operator",
        ),
        (Method::POST, format!("/tasks/{id}/retry"), None, "operator"),
        (
            Method::POST,
            format!("/tasks/{id}/steps/{step}/run"),
            None,
            "operator",
        ),
        (
            Method::PATCH,
            format!("/tasks/{id}/steps/{step}"),
            Some(json!({"settings": {}})),
            "operator",
        ),
        (
            Method::POST,
            format!("/tasks/{id}/steps"),
            Some(json!({"controller": "demo/count"})),
            "operator",
        ),
        (
            Method::PUT,
            format!("/tasks/{id}/steps/order"),
            Some(json!({"steps": [step]})),
            "operator",
        ),
        (
            Method::DELETE,
            format!("/tasks/{id}/steps/999999"),
            None,
            "operator",
        ),
        (
            Method::DELETE,
            "/tasks?finished_before=2000-01-01T00:00:00Z".into(),
            None,
            "admin",
        ),
        (
            Method::PATCH,
            "/modules/demo/count".into(),
            Some(json!({"active": true})),
            "admin",
        ),
        (Method::GET, "/tokens".into(), None, "admin"),
        (
            Method::POST,
            "/tokens".into(),
            Some(json!({"name": "z", "role": "viewer"})),
            "admin",
        ),
    ];
    let rank = |role: &str| {
        ["viewer", "operator", "admin"]
            .iter()
            .position(|r| *r == role)
            .unwrap()
    };
    for (method, path, body, needed) in routes {
        let (status, _) = s.request(method.clone(), &path, None, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a token"
        );
        let (status, _) = s
            .request(
                method.clone(),
                &path,
                Some("sw_not_a_real_token"),
                body.clone(),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} with a bad token"
        );
        for (role, token) in [("viewer", &viewer), ("operator", &operator)] {
            let (status, body) = s
                .request(method.clone(), &path, Some(token), body.clone())
                .await;
            if rank(role) < rank(needed) {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {path} as {role}: {body}"
                );
            } else {
                assert_ne!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {path} as {role}: {body}"
                );
                assert_ne!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} as {role}"
                );
            }
        }
    }
    let response = s
        .http
        .put(format!("{}/api/v1/modules/x/y", s.url))
        .bearer_auth(&operator)
        .body(module_bytes("fixture/noop"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn tokens_are_created_listed_and_revoked() {
    let s = TestServer::start().await;
    let (status, created) = s
        .post("/tokens", json!({"name": "ci", "role": "operator"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let token = created["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("sw_"));
    let (status, list) = s.get("/tokens").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !list.to_string().contains(&token),
        "tokens are never shown again"
    );
    let (status, _) = s.request(Method::GET, "/tasks", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s.delete(&format!("/tokens/{}", created["id"])).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = s.request(Method::GET, "/tasks", Some(&token), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The first token is stored hashed and the file holding it is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.dir.join("admin-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn cleanup_stats_health_metrics_openapi_and_the_dashboard() {
    let s = TestServer::start().await;
    s.upload("fixture/noop").await;
    let (_, task) = s
        .post(
            "/tasks?wait=10s",
            json!({"name": "done", "steps": [{"controller": "fixture/noop"}]}),
        )
        .await;
    assert_eq!(task["status"], "completed");
    let (status, stats) = s.get("/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["tasks"]["completed"], 1);
    let (status, deleted) = s
        .delete("/tasks?finished_before=2999-01-01T00:00:00Z&status=completed")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deleted["deleted"], 1);
    let (status, _) = s.delete("/tasks?finished_before=yesterday").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let (status, health) = s.request(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "ok");
    let (status, _) = s.request(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "metrics need a token");
    let (status, metrics) = s.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("stepwise_tasks{status=\"completed\"}")
    );

    let (status, doc) = s
        .request(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"].as_str().unwrap().chars().next(), Some('3'));
    // Every documented path is routed (none answers "no such route").
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{id}", "1")
            .replace("{step_id}", "1")
            .replace("{delivery_id}", "1")
            .replace("{path}", "demo/count")
            .replace("{name}", "x.txt");
        for method in item.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (status, body) = s
                .request(method.clone(), &concrete, Some(&s.token), None)
                .await;
            let unrouted = status == StatusCode::NOT_FOUND
                && body["error"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("no such");
            assert!(!unrouted, "{method} {path} is documented but not routed");
            assert!(!status.is_server_error(), "{method} {path} → {status}");
        }
    }

    let response = s.http.get(format!("{}/", s.url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let response = s
        .http
        .get(format!("{}/app.js", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn performance_stats_and_alerts_after_runs() {
    let s = TestServer::start().await;
    s.upload("fixture/noop").await;
    s.upload("fixture/fail").await;

    // Nothing ran: no rate, no module, every hour of the window at zero, no alert.
    let (status, perf) = s.get("/stats/performance").await;
    assert_eq!(status, StatusCode::OK, "{perf}");
    assert_eq!(perf["hours"], 24);
    assert_eq!(perf["runs"], 0);
    assert_eq!(perf["success_rate"], Value::Null);
    assert_eq!(perf["average_duration_seconds"], Value::Null);
    assert_eq!(perf["modules"], json!([]));
    let hours = perf["throughput"].as_array().unwrap();
    assert_eq!(hours.len(), 25, "the hours from 24 h ago to now");
    assert!(
        hours
            .iter()
            .all(|h| h["completed"] == 0 && h["failed"] == 0)
    );
    let (status, alerts) = s.get("/alerts").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(alerts, json!({"alerts": []}));

    // Two successes, then four failures in a row (one attempt each).
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(
            s.create_step_task("fixture/noop", json!({}), json!({}))
                .await,
        );
    }
    for id in &ids {
        s.wait_for(*id, &["completed"], Duration::from_secs(30))
            .await;
    }
    for _ in 0..4 {
        let id = s
            .create_step_task("fixture/fail", json!({}), json!({"max_attempts": 1}))
            .await;
        s.wait_for(id, &["failed"], Duration::from_secs(30)).await;
    }

    let (status, perf) = s.get("/stats/performance?hours=1").await;
    assert_eq!(status, StatusCode::OK, "{perf}");
    assert_eq!(perf["hours"], 1);
    assert_eq!(
        (&perf["runs"], &perf["completed"], &perf["failed"]),
        (&json!(6), &json!(2), &json!(4)),
        "{perf}"
    );
    let rate = perf["success_rate"].as_f64().unwrap();
    assert!((rate - 2.0 / 6.0).abs() < 1e-9, "{perf}");
    assert!(perf["average_duration_seconds"].as_f64().unwrap() >= 0.0);
    let modules = perf["modules"].as_array().unwrap();
    let names: Vec<&str> = modules
        .iter()
        .map(|m| m["module"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fixture/fail", "fixture/noop"], "{perf}");
    let (fail, noop) = (&modules[0], &modules[1]);
    assert_eq!(
        (&fail["runs"], &fail["success_rate"]),
        (&json!(4), &json!(0.0))
    );
    assert_eq!(
        (&noop["runs"], &noop["success_rate"]),
        (&json!(2), &json!(1.0))
    );
    for module in modules {
        for field in ["average_duration_seconds", "average_fuel"] {
            assert!(module[field].as_f64().unwrap() >= 0.0, "{module}");
        }
        assert!(
            module["average_peak_memory"].as_f64().unwrap() > 0.0,
            "{module}"
        );
    }
    let hours = perf["throughput"].as_array().unwrap();
    assert_eq!(hours.len(), 2, "this hour and the one before: {perf}");
    let sum = |key: &str| hours.iter().map(|h| h[key].as_i64().unwrap()).sum::<i64>();
    assert_eq!((sum("completed"), sum("failed")), (2, 4));
    let last = hours.last().unwrap()["hour"].as_str().unwrap();
    assert!(last.ends_with(":00:00Z"), "an RFC 3339 hour start: {last}");

    // 2 of 6 is under half: critical; fixture/fail failed 4 times in a row.
    let (status, body) = s.get("/alerts").await;
    assert_eq!(status, StatusCode::OK);
    let alerts = body["alerts"].as_array().unwrap();
    let kinds: Vec<(&str, &str)> = alerts
        .iter()
        .map(|a| (a["kind"].as_str().unwrap(), a["severity"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("success_rate", "critical"), ("failing_module", "warning")],
        "{body}"
    );
    let message = alerts[0]["message"].as_str().unwrap();
    assert!(message.contains("only 33% of the 6 runs"), "{message}");
    let message = alerts[1]["message"].as_str().unwrap();
    assert!(
        message.contains("module `fixture/fail` failed its last 4 step runs")
            && message.contains("failed on purpose")
            && message.contains("PUT /api/v1/modules/fixture/fail"),
        "{message}"
    );

    // Viewers may read both; no token or a bad one is 401 (no role is below viewer).
    let (_, viewer) = s
        .post("/tokens", json!({"name": "viewer", "role": "viewer"}))
        .await;
    let viewer = viewer["token"].as_str().unwrap().to_string();
    for path in ["/stats/performance", "/alerts"] {
        let (status, _) = s.request(Method::GET, path, Some(&viewer), None).await;
        assert_eq!(status, StatusCode::OK, "{path} as a viewer");
        let (status, body) = s.request(Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized");
        let (status, _) = s
            .request(Method::GET, path, Some("sw_not_a_real_token"), None)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} with a bad token");
    }
    for query in ["hours=0", "hours=721", "hours=day", "hour=5"] {
        let (status, body) = s.get(&format!("/stats/performance?{query}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert_eq!(body["error"]["code"], "invalid", "{query}: {body}");
    }
    let (_, body) = s.get("/stats/performance?hours=721").await;
    assert_eq!(body["error"]["field"], "hours");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("between 1 and 720"),
        "{body}"
    );
}

#[tokio::test]
async fn concurrent_creates_are_committed_together_and_each_answered() {
    let s = TestServer::start().await;
    let creates = (0..60).map(|i| {
        let body = if i % 20 == 0 {
            json!({"name": format!("shared {i}"), "code": "same-code", "disabled": true, "steps": [{"controller": "demo/count"}]})
        } else {
            json!({"name": format!("task {i}"), "disabled": true, "steps": [{"controller": "demo/count"}]})
        };
        let s = &s;
        async move { s.post("/tasks", body).await }
    });
    let results = futures::future::join_all(creates).await;
    let mut ids = std::collections::HashSet::new();
    let mut created_by_code = 0;
    for (status, task) in &results {
        assert!(status.is_success(), "{status} {task}");
        if task["code"] == "same-code" {
            created_by_code += usize::from(*status == StatusCode::CREATED);
        } else {
            assert!(ids.insert(task["id"].as_i64().unwrap()), "distinct ids");
        }
    }
    assert_eq!(
        created_by_code, 1,
        "one task per code, the others update it"
    );
    let (_, page) = s.get("/tasks?limit=500").await;
    assert_eq!(page["tasks"].as_array().unwrap().len(), 58);
}

#[tokio::test]
async fn secret_values_are_masked_wherever_a_step_could_echo_them() {
    let s = TestServer::start().await;
    s.upload("fixture/echosecret").await;
    let secret = "Tr0ub4dor-and-3";
    // The first step echoes the value into its output, the second into its error;
    // both into a log line, stdout, stderr, a progress message and an artifact name.
    let (status, task) = s
        .post(
            "/tasks",
            json!({"name": "careless", "max_attempts": 1, "secrets": {"api_key": secret},
                "steps": [
                    {"controller": "fixture/echosecret", "settings": {"secret": "api_key"}},
                    {"controller": "fixture/echosecret", "settings": {"secret": "api_key", "fail": true}}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let id = task["id"].as_i64().unwrap();
    let task = s.wait_for(id, &["failed"], Duration::from_secs(60)).await;

    let (_, logs) = s.get(&format!("/tasks/{id}/logs")).await;
    let (_, progress) = s.get(&format!("/tasks/{id}/progress")).await;
    let (_, artifacts) = s.get(&format!("/tasks/{id}/artifacts")).await;
    let (_, runs) = s.get(&format!("/tasks/{id}/runs")).await;
    for (what, body) in [
        ("task", &task),
        ("logs", &logs),
        ("progress", &progress),
        ("artifacts", &artifacts),
        ("runs", &runs),
    ] {
        assert!(
            !body.to_string().contains(secret),
            "the secret is in the {what}: {body}"
        );
    }
    assert!(
        !s.log_text().contains(secret),
        "the secret is in the server log"
    );

    let messages: Vec<&str> = logs["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    for line in ["the secret is ***", "stdout: ***", "stderr: ***"] {
        assert!(messages.contains(&line), "no `{line}` in {messages:?}");
    }
    let steps = &runs["runs"][0]["steps"];
    assert_eq!(steps[0]["result"], json!({"echoed": "***"}), "{steps}");
    assert_eq!(steps[0]["message"], "working with ***", "{steps}");
    assert!(
        steps[1]["error"]
            .as_str()
            .unwrap()
            .contains("login with *** failed"),
        "{steps}"
    );
    assert_eq!(steps[1]["outcome"]["message"], "login with *** failed");
    assert!(
        task["message"]
            .as_str()
            .unwrap()
            .contains("login with *** failed"),
        "{task}"
    );
    let names: Vec<&str> = artifacts["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"dump-***.txt"), "{names:?}");
    // The masked name is what a user downloads it by.
    let response = s
        .http
        .get(format!(
            "{}/api/v1/tasks/{id}/artifacts/dump-***.txt",
            s.url
        ))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "data");
}

#[tokio::test]
async fn a_number_where_a_text_is_expected_names_the_field_and_the_choices() {
    let s = TestServer::start().await;
    let cases = [
        (
            json!({"name": "x", "steps": [{"controller": "demo/count", "status": 1}]}),
            "steps[0].status",
            "scheduled, disabled",
        ),
        (
            json!({"name": "x", "priority": 2, "steps": [{"controller": "demo/count"}]}),
            "priority",
            "low, normal, high",
        ),
        (
            json!({"name": "x", "steps": [{"controller": "demo/count", "status": "paused"}]}),
            "steps[0].status",
            "scheduled, disabled",
        ),
    ];
    for (body, field, choices) in cases {
        let (status, error) = s.post("/tasks", body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} → {error}");
        assert_eq!(error["error"]["field"], field, "{body} → {error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(choices), "{body} → {message}");
    }
}

#[tokio::test]
async fn a_zone_less_start_at_is_read_as_utc_in_create_and_patch() {
    let s = TestServer::start().await;
    let at = |value: &Value| {
        value
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    };
    let (status, task) = s
        .post(
            "/tasks",
            json!({"name": "seeded", "start_at": "2030-12-03 00:00:00",
                "steps": [{"controller": "demo/count"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    assert_eq!(at(&task["start_at"]), at(&json!("2030-12-03T00:00:00Z")));
    assert_eq!(at(&task["next_run_at"]), at(&json!("2030-12-03T00:00:00Z")));
    let id = task["id"].as_i64().unwrap();

    let (status, task) = s
        .patch(
            &format!("/tasks/{id}"),
            json!({"start_at": "2031-01-02 03:04:05"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{task}");
    assert_eq!(at(&task["start_at"]), at(&json!("2031-01-02T03:04:05Z")));

    for (path, body) in [
        (
            "/tasks".to_string(),
            json!({"name": "x", "start_at": "03/12/2026", "steps": [{"controller": "demo/count"}]}),
        ),
        (format!("/tasks/{id}"), json!({"start_at": "next tuesday"})),
    ] {
        let (status, error) = if path == "/tasks" {
            s.post(&path, body.clone()).await
        } else {
            s.patch(&path, body.clone()).await
        };
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} → {error}");
        assert_eq!(error["error"]["field"], "start_at", "{body} → {error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains("YYYY-MM-DD HH:MM:SS"), "{message}");
    }
}

#[tokio::test]
async fn a_task_waiting_for_a_deactivated_module_says_so_until_it_is_activated() {
    let s = TestServer::start().await;
    let (status, _) = s
        .patch("/modules/demo/count", json!({"active": false}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let id = s
        .create_step_task("demo/count", json!({"to": 10}), json!({}))
        .await;
    let waiting = "waiting: module `demo/count` is deactivated; activate it with PATCH /api/v1/modules/demo/count";
    // The scheduler polls every 50 ms: long enough to have claimed it if it could.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, task) = s.get(&format!("/tasks/{id}")).await;
    assert_eq!(task["status"], "scheduled", "{task}");
    assert!(
        task["message"].as_str().unwrap_or("").starts_with(waiting),
        "{task}"
    );
    let (_, page) = s.get("/tasks").await;
    let listed = page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap();
    assert_eq!(listed["message"], task["message"]);

    let (status, _) = s
        .patch("/modules/demo/count", json!({"active": true}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let done = s
        .wait_for(id, &["completed"], Duration::from_secs(30))
        .await;
    assert!(
        !done["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("waiting"),
        "{done}"
    );
}

#[tokio::test]
async fn a_panic_is_named_in_the_step_error_and_the_task_message() {
    let s = TestServer::start().await;
    s.upload("fixture/panic").await;
    let id = s
        .create_step_task("fixture/panic", json!({}), json!({"max_attempts": 1}))
        .await;
    let task = s.wait_for(id, &["failed"], Duration::from_secs(30)).await;
    let runs = s.runs(id).await;
    let step = &runs[0]["steps"][0];
    assert_eq!(step["outcome"]["kind"], "trapped", "{step}");
    assert_eq!(step["outcome"]["trap"], "unreachable_code_reached");
    let error = step["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("panicked: fixture panicked on purpose (at fixture/panic/src/lib.rs:"),
        "{error}"
    );
    let message = task["message"].as_str().unwrap_or_default();
    assert!(message.contains("fixture panicked on purpose"), "{task}");
}

#[tokio::test]
async fn oversized_checkpoints_and_artifacts_end_the_step_naming_the_cap() {
    let s = TestServer::start().await;
    s.upload("fixture/oversized").await;
    let mib = 1u64 << 20;
    let cases = [
        // Past wasmtime's own 128 MiB limit on what one host call may pass.
        (
            json!({"checkpoint_bytes": 160 * mib}),
            "checkpoint_cap",
            160 * mib,
            16 * mib,
        ),
        // One write over the cap: refused before it is copied.
        (
            json!({"artifact_bytes": 80 * mib}),
            "artifact_cap",
            80 * mib,
            64 * mib,
        ),
        // Appends that together pass the cap: refused by the store.
        (
            json!({"artifact_bytes": 80 * mib, "chunk_bytes": 40 * mib}),
            "artifact_cap",
            80 * mib,
            64 * mib,
        ),
    ];
    for (settings, kind, size, limit) in cases {
        let (status, task) = s
            .post(
                "/tasks",
                json!({"name": "oversized", "max_attempts": 1, "steps": [{
                    "controller": "fixture/oversized", "settings": settings,
                    "max_execution_time": 30, "max_memory": 512 * mib}]}),
            )
            .await;
        assert!(status.is_success(), "{task}");
        let id = task["id"].as_i64().unwrap();
        s.wait_for(id, &["failed"], Duration::from_secs(60)).await;
        let runs = s.runs(id).await;
        let step = &runs[0]["steps"][0];
        assert_eq!(step["outcome"]["kind"], kind, "{settings}: {step}");
        assert_eq!(step["outcome"]["size_bytes"], size, "{settings}: {step}");
        assert_eq!(step["outcome"]["limit_bytes"], limit, "{settings}: {step}");
        let cap = kind.replace('_', " ");
        let error = step["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&format!("{size} bytes, over the {cap} of {limit} bytes")),
            "{settings}: {error}"
        );
    }
}
