//! Where each thing lives in etcd, under the configured prefix:
//!
//! | key                              | value                                   |
//! |----------------------------------|-----------------------------------------|
//! | `{prefix}/control/{table}/{key}` | the record, as the redb store keeps it  |
//! | `{prefix}/refs/{table}/{key}`    | rewritten by every write that names that entity (a SIM naming its group); its removal is guarded by it |
//! | `{prefix}/meta/seeded_at`        | Unix ms the fleet was first seeded      |
//! | `{prefix}/radius/{ipv4}`         | a session learned from RADIUS, on a lease |
//!
//! Pure: no I/O.

use std::net::Ipv4Addr;

/// The key layout of one fleet.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

/// What a key under the prefix is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Kind<'a> {
    Control {
        table: &'a str,
        key: &'a str,
    },
    /// `{prefix}/refs/…`: only its revision matters.
    Refs,
    Seeded,
    Radius(Ipv4Addr),
    /// Under the prefix but not ours to read (a newer simgate's, or junk).
    Other,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }

    pub(crate) fn control(&self, table: &str, key: &str) -> Vec<u8> {
        format!("{}/control/{table}/{key}", self.prefix).into_bytes()
    }

    pub(crate) fn refs(&self, table: &str, key: &str) -> Vec<u8> {
        format!("{}/refs/{table}/{key}", self.prefix).into_bytes()
    }

    pub(crate) fn seeded(&self) -> Vec<u8> {
        format!("{}/meta/seeded_at", self.prefix).into_bytes()
    }

    pub(crate) fn radius(&self, ip: Ipv4Addr) -> Vec<u8> {
        format!("{}/radius/{ip}", self.prefix).into_bytes()
    }

    /// `[start, end)` covering the RADIUS sessions.
    pub(crate) fn radius_range(&self) -> (Vec<u8>, Vec<u8>) {
        let start = format!("{}/radius/", self.prefix).into_bytes();
        (start.clone(), range_end(&start))
    }

    /// `[start, end)` covering every key of the fleet.
    pub(crate) fn all(&self) -> (Vec<u8>, Vec<u8>) {
        let start = format!("{}/", self.prefix).into_bytes();
        (start.clone(), range_end(&start))
    }

    pub(crate) fn classify<'k>(&self, key: &'k [u8]) -> Kind<'k> {
        let Some(rest) = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.strip_prefix(self.prefix.as_str()))
            .and_then(|k| k.strip_prefix('/'))
        else {
            return Kind::Other;
        };
        if rest.starts_with("refs/") {
            return Kind::Refs;
        }
        if rest == "meta/seeded_at" {
            return Kind::Seeded;
        }
        if let Some(ip) = rest.strip_prefix("radius/") {
            return ip.parse().map_or(Kind::Other, Kind::Radius);
        }
        match rest
            .strip_prefix("control/")
            .and_then(|r| r.split_once('/'))
        {
            Some((table, key)) if !key.is_empty() => Kind::Control { table, key },
            _ => Kind::Other,
        }
    }
}

/// etcd's "every key starting with `prefix`": the prefix with its last byte
/// incremented.
fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_classify() {
        let k = Keys::new("/fleet-a/");
        assert_eq!(
            k.classify(&k.control("subscribers", "001010000000001")),
            Kind::Control {
                table: "subscribers",
                key: "001010000000001"
            }
        );
        // IPv6 static sessions keep their colons; the first '/' ends the table.
        assert_eq!(
            k.classify(&k.control("sessions", "2001:db8::1")),
            Kind::Control {
                table: "sessions",
                key: "2001:db8::1"
            }
        );
        assert_eq!(k.classify(&k.refs("groups", "g1")), Kind::Refs);
        assert_eq!(k.classify(&k.seeded()), Kind::Seeded);
        let ip = Ipv4Addr::new(10, 0, 0, 7);
        assert_eq!(k.classify(&k.radius(ip)), Kind::Radius(ip));
        assert_eq!(k.classify(b"/fleet-a/radius/not-an-ip"), Kind::Other);
        assert_eq!(k.classify(b"/fleet-b/refs/groups/g1"), Kind::Other);
        assert_eq!(k.classify(b"/fleet-a/control/groups/"), Kind::Other);
        assert_eq!(k.classify(&[0xff, 0xfe]), Kind::Other);
    }

    #[test]
    fn the_range_covers_the_prefix_and_nothing_else() {
        let (start, end) = Keys::new("/simgate").all();
        assert_eq!(start, b"/simgate/");
        assert_eq!(end, b"/simgate0");
        assert_eq!(range_end(&[b'a', 0xff]), b"b");
        assert_eq!(range_end(&[0xff]), vec![0]);
    }
}
