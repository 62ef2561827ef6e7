//! The SSRF guard of `http.request`: which hosts and addresses a request may
//! reach.
//!
//! Three checks, in the order a request meets them:
//!
//! 1. **The URL** ([`Policy::check_url`]), for the first request and for
//!    every redirect hop: the scheme is `http` or `https`, the host matches
//!    `allowed_hosts` (when that list is not empty), a `localhost` name is
//!    refused, and a host written as an IP address is checked as an address
//!    here, since no resolver ever sees it.
//! 2. **The DNS answer** ([`GuardedResolver`]): a name is resolved once, and
//!    refused when any of its addresses is refused. The HTTP client connects
//!    only to the addresses this resolver returned, so a name whose answer
//!    changes between the check and the connect (DNS rebinding) cannot slip
//!    through: there is no second lookup.
//! 3. **The address** ([`classify`]): loopback, private, link-local, shared
//!    (carrier-grade NAT), cloud metadata, multicast, documentation and other
//!    reserved ranges are refused, IPv4 inside IPv6 (mapped, NAT64, 6to4)
//!    included.
//!
//! `private_hosts` opens the address check on purpose: a listed name may
//! resolve anywhere, and a listed address or network may be reached by any
//! allowed host. `ssrf_guard = false` turns checks 2 and 3 off altogether.

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use url::{Host, Url};

/// Why an address is not public, and so refused unless opened on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressClass {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16, fc00::/7 (unique local), fec0::/10.
    Private,
    /// 169.254/16, fe80::/10.
    LinkLocal,
    /// An address where a cloud serves instance metadata and credentials
    /// (169.254.169.254, 169.254.170.2, 100.100.100.200, 168.63.129.16,
    /// 192.0.0.192, fd00:ec2::254).
    CloudMetadata,
    /// 100.64/10, carrier-grade NAT.
    Shared,
    /// 0.0.0.0/8, ::.
    Unspecified,
    /// 224/4, 255.255.255.255, ff00::/8.
    Multicast,
    /// Documentation, benchmarking, protocol assignments, 240/4, Teredo and
    /// the other ranges that are not on the public internet.
    Reserved,
}

impl AddressClass {
    /// The class as written in receipts: `loopback`, `private`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::LinkLocal => "link_local",
            AddressClass::CloudMetadata => "cloud_metadata",
            AddressClass::Shared => "shared",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Multicast => "multicast",
            AddressClass::Reserved => "reserved",
        }
    }
}

/// Addresses where clouds serve instance metadata.
const METADATA: &[IpAddr] = &[
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V4(Ipv4Addr::new(168, 63, 129, 16)),
    IpAddr::V4(Ipv4Addr::new(192, 0, 0, 192)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
];

/// Names of metadata services, refused like `localhost` (they resolve to
/// metadata addresses on the clouds that serve them).
const METADATA_NAMES: &[&str] = &["metadata.google.internal", "metadata.goog"];

/// Why `ip` is not a public address; `None` when it is.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    if METADATA.contains(&ip) {
        return Some(AddressClass::CloudMetadata);
    }
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_net(ip: IpAddr, net: &str) -> bool {
    net.parse::<IpNet>().is_ok_and(|n| n.contains(&ip))
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    let a = IpAddr::V4(ip);
    let class = if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_private() {
        AddressClass::Private
    } else if ip.is_link_local() {
        AddressClass::LinkLocal
    } else if in_net(a, "100.64.0.0/10") {
        AddressClass::Shared
    } else if in_net(a, "0.0.0.0/8") {
        AddressClass::Unspecified
    } else if ip.is_multicast() || ip.is_broadcast() {
        AddressClass::Multicast
    } else if [
        "192.0.0.0/24",
        "192.0.2.0/24",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "240.0.0.0/4",
    ]
    .iter()
    .any(|n| in_net(a, n))
    {
        AddressClass::Reserved
    } else {
        return None;
    };
    Some(class)
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    // IPv4 carried inside IPv6 is judged as the IPv4 address it reaches.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify(IpAddr::V4(v4));
    }
    let s = ip.segments();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64 (64:ff9b::/96).
        let o = ip.octets();
        return classify(IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15])));
    }
    if s[0] == 0x2002 {
        // 6to4: the IPv4 address is in bits 16..48.
        let o = ip.octets();
        return classify(IpAddr::V4(Ipv4Addr::new(o[2], o[3], o[4], o[5])));
    }
    let a = IpAddr::V6(ip);
    let class = if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_unspecified() {
        AddressClass::Unspecified
    } else if in_net(a, "fc00::/7") || in_net(a, "fec0::/10") {
        AddressClass::Private
    } else if in_net(a, "fe80::/10") {
        AddressClass::LinkLocal
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else if [
        // IPv4-compatible (deprecated), discard, Teredo, documentation, ORCHID.
        "::/96",
        "100::/64",
        "2001::/32",
        "2001:db8::/32",
        "2001:10::/28",
        "2001:20::/28",
    ]
    .iter()
    .any(|n| in_net(a, n))
    {
        AddressClass::Reserved
    } else {
        return None;
    };
    Some(class)
}

