//! Point-to-site over WireGuard, beside IKEv2: boringtun's sans-IO noise core (`Tunn`) per client, on
//! its own UDP port and its own TUN device.
//!
//! Decisions:
//! - A separate TUN (`vgwwg0`) and one worker thread instead of a tunnel kind inside the ESP data plane:
//!   remote-access WireGuard traffic is small next to site-to-site, and keeping it apart leaves the
//!   batched ESP path untouched. The kernel routes the WireGuard half of the pool to that TUN.
//! - The pool is shared by splitting it: IKEv2 clients lease from the lower half of
//!   `vpnClientAddressPool`, WireGuard clients take fixed addresses from the upper half (the n-th peer
//!   of `wireGuardPeers` gets the half's n+1-th address), so no address is ever handed out twice.
//! - Keys are derived, not stored: a 32-byte master secret in `<state-dir>/p2s/wireguard.key` (0600)
//!   gives the server key and each client's key (HMAC-SHA256 with the peer's name), so a client's own
//!   package can carry a working .conf and nothing else needs to persist. A peer whose public key is
//!   registered (`wireGuardPeerPublicKeys`) uses that key instead, and its private key never exists
//!   here. Each package holds one user's key at most (crate::plan::p2s::profile_input).
//! - A client's packets must come from its own address (the AllowedIPs rule, RFC-less but WireGuard's
//!   cryptokey routing); anything else is dropped.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use crate::plan::wireguard::{
    DEFAULT_PORT, Keys, Peer, b64, peer_address, split_pool, wireguard_half,
};
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult, handshake::parse_handshake_anon};
use boringtun::x25519::{PublicKey, StaticSecret};

/// The TUN device's name.
pub const TUN_NAME: &str = "vgwwg0";

/// A connected-client view for show-health.
#[derive(Clone, Debug)]
pub struct PeerHealth {
    /// Name.
    pub name: String,
    /// Address.
    pub address: IpAddr,
    /// Where its packets come from.
    pub endpoint: Option<SocketAddr>,
    /// Inner bytes received from it.
    pub ingress_bytes: u64,
    /// Inner bytes sent to it.
    pub egress_bytes: u64,
    /// When its last packet arrived.
    pub last_seen: Option<Instant>,
}

enum Command {
    Peers(Vec<Peer>),
}

/// The running WireGuard server; dropping it stops the worker.
pub struct Server {
    commands: Mutex<Sender<Command>>,
    health: Arc<Mutex<Vec<PeerHealth>>>,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
    tun_index: u32,
}

impl Server {
    /// Opens the TUN and the UDP port and starts the worker.
    pub fn start(secret: StaticSecret, port: u16) -> io::Result<Self> {
        let tun = tun_rs::DeviceBuilder::new()
            .name(TUN_NAME)
            .mtu(1420)
            .build_sync()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot create TUN {TUN_NAME}: {e}")))?;
        tun.enabled(true)?;
        tun.set_nonblocking(true)?;
        let tun_index = tun.if_index()?;
        let socket = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], port))).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot bind UDP {port} for WireGuard: {e}"),
            )
        })?;
        socket.set_nonblocking(true)?;
        let (tx, rx) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let health = Arc::new(Mutex::new(Vec::new()));
        let worker = Worker {
            tun,
            socket,
            secret: secret.clone(),
            public: PublicKey::from(&secret),
            commands: rx,
            peers: Vec::new(),
            by_address: HashMap::new(),
            stop: stop.clone(),
            health: health.clone(),
            limiter: Arc::new(RateLimiter::new(
                &PublicKey::from(&secret),
                HANDSHAKES_PER_SECOND_UNDER_LOAD,
            )),
        };
        let handle = std::thread::Builder::new()
            .name("vgw-wireguard".into())
            .spawn(move || worker.run())?;
        Ok(Self {
            commands: Mutex::new(tx),
            health,
            stop,
            worker: Some(handle),
            tun_index,
        })
    }

    /// The TUN's interface index (for the kernel route).
    pub fn tun_index(&self) -> u32 {
        self.tun_index
    }

    /// Replaces the peer list (peers whose key and address are unchanged keep their sessions).
    pub fn set_peers(&self, peers: Vec<Peer>) {
        let _ = self
            .commands
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Command::Peers(peers));
    }

    /// Peers that completed a handshake, for show-health.
    pub fn health(&self) -> Vec<PeerHealth> {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|h| {
                h.last_seen
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(180))
            })
            .cloned()
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

