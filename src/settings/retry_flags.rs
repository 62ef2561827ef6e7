//! The retry flags `chit publish` and `chit worker` share. On publish they
//! go into the task's envelope and apply to that task only; on the worker
//! they apply to every capability it serves. A task's own values win.

use broker_topology::TaskEnvelope;
use clap::Args;

/// `--max-attempts`, `--backoff-ms`, `--timeout-secs`; unset means "not
/// overridden here".
#[derive(Args, Debug, Clone, Default, PartialEq)]
pub struct RetryFlags {
    /// Total attempts per task, 1 or more (a published task's own value
    /// overrides the worker's).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: Option<u32>,
    /// First retry delay in ms.
    #[arg(long)]
    pub backoff_ms: Option<u64>,
    /// Run-time limit per task, in seconds, 0.001 or more (a published
    /// task's own value overrides the worker's).
    #[arg(long, value_parser = parse_time_limit)]
    pub timeout_secs: Option<f64>,
}

/// A run-time limit in seconds: finite, at least a millisecond, and at most
/// a year (beyond that it is a typo, and `Duration` arithmetic overflows).
pub(crate) fn parse_time_limit(text: &str) -> Result<f64, String> {
    const YEAR_SECS: f64 = 365.0 * 24.0 * 3600.0;
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(secs.is_finite() && (0.001..=YEAR_SECS).contains(&secs)) {
        return Err(format!(
            "{text} is out of range: a time limit is 0.001 to {YEAR_SECS} seconds"
        ));
    }
    Ok(secs)
}

impl RetryFlags {
    /// Writes the flags into a task's envelope, where they override the worker.
    pub fn stamp(&self, envelope: &mut TaskEnvelope) {
        envelope.max_attempts = self.max_attempts;
        envelope.backoff_ms = self.backoff_ms;
        envelope.timeout_ms = self.timeout_secs.map(|s| (s * 1000.0) as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::{RetryFlags, parse_time_limit};
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        retry: RetryFlags,
    }

    #[test]
    fn publish_and_worker_refuse_zero_attempts_and_a_zero_time_limit() {
        for bad in [["--max-attempts", "0"], ["--timeout-secs", "0"]] {
            let err = Flags::try_parse_from(["chit"].into_iter().chain(bad))
                .err()
                .unwrap_or_else(|| panic!("{bad:?} was accepted"))
                .to_string();
            assert!(err.contains(bad[0]), "{err}");
        }
        let ok = Flags::try_parse_from(["chit", "--max-attempts", "1", "--timeout-secs", "2.5"]);
        assert_eq!(ok.unwrap().retry.timeout_secs, Some(2.5));
    }

    #[test]
    fn a_time_limit_is_a_positive_finite_number_of_seconds() {
        assert_eq!(parse_time_limit("0.5"), Ok(0.5));
        for bad in ["0", "-1", "NaN", "inf", "1e30", "soon"] {
            let err = parse_time_limit(bad).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }
}
