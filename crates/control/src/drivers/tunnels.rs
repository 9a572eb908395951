//! The reconciler for site-to-site tunnels: drives the IKE engine and the data plane toward the
//! desired state, and keeps the live status (with reasons) the API shows.
//!
//! One tokio task owns the sans-IO [`vgw_ike::Endpoint`]. It wakes on a desired-state change, an IKE
//! datagram from the data plane, the engine's next timer, or a one-second tick that reads the data
//! plane's counters (ESP arriving counts as peer liveness, RFC 7296 §1.4). Engine events become data
//! plane commands (install/remove Child SAs), status changes and diagnostic log lines.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use vgw_dataplane::{
    AddrRange, DataPlane, DataPlaneConfig, IkeDatagram, LimitState, Selectors, routes::KernelRoutes,
};
use vgw_esp::{Lifetime, SaParams, Spi};
use vgw_ike::crypto::{Encryption, Integrity};
use vgw_ike::message::TrafficSelector;
use vgw_ike::{ChildSaKeys, Config, ConnId, Endpoint, Event, Failure};

use crate::controller::Controller;
use crate::model;
use crate::ops::diaglog::{Category, DiagLog};
use crate::plan::conn::{ConnKind, SiteIds};
use crate::plan::ipsec::build_config;
use crate::state::DesiredState;
use crate::status::{ConnectionState, ConnectionStatus, StatusSource, TunnelStatus};

/// How often ESP activity is noted and keepalives are considered.
const TICK: Duration = Duration::from_millis(200);
/// Peer addresses whose IKE traffic is tracked for `vgw doctor` (a flood's sources beyond it are not).
const MAX_IKE_PEERS: usize = 4096;
/// NAT keepalive period in ticks (20 s).
const KEEPALIVE_TICKS: u64 = 100;

/// Live status of every connection, shared with the API.
#[derive(Default)]
pub struct LiveStatus {
    connections: RwLock<HashMap<String, Live>>,
    /// IKE SAs lost or refused, by typed reason (for metrics).
    failures: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Unauthenticated IKE exchanges refused or dropped, by (connection, exchange, reason).
    refused: std::sync::Mutex<std::collections::BTreeMap<RefusedKey, u64>>,
    /// The data plane, for its drop counters.
    dataplane: std::sync::OnceLock<Arc<DataPlane>>,
    /// The data plane's IKE admission counters (per queue and drop reason).
    ike_queue: std::sync::OnceLock<Arc<vgw_dataplane::ikequeue::IkeQueueCounters>>,
    /// IKE datagrams exchanged per peer address (for `vgw doctor`: did anything arrive?).
    ike_peers: std::sync::Mutex<HashMap<std::net::IpAddr, IkeTraffic>>,
    /// Connected point-to-site clients.
    pub p2s: crate::plan::p2s::P2sStatus,
    /// The WireGuard server, when point-to-site lists WireGuard.
    pub wireguard: std::sync::Mutex<Option<Arc<crate::drivers::wireguard::Server>>>,
    /// Prefixes routed into this instance's own tunnels now (static prefixes of connected tunnels and
    /// BGP routes, without BGP neighbours' host routes): what an active-active peer backs up (crate::ha).
    reachable: RwLock<Vec<IpNet>>,
}

impl LiveStatus {
    /// Prefixes this instance routes into its own tunnels now.
    pub fn reachable(&self) -> Vec<IpNet> {
        self.reachable
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A refused-exchange counter's labels: connection name (`-` when none), exchange, reason.
pub type RefusedKey = (String, &'static str, &'static str);

/// IKE datagrams exchanged with one peer address.
#[derive(Debug, Default, Clone, Copy)]
struct IkeTraffic {
    received: u64,
    sent: u64,
    last_received_ms: u64,
    last_sent_ms: u64,
}

/// One connection's numbers for the metrics endpoint.
#[derive(Debug, Clone, Default)]
pub struct ConnectionMetrics {
    /// Connection name.
    pub name: String,
    /// The peer's address.
    pub remote_ip: String,
    /// connectionStatus.
    pub state: String,
    /// Installed Child SAs.
    pub child_sas: usize,
    /// IKE SA rekeys.
    pub ike_rekeys: u64,
    /// Child SA rekeys.
    pub child_rekeys: u64,
    /// Inner bytes received.
    pub ingress_bytes: u64,
    /// Inner bytes sent.
    pub egress_bytes: u64,
    /// Packets received.
    pub ingress_packets: u64,
    /// Packets sent.
    pub egress_packets: u64,
    /// Inbound selector mismatches.
    pub ingress_drop_ts: u64,
    /// Outbound selector mismatches.
    pub egress_drop_ts: u64,
    /// Other inbound drops.
    pub ingress_drop: u64,
    /// Other outbound drops.
    pub egress_drop: u64,
}

impl ConnectionMetrics {
    /// A connection with no live state (the data plane is off or it never ran).
    pub fn idle(name: &str) -> Self {
        Self {
            name: name.to_string(),
            state: "Unknown".into(),
            ..Default::default()
        }
    }
}

impl LiveStatus {
    /// Metrics rows for `names` (the configured connections).
    pub fn metrics<'a>(&self, names: impl Iterator<Item = &'a str>) -> Vec<ConnectionMetrics> {
        let map = self.connections.read().unwrap_or_else(|p| p.into_inner());
        names
            .map(|name| {
                let Some(live) = map.get(name) else {
                    return ConnectionMetrics::idle(name);
                };
                let load =
                    |f: fn(&vgw_dataplane::TunnelCounters) -> &std::sync::atomic::AtomicU64| {
                        live.counters
                            .as_ref()
                            .map_or(0, |c| f(c).load(Ordering::Relaxed))
                    };
                ConnectionMetrics {
                    name: name.to_string(),
                    remote_ip: live
                        .tunnel
                        .rsplit('-')
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                    state: format!("{:?}", live.state),
                    child_sas: live.child_sas,
                    ike_rekeys: live.ike_rekeys,
                    child_rekeys: live.child_rekeys,
                    ingress_bytes: load(|c| &c.ingress_bytes),
                    egress_bytes: load(|c| &c.egress_bytes),
                    ingress_packets: load(|c| &c.ingress_packets),
                    egress_packets: load(|c| &c.egress_packets),
                    ingress_drop_ts: load(|c| &c.ingress_drop_ts_mismatch),
                    egress_drop_ts: load(|c| &c.egress_drop_ts_mismatch),
                    ingress_drop: load(|c| &c.ingress_drop),
                    egress_drop: load(|c| &c.egress_drop),
                }
            })
            .collect()
    }

    /// The running data plane, if any.
    pub fn dataplane(&self) -> Option<&Arc<DataPlane>> {
        self.dataplane.get()
    }

    fn note_ike(&self, peer: std::net::IpAddr, received: bool) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut map = self.ike_peers.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: a flood from forged sources must not grow it without end.
        if map.len() >= MAX_IKE_PEERS && !map.contains_key(&peer) {
            return;
        }
        let t = map.entry(peer).or_default();
        if received {
            t.received += 1;
            t.last_received_ms = now;
        } else {
            t.sent += 1;
            t.last_sent_ms = now;
        }
    }

