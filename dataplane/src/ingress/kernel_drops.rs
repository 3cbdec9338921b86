//! Datagrams the kernel dropped on our UDP sockets before simgate read them
//! (receive buffer full), counted as
//! `simgate_ingress_rejected_total{protocol="udp",reason="kernel_overflow"}`.
//!
//! How: each socket's `drops` column in `/proc/net/udp` (`udp6` for IPv6
//! sockets), found by the socket's inode and read about once a second by
//! one task per listener, which adds the increase to the counter. Why this
//! and not SO_RXQ_OVFL:
//!
//! * SO_RXQ_OVFL hands the counter over as a control message on each
//!   receive. Our receives go through quinn-udp (recvmmsg), which gives each
//!   message a fixed 88-byte control buffer, skips control messages it does
//!   not know and has no place for this one in `RecvMeta`. Reading it would
//!   mean replacing quinn-udp's receive path with our own cmsg parsing —
//!   `unsafe`, or a second syscall layer on the hot path — and every extra
//!   control message risks truncating the ECN and GRO ones quinn-udp needs.
//! * Both expose the same kernel counter (`sk_drops`), so nothing is lost by
//!   reading it out of band. SO_RXQ_OVFL only reports on the next datagram
//!   received; drops followed by silence (a burst that ended) would go
//!   unseen until traffic resumes. The table is read whether or not anything
//!   arrives.
//! * It is plain file reading, off the receive path: one small read a
//!   second per listener.
//!
//! `sk_drops` also counts the rare datagram dropped for a bad checksum found
//! on copy; on a gateway's sockets (no socket filters) it is otherwise the
//! receive-buffer overflow count, which is what the reason names.
//!
//! Linux only: the module is not compiled elsewhere. Without /proc (some
//! sandboxes) the drops cannot be read; that is logged once, not an error.
//!
//! The table parser and [`DropTracker`] are pure (text in, counts out); only
//! [`Watcher`] touches files and the clock.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::metrics::Metrics;

/// How often the table is read: drops show on /metrics within about a
/// second, and a read costs little for the few sockets a gateway has.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Our network namespace's tables (`/proc/net` links to `/proc/self/net`).
const UDP4_TABLE: &str = "/proc/self/net/udp";
const UDP6_TABLE: &str = "/proc/self/net/udp6";

/// One socket's row in `/proc/net/udp` or `/proc/net/udp6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SocketRow {
    pub(crate) inode: u64,
    /// The kernel's `sk_drops`, printed as a 32-bit unsigned number: it
    /// wraps.
    pub(crate) drops: u32,
}

/// The socket rows of a `/proc/net/udp{,6}` table. The header and any line
/// that does not parse are skipped: the reader loses one socket's row, not
/// the whole table.
pub(crate) fn parse_table(text: &str) -> impl Iterator<Item = SocketRow> + '_ {
    text.lines().filter_map(parse_row)
}

/// Columns (udp4_format_sock / udp6_sock_seq_show): `sl local rem st
/// tx:rx tr:when retrnsmt uid timeout inode ref pointer drops`. The header
/// names `tx_queue rx_queue` and `tr tm->when` as two words each, so
/// positions come from the rows, not the header. Columns a future kernel
/// appends after `drops` are ignored.
fn parse_row(line: &str) -> Option<SocketRow> {
    let mut cols = line.split_ascii_whitespace();
    // Rows start with the hash slot ("163:"); the header with "sl".
    cols.next()?.strip_suffix(':')?.parse::<u32>().ok()?;
    let inode = cols.nth(8)?.parse().ok()?;
    let drops = cols.nth(2)?.parse().ok()?;
    Some(SocketRow { inode, drops })
}

/// Remembers each watched socket's last `drops` and turns table readings
/// into new drops.
#[derive(Debug)]
pub(crate) struct DropTracker {
    last: HashMap<u64, u32>,
}

impl DropTracker {
    /// Starts from 0 for every socket: they were created by us just before,
    /// so anything the first reading shows was dropped on our watch.
    pub(crate) fn new(inodes: &[u64]) -> Self {
        Self {
            last: inodes.iter().map(|&i| (i, 0)).collect(),
        }
    }

