//! The `stepwise` binary: parse the command line, call the library.

use clap::Parser;
use std::io::IsTerminal;
use std::process::ExitCode;
use stepwise::cli::{Cli, Command, LogFormat};

/// mimalloc rather than the C library's allocator: a one-step task makes
/// hundreds of small allocations (events, statements' rows, the guest's
/// instance), freed on other threads than the ones that made them, and
/// glibc's malloc spent a sixth of a busy node's CPU on them, much of it
/// consolidating its free lists.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = match stepwise::cli::args_with_config() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(args);
    if let Command::InternalCompile {
        input,
        output,
        memory_limit_bytes,
    } = &cli.command
    {
        // No tokio, no tracing: the child only compiles, under its rlimit.
        return stepwise::runtime::compile_child_main(input, output, *memory_limit_bytes);
    }
    init_tracing(match &cli.command {
        Command::Serve(args) => args.log_format,
        _ => LogFormat::Text,
    });
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => {
                // Each WebSocket subscriber holds a socket: lift the soft limit
                // of open files (often 1024) to the hard limit.
                if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
                    tracing::warn!("could not raise the open-files limit: {e}");
                }
                let app = stepwise::app::App::build(args.settings()).await?;
                app.run_until_stopped().await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Step(command) => stepwise::cli::step(command).await,
            Command::Calibrate(args) => stepwise::cli::calibrate(args).await,
            Command::Task {
                connection,
                command,
            } => stepwise::cli::task(&connection, command).await,
            Command::Module {
                connection,
                command,
            } => stepwise::cli::module(&connection, command).await,
            Command::Token {
                connection,
                command,
            } => stepwise::cli::token(&connection, command).await,
            Command::Stats { connection, hours } => stepwise::cli::stats(&connection, hours).await,
            Command::Alerts { connection } => stepwise::cli::alerts(&connection).await,
            Command::Nodes { connection } => stepwise::cli::nodes(&connection).await,
            Command::Cache {
                connection,
                command,
            } => stepwise::cli::cache(&connection, command).await,
            Command::InternalCompile { .. } => unreachable!("handled above"),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STEPWISE_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,sqlx=warn,wasmtime=warn,cranelift=warn")
    });
    // Colours only on a terminal: a log redirected to a file or a journal
    // would otherwise be full of escape codes. `NO_COLOR` turns them off there too.
    let colours = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => log.init(),
        // The run and step spans' fields are flattened into each line's `span`
        // and listed in `spans`, so a shipper can filter by run_id.
        LogFormat::Json => log
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}
