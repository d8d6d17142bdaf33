//! A node that stops on purpose (SIGTERM): it claims nothing new, lets its
//! running steps finish for a grace period, then hands back what is still
//! running so that another node resumes it at once from its checkpoints,
//! instead of waiting for the lease to expire.
//!
//! Handing back is the rescuer's work on this node's own runs: each run
//! ends `interrupted` (rescued) and its task is due again at once. A guest
//! still running here may finish after that; its writes are refused (the
//! step run and the run are already final), so no step attempt is recorded
//! twice, and the process exits right after.

use super::rescuer::{self, Rescue};
use super::{Inner, node_report};
use crate::store::NodeState;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Runs that ended on their own during the grace period.
    pub finished: usize,
    /// Runs handed back to the other nodes.
    pub handed_back: usize,
}

/// How often the drain looks whether the node's runs have ended.
const LOOK_EVERY: Duration = Duration::from_millis(20);

/// Wait until this node runs nothing, `grace` has passed or `hurry`
/// completes (a second signal), whichever is first; then hand back what
/// still runs. Claims must already be stopped.
pub(super) async fn drain(
    inner: &Arc<Inner>,
    grace: Duration,
    hurry: impl Future<Output = ()>,
) -> Drained {
    node_report::report(inner, NodeState::Draining).await;
    let at_start = inner.running.run_ids().len();
    let deadline = Instant::now() + grace;
    tokio::pin!(hurry);
    while !inner.running.run_ids().is_empty() && Instant::now() < deadline {
        tokio::select! {
            _ = &mut hurry => break,
            _ = tokio::time::sleep(LOOK_EVERY) => {}
        }
    }
    let still_running = inner.running.run_ids().len();
    let handed_back = if still_running == 0 {
        0
    } else {
        let node = inner.config.node_id.clone();
        match rescuer::rescue(inner, Rescue::HandBack(&node)).await {
            Ok(n) => n,
            Err(error) => {
                // Their leases expire and any other node rescues them then.
                tracing::error!(
                    "handing back {still_running} run(s) failed, they resume once their lease expires: {error:#}"
                );
                0
            }
        }
    };
    node_report::report(inner, NodeState::Stopped).await;
    Drained {
        finished: at_start.saturating_sub(still_running),
        handed_back,
    }
}
