//! The BGP speaker's I/O: TCP port 179 on the gateway's peering address, one session per peer over
//! its connection's tunnel, the RIB, and the routes it hands to the tunnel reconciler.
//!
//! The protocol lives in the sans-IO `vgw-bgp` crate; this task owns the sockets and the clock. Each
//! TCP connection gets a reader and a writer task that only move bytes; everything else happens on the
//! speaker task, in order. A session starts when its tunnel comes up and stops (routes withdrawn at
//! once) when the tunnel goes down, so a dead tunnel never keeps attracting traffic while a hold timer
//! runs. Connection collisions (both sides connecting at once, RFC 4271 §6.8) are settled before the
//! OPENs with the rule the OPENs would give: the connection opened by the speaker with the higher
//! peering address (our BGP identifier) survives.
//!
//! Decisions: a prefix's multipath set (up to four equal paths) is handed to the data plane, which
//! spreads flows over its tunnels by flow hash; a failed tunnel's routes go at once, so its flows move
//! to the remaining paths with the next packet. Graceful restart is
//! advertised with a 120 s restart time and the forwarding bit set, because vgw reinstalls its routes
//! from the desired state as soon as it starts; as a receiving speaker vgw keeps a restarting peer's
//! routes (stale) until its End-of-RIB or the restart time, unless the tunnel itself went down.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use vgw_bgp::{Event, PeerId, PeerInfo, Rib, RibChanges, Session, SessionConfig, State};

use crate::controller::Controller;
use crate::drivers::bfd::{BfdEvent, BfdService, BfdSpec};
use crate::drivers::tunnels::{BgpLinks, BgpRouteChange, TunnelEvent};
use crate::model::MaxPrefixAction;
use crate::ops::diaglog::{Category, DiagLog};
use crate::plan::bgp::{BgpStatus, PeerSpec, PeerState, PeerStatus, RouteRow, Snapshot};

/// BGP's port (RFC 4271 §8.2.1).
const BGP_PORT: u16 = 179;
/// How long a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Failures within this window count towards the hold-down.
const FLAP_WINDOW: Duration = Duration::from_secs(300);
/// Hold-down after the first failure; it doubles with every further failure in the window.
const HOLD_DOWN_BASE: Duration = Duration::from_secs(2);
/// The longest hold-down.
const HOLD_DOWN_MAX: Duration = Duration::from_secs(60);

/// How long a session waits before it starts again after `failures` failures within
/// [`FLAP_WINDOW`]: 2 s, 4 s, 8 s ... up to a minute. A path that comes back takes traffic only once
/// it has stayed up that long, so a flapping link does not move traffic back and forth.
fn hold_down(failures: usize) -> Duration {
    match failures {
        0 => Duration::ZERO,
        n => HOLD_DOWN_BASE
            .saturating_mul(1 << (n - 1).min(6))
            .min(HOLD_DOWN_MAX),
    }
}

/// How often the published status is refreshed while things change.
const PUBLISH_EVERY: Duration = Duration::from_millis(200);

/// Starts the speaker task.
pub fn spawn(
    controller: Arc<Controller>,
    log: Arc<DiagLog>,
    status: Arc<BgpStatus>,
    links: BgpLinks,
) {
    let (io_tx, io_rx) = mpsc::unbounded_channel();
    let (bfd, bfd_events) = BfdService::spawn();
    let speaker = Speaker {
        bfd,
        bfd_specs: Vec::new(),
        controller,
        log,
        status,
        routes: links.routes,
        rib: Rib::new(0, 4),
        peers: BTreeMap::new(),
        by_id: HashMap::new(),
        next_id: 1,
        next_generation: 1,
        io: io_tx,
        tunnels_up: HashSet::new(),
        listener: None,
        dirty: true,
    };
    tokio::spawn(speaker.run(io_rx, links.tunnel_events, bfd_events));
}

/// What the socket tasks report.
enum Io {
    Connected {
        peer: String,
        generation: u64,
        stream: TcpStream,
    },
    ConnectFailed {
        peer: String,
        generation: u64,
        error: String,
    },
    Accepted {
        stream: TcpStream,
        remote: SocketAddr,
    },
    Data {
        peer: String,
        generation: u64,
        bytes: Vec<u8>,
    },
    Closed {
        peer: String,
        generation: u64,
    },
    ListenFailed(String),
}

/// The writer task's input.
enum Write {
    Bytes(Vec<u8>),
    Close,
}

struct Connection {
    generation: u64,
    writer: mpsc::UnboundedSender<Write>,
}

struct Peer {
    id: PeerId,
    spec: PeerSpec,
    session: Session,
    connection: Option<Connection>,
    /// The outgoing connect in flight.
    connecting: Option<u64>,
    stale_until: Option<Instant>,
    last_error: Option<String>,
    warned_max_prefix: bool,
    /// When the session's path failed (tunnel down, BFD down), within [`FLAP_WINDOW`].
    failures: std::collections::VecDeque<Instant>,
    /// A held-down session starts at this time (if its tunnel is up).
    start_at: Option<Instant>,
    /// Whether the session is Established (so that its going down counts as a reset).
    up: bool,
    /// When the Established session went down, within [`crate::plan::bgp::FLAP_WINDOW`].
    resets: std::collections::VecDeque<Instant>,
    /// Resets since vgw started.
    resets_total: u64,
    /// Why it went down last.
    last_reset: Option<String>,
}

