//! Building and running a server: store, sandbox, engine, API, listener.
//! `main` only parses the command line and calls [`App::build`].

use crate::api::{self, ApiConfig, AppState};
use crate::calibration;
use crate::engine::{Engine, EngineConfig};
use crate::events::EventBus;
use crate::runtime::{Compiler, PoolSizing, Runtime, RuntimeConfig};
use crate::secrets::SecretBox;
use crate::store::{Durability, PostgresStore, Role, SqliteStore, Store};
use anyhow::{Context, bail};
use axum::serve::ListenerExt;
use chrono::Utc;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Everything `stepwise serve` can be told. Defaults are in [`crate::cli::ServeArgs`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://…`; `None` = `stepwise.db` in the data directory.
    pub database: Option<String>,
    pub durability: Durability,
    pub workers: usize,
    /// `None`: this machine's calibration (see [`crate::calibration`]).
    pub fuel_per_second: Option<u64>,
    pub max_module_bytes: usize,
    pub modules_dir: Option<PathBuf>,
    pub register_examples: bool,
    pub lease: Duration,
    /// How long a stopping server lets its steps finish (see `serve --help`).
    pub shutdown_grace: Duration,
    pub retention: Option<Duration>,
    pub compile_timeout: Duration,
    pub compile_memory_bytes: u64,
    /// Compile uploads in this process instead of a bounded child (library use only).
    pub compile_in_process: bool,
    /// The log is JSON (`--log-format json`): the address and the first
    /// start's banner go through it too, so every line of stderr is JSON.
    pub json_log: bool,
    /// Origins that may frame the focus page and that it may redirect to.
    pub embed_origins: Vec<String>,
    /// Completion hooks: allowed hosts, retry waits, timeout.
    pub hooks: crate::hooks::HookSettings,
}

/// A server ready to run.
pub struct App {
    listener: TcpListener,
    state: AppState,
    engine: Engine,
    engine_runtime: EngineRuntime,
    shutdown_grace: Duration,
    json_log: bool,
}

/// The engine's own tokio runtime: claims, steps and their commits run on its
/// threads, the API and the WebSocket sessions on the server's. With one
/// runtime, a thousand live-view sessions queued the steps behind them and
/// slowed execution itself; with two, the operating system shares the cores
/// between them and no amount of socket work can stall a step.
struct EngineRuntime(Option<tokio::runtime::Runtime>);

impl EngineRuntime {
    fn new() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("stepwise-engine")
            .enable_all()
            .build()
            .context("starting the engine's runtime")?;
        Ok(EngineRuntime(Some(runtime)))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("engine runtime").handle()
    }
}

