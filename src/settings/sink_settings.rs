//! Sink settings: what `chit sink` (or `chit dev`) asks for, merged with the
//! config file into a [`SinkConfig`].

use super::{Settings, default_store_url};
use anyhow::{Context, Result};
use receipts_sink::SinkConfig;
use std::time::Duration;

/// The sink settings given on the command line (flags or `CHIT_*`
/// variables). `None` means "not given here": the config file decides, else
/// the default ([`default_store_url`] for the store, the sink crate's for the rest).
#[derive(Debug, Clone, Default)]
pub struct SinkSettings {
    /// `sqlite://PATH` or `postgres://...`.
    pub store: Option<String>,
    /// Address of the HTTP API, as `IP:PORT`.
    pub http: Option<String>,
    /// Receipts per committed batch at most.
    pub batch_size: Option<usize>,
    /// Milliseconds a batch stays open at most.
    pub batch_wait_ms: Option<u64>,
    /// Messages the broker may push ahead.
    pub prefetch: Option<u16>,
    /// Sink group (every group gets every receipt).
    pub group: Option<String>,
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
        if let Some(http) = given.http.clone().or(file.http.clone()) {
            config.http_addr = http.parse().with_context(|| {
                format!("--http {http:?} is not an address like 127.0.0.1:8700")
            })?;
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
        Ok(config)
    }
}
