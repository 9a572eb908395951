//! The IKE endpoint: every connection's configuration and IKE SAs, fed datagrams and time.
//!
//! This is the engine's whole face, in the quinn-proto mould: [`Endpoint::handle_datagram`],
//! [`Endpoint::handle_timeout`], [`Endpoint::poll_timeout`], [`Endpoint::poll_transmit`],
//! [`Endpoint::poll_event`], and commands ([`Endpoint::set_config`], [`Endpoint::initiate`],
//! [`Endpoint::reset`], [`Endpoint::remove`]). It never touches a socket or a clock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::cert::{PeerCertificate, normalize_thumbprint};
use crate::config::{
    CLIENT_CONN_BASE, ClientInfo, Config, ConnId, Event, Failure, Mode, PeerAuth, Reason,
    RemoteAccess,
};
use crate::crypto::DhGroup;
use crate::message::{Header, Message, Notify, Payload, exchange, flags, notify};
use crate::pool::{AddressPool, Lease};
use crate::sa::{Context, IKE_PORT, IkeSa, Transmit};

/// How long to wait before initiating again after a failure (doubling up to [`RETRY_MAX`]).
const RETRY_BASE: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Half-open SAs above which IKE_SA_INIT requests must carry a cookie (§2.6).
const COOKIE_THRESHOLD: usize = 64;

struct Connection {
    config: Arc<Config>,
    /// When to (re)initiate, for connections that may initiate.
    retry_at: Option<Instant>,
    retry_interval: Duration,
}

/// A remote-access client session: one road-warrior client's IKE SA (and its rekeyed successors).
struct ClientSession {
    /// The remote-access connection.
    server: ConnId,
    /// The client's address when it started.
    remote: SocketAddr,
    /// Set once authenticated.
    info: Option<ClientInfo>,
    /// The client's certificate (for disconnect-by-thumbprint).
    cert: Option<PeerCertificate>,
    /// Addresses leased from the pool.
    lease: Option<Lease>,
    /// Why it failed, if it did.
    failure: Option<Failure>,
    /// ClientDown was already reported (operator disconnect).
    down_reported: bool,
}

/// Which SAs a `collect` pass looks at.
#[derive(Clone, Copy)]
enum Scope {
    All,
    One(u64),
}

/// The IKE engine.
pub struct Endpoint {
    connections: HashMap<ConnId, Connection>,
    /// IKE SAs by our SPI.
    sas: HashMap<u64, IkeSa>,
    /// Our SPIs of each connection's (or client session's) IKE SAs.
    conn_sas: HashMap<ConnId, Vec<u64>>,
    /// Remote-access client sessions by their engine-allocated id.
    clients: HashMap<ConnId, ClientSession>,
    next_client: ConnId,
    /// Address pools of remote-access connections.
    pools: HashMap<ConnId, AddressPool>,
    /// A wall-clock reading and the Instant it was taken at (certificate validity).
    wall_clock: Option<(Instant, SystemTime)>,
    /// IKE_SA_INIT requests already answered: (peer, peer SPI) → our SPI, for retransmissions.
    half_open: HashMap<(SocketAddr, u64), u64>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    cookie_secret: [u8; 32],
}

impl Default for Endpoint {
    fn default() -> Self {
        Self::new()
    }
}

impl Endpoint {
    /// An endpoint with no connections.
    pub fn new() -> Self {
        let mut cookie_secret = [0u8; 32];
        crate::crypto::random(&mut cookie_secret);
        Self {
            connections: HashMap::new(),
            sas: HashMap::new(),
            conn_sas: HashMap::new(),
            clients: HashMap::new(),
            next_client: CLIENT_CONN_BASE,
            pools: HashMap::new(),
            wall_clock: None,
            half_open: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            cookie_secret,
        }
    }

    /// Sets the wall clock: `wall` is the time at `now`. Certificate validity (RFC 5280 §4.1.2.5) is
    /// checked at `wall + (later instant - now)`; without it, certificates are refused. Call it at start
    /// and whenever the system clock may have stepped.
    pub fn set_wall_clock(&mut self, now: Instant, wall: SystemTime) {
        self.wall_clock = Some((now, wall));
    }

    fn unix_time(&self, now: Instant) -> Option<rustls_pki_types::UnixTime> {
        let (at, wall) = self.wall_clock?;
        let t = if now >= at {
            wall.checked_add(now - at)?
        } else {
            wall.checked_sub(at - now)?
        };
        Some(crate::cert::unix_time(t))
    }

    fn may_initiate(config: &Config) -> bool {
        config.mode != Mode::ResponderOnly && !config.is_remote_access_server()
    }

    /// The configuration of a connection or of a client session's remote-access connection.
    fn config_of(&self, conn: ConnId) -> Option<Arc<Config>> {
        let id = self.clients.get(&conn).map_or(conn, |c| c.server);
        self.connections.get(&id).map(|c| Arc::clone(&c.config))
    }

    /// Reports an unauthenticated exchange that was refused or dropped ([`Event::Refused`]). `conn` may
    /// be a client session; the event names its remote-access connection.
    fn refused(
        &mut self,
        conn: Option<ConnId>,
        exchange: &'static str,
        reason: &'static str,
        remote: SocketAddr,
        failure: Option<Failure>,
    ) {
        let established = conn.is_some_and(|c| self.is_established(c));
        let conn = conn.map(|c| self.clients.get(&c).map_or(c, |s| s.server));
        self.events.push_back(Event::Refused {
            conn,
            exchange,
            reason,
            remote,
            established,
            failure,
        });
    }