/// A refusal by the guard or the host policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// The URL's scheme is not `http` or `https`.
    #[error("scheme {scheme:?} is not allowed (only http and https)")]
    Scheme {
        /// The scheme.
        scheme: String,
    },
    /// The URL has no host.
    #[error("the URL has no host")]
    NoHost,
    /// The host is not in `allowed_hosts`.
    #[error("host {host} is not in this executor's allowed_hosts")]
    HostNotAllowed {
        /// The host.
        host: String,
    },
    /// A `localhost` or metadata name, not listed in `private_hosts`.
    #[error(
        "host {host} is a local name, refused by the SSRF guard (list it in private_hosts to allow it)"
    )]
    LocalName {
        /// The host.
        host: String,
    },
    /// An address that is not public, not opened by `private_hosts`.
    #[error(
        "host {host} is {address}, a {} address, refused by the SSRF guard (list it in private_hosts to allow it)",
        class.as_str().replace('_', "-")
    )]
    Address {
        /// The host as written in the URL.
        host: String,
        /// The address it is, or resolved to.
        address: IpAddr,
        /// Why the address is refused.
        class: AddressClass,
    },
    /// More redirects than `max_redirects`.
    #[error("more than {limit} redirects")]
    TooManyRedirects {
        /// The limit.
        limit: usize,
    },
}

impl Refused {
    /// The option that refused: `ssrf_guard`, `allowed_hosts`,
    /// `max_redirects`, or `url` for a URL chit never requests.
    pub fn rule(&self) -> &'static str {
        match self {
            Refused::Scheme { .. } | Refused::NoHost => "url",
            Refused::HostNotAllowed { .. } => "allowed_hosts",
            Refused::LocalName { .. } | Refused::Address { .. } => "ssrf_guard",
            Refused::TooManyRedirects { .. } => "max_redirects",
        }
    }

    /// The refusal as receipt details, its [`rule`](Self::rule) included.
    pub fn details(&self) -> serde_json::Value {
        use serde_json::json;
        let mut details = self.what();
        details["rule"] = json!(self.rule());
        details
    }

    fn what(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Refused::Scheme { scheme } => json!({"refused": "scheme", "scheme": scheme}),
            Refused::NoHost => json!({"refused": "no_host"}),
            Refused::HostNotAllowed { host } => {
                json!({"refused": "host_not_allowed", "host": host})
            }
            Refused::LocalName { host } => json!({"refused": "local_name", "host": host}),
            Refused::Address {
                host,
                address,
                class,
            } => json!({
                "refused": "address",
                "host": host,
                "address": address.to_string(),
                "class": class.as_str(),
            }),
            Refused::TooManyRedirects { limit } => {
                json!({"refused": "too_many_redirects", "limit": limit})
            }
        }
    }
}

/// A host pattern: an exact name or address, or `*.example.com` for the
/// subdomains of `example.com` (not `example.com` itself).
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    Suffix(String),
}

impl HostPattern {
    fn parse(s: &str) -> Result<Self, String> {
        let s = normalise_host(s);
        if s.is_empty() {
            return Err("an empty host".into());
        }
        if let Some(rest) = s.strip_prefix("*.") {
            if rest.is_empty() || rest.contains('*') {
                return Err(format!("{s:?} is not a host or *.domain"));
            }
            return Ok(HostPattern::Suffix(format!(".{rest}")));
        }
        if s.contains('*') || s.contains('/') || (s.contains(':') && s.parse::<IpAddr>().is_err()) {
            return Err(format!("{s:?} is not a host or *.domain"));
        }
        Ok(HostPattern::Exact(s))
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(suffix) => host.ends_with(suffix.as_str()),
        }
    }
}

