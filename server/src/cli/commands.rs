//! Client commands: `task …`, `module …`, `token …`, each one API call.

use super::client::{Body, Client, Connection, show};
use super::steps::{TaskStepsCommand, print_steps};
use super::task_ref::TaskRef;
use super::watch;
use anyhow::Context;
use reqwest::Method;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum TaskCommand {
    /// Create (or update by code) a task from a JSON file (`-` for stdin).
    Create {
        file: PathBuf,
        /// Follow its progress until it finishes (a recurring task: until its
        /// run ends); exit 0 only if it completed.
        #[arg(long)]
        watch: bool,
    },
    /// List tasks, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Show a task with its steps (by id, or `--code`; on a cron schedule,
    /// its next runs too).
    Show {
        #[command(flatten)]
        task: TaskRef,
    },
    /// Add, change, remove or reorder a task's steps without re-posting it
    /// (a run in progress keeps the steps it started with).
    Steps {
        #[command(subcommand)]
        command: TaskStepsCommand,
    },
    /// Run a task now, whatever its schedule (or only one of its steps).
    Run {
        #[command(flatten)]
        task: TaskRef,
        /// Run only this step (its id, as `task show` lists it), on its own.
        #[arg(long)]
        step: Option<i64>,
        #[arg(long)]
        watch: bool,
    },
    /// Delete a task with its runs, logs and artifacts (not while it runs),
    /// by id or `--code` (a plugin's uninstall).
    Delete {
        #[command(flatten)]
        task: TaskRef,
    },
    /// Make every scheduled task due now (a "Run tasks" button); prints how
    /// many are due.
    RunDue,
    /// Switch a task on again: it runs at its schedule.
    Enable { id: i64 },
    /// Switch a task off: it keeps its definition and history but never runs
    /// until enabled (not while it runs: cancel it first).
    Disable { id: i64 },
    /// Delete finished tasks not updated for this long (admin).
    Cleanup {
        /// Age, e.g. `30d`, `12h`, `90m`.
        #[arg(long, value_parser = parse_age)]
        older_than: chrono::Duration,
        /// Only tasks that ended so: completed, failed or cancelled.
        #[arg(long)]
        status: Option<String>,
    },
    /// Cancel a task (a running one stops within 100 ms).
    Cancel { id: i64 },
    /// Run a failed task again, continuing at its first unfinished step.
    Retry {
        id: i64,
        #[arg(long)]
        watch: bool,
    },
    /// Follow a task's progress until it finishes (a recurring task: until
    /// its current or next run ends).
    Watch { id: i64 },
    /// Print a task's log.
    Logs {
        id: i64,
        #[arg(long, default_value_t = 500)]
        limit: i64,
    },
    /// List a task's artifacts, or download one.
    Artifacts {
        id: i64,
        /// Download the artifact with this name.
        #[arg(long)]
        download: Option<String>,
        /// Where to save the download (default: its name).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ModuleCommand {
    /// Upload a component under a path, e.g. `tool/backup/dumptables`.
    Upload {
        path: String,
        file: PathBuf,
        /// A JSON file with the module's metadata (title, description,
        /// version, settings_schema), for components that carry no
        /// `stepwise:metadata` section.
        #[arg(long)]
        metadata: Option<PathBuf>,
    },
    List,
    /// Register the server's --modules-dir and examples again, without a
    /// restart, and say what was added, updated, unchanged or failed.
    Rescan,
    /// List tasks whose steps name a module that is not registered.
    Missing,
    Show {
        path: String,
    },
    Enable {
        path: String,
    },
    Disable {
        path: String,
    },
    /// Set how many runs using the module may run at once and start a
    /// minute, across every node; a limit not given is removed, so
    /// `stepwise module limit <path>` alone lifts both.
    Limit {
        path: String,
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
        max_running: Option<i64>,
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
        max_starts_per_minute: Option<i64>,
    },
    Delete {
        path: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once.
    Create {
        #[arg(long, value_parser = ["viewer", "operator", "admin"])]
        role: String,
        #[arg(long, default_value = "cli")]
        name: String,
    },
    List,
    Revoke {
        id: i64,
    },
}

pub async fn task(connection: &Connection, command: TaskCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(connection)?;
    match command {
        TaskCommand::Create { file, watch } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let body: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", file.display()))?;
            let task = client
                .call(Method::POST, "/tasks", Some(Body::Json(body)))
                .await?;
            client.print(&task, |t| {
                eprintln!("task {} created: {}", t["id"], show(&t["status"]))
            });
            if watch {
                // A new task has no run yet: its first is the one to follow.
                return watch::watch(&client, task["id"].as_i64().unwrap_or(0), 0).await;
            }
        }
        TaskCommand::List { status, limit } => {
            let mut path = format!("/tasks?limit={limit}");
            if let Some(status) = status {
                path.push_str(&format!("&status={status}"));
            }
            let page = client.call(Method::GET, &path, None).await?;
            client.print(&page, |page| {
                println!(
                    "{:>6}  {:<10} {:>6}  {:<12} {:<24} NAME",
                    "ID", "STATUS", "DONE", "LAST", "NEXT RUN"
                );
                for t in page["tasks"].as_array().into_iter().flatten() {
                    println!(
                        "{:>6}  {:<10} {:>5.0}%  {:<12} {:<24} {}",
                        show(&t["id"]),
                        show(&t["status"]),
                        t["progress"].as_f64().unwrap_or(0.0),
                        show(&t["last_result"]),
                        show(&t["next_run_at"]),
                        show(&t["name"])
                    );
                }
            });
        }
        TaskCommand::Show { task } => {
            let task = client.call(Method::GET, &task.path(), None).await?;
            client.print(&task, |t| {
                println!("task {} — {}", t["id"], show(&t["name"]));
                for key in [
                    "status",
                    "priority",
                    "progress",
                    "message",
                    "attempts",
                    "max_attempts",
                    "last_result",
                    "last_run_at",
                    "next_run_at",
                    "run_interval",
                    "cron",
                    "timezone",
                    "code",
                ] {
                    println!("  {key:<13} {}", show(&t[key]));
                }
                let next_runs: Vec<String> = t["next_runs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(show)
                    .collect();
                if !next_runs.is_empty() {
                    println!("  {:<13} {}", "next_runs", next_runs.join(", "));
                }
                print_steps(t);
            });
        }
        TaskCommand::Steps { command } => super::steps::steps(&client, command).await?,
        TaskCommand::Run { task, step, watch } => {
            let label = task.label();
            // A step's path and following the run need the id.
            let id = if step.is_some() || watch {
                Some(task.id(&client).await?)
            } else {
                None
            };
            let floor = match id {
                Some(id) if watch => watch::latest_run(&client, id).await?.0,
                _ => 0,
            };
            let path = match (step, id) {
                (Some(step), Some(id)) => format!("/tasks/{id}/steps/{step}/run"),
                _ => format!("{}/run", task.path()),
            };
            client.call(Method::POST, &path, None).await?;
            match step {
                Some(step) => eprintln!("step {step} of {label} started"),
                None => eprintln!("{label} started"),
            }
            if let (true, Some(id)) = (watch, id) {
                return watch::watch(&client, id, floor).await;
            }
        }
        TaskCommand::Delete { task } => {
            client.call(Method::DELETE, &task.path(), None).await?;
            eprintln!("{} deleted", task.label());
        }
        TaskCommand::RunDue => {
            let result = client.call(Method::POST, "/tasks/run-due", None).await?;
            client.print(&result, |r| {
                eprintln!("{} scheduled task(s) due now", show(&r["due"]));
            });
        }
        TaskCommand::Enable { id } => set_disabled(&client, id, false).await?,
        TaskCommand::Disable { id } => set_disabled(&client, id, true).await?,
        TaskCommand::Cleanup { older_than, status } => {
            let before = (chrono::Utc::now() - older_than)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let mut path = format!("/tasks?finished_before={before}");
            if let Some(status) = status {
                path.push_str(&format!("&status={status}"));
            }
            let result = client.call(Method::DELETE, &path, None).await?;
            client.print(&result, |r| {
                eprintln!(
                    "deleted {} finished task(s) last updated before {before}",
                    show(&r["deleted"])
                );
            });
        }
        TaskCommand::Cancel { id } => {
            let result = client
                .call(Method::POST, &format!("/tasks/{id}/cancel"), None)
                .await?;
            client.print(&result, |r| {
                if r["cancelled"] == true {
                    eprintln!("task {id} cancelled");
                } else {
                    eprintln!("task {id} is running; it is being stopped");
                }
            });
        }
        TaskCommand::Retry { id, watch } => {
            let floor = watch::latest_run(&client, id).await?.0;
            client
                .call(Method::POST, &format!("/tasks/{id}/retry"), None)
                .await?;
            eprintln!("task {id} will retry");
            if watch {
                return watch::watch(&client, id, floor).await;
            }
        }
        TaskCommand::Watch { id } => {
            let floor = watch::current_run_floor(&client, id).await?;
            return watch::watch(&client, id, floor).await;
        }
        TaskCommand::Logs { id, limit } => {
            let logs = client
                .call(
                    Method::GET,
                    &format!("/tasks/{id}/logs?limit={limit}"),
                    None,
                )
                .await?;
            client.print(&logs, |l| {
                for line in l["logs"].as_array().into_iter().flatten() {
                    println!(
                        "{} {:>5} {}",
                        show(&line["created_at"]),
                        show(&line["level"]).to_uppercase(),
                        show(&line["message"])
                    );
                }
            });
        }
        TaskCommand::Artifacts {
            id,
            download: Some(name),
            output,
        } => {
            let bytes = client
                .download(&format!("/tasks/{id}/artifacts/{name}"))
                .await?;
            let output = output.unwrap_or_else(|| PathBuf::from(&name));
            std::fs::write(&output, &bytes)
                .with_context(|| format!("writing {}", output.display()))?;
            eprintln!("saved {} ({} bytes)", output.display(), bytes.len());
        }
        TaskCommand::Artifacts {
            id, download: None, ..
        } => {
            let list = client
                .call(Method::GET, &format!("/tasks/{id}/artifacts"), None)
                .await?;
            client.print(&list, |l| {
                for a in l["artifacts"].as_array().into_iter().flatten() {
                    println!(
                        "{:<32} {:>10} bytes  run {}",
                        show(&a["name"]),
                        show(&a["size"]),
                        show(&a["run_id"])
                    );
                }
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn module(connection: &Connection, command: ModuleCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(connection)?;
    let limit = |v: &Value| {
        if v.is_null() {
            "any".to_string()
        } else {
            show(v)
        }
    };
    let print_module = |m: &Value| {
        println!(
            "{:<40} {:<8} {:>9} bytes  {}",
            show(&m["path"]),
            if m["active"] == true {
                "active"
            } else {
                "inactive"
            },
            show(&m["size"]),
            &show(&m["hash"])[..12.min(show(&m["hash"]).len())]
        );
        let limits = &m["limits"];
        if !limits["max_running"].is_null() || !limits["max_starts_per_minute"].is_null() {
            println!(
                "{:<40} limits: {} running at once, {} starts a minute; now {} running, {} started",
                "",
                limit(&limits["max_running"]),
                limit(&limits["max_starts_per_minute"]),
                show(&m["usage"]["running"]),
                show(&m["usage"]["starts_last_minute"]),
            );
        }
    };
    let value = match command {
        ModuleCommand::Upload {
            path,
            file,
            metadata,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let mut url = format!("/modules/{path}");
            if let Some(metadata) = metadata {
                let text = std::fs::read_to_string(&metadata)
                    .with_context(|| format!("reading {}", metadata.display()))?;
                let query: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair("metadata", &text)
                    .finish();
                url = format!("{url}?{query}");
            }
            client
                .call(Method::PUT, &url, Some(Body::Bytes(bytes)))
                .await?
        }
        ModuleCommand::Rescan => {
            let report = client.call(Method::POST, "/modules/rescan", None).await?;
            client.print(&report, |r| {
                for key in ["added", "updated", "unchanged"] {
                    for module in r[key].as_array().into_iter().flatten() {
                        println!("{key:<10} {}", show(module));
                    }
                }
                for failure in r["failed"].as_array().into_iter().flatten() {
                    println!(
                        "{:<10} {} ({}): {}",
                        "failed",
                        show(&failure["module"]),
                        show(&failure["file"]),
                        show(&failure["error"])
                    );
                }
            });
            let failed = report["failed"].as_array().is_some_and(|f| !f.is_empty());
            return Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            });
        }
        ModuleCommand::Missing => {
            let missing = client.call(Method::GET, "/modules/missing", None).await?;
            client.print(&missing, |m| {
                for task in m["tasks"].as_array().into_iter().flatten() {
                    println!(
                        "{:<40} task {:>6}  {:<10} {}",
                        show(&task["module"]),
                        show(&task["task_id"]),
                        show(&task["task_status"]),
                        show(&task["task_name"])
                    );
                }
            });
            return Ok(ExitCode::SUCCESS);
        }
        ModuleCommand::List => {
            let list = client.call(Method::GET, "/modules", None).await?;
            client.print(&list, |l| {
                l["modules"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .for_each(print_module)
            });
            return Ok(ExitCode::SUCCESS);
        }
        ModuleCommand::Show { path } => {
            client
                .call(Method::GET, &format!("/modules/{path}"), None)
                .await?
        }
        ModuleCommand::Enable { path } => {
            client
                .call(
                    Method::PATCH,
                    &format!("/modules/{path}"),
                    Some(Body::Json(json!({"active": true}))),
                )
                .await?
        }
        ModuleCommand::Disable { path } => {
            client
                .call(
                    Method::PATCH,
                    &format!("/modules/{path}"),
                    Some(Body::Json(json!({"active": false}))),
                )
                .await?
        }
        ModuleCommand::Limit {
            path,
            max_running,
            max_starts_per_minute,
        } => {
            let limits = json!({
                "max_running": max_running,
                "max_starts_per_minute": max_starts_per_minute,
            });
            client
                .call(
                    Method::PATCH,
                    &format!("/modules/{path}"),
                    Some(Body::Json(json!({ "limits": limits }))),
                )
                .await?;
            // Read back with the module's usage.
            client
                .call(Method::GET, &format!("/modules/{path}"), None)
                .await?
        }
        ModuleCommand::Delete { path } => {
            client
                .call(Method::DELETE, &format!("/modules/{path}"), None)
                .await?;
            eprintln!("module {path} deleted");
            return Ok(ExitCode::SUCCESS);
        }
    };
    client.print(&value, print_module);
    Ok(ExitCode::SUCCESS)
}

pub async fn token(connection: &Connection, command: TokenCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(connection)?;
    match command {
        TokenCommand::Create { role, name } => {
            let token = client
                .call(
                    Method::POST,
                    "/tokens",
                    Some(Body::Json(json!({"name": name, "role": role}))),
                )
                .await?;
            client.print(&token, |t| println!("{}", show(&t["token"])));
        }
        TokenCommand::List => {
            let list = client.call(Method::GET, "/tokens", None).await?;
            client.print(&list, |l| {
                for t in l["tokens"].as_array().into_iter().flatten() {
                    println!(
                        "{:>4}  {:<9} {:<20} last used {}",
                        show(&t["id"]),
                        show(&t["role"]),
                        show(&t["name"]),
                        show(&t["last_used_at"])
                    );
                }
            });
        }
        TokenCommand::Revoke { id } => {
            client
                .call(Method::DELETE, &format!("/tokens/{id}"), None)
                .await?;
            eprintln!("token {id} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `30d`, `12h`, `90m`, `45s`: how old a finished task must be to go.
fn parse_age(text: &str) -> Result<chrono::Duration, String> {
    let text = text.trim();
    let split = text.len().saturating_sub(1);
    let (number, unit) = text.split_at(split);
    let number: i64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not an age like 30d, 12h, 90m or 45s"))?;
    let seconds = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => {
            return Err(format!(
                "`{text}`: the unit must be d, h, m or s (30d, 12h, 90m, 45s)"
            ));
        }
    };
    Ok(chrono::Duration::seconds(number.saturating_mul(seconds)))
}

/// `task enable` and `task disable`.
async fn set_disabled(client: &Client, id: i64, disabled: bool) -> anyhow::Result<()> {
    let task = client
        .call(
            Method::PATCH,
            &format!("/tasks/{id}"),
            Some(Body::Json(json!({ "disabled": disabled }))),
        )
        .await?;
    client.print(&task, |t| {
        eprintln!("task {id} is {}", show(&t["status"]));
    });
    Ok(())
}
