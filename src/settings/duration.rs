//! Durations written as a whole number and a unit (`500ms`, `30s`, `2m`,
//! `12h`, `30d`, `1w`): `--retain` of the sink, `--delay` and `--timeout`
//! of `chit publish`.

use anyhow::{Result, anyhow, bail};
use std::time::Duration;

/// Reads a whole number and a unit: `ms`, `s`, `m` (minutes), `h`, `d` or
/// `w`, with no space between them (spaces around are ignored). Zero is a
/// duration; a caller to whom it makes no sense refuses it.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let millis: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => bail!(
            "{text:?} is not a duration: use a whole number and a unit, ms, s, m, h, d or w \
             (as in 30s)"
        ),
    };
    let n: u64 = number.parse().map_err(|_| {
        anyhow!("{text:?} is not a duration: it must start with a whole number (as in 30s)")
    })?;
    n.checked_mul(millis)
        .map(Duration::from_millis)
        .ok_or_else(|| anyhow!("{text:?} is too long a duration"))
}

/// [`parse_duration`] for a clap `value_parser`.
pub(crate) fn duration_flag(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_whole_number_and_a_unit() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration(" 30s ").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(
            parse_duration("1w").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        for bad in [
            "",
            "30",
            "s",
            "1.5s",
            "-1s",
            "30 s",
            "3x",
            "99999999999999999999d",
        ] {
            let err = parse_duration(bad).unwrap_err().to_string();
            assert!(
                err.contains("duration") || err.contains("number"),
                "{bad:?}: {err}"
            );
        }
    }
}
