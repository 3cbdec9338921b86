//! End to end: datagrams the kernel drops because simgate's UDP socket
//! buffer is full are counted as
//! `simgate_ingress_rejected_total{protocol="udp",reason="kernel_overflow"}`
//! (DESIGN rule 5: every drop has a counter, including these).
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::*;

/// One UDP worker, so one socket buffer to overflow.
const BODY: &str = r#"
[ingress]
udp_workers = 1
"#;

fn counter(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse().unwrap())
}

const DROPPED: &str = "simgate_ingress_rejected_total{protocol=\"udp\",reason=\"kernel_overflow\"}";
const RECEIVED: &str = "simgate_ingress_messages_total{listener=\"unified\",protocol=\"udp\"}";

// A current-thread runtime: simgate's UDP worker runs on the test's thread,
// so while the test sends without awaiting, nobody reads the socket and
// its buffer must overflow, however fast the machine.
#[tokio::test(flavor = "current_thread")]
async fn datagrams_dropped_by_the_kernel_are_counted() {
    let run = start(BODY).await;
    let to: SocketAddr = run.server.bound.unified_udp.unwrap();
    let metrics = std::sync::Arc::clone(&run.server.services.metrics);

    // simgate asks for 8 MiB (Linux grants at most 2 × rmem_max); 600
    // datagrams of 60 KB are 36 MB, well past any granted buffer, and fewer
    // than the loopback backlog (netdev_max_backlog, 1000), so the socket
    // is the only place anything is dropped.
    let from = UdpSocket::bind("127.0.0.1:0").unwrap();
    let payload = vec![0x5au8; 60_000];
    let sent = (0..600)
        .filter(|_| from.send_to(&payload, to).is_ok())
        .count() as u64;
    assert!(sent > 0);

    // Now let simgate read what the kernel kept, and its drop watcher (one
    // reading a second) catch up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (received, dropped) = loop {
        let text = metrics.encode();
        let seen = (counter(&text, RECEIVED), counter(&text, DROPPED));
        if seen.0 + seen.1 >= sent || tokio::time::Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        dropped > 0,
        "no kernel_overflow counted: sent {sent}, received {received}"
    );
    // Each datagram is either read or counted as dropped, never both.
    assert_eq!(
        received + dropped,
        sent,
        "received {received} + dropped {dropped} != sent {sent}"
    );
}
