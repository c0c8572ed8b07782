//! The SSRF guard: which resolved addresses a delivery may connect to.
//!
//! The check runs inside the HTTP client's resolver ([`GuardedResolver`]), on the addresses the
//! connection will actually use, so a hostname that resolves (or re-resolves, DNS rebinding) to a
//! private address is refused at connect time. Addresses inside `WEBHOOK_ALLOWED_NETWORKS` pass.
//! Host names are resolved by [`super::dns::Lookups`].

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ureq::config::Config as UreqConfig;
use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

use super::dns::Lookups;
use crate::net::{Cidr, canonical};

/// Why `ip` is not a public unicast address, or `None` if it is one.
pub(crate) fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "\"this network\" (0.0.0.0/8)",
        (10, _, _) => "private (10.0.0.0/8)",
        (100, 64..=127, _) => "carrier-grade NAT (100.64.0.0/10)",
        (127, _, _) => "loopback (127.0.0.0/8)",
        (169, 254, _) => "link-local or cloud metadata (169.254.0.0/16)",
        (172, 16..=31, _) => "private (172.16.0.0/12)",
        (192, 0, 0) => "IETF protocol assignments (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 88, 99) => "6to4 relay anycast (192.88.99.0/24)",
        (192, 168, _) => "private (192.168.0.0/16)",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (224..=239, _, _) => "multicast (224.0.0.0/4)",
        (240..=255, _, _) => "reserved or broadcast (240.0.0.0/4)",
        _ => return None,
    })
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified (::)");
    }
    if ip.is_loopback() {
        return Some("loopback (::1)");
    }
    Some(match s[0] {
        0 if s[1..6].iter().all(|x| *x == 0) => "IPv4-compatible (::/96)",
        0x64 if s[1] == 0xff9b => "NAT64 (64:ff9b::/96)",
        0x100 if s[1..4].iter().all(|x| *x == 0) => "discard (100::/64)",
        0x2001 if s[1] < 0x200 => "IETF protocol assignments (2001::/23)",
        0x2001 if s[1] == 0xdb8 => "documentation (2001:db8::/32)",
        0x2002 => "6to4 (2002::/16)",
        x if x & 0xfe00 == 0xfc00 => "unique local (fc00::/7)",
        x if x & 0xffc0 == 0xfe80 => "link-local (fe80::/10)",
        x if x & 0xffc0 == 0xfec0 => "site-local (fec0::/10)",
        x if x & 0xff00 == 0xff00 => "multicast (ff00::/8)",
        _ => return None,
    })
}

/// A target refused by the guard; carried inside the HTTP client's I/O error.
#[derive(Debug, Clone)]
pub(crate) struct Blocked {
    /// The address refused.
    pub(crate) addr: IpAddr,
    /// Why.
    pub(crate) reason: &'static str,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "target address {} is {} and not in WEBHOOK_ALLOWED_NETWORKS",
            self.addr, self.reason
        )
    }
}

impl std::error::Error for Blocked {}

/// A resolver that refuses non-public addresses unless allowed, and caches lookups briefly so the
/// hot path rarely waits for a lookup.
#[derive(Debug, Clone)]
pub(crate) struct GuardedResolver {
    allowed: Arc<Vec<Cidr>>,
    /// The service's own API port: its capture URLs on loopback (test receivers, monitor
    /// sessions, which the monitor UI registers as webhooks) are always allowed.
    own_port: Option<u16>,
    /// Where host names are resolved, and their answers cached.
    lookups: Lookups,
}

impl GuardedResolver {
    /// A resolver that lets `allowed` networks through.
    pub(crate) fn new(
        allowed: Vec<Cidr>,
        own_port: Option<u16>,
        lookups: Lookups,
    ) -> GuardedResolver {
        GuardedResolver {
            allowed: Arc::new(allowed),
            own_port,
            lookups,
        }
    }

    /// Whether a connection to `ip` is allowed.
    pub(crate) fn check(&self, ip: IpAddr) -> Result<(), Blocked> {
        match forbidden_reason(ip) {
            Some(reason) if !self.allowed.iter().any(|n| n.contains(ip)) => {
                Err(Blocked { addr: ip, reason })
            }
            _ => Ok(()),
        }
    }

