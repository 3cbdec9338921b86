//! `loadgen sink --io-uring`: the raw drain again, reading through io_uring
//! instead of `recvmmsg`, to answer whether io_uring would make simgate's UDP
//! ingress faster (issue 12, item 2) before anyone builds it into simgate.
//!
//! Two designs, one ring per SO_REUSEPORT socket and thread, as the recvmmsg
//! path has one thread per socket:
//!
//! * `multishot` (kernel ≥ 6.0): one `RecvMsgMulti` request stays armed and
//!   completes once per datagram into a buffer the kernel picks from a
//!   provided buffer ring; buffers go back to the ring after each drain of
//!   the completion queue. One `io_uring_enter` waits, publishes returned
//!   buffers' SQEs and reaps every completion since the last one.
//! * `batched`: `--batch` single-shot `RecvMsg` requests, each with its own
//!   slot, re-armed as they complete (what runs where multishot is refused).
//!
//! Counting is the recvmmsg path's: one datagram and its payload bytes per
//! successful receive; `calls` counts `io_uring_enter` calls (the syscalls
//! that receive), so the /metrics page reads the same. With `--reply`, every
//! datagram gets a `SendMsg` request, submitted with the next enter: io_uring
//! batches the syscall either way, so `each` and `batch` behave alike here.
//!
//! The kernel reads and writes memory this module hands it by address, which
//! needs `unsafe`; the whole of it stays in this file.
#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::fmt;
use std::io;
use std::mem;
use std::net::SocketAddrV4;
use std::os::fd::RawFd;
use std::ptr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::types::{BufRingEntry, Fd, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};
use nix::libc;

use crate::sink::{Counts, ReplyMode, REPLY, SLOT};

/// Which io_uring receive design to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum UringMode {
    /// Multishot when the kernel supports it, batched otherwise.
    Auto,
    /// One `RecvMsgMulti` with a provided buffer ring (fails if unsupported).
    Multishot,
    /// `--batch` single-shot `RecvMsg` requests.
    Batched,
}

/// The design that actually runs, after probing the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Design {
    Multishot,
    Batched,
}

impl fmt::Display for Design {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Multishot => "multishot",
            Self::Batched => "batched",
        })
    }
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct UringArgs {
    /// Receive through io_uring instead of recvmmsg.
    #[arg(long)]
    pub(crate) io_uring: bool,
    /// io_uring receive design.
    #[arg(long, value_enum, default_value_t = UringMode::Auto)]
    pub(crate) uring_mode: UringMode,
    /// Provided buffers per ring (multishot; a power of two).
    #[arg(long, default_value_t = 512)]
    pub(crate) uring_buffers: u16,
}

/// What one worker needs besides its socket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) design: Design,
    /// Provided buffers (multishot).
    pub(crate) buffers: u16,
    /// Receive requests in flight (batched).
    pub(crate) batch: usize,
    pub(crate) reply: ReplyMode,
}

/// Buffer group id of the provided buffer ring (one ring, one group).
const BGID: u16 = 0;
/// A provided buffer holds `struct io_uring_recvmsg_out` (four u32), the
/// source address and then the payload, which gets the recvmmsg path's slot
/// size.
const HEADER: usize = 16;
const NAME_LEN: usize = size_of::<libc::sockaddr_in>();
/// Reply requests in flight at most; beyond it a reply is dropped, as
/// `MSG_DONTWAIT` drops one on the recvmmsg path.
const REPLY_SLOTS: usize = 1024;
/// How long one wait may block, so that `stop` is noticed.
const WAIT: Duration = Duration::from_millis(200);

// user_data: the kind in the high half, a slot index in the low half.
const KIND_MULTI: u64 = 1 << 32;
const KIND_RECV: u64 = 2 << 32;
const KIND_SEND: u64 = 3 << 32;
const KIND_MASK: u64 = !0xffff_ffff;

