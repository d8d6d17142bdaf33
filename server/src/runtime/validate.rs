//! What an uploaded module must be: a WebAssembly component, not precompiled
//! code, importing nothing beyond the step world and WASI 0.2.

use wasmtime::Engine;
use wasmtime::component::Component;

/// Why a module was refused. Each variant's message tells the author what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    #[error("the module is empty (0 bytes); upload the .wasm file your build wrote")]
    Empty,
    #[error("the module is not a WebAssembly binary (it does not start with \\0asm)")]
    NotWasm,
    #[error(
        "the module is a core WebAssembly module, not a component; build it with `cargo build --target wasm32-wasip2` (which writes a component)"
    )]
    CoreModule,
    #[error(
        "precompiled code is refused; upload the .wasm component itself, the server compiles it"
    )]
    Precompiled,
    #[error("the component is malformed: {0}")]
    Malformed(String),
    #[error(
        "the component imports `{0}`, which steps may not use; allowed: stepwise:step/host and WASI 0.2's io, clocks, random, cli, filesystem and sockets (a step sees no file and no network through them). For componentize-js, add 'http' and 'fetch-event' to disableFeatures"
    )]
    ForbiddenImport(String),
    #[error("the component does not fit the step world: {0}")]
    WrongExports(String),
    #[error("compiling the component took longer than {0} s; it was stopped")]
    CompileTimeout(u64),
    #[error("compiling the component needed more than {0} MiB of memory; it was stopped")]
    CompileMemory(u64),
    #[error("the module could not be compiled: {0}")]
    CompileFailed(String),
}

/// The step interface, at any version the host links.
const STEP_INTERFACE: &str = "stepwise:step/host";

/// Cheap checks on the raw bytes, before any compilation.
pub fn check_bytes(bytes: &[u8]) -> Result<(), ModuleError> {
    if bytes.is_empty() {
        return Err(ModuleError::Empty);
    }
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(ModuleError::NotWasm);
    }
    if Engine::detect_precompiled(bytes).is_some() {
        return Err(ModuleError::Precompiled);
    }
    // Bytes 4..8 are version and layer: layer 0 is a core module, 1 a component.
    match bytes[6..8] {
        [0, 0] => Err(ModuleError::CoreModule),
        [1, 0] => Ok(()),
        _ => Err(ModuleError::Malformed("unknown binary layer".into())),
    }
}

/// Refuse a component that imports anything outside the step world and WASI
/// 0.2 (which the sandbox links deny-all, see `super::wasi`).
pub fn check_imports(engine: &Engine, component: &Component) -> Result<(), ModuleError> {
    for (name, _) in component.component_type().imports(engine) {
        if !name.starts_with(STEP_INTERFACE) && !super::wasi::is_allowed_wasi(name) {
            return Err(ModuleError::ForbiddenImport(name.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_byte_checks_name_the_problem() {
        assert_eq!(check_bytes(b""), Err(ModuleError::Empty));
        assert_eq!(check_bytes(b"hello world"), Err(ModuleError::NotWasm));
        assert_eq!(
            check_bytes(b"\0asm\x01\0\0\0"),
            Err(ModuleError::CoreModule)
        );
        assert_eq!(check_bytes(b"\0asm\x0d\0\x01\0"), Ok(()));
    }
}
