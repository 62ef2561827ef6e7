//! Shared helpers for the benchmark binaries: percentiles, this process's
//! CPU time, and a queue's depth.

/// The `p`-th percentile (0..=100) of sorted samples, in the samples' unit.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Clock ticks per second of `/proc`'s CPU times (Linux's USER_HZ).
pub const TICKS_PER_SEC: f64 = 100.0;

/// utime + stime of this process, all its threads, in clock ticks.
pub fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the command, which is in parentheses and may hold spaces:
    // state is field 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')').expect("a /proc stat line") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Messages ready in `queue`, by a passive declare on `channel`.
pub async fn queue_depth(channel: &lapin::Channel, queue: &str) -> usize {
    channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("the depth of queue {queue}: {e}"))
        .message_count() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_series() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 51.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn cpu_ticks_grow_with_work() {
        let before = cpu_ticks();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(cpu_ticks() > before, "100 ms of spinning counted no tick");
    }
}
