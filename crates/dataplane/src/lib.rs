//! The data plane: TUN device, UDP 500/4500 sockets, ESP forwarding, counters, kernel routes.
//!
//! It is the only layer that touches packets at line rate. Two worker threads own the SAs outright,
//! so the packet path takes no lock: the *transmit* thread reads inner packets from the TUN, finds the
//! tunnel by longest-prefix match, seals them with the newest outbound SA whose selectors match, and
//! sends ESP-in-UDP (RFC 3948); the *receive* thread reads UDP 4500, hands IKE (non-ESP marker) to the
//! control plane, opens ESP with the inbound SA found by SPI, enforces the traffic selectors and writes
//! the inner packet to the TUN. The control plane changes SAs and routes with commands that each
//! thread drains before every batch, so a command sent while a worker slept applies before the next
//! packet; counters are per-tunnel atomics with a single writer each, added to once per batch.
//!
//! Decision: ESP is always UDP-encapsulated on port 4500. This kernel has no ESP, strongSwan's
//! kernel-libipsec peer only speaks ESP-in-UDP, and RFC 7296 §2.23 lets an endpoint claim to be behind
//! a NAT to force it; it also survives every NAT between the sites.
//!
//! Decision: every boundary is batched, because system calls and per-packet kernel work, not the
//! cipher, were the cost (docs/performance.md):
//!
//! - TUN with `IFF_VNET_HDR` and TSO4/TSO6/USO/checksum offloads (`tun-rs` `offload(true)`): one
//!   `read` brings a TCP super-packet of up to 64 KB, which [`offload::Segments`] splits straight
//!   into transmit slots with ESP headroom (fresh IP/TCP lengths, sequence numbers and checksums);
//! - every segment is sealed in place where it lies; the batch leaves in one `sendmmsg` whose
//!   messages are UDP GSO trains of same-sized ESP packets to one peer ([`udpio::UdpSender`]);
//! - one `recvmmsg` with `UDP_GRO` takes up to 32 messages, each possibly a train of datagrams
//!   ([`udpio::UdpReceiver`]); each datagram is opened in place;
//! - consecutive TCP segments of one flow are coalesced ([`offload::Coalescer`]) and written to the
//!   TUN as one GSO super-packet with one `writev` (virtio header, head packet, member payloads:
//!   no copy); everything else is written one packet per `writev`.
//!
//! The TUN's own batch helpers (`recv_multiple`/`send_multiple` with its `GROTable`) are not used:
//! they split into and coalesce from buffers of their own, so each packet would be copied once
//! more; the split and the coalescer here work in the transmit slots and receive buffers
//! themselves. Plain libc is used for the UDP side (see [`udpio`]). One TUN queue and one thread per
//! direction: on the two cores this runs on, both gateways, iperf3 and the kernel's forwarding
//! already keep both cores busy, so fewer system calls and copies pay and more threads do not.
//! Without offloads (older kernels) the same loops run with one packet per TUN read and write.

pub mod capture;
pub mod fib;
pub mod ikequeue;
pub mod offload;
pub mod packet;
pub mod routes;
pub mod udpio;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tun_rs::{DeviceBuilder, SyncDevice};
pub use vgw_esp::sa::LimitState;
use vgw_esp::{InboundSa, OutboundSa, Spi};

pub use capture::{CaptureSink, CaptureTap, Direction};
pub use fib::{Fib, TunnelId};

/// Hashes the `u32` keys of the workers' tables (tunnel IDs, SPIs we chose at random) with one
/// multiplication instead of SipHash: lookups of unknown keys insert nothing, so an attacker
/// cannot grow a bucket.
#[derive(Default, Clone, Copy)]
struct U32Hasher(u64);

impl std::hash::Hasher for U32Hasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<U32Hasher>>;

/// How the data plane is set up.
#[derive(Clone, Debug)]
pub struct DataPlaneConfig {
    /// Name of the TUN device, e.g. `vgw0`.
    pub tun_name: String,
    /// MTU of the TUN: the inner packet size that fits the path after ESP-in-UDP overhead.
    pub mtu: u16,
    /// Address the UDP sockets bind to (unspecified by default, so a gateway behind 1:1 NAT works).
    pub bind_addr: IpAddr,
    /// IKE port (500).
    pub ike_port: u16,
    /// NAT-T port for IKE and ESP-in-UDP (4500).
    pub natt_port: u16,
    /// TCP MSS clamp applied to SYNs in both directions (Azure recommends 1350).
    pub mss_clamp: u16,
}

impl Default for DataPlaneConfig {
    fn default() -> Self {
        Self {
            tun_name: "vgw0".into(),
            mtu: 1400,
            bind_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ike_port: 500,
            natt_port: 4500,
            mss_clamp: 1350,
        }
    }
}

/// An IKE message received on port 500 or 4500 (marker stripped), for the control plane.
#[derive(Clone, Debug)]
pub struct IkeDatagram {
    /// Our port it arrived on (500 or 4500).
    pub local_port: u16,
    /// Who sent it.
    pub remote: SocketAddr,
    /// The IKE message.
    pub data: Vec<u8>,
}

/// An inclusive address range, as IKE traffic selectors express them (RFC 7296 §3.13.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrRange {
    /// First address.
    pub start: IpAddr,
    /// Last address.
    pub end: IpAddr,
}

impl AddrRange {
    /// Every address of one family.
    pub fn any_v4() -> Self {
        Self {
            start: Ipv4Addr::UNSPECIFIED.into(),
            end: Ipv4Addr::BROADCAST.into(),
        }
    }

    /// The range of a prefix.
    pub fn from_prefix(net: IpNet) -> Self {
        Self {
            start: net.network(),
            end: net.broadcast(),
        }
    }

