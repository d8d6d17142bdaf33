//! An idle node's waited task created and claimed in one transaction on the
//! hot connection (see `Store::create_and_claim`): one hold of the write
//! lock, one commit and one hand-off to a blocking thread, where the create
//! and the claim apart took two of each, on the path of every waited request.
//!
//! The claim is the scheduler's own (`claim_in_transaction`, a batch of one),
//! so the new task never jumps a task due before it. At durability full the
//! commit is not synced, like any waited create's (`create_tasks_deferred`):
//! the run's end, synced, covers it, and the answer waits for that.

use super::SqliteStore;
use super::claim::claim_in_transaction;
use super::create_batch::{insert_plain_in, plain};
use super::hot_request::hot_request;
use super::turn::ClaimDue;
use crate::store::{ClaimedRun, NewTask, StoreResult, Task, as_claimed, create_then_claim};
use anyhow::Context;
use chrono::{DateTime, Utc};

pub(super) async fn create_and_claim(
    store: &SqliteStore,
    task: NewTask,
    node: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> StoreResult<(Task, Option<ClaimedRun>)> {
    if !plain(std::slice::from_ref(&task)) {
        return create_then_claim(store, task, node, now, lease_until).await;
    }
    let claim = ClaimDue {
        node: node.to_string(),
        now,
        lease_until,
        limit: 1,
    };
    let retry = task.clone();
    let done = hot_request(store, true, "creating and claiming", move |tx, moves| {
        let created = insert_plain_in(tx, vec![task], now, moves)?;
        let claimed = claim_in_transaction(tx, &claim, moves)?;
        Ok((created, claimed))
    })
    .await?;
    match done {
        Ok((mut created, mut claimed)) => {
            let created = created.pop().context("one task created")?;
            let claimed = claimed.pop();
            Ok((as_claimed(created, claimed.as_ref()), claimed))
        }
        // Nothing was committed. Apart, a claim that fails does not fail
        // the create.
        Err(error) => {
            tracing::warn!("creating and claiming in one transaction failed: {error:#}");
            create_then_claim(store, retry, node, now, lease_until).await
        }
    }
}
