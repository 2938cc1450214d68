//! Which addresses a host may dial for an experiment. An experiment names
//! its cluster's addresses, and its tasks call the other tasks there with
//! the experiment's token: were any address dialled as given, a tenant could
//! make the host connect to whatever it names (an internal service, a cloud
//! metadata endpoint). A host dials an experiment's peer only if its admin
//! allows the address (`--allow-peers`), or if the host reaches its peers
//! over TLS (`--tls-ca`), where a peer must prove with a certificate from
//! the host's CA that it is a weft host of this deployment.

use std::net::IpAddr;

use crate::error::{Code, Error, Result};

/// One allowed pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Allowed {
    /// Every address.
    Any,
    /// This host name or IP, on any port.
    Host(String),
    /// This host name or IP, on this port.
    HostPort(String, u16),
    /// IP addresses in this network, on any port.
    Network(IpAddr, u8),
}

/// The addresses a host's admin allows experiments' peers at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerAllowList(Vec<Allowed>);

/// `host:port` (`[v6]:port` too) split into its parts.
fn split_address(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    Some((host, port.parse().ok()?))
}

impl PeerAllowList {
    /// Parses comma-separated patterns: `*`, `HOST`, `HOST:PORT` or an IP
    /// network `ADDR/BITS`.
    pub fn parse(patterns: &str) -> Result<Self> {
        let mut list = Vec::new();
        for p in patterns.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || Error::invalid(format!("--allow-peers: '{p}' is not *, HOST, HOST:PORT or ADDR/BITS"));
            let allowed = if p == "*" {
                Allowed::Any
            } else if let Some((ip, bits)) = p.split_once('/') {
                let ip: IpAddr = ip.parse().map_err(|_| bad())?;
                let bits: u8 = bits.parse().map_err(|_| bad())?;
                if bits > if ip.is_ipv4() { 32 } else { 128 } {
                    return Err(bad());
                }
                Allowed::Network(ip, bits)
            } else if p.parse::<IpAddr>().is_ok() || !p.contains(':') {
                Allowed::Host(p.to_ascii_lowercase())
            } else {
                let (host, port) = split_address(p).ok_or_else(bad)?;
                Allowed::HostPort(host.to_ascii_lowercase(), port)
            };
            list.push(allowed);
        }
        Ok(PeerAllowList(list))
    }

    /// Whether nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `address` (`host:port`) is allowed.
    pub fn allows(&self, address: &str) -> bool {
        let Some((host, port)) = split_address(address) else { return false };
        let host = host.to_ascii_lowercase();
        let ip: Option<IpAddr> = host.parse().ok();
        self.0.iter().any(|a| match a {
            Allowed::Any => true,
            Allowed::Host(h) => *h == host,
            Allowed::HostPort(h, p) => *h == host && *p == port,
            Allowed::Network(net, bits) => ip.is_some_and(|ip| in_network(ip, *net, *bits)),
        })
    }

    /// Refuses an experiment whose peers (`(task, address)`) this host may
    /// not dial; `verified` says whether peers prove who they are (TLS).
    pub fn check<'a>(
        &self,
        experiment: &str,
        verified: bool,
        peers: impl IntoIterator<Item = (String, &'a str)>,
    ) -> Result<()> {
        if verified {
            return Ok(());
        }
        match peers.into_iter().find(|(_, address)| !self.allows(address)) {
            None => Ok(()),
            Some((task, address)) => Err(Error::status(
                Code::PermissionDenied,
                format!(
                    "experiment '{experiment}' puts task {task} at {address}, which this host may not dial: its \
                     admin allows {} (--allow-peers), and without --tls-ca it cannot verify peers",
                    if self.is_empty() { "no peers".to_string() } else { "other peers".to_string() }
                ),
            )),
        }
    }
}

fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_hosts_ports_and_networks() {
        let list = PeerAllowList::parse("127.0.0.1, ps-0.weft:2222, 10.0.0.0/8, [::1]:7070").unwrap();
        assert!(list.allows("127.0.0.1:7071"));
        assert!(list.allows("PS-0.weft:2222") && !list.allows("ps-0.weft:2223"));
        assert!(list.allows("10.200.3.4:80") && !list.allows("11.0.0.1:80"));
        assert!(list.allows("[::1]:7070") && !list.allows("[::1]:7071"));
        assert!(!list.allows("169.254.169.254:80"), "the cloud metadata endpoint is not allowed");
        assert!(!list.allows("no-port"));
        assert!(PeerAllowList::parse("*").unwrap().allows("anything:1"));
        assert!(PeerAllowList::default().is_empty() && !PeerAllowList::default().allows("127.0.0.1:1"));
        for bad in ["10.0.0.0/33", "host:port", "1.2.3.4/x"] {
            assert!(PeerAllowList::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_experiment_with_a_peer_not_allowed_is_refused_naming_it_unless_peers_are_verified() {
        let list = PeerAllowList::parse("127.0.0.1").unwrap();
        let peers = || {
            vec![("/job:ps/task:0".to_string(), "127.0.0.1:7070"), ("/job:worker/task:0".into(), "169.254.169.254:80")]
        };
        let err = list.check("mallory", false, peers()).unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        assert!(err.to_string().contains("task /job:worker/task:0 at 169.254.169.254:80"), "{err}");
        list.check("mallory", true, peers()).unwrap();
    }
}
