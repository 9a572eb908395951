//! Batched UDP I/O for ESP-in-UDP (RFC 3948): `sendmmsg` with UDP GSO (`UDP_SEGMENT`) and
//! `recvmmsg` with UDP GRO (`UDP_GRO`), on plain `libc`.
//!
//! Decision: libc rather than `quinn-udp`. We need exactly two calls and full control over the
//! buffers (ESP packets are sealed in place in the transmit slots and sent from there without a
//! copy; received datagrams are opened in place and written to the TUN from there), and libc adds
//! no dependency. Consecutive ESP packets of one SA to one peer with the same length form one GSO
//! message (the last may be shorter), so a TSO super-packet split into ~45 segments leaves in one
//! `sendmmsg`; the receiving kernel keeps such a GSO skb whole for a socket with `UDP_GRO`, so it
//! arrives in one `recvmmsg` slot with its segment size in a control message.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;
/// Most segments per GSO message (the kernel allows 64 or more, depending on version).
pub const MAX_GSO_SEGMENTS: usize = 64;
/// Most payload bytes per GSO message (a UDP datagram's length field, with room for headers).
pub const MAX_GSO_BYTES: usize = 65000;
/// Room for one control message with a 16-bit or 32-bit value.
const CMSG_BUF: usize = 64;

/// Turns on `UDP_GRO` for `fd`; an error means the kernel does not have it (we then receive
/// single datagrams, which is still correct).
pub fn enable_gro(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a valid c_int option value.
    let r = unsafe {
        libc::setsockopt(
            fd,
            SOL_UDP,
            UDP_GRO,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Opens an `AF_INET6` UDP socket with `IPV6_V6ONLY` off (RFC 3493 §5.3) bound to `[::]:port`,
/// so that one socket serves IPv4 and IPv6 peers with the same batching and offloads.
pub fn bind_dual_stack(port: u16) -> io::Result<std::net::UdpSocket> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket call; the fd is owned by the UdpSocket below (closed on error too).
    let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket nobody else owns.
    let socket = unsafe { std::net::UdpSocket::from_raw_fd(fd) };
    let zero: libc::c_int = 0;
    // SAFETY: setsockopt with a valid fd and a c_int option value.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            (&zero as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let len = to_storage(
        SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0)),
        &mut storage,
    );
    // SAFETY: storage holds a sockaddr_in6 of `len` bytes.
    let r = unsafe { libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

/// An address as the rest of vgw knows it: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, how a
/// dual-stack socket reports an IPv4 peer, RFC 4291 §2.5.5.2) becomes the IPv4 address, so peers
/// compare equal to the configured IPv4 addresses.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, a.port())),
            None => addr,
        },
        v4 => v4,
    }
}

