//! Tests that need something outside Rust (a browser, PostgreSQL) skip where it is
//! absent — on a user's machine — but never in CI, where a skip would hide a part
//! that was never tested.

use std::io::Write;

/// Whether this run is CI. CI providers set `CI` to `true`, `1` or their own name;
/// only an empty value, `0` or `false` mean "not CI".
pub fn in_ci() -> bool {
    ci_value_means_ci(std::env::var("CI").ok().as_deref())
}

/// What a value of the `CI` variable means (`None`: unset).
pub fn ci_value_means_ci(value: Option<&str>) -> bool {
    match value.map(str::trim) {
        None | Some("") => false,
        Some(v) => !(v == "0" || v.eq_ignore_ascii_case("false")),
    }
}

/// Skip `test` because of `why`, saying so where the person running the tests sees
/// it; under CI fail instead.
///
/// The message goes to the process's stdout handle, not through `println!`:
/// libtest captures the print macros of a passing test and shows nothing of them.
pub fn skip_or_fail(test: &str, why: &str) {
    if in_ci() {
        panic!("{test}: cannot run under CI ({why}); CI must provide what it needs");
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "\nSKIPPED {test}: {why}");
    let _ = out.flush();
}
