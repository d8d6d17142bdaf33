//! SQLite's run writer (see `store/run_writer.rs`): group commit for the run
//! path, with the node's claims riding in the same transactions.
//!
//! SQLite has one writer connection, and every commit on it costs an fsync.
//! So one writer applies whatever is queued in one transaction, and a claim
//! joins the next transaction (after that transaction's writes): under load
//! one turn of the writer records a batch of run ends and claims their
//! successors, with one commit (see [`SqliteStore::write_turns`]). The claim
//! is answered as soon as the transaction commits, the writes once it is
//! synced (see `turn.rs`).
//!
//! The writer runs on a thread of its own, with a single-task runtime: the
//! writer connection is the node's bottleneck, and on the engine's runtime
//! each turn waited in the queue behind hundreds of running steps before it
//! could start.
//!
//! Order is kept (one queue, one writer).

use super::SqliteStore;
use super::turn::{ClaimDue, WriterTurn, WriterTurns};
use super::wal_syncer::WalSyncer;
use crate::store::run_writer::{WRITE_BATCH as BATCH, internal, linger};
use crate::store::{
    ClaimRoom, Claimant, ClaimedRun, RunWriter, StoreError, StoreResult, WriteAnswer, WriteOp,
};
use async_trait::async_trait;
use chrono::Utc;
use futures::FutureExt;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

type Reply = oneshot::Sender<StoreResult<WriteAnswer>>;
type ClaimReply = oneshot::Sender<StoreResult<Vec<ClaimedRun>>>;

enum Job {
    Write(WriteOp, Option<Reply>),
    /// Claim as many due tasks as there is room for when the turn is cut.
    Claim(ClaimRoom, ClaimReply),
}

pub(super) struct SqliteRunWriter {
    sender: mpsc::UnboundedSender<Job>,
}

impl SqliteRunWriter {
    /// Start the writer thread. It ends once the writer is dropped and
    /// everything queued is written.
    pub(super) fn start(store: Arc<SqliteStore>, claimant: Claimant) -> Arc<dyn RunWriter> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let started = std::thread::Builder::new()
            .name("stepwise-writer".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(write_turns(store, receiver, claimant)),
                    Err(error) => tracing::error!("starting the engine's writer failed: {error}"),
                }
            });
        if let Err(error) = started {
            // Every commit and claim then answers "the store's run writer has stopped".
            tracing::error!("starting the engine's writer thread failed: {error}");
        }
        Arc::new(SqliteRunWriter { sender })
    }
}

#[async_trait]
impl RunWriter for SqliteRunWriter {
    fn queue(&self, op: WriteOp) {
        let _ = self.sender.send(Job::Write(op, None));
    }

    async fn commit(&self, op: WriteOp) -> StoreResult<WriteAnswer> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Job::Write(op, Some(reply)))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// The claim joins the writer's next turn (after the writes queued
    /// before this call), and takes the room there is when that turn is cut.
    async fn claim(&self, room: ClaimRoom) -> StoreResult<Vec<ClaimedRun>> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Job::Claim(room, reply))
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StoreError {
    internal("the store's run writer has stopped")
}

/// How long the writer keeps its hold on the store's writer while work keeps
/// coming: other writers (API requests, the event log) wait at most about
/// this long, and the hold's fixed costs (hand-offs to the connection's
/// thread, preparing statements) are spread over many turns.
const HOLD: Duration = Duration::from_millis(10);

async fn write_turns(
    store: Arc<SqliteStore>,
    receiver: mpsc::UnboundedReceiver<Job>,
    claimant: Claimant,
) {
    let syncer = WalSyncer::start(store.hot.clone());
    let mut queue = Queue::new(receiver, claimant, syncer);
    loop {
        if !queue.has_work() {
            if queue.receiver.recv_many(&mut queue.jobs, BATCH).await == 0 {
                return;
            }
            queue.linger().await;
        }
        queue.hold();
        // A bug that panics in a hold must not stop the node's writes and
        // claims for good: what the hold had taken is answered with an error
        // (its runs end by their leases, see the rescuer), and the writer
        // goes on with the next.
        match AssertUnwindSafe(store.write_turns(&mut queue))
            .catch_unwind()
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(error)) => queue.fail_waiting(error),
            Err(_) => queue.fail_waiting(internal("the engine's writer panicked")),
        }
    }
}