impl Peer {
    /// Counts a reset of the Established session; returns the resets within the flap window.
    fn record_reset(&mut self, now: Instant, why: &str) -> u32 {
        self.up = false;
        self.resets.push_back(now);
        self.resets_total += 1;
        self.last_reset = Some(why.to_string());
        self.flap_count(now)
    }

    /// Resets within the flap window (older ones are forgotten).
    fn flap_count(&mut self, now: Instant) -> u32 {
        while self
            .resets
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > crate::plan::bgp::FLAP_WINDOW)
        {
            self.resets.pop_front();
        }
        self.resets.len() as u32
    }
}

/// "IPv4 unicast, IPv6 unicast": the families a session negotiated.
fn family_list(families: &[(u16, u8)]) -> String {
    if families.is_empty() {
        return "none".into();
    }
    families
        .iter()
        .map(|&(afi, safi)| vgw_bgp::codec::family_name(afi, safi))
        .collect::<Vec<_>>()
        .join(", ")
}

struct Speaker {
    /// BFD sessions with the neighbours that have `enableBfd` (RFC 5883 multihop over the tunnel).
    bfd: BfdService,
    bfd_specs: Vec<BfdSpec>,
    controller: Arc<Controller>,
    log: Arc<DiagLog>,
    status: Arc<BgpStatus>,
    routes: mpsc::UnboundedSender<Vec<BgpRouteChange>>,
    rib: Rib,
    peers: BTreeMap<String, Peer>,
    by_id: HashMap<PeerId, String>,
    next_id: PeerId,
    next_generation: u64,
    io: mpsc::UnboundedSender<Io>,
    tunnels_up: HashSet<String>,
    listener: Option<(IpAddr, tokio::task::JoinHandle<()>)>,
    dirty: bool,
}

fn resource(connection: &str) -> String {
    crate::model::resource_id(crate::model::collection::CONNECTIONS, connection)
}

fn router_id(addr: IpAddr) -> Ipv4Addr {
    match addr {
        IpAddr::V4(a) => a,
        IpAddr::V6(a) => {
            let o = a.octets();
            Ipv4Addr::new(o[12], o[13], o[14], o[15])
        }
    }
}

