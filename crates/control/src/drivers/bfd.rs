//! BFD's I/O for the daemon: UDP sockets and the clock around the sans-IO `vgw-bfd` sessions, single
//! hop (RFC 5881: port 3784, TTL 255 sent and required on receive) and multihop (RFC 5883: port 4784,
//! TTL 255 sent, any TTL received), over IPv4 and IPv6.
//!
//! One task owns every session. Packets arrive on one receive socket per (local address, port), bound
//! with IP_FREEBIND because the local address may reach its TUN device only after the session is
//! configured; a small reader task per socket passes each datagram, with its TTL, to the session task,
//! which finds the session by Your Discriminator or, while that is zero, by (source, local) address
//! (RFC 5880 §6.3, RFC 5881 §3). Each session sends from a socket of its own bound to its local address
//! and a source port in 49152–65535 (RFC 5881 §4). The task sleeps until the earliest session deadline
//! (`Session::poll_timeout`): no polling loop.
//!
//! The caller declares the sessions it wants ([`BfdService::set_sessions`]) and hears only transitions
//! to and from Up ([`BfdEvent`]); [`BfdService::status`] is a snapshot for the API and status page.
//!
//! Peers (tests/interop/bfd.sh): FRR's bfdd signals AdminDown when its session is shut, which arrives
//! here as `NeighborSignaledDown`; BIRD 2.0 removes a disabled session silently, so that is noticed
//! only after the detection time, as `DetectionTimeExpired`.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use vgw_bfd::{Config, Diagnostic, Event, Session, State};

/// Single-hop BFD control port (RFC 5881 §4).
pub const SINGLE_HOP_PORT: u16 = 3784;
/// Multihop BFD control port (RFC 5883 §5).
pub const MULTIHOP_PORT: u16 = 4784;
/// The TTL / hop limit we send with, and the one single-hop packets must arrive with (RFC 5881 §5).
const TTL: u8 = 255;
/// Source ports for control packets (RFC 5881 §4).
const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// How long a removed session keeps telling the peer AdminDown before it is dropped (RFC 5880 §6.8.16).
const DRAIN_FOR: Duration = Duration::from_secs(2);
/// How often a socket that could not be opened is retried.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// The smallest interval accepted from a spec, so a zero cannot make the task spin.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// One BFD session the caller wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BfdSpec {
    /// Our address (the source of our packets, where the peer sends to).
    pub local: IpAddr,
    /// The peer's address.
    pub peer: IpAddr,
    /// Desired Min TX Interval.
    pub min_tx: Duration,
    /// Required Min RX Interval.
    pub min_rx: Duration,
    /// Detect Mult.
    pub multiplier: u8,
    /// Multihop (RFC 5883) rather than single hop (RFC 5881).
    pub multihop: bool,
}

/// A session's transition to or from Up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BfdEvent {
    /// The path to `peer` is up.
    Up { peer: IpAddr },
    /// The path to `peer` went down; `diagnostic` is RFC 5880 §4.1's name for why, e.g.
    /// `DetectionTimeExpired`, `NeighborSignaledDown` or `AdminDown`.
    Down { peer: IpAddr, diagnostic: String },
}

/// One session as the API and the status page show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BfdSessionStatus {
    pub peer: IpAddr,
    pub local: IpAddr,
    pub multihop: bool,
    /// AdminDown, Down, Init or Up.
    pub state: String,
    /// The state the peer last reported.
    pub remote_state: String,
    /// Our diagnostic (why the session is or last went down).
    pub diagnostic: String,
    pub local_discriminator: u32,
    pub remote_discriminator: u32,
    /// The negotiated periodic transmit interval (before jitter), none while the peer wants none.
    pub tx_interval_ms: Option<u64>,
    /// The detection time in force, once the peer has been heard.
    pub detection_time_ms: Option<u64>,
    /// When the session last came Up (RFC 3339), none while not Up.
    pub up_since: Option<String>,
    pub packets_in: u64,
    pub packets_out: u64,
    /// Packets for this session that were refused (bad TTL, failed RFC 5880 §6.8.6 checks).
    pub packets_dropped: u64,
    pub send_errors: u64,
    /// The last socket error (opening or sending), if any.
    pub last_error: Option<String>,
}

/// The handle to the BFD task; clones share it. The task stops (telling every peer AdminDown) when
/// the last handle is dropped.
#[derive(Clone)]
pub struct BfdService {
    commands: mpsc::UnboundedSender<Vec<BfdSpec>>,
    shared: Arc<Shared>,
}