struct Session {
    peer: Peer,
    tunn: Tunn,
    endpoint: Option<SocketAddr>,
    ingress: u64,
    egress: u64,
    last_seen: Option<Instant>,
}

struct Worker {
    tun: tun_rs::SyncDevice,
    socket: UdpSocket,
    secret: StaticSecret,
    public: PublicKey,
    commands: Receiver<Command>,
    peers: Vec<Session>,
    by_address: HashMap<IpAddr, usize>,
    stop: Arc<AtomicBool>,
    health: Arc<Mutex<Vec<PeerHealth>>>,
    /// MAC1 check and cookie replies under load (WireGuard paper §5.4.7), shared by every session.
    limiter: Arc<RateLimiter>,
}

/// Handshake messages per second above which initiators must prove their address with a cookie
/// (MAC2) before any X25519 operation is spent on them.
pub const HANDSHAKES_PER_SECOND_UNDER_LOAD: u64 = 100;

/// Destination address of an IP packet.
fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => Some(IpAddr::from(<[u8; 4]>::try_from(&packet[16..20]).ok()?)),
        6 if packet.len() >= 40 => Some(IpAddr::from(<[u8; 16]>::try_from(&packet[24..40]).ok()?)),
        _ => None,
    }
}

impl Worker {
    fn set_peers(&mut self, peers: Vec<Peer>) {
        // A peer keeps its session when its key, address and slot (its receiver index) are unchanged.
        let mut old: HashMap<String, (usize, Session)> = self
            .peers
            .drain(..)
            .enumerate()
            .map(|(i, s)| (s.peer.name.clone(), (i, s)))
            .collect();
        for (i, peer) in peers.into_iter().enumerate() {
            let session = match old.remove(&peer.name) {
                Some((j, s))
                    if j == i && s.peer.public == peer.public && s.peer.address == peer.address =>
                {
                    s
                }
                _ => new_session(&self.secret, peer, i, self.limiter.clone()),
            };
            self.peers.push(session);
        }
        self.by_address = self
            .peers
            .iter()
            .enumerate()
            .map(|(i, s)| (s.peer.address, i))
            .collect();
        self.publish();
    }

    fn publish(&self) {
        let rows = self
            .peers
            .iter()
            .map(|s| PeerHealth {
                name: s.peer.name.clone(),
                address: s.peer.address,
                endpoint: s.endpoint,
                ingress_bytes: s.ingress,
                egress_bytes: s.egress,
                last_seen: s.last_seen,
            })
            .collect();
        *self.health.lock().unwrap_or_else(|p| p.into_inner()) = rows;
    }

