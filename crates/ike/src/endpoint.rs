//! The IKE endpoint: every connection's configuration and IKE SAs, fed datagrams and time.
//!
//! This is the engine's whole face, in the quinn-proto mould: [`Endpoint::handle_datagram`],
//! [`Endpoint::handle_timeout`], [`Endpoint::poll_timeout`], [`Endpoint::poll_transmit`],
//! [`Endpoint::poll_event`], and commands ([`Endpoint::set_config`], [`Endpoint::initiate`],
//! [`Endpoint::reset`], [`Endpoint::remove`]). It never touches a socket or a clock.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::{Config, ConnId, Event, Failure, Mode, Reason};
use crate::crypto::DhGroup;
use crate::message::{Header, Message, Notify, Payload, exchange, flags, notify};
use crate::sa::{IKE_PORT, IkeSa, Transmit};

/// How long to wait before initiating again after a failure (doubling up to [`RETRY_MAX`]).
const RETRY_BASE: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Half-open SAs above which IKE_SA_INIT requests must carry a cookie (§2.6).
const COOKIE_THRESHOLD: usize = 64;

struct Connection {
    config: Config,
    /// When to (re)initiate, for connections that may initiate.
    retry_at: Option<Instant>,
    retry_interval: Duration,
}

/// The IKE engine.
pub struct Endpoint {
    connections: HashMap<ConnId, Connection>,
    /// IKE SAs by our SPI.
    sas: HashMap<u64, IkeSa>,
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
            half_open: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            cookie_secret,
        }
    }

    /// Adds or replaces a connection. A changed configuration re-establishes that connection only.
    pub fn set_config(&mut self, conn: ConnId, config: Config, now: Instant) {
        let changed = self
            .connections
            .get(&conn)
            .is_some_and(|c| !same_config(&c.config, &config));
        let initiates = config.mode != Mode::ResponderOnly;
        match self.connections.get_mut(&conn) {
            Some(c) => c.config = config,
            None => {
                self.connections.insert(
                    conn,
                    Connection {
                        config,
                        retry_at: initiates.then_some(now),
                        retry_interval: RETRY_BASE,
                    },
                );
            }
        }
        if changed {
            self.reset(conn, now);
        }
    }

    /// Removes a connection, sending DELETE for its IKE SA (§1.4.1).
    pub fn remove(&mut self, conn: ConnId, now: Instant) {
        self.close_sas(conn, now);
        self.connections.remove(&conn);
    }

    fn close_sas(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.connections.get(&conn) else {
            return;
        };
        let config = c.config.clone();
        for sa in self.sas.values_mut().filter(|s| s.conn == conn && !s.dead) {
            sa.delete(&config, now);
        }
        self.collect(now);
    }

    /// Tears the connection's IKE SA down and starts it again (`vpn-connection reset`).
    pub fn reset(&mut self, conn: ConnId, now: Instant) {
        self.close_sas(conn, now);
        if let Some(c) = self.connections.get_mut(&conn) {
            c.retry_interval = RETRY_BASE;
            c.retry_at = (c.config.mode != Mode::ResponderOnly).then_some(now);
        }
    }

    /// Starts negotiating now (if the connection may initiate and has no IKE SA).
    pub fn initiate(&mut self, conn: ConnId, now: Instant) {
        if let Some(c) = self.connections.get_mut(&conn) {
            c.retry_at = Some(now);
        }
        self.handle_timeout(now);
    }

    /// Notes inbound ESP for a connection, which postpones liveness checks (§1.4).
    pub fn note_activity(&mut self, conn: ConnId, now: Instant) {
        for sa in self.sas.values_mut().filter(|s| s.conn == conn) {
            sa.note_activity(now);
        }
    }

    /// Starts a rekey of every Child SA of `conn` (operator action, tests).
    pub fn rekey_children(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.connections.get(&conn) else {
            return;
        };
        let config = c.config.clone();
        for sa in self
            .sas
            .values_mut()
            .filter(|s| s.conn == conn && s.is_established())
        {
            sa.rekey_children(&config, now);
        }
        self.collect(now);
    }

    /// True when `conn` has an established IKE SA.
    pub fn is_established(&self, conn: ConnId) -> bool {
        self.sas
            .values()
            .any(|s| s.conn == conn && s.is_established() && !s.dead)
    }

    fn connection_for(&self, remote: SocketAddr) -> Option<ConnId> {
        self.connections
            .iter()
            .find(|(_, c)| c.config.remote_addr == remote.ip())
            .map(|(id, _)| *id)
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
                self.events.push_back(Event::Log {
                    conn: self.connection_for(remote),
                    level: "warning",
                    exchange: "-",
                    message: format!("dropped datagram from {remote}: {e}"),
                });
                return;
            }
        };
        let h = msg.header;
        if h.exchange == exchange::IKE_SA_INIT && !h.is_response() {
            self.handle_init_request(now, remote, &msg, data);
        } else {
            // The sender sets INITIATOR when it is the original initiator, so our SPI is the other one.
            let our_spi = if h.is_initiator() { h.spi_r } else { h.spi_i };
            let Some(sa) = self.sas.get_mut(&our_spi) else {
                self.events.push_back(Event::Log {
                    conn: self.connection_for(remote),
                    level: "warning",
                    exchange: exchange::name(h.exchange),
                    message: format!(
                        "dropped {} for unknown IKE SA {our_spi:016x} from {remote}",
                        exchange::name(h.exchange)
                    ),
                });
                return;
            };
            let Some(conn) = self.connections.get(&sa.conn) else {
                return;
            };
            if h.exchange == exchange::IKE_SA_INIT {
                let config = conn.config.clone();
                if let Some((group, cookie)) = sa.handle_init_response(&config, &msg, data, now) {
                    let id = sa.conn;
                    self.restart(id, &config, group, cookie, now);
                }
            } else {
                let config = conn.config.clone();
                sa.handle(&config, &msg, data, local_port, remote, now);
            }
        }
        self.collect(now);
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
        self.sas.insert(sa.local_spi(), sa);
    }

    fn handle_init_request(&mut self, now: Instant, remote: SocketAddr, msg: &Message, raw: &[u8]) {
        if let Some(our) = self.half_open.get(&(remote, msg.header.spi_i)).copied() {
            // A retransmitted IKE_SA_INIT: resend our response (§2.1).
            if let Some(sa) = self.sas.get_mut(&our) {
                sa.resend_last_response();
            }
            self.collect(now);
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
            return;
        }
        // §2.6: under half-open pressure, demand a cookie before spending a DH computation.
        let half_open = self
            .sas
            .values()
            .filter(|s| !s.is_established() && !s.initiator)
            .count();
        if half_open >= COOKIE_THRESHOLD {
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
                return;
            }
        }
        let config = c.config.clone();
        match IkeSa::respond_init(conn, &config, msg, raw, remote, now) {
            Ok(sa) => {
                // INITIAL_CONTACT comes later (IKE_AUTH); a new SA from the same peer replaces older ones once
                // established (see collect()).
                self.half_open
                    .insert((remote, msg.header.spi_i), sa.local_spi());
                self.sas.insert(sa.local_spi(), sa);
            }
            Err(refusal) => {
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
                let failure = Failure {
                    reason: Reason::NegotiationFailure,
                    exchange: "IKE_SA_INIT",
                    notify: Some("NO_PROPOSAL_CHOSEN".into()),
                    direction: "sent",
                    message: format!(
                        "IKE_SA_INIT failed: NO_PROPOSAL_CHOSEN; peer offered {}, we accept {}",
                        peer.join(", "),
                        ours.join(", ")
                    ),
                    our_proposals: ours,
                    peer_proposals: peer,
                };
                self.events.push_back(Event::Log {
                    conn: Some(conn),
                    level: "error",
                    exchange: "IKE_SA_INIT",
                    message: failure.message.clone(),
                });
                self.events.push_back(Event::IkeSaDown { conn, failure });
                self.transmits.push_back(refusal);
            }
        }
    }

    /// Moves datagrams and events out of the SAs, files rekeyed successors, drops dead SAs and
    /// schedules re-initiation after failures.
    fn collect(&mut self, now: Instant) {
        let mut successors = Vec::new();
        let mut events = Vec::new();
        for sa in self.sas.values_mut() {
            self.transmits.extend(sa.transmits.drain(..));
            let spi = sa.local_spi();
            events.extend(sa.events.drain(..).map(|e| (spi, e)));
            if let Some(next) = sa.successor.take() {
                successors.push(*next);
            }
        }
        for mut s in successors {
            self.transmits.extend(s.transmits.drain(..));
            let spi = s.local_spi();
            events.extend(s.events.drain(..).map(|e| (spi, e)));
            self.sas.insert(spi, s);
        }
        let mut failed = Vec::new();
        let mut initial_contacts = Vec::new();
        for (spi, e) in events {
            match &e {
                Event::IkeSaDown { conn, failure } => {
                    // A connection is down only when no other established IKE SA carries it (duplicate SAs
                    // from simultaneous initiation, a stale SA after a peer restart).
                    let other = self.sas.values().any(|s| {
                        s.conn == *conn && s.local_spi() != spi && !s.dead && s.is_established()
                    });
                    if other {
                        self.events.push_back(Event::Log {
                            conn: Some(*conn),
                            level: "info",
                            exchange: failure.exchange,
                            message: format!("duplicate IKE SA {spi:016x} closed ({}); another IKE SA carries the connection", failure.reason.as_str()),
                        });
                        continue;
                    }
                    if failure.reason != Reason::Administrative {
                        failed.push(*conn);
                    }
                }
                Event::IkeSaUp { conn, .. } => {
                    if let Some(sa) = self.sas.get(&spi)
                        && sa.peer_initial_contact
                    {
                        initial_contacts.push((*conn, spi, sa.created_at));
                    }
                    // §2.4: once an IKE SA with the peer exists, our other negotiations with it must not
                    // claim INITIAL_CONTACT (the peer would drop the SA we just established).
                    for other in self
                        .sas
                        .values_mut()
                        .filter(|s| s.conn == *conn && s.local_spi() != spi)
                    {
                        other.send_initial_contact = false;
                    }
                    if let Some(c) = self.connections.get_mut(conn) {
                        c.retry_at = None;
                        c.retry_interval = RETRY_BASE;
                    }
                }
                _ => {}
            }
            self.events.push_back(e);
        }
        self.forget_stale(&initial_contacts);
        self.resolve_duplicates(now);
        self.sas.retain(|_, s| !s.dead);
        self.half_open
            .retain(|_, spi| self.sas.get(spi).is_some_and(|s| !s.is_established()));
        for conn in failed {
            if self.sas.values().any(|s| s.conn == conn && !s.dead) {
                continue;
            }
            if let Some(c) = self.connections.get_mut(&conn)
                && c.config.mode != Mode::ResponderOnly
            {
                c.retry_at = Some(now + c.retry_interval);
                c.retry_interval = (c.retry_interval * 2).min(RETRY_MAX);
            }
        }
    }

    /// INITIAL_CONTACT (§2.4): the peer has no other SA with us, so IKE SAs of the connection that were
    /// established before the new one began are stale (a peer restart) and are dropped without DELETE.
    fn forget_stale(&mut self, contacts: &[(ConnId, u64, Instant)]) {
        for &(conn, spi, began) in contacts {
            for sa in self.sas.values_mut().filter(|s| {
                s.conn == conn
                    && s.local_spi() != spi
                    && !s.dead
                    && s.established_at.is_some_and(|t| t < began)
            }) {
                sa.dead = true;
                for c in sa.children.drain(..) {
                    self.events.push_back(Event::ChildSaDown {
                        conn,
                        inbound_spi: c.inbound_spi,
                        outbound_spi: c.outbound_spi,
                    });
                }
                self.events.push_back(Event::Log {
                    conn: Some(conn),
                    level: "info",
                    exchange: "IKE_AUTH",
                    message: format!(
                        "peer sent INITIAL_CONTACT: dropped stale IKE SA {:016x}",
                        sa.local_spi()
                    ),
                });
            }
        }
    }

    /// Both sides initiated at once, so a connection has two established IKE SAs. Both ends apply the same
    /// rule (in the spirit of §2.8.1): the SA whose exchange had the lowest nonce is redundant, and the
    /// end that initiated it deletes it. A stale SA the peer no longer knows dies by liveness check.
    fn resolve_duplicates(&mut self, now: Instant) {
        let mut by_conn: HashMap<ConnId, Vec<(Vec<u8>, u64)>> = HashMap::new();
        for sa in self
            .sas
            .values()
            .filter(|s| !s.dead && s.is_established() && !s.is_replaced())
        {
            by_conn
                .entry(sa.conn)
                .or_default()
                .push((sa.lowest_nonce(), sa.local_spi()));
        }
        for (conn, mut sas) in by_conn {
            if sas.len() < 2 {
                continue;
            }
            sas.sort();
            let Some(config) = self.connections.get(&conn).map(|c| c.config.clone()) else {
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
                    && !self.sas.values().any(|s| s.conn == **id && !s.dead)
            })
            .map(|(id, _)| *id)
            .collect();
        for conn in due {
            if let Some(c) = self.connections.get_mut(&conn) {
                c.retry_at = None;
                let config = c.config.clone();
                let mut sa = IkeSa::initiate(conn, &config, now, None, None);
                sa.send_initial_contact = !self.sas.values().any(|s| s.conn == conn && !s.dead);
                self.sas.insert(sa.local_spi(), sa);
            }
        }
        for sa in self.sas.values_mut() {
            if let Some(c) = self.connections.get(&sa.conn) {
                let config = &c.config;
                sa.handle_timeout(config, now);
            } else {
                sa.dead = true;
            }
        }
        self.collect(now);
    }

    /// The next time [`Endpoint::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sas = self.sas.values().filter_map(|s| {
            self.connections
                .get(&s.conn)
                .and_then(|c| s.poll_timeout(&c.config))
        });
        let retries = self
            .connections
            .iter()
            .filter(|(id, _)| !self.sas.values().any(|s| s.conn == **id))
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
    a.local_addr == b.local_addr
        && a.remote_addr == b.remote_addr
        && a.local_id == b.local_id
        && a.remote_id == b.remote_id
        && *a.psk == *b.psk
        && a.ike == b.ike
        && a.esp == b.esp
        && a.pfs == b.pfs
        && a.children == b.children
}
