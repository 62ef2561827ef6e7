//! Small timing helpers shared by the runtime crates.

use tokio::time::Instant;

/// Sleeps until `t`, or forever when there is none: for a `select!` arm
/// whose deadline is optional.
pub async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
