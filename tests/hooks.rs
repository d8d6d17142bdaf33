//! Completion hooks through the real server: a task with a `hook_url` makes
//! the server POST a signed JSON body to it when a run ends; the receiver
//! here is a real HTTP server in the test that checks the signature. A
//! failing receiver is tried again with growing waits (shortened with
//! `--hook-retry-base-ms`), a dead one is given up on, a delivery left
//! pending survives a crash, hosts that are not allowed are refused at
//! create, and two nodes sharing a PostgreSQL database send each hook
//! once. Every try shows in the run's history.

mod common;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::post;
use common::TestServer;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

/// A hook receiver on a random loopback port: answers each POST with the
/// next status of its script (the last one from then on).
#[derive(Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<Vec<u16>>>,
    url: String,
}

impl Receiver {
    async fn start(script: &[u16]) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let url = format!("http://{}/stepwise/done", listener.local_addr().unwrap());
        let receiver = Receiver {
            got: Arc::default(),
            script: Arc::new(Mutex::new(script.to_vec())),
            url,
        };
        let app = axum::Router::new()
            .route("/stepwise/done", post(receive))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    /// Answer every POST from now on with `status`.
    fn answer(&self, status: u16) {
        *self.script.lock().unwrap() = vec![status];
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Wait until `count` POSTs came; returns them.
    async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Received> {
        let started = Instant::now();
        loop {
            let got = self.got();
            if got.len() >= count {
                return got;
            }
            assert!(
                started.elapsed() < timeout,
                "the receiver got {} POSTs, not {count}, in {timeout:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> AxumStatus {
    receiver.got.lock().unwrap().push(Received {
        headers,
        body,
        at: Instant::now(),
    });
    let mut script = receiver.script.lock().unwrap();
    let status = if script.len() > 1 {
        script.remove(0)
    } else {
        script[0]
    };
    AxumStatus::from_u16(status).unwrap()
}

fn header<'a>(received: &'a Received, name: &str) -> &'a str {
    received
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

fn body(received: &Received) -> Value {
    serde_json::from_slice(&received.body).expect("a JSON body")
}

/// A one-step task that completes at once, with this hook.
async fn hooked_task(s: &TestServer, hook_url: &str) -> i64 {
    s.create_step_task(
        "demo/count",
        json!({"to": 10}),
        json!({"name": "export", "code": "shop-export", "hook_url": hook_url}),
    )
    .await
}

/// The task's only run's deliveries, once the first is no longer pending.
async fn settled_deliveries(s: &TestServer, id: i64, timeout: Duration) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let runs = s.runs(id).await;
        if let Some(run) = runs.first() {
            let deliveries = run["hook_deliveries"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if deliveries.first().is_some_and(|d| d["status"] != "pending") {
                return deliveries;
            }
        }
        assert!(
            started.elapsed() < timeout,
            "no settled delivery in {timeout:?}: {runs:?}\n{}",
            s.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn codes(delivery: &Value) -> Vec<Value> {
    delivery["attempt_log"]
        .as_array()
        .expect("attempt_log")
        .iter()
        .map(|a| a["status_code"].clone())
        .collect()
}

#[tokio::test]
async fn a_run_end_posts_a_signed_hook_shown_in_the_run_history() {
    let receiver = Receiver::start(&[200]).await;
    let s = TestServer::start().await;
    let id = hooked_task(&s, &receiver.url).await;
    let (_, task) = s.get(&format!("/tasks/{id}")).await;
    assert_eq!(task["hook_url"], receiver.url.as_str());
    s.wait_for(id, &["completed"], Duration::from_secs(30))
        .await;

    let got = receiver.wait_for(1, Duration::from_secs(30)).await;
    let post = &got[0];
    assert_eq!(header(post, "content-type"), "application/json");
    assert_eq!(header(post, "x-stepwise-event"), "run.ended");
    assert_eq!(header(post, "x-stepwise-attempt"), "1");
    let (status, key) = s.get("/hooks/signing-key").await;
    assert_eq!(status, StatusCode::OK, "{key}");
    assert_eq!(key["algorithm"], "HMAC-SHA256");
    let key = hex::decode(key["key"].as_str().unwrap()).expect("hex key");
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).unwrap();
    mac.update(&post.body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(
        header(post, "x-stepwise-signature"),
        expected,
        "signed body"
    );
    let mut wrong = <Hmac<sha2::Sha256> as Mac>::new_from_slice(b"another key").unwrap();
    wrong.update(&post.body);
    assert_ne!(
        header(post, "x-stepwise-signature"),
        format!("sha256={}", hex::encode(wrong.finalize().into_bytes()))
    );

    let sent = body(post);
    let runs = s.runs(id).await;
    let run = &runs[0];
    assert_eq!(sent["event"], "run.ended");
    assert_eq!(
        sent["task"],
        json!({"id": id, "name": "export", "code": "shop-export"})
    );
    assert_eq!(sent["run"]["id"], run["id"]);
    assert_eq!(sent["run"]["status"], "completed");
    assert_eq!(sent["run"]["trigger"], "schedule");
    assert_eq!(sent["run"]["attempt"], 1);
    assert!(sent["run"]["finished_at"].is_string(), "{sent}");
    assert!(sent["sent_at"].is_string(), "{sent}");
    let timestamp: i64 = header(post, "x-stepwise-timestamp").parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - timestamp).abs() < 60);

    let deliveries = settled_deliveries(&s, id, Duration::from_secs(10)).await;
    assert_eq!(deliveries.len(), 1);
    let delivery = &deliveries[0];
    assert_eq!(sent["delivery"]["id"], delivery["id"]);
    assert_eq!(
        header(post, "x-stepwise-delivery"),
        delivery["id"].to_string()
    );
    assert_eq!(delivery["status"], "delivered");
    assert_eq!(delivery["url"], receiver.url.as_str());
    assert_eq!(delivery["attempts"], 1);
    assert_eq!(codes(delivery), [json!(200)]);
    assert!(delivery["attempt_log"][0]["error"].is_null());
    assert!(delivery["attempt_log"][0]["duration_ms"].as_i64().unwrap() >= 0);

    // Only an admin reads the key.
    let (status, token) = s
        .post("/tokens", json!({"name": "ops", "role": "operator"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{token}");
    let (status, _) = s
        .request(
            reqwest::Method::GET,
            "/hooks/signing-key",
            token["token"].as_str(),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_failing_receiver_is_tried_again_with_growing_waits() {
    let receiver = Receiver::start(&[500, 503, 200]).await;
    let s = TestServer::start_with(&["--hook-retry-base-ms", "200"]).await;
    let id = hooked_task(&s, &receiver.url).await;
    let got = receiver.wait_for(3, Duration::from_secs(30)).await;
    let first_wait = got[1].at - got[0].at;
    let second_wait = got[2].at - got[1].at;
    assert!(first_wait >= Duration::from_millis(190), "{first_wait:?}");
    assert!(
        second_wait >= Duration::from_millis(1150),
        "the second wait is six times the first: {second_wait:?}"
    );
    let ids: Vec<&str> = got
        .iter()
        .map(|r| header(r, "x-stepwise-delivery"))
        .collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "one delivery: {ids:?}");
    let attempts: Vec<&str> = got
        .iter()
        .map(|r| header(r, "x-stepwise-attempt"))
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);

    let deliveries = settled_deliveries(&s, id, Duration::from_secs(10)).await;
    let delivery = &deliveries[0];
    assert_eq!(delivery["status"], "delivered");
    assert_eq!(codes(delivery), [json!(500), json!(503), json!(200)]);
    assert!(
        delivery["attempt_log"][0]["error"]
            .as_str()
            .unwrap()
            .contains("500"),
        "{delivery}"
    );

    // Sent again by hand: due at once, one more POST.
    let delivery_id = delivery["id"].as_i64().unwrap();
    let retry = format!("/tasks/{id}/hook-deliveries/{delivery_id}/retry");
    let (status, retried) = s.post_empty(&retry).await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried["status"], "pending");
    let got = receiver.wait_for(4, Duration::from_secs(10)).await;
    assert_eq!(header(&got[3], "x-stepwise-attempt"), "4");
    let (status, _) = s
        .post_empty(&format!(
            "/tasks/{id}/hook-deliveries/{}/retry",
            delivery_id + 1000
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_receiver_that_never_answers_is_given_up_on() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/gone", closed.local_addr().unwrap());
    drop(closed);
    let s = TestServer::start_with(&["--hook-retry-base-ms", "10"]).await;
    let id = hooked_task(&s, &url).await;
    let deliveries = settled_deliveries(&s, id, Duration::from_secs(30)).await;
    let delivery = &deliveries[0];
    assert_eq!(delivery["status"], "failed", "{delivery}");
    assert_eq!(delivery["attempts"], 5);
    assert!(delivery["finished_at"].is_string());
    assert_eq!(codes(delivery), vec![Value::Null; 5]);
    let error = delivery["attempt_log"][4]["error"].as_str().unwrap();
    assert!(error.contains("could not connect"), "{error}");
}

#[tokio::test]
async fn a_pending_delivery_survives_a_crash() {
    let receiver = Receiver::start(&[500]).await;
    let args = ["--hook-retry-base-ms", "500"];
    let mut s = TestServer::start_with(&args).await;
    let id = hooked_task(&s, &receiver.url).await;
    receiver.wait_for(1, Duration::from_secs(30)).await;
    // Wait until the failed try is recorded, then crash.
    let started = Instant::now();
    loop {
        let runs = s.runs(id).await;
        let logged = runs.first().map_or(0, |run| {
            run["hook_deliveries"][0]["attempt_log"]
                .as_array()
                .map_or(0, Vec::len)
        });
        if logged >= 1 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{runs:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let dir = s.dir.clone();
    let _temp = s.kill9();
    receiver.answer(200);
    let s = TestServer::spawn(&dir, &args).await;
    let deliveries = settled_deliveries(&s, id, Duration::from_secs(30)).await;
    assert_eq!(deliveries[0]["status"], "delivered", "{deliveries:?}");
    let got = receiver.got();
    let last = got.last().unwrap();
    assert_eq!(
        header(last, "x-stepwise-delivery"),
        deliveries[0]["id"].to_string()
    );
    assert_eq!(codes(&deliveries[0]).last(), Some(&json!(200)));
}

#[tokio::test]
async fn hooks_call_only_allowed_hosts() {
    let s = TestServer::start_with(&["--hook-allow-hosts", "shop.example, 10.1.2.3"]).await;
    let task = |hook_url: &str| {
        json!({"name": "hooked", "hook_url": hook_url,
               "steps": [{"controller": "demo/count", "settings": {}}], "disabled": true})
    };
    let (status, error) = s.post("/tasks", task("https://evil.example/steal")).await;
    // Like every invalid field: 422, naming the field and what to do.
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(error["error"]["field"], "hook_url", "{error}");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("evil.example") && message.contains("--hook-allow-hosts"),
        "{error}"
    );
    for refused in [
        "ftp://127.0.0.1/x",
        "not a url",
        "http://user:pw@127.0.0.1/",
    ] {
        let (status, error) = s.post("/tasks", task(refused)).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{refused}: {error}"
        );
    }
    for allowed in [
        "http://127.0.0.1:9/done",
        "http://localhost/done",
        "http://[::1]/done",
        "http://shop.example/hook",
        "http://10.1.2.3:8080/",
    ] {
        let (status, task) = s.post("/tasks", task(allowed)).await;
        assert_eq!(status, StatusCode::CREATED, "{allowed}: {task}");
        assert_eq!(task["hook_url"], allowed);
    }
    let (_, created) = s.post("/tasks", task("http://127.0.0.1:9/done")).await;
    let path = format!("/tasks/{}", created["id"]);
    let (status, error) = s
        .patch(&path, json!({"hook_url": "http://other.example/"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(error["error"]["field"], "hook_url");
    let (status, patched) = s
        .patch(&path, json!({"hook_url": "http://shop.example/v2"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["hook_url"], "http://shop.example/v2");
    let (status, patched) = s.patch(&path, json!({"hook_url": null})).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert!(patched["hook_url"].is_null());

    let open = TestServer::start_with(&["--hook-allow-any-host"]).await;
    let (status, task) = open.post("/tasks", task("http://evil.example/steal")).await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
}

/// Two nodes on one PostgreSQL database, both sending hooks: each run end's
/// hook is POSTed once, and either node's signature checks with the key
/// either node shows. Needs PostgreSQL (skips with a reason without it;
/// under CI it must run).
#[tokio::test]
async fn nodes_sharing_a_database_send_each_hook_once() {
    use common::database::{fresh_postgres_database, postgres_reachable};
    if let Err(why) = postgres_reachable() {
        common::skip::skip_or_fail("nodes_sharing_a_database_send_each_hook_once", &why);
        return;
    }
    const SHARED_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const TASKS: usize = 30;
    let receiver = Receiver::start(&[200]).await;
    let url = fresh_postgres_database();
    // Short waits: both nodes poll for due deliveries ten times a second.
    let args = ["--database", url.as_str(), "--hook-retry-base-ms", "100"];
    let env = [("STEPWISE_SECRET_KEY", SHARED_KEY)];
    let (first_dir, second_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = TestServer::spawn_with_env(first_dir.path(), &args, &env).await;
    std::fs::write(second_dir.path().join("admin-token"), &first.token).unwrap();
    let second = TestServer::spawn_with_env(second_dir.path(), &args, &env).await;

    let mut ids = Vec::new();
    for i in 0..TASKS {
        let node = if i % 2 == 0 { &first } else { &second };
        let (status, task) = node
            .post(
                "/tasks",
                json!({"name": format!("hooked {i}"), "hook_url": receiver.url,
                       "steps": [{"controller": "demo/count", "settings": {"to": 5}}]}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        ids.push(task["id"].as_i64().unwrap());
    }
    receiver.wait_for(TASKS, Duration::from_secs(60)).await;
    // Time for a second POST of any of them, were one to come.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = receiver.got();
    let mut deliveries: Vec<&str> = got
        .iter()
        .map(|r| header(r, "x-stepwise-delivery"))
        .collect();
    deliveries.sort_unstable();
    deliveries.dedup();
    assert_eq!(got.len(), TASKS, "each hook once: {deliveries:?}");
    assert_eq!(deliveries.len(), TASKS);

    let (_, key) = first.get("/hooks/signing-key").await;
    let (_, other_key) = second.get("/hooks/signing-key").await;
    assert_eq!(key, other_key, "every node signs alike");
    let key = hex::decode(key["key"].as_str().unwrap()).unwrap();
    for post in &got {
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).unwrap();
        mac.update(&post.body);
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(header(post, "x-stepwise-signature"), expected);
    }
    for id in ids {
        let deliveries = settled_deliveries(&first, id, Duration::from_secs(10)).await;
        assert_eq!(deliveries[0]["status"], "delivered");
        assert_eq!(deliveries[0]["attempts"], 1, "{deliveries:?}");
    }
}
