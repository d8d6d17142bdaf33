//! How a command names a task: by its id, or with `--code` by the unique code
//! a shop registered it under (the same task whatever its id became after a
//! delete and re-create).

use super::client::Client;
use reqwest::Method;

/// A task by id (positional) or by `--code`, one of the two.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct TaskRef {
    /// The task's id.
    pub id: Option<i64>,
    /// The task's code, instead of its id.
    #[arg(long)]
    pub code: Option<String>,
}

impl TaskRef {
    /// The task's resource: `/tasks/{id}` or `/tasks/by-code/{code}` (a
    /// code's characters, `[A-Za-z0-9_.:-]`, need no escaping; the server
    /// refuses others, naming the field).
    pub fn path(&self) -> String {
        match (&self.id, &self.code) {
            (_, Some(code)) => format!("/tasks/by-code/{code}"),
            (id, None) => format!("/tasks/{}", id.unwrap_or_default()),
        }
    }

    /// How messages name it: `task 12` or ``task `nightly` ``.
    pub fn label(&self) -> String {
        match (&self.id, &self.code) {
            (_, Some(code)) => format!("task `{code}`"),
            (id, None) => format!("task {}", id.unwrap_or_default()),
        }
    }

    /// The task's id (a code is looked up on the server).
    pub async fn id(&self, client: &Client) -> anyhow::Result<i64> {
        if let (Some(id), None) = (self.id, &self.code) {
            return Ok(id);
        }
        let task = client.call(Method::GET, &self.path(), None).await?;
        task["id"]
            .as_i64()
            .ok_or_else(|| anyhow::anyhow!("the server answered a task without an id: {task}"))
    }
}
