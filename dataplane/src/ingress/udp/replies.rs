//! The answers to one receive batch, sent with one `sendmmsg(2)` (Linux).
//!
//! quinn-udp batches only datagrams to a single destination (GSO); a
//! receive batch comes from many devices, so each answer would otherwise be
//! its own `sendmsg`. Answers are collected while the batch is served and
//! flushed once at its end.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

/// Answers waiting to be sent: destination, the local address the request
/// came to (the answer's source when the socket is bound to a wildcard
/// address), and the datagram.
#[derive(Debug, Default)]
pub(super) struct Replies {
    pending: Vec<(SocketAddr, Option<IpAddr>, Bytes)>,
}

/// How the socket answers go out from is bound (read once, not per flush).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Bound {
    /// 0.0.0.0 or [::]: each answer names its source address (IP_PKTINFO),
    /// as quinn-udp does, so it leaves from the address the device used.
    pub(super) wildcard: bool,
    /// An IPv6 socket (IPv4 devices are then v4-mapped).
    pub(super) v6: bool,
}

impl Bound {
    pub(super) fn of(addr: SocketAddr) -> Self {
        Self {
            wildcard: addr.ip().is_unspecified(),
            v6: addr.is_ipv6(),
        }
    }
}

/// What a flush did: answers the kernel took, and answers it refused
/// (socket buffer full), which the caller counts as dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Flushed {
    pub(super) sent: usize,
    pub(super) dropped: usize,
}

