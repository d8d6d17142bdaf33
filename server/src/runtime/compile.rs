//! Turning uploaded bytes into compiled code, off the request path and bounded.
//!
//! wasmtime does not treat a compile-time blow-up as a vulnerability: a small
//! module can take seconds and gigabytes to compile. So the server compiles in
//! a child process with a memory rlimit and a timeout, and only loads the
//! artifact the child wrote into this node's cache.

use super::engine;
use super::validate::{self, ModuleError};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use wasmtime::Engine;
use wasmtime::component::Component;

/// How modules are compiled.
#[derive(Debug, Clone)]
pub enum Compiler {
    /// In this process: for tests and the local `step run` tool, where the
    /// module is the user's own.
    InProcess,
    /// In a child process (`program internal-compile IN OUT`) with bounds.
    ChildProcess {
        program: PathBuf,
        timeout: Duration,
        memory_limit_bytes: u64,
    },
}

impl Compiler {
    /// The child-process compiler using this very executable.
    pub fn current_exe(timeout: Duration, memory_limit_bytes: u64) -> std::io::Result<Self> {
        Ok(Compiler::ChildProcess {
            program: std::env::current_exe()?,
            timeout,
            memory_limit_bytes,
        })
    }
}

/// Exit code of the child when the module itself is at fault (message on stdout).
const EXIT_MODULE_ERROR: u8 = 2;

/// Compile `bytes` and write the serialized artifact to `output`.
pub(super) async fn compile_to_file(
    compiler: &Compiler,
    engine: &Engine,
    bytes: &[u8],
    output: &Path,
) -> Result<(), ModuleError> {
    match compiler {
        Compiler::InProcess => {
            let engine = engine.clone();
            let bytes = bytes.to_vec();
            let output = output.to_path_buf();
            tokio::task::spawn_blocking(move || compile_and_write(&engine, &bytes, &output))
                .await
                .map_err(|e| ModuleError::CompileFailed(e.to_string()))?
        }
        Compiler::ChildProcess {
            program,
            timeout,
            memory_limit_bytes,
        } => compile_in_child(program, *timeout, *memory_limit_bytes, bytes, output).await,
    }
}

fn compile_and_write(engine: &Engine, bytes: &[u8], output: &Path) -> Result<(), ModuleError> {
    let component =
        Component::new(engine, bytes).map_err(|e| ModuleError::Malformed(format!("{e:#}")))?;
    validate::check_imports(engine, &component)?;
    let serialized = component
        .serialize()
        .map_err(|e| ModuleError::CompileFailed(e.to_string()))?;
    write_atomically(output, &serialized).map_err(|e| ModuleError::CompileFailed(e.to_string()))
}

/// A name beside `output` that no other compile uses, in this process or
/// another: two steps may compile the same module at once (each writes its
/// own input and temporary file, and the renames put the same code in
/// place), so a file named after the module alone would be removed or
/// overwritten under the other compile.
fn scratch_name(output: &Path, what: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    output.with_extension(format!("{what}-{}-{n}", std::process::id()))
}

/// Write to a temporary name and rename, so a reader never sees half a file.
fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = scratch_name(path, "tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

async fn compile_in_child(
    program: &Path,
    timeout: Duration,
    memory_limit_bytes: u64,
    bytes: &[u8],
    output: &Path,
) -> Result<(), ModuleError> {
    let failed = |e: std::io::Error| ModuleError::CompileFailed(e.to_string());
    let input = scratch_name(output, "input");
    tokio::fs::write(&input, bytes).await.map_err(failed)?;
    let child = tokio::process::Command::new(program)
        .arg("internal-compile")
        .arg(&input)
        .arg(output)
        .arg(memory_limit_bytes.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(failed)?;
    let result = tokio::time::timeout(timeout, child.wait_with_output()).await;
    let _ = tokio::fs::remove_file(&input).await;
    let out = match result {
        Err(_) => return Err(ModuleError::CompileTimeout(timeout.as_secs())),
        Ok(out) => out.map_err(failed)?,
    };
    if out.status.success() {
        return Ok(());
    }
    if out.status.code() == Some(EXIT_MODULE_ERROR.into()) {
        return Err(serde_json::from_slice::<ChildError>(&out.stdout)
            .map(ChildError::into_module_error)
            .unwrap_or_else(|_| {
                ModuleError::CompileFailed(String::from_utf8_lossy(&out.stdout).into())
            }));
    }
    // Killed by a signal or aborted on a failed allocation: the rlimit was hit.
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code().is_none() || stderr.contains("memory allocation") {
        return Err(ModuleError::CompileMemory(memory_limit_bytes >> 20));
    }
    Err(ModuleError::CompileFailed(
        stderr
            .lines()
            .last()
            .unwrap_or("compiler exited")
            .to_string(),
    ))
}

/// The child's report of a module error, as JSON on its stdout.
#[derive(serde::Serialize, serde::Deserialize)]
struct ChildError {
    kind: String,
    detail: String,
}

impl ChildError {
    fn from_module_error(error: &ModuleError) -> Self {
        let (kind, detail) = match error {
            ModuleError::Malformed(d) => ("malformed", d.clone()),
            ModuleError::ForbiddenImport(d) => ("forbidden_import", d.clone()),
            other => ("failed", other.to_string()),
        };
        ChildError {
            kind: kind.into(),
            detail,
        }
    }

    fn into_module_error(self) -> ModuleError {
        match self.kind.as_str() {
            "malformed" => ModuleError::Malformed(self.detail),
            "forbidden_import" => ModuleError::ForbiddenImport(self.detail),
            _ => ModuleError::CompileFailed(self.detail),
        }
    }
}

/// Entry point of the compile child process (`stepwise internal-compile IN OUT LIMIT`).
pub fn child_main(input: &Path, output: &Path, memory_limit_bytes: u64) -> ExitCode {
    if let Err(e) = rlimit::setrlimit(rlimit::Resource::AS, memory_limit_bytes, memory_limit_bytes)
    {
        eprintln!("cannot set the compile memory limit: {e}");
        return ExitCode::FAILURE;
    }
    let result = std::fs::read(input)
        .map_err(|e| ModuleError::CompileFailed(e.to_string()))
        .and_then(|bytes| {
            let engine =
                engine::compile_engine().map_err(|e| ModuleError::CompileFailed(e.to_string()))?;
            compile_and_write(&engine, &bytes, output)
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let report =
                serde_json::to_string(&ChildError::from_module_error(&error)).unwrap_or_default();
            println!("{report}");
            ExitCode::from(EXIT_MODULE_ERROR)
        }
    }
}