fn to_storage(addr: SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in and sockaddr_in6.
    unsafe {
        match addr {
            SocketAddr::V4(a) => {
                let sin = &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                *sin = zeroed();
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
                size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(a) => {
                let sin6 = &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                *sin6 = zeroed();
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_scope_id = a.scope_id();
                size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }
}

fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    // SAFETY: the family says which structure the kernel wrote.
    unsafe {
        match libc::c_int::from(s.ss_family) {
            libc::AF_INET => {
                let sin = &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 => {
                let sin6 = &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                Some(canonical(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                ))))
            }
            _ => None,
        }
    }
}

#[derive(Clone, Copy)]
struct MsgMeta {
    peer: SocketAddr,
    first_iov: usize,
    count: usize,
    seg_len: usize,
    bytes: usize,
    /// The last segment was shorter: nothing may follow in this message.
    closed: bool,
}

/// Gathers outgoing datagrams into GSO messages and sends them with one `sendmmsg`.
///
/// Datagrams are queued by pointer: [`UdpSender::push`] takes a slice that must stay alive and
/// unchanged until the next [`UdpSender::flush`], which is why flush is `unsafe`. Capacity is
/// fixed at construction; nothing allocates afterwards.
pub struct UdpSender {
    gso: bool,
    iovs: Vec<libc::iovec>,
    meta: Vec<MsgMeta>,
    msgs: Vec<libc::mmsghdr>,
    addrs: Vec<libc::sockaddr_storage>,
    ctrl: Vec<[u64; CMSG_BUF / 8]>,
}

impl UdpSender {
    /// A sender for up to `capacity` datagrams per flush; `gso` false sends one per message.
    pub fn new(capacity: usize, gso: bool) -> Self {
        Self {
            gso,
            iovs: Vec::with_capacity(capacity),
            meta: Vec::with_capacity(capacity),
            // SAFETY (zeroed): plain C structures, all-zero is valid (null pointers, zero lengths).
            msgs: (0..capacity).map(|_| unsafe { zeroed() }).collect(),
            addrs: (0..capacity).map(|_| unsafe { zeroed() }).collect(),
            ctrl: vec![[0u64; CMSG_BUF / 8]; capacity],
        }
    }

    /// Whether GSO is (still) in use; it is turned off if the kernel refuses it.
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.iovs.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.iovs.is_empty()
    }

    /// Whether the queue is full (flush before pushing more).
    pub fn is_full(&self) -> bool {
        self.iovs.len() == self.iovs.capacity()
    }

    /// Queues `data` for `peer` (dropped silently if full: check [`UdpSender::is_full`]).
    /// Its index among the queued datagrams is [`UdpSender::len`] before the call.
    pub fn push(&mut self, peer: SocketAddr, data: &[u8]) {
        if self.is_full() {
            return;
        }
        let len = data.len();
        let idx = self.iovs.len();
        self.iovs.push(libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: len,
        });
        if self.gso
            && let Some(m) = self.meta.last_mut()
            && m.peer == peer
            && !m.closed
            && len <= m.seg_len
            && m.count < MAX_GSO_SEGMENTS
            && m.bytes + len <= MAX_GSO_BYTES
        {
            m.count += 1;
            m.bytes += len;
            m.closed = len < m.seg_len;
            return;
        }
        self.meta.push(MsgMeta {
            peer,
            first_iov: idx,
            count: 1,
            seg_len: len,
            bytes: len,
            closed: false,
        });
    }

    /// Sends everything queued, then reports each datagram's fate in order with
    /// `sent(index, ok)`, and empties the queue.
    ///
    /// # Safety
    /// Every slice given to [`UdpSender::push`] since the last flush must still be alive and
    /// unmodified.
    pub unsafe fn flush(&mut self, fd: RawFd, mut sent: impl FnMut(usize, bool)) {
        let n = self.meta.len();
        for i in 0..n {
            let m = self.meta[i];
            let namelen = to_storage(m.peer, &mut self.addrs[i]);
            let mut hdr: libc::msghdr = unsafe { zeroed() };
            hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = namelen;
            hdr.msg_iov = self.iovs[m.first_iov..].as_mut_ptr();
            hdr.msg_iovlen = m.count as _;
            if m.count > 1 {
                hdr.msg_control = self.ctrl[i].as_mut_ptr().cast();
                // SAFETY: CMSG_SPACE of a u16 is well below CMSG_BUF.
                hdr.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as _;
                // SAFETY: the control buffer is CMSG_BUF bytes, 8-aligned, and holds one cmsg.
                unsafe {
                    let c = libc::CMSG_FIRSTHDR(&hdr);
                    (*c).cmsg_level = SOL_UDP;
                    (*c).cmsg_type = UDP_SEGMENT;
                    (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
                    std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), m.seg_len as u16);
                }
            }
            self.msgs[i] = libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            };
        }
        let mut done = 0;
        while done < n {
            // SAFETY: msgs[done..n] are initialised above and point into live buffers.
            let r =
                unsafe { libc::sendmmsg(fd, self.msgs[done..].as_mut_ptr(), (n - done) as u32, 0) };
            if r > 0 {
                for m in &self.meta[done..done + r as usize] {
                    for k in 0..m.count {
                        sent(m.first_iov + k, true);
                    }
                }
                done += r as usize;
                continue;
            }
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            let m = self.meta[done];
            let gso_refused = m.count > 1
                && matches!(
                    err.raw_os_error(),
                    Some(libc::EIO | libc::EINVAL | libc::EOPNOTSUPP)
                );
            if gso_refused {
                tracing::warn!(error = %err, "UDP GSO refused; sending one datagram per message");
                self.gso = false;
                // Resend this message's datagrams one by one.
                let mut name = self.addrs[done];
                let namelen = self.msgs[done].msg_hdr.msg_namelen;
                for k in 0..m.count {
                    let iov = self.iovs[m.first_iov + k];
                    // SAFETY: iov points into a live buffer (the caller's contract).
                    let r = unsafe {
                        libc::sendto(
                            fd,
                            iov.iov_base,
                            iov.iov_len,
                            0,
                            (&mut name as *mut libc::sockaddr_storage).cast(),
                            namelen,
                        )
                    };
                    sent(m.first_iov + k, r >= 0);
                }
            } else {
                for k in 0..m.count {
                    sent(m.first_iov + k, false);
                }
            }
            done += 1;
        }
        self.iovs.clear();
        self.meta.clear();
    }
}

