//! Client commands about the server as a whole: `stats`, `alerts`, `nodes`.

use super::client::{Client, Connection, show};
use reqwest::Method;
use std::process::ExitCode;

/// Tasks by status, and how the runs of the last `hours` went.
pub async fn stats(connection: &Connection, hours: i64) -> anyhow::Result<ExitCode> {
    let client = Client::new(connection)?;
    let counts = client.call(Method::GET, "/stats", None).await?;
    let performance = client
        .call(
            Method::GET,
            &format!("/stats/performance?hours={hours}"),
            None,
        )
        .await?;
    let both = serde_json::json!({ "tasks": counts, "performance": performance });
    client.print(&both, |_| {
        println!("tasks ({} in all)", show(&counts["total"]));
        for (status, n) in counts["tasks"].as_object().into_iter().flatten() {
            println!("  {status:<10} {n}");
        }
        let rate = performance["success_rate"]
            .as_f64()
            .map_or("-".to_string(), |r| format!("{:.1} %", r * 100.0));
        println!(
            "runs started in the last {hours} h: {} ({} completed, {} failed, {} rescued), success {rate}",
            show(&performance["runs"]),
            show(&performance["completed"]),
            show(&performance["failed"]),
            show(&performance["rescued"]),
        );
    });
    Ok(ExitCode::SUCCESS)
}

/// What needs attention now; exits 1 when an alert is critical (for cron and monitoring).
pub async fn alerts(connection: &Connection) -> anyhow::Result<ExitCode> {
    let client = Client::new(connection)?;
    let answer = client.call(Method::GET, "/alerts", None).await?;
    let alerts = answer["alerts"].as_array().cloned().unwrap_or_default();
    client.print(&answer, |_| {
        if alerts.is_empty() {
            println!("no alerts: all is well");
        }
        for alert in &alerts {
            println!(
                "{:<8} {:<16} {}",
                show(&alert["severity"]).to_uppercase(),
                show(&alert["kind"]),
                show(&alert["message"])
            );
        }
    });
    let critical = alerts.iter().any(|a| a["severity"] == "critical");
    Ok(if critical {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The servers sharing the database, as each last reported itself.
pub async fn nodes(connection: &Connection) -> anyhow::Result<ExitCode> {
    let client = Client::new(connection)?;
    let nodes = client.call(Method::GET, "/nodes", None).await?;
    client.print(&nodes, |nodes| {
        println!(
            "{:<28} {:<9} {:<6} {:>7}  {:<21} {:<26} VERSION",
            "NODE", "STATE", "ALIVE", "RUNNING", "ADDRESS", "LAST HEARTBEAT"
        );
        for node in nodes.as_array().into_iter().flatten() {
            let mut id = show(&node["id"]);
            if node["this_node"] == true {
                id.push('*');
            }
            println!(
                "{:<28} {:<9} {:<6} {:>7}  {:<21} {:<26} {}",
                id,
                show(&node["state"]),
                if node["alive"] == true { "yes" } else { "no" },
                show(&node["running_runs"]),
                show(&node["address"]),
                show(&node["last_heartbeat_at"]),
                show(&node["version"])
            );
        }
    });
    Ok(ExitCode::SUCCESS)
}
