//! Retry policy: how many attempts, and how long to wait before each.
//!
//! Delays are exponential with jitter and are rounded to a quarter-octave grid
//! (1, 1.25, 1.5, 1.75 × 2^k ms), so a busy capability reuses a few dozen delay
//! queues rather than making one per message, and jitter still spreads retries.

use serde::{Deserialize, Serialize};

/// Attempts and backoff for a capability, overridable per task by headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    /// Total attempts, including the first. 1 means never retry.
    pub max_attempts: u32,
    /// Delay before the first retry, in milliseconds.
    pub initial_backoff_ms: u64,
    /// Upper bound for any delay, in milliseconds.
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 300_000,
        }
    }
}

impl RetryPolicy {
    /// True when a task that just failed `attempt` may run again.
    pub fn allows_retry_after(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// The delay before attempt `attempt + 1`, for a `jitter` drawn from [0, 1).
    pub fn delay_ms(&self, attempt: u32, jitter: f64) -> u64 {
        let exp = attempt.saturating_sub(1).min(40);
        let base = self
            .initial_backoff_ms
            .saturating_mul(1u64 << exp)
            .min(self.max_backoff_ms)
            .max(1);
        // Jitter within [base/2, base]: retries spread out but never come early.
        let jittered = (base as f64 * (0.5 + 0.5 * jitter.clamp(0.0, 1.0))) as u64;
        quantize(jittered.max(1)).min(self.max_backoff_ms.max(1))
    }
}

/// Rounds down to the quarter-octave grid.
pub fn quantize(ms: u64) -> u64 {
    if ms < 8 {
        return ms.max(1);
    }
    let top = 63 - ms.leading_zeros(); // index of the highest set bit
    let step = 1u64 << (top - 2);
    ms / step * step
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_within_bounds() {
        let p = RetryPolicy {
            max_attempts: 5,
            initial_backoff_ms: 1024,
            max_backoff_ms: 5000,
        };
        // 1024 and 2048 lie on the grid, so full jitter (1.0) leaves them as they are.
        assert_eq!(p.delay_ms(1, 1.0), 1024);
        assert_eq!(p.delay_ms(2, 1.0), 2048);
        assert!(p.delay_ms(1, 0.0) >= 384);
        assert_eq!(p.delay_ms(10, 1.0), 5000 / 1024 * 1024);
        assert!(p.allows_retry_after(4));
        assert!(!p.allows_retry_after(5));
    }

    #[test]
    fn quantized_values_are_few() {
        let mut distinct: Vec<u64> = (1..100_000).map(quantize).collect();
        distinct.dedup();
        assert!(distinct.len() < 80, "{}", distinct.len());
        for ms in [9, 100, 1234, 99_999] {
            let q = quantize(ms);
            assert!(q <= ms && q as f64 >= ms as f64 * 0.75);
        }
    }
}
