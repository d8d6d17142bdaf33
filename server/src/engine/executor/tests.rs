//! The executor without the scheduler: a claim, a cancel and a run claimed
//! ahead, put in the order a busy node can give them.

use super::*;
use crate::engine::{EngineConfig, engine_for_tests};
use crate::store::{NewStep, NewTask};
use serde_json::json;

/// A cancel that lands between a claim's commit and its executor's
/// registration is only noted (see `running.rs`). A run claimed ahead then
/// waits for a worker: it must take the note up before that wait, or it
/// waits for the step that holds the worker (or the next heartbeat).
#[tokio::test]
async fn a_cancel_noted_before_a_run_claimed_ahead_registers_ends_it_without_a_worker() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new("test");
    config.workers = 1;
    let engine = engine_for_tests(dir.path(), config).await;
    let store = engine.store().clone();
    let task = NewTask::new(
        "claimed ahead",
        vec![NewStep::new("fixture/noop", json!({}))],
    );
    let task_id = store.create_task(task, Utc::now()).await.unwrap().0.id;
    let claimed = engine.claim_next().await.unwrap().expect("the task is due");
    assert!(
        !engine.cancel(task_id).await.unwrap(),
        "the task is running"
    );

    let inner = engine.inner.clone();
    let _held = inner.workers.try_take().expect("the one worker");
    let waiting = inner.workers.wait();
    let summary = tokio::time::timeout(
        Duration::from_secs(5),
        execute_when_free(inner.clone(), claimed.0, waiting),
    )
    .await
    .expect("the cancelled run waited for the held worker");
    assert_eq!(summary.verdict, RunVerdict::Cancelled);
    assert!(summary.steps.is_empty(), "no step ran");
    let task = store.get_task(task_id).await.unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Cancelled);
}

/// Most a run's spawned future may take. Each one is moved whole when it is
/// spawned, and a run's steps once made it tens of kilobytes, copied several
/// times per run: they are boxed, so what is spawned holds pointers to them.
const SPAWNED_RUN_MOST: usize = 3 << 10;

#[tokio::test]
async fn spawned_run_futures_stay_small() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_for_tests(dir.path(), EngineConfig::new("test")).await;
    let task = NewTask::new("sized", vec![NewStep::new("fixture/noop", json!({}))]);
    engine.store().create_task(task, Utc::now()).await.unwrap();
    let claimed = engine
        .claim_next()
        .await
        .unwrap()
        .expect("the task is due")
        .0;
    let inner = engine.inner.clone();
    let now = execute(inner.clone(), claimed.clone(), None);
    let waiting = inner.workers.wait();
    let when_free = execute_when_free(inner.clone(), claimed, waiting);
    for (name, size) in [
        ("execute", std::mem::size_of_val(&now)),
        ("execute_when_free", std::mem::size_of_val(&when_free)),
    ] {
        assert!(
            size <= SPAWNED_RUN_MOST,
            "{name}'s future is {size} bytes: box what it holds inline"
        );
    }
}