/// A turn given to the store, with whom to answer.
struct Flight {
    turn: WriterTurn,
    replies: Vec<Option<Reply>>,
    claim_reply: Option<ClaimReply>,
}

/// The writer's side of [`SqliteStore::write_turns`]: turns are cut from what is
/// queued when the store asks for the next one.
struct Queue {
    receiver: mpsc::UnboundedReceiver<Job>,
    claimant: Claimant,
    /// Received, not yet in a turn.
    jobs: Vec<Job>,
    /// Claims wait here when more than one arrives (one per turn).
    claims: VecDeque<(ClaimRoom, ClaimReply)>,
    /// The halves of a failed turn, tried apart.
    retries: VecDeque<Flight>,
    in_flight: Option<Flight>,
    hold_until: Instant,
    /// Syncs the WAL for turns whose writes wait while the writer goes on.
    syncer: WalSyncer,
}

impl Queue {
    fn new(receiver: mpsc::UnboundedReceiver<Job>, claimant: Claimant, syncer: WalSyncer) -> Self {
        Queue {
            receiver,
            claimant,
            jobs: Vec::with_capacity(BATCH),
            claims: VecDeque::new(),
            retries: VecDeque::new(),
            in_flight: None,
            hold_until: Instant::now(),
            syncer,
        }
    }

    /// Take what the channel holds now, up to a turn's worth.
    fn receive_queued(&mut self) {
        while self.jobs.len() < BATCH
            && let Ok(job) = self.receiver.try_recv()
        {
            self.jobs.push(job);
        }
    }

    /// An idle writer given only writes that nobody waits for waits a
    /// little for more (see [`linger`]); a commit or a claim ends the wait.
    /// Called with nothing else to do: no claims or retries wait.
    async fn linger(&mut self) {
        linger(&mut self.receiver, &mut self.jobs, |job| {
            !matches!(job, Job::Write(_, None))
        })
        .await;
    }

    /// A hold of the store's writer starts: turns are given until [`HOLD`]
    /// has passed or nothing is queued.
    fn hold(&mut self) {
        self.hold_until = Instant::now() + HOLD;
    }

    fn has_work(&self) -> bool {
        !self.jobs.is_empty() || !self.claims.is_empty() || !self.retries.is_empty()
    }

    /// The next turn from what is queued now.
    fn cut(&mut self) -> Option<Flight> {
        self.receive_queued();
        let mut ops = Vec::with_capacity(self.jobs.len());
        let mut replies = Vec::with_capacity(self.jobs.len());
        for job in self.jobs.drain(..) {
            match job {
                Job::Write(op, reply) => {
                    ops.push(op);
                    replies.push(reply);
                }
                Job::Claim(room, reply) => self.claims.push_back((room, reply)),
            }
        }
        let (claim, claim_reply) = match self.claims.pop_front() {
            Some((room, reply)) => {
                let now = Utc::now();
                let due = ClaimDue {
                    node: self.claimant.node.clone(),
                    now,
                    lease_until: now + self.claimant.lease,
                    limit: room.now(),
                };
                (Some(due), Some(reply))
            }
            None if ops.is_empty() => return None,
            None => (None, None),
        };
        Some(Flight {
            turn: WriterTurn { ops, claim },
            replies,
            claim_reply,
        })
    }