/// Decides the design for `args`, probing the kernel: a multishot receive
/// must really complete a datagram with the "more" flag set.
pub(crate) fn choose(args: &UringArgs) -> io::Result<Design> {
    match args.uring_mode {
        UringMode::Batched => new_ring(8, 16).map(|_| Design::Batched),
        UringMode::Multishot => probe_multishot().map(|()| Design::Multishot),
        UringMode::Auto => {
            match probe_multishot() {
                Ok(()) => Ok(Design::Multishot),
                Err(e) => {
                    eprintln!("loadgen sink: multishot io_uring receive unavailable ({e}); batched RecvMsg");
                    new_ring(8, 16).map(|_| Design::Batched)
                }
            }
        }
    }
}

/// Receives on `fd` until `stop()` says so; returns only on an error of the
/// ring itself (a failed receive is reported and the request re-armed).
pub(crate) fn receive_loop(
    fd: RawFd,
    plan: &Plan,
    c: &Counts,
    stop: &dyn Fn() -> bool,
) -> io::Result<()> {
    match plan.design {
        Design::Multishot => multishot(fd, plan, c, stop),
        Design::Batched => batched(fd, plan, c, stop),
    }
}

/// A ring set up for one thread: completions run only when this thread
/// enters the kernel, which is when it wants them (6.1+; plain otherwise).
fn new_ring(sq: u32, cq: u32) -> io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(cq)
        .build(sq)
        .or_else(|_| IoUring::builder().setup_cqsize(cq).build(sq))
}

/// Waits for at least one completion or `WAIT`.
fn enter(ring: &IoUring) -> io::Result<()> {
    let ts = Timespec::from(WAIT);
    let args = SubmitArgs::new().timespec(&ts);
    match ring.submitter().submit_with_args(1, &args) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ETIME | libc::EINTR | libc::EBUSY)
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Pushes `entry`, submitting first if the queue is full; false if it is
/// still full (the caller drops what the entry was for).
fn push(ring: &mut IoUring, entry: &squeue::Entry) -> bool {
    // SAFETY (for both pushes): every entry built here points at memory
    // owned by a struct that outlives the ring's requests (see `Multishot`,
    // `RecvSlots`, `Replies`).
    if unsafe { ring.submission().push(entry) }.is_ok() {
        return true;
    }
    if ring.submit().is_err() {
        return false;
    }
    unsafe { ring.submission().push(entry) }.is_ok()
}

fn empty_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is plain data; all-zero is "no name, no iovec".
    unsafe { mem::zeroed() }
}

fn sockaddr_v4(name: &[u8]) -> Option<SocketAddrV4> {
    if name.len() < NAME_LEN {
        return None;
    }
    // SAFETY: `name` holds at least a sockaddr_in, read unaligned.
    let sin: libc::sockaddr_in = unsafe { ptr::read_unaligned(name.as_ptr().cast()) };
    (i32::from(sin.sin_family) == libc::AF_INET).then(|| {
        SocketAddrV4::new(
            u32::from_be(sin.sin_addr.s_addr).into(),
            u16::from_be(sin.sin_port),
        )
    })
}

fn to_sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; zero padding is what the kernel wants.
    let mut sin: libc::sockaddr_in = unsafe { mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_port = a.port().to_be();
    sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    sin
}

/// Page-aligned zeroed memory the kernel is given by address; freed on drop.
struct Region {
    ptr: *mut u8,
    layout: Layout,
}

impl Region {
    fn new(size: usize) -> io::Result<Self> {
        let layout = Layout::from_size_align(size.max(4096), 4096)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        Ok(Self { ptr, layout })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { alloc::dealloc(self.ptr, self.layout) }
    }
}

/// A provided buffer ring: `entries` buffers of `buf_len` bytes that the
/// kernel fills, each given back after its datagram has been counted.
struct BufRing {
    ring: Region,
    data: Region,
    buf_len: usize,
    mask: u16,
    /// The tail as published plus the buffers given back since.
    tail: u16,
}

