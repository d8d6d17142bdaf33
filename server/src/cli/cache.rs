//! `stepwise cache stats|clear`: the compiled-code cache of the node the
//! client talks to (admin).

use super::client::{Client, Connection, show};
use reqwest::Method;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum CacheCommand {
    /// Compiled modules on disk and in memory, their size, hits and misses.
    Stats,
    /// Delete every compiled module; each is compiled again when next run.
    /// Steps that are running go on.
    Clear,
}

pub async fn cache(connection: &Connection, command: CacheCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(connection)?;
    match command {
        CacheCommand::Stats => {
            let stats = client.call(Method::GET, "/cache", None).await?;
            client.print(&stats, |s| {
                println!("compiled-code cache of node {}", show(&s["node_id"]));
                for key in ["entries", "bytes", "loaded", "hits", "misses"] {
                    println!("  {key:<8} {}", show(&s[key]));
                }
            });
        }
        CacheCommand::Clear => {
            let cleared = client.call(Method::DELETE, "/cache", None).await?;
            client.print(&cleared, |c| {
                eprintln!(
                    "cleared the compiled-code cache of node {}: {} file(s), {} bytes, {} loaded module(s)",
                    show(&c["node_id"]),
                    show(&c["entries"]),
                    show(&c["bytes"]),
                    show(&c["loaded"])
                );
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}
