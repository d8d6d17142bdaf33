//! Which store the end-to-end tests run on. By default each server gets its
//! own SQLite file in its data directory. With `STEPWISE_TEST_STORE=postgres`
//! (CI runs the engine and API tests a second time so) each test server gets
//! a fresh PostgreSQL database on the server at `STEPWISE_TEST_POSTGRES`
//! (default `postgres://postgres@127.0.0.1:5432/test`), made with `psql`.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Prefix of the databases the tests make (`.ci/run` drops old ones).
pub const PREFIX: &str = "stepwise_e2e_";

/// The server every test database is made on.
pub fn postgres_base() -> String {
    std::env::var("STEPWISE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// Whether the tests were asked to run on PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var("STEPWISE_TEST_STORE").is_ok_and(|store| store == "postgres")
}

/// Whether a PostgreSQL server answers at [`postgres_base`], or why not.
pub fn postgres_reachable() -> Result<(), String> {
    let output = Command::new("psql")
        .arg(postgres_base())
        .args(["-qAtc", "SELECT 1"])
        .output()
        .map_err(|e| format!("psql could not be run ({e}); install PostgreSQL's client"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "PostgreSQL at {} does not answer: {}",
            postgres_base(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A fresh, empty database; returns its URL.
pub fn fresh_postgres_database() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "{PREFIX}{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let output = Command::new("psql")
        .arg(postgres_base())
        .args(["-qAtc", &format!("CREATE DATABASE {name}")])
        .output()
        .expect("run psql");
    assert!(
        output.status.success(),
        "creating database {name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let base = postgres_base();
    let server = base
        .rsplit_once('/')
        .map_or(base.as_str(), |(server, _)| server);
    format!("{server}/{name}")
}

/// The `--database` a test server on `data_dir` uses, unless `args` name
/// one: on PostgreSQL one database per data directory, kept in it so a
/// restart finds the same.
pub fn database_args(data_dir: &Path, args: &[&str]) -> Vec<String> {
    if !on_postgres() || args.contains(&"--database") {
        return Vec::new();
    }
    let kept = data_dir.join("test-database-url");
    let url = match std::fs::read_to_string(&kept) {
        Ok(url) => url.trim().to_string(),
        Err(_) => {
            let url = fresh_postgres_database();
            std::fs::write(&kept, &url).expect("keep the test database's URL");
            url
        }
    };
    vec!["--database".to_string(), url]
}
