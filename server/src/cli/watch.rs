//! `--watch`: follow a task over the WebSocket with a progress bar and ETA;
//! ends with the task, exiting 0 only when it completed. A recurring task
//! never ends: its watch ends with its next run (scheduled again after it),
//! exiting 0 only when that run succeeded.

use super::client::Client;
use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::process::ExitCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const FINAL: &[&str] = &["completed", "failed", "cancelled", "disabled"];

/// The latest run of a task (0 if none) and whether it is still running.
pub async fn latest_run(client: &Client, task_id: i64) -> anyhow::Result<(i64, bool)> {
    let runs = client
        .call(
            reqwest::Method::GET,
            &format!("/tasks/{task_id}/runs?limit=1"),
            None,
        )
        .await?;
    let latest = &runs["runs"][0];
    Ok((
        latest["id"].as_i64().unwrap_or(0),
        latest["status"] == "running",
    ))
}

/// Where a watch starts: runs up to this id are not the one it waits for.
/// A running run is followed; otherwise the next one.
pub async fn current_run_floor(client: &Client, task_id: i64) -> anyhow::Result<i64> {
    let (latest, running) = latest_run(client, task_id).await?;
    Ok(if running { latest - 1 } else { latest })
}

/// Follow `task_id` until it ends, or (recurring) until a run after `floor`
/// has ended.
pub async fn watch(client: &Client, task_id: i64, floor: i64) -> anyhow::Result<ExitCode> {
    let path = format!("/tasks/{task_id}");
    let task = client.call(reqwest::Method::GET, &path, None).await?;
    let recurring = task["run_interval"].as_i64().unwrap_or(0) > 0 || task["cron"].is_string();
    let url = format!("{}/api/v1/events", client.base().replacen("http", "ws", 1));
    let mut request = url.as_str().into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", client.token()).parse()?,
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .context("opening the event stream")?;
    let subscribe = json!({"type": "subscribe", "tasks": [task_id], "logs": true});
    socket
        .send(Message::Text(subscribe.to_string().into()))
        .await?;

    let bar = ProgressBar::new(1000);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40.cyan/blue}] {percent:>3}% {wide_msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut last_seq = 0u64;
    let mut status = String::from("scheduled");
    while let Some(message) = socket.next().await {
        let Message::Text(text) = message? else {
            continue;
        };
        let message: Value = serde_json::from_str(&text)?;
        // Events come in frames, `{"type":"events","events":[…]}`.
        let events = match message["type"].as_str() {
            Some("events") => message["events"].as_array().cloned().unwrap_or_default(),
            _ => vec![message],
        };
        for event in &events {
            show(&bar, task_id, event, &mut last_seq, &mut status)?;
        }
        if FINAL.contains(&status.as_str()) {
            break;
        }
        // A recurring task is scheduled again after each run: is it after ours?
        // (It may have ended before the subscription, so the stream alone
        // cannot tell.)
        if recurring && status == "scheduled" {
            let (latest, running) = latest_run(client, task_id).await?;
            if latest > floor && !running {
                break;
            }
        }
    }
    bar.finish();
    let task = client.call(reqwest::Method::GET, &path, None).await?;
    let final_status = task["status"].as_str().unwrap_or("unknown").to_string();
    let message = match task["message"].as_str() {
        Some(m) => format!(" — {m}"),
        None => String::new(),
    };
    if recurring && final_status == "scheduled" {
        let result = task["last_result"].as_str().unwrap_or("unknown");
        eprintln!(
            "task {task_id}: the run ended: {result}{message}; next run at {}",
            task["next_run_at"].as_str().unwrap_or("-")
        );
        return Ok(if result == "success" {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    eprintln!("task {task_id}: {final_status}{message}");
    Ok(if final_status == "completed" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Apply one message or event of the stream to the bar.
fn show(
    bar: &ProgressBar,
    task_id: i64,
    event: &Value,
    last_seq: &mut u64,
    status: &mut String,
) -> anyhow::Result<()> {
    match event["type"].as_str() {
        Some("snapshot") => {
            for task in event["tasks"].as_array().into_iter().flatten() {
                if task["task_id"] == task_id {
                    *last_seq = task["seq"].as_u64().unwrap_or(0);
                    *status = update(bar, task);
                }
            }
        }
        Some("task") if event["task_id"] == task_id => {
            let seq = event["seq"].as_u64().unwrap_or(0);
            if seq > *last_seq {
                *last_seq = seq;
                *status = update(bar, event);
            }
        }
        Some("log") => bar.println(format!(
            "{:>5} {}",
            event["level"].as_str().unwrap_or("").to_uppercase(),
            event["message"].as_str().unwrap_or("")
        )),
        Some("error") => bail!(
            "{}",
            event["message"].as_str().unwrap_or("event stream error")
        ),
        Some("deleted") => bail!("task {task_id} was deleted"),
        _ => {}
    }
    Ok(())
}

/// Show a task state on the bar; returns its status.
fn update(bar: &ProgressBar, task: &Value) -> String {
    let status = task["status"].as_str().unwrap_or("").to_string();
    let percent = task["progress"].as_f64().unwrap_or(0.0);
    bar.set_position((percent * 10.0) as u64);
    let eta = match task["eta_seconds"].as_f64() {
        Some(s) if status == "running" => format!(", ETA {}", human_seconds(s)),
        _ => String::new(),
    };
    let message = task["message"]
        .as_str()
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    bar.set_message(format!("{status}{eta}{message}"));
    status
}

fn human_seconds(seconds: f64) -> String {
    let s = seconds.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}