/// Receives a batch of datagrams with one `recvmmsg` into owned buffers; with `UDP_GRO` one
/// buffer may hold several datagrams of `segment` bytes each (the last may be shorter).
pub struct UdpReceiver {
    buf: Vec<u8>,
    slot: usize,
    msgs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    ctrl: Vec<[u64; CMSG_BUF / 8]>,
    received: usize,
}

/// One received message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// Who sent it (`None`: an address family we do not speak; drop).
    pub from: Option<SocketAddr>,
    /// Bytes in the buffer.
    pub len: usize,
    /// Size of each datagram in it (`len` when the kernel did not coalesce).
    pub segment: usize,
    /// The datagram was larger than the buffer.
    pub truncated: bool,
}

impl UdpReceiver {
    /// `count` buffers of `slot` bytes (65536 holds any GRO message).
    pub fn new(count: usize, slot: usize) -> Self {
        Self {
            buf: vec![0u8; count * slot],
            slot,
            // SAFETY (zeroed): plain C structures, all-zero is valid.
            msgs: (0..count).map(|_| unsafe { zeroed() }).collect(),
            iovs: (0..count)
                .map(|_| libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                })
                .collect(),
            addrs: (0..count).map(|_| unsafe { zeroed() }).collect(),
            ctrl: vec![[0u64; CMSG_BUF / 8]; count],
            received: 0,
        }
    }

    /// Waits (up to the socket's receive timeout) for at least one datagram, then takes what
    /// else is queued without waiting; returns how many messages arrived.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let base = self.buf.as_mut_ptr();
        for i in 0..self.msgs.len() {
            self.iovs[i] = libc::iovec {
                // SAFETY: i * slot is within buf.
                iov_base: unsafe { base.add(i * self.slot) }.cast(),
                iov_len: self.slot,
            };
            let mut hdr: libc::msghdr = unsafe { zeroed() };
            hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = &mut self.iovs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = self.ctrl[i].as_mut_ptr().cast();
            hdr.msg_controllen = CMSG_BUF as _;
            self.msgs[i] = libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            };
        }
        self.received = 0;
        // SAFETY: every msghdr points at live buffers owned by self.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                self.msgs.len() as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        self.received = r as usize;
        Ok(self.received)
    }

    /// What message `i` (of the last [`UdpReceiver::recv`]) holds.
    pub fn info(&self, i: usize) -> Received {
        let m = &self.msgs[i];
        let len = (m.msg_len as usize).min(self.slot);
        let mut segment = len;
        let hdr = &m.msg_hdr;
        // SAFETY: the kernel filled msg_controllen bytes of our control buffer.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(hdr);
            while !c.is_null() {
                if (*c).cmsg_level == SOL_UDP && (*c).cmsg_type == UDP_GRO {
                    let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                    if v > 0 {
                        segment = (v as usize).min(len.max(1));
                    }
                }
                c = libc::CMSG_NXTHDR(hdr, c);
            }
        }
        Received {
            from: from_storage(&self.addrs[i]),
            len,
            segment: segment.max(1),
            truncated: hdr.msg_flags & libc::MSG_TRUNC != 0,
        }
    }

    /// The buffer of message `i`, whole (its first [`Received::len`] bytes are the data).
    pub fn buffer_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.buf[i * self.slot..(i + 1) * self.slot]
    }

    /// All buffers, message `i` at `i * slot_len()`.
    pub fn buffers(&self) -> &[u8] {
        &self.buf
    }

    /// All buffers, writable (the receive path rewrites coalesced heads in place).
    pub fn buffers_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Size of one buffer.
    pub fn slot_len(&self) -> usize {
        self.slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    #[test]
    fn mapped_addresses_become_ipv4() {
        let mapped: SocketAddr = "[::ffff:198.18.0.1]:4500".parse().unwrap();
        assert_eq!(canonical(mapped), "198.18.0.1:4500".parse().unwrap());
        let v6: SocketAddr = "[2001:db8::1]:500".parse().unwrap();
        assert_eq!(canonical(v6), v6);
        let v4: SocketAddr = "198.18.0.2:500".parse().unwrap();
        assert_eq!(canonical(v4), v4);
    }

    /// One dual-stack socket receives from and sends to IPv4 and IPv6 peers, batched, and reports
    /// the IPv4 peer as IPv4.
    #[test]
    fn dual_stack_socket_serves_both_families() {
        let Ok(dual) = bind_dual_stack(0) else {
            return; // no IPv6 in this environment
        };
        dual.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let port = dual.local_addr().unwrap().port();
        let mut rx = UdpReceiver::new(4, 2048);
        for peer in ["127.0.0.1:0", "[::1]:0"] {
            let Ok(other) = UdpSocket::bind(peer) else {
                continue;
            };
            other
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let to = SocketAddr::new(other.local_addr().unwrap().ip(), port);
            other.send_to(b"hello", to).unwrap();
            assert_eq!(rx.recv(dual.as_raw_fd()).unwrap(), 1);
            let info = rx.info(0);
            assert_eq!(info.from, Some(other.local_addr().unwrap()));
            let mut tx = UdpSender::new(4, false);
            tx.push(other.local_addr().unwrap(), b"back");
            let mut ok = 0;
            // SAFETY: the literal lives until after the flush.
            unsafe { tx.flush(dual.as_raw_fd(), |_, sent| ok += usize::from(sent)) };
            assert_eq!(ok, 1);
            let mut buf = [0u8; 16];
            let (n, _) = other.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"back");
        }
    }

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        (a, b)
    }

    fn round_trip(gso: bool, gro: bool) {
        let (a, b) = pair();
        if gro {
            enable_gro(b.as_raw_fd()).unwrap();
        }
        let to = b.local_addr().unwrap();
        // 5 equal datagrams then a short one (one GSO message), then 3 of another size.
        let mut data: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1200]).collect();
        data.push(vec![5; 300]);
        data.extend((6..9u8).map(|i| vec![i; 700]));
        let mut tx = UdpSender::new(16, gso);
        for d in &data {
            tx.push(to, d);
        }
        let mut ok = vec![];
        // SAFETY: `data` is alive and unchanged.
        unsafe { tx.flush(a.as_raw_fd(), |i, s| ok.push((i, s))) };
        assert_eq!(ok, (0..9).map(|i| (i, true)).collect::<Vec<_>>());
        assert!(tx.is_empty());

        let mut rx = UdpReceiver::new(8, 65536);
        let mut got: Vec<Vec<u8>> = vec![];
        while got.len() < data.len() {
            let n = rx.recv(b.as_raw_fd()).unwrap();
            for i in 0..n {
                let info = rx.info(i);
                assert_eq!(info.from, Some(a.local_addr().unwrap()));
                assert!(!info.truncated);
                let buf = &rx.buffer_mut(i)[..info.len];
                got.extend(buf.chunks(info.segment).map(<[u8]>::to_vec));
            }
        }
        assert_eq!(got, data);
    }

    #[test]
    fn gso_send_and_gro_receive_round_trip() {
        round_trip(true, true);
        round_trip(true, false);
        round_trip(false, true);
        round_trip(false, false);
    }

    #[test]
    fn send_failure_is_reported_per_datagram() {
        let (a, _b) = pair();
        let mut tx = UdpSender::new(2, true);
        let big = vec![0u8; 70000]; // larger than any UDP datagram
        tx.push("127.0.0.1:9".parse().unwrap(), &big);
        tx.push("127.0.0.1:9".parse().unwrap(), &big[..10]);
        assert!(tx.is_full());
        let mut res = vec![];
        // SAFETY: `big` is alive and unchanged.
        unsafe { tx.flush(a.as_raw_fd(), |i, s| res.push((i, s))) };
        assert_eq!(res[0], (0, false));
        assert_eq!(res.len(), 2);
    }
}
