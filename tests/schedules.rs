//! Cron schedules through the real server: a task with `cron` and `timezone`
//! shows its next runs, is refused with the field at fault when the schedule
//! is wrong, and runs at each cron time (after a run, it is due at the next
//! cron time after now).

mod common;

use chrono::{DateTime, Timelike, Utc};
use chrono_tz::Tz;
use common::TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn times(value: &Value) -> Vec<DateTime<Utc>> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list of times: {value}"))
        .iter()
        .map(|v| {
            DateTime::parse_from_rfc3339(v.as_str().expect("a time"))
                .expect("RFC 3339")
                .with_timezone(&Utc)
        })
        .collect()
}

fn time(value: &Value) -> DateTime<Utc> {
    times(&json!([value]))[0]
}

fn nightly(extra: Value) -> Value {
    let mut body = json!({
        "name": "nightly export",
        "cron": "0 3 * * *",
        "timezone": "Europe/Berlin",
        "steps": [{"controller": "demo/count", "settings": {}}],
    });
    for (key, value) in extra.as_object().expect("an object") {
        body[key] = value.clone();
    }
    body
}

#[tokio::test]
async fn a_cron_task_shows_its_schedule_and_next_runs() {
    let s = TestServer::start().await;
    let started = Utc::now();
    let (status, task) = s.post("/tasks", nightly(json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    assert_eq!(task["cron"], "0 3 * * *");
    assert_eq!(task["timezone"], "Europe/Berlin");
    assert_eq!(task["run_interval"], 0);
    assert_eq!(task["status"], "scheduled");
    let id = task["id"].as_i64().unwrap();

    let (status, got) = s.get(&format!("/tasks/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    let runs = times(&got["next_runs"]);
    assert_eq!(runs.len(), 5, "{got}");
    assert_eq!(
        runs[0],
        time(&got["next_run_at"]),
        "the first is the next run"
    );
    assert!(runs[0] > started, "due at its first cron time, not at once");
    let berlin: Tz = "Europe/Berlin".parse().unwrap();
    for (i, at) in runs.iter().enumerate() {
        let local = at.with_timezone(&berlin);
        // A day with no 03:00 (none in the next five) would move it past the gap.
        assert_eq!(
            (local.hour(), local.minute(), local.second()),
            (3, 0, 0),
            "{at} is 03:00 in Berlin"
        );
        if i > 0 {
            let gap = (*at - runs[i - 1]).num_hours();
            assert!((23..=25).contains(&gap), "a day apart: {runs:?}");
        }
    }
    assert!(s.runs(id).await.is_empty(), "nothing ran yet");

    // The list shows them too; a task without a schedule shows its next run.
    let (_, once) = s
        .post(
            "/tasks",
            json!({"name": "later", "start_at": "2999-01-01T00:00:00Z",
                   "steps": [{"controller": "demo/count"}]}),
        )
        .await;
    assert_eq!(once["timezone"], "UTC");
    assert_eq!(once["cron"], Value::Null);
    let (_, page) = s.get("/tasks").await;
    let listed = |id: &Value| {
        page["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == *id)
            .cloned()
            .expect("listed")
    };
    assert_eq!(times(&listed(&task["id"])["next_runs"]), runs);
    assert_eq!(
        times(&listed(&once["id"])["next_runs"]),
        [time(&json!("2999-01-01T00:00:00Z"))]
    );

    // A disabled task runs by no schedule.
    let (_, off) = s
        .patch(&format!("/tasks/{id}"), json!({"disabled": true}))
        .await;
    assert_eq!(off["next_runs"], json!([]));
    let (_, on) = s
        .patch(&format!("/tasks/{id}"), json!({"disabled": false}))
        .await;
    assert_eq!(
        times(&on["next_runs"]),
        runs,
        "enabled: back on its schedule"
    );
}

#[tokio::test]
async fn a_wrong_schedule_is_refused_naming_its_field() {
    let s = TestServer::start().await;
    let refused = [
        (json!({"cron": "0 3 * *"}), "cron", "not a cron expression"),
        (
            json!({"cron": "61 * * * *"}),
            "cron",
            "not a cron expression",
        ),
        (json!({"cron": "0 0 30 2 *"}), "cron", "never matches"),
        (json!({"timezone": "Europe/Atlantis"}), "timezone", "IANA"),
        (
            json!({"cron": null, "timezone": "utc+2"}),
            "timezone",
            "IANA",
        ),
        (json!({"run_interval": 3600}), "cron", "not both"),
    ];
    for (extra, field, says) in refused {
        let (status, body) = s.post("/tasks", nightly(extra.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{extra}: {body}");
        assert_eq!(body["error"]["field"], field, "{extra}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{extra}: {message}");
    }

    let (_, cron_task) = s.post("/tasks", nightly(json!({}))).await;
    let (_, interval_task) = s
        .post(
            "/tasks",
            json!({"name": "hourly", "run_interval": 3600, "start_at": "2999-01-01T00:00:00Z",
                   "steps": [{"controller": "demo/count"}]}),
        )
        .await;
    let path = |task: &Value| format!("/tasks/{}", task["id"]);
    let refused = [
        (&cron_task, json!({"run_interval": 60}), "run_interval"),
        (&cron_task, json!({"cron": "every day"}), "cron"),
        (&cron_task, json!({"timezone": "Berlin"}), "timezone"),
        (&interval_task, json!({"cron": "0 3 * * *"}), "cron"),
        (
            &interval_task,
            json!({"cron": "0 3 * * *", "run_interval": 60}),
            "cron",
        ),
    ];
    for (task, patch, field) in refused {
        let (status, body) = s.patch(&path(task), patch.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{patch}: {body}");
        assert_eq!(body["error"]["field"], field, "{patch}: {body}");
    }
    let (_, unchanged) = s.get(&path(&cron_task)).await;
    assert_eq!(unchanged["cron"], "0 3 * * *");
    assert_eq!(unchanged["timezone"], "Europe/Berlin");

    // Switching from one to the other in one request is fine.
    let (status, switched) = s
        .patch(
            &path(&interval_task),
            json!({"cron": "30 4 * * 1", "timezone": "America/New_York", "run_interval": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{switched}");
    assert_eq!(switched["cron"], "30 4 * * 1");
    let new_york: Tz = "America/New_York".parse().unwrap();
    for at in times(&switched["next_runs"]) {
        let local = at.with_timezone(&new_york);
        assert_eq!(
            (
                chrono::Datelike::weekday(&local),
                local.hour(),
                local.minute()
            ),
            (chrono::Weekday::Mon, 4, 30)
        );
        assert!(
            at >= time(&json!("2999-01-01T00:00:00Z")),
            "from its start_at"
        );
    }
    let (status, back) = s
        .patch(
            &path(&cron_task),
            json!({"cron": null, "run_interval": 600}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{back}");
    assert_eq!(
        (back["cron"].clone(), back["run_interval"].clone()),
        (Value::Null, json!(600))
    );
}

#[tokio::test]
async fn a_cron_task_runs_at_each_cron_time() {
    let s = TestServer::start().await;
    s.upload("fixture/noop").await;
    // Every second second (a sixth field, first, is seconds).
    let (status, task) = s
        .post(
            "/tasks",
            json!({"name": "every two seconds", "cron": "*/2 * * * * *",
                   "steps": [{"controller": "fixture/noop"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let id = task["id"].as_i64().unwrap();
    let first_due = time(&task["next_run_at"]);
    assert_eq!(first_due.timestamp() % 2, 0, "due at an even second");
    assert_eq!(first_due.timestamp_subsec_millis(), 0);

    let started = Instant::now();
    let runs = loop {
        let runs = s.runs(id).await;
        if runs.iter().filter(|r| r["status"] == "completed").count() >= 2 {
            break runs;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "two runs did not complete: {runs:?}\n{}",
            s.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Runs are listed newest first; each started at (or just after) a cron
    // time, never before it, and each was due after the one before ended.
    let mut runs: Vec<&Value> = runs.iter().filter(|r| r["status"] == "completed").collect();
    runs.reverse();
    for run in &runs {
        let at = time(&run["started_at"]);
        let due = DateTime::from_timestamp(at.timestamp() - at.timestamp() % 2, 0).unwrap();
        assert!(
            at - due < chrono::Duration::milliseconds(1800),
            "run {} started at {at}, long after the cron time {due}",
            run["id"]
        );
        assert_eq!(run["trigger"], "schedule");
    }
    assert!(time(&runs[0]["started_at"]) >= first_due);
    assert!(
        time(&runs[1]["started_at"]) >= time(&runs[0]["finished_at"]),
        "the next run is due after the last ended"
    );

    let (_, now) = s.get(&format!("/tasks/{id}")).await;
    assert_eq!(now["cron"], "*/2 * * * * *");
    if now["status"] == "scheduled" {
        let next = time(&now["next_run_at"]);
        assert_eq!(next.timestamp() % 2, 0, "{now}");
        let runs = times(&now["next_runs"]);
        assert_eq!(runs.len(), 5);
        assert!(
            runs.windows(2).all(|w| (w[1] - w[0]).num_seconds() == 2),
            "{runs:?}"
        );
        assert_eq!(now["attempts"], 0, "a new cycle each time: {now}");
    }
}