impl Replies {
    pub(super) fn push(&mut self, peer: SocketAddr, local: Option<IpAddr>, line: Bytes) {
        self.pending.push((peer, local, line));
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Sends every pending answer without blocking.
    pub(super) fn flush(&mut self, socket: &tokio::net::UdpSocket, bound: Bound) -> Flushed {
        let wildcard = bound.wildcard;
        let mut flushed = Flushed::default();
        let mut rest = &self.pending[..];
        while !rest.is_empty() {
            // One sendmmsg per run of answers with the same source address:
            // nix shares control messages across a call, and a batch almost
            // always arrived at one address.
            let local = if wildcard { rest[0].1 } else { None };
            let run = if wildcard {
                rest.iter().take_while(|r| r.1 == local).count()
            } else {
                rest.len()
            };
            let (now, later) = rest.split_at(run);
            let sent = send_run(socket, now, local, bound.v6);
            flushed.sent += sent;
            flushed.dropped += now.len() - sent;
            rest = later;
        }
        self.pending.clear();
        flushed
    }
}

/// Sends `run` with as few `sendmmsg` calls as the kernel allows; returns
/// how many went out. Stops at the first error (a full socket buffer: the
/// devices retry as with any lost datagram).
#[cfg(target_os = "linux")]
fn send_run(
    socket: &tokio::net::UdpSocket,
    run: &[(SocketAddr, Option<IpAddr>, Bytes)],
    local: Option<IpAddr>,
    v6_socket: bool,
) -> usize {
    use std::io::IoSlice;
    use std::os::fd::AsRawFd as _;

    use nix::sys::socket::{sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage};

    let slices: Vec<[IoSlice<'_>; 1]> = run.iter().map(|r| [IoSlice::new(&r.2)]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = run
        .iter()
        .map(|r| Some(SockaddrStorage::from(peer_for(r.0, v6_socket))))
        .collect();
    let v4_info;
    let v6_info;
    let (cmsgs, cmsg_space): (Vec<ControlMessage<'_>>, Option<Vec<u8>>) = match local {
        None => (Vec::new(), None),
        Some(IpAddr::V4(ip)) if !v6_socket => {
            v4_info = libc_in_pktinfo(ip);
            (
                vec![ControlMessage::Ipv4PacketInfo(&v4_info)],
                Some(nix::cmsg_space!(nix::libc::in_pktinfo)),
            )
        }
        Some(ip) => {
            v6_info = libc_in6_pktinfo(ip);
            (
                vec![ControlMessage::Ipv6PacketInfo(&v6_info)],
                Some(nix::cmsg_space!(nix::libc::in6_pktinfo)),
            )
        }
    };
    let fd = socket.as_raw_fd();
    let mut done = 0;
    while done < run.len() {
        let mut headers =
            MultiHeaders::<SockaddrStorage>::preallocate(run.len() - done, cmsg_space.clone());
        // Straight to the kernel, not through tokio's readiness: answers
        // never wait for room (MSG_DONTWAIT), so there is nothing to
        // register interest for.
        let r = sendmmsg(
            fd,
            &mut headers,
            &slices[done..],
            &addrs[done..],
            &cmsgs,
            MsgFlags::MSG_DONTWAIT,
        )
        .map(|results| results.count());
        match r {
            Ok(0) | Err(_) => break,
            Ok(n) => done += n,
        }
    }
    done
}

/// Elsewhere: one `sendto` per answer.
#[cfg(not(target_os = "linux"))]
fn send_run(
    socket: &tokio::net::UdpSocket,
    run: &[(SocketAddr, Option<IpAddr>, Bytes)],
    _local: Option<IpAddr>,
    _v6_socket: bool,
) -> usize {
    run.iter()
        .take_while(|r| socket.try_send_to(&r.2, r.0).is_ok())
        .count()
}

/// A v6 socket reaches IPv4 devices through v4-mapped addresses.
#[cfg(target_os = "linux")]
fn peer_for(peer: SocketAddr, v6_socket: bool) -> SocketAddr {
    match peer {
        SocketAddr::V4(v4) if v6_socket => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        other => other,
    }
}

#[cfg(target_os = "linux")]
fn libc_in_pktinfo(ip: std::net::Ipv4Addr) -> nix::libc::in_pktinfo {
    nix::libc::in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: nix::libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        ipi_addr: nix::libc::in_addr { s_addr: 0 },
    }
}

#[cfg(target_os = "linux")]
fn libc_in6_pktinfo(ip: IpAddr) -> nix::libc::in6_pktinfo {
    let v6 = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    nix::libc::in6_pktinfo {
        ipi6_addr: nix::libc::in6_addr {
            s6_addr: v6.octets(),
        },
        ipi6_ifindex: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair(bind: &str) -> (tokio::net::UdpSocket, Vec<std::net::UdpSocket>) {
        let server = tokio::net::UdpSocket::bind(bind).await.unwrap();
        let clients = (0..5)
            .map(|_| {
                let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                    .unwrap();
                c
            })
            .collect();
        (server, clients)
    }

    #[tokio::test]
    async fn every_answer_reaches_its_own_device_in_one_flush() {
        for (bind, wildcard) in [("127.0.0.1:0", false), ("0.0.0.0:0", true)] {
            let (server, clients) = pair(bind).await;
            let mut replies = Replies::default();
            for (i, c) in clients.iter().enumerate() {
                let local = wildcard.then_some(IpAddr::from([127, 0, 0, 1]));
                replies.push(
                    c.local_addr().unwrap(),
                    local,
                    Bytes::from(format!("answer {i}")),
                );
            }
            let flushed = replies.flush(&server, Bound::of(server.local_addr().unwrap()));
            assert_eq!(
                flushed,
                Flushed {
                    sent: 5,
                    dropped: 0
                },
                "{bind}"
            );
            assert!(replies.is_empty());
            let port = server.local_addr().unwrap().port();
            for (i, c) in clients.iter().enumerate() {
                let mut buf = [0u8; 64];
                let (n, from) = c.recv_from(&mut buf).unwrap();
                assert_eq!(&buf[..n], format!("answer {i}").as_bytes());
                assert_eq!(from, SocketAddr::from(([127, 0, 0, 1], port)), "{bind}");
            }
        }
    }

    #[tokio::test]
    async fn a_v6_wildcard_socket_answers_ipv4_devices() {
        let Ok(server) = tokio::net::UdpSocket::bind("[::]:0").await else {
            return; // no IPv6 on this host: nothing to check
        };
        let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut replies = Replies::default();
        replies.push(
            c.local_addr().unwrap(),
            Some(IpAddr::from([127, 0, 0, 1])),
            Bytes::from_static(b"200"),
        );
        let bound = Bound::of(server.local_addr().unwrap());
        assert!(bound.wildcard && bound.v6);
        assert_eq!(replies.flush(&server, bound).sent, 1);
        let mut buf = [0u8; 8];
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"200");
    }
}
