//! Which gateways may send accounting, and the shared secret of each.
//!
//! A client is an address or a CIDR block; the most specific match wins. A
//! datagram from an address no client covers is dropped (`unknown_client`),
//! unless a default secret is configured: that one then applies to any source
//! address (for labs; production lists its gateways).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::Deserialize;

use crate::model::Secret;

/// An address block, `192.0.2.0/24` or `2001:db8::/32`; a bare address is a
/// /32 (or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// A client address block that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid RADIUS client address {0:?}: expected an IP address or CIDR block")]
pub struct IpNetError(String);

impl IpNet {
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, IpNetError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(IpNetError(format!("{addr}/{prefix}")));
        }
        Ok(Self {
            addr: canonical(addr),
            prefix: if addr.is_ipv4() || canonical(addr).is_ipv6() {
                prefix
            } else {
                // ::ffff:a.b.c.d/p is the IPv4 block a.b.c.d/(p-96).
                prefix.saturating_sub(96)
            },
        })
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
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

/// IPv4-mapped IPv6 (what a dual-stack socket reports) is matched as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(s: &str) -> Result<Self, IpNetError> {
        let err = || IpNetError(s.chars().take(64).collect());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| err())?)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err())?;
        let prefix = prefix.unwrap_or(if addr.is_ipv4() { 32 } else { 128 });
        Self::new(addr, prefix).map_err(|_| err())
    }
}

impl TryFrom<String> for IpNet {
    type Error = IpNetError;
    fn try_from(s: String) -> Result<Self, IpNetError> {
        s.parse()
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One gateway (or block of gateways) and its shared secret.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RadiusClient {
    pub address: IpNet,
    pub secret: Secret,
}

/// A secret that cannot protect anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("RADIUS shared secret for {0} is empty")]
pub struct EmptySecret(String);

/// Client lookup by source address.
#[derive(Debug, Clone, Default)]
pub struct ClientSecrets {
    /// Most specific block first.
    clients: Vec<RadiusClient>,
    default: Option<Secret>,
}

impl ClientSecrets {
    /// Refuses empty secrets (RFC 2865 §3: the secret must not be empty).
    pub fn new(clients: &[RadiusClient], default: Option<Secret>) -> Result<Self, EmptySecret> {
        if let Some(c) = clients.iter().find(|c| c.secret.expose().is_empty()) {
            return Err(EmptySecret(c.address.to_string()));
        }
        if default.as_ref().is_some_and(|s| s.expose().is_empty()) {
            return Err(EmptySecret("the default client".into()));
        }
        let mut clients = clients.to_vec();
        // Stable: among equal prefixes, the first listed wins.
        clients.sort_by_key(|c| std::cmp::Reverse(c.address.prefix()));
        Ok(Self { clients, default })
    }

    /// The secret shared with the client at `ip`, if it is one.
    pub fn secret_for(&self, ip: IpAddr) -> Option<&Secret> {
        self.clients
            .iter()
            .find(|c| c.address.contains(ip))
            .map(|c| &c.secret)
            .or(self.default.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_addresses_and_blocks() {
        assert!("10.0.0.0/8"
            .parse::<IpNet>()
            .unwrap()
            .contains(ip("10.200.0.1")));
        assert!(!"10.0.0.0/8"
            .parse::<IpNet>()
            .unwrap()
            .contains(ip("11.0.0.1")));
        let one: IpNet = "192.0.2.1".parse().unwrap();
        assert_eq!(one.prefix(), 32);
        assert!(one.contains(ip("192.0.2.1")));
        assert!(one.contains(ip("::ffff:192.0.2.1")));
        assert!(!one.contains(ip("192.0.2.2")));
        assert!("0.0.0.0/0"
            .parse::<IpNet>()
            .unwrap()
            .contains(ip("1.2.3.4")));
        assert!(!"0.0.0.0/0".parse::<IpNet>().unwrap().contains(ip("::1")));
        assert!("2001:db8::/32"
            .parse::<IpNet>()
            .unwrap()
            .contains(ip("2001:db8::5")));
        assert!("::/0".parse::<IpNet>().unwrap().contains(ip("2001:db8::5")));
        let mapped: IpNet = "::ffff:10.0.0.0/104".parse().unwrap();
        assert!(mapped.contains(ip("10.1.2.3")));
        for bad in ["10.0.0.0/33", "::/129", "10.0.0/8", "x", "10.0.0.1/", ""] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn most_specific_client_wins() {
        let clients = [
            RadiusClient {
                address: "10.0.0.0/8".parse().unwrap(),
                secret: Secret::new("wide"),
            },
            RadiusClient {
                address: "10.1.0.1".parse().unwrap(),
                secret: Secret::new("narrow"),
            },
        ];
        let s = ClientSecrets::new(&clients, None).unwrap();
        assert_eq!(s.secret_for(ip("10.1.0.1")).unwrap().expose(), "narrow");
        assert_eq!(s.secret_for(ip("10.1.0.2")).unwrap().expose(), "wide");
        assert!(s.secret_for(ip("192.0.2.1")).is_none());
        let s = ClientSecrets::new(&clients, Some(Secret::new("any"))).unwrap();
        assert_eq!(s.secret_for(ip("192.0.2.1")).unwrap().expose(), "any");
    }

    #[test]
    fn empty_secrets_are_refused() {
        let clients = [RadiusClient {
            address: "10.0.0.1".parse().unwrap(),
            secret: Secret::new(""),
        }];
        assert!(ClientSecrets::new(&clients, None).is_err());
        assert!(ClientSecrets::new(&[], Some(Secret::new(""))).is_err());
    }

    #[test]
    fn deserializes_from_toml() {
        let c: RadiusClient =
            toml::from_str("address = \"192.0.2.0/24\"\nsecret = \"s3cret\"").unwrap();
        assert_eq!(c.address.to_string(), "192.0.2.0/24");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(toml::from_str::<RadiusClient>("address = \"nope\"\nsecret = \"x\"").is_err());
    }
}