impl BufRing {
    fn new(ring: &IoUring, entries: u16, buf_len: usize) -> io::Result<Self> {
        if !entries.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "--uring-buffers must be a power of two",
            ));
        }
        let n = usize::from(entries);
        let mut r = Self {
            ring: Region::new(n * size_of::<BufRingEntry>())?,
            data: Region::new(n * buf_len)?,
            buf_len,
            mask: entries - 1,
            tail: 0,
        };
        // SAFETY: the ring memory is page-aligned, holds `entries` entries
        // and lives as long as this struct, which `Multishot` drops after
        // the io_uring instance.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(r.ring.ptr as u64, entries, BGID, 0)?;
        }
        for bid in 0..entries {
            r.give_back(bid);
        }
        r.publish();
        Ok(r)
    }

    fn entry(&mut self, i: u16) -> &mut BufRingEntry {
        // SAFETY: `i & mask` < entries; the kernel does not write entries.
        unsafe {
            &mut *self
                .ring
                .ptr
                .cast::<BufRingEntry>()
                .add(usize::from(i & self.mask))
        }
    }

    /// Puts buffer `bid` back at the tail; the kernel sees it on `publish`.
    fn give_back(&mut self, bid: u16) {
        let addr = self.data.ptr as u64 + u64::from(bid) * self.buf_len as u64;
        let len = u32::try_from(self.buf_len).unwrap_or(u32::MAX);
        let tail = self.tail;
        let e = self.entry(tail);
        e.set_addr(addr);
        e.set_len(len);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail is a u16 inside the first entry, shared with the
        // kernel, which reads it atomically.
        let tail =
            unsafe { AtomicU16::from_ptr(BufRingEntry::tail(self.ring.ptr.cast()).cast_mut()) };
        tail.store(self.tail, Ordering::Release);
    }

    /// The first `len` bytes of buffer `bid`, which the kernel has filled.
    fn filled(&self, bid: u16, len: usize) -> Option<&[u8]> {
        if bid > self.mask || len > self.buf_len {
            return None;
        }
        // SAFETY: in bounds (checked); the kernel is done with a buffer
        // once its completion has been reaped, until it is given back.
        Some(unsafe {
            std::slice::from_raw_parts(self.data.ptr.add(usize::from(bid) * self.buf_len), len)
        })
    }
}

/// Reply requests in flight: each slot's msghdr points into the slot, and
/// the slots never move (boxed slice) until the ring is gone.
struct Replies {
    slots: Box<[ReplySlot]>,
    free: Vec<u32>,
}

struct ReplySlot {
    addr: libc::sockaddr_in,
    iov: libc::iovec,
    msg: libc::msghdr,
}

impl Replies {
    fn new() -> Self {
        let slots = (0..REPLY_SLOTS)
            .map(|_| ReplySlot {
                addr: to_sockaddr(SocketAddrV4::new(0.into(), 0)),
                iov: libc::iovec {
                    iov_base: REPLY.as_ptr().cast_mut().cast(),
                    iov_len: REPLY.len(),
                },
                msg: empty_msghdr(),
            })
            .collect();
        let free = (0..u32::try_from(REPLY_SLOTS).unwrap_or(u32::MAX))
            .rev()
            .collect();
        Self { slots, free }
    }

    /// Queues "200" to `to`; false when every slot is in flight or the
    /// submission queue stays full.
    fn send(&mut self, ring: &mut IoUring, fd: RawFd, to: SocketAddrV4) -> bool {
        let Some(i) = self.free.pop() else {
            return false;
        };
        let s = &mut self.slots[i as usize];
        s.addr = to_sockaddr(to);
        s.msg.msg_name = ptr::addr_of_mut!(s.addr).cast();
        s.msg.msg_namelen = NAME_LEN as libc::socklen_t;
        s.msg.msg_iov = ptr::addr_of_mut!(s.iov);
        s.msg.msg_iovlen = 1;
        let e = opcode::SendMsg::new(Fd(fd), ptr::addr_of!(s.msg))
            .build()
            .user_data(KIND_SEND | u64::from(i));
        if push(ring, &e) {
            true
        } else {
            self.free.push(i);
            false
        }
    }

