//! Who is calling: the client address of a request, taken from `X-Forwarded-For` only when
//! the connection comes from a proxy the operator trusts (`--trusted-proxies`). Anyone else
//! could write any address there, and so pick a fresh login-throttling budget per request.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One trusted network: an address with a prefix length (`10.0.0.0/8`, `::1/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("not an IP address or CIDR network: {s:?}");
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr = addr.parse::<IpAddr>().map_err(|_| bad())?.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Network { addr, prefix })
    }
}

/// The proxies whose `X-Forwarded-For` is believed: a comma-separated list of IPs and CIDR
/// networks; empty (the default) believes nobody and uses the connection's peer address.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Network>);

impl FromStr for TrustedProxies {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(Network::from_str)
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|n| format!("{}/{}", n.addr, n.prefix)))
            .finish()
    }
}

impl TrustedProxies {
    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The client of a request that arrived from `peer` with these `X-Forwarded-For` values
    /// (one per header line, each a comma-separated list, nearest hop last). The hops are read
    /// from the nearest back while they are trusted proxies: the first one that is not is the
    /// client. A hop that is not an address ends the walk at the last proxy that forwarded it,
    /// and a chain of trusted proxies only gives the farthest of them.
    pub fn client(&self, peer: IpAddr, forwarded_for: &[&str]) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        let hops = forwarded_for.iter().flat_map(|h| h.split(',')).rev();
        for hop in hops {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => client = ip.to_canonical(),
                Err(_) => break,
            }
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn lists_parse_ips_and_networks_and_refuse_garbage() {
        let p: TrustedProxies = " 127.0.0.1, 10.0.0.0/8,::1 ,fd00::/8".parse().unwrap();
        assert_eq!(
            format!("{p:?}"),
            r#"["127.0.0.1/32", "10.0.0.0/8", "::1/128", "fd00::/8"]"#
        );
        assert_eq!(
            "".parse::<TrustedProxies>().unwrap(),
            TrustedProxies::default()
        );
        for bad in ["localhost", "10.0.0.0/33", "::/129", "1.2.3.4/x", "1.2.3"] {
            assert!(bad.parse::<TrustedProxies>().is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_peer() {
        let none = TrustedProxies::default();
        let local: TrustedProxies = "127.0.0.1".parse().unwrap();
        let xff = ["203.0.113.9"];
        assert_eq!(none.client(ip("127.0.0.1"), &xff), ip("127.0.0.1"));
        assert_eq!(local.client(ip("127.0.0.1"), &xff), ip("203.0.113.9"));
        assert_eq!(local.client(ip("198.51.100.1"), &xff), ip("198.51.100.1"));
        // no header: the proxy itself
        assert_eq!(local.client(ip("127.0.0.1"), &[]), ip("127.0.0.1"));
        // an IPv4-mapped peer is the IPv4 address
        assert_eq!(
            local.client(ip("::ffff:127.0.0.1"), &xff),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn the_client_is_the_nearest_hop_that_is_not_a_trusted_proxy() {
        let proxies: TrustedProxies = "127.0.0.1,10.0.0.0/8".parse().unwrap();
        let peer = ip("127.0.0.1");
        // a client-supplied (spoofed) first entry is not what counts
        let chain = ["198.51.100.7, 203.0.113.9", "10.1.2.3"];
        assert_eq!(proxies.client(peer, &chain), ip("203.0.113.9"));
        // garbage stops the walk at the proxy that forwarded it
        assert_eq!(proxies.client(peer, &["junk, 10.1.2.3"]), ip("10.1.2.3"));
        // only proxies: the farthest of them
        assert_eq!(
            proxies.client(peer, &["10.0.0.2, 10.0.0.1"]),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn networks_match_by_prefix() {
        let n: Network = "192.168.4.0/22".parse().unwrap();
        assert!(n.contains(ip("192.168.7.255")));
        assert!(!n.contains(ip("192.168.8.0")));
        assert!(!n.contains(ip("::1")));
        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        let v6: Network = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
    }
}