struct Shared {
    status: Mutex<Vec<BfdSessionStatus>>,
    /// Packets no session would take (unknown discriminator or addresses, malformed).
    dropped: AtomicU64,
}

impl BfdService {
    /// Starts the BFD task on the current tokio runtime.
    pub fn spawn() -> (BfdService, mpsc::UnboundedReceiver<BfdEvent>) {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (events, event_rx) = mpsc::unbounded_channel();
        let (packets, packet_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            status: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
        });
        let task = Task {
            sessions: HashMap::new(),
            by_discriminator: HashMap::new(),
            receivers: HashMap::new(),
            receivers_failed: HashMap::new(),
            events,
            packets,
            shared: shared.clone(),
            random: RandomState::new(),
            counter: 0,
        };
        tokio::spawn(task.run(command_rx, packet_rx));
        (BfdService { commands, shared }, event_rx)
    }

    /// Declarative: sessions not in the list are removed (sending AdminDown first), new ones added,
    /// changed timers applied with a Poll sequence (RFC 5880 §6.8.3). A session is identified by
    /// (local, peer, multihop); specs whose addresses are of different families are ignored, and
    /// intervals below 10 ms are raised to it. Removing an Up session reports Down with `AdminDown`.
    pub fn set_sessions(&self, specs: Vec<BfdSpec>) {
        let _ = self.commands.send(specs);
    }

    /// A snapshot of every session, ordered by peer then local address.
    pub fn status(&self) -> Vec<BfdSessionStatus> {
        self.shared
            .status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Received packets that no session took (malformed, or for no configured session).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    peer: IpAddr,
    local: IpAddr,
    multihop: bool,
}

impl Key {
    fn port(&self) -> u16 {
        if self.multihop {
            MULTIHOP_PORT
        } else {
            SINGLE_HOP_PORT
        }
    }
}

struct Entry {
    spec: BfdSpec,
    session: Session,
    /// Non-blocking and never awaited: a datagram that cannot leave at once is counted as a send
    /// error, not queued (a stale BFD packet is worse than none).
    tx: Option<std::net::UdpSocket>,
    tx_retry_at: Option<Instant>,
    up_since: Option<SystemTime>,
    packets_in: u64,
    packets_out: u64,
    packets_dropped: u64,
    send_errors: u64,
    last_error: Option<String>,
    /// Being removed: AdminDown is sent until then.
    draining: Option<Instant>,
}

/// A datagram from a reader task.
struct Received {
    local: IpAddr,
    port: u16,
    source: SocketAddr,
    ttl: Option<u8>,
    data: Vec<u8>,
}

struct Task {
    sessions: HashMap<Key, Entry>,
    by_discriminator: HashMap<u32, Key>,
    receivers: HashMap<(IpAddr, u16), JoinHandle<()>>,
    /// Receive sockets that could not be opened, with when to retry.
    receivers_failed: HashMap<(IpAddr, u16), Instant>,
    events: mpsc::UnboundedSender<BfdEvent>,
    packets: mpsc::UnboundedSender<Received>,
    shared: Arc<Shared>,
    random: RandomState,
    counter: u64,
}

fn diagnostic_name(d: Diagnostic) -> String {
    format!("{d:?}")
}