    /// What `vgw doctor --connection` walks through: live state, IKE traffic with the peer, data-plane
    /// counters and the routes into the tunnel (vgw's `diagnostics` extension of the API).
    pub fn diagnostics(&self, name: &str, peer: Option<std::net::IpAddr>) -> Value {
        let status = self.connection_status(name);
        let row = self
            .metrics(std::iter::once(name))
            .pop()
            .unwrap_or_else(|| ConnectionMetrics::idle(name));
        let (routes, tunnel_id) = {
            let map = self.connections.read().unwrap_or_else(|p| p.into_inner());
            map.get(name)
                .map(|l| (l.routes.clone(), l.tunnel_id))
                .unwrap_or_default()
        };
        let ike = peer.map(|ip| {
            let t = self
                .ike_peers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&ip)
                .copied()
                .unwrap_or_default();
            let at = |ms: u64| (ms > 0).then(|| crate::ops::diaglog::rfc3339(ms));
            json!({
                "peer": ip.to_string(),
                "packetsReceived": t.received,
                "packetsSent": t.sent,
                "lastReceivedUtc": at(t.last_received_ms),
                "lastSentUtc": at(t.last_sent_ms),
            })
        });
        json!({
            "connectionStatus": status.connection_status,
            "connectionStatusReason": status.connection_status_reason,
            "lastError": status.last_error,
            "tunnelId": tunnel_id,
            "childSas": row.child_sas,
            "ike": ike,
            "dataplane": {
                "ingressPackets": row.ingress_packets,
                "egressPackets": row.egress_packets,
                "ingressBytes": row.ingress_bytes,
                "egressBytes": row.egress_bytes,
                "ingressPacketDropTSMismatch": row.ingress_drop_ts,
                "egressPacketDropTSMismatch": row.egress_drop_ts,
                "ingressPacketDrop": row.ingress_drop,
                "egressPacketDrop": row.egress_drop,
            },
            "routes": routes,
            "dataplaneRunning": self.dataplane.get().is_some(),
        })
    }

    /// WireGuard peers heard from recently (empty when WireGuard is off).
    pub fn wireguard_health(&self) -> Vec<crate::drivers::wireguard::PeerHealth> {
        self.wireguard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|s| s.health())
            .unwrap_or_default()
    }

    /// Connection names by their data-plane tunnel id.
    pub fn tunnel_names(&self) -> HashMap<vgw_dataplane::TunnelId, String> {
        let map = self.connections.read().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .filter(|(_, l)| l.tunnel_id != 0)
            .map(|(name, l)| (l.tunnel_id, name.clone()))
            .collect()
    }

    /// Failure counts by reason.
    pub fn failures(&self) -> Vec<(String, u64)> {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Refused or dropped unauthenticated IKE exchanges by (connection, exchange, reason).
    pub fn refused(&self) -> Vec<(RefusedKey, u64)> {
        let map = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// IKE admission counters: (queue, outcome, count).
    pub fn ike_queue(&self) -> Vec<(&'static str, &'static str, u64)> {
        self.ike_queue
            .get()
            .map(|c| c.snapshot().to_vec())
            .unwrap_or_default()
    }

    /// Data-plane drop counters by cause.
    pub fn dataplane_drops(&self) -> Vec<(&'static str, u64)> {
        let Some(dp) = self.dataplane.get() else {
            return Vec::new();
        };
        let d = dp.drops();
        [
            ("no_route", &d.no_route),
            ("unknown_spi", &d.unknown_spi),
            ("auth_failed", &d.auth_failed),
            ("replayed", &d.replayed),
            ("malformed", &d.malformed),
            ("ike_queue_full", &d.ike_queue_full),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.load(Ordering::Relaxed)))
        .collect()
    }
}

#[derive(Default, Clone)]
struct Live {
    state: ConnectionState,
    reason: Option<String>,
    last_error: Option<Value>,
    tunnel: String,
    established_utc: Option<String>,
    child_sas: usize,
    ike_rekeys: u64,
    child_rekeys: u64,
    counters: Option<Arc<vgw_dataplane::TunnelCounters>>,
    /// The connection's tunnel in the data plane (0 until first reconciled).
    tunnel_id: vgw_dataplane::TunnelId,
    /// Prefixes routed into the tunnel.
    routes: Vec<String>,
    /// Unauthenticated exchanges refused or dropped (RFC 7296 §2.21), and the last one.
    refused_exchanges: u64,
    last_refused_exchange: Option<Value>,
}

impl StatusSource for LiveStatus {
    fn connection_status(&self, name: &str) -> ConnectionStatus {
        let map = self.connections.read().unwrap_or_else(|p| p.into_inner());
        let Some(live) = map.get(name) else {
            return ConnectionStatus::default();
        };
        let (ingress, egress) = live
            .counters
            .as_ref()
            .map(|c| {
                (
                    c.ingress_bytes.load(Ordering::Relaxed),
                    c.egress_bytes.load(Ordering::Relaxed),
                )
            })
            .unwrap_or((0, 0));
        ConnectionStatus {
            connection_status: live.state,
            connection_status_reason: live.reason.clone(),
            last_error: live.last_error.clone(),
            ingress_bytes_transferred: ingress,
            egress_bytes_transferred: egress,
            tunnel_connection_status: vec![TunnelStatus {
                tunnel: live.tunnel.clone(),
                connection_status: live.state,
                ingress_bytes_transferred: ingress,
                egress_bytes_transferred: egress,
                last_connection_established_utc_time: live.established_utc.clone(),
            }],
            ike_sa_rekeys: live.ike_rekeys,
            child_sa_rekeys: live.child_rekeys,
            refused_exchanges: live.refused_exchanges,
            last_refused_exchange: live.last_refused_exchange.clone(),
        }
    }
}

/// Operator actions the API hands to the reconciler.
#[derive(Debug)]
pub enum TunnelCommand {
    /// `vpn-connection reset`: tear down and re-establish one connection.
    Reset(String),
    /// `vnet-gateway reset`: all of them, configuration kept.
    ResetAll,
    /// `disconnect-vpn-connections`: point-to-site client sessions by engine id.
    DisconnectClients(Vec<ConnId>),
}

/// The API's handle on the running reconciler.
#[derive(Clone)]
pub struct TunnelHandle {
    commands: mpsc::Sender<TunnelCommand>,
}

impl TunnelHandle {
    /// Queues a command; false if the reconciler is gone.
    pub fn send(&self, command: TunnelCommand) -> bool {
        self.commands.try_send(command).is_ok()
    }
}

/// A route the BGP speaker wants into the forwarding tables via the tunnels of its multipath set
/// (connection names, best first), or out of them (an empty set).
pub type BgpRouteChange = (IpNet, Vec<String>);

/// A connection's tunnel came up (its first Child SA) or went down (its IKE SA).
#[derive(Debug, Clone)]
pub struct TunnelEvent {
    /// Connection name.
    pub connection: String,
    /// Up or down.
    pub up: bool,
}

/// The BGP speaker's side of the reconciler: it sends route changes and hears tunnel events.
pub struct BgpLinks {
    /// Route changes for the data plane and the kernel.
    pub routes: mpsc::UnboundedSender<Vec<BgpRouteChange>>,
    /// Tunnel up/down.
    pub tunnel_events: mpsc::UnboundedReceiver<TunnelEvent>,
}

