//! The node's background loops: claim due tasks up to the worker limit,
//! renew leases (and notice cancels requested elsewhere), rescue expired runs,
//! prune old history, send completion hooks. Each is a thin loop around a
//! callable service.

use super::stopping::{self, Drained};
use super::workers::Ahead;
use super::{Inner, executor, hooks, node_report, rescuer, retention};
use crate::store::{ClaimRoom, NodeState};
use chrono::Utc;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How often the retention pass runs.
const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

/// Stops the engine's loops when asked or dropped.
pub struct EngineHandle {
    inner: Arc<Inner>,
    /// Stops the claim loop alone (a drain), then with the others.
    stop_claims: CancellationToken,
    stop: CancellationToken,
    loops: JoinSet<()>,
}

impl EngineHandle {
    /// Stop claiming; runs in progress are abandoned to the rescuer of the
    /// next start (their leases expire), exactly as after a crash.
    pub async fn shutdown(mut self) {
        self.close_starts();
        self.stop.cancel();
        while self.loops.join_next().await.is_some() {}
    }

    /// Stop as a node asked to stop (SIGTERM) does: claim nothing new, let
    /// the running steps end for up to `grace` (or until `hurry`, a second
    /// signal, completes), then hand back what still runs so that other
    /// nodes resume it at once (see `engine/stopping.rs`).
    pub async fn stop_gracefully(
        mut self,
        grace: Duration,
        hurry: impl Future<Output = ()>,
    ) -> Drained {
        self.close_starts();
        self.stop_claims.cancel();
        // Leases are renewed while the steps finish.
        let drained = stopping::drain(&self.inner, grace, hurry).await;
        self.stop.cancel();
        while self.loops.join_next().await.is_some() {}
        drained
    }
}

impl EngineHandle {
    /// Creates no longer start runs here (see `start_at_create.rs`).
    fn close_starts(&self) {
        self.inner.starts.open.store(false, Ordering::Release);
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        self.close_starts();
        self.stop.cancel();
    }
}

pub(super) fn start(inner: Arc<Inner>) -> EngineHandle {
    let stop = CancellationToken::new();
    let stop_claims = stop.child_token();
    let mut loops = JoinSet::new();
    loops.spawn(claim_loop(inner.clone(), stop_claims.clone()));
    inner.starts.open.store(true, Ordering::Release);
    loops.spawn(heartbeat_loop(
        inner.clone(),
        stop.clone(),
        stop_claims.clone(),
    ));
    loops.spawn(every(inner.config.rescue_interval, stop.clone(), {
        let inner = inner.clone();
        move || {
            let inner = inner.clone();
            async move {
                if let Err(e) = rescuer::rescue(&inner, rescuer::Rescue::Expired).await {
                    tracing::warn!("rescue pass failed: {e:#}");
                }
            }
        }
    }));
    loops.spawn(every(RETENTION_INTERVAL, stop.clone(), {
        let inner = inner.clone();
        move || {
            let inner = inner.clone();
            async move {
                match retention::prune_once(&inner).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("retention removed {n} old rows"),
                    Err(e) => tracing::warn!("retention pass failed: {e:#}"),
                }
            }
        }
    }));
    loops.spawn(hooks::delivery_loop(inner.clone(), stop.clone()));
    EngineHandle {
        inner,
        stop_claims,
        stop,
        loops,
    }
}

async fn every<F, Fut>(interval: Duration, stop: CancellationToken, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => pass().await,
        }
    }
}

