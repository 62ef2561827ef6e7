//! Layered settings, merged in one place: a flag overrides its `CHIT_*`
//! environment variable (clap reads both into the same `Option`), which
//! overrides the config file, which overrides the default of the crate that
//! owns the setting. The merge yields the crates' own config types.
//!
//! # Layout
//!
//! - [`Settings`]: the broker URL and config file every command starts from,
//!   and the small merges (producer, sink API URL).
//! - `address`: the one parser of network addresses (`--http`, `--health`,
//!   `--api` and their config-file keys): `HOST:PORT`, `:PORT`, `HOST`,
//!   `http://HOST:PORT`, `localhost` included.
//! - `config_file`: the config file ([`FileConfig`]) and chit's directories.
//! - `tls_settings`: [`tls_config`], the TLS files of amqps:// connections.
//! - `duration`: durations as a number and a unit (`30s`, `2m`, `30d`).
//! - `retry_flags`: [`RetryFlags`], the retry flags `publish` and `worker` share.
//! - `worker_settings`: [`WorkerSettings`] into `worker::WorkerConfig`, and
//!   the capability list `topology` shares with the worker.
//! - `sink_settings`: [`SinkSettings`] into `receipts_sink::SinkConfig`.
//! - `gateway_settings`: [`GatewaySettings`] into `gateway::GatewayConfig`.
//! - `executor_settings`: the file's `[executor.NAME]` tables into the
//!   worker's `Registry`, through the worker crate's kind table.
//! - `schema_settings`: a `[[capability]]`'s `schema` (a JSON Schema file or
//!   inline table), compiled for the worker and `chit publish`.

mod address;
mod config_file;
mod duration;
mod executor_settings;
mod gateway_settings;
mod retry_flags;
mod schema_settings;
mod sink_settings;
mod tls_settings;
mod worker_settings;

#[cfg(test)]
mod tests;

pub use config_file::{FileConfig, default_store_url};
pub(crate) use duration::duration_flag;
pub use gateway_settings::GatewaySettings;
pub use retry_flags::RetryFlags;
pub(crate) use retry_flags::parse_time_limit;
pub use schema_settings::SchemaSource;
pub use sink_settings::SinkSettings;
pub use tls_settings::tls_config;
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
    /// else the file's `sink.api`, else where a sink listens by default. Any
    /// form [`address`] reads is accepted (`localhost:8700`, `:8700`, ...).
    pub fn api_url(&self, flag: Option<String>) -> Result<String> {
        match (flag, &self.file.sink.api) {
            (Some(raw), _) => address::api_url("--api", &raw),
            (None, Some(raw)) => address::api_url("[sink] api in the config file", raw),
            (None, None) => address::api_url("the default", receipts_sink::DEFAULT_HTTP_ADDR),
        }
    }
}
