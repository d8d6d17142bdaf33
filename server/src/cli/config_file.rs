//! `stepwise serve --config FILE`: settings from a TOML file. Precedence:
//! command-line flags, then environment variables, then the file, then the
//! defaults. The file's keys are the flag names with `_` (e.g.
//! `data_dir = "/var/lib/stepwise"`, `workers = 8`, `no_examples = true`).

use anyhow::{Context, bail};
use std::ffi::OsString;
use std::path::PathBuf;

/// Keys a config file may set (the long flags of `serve`).
const KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "database",
    "durability",
    "workers",
    "fuel_per_second",
    "max_module_bytes",
    "modules_dir",
    "no_examples",
    "lease_seconds",
    "shutdown_grace_seconds",
    "retention_days",
    "compile_timeout",
    "compile_memory",
    "log_format",
    "embed_origin",
    "hook_allow_hosts",
    "hook_allow_any_host",
    "hook_retry_base_ms",
    "hook_timeout_seconds",
];

/// The process arguments, with the config file's settings added as flags
/// where neither a flag nor an environment variable already sets them.
pub fn args_with_config() -> anyhow::Result<Vec<OsString>> {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).and_then(|a| a.to_str()) != Some("serve") {
        return Ok(args);
    }
    let Some(path) = config_path(&args) else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    let mut extra = Vec::new();
    for (key, value) in table {
        if !KEYS.contains(&key.as_str()) {
            bail!(
                "{}: unknown setting `{key}`; known: {}",
                path.display(),
                KEYS.join(", ")
            );
        }
        let flag = format!("--{}", key.replace('_', "-"));
        let on_command_line = args
            .iter()
            .filter_map(|a| a.to_str())
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")));
        let in_environment = std::env::var_os(format!("STEPWISE_{}", key.to_uppercase())).is_some();
        if on_command_line || in_environment {
            continue;
        }
        match value {
            toml::Value::Boolean(true) => extra.push(OsString::from(flag)),
            toml::Value::Boolean(false) => {}
            toml::Value::String(text) => extra.extend([OsString::from(flag), OsString::from(text)]),
            toml::Value::Integer(n) => {
                extra.extend([OsString::from(flag), OsString::from(n.to_string())])
            }
            other => bail!(
                "{}: `{key}` must be a string, a number or a boolean, not {other}",
                path.display()
            ),
        }
    }
    let mut args = args;
    args.extend(extra);
    Ok(args)
}

fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut iter = args.iter().filter_map(|a| a.to_str());
    while let Some(arg) = iter.next() {
        if arg == "--config" {
            return iter.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("STEPWISE_CONFIG").map(PathBuf::from)
}

/// What a client command takes from a server's config file: where the
/// server listens and where its data directory (with the admin token) is.
#[derive(Debug, Default)]
pub struct ServerPlace {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
}

/// Read `listen` and `data_dir` from a server's config file.
pub fn server_place(path: &std::path::Path) -> anyhow::Result<ServerPlace> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    let text_of = |key: &str| table.get(key).and_then(|v| v.as_str()).map(str::to_string);
    Ok(ServerPlace {
        listen: text_of("listen"),
        data_dir: text_of("data_dir").map(PathBuf::from),
    })
}