/// Starts the tunnel reconciler with its data plane. Fails if the TUN or the IKE ports cannot be opened.
pub fn start(
    controller: Arc<Controller>,
    log: Arc<DiagLog>,
    status: Arc<LiveStatus>,
    dataplane: DataPlaneConfig,
    p2s_dir: std::path::PathBuf,
) -> std::io::Result<(TunnelHandle, BgpLinks)> {
    let (ike_tx, ike_rx) = vgw_dataplane::ikequeue::channels();
    let _ = status.ike_queue.set(ike_rx.counters.clone());
    let (bgp_routes_tx, bgp_routes_rx) = mpsc::unbounded_channel();
    let (tunnel_events_tx, tunnel_events_rx) = mpsc::unbounded_channel();
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let dp = Arc::new(DataPlane::start(dataplane, ike_tx)?);
    let _ = status.dataplane.set(dp.clone());
    let routes = KernelRoutes::new(dp.tun_index())?;
    let mut driver = Driver {
        endpoint: {
            // Certificate validity needs the wall clock; the engine never reads one itself.
            let mut endpoint = Endpoint::new();
            endpoint.set_wall_clock(Instant::now(), SystemTime::now());
            endpoint
        },
        dp,
        routes,
        controller,
        log,
        status,
        ids: HashMap::new(),
        site_ids: SiteIds::default(),
        names: HashMap::new(),
        configs: HashMap::new(),
        installed_routes: HashMap::new(),
        last_ingress: HashMap::new(),
        peers: HashMap::new(),
        send_errors: HashMap::new(),
        ticks: 0,
        bgp_routes: HashMap::new(),
        tunnel_events: tunnel_events_tx,
        peering_address: None,
        bgp_neighbours: HashSet::new(),
        reachable_dirty: true,
        p2s_dir,
        p2s_key: None,
        kernel_pending: Vec::new(),
        gateway_name: None,
        wireguard: None,
        admission: crate::ike_admission::Publisher::new(
            ike_rx.known.clone(),
            ike_rx.known_peers.clone(),
        ),
        junk_log: crate::ike_admission::JunkLog::new(Instant::now()),
    };
    tokio::spawn(async move { driver.run(ike_rx, cmd_rx, bgp_routes_rx).await });
    Ok((
        TunnelHandle { commands: cmd_tx },
        BgpLinks {
            routes: bgp_routes_tx,
            tunnel_events: tunnel_events_rx,
        },
    ))
}

struct Driver {
    endpoint: Endpoint,
    dp: Arc<DataPlane>,
    routes: KernelRoutes,
    controller: Arc<Controller>,
    log: Arc<DiagLog>,
    status: Arc<LiveStatus>,
    ids: HashMap<String, ConnId>,
    site_ids: SiteIds,
    names: HashMap<ConnId, String>,
    configs: HashMap<ConnId, Config>,
    installed_routes: HashMap<ConnId, Vec<IpNet>>,
    last_ingress: HashMap<ConnId, u64>,
    /// Where each connection's ESP goes, for NAT keepalives.
    peers: HashMap<ConnId, std::net::SocketAddr>,
    /// The last failed IKE send to each peer address (cleared by a send that works): a failure
    /// that would otherwise read as NO_RESPONSE is reported as the send error it was.
    send_errors: HashMap<IpAddr, SendError>,
    ticks: u64,
    /// Routes the BGP speaker installed, by prefix. A connection's static prefixes win over them.
    bgp_routes: HashMap<IpNet, Vec<ConnId>>,
    /// Tunnel up/down, for the BGP speaker.
    tunnel_events: mpsc::UnboundedSender<TunnelEvent>,
    /// The gateway's BGP peering address as assigned to the TUN.
    peering_address: Option<IpAddr>,
    /// The local gateways' BGP peering addresses: their host routes are never backed up by an
    /// active-active peer (a BGP session must only ever run over its own connection's tunnel).
    bgp_neighbours: HashSet<IpAddr>,
    /// Routes or tunnel states changed since `reachable` was last published.
    reachable_dirty: bool,
    /// Where the point-to-site server credentials live.
    p2s_dir: std::path::PathBuf,
    /// What the running remote-access connection was built from (None: point-to-site off).
    p2s_key: Option<String>,
    /// Kernel route changes decided while handling events (applied in `flush`): add or remove.
    kernel_pending: Vec<(IpNet, bool)>,
    /// The gateway's name, for log resources.
    gateway_name: Option<String>,
    /// The running WireGuard server: the pool half it serves and the kernel routes of its TUN.
    wireguard: Option<(ipnet::Ipv4Net, KernelRoutes)>,
    /// Our IKE SPIs and the peers' addresses, published to the data plane's IKE admission.
    admission: crate::ike_admission::Publisher,
    /// Rate limiter and summariser of log lines for unauthenticated junk.
    junk_log: crate::ike_admission::JunkLog,
}

fn conn_resource(name: &str) -> String {
    model::resource_id(model::collection::CONNECTIONS, name)
}

fn utc_now() -> String {
    crate::ops::diaglog::rfc3339(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    )
}