    /// Drops added since the previous reading on the watched sockets. Other
    /// sockets' rows are ignored; a watched socket missing from the table
    /// (closed) adds nothing.
    pub(crate) fn update(&mut self, table: &str) -> u64 {
        let mut added = 0u64;
        for row in parse_table(table) {
            if let Some(last) = self.last.get_mut(&row.inode) {
                // The counter is 32 bits and wraps; fewer than 2^32 drops
                // between two readings a second apart is a safe assumption.
                added += u64::from(row.drops.wrapping_sub(*last));
                *last = row.drops;
            }
        }
        added
    }
}

/// The inode naming `socket` in the tables.
pub(crate) fn socket_inode(socket: &impl AsFd) -> io::Result<u64> {
    let link = format!("/proc/self/fd/{}", socket.as_fd().as_raw_fd());
    Ok(std::fs::metadata(link)?.ino())
}

/// Collects one listener's sockets, then polls their drops until shutdown.
#[derive(Debug)]
pub(crate) struct Watcher {
    listener: &'static str,
    table: &'static str,
    inodes: Vec<u64>,
    /// Set when a socket's inode could not be found (no /proc).
    unavailable: Option<io::Error>,
    every: Duration,
}

impl Watcher {
    /// For the sockets of listener `listener`, all bound to `addr`'s family.
    pub(crate) fn new(listener: &'static str, addr: SocketAddr) -> Self {
        Self {
            listener,
            table: if addr.is_ipv6() {
                UDP6_TABLE
            } else {
                UDP4_TABLE
            },
            inodes: Vec::new(),
            unavailable: None,
            every: POLL_INTERVAL,
        }
    }

    /// Polls every `every` instead of [`POLL_INTERVAL`] (tests).
    #[cfg(test)]
    pub(crate) fn every(self, every: Duration) -> Self {
        Self { every, ..self }
    }

    pub(crate) fn add(&mut self, socket: &impl AsFd) {
        match socket_inode(socket) {
            Ok(inode) => self.inodes.push(inode),
            Err(e) => self.unavailable = Some(e),
        }
    }

    /// Starts the polling task; without /proc, logs that once instead.
    pub(crate) fn spawn(
        self,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
        tasks: &mut JoinSet<()>,
    ) {
        if let Some(e) = &self.unavailable {
            unavailable(self.table, e);
            return;
        }
        if self.inodes.is_empty() {
            return;
        }
        tasks.spawn(self.run(metrics, shutdown));
    }

    async fn run(self, metrics: Arc<Metrics>, mut shutdown: watch::Receiver<bool>) {
        let mut tracker = DropTracker::new(&self.inodes);
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let last = tokio::select! {
                _ = tick.tick() => false,
                // One more reading after shutdown (or if the sender is
                // gone): drops since the previous tick still count.
                _ = shutdown.changed() => true,
            };
            let path = self.table;
            // A /proc read is a syscall that walks the kernel's UDP hash;
            // keep it off the workers that serve datagrams.
            let text =
                match tokio::task::spawn_blocking(move || std::fs::read_to_string(path)).await {
                    Ok(Ok(text)) => text,
                    Ok(Err(e)) => {
                        unavailable(path, &e);
                        return;
                    }
                    // The runtime is shutting down.
                    Err(_) => return,
                };
            let dropped = tracker.update(&text);
            if dropped > 0 {
                metrics.kernel_overflow(self.listener, dropped);
            }
            if last {
                return;
            }
        }
    }
}