fn state_name(s: State) -> String {
    format!("{s:?}")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Task {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Vec<BfdSpec>>,
        mut packets: mpsc::UnboundedReceiver<Received>,
    ) {
        loop {
            let wake = self
                .next_deadline()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                specs = commands.recv() => match specs {
                    Some(specs) => self.set_sessions(specs, Instant::now()),
                    None => {
                        self.shutdown();
                        return;
                    }
                },
                Some(packet) = packets.recv() => self.receive(packet, Instant::now()),
                _ = tokio::time::sleep_until(wake) => {}
            }
            self.drive(Instant::now());
            self.publish();
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let sessions = self.sessions.values().flat_map(|e| {
            [e.session.poll_timeout(), e.draining, e.tx_retry_at]
                .into_iter()
                .flatten()
        });
        sessions
            .chain(self.receivers_failed.values().copied())
            .min()
    }

    fn discriminator(&mut self) -> u32 {
        loop {
            let mut h = self.random.build_hasher();
            self.counter += 1;
            h.write_u64(self.counter);
            let d = h.finish() as u32;
            if d != 0 && !self.by_discriminator.contains_key(&d) {
                return d;
            }
        }
    }

    fn set_sessions(&mut self, specs: Vec<BfdSpec>, now: Instant) {
        let mut wanted: HashMap<Key, BfdSpec> = HashMap::new();
        for mut spec in specs {
            if spec.local.is_ipv4() != spec.peer.is_ipv4() {
                tracing::warn!(local = %spec.local, peer = %spec.peer, "BFD session with mixed address families ignored");
                continue;
            }
            spec.min_tx = spec.min_tx.max(MIN_INTERVAL);
            spec.min_rx = spec.min_rx.max(MIN_INTERVAL);
            spec.multiplier = spec.multiplier.max(1);
            let key = Key {
                peer: spec.peer,
                local: spec.local,
                multihop: spec.multihop,
            };
            wanted.insert(key, spec);
        }
        for (key, entry) in self.sessions.iter_mut() {
            if !wanted.contains_key(key) && entry.draining.is_none() {
                entry.session.admin_down(now);
                entry.draining = Some(now + DRAIN_FOR);
            }
        }
        for (key, spec) in wanted {
            if let Some(entry) = self.sessions.get_mut(&key) {
                if entry.draining.take().is_some() {
                    entry.session.enable(now);
                }
                if (spec.min_tx, spec.min_rx) != (entry.spec.min_tx, entry.spec.min_rx) {
                    entry.session.set_timers(spec.min_tx, spec.min_rx, now);
                }
                if spec.multiplier != entry.spec.multiplier {
                    entry.session.set_detect_mult(spec.multiplier, now);
                }
                entry.spec = spec;
                continue;
            }
            let discriminator = self.discriminator();
            let session = Session::new(
                Config {
                    discriminator,
                    desired_min_tx: spec.min_tx,
                    required_min_rx: spec.min_rx,
                    detect_mult: spec.multiplier,
                },
                now,
            );
            self.by_discriminator.insert(discriminator, key);
            self.sessions.insert(
                key,
                Entry {
                    spec,
                    session,
                    tx: None,
                    tx_retry_at: None,
                    up_since: None,
                    packets_in: 0,
                    packets_out: 0,
                    packets_dropped: 0,
                    send_errors: 0,
                    last_error: None,
                    draining: None,
                },
            );
            self.ensure_receiver(key.local, key.port(), now);
        }
    }

    /// Opens the receive socket for (local, port) unless it is open; failures are retried.
    fn ensure_receiver(&mut self, local: IpAddr, port: u16, now: Instant) {
        if self.receivers.contains_key(&(local, port)) {
            return;
        }
        match receive_socket(local, port) {
            Ok(socket) => {
                self.receivers_failed.remove(&(local, port));
                let packets = self.packets.clone();
                let task = tokio::spawn(read_loop(socket, local, port, packets));
                self.receivers.insert((local, port), task);
            }
            Err(e) => {
                tracing::warn!(%local, port, error = %e, "BFD receive socket not opened yet");
                self.receivers_failed
                    .insert((local, port), now + RETRY_EVERY);
            }
        }
    }

    fn receive(&mut self, r: Received, now: Instant) {
        let multihop = r.port == MULTIHOP_PORT;
        let your_discriminator = r
            .data
            .get(8..12)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let key = if your_discriminator != 0 {
            self.by_discriminator.get(&your_discriminator).copied()
        } else {
            Some(Key {
                peer: r.source.ip(),
                local: r.local,
                multihop,
            })
        };
        // The discriminator must also belong to a session on this socket and from this peer, so a
        // stray or spoofed packet cannot drive another session (RFC 5881 §3, RFC 5883 §3).
        let entry = key
            .filter(|k| k.local == r.local && k.multihop == multihop && k.peer == r.source.ip())
            .and_then(|k| self.sessions.get_mut(&k));
        let Some(entry) = entry else {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(source = %r.source, local = %r.local, your_discriminator, "BFD packet for no session dropped");
            return;
        };
        // RFC 5881 §5 (GTSM): a single-hop packet must not have crossed a router.
        if !multihop && r.ttl != Some(TTL) {
            entry.packets_dropped += 1;
            tracing::debug!(source = %r.source, ttl = ?r.ttl, "single-hop BFD packet with TTL below 255 dropped");
            return;
        }
        match entry.session.handle_packet(now, &r.data) {
            Ok(()) => entry.packets_in += 1,
            Err(e) => {
                entry.packets_dropped += 1;
                tracing::debug!(source = %r.source, error = ?e, "BFD packet dropped");
            }
        }
    }

    /// Runs due timers, sends what the sessions queued, reports events and drops drained sessions.
    fn drive(&mut self, now: Instant) {
        let mut gone = Vec::new();
        for (key, entry) in self.sessions.iter_mut() {
            if entry.session.poll_timeout().is_some_and(|t| t <= now) {
                entry.session.handle_timeout(now);
            }
            let mut queued = Vec::new();
            while let Some(packet) = entry.session.poll_transmit() {
                queued.push(packet);
            }
            if !queued.is_empty() {
                if entry.tx.is_none() && entry.tx_retry_at.is_none_or(|t| t <= now) {
                    match transmit_socket(key.local) {
                        Ok(s) => {
                            entry.tx = Some(s);
                            entry.tx_retry_at = None;
                        }
                        Err(e) => {
                            tracing::debug!(local = %key.local, error = %e, "BFD transmit socket not opened yet");
                            entry.last_error = Some(format!("transmit socket: {e}"));
                            entry.tx_retry_at = Some(now + RETRY_EVERY);
                        }
                    }
                }
                let to = SocketAddr::new(key.peer, key.port());
                for packet in queued {
                    match entry.tx.as_ref().map(|s| s.send_to(&packet, to)) {
                        Some(Ok(_)) => entry.packets_out += 1,
                        Some(Err(e)) => {
                            entry.send_errors += 1;
                            entry.last_error = Some(format!("send: {e}"));
                            tracing::debug!(peer = %key.peer, error = %e, "BFD send failed");
                        }
                        None => entry.send_errors += 1,
                    }
                }
            }
            while let Some(event) = entry.session.poll_event() {
                let event = match event {
                    Event::Up => {
                        entry.up_since = Some(SystemTime::now());
                        BfdEvent::Up { peer: key.peer }
                    }
                    Event::Down(d) => {
                        entry.up_since = None;
                        BfdEvent::Down {
                            peer: key.peer,
                            diagnostic: diagnostic_name(d),
                        }
                    }
                };
                tracing::info!(peer = %key.peer, local = %key.local, ?event, "BFD session changed");
                let _ = self.events.send(event);
            }
            if entry.draining.is_some_and(|t| t <= now) {
                gone.push(*key);
            }
        }
        for key in gone {
            if let Some(entry) = self.sessions.remove(&key) {
                self.by_discriminator.remove(&entry.session.discriminator());
            }
        }
        // Close receive sockets no session uses; retry the ones that failed.
        let used: HashSet<(IpAddr, u16)> =
            self.sessions.keys().map(|k| (k.local, k.port())).collect();
        self.receivers.retain(|k, task| {
            let keep = used.contains(k);
            if !keep {
                task.abort();
            }
            keep
        });
        self.receivers_failed.retain(|k, _| used.contains(k));
        let due: Vec<(IpAddr, u16)> = self
            .receivers_failed
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(k, _)| *k)
            .collect();
        for (local, port) in due {
            self.ensure_receiver(local, port, now);
        }
    }

    fn publish(&self) {
        let mut rows: Vec<(Key, BfdSessionStatus)> = self
            .sessions
            .iter()
            .map(|(key, e)| {
                let s = &e.session;
                (
                    *key,
                    BfdSessionStatus {
                        peer: key.peer,
                        local: key.local,
                        multihop: key.multihop,
                        state: state_name(s.state()),
                        remote_state: state_name(s.remote_state()),
                        diagnostic: diagnostic_name(s.diagnostic()),
                        local_discriminator: s.discriminator(),
                        remote_discriminator: s.remote_discriminator(),
                        tx_interval_ms: s.transmit_interval().map(millis),
                        detection_time_ms: s.detection_time().map(millis),
                        up_since: e.up_since.map(|t| {
                            crate::ops::diaglog::rfc3339(
                                t.duration_since(UNIX_EPOCH).map_or(0, millis),
                            )
                        }),
                        packets_in: e.packets_in,
                        packets_out: e.packets_out,
                        packets_dropped: e.packets_dropped,
                        send_errors: e.send_errors,
                        last_error: e.last_error.clone(),
                    },
                )
            })
            .collect();
        rows.sort_by_key(|(k, _)| *k);
        if let Ok(mut status) = self.shared.status.lock() {
            *status = rows.into_iter().map(|(_, s)| s).collect();
        }
    }

    /// The last handle is gone: every peer hears AdminDown once.
    fn shutdown(&mut self) {
        let now = Instant::now();
        for entry in self.sessions.values_mut() {
            entry.session.admin_down(now);
            entry.draining = Some(now);
        }
        self.drive(now);
        for (_, task) in self.receivers.drain() {
            task.abort();
        }
        self.publish();
    }
}

