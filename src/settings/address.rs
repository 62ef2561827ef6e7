//! Network addresses as people type them, read by one parser for every
//! address setting: the sink's `--http` and `[sink] http`, the worker's
//! `--health`, and the sink API `chit task` talks to (`--api`,
//! `[sink] api`).
//!
//! Each of them takes, with `HOST` an IPv4 address, an IPv6 address in
//! brackets, `localhost` or any other name:
//!
//! | written | means |
//! | --- | --- |
//! | `HOST:PORT` | that host and port |
//! | `:PORT` | this machine, `127.0.0.1` |
//! | `HOST` | the setting's default port (8700 for the sink; `--health` has none) |
//! | `http://` + any of the above | the same; a trailing `/` is ignored |
//!
//! `--api` also takes `https://` and a path prefix (a sink behind a
//! reverse proxy). An address to listen on resolves `localhost` to
//! `127.0.0.1`, and another name to its first IPv4 address (else its first).

use anyhow::{Context, Result, bail};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

/// What the examples in error messages show.
const FORMS: &str = "HOST:PORT, :PORT, HOST or http://HOST:PORT";

/// An address split into its parts; no name is resolved yet.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Address {
    /// `http` or `https`.
    scheme: &'static str,
    /// Name or IP, without brackets; `127.0.0.1` for `:PORT`.
    host: String,
    port: u16,
    /// Empty, or a path prefix starting with `/` and not ending with one.
    path: String,
}

impl Address {
    /// `host` as it goes into a URL: IPv6 addresses in brackets.
    fn url_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

/// Splits `raw` into an [`Address`]; `default_port` is used when it names
/// no port, and when that is `None` a port is required.
fn parse(raw: &str, default_port: Option<u16>) -> Result<Address> {
    let text = raw.trim();
    if text.is_empty() {
        bail!("it is empty");
    }
    let (scheme, rest) = match text.split_once("://") {
        Some((s, rest)) if s.eq_ignore_ascii_case("http") => ("http", rest),
        Some((s, rest)) if s.eq_ignore_ascii_case("https") => ("https", rest),
        Some((s, _)) => bail!("{s}:// is not supported, only http:// (and https:// for --api)"),
        None => ("http", text),
    };
    let (authority, path) = match rest.find('/') {
        Some(k) => (&rest[..k], rest[k..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.contains('@') {
        bail!("an address takes no user name or password");
    }
    let (host, port) = split_host_port(authority)?;
    let host = match host {
        "" => Ipv4Addr::LOCALHOST.to_string(),
        h if h.parse::<IpAddr>().is_ok() => h.to_owned(),
        h if h.bytes().all(|b| b.is_ascii_digit()) => {
            bail!("{h:?} looks like a port: write :{h}")
        }
        h if h
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')) =>
        {
            h.to_owned()
        }
        h => bail!("{h:?} is not a host name or IP address"),
    };
    let port = match (port, default_port) {
        (Some(p), _) => p
            .parse::<u16>()
            .map_err(|_| anyhow::anyhow!("{p:?} is not a port (0 to 65535)"))?,
        (None, Some(p)) => p,
        (None, None) => bail!("it needs a port, as in {host}:PORT"),
    };
    Ok(Address {
        scheme,
        host,
        port,
        path: path.to_owned(),
    })
}

/// `HOST`, `HOST:PORT`, `[V6]`, `[V6]:PORT`, or a bare IPv6 address.
fn split_host_port(authority: &str) -> Result<(&str, Option<&str>)> {
    if let Some(inner) = authority.strip_prefix('[') {
        let Some((host, after)) = inner.split_once(']') else {
            bail!("an unclosed [ in {authority:?}");
        };
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => bail!("unexpected {after:?} after ]"),
            },
        };
    }
    match authority.matches(':').count() {
        0 => Ok((authority, None)),
        1 => {
            let (host, port) = authority.split_once(':').expect("one colon");
            Ok((host, Some(port)))
        }
        // Only an IPv6 address has more colons; with a port it needs brackets.
        _ if authority.parse::<std::net::Ipv6Addr>().is_ok() => Ok((authority, None)),
        _ => bail!("{authority:?} has too many colons (write an IPv6 address as [ADDR]:PORT)"),
    }
}

/// An address to listen on, from `raw` as the setting `what` gave it (a
/// flag such as `--http`, or a config-file key, for the error message).
pub fn listen_addr(what: &str, raw: &str, default_port: Option<u16>) -> Result<SocketAddr> {
    let context = || format!("{what} {raw:?} is not an address to listen on ({FORMS})");
    let addr = parse(raw, default_port).with_context(context)?;
    if addr.scheme != "http" {
        return Err(anyhow::anyhow!(
            "chit serves plain http, not {}",
            addr.scheme
        ))
        .with_context(context);
    }
    if !addr.path.is_empty() {
        return Err(anyhow::anyhow!(
            "a path ({}) cannot be listened on",
            addr.path
        ))
        .with_context(context);
    }
    if let Ok(ip) = addr.host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, addr.port));
    }
    if addr.host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port));
    }
    let found: Vec<SocketAddr> = (addr.host.as_str(), addr.port)
        .to_socket_addrs()
        .map_err(anyhow::Error::from)
        .with_context(|| format!("{what} {raw:?}: cannot resolve {}", addr.host))?
        .collect();
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or(found.first())
        .copied()
        .with_context(|| format!("{what} {raw:?}: {} has no address", addr.host))
}

