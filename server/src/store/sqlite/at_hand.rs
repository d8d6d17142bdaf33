//! The statements of one hot transaction, kept at hand once fetched.
//!
//! rusqlite's statement cache finds a statement by hashing its SQL text
//! (hundreds of bytes for the wider updates), and a claim or a batch of run
//! ends runs a few statements per task: the lookups were a few percent of the
//! writer's time in `perf` (a claim went from 17.0 to 16.4 µs per task
//! without them). Here each statement is fetched from the cache (or
//! prepared) once per transaction and then reached by its index.

use anyhow::{Context, Result};
use rusqlite::{CachedStatement, Connection};

/// A statement of a transaction: its index among the transaction's
/// statements, and its SQL.
pub(super) type Sql = (usize, &'static str);

pub(super) struct AtHand<'c, const N: usize> {
    db: &'c Connection,
    statements: [Option<CachedStatement<'c>>; N],
}

impl<'c, const N: usize> AtHand<'c, N> {
    pub(super) fn new(db: &'c Connection) -> Self {
        AtHand {
            db,
            statements: std::array::from_fn(|_| None),
        }
    }

    /// The statement, fetched on first use.
    pub(super) fn get(&mut self, (index, sql): Sql) -> Result<&mut CachedStatement<'c>> {
        let slot = &mut self.statements[index];
        if slot.is_none() {
            *slot = Some(self.db.prepare_cached(sql)?);
        }
        slot.as_mut().context("a statement just prepared")
    }

    /// The connection (for `last_insert_rowid`).
    pub(super) fn db(&self) -> &'c Connection {
        self.db
    }
}
