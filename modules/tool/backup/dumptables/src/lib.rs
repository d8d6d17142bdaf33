//! `tool/backup/dumptables`: writes tables as an SQL dump artifact, one table at a time,
//! with a checkpoint after each so a retry resumes instead of starting over.
//!
//! ```json
//! {
//!   "tables": [
//!     {"name": "customers", "columns": ["id", "email"], "rows": [[1, "ann@example.com"]]},
//!     {"name": "orders", "columns": ["id", {"name": "total", "type": "DECIMAL(10,2)"}],
//!      "rows": [[7, 19.99]]}
//!   ],
//!   "file": "backup.sql"
//! }
//! ```
//!
//! On a retry the dump continues after the last table the failed attempt finished: the
//! artifact gets a comment saying where it resumed, and the output's `resumed_from` says
//! how many tables were skipped. A retry runs as a new run, so if the server keeps
//! artifacts per run, the skipped tables are in the earlier run's artifact of the same
//! name.

mod sql;

use serde::{Deserialize, Serialize};
use sql::{Dialect, Table};
use stepwise_guest::{
    Progress, StepError, artifact, bail, checkpoint, context, ensure_permanent, export_step, log,
};

/// Settings of `tool/backup/dumptables`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The tables to dump, in order.
    tables: Vec<Table>,
    /// Name of the SQL artifact.
    #[serde(default = "default_file")]
    file: String,
    /// `"mysql"` (default) or `"standard"`.
    #[serde(default)]
    dialect: Dialect,
    /// Rows per `INSERT` statement.
    #[serde(default = "default_rows_per_insert")]
    rows_per_insert: usize,
    /// For tests: on the first attempt only, fail after this many tables are written.
    fail_after_tables: Option<u32>,
}

fn default_file() -> String {
    "backup.sql".into()
}

fn default_rows_per_insert() -> usize {
    100
}

/// Saved after each table.
#[derive(Serialize, Deserialize, Default)]
struct Checkpoint {
    /// Tables fully written to the artifact.
    done_tables: u32,
}

/// What the step returns.
#[derive(Serialize)]
struct Output {
    /// The artifact's name.
    file: String,
    /// Tables in the settings.
    tables_total: u32,
    /// Tables this attempt wrote.
    tables_written: u32,
    /// Tables an earlier attempt had written and this one skipped (0 on a fresh start).
    resumed_from: u32,
    /// Rows this attempt wrote.
    rows_written: u64,
    /// Bytes this attempt appended to the artifact.
    bytes_written: u64,
}

fn dump(settings: Settings) -> Result<Output, StepError> {
    let total = settings.tables.len() as u32;
    for table in &settings.tables {
        // The tables come with the settings: a bad one is bad on every attempt.
        table.validate().map_err(StepError::into_permanent)?;
    }
    let attempt = context().attempt;
    let resumed_from = checkpoint::load::<Checkpoint>()?
        .unwrap_or_default()
        .done_tables;
    ensure_permanent!(
        resumed_from <= total,
        "the checkpoint says {resumed_from} tables are done but the settings list {total}"
    );

    let header = if resumed_from == 0 {
        let plural = if total == 1 { "" } else { "s" };
        let mut header = format!("-- Stepwise table dump: {total} table{plural}\n");
        if settings.dialect == Dialect::Mysql {
            header.push_str("SET NAMES utf8mb4;\n");
        }
        artifact::write(&settings.file, &header)?;
        header
    } else {
        log::info(format_args!(
            "attempt {attempt}: resuming after {resumed_from} of {total} tables"
        ));
        let header = format!(
            "\n-- Resumed by attempt {attempt}: the first {resumed_from} tables were written earlier\n"
        );
        artifact::append(&settings.file, &header)?;
        header
    };

    let progress = Progress::new(total.into());
    if resumed_from > 0 {
        progress.set(
            resumed_from.into(),
            format_args!("{resumed_from} tables already done"),
        );
    }
    let mut output = Output {
        file: settings.file.clone(),
        tables_total: total,
        tables_written: 0,
        resumed_from,
        rows_written: 0,
        bytes_written: header.len() as u64,
    };
    for (done, table) in (1..).zip(&settings.tables).skip(resumed_from as usize) {
        let sql = table.to_sql(settings.dialect, settings.rows_per_insert);
        artifact::append(&settings.file, &sql)?;
        checkpoint::save(&Checkpoint { done_tables: done })?;
        output.tables_written += 1;
        output.rows_written += table.rows.len() as u64;
        output.bytes_written += sql.len() as u64;
        progress.advance(format_args!("dumped table {}", table.name));
        if settings.fail_after_tables == Some(done) && attempt == 1 {
            bail!("failing on purpose after {done} tables (fail_after_tables, attempt 1)");
        }
    }
    Ok(output)
}

export_step!(dump);
// Title, description and the settings' JSON Schema, for the dashboard's form
// and the server's checks at task create (see metadata.json).
stepwise_guest::metadata!(include_str!("../metadata.json"));
