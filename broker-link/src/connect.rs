//! The one way chit opens a broker connection, and the backoff it reconnects with.
//!
//! Every long-running part (producer, worker, sink) owns exactly one connection
//! made here, through its [`BrokerLink`](crate::BrokerLink), and re-runs its own
//! session (subscribe) after a loss: that keeps recovery explicit and lets
//! each part decide what a lost lease means.
//!
//! A broker "URL" may list several, comma-separated, one per node of a
//! cluster (`amqp://h1:5672/%2f,amqp://h2:5672/%2f`): a connection goes to
//! the first that answers, trying them in turn from a given position (the
//! link passes the one after the node it lost), so clients fail over by
//! listing every node. A comma inside a password is written `%2C`.
//!
//! `amqps://` URLs use the process's [`TlsConfig`](crate::tls::TlsConfig)
//! (see [`tls`](crate::tls)).

use crate::error::LinkError;
use crate::tls::{self, TlsConfig};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};
use std::str::FromStr;
use std::time::Duration;

/// Heartbeat interval asked for when the URL does not set one, in seconds.
pub const DEFAULT_HEARTBEAT_SECS: u16 = 10;

/// Largest AMQP frame asked for when the URL does not set `frame_max`, in
/// bytes. lapin keeps a read and a write buffer of 32 frames per connection,
/// so RabbitMQ's 128 KiB would cost every chit process 8 MiB; at 32 KiB it
/// is 2 MiB, and a large body simply travels in more frames.
pub const DEFAULT_FRAME_MAX: u32 = 32 * 1024;

/// The URL of a local broker, used when none is configured.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The URLs of a comma-separated list, trimmed; empty entries are skipped.
pub fn split_urls(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// Parses an AMQP URL, adding chit's default heartbeat, connection timeout
/// and frame size where it sets none.
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
    if uri.query.frame_max.is_none() {
        uri.query.frame_max = Some(DEFAULT_FRAME_MAX);
    }
    Ok(uri)
}

/// Parses every URL of a comma-separated list (at least one).
pub fn parse_urls(urls: &str) -> Result<Vec<AMQPUri>, LinkError> {
    let list = split_urls(urls);
    if list.is_empty() {
        return Err(LinkError::BadUrl {
            url: redact(urls),
            reason: "no broker URL given".into(),
        });
    }
    list.into_iter().map(parse_url).collect()
}

/// Hides the password of a URL, or of each URL of a list, for logs and errors.
pub fn redact(url: &str) -> String {
    if url.contains(',') {
        return split_urls(url)
            .into_iter()
            .map(redact_one)
            .collect::<Vec<_>>()
            .join(",");
    }
    redact_one(url)
}

