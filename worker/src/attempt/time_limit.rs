//! The one run-time limit of an attempt, and its timer.
//!
//! A task's limit is its `x-chit-timeout-ms` header, else its capability's
//! `timeout_secs`; an executor's payload may set another (`command.execute`'s
//! `timeout_secs`, read through [`Executor::time_limit`]). docs/protocol.md
//! says both apply and whichever runs out first stops the task, so the attempt
//! keeps one timer, at the smaller. When it fires the attempt cancels with
//! [`CancelReason::Timeout`] and the executor stops its work; the failure's
//! reason is `timeout`.
//!
//! [`Executor::time_limit`]: crate::executor::Executor::time_limit

use crate::executor::{CancelReason, Canceller, ExecError, Outcome};
use std::future::Future;
use std::time::Duration;

/// The attempt's limit: the smaller of the task's (its header, else the
/// capability's) and the payload's.
pub(crate) fn effective(
    header: Option<Duration>,
    capability: Option<Duration>,
    payload: Option<Duration>,
) -> Option<Duration> {
    match (header.or(capability), payload) {
        (Some(task), Some(payload)) => Some(task.min(payload)),
        (task, payload) => task.or(payload),
    }
}

/// Runs `run` (an executor's `execute`, holding the cancellation linked to
/// `canceller`) to its end. At `limit` it cancels with
/// [`CancelReason::Timeout`] and waits for the executor to stop.
pub(crate) async fn enforce(
    limit: Option<Duration>,
    canceller: &Canceller,
    run: impl Future<Output = Result<Outcome, ExecError>>,
) -> Result<Outcome, ExecError> {
    tokio::pin!(run);
    let Some(limit) = limit else {
        return run.await;
    };
    tokio::select! {
        r = &mut run => r,
        _ = tokio::time::sleep(limit) => {
            canceller.cancel(CancelReason::Timeout);
            match run.await {
                // The executor may have finished its last step meanwhile; a
                // success after the limit is still a timeout to the user.
                Ok(_) => Err(ExecError::from_cancel(CancelReason::Timeout)),
                Err(e) => Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::{ExecErrorKind, cancellation};

    const S: fn(u64) -> Option<Duration> = |s| Some(Duration::from_secs(s));

    #[test]
    fn the_header_overrides_the_capability_and_the_smaller_of_task_and_payload_wins() {
        assert_eq!(effective(None, None, None), None);
        assert_eq!(effective(S(5), S(60), None), S(5));
        assert_eq!(effective(S(90), S(60), None), S(90));
        assert_eq!(effective(None, S(60), None), S(60));
        assert_eq!(effective(None, None, S(7)), S(7));
        assert_eq!(effective(S(5), S(60), S(7)), S(5));
        assert_eq!(effective(S(9), S(60), S(7)), S(7));
        assert_eq!(effective(None, S(60), S(70)), S(60));
    }

    #[tokio::test]
    async fn at_the_limit_the_executor_is_cancelled_for_timeout() {
        let (canceller, mut cancel) = cancellation();
        let r = enforce(Some(Duration::from_millis(20)), &canceller, async move {
            let reason = cancel.cancelled().await;
            Err(ExecError::from_cancel(reason))
        })
        .await;
        assert_eq!(r.unwrap_err().kind, ExecErrorKind::Timeout);
    }

    #[tokio::test]
    async fn a_success_that_ignores_the_cancel_is_still_a_timeout() {
        let (canceller, _cancel) = cancellation();
        let r = enforce(Some(Duration::from_millis(10)), &canceller, async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(Outcome::default())
        })
        .await;
        assert_eq!(r.unwrap_err().kind, ExecErrorKind::Timeout);
    }

    #[tokio::test]
    async fn without_a_limit_or_within_it_the_result_stands() {
        let (canceller, _cancel) = cancellation();
        assert!(
            enforce(None, &canceller, async { Ok(Outcome::default()) })
                .await
                .is_ok()
        );
        let r = enforce(S(30), &canceller, async {
            Err(ExecError::new(ExecErrorKind::Failed, "exit 3"))
        })
        .await;
        assert_eq!(r.unwrap_err().kind, ExecErrorKind::Failed);
    }
}
