//! Listeners: UDP (batched with recvmmsg), TCP (one message per read) and
//! HTTP (hyper). They turn bytes into [`Message`](crate::services::Message)s
//! and replies back into bytes; the services decide everything else.

pub mod http;
#[cfg(target_os = "linux")]
pub(crate) mod kernel_drops;
pub mod request_head;
pub mod tcp;
pub mod udp;

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// SO_RCVBUF asked for on UDP sockets: absorbs bursts while a worker is
/// busy. The kernel caps it at net.core.rmem_max (Linux then doubles it for
/// bookkeeping); the UDP listener logs what it got.
pub(crate) const UDP_RECV_BUFFER: usize = 8 << 20;

/// A socket with SO_REUSEADDR (and SO_REUSEPORT for UDP, so that several
/// workers share one port and the kernel spreads datagrams across them).
pub(crate) fn bind_socket(addr: SocketAddr, udp: bool) -> std::io::Result<Socket> {
    let (ty, proto) = if udp {
        (Type::DGRAM, Protocol::UDP)
    } else {
        (Type::STREAM, Protocol::TCP)
    };
    let socket = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    socket.set_reuse_address(true)?;
    if udp {
        socket.set_reuse_port(true)?;
        // Best effort: a smaller buffer only means earlier kernel drops,
        // which are counted (kernel_drops) and the size is logged.
        let _ = socket.set_recv_buffer_size(UDP_RECV_BUFFER);
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    if !udp {
        socket.listen(1024)?;
    }
    Ok(socket)
}
