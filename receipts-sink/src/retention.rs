//! Retention: finished tasks older than the configured age are deleted with
//! their whole chains, at start and then periodically.
//!
//! Only tasks whose state is finished ([`TaskState::is_finished`]) go, by the
//! time of their last receipt; a task that is queued, running, retrying,
//! failed or dead-lettered is kept however old. Every sink of a group may
//! prune the same store: deleting is idempotent.
//!
//! [`TaskState::is_finished`]: crate::TaskState::is_finished

use crate::store::Store;
use chrono::Utc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// Prunes `store` now and every `every`, deleting finished tasks whose last
/// receipt is older than `retain`. Runs until aborted.
pub(crate) async fn run(store: Store, retain: Duration, every: Duration) {
    let age = chrono::Duration::from_std(retain).unwrap_or(chrono::Duration::MAX);
    loop {
        let cutoff = Utc::now()
            .checked_sub_signed(age)
            .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
        match store.prune(cutoff).await {
            Ok(stats) if stats.tasks > 0 => info!(
                tasks = stats.tasks,
                receipts = stats.receipts,
                older_than = %cutoff.to_rfc3339(),
                "retention: deleted finished tasks and their receipts"
            ),
            Ok(_) => debug!(older_than = %cutoff.to_rfc3339(), "retention: nothing to delete"),
            Err(e) => warn!(error = %e, "retention: pruning failed; trying again later"),
        }
        tokio::time::sleep(every.max(Duration::from_secs(1))).await;
    }
}