    fn done(&mut self, i: u32) {
        if (i as usize) < self.slots.len() {
            self.free.push(i);
        }
    }
}

/// Field order is drop order: the ring (and with it every request) goes
/// before the memory those requests point at.
struct Multishot {
    ring: IoUring,
    bufs: BufRing,
    replies: Replies,
    msg: Box<libc::msghdr>,
}

impl Multishot {
    fn new(buffers: u16) -> io::Result<Self> {
        // Every datagram is a completion: room for a full buffer ring's
        // worth, so the multishot request never ends on CQ overflow.
        let cq = u32::from(buffers).max(REPLY_SLOTS as u32) * 2;
        let ring = new_ring(1024, cq)?;
        let bufs = BufRing::new(&ring, buffers, HEADER + NAME_LEN + SLOT)?;
        // Only the lengths count for a multishot recvmsg: where the name
        // and control data go inside each provided buffer.
        let mut msg = Box::new(empty_msghdr());
        msg.msg_namelen = NAME_LEN as libc::socklen_t;
        Ok(Self {
            ring,
            bufs,
            replies: Replies::new(),
            msg,
        })
    }

    fn arm(&mut self, fd: RawFd) -> bool {
        let e = opcode::RecvMsgMulti::new(Fd(fd), ptr::addr_of!(*self.msg), BGID)
            .build()
            .user_data(KIND_MULTI);
        push(&mut self.ring, &e)
    }
}

fn probe_multishot() -> io::Result<()> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    let mut m = Multishot::new(2)?;
    if !m.arm(fd) {
        return Err(io::Error::other("cannot queue the probe"));
    }
    m.ring.submit()?;
    sock.send_to(b"probe", sock.local_addr()?)?;
    enter(&m.ring)?;
    let cqe = m
        .ring
        .completion()
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "no completion"))?;
    if cqe.result() < 0 {
        return Err(io::Error::from_raw_os_error(-cqe.result()));
    }
    if !cqueue::more(cqe.flags()) {
        return Err(io::Error::other("the receive did not stay armed"));
    }
    Ok(())
}

fn multishot(fd: RawFd, plan: &Plan, c: &Counts, stop: &dyn Fn() -> bool) -> io::Result<()> {
    let mut m = Multishot::new(plan.buffers)?;
    let mut armed = false;
    let mut peers = Vec::new();
    while !stop() {
        if !armed {
            armed = m.arm(fd);
        }
        enter(&m.ring)?;
        let (mut n, mut bytes, mut answered) = (0u64, 0u64, 0u64);
        for cqe in m.ring.completion() {
            let (kind, index) = (cqe.user_data() & KIND_MASK, cqe.user_data() as u32);
            let res = cqe.result();
            if kind == KIND_SEND {
                m.replies.done(index);
                answered += u64::from(res >= 0);
                continue;
            }
            if !cqueue::more(cqe.flags()) {
                // ENOBUFS (every buffer out) or an error ends the request.
                armed = false;
            }
            let Some(bid) = cqueue::buffer_select(cqe.flags()) else {
                if res < 0 && res != -libc::ENOBUFS {
                    eprintln!(
                        "loadgen sink: io_uring recvmsg failed: {}",
                        io::Error::from_raw_os_error(-res)
                    );
                }
                continue;
            };
            let len = usize::try_from(res).unwrap_or(0);
            if let Some(out) = m
                .bufs
                .filled(bid, len)
                .and_then(|b| RecvMsgOut::parse(b, &m.msg).ok())
            {
                n += 1;
                bytes += out.payload_data().len() as u64;
                if plan.reply != ReplyMode::None {
                    peers.extend(sockaddr_v4(out.name_data()));
                }
            }
            m.bufs.give_back(bid);
        }
        m.bufs.publish();
        for to in peers.drain(..) {
            m.replies.send(&mut m.ring, fd, to);
        }
        c.datagrams.fetch_add(n, Ordering::Relaxed);
        c.bytes.fetch_add(bytes, Ordering::Relaxed);
        c.calls.fetch_add(1, Ordering::Relaxed);
        c.replies.fetch_add(answered, Ordering::Relaxed);
    }
    Ok(())
}

