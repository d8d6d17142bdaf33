//! What a task keeps across changes: its secrets when a create by code does
//! not mention them or a patch changes some, and ids that are never handed
//! out again once deleted.

use super::*;

fn sealed(name: &str, value: u8) -> SealedSecret {
    SealedSecret {
        name: name.into(),
        nonce: vec![value],
        ciphertext: vec![value, value],
    }
}

/// The sealed secrets a run of the task is given, by name.
async fn secrets_of_a_run(store: &dyn Store, task_id: i64, now: i64) -> Vec<SealedSecret> {
    store
        .run_task_now(task_id, None, t(now))
        .await
        .expect("run now");
    let claimed = claim_one(store, now).await;
    complete(store, &claimed, now).await;
    let mut secrets = claimed.secrets;
    secrets.sort_by(|a, b| a.name.cmp(&b.name));
    secrets
}

pub(crate) async fn code_upsert_keeps_secrets_it_does_not_mention(store: &dyn Store) {
    let by_code = |secrets: Vec<SealedSecret>, keep_secrets: bool| {
        let mut new = new_task("mail");
        new.code = Some("shop:mail".into());
        new.secrets = secrets;
        new.keep_secrets = keep_secrets;
        new
    };
    let task = create(store, by_code(vec![sealed("api_key", 1)], false), 0).await;
    let (kept, created) = store
        .create_task(by_code(Vec::new(), true), t(1))
        .await
        .expect("replace, keeping the secrets");
    assert!(!created);
    assert_eq!(kept.secret_names, ["api_key"]);
    assert_eq!(
        secrets_of_a_run(store, task.id, 2).await,
        [sealed("api_key", 1)],
        "the value is kept too"
    );

    let (replaced, _) = store
        .create_task(by_code(vec![sealed("token", 2)], false), t(3))
        .await
        .expect("replace the secrets");
    assert_eq!(replaced.secret_names, ["token"]);
    let (cleared, _) = store
        .create_task(by_code(Vec::new(), false), t(4))
        .await
        .expect("remove the secrets");
    assert!(cleared.secret_names.is_empty());

    // A new task gets its secrets whether or not it would keep old ones.
    let mut fresh = by_code(vec![sealed("a", 3)], true);
    fresh.code = Some("shop:other".into());
    assert_eq!(create(store, fresh, 5).await.secret_names, ["a"]);
}

pub(crate) async fn update_sets_and_removes_secrets(store: &dyn Store) {
    let mut new = new_task("mail");
    new.secrets = vec![sealed("api_key", 1), sealed("smtp_password", 2)];
    let task = create(store, new, 0).await;
    let patch = TaskPatch {
        set_secrets: vec![sealed("api_key", 9), sealed("webhook", 3)],
        remove_secrets: vec!["smtp_password".into(), "never_set".into()],
        ..Default::default()
    };
    let patched = store
        .update_task(task.id, &patch, t(1))
        .await
        .expect("patch the secrets");
    assert_eq!(patched.secret_names, ["api_key", "webhook"]);
    assert_eq!(
        secrets_of_a_run(store, task.id, 2).await,
        [sealed("api_key", 9), sealed("webhook", 3)],
        "a set secret's value is replaced"
    );
    let untouched = store
        .update_task(task.id, &TaskPatch::default(), t(3))
        .await
        .expect("an empty patch");
    assert_eq!(untouched.secret_names, ["api_key", "webhook"]);
}

pub(crate) async fn ids_are_never_reused_after_a_delete(store: &dyn Store) {
    let doomed = create(store, with_steps(new_task("doomed"), &["a/x", "a/y"]), 0).await;
    let run = claim_one(store, 0).await;
    complete(store, &run, 0).await;
    store.delete_task(doomed.id).await.expect("delete");
    let highest_step = doomed.steps.iter().map(|s| s.id).max().expect("steps");

    // One create at a time, and a batch (two paths that assign ids).
    let single = create(store, with_steps(new_task("next"), &["b/x"]), 1).await;
    assert!(single.id > doomed.id, "task id {} reused", single.id);
    assert!(
        single.steps[0].id > highest_step,
        "step id {} handed out again (the deleted task had up to {highest_step})",
        single.steps[0].id
    );
    store.delete_task(single.id).await.expect("delete");
    let batch = store
        .create_tasks(vec![with_steps(new_task("batched"), &["c/x"])], t(2))
        .await
        .expect("batch")
        .remove(0)
        .expect("created")
        .0;
    assert!(batch.id > single.id, "task id {} reused", batch.id);
    assert!(
        batch.steps[0].id > single.steps[0].id,
        "step id {} handed out again",
        batch.steps[0].id
    );
    assert_eq!(get(store, batch.id).await.steps[0].id, batch.steps[0].id);
    let next_run = claim_one(store, 2).await;
    assert!(
        next_run.run_id > run.run_id,
        "run id {} reused",
        next_run.run_id
    );
}