    /// `host`'s addresses, with `port`, resolved within `timeout` (or from the cache).
    fn lookup(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<Vec<SocketAddr>, ureq::Error> {
        let addrs = self.lookups.addrs(host, timeout)?;
        Ok(addrs
            .into_iter()
            .map(|a| SocketAddr::new(a.ip(), port))
            .collect())
    }

    /// Resolves `uri` to the addresses a connection may use, refusing non-public ones.
    pub(crate) fn vetted(
        &self,
        uri: &Uri,
        timeout: Duration,
    ) -> Result<Vec<SocketAddr>, ureq::Error> {
        let authority = uri
            .authority()
            .ok_or_else(|| ureq::Error::BadUri(format!("{uri} has no host")))?;
        let port = authority
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        let host = authority.host();
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let addrs = match literal.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => self.lookup(host, port, timeout)?,
        };
        let own_capture_url = self.own_port == Some(port)
            && (uri.path().starts_with("/test-receivers/")
                || uri.path().starts_with("/webhook-monitor/"));
        let mut allowed = Vec::with_capacity(addrs.len());
        let mut first_blocked = None;
        for addr in addrs {
            if own_capture_url && addr.ip().is_loopback() {
                allowed.push(addr);
                continue;
            }
            match self.check(addr.ip()) {
                Ok(()) => allowed.push(addr),
                Err(b) => {
                    first_blocked.get_or_insert(b);
                }
            }
        }
        match (allowed.is_empty(), first_blocked) {
            (true, Some(blocked)) => Err(ureq::Error::Io(io::Error::new(
                io::ErrorKind::PermissionDenied,
                blocked,
            ))),
            (true, None) => Err(ureq::Error::HostNotFound),
            (false, _) => Ok(allowed),
        }
    }
}

impl Resolver for GuardedResolver {
    fn resolve(
        &self,
        uri: &Uri,
        _config: &UreqConfig,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let budget = match timeout.after {
            ureq::unversioned::transport::time::Duration::Exact(d) => d,
            _ => Duration::from_secs(10),
        };
        let addrs = self.vetted(uri, budget)?;
        let mut out = self.empty();
        for addr in addrs.into_iter().take(16) {
            out.push(addr);
        }
        Ok(out)
    }
}

/// The guard's refusal inside a ureq error, if that is what the error is.
pub(crate) fn blocked_in(error: &ureq::Error) -> Option<&Blocked> {
    match error {
        ureq::Error::Io(e) => e.get_ref()?.downcast_ref::<Blocked>(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookups() -> Lookups {
        Lookups::default()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn non_public_addresses_are_refused() {
        for blocked in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "192.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "::127.0.0.1",
        ] {
            assert!(
                forbidden_reason(ip(blocked)).is_some(),
                "{blocked} was allowed"
            );
        }
        for public in [
            "1.1.1.1",
            "93.184.216.34",
            "172.32.0.1",
            "2606:4700::1111",
            "100.128.0.1",
        ] {
            assert_eq!(forbidden_reason(ip(public)), None, "{public} was refused");
        }
    }

    #[test]
    fn allowed_networks_let_addresses_through() {
        let guard = GuardedResolver::new(
            vec![match "127.0.0.0/8".parse::<Cidr>() {
                Ok(cidr) => cidr,
                Err(e) => panic!("127.0.0.0/8: {e}"),
            }],
            None,
            lookups(),
        );
        assert!(guard.check(ip("127.0.0.1")).is_ok());
        assert!(guard.check(ip("::ffff:127.0.0.2")).is_ok());
        assert!(guard.check(ip("10.0.0.1")).is_err());
        assert!(guard.check(ip("169.254.169.254")).is_err());
    }

    /// The guard refuses the metadata address itself, before any connection is made: this test
    /// sends no packet anywhere.
    #[test]
    fn metadata_url_is_refused_by_the_resolver() {
        let guard = GuardedResolver::new(vec![], Some(3335), lookups());
        for url in [
            "http://127.0.0.1:3335/webhooks",
            "http://127.0.0.1:3336/test-receivers/abc/webhook",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://127.0.0.1:1/",
            "http://[::1]:1/",
        ] {
            let uri: Uri = match url.parse() {
                Ok(u) => u,
                Err(e) => panic!("{url}: {e}"),
            };
            match guard.vetted(&uri, Duration::from_secs(1)) {
                Err(e) => assert!(blocked_in(&e).is_some(), "{url}: {e}"),
                Ok(addrs) => panic!("{url} resolved to {addrs:?}"),
            }
        }
    }

    #[test]
    fn the_services_own_capture_urls_are_allowed() {
        let guard = GuardedResolver::new(vec![], Some(3335), lookups());
        for url in [
            "http://127.0.0.1:3335/test-receivers/abc/webhook",
            "http://[::1]:3335/webhook-monitor/session_1",
        ] {
            let uri: Uri = match url.parse() {
                Ok(u) => u,
                Err(e) => panic!("{url}: {e}"),
            };
            assert!(guard.vetted(&uri, Duration::from_secs(1)).is_ok(), "{url}");
        }
    }

    /// A host name is resolved on a `delivery-dns` thread, with the port of the URL.
    #[test]
    fn host_names_resolve_on_the_lookup_threads() {
        let guard = GuardedResolver::new(vec![], Some(3335), lookups());
        let uri: Uri = match "http://localhost:3335/test-receivers/abc/webhook".parse() {
            Ok(u) => u,
            Err(e) => panic!("{e}"),
        };
        match guard.vetted(&uri, Duration::from_secs(5)) {
            Ok(addrs) => assert!(
                addrs
                    .iter()
                    .all(|a| a.ip().is_loopback() && a.port() == 3335),
                "{addrs:?}"
            ),
            Err(e) => panic!("localhost: {e}"),
        }
    }
}
