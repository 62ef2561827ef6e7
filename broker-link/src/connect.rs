//! The one way chit opens a broker connection, and the backoff it reconnects with.
//!
//! Every long-running part (producer, worker, sink) owns exactly one connection
//! made here, through its [`BrokerLink`](crate::BrokerLink), and re-runs its own
//! session (subscribe) after a loss: that keeps recovery explicit and lets
//! each part decide what a lost lease means.

use crate::error::LinkError;
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use std::str::FromStr;
use std::time::Duration;

/// Heartbeat interval asked for when the URL does not set one, in seconds.
pub const DEFAULT_HEARTBEAT_SECS: u16 = 10;

/// The URL of a local broker, used when none is configured.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Parses an AMQP URL, adding chit's default heartbeat when it sets none.
pub fn parse_url(url: &str) -> Result<AMQPUri, LinkError> {
    let mut uri = AMQPUri::from_str(url).map_err(|e| LinkError::BadUrl {
        url: redact(url),
        reason: e.to_string(),
    })?;
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(DEFAULT_HEARTBEAT_SECS);
    }
    if uri.query.connection_timeout.is_none() {
        uri.query.connection_timeout = Some(5_000);
    }
    Ok(uri)
}

/// Hides the password of a URL for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..s + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Opens a connection named `name` (shown in the broker's connection list).
///
/// Refused credentials or a missing vhost come back as
/// [`LinkError::Refused`], which will not fix itself; anything else as
/// [`LinkError::Unreachable`].
pub async fn connect(url: &str, name: &str) -> Result<Connection, LinkError> {
    let uri = parse_url(url)?;
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect_uri(uri, props)
        .await
        .map_err(|e| LinkError::from_lapin(format!("cannot connect to {}", redact(url)), e))
}

/// Exponential backoff with full jitter, for reconnecting.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

impl Backoff {
    /// Backoff starting at `initial`, doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            current: initial,
        }
    }

    /// The next delay to wait: random in [current/2, current], then doubles.
    pub fn next_delay(&mut self) -> Duration {
        let cur = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = cur / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// Back to the initial delay, after a success.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_heartbeat_is_added_and_explicit_one_kept() {
        assert_eq!(
            parse_url(DEFAULT_AMQP_URL).unwrap().query.heartbeat,
            Some(10)
        );
        let u = parse_url("amqp://u:p@h:1/v?heartbeat=3").unwrap();
        assert_eq!(u.query.heartbeat, Some(3));
    }

    #[test]
    fn bad_url_is_named_without_password() {
        let err = parse_url("amqp://me:secret@host:notaport/").unwrap_err();
        assert!(matches!(err, LinkError::BadUrl { .. }), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
        assert!(err.to_string().contains("me:***@"), "{err}");
    }

    #[test]
    fn backoff_grows_to_its_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let delays: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert!(delays[0] <= Duration::from_millis(100));
        assert!(delays[4] >= Duration::from_millis(200) && delays[4] <= Duration::from_millis(400));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