impl Driver {
    async fn run(
        &mut self,
        ike_rx: vgw_dataplane::ikequeue::IkeReceivers,
        mut commands: mpsc::Receiver<TunnelCommand>,
        mut bgp_routes: mpsc::UnboundedReceiver<Vec<BgpRouteChange>>,
    ) {
        let mut changes = self.controller.subscribe();
        self.reconcile().await;
        // ESP activity is handed to the IKE engine every tick: short, so that a one-second dead-peer
        // detection (dpdTimeoutSeconds 1) never probes a peer whose ESP is flowing.
        let mut tick = tokio::time::interval(TICK);
        let lifetime = Arc::clone(self.dp.lifetime_events());
        let (mut established_rx, mut new_rx) = (ike_rx.established, ike_rx.new);
        loop {
            let wake = self
                .endpoint
                .poll_timeout()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(1));
            // Biased: established SAs' datagrams first, new ones (IKE_SA_INIT, unknown SAs) last,
            // so a flood of new ones never delays DPD, rekeys or anything else.
            tokio::select! {
                biased;
                Some(d) = established_rx.recv() => self.handle_ike(d),
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.reconcile().await;
                }
                _ = tokio::time::sleep_until(wake) => {
                    self.endpoint.handle_timeout(Instant::now());
                }
                _ = tick.tick() => {
                    self.note_esp_activity();
                    self.admission_tick();
                }
                _ = lifetime.notified() => self.rekey_on_volume(&lifetime.take()),
                Some(command) = commands.recv() => self.command(command),
                Some(changes) = bgp_routes.recv() => self.apply_bgp_routes(changes).await,
                Some(d) = new_rx.recv() => self.handle_ike(d),
            }
            self.flush().await;
        }
    }

    /// Child SAs the data plane saw reach a volume limit: at the soft limit IKE rekeys them
    /// (RFC 4301 §4.4.2.1, RFC 7296 §2.8), before the hard limit makes the data plane refuse
    /// them. Without this a tunnel stopped carrying traffic after saDataSizeKilobytes (about
    /// 105 GB by default: 85 s at 10 Gbit/s) while IKE still said Connected.
    fn rekey_on_volume(&mut self, events: &[vgw_dataplane::LifetimeEvent]) {
        let now = Instant::now();
        for e in events {
            let started = self.endpoint.rekey_child_sa(e.tunnel, e.spi.0, now);
            let Some(name) = self.names.get(&e.tunnel).cloned() else {
                continue; // a point-to-site client: its rekey is logged when it completes
            };
            let sa = format!("{:08x}_{}", e.spi.0, if e.outbound { "o" } else { "i" });
            let (level, message) = match e.state {
                LimitState::SoftReached if started => (
                    "info",
                    format!(
                        "Child SA {sa} carried {} bytes, near its volume lifetime \
                         (saDataSizeKilobytes); rekeying",
                        e.bytes
                    ),
                ),
                LimitState::SoftReached => continue, // its rekey is already under way
                _ => (
                    "warning",
                    format!(
                        "Child SA {sa} reached its volume lifetime (saDataSizeKilobytes, {} bytes) \
                         before its rekey completed; its packets are dropped until the new SA is \
                         installed. A larger saDataSizeKilobytes leaves the rekey more time.",
                        e.bytes
                    ),
                ),
            };
            self.log.log(
                Category::TunnelDiagnosticLog,
                level,
                &conn_resource(&name),
                &message,
                json!({"connection": name, "spi": sa, "bytes": e.bytes}),
            );
        }
    }

    fn handle_ike(&mut self, d: IkeDatagram) {
        self.status.note_ike(d.remote.ip(), true);
        self.endpoint
            .handle_datagram(Instant::now(), d.local_port, d.remote, &d.data);
    }

    /// Every tick: the data plane's admission tables and the junk summaries.
    fn admission_tick(&mut self) {
        self.admission.spis(self.endpoint.local_spis());
        self.admission
            .peers(self.configs.values().map(|c| c.remote_addr));
        for (kind, message) in self.junk_log.summaries(Instant::now()) {
            self.log.log(
                Category::IkeDiagnosticLog,
                "warning",
                "/vgw",
                &message,
                json!({"reason": kind, "summary": true}),
            );
        }
    }

    /// ESP that arrived since the last tick proves the peer alive (no liveness check needed).
    fn note_esp_activity(&mut self) {
        let now = Instant::now();
        // vgw always asks for UDP encapsulation as if behind a NAT, so it keeps the path's NAT mappings
        // alive: a keepalive every 20 s (RFC 3948 §2.3).
        self.ticks += 1;
        if self.ticks.is_multiple_of(KEEPALIVE_TICKS) {
            for remote in self.peers.values() {
                let _ = self.dp.send_keepalive(*remote);
            }
        }
        for &id in self.names.keys() {
            let seen = self.dp.counters(id).last_ingress_ms.load(Ordering::Relaxed);
            if seen != 0 && self.last_ingress.get(&id) != Some(&seen) {
                self.last_ingress.insert(id, seen);
                self.endpoint.note_activity(id, now);
            }
        }
    }

    async fn flush(&mut self) {
        while let Some(t) = self.endpoint.poll_transmit() {
            self.status.note_ike(t.remote.ip(), false);
            match self.dp.send_ike(t.local_port, t.remote, &t.data) {
                Ok(()) => {
                    self.send_errors.remove(&t.remote.ip());
                }
                Err(e) => {
                    let error = SendError::new(t.local_port, t.remote, &e);
                    if self.send_errors.get(&t.remote.ip()) != Some(&error) {
                        tracing::warn!(error = %e, remote = %t.remote, "IKE send failed");
                        self.note_send_error(&error);
                    }
                    // Bounded: entries of peers that never come back (road warriors) must not
                    // accumulate.
                    if self.send_errors.len() >= 1024 {
                        self.send_errors.clear();
                    }
                    self.send_errors.insert(t.remote.ip(), error);
                }
            }
        }
        // A log line followed by the refusal it explains is unauthenticated junk: rate-limited.
        let mut pending: Option<Event> = None;
        while let Some(event) = self.endpoint.poll_event() {
            if let Some(log @ Event::Log { .. }) = pending.take() {
                let junk = match &event {
                    Event::Refused { reason, remote, .. } => {
                        Some(self.junk_log.admit(reason, remote.ip(), Instant::now()))
                    }
                    _ => None,
                };
                if junk != Some(false) {
                    self.apply(log);
                }
            }
            if matches!(event, Event::Log { .. }) {
                pending = Some(event);
                continue;
            }
            self.apply(event);
            self.reachable_dirty = true;
        }
        if let Some(log) = pending {
            self.apply(log);
        }
        // A new IKE SA (a responder's, just created): publish its SPI now, before its IKE_AUTH.
        if self.endpoint.local_spis().len() != self.admission.spi_count() {
            self.admission.spis(self.endpoint.local_spis());
        }
        if std::mem::take(&mut self.reachable_dirty) {
            self.publish_reachable();
        }
        for (prefix, add) in std::mem::take(&mut self.kernel_pending) {
            let result = if add {
                self.routes.add(prefix).await
            } else {
                self.routes.remove(prefix).await
            };
            if let Err(e) = result {
                tracing::warn!(%prefix, error = %e, "kernel route change for a point-to-site client failed");
            }
        }
    }

    /// Publishes the prefixes this instance's own tunnels carry now, for an active-active peer.
    fn publish_reachable(&self) {
        let connected: HashSet<&str> = {
            let map = self
                .status
                .connections
                .read()
                .unwrap_or_else(|p| p.into_inner());
            self.names
                .values()
                .filter(|n| {
                    map.get(n.as_str())
                        .is_some_and(|l| l.state == ConnectionState::Connected)
                })
                .map(String::as_str)
                .collect()
        };
        let mut set: std::collections::BTreeSet<IpNet> = self.bgp_routes.keys().copied().collect();
        for (id, prefixes) in &self.installed_routes {
            if self
                .names
                .get(id)
                .is_some_and(|n| connected.contains(n.as_str()))
            {
                set.extend(prefixes.iter().copied());
            }
        }
        set.retain(|p| {
            !(p.prefix_len() == p.max_prefix_len() && self.bgp_neighbours.contains(&p.addr()))
        });
        let list: Vec<IpNet> = set.into_iter().collect();
        let mut published = self
            .status
            .reachable
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if *published != list {
            *published = list;
        }
    }

    /// Whether a connection's static configuration routes `prefix` (static wins over BGP).
    fn is_static(&self, prefix: &IpNet) -> bool {
        self.installed_routes.values().any(|v| v.contains(prefix))
    }

    /// Installs or removes the BGP speaker's routes: the data plane's table points the prefix at the
    /// tunnels of its multipath set (one flow stays on one tunnel) and the kernel routes it into the TUN.
    async fn apply_bgp_routes(&mut self, changes: Vec<BgpRouteChange>) {
        self.reachable_dirty = true;
        for (prefix, connections) in changes {
            let ids: Vec<ConnId> = connections
                .iter()
                .filter_map(|n| self.ids.get(n).copied())
                .collect();
            if ids.is_empty() {
                if self.bgp_routes.remove(&prefix).is_some() && !self.is_static(&prefix) {
                    self.dp.route(prefix, None);
                    let _ = self.routes.remove(prefix).await;
                }
                continue;
            }
            let previous = self.bgp_routes.insert(prefix, ids.clone());
            if self.is_static(&prefix) || previous.as_ref() == Some(&ids) {
                continue;
            }
            self.dp.route_multipath(prefix, &ids);
            if previous.is_none()
                && let Err(e) = self.routes.add(prefix).await
            {
                tracing::warn!(%prefix, error = %e, "cannot add the BGP route to the kernel");
            }
        }
    }

    /// A static prefix left its connection: hand it back to BGP if the speaker has it, else remove it.
    async fn unroute_static(&mut self, prefix: IpNet) {
        if self.is_static(&prefix) {
            return;
        }
        match self.bgp_routes.get(&prefix) {
            Some(ids) => self.dp.route_multipath(prefix, ids),
            None => {
                self.dp.route(prefix, None);
                let _ = self.routes.remove(prefix).await;
            }
        }
    }

    /// Shows a new IKE send failure on the connections to that peer that are not up, at once,
    /// rather than only when the exchange times out.
    fn note_send_error(&self, error: &SendError) {
        let names: Vec<String> = self
            .configs
            .iter()
            .filter(|(_, c)| c.remote_addr == error.remote.ip())
            .filter_map(|(id, _)| self.names.get(id).cloned())
            .collect();
        let json = error.json();
        for name in names {
            self.set_live(&name, |l| {
                if l.state != ConnectionState::Connected {
                    l.reason = Some(SEND_ERROR.into());
                    l.last_error = Some(json.clone());
                }
            });
            self.log.log(
                Category::TunnelDiagnosticLog,
                "error",
                &conn_resource(&name),
                &error.message(),
                json!({"connection": name, "lastError": json}),
            );
        }
    }

    fn set_live(&self, name: &str, f: impl FnOnce(&mut Live)) {
        let mut map = self
            .status
            .connections
            .write()
            .unwrap_or_else(|p| p.into_inner());
        f(map.entry(name.to_string()).or_default());
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::ClientUp(info) => self.client_up(info),
            Event::ClientDown {
                client,
                user_name,
                remote,
                failure,
                ..
            } => self.client_down(client, user_name, remote, failure),
            Event::AddressesAssigned { .. } => {}
            Event::ChildSaUp { conn, keys, .. }
                if matches!(ConnKind::of(conn), ConnKind::PointToSiteClient(_)) =>
            {
                self.install_client(conn, keys)
            }
            Event::Log {
                conn: Some(conn),
                level,
                exchange,
                message,
            } if ConnKind::of(conn).is_point_to_site() => {
                self.log.log(
                    Category::P2sDiagnosticLog,
                    level,
                    &self.gateway_resource(),
                    &message,
                    json!({"exchange": exchange}),
                );
            }
            Event::Log {
                conn,
                level,
                exchange,
                message,
            } => {
                let name = conn.and_then(|c| self.names.get(&c)).cloned();
                let resource = name
                    .as_deref()
                    .map(conn_resource)
                    .unwrap_or_else(|| "/vgw".into());
                self.log.log(
                    Category::IkeDiagnosticLog,
                    level,
                    &resource,
                    &message,
                    json!({"exchange": exchange, "connection": name}),
                );
            }
            Event::IkeSaUp {
                conn,
                suite,
                remote,
                rekey,
            } => {
                let Some(name) = self.names.get(&conn).cloned() else {
                    return;
                };
                let local = self
                    .configs
                    .get(&conn)
                    .map(|c| c.local_addr.to_string())
                    .unwrap_or_default();
                self.set_live(&name, |l| {
                    l.tunnel = format!("{local}-{}", remote.ip());
                    if rekey {
                        l.ike_rekeys += 1;
                    }
                });
                let message = if rekey {
                    format!("IKE SA rekeyed ({suite})")
                } else {
                    format!("IKE SA established with {remote} ({suite})")
                };
                self.log.log(
                    Category::TunnelDiagnosticLog,
                    "info",
                    &conn_resource(&name),
                    &message,
                    json!({"connection": name, "suite": suite}),
                );
            }
            Event::ChildSaUp {
                conn,
                keys,
                replaces,
            } => {
                if replaces.is_none()
                    && let Some(name) = self.names.get(&conn)
                {
                    let _ = self.tunnel_events.send(TunnelEvent {
                        connection: name.clone(),
                        up: true,
                    });
                }
                self.install(conn, keys, replaces)
            }
            Event::ChildSaDown {
                conn,
                inbound_spi,
                outbound_spi,
            } => {
                self.dp
                    .remove_child_sa(conn, Spi(inbound_spi), Spi(outbound_spi));
                let Some(name) = self.names.get(&conn).cloned() else {
                    return;
                };
                self.set_live(&name, |l| {
                    l.child_sas = l.child_sas.saturating_sub(1);
                });
            }
            Event::Refused {
                conn,
                exchange,
                reason,
                remote,
                established,
                failure,
            } => self.refused(conn, exchange, reason, remote, established, failure),
            Event::ChildSasGone {
                conn,
                failure,
                recreating,
            } => {
                // The IKE SA stays, but nothing carries traffic: the tunnel is down now (BGP over it
                // stops and its routes are withdrawn) until a Child SA is created again (ChildSaUp).
                let Some(name) = self.names.get(&conn).cloned() else {
                    return;
                };
                let _ = self.tunnel_events.send(TunnelEvent {
                    connection: name.clone(),
                    up: false,
                });
                let error = failure_json(&failure);
                *self
                    .status
                    .failures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(failure.reason.as_str().to_string())
                    .or_insert(0) += 1;
                self.set_live(&name, |l| {
                    l.state = if recreating {
                        ConnectionState::Connecting
                    } else {
                        ConnectionState::NotConnected
                    };
                    l.reason = Some(failure.reason.as_str().to_string());
                    l.last_error = Some(error.clone());
                    l.child_sas = 0;
                });
                self.log.log(
                    Category::TunnelDiagnosticLog,
                    "error",
                    &conn_resource(&name),
                    &format!(
                        "tunnel down: {}: {}",
                        failure.reason.as_str(),
                        failure.message
                    ),
                    json!({"connection": name, "lastError": error}),
                );
            }
            Event::IkeSaDown { conn, mut failure } => {
                self.peers.remove(&conn);
                let Some(name) = self.names.get(&conn).cloned() else {
                    return;
                };
                let remote = self.configs.get(&conn).map(|c| c.remote_addr);
                let send_error = remote.and_then(|ip| self.send_errors.get(&ip));
                let reason = match (failure.reason, send_error) {
                    // Nothing reached the wire: the peer never had the chance to answer.
                    (vgw_ike::Reason::NoResponse | vgw_ike::Reason::PeerDead, Some(e)) => {
                        failure.message = e.message();
                        SEND_ERROR
                    }
                    (r, _) => r.as_str(),
                };
                let _ = self.tunnel_events.send(TunnelEvent {
                    connection: name.clone(),
                    up: false,
                });
                let mut error = failure_json(&failure);
                error["reason"] = json!(reason);
                if failure.reason != vgw_ike::Reason::Administrative {
                    let mut failures = self
                        .status
                        .failures
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    *failures.entry(reason.to_string()).or_insert(0) += 1;
                }
                self.set_live(&name, |l| {
                    l.state = ConnectionState::NotConnected;
                    l.reason = Some(reason.to_string());
                    l.last_error = Some(error.clone());
                    l.child_sas = 0;
                });
                self.log.log(
                    Category::TunnelDiagnosticLog,
                    "error",
                    &conn_resource(&name),
                    &format!("tunnel down: {reason}: {}", failure.message),
                    json!({"connection": name, "lastError": error}),
                );
            }
        }
    }

    /// An unauthenticated exchange was refused or dropped (RFC 7296 §2.21): counted and kept as
    /// evidence (`refusedExchanges`, `lastRefusedExchange`). It never stops BGP and never changes the
    /// status of a connection an IKE SA carries; only when none does, a refusal that explains the
    /// failure (a proposal mismatch) becomes its lastError.
    fn refused(
        &mut self,
        conn: Option<ConnId>,
        exchange: &'static str,
        reason: &'static str,
        remote: std::net::SocketAddr,
        established: bool,
        failure: Option<Failure>,
    ) {
        let name = conn.and_then(|c| self.names.get(&c)).cloned();
        let label = match (&name, conn.map(ConnKind::of)) {
            (Some(n), _) => n.clone(),
            (None, Some(ConnKind::PointToSiteServer)) => "point-to-site".to_string(),
            _ => "-".to_string(),
        };
        *self
            .status
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((label, exchange, reason))
            .or_insert(0) += 1;
        let Some(name) = name else {
            return;
        };
        let record = json!({
            "time": utc_now(),
            "exchange": exchange,
            "reason": reason,
            "remote": remote.to_string(),
            "message": failure.as_ref().map(|f| f.message.clone()),
            "ignoredBecauseEstablished": established,
        });
        let mut counted = None;
        self.set_live(&name, |l| {
            l.refused_exchanges += 1;
            l.last_refused_exchange = Some(record);
            if let Some(f) = failure.as_ref().filter(|_| !established)
                && l.state != ConnectionState::Connected
            {
                l.state = ConnectionState::NotConnected;
                l.reason = Some(f.reason.as_str().to_string());
                l.last_error = Some(failure_json(f));
                counted = Some(f.reason.as_str());
            }
        });
        if let Some(reason) = counted {
            *self
                .status
                .failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(reason.to_string())
                .or_insert(0) += 1;
        }
    }

    /// Starts, changes or stops the remote-access connection. A changed revocation list drops the
    /// matching clients at once (the engine compares the trust stores); other changes re-create it.
    fn reconcile_p2s(&mut self, state: &DesiredState, now: Instant) {
        let key = state.gateway.as_ref().map(|gw| {
            json!([
                gw.vpn_client_configuration,
                gw.ip_configurations,
                gw.address_space,
                gw.custom_routes,
                state
                    .local_gateways
                    .values()
                    .map(|lg| &lg.local_network_address_space)
                    .collect::<Vec<_>>(),
            ])
            .to_string()
        });
        let wanted =
            crate::plan::p2s::build_config(state, &self.p2s_dir, self.controller.instance());
        match wanted {
            None => {
                if self.p2s_key.take().is_some() {
                    self.endpoint.remove(ConnKind::PointToSiteServer.id(), now);
                    self.log.log(
                        Category::P2sDiagnosticLog,
                        "info",
                        &self.gateway_resource(),
                        "point-to-site stopped",
                        Value::Null,
                    );
                }
            }
            Some(Err(message)) => {
                if self.p2s_key != key {
                    self.p2s_key = key;
                    self.log.log(
                        Category::P2sDiagnosticLog,
                        "error",
                        &self.gateway_resource(),
                        &format!("point-to-site cannot start: {message}"),
                        Value::Null,
                    );
                }
            }
            Some(Ok(config)) => {
                if self.p2s_key != key {
                    self.p2s_key = key;
                    self.endpoint
                        .set_config(ConnKind::PointToSiteServer.id(), config, now);
                    self.log.log(
                        Category::P2sDiagnosticLog,
                        "info",
                        &self.gateway_resource(),
                        "point-to-site (IKEv2, certificates) accepting clients",
                        Value::Null,
                    );
                }
            }
        }
    }

    /// Starts, updates or stops the WireGuard server for point-to-site.
    async fn reconcile_wireguard(&mut self, state: &DesiredState) {
        let p2s = state
            .gateway
            .as_ref()
            .and_then(|g| g.vpn_client_configuration.as_ref())
            .filter(|p| crate::plan::p2s::wireguard_on(p));
        let half = p2s.and_then(|p| {
            crate::drivers::wireguard::wireguard_half(&p.vpn_client_address_pool.address_prefixes)
        });
        let running = self.wireguard.as_ref().map(|(h, _)| *h);
        if running.is_some() && running != half {
            self.wireguard = None;
            *self
                .status
                .wireguard
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = None;
        }
        let (Some(p2s), Some(half)) = (p2s, half) else {
            return;
        };
        let keys = match crate::drivers::wireguard::Keys::load(&self.p2s_dir) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "WireGuard keys unavailable");
                return;
            }
        };
        if self.wireguard.is_none() {
            let started = crate::drivers::wireguard::Server::start(
                keys.server(),
                crate::drivers::wireguard::DEFAULT_PORT,
            )
            .and_then(|server| Ok((KernelRoutes::new(server.tun_index())?, server)));
            match started {
                Ok((routes, server)) => {
                    if let Err(e) = routes.add(IpNet::V4(half)).await {
                        tracing::warn!(error = %e, "cannot route the WireGuard pool half");
                    }
                    *self
                        .status
                        .wireguard
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(server));
                    self.wireguard = Some((half, routes));
                    self.log.log(
                        Category::P2sDiagnosticLog,
                        "info",
                        &self.gateway_resource(),
                        &format!(
                            "point-to-site (WireGuard) on UDP {} for {half}",
                            crate::drivers::wireguard::DEFAULT_PORT
                        ),
                        Value::Null,
                    );
                }
                Err(e) => {
                    self.log.log(
                        Category::P2sDiagnosticLog,
                        "error",
                        &self.gateway_resource(),
                        &format!("WireGuard cannot start: {e}"),
                        Value::Null,
                    );
                    return;
                }
            }
        }
        let peers = crate::plan::p2s::wireguard_peers(p2s, &keys)
            .into_iter()
            .map(|(peer, _)| peer)
            .collect();
        if let Some(server) = self
            .status
            .wireguard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            server.set_peers(peers);
        }
    }

    fn gateway_resource(&self) -> String {
        self.gateway_name
            .as_deref()
            .map(|n| model::resource_id(model::collection::GATEWAYS, n))
            .unwrap_or_else(|| "/vgw".into())
    }

    /// A point-to-site client authenticated: its addresses route into its own tunnel.
    fn client_up(&mut self, info: vgw_ike::ClientInfo) {
        let counters = self.dp.counters(info.client);
        for addr in &info.addresses {
            let host = IpNet::from(*addr);
            self.dp.route(host, Some(info.client));
            self.kernel_pending.push((host, true));
        }
        self.log.log(
            Category::P2sDiagnosticLog,
            "info",
            &self.gateway_resource(),
            &format!(
                "client {} connected from {}: address {} (certificate {}, thumbprint {})",
                info.user_name,
                info.remote,
                info.addresses
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                info.subject,
                info.thumbprint
            ),
            json!({"vpnConnectionId": crate::plan::p2s::connection_id(info.client), "vpnUserName": info.user_name}),
        );
        self.status.p2s.insert(crate::plan::p2s::ClientRow {
            id: info.client,
            user_name: info.user_name,
            thumbprint: info.thumbprint,
            public: info.remote.to_string(),
            addresses: info.addresses,
            connected_at: info.connected_at_wall.unwrap_or_else(SystemTime::now),
            counters: Some(counters),
        });
    }

    /// A client session ended or was refused; the reason goes to P2SDiagnosticLog.
    fn client_down(
        &mut self,
        client: ConnId,
        user_name: Option<String>,
        remote: std::net::SocketAddr,
        failure: Failure,
    ) {
        let row = self.status.p2s.remove(client);
        if let Some(row) = &row {
            for addr in &row.addresses {
                let host = IpNet::from(*addr);
                self.dp.route(host, None);
                self.kernel_pending.push((host, false));
            }
        }
        self.dp.remove_tunnel(client);
        let who = user_name.unwrap_or_else(|| "a client".into());
        let (level, what) = if row.is_some() {
            ("info", "disconnected")
        } else {
            ("error", "refused")
        };
        self.log.log(
            Category::P2sDiagnosticLog,
            level,
            &self.gateway_resource(),
            &format!(
                "{who} from {remote} {what}: {} ({})",
                failure.reason.as_str(),
                failure.message
            ),
            json!({"vpnConnectionId": crate::plan::p2s::connection_id(client), "reason": failure.reason.as_str()}),
        );
    }

    /// Installs a client's Child SA in the data plane (its own tunnel, keyed by the engine's id).
    fn install_client(&mut self, conn: ConnId, keys: ChildSaKeys) {
        let Some(suite) = esp_suite(&keys) else {
            return;
        };
        let params = |spi: u32, outbound: bool| SaParams {
            spi: Spi(spi),
            suite,
            esn: keys.suite.esn,
            lifetime: child_lifetime(None, keys.suite.esn, outbound),
        };
        let out = vgw_esp::OutboundSa::new(params(keys.outbound_spi, true), &keys.outbound_key);
        let inn = vgw_esp::InboundSa::new(params(keys.inbound_spi, false), &keys.inbound_key);
        let (Ok(out), Ok(inn)) = (out, inn) else {
            return;
        };
        let selectors = Selectors {
            local: ranges(&keys.local_ts),
            remote: ranges(&keys.remote_ts),
        };
        self.dp
            .install_child_sa(conn, keys.remote, out, inn, selectors);
        self.peers.insert(conn, keys.remote);
    }

    fn install(&mut self, conn: ConnId, keys: ChildSaKeys, replaces: Option<(u32, u32)>) {
        let Some(name) = self.names.get(&conn).cloned() else {
            return;
        };
        let suite = match esp_suite(&keys) {
            Some(s) => s,
            None => {
                self.log.log(
                    Category::IkeDiagnosticLog,
                    "error",
                    &conn_resource(&name),
                    &format!(
                        "negotiated ESP suite {} is not supported by the data plane",
                        keys.suite
                    ),
                    json!({"connection": name}),
                );
                return;
            }
        };
        let out = vgw_esp::OutboundSa::new(
            SaParams {
                spi: Spi(keys.outbound_spi),
                suite,
                esn: keys.suite.esn,
                lifetime: child_lifetime(keys.lifetime_bytes, keys.suite.esn, true),
            },
            &keys.outbound_key,
        );
        let inn = vgw_esp::InboundSa::new(
            SaParams {
                spi: Spi(keys.inbound_spi),
                suite,
                esn: keys.suite.esn,
                lifetime: child_lifetime(keys.lifetime_bytes, keys.suite.esn, false),
            },
            &keys.inbound_key,
        );
        let (Ok(out), Ok(inn)) = (out, inn) else {
            self.log.log(
                Category::IkeDiagnosticLog,
                "error",
                &conn_resource(&name),
                "cannot build ESP SAs from the negotiated keys",
                json!({"connection": name}),
            );
            return;
        };
        let selectors = Selectors {
            local: ranges(&keys.local_ts),
            remote: ranges(&keys.remote_ts),
        };
        self.dp
            .install_child_sa(conn, keys.remote, out, inn, selectors);
        self.peers.insert(conn, keys.remote);
        let counters = self.dp.counters(conn);
        let rekey = replaces.is_some();
        self.set_live(&name, |l| {
            l.counters = Some(counters);
            if rekey {
                l.child_rekeys += 1;
            } else {
                l.child_sas += 1;
            }
            if l.state != ConnectionState::Connected {
                l.established_utc = Some(utc_now());
            }
            l.state = ConnectionState::Connected;
            l.reason = None;
        });
        let ts = |v: &[TrafficSelector]| {
            v.iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        self.log.log(
            Category::TunnelDiagnosticLog,
            "info",
            &conn_resource(&name),
            &format!(
                "{} {:08x}_i {:08x}_o {} {} === {}",
                if rekey {
                    "Child SA rekeyed:"
                } else {
                    "Child SA installed:"
                },
                keys.inbound_spi,
                keys.outbound_spi,
                keys.suite,
                ts(&keys.local_ts),
                ts(&keys.remote_ts)
            ),
            json!({"connection": name}),
        );
    }

    async fn reconcile(&mut self) {
        self.reachable_dirty = true;
        let (state, _) = self.controller.snapshot().await;
        let now = Instant::now();
        // The gateway's BGP peering address lives on the TUN, so BGP's TCP can bind to it and the
        // peer's packets to it are delivered locally.
        self.gateway_name = state.gateway.as_ref().map(|g| g.name.clone());
        self.reconcile_p2s(&state, now);
        self.reconcile_wireguard(&state).await;
        let peering = crate::plan::bgp::local_peering_address(&state, self.controller.instance());
        if peering != self.peering_address
            && let Some(addr) = peering
        {
            match self.routes.add_address(addr).await {
                Ok(()) => {
                    self.peering_address = Some(addr);
                    self.log.log(
                        Category::RouteDiagnosticLog,
                        "info",
                        "/vgw",
                        &format!("BGP peering address {addr} assigned to the tunnel interface"),
                        Value::Null,
                    );
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "cannot assign the BGP peering address")
                }
            }
        }
        self.bgp_neighbours = state
            .local_gateways
            .values()
            .filter_map(|lg| lg.bgp_settings.as_ref()?.bgp_peering_address.as_deref())
            .filter_map(|a| a.trim().parse().ok())
            .collect();
        let mut wanted: HashMap<ConnId, (Config, Vec<IpNet>)> = HashMap::new();
        for (name, c) in &state.connections {
            let id = match self.ids.get(name) {
                Some(id) => *id,
                None => {
                    let Some(id) = self.site_ids.allocate() else {
                        self.set_live(name, |l| {
                            l.state = ConnectionState::NotConnected;
                            l.reason = Some("CONFIGURATION_ERROR".into());
                            l.last_error = Some(
                                json!({"message": "no connection id left; restart vgw serve"}),
                            );
                        });
                        continue;
                    };
                    self.ids.insert(name.clone(), id);
                    id
                }
            };
            self.names.insert(id, name.clone());
            match build_config(&state, c, self.controller.instance()) {
                Ok((config, prefixes)) => {
                    wanted.insert(id, (config, prefixes));
                }
                Err(message) => {
                    self.set_live(name, |l| {
                        l.state = ConnectionState::NotConnected;
                        l.reason = Some("CONFIGURATION_ERROR".into());
                        l.last_error = Some(json!({"message": message}));
                    });
                    self.log.log(
                        Category::TunnelDiagnosticLog,
                        "error",
                        &conn_resource(name),
                        &message,
                        json!({"connection": name}),
                    );
                }
            }
        }
        // Removed (or now unusable) connections: DELETE to the peer, SAs and routes out.
        let gone: Vec<ConnId> = self
            .configs
            .keys()
            .filter(|id| !wanted.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            self.endpoint.remove(id, now);
            self.configs.remove(&id);
            self.dp.remove_tunnel(id);
            for prefix in self.installed_routes.remove(&id).unwrap_or_default() {
                self.unroute_static(prefix).await;
            }
            if let Some(name) = self.names.get(&id).cloned()
                && !state.connections.contains_key(&name)
            {
                self.names.remove(&id);
                self.ids.remove(&name);
                self.status
                    .connections
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&name);
            }
        }
        for (id, (config, prefixes)) in wanted {
            let name = self.names.get(&id).cloned().unwrap_or_default();
            self.set_live(&name, |l| l.tunnel_id = id);
            let is_new = !self.configs.contains_key(&id);
            let changed = self.configs.get(&id).is_some_and(|old| !same(old, &config));
            if is_new || changed {
                self.set_live(&name, |l| {
                    if l.state != ConnectionState::Connected {
                        l.state = ConnectionState::Connecting;
                    }
                    l.tunnel = format!("{}-{}", config.local_addr, config.remote_addr);
                });
                self.endpoint.set_config(id, config.clone(), now);
                self.configs.insert(id, config);
            }
            // Recorded before the removals so `unroute_static` sees the new static set.
            let old = self
                .installed_routes
                .insert(id, prefixes.clone())
                .unwrap_or_default();
            for prefix in old.iter().filter(|p| !prefixes.contains(p)) {
                self.unroute_static(*prefix).await;
            }
            for prefix in prefixes.iter().filter(|p| !old.contains(p)) {
                self.dp.route(*prefix, Some(id));
                if let Err(e) = self.routes.add(*prefix).await {
                    self.log.log(
                        Category::RouteDiagnosticLog,
                        "error",
                        &conn_resource(&name),
                        &format!("cannot add route {prefix} to the tunnel: {e}"),
                        json!({"connection": name}),
                    );
                } else {
                    self.log.log(
                        Category::RouteDiagnosticLog,
                        "info",
                        &conn_resource(&name),
                        &format!("route {prefix} via the tunnel installed"),
                        json!({"connection": name}),
                    );
                }
            }
            self.set_live(&name, |l| {
                l.routes = prefixes.iter().map(ToString::to_string).collect();
            });
        }
        self.endpoint.handle_timeout(now);
        self.flush().await;
    }

    fn command(&mut self, command: TunnelCommand) {
        let now = Instant::now();
        let targets: Vec<(ConnId, String)> = match &command {
            TunnelCommand::Reset(name) => self
                .ids
                .get(name)
                .map(|id| vec![(*id, name.clone())])
                .unwrap_or_default(),
            TunnelCommand::ResetAll => self.ids.iter().map(|(n, id)| (*id, n.clone())).collect(),
            TunnelCommand::DisconnectClients(ids) => {
                for id in ids {
                    self.endpoint.disconnect_client(*id, now);
                }
                return;
            }
        };
        for (id, name) in targets {
            self.log.log(
                Category::TunnelDiagnosticLog,
                "info",
                &conn_resource(&name),
                "reset by the operator: re-establishing",
                json!({"connection": name}),
            );
            self.set_live(&name, |l| {
                l.state = ConnectionState::Connecting;
                l.reason = Some("ADMINISTRATIVE".into());
            });
            self.endpoint.reset(id, now);
        }
    }
}

