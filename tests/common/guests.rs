//! Python and JavaScript step components for tests, built from `modules/python/` and
//! `modules/js/` with the pinned toolchains (`scripts/guest-toolchains` installs them
//! into the target dir when missing: nothing to set up by hand).
//!
//! A build takes 10–20 s of CPU, so each component is built once for its sources:
//! the file name carries a hash of the module's files, the SDK and the WIT, and a file
//! lock keeps parallel tests and test binaries from building the same one twice.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::skip::skip_or_fail;

/// A step language other than Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Python,
    Js,
}

impl Lang {
    fn dir(self) -> &'static str {
        match self {
            Lang::Python => "python",
            Lang::Js => "js",
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// `<target>/guest-tools` (CARGO_TARGET_TMPDIR is `<target>/tmp`), or STEPWISE_GUEST_TOOLS.
fn tools_dir() -> PathBuf {
    std::env::var_os("STEPWISE_GUEST_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("../guest-tools"))
}

/// Installs the toolchains once per process; `Err` says why they cannot be had.
fn tools() -> Result<PathBuf, String> {
    static TOOLS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TOOLS
        .get_or_init(|| {
            for (program, arg) in [
                ("python3", "--version"),
                ("npm", "--version"),
                ("node", "--version"),
            ] {
                if Command::new(program).arg(arg).output().is_err() {
                    return Err(format!(
                        "`{program}` is not installed (needed to build Python and JS steps)"
                    ));
                }
            }
            let dir = tools_dir();
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let _lock = lock(&dir.join(".lock"));
            let out = Command::new(root().join("scripts/guest-toolchains"))
                .arg(&dir)
                .output()
                .map_err(|e| format!("cannot run scripts/guest-toolchains: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "scripts/guest-toolchains failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(dir)
        })
        .clone()
}

fn lock(path: &Path) -> File {
    use fs4::fs_std::FileExt;
    let file = File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    file.lock_exclusive().expect("lock");
    file
}

/// The component of `modules/<lang>/<path>`, built if needed; `None` (after saying why)
/// when the toolchains cannot be installed outside CI.
pub fn component(lang: Lang, path: &str, test: &str) -> Option<Vec<u8>> {
    let tools = match tools() {
        Ok(tools) => tools,
        Err(why) => {
            skip_or_fail(test, &why);
            return None;
        }
    };
    let file = build(&tools, lang, path);
    Some(std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())))
}

fn build(tools: &Path, lang: Lang, path: &str) -> PathBuf {
    let root = root();
    let source = root.join("modules").join(lang.dir()).join(path);
    let sdk = root.join("guest-sdk").join(lang.dir());
    let hash = hash_files(&[&source, &sdk, &root.join("guest-sdk/wit")]);
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guest-modules");
    std::fs::create_dir_all(&cache).expect("create the component cache");
    let name = format!(
        "{}-{}-{}.wasm",
        lang.dir(),
        path.replace('/', "__"),
        &hash[..16]
    );
    let out = cache.join(&name);
    let _lock = lock(&cache.join(format!("{name}.lock")));
    if out.exists() {
        return out;
    }
    forget_older_builds(&cache, &name);
    let partial = cache.join(format!("{name}.partial"));
    let mut command = match lang {
        Lang::Python => {
            let mut c = Command::new(tools.join("python/bin/componentize-py"));
            c.arg("-d")
                .arg(root.join("guest-sdk/wit"))
                .args(["-w", "step", "componentize", "-p"])
                .arg(&sdk)
                .arg("-p")
                .arg(&source)
                .arg("app");
            c
        }
        Lang::Js => {
            let mut c = Command::new("node");
            c.arg(sdk.join("build.mjs"))
                .arg(source.join("step.js"))
                .env("STEPWISE_JS_TOOLS", tools.join("js"));
            c
        }
    };
    let output = command
        .arg("-o")
        .arg(&partial)
        .current_dir(&source)
        .output()
        .expect("run the component build");
    assert!(
        output.status.success(),
        "building {lang:?} module {path} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::rename(&partial, &out).expect("move the component into the cache");
    out
}

/// Removes the components built from earlier sources of the same module (a name that
/// differs from `name` only in its hash), so the cache does not grow with every change.
fn forget_older_builds(cache: &Path, name: &str) {
    let prefix = &name[..name.len() - "0123456789abcdef.wasm".len()];
    for entry in std::fs::read_dir(cache).into_iter().flatten().flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.starts_with(prefix) && !file.starts_with(name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// SHA-256 over the relative names and contents of every file under `dirs`, sorted.
fn hash_files(dirs: &[&Path]) -> String {
    let mut files = Vec::new();
    for dir in dirs {
        collect(dir, &mut files);
    }
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        hasher.update(file.to_string_lossy().as_bytes());
        hasher.update(std::fs::read(&file).unwrap_or_default());
    }
    hex::encode(hasher.finalize())
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "node_modules" || name == "__pycache__" || name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(&path, files);
        } else {
            files.push(path);
        }
    }
}
