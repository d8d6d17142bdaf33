//! What a shop's operators do every day, through the real binary: reach a
//! task by its code (a plugin's uninstall deletes its task by code), run
//! every scheduled task now, look at and clear the compiled-code cache, and
//! hand a user the focus page of one task (its browser side is in browser.rs).

mod common;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// A token of this role, for the role checks.
async fn token(s: &TestServer, role: &str) -> String {
    let (status, created) = s
        .post(
            "/tokens",
            json!({"name": format!("{role}-token"), "role": role}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["token"].as_str().unwrap().to_string()
}

/// A one-step `demo/count` task that is not due before the year 2999.
fn later(name: &str, code: Option<&str>) -> Value {
    json!({
        "name": name, "code": code, "start_at": "2999-01-01T00:00:00Z",
        "steps": [{"controller": "demo/count", "settings": {"to": 1000}}]
    })
}

#[tokio::test]
async fn a_task_is_read_run_and_deleted_by_its_code() {
    let s = TestServer::start().await;
    let (status, task) = s
        .post("/tasks", later("Sync prices", Some("shop.sync:prices")))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let id = task["id"].as_i64().unwrap();

    let (status, got) = s.get("/tasks/by-code/shop.sync:prices").await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(
        (got["id"].as_i64(), got["status"].as_str()),
        (Some(id), Some("scheduled"))
    );

    let (status, ran) = s
        .post_empty("/tasks/by-code/shop.sync:prices/run?wait=20s")
        .await;
    assert_eq!(status, StatusCode::OK, "{ran}");
    assert_eq!(
        (ran["id"].as_i64(), ran["status"].as_str()),
        (Some(id), Some("completed"))
    );

    // A viewer reads by code but neither runs nor deletes.
    let viewer = token(&s, "viewer").await;
    let by_code = "/tasks/by-code/shop.sync:prices";
    let (status, _) = s.request(Method::GET, by_code, Some(&viewer), None).await;
    assert_eq!(status, StatusCode::OK);
    for (method, path) in [
        (Method::DELETE, by_code.to_string()),
        (Method::POST, format!("{by_code}/run")),
    ] {
        let (status, body) = s.request(method.clone(), &path, Some(&viewer), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {body}");
    }

    let (status, _) = s.delete(by_code).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = s.get(&format!("/tasks/{id}")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the task is gone with its code"
    );
    for (method, path) in [
        (Method::GET, by_code.to_string()),
        (Method::DELETE, by_code.to_string()),
        (Method::POST, format!("{by_code}/run")),
    ] {
        let (status, body) = s.request(method.clone(), &path, Some(&s.token), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("shop.sync:prices"),
            "{body}"
        );
    }

    // A code that could never be one names the field.
    let (status, body) = s.get("/tasks/by-code/not*a*code").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "code");
}

#[tokio::test]
async fn run_due_makes_every_scheduled_task_due_now() {
    let s = TestServer::start().await;
    let mut ids = Vec::new();
    for name in ["nightly export", "weekly report"] {
        let (_, task) = s.post("/tasks", later(name, None)).await;
        ids.push(task["id"].as_i64().unwrap());
    }
    let mut off = later("switched off", None);
    off["disabled"] = json!(true);
    let (_, off) = s.post("/tasks", off).await;

    let operator = token(&s, "operator").await;
    let viewer = token(&s, "viewer").await;
    let (status, _) = s
        .request(Method::POST, "/tasks/run-due", Some(&viewer), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a viewer runs nothing");
    let (status, due) = s
        .request(Method::POST, "/tasks/run-due", Some(&operator), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{due}");
    assert_eq!(due, json!({"due": 2}));

    for id in ids {
        s.wait_for(id, &["completed"], LONG).await;
    }
    let (_, off) = s.get(&format!("/tasks/{}", off["id"])).await;
    assert_eq!(off["status"], "disabled", "a disabled task stays off");
    let (_, due) = s.post_empty("/tasks/run-due").await;
    assert_eq!(due, json!({"due": 0}), "finished tasks are not scheduled");
}

async fn cache_stats(s: &TestServer) -> Value {
    let (status, stats) = s.get("/cache").await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    stats
}

#[tokio::test]
async fn the_compiled_code_cache_is_counted_and_cleared_under_a_running_step() {
    let s = TestServer::start().await;
    s.upload("fixture/noop").await;
    let before = cache_stats(&s).await;
    assert!(before["entries"].as_u64().unwrap() >= 1, "{before}");
    assert!(before["bytes"].as_u64().unwrap() > 0, "{before}");
    assert!(
        before["misses"].as_u64().unwrap() >= 1,
        "the upload compiled: {before}"
    );
    assert!(before["node_id"].is_string(), "{before}");

    for role in ["viewer", "operator"] {
        let token = token(&s, role).await;
        for method in [Method::GET, Method::DELETE] {
            let (status, _) = s
                .request(method.clone(), "/cache", Some(&token), None)
                .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} /cache as {role}");
        }
    }

    // A slow first step runs through the clear; the second step's module
    // is compiled again when it starts.
    let (status, task) = s
        .post(
            "/tasks",
            json!({"name": "through a clear", "steps": [
                {"controller": "demo/count",
                 "settings": {"to": 400, "report_every": 1, "sleep_ms_per_report": 10}},
                {"controller": "fixture/noop"}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let id = task["id"].as_i64().unwrap();
    s.wait_for(id, &["running"], LONG).await;

    let (status, cleared) = s.delete("/cache").await;
    assert_eq!(status, StatusCode::OK, "{cleared}");
    assert!(cleared["entries"].as_u64().unwrap() >= 1, "{cleared}");
    assert!(cleared["bytes"].as_u64().unwrap() > 0, "{cleared}");
    let after = cache_stats(&s).await;
    assert_eq!(
        (after["entries"].as_u64(), after["bytes"].as_u64()),
        (Some(0), Some(0)),
        "{after}"
    );

    let done = s.wait_for(id, &["completed", "failed"], LONG).await;
    assert_eq!(done["status"], "completed", "{done}");

    // After the clear every module is compiled again when next run: a miss
    // (for the second step, or else for this task), and the cache fills.
    let (_, again) = s
        .post(
            "/tasks?wait=20s",
            json!({"name": "after the clear", "steps": [{"controller": "fixture/noop"}]}),
        )
        .await;
    assert_eq!(again["status"], "completed", "{again}");
    let refilled = cache_stats(&s).await;
    assert!(
        refilled["misses"].as_u64() > after["misses"].as_u64(),
        "after {after}, now {refilled}"
    );
    assert!(refilled["entries"].as_u64().unwrap() >= 1, "{refilled}");
}

/// The focus page as a host application gets it: its framing policy, the
/// checked redirect written into it, and the refusals.
#[tokio::test]
async fn the_focus_page_may_be_framed_by_embed_origins_and_redirects_only_there() {
    let s = TestServer::start_with(&[
        "--embed-origin",
        "https://shop.example,http://localhost:8080",
    ])
    .await;
    let get = |path: String| {
        let http = s.http.clone();
        let url = format!("{}{path}", s.url);
        async move { http.get(url).send().await.unwrap() }
    };

    let page = get(
        "/focus/7?redirect=https%3A%2F%2Fshop.example%2Fadmin%3Fa%3D1%26b%3D%22&target=frame"
            .into(),
    )
    .await;
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    assert_eq!(
        headers["content-security-policy"],
        "frame-ancestors 'self' https://shop.example http://localhost:8080"
    );
    assert!(
        headers.get("x-frame-options").is_none(),
        "the focus page may be framed"
    );
    let html = page.text().await.unwrap();
    assert!(
        html.contains(r#"<meta name="stepwise-task" content="7">"#),
        "{html}"
    );
    assert!(
        html.contains(r#"content="https://shop.example/admin?a=1&amp;b=&quot;""#),
        "the redirect is written escaped: {html}"
    );
    assert!(html.contains(r#"<meta name="stepwise-redirect-target" content="frame">"#));

    // The dashboard may not be framed at all.
    let dashboard = get("/".into()).await;
    assert_eq!(dashboard.headers()["x-frame-options"], "DENY");
    assert_eq!(
        dashboard.headers()["content-security-policy"],
        "frame-ancestors 'none'"
    );

    for (query, field) in [
        ("redirect=https%3A%2F%2Fevil.example%2F", "redirect"),
        ("redirect=%2F%2Fevil.example", "redirect"),
        ("redirect=javascript%3Aalert(1)", "redirect"),
        ("token=sw_x", "token"),
        ("target=window", "target"),
    ] {
        let response = get(format!("/focus/7?{query}")).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    let response = get("/focus/0".into()).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_server_refuses_an_embed_origin_that_is_not_one() {
    let out = std::process::Command::new(common::BIN)
        .args([
            "serve",
            "--embed-origin",
            "https://shop.example/admin",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not an origin like https://shop.example"),
        "{stderr}"
    );
}