async fn read_loop(
    socket: UdpSocket,
    local: IpAddr,
    port: u16,
    packets: mpsc::UnboundedSender<Received>,
) {
    // Control packets are 24 bytes (more with authentication); anything longer is not BFD.
    let mut buf = [0u8; 512];
    loop {
        let fd = socket.as_raw_fd();
        match socket
            .async_io(Interest::READABLE, || recv_with_ttl(fd, &mut buf))
            .await
        {
            Ok((n, source, ttl)) => {
                let data = buf[..n.min(buf.len())].to_vec();
                let packet = Received {
                    local,
                    port,
                    source,
                    ttl,
                    data,
                };
                if packets.send(packet).is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(%local, port, error = %e, "BFD receive failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn new_udp(local: IpAddr) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(SocketAddr::new(local, 0)),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    // The address may not be on its interface yet (a TUN that comes up with the tunnel).
    if local.is_ipv4() {
        socket.set_freebind_v4(true)?;
    } else {
        socket.set_only_v6(true)?;
        socket.set_freebind_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// The receive socket for (local, port), reporting each datagram's TTL / hop limit.
fn receive_socket(local: IpAddr, port: u16) -> io::Result<UdpSocket> {
    let socket = new_udp(local)?;
    if local.is_ipv4() {
        set_recv_ttl_v4(&socket)?;
    } else {
        socket.set_recv_hoplimit_v6(true)?;
    }
    socket.bind(&SocketAddr::new(local, port).into())?;
    UdpSocket::from_std(socket.into())
}

/// A session's transmit socket: TTL 255 (RFC 5881 §5, RFC 5883 §5) and a source port from 49152–65535
/// (RFC 5881 §4), starting at a random one.
fn transmit_socket(local: IpAddr) -> io::Result<std::net::UdpSocket> {
    let socket = new_udp(local)?;
    if local.is_ipv4() {
        socket.set_ttl_v4(u32::from(TTL))?;
    } else {
        socket.set_unicast_hops_v6(u32::from(TTL))?;
    }
    let span = u32::from(SOURCE_PORTS.end() - SOURCE_PORTS.start()) + 1;
    let start = (RandomState::new().build_hasher().finish() % u64::from(span)) as u32;
    let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no free source port");
    for i in 0..span {
        let port = SOURCE_PORTS.start() + ((start + i) % span) as u16;
        match socket.bind(&SocketAddr::new(local, port).into()) {
            Ok(()) => return Ok(socket.into()),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

#[allow(unsafe_code)]
fn set_recv_ttl_v4(socket: &Socket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and a pointer to a live c_int of the stated size.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_RECVTTL,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One datagram with its source and the TTL / hop limit it arrived with (IP_TTL / IPV6_HOPLIMIT
/// control messages); a datagram larger than `buf` is truncated, and then refused by the decoder's
/// length check or taken as its first bytes, like any other implementation reading a fixed buffer.
#[allow(unsafe_code)]
fn recv_with_ttl(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<u8>)> {
    // SAFETY (whole function): every pointer handed to recvmsg points at a live local of the stated
    // length; the CMSG_* walk stays within the msg_controllen the kernel filled in; sockaddr_storage
    // is read as sockaddr_in/sockaddr_in6 only after checking ss_family, and is large enough for both.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 16];
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut ttl = None;
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let (level, kind) = ((*c).cmsg_level, (*c).cmsg_type);
            if (level == libc::IPPROTO_IP && kind == libc::IP_TTL)
                || (level == libc::IPPROTO_IPV6 && kind == libc::IPV6_HOPLIMIT)
            {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                ttl = u8::try_from(v).ok();
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let source = match i32::from(addr.ss_family) {
        libc::AF_INET => {
            let a =
                unsafe { &*(&addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))),
                u16::from_be(a.sin_port),
            )
        }
        libc::AF_INET6 => {
            let a =
                unsafe { &*(&addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)),
                u16::from_be(a.sin6_port),
            )
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "datagram from an unknown address family",
            ));
        }
    };
    Ok((n as usize, source, ttl))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(local: &str, peer: &str, multihop: bool) -> BfdSpec {
        BfdSpec {
            local: local.parse().unwrap(),
            peer: peer.parse().unwrap(),
            min_tx: Duration::from_millis(50),
            min_rx: Duration::from_millis(50),
            multiplier: 3,
            multihop,
        }
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<BfdEvent>) -> BfdEvent {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an event within 5 s")
            .expect("the service runs")
    }

    /// Two services on loopback addresses come Up, single hop and multihop at once; garbage and a
    /// stray packet are counted and dropped; removing one side's session tells the other AdminDown.
    #[tokio::test]
    async fn two_services_come_up_and_removal_signals_down() {
        let (a, mut a_events) = BfdService::spawn();
        let (b, mut b_events) = BfdService::spawn();
        a.set_sessions(vec![
            spec("127.0.0.61", "127.0.0.62", false),
            spec("127.0.0.61", "127.0.0.62", true),
        ]);
        b.set_sessions(vec![
            spec("127.0.0.62", "127.0.0.61", false),
            spec("127.0.0.62", "127.0.0.61", true),
        ]);
        for (rx, peer) in [(&mut a_events, "127.0.0.62"), (&mut b_events, "127.0.0.61")] {
            for _ in 0..2 {
                assert_eq!(
                    next(rx).await,
                    BfdEvent::Up {
                        peer: peer.parse().unwrap()
                    }
                );
            }
        }
        let status = a.status();
        assert_eq!(status.len(), 2);
        assert!(
            status
                .iter()
                .all(|s| s.state == "Up" && s.remote_discriminator != 0 && s.up_since.is_some())
        );
        assert_eq!(status[0].detection_time_ms, Some(150));
        assert_eq!(status[0].tx_interval_ms, Some(50));

        // Garbage to the single-hop port, and a well-formed packet for nobody.
        let junk = std::net::UdpSocket::bind("127.0.0.63:0").unwrap();
        junk.set_ttl(255).unwrap();
        junk.send_to(b"not bfd", "127.0.0.61:3784").unwrap();
        junk.send_to(
            &[
                0x20, 0xc0, 3, 24, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0,
            ],
            "127.0.0.61:3784",
        )
        .unwrap();
        // A well-formed packet from the peer's address that crossed a router (TTL 64) is refused by
        // the single-hop session (RFC 5881 §5).
        let single = status.iter().find(|s| !s.multihop).unwrap();
        let hopped = std::net::UdpSocket::bind("127.0.0.62:0").unwrap();
        hopped.set_ttl(64).unwrap();
        let mut p = vgw_bfd::ControlPacket::decode(&[
            0x20, 0x40, 3, 24, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0,
        ])
        .unwrap();
        p.my_discriminator = single.remote_discriminator;
        p.your_discriminator = single.local_discriminator;
        p.state = vgw_bfd::State::Down;
        hopped.send_to(&p.encode(), "127.0.0.61:3784").unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(a.dropped() >= 2, "{}", a.dropped());
        let after = a.status();
        assert!(
            after.iter().all(|s| s.state == "Up" && s.send_errors == 0),
            "{after:?}"
        );
        assert_eq!(
            after.iter().find(|s| !s.multihop).unwrap().packets_dropped,
            1
        );

        // Timers change with a Poll sequence; the sessions stay up.
        let mut slower = spec("127.0.0.61", "127.0.0.62", false);
        slower.min_tx = Duration::from_millis(100);
        a.set_sessions(vec![slower, spec("127.0.0.61", "127.0.0.62", true)]);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let s = b.status();
        let single = s.iter().find(|s| !s.multihop).unwrap();
        assert_eq!(single.detection_time_ms, Some(300));
        assert!(s.iter().all(|s| s.state == "Up"));

        // a drops its multihop session: a reports Down (AdminDown), b hears it from the peer.
        a.set_sessions(vec![spec("127.0.0.61", "127.0.0.62", false)]);
        assert_eq!(
            next(&mut a_events).await,
            BfdEvent::Down {
                peer: "127.0.0.62".parse().unwrap(),
                diagnostic: "AdminDown".into()
            }
        );
        assert_eq!(
            next(&mut b_events).await,
            BfdEvent::Down {
                peer: "127.0.0.61".parse().unwrap(),
                diagnostic: "NeighborSignaledDown".into()
            }
        );
        tokio::time::sleep(DRAIN_FOR + Duration::from_millis(300)).await;
        assert_eq!(a.status().len(), 1);

        // The last handle of a dropped: a's task says AdminDown on its way out.
        drop(a);
        assert_eq!(
            next(&mut b_events).await,
            BfdEvent::Down {
                peer: "127.0.0.61".parse().unwrap(),
                diagnostic: "NeighborSignaledDown".into()
            }
        );
    }
}
