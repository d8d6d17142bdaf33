//! Checks of the repository itself: it stands alone (no document points at a
//! file outside it), its manifests carry only what the code uses, and tests
//! know when they run under CI.

mod common;

use common::skip::ci_value_means_ci;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("server/ is inside the repository")
        .to_path_buf()
}

/// The repository's tracked text files, relative to its root.
fn tracked_files() -> Vec<PathBuf> {
    let output = Command::new("git")
        .arg("-C")
        .arg(root())
        .args(["ls-files", "--cached", "--others", "--exclude-standard"])
        .output()
        .expect("git ls-files");
    assert!(output.status.success(), "git ls-files failed");
    String::from_utf8(output.stdout)
        .expect("utf-8 paths")
        .lines()
        .map(PathBuf::from)
        .filter(|p| root().join(p).is_file())
        .collect()
}

#[test]
fn no_file_points_outside_the_repository() {
    // Built from pieces so that this file does not match itself.
    let outside = [
        ["../", "shared"].concat(),
        ["DESIGN", ".md"].concat(),
        ["RUNTIME", "-NOTES"].concat(),
        ["STYLE", ".md"].concat(),
    ];
    let mut found = Vec::new();
    for file in tracked_files() {
        let Ok(text) = std::fs::read_to_string(root().join(&file)) else {
            continue; // not text
        };
        for (n, line) in text.lines().enumerate() {
            for name in &outside {
                if line.contains(name.as_str()) {
                    found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "these lines cite documents outside the repository; write what they need into docs/:\n{}",
        found.join("\n")
    );
}

#[test]
fn relative_links_in_documents_resolve() {
    let mut broken = Vec::new();
    for file in tracked_files() {
        if file.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = std::fs::read_to_string(root().join(&file)).expect("read markdown");
        for target in markdown_links(&text) {
            if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
                continue;
            }
            let path = target.split('#').next().unwrap_or_default();
            let dir = root()
                .join(&file)
                .parent()
                .expect("file has a folder")
                .to_path_buf();
            if !dir.join(path).exists() {
                broken.push(format!("{}: {target}", file.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links to nothing:\n{}",
        broken.join("\n")
    );
}

/// The targets of `[text](target)` links.
fn markdown_links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("](") {
        let after = &rest[start + 2..];
        match after.find(')') {
            Some(end) => {
                let target = &after[..end];
                if !target.contains(char::is_whitespace) && !target.is_empty() {
                    links.push(target.to_string());
                }
                rest = &after[end..];
            }
            None => break,
        }
    }
    links
}

/// The `[dependencies]` of the server's manifest, by crate name as code writes it.
fn server_dependencies() -> Vec<String> {
    let manifest = std::fs::read_to_string(root().join("server/Cargo.toml")).expect("manifest");
    let manifest: toml::Table = manifest.parse().expect("server/Cargo.toml is TOML");
    manifest["dependencies"]
        .as_table()
        .expect("[dependencies]")
        .keys()
        .map(|name| name.replace('-', "_"))
        .collect()
}

/// Rust files of `server/src` that are not tests (a file under a `tests`
/// folder or named `tests.rs` is compiled only for tests).
fn server_sources() -> Vec<(PathBuf, String)> {
    tracked_files()
        .into_iter()
        .filter(|p| p.starts_with("server/src") && p.extension().is_some_and(|e| e == "rs"))
        .filter(|p| !p.components().any(|c| c.as_os_str() == "tests") && !p.ends_with("tests.rs"))
        .map(|p| {
            let text = std::fs::read_to_string(root().join(&p)).expect("read source");
            (p, text)
        })
        .collect()
}

#[test]
fn every_dependency_is_used_by_the_server_itself() {
    let sources = server_sources();
    let unused: Vec<String> = server_dependencies()
        .into_iter()
        .filter(|name| {
            !sources.iter().any(|(_, text)| {
                text.contains(&format!("{name}::"))
                    || text.contains(&format!("use {name}"))
                    || text.contains(&format!("{name}!"))
            })
        })
        .collect();
    assert!(
        unused.is_empty(),
        "server/Cargo.toml [dependencies] that no non-test source uses (drop them, or move \
         test-only ones to [dev-dependencies]): {unused:?}"
    );
}

#[test]
fn one_version_of_each_websocket_crate() {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).expect("Cargo.lock");
    let lock: toml::Table = lock.parse().expect("Cargo.lock is TOML");
    let mut versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for package in lock["package"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("name");
        if ["tungstenite", "tokio-tungstenite"].contains(&name) {
            let version = package["version"].as_str().expect("version").to_string();
            versions.entry(name.to_string()).or_default().push(version);
        }
    }
    let doubled: Vec<_> = versions.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(
        doubled.is_empty(),
        "built twice (set tokio-tungstenite to the version axum uses): {doubled:?}"
    );
}

#[test]
fn any_ci_value_but_false_means_ci() {
    for value in ["true", "1", "yes", "github-actions", "TRUE"] {
        assert!(ci_value_means_ci(Some(value)), "CI={value} is CI");
    }
    for value in [None, Some(""), Some("0"), Some("false"), Some("False")] {
        assert!(!ci_value_means_ci(value), "CI={value:?} is not CI");
    }
}
