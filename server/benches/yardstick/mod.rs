//! A yardstick for the machine a benchmark runs on, printed above its table.
//!
//! Machines of "the same kind" have differed by 2× per core between sessions
//! (native SHA-256 over 64 MiB: 139 ms to 271 ms), and the engine's durable
//! commits also wait on the disk's fsync. Figures from two machines compare
//! only next to these two readings; ratios within one run need neither.

use sha2::{Digest, Sha256};
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// SHA-256 of 64 MiB whose byte i is `(i * 2654435761) >> 24` (as u32), hashed
/// in 64 KiB chunks; the runtime bench's guest computes the same.
pub fn native_sha256(mib: usize) -> String {
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let total = mib * 1024 * 1024;
    let mut i = 0usize;
    while i < total {
        for (j, byte) in chunk.iter_mut().enumerate() {
            *byte = ((i + j) as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_shr(24) as u8;
        }
        hasher.update(&chunk);
        i += chunk.len();
    }
    hex::encode(hasher.finalize())
}

/// The two readings.
pub struct Yardstick {
    /// Best of three native SHA-256 runs over 64 MiB (one core's speed).
    pub sha256: Duration,
    /// Median time of a 4 KiB write plus `fdatasync` in the bench's directory.
    pub fsync: Duration,
}

impl Yardstick {
    /// Takes about a second.
    pub fn measure(dir: &Path) -> Yardstick {
        let sha256 = (0..3)
            .map(|_| {
                let started = Instant::now();
                std::hint::black_box(native_sha256(64));
                started.elapsed()
            })
            .min()
            .expect("three runs");
        Yardstick {
            sha256,
            fsync: fsync_median(dir),
        }
    }
}

fn fsync_median(dir: &Path) -> Duration {
    let path = dir.join("yardstick-fsync");
    let mut file = std::fs::File::create(&path).expect("create the fsync probe file");
    let page = [7u8; 4096];
    let mut times: Vec<Duration> = (0..100)
        .map(|_| {
            let started = Instant::now();
            file.write_all(&page).expect("write the fsync probe");
            file.sync_data().expect("fdatasync the fsync probe");
            started.elapsed()
        })
        .collect();
    drop(file);
    let _ = std::fs::remove_file(&path);
    times.sort();
    times[times.len() / 2]
}

impl fmt::Display for Yardstick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Machine yardstick: native SHA-256 over 64 MiB {:.0} ms (sessions 1, 3, 4: 267, 139, 203 ms); \
             a 4 KiB write + fdatasync {:.2} ms (median of 100).",
            self.sha256.as_secs_f64() * 1e3,
            self.fsync.as_secs_f64() * 1e3
        )
    }
}