/// Claim as many due tasks as there are free workers, and a few ahead of
/// them when runs end quickly (see `workers.rs`); run each in its own task,
/// and sleep until woken or the poll interval passes.
async fn claim_loop(inner: Arc<Inner>, stop: CancellationToken) {
    // While a backlog waits (the last claim got all it asked for), claim only
    // once a quarter of the workers is free: a claim of many costs about what
    // a claim of one does, and claiming one task per finished run would spend
    // the writer on claims. Without a backlog, claim at once (latency). A
    // backlog is only presumed from the last claim: once a poll interval
    // passes with no run ending (long steps hold the workers), claim for
    // the free ones anyway, or a new task would wait for a quarter of the
    // node's steps to end.
    let most = inner.config.claim_batch.max(1);
    let batch_when_busy = (inner.config.workers.max(1) as i64 / 4).clamp(1, most);
    let mut backlog = false;
    let mut quiet = false;
    let mut ahead = Ahead::new(&inner.workers, inner.config.claim_ahead);
    // How many to claim ahead, as of the loop's last look.
    let ahead_now = Arc::new(AtomicI64::new(0));
    // A claim waits for its turn on the store's writer (on SQLite, behind the
    // commit of the last runs' ends): it takes the room there is by then,
    // not only what there was when it was asked for, and says how much that
    // was.
    let asked = Arc::new(AtomicI64::new(0));
    let room = {
        let (workers, asked) = (inner.workers.clone(), asked.clone());
        let ahead_now = ahead_now.clone();
        ClaimRoom::measured(move || {
            let room = workers.room(ahead_now.load(Ordering::Acquire)).min(most);
            asked.store(room, Ordering::Release);
            room
        })
    };
    while !stop.is_cancelled() {
        ahead_now.store(ahead.now(&inner.workers, most), Ordering::Release);
        let mut claimed_all = false;
        let claiming = inner.workers.room(ahead_now.load(Ordering::Acquire))
            >= if backlog && !quiet {
                batch_when_busy
            } else {
                1
            };
        // Until this claim says otherwise, a worker's end should wake the loop.
        inner.claims_wanted.store(true, Ordering::Release);
        if claiming {
            // Through the run writer: on SQLite the claim rides in its next transaction.
            match inner.run_writer.claim(room.clone()).await {
                Ok(runs) => {
                    let asked = asked.load(Ordering::Acquire);
                    claimed_all = asked > 0 && runs.len() as i64 == asked;
                    backlog = claimed_all;
                    inner.claims_wanted.store(claimed_all, Ordering::Release);
                    for run in runs {
                        let inner = inner.clone();
                        match inner.workers.try_take() {
                            Some(slot) => {
                                tokio::spawn(executor::execute(inner, run, Some(slot)));
                            }
                            None => {
                                let waiting = inner.workers.wait();
                                tokio::spawn(executor::execute_when_free(inner, run, waiting));
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!("claiming due tasks failed: {e:#}"),
            }
        }
        if claimed_all && inner.workers.room(ahead_now.load(Ordering::Acquire)) > 0 {
            continue;
        }
        quiet = tokio::select! {
            _ = stop.cancelled() => return,
            _ = inner.wake.notified() => false,
            _ = tokio::time::sleep(inner.config.poll_interval) => true,
        };
    }
}

/// Say this node is alive (the nodes table), renew the leases of its runs,
/// and stop runs whose cancel was requested through another node (a
/// backstop: the cancel's node message usually stops them at once).
async fn heartbeat_loop(inner: Arc<Inner>, stop: CancellationToken, claims: CancellationToken) {
    node_report::report(&inner, NodeState::Running).await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(inner.config.heartbeat_interval) => {}
        }
        inner
            .running
            .forget_early_cancels_older_than(inner.config.heartbeat_interval);
        let state = if claims.is_cancelled() {
            NodeState::Draining
        } else {
            NodeState::Running
        };
        node_report::report(&inner, state).await;
        let running = inner.running.tokens();
        if running.is_empty() {
            continue;
        }
        let run_ids: Vec<i64> = running.iter().map(|(run, _)| *run).collect();
        let lease_until = Utc::now() + inner.config.lease;
        match inner
            .store
            .heartbeat(&inner.config.node_id, &run_ids, lease_until)
            .await
        {
            Ok(cancelled) => {
                for (run_id, token) in running {
                    if cancelled.contains(&run_id) {
                        token.cancel();
                    }
                }
            }
            Err(e) => tracing::warn!("renewing leases failed: {e:#}"),
        }
    }
}