/// The base URL of a sink's HTTP API, without a trailing `/`, from `raw` as
/// the setting `what` gave it. A missing port is the sink's default.
pub fn api_url(what: &str, raw: &str) -> Result<String> {
    let addr = parse(raw, Some(default_sink_port()))
        .with_context(|| format!("{what} {raw:?} is not the address of a sink's API ({FORMS})"))?;
    if addr.port == 0 {
        bail!("{what} {raw:?}: port 0 is not a port to connect to");
    }
    Ok(format!(
        "{}://{}:{}{}",
        addr.scheme,
        addr.url_host(),
        addr.port,
        addr.path
    ))
}

/// The port a sink listens on by default (8700).
pub fn default_sink_port() -> u16 {
    receipts_sink::DEFAULT_HTTP_ADDR
        .parse::<SocketAddr>()
        .map(|a| a.port())
        .unwrap_or(8700)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen(raw: &str) -> String {
        listen_addr("--http", raw, Some(8700))
            .unwrap_or_else(|e| panic!("{raw:?}: {e:#}"))
            .to_string()
    }

    fn api(raw: &str) -> String {
        api_url("--api", raw).unwrap_or_else(|e| panic!("{raw:?}: {e:#}"))
    }

    fn listen_err(raw: &str, default_port: Option<u16>) -> String {
        format!(
            "{:#}",
            listen_addr("--health", raw, default_port).expect_err(raw)
        )
    }

    #[test]
    fn every_form_is_an_address_to_listen_on() {
        assert_eq!(listen("127.0.0.1:9100"), "127.0.0.1:9100");
        assert_eq!(listen("localhost:9100"), "127.0.0.1:9100");
        assert_eq!(listen("LocalHost:9100"), "127.0.0.1:9100");
        assert_eq!(listen(":9100"), "127.0.0.1:9100");
        assert_eq!(listen("localhost"), "127.0.0.1:8700");
        assert_eq!(listen("http://localhost:9100/"), "127.0.0.1:9100");
        assert_eq!(listen("http://0.0.0.0:9100"), "0.0.0.0:9100");
        assert_eq!(listen("[::1]:9100"), "[::1]:9100");
        assert_eq!(listen("  127.0.0.1:0 "), "127.0.0.1:0");
    }

    #[test]
    fn every_form_is_a_sink_api_url() {
        assert_eq!(api("localhost:8800"), "http://localhost:8800");
        assert_eq!(api(":8800"), "http://127.0.0.1:8800");
        assert_eq!(api("localhost"), "http://localhost:8700");
        assert_eq!(api("127.0.0.1:8800"), "http://127.0.0.1:8800");
        assert_eq!(api("http://127.0.0.1:8800/"), "http://127.0.0.1:8800");
        assert_eq!(api("HTTP://sink.internal"), "http://sink.internal:8700");
        assert_eq!(
            api("https://proxy.example/chit/"),
            "https://proxy.example:8700/chit"
        );
        assert_eq!(api("[::1]:8800"), "http://[::1]:8800");
        assert_eq!(api("::1"), "http://[::1]:8700");
    }

    #[test]
    fn bad_addresses_say_what_was_given_and_what_is_accepted() {
        let err = listen_err("localhost", None);
        assert!(err.contains("--health \"localhost\""), "{err}");
        assert!(err.contains("needs a port"), "{err}");
        assert!(err.contains(FORMS), "{err}");
        assert!(listen_err("8701", None).contains("write :8701"));
        assert!(listen_err("localhost:99999", None).contains("not a port"));
        assert!(listen_err("ftp://host:1", None).contains("ftp://"));
        assert!(listen_err("https://localhost:1", None).contains("plain http"));
        assert!(listen_err("localhost:1/x", None).contains("path"));
        assert!(listen_err("a b:1", None).contains("not a host name"));
        assert!(listen_err("", None).contains("empty"));
        let err = format!("{:#}", api_url("--api", "user:pw@host:1").unwrap_err());
        assert!(err.contains("password"), "{err}");
        let err = format!("{:#}", api_url("--api", ":0").unwrap_err());
        assert!(err.contains("port 0"), "{err}");
    }
}
