//! Removes finished runs, their artifacts and old events past the retention age.

use super::Inner;
use chrono::Utc;
use std::sync::Arc;

/// One pass; returns rows removed.
pub(super) async fn prune_once(inner: &Arc<Inner>) -> anyhow::Result<u64> {
    let Some(age) = inner.config.retention else {
        return Ok(0);
    };
    let before = Utc::now() - chrono::Duration::from_std(age)?;
    Ok(inner.store.prune(before).await?)
}