fn same(a: &Config, b: &Config) -> bool {
    a.local_addr == b.local_addr
        && a.remote_addr == b.remote_addr
        && *a.psk == *b.psk
        && a.ike == b.ike
        && a.esp == b.esp
        && a.pfs == b.pfs
        && a.children == b.children
        && a.mode == b.mode
        && a.dpd_timeout == b.dpd_timeout
}

/// `connectionStatusReason` when IKE messages could not be sent at all (the socket refused them),
/// which would otherwise surface as NO_RESPONSE.
const SEND_ERROR: &str = "SEND_ERROR";

/// A failed IKE send: where to, and the error the kernel gave.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SendError {
    local_port: u16,
    remote: std::net::SocketAddr,
    errno: Option<i32>,
    error: String,
}

impl SendError {
    fn new(local_port: u16, remote: std::net::SocketAddr, e: &std::io::Error) -> Self {
        Self {
            local_port,
            remote,
            errno: e.raw_os_error(),
            // The errno is shown on its own; std's " (os error N)" suffix would repeat it.
            error: match e.raw_os_error() {
                Some(n) => e
                    .to_string()
                    .trim_end_matches(&format!(" (os error {n})"))
                    .to_string(),
                None => e.to_string(),
            },
        }
    }

    /// The sentence for `lastError.message`.
    fn message(&self) -> String {
        let errno = self
            .errno
            .map(|n| format!(" (errno {n})"))
            .unwrap_or_default();
        let hint = if self.remote.is_ipv6() {
            "; check that the gateway has an IPv6 address and route towards the peer"
        } else {
            "; check the gateway's address and route towards the peer"
        };
        format!(
            "cannot send IKE from UDP port {} to {}: {}{errno}{hint}",
            self.local_port, self.remote, self.error
        )
    }

