//! A small HTTP client for the CLI's commands: the server's address and token
//! come from `--url` and `--token` (or `STEPWISE_URL`, `STEPWISE_TOKEN`), else
//! from the server's own config file (`--config`, `STEPWISE_CONFIG`: its
//! `listen` and the admin token in its `data_dir`), else the defaults; errors
//! become one line.

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde_json::Value;

#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The server's address (default: the config file's `listen`, else
    /// http://127.0.0.1:7070).
    #[arg(long, env = "STEPWISE_URL", global = true)]
    pub url: Option<String>,
    /// A bearer token (default: the admin token in the config file's
    /// `data_dir`, else in ./stepwise-data).
    #[arg(long, env = "STEPWISE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// The server's config file, to find it as `serve --config` set it up.
    #[arg(long, env = "STEPWISE_CONFIG", global = true)]
    pub config: Option<std::path::PathBuf>,
    /// Print JSON instead of text (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    pub json: bool,
}

impl Client {
    pub fn new(connection: &Connection) -> anyhow::Result<Self> {
        let place = match &connection.config {
            Some(path) => super::config_file::server_place(path)?,
            None => super::config_file::ServerPlace::default(),
        };
        let base = match (&connection.url, &place.listen) {
            (Some(url), _) => url.clone(),
            (None, Some(listen)) => format!("http://{}", connectable(listen)),
            (None, None) => "http://127.0.0.1:7070".to_string(),
        };
        let token_file = place
            .data_dir
            .unwrap_or_else(|| "stepwise-data".into())
            .join("admin-token");
        let token = match &connection.token {
            Some(token) => token.clone(),
            None => std::fs::read_to_string(&token_file)
                .map(|t| t.trim().to_string())
                .with_context(|| {
                    format!(
                        "no token: set STEPWISE_TOKEN (or --token); the first start printed an admin token and saved it to {}",
                        token_file.display()
                    )
                })?,
        };
        Ok(Client {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
            token,
            json: connection.json,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// Send a request; returns the JSON body (Null for 204), or the API's error message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}/api/v1{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        request = match body {
            Some(Body::Json(value)) => request.json(&value),
            Some(Body::Bytes(bytes)) => request
                .header("content-type", "application/wasm")
                .body(bytes),
            None => request,
        };
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {}; is the server running?", self.base))?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if status == StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = value["error"]["message"]
                .as_str()
                .unwrap_or("no message")
                .to_string();
            match value["error"]["field"].as_str() {
                Some(field) => bail!("{field}: {message} ({status})"),
                None => bail!("{message} ({status})"),
            }
        }
        Ok(value)
    }

    /// Raw bytes of a download.
    pub async fn download(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let url = format!("{}/api/v1{path}", self.base);
        let response = self.http.get(&url).bearer_auth(&self.token).send().await?;
        let status = response.status();
        let bytes = response.bytes().await?;
        if !status.is_success() {
            let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            bail!(
                "{} ({status})",
                value["error"]["message"]
                    .as_str()
                    .unwrap_or("download failed")
            );
        }
        Ok(bytes.to_vec())
    }

    /// Print a value as JSON (with --json) or through `text`.
    pub fn print(&self, value: &Value, text: impl FnOnce(&Value)) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            text(value);
        }
    }
}

pub enum Body {
    Json(Value),
    Bytes(Vec<u8>),
}

/// `null` → `-`, strings without quotes.
pub fn show(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A listen address a client can connect to: a server listening on every
/// interface (`0.0.0.0`, `[::]`) is reached on loopback.
fn connectable(listen: &str) -> String {
    if let Some(port) = listen.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = listen.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        listen.to_string()
    }
}
