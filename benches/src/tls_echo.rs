//! `loadgen tls-echo`: the upstream of the beam-tcp benchmark, a TLS server
//! that sends back every byte it receives.
//!
//! With `--header`, each connection starts with one line saying who the
//! device is, as the proxy in front tells it: simgate's Beam identity line
//! (`imsi=… timestamp=…`, the first line inside TLS) or HAProxy's PROXY
//! protocol v1 line (`PROXY TCP4 src dst sport dport`, sent in clear before
//! the TLS handshake by `server … send-proxy`). That line is kept, not
//! echoed; a message that is exactly `whoami\n` is answered with it, so a
//! bench can check that each device's identity arrived.

use std::path::PathBuf;
use std::sync::Arc;

use crate::tls_server;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Longest PROXY v1 line (the protocol's own limit) or identity line.
const MAX_HEADER: usize = 4096;
const WHOAMI: &[u8] = b"whoami\n";

#[derive(Debug, clap::Args)]
pub(crate) struct TlsEchoArgs {
    /// Server certificate chain (PEM), e.g. from scripts/certs.sh.
    #[arg(long)]
    cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// Each connection starts with a header line (see the module doc).
    #[arg(long)]
    header: bool,
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Runtime threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Exit after this many seconds (runs stay bounded).
    #[arg(long, default_value_t = 7200)]
    max_seconds: u64,
}

pub(crate) fn run(a: &TlsEchoArgs) -> anyhow::Result<()> {
    let tls = tls_server::config(&a.cert, &a.key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let header = a.header;
    crate::report::runtime(a.threads)?.block_on(async {
        let listener = tokio::net::TcpListener::bind(a.listen).await?;
        println!("addr={}", listener.local_addr()?);
        tls_server::accept_until(&listener, a.max_seconds, |tcp| {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A peer that breaks off is its own business.
                let _ = serve(tcp, acceptor, header).await;
            });
        })
        .await
    })
}

async fn serve(
    mut tcp: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    header: bool,
) -> anyhow::Result<()> {
    tcp.set_nodelay(true)?;
    let mut first = [0u8; 1];
    // A TLS record starts with 0x16; a PROXY line with `P`.
    let proxy_line = header && tcp.peek(&mut first).await? == 1 && first[0] == b'P';
    let mut buf = Vec::with_capacity(16 << 10);
    let mut who = Vec::new();
    if proxy_line {
        // Byte by byte: the handshake right behind it must stay unread.
        let mut byte = [0u8; 1];
        while !who.ends_with(b"\n") {
            anyhow::ensure!(who.len() < MAX_HEADER, "PROXY line too long");
            tcp.read_exact(&mut byte).await?;
            who.push(byte[0]);
        }
    }
    let mut tls = acceptor.accept(tcp).await?;
    if header && !proxy_line {
        loop {
            if let Some(end) = buf.iter().position(|&b| b == b'\n') {
                who = buf.drain(..=end).collect();
                break;
            }
            anyhow::ensure!(buf.len() < MAX_HEADER, "identity line too long");
            if read_more(&mut tls, &mut buf).await? == 0 {
                return Ok(());
            }
        }
    }
    trim_line_end(&mut who);
    who.push(b'\n');
    loop {
        if !buf.is_empty() {
            if buf == WHOAMI {
                tls.write_all(&who).await?;
            } else {
                tls.write_all(&buf).await?;
            }
            buf.clear();
        }
        if read_more(&mut tls, &mut buf).await? == 0 {
            tls.shutdown().await?;
            return Ok(());
        }
    }
}

async fn read_more<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    r.read_buf(buf).await
}

fn trim_line_end(line: &mut Vec<u8>) {
    while line.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
        line.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_ends_are_trimmed() {
        let mut l = b"PROXY TCP4 127.0.1.1 127.0.0.1 1 2\r\n".to_vec();
        trim_line_end(&mut l);
        assert_eq!(l, b"PROXY TCP4 127.0.1.1 127.0.0.1 1 2");
        let mut e = Vec::new();
        trim_line_end(&mut e);
        assert!(e.is_empty());
    }
}