fn redact_one(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..s + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Opens a connection named `name` (shown in the broker's connection list)
/// to the first broker of `urls` (one URL, or a comma-separated list) that
/// answers, with the TLS settings the process installed.
///
/// Refused credentials or a missing vhost come back as
/// [`LinkError::Refused`], a failed TLS handshake as [`LinkError::Tls`] and
/// a bad TLS file as [`LinkError::TlsFile`], none of which will fix itself;
/// anything else as [`LinkError::Unreachable`].
pub async fn connect(urls: &str, name: &str) -> Result<Connection, LinkError> {
    connect_from(urls, 0, name, &tls::installed())
        .await
        .map(|(connection, _)| connection)
}

/// [`connect`] with TLS settings of the caller's own, for a library user
/// that does not install process-wide ones.
pub async fn connect_with_tls(
    urls: &str,
    name: &str,
    tls: &TlsConfig,
) -> Result<Connection, LinkError> {
    connect_from(urls, 0, name, tls)
        .await
        .map(|(connection, _)| connection)
}

/// Tries the URLs of `urls` in turn, starting at position `start` (modulo
/// their number), and returns the first connection made with its position.
///
/// An error that trying another node cannot fix (refused access, TLS) ends
/// the round at once; when every node is unreachable, the error names each.
pub(crate) async fn connect_from(
    urls: &str,
    start: usize,
    name: &str,
    tls: &TlsConfig,
) -> Result<(Connection, usize), LinkError> {
    let list = split_urls(urls);
    let uris = parse_urls(urls)?;
    // Read (again) on every connection: certificates rotated on disk are
    // picked up by the next reconnect.
    let tls_config = if uris.iter().any(|u| u.scheme == AMQPScheme::AMQPS) {
        Some(tls.load()?)
    } else {
        None
    };
    if !tls.is_empty()
        && let Some(k) = uris.iter().position(|u| u.scheme != AMQPScheme::AMQPS)
    {
        return Err(LinkError::BadUrl {
            url: redact(list[k]),
            reason: "TLS settings are given (--tls-ca, --tls-cert or --tls-key) but this URL \
                     is not amqps://; it would connect without TLS"
                .into(),
        });
    }
    let runtime = lapin::runtime::default_runtime()
        .map_err(|e| LinkError::unreachable("starting a connection", e.to_string()))?;
    let n = uris.len();
    let mut failures = Vec::new();
    for i in 0..n {
        let k = (start + i) % n;
        let props = ConnectionProperties::default().with_connection_name(name.into());
        let context = format!("cannot connect to {}", redact(list[k]));
        let attempt = Connection::connect_uri_with_config(
            uris[k].clone(),
            props,
            tls_config.clone().unwrap_or_default(),
            runtime.clone(),
        )
        .await;
        match attempt {
            Ok(connection) => return Ok((connection, k)),
            Err(e) => {
                let e = LinkError::from_lapin(context, e);
                if n == 1 || !e.is_transient() {
                    return Err(e);
                }
                failures.push(e.to_string());
            }
        }
    }
    Err(LinkError::unreachable(
        format!("cannot connect to any of {n} brokers"),
        failures.join("; "),
    ))
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
    fn default_frame_max_is_added_and_explicit_one_kept() {
        let u = parse_url(DEFAULT_AMQP_URL).unwrap();
        assert_eq!(u.query.frame_max, Some(DEFAULT_FRAME_MAX));
        let u = parse_url("amqp://u:p@h:1/v?frame_max=131072").unwrap();
        assert_eq!(u.query.frame_max, Some(131_072));
    }

    #[test]
    fn bad_url_is_named_without_password() {
        let err = parse_url("amqp://me:secret@host:notaport/").unwrap_err();
        assert!(matches!(err, LinkError::BadUrl { .. }), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
        assert!(err.to_string().contains("me:***@"), "{err}");
    }

    #[test]
    fn a_list_is_split_parsed_and_redacted_url_by_url() {
        let list = " amqp://u:p1@h1:5672/%2f, amqp://u:p2@h2:5673/%2f ,,";
        assert_eq!(split_urls(list).len(), 2);
        let uris = parse_urls(list).unwrap();
        assert_eq!(uris[1].authority.port, 5673);
        let hidden = redact(list);
        assert_eq!(hidden, "amqp://u:***@h1:5672/%2f,amqp://u:***@h2:5673/%2f");
        assert!(matches!(parse_urls(" , "), Err(LinkError::BadUrl { .. })));
        let err = parse_urls("amqp://u:secret@h1/,amqp://u:secret@h2:x/").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[tokio::test]
    async fn every_node_is_tried_and_each_is_named_when_all_are_down() {
        // Ports 1 and 2 on loopback refuse at once: no broker is needed.
        let urls = "amqp://guest:pw@127.0.0.1:1/%2f,amqp://guest:pw@127.0.0.1:2/%2f";
        let err = connect_from(urls, 1, "t", &TlsConfig::default())
            .await
            .unwrap_err();
        assert!(err.is_transient(), "{err}");
        let text = err.to_string();
        assert!(text.contains("any of 2 brokers"), "{text}");
        assert!(
            text.contains("127.0.0.1:1/") && text.contains("127.0.0.1:2/"),
            "{text}"
        );
        assert!(!text.contains("pw"), "{text}");
    }

    #[tokio::test]
    async fn tls_settings_with_a_plain_url_are_refused() {
        let tls = TlsConfig {
            ca: Some("/nonexistent/ca.pem".into()),
            ..TlsConfig::default()
        };
        let err = connect_from("amqp://127.0.0.1:1/%2f", 0, "t", &tls)
            .await
            .unwrap_err();
        assert!(matches!(err, LinkError::BadUrl { .. }), "{err}");
        assert!(err.to_string().contains("not amqps://"), "{err}");
        // With amqps://, the bad file is what is reported, by name.
        let err = connect_from("amqps://127.0.0.1:1/%2f", 0, "t", &tls)
            .await
            .unwrap_err();
        assert!(matches!(err, LinkError::TlsFile { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[tokio::test]
    async fn amqps_speaks_tls_from_the_first_byte() {
        // A listener that only records what it is sent: with TLS compiled
        // in, an amqps:// connection opens with a TLS handshake record
        // (0x16), never with the plain "AMQP" protocol header.
        let tls = TlsConfig::default();
        if tls.load().is_err() {
            // No system CA store on this machine: it would send nothing.
            return;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let first = std::thread::spawn(move || {
            use std::io::Read;
            let (mut socket, _) = listener.accept().unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut byte = [0u8; 1];
            socket.read_exact(&mut byte).map(|_| byte[0])
        });
        let url = format!("amqps://guest:guest@127.0.0.1:{port}/%2f?connection_timeout=10000");
        let attempt =
            tokio::time::timeout(Duration::from_secs(10), connect_from(&url, 0, "t", &tls));
        let _ = attempt.await;
        let first = first.join().unwrap().expect("the client sent something");
        assert_eq!(first, 0x16, "amqps:// must open with a TLS handshake");
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
