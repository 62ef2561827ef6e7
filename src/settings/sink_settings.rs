//! Sink settings: what `chit sink` (or `chit dev`) asks for, merged with the
//! config file into a [`SinkConfig`].

use super::duration::parse_duration;
use super::{Settings, address, default_store_url};
use anyhow::{Context, Result, bail};
use receipts_sink::SinkConfig;
use std::time::Duration;

/// The sink settings given on the command line (flags or `CHIT_*`
/// variables). `None` means "not given here": the config file decides, else
/// the default ([`default_store_url`] for the store, the sink crate's for the rest).
#[derive(Debug, Clone, Default)]
pub struct SinkSettings {
    /// `sqlite://PATH` or `postgres://...`.
    pub store: Option<String>,
    /// Address of the HTTP API: `HOST:PORT`, `:PORT`, `HOST` or
    /// `http://HOST:PORT` (see `address`).
    pub http: Option<String>,
    /// Receipts per committed batch at most.
    pub batch_size: Option<usize>,
    /// Milliseconds a batch stays open at most.
    pub batch_wait_ms: Option<u64>,
    /// Messages the broker may push ahead.
    pub prefetch: Option<u16>,
    /// Sink group (every group gets every receipt).
    pub group: Option<String>,
    /// How long finished tasks are kept, as `30d`, `12h`, ... (see [`parse_age`]).
    pub retain: Option<String>,
}

impl Settings {
    /// The sink's config: `given` over the config file over the defaults.
    pub fn sink_config(&self, given: &SinkSettings) -> Result<SinkConfig> {
        let file = &self.file.sink;
        let store = match given.store.clone().or(file.store.clone()) {
            Some(s) => s,
            None => default_store_url()?,
        };
        let mut config = SinkConfig::new(&self.amqp_url, store);
        let port = Some(address::default_sink_port());
        if let Some(http) = &given.http {
            config.http_addr = address::listen_addr("--http", http, port)?;
        } else if let Some(http) = &file.http {
            config.http_addr = address::listen_addr("[sink] http in the config file", http, port)?;
        }
        if let Some(n) = given.batch_size {
            config.batch_size = n;
        }
        if let Some(ms) = given.batch_wait_ms {
            config.batch_wait = Duration::from_millis(ms);
        }
        if let Some(p) = given.prefetch {
            config.prefetch = p;
        }
        if let Some(g) = given.group.clone().or(file.group.clone()) {
            config.group = g;
        }
        if let Some(age) = given.retain.clone().or(file.retain.clone()) {
            config.retain =
                Some(parse_age(&age).with_context(|| {
                    format!("--retain {age:?} (CHIT_SINK_RETAIN, [sink] retain)")
                })?);
        }
        Ok(config)
    }
}

/// Reads an age such as `30d`: a whole number and a unit, `s`, `m`
/// (minutes), `h`, `d` or `w` (see [`parse_duration`]). Zero is refused: it
/// would delete every finished task as soon as it finishes.
pub fn parse_age(text: &str) -> Result<Duration> {
    let age = parse_duration(text)?;
    if age.is_zero() {
        bail!("a retention of zero would delete every task as soon as it finishes");
    }
    Ok(age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_take_a_number_and_a_unit() {
        assert_eq!(parse_age("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(parse_age(" 12h ").unwrap(), Duration::from_secs(12 * 3600));
        assert_eq!(parse_age("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_age("2w").unwrap(), Duration::from_secs(14 * 86_400));
        for bad in [
            "",
            "30",
            "d",
            "0d",
            "1.5d",
            "-1d",
            "30 days",
            "99999999999999999999d",
        ] {
            assert!(parse_age(bad).is_err(), "{bad:?}");
        }
    }
}
