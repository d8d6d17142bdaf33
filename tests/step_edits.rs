//! Editing a task's steps without re-posting the task, through the real
//! server: add, change, reorder and remove, validated as at a create; and an
//! edit while a run executes leaves that run as it started (its steps, its
//! settings, its progress and ETA), while the next run uses the new steps.

mod common;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn step_ids(task: &Value) -> Vec<i64> {
    task["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no steps: {task}"))
        .iter()
        .map(|s| s["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn steps_are_added_changed_reordered_and_removed() {
    let s = TestServer::start().await;
    let (_, task) = s
        .post(
            "/tasks",
            json!({"name": "edited", "disabled": true, "steps": [
                {"controller": "demo/count", "settings": {"to": 1}},
                {"controller": "demo/count", "settings": {"to": 2}}]}),
        )
        .await;
    let id = task["id"].as_i64().unwrap();
    let [a, b] = step_ids(&task)[..] else {
        panic!("two steps: {task}")
    };
    let steps = format!("/tasks/{id}/steps");

    // Add: appended after the last step unless it says where.
    let (status, added) = s
        .post(
            &steps,
            json!({"controller": "tool/backup/dumptables", "settings": {"tables": []},
                   "max_execution_time": 30, "max_memory": 33554432,
                   "interrupt_on_step_fault": false}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    let ids = step_ids(&added);
    assert_eq!(ids.len(), 3);
    let c = *ids.iter().max().unwrap();
    let new = &added["steps"][2];
    assert_eq!(
        new["id"], c,
        "the new step has the highest id and runs last"
    );
    assert_eq!(new["sort_order"], 3);
    assert_eq!(new["controller"], "tool/backup/dumptables");
    assert_eq!(
        (
            new["max_execution_time"].clone(),
            new["max_memory"].clone(),
            new["interrupt_on_step_fault"].clone()
        ),
        (json!(30), json!(33554432), json!(false))
    );
    let (_, first) = s
        .post(&steps, json!({"controller": "demo/count", "sort_order": 0}))
        .await;
    let d = step_ids(&first)[0];
    assert!(d > c, "sort_order 0 runs first: {first}");
    assert_eq!(
        first["steps"][0]["max_execution_time"], 60,
        "the create's default"
    );

    // Change: only the fields given; null removes the memory cap.
    let (status, changed) = s
        .patch(
            &format!("{steps}/{c}"),
            json!({"settings": {"tables": [{"name": "orders", "columns": ["id"]}]}, "max_execution_time": 90,
                   "max_memory": null, "status": "disabled"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    let step = changed["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == c)
        .unwrap()
        .clone();
    assert_eq!(
        step["settings"],
        json!({"tables": [{"name": "orders", "columns": ["id"]}]}),
        "settings match the module's schema (a table is an object)"
    );
    assert_eq!(step["max_execution_time"], 90);
    assert_eq!(step["max_memory"], Value::Null);
    assert_eq!(step["status"], "disabled");
    assert_eq!(step["controller"], "tool/backup/dumptables");
    assert_eq!(step["interrupt_on_step_fault"], false);

    // Reorder: every step once.
    let (status, reordered) = s
        .request(
            Method::PUT,
            &format!("{steps}/order"),
            Some(&s.token),
            Some(json!({"steps": [c, b, a, d]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reordered}");
    assert_eq!(step_ids(&reordered), [c, b, a, d]);
    let orders: Vec<i64> = reordered["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sort_order"].as_i64().unwrap())
        .collect();
    assert_eq!(orders, [1, 2, 3, 4]);

    // Remove.
    let (status, removed) = s.delete(&format!("{steps}/{d}")).await;
    assert_eq!(status, StatusCode::OK, "{removed}");
    assert_eq!(step_ids(&removed), [c, b, a]);
    let (_, got) = s.get(&format!("/tasks/{id}")).await;
    assert_eq!(step_ids(&got), [c, b, a], "stored");
    for step in [c, b] {
        let (status, _) = s.delete(&format!("{steps}/{step}")).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, body) = s.delete(&format!("{steps}/{a}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at least one")
    );

    // What a create refuses, an edit refuses, naming the field.
    let refused = [
        (json!({"controller": "Not A Path"}), "controller"),
        (json!({"controller": "nobody/uploaded"}), "controller"),
        (
            json!({"controller": "demo/count", "max_execution_time": 0}),
            "max_execution_time",
        ),
        (
            json!({"controller": "demo/count", "max_memory": 1024}),
            "max_memory",
        ),
        (json!({"controller": "demo/count", "timeout": 5}), "timeout"),
    ];
    for (body, field) in refused {
        let (status, answer) = s.post(&steps, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert!(
            answer["error"]["field"]
                .as_str()
                .unwrap_or("")
                .contains(field)
                || answer["error"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains(field),
            "{body}: {answer}"
        );
    }
    let refused = [
        (json!({"controller": "nobody/uploaded"}), "controller"),
        (
            json!({"max_execution_time": 999999999}),
            "max_execution_time",
        ),
        (json!({"max_memory": 5}), "max_memory"),
    ];
    for (body, field) in refused {
        let (status, answer) = s.patch(&format!("{steps}/{a}"), body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    let (status, answer) = s
        .request(
            Method::PUT,
            &format!("{steps}/order"),
            Some(&s.token),
            Some(json!({"steps": [a, a]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["error"]["field"], "steps");

    // Steps of other tasks, and tasks that do not exist, are not found.
    let (_, other) = s
        .post(
            "/tasks",
            json!({"name": "other", "disabled": true, "steps": [{"controller": "demo/count"}]}),
        )
        .await;
    let foreign = step_ids(&other)[0];
    let (status, _) = s
        .patch(&format!("{steps}/{foreign}"), json!({"settings": {}}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = s.delete(&format!("{steps}/{foreign}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = s
        .post("/tasks/999999/steps", json!({"controller": "demo/count"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Poll the task's progress until `until` holds; returns that answer.
async fn progress_until(s: &TestServer, id: i64, until: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let (_, progress) = s.get(&format!("/tasks/{id}/progress")).await;
        if until(&progress) {
            return progress;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "progress never got there: {progress}\n{}",
            s.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_edit_during_a_run_leaves_that_run_as_it_started() {
    let s = TestServer::start().await;
    s.upload("fixture/progress").await;
    s.upload("fixture/noop").await;
    // A slow step: 30 reports 100 ms apart, about 3 s.
    let (status, task) = s
        .post(
            "/tasks",
            json!({"name": "slow", "steps": [{"controller": "fixture/progress",
                   "settings": {"updates": 30, "sleep_ms": 100}, "max_execution_time": 30}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let id = task["id"].as_i64().unwrap();
    let slow = step_ids(&task)[0];

    // Mid-run: a measurable rate, so an ETA.
    let before = progress_until(&s, id, |p| {
        p["status"] == "running" && p["progress"].as_f64().unwrap_or(0.0) >= 10.0
    })
    .await;
    assert!(before["eta_seconds"].is_number(), "{before}");
    let run_id = before["run_id"].clone();

    // Change the running step's settings and limit, add a step.
    let (status, changed) = s
        .patch(
            &format!("/tasks/{id}/steps/{slow}"),
            json!({"settings": {"updates": 2, "sleep_ms": 10}, "max_execution_time": 5}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["status"], "running", "the run goes on");
    let (status, added) = s
        .post(
            &format!("/tasks/{id}/steps"),
            json!({"controller": "fixture/noop"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    let noop = *step_ids(&added).iter().max().unwrap();

    // Its progress and ETA are the run's own, before and after the edit.
    let (_, after) = s.get(&format!("/tasks/{id}/progress")).await;
    assert_eq!(after["status"], "running", "{after}");
    assert_eq!(after["run_id"], run_id, "{after}");
    assert!(
        after["progress"].as_f64().unwrap() >= before["progress"].as_f64().unwrap(),
        "progress did not go back: {before} then {after}"
    );
    assert!(after["eta_seconds"].is_number(), "the ETA is kept: {after}");
    assert_eq!(
        after["steps"].as_array().map(Vec::len),
        Some(1),
        "the run has its one step: {after}"
    );

    let done = s
        .wait_for(id, &["completed", "failed"], Duration::from_secs(30))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"], 100.0);
    let runs = s.runs(id).await;
    assert_eq!(runs.len(), 1);
    let ran = &runs[0]["steps"];
    assert_eq!(
        ran.as_array().unwrap().len(),
        1,
        "the added step was not in it: {ran}"
    );
    assert_eq!(ran[0]["step_id"], slow);
    assert_eq!(
        ran[0]["result"],
        json!({"updates": 30}),
        "the run ran the settings it started with"
    );

    // The next run has the edited step and the added one.
    let (status, _) = s.post_empty(&format!("/tasks/{id}/run")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let started = Instant::now();
    let next = loop {
        let runs = s.runs(id).await;
        if runs.len() == 2 && runs[0]["status"] != "running" {
            break runs[0].clone();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{runs:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(next["status"], "completed", "{next}");
    let ran: Vec<(Value, Value)> = next["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step_id"].clone(), s["result"].clone()))
        .collect();
    assert_eq!(
        ran,
        [
            (json!(slow), json!({"updates": 2})),
            (json!(noop), ran[1].1.clone())
        ]
    );
}