/// Lower case, without a trailing dot or IPv6 brackets.
fn normalise_host(s: &str) -> String {
    s.trim()
        .trim_end_matches('.')
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

/// The host rules of one `http.request` executor.
#[derive(Debug, Clone)]
pub struct Policy {
    allowed_hosts: Vec<HostPattern>,
    private_names: Vec<HostPattern>,
    private_nets: Vec<IpNet>,
    guard: bool,
    max_redirects: usize,
}

impl Policy {
    /// Builds the rules from the executor's options; the error names the
    /// entry that is not a host, pattern or network.
    pub fn new(
        allowed_hosts: &[String],
        private_hosts: &[String],
        guard: bool,
        max_redirects: usize,
    ) -> Result<Self, String> {
        let allowed_hosts = allowed_hosts
            .iter()
            .map(|h| HostPattern::parse(h).map_err(|e| format!("allowed_hosts: {e}")))
            .collect::<Result<_, _>>()?;
        let mut private_names = Vec::new();
        let mut private_nets = Vec::new();
        for entry in private_hosts {
            let bare = normalise_host(entry);
            if let Ok(net) = bare.parse::<IpNet>() {
                private_nets.push(net);
            } else if let Ok(ip) = bare.parse::<IpAddr>() {
                private_nets.push(IpNet::from(ip));
            } else {
                private_names
                    .push(HostPattern::parse(entry).map_err(|e| format!("private_hosts: {e}"))?);
            }
        }
        Ok(Policy {
            allowed_hosts,
            private_names,
            private_nets,
            guard,
            max_redirects,
        })
    }

    /// The most redirects followed.
    pub fn max_redirects(&self) -> usize {
        self.max_redirects
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.allowed_hosts.is_empty() || self.allowed_hosts.iter().any(|p| p.matches(host))
    }

    fn name_is_private(&self, host: &str) -> bool {
        self.private_names.iter().any(|p| p.matches(host))
    }

    /// Checks one address that `host` is, or resolved to.
    pub fn check_address(&self, host: &str, address: IpAddr) -> Result<(), Refused> {
        if !self.guard || self.name_is_private(host) {
            return Ok(());
        }
        let Some(class) = classify(address) else {
            return Ok(());
        };
        if self.private_nets.iter().any(|n| n.contains(&address)) {
            return Ok(());
        }
        Err(Refused::Address {
            host: host.to_owned(),
            address,
            class,
        })
    }

    /// Checks a URL before it is requested: the first one and every
    /// redirect hop. A name is checked again, by address, when it resolves.
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused::Scheme {
                scheme: url.scheme().to_owned(),
            });
        }
        let (host, literal) = match url.host() {
            None => return Err(Refused::NoHost),
            Some(Host::Domain(d)) => (normalise_host(d), None),
            Some(Host::Ipv4(ip)) => (ip.to_string(), Some(IpAddr::V4(ip))),
            Some(Host::Ipv6(ip)) => (ip.to_string(), Some(IpAddr::V6(ip))),
        };
        if !self.host_allowed(&host) {
            return Err(Refused::HostNotAllowed { host });
        }
        match literal {
            Some(ip) => self.check_address(&host, ip),
            None => self.check_name(&host),
        }
    }

    /// Refuses local names before any lookup.
    fn check_name(&self, host: &str) -> Result<(), Refused> {
        let local =
            host == "localhost" || host.ends_with(".localhost") || METADATA_NAMES.contains(&host);
        if self.guard && local && !self.name_is_private(host) {
            return Err(Refused::LocalName {
                host: host.to_owned(),
            });
        }
        Ok(())
    }
}

/// The lookup under the guard: names to addresses.
///
/// [`SystemResolver`] is the default; a test, or an embedder with its own
/// DNS, passes another to [`HttpExecutor::with_resolver`](super::HttpExecutor::with_resolver).
pub type NameLookup = Arc<dyn Resolve>;