    fn json(&self) -> Value {
        json!({
            "reason": SEND_ERROR,
            "exchange": "IKE_SA_INIT",
            "notify": null,
            "direction": "sent",
            "message": self.message(),
            "errno": self.errno,
            "ourProposals": [],
            "peerProposals": [],
            "time": utc_now(),
        })
    }
}

fn failure_json(f: &Failure) -> Value {
    json!({
        "reason": f.reason.as_str(),
        "exchange": f.exchange,
        "notify": f.notify,
        "direction": f.direction,
        "message": f.message,
        "ourProposals": f.our_proposals,
        "peerProposals": f.peer_proposals,
        "ourTrafficSelectors": f.our_selectors,
        "peerTrafficSelectors": f.peer_selectors,
        "time": utc_now(),
    })
}

fn ranges(ts: &[TrafficSelector]) -> Vec<AddrRange> {
    ts.iter()
        .map(|t| AddrRange {
            start: t.start,
            end: t.end,
        })
        .collect()
}

fn esp_suite(keys: &ChildSaKeys) -> Option<vgw_esp::Suite> {
    use vgw_esp::{Encryption as E, Integrity as I};
    let enc = match keys.suite.encryption {
        Encryption::AesGcm16(128) => E::AesGcm128,
        Encryption::AesGcm16(256) => E::AesGcm256,
        Encryption::ChaCha20Poly1305 => E::ChaCha20Poly1305,
        Encryption::AesCbc(128) => E::AesCbc128,
        Encryption::AesCbc(256) => E::AesCbc256,
        _ => return None,
    };
    let integ = match keys.suite.integrity {
        None => None,
        Some(Integrity::HmacSha1_96) => Some(I::HmacSha1),
        Some(Integrity::HmacSha256_128) => Some(I::HmacSha256),
        Some(Integrity::HmacSha384_192) => Some(I::HmacSha384),
        Some(Integrity::HmacSha512_256) => Some(I::HmacSha512),
    };
    vgw_esp::Suite::new(enc, integ).ok()
}

/// The data plane's volume limits for one direction of a Child SA (RFC 4301 §4.4.2.1).
///
/// The hard limit is the negotiated saDataSizeKilobytes. The soft limit, where the rekey starts,
/// is 90% of it for the sending side and 95% for the receiving side: both directions count the
/// same bulk transfer, and the sender starting first keeps the two gateways from rekeying the
/// same SA at once (a collision §2.8.1 resolves, at the cost of a wasted exchange). Without
/// extended sequence numbers the 32-bit counter must never wrap (RFC 4303 §3.3.3): a rekey
/// also starts after the same share of 2^32 packets, whatever the byte limit.
fn child_lifetime(bytes: Option<u64>, esn: bool, outbound: bool) -> Lifetime {
    let soft_share = if outbound { 90 } else { 95 };
    Lifetime {
        soft_bytes: bytes.map(|b| b / 100 * soft_share),
        hard_bytes: bytes,
        soft_packets: (!esn).then_some(u64::from(u32::MAX) / 100 * soft_share),
        hard_packets: None,
    }
}
