//! Connections of their own for the statements every task runs: the claim,
//! the run writer's batches, and creates of a few tasks.
//!
//! PostgreSQL keeps a prepared statement's plan per connection. From the
//! shared pool a statement lands on any of its connections, and each one
//! plans it for itself: at first, and again after every `ANALYZE` of a table
//! the statement reads, which autovacuum runs often while tables are small
//! and growing. The claim is one large statement whose plan takes
//! milliseconds to make; on a connection of its own it is planned once per
//! change of statistics instead of once per pooled connection. The claim
//! loop and the run writer each run one statement at a time, so a
//! connection each is no queue (a test's extra claim waits its turn).
//!
//! These connections also plan generically (`plan_cache_mode =
//! force_generic_plan`): PostgreSQL would otherwise plan a statement afresh
//! at every call whenever its custom plan looks cheaper than the generic
//! one, which is always the case for a statement whose arrays' lengths it
//! knows (a create, a batch of run ends). The generic plans fit these
//! statements, which reach their rows through indexes whatever the size
//! of their batch (the drain in `BENCHMARKS.md` found no loss).
//!
//! A plan is made for the tables as they are when it is made, and only an
//! `ANALYZE` of one of them throws it away. A node's first plans meet empty
//! tables, where reading a whole table is the cheapest way to find a row;
//! where nothing analyzes the tables (autovacuum off, as on the machines
//! the benchmarks run on), those plans stayed for the connection's life,
//! and a run end read every step run ever recorded. So each of these
//! connections makes its plans again every [`REPLAN_EVERY`] (`DISCARD
//! PLANS`, which keeps the prepared statements): PostgreSQL plans for a
//! table's size as it is on disk even without statistics, and reads a
//! grown table through its indexes.

use sqlx::Executor;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a hot connection keeps its plans. Planning the claim afresh
/// takes milliseconds; once in this long it is a small price, and a table
/// grows by only so much in between.
const REPLAN_EVERY: Duration = Duration::from_secs(10);

pub(super) struct HotConnections {
    /// The claim's (`claim.rs`).
    pub(super) claims: PgPool,
    /// The run writer's (`writes.rs`).
    pub(super) writes: PgPool,
    /// Creates of a few tasks (`tasks::create_many`).
    pub(super) small_creates: PgPool,
    /// How old each one's plans are, in the same order (the pools' hooks
    /// hold them; tests reach them here).
    #[cfg(test)]
    plans: [Arc<PlanAge>; 3],
}

impl HotConnections {
    /// One connection for each, opened at its first use (most test stores
    /// never create or claim).
    pub(super) fn lazy(options: &PgConnectOptions) -> HotConnections {
        let generic = options
            .clone()
            .options([("plan_cache_mode", "force_generic_plan")]);
        let plans: [Arc<PlanAge>; 3] =
            std::array::from_fn(|_| Arc::new(PlanAge::new(REPLAN_EVERY)));
        let one = |plans: &Arc<PlanAge>| {
            let plans = plans.clone();
            super::unchecked_pool_options(1)
                .before_acquire(move |conn, meta| {
                    let plans = plans.clone();
                    Box::pin(async move { plans.renew(conn, meta.idle_for).await })
                })
                .connect_lazy_with(generic.clone())
        };
        HotConnections {
            claims: one(&plans[0]),
            writes: one(&plans[1]),
            small_creates: one(&plans[2]),
            #[cfg(test)]
            plans,
        }
    }

    /// Make every connection's plans due now (`true`: each makes them again
    /// before its next statement) or never (until this is called again).
    #[cfg(test)]
    pub(super) fn set_plans_due(&self, now: bool) {
        let due_at = if now { 0 } else { u64::MAX };
        for plans in &self.plans {
            plans.due_at.store(due_at, Ordering::Relaxed);
        }
    }

    /// Every pool, for tests that look at all connections.
    #[cfg(test)]
    pub(super) fn all(&self) -> [&PgPool; 3] {
        [&self.claims, &self.writes, &self.small_creates]
    }
}

/// When a hot connection's plans were last thrown away (one connection per
/// pool, so one age per pool; a connection opened meanwhile only replans
/// a little early).
struct PlanAge {
    started: Instant,
    /// Milliseconds after `started` from which the plans are due again.
    due_at: AtomicU64,
    /// [`REPLAN_EVERY`], in milliseconds.
    every: u64,
}

impl PlanAge {
    fn new(every: Duration) -> PlanAge {
        let every = millis(every);
        PlanAge {
            started: Instant::now(),
            due_at: AtomicU64::new(every),
            every,
        }
    }

    /// Ready `conn` to be handed out: its plans thrown away when they are
    /// due (a round trip, which also tells that the connection is alive),
    /// else pinged if it was idle (see [`super::ping_if_idle`]).
    async fn renew(&self, conn: &mut PgConnection, idle_for: Duration) -> sqlx::Result<bool> {
        let now = millis(self.started.elapsed());
        let due_at = self.due_at.load(Ordering::Relaxed);
        if now < due_at {
            return super::ping_if_idle(conn, idle_for).await;
        }
        conn.execute("DISCARD PLANS").await?;
        self.due_at
            .store(now.saturating_add(self.every), Ordering::Relaxed);
        Ok(true)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
