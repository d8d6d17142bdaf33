//! The command line: `serve`, the local step runner, and the client commands.

mod cache;
mod calibrate;
mod client;
mod commands;
mod config_file;
mod operations;
mod step_run;
mod steps;
mod task_ref;
mod watch;

pub use cache::{CacheCommand, cache};
pub use calibrate::CalibrateArgs;
pub use client::Connection;
pub use commands::{ModuleCommand, TaskCommand, TokenCommand, module, task, token};
pub use config_file::args_with_config;
pub use operations::{alerts, nodes, stats};
pub use step_run::StepRunArgs;
pub use steps::TaskStepsCommand;

use crate::app::Settings;
use crate::store::Durability;
use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "stepwise",
    version,
    about = "A task server whose steps are sandboxed WebAssembly components"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (SQLite in the data directory, dashboard, example modules).
    Serve(ServeArgs),
    /// Work on step modules locally.
    #[command(subcommand)]
    Step(StepCommand),
    /// Create, list, run, cancel and follow tasks on a server.
    Task {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: TaskCommand,
    },
    /// Upload and manage step modules on a server.
    Module {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: ModuleCommand,
    },
    /// Tasks by status, and how the runs of the last hours went.
    Stats {
        #[command(flatten)]
        connection: Connection,
        /// The window of the run figures, in hours (1–720).
        #[arg(long, default_value_t = 24)]
        hours: i64,
    },
    /// What needs attention now (exit 1 when an alert is critical).
    Alerts {
        #[command(flatten)]
        connection: Connection,
    },
    /// The servers sharing the database (one on SQLite) and how each is.
    Nodes {
        #[command(flatten)]
        connection: Connection,
    },
    /// The compiled-code cache of the server: stats, or clear it (admin).
    Cache {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Create, list and revoke API tokens (admin).
    Token {
        #[command(flatten)]
        connection: Connection,
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Measure this machine's fuel per second again and keep it for `serve`.
    ///
    /// Runs the example demo/count (typical step code) in the sandbox, writes
    /// how much fuel it burnt per second to calibration.json in the data
    /// directory, and prints it as a `fuel_per_second` line for a config file.
    Calibrate(CalibrateArgs),
    /// Compile a module in a bounded child process (used by the server itself).
    #[command(hide = true)]
    InternalCompile {
        input: PathBuf,
        output: PathBuf,
        memory_limit_bytes: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum StepCommand {
    /// Run one step module in the sandbox and print its result.
    Run(StepRunArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DurabilityArg {
    /// fsync every commit: a power loss loses nothing that was acknowledged.
    Full,
    /// fsync at checkpoints: a power loss may lose the last commits (never corrupts).
    Normal,
}

/// How the server writes its own log (stderr).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event, coloured only on a terminal
    /// (`NO_COLOR` turns the colours off there too).
    #[default]
    Text,
    /// One JSON object per line, with the fields of the run and step spans
    /// (`task_id`, `run_id`, `step_id`, `module`): for log shippers.
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A TOML file with any of these settings (keys are the flag names with `_`).
    /// Flags and environment variables take precedence over it.
    #[arg(long, env = "STEPWISE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (loopback by default: put a proxy in front to expose it).
    #[arg(long, env = "STEPWISE_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Where the database, compiled modules, keys and tokens live.
    #[arg(long, env = "STEPWISE_DATA_DIR", default_value = "stepwise-data")]
    pub data_dir: PathBuf,
    /// Database URL: `sqlite://PATH` (one server), or `postgres://…` (any number
    /// of servers sharing one queue; give them all the same STEPWISE_SECRET_KEY).
    /// Default: stepwise.db in the data directory.
    #[arg(long, env = "STEPWISE_DATABASE")]
    pub database: Option<String>,
    /// How SQLite commits reach the disk.
    #[arg(long, env = "STEPWISE_DURABILITY", value_enum, default_value = "full")]
    pub durability: DurabilityArg,
    /// Runs executed at the same time.
    #[arg(long, env = "STEPWISE_WORKERS", default_value_t = 32)]
    pub workers: usize,
    /// Fuel units per second of max_execution_time. Default: measured on this
    /// machine at the first start and kept in calibration.json in the data
    /// directory (`stepwise calibrate` measures again).
    #[arg(long, env = "STEPWISE_FUEL_PER_SECOND")]
    pub fuel_per_second: Option<u64>,
    /// Largest module upload in bytes.
    #[arg(long, env = "STEPWISE_MAX_MODULE_BYTES", default_value_t = 32 << 20)]
    pub max_module_bytes: usize,
    /// Register every .wasm under this directory at start (path = relative file path).
    #[arg(long, env = "STEPWISE_MODULES_DIR")]
    pub modules_dir: Option<PathBuf>,
    /// Do not register the built-in example modules.
    #[arg(long)]
    pub no_examples: bool,
    /// Seconds a run's lease lasts without a heartbeat before another pass rescues it.
    #[arg(long, env = "STEPWISE_LEASE_SECONDS", default_value_t = 30)]
    pub lease_seconds: u64,
    /// Seconds a stopping server (SIGTERM, Ctrl-C) lets its running steps
    /// finish before it hands them back to the other servers, which resume
    /// them from their checkpoints. A second signal hands them back at once.
    #[arg(long, env = "STEPWISE_SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    pub shutdown_grace_seconds: u64,
    /// Days finished runs, events and artifacts are kept (0 = forever).
    #[arg(long, env = "STEPWISE_RETENTION_DAYS", default_value_t = 30)]
    pub retention_days: u64,
    /// Seconds a module may take to compile.
    #[arg(long, env = "STEPWISE_COMPILE_TIMEOUT", default_value_t = 60)]
    pub compile_timeout: u64,
    /// Bytes of memory a module's compilation may use.
    #[arg(long, env = "STEPWISE_COMPILE_MEMORY", default_value_t = 2 << 30)]
    pub compile_memory: u64,
    /// The server's own log on stderr: `text` or `json` (one object a line).
    #[arg(long, env = "STEPWISE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// An origin (`https://shop.example`) whose pages may frame the focus
    /// page (`/focus/{id}`) and which it may redirect to when the task ends.
    /// Repeat it, or separate origins with commas. Without one the focus page
    /// is framed only by this server, and redirects only to its own paths.
    #[arg(long, env = "STEPWISE_EMBED_ORIGIN", value_delimiter = ',',
          value_parser = crate::api::parse_embed_origin)]
    pub embed_origin: Vec<String>,
    /// Hosts besides loopback that a task's completion hook (`hook_url`)
    /// may call, e.g. `shop.example,10.0.0.5`. Repeat it, or separate hosts
    /// with commas. Loopback (127.0.0.0/8, ::1, localhost) is always allowed.
    #[arg(long, env = "STEPWISE_HOOK_ALLOW_HOSTS", value_delimiter = ',')]
    pub hook_allow_hosts: Vec<String>,
    /// Let completion hooks call any host. Operators can then make the
    /// server POST to any address it reaches, internal ones included.
    #[arg(long, env = "STEPWISE_HOOK_ALLOW_ANY_HOST")]
    pub hook_allow_any_host: bool,
    /// Milliseconds before the first retry of a failed completion hook; the
    /// next waits are 6, 30 and 180 times it (10 s, 1 min, 5 min, 30 min by
    /// default), then the delivery is failed.
    #[arg(long, env = "STEPWISE_HOOK_RETRY_BASE_MS", default_value_t = 10_000)]
    pub hook_retry_base_ms: u64,
    /// Seconds a completion hook's receiver has to answer.
    #[arg(long, env = "STEPWISE_HOOK_TIMEOUT_SECONDS", default_value_t = 10)]
    pub hook_timeout_seconds: u64,
}

impl ServeArgs {
    pub fn settings(&self) -> Settings {
        Settings {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            database: self.database.clone(),
            durability: match self.durability {
                DurabilityArg::Full => Durability::Full,
                DurabilityArg::Normal => Durability::Normal,
            },
            workers: self.workers.max(1),
            fuel_per_second: self.fuel_per_second,
            max_module_bytes: self.max_module_bytes,
            modules_dir: self.modules_dir.clone(),
            register_examples: !self.no_examples,
            lease: Duration::from_secs(self.lease_seconds.max(1)),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_seconds),
            retention: (self.retention_days > 0)
                .then(|| Duration::from_secs(self.retention_days * 86_400)),
            compile_timeout: Duration::from_secs(self.compile_timeout.max(1)),
            compile_memory_bytes: self.compile_memory,
            compile_in_process: false,
            json_log: self.log_format == LogFormat::Json,
            embed_origins: self.embed_origin.clone(),
            hooks: crate::hooks::HookSettings {
                allow_hosts: self
                    .hook_allow_hosts
                    .iter()
                    .map(|host| host.trim().to_string())
                    .filter(|host| !host.is_empty())
                    .collect(),
                allow_any_host: self.hook_allow_any_host,
                retry_base: Duration::from_millis(self.hook_retry_base_ms.max(1)),
                timeout: Duration::from_secs(self.hook_timeout_seconds.clamp(1, 300)),
            },
        }
    }
}

pub async fn calibrate(args: CalibrateArgs) -> anyhow::Result<std::process::ExitCode> {
    calibrate::run(args).await
}

pub async fn step(command: StepCommand) -> anyhow::Result<std::process::ExitCode> {
    match command {
        StepCommand::Run(args) => step_run::run(args).await,
    }
}
