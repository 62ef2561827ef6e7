//! Gateway settings: what `chit gateway` asks for, merged with the config
//! file's `[gateway]` table into a [`GatewayConfig`].

use super::duration::parse_duration;
use super::{Settings, address, default_store_url};
use anyhow::{Context, Result, bail};
use gateway::GatewayConfig;
use std::time::Duration;

/// The gateway settings given on the command line (flags or `CHIT_*`
/// variables); `None` means "not given here": the config file decides,
/// else the gateway crate's default.
#[derive(Debug, Clone, Default)]
pub struct GatewaySettings {
    /// `sqlite://PATH` or `postgres://...`.
    pub store: Option<String>,
    /// Address to listen on: `HOST:PORT`, `:PORT`, `HOST` or `http://HOST:PORT`.
    pub http: Option<String>,
    /// Largest request body, in bytes.
    pub max_body_bytes: Option<usize>,
    /// Longest `?wait=`.
    pub max_wait: Option<Duration>,
    /// How long a publish may wait for the broker.
    pub publish_deadline: Option<Duration>,
    /// The management API's base URL.
    pub management_url: Option<String>,
}

impl Settings {
    /// The gateway's store: `given`, else `[gateway] store`, else
    /// `[sink] store`, else the default store (the sink's): keys and
    /// idempotency records live beside the chains the gateway serves.
    pub fn gateway_store(&self, given: Option<String>) -> Result<String> {
        match given
            .or(self.file.gateway.store.clone())
            .or(self.file.sink.store.clone())
        {
            Some(s) => Ok(s),
            None => default_store_url(),
        }
    }

    /// The gateway's config: `given` over the config file over the defaults.
    pub fn gateway_config(&self, given: &GatewaySettings) -> Result<GatewayConfig> {
        let file = &self.file.gateway;
        let store = self.gateway_store(given.store.clone())?;
        let mut config = GatewayConfig::new(&self.amqp_url, store);
        let port = Some(default_port());
        if let Some(http) = &given.http {
            config.http = address::listen_addr("--http", http, port)?;
        } else if let Some(http) = &file.http {
            config.http = address::listen_addr("[gateway] http in the config file", http, port)?;
        }
        if let Some(n) = given.max_body_bytes.or(file.max_body_bytes) {
            if n == 0 {
                bail!("--max-body-bytes must be more than 0");
            }
            config.max_body_bytes = n;
        }
        if let Some(d) = given.max_wait {
            config.max_wait = d;
        } else if let Some(text) = &file.max_wait {
            config.max_wait =
                parse_duration(text).context("[gateway] max_wait in the config file")?;
        }
        if let Some(d) = given.publish_deadline {
            config.publish_deadline = d;
        } else if let Some(text) = &file.publish_deadline {
            config.publish_deadline =
                parse_duration(text).context("[gateway] publish_deadline in the config file")?;
        }
        if config.publish_deadline.is_zero() {
            bail!("the publish deadline must be longer than zero");
        }
        config.management_url = given.management_url.clone().or(file.management_url.clone());
        Ok(config)
    }
}

/// The port of the gateway's default address.
fn default_port() -> u16 {
    gateway::DEFAULT_HTTP_ADDR
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(8800)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::FileConfig;

    fn settings(toml_text: &str) -> Settings {
        let file: FileConfig = toml::from_str(toml_text).unwrap();
        Settings::new(Some("amqp://h/v".into()), file)
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_the_defaults() {
        let s = settings(
            "[sink]\nstore = \"sqlite:///tmp/sink.db\"\n\
             [gateway]\nhttp = \":9900\"\nmax_wait = \"10s\"\n",
        );
        let c = s.gateway_config(&GatewaySettings::default()).unwrap();
        assert_eq!(
            c.store_url, "sqlite:///tmp/sink.db",
            "the sink's store by default"
        );
        assert_eq!(c.http.port(), 9900);
        assert_eq!(c.max_wait, Duration::from_secs(10));
        assert_eq!(c.max_body_bytes, gateway::DEFAULT_MAX_BODY_BYTES);
        assert_eq!(c.publish_deadline, gateway::DEFAULT_PUBLISH_DEADLINE);

        let c = s
            .gateway_config(&GatewaySettings {
                store: Some("sqlite:///tmp/gw.db".into()),
                http: Some("localhost".into()),
                max_wait: Some(Duration::from_secs(2)),
                max_body_bytes: Some(10),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(c.store_url, "sqlite:///tmp/gw.db");
        assert_eq!(c.http.to_string(), "127.0.0.1:8800");
        assert_eq!(c.max_wait, Duration::from_secs(2));
        assert_eq!(c.max_body_bytes, 10);

        let c = settings("")
            .gateway_config(&GatewaySettings {
                store: Some("sqlite:///tmp/gw.db".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(c.http.to_string(), gateway::DEFAULT_HTTP_ADDR);
        assert!(
            settings("[gateway]\nmax_wait = \"soon\"\n")
                .gateway_config(&GatewaySettings::default())
                .is_err()
        );
    }
}