    fn run(mut self) {
        let mut packet = vec![0u8; 65536];
        let mut out = vec![0u8; 65536 + 64];
        let mut last_timers = Instant::now();
        let mut last_publish = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            while let Ok(Command::Peers(p)) = self.commands.try_recv() {
                self.set_peers(p);
            }
            let mut fds = [
                libc::pollfd {
                    fd: self.tun.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.socket.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfds.
            unsafe { libc::poll(fds.as_mut_ptr(), 2, 100) };
            for _ in 0..64 {
                let Ok(n) = self.tun.recv(&mut packet) else {
                    break;
                };
                self.handle_tun_packet(&packet[..n], &mut out);
            }
            for _ in 0..64 {
                let Ok((n, from)) = self.socket.recv_from(&mut packet) else {
                    break;
                };
                self.handle_datagram(&packet[..n], from, &mut out);
            }
            if last_timers.elapsed() >= Duration::from_millis(250) {
                last_timers = Instant::now();
                // The limiter's count is per second (it ignores calls within a second of its last reset).
                self.limiter.reset_count();
                for s in &mut self.peers {
                    if let TunnResult::WriteToNetwork(b) = s.tunn.update_timers(&mut out)
                        && let Some(ep) = s.endpoint
                    {
                        let _ = self.socket.send_to(b, ep);
                    }
                }
            }
            if last_publish.elapsed() >= Duration::from_secs(1) {
                last_publish = Instant::now();
                self.publish();
            }
        }
    }

    fn handle_tun_packet(&mut self, packet: &[u8], out: &mut [u8]) {
        let Some(i) = destination(packet)
            .and_then(|d| self.by_address.get(&d))
            .copied()
        else {
            return;
        };
        let s = &mut self.peers[i];
        if let TunnResult::WriteToNetwork(b) = s.tunn.encapsulate(packet, out)
            && let Some(ep) = s.endpoint
            && self.socket.send_to(b, ep).is_ok()
        {
            s.egress += packet.len() as u64;
        }
    }

    fn peer_of(&self, datagram: &[u8]) -> Option<usize> {
        match Tunn::parse_incoming_packet(datagram).ok()? {
            Packet::HandshakeInit(init) => {
                let half = parse_handshake_anon(&self.secret, &self.public, &init).ok()?;
                self.peers
                    .iter()
                    .position(|s| s.peer.public.as_bytes() == &half.peer_static_public)
            }
            _ => {
                let receiver = u32::from_le_bytes(datagram.get(4..8)?.try_into().ok()?);
                let i = (receiver >> 8) as usize;
                (i < self.peers.len()).then_some(i)
            }
        }
    }

    fn handle_datagram(&mut self, datagram: &[u8], from: SocketAddr, out: &mut [u8]) {
        // Before anything costly: a handshake without a valid MAC1 (not made with our public key)
        // is dropped; under load one without a valid MAC2 gets a cookie reply instead of X25519.
        match self.limiter.verify_packet(Some(from.ip()), datagram, out) {
            Ok(_) => {}
            Err(TunnResult::WriteToNetwork(cookie)) => {
                let _ = self.socket.send_to(cookie, from);
                return;
            }
            Err(_) => return,
        }
        let Some(i) = self.peer_of(datagram) else {
            return;
        };
        let s = &mut self.peers[i];
        let mut result = s.tunn.decapsulate(Some(from.ip()), datagram, out);
        loop {
            match result {
                TunnResult::WriteToNetwork(b) => {
                    let _ = self.socket.send_to(b, from);
                    s.endpoint = Some(from);
                    result = s.tunn.decapsulate(None, &[], out);
                    continue;
                }
                TunnResult::WriteToTunnelV4(p, src) => {
                    s.endpoint = Some(from);
                    s.last_seen = Some(Instant::now());
                    if IpAddr::V4(src) == s.peer.address {
                        s.ingress += p.len() as u64;
                        let _ = self.tun.send(p);
                    }
                }
                TunnResult::WriteToTunnelV6(p, src) => {
                    s.endpoint = Some(from);
                    s.last_seen = Some(Instant::now());
                    if IpAddr::V6(src) == s.peer.address {
                        s.ingress += p.len() as u64;
                        let _ = self.tun.send(p);
                    }
                }
                TunnResult::Done => {
                    s.endpoint = Some(from);
                    s.last_seen = Some(Instant::now());
                }
                TunnResult::Err(_) => {}
            }
            break;
        }
    }
}

fn new_session(
    secret: &StaticSecret,
    peer: Peer,
    index: usize,
    limiter: Arc<RateLimiter>,
) -> Session {
    let tunn = Tunn::new(
        secret.clone(),
        peer.public,
        None,
        None,
        index as u32,
        Some(limiter),
    );
    Session {
        peer,
        tunn,
        endpoint: None,
        ingress: 0,
        egress: 0,
        last_seen: None,
    }
}
