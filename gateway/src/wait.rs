//! `?wait=`: how long `POST /v1/tasks` waits for the task's final receipt,
//! written as a whole number with a unit, `500ms`, `30s` or `2m` (a bare
//! number is seconds).

use std::time::Duration;

/// Reads a wait such as `30s`; `Err` says what is accepted.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || {
        format!(
            "invalid wait {text:?}: give a whole number and a unit, ms, s or m (500ms, 30s, 2m)"
        )
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    let millis = match unit.trim() {
        "ms" => Some(n),
        "" | "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        _ => return Err(bad()),
    };
    millis.map(Duration::from_millis).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_take_ms_s_or_m() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("7").unwrap(), Duration::from_secs(7));
        assert_eq!(parse(" 0s ").unwrap(), Duration::ZERO);
        for bad in [
            "",
            "s",
            "1.5s",
            "-1s",
            "30 seconds",
            "2h",
            "99999999999999999999m",
            "1e3",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("500ms, 30s, 2m"), "{bad:?}: {e}");
        }
    }
}