    fn insert_sa(&mut self, sa: IkeSa) {
        let spi = sa.local_spi();
        self.conn_sas.entry(sa.conn).or_default().push(spi);
        self.sas.insert(spi, sa);
    }

    /// Our SPIs of every IKE SA, half-open ones included: datagrams naming one of them belong to an
    /// exchange we know (for the data plane's priority queue; RFC 7296 §2.6 bounds the half-open).
    pub fn local_spis(&self) -> impl ExactSizeIterator<Item = u64> + '_ {
        self.sas.keys().copied()
    }

    fn live_sas(&self, conn: ConnId) -> impl Iterator<Item = &IkeSa> {
        self.conn_sas
            .get(&conn)
            .into_iter()
            .flatten()
            .filter_map(|spi| self.sas.get(spi))
            .filter(|s| !s.dead)
    }

    /// Adds or replaces a connection. A changed configuration re-establishes that connection only (for a
    /// remote-access connection: all its clients); a changed revocation list only disconnects the
    /// clients whose certificates it now revokes.
    pub fn set_config(&mut self, conn: ConnId, config: Config, now: Instant) {
        let changed = self
            .connections
            .get(&conn)
            .is_some_and(|c| !same_config(&c.config, &config));
        let initiates = Self::may_initiate(&config);
        if let RemoteAccess::Server(ra) = &config.remote_access {
            let keep = self
                .pools
                .get(&conn)
                .is_some_and(|p| p.prefixes() == (ra.pool_v4, ra.pool_v6));
            if !keep {
                match AddressPool::new(ra.pool_v4, ra.pool_v6) {
                    Ok(p) => {
                        self.pools.insert(conn, p);
                    }
                    Err(e) => {
                        self.pools.remove(&conn);
                        self.events.push_back(Event::Log {
                            conn: Some(conn),
                            level: "error",
                            exchange: "-",
                            message: format!("remote-access address pool unusable: {e}"),
                        });
                    }
                }
            }
        } else {
            self.pools.remove(&conn);
        }
        let config = Arc::new(config);
        match self.connections.get_mut(&conn) {
            Some(c) => c.config = Arc::clone(&config),
            None => {
                self.connections.insert(
                    conn,
                    Connection {
                        config: Arc::clone(&config),
                        retry_at: initiates.then_some(now),
                        retry_interval: RETRY_BASE,
                    },
                );
            }
        }
        if changed {
            self.reset(conn, now);
        } else if let PeerAuth::Certificate(trust) = &config.peer_auth {
            // Revocations take effect at once for connected peers.
            let revoked: Vec<ConnId> = self
                .clients
                .iter()
                .filter(|(_, c)| c.server == conn && !c.down_reported)
                .filter(|(_, c)| {
                    c.cert
                        .as_ref()
                        .is_some_and(|p| p.chain_thumbprints.iter().any(|t| trust.is_revoked(t)))
                })
                .map(|(id, _)| *id)
                .collect();
            for client in revoked {
                self.disconnect(client, Reason::CertificateRevoked, now);
            }
            let peer_revoked = self
                .live_sas(conn)
                .filter_map(|s| s.peer_cert.as_ref())
                .any(|p| p.chain_thumbprints.iter().any(|t| trust.is_revoked(t)));
            if peer_revoked {
                self.reset(conn, now);
            }
        }
    }

    /// Removes a connection, sending DELETE for its IKE SA (§1.4.1) (for a remote-access connection: to
    /// every client).
    pub fn remove(&mut self, conn: ConnId, now: Instant) {
        self.close_sas(conn, now);
        self.connections.remove(&conn);
        self.pools.remove(&conn);
    }

    fn close_sas(&mut self, conn: ConnId, now: Instant) {
        let Some(config) = self.config_of(conn) else {
            return;
        };
        let clients: Vec<ConnId> = self
            .clients
            .iter()
            .filter(|(_, c)| c.server == conn && !c.down_reported)
            .map(|(id, _)| *id)
            .collect();
        for client in clients {
            self.disconnect(client, Reason::Administrative, now);
        }
        let spis = self.conn_sas.get(&conn).cloned().unwrap_or_default();
        for spi in spis {
            if let Some(sa) = self.sas.get_mut(&spi).filter(|s| !s.dead) {
                sa.delete(&config, now);
            }
        }
        self.collect(now, Scope::All);
    }

    /// Ends a client session: DELETE to the client (§1.4.1), its Child SAs out, ClientDown now.
    fn disconnect(&mut self, client: ConnId, reason: Reason, now: Instant) -> bool {
        let Some(config) = self.config_of(client) else {
            return false;
        };
        let Some(session) = self.clients.get_mut(&client) else {
            return false;
        };
        if session.down_reported {
            return false;
        }
        session.down_reported = true;
        let who = session
            .cert
            .as_ref()
            .map(PeerCertificate::describe)
            .unwrap_or_else(|| session.remote.to_string());
        let message = match reason {
            Reason::CertificateRevoked => format!("certificate {who} was revoked"),
            _ => format!("client {who} disconnected by the operator"),
        };
        let failure = Failure {
            reason,
            exchange: "INFORMATIONAL",
            notify: None,
            direction: "sent",
            message,
            our_proposals: Vec::new(),
            peer_proposals: Vec::new(),
            our_selectors: Vec::new(),
            peer_selectors: Vec::new(),
        };
        let down = Event::ClientDown {
            server: session.server,
            client,
            user_name: session.info.as_ref().map(|i| i.user_name.clone()),
            remote: session.info.as_ref().map_or(session.remote, |i| i.remote),
            failure: failure.clone(),
        };
        let server = session.server;
        if let (Some(lease), Some(pool)) = (session.lease.take(), self.pools.get_mut(&server)) {
            pool.release(&lease);
        }
        let spis = self.conn_sas.get(&client).cloned().unwrap_or_default();
        for spi in spis {
            if let Some(sa) = self.sas.get_mut(&spi).filter(|s| !s.dead) {
                sa.delete(&config, now);
            }
        }
        self.events.push_back(Event::Log {
            conn: Some(server),
            level: "info",
            exchange: "INFORMATIONAL",
            message: format!("client {client}: {}: {}", reason.as_str(), failure.message),
        });
        self.collect(now, Scope::All);
        self.events.push_back(Event::IkeSaDown {
            conn: client,
            failure,
        });
        self.events.push_back(down);
        true
    }

    /// Disconnects one remote-access client (operator action): INFORMATIONAL DELETE to it, its Child SAs
    /// reported down, ClientDown with reason ADMINISTRATIVE. False if there is no such client.
    pub fn disconnect_client(&mut self, client: ConnId, now: Instant) -> bool {
        self.disconnect(client, Reason::Administrative, now)
    }

    /// Disconnects every remote-access client whose certificate (or an issuer in the chain it sent) has
    /// this thumbprint (SHA-1, any case): DELETE to each, ClientDown with reason CERTIFICATE_REVOKED.
    /// Call it when a thumbprint is added to `vpnClientRevokedCertificates`. Returns how many.
    pub fn disconnect_thumbprint(&mut self, thumbprint: &str, now: Instant) -> usize {
        let wanted = normalize_thumbprint(thumbprint);
        let matching: Vec<ConnId> = self
            .clients
            .iter()
            .filter(|(_, c)| !c.down_reported)
            .filter(|(_, c)| {
                c.cert
                    .as_ref()
                    .is_some_and(|p| p.chain_thumbprints.contains(&wanted))
            })
            .map(|(id, _)| *id)
            .collect();
        matching
            .into_iter()
            .filter(|c| self.disconnect(*c, Reason::CertificateRevoked, now))
            .count()
    }

    /// The connected remote-access clients (all connections).
    pub fn clients(&self) -> Vec<ClientInfo> {
        let mut v: Vec<ClientInfo> = self
            .clients
            .values()
            .filter(|c| !c.down_reported)
            .filter_map(|c| c.info.clone())
            .collect();
        v.sort_by_key(|c| c.client);
        v
    }

    /// Tears the connection's IKE SA down and starts it again (`vpn-connection reset`).
    pub fn reset(&mut self, conn: ConnId, now: Instant) {
        self.close_sas(conn, now);
        if let Some(c) = self.connections.get_mut(&conn) {
            c.retry_interval = RETRY_BASE;
            c.retry_at = Self::may_initiate(&c.config).then_some(now);
        }
    }

    /// Starts negotiating now (if the connection may initiate and has no IKE SA).
    pub fn initiate(&mut self, conn: ConnId, now: Instant) {
        if let Some(c) = self.connections.get_mut(&conn)
            && Self::may_initiate(&c.config)
        {
            c.retry_at = Some(now);
        }
        self.handle_timeout(now);
    }

    /// Notes inbound ESP for a connection (or client session), which postpones liveness checks (§1.4).
    pub fn note_activity(&mut self, conn: ConnId, now: Instant) {
        for spi in self.conn_sas.get(&conn).into_iter().flatten() {
            if let Some(sa) = self.sas.get_mut(spi) {
                sa.note_activity(now);
            }
        }
    }

    /// Starts the rekey of the Child SA of `conn` that `spi` names (either direction's SPI),
    /// as the data plane asks when the SA reaches its soft volume limit (RFC 4301 §4.4.2.1).
    /// Returns true when a rekey was started; false when the SA is unknown, retiring, or its
    /// rekey is already under way.
    pub fn rekey_child_sa(&mut self, conn: ConnId, spi: u32, now: Instant) -> bool {
        let Some(config) = self.config_of(conn) else {
            return false;
        };
        let mut started = false;
        for ike_spi in self.conn_sas.get(&conn).into_iter().flatten() {
            if let Some(sa) = self.sas.get_mut(ike_spi).filter(|s| s.is_established()) {
                started |= sa.rekey_child_sa(&config, spi, now);
            }
        }
        self.collect(now, Scope::All);
        started
    }

    /// Deletes the Child SA of `conn` that `spi` names (either direction's SPI) with an INFORMATIONAL
    /// DELETE, keeping the IKE SA (operator action, tests: what `swanctl --terminate --child` does).
    /// Returns false when there is no such Child SA.
    pub fn delete_child_sa(&mut self, conn: ConnId, spi: u32, now: Instant) -> bool {
        let Some(config) = self.config_of(conn) else {
            return false;
        };
        let mut done = false;
        for ike_spi in self.conn_sas.get(&conn).into_iter().flatten() {
            if let Some(sa) = self.sas.get_mut(ike_spi).filter(|s| s.is_established()) {
                done |= sa.delete_child(&config, spi, now);
            }
        }
        self.collect(now, Scope::All);
        done
    }

    /// Starts a rekey of every Child SA of `conn` (operator action, tests).
    pub fn rekey_children(&mut self, conn: ConnId, now: Instant) {
        let Some(config) = self.config_of(conn) else {
            return;
        };
        for spi in self.conn_sas.get(&conn).into_iter().flatten() {
            if let Some(sa) = self.sas.get_mut(spi).filter(|s| s.is_established()) {
                sa.rekey_children(&config, now);
            }
        }
        self.collect(now, Scope::All);
    }

    /// True when `conn` (a connection or a client session) has an established IKE SA.
    pub fn is_established(&self, conn: ConnId) -> bool {
        self.live_sas(conn).any(IkeSa::is_established)
    }

    /// The site-to-site connection for a peer address, else a remote-access connection (lowest id).
    fn connection_for(&self, remote: SocketAddr) -> Option<ConnId> {
        self.connections
            .iter()
            .filter(|(_, c)| !c.config.is_remote_access_server())
            .find(|(_, c)| c.config.remote_addr == remote.ip())
            .map(|(id, _)| *id)
            .or_else(|| {
                self.connections
                    .iter()
                    .filter(|(_, c)| c.config.is_remote_access_server())
                    .map(|(id, _)| *id)
                    .min()
            })
    }

    fn cookie_for(&self, remote: SocketAddr, spi_i: u64, ni: &[u8]) -> Vec<u8> {
        // §2.6: Cookie = <VersionIDofSecret> | Hash(Ni | IPi | SPIi | <secret>).
        let mut data = ni.to_vec();
        data.extend_from_slice(remote.ip().to_string().as_bytes());
        data.extend_from_slice(&spi_i.to_be_bytes());
        let mut out = vec![1u8];
        out.extend_from_slice(
            &crate::crypto::Prf::HmacSha256.compute(&self.cookie_secret, &[&data])[..16],
        );
        out
    }

    /// Handles a datagram from `remote` that arrived on our `local_port` (marker removed).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        local_port: u16,
        remote: SocketAddr,
        data: &[u8],
    ) {
        let msg = match Message::parse(data) {
            Ok(m) => m,
            Err(e) => {
                let conn = self.connection_for(remote);
                self.events.push_back(Event::Log {
                    conn,
                    level: "warning",
                    exchange: "-",
                    message: format!("dropped datagram from {remote}: {e}"),
                });
                self.refused(conn, "-", "MALFORMED", remote, None);
                return;
            }
        };
        let h = msg.header;
        if h.exchange == exchange::IKE_SA_INIT && !h.is_response() {
            self.handle_init_request(now, remote, &msg, data);
            return;
        }
        // The sender sets INITIATOR when it is the original initiator, so our SPI is the other one.
        let our_spi = if h.is_initiator() { h.spi_r } else { h.spi_i };
        let Some(conn_id) = self.sas.get(&our_spi).map(|s| s.conn) else {
            // §2.21: a message for an SA we do not have changes nothing (no INVALID_IKE_SPI answer
            // either: it would turn a forged datagram into one of ours).
            let conn = self.connection_for(remote);
            self.events.push_back(Event::Log {
                conn,
                level: "warning",
                exchange: exchange::name(h.exchange),
                message: format!(
                    "dropped {} for unknown IKE SA {our_spi:016x} from {remote}",
                    exchange::name(h.exchange)
                ),
            });
            self.refused(
                conn,
                exchange::name(h.exchange),
                "UNKNOWN_SPI",
                remote,
                None,
            );
            return;
        };
        let Some(config) = self.config_of(conn_id) else {
            return;
        };
        let unix_time = self.unix_time(now);
        let server = self.clients.get(&conn_id).map(|c| c.server);
        let Some(sa) = self.sas.get_mut(&our_spi) else {
            return;
        };
        if h.exchange == exchange::IKE_SA_INIT {
            // An IKE_SA_INIT response is unprotected (§2.21): it may only end or restart our own
            // half-open exchange, never touch an SA that is past IKE_SA_INIT.
            if !sa.awaiting_init_response() || h.message_id != 0 {
                let log_conn = server.unwrap_or(conn_id);
                self.events.push_back(Event::Log {
                    conn: Some(log_conn),
                    level: "warning",
                    exchange: "IKE_SA_INIT",
                    message: format!(
                        "dropped unexpected IKE_SA_INIT response from {remote} for IKE SA \
                         {our_spi:016x}: that SA is not waiting for one"
                    ),
                });
                self.refused(
                    Some(conn_id),
                    "IKE_SA_INIT",
                    "UNEXPECTED_RESPONSE",
                    remote,
                    None,
                );
                return;
            }
            if let Some((group, cookie)) = sa.handle_init_response(&config, &msg, data, now) {
                self.restart(conn_id, &config, group, cookie, now);
            }
        } else {
            let mut ctx = Context {
                unix_time,
                pool: server.and_then(|s| self.pools.get_mut(&s)),
            };
            sa.handle(&config, &msg, data, local_port, remote, now, &mut ctx);
        }
        self.collect(now, Scope::One(our_spi));
    }

    fn restart(
        &mut self,
        conn: ConnId,
        config: &Config,
        group: Option<DhGroup>,
        cookie: Option<Vec<u8>>,
        now: Instant,
    ) {
        let sa = IkeSa::initiate(conn, config, now, group, cookie);
        self.insert_sa(sa);
        self.collect(now, Scope::All);
    }

    fn handle_init_request(&mut self, now: Instant, remote: SocketAddr, msg: &Message, raw: &[u8]) {
        if let Some(our) = self.half_open.get(&(remote, msg.header.spi_i)).copied() {
            // A retransmitted IKE_SA_INIT: resend our response (§2.1).
            if let Some(sa) = self.sas.get_mut(&our) {
                sa.resend_last_response();
            }
            self.collect(now, Scope::One(our));
            return;
        }
        let Some(conn) = self.connection_for(remote) else {
            self.events.push_back(Event::Log {
                conn: None,
                level: "warning",
                exchange: "IKE_SA_INIT",
                message: format!(
                    "IKE_SA_INIT from {remote}: no local gateway has this address; ignored"
                ),
            });
            self.refused(None, "IKE_SA_INIT", "UNKNOWN_PEER", remote, None);
            return;
        };
        let Some(c) = self.connections.get(&conn) else {
            return;
        };
        if c.config.mode == Mode::InitiatorOnly {
            self.events.push_back(Event::Log {
                conn: Some(conn),
                level: "warning",
                exchange: "IKE_SA_INIT",
                message: format!(
                    "refused IKE_SA_INIT from {remote}: connectionMode is InitiatorOnly"
                ),
            });
            self.refused(Some(conn), "IKE_SA_INIT", "INITIATOR_ONLY", remote, None);
            return;
        }
        // §2.6: under half-open pressure, demand a cookie before spending a DH computation.
        if self.half_open.len() >= COOKIE_THRESHOLD {
            let ni = msg
                .payloads
                .iter()
                .find_map(|p| {
                    if let Payload::Nonce(n) = p {
                        Some(n.clone())
                    } else {
                        None
                    }
                })
                .unwrap_or_default();
            let expected = self.cookie_for(remote, msg.header.spi_i, &ni);
            if msg.notify(notify::COOKIE).map(|n| &n.data) != Some(&expected) {
                let header = Header {
                    spi_i: msg.header.spi_i,
                    spi_r: 0,
                    exchange: exchange::IKE_SA_INIT,
                    flags: flags::RESPONSE,
                    message_id: 0,
                    ..Default::default()
                };
                let data = Message {
                    header,
                    payloads: vec![Payload::Notify(Notify::new(notify::COOKIE, expected))],
                }
                .emit();
                self.transmits.push_back(Transmit {
                    local_port: IKE_PORT,
                    remote,
                    data,
                });
                self.refused(Some(conn), "IKE_SA_INIT", "COOKIE_REQUIRED", remote, None);
                return;
            }
        }
        let config = Arc::clone(&c.config);
        let remote_access = config.is_remote_access_server();
        // A road-warrior client gets its own session id; its SAs and events carry it.
        let sa_conn = if remote_access {
            self.allocate_client_id()
        } else {
            conn
        };
        match IkeSa::respond_init(sa_conn, &config, msg, raw, remote, now) {
            Ok(sa) => {
                if remote_access {
                    self.clients.insert(
                        sa_conn,
                        ClientSession {
                            server: conn,
                            remote,
                            info: None,
                            cert: None,
                            lease: None,
                            failure: None,
                            down_reported: false,
                        },
                    );
                }
                // INITIAL_CONTACT comes later (IKE_AUTH); a new SA from the same peer replaces older ones once
                // established (see collect()).
                self.half_open
                    .insert((remote, msg.header.spi_i), sa.local_spi());
                let spi = sa.local_spi();
                self.insert_sa(sa);
                self.collect(now, Scope::One(spi));
            }
            Err((refused_with, refusal)) => {
                // RFC 7296 §2.21, §2.6: an unauthenticated IKE_SA_INIT that we refuse ends only that
                // exchange. It never touches an established IKE SA or the connection's status; it
                // is logged, counted (Event::Refused) and, when nothing carries the connection,
                // shown as lastError (a real peer's proposal mismatch must be visible).
                let established = self.is_established(conn);
                let (label, failure) = match refused_with {
                    notify::NO_PROPOSAL_CHOSEN => {
                        let ours: Vec<String> = config
                            .ike
                            .iter()
                            .map(crate::proposal::ProposalSpec::describe)
                            .collect();
                        let peer: Vec<String> = msg
                            .payloads
                            .iter()
                            .filter_map(|p| {
                                if let Payload::Sa(s) = p {
                                    Some(
                                        s.iter()
                                            .map(crate::proposal::describe_proposal)
                                            .collect::<Vec<_>>(),
                                    )
                                } else {
                                    None
                                }
                            })
                            .flatten()
                            .collect();
                        let message = format!(
                            "IKE_SA_INIT failed: NO_PROPOSAL_CHOSEN; peer offered {}, we accept {}",
                            peer.join(", "),
                            ours.join(", ")
                        );
                        (
                            "NO_PROPOSAL_CHOSEN",
                            Some(Failure {
                                reason: Reason::NegotiationFailure,
                                exchange: "IKE_SA_INIT",
                                notify: Some("NO_PROPOSAL_CHOSEN".into()),
                                direction: "sent",
                                message,
                                our_proposals: ours,
                                peer_proposals: peer,
                                our_selectors: Vec::new(),
                                peer_selectors: Vec::new(),
                            }),
                        )
                    }
                    // A normal step of the negotiation (§1.2): the peer retries with our group.
                    notify::INVALID_KE_PAYLOAD => ("INVALID_KE_PAYLOAD", None),
                    _ => (
                        "INVALID_SYNTAX",
                        Some(Failure {
                            reason: Reason::ProtocolError,
                            exchange: "IKE_SA_INIT",
                            notify: Some("INVALID_SYNTAX".into()),
                            direction: "sent",
                            message: format!(
                                "IKE_SA_INIT from {remote} lacks an SA, KE or Nonce payload, \
                                 or its KE value is invalid"
                            ),
                            our_proposals: Vec::new(),
                            peer_proposals: Vec::new(),
                            our_selectors: Vec::new(),
                            peer_selectors: Vec::new(),
                        }),
                    ),
                };
                let detail = match &failure {
                    Some(f) => f.message.clone(),
                    None => format!("answered IKE_SA_INIT with {label}"),
                };
                let level = if failure.is_none() {
                    "info"
                } else if established {
                    "warning"
                } else {
                    "error"
                };
                let note = if established {
                    "; the established IKE SA is not affected (unauthenticated message, RFC 7296 §2.21)"
                } else {
                    ""
                };
                self.events.push_back(Event::Log {
                    conn: Some(conn),
                    level,
                    exchange: "IKE_SA_INIT",
                    message: if remote_access {
                        format!("client {remote}: {detail}")
                    } else {
                        format!("{detail} (from {remote}){note}")
                    },
                });
                // One client's bad proposal says nothing about the remote-access connection.
                let failure = failure.filter(|_| !remote_access);
                self.refused(Some(conn), "IKE_SA_INIT", label, remote, failure);
                self.transmits.push_back(refusal);
            }
        }
    }

    fn allocate_client_id(&mut self) -> ConnId {
        loop {
            let id = self.next_client;
            self.next_client = if id == ConnId::MAX {
                CLIENT_CONN_BASE
            } else {
                id + 1
            };
            if !self.clients.contains_key(&id) && !self.conn_sas.contains_key(&id) {
                return id;
            }
        }
    }

    /// Moves datagrams and events out of the SAs in `scope`, files rekeyed successors, drops dead SAs,
    /// reports remote-access client sessions, and schedules re-initiation after failures. A datagram
    /// touches one SA, so its cost does not grow with the number of clients.
    fn collect(&mut self, now: Instant, scope: Scope) {
        let spis: Vec<u64> = match scope {
            Scope::All => self.sas.keys().copied().collect(),
            Scope::One(spi) => vec![spi],
        };
        let mut successors = Vec::new();
        let mut events = Vec::new();
        let mut touched: HashSet<ConnId> = HashSet::new();
        for spi in &spis {
            let Some(sa) = self.sas.get_mut(spi) else {
                continue;
            };
            touched.insert(sa.conn);
            self.transmits.extend(sa.transmits.drain(..));
            events.extend(sa.events.drain(..).map(|e| (*spi, e)));
            if let Some(next) = sa.successor.take() {
                successors.push(*next);
            }
        }
        for mut s in successors {
            self.transmits.extend(s.transmits.drain(..));
            let spi = s.local_spi();
            events.extend(s.events.drain(..).map(|e| (spi, e)));
            self.insert_sa(s);
        }
        let mut failed = Vec::new();
        let mut initial_contacts = Vec::new();
        let mut up_conns = Vec::new();
        let wall_now = self.wall_clock.and_then(|(at, wall)| {
            if now >= at {
                wall.checked_add(now - at)
            } else {
                wall.checked_sub(at - now)
            }
        });
        for (spi, mut e) in events {
            // Client sessions log under their remote-access connection.
            if let Event::Log {
                conn: Some(c),
                message,
                ..
            } = &mut e
                && let Some(session) = self.clients.get(c)
            {
                *message = format!("client {c} ({}): {message}", session.remote);
                *c = session.server;
            }
            // An SA's refused or dropped message: whether anything carries the connection is the
            // endpoint's knowledge, not the SA's.
            if let Event::Refused {
                conn: Some(c),
                established,
                ..
            } = &mut e
            {
                *established = self.is_established(*c);
                if let Some(session) = self.clients.get(c) {
                    *c = session.server;
                }
            }
            let mut extra = None;
            match &e {
                Event::IkeSaDown { conn, failure } => {
                    if let Some(session) = self.clients.get_mut(conn) {
                        if session.down_reported {
                            continue;
                        }
                        session.failure = Some(failure.clone());
                    } else {
                        // A connection is down only when no other established IKE SA carries it
                        // (duplicate SAs from simultaneous initiation, a stale SA after a peer restart).
                        let other = self
                            .live_sas(*conn)
                            .any(|s| s.local_spi() != spi && s.is_established());
                        if other {
                            let authenticated = self
                                .sas
                                .get(&spi)
                                .is_some_and(|s| s.established_at.is_some());
                            if authenticated {
                                self.events.push_back(Event::Log {
                                    conn: Some(*conn),
                                    level: "info",
                                    exchange: failure.exchange,
                                    message: format!("duplicate IKE SA {spi:016x} closed ({}); another IKE SA carries the connection", failure.reason.as_str()),
                                });
                            } else {
                                // A new IKE SA that never authenticated (a forged or stray
                                // IKE_SA_INIT, a wrong key, no IKE_AUTH) failed: §2.21, it ends
                                // only its own exchange; the established SA carries on.
                                let remote = self
                                    .sas
                                    .get(&spi)
                                    .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |s| s.remote);
                                self.events.push_back(Event::Log {
                                    conn: Some(*conn),
                                    level: "warning",
                                    exchange: failure.exchange,
                                    message: format!(
                                        "new IKE SA {spi:016x} from {remote} failed before it authenticated ({}: {}); the established IKE SA is not affected",
                                        failure.reason.as_str(),
                                        failure.message
                                    ),
                                });
                                self.events.push_back(Event::Refused {
                                    conn: Some(*conn),
                                    exchange: failure.exchange,
                                    reason: failure.reason.as_str(),
                                    remote,
                                    established: true,
                                    failure: Some(failure.clone()),
                                });
                            }
                            continue;
                        }
                        if failure.reason != Reason::Administrative {
                            failed.push(*conn);
                        }
                    }
                }
                Event::IkeSaUp { conn, rekey, .. } => {
                    if let Some(sa) = self.sas.get(&spi)
                        && sa.peer_initial_contact
                    {
                        initial_contacts.push((*conn, spi, sa.created_at));
                    }
                    up_conns.push(*conn);
                    // §2.4: once an IKE SA with the peer exists, our other negotiations with it must not
                    // claim INITIAL_CONTACT (the peer would drop the SA we just established).
                    let others: Vec<u64> = self
                        .conn_sas
                        .get(conn)
                        .into_iter()
                        .flatten()
                        .copied()
                        .filter(|s| *s != spi)
                        .collect();
                    for other in others {
                        if let Some(o) = self.sas.get_mut(&other) {
                            o.send_initial_contact = false;
                        }
                    }
                    if let Some(c) = self.connections.get_mut(conn) {
                        c.retry_at = None;
                        c.retry_interval = RETRY_BASE;
                    }
                    if let (Some(session), Some(sa)) =
                        (self.clients.get_mut(conn), self.sas.get(&spi))
                        && !*rekey
                        && session.info.is_none()
                    {
                        session.lease = sa.lease;
                        session.cert = sa.peer_cert.clone();
                        let info = ClientInfo {
                            server: session.server,
                            client: *conn,
                            user_name: sa
                                .peer_cert
                                .as_ref()
                                .map(PeerCertificate::user_name)
                                .unwrap_or_default(),
                            subject: sa
                                .peer_cert
                                .as_ref()
                                .map(|p| p.subject.clone())
                                .unwrap_or_default(),
                            thumbprint: sa
                                .peer_cert
                                .as_ref()
                                .map(|p| p.thumbprint.clone())
                                .unwrap_or_default(),
                            identity: sa
                                .peer_identity
                                .as_ref()
                                .map(ToString::to_string)
                                .unwrap_or_default(),
                            remote: sa.remote,
                            addresses: sa.lease.map(|l| l.addresses()).unwrap_or_default(),
                            connected_at: now,
                            connected_at_wall: wall_now,
                        };
                        session.info = Some(info.clone());
                        extra = Some(Event::ClientUp(info));
                    }
                }
                _ => {}
            }
            self.events.push_back(e);
            if let Some(x) = extra {
                self.events.push_back(x);
            }
        }
        self.forget_stale(&initial_contacts, &mut touched);
        self.resolve_duplicates(&up_conns, now);
        // Drop dead SAs of the connections looked at.
        let mut emptied = Vec::new();
        for conn in &touched {
            let Some(list) = self.conn_sas.get_mut(conn) else {
                continue;
            };
            list.retain(|spi| match self.sas.get(spi) {
                Some(sa) if sa.dead => {
                    if !sa.initiator {
                        self.half_open.remove(&(sa.init_from, sa.spi_i));
                    }
                    self.sas.remove(spi);
                    false
                }
                Some(sa) => {
                    if sa.is_established() && !sa.initiator {
                        self.half_open.remove(&(sa.init_from, sa.spi_i));
                    }
                    true
                }
                None => false,
            });
            if list.is_empty() {
                self.conn_sas.remove(conn);
                emptied.push(*conn);
            }
        }
        for client in emptied {
            self.end_client(client, now);
        }
        for conn in failed {
            if self.live_sas(conn).next().is_some() {
                continue;
            }
            if let Some(c) = self.connections.get_mut(&conn)
                && Self::may_initiate(&c.config)
            {
                c.retry_at = Some(now + c.retry_interval);
                c.retry_interval = (c.retry_interval * 2).min(RETRY_MAX);
            }
        }
    }

    /// A client session whose last IKE SA is gone: its lease is released and ClientDown reported (once).
    fn end_client(&mut self, client: ConnId, now: Instant) {
        let Some(mut session) = self.clients.remove(&client) else {
            return;
        };
        if let (Some(lease), Some(pool)) =
            (session.lease.take(), self.pools.get_mut(&session.server))
        {
            pool.release(&lease);
        }
        if session.down_reported || (session.info.is_none() && session.failure.is_none()) {
            // Already reported, or a half-open attempt that never authenticated.
            return;
        }
        let failure = session.failure.unwrap_or_else(|| Failure {
            reason: Reason::DeletedByPeer,
            exchange: "INFORMATIONAL",
            notify: None,
            direction: "received",
            message: "the client session ended".into(),
            our_proposals: Vec::new(),
            peer_proposals: Vec::new(),
            our_selectors: Vec::new(),
            peer_selectors: Vec::new(),
        });
        let _ = now;
        self.events.push_back(Event::ClientDown {
            server: session.server,
            client,
            user_name: session.info.as_ref().map(|i| i.user_name.clone()),
            remote: session.info.as_ref().map_or(session.remote, |i| i.remote),
            failure,
        });
    }

    /// INITIAL_CONTACT (§2.4): the peer has no other SA with us, so IKE SAs of the connection that were
    /// established before the new one began are stale (a peer restart) and are dropped without DELETE.
    /// For a remote-access client the stale SAs are the older sessions of the same certificate.
    fn forget_stale(&mut self, contacts: &[(ConnId, u64, Instant)], touched: &mut HashSet<ConnId>) {
        for &(conn, spi, began) in contacts {
            let mut conns = vec![conn];
            if let Some(thumb) = self
                .clients
                .get(&conn)
                .and_then(|c| c.cert.as_ref())
                .map(|p| p.thumbprint.clone())
            {
                let server = self.clients.get(&conn).map(|c| c.server);
                conns.extend(
                    self.clients
                        .iter()
                        .filter(|(id, c)| {
                            **id != conn
                                && Some(c.server) == server
                                && c.cert.as_ref().is_some_and(|p| p.thumbprint == thumb)
                        })
                        .map(|(id, _)| *id),
                );
            }
            for c in conns {
                let spis = self.conn_sas.get(&c).cloned().unwrap_or_default();
                for s in spis {
                    let Some(sa) = self.sas.get_mut(&s) else {
                        continue;
                    };
                    if s == spi || sa.dead || sa.established_at.is_none_or(|t| t >= began) {
                        continue;
                    }
                    sa.dead = true;
                    touched.insert(c);
                    for child in sa.children.drain(..) {
                        self.events.push_back(Event::ChildSaDown {
                            conn: c,
                            inbound_spi: child.inbound_spi,
                            outbound_spi: child.outbound_spi,
                        });
                    }
                    let (log_conn, prefix) = match self.clients.get(&c) {
                        Some(session) => (session.server, format!("client {c}: ")),
                        None => (c, String::new()),
                    };
                    self.events.push_back(Event::Log {
                        conn: Some(log_conn),
                        level: "info",
                        exchange: "IKE_AUTH",
                        message: format!(
                            "{prefix}peer sent INITIAL_CONTACT: dropped stale IKE SA {:016x}",
                            sa.local_spi()
                        ),
                    });
                    if let Some(session) = self.clients.get_mut(&c) {
                        session.failure = Some(Failure {
                            reason: Reason::DeletedByPeer,
                            exchange: "IKE_AUTH",
                            notify: Some("INITIAL_CONTACT".into()),
                            direction: "received",
                            message: "the client connected again (INITIAL_CONTACT)".into(),
                            our_proposals: Vec::new(),
                            peer_proposals: Vec::new(),
                            our_selectors: Vec::new(),
                            peer_selectors: Vec::new(),
                        });
                    }
                }
            }
        }
    }

    /// Both sides initiated at once, so a connection has two established IKE SAs. Both ends apply the same
    /// rule (in the spirit of §2.8.1): the SA whose exchange had the lowest nonce is redundant, and the
    /// end that initiated it deletes it. A stale SA the peer no longer knows dies by liveness check.
    fn resolve_duplicates(&mut self, conns: &[ConnId], now: Instant) {
        for &conn in conns {
            let mut sas: Vec<(Vec<u8>, u64)> = self
                .live_sas(conn)
                .filter(|s| s.is_established() && !s.is_replaced())
                .map(|s| (s.lowest_nonce(), s.local_spi()))
                .collect();
            if sas.len() < 2 {
                continue;
            }
            sas.sort();
            let Some(config) = self.config_of(conn) else {
                continue;
            };
            for (_, spi) in &sas[..sas.len() - 1] {
                if let Some(sa) = self.sas.get_mut(spi)
                    && sa.initiator
                {
                    sa.delete_duplicate(&config, now);
                    self.transmits.extend(sa.transmits.drain(..));
                    self.events.extend(sa.events.drain(..));
                }
            }
        }
    }

    /// Runs timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<ConnId> = self
            .connections
            .iter()
            .filter(|(id, c)| {
                c.retry_at.is_some_and(|t| now >= t)
                    && Self::may_initiate(&c.config)
                    && self.live_sas(**id).next().is_none()
            })
            .map(|(id, _)| *id)
            .collect();
        for conn in due {
            if let Some(c) = self.connections.get_mut(&conn) {
                c.retry_at = None;
                let config = Arc::clone(&c.config);
                let mut sa = IkeSa::initiate(conn, &config, now, None, None);
                sa.send_initial_contact = self.live_sas(conn).next().is_none();
                self.insert_sa(sa);
            }
        }
        let spis: Vec<u64> = self.sas.keys().copied().collect();
        for spi in spis {
            let Some(conn) = self.sas.get(&spi).map(|s| s.conn) else {
                continue;
            };
            let config = self.config_of(conn);
            if let Some(sa) = self.sas.get_mut(&spi) {
                match config {
                    Some(c) => sa.handle_timeout(&c, now),
                    None => sa.dead = true,
                }
            }
        }
        self.collect(now, Scope::All);
    }

    /// The next time [`Endpoint::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sas = self.sas.values().filter_map(|s| {
            let server = self.clients.get(&s.conn).map_or(s.conn, |c| c.server);
            self.connections
                .get(&server)
                .and_then(|c| s.poll_timeout(&c.config))
        });
        let retries = self
            .connections
            .iter()
            .filter(|(id, _)| !self.conn_sas.contains_key(id))
            .filter_map(|(_, c)| c.retry_at);
        sas.chain(retries).min()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

fn same_config(a: &Config, b: &Config) -> bool {
    let same_roots = match (&a.peer_auth, &b.peer_auth) {
        (PeerAuth::Psk, PeerAuth::Psk) => true,
        (PeerAuth::Certificate(x), PeerAuth::Certificate(y)) => x.same_roots(y),
        _ => false,
    };
    a.local_addr == b.local_addr
        && a.remote_addr == b.remote_addr
        && a.local_id == b.local_id
        && a.remote_id == b.remote_id
        && *a.psk == *b.psk
        && a.local_auth == b.local_auth
        && same_roots
        && a.remote_access == b.remote_access
        && a.ike == b.ike
        && a.esp == b.esp
        && a.pfs == b.pfs
        && a.children == b.children
}