    /// Whether `addr` is inside.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.start, self.end, addr) {
            (IpAddr::V4(s), IpAddr::V4(e), IpAddr::V4(a)) => s <= a && a <= e,
            (IpAddr::V6(s), IpAddr::V6(e), IpAddr::V6(a)) => s <= a && a <= e,
            _ => false,
        }
    }
}

/// The traffic selectors of a Child SA: which inner packets it may carry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selectors {
    /// Our side (source of outbound packets).
    pub local: Vec<AddrRange>,
    /// The peer's side (destination of outbound packets).
    pub remote: Vec<AddrRange>,
}

impl Selectors {
    /// True when an outbound packet from `src` to `dst` belongs to this SA.
    pub fn allows_outbound(&self, src: IpAddr, dst: IpAddr) -> bool {
        self.local.iter().any(|r| r.contains(src)) && self.remote.iter().any(|r| r.contains(dst))
    }

    /// True when an inbound packet from `src` to `dst` belongs to this SA.
    pub fn allows_inbound(&self, src: IpAddr, dst: IpAddr) -> bool {
        self.remote.iter().any(|r| r.contains(src)) && self.local.iter().any(|r| r.contains(dst))
    }
}

/// Per-tunnel counters, each written by one worker thread and read by anyone.
#[derive(Debug, Default)]
pub struct TunnelCounters {
    /// Inner bytes received from the peer and delivered.
    pub ingress_bytes: AtomicU64,
    /// Inner bytes sent to the peer.
    pub egress_bytes: AtomicU64,
    /// Packets received and delivered.
    pub ingress_packets: AtomicU64,
    /// Packets sent.
    pub egress_packets: AtomicU64,
    /// Inbound packets outside the SA's selectors (Azure's TunnelIngressPacketDropTSMismatch).
    pub ingress_drop_ts_mismatch: AtomicU64,
    /// Outbound packets routed here that no SA's selectors cover (TunnelEgressPacketDropTSMismatch).
    pub egress_drop_ts_mismatch: AtomicU64,
    /// Inbound packets dropped for other reasons: authentication, replay, malformed.
    pub ingress_drop: AtomicU64,
    /// Outbound packets dropped for other reasons: no SA, send failure.
    pub egress_drop: AtomicU64,
    /// Milliseconds since the data plane started when the last valid ESP packet arrived (0: never).
    pub last_ingress_ms: AtomicU64,
}

/// A Child SA that reached its soft or hard volume limit (RFC 4301 §4.4.2.1), reported once
/// per limit so that the control plane asks IKE for a rekey before the SA stops carrying traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifetimeEvent {
    /// The tunnel (connection or client) the SA belongs to.
    pub tunnel: TunnelId,
    /// The SA's SPI (ours for inbound, the peer's for outbound).
    pub spi: Spi,
    /// True for the sending direction.
    pub outbound: bool,
    /// The limit reached.
    pub state: LimitState,
    /// Inner bytes the SA had protected when it crossed the limit.
    pub bytes: u64,
}

/// Lifetime events from the workers to the control plane. A worker takes the lock only when an
/// SA crosses a limit (twice per SA at most), never per packet.
#[derive(Debug, Default)]
pub struct LifetimeEvents {
    pending: Mutex<Vec<LifetimeEvent>>,
    notify: tokio::sync::Notify,
}

impl LifetimeEvents {
    fn report(&self, event: LifetimeEvent) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event);
        self.notify.notify_one();
    }

    /// Takes the events reported since the last call.
    pub fn take(&self) -> Vec<LifetimeEvent> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Completes when an event was reported (at once if one came since the last wait).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

/// Global drop counters by cause.
#[derive(Debug, Default)]
pub struct DropCounters {
    /// Outbound packets with no route into a tunnel.
    pub no_route: AtomicU64,
    /// ESP with an SPI we do not know.
    pub unknown_spi: AtomicU64,
    /// ESP that failed authentication.
    pub auth_failed: AtomicU64,
    /// Replayed ESP.
    pub replayed: AtomicU64,
    /// Malformed datagrams.
    pub malformed: AtomicU64,
    /// IKE datagrams not admitted to the control plane (full queue, rate limit, malformed header;
    /// see [`ikequeue::IkeQueueCounters`] for the reason).
    pub ike_queue_full: AtomicU64,
}

enum TxCommand {
    Install {
        tunnel: TunnelId,
        peer: SocketAddr,
        sa: Box<OutboundSa>,
        selectors: Selectors,
        counters: Arc<TunnelCounters>,
    },
    Remove {
        tunnel: TunnelId,
        spi: Spi,
    },
    SetPeer {
        tunnel: TunnelId,
        peer: SocketAddr,
    },
    Route {
        prefix: IpNet,
        tunnel: Option<TunnelId>,
    },
    RouteMultipath {
        prefix: IpNet,
        tunnels: [TunnelId; fib::MAX_PATHS],
        count: usize,
    },
    RemoveTunnel {
        tunnel: TunnelId,
    },
}

enum RxCommand {
    Install {
        tunnel: TunnelId,
        sa: Box<InboundSa>,
        selectors: Selectors,
        counters: Arc<TunnelCounters>,
    },
    Remove {
        spi: Spi,
    },
    RemoveTunnel {
        tunnel: TunnelId,
    },
}

/// The running data plane. Dropping it stops the workers.
pub struct DataPlane {
    tx: Mutex<Sender<TxCommand>>,
    rx: Mutex<Sender<RxCommand>>,
    ike_socket: Arc<UdpSocket>,
    natt_socket: Arc<UdpSocket>,
    counters: Mutex<HashMap<TunnelId, Arc<TunnelCounters>>>,
    drops: Arc<DropCounters>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    tun_index: u32,
    started: Instant,
    tap: Arc<CaptureTap>,
    lifetime: Arc<LifetimeEvents>,
}