/// One single-shot receive request's memory; pointers into it are set once,
/// the slots never move (boxed slice) until the ring is gone.
struct RecvSlot {
    addr: libc::sockaddr_in,
    iov: libc::iovec,
    msg: libc::msghdr,
    buf: Box<[u8]>,
}

/// Field order is drop order (see `Multishot`).
struct Batched {
    ring: IoUring,
    slots: Box<[RecvSlot]>,
    replies: Replies,
}

impl Batched {
    fn arm(&mut self, fd: RawFd, i: u32) -> bool {
        let Some(s) = self.slots.get_mut(i as usize) else {
            return false;
        };
        s.msg.msg_namelen = NAME_LEN as libc::socklen_t;
        let e = opcode::RecvMsg::new(Fd(fd), ptr::addr_of_mut!(s.msg))
            .build()
            .user_data(KIND_RECV | u64::from(i));
        push(&mut self.ring, &e)
    }
}

fn batched(fd: RawFd, plan: &Plan, c: &Counts, stop: &dyn Fn() -> bool) -> io::Result<()> {
    let batch = u32::try_from(plan.batch).unwrap_or(u32::MAX);
    let cq = (batch as usize + REPLY_SLOTS) as u32 * 2;
    let mut b = Batched {
        ring: new_ring(1024, cq)?,
        slots: (0..batch)
            .map(|_| RecvSlot {
                addr: to_sockaddr(SocketAddrV4::new(0.into(), 0)),
                iov: libc::iovec {
                    iov_base: ptr::null_mut(),
                    iov_len: 0,
                },
                msg: empty_msghdr(),
                buf: vec![0u8; SLOT].into_boxed_slice(),
            })
            .collect(),
        replies: Replies::new(),
    };
    for s in b.slots.iter_mut() {
        s.iov.iov_base = s.buf.as_mut_ptr().cast();
        s.iov.iov_len = s.buf.len();
        s.msg.msg_name = ptr::addr_of_mut!(s.addr).cast();
        s.msg.msg_iov = ptr::addr_of_mut!(s.iov);
        s.msg.msg_iovlen = 1;
    }
    // Requests that could not be queued yet (a full submission queue).
    let mut idle: Vec<u32> = (0..batch).collect();
    let mut peers = Vec::new();
    while !stop() {
        idle.retain(|&i| !b.arm(fd, i));
        enter(&b.ring)?;
        let (mut n, mut bytes, mut answered) = (0u64, 0u64, 0u64);
        for cqe in b.ring.completion() {
            let (kind, index) = (cqe.user_data() & KIND_MASK, cqe.user_data() as u32);
            let res = cqe.result();
            if kind == KIND_SEND {
                b.replies.done(index);
                answered += u64::from(res >= 0);
                continue;
            }
            if res >= 0 {
                n += 1;
                bytes += res as u64;
                if plan.reply != ReplyMode::None {
                    if let Some(s) = b.slots.get(index as usize) {
                        peers.push(SocketAddrV4::new(
                            u32::from_be(s.addr.sin_addr.s_addr).into(),
                            u16::from_be(s.addr.sin_port),
                        ));
                    }
                }
            } else if res != -libc::EAGAIN && res != -libc::EINTR {
                eprintln!(
                    "loadgen sink: io_uring recvmsg failed: {}",
                    io::Error::from_raw_os_error(-res)
                );
            }
            idle.push(index);
        }
        for to in peers.drain(..) {
            b.replies.send(&mut b.ring, fd, to);
        }
        c.datagrams.fetch_add(n, Ordering::Relaxed);
        c.bytes.fetch_add(bytes, Ordering::Relaxed);
        c.calls.fetch_add(1, Ordering::Relaxed);
        c.replies.fetch_add(answered, Ordering::Relaxed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd as _;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::thread;
    use std::time::Instant;

    /// Sends `n` datagrams of `size` bytes to a drain of `design` and checks
    /// it counts exactly `n` (and `n * size` bytes), and with replies on,
    /// that `n` answers come back.
    fn drains(design: Design, reply: ReplyMode) {
        const N: u64 = 2000;
        const SIZE: usize = 100;
        let rx = UdpSocket::bind("127.0.0.1:0").expect("bind rx");
        let to = rx.local_addr().expect("rx addr");
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let plan = Plan {
            design,
            buffers: 64,
            batch: 32,
            reply,
        };
        let worker = {
            let (counts, stop) = (Arc::clone(&counts), Arc::clone(&stop));
            thread::spawn(move || {
                receive_loop(rx.as_raw_fd(), &plan, &counts, &|| {
                    stop.load(Ordering::Relaxed)
                })
            })
        };
        let tx = UdpSocket::bind("127.0.0.1:0").expect("bind tx");
        tx.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let payload = [b'x'; SIZE];
        let mut answers = 0u64;
        let mut buf = [0u8; 16];
        // In windows of 32, so the loopback socket buffer never overflows
        // and a lost datagram means a counting bug, not congestion.
        for sent in 1..=N {
            tx.send_to(&payload, to).expect("send");
            if sent % 32 == 0 || sent == N {
                let give_up = Instant::now() + Duration::from_secs(10);
                while counts.datagrams.load(Ordering::Relaxed) < sent && Instant::now() < give_up {
                    thread::yield_now();
                }
                if reply != ReplyMode::None {
                    while answers < sent {
                        let got = tx.recv(&mut buf).expect("an answer");
                        assert_eq!(&buf[..got], REPLY);
                        answers += 1;
                    }
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        worker.join().expect("worker").expect("ring");
        assert_eq!(counts.datagrams.load(Ordering::Relaxed), N);
        assert_eq!(counts.bytes.load(Ordering::Relaxed), N * SIZE as u64);
        if reply != ReplyMode::None {
            assert_eq!(counts.replies.load(Ordering::Relaxed), N);
            assert_eq!(answers, N);
        }
        assert!(counts.calls.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn multishot_counts_every_datagram() {
        drains(Design::Multishot, ReplyMode::None);
    }

    #[test]
    fn multishot_answers_every_datagram() {
        drains(Design::Multishot, ReplyMode::Each);
    }

    #[test]
    fn batched_counts_and_answers_every_datagram() {
        drains(Design::Batched, ReplyMode::None);
        drains(Design::Batched, ReplyMode::Batch);
    }

    #[test]
    fn auto_picks_multishot_on_this_kernel() {
        let args = UringArgs {
            io_uring: true,
            uring_mode: UringMode::Auto,
            uring_buffers: 512,
        };
        // Kernels before 6.0 have no multishot recvmsg; everything this
        // project runs on is newer, so batched here means a broken probe.
        assert_eq!(choose(&args).expect("io_uring"), Design::Multishot);
    }

    #[test]
    fn source_addresses_round_trip() {
        let a = SocketAddrV4::new([127, 0, 4, 232].into(), 40_000);
        let sin = to_sockaddr(a);
        // SAFETY: reading a sockaddr_in as bytes, as the kernel wrote it.
        let bytes: [u8; NAME_LEN] = unsafe { mem::transmute(sin) };
        assert_eq!(sockaddr_v4(&bytes), Some(a));
        assert_eq!(sockaddr_v4(&bytes[..4]), None);
    }
}