/// Logs, once per process (not once per listener), that kernel drops cannot
/// be counted.
fn unavailable(table: &str, e: &io::Error) {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    if !LOGGED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            table,
            error = %e,
            "cannot read per-socket UDP drops (is /proc mounted?); \
             datagrams the kernel drops will not be counted"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    use socket2::{Domain, Protocol, Socket, Type};

    /// Captured from Linux 6.x (`cat /proc/net/udp`), trailing spaces kept.
    const UDP4: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops            \n\
  163: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 16979 2 0000000000000000 0         \n\
 2046: 0100007F:A1C5 00000000:0000 07 00000000:00012400 00:00000000 00000000  1000        0 884213 2 ffff8f0a4c3e5000 4197      \n\
 2046: 0100007F:A1C5 00000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 884214 2 ffff8f0a4c3e5400 0         \n";

    /// Captured from `cat /proc/net/udp6`.
    const UDP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  467: 00000000000000000000000001000000:B6E3 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000  1000        0 902211 2 0000000000000000 12\n";

    #[test]
    fn parses_captured_udp_tables() {
        let rows: Vec<_> = parse_table(UDP4).collect();
        assert_eq!(
            rows,
            [
                SocketRow {
                    inode: 16979,
                    drops: 0
                },
                SocketRow {
                    inode: 884213,
                    drops: 4197
                },
                SocketRow {
                    inode: 884214,
                    drops: 0
                },
            ]
        );
        let rows: Vec<_> = parse_table(UDP6).collect();
        assert_eq!(
            rows,
            [SocketRow {
                inode: 902211,
                drops: 12
            }]
        );
    }

    #[test]
    fn skips_lines_that_are_not_socket_rows() {
        let text = "\n\
            garbage\n\
            12: 0100007F:A1C5 00000000:0000 07\n\
            x12: 0100007F:A1C5 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 5 2 0 1\n\
            12: 0100007F:A1C5 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 inode 2 0 1\n\
            12: 0100007F:A1C5 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 7 2 0 -1\n\
            13: 0100007F:A1C5 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 8 2 0 3 extra\n";
        let rows: Vec<_> = parse_table(text).collect();
        assert_eq!(rows, [SocketRow { inode: 8, drops: 3 }]);
    }

    fn row(inode: u64, drops: u32) -> String {
        format!(
            "  1: 0100007F:A1C5 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 {inode} 2 0 {drops}\n"
        )
    }

    #[test]
    fn tracker_adds_increases_of_watched_sockets_only() {
        let mut t = DropTracker::new(&[10, 11]);
        // Unwatched socket 99 dropped plenty: none of ours.
        assert_eq!(t.update(&(row(10, 5) + &row(11, 0) + &row(99, 1000))), 5);
        assert_eq!(t.update(&(row(10, 7) + &row(11, 2))), 4);
        assert_eq!(t.update(&(row(10, 7) + &row(11, 2))), 0);
        // Socket 10 closed: its row is gone, nothing added.
        assert_eq!(t.update(&row(11, 3)), 1);
        assert_eq!(t.update(""), 0);
    }

    #[test]
    fn tracker_follows_the_32_bit_counter_across_wrap() {
        let mut t = DropTracker::new(&[10]);
        assert_eq!(t.update(&row(10, u32::MAX - 1)), u64::from(u32::MAX - 1));
        assert_eq!(t.update(&row(10, 3)), 5);
    }

    /// A UDP socket with the smallest receive buffer the kernel allows.
    fn tiny_buffer_socket(addr: &str) -> Option<UdpSocket> {
        let addr: SocketAddr = addr.parse().unwrap();
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).unwrap();
        // The kernel raises 0 to its minimum (a few KiB).
        s.set_recv_buffer_size(0).unwrap();
        s.bind(&addr.into()).ok()?;
        let s: UdpSocket = s.into();
        s.set_nonblocking(true).unwrap();
        Some(s)
    }

    /// Sends `n` 1000-byte datagrams to `to`; returns how many were sent.
    fn flood(to: SocketAddr, n: usize) -> u64 {
        let from = UdpSocket::bind(SocketAddr::new(to.ip(), 0)).unwrap();
        let payload = [0x5au8; 1000];
        (0..n)
            .filter(|_| from.send_to(&payload, to).is_ok())
            .count() as u64
    }

    /// Datagrams waiting in `s`'s receive queue (drains it).
    fn drain(s: &UdpSocket) -> u64 {
        let mut buf = [0u8; 2048];
        let mut n = 0;
        while s.recv_from(&mut buf).is_ok() {
            n += 1;
        }
        n
    }

    fn read_table(addr: SocketAddr) -> String {
        let path = if addr.is_ipv6() {
            UDP6_TABLE
        } else {
            UDP4_TABLE
        };
        std::fs::read_to_string(path).unwrap()
    }

    /// The kernel really drops: a socket nobody reads, with a tiny buffer,
    /// flooded over loopback. Every datagram sent is either still queued or
    /// counted as dropped (fewer than netdev_max_backlog in flight, so the
    /// loopback device itself drops none).
    fn flooded_socket_reports_its_drops(bind: &str) {
        let Some(sock) = tiny_buffer_socket(bind) else {
            eprintln!("skipped: cannot bind {bind}");
            return;
        };
        let idle = tiny_buffer_socket(bind).unwrap();
        let to = sock.local_addr().unwrap();
        let mut tracker = DropTracker::new(&[socket_inode(&sock).unwrap()]);
        let mut idle_tracker = DropTracker::new(&[socket_inode(&idle).unwrap()]);

        let sent = flood(to, 200);
        let table = read_table(to);
        let dropped = tracker.update(&table);
        let queued = drain(&sock);
        assert!(dropped > 0, "no drops seen; sent {sent}, queued {queued}");
        assert_eq!(queued + dropped, sent, "queued {queued} dropped {dropped}");
        assert_eq!(idle_tracker.update(&table), 0);
        // Read again: nothing new.
        assert_eq!(tracker.update(&read_table(to)), 0);
    }

    #[test]
    fn flooded_ipv4_socket_reports_its_drops() {
        flooded_socket_reports_its_drops("127.0.0.1:0");
    }

    #[test]
    fn flooded_ipv6_socket_reports_its_drops() {
        flooded_socket_reports_its_drops("[::1]:0");
    }

    fn kernel_overflow_count(metrics: &Metrics) -> u64 {
        let text = metrics.encode();
        let key = "simgate_ingress_rejected_total{protocol=\"udp\",reason=\"kernel_overflow\"} ";
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    /// The watcher task adds the kernel's drops to the shared reject
    /// counter on its ticks.
    #[tokio::test]
    async fn watcher_counts_drops_into_ingress_rejected() {
        let sock = tiny_buffer_socket("127.0.0.1:0").unwrap();
        let to = sock.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        let (_stop, shutdown) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut w = Watcher::new("test", to).every(Duration::from_millis(20));
        w.add(&sock);
        w.spawn(Arc::clone(&metrics), shutdown, &mut tasks);

        let sent = flood(to, 200);
        let queued = drain(&sock);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while kernel_overflow_count(&metrics) < sent - queued
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let counted = kernel_overflow_count(&metrics);
        assert!(counted > 0, "no kernel_overflow counted after {sent} sent");
        assert_eq!(queued + counted, sent, "queued {queued} counted {counted}");
    }

    /// Drops since the last tick are still counted: the watcher reads the
    /// table once more at shutdown.
    #[tokio::test]
    async fn watcher_reads_once_more_at_shutdown() {
        let sock = tiny_buffer_socket("127.0.0.1:0").unwrap();
        let to = sock.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        let (stop, shutdown) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut w = Watcher::new("test", to).every(Duration::from_secs(3600));
        w.add(&sock);
        w.spawn(Arc::clone(&metrics), shutdown, &mut tasks);
        // Let the first (immediate) tick pass; the next is an hour away.
        tokio::time::sleep(Duration::from_millis(100)).await;

        let sent = flood(to, 200);
        assert_eq!(kernel_overflow_count(&metrics), 0);
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), tasks.join_next())
            .await
            .expect("watcher stops on shutdown");
        let counted = kernel_overflow_count(&metrics);
        let queued = drain(&sock);
        assert!(counted > 0, "no kernel_overflow counted after {sent} sent");
        assert_eq!(queued + counted, sent, "queued {queued} counted {counted}");
    }

    #[test]
    fn without_proc_entry_the_watcher_spawns_nothing() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let mut w = Watcher::new("test", "127.0.0.1:0".parse().unwrap());
        w.unavailable = Some(io::Error::from(io::ErrorKind::NotFound));
        let (_stop, shutdown) = watch::channel(false);
        let mut tasks = JoinSet::new();
        w.spawn(Arc::new(Metrics::new()), shutdown, &mut tasks);
        assert!(tasks.is_empty());
    }
}