/// The system's resolver (`getaddrinfo`, through tokio), after the names
/// pinned in the `resolve` option.
#[derive(Debug, Clone, Default)]
pub struct SystemResolver {
    pinned: BTreeMap<String, Vec<IpAddr>>,
}

impl SystemResolver {
    /// A resolver that answers the `pinned` names itself, like curl's
    /// `--resolve`, and asks the system for any other.
    pub fn with_pinned(pinned: BTreeMap<String, Vec<IpAddr>>) -> Self {
        SystemResolver {
            pinned: pinned
                .into_iter()
                .map(|(name, ips)| (normalise_host(&name), ips))
                .collect(),
        }
    }
}

impl Resolve for SystemResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = normalise_host(name.as_str());
        if let Some(ips) = self.pinned.get(&host) {
            let addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(*ip, 0)).collect();
            return Box::pin(async move { Ok(Box::new(addrs.into_iter()) as Addrs) });
        }
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Resolves through another resolver, then refuses the name when any
/// address it got is refused by the [`Policy`]. The client connects only to
/// what this returns.
pub struct GuardedResolver {
    lookup: NameLookup,
    policy: Arc<Policy>,
}

impl fmt::Debug for GuardedResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedResolver")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl GuardedResolver {
    /// Guards `lookup` with `policy`.
    pub fn new(lookup: NameLookup, policy: Arc<Policy>) -> Self {
        GuardedResolver { lookup, policy }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = normalise_host(name.as_str());
        let policy = self.policy.clone();
        let lookup = self.lookup.resolve(name);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = lookup.await?.collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolved to no address").into());
            }
            for addr in &addrs {
                if let Err(refused) = policy.check_address(&host, addr.ip()) {
                    tracing::warn!(%host, address = %addr.ip(), "SSRF guard refused a resolved address");
                    return Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The guard's refusal inside a client error, if that is what stopped it.
pub fn refusal_in(err: &(dyn std::error::Error + 'static)) -> Option<Refused> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r.clone());
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_off_the_public_internet_are_classified() {
        for (addr, class) in [
            ("127.0.0.1", AddressClass::Loopback),
            ("127.8.9.10", AddressClass::Loopback),
            ("::1", AddressClass::Loopback),
            ("10.0.0.1", AddressClass::Private),
            ("172.16.5.4", AddressClass::Private),
            ("172.31.255.255", AddressClass::Private),
            ("192.168.1.1", AddressClass::Private),
            ("fd12:3456::1", AddressClass::Private),
            ("169.254.1.1", AddressClass::LinkLocal),
            ("fe80::1", AddressClass::LinkLocal),
            ("169.254.169.254", AddressClass::CloudMetadata),
            ("fd00:ec2::254", AddressClass::CloudMetadata),
            ("100.100.100.200", AddressClass::CloudMetadata),
            ("100.64.0.1", AddressClass::Shared),
            ("0.0.0.0", AddressClass::Unspecified),
            ("::", AddressClass::Unspecified),
            ("224.0.0.1", AddressClass::Multicast),
            ("255.255.255.255", AddressClass::Multicast),
            ("ff02::1", AddressClass::Multicast),
            ("192.0.2.7", AddressClass::Reserved),
            ("2001:db8::1", AddressClass::Reserved),
            ("240.1.2.3", AddressClass::Reserved),
            // IPv4 inside IPv6 is judged as the IPv4 address.
            ("::ffff:127.0.0.1", AddressClass::Loopback),
            ("::ffff:169.254.169.254", AddressClass::CloudMetadata),
            ("64:ff9b::a00:1", AddressClass::Private),
            ("2002:7f00:1::", AddressClass::Loopback),
        ] {
            assert_eq!(classify(ip(addr)), Some(class), "{addr}");
        }
        for public in [
            "93.184.215.14",
            "1.1.1.1",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(classify(ip(public)), None, "{public}");
        }
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn urls_are_checked_by_scheme_host_and_literal_address() {
        let p = Policy::new(&[], &[], true, 5).unwrap();
        assert!(p.check_url(&url("https://example.com/x")).is_ok());
        assert!(matches!(
            p.check_url(&url("file:///etc/passwd")),
            Err(Refused::Scheme { .. })
        ));
        for refused in [
            "http://127.0.0.1:8080/",
            "http://2130706433/",
            "http://127.1/",
            "http://[::1]/",
            "http://[::ffff:7f00:1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://0x7f.1/",
        ] {
            assert!(
                matches!(p.check_url(&url(refused)), Err(Refused::Address { .. })),
                "{refused}"
            );
        }
        for local in [
            "http://localhost:1/",
            "http://LOCALHOST./",
            "http://api.localhost/",
            "http://metadata.google.internal/",
        ] {
            assert!(
                matches!(p.check_url(&url(local)), Err(Refused::LocalName { .. })),
                "{local}"
            );
        }
    }

    #[test]
    fn allowed_hosts_take_exact_names_and_wildcards() {
        let p = Policy::new(
            &["api.example.com".into(), "*.svc.example".into()],
            &[],
            true,
            5,
        )
        .unwrap();
        assert!(p.check_url(&url("https://API.example.com/")).is_ok());
        assert!(p.check_url(&url("https://a.b.svc.example/")).is_ok());
        for refused in [
            "https://example.com/",
            "https://svc.example/",
            "https://api.example.com.evil.test/",
        ] {
            assert!(
                matches!(
                    p.check_url(&url(refused)),
                    Err(Refused::HostNotAllowed { .. })
                ),
                "{refused}"
            );
        }
        assert!(Policy::new(&["a*b.com".into()], &[], true, 5).is_err());
        assert!(Policy::new(&["*.".into()], &[], true, 5).is_err());
    }

    #[test]
    fn private_hosts_open_names_addresses_and_networks() {
        let p = Policy::new(
            &[],
            &[
                "localhost".into(),
                "127.0.0.1".into(),
                "10.1.0.0/16".into(),
                "internal.example".into(),
            ],
            true,
            5,
        )
        .unwrap();
        assert!(p.check_url(&url("http://localhost:8/")).is_ok());
        assert!(p.check_url(&url("http://127.0.0.1:8/")).is_ok());
        assert!(p.check_url(&url("http://127.0.0.2/")).is_err());
        assert!(p.check_address("anything.example", ip("10.1.2.3")).is_ok());
        assert!(p.check_address("anything.example", ip("10.2.0.1")).is_err());
        assert!(
            p.check_address("internal.example", ip("192.168.0.9"))
                .is_ok()
        );
        let off = Policy::new(&[], &[], false, 5).unwrap();
        assert!(off.check_url(&url("http://localhost/")).is_ok());
        assert!(off.check_url(&url("http://169.254.169.254/")).is_ok());
    }

    struct Fixed(Vec<IpAddr>);

    impl Resolve for Fixed {
        fn resolve(&self, _: Name) -> Resolving {
            let addrs: Vec<SocketAddr> = self.0.iter().map(|ip| SocketAddr::new(*ip, 0)).collect();
            Box::pin(async move { Ok(Box::new(addrs.into_iter()) as Addrs) })
        }
    }

    #[tokio::test]
    async fn a_name_is_refused_when_any_address_it_resolves_to_is() {
        let policy = Arc::new(Policy::new(&[], &[], true, 5).unwrap());
        let guarded = GuardedResolver::new(
            Arc::new(Fixed(vec![ip("93.184.215.14"), ip("10.0.0.1")])),
            policy.clone(),
        );
        let err = guarded
            .resolve("rebind.example".parse().unwrap())
            .await
            .err()
            .unwrap();
        assert_eq!(
            refusal_in(&*err),
            Some(Refused::Address {
                host: "rebind.example".into(),
                address: ip("10.0.0.1"),
                class: AddressClass::Private,
            })
        );
        let public = GuardedResolver::new(Arc::new(Fixed(vec![ip("93.184.215.14")])), policy);
        let addrs: Vec<_> = public
            .resolve("ok.example".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert_eq!(addrs, vec!["93.184.215.14:0".parse().unwrap()]);
    }

    #[tokio::test]
    async fn pinned_names_answer_without_the_system() {
        let r = SystemResolver::with_pinned(BTreeMap::from([(
            "Pinned.Example.".to_owned(),
            vec![ip("10.0.0.1")],
        )]));
        let addrs: Vec<_> = r
            .resolve("pinned.example".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert_eq!(addrs, vec!["10.0.0.1:0".parse().unwrap()]);
    }
}
