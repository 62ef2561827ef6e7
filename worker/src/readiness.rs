//! Executor health, checked periodically: the book `/readyz` reads.
//!
//! Every executor that serves a capability is checked when the worker
//! starts (an unhealthy one stops the start) and then every health interval
//! (`--health-interval-secs`, 30 s by default), each check bounded by
//! [`CHECK_TIMEOUT`] or the interval if shorter. A check that does not
//! answer in time counts as unhealthy. A change of state is logged: a warning
//! when an executor turns unhealthy, info when it recovers. The worker goes
//! on consuming either way; `/readyz` says what is wrong.

use crate::executor::Executor;
use crate::shutdown::Shutdown;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest wait for one executor's health check.
pub(crate) const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The last check of one executor.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct ExecutorHealth {
    /// The executor's name.
    pub(crate) name: String,
    /// Its kind.
    pub(crate) kind: String,
    /// `None` until first checked.
    pub(crate) healthy: Option<bool>,
    /// The check's complaint, when unhealthy.
    pub(crate) detail: Option<String>,
    /// When it was last checked.
    pub(crate) last_checked: Option<DateTime<Utc>>,
}

/// The health of every executor the worker serves with.
#[derive(Debug)]
pub(crate) struct Readiness {
    book: Mutex<BTreeMap<String, ExecutorHealth>>,
    interval: Duration,
}

impl Readiness {
    /// Starts checking `executors` now and every `interval` until shutdown.
    pub(crate) fn spawn(
        executors: Vec<Arc<dyn Executor>>,
        interval: Duration,
        mut shutdown: Shutdown,
    ) -> Arc<Readiness> {
        let mut unique: BTreeMap<String, Arc<dyn Executor>> = BTreeMap::new();
        for e in executors {
            unique.entry(e.name().to_owned()).or_insert(e);
        }
        let book = unique
            .values()
            .map(|e| {
                let entry = ExecutorHealth {
                    name: e.name().to_owned(),
                    kind: e.kind().to_owned(),
                    healthy: None,
                    detail: None,
                    last_checked: None,
                };
                (entry.name.clone(), entry)
            })
            .collect();
        let readiness = Arc::new(Readiness {
            book: Mutex::new(book),
            interval,
        });
        let r = readiness.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.recv() => return,
                }
                for executor in unique.values() {
                    r.check(executor.as_ref()).await;
                }
            }
        });
        readiness
    }

    /// Runs one executor's check and records it.
    async fn check(&self, executor: &dyn Executor) {
        let limit = CHECK_TIMEOUT.min(self.interval.max(Duration::from_millis(100)));
        let detail = match tokio::time::timeout(limit, executor.health_check()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.message),
            Err(_) => Some(format!(
                "health check did not answer within {} s",
                limit.as_secs_f64()
            )),
        };
        let healthy = detail.is_none();
        let mut book = self.book.lock().expect("readiness book");
        let Some(entry) = book.get_mut(executor.name()) else {
            return;
        };
        match (entry.healthy, healthy) {
            (Some(true) | None, false) => tracing::warn!(
                executor = %entry.name,
                kind = %entry.kind,
                detail = detail.as_deref().unwrap_or_default(),
                "executor unhealthy"
            ),
            (Some(false), true) => {
                tracing::info!(executor = %entry.name, kind = %entry.kind, "executor healthy again")
            }
            _ => {}
        }
        entry.healthy = Some(healthy);
        entry.detail = detail;
        entry.last_checked = Some(Utc::now());
    }

    /// Every executor's last check, by name.
    pub(crate) fn executors(&self) -> Vec<ExecutorHealth> {
        self.book
            .lock()
            .expect("readiness book")
            .values()
            .cloned()
            .collect()
    }

    /// Time between two checks.
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::{Cancellation, ExecError, ExecErrorKind, Outcome, TaskContext};
    use async_trait::async_trait;
    use serde_json::Value;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Flaky(Arc<AtomicBool>);

    #[async_trait]
    impl Executor for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }
        fn kind(&self) -> &str {
            "test"
        }
        fn validate(&self, _: &Value) -> Result<(), ExecError> {
            Ok(())
        }
        async fn execute(
            &self,
            _: &TaskContext,
            _: Value,
            _: Cancellation,
        ) -> Result<Outcome, ExecError> {
            Ok(Outcome::default())
        }
        async fn health_check(&self) -> Result<(), ExecError> {
            if self.0.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(ExecError::new(ExecErrorKind::Unavailable, "tool missing"))
            }
        }
    }

    async fn until(r: &Readiness, healthy: bool) -> ExecutorHealth {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let e = r.executors().remove(0);
            if e.healthy == Some(healthy) {
                return e;
            }
            assert!(std::time::Instant::now() < deadline, "still {e:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn checks_repeat_and_follow_the_executor() {
        let ok = Arc::new(AtomicBool::new(true));
        let (trigger, signal) = crate::shutdown::shutdown();
        let r = Readiness::spawn(
            vec![Arc::new(Flaky(ok.clone()))],
            Duration::from_millis(50),
            signal,
        );
        let first = until(&r, true).await;
        assert_eq!(
            (first.name.as_str(), first.kind.as_str()),
            ("flaky", "test")
        );
        ok.store(false, Ordering::SeqCst);
        let sick = until(&r, false).await;
        assert_eq!(sick.detail.as_deref(), Some("tool missing"));
        assert!(sick.last_checked > first.last_checked);
        ok.store(true, Ordering::SeqCst);
        until(&r, true).await;
        trigger.fire();
    }
}