/// How the UDP sockets are bound for a configured `bind_addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindPlan {
    /// One `AF_INET6` socket on `[::]` with `IPV6_V6ONLY` off: IPv4 peers arrive as IPv4-mapped
    /// addresses (RFC 4291 §2.5.5.2), which [`udpio::canonical`] turns back into IPv4, and IPv4
    /// destinations are sent as `sockaddr_in` (Linux hands those to the IPv4 path).
    DualStack,
    /// One socket of the address's own family (a specific address, or IPv6 switched off in the
    /// kernel).
    Single(IpAddr),
}

impl BindPlan {
    /// The plan for `bind_addr`: the IPv4 wildcard (the default) and the IPv6 wildcard mean both
    /// families; a specific address means its family only.
    pub fn for_bind_addr(bind_addr: IpAddr) -> Self {
        if bind_addr.is_unspecified() {
            BindPlan::DualStack
        } else {
            BindPlan::Single(bind_addr)
        }
    }
}

/// Bytes that ESP-in-UDP adds around an inner packet in the worst case (RFC 3948 §2.1, RFC 4303
/// §2): outer IP header (20 for IPv4, 40 for IPv6, RFC 8200 §3), UDP 8, ESP header 8, IV 16,
/// padding 17 (up to 15 for a 16-byte block plus pad length and next header), ICV 16.
pub fn esp_udp_overhead(outer_v6: bool) -> u16 {
    (if outer_v6 { 40 } else { 20 }) + 8 + 8 + 16 + 17 + 16
}

/// The TCP MSS clamp for a tunnel whose outer packets are IPv6: the configured clamp is tuned
/// for IPv4 outer packets, so over IPv6 it is lowered by the 20 bytes the larger header takes,
/// keeping the sealed segments within the same outer MTU (and UDP GSO trains under the path MTU).
pub fn mss_for_outer(clamp: u16, outer_v6: bool) -> u16 {
    if outer_v6 {
        clamp.saturating_sub(esp_udp_overhead(true) - esp_udp_overhead(false))
    } else {
        clamp
    }
}

fn bind_udp(plan: BindPlan, port: u16) -> io::Result<UdpSocket> {
    match plan {
        BindPlan::Single(ip) => UdpSocket::bind(SocketAddr::new(ip, port)),
        BindPlan::DualStack => match udpio::bind_dual_stack(port) {
            Ok(s) => Ok(s),
            // No IPv6 in this kernel (ipv6.disable=1) or namespace: IPv4 only, as before.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)
                ) =>
            {
                tracing::warn!(port, error = %e, "IPv6 unavailable; UDP bound on IPv4 only");
                UdpSocket::bind(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port))
            }
            Err(e) => Err(e),
        },
    }
}

fn udp_socket(plan: BindPlan, port: u16) -> io::Result<UdpSocket> {
    let shown = match plan {
        BindPlan::DualStack => format!("[::]:{port} (IPv4 and IPv6)"),
        BindPlan::Single(ip) => SocketAddr::new(ip, port).to_string(),
    };
    let socket = bind_udp(plan, port)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind UDP {shown}: {e}")))?;
    // Bursts of ESP must not overflow the receive queue while the worker is busy or waits for a
    // core. Plain SO_RCVBUF is silently capped at net.core.rmem_max (208 KB on a stock kernel,
    // 4 MB on the bench machine); with 4 TCP streams the 4500 socket then overflowed, each drop
    // a whole GRO train of one flow, and the senders retransmitted thousands of segments per
    // run (docs/performance.md). The *FORCE options (CAP_NET_ADMIN, which the data plane has
    // for its TUN anyway) ignore the cap; without the capability the capped size is taken.
    let size: libc::c_int = 8 << 20;
    for (force, opt) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        let set = |opt| {
            // SAFETY: setsockopt with a valid fd and a c_int-sized option value.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            }
        };
        if set(force) != 0 {
            set(opt);
        }
    }
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    Ok(socket)
}