    /// Answer everything taken from the channel and not written with `error`
    /// (the store's writer could not be reached at all, or the hold panicked).
    fn fail_waiting(&mut self, error: StoreError) {
        tracing::error!("the engine's writer could not write: {error:#}");
        let message = format!("{error:#}");
        for flight in self.retries.drain(..).chain(self.in_flight.take()) {
            answer(flight, Err(internal(&message)));
        }
        // Only what was taken: jobs still in the channel go to the next hold.
        for job in self.jobs.drain(..) {
            match job {
                Job::Write(_, Some(reply)) => {
                    let _ = reply.send(Err(internal(&message)));
                }
                Job::Write(_, None) => {}
                Job::Claim(_, reply) => {
                    let _ = reply.send(Err(internal(&message)));
                }
            }
        }
        for (_, reply) in self.claims.drain(..) {
            let _ = reply.send(Err(internal(&message)));
        }
    }
}

impl WriterTurns for Queue {
    fn next_turn(&mut self) -> Option<&WriterTurn> {
        let flight = match self.retries.pop_front() {
            Some(retry) => retry,
            None if Instant::now() >= self.hold_until => return None,
            None => self.cut()?,
        };
        Some(&self.in_flight.insert(flight).turn)
    }

    /// The claim goes out at once; the writes wait for [`Self::turn_done`].
    fn claimed(&mut self, runs: Vec<ClaimedRun>) {
        let reply = self.in_flight.as_mut().and_then(|f| f.claim_reply.take());
        if let Some(reply) = reply {
            let _ = reply.send(Ok(runs));
        }
    }

    /// With more work queued, the writes are answered from the syncing
    /// thread, after its next fsync. A flight's claim was answered already.
    fn sync_later(&mut self, answers: Vec<WriteAnswer>) -> Option<Vec<WriteAnswer>> {
        self.receive_queued();
        if !self.has_work() {
            return Some(answers);
        }
        let Some(flight) = self.in_flight.take() else {
            return Some(answers);
        };
        self.syncer.after_sync(Box::new(move |synced| {
            let result = synced.map(|()| answers).map_err(StoreError::Internal);
            if let Err(error) = &result {
                tracing::error!(
                    "syncing {} executor writes failed: {error:#}",
                    flight.turn.ops.len()
                );
            }
            answer(flight, result);
        }));
        None
    }

    /// If a turn of writes and a claim fails before its commit, they are
    /// tried apart, so that a claim that cannot be made (a damaged task row,
    /// say) never keeps runs' ends from being recorded, nor the reverse.
    fn turn_done(&mut self, result: StoreResult<Vec<WriteAnswer>>) {
        let Some(flight) = self.in_flight.take() else {
            return;
        };
        match result {
            Err(error) if !flight.turn.ops.is_empty() && flight.claim_reply.is_some() => {
                tracing::warn!(
                    "a writer turn failed, trying its writes and claim apart: {error:#}"
                );
                let Flight {
                    turn,
                    replies,
                    claim_reply,
                } = flight;
                self.retries.push_back(Flight {
                    turn: WriterTurn {
                        ops: turn.ops,
                        claim: None,
                    },
                    replies,
                    claim_reply: None,
                });
                self.retries.push_back(Flight {
                    turn: WriterTurn {
                        ops: Vec::new(),
                        claim: turn.claim,
                    },
                    replies: Vec::new(),
                    claim_reply,
                });
            }
            Err(error) => {
                if !flight.turn.ops.is_empty() {
                    tracing::error!(
                        "committing {} executor writes failed: {error:#}",
                        flight.turn.ops.len()
                    );
                }
                answer(flight, Err(error));
            }
            Ok(applied) => answer(flight, Ok(applied)),
        }
    }
}

