//! `task steps …`: add, change, remove and reorder a task's steps without
//! re-posting the task, one API call each. A run in progress keeps the
//! steps it started with; the next run uses the edited ones.

use super::client::{Body, Client, show};
use anyhow::Context;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Debug, clap::Subcommand)]
pub enum TaskStepsCommand {
    /// Add a step: JSON like one step of `task create`
    /// (`{"controller": "tool/x", "settings": {…}}`); it runs last unless
    /// it gives a `sort_order`.
    Add {
        task: i64,
        /// The step as JSON: a file, `-` for stdin, or the JSON itself.
        step: String,
    },
    /// Change some of a step's fields: JSON with any of `controller`,
    /// `settings`, `max_execution_time`, `max_memory` (null: no cap of its
    /// own), `interrupt_on_step_fault`, `status`, `sort_order`.
    Change {
        task: i64,
        step: i64,
        /// The changes as JSON: a file, `-` for stdin, or the JSON itself.
        changes: String,
    },
    /// Remove a step (not the task's last one).
    Remove { task: i64, step: i64 },
    /// Put the steps in this order (each of the task's step ids once).
    Order {
        task: i64,
        #[arg(required = true)]
        steps: Vec<i64>,
    },
}

pub async fn steps(client: &Client, command: TaskStepsCommand) -> anyhow::Result<()> {
    let (task, said) = match command {
        TaskStepsCommand::Add { task, step } => {
            let body = json_argument(&step)?;
            let edited = client
                .call(
                    Method::POST,
                    &format!("/tasks/{task}/steps"),
                    Some(Body::Json(body)),
                )
                .await?;
            let added = edited["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["id"].as_i64())
                .max()
                .unwrap_or_default();
            (edited, format!("step {added} added to task {task}"))
        }
        TaskStepsCommand::Change {
            task,
            step,
            changes,
        } => {
            let body = json_argument(&changes)?;
            let edited = client
                .call(
                    Method::PATCH,
                    &format!("/tasks/{task}/steps/{step}"),
                    Some(Body::Json(body)),
                )
                .await?;
            (edited, format!("step {step} of task {task} changed"))
        }
        TaskStepsCommand::Remove { task, step } => {
            let edited = client
                .call(Method::DELETE, &format!("/tasks/{task}/steps/{step}"), None)
                .await?;
            (edited, format!("step {step} removed from task {task}"))
        }
        TaskStepsCommand::Order { task, steps } => {
            let edited = client
                .call(
                    Method::PUT,
                    &format!("/tasks/{task}/steps/order"),
                    Some(Body::Json(json!({ "steps": steps }))),
                )
                .await?;
            (edited, format!("steps of task {task} reordered"))
        }
    };
    client.print(&task, |t| {
        eprintln!("{said}");
        if t["status"] == "running" {
            eprintln!("(its run in progress keeps the steps it started with)");
        }
        print_steps(t);
    });
    Ok(())
}

/// A task's steps, one line each, in the order they run.
pub(super) fn print_steps(task: &Value) {
    for s in task["steps"].as_array().into_iter().flatten() {
        println!(
            "  step {} #{} {} ({})",
            s["id"],
            s["sort_order"],
            show(&s["controller"]),
            show(&s["status"])
        );
    }
}

/// JSON given on the command line: the JSON itself, `-` for stdin, or a file.
fn json_argument(argument: &str) -> anyhow::Result<Value> {
    let trimmed = argument.trim_start();
    let (text, source) = if trimmed.starts_with('{') {
        (argument.to_string(), "the argument".to_string())
    } else if argument == "-" {
        (std::io::read_to_string(std::io::stdin())?, "stdin".into())
    } else {
        let text =
            std::fs::read_to_string(argument).with_context(|| format!("reading {argument}"))?;
        (text, argument.to_string())
    };
    serde_json::from_str(&text).with_context(|| format!("{source} is not valid JSON"))
}
