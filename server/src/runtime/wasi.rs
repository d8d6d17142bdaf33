//! The WASI a step sees: all of WASI 0.2, granting nothing.
//!
//! The standard toolchains import more of WASI than a step uses: CPython
//! (componentize-py) imports the filesystem and sockets at start-up whether or
//! not the step touches them, and Rust's `std::fs` does as soon as it is
//! linked in. Refusing those imports would refuse every Python step, so the
//! sandbox links all of WASI 0.2 instead and hands each step a context with
//! nothing in it: no preopened directory (so no path resolves), TCP, UDP and
//! name lookup denied, an empty environment, no arguments and an empty stdin.
//! A step that opens a file or a socket gets its language's ordinary error
//! (`FileNotFoundError`, `PermissionError`, `io::Error`) and can go on.
//!
//! What the step writes to stdout and stderr goes to its log
//! (`super::output`). Wall clock, monotonic clock and random are real: they
//! reveal nothing of the host a step could not learn by timing itself.

use super::output::GuestOutput;
use wasmtime_wasi::WasiCtx;

/// WASI packages a step may import, each at any 0.2 version (the linker
/// matches any 0.2.x import to the 0.2 it has). Anything else, `wasi:http`
/// included, is refused at upload.
pub const ALLOWED_PACKAGES: &[&str] = &[
    "wasi:io",
    "wasi:clocks",
    "wasi:random",
    "wasi:cli",
    "wasi:filesystem",
    "wasi:sockets",
];

/// Whether a component may import `name` (e.g. `wasi:filesystem/types@0.2.9`).
pub fn is_allowed_wasi(name: &str) -> bool {
    let Some((interface, version)) = name.split_once('@') else {
        return false;
    };
    let Some((package, _)) = interface.split_once('/') else {
        return false;
    };
    ALLOWED_PACKAGES.contains(&package) && version.starts_with("0.2.")
}

/// A context that grants nothing but the step's log as stdout and stderr.
pub fn deny_all(stdout: GuestOutput, stderr: GuestOutput) -> WasiCtx {
    WasiCtx::builder()
        .stdout(stdout)
        .stderr(stderr)
        // These are wasmtime's defaults too; spelled out so a change of
        // defaults cannot open the network.
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasi_0_2_is_allowed_and_nothing_else() {
        assert!(is_allowed_wasi("wasi:filesystem/types@0.2.9"));
        assert!(is_allowed_wasi("wasi:sockets/ip-name-lookup@0.2.0"));
        assert!(is_allowed_wasi("wasi:cli/environment@0.2.12"));
        assert!(!is_allowed_wasi("wasi:http/outgoing-handler@0.2.9"));
        assert!(!is_allowed_wasi("wasi:filesystem/types@0.3.0"));
        assert!(!is_allowed_wasi("wasi:filesystem/types"));
        assert!(!is_allowed_wasi("wasi:keyvalue/store@0.2.0"));
        assert!(!is_allowed_wasi("wasi:io@0.2.0"));
    }
}
