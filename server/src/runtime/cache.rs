//! What the compiled-code cache holds and how it has served (sTask's cache
//! stats and clear): compiled modules on disk, the ones loaded in memory, and
//! how often a module was found compiled (a hit) or had to be compiled (a miss).
//!
//! Clearing is safe while steps run: a running step holds its loaded module
//! (and the kernel keeps a deleted file's mapped pages), and a step that
//! starts during a clear waits for it and then compiles the module again.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Extension of compiled modules in the cache directory.
pub(super) const COMPILED_EXTENSION: &str = "cwasm";

/// The cache of one node, now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Compiled modules on disk.
    pub entries: u64,
    /// Their size in bytes.
    pub bytes: u64,
    /// Compiled modules held in memory, ready to instantiate.
    pub loaded: u64,
    /// Modules found compiled (in memory or on disk) since the node started.
    pub hits: u64,
    /// Modules that had to be compiled since the node started.
    pub misses: u64,
}

/// What a clear removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheCleared {
    /// Compiled modules deleted from disk.
    pub entries: u64,
    /// Their size in bytes.
    pub bytes: u64,
    /// Compiled modules dropped from memory.
    pub loaded: u64,
}

/// Hits and misses, counted since the node started (a clear keeps them: they
/// say how the cache served, and a clear is one of the things it lived through).
#[derive(Default)]
pub(super) struct CacheCounters {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CacheCounters {
    pub(super) fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn read(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

/// The compiled modules in `dir`: how many and their total size.
pub(super) fn on_disk(dir: &Path) -> std::io::Result<(u64, u64)> {
    let mut entries = 0;
    let mut bytes = 0;
    for file in compiled_files(dir)? {
        entries += 1;
        bytes += file.1;
    }
    Ok((entries, bytes))
}

/// Delete the compiled modules in `dir`; returns how many and their size.
/// A file already gone (deleted by an evict meanwhile) is not an error.
pub(super) fn remove_all(dir: &Path) -> std::io::Result<(u64, u64)> {
    let mut entries = 0;
    let mut bytes = 0;
    for (path, size) in compiled_files(dir)? {
        match std::fs::remove_file(&path) {
            Ok(()) => {
                entries += 1;
                bytes += size;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok((entries, bytes))
}

fn compiled_files(dir: &Path) -> std::io::Result<Vec<(std::path::PathBuf, u64)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path
            .extension()
            .is_some_and(|ext| ext == COMPILED_EXTENSION)
        {
            // A file deleted between the listing and this look is not counted.
            if let Ok(meta) = entry.metadata() {
                files.push((path, meta.len()));
            }
        }
    }
    Ok(files)
}
