//! The broker's management HTTP API, for what AMQP does not tell: how many
//! consumers read a stream (a passive declare answers 0 for streams), and
//! which queues exist that chit declares on demand (the retry delay queues).
//!
//! It is optional: RabbitMQ serves it only with the `rabbitmq_management`
//! plugin enabled. Callers treat [`ManagementError`] as "not known", never as
//! a broker failure.

use crate::connect::{parse_url, redact, split_urls};
use serde::Deserialize;
use std::time::Duration;
use thiserror::Error;

/// The management API's port when the URL does not say.
pub const DEFAULT_MANAGEMENT_PORT: u16 = 15672;

/// How long one request may take; the API is local and answers in
/// milliseconds, so a slow one is as good as absent.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong asking the management API.
#[derive(Debug, Error)]
pub enum ManagementError {
    /// The URL (given, or derived from the AMQP URL) cannot be used.
    #[error("invalid management API URL {url}: {reason}")]
    BadUrl {
        /// The URL, password hidden.
        url: String,
        /// Why.
        reason: String,
    },
    /// Nothing answered, or not in time: the plugin may not be enabled.
    #[error(
        "the management API at {url} did not answer ({reason}); enable it with \
         `rabbitmq-plugins enable rabbitmq_management`"
    )]
    Unreachable {
        /// The base URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// It answered with an error status (401: wrong credentials, or a user
    /// without the `monitoring` or `management` tag).
    #[error("the management API at {url} answered HTTP {status}")]
    Status {
        /// The base URL.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// It answered something that is not the expected JSON.
    #[error("the management API at {url} answered unreadable JSON: {reason}")]
    Decode {
        /// The base URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// One queue as the management API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct QueueStats {
    /// Queue name.
    pub name: String,
    /// `classic`, `quorum` or `stream`.
    #[serde(rename = "type", default)]
    pub queue_type: String,
    /// Messages ready and unacknowledged (for a stream: stored messages).
    #[serde(default)]
    pub messages: u64,
    /// Messages delivered and not yet acknowledged: the leases held.
    #[serde(rename = "messages_unacknowledged", default)]
    pub unacked: u64,
    /// Consumers.
    #[serde(default)]
    pub consumers: u64,
}

/// A client for one virtual host's queues on the management API.
#[derive(Debug, Clone)]
pub struct Management {
    base: reqwest::Url,
    vhost: String,
    user: String,
    password: String,
    client: reqwest::Client,
}

impl Management {
    /// The API of the broker behind `amqp_url`: `base` when given (e.g.
    /// `http://rabbit:15672`), else the AMQP host on port 15672. The
    /// credentials and the virtual host are the AMQP URL's; of a list of
    /// URLs (a cluster's nodes), the first one's.
    pub fn for_amqp_url(amqp_url: &str, base: Option<&str>) -> Result<Management, ManagementError> {
        let first = split_urls(amqp_url).first().copied().unwrap_or(amqp_url);
        let uri = parse_url(first).map_err(|e| ManagementError::BadUrl {
            url: redact(amqp_url),
            reason: e.to_string(),
        })?;
        let base = match base {
            Some(b) => b.to_owned(),
            None => format!("http://{}:{DEFAULT_MANAGEMENT_PORT}", uri.authority.host),
        };
        let parsed = reqwest::Url::parse(&base).map_err(|e| ManagementError::BadUrl {
            url: redact(&base),
            reason: e.to_string(),
        })?;
        if parsed.cannot_be_a_base() {
            return Err(ManagementError::BadUrl {
                url: redact(&base),
                reason: "not an http:// URL".into(),
            });
        }
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| ManagementError::BadUrl {
                url: redact(&base),
                reason: e.to_string(),
            })?;
        Ok(Management {
            base: parsed,
            vhost: uri.vhost,
            user: uri.authority.userinfo.username,
            password: uri.authority.userinfo.password,
            client,
        })
    }

    /// The base URL, for messages.
    pub fn url(&self) -> &str {
        self.base.as_str()
    }

    /// Every queue of the virtual host. The broker refreshes these figures
    /// every few seconds (`collect_statistics_interval`), so they may lag.
    pub async fn queues(&self) -> Result<Vec<QueueStats>, ManagementError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("checked to be a base")
            .pop_if_empty()
            .extend(["api", "queues", &self.vhost]);
        url.set_query(Some(
            "columns=name,type,messages,messages_unacknowledged,consumers",
        ));
        let resp = self
            .client
            .get(url)
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .map_err(|e| ManagementError::Unreachable {
                url: self.base.to_string(),
                reason: e.without_url().to_string(),
            })?;
        if !resp.status().is_success() {
            return Err(ManagementError::Status {
                url: self.base.to_string(),
                status: resp.status().as_u16(),
            });
        }
        resp.json().await.map_err(|e| ManagementError::Decode {
            url: self.base.to_string(),
            reason: e.without_url().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_base_is_the_amqp_host_on_15672() {
        let m = Management::for_amqp_url("amqp://u:p@rabbit.example:5673/jobs", None).unwrap();
        assert_eq!(m.url(), "http://rabbit.example:15672/");
        assert_eq!(m.vhost, "jobs");
        assert_eq!((m.user.as_str(), m.password.as_str()), ("u", "p"));
    }

    #[test]
    fn a_bad_base_is_named() {
        let err = Management::for_amqp_url("amqp://u:p@h/v", Some("not a url")).unwrap_err();
        assert!(err.to_string().contains("not a url"), "{err}");
    }

    #[test]
    fn queue_stats_read_the_apis_fields() {
        let q: Vec<QueueStats> = serde_json::from_str(
            r#"[{"name":"chit.cancellations","type":"stream","messages":4,
                 "messages_unacknowledged":0,"consumers":2}]"#,
        )
        .unwrap();
        assert_eq!(q[0].consumers, 2);
        assert_eq!(q[0].queue_type, "stream");
    }
}
