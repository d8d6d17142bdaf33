//! The limits of one step: fuel, wall clock and memory, and the limiter that
//! enforces the memory cap across all of a step's memories and tables; and
//! the caps on what any step may hand the host as a checkpoint or artifact.

use std::time::Duration;
use wasmtime::ResourceLimiter;

/// Limits for one step execution.
#[derive(Debug, Clone, Copy)]
pub struct StepLimits {
    /// The step's `max_execution_time`; becomes `seconds × fuel_per_second` fuel.
    pub max_execution_time: Duration,
    /// Cap on the sum of all linear memories and tables, in bytes.
    pub max_memory: u64,
}

impl StepLimits {
    /// Fuel budget for this step under the given calibration.
    pub fn fuel_budget(&self, fuel_per_second: u64) -> u64 {
        let fuel = self.max_execution_time.as_secs_f64() * fuel_per_second as f64;
        fuel.min(u64::MAX as f64) as u64
    }

    /// The wall-clock backstop: fuel judges guest code, but a guest can also
    /// wait in host calls (a sleep, a slow checkpoint). Twice the budget plus a
    /// second keeps a loaded machine from stopping a step that fuel would allow.
    pub fn wall_deadline(&self) -> Duration {
        self.max_execution_time * 2 + Duration::from_secs(1)
    }
}

/// What a step may hand the host: one set of caps, for the server and for
/// `stepwise step run` alike, so a step that runs locally runs on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataCaps {
    /// Largest checkpoint, in bytes.
    pub checkpoint_bytes: u64,
    /// Largest artifact, in bytes, after all appends.
    pub artifact_bytes: u64,
}

impl DataCaps {
    pub const DEFAULT: DataCaps = DataCaps {
        checkpoint_bytes: 16 << 20,
        artifact_bytes: 64 << 20,
    };
}

impl Default for DataCaps {
    fn default() -> Self {
        DataCaps::DEFAULT
    }
}

/// Raised (as the trap's error) when a step hands the host more than a
/// [`DataCaps`] cap allows; the step ends with the matching typed outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapExceeded {
    #[error("checkpoint of {size} bytes is over the checkpoint cap of {limit} bytes")]
    Checkpoint { size: u64, limit: u64 },
    #[error("artifact `{name}` would be {size} bytes, over the artifact cap of {limit} bytes")]
    Artifact { name: String, size: u64, limit: u64 },
}

/// Raised (as the trap's error) when a step asks for more memory than its cap.
#[derive(Debug, thiserror::Error)]
#[error("memory cap of {limit} bytes exceeded: the step asked for {requested} bytes in all")]
pub struct MemoryCapExceeded {
    pub limit: u64,
    pub requested: u64,
}

/// Bytes charged per table element: tables hold pointers.
const TABLE_ELEMENT_BYTES: u64 = 8;

/// One budget for all memories and tables of a step (a component has several).
#[derive(Debug)]
pub struct StepLimiter {
    limit: u64,
    used: u64,
    peak: u64,
}

impl StepLimiter {
    pub fn new(limit: u64) -> Self {
        StepLimiter {
            limit,
            used: 0,
            peak: 0,
        }
    }

    pub fn peak(&self) -> u64 {
        self.peak
    }

    fn charge(&mut self, current: u64, desired: u64) -> wasmtime::Result<bool> {
        let requested = self.used + desired.saturating_sub(current);
        if requested > self.limit {
            return Err(wasmtime::Error::new(MemoryCapExceeded {
                limit: self.limit,
                requested,
            }));
        }
        self.used = requested;
        self.peak = self.peak.max(self.used);
        Ok(true)
    }
}

impl ResourceLimiter for StepLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.charge(current as u64, desired as u64)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.charge(
            current as u64 * TABLE_ELEMENT_BYTES,
            desired as u64 * TABLE_ELEMENT_BYTES,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_covers_all_memories_together() {
        let mut limiter = StepLimiter::new(100);
        assert!(limiter.memory_growing(0, 60, None).unwrap());
        let err = limiter.memory_growing(0, 50, None).unwrap_err();
        let cap = err
            .downcast_ref::<MemoryCapExceeded>()
            .expect("typed error");
        assert_eq!(cap.requested, 110);
        assert!(limiter.memory_growing(60, 101, None).is_err());
        assert!(limiter.memory_growing(60, 90, None).unwrap());
        assert_eq!(limiter.peak(), 90);
    }

    #[test]
    fn fuel_budget_scales_with_time() {
        let limits = StepLimits {
            max_execution_time: Duration::from_millis(1500),
            max_memory: 0,
        };
        assert_eq!(limits.fuel_budget(1_000), 1_500);
        assert_eq!(limits.wall_deadline(), Duration::from_secs(4));
    }
}
