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

use sqlx::postgres::{PgConnectOptions, PgPool};

#[derive(Debug)]
pub(super) struct HotConnections {
    /// The claim's (`claim.rs`).
    pub(super) claims: PgPool,
    /// The run writer's (`writes.rs`).
    pub(super) writes: PgPool,
    /// Creates of a few tasks (`tasks::create_many`).
    pub(super) small_creates: PgPool,
}

impl HotConnections {
    /// One connection for each, opened at its first use (most test stores
    /// never create or claim).
    pub(super) fn lazy(options: &PgConnectOptions) -> HotConnections {
        let generic = options
            .clone()
            .options([("plan_cache_mode", "force_generic_plan")]);
        let one = || super::pool_options(1).connect_lazy_with(generic.clone());
        HotConnections {
            claims: one(),
            writes: one(),
            small_creates: one(),
        }
    }

    /// Every pool, for tests that look at all connections.
    #[cfg(test)]
    pub(super) fn all(&self) -> [&PgPool; 3] {
        [&self.claims, &self.writes, &self.small_creates]
    }
}