impl DataPlane {
    /// Opens the TUN and the sockets and starts the workers. IKE datagrams go to `ike_events`.
    pub fn start(config: DataPlaneConfig, ike_events: ikequeue::IkeSender) -> io::Result<Self> {
        // Offloads (IFF_VNET_HDR + TSO/USO/checksum) when the kernel has them; plain TUN otherwise.
        let build = |offload: bool| {
            DeviceBuilder::new()
                .name(&config.tun_name)
                .mtu(config.mtu)
                .offload(offload)
                .build_sync()
        };
        let tun = match build(true) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "TUN offloads unavailable; one packet per read and write");
                build(false)
            }
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot create TUN {}: {e}", config.tun_name),
                )
            })?,
        };
        let vnet = tun.tcp_gso();
        tun.enabled(true)?;
        tun.set_nonblocking(true)?;
        let tun_index = tun.if_index()?;
        let tun = Arc::new(tun);
        let plan = BindPlan::for_bind_addr(config.bind_addr);
        let ike_socket = Arc::new(udp_socket(plan, config.ike_port)?);
        let natt_socket = Arc::new(udp_socket(plan, config.natt_port)?);
        if let Err(e) = udpio::enable_gro(natt_socket.as_raw_fd()) {
            tracing::debug!(error = %e, "UDP_GRO unavailable; ESP is received one datagram at a time");
        }
        let drops = Arc::new(DropCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let tap = Arc::new(CaptureTap::default());
        let lifetime = Arc::new(LifetimeEvents::default());
        let (tx_cmd, tx_cmds) = channel();
        let (rx_cmd, rx_cmds) = channel();
        let mut workers = Vec::new();
        {
            let worker = TxWorker {
                tun: tun.clone(),
                vnet,
                mtu: config.mtu,
                socket: natt_socket.clone(),
                commands: tx_cmds,
                tunnels: FastMap::default(),
                fib: Fib::new(),
                drops: drops.clone(),
                stop: stop.clone(),
                mss: config.mss_clamp,
                counters: FastMap::default(),
                tap: tap.clone(),
                port: config.natt_port,
                lifetime: lifetime.clone(),
            };
            workers.push(
                std::thread::Builder::new()
                    .name("vgw-tx".into())
                    .spawn(move || worker.run())?,
            );
        }
        {
            let worker = RxWorker {
                tun: tun.clone(),
                vnet,
                socket: natt_socket.clone(),
                commands: rx_cmds,
                sas: FastMap::default(),
                drops: drops.clone(),
                stop: stop.clone(),
                mss: config.mss_clamp,
                ike: ike_events.clone(),
                port: config.natt_port,
                started,
                counters: FastMap::default(),
                tap: tap.clone(),
                lifetime: lifetime.clone(),
            };
            workers.push(
                std::thread::Builder::new()
                    .name("vgw-rx".into())
                    .spawn(move || worker.run())?,
            );
        }
        {
            let (socket, stop, drops, port, tap, mut ike_events) = (
                ike_socket.clone(),
                stop.clone(),
                drops.clone(),
                config.ike_port,
                tap.clone(),
                ike_events,
            );
            workers.push(
                std::thread::Builder::new()
                    .name("vgw-ike".into())
                    .spawn(move || {
                        let mut buf = vec![0u8; 65536];
                        while !stop.load(Ordering::Relaxed) {
                            match socket.recv_from(&mut buf) {
                                Ok((n, from)) => {
                                    let from = udpio::canonical(from);
                                    tap.outer(Direction::Inbound, from, port, &buf[..n]);
                                    if !ike_events.offer(port, from, &buf[..n]) {
                                        drops.ike_queue_full.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                                    ) => {}
                                Err(e) => tracing::debug!(error = %e, "IKE socket receive failed"),
                            }
                        }
                    })?,
            );
        }
        Ok(Self {
            tx: Mutex::new(tx_cmd),
            rx: Mutex::new(rx_cmd),
            ike_socket,
            natt_socket,
            counters: Mutex::new(HashMap::new()),
            drops,
            stop,
            workers,
            tun_index,
            started,
            tap,
            lifetime,
        })
    }

    /// SAs that reached a volume limit, for the control plane to rekey.
    pub fn lifetime_events(&self) -> &Arc<LifetimeEvents> {
        &self.lifetime
    }

    /// The packet-capture tap (see [`capture`]).
    pub fn capture_tap(&self) -> &Arc<CaptureTap> {
        &self.tap
    }

    /// The TUN's interface index, for kernel routes.
    pub fn tun_index(&self) -> u32 {
        self.tun_index
    }

    /// Sends an IKE message from our port `local_port` (500 or 4500; the non-ESP marker is added on
    /// 4500, RFC 3948 §2.2).
    pub fn send_ike(&self, local_port: u16, remote: SocketAddr, data: &[u8]) -> io::Result<()> {
        if local_port == self.natt_socket.local_addr()?.port() {
            let mut framed = Vec::with_capacity(data.len() + 4);
            framed.extend_from_slice(&vgw_esp::udp::NON_ESP_MARKER);
            framed.extend_from_slice(data);
            self.tap
                .outer(Direction::Outbound, remote, local_port, &framed);
            self.natt_socket.send_to(&framed, remote)?;
        } else {
            self.tap
                .outer(Direction::Outbound, remote, local_port, data);
            self.ike_socket.send_to(data, remote)?;
        }
        Ok(())
    }

    /// Sends a NAT-keepalive (RFC 3948 §2.3: one 0xFF byte) to `remote` from the NAT-T port, keeping a
    /// NAT's mapping alive while the tunnel is idle.
    pub fn send_keepalive(&self, remote: SocketAddr) -> io::Result<()> {
        let port = self.natt_socket.local_addr()?.port();
        self.tap.outer(
            Direction::Outbound,
            remote,
            port,
            &[vgw_esp::udp::NAT_KEEPALIVE],
        );
        self.natt_socket
            .send_to(&[vgw_esp::udp::NAT_KEEPALIVE], remote)
            .map(|_| ())
    }

    /// The counters of `tunnel` (created on first use).
    pub fn counters(&self, tunnel: TunnelId) -> Arc<TunnelCounters> {
        let mut map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(tunnel).or_default().clone()
    }

    /// Global drop counters.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// Milliseconds since start, the clock of `last_ingress_ms`.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn send_tx(&self, cmd: TxCommand) {
        let _ = self.tx.lock().unwrap_or_else(|p| p.into_inner()).send(cmd);
    }

    fn send_rx(&self, cmd: RxCommand) {
        let _ = self.rx.lock().unwrap_or_else(|p| p.into_inner()).send(cmd);
    }

    /// Installs a Child SA pair. The new outbound SA takes over at once (make-before-break); the old
    /// pair keeps working for packets in flight until [`DataPlane::remove_child_sa`].
    pub fn install_child_sa(
        &self,
        tunnel: TunnelId,
        peer: SocketAddr,
        outbound: OutboundSa,
        inbound: InboundSa,
        selectors: Selectors,
    ) {
        let counters = self.counters(tunnel);
        self.send_rx(RxCommand::Install {
            tunnel,
            sa: Box::new(inbound),
            selectors: selectors.clone(),
            counters: counters.clone(),
        });
        self.send_tx(TxCommand::Install {
            tunnel,
            peer,
            sa: Box::new(outbound),
            selectors,
            counters,
        });
    }

    /// Removes a Child SA pair by its SPIs.
    pub fn remove_child_sa(&self, tunnel: TunnelId, inbound_spi: Spi, outbound_spi: Spi) {
        self.send_tx(TxCommand::Remove {
            tunnel,
            spi: outbound_spi,
        });
        self.send_rx(RxCommand::Remove { spi: inbound_spi });
    }

    /// Changes where a tunnel's ESP goes (the peer's NAT mapping moved).
    pub fn set_peer(&self, tunnel: TunnelId, peer: SocketAddr) {
        self.send_tx(TxCommand::SetPeer { tunnel, peer });
    }

    /// Routes `prefix` into `tunnel` in the data plane's forwarding table (`None` removes it).
    pub fn route(&self, prefix: IpNet, tunnel: Option<TunnelId>) {
        self.send_tx(TxCommand::Route { prefix, tunnel });
    }

    /// Spreads `prefix` over `tunnels` (a BGP multipath set, best first, at most four) by flow hash;
    /// an empty set removes the route.
    pub fn route_multipath(&self, prefix: IpNet, tunnels: &[TunnelId]) {
        let mut set = [0; fib::MAX_PATHS];
        let count = tunnels.len().min(fib::MAX_PATHS);
        set[..count].copy_from_slice(&tunnels[..count]);
        self.send_tx(TxCommand::RouteMultipath {
            prefix,
            tunnels: set,
            count,
        });
    }

    /// Removes a tunnel's SAs and routes.
    pub fn remove_tunnel(&self, tunnel: TunnelId) {
        self.send_tx(TxCommand::RemoveTunnel { tunnel });
        self.send_rx(RxCommand::RemoveTunnel { tunnel });
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

struct OutChild {
    peer: SocketAddr,
    sa: Box<OutboundSa>,
    selectors: Selectors,
}

struct TxWorker {
    tun: Arc<SyncDevice>,
    /// The TUN prefixes packets with a `virtio_net_hdr` (offloads on).
    vnet: bool,
    socket: Arc<UdpSocket>,
    commands: Receiver<TxCommand>,
    /// Child SAs per tunnel, newest last.
    tunnels: FastMap<TunnelId, Vec<OutChild>>,
    fib: Fib,
    drops: Arc<DropCounters>,
    stop: Arc<AtomicBool>,
    mss: u16,
    mtu: u16,
    counters: FastMap<TunnelId, Arc<TunnelCounters>>,
    tap: Arc<CaptureTap>,
    /// Our NAT-T port, for the capture's outer packets.
    port: u16,
    lifetime: Arc<LifetimeEvents>,
}

/// Room before the inner packet for the ESP header and IV, and after it for padding and ICV.
const HEADROOM: usize = vgw_esp::sa::MAX_HEADROOM;
const TAILROOM: usize = vgw_esp::sa::MAX_TAILROOM;
/// Inner packets (segments) sealed and sent per `sendmmsg`.
const TX_SLOTS: usize = 256;
/// TUN reads per transmit batch at most (each may be a 64 KB super-packet).
const TX_READS: usize = 128;
/// Datagram buffers per `recvmmsg` (each holds one GRO message of up to 64 KB).
const RX_MSGS: usize = 32;
const RX_SLOT: usize = 65536;
/// Inner packets per batch of TUN writes.
const RX_PACKETS: usize = 1024;

/// Where a sealed datagram lies in the transmit slots, and whom it counts for.
#[derive(Clone, Copy)]
struct Sealed {
    peer: SocketAddr,
    start: usize,
    end: usize,
    tunnel: TunnelId,
    inner: u32,
}

/// Per-batch counter sums, so that each tunnel's atomics are touched once per batch.
#[derive(Default)]
struct BatchCounts {
    /// (tunnel, packets, bytes, drops)
    sums: Vec<(TunnelId, u64, u64, u64)>,
}

impl BatchCounts {
    fn with_capacity(n: usize) -> Self {
        Self {
            sums: Vec::with_capacity(n),
        }
    }

    #[inline]
    fn add(&mut self, tunnel: TunnelId, packets: u64, bytes: u64, drops: u64) {
        if let Some(e) = self.sums.iter_mut().rev().find(|e| e.0 == tunnel) {
            e.1 += packets;
            e.2 += bytes;
            e.3 += drops;
        } else {
            // Grows only if one batch spans more tunnels than ever before; cleared, not freed.
            self.sums.push((tunnel, packets, bytes, drops));
        }
    }
}

fn read_fd(fd: libc::c_int, buf: &mut [u8]) -> Option<usize> {
    // SAFETY: reading into a valid, exclusively borrowed buffer.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    (n > 0).then_some(n as usize)
}

fn wait_readable(fd: libc::c_int, ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
}

impl TxWorker {
    fn apply(&mut self, cmd: TxCommand) {
        match cmd {
            TxCommand::Install {
                tunnel,
                peer,
                sa,
                selectors,
                counters,
            } => {
                self.counters.insert(tunnel, counters);
                self.tunnels.entry(tunnel).or_default().push(OutChild {
                    peer,
                    sa,
                    selectors,
                });
            }
            TxCommand::Remove { tunnel, spi } => {
                if let Some(children) = self.tunnels.get_mut(&tunnel) {
                    children.retain(|c| c.sa.spi() != spi);
                }
            }
            TxCommand::SetPeer { tunnel, peer } => {
                for c in self.tunnels.get_mut(&tunnel).into_iter().flatten() {
                    c.peer = peer;
                }
            }
            TxCommand::Route {
                prefix,
                tunnel: Some(t),
            } => self.fib.insert(prefix, t),
            TxCommand::Route {
                prefix,
                tunnel: None,
            } => self.fib.remove(prefix),
            TxCommand::RouteMultipath {
                prefix,
                tunnels,
                count,
            } => self.fib.insert_multipath(prefix, &tunnels[..count]),
            TxCommand::RemoveTunnel { tunnel } => {
                self.tunnels.remove(&tunnel);
                self.counters.remove(&tunnel);
                self.fib.remove_tunnel(tunnel);
            }
        }
    }

    fn drain_commands(&mut self) {
        while let Ok(cmd) = self.commands.try_recv() {
            self.apply(cmd);
        }
    }

    /// The loop: read a batch from the TUN (GSO super-packets split into slots), seal each
    /// segment as it lands, send the whole batch with one `sendmmsg` (UDP GSO), count once.
    fn run(mut self) {
        let slot_len =
            (HEADROOM + usize::from(self.mtu).max(1500) + 64 + TAILROOM).next_multiple_of(64);
        let mut slots = vec![0u8; TX_SLOTS * slot_len];
        let mut raw = vec![0u8; offload::VNET_HDR_LEN + 65536];
        let mut sealed: Vec<Sealed> = Vec::with_capacity(TX_SLOTS);
        let mut sender = udpio::UdpSender::new(TX_SLOTS, true);
        let mut counts = BatchCounts::with_capacity(16);
        let fd = self.tun.as_raw_fd();
        let sock = self.socket.as_raw_fd();
        while !self.stop.load(Ordering::Relaxed) {
            // Commands that arrived while we slept (or worked) apply before the next packet: a
            // packet must never leave on an SA the control plane has already replaced or removed.
            self.drain_commands();
            let mut reads = 0;
            while reads < TX_READS && sealed.len() + 64 <= TX_SLOTS {
                let Some(n) = read_fd(fd, &mut raw) else {
                    break;
                };
                reads += 1;
                let (hdr, pkt) = if self.vnet {
                    match offload::VnetHdr::parse(&raw[..n]) {
                        Some(h) => (h, &raw[offload::VNET_HDR_LEN..n]),
                        None => {
                            self.drops.malformed.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                } else {
                    (offload::VnetHdr::default(), &raw[..n])
                };
                let Some(mut segments) = offload::Segments::new(hdr, pkt) else {
                    self.drops.malformed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                loop {
                    if sealed.len() == TX_SLOTS {
                        self.flush(&slots, &mut sealed, &mut sender, &mut counts, sock);
                    }
                    let base = sealed.len() * slot_len;
                    let slot = &mut slots[base..base + slot_len];
                    let Some(r) = segments.next_into(&mut slot[HEADROOM..slot_len - TAILROOM])
                    else {
                        break;
                    };
                    let Some(len) = r else {
                        self.drops.malformed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    if let Some(mut s) = self.seal(slot, len, &mut counts) {
                        s.start += base;
                        s.end += base;
                        sealed.push(s);
                    }
                }
            }
            if !sealed.is_empty() || !counts.sums.is_empty() {
                self.flush(&slots, &mut sealed, &mut sender, &mut counts, sock);
            }
            if reads == 0 {
                wait_readable(fd, 100);
            }
        }
    }

    /// Sends every sealed datagram and counts the outcome (inner packets and bytes).
    fn flush(
        &mut self,
        slots: &[u8],
        sealed: &mut Vec<Sealed>,
        sender: &mut udpio::UdpSender,
        counts: &mut BatchCounts,
        sock: libc::c_int,
    ) {
        for s in sealed.iter() {
            sender.push(s.peer, &slots[s.start..s.end]);
        }
        // SAFETY: `slots` is borrowed for the whole call and not modified.
        unsafe {
            sender.flush(sock, |i, ok| {
                let s = &sealed[i];
                if ok {
                    counts.add(s.tunnel, 1, u64::from(s.inner), 0);
                } else {
                    counts.add(s.tunnel, 0, 0, 1);
                }
            });
        }
        sealed.clear();
        for &(tunnel, packets, bytes, drops) in &counts.sums {
            if let Some(c) = self.counters.get(&tunnel) {
                if packets > 0 {
                    c.egress_packets.fetch_add(packets, Ordering::Relaxed);
                    c.egress_bytes.fetch_add(bytes, Ordering::Relaxed);
                }
                if drops > 0 {
                    c.egress_drop.fetch_add(drops, Ordering::Relaxed);
                }
            }
        }
        counts.sums.clear();
    }

    /// Routes, clamps and seals the inner packet at `slot[HEADROOM..HEADROOM + n]`; returns where
    /// the ESP packet is, or `None` after counting a drop.
    fn seal(&mut self, slot: &mut [u8], n: usize, counts: &mut BatchCounts) -> Option<Sealed> {
        let inner = HEADROOM..HEADROOM + n;
        let Some((src, dst)) = packet::addresses(&slot[inner.clone()]) else {
            self.drops.malformed.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let Some(tunnel) = self
            .fib
            .lookup_flow(dst, || packet::flow_hash(&slot[inner.clone()]))
        else {
            self.drops.no_route.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let Some(counters) = self.counters.get(&tunnel) else {
            self.drops.no_route.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let Some(child) = self.tunnels.get_mut(&tunnel).and_then(|children| {
            children
                .iter_mut()
                .rev()
                .find(|c| c.selectors.allows_outbound(src, dst))
        }) else {
            let any = self.tunnels.get(&tunnel).is_some_and(|c| !c.is_empty());
            if any {
                counters
                    .egress_drop_ts_mismatch
                    .fetch_add(1, Ordering::Relaxed);
            } else {
                counts.add(tunnel, 0, 0, 1);
            }
            return None;
        };
        packet::clamp_mss(
            &mut slot[inner.clone()],
            mss_for_outer(self.mss, child.peer.is_ipv6()),
        );
        self.tap
            .inner(tunnel, Direction::Outbound, &slot[inner.clone()]);
        let sealed = child.sa.seal_in_place(slot, inner);
        if let Some(state) = child.sa.poll_limit() {
            let (spi, bytes) = (child.sa.spi(), child.sa.counters().bytes);
            self.lifetime.report(LifetimeEvent {
                tunnel,
                spi,
                outbound: true,
                state,
                bytes,
            });
        }
        match sealed {
            Ok(range) => {
                self.tap.outer(
                    Direction::Outbound,
                    child.peer,
                    self.port,
                    &slot[range.clone()],
                );
                Some(Sealed {
                    peer: child.peer,
                    start: range.start,
                    end: range.end,
                    tunnel,
                    inner: n as u32,
                })
            }
            Err(_) => {
                counts.add(tunnel, 0, 0, 1);
                None
            }
        }
    }
}

struct InChild {
    tunnel: TunnelId,
    sa: Box<InboundSa>,
    selectors: Selectors,
}

struct RxWorker {
    tun: Arc<SyncDevice>,
    vnet: bool,
    socket: Arc<UdpSocket>,
    commands: Receiver<RxCommand>,
    sas: FastMap<u32, InChild>,
    drops: Arc<DropCounters>,
    stop: Arc<AtomicBool>,
    mss: u16,
    ike: ikequeue::IkeSender,
    port: u16,
    started: Instant,
    counters: FastMap<TunnelId, Arc<TunnelCounters>>,
    tap: Arc<CaptureTap>,
    lifetime: Arc<LifetimeEvents>,
}

/// Scratch state of the receive loop (raw pointers: built on the worker's own thread).
struct RxBatch {
    rx: udpio::UdpReceiver,
    /// Opened inner packets: (offset in the receive buffers, length).
    packets: Vec<(usize, usize)>,
    coalescer: offload::Coalescer,
    iovs: Vec<libc::iovec>,
    counts: BatchCounts,
}

impl RxWorker {
    fn apply(&mut self, cmd: RxCommand) {
        match cmd {
            RxCommand::Install {
                tunnel,
                sa,
                selectors,
                counters,
            } => {
                self.counters.insert(tunnel, counters);
                self.sas.insert(
                    sa.spi().0,
                    InChild {
                        tunnel,
                        sa,
                        selectors,
                    },
                );
            }
            RxCommand::Remove { spi } => {
                self.sas.remove(&spi.0);
            }
            RxCommand::RemoveTunnel { tunnel } => {
                self.sas.retain(|_, c| c.tunnel != tunnel);
                self.counters.remove(&tunnel);
            }
        }
    }

    fn drain_commands(&mut self) {
        while let Ok(cmd) = self.commands.try_recv() {
            self.apply(cmd);
        }
    }

    /// The loop: one `recvmmsg` (UDP GRO) per batch, every datagram opened in place, the inner
    /// packets coalesced per TCP flow and written to the TUN with one `writev` per super-packet.
    fn run(mut self) {
        let mut b = RxBatch {
            rx: udpio::UdpReceiver::new(RX_MSGS, RX_SLOT),
            packets: Vec::with_capacity(RX_PACKETS),
            coalescer: offload::Coalescer::new(RX_PACKETS, self.vnet),
            iovs: Vec::with_capacity(offload::MAX_COALESCE as usize + 2),
            counts: BatchCounts::with_capacity(16),
        };
        let sock = self.socket.as_raw_fd();
        while !self.stop.load(Ordering::Relaxed) {
            self.drain_commands();
            let n = match b.rx.recv(sock) {
                Ok(n) => n,
                Err(_) => continue,
            };
            // An SA installed while we waited must be known before its first packet is looked up.
            self.drain_commands();
            for i in 0..n {
                let info = b.rx.info(i);
                let (Some(from), false) = (info.from, info.truncated) else {
                    self.drops.malformed.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let base = i * b.rx.slot_len();
                let mut off = 0;
                while off < info.len {
                    let end = (off + info.segment).min(info.len);
                    let datagram = &mut b.rx.buffer_mut(i)[off..end];
                    if let Some((inner, tunnel)) = self.receive(datagram, from) {
                        if b.coalescer.is_full() {
                            self.write_out(&mut b);
                        }
                        let at = base + off + inner.start;
                        b.packets.push((at, inner.len()));
                        let bufs = b.rx.buffers();
                        let packets = &b.packets;
                        b.coalescer.push(&bufs[at..at + inner.len()], tunnel, |j| {
                            let (o, l) = packets[j as usize];
                            &bufs[o..o + l]
                        });
                    }
                    off = end;
                }
            }
            self.write_out(&mut b);
        }
    }

    /// Writes the batch's items to the TUN and counts them.
    fn write_out(&mut self, b: &mut RxBatch) {
        let fd = self.tun.as_raw_fd();
        let now = self.started.elapsed().as_millis().max(1) as u64;
        for item in b.coalescer.items() {
            let (head_at, head_len) = b.packets[item.head as usize];
            let head = &mut b.rx.buffers_mut()[head_at..head_at + head_len];
            let vnet_hdr = offload::Coalescer::finish_head(item, head).encode();
            b.iovs.clear();
            if self.vnet {
                b.iovs.push(libc::iovec {
                    iov_base: vnet_hdr.as_ptr() as *mut libc::c_void,
                    iov_len: vnet_hdr.len(),
                });
            }
            let bufs = b.rx.buffers();
            for (k, m) in b.coalescer.members(item).enumerate() {
                let (at, len) = b.packets[m as usize];
                let skip = if k == 0 { 0 } else { usize::from(item.hdr_len) };
                let data = &bufs[at + skip..at + len];
                b.iovs.push(libc::iovec {
                    iov_base: data.as_ptr() as *mut libc::c_void,
                    iov_len: data.len(),
                });
            }
            // SAFETY: every iovec points into `vnet_hdr` or the receive buffers, both alive here.
            let r = unsafe { libc::writev(fd, b.iovs.as_ptr(), b.iovs.len() as libc::c_int) };
            let c = u64::from(item.count);
            if r >= 0 {
                b.counts.add(item.tag, c, item.bytes, 0);
            } else {
                b.counts.add(item.tag, 0, 0, c);
            }
        }
        for &(tunnel, packets, bytes, drops) in &b.counts.sums {
            if let Some(c) = self.counters.get(&tunnel) {
                c.last_ingress_ms.store(now, Ordering::Relaxed);
                if packets > 0 {
                    c.ingress_packets.fetch_add(packets, Ordering::Relaxed);
                    c.ingress_bytes.fetch_add(bytes, Ordering::Relaxed);
                }
                if drops > 0 {
                    c.ingress_drop.fetch_add(drops, Ordering::Relaxed);
                }
            }
        }
        b.counts.sums.clear();
        b.coalescer.clear();
        b.packets.clear();
    }

    /// Handles one UDP datagram; for valid ESP returns where its inner packet lies (trimmed to
    /// its IP length) and its tunnel.
    fn receive(
        &mut self,
        datagram: &mut [u8],
        from: SocketAddr,
    ) -> Option<(std::ops::Range<usize>, TunnelId)> {
        use vgw_esp::udp::UdpKind;
        self.tap
            .outer(Direction::Inbound, from, self.port, datagram);
        match UdpKind::of(datagram) {
            Ok(UdpKind::Ike) => {
                if !self.ike.offer(self.port, from, &datagram[4..]) {
                    self.drops.ike_queue_full.fetch_add(1, Ordering::Relaxed);
                }
                None
            }
            Ok(UdpKind::NatKeepalive) => None,
            Ok(UdpKind::Esp) => self.open(datagram, from.is_ipv6()),
            Err(_) => {
                self.drops.malformed.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    fn open(
        &mut self,
        packet: &mut [u8],
        outer_v6: bool,
    ) -> Option<(std::ops::Range<usize>, TunnelId)> {
        let spi = u32::from_be_bytes(packet.get(..4)?.try_into().ok()?);
        let Some(child) = self.sas.get_mut(&spi) else {
            self.drops.unknown_spi.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let counters = self.counters.get(&child.tunnel)?;
        let opened = child.sa.open_in_place(packet);
        if let Some(state) = child.sa.poll_limit() {
            self.lifetime.report(LifetimeEvent {
                tunnel: child.tunnel,
                spi: child.sa.spi(),
                outbound: false,
                state,
                bytes: child.sa.counters().bytes,
            });
        }
        let opened = match opened {
            Ok(o) => o,
            Err(e) => {
                use vgw_esp::ErrorKind;
                let global = match e.kind() {
                    ErrorKind::ReplayedPacket => &self.drops.replayed,
                    ErrorKind::AuthenticationFailed => &self.drops.auth_failed,
                    _ => &self.drops.malformed,
                };
                global.fetch_add(1, Ordering::Relaxed);
                counters.ingress_drop.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        let inner = &mut packet[opened.inner.clone()];
        // RFC 4301 §5.2: an inbound packet must match the SA's selectors.
        match packet::addresses(inner) {
            Some((src, dst)) if child.selectors.allows_inbound(src, dst) => {}
            _ => {
                counters
                    .ingress_drop_ts_mismatch
                    .fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
        // Bytes after the IP length are TFC padding (RFC 4303 §2.7): not part of the packet.
        let Some(len) = offload::ip_len(inner) else {
            self.drops.malformed.fetch_add(1, Ordering::Relaxed);
            counters.ingress_drop.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let inner = &mut inner[..len];
        packet::clamp_mss(inner, mss_for_outer(self.mss, outer_v6));
        self.tap.inner(child.tunnel, Direction::Inbound, inner);
        let start = opened.inner.start;
        Some((start..start + len, child.tunnel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_plan_by_address() {
        assert_eq!(
            BindPlan::for_bind_addr(Ipv4Addr::UNSPECIFIED.into()),
            BindPlan::DualStack
        );
        assert_eq!(
            BindPlan::for_bind_addr(std::net::Ipv6Addr::UNSPECIFIED.into()),
            BindPlan::DualStack
        );
        let v4: IpAddr = "198.18.0.1".parse().unwrap();
        assert_eq!(BindPlan::for_bind_addr(v4), BindPlan::Single(v4));
    }

    #[test]
    fn ipv6_outer_overhead_and_mss() {
        assert_eq!(esp_udp_overhead(false), 85);
        assert_eq!(esp_udp_overhead(true), 105);
        assert_eq!(mss_for_outer(1350, false), 1350);
        assert_eq!(mss_for_outer(1350, true), 1330);
        assert_eq!(mss_for_outer(10, true), 0);
        // An IPv6 inner TCP segment at the clamp (60 bytes of headers) sealed worst case still
        // fits a 1500-byte IPv6 path.
        assert!(mss_for_outer(1350, true) + 60 + esp_udp_overhead(true) <= 1500);
    }
}
