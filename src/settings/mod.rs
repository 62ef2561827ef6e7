//! Layered settings, merged in one place: a flag overrides its `CHIT_*`
//! environment variable (clap reads both into the same `Option`), which
//! overrides the config file, which overrides the default of the crate that
//! owns the setting. The merge yields the crates' own config types.
//!
//! # Layout
//!
//! - [`Settings`]: the broker URL and config file every command starts from,
//!   and the small merges (producer, sink API URL).
//! - `config_file`: the config file ([`FileConfig`]) and chit's directories.
//! - `retry_flags`: [`RetryFlags`], the retry flags `publish` and `worker` share.
//! - `worker_settings`: [`WorkerSettings`] into `worker::WorkerConfig`, and
//!   the capability list `topology` shares with the worker.
//! - `sink_settings`: [`SinkSettings`] into `receipts_sink::SinkConfig`.

mod config_file;
mod retry_flags;
mod sink_settings;
mod worker_settings;

#[cfg(test)]
mod tests;

pub use config_file::{FileConfig, default_store_url};
pub use retry_flags::RetryFlags;
pub use sink_settings::SinkSettings;
pub use worker_settings::WorkerSettings;

use anyhow::Result;
use broker_link::DEFAULT_AMQP_URL;
use producer::ProducerConfig;
use std::path::Path;
use std::time::Duration;

/// What every command starts from: the resolved broker URL and the config file.
#[derive(Debug)]
pub struct Settings {
    /// `--amqp-url` / `CHIT_AMQP_URL`, else the file's, else the default.
    pub amqp_url: String,
    /// The config file, empty when there is none.
    pub file: FileConfig,
}

impl Settings {
    /// Reads the config file (`path`, or the default one when it exists) and
    /// resolves the broker URL; `amqp_url` is the flag-or-env value.
    pub fn load(amqp_url: Option<String>, path: Option<&Path>) -> Result<Settings> {
        Ok(Settings::new(amqp_url, FileConfig::load(path)?))
    }

    /// Settings from an already read config file.
    pub fn new(amqp_url: Option<String>, file: FileConfig) -> Settings {
        let amqp_url = amqp_url
            .or_else(|| file.amqp_url.clone())
            .unwrap_or_else(|| DEFAULT_AMQP_URL.to_owned());
        Settings { amqp_url, file }
    }

    /// The producer's config; `publish_deadline` overrides the producer's default.
    pub fn producer_config(&self, publish_deadline: Option<Duration>) -> ProducerConfig {
        let mut config = ProducerConfig::new(&self.amqp_url);
        if let Some(d) = publish_deadline {
            config.publish_deadline = d;
        }
        config
    }

    /// The sink's HTTP API, without a trailing slash: `--api` / `CHIT_API_URL`,
    /// else the file's `sink.api`, else where a sink listens by default.
    pub fn api_url(&self, flag: Option<String>) -> String {
        flag.or_else(|| self.file.sink.api.clone())
            .unwrap_or_else(|| format!("http://{}", receipts_sink::DEFAULT_HTTP_ADDR))
            .trim_end_matches('/')
            .to_owned()
    }
}