/// Answer a flight's writes, and its claim if [`Queue::claimed`] has not.
fn answer(flight: Flight, result: Result<Vec<WriteAnswer>, StoreError>) {
    match result {
        Ok(applied) => {
            for (reply, applied) in flight.replies.into_iter().zip(applied) {
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(applied));
                }
            }
            if let Some(reply) = flight.claim_reply {
                let _ = reply.send(Ok(Vec::new()));
            }
        }
        Err(error) => {
            let message = format!("{error:#}");
            for reply in flight.replies.into_iter().flatten() {
                let _ = reply.send(Err(internal(&message)));
            }
            if let Some(reply) = flight.claim_reply {
                let _ = reply.send(Err(internal(&message)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::run_writer::UNAWAITED_LINGER;
    use crate::store::{
        Durability, NewStep, NewTask, RunEnd, RunResult, RunStatus, Store, Task, TaskStatus,
    };

    fn one_step_task(name: &str) -> NewTask {
        NewTask::new(name, vec![NewStep::new("m/a", serde_json::json!({}))])
    }

    /// A store with one task, claimed: its run is running.
    async fn a_running_run() -> (tempfile::TempDir, Arc<SqliteStore>, Task, ClaimedRun) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("s.db"), Durability::Full)
            .await
            .expect("open");
        let now = Utc::now();
        let (task, _) = store
            .create_task(one_step_task("running"), now)
            .await
            .expect("create");
        let claimed = store
            .claim_due("node", now, now + Duration::from_secs(30), 1)
            .await
            .expect("claim")
            .remove(0);
        (dir, Arc::new(store), task, claimed)
    }

    fn completed(at: chrono::DateTime<Utc>) -> RunEnd {
        RunEnd {
            run_status: RunStatus::Completed,
            message: None,
            finished_at: at,
            task_status: TaskStatus::Completed,
            last_result: RunResult::Success,
            next_run_at: None,
            attempts: 1,
            resume_next: false,
            progress: 100.0,
            rescued: false,
        }
    }

    /// A panic in the writer's hold (here: a lease too long to add to a
    /// time, when a claim is cut) fails what the hold had taken, and the
    /// writer goes on: a later run end is still recorded.
    #[tokio::test]
    async fn the_writer_goes_on_after_a_panic() {
        let (_dir, store, task, claimed) = a_running_run().await;
        let now = Utc::now();
        let committer = SqliteRunWriter::start(
            store.clone(),
            Claimant {
                node: "node".into(),
                lease: Duration::MAX,
            },
        );
        committer
            .claim(ClaimRoom::fixed(1))
            .await
            .expect_err("the hold panicked, the claim is answered");
        let finish = WriteOp::FinishRun {
            task_id: task.id,
            run_id: claimed.run_id,
            end: completed(now),
            claimed_version: None,
        };
        assert!(
            committer
                .commit(finish)
                .await
                .expect("recorded after the panic")
                .applied()
        );
        let task = store.get_task(task.id).await.expect("get").expect("task");
        assert_eq!(task.status, TaskStatus::Completed);
    }

    /// The writer's queue over `receiver`, for a node "node".
    fn queue_of(store: &SqliteStore, receiver: mpsc::UnboundedReceiver<Job>) -> Queue {
        let claimant = Claimant {
            node: "node".into(),
            lease: Duration::from_secs(30),
        };
        Queue::new(receiver, claimant, WalSyncer::start(store.hot.clone()))
    }

    /// What is queued in `receiver`, written in one hold of the writer.
    async fn turns_of(store: &SqliteStore, receiver: mpsc::UnboundedReceiver<Job>) -> Queue {
        let mut queue = queue_of(store, receiver);
        queue.hold();
        store.write_turns(&mut queue).await.expect("turns");
        queue
    }

    /// A claim takes the room there is when its turn is cut, not when it was
    /// asked for: workers freed while it waited behind other writes count.
    #[tokio::test]
    async fn a_claim_takes_the_room_there_is_at_its_turn() {
        let (_dir, store, _, _) = a_running_run().await;
        let now = Utc::now();
        for i in 0..5 {
            store
                .create_task(one_step_task(&format!("due {i}")), now)
                .await
                .expect("create");
        }
        let room = Arc::new(std::sync::atomic::AtomicI64::new(1));
        let (sender, receiver) = mpsc::unbounded_channel();
        let (reply, claim) = oneshot::channel();
        let measured = ClaimRoom::measured({
            let room = room.clone();
            move || room.load(std::sync::atomic::Ordering::SeqCst)
        });
        sender.send(Job::Claim(measured, reply)).expect("queue");
        room.store(3, std::sync::atomic::Ordering::SeqCst);
        turns_of(&store, receiver).await;
        let claimed = claim.await.expect("answered").expect("claimed");
        assert_eq!(claimed.len(), 3);
    }

    /// A turn of writes and a claim that fails is tried again as its writes
    /// and its claim apart: the run's end is recorded, and the claim answers
    /// with its error.
    #[tokio::test]
    async fn a_failing_claim_never_keeps_a_run_end_from_being_recorded() {
        let (_dir, store, running, claimed) = a_running_run().await;
        let now = Utc::now();
        let (broken, _) = store
            .create_task(one_step_task("broken"), now)
            .await
            .expect("create");
        store.break_steps_of(broken.id).await;

        let (sender, receiver) = mpsc::unbounded_channel();
        let (reply, finished) = oneshot::channel();
        let finish = WriteOp::FinishRun {
            task_id: running.id,
            run_id: claimed.run_id,
            end: completed(now),
            claimed_version: None,
        };
        sender.send(Job::Write(finish, Some(reply))).expect("queue");
        let (reply, claim) = oneshot::channel();
        sender
            .send(Job::Claim(ClaimRoom::fixed(5), reply))
            .expect("queue");
        let queue = turns_of(&store, receiver).await;

        assert!(
            finished
                .await
                .expect("answered")
                .expect("recorded")
                .applied()
        );
        let error = claim.await.expect("answered").expect_err("the claim fails");
        assert!(format!("{error:#}").contains("JSON"), "{error:#}");
        let task = store
            .get_task(running.id)
            .await
            .expect("get")
            .expect("task");
        assert_eq!(task.status, TaskStatus::Completed);
        assert!(!queue.has_work());
    }

    /// An idle writer given only writes nobody waits for waits a little for
    /// more (a run's step end for its run's end: one turn, one fsync); what
    /// someone waits for ends that wait at once.
    #[tokio::test]
    async fn writes_nobody_waits_for_wait_for_more_until_a_commit_comes() {
        let (_dir, store, task, claimed) = a_running_run().await;
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut queue = queue_of(&store, receiver);
        let finish = WriteOp::FinishRun {
            task_id: task.id,
            run_id: claimed.run_id,
            end: completed(Utc::now()),
            claimed_version: None,
        };
        tokio::time::pause();

        sender
            .send(Job::Write(finish.clone(), None))
            .expect("queue");
        queue.receiver.recv_many(&mut queue.jobs, 1).await;
        let started = tokio::time::Instant::now();
        queue.linger().await;
        assert!(started.elapsed() >= UNAWAITED_LINGER, "waited for more");
        assert_eq!(queue.jobs.len(), 1);

        let (reply, _answer) = oneshot::channel();
        sender
            .send(Job::Write(finish.clone(), None))
            .expect("queue");
        sender
            .send(Job::Write(finish.clone(), Some(reply)))
            .expect("queue");
        let started = tokio::time::Instant::now();
        queue.linger().await;
        assert_eq!(queue.jobs.len(), 3, "the commit joined the queued writes");
        assert_eq!(started.elapsed(), Duration::ZERO, "and cut the wait short");

        queue.jobs.clear();
        let (reply, _claim) = oneshot::channel();
        sender.send(Job::Write(finish, None)).expect("queue");
        sender
            .send(Job::Claim(ClaimRoom::fixed(1), reply))
            .expect("queue");
        queue.receiver.recv_many(&mut queue.jobs, 1).await;
        let started = tokio::time::Instant::now();
        queue.linger().await;
        assert_eq!(queue.jobs.len(), 2, "a claim joins the queued write");
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "and cuts the wait short too"
        );
    }
}