impl Speaker {
    async fn run(
        mut self,
        mut io: mpsc::UnboundedReceiver<Io>,
        mut tunnel_events: mpsc::UnboundedReceiver<TunnelEvent>,
        mut bfd_events: mpsc::UnboundedReceiver<BfdEvent>,
    ) {
        let mut changes = self.controller.subscribe();
        self.reconcile().await;
        let mut publish = tokio::time::interval(PUBLISH_EVERY);
        let mut listen_retry = tokio::time::interval(Duration::from_secs(1));
        loop {
            let wake = self
                .next_timeout()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(1));
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.reconcile().await;
                }
                Some(event) = tunnel_events.recv() => self.tunnel_event(event),
                Some(event) = bfd_events.recv() => self.bfd_event(event),
                Some(event) = io.recv() => self.io_event(event),
                _ = tokio::time::sleep_until(wake) => self.timeouts(),
                _ = listen_retry.tick() => self.ensure_listener().await,
                _ = publish.tick() => {
                    if self.dirty {
                        self.publish();
                    }
                }
            }
            self.connect_due();
        }
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.peers
            .values()
            .flat_map(|p| [p.session.poll_timeout(), p.stale_until, p.start_at])
            .flatten()
            .min()
    }

    /// Brings the peers in line with the desired state.
    async fn reconcile(&mut self) {
        let (state, _) = self.controller.snapshot().await;
        let specs = crate::plan::bgp::peers(&state, self.controller.instance());
        let local_asn = specs.values().next().map_or(0, |s| s.local_asn);
        let now = Instant::now();
        if local_asn != self.rib.local_asn() {
            // A new ASN means new sessions everywhere.
            let names: Vec<String> = self.peers.keys().cloned().collect();
            for name in names {
                self.remove_peer(&name, now);
            }
            self.rib = Rib::new(local_asn, 4);
        }
        let gone: Vec<String> = self
            .peers
            .iter()
            .filter(|(name, p)| specs.get(*name) != Some(&p.spec))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            self.remove_peer(&name, now);
        }
        for (name, spec) in specs {
            if self.peers.contains_key(&name) {
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            self.rib.add_peer(
                id,
                PeerInfo {
                    asn: spec.peer_asn,
                    router_id: router_id(spec.peer_address),
                    address: spec.peer_address,
                    weight: spec.weight,
                    local_address: spec.local_address,
                },
            );
            let mut session = Session::new(SessionConfig {
                local_asn: spec.local_asn,
                peer_asn: spec.peer_asn,
                router_id: router_id(spec.local_address),
                hold_time: spec.hold_time,
                keepalive: spec.keepalive,
                connect_retry: Duration::from_secs(1),
                // IPv4 prefixes over an IPv6 session need an IPv6 next hop (RFC 8950).
                extended_next_hop: spec.local_address.is_ipv6(),
                ..SessionConfig::default()
            });
            if self.tunnels_up.contains(&name) {
                session.start(now);
            }
            self.by_id.insert(id, name.clone());
            self.peers.insert(
                name,
                Peer {
                    id,
                    spec,
                    session,
                    connection: None,
                    connecting: None,
                    stale_until: None,
                    last_error: None,
                    warned_max_prefix: false,
                    failures: std::collections::VecDeque::new(),
                    start_at: None,
                    up: false,
                    resets: std::collections::VecDeque::new(),
                    resets_total: 0,
                    last_reset: None,
                },
            );
        }
        // Our networks: the gateway's address space and the point-to-site pool.
        let mut networks: Vec<IpNet> = Vec::new();
        if let Some(gw) = &state.gateway {
            let lists = [
                Some(&gw.address_space.address_prefixes),
                gw.vpn_client_configuration
                    .as_ref()
                    .map(|c| &c.vpn_client_address_pool.address_prefixes),
            ];
            for list in lists.into_iter().flatten() {
                networks.extend(list.iter().filter_map(|p| p.parse::<IpNet>().ok()));
            }
        }
        let changes = self.rib.set_networks(networks);
        self.apply(changes, now);
        let bfd_specs: Vec<BfdSpec> = self
            .peers
            .values()
            .filter_map(|p| {
                let (interval, multiplier) = p.spec.bfd?;
                Some(BfdSpec {
                    local: p.spec.local_address,
                    peer: p.spec.peer_address,
                    min_tx: interval,
                    min_rx: interval,
                    multiplier,
                    multihop: true,
                })
            })
            .collect();
        if bfd_specs != self.bfd_specs {
            self.bfd.set_sessions(bfd_specs.clone());
            self.bfd_specs = bfd_specs;
        }
        self.ensure_listener().await;
        self.dirty = true;
    }

    fn remove_peer(&mut self, name: &str, now: Instant) {
        let Some(mut peer) = self.peers.remove(name) else {
            return;
        };
        peer.session.stop(now);
        self.flush(&mut peer);
        self.close(&mut peer);
        self.by_id.remove(&peer.id);
        let changes = self.rib.remove_peer(peer.id);
        self.apply(changes, now);
    }

    /// Binds port 179 on our peering address once the reconciler has assigned it.
    async fn ensure_listener(&mut self) {
        let want = self.peers.values().next().map(|p| p.spec.local_address);
        if self.listener.as_ref().map(|(a, _)| *a) == want {
            return;
        }
        if let Some((_, task)) = self.listener.take() {
            task.abort();
        }
        let Some(addr) = want else {
            return;
        };
        match TcpListener::bind(SocketAddr::new(addr, BGP_PORT)).await {
            Ok(listener) => {
                let io = self.io.clone();
                let task = tokio::spawn(async move {
                    loop {
                        match listener.accept().await {
                            Ok((stream, remote)) => {
                                if io.send(Io::Accepted { stream, remote }).is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                let _ = io.send(Io::ListenFailed(e.to_string()));
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                });
                self.listener = Some((addr, task));
                self.log.log(
                    Category::RouteDiagnosticLog,
                    "info",
                    "/vgw",
                    &format!("BGP listening on {addr}:{BGP_PORT}"),
                    json!({}),
                );
            }
            Err(e) => {
                // The address may not be on the TUN yet; retried every second.
                tracing::debug!(%addr, error = %e, "BGP listener not bound yet");
            }
        }
    }

    fn tunnel_event(&mut self, event: TunnelEvent) {
        let now = Instant::now();
        if event.up {
            self.tunnels_up.insert(event.connection.clone());
            self.start_after_hold_down(&event.connection, now);
        } else {
            self.tunnels_up.remove(&event.connection);
            self.drop_session(&event.connection, "its tunnel went down", now);
        }
        self.dirty = true;
    }

    /// Stops a session at once and withdraws its routes (no stale period), because the path under it
    /// is gone. No Cease: a reset (or our restart) should look to the peer like a dropped connection,
    /// so a graceful-restart helper keeps our routes meanwhile.
    fn drop_session(&mut self, connection: &str, why: &str, now: Instant) {
        let Some(mut peer) = self.peers.remove(connection) else {
            return;
        };
        if peer.up {
            peer.record_reset(now, why);
        }
        if peer.session.state() != State::Idle {
            peer.session.connection_closed(now);
            while peer.session.poll_event().is_some() {}
            while peer.session.poll_transmit().is_some() {}
            peer.session.stop(now);
            peer.last_error = Some(why.to_string());
            self.log.log(
                Category::RouteDiagnosticLog,
                "warning",
                &resource(connection),
                &format!(
                    "BGP session with {} stopped: {why}; its routes are withdrawn",
                    peer.spec.peer_address
                ),
                json!({"connection": connection}),
            );
        }
        self.drive(&mut peer, now);
        self.close(&mut peer);
        peer.stale_until = None;
        peer.start_at = None;
        while peer
            .failures
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > FLAP_WINDOW)
        {
            peer.failures.pop_front();
        }
        peer.failures.push_back(now);
        let changes = self.rib.peer_down(peer.id, false);
        self.peers.insert(connection.to_string(), peer);
        self.apply(changes, now);
    }

    /// Starts a stopped session whose tunnel is up, after the hold-down its recent failures call for.
    fn start_after_hold_down(&mut self, connection: &str, now: Instant) {
        let Some(peer) = self.peers.get_mut(connection) else {
            return;
        };
        if peer.session.state() != State::Idle || !self.tunnels_up.contains(connection) {
            return;
        }
        let recent = peer
            .failures
            .iter()
            .filter(|t| now.saturating_duration_since(**t) <= FLAP_WINDOW)
            .count();
        let hold = hold_down(recent);
        if hold.is_zero() {
            peer.session.start(now);
            return;
        }
        peer.start_at = Some(now + hold);
        self.log.log(
            Category::RouteDiagnosticLog,
            "info",
            &resource(connection),
            &format!(
                "BGP session with {} held down for {} s ({recent} path failure(s) in the last {} min) before it starts again",
                peer.spec.peer_address,
                hold.as_secs(),
                FLAP_WINDOW.as_secs() / 60
            ),
            json!({"connection": connection, "holdDownSeconds": hold.as_secs()}),
        );
    }

    /// BFD went down (RFC 5882 §4.3): the session and its routes go at once, without waiting for the
    /// hold timer; the session then starts over, and comes up again only if the path works.
    fn bfd_event(&mut self, event: BfdEvent) {
        let now = Instant::now();
        let (peer_address, down) = match &event {
            BfdEvent::Up { peer } => (*peer, None),
            BfdEvent::Down { peer, diagnostic } => (*peer, Some(diagnostic.clone())),
        };
        let Some(name) = self
            .peers
            .iter()
            .find(|(_, p)| p.spec.peer_address == peer_address && p.spec.bfd.is_some())
            .map(|(n, _)| n.clone())
        else {
            return;
        };
        match down {
            None => self.log.log(
                Category::RouteDiagnosticLog,
                "info",
                &resource(&name),
                &format!("BFD session with {peer_address} is up"),
                json!({"connection": name}),
            ),
            Some(diagnostic) => {
                self.log.log(
                    Category::RouteDiagnosticLog,
                    "warning",
                    &resource(&name),
                    &format!("BFD session with {peer_address} went down ({diagnostic})"),
                    json!({"connection": name, "diagnostic": diagnostic}),
                );
                self.drop_session(&name, &format!("BFD went down ({diagnostic})"), now);
                self.start_after_hold_down(&name, now);
            }
        }
        self.dirty = true;
    }

    /// Opens the TCP connections the sessions ask for.
    fn connect_due(&mut self) {
        let now = Instant::now();
        for (name, peer) in self.peers.iter_mut() {
            if peer.connection.is_some()
                || peer.connecting.is_some()
                || !self.tunnels_up.contains(name)
            {
                continue;
            }
            if !peer.session.poll_connect(now) {
                continue;
            }
            let generation = self.next_generation;
            self.next_generation += 1;
            peer.connecting = Some(generation);
            let (local, remote) = (peer.spec.local_address, peer.spec.peer_address);
            let io = self.io.clone();
            let name = name.clone();
            tokio::spawn(async move {
                let result = async {
                    let socket = match local {
                        IpAddr::V4(_) => TcpSocket::new_v4()?,
                        IpAddr::V6(_) => TcpSocket::new_v6()?,
                    };
                    socket.bind(SocketAddr::new(local, 0))?;
                    tokio::time::timeout(
                        CONNECT_TIMEOUT,
                        socket.connect(SocketAddr::new(remote, BGP_PORT)),
                    )
                    .await
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))?
                }
                .await;
                let _ = io.send(match result {
                    Ok(stream) => Io::Connected {
                        peer: name,
                        generation,
                        stream,
                    },
                    Err(e) => Io::ConnectFailed {
                        peer: name,
                        generation,
                        error: describe_connect_error(&e, remote),
                    },
                });
            });
        }
    }

    fn io_event(&mut self, event: Io) {
        let now = Instant::now();
        match event {
            Io::Connected {
                peer,
                generation,
                stream,
            } => {
                let Some(mut p) = self.peers.remove(&peer) else {
                    return;
                };
                if p.connecting == Some(generation) {
                    p.connecting = None;
                    if p.connection.is_none() && p.session.state() == State::Connect {
                        self.attach(&peer, &mut p, stream, now);
                    }
                }
                self.peers.insert(peer, p);
            }
            Io::ConnectFailed {
                peer,
                generation,
                error,
            } => {
                if let Some(p) = self.peers.get_mut(&peer)
                    && p.connecting == Some(generation)
                {
                    p.connecting = None;
                    p.session.connection_failed(now);
                    if p.last_error.as_deref() != Some(error.as_str()) {
                        self.log.log(
                            Category::RouteDiagnosticLog,
                            "warning",
                            &resource(&peer),
                            &format!("BGP connection to {} failed: {error}", p.spec.peer_address),
                            json!({"connection": peer}),
                        );
                    }
                    p.last_error = Some(error);
                    self.dirty = true;
                }
            }
            Io::Accepted { stream, remote } => self.accepted(stream, remote, now),
            Io::Data {
                peer,
                generation,
                bytes,
            } => {
                let Some(mut p) = self.peers.remove(&peer) else {
                    return;
                };
                if p.connection.as_ref().map(|c| c.generation) == Some(generation) {
                    p.session.handle_bytes(now, &bytes);
                    self.drive(&mut p, now);
                    // Message counters moved.
                    self.dirty = true;
                }
                self.peers.insert(peer, p);
            }
            Io::Closed { peer, generation } => {
                let Some(mut p) = self.peers.remove(&peer) else {
                    return;
                };
                if p.connection.as_ref().map(|c| c.generation) == Some(generation) {
                    p.connection = None;
                    p.session.connection_closed(now);
                    self.drive(&mut p, now);
                }
                self.peers.insert(peer, p);
            }
            Io::ListenFailed(e) => tracing::debug!(error = %e, "BGP accept failed"),
        }
    }

    /// An incoming connection: adopt it, or settle a collision (RFC 4271 §6.8).
    fn accepted(&mut self, stream: TcpStream, remote: SocketAddr, now: Instant) {
        let Some(name) = self
            .peers
            .iter()
            .find(|(_, p)| p.spec.peer_address == remote.ip())
            .map(|(n, _)| n.clone())
        else {
            tracing::debug!(%remote, "BGP connection from an unknown address refused");
            return;
        };
        let Some(mut p) = self.peers.remove(&name) else {
            return;
        };
        let ours_wins = router_id(p.spec.local_address) > router_id(p.spec.peer_address);
        let adopt = match p.session.state() {
            State::Idle | State::Established => false,
            State::Connect => true,
            // Our own connection is negotiating: keep the one the higher identifier opened.
            State::OpenSent | State::OpenConfirm => !ours_wins,
        };
        if adopt {
            if p.connection.is_some() {
                self.close(&mut p);
                p.session.connection_closed(now);
                while p.session.poll_event().is_some() {}
                while p.session.poll_transmit().is_some() {}
            }
            p.connecting = None;
            self.attach(&name, &mut p, stream, now);
        }
        self.peers.insert(name, p);
    }

    /// Starts the reader and writer tasks of a connection and tells the session it is up.
    fn attach(&mut self, name: &str, p: &mut Peer, stream: TcpStream, now: Instant) {
        let _ = stream.set_nodelay(true);
        let generation = self.next_generation;
        self.next_generation += 1;
        let (mut reader, mut writer) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Write>();
        tokio::spawn(async move {
            while let Some(w) = rx.recv().await {
                match w {
                    Write::Bytes(b) => {
                        if writer.write_all(&b).await.is_err() {
                            return;
                        }
                    }
                    Write::Close => {
                        let _ = writer.shutdown().await;
                        return;
                    }
                }
            }
        });
        let io = self.io.clone();
        let peer = name.to_string();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = io.send(Io::Closed { peer, generation });
                        return;
                    }
                    Ok(n) => {
                        let bytes = buf[..n].to_vec();
                        if io
                            .send(Io::Data {
                                peer: peer.clone(),
                                generation,
                                bytes,
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        p.connection = Some(Connection {
            generation,
            writer: tx,
        });
        p.session.connection_opened(now);
        self.drive(p, now);
    }

    fn close(&mut self, p: &mut Peer) {
        if let Some(c) = p.connection.take() {
            let _ = c.writer.send(Write::Close);
        }
    }

    /// Writes what the session queued.
    fn flush(&mut self, p: &mut Peer) {
        while let Some(bytes) = p.session.poll_transmit() {
            if let Some(c) = &p.connection {
                let _ = c.writer.send(Write::Bytes(bytes));
            }
        }
        if p.session.poll_close() {
            self.close(p);
        }
    }

    /// Moves a session's output along and handles its events.
    fn drive(&mut self, p: &mut Peer, now: Instant) {
        self.flush(p);
        while let Some(event) = p.session.poll_event() {
            self.dirty = true;
            let name = p.spec.connection.clone();
            match event {
                Event::Established => {
                    if let Some(open) = p.session.peer_open() {
                        self.rib.set_router_id(p.id, open.bgp_id);
                    }
                    p.last_error = None;
                    p.warned_max_prefix = false;
                    p.up = true;
                    let negotiated = p.session.negotiated().clone();
                    let mut changes = self.rib.peer_established(p.id, &negotiated);
                    // RFC 4724 §4.2: stale routes of a family the new session does not preserve
                    // (not negotiated, or no forwarding bit in the peer's capability) go now.
                    let preserved = negotiated.preserved_afis();
                    for afi in [vgw_bgp::codec::AFI_IPV4, vgw_bgp::codec::AFI_IPV6] {
                        if !preserved.contains(&afi) {
                            let flushed = self.rib.flush_stale(p.id, Some(afi));
                            changes.fib.extend(flushed.fib);
                            for (id, out) in flushed.outbound {
                                let e = changes.outbound.entry(id).or_default();
                                e.announce.extend(out.announce);
                                e.withdraw.extend(out.withdraw);
                            }
                        }
                    }
                    self.log.log(
                        Category::RouteDiagnosticLog,
                        "info",
                        &resource(&name),
                        &format!(
                            "BGP session with {} (AS {}) established; hold time {} s; families {}",
                            p.spec.peer_address,
                            p.spec.peer_asn,
                            p.session.hold_time().as_secs(),
                            family_list(&negotiated.families)
                        ),
                        json!({"connection": name, "neighbor": p.spec.peer_address.to_string()}),
                    );
                    if p.spec.local_address.is_ipv6()
                        && negotiated.has(vgw_bgp::codec::AFI_IPV4, vgw_bgp::codec::SAFI_UNICAST)
                        && !negotiated.extended_next_hop
                    {
                        self.log.log(
                            Category::RouteDiagnosticLog,
                            "warning",
                            &resource(&name),
                            &format!(
                                "IPv4 prefixes are not advertised to {}: the session runs over IPv6 and the peer did not offer extended next hop (RFC 8950); enable it on the peer, or peer over IPv4",
                                p.spec.peer_address
                            ),
                            json!({"connection": name}),
                        );
                    }
                    self.apply_elsewhere(changes, p, now);
                    p.session.end_of_rib();
                }
                Event::Down {
                    reason,
                    keep_stale,
                    restart_time,
                    stale_afis,
                } => {
                    let text = reason.to_string();
                    let flaps = if p.up { p.record_reset(now, &text) } else { 0 };
                    self.log.log(
                        Category::RouteDiagnosticLog,
                        "warning",
                        &resource(&name),
                        &format!(
                            "BGP session with {} down: {text}{}",
                            p.spec.peer_address,
                            if keep_stale {
                                format!("; its routes stay (graceful restart) for {restart_time} s")
                            } else {
                                String::new()
                            }
                        ),
                        json!({"connection": name, "neighbor": p.spec.peer_address.to_string()}),
                    );
                    if flaps == crate::plan::bgp::FLAP_THRESHOLD + 1 {
                        self.log.log(
                            Category::RouteDiagnosticLog,
                            "error",
                            &resource(&name),
                            &format!(
                                "BGP session with {} is flapping: {}",
                                p.spec.peer_address,
                                crate::plan::bgp::flap_reason(flaps, Some(&text))
                                    .unwrap_or_default()
                            ),
                            json!({"connection": name, "flapCount": flaps}),
                        );
                    }
                    p.last_error = Some(text);
                    p.stale_until =
                        keep_stale.then(|| now + Duration::from_secs(u64::from(restart_time)));
                    let changes = self.rib.peer_down_keeping(p.id, &stale_afis);
                    self.apply_elsewhere(changes, p, now);
                }
                Event::Update(update) => {
                    let changes = self.rib.update(p.id, &update);
                    // Paths holding our own ASN were dropped (loop detection), not learned.
                    let looped = &changes.looped;
                    let learned: Vec<String> = update
                        .announced
                        .iter()
                        .filter(|prefix| !looped.contains(&prefix.trunc()))
                        .map(ToString::to_string)
                        .collect();
                    let (added, removed) = (update.announced.len(), update.withdrawn.len());
                    if !looped.is_empty() {
                        let shown: Vec<String> =
                            looped.iter().take(16).map(ToString::to_string).collect();
                        self.log.log(
                            Category::RouteDiagnosticLog,
                            "warning",
                            &resource(&name),
                            &format!(
                                "from {}: dropped {}{}: the AS path {} holds our own AS {} (loop detection, RFC 4271 §9.1.2)",
                                p.spec.peer_address,
                                shown.join(", "),
                                if looped.len() > 16 {
                                    format!(" and {} more", looped.len() - 16)
                                } else {
                                    String::new()
                                },
                                update
                                    .attributes
                                    .as_ref()
                                    .map(|a| a.as_path_string())
                                    .unwrap_or_default(),
                                p.spec.local_asn
                            ),
                            json!({"connection": name, "dropped": looped.len()}),
                        );
                    }
                    if added + removed > 0 && added + removed <= 16 {
                        let mut parts = Vec::new();
                        if !learned.is_empty() {
                            parts.push(format!("learned {}", learned.join(", ")));
                        }
                        if removed > 0 {
                            parts.push(format!(
                                "withdrawn {}",
                                update
                                    .withdrawn
                                    .iter()
                                    .map(ToString::to_string)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ));
                        }
                        if !parts.is_empty() {
                            self.log.log(
                                Category::RouteDiagnosticLog,
                                "info",
                                &resource(&name),
                                &format!("from {}: {}", p.spec.peer_address, parts.join("; ")),
                                json!({"connection": name}),
                            );
                        }
                    }
                    self.apply_elsewhere(changes, p, now);
                    self.check_max_prefixes(p, now);
                }
                Event::RouteRefresh { afi, .. } => {
                    // RFC 2918 §4: re-send the Adj-RIB-Out of the family asked for.
                    let rows = self.rib.advertised(p.id);
                    let mut groups: HashMap<vgw_bgp::PathAttributes, Vec<IpNet>> = HashMap::new();
                    for r in rows
                        .into_iter()
                        .filter(|r| vgw_bgp::rib::afi_of(&r.prefix) == afi)
                    {
                        groups
                            .entry((*r.attributes).clone())
                            .or_default()
                            .push(r.prefix);
                    }
                    for (attrs, prefixes) in groups {
                        p.session.announce(&attrs, &prefixes);
                    }
                }
            }
            self.flush(p);
        }
    }

    /// RFC 4486 maximum-prefix handling: warn once, or tear the session down.
    fn check_max_prefixes(&mut self, p: &mut Peer, now: Instant) {
        let received = self.rib.received(p.id);
        if received <= p.spec.max_prefixes as usize {
            return;
        }
        let name = p.spec.connection.clone();
        match p.spec.max_prefix_action {
            MaxPrefixAction::Warn => {
                if !p.warned_max_prefix {
                    p.warned_max_prefix = true;
                    self.log.log(
                        Category::RouteDiagnosticLog,
                        "warning",
                        &resource(&name),
                        &format!(
                            "BGP peer {} exceeds its prefix limit: {received} > {} (maxPrefixAction Warn: the session stays up)",
                            p.spec.peer_address, p.spec.max_prefixes
                        ),
                        json!({"connection": name}),
                    );
                }
            }
            MaxPrefixAction::Teardown => {
                self.log.log(
                    Category::RouteDiagnosticLog,
                    "error",
                    &resource(&name),
                    &format!(
                        "BGP peer {} exceeds its prefix limit: {received} > {}; tearing the session down (Cease / Maximum Number of Prefixes Reached)",
                        p.spec.peer_address, p.spec.max_prefixes
                    ),
                    json!({"connection": name}),
                );
                p.session.stop_with(now, 1);
                let changes = self.rib.peer_down(p.id, false);
                self.flush(p);
                self.apply_elsewhere(changes, p, now);
                // Try again after a pause rather than never.
                p.session.start(now + Duration::from_secs(30));
            }
        }
    }

    /// Applies `changes` while `p` is out of `self.peers` (the caller is driving it): its own part
    /// goes straight to its session.
    fn apply_elsewhere(&mut self, mut changes: RibChanges, p: &mut Peer, now: Instant) {
        if let Some(out) = changes.outbound.remove(&p.id) {
            p.session.withdraw(&out.withdraw);
            for (attrs, prefixes) in &out.announce {
                p.session.announce(attrs, prefixes);
            }
            self.flush(p);
        }
        self.apply(changes, now);
    }

    /// Sends per-peer UPDATE content and hands forwarding changes to the reconciler.
    fn apply(&mut self, changes: RibChanges, _now: Instant) {
        let mut routes = Vec::new();
        for change in changes.fib {
            let via: Vec<String> = change
                .next_hops
                .iter()
                .filter_map(|id| self.by_id.get(id))
                .cloned()
                .collect();
            routes.push((change.prefix, via));
        }
        if !routes.is_empty() {
            let _ = self.routes.send(routes);
        }
        for (id, out) in changes.outbound {
            let Some(name) = self.by_id.get(&id).cloned() else {
                continue;
            };
            let Some(mut p) = self.peers.remove(&name) else {
                continue;
            };
            p.session.withdraw(&out.withdraw);
            for (attrs, prefixes) in &out.announce {
                p.session.announce(attrs, prefixes);
            }
            self.flush(&mut p);
            self.peers.insert(name, p);
        }
        self.dirty = true;
    }

    fn timeouts(&mut self) {
        let now = Instant::now();
        let names: Vec<String> = self.peers.keys().cloned().collect();
        for name in names {
            let Some(mut p) = self.peers.remove(&name) else {
                continue;
            };
            if p.session.poll_timeout().is_some_and(|t| t <= now) {
                p.session.handle_timeout(now);
                self.drive(&mut p, now);
                self.dirty = true;
            }
            if p.stale_until.is_some_and(|t| t <= now) {
                p.stale_until = None;
                let changes = self.rib.flush_stale(p.id, None);
                self.apply_elsewhere(changes, &mut p, now);
            }
            if p.start_at.is_some_and(|t| t <= now) {
                p.start_at = None;
                if p.session.state() == State::Idle && self.tunnels_up.contains(&name) {
                    p.session.start(now);
                    self.dirty = true;
                }
            }
            self.peers.insert(name, p);
        }
    }

    /// Publishes the peers and routes for the API, metrics and status page.
    fn publish(&mut self) {
        self.dirty = false;
        let bfd = if self.bfd_specs.is_empty() {
            Vec::new()
        } else {
            self.bfd.status()
        };
        let local = |p: &Peer| p.spec.local_address.to_string();
        let now = Instant::now();
        for p in self.peers.values_mut() {
            p.flap_count(now);
        }
        let peers: Vec<PeerStatus> = self
            .peers
            .values()
            .map(|p| {
                let flap_count = p.resets.len() as u32;
                let c = p.session.counters();
                PeerStatus {
                    connection: p.spec.connection.clone(),
                    local_address: local(p),
                    neighbor: p.spec.peer_address.to_string(),
                    asn: p.spec.peer_asn,
                    state: match p.session.state() {
                        State::Established => PeerState::Connected,
                        State::OpenSent | State::OpenConfirm => PeerState::Connecting,
                        State::Connect if p.connecting.is_some() => PeerState::Connecting,
                        State::Connect => PeerState::Idle,
                        State::Idle => PeerState::Stopped,
                    },
                    connected_since: p.session.established_at(),
                    routes_received: self.rib.received(p.id) as u64,
                    routes_advertised: self.rib.advertised_count(p.id) as u64,
                    messages_sent: c.messages_sent,
                    messages_received: c.messages_received,
                    last_error: p.last_error.clone(),
                    bfd_state: p.spec.bfd.and_then(|_| {
                        bfd.iter()
                            .find(|s| s.peer == p.spec.peer_address)
                            .map(|s| s.state.clone())
                    }),
                    flap_count,
                    flap_reason: crate::plan::bgp::flap_reason(flap_count, p.last_reset.as_deref()),
                    resets_total: p.resets_total,
                }
            })
            .collect();
        let local_address = self.peers.values().next().map(local).unwrap_or_default();
        let neighbor = |id: Option<PeerId>| -> String {
            id.and_then(|id| self.by_id.get(&id))
                .and_then(|n| self.peers.get(n))
                .map(|p| p.spec.peer_address.to_string())
                .unwrap_or_default()
        };
        let weight = |id: Option<PeerId>| -> u32 {
            id.and_then(|id| self.by_id.get(&id))
                .and_then(|n| self.peers.get(n))
                .map_or(32768, |p| p.spec.weight)
        };
        let row = |r: &vgw_bgp::RouteView, origin: &str| RouteRow {
            local_address: local_address.clone(),
            network: r.prefix.to_string(),
            next_hop: r
                .attributes
                .next_hop
                .map(|a| a.to_string())
                .unwrap_or_default(),
            source_peer: neighbor(r.peer),
            origin: origin.to_string(),
            as_path: r.attributes.as_path_string(),
            weight: weight(r.peer),
        };
        let learned: Vec<RouteRow> = self
            .rib
            .learned()
            .iter()
            .map(|r| {
                let origin = match r.peer {
                    None => "Network",
                    Some(id) => {
                        let ibgp = self
                            .by_id
                            .get(&id)
                            .and_then(|n| self.peers.get(n))
                            .is_some_and(|p| p.spec.peer_asn == p.spec.local_asn);
                        if ibgp { "IBgp" } else { "EBgp" }
                    }
                };
                let mut rr = row(r, origin);
                if r.peer.is_none() {
                    rr.source_peer = local_address.clone();
                }
                rr
            })
            .collect();
        let mut advertised = BTreeMap::new();
        for p in self.peers.values() {
            let rows: Vec<RouteRow> = self
                .rib
                .advertised(p.id)
                .iter()
                .map(|r| {
                    let mut rr = row(r, "Network");
                    rr.source_peer = local_address.clone();
                    rr.weight = 0;
                    rr
                })
                .collect();
            advertised.insert(p.spec.peer_address.to_string(), rows);
        }
        self.status.publish(Snapshot {
            peers,
            learned,
            advertised,
        });
    }
}

/// An operator-facing reason for a failed BGP connect.
fn describe_connect_error(e: &std::io::Error, remote: IpAddr) -> String {
    match e.raw_os_error() {
        Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH) => format!(
            "no route to the peer address {remote}: check the local gateway's bgpPeeringAddress and that the tunnel carries it"
        ),
        Some(libc::ECONNREFUSED) => format!(
            "{remote} refused the connection: BGP is not running there, or it is not configured for this gateway's peering address"
        ),
        Some(libc::EADDRNOTAVAIL) => {
            "our peering address is not assigned yet (the tunnel interface is coming up)".into()
        }
        _ if e.kind() == std::io::ErrorKind::TimedOut => format!(
            "no answer from {remote}:179 within {} s: the tunnel or the peer's firewall drops BGP",
            CONNECT_TIMEOUT.as_secs()
        ),
        _ => format!("{remote}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_are_counted_within_the_flap_window() {
        let spec = PeerSpec {
            connection: "to-site".into(),
            local_asn: 65515,
            local_address: "10.2.255.254".parse().unwrap(),
            peer_asn: 65010,
            peer_address: "10.1.255.254".parse().unwrap(),
            weight: 0,
            hold_time: 9,
            keepalive: 3,
            max_prefixes: 100,
            max_prefix_action: MaxPrefixAction::Warn,
            bfd: None,
        };
        let mut p = Peer {
            id: 1,
            spec,
            session: Session::new(SessionConfig::default()),
            connection: None,
            connecting: None,
            stale_until: None,
            last_error: None,
            warned_max_prefix: false,
            failures: std::collections::VecDeque::new(),
            start_at: None,
            up: true,
            resets: std::collections::VecDeque::new(),
            resets_total: 0,
            last_reset: None,
        };
        let t0 = Instant::now();
        for i in 0..9 {
            p.up = true;
            assert_eq!(
                p.record_reset(t0 + Duration::from_secs(7 * i), "peer sent NOTIFICATION x"),
                i as u32 + 1
            );
        }
        assert!(!p.up);
        assert_eq!(
            crate::plan::bgp::flap_reason(
                p.flap_count(t0 + Duration::from_secs(60)),
                p.last_reset.as_deref()
            )
            .as_deref(),
            Some("reset 9 times in the last 5 minutes; last: peer sent NOTIFICATION x")
        );
        // Five minutes after the last one, none is left in the window; the total stays.
        assert_eq!(p.flap_count(t0 + Duration::from_secs(56 + 301)), 0);
        assert_eq!(p.resets_total, 9);
    }

    #[test]
    fn hold_down_doubles_with_failures_and_is_capped() {
        assert_eq!(hold_down(0), Duration::ZERO);
        assert_eq!(hold_down(1), Duration::from_secs(2));
        assert_eq!(hold_down(2), Duration::from_secs(4));
        assert_eq!(hold_down(4), Duration::from_secs(16));
        assert_eq!(hold_down(6), Duration::from_secs(60));
        assert_eq!(hold_down(1000), HOLD_DOWN_MAX);
    }
}
