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
//!   here. Each package holds one user's key at most (crate::p2s::profile_input).
//! - A client's packets must come from its own address (the AllowedIPs rule, RFC-less but WireGuard's
//!   cryptokey routing); anything else is dropped.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use boringtun::noise::{Packet, Tunn, TunnResult, handshake::parse_handshake_anon};
use boringtun::x25519::{PublicKey, StaticSecret};
use ipnet::{IpNet, Ipv4Net};

/// The default UDP port (WireGuard's usual one).
pub const DEFAULT_PORT: u16 = 51820;
/// The TUN device's name.
pub const TUN_NAME: &str = "vgwwg0";

/// Derives keys from the gateway's WireGuard master secret.
pub struct Keys {
    master: aws_lc_rs::hmac::Key,
}

impl Keys {
    /// Loads `<dir>/wireguard.key`, creating it (0600) on first use.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let path = dir.join("wireguard.key");
        let secret = match std::fs::read(&path) {
            Ok(b) if b.len() == 32 => b,
            _ => {
                let mut b = vec![0u8; 32];
                aws_lc_rs::rand::fill(&mut b).map_err(|_| "no randomness".to_string())?;
                std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
                vgw_pki::files::write_private(&path, &b, true).map_err(|e| e.to_string())?;
                b
            }
        };
        Ok(Self {
            master: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret),
        })
    }

    fn derive(&self, label: &str) -> StaticSecret {
        let tag = aws_lc_rs::hmac::sign(&self.master, label.as_bytes());
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&tag.as_ref()[..32]);
        StaticSecret::from(bytes)
    }

    /// The gateway's static key.
    pub fn server(&self) -> StaticSecret {
        self.derive("vgw wireguard server")
    }

    /// Client `name`'s static key.
    pub fn client(&self, name: &str) -> StaticSecret {
        self.derive(&format!("vgw wireguard client {name}"))
    }
}

/// Base64 of a key, as WireGuard configurations write it.
pub fn b64(key: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// A public key as `wg pubkey` prints it (base64 of 32 bytes); None when it is not one.
pub fn parse_public_key(text: &str) -> Option<PublicKey> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()?;
    let bytes: [u8; 32] = bytes.try_into().ok()?;
    Some(PublicKey::from(bytes))
}

/// The two halves of an IPv4 pool: (IKEv2's, WireGuard's). A pool too small to split stays IKEv2's.
pub fn split_pool(pool: Ipv4Net) -> (Ipv4Net, Option<Ipv4Net>) {
    if pool.prefix_len() >= 30 {
        return (pool, None);
    }
    let mut halves = pool.subnets(pool.prefix_len() + 1).into_iter().flatten();
    match (halves.next(), halves.next()) {
        (Some(a), Some(b)) => (a, Some(b)),
        _ => (pool, None),
    }
}

/// The address of the `index`-th WireGuard peer in the WireGuard half.
pub fn peer_address(half: Ipv4Net, index: usize) -> Option<Ipv4Addr> {
    let first = u32::from(half.network()) + 1;
    let addr = first.checked_add(u32::try_from(index).ok()?)?;
    (addr < u32::from(half.broadcast())).then(|| Ipv4Addr::from(addr))
}

/// One WireGuard client as the server sees it.
#[derive(Clone)]
pub struct Peer {
    /// Its name.
    pub name: String,
    /// Its public key.
    pub public: PublicKey,
    /// Its address.
    pub address: IpAddr,
}

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
}

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
                _ => new_session(&self.secret, peer, i),
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

fn new_session(secret: &StaticSecret, peer: Peer, index: usize) -> Session {
    let tunn = Tunn::new(secret.clone(), peer.public, None, None, index as u32, None);
    Session {
        peer,
        tunn,
        endpoint: None,
        ingress: 0,
        egress: 0,
        last_seen: None,
    }
}

/// The WireGuard half of the configured pool, when WireGuard is on.
pub fn wireguard_half(pool: &[String]) -> Option<Ipv4Net> {
    pool.iter()
        .filter_map(|p| p.parse::<IpNet>().ok())
        .find_map(|n| match n {
            IpNet::V4(v4) => split_pool(v4.trunc()).1,
            IpNet::V6(_) => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_split_in_halves_and_peers_get_stable_addresses() {
        let (ike, wg) = split_pool("172.16.201.0/24".parse().unwrap());
        assert_eq!(ike.to_string(), "172.16.201.0/25");
        let wg = wg.unwrap();
        assert_eq!(wg.to_string(), "172.16.201.128/25");
        assert_eq!(peer_address(wg, 0).unwrap().to_string(), "172.16.201.129");
        assert_eq!(peer_address(wg, 125).unwrap().to_string(), "172.16.201.254");
        assert!(peer_address(wg, 126).is_none());
        assert_eq!(split_pool("10.0.0.0/30".parse().unwrap()).1, None);
    }

    #[test]
    fn keys_are_derived_stably_from_the_master_secret() {
        let dir = tempfile::tempdir().unwrap();
        let a = Keys::load(dir.path()).unwrap();
        let b = Keys::load(dir.path()).unwrap();
        assert_eq!(
            PublicKey::from(&a.client("alice")).as_bytes(),
            PublicKey::from(&b.client("alice")).as_bytes()
        );
        assert_ne!(
            PublicKey::from(&a.client("alice")).as_bytes(),
            PublicKey::from(&a.client("bob")).as_bytes()
        );
    }
}