impl Drop for EngineRuntime {
    /// Dropped from async code (the server's runtime): must not block.
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl App {
    pub async fn build(settings: Settings) -> anyhow::Result<App> {
        let data_dir = &settings.data_dir;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
        let store = open_store(&settings).await?;

        let compiler = if settings.compile_in_process {
            Compiler::InProcess
        } else {
            Compiler::current_exe(settings.compile_timeout, settings.compile_memory_bytes)?
        };
        let (fuel_per_second, source) = match settings.fuel_per_second {
            Some(rate) => (rate, "the fuel_per_second setting".to_string()),
            None => {
                let calibration = calibration::load_or_measure(data_dir).await.context(
                    "measuring this machine's fuel per second (--fuel-per-second skips it)",
                )?;
                let kept = calibration::path(data_dir);
                (calibration.fuel_per_second, kept.display().to_string())
            }
        };
        // Said at every start: what a second of max_execution_time is worth here.
        tracing::info!("steps get {fuel_per_second} fuel units a second (from {source})");
        let runtime = Arc::new(Runtime::new(RuntimeConfig {
            cache_dir: data_dir.join("compiled"),
            fuel_per_second,
            compiler,
            pool: PoolSizing {
                max_instances: (settings.workers as u32 + 8).max(16),
                max_memory_bytes: 4 << 30,
            },
            output_cap: crate::runtime::DEFAULT_OUTPUT_CAP,
            caps: crate::runtime::DataCaps::DEFAULT,
            consume_fuel: true,
        })?);
        let listener = TcpListener::bind(settings.listen).await.with_context(|| {
            format!(
                "listening on {}; is another server using it?",
                settings.listen
            )
        })?;
        let secrets = Arc::new(SecretBox::load_or_create(data_dir)?);
        let mut config = EngineConfig::new(node_id(data_dir)?);
        config.workers = settings.workers;
        config.lease = settings.lease;
        config.heartbeat_interval = settings.lease / 3;
        config.rescue_interval = settings.lease / 6;
        config.address = listener.local_addr().ok().map(|a| a.to_string());
        config.retention = settings.retention;
        config.hooks = settings.hooks.clone();
        let engine_runtime = EngineRuntime::new()?;
        // The engine's background writers start on its runtime.
        let engine = {
            let _on_engine_runtime = engine_runtime.handle().enter();
            Engine::new(
                store.clone(),
                runtime,
                Arc::new(EventBus::new()),
                secrets,
                config,
            )
        };
        let rescued = engine.rescue_own_orphans().await?;
        if rescued > 0 {
            tracing::warn!("rescued {rescued} run(s) interrupted by the last stop");
        }

        let state = AppState::new(
            engine.clone(),
            ApiConfig {
                max_module_bytes: settings.max_module_bytes,
                embed_origins: settings.embed_origins.clone(),
                register_examples: settings.register_examples,
                modules_dir: settings.modules_dir.clone(),
                ..ApiConfig::default()
            },
        );
        api::scan_modules(
            &state,
            settings.register_examples,
            settings.modules_dir.as_deref(),
        )
        .await?;
        let app = App {
            listener,
            state,
            engine,
            engine_runtime,
            shutdown_grace: settings.shutdown_grace,
            json_log: settings.json_log,
        };
        app.first_start(data_dir).await?;
        app.engine.report_running().await;
        app.announce(&format!("stepwise listening on {}", app.address()));
        Ok(app)
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn address(&self) -> String {
        let addr = self.listener.local_addr().expect("bound listener");
        format!("http://{addr}/")
    }

    /// On the very first start: create an admin token, print it once with the
    /// dashboard address, and keep it in the data directory (0600).
    async fn first_start(&self, data_dir: &Path) -> anyhow::Result<()> {
        let store = self.state.store();
        if store.count_tokens().await? > 0 {
            tracing::info!("dashboard: {}", self.address());
            return Ok(());
        }
        let token = api::generate_token();
        store
            .create_token("admin", Role::Admin, &api::hash_token(&token), Utc::now())
            .await?;
        let path = data_dir.join("admin-token");
        let _ = std::fs::remove_file(&path);
        crate::fsutil::write_private(&path, format!("{token}\n").as_bytes())?;
        self.announce(&format!(
            "\n  Stepwise is ready.\n  Dashboard (signs you in): {}#token={token}\n  Admin token: {token}\n  (shown once; also saved to {} with mode 0600)\n",
            self.address(),
            path.display()
        ));
        Ok(())
    }

    /// Tell whoever started the server: plain text on stderr, or a log line
    /// when the log is JSON (a log shipper reads every line as JSON).
    fn announce(&self, text: &str) {
        if self.json_log {
            tracing::info!("{}", text.trim());
        } else {
            eprintln!("{text}");
        }
    }

    /// Serve until Ctrl-C or SIGTERM, then stop as a node of a cluster
    /// does: claim nothing new, let running steps finish for the grace
    /// period, hand back what still runs (other nodes resume it from its
    /// checkpoints; on SQLite, the next start does), and only then close
    /// the API. A second signal hands back at once. A kill loses nothing
    /// either: the runs' leases expire and they are rescued.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let engine = {
            let _on_engine_runtime = self.engine_runtime.handle().enter();
            self.engine.start()
        };
        let router = api::router(self.state);
        // Small writes go out at once: with Nagle's algorithm a live-view
        // frame waited for the client's delayed ACK (up to 40 ms).
        let listener = self.listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("TCP_NODELAY not set on a connection: {e}");
            }
        });
        let mut signals = Signals::new()?;
        let close_api = tokio_util::sync::CancellationToken::new();
        let mut server = tokio::spawn(
            axum::serve(listener, router)
                .with_graceful_shutdown(close_api.clone().cancelled_owned())
                .into_future(),
        );
        tokio::select! {
            _ = signals.next() => {}
            ended = &mut server => {
                engine.shutdown().await;
                return Ok(ended??);
            }
        }
        let grace = self.shutdown_grace;
        tracing::info!(
            "stopping: claiming nothing new; running steps have {}s to finish (a second signal hands them back at once)",
            grace.as_secs()
        );
        let drained = engine.stop_gracefully(grace, signals.next()).await;
        tracing::info!(
            "stopped: {} run(s) finished, {} handed back to be resumed",
            drained.finished,
            drained.handed_back
        );
        self.engine
            .event_writer()
            .flush(Duration::from_secs(5))
            .await;
        close_api.cancel();
        server.await??;
        Ok(())
    }
}

async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let path = match settings.database.as_deref() {
        None => settings.data_dir.join("stepwise.db"),
        Some(url) if url.starts_with("sqlite://") => PathBuf::from(&url["sqlite://".len()..]),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            return Ok(Arc::new(PostgresStore::open(url).await?));
        }
        Some(other) => bail!(
            "--database `{other}` must start with sqlite:// (one server) or postgres:// (several)"
        ),
    };
    Ok(Arc::new(
        SqliteStore::open(&path, settings.durability).await?,
    ))
}

/// This node's stable name: kept in the data directory so a restart rescues its own runs.
fn node_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        return Ok(id.trim().to_string());
    }
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "node".into());
    let id = format!("{}-{}", host.trim(), &crate::api::generate_token()[3..11]);
    std::fs::write(&path, &id).with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

/// Ctrl-C and SIGTERM, as one stream of stop requests.
struct Signals {
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("listening for SIGTERM")?;
        Ok(Signals { terminate })
    }

    /// The next Ctrl-C or SIGTERM.
    async fn next(&mut self) {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
