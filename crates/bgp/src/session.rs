//! One BGP session's finite state machine (RFC 4271 §8), sans-IO.
//!
//! The caller owns the TCP connection: it asks [`Session::poll_connect`] when to open one, reports
//! [`Session::connection_opened`], feeds received bytes to [`Session::handle_bytes`] (any split), writes
//! what [`Session::poll_transmit`] returns, closes the socket when [`Session::poll_close`] says so, and
//! drives timers with [`Session::poll_timeout`] / [`Session::handle_timeout`]. Events (session up,
//! down with a typed reason, UPDATEs, refresh requests) come out of [`Session::poll_event`].
//!
//! States: `Idle` (stopped), `Connect` (waiting to open or for the connect-retry timer; RFC 4271's
//! Connect and Active are one state here because the caller both connects and accepts), `OpenSent`,
//! `OpenConfirm`, `Established`. After a failure the session returns to `Connect` and retries after
//! the connect-retry interval, doubling up to 30 s while failures repeat.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::codec::{
    self, AFI_IPV4, AFI_IPV6, AS_TRANS, Capability, DecodeError, Message, Notification, Open,
    PathAttributes, SAFI_UNICAST, Update, code,
};

/// RFC 4271 §10's large hold time used until the OPENs are exchanged.
const OPEN_HOLD: Duration = Duration::from_secs(240);
/// Longest connect-retry back-off.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Bytes kept while waiting for the rest of a message (a message is at most 4096).
const MAX_BUFFER: usize = 2 * codec::MAX_MESSAGE_LEN;

/// What a session is set up with.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Our ASN.
    pub local_asn: u32,
    /// The ASN the peer must have.
    pub peer_asn: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Hold time we propose (0, or 3 and more).
    pub hold_time: u16,
    /// Keepalive interval (0: a third of the negotiated hold time).
    pub keepalive: u16,
    /// Address families to announce (IPv4 and IPv6 unicast by default).
    pub families: Vec<(u16, u8)>,
    /// Graceful restart (RFC 4724): our restart time, when we advertise the capability.
    pub graceful_restart: Option<u16>,
    /// Whether we are coming back from a restart (the R bit) and preserved forwarding (the F bits).
    pub restarting: bool,
    /// First connect-retry interval.
    pub connect_retry: Duration,
    /// Advertise extended next hop for IPv4 unicast with IPv6 next hops (RFC 8950): set it when the
    /// session runs between IPv6 peering addresses, so IPv4 prefixes can still be announced.
    pub extended_next_hop: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            local_asn: 65515,
            peer_asn: 65010,
            router_id: Ipv4Addr::new(10, 0, 0, 1),
            hold_time: 180,
            keepalive: 0,
            families: vec![(AFI_IPV4, SAFI_UNICAST), (AFI_IPV6, SAFI_UNICAST)],
            graceful_restart: Some(120),
            restarting: false,
            connect_retry: Duration::from_secs(2),
            extended_next_hop: false,
        }
    }
}

/// What the two OPENs agreed. A capability is in force only when both sides advertised it
/// (RFC 5492 §3); the speaker sends nothing the peer did not agree to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Negotiated {
    /// Address families both sides announced; a side that announced no multiprotocol capability at
    /// all speaks IPv4 unicast only (RFC 4760 §8). UPDATEs, End-of-RIB and ROUTE-REFRESH are sent
    /// only for these (RFC 4760 §6, RFC 4724 §2, RFC 2918 §3).
    pub families: Vec<(u16, u8)>,
    /// AS_PATH carries 4-octet ASNs (RFC 6793); otherwise AS_TRANS and AS4_PATH are sent.
    pub four_octet_as: bool,
    /// IPv4 unicast NLRI may carry an IPv6 next hop (RFC 8950), both sides having advertised it.
    pub extended_next_hop: bool,
    /// The peer accepts ROUTE-REFRESH (RFC 2918 §3).
    pub route_refresh: bool,
    /// The peer's graceful-restart capability (RFC 4724 §3): restart time and families with their
    /// forwarding-state bit. None when it did not advertise one.
    pub peer_graceful_restart: Option<(u16, GracefulRestartFamilies)>,
}

/// A graceful-restart capability's families: AFI, SAFI and the forwarding-state bit (RFC 4724 §3).
pub type GracefulRestartFamilies = Vec<(u16, u8, bool)>;

impl Negotiated {
    /// Whether `afi`/`safi` was negotiated.
    pub fn has(&self, afi: u16, safi: u8) -> bool {
        self.families.contains(&(afi, safi))
    }

    /// Whether `prefix` can be announced with `next_hop` on this session: its family was negotiated,
    /// and an IPv4 prefix with an IPv6 next hop needs extended next hop (RFC 8950).
    pub fn can_announce(&self, prefix: &IpNet, next_hop: Option<IpAddr>) -> bool {
        match prefix {
            IpNet::V4(_) => {
                self.has(AFI_IPV4, SAFI_UNICAST)
                    && (!matches!(next_hop, Some(IpAddr::V6(_))) || self.extended_next_hop)
            }
            IpNet::V6(_) => self.has(AFI_IPV6, SAFI_UNICAST),
        }
    }

    /// Whether `prefix`'s family was negotiated (what may be withdrawn or accepted).
    pub fn carries(&self, prefix: &IpNet) -> bool {
        match prefix {
            IpNet::V4(_) => self.has(AFI_IPV4, SAFI_UNICAST),
            IpNet::V6(_) => self.has(AFI_IPV6, SAFI_UNICAST),
        }
    }

    /// The AFIs whose stale routes survive this re-established session (RFC 4724 §4.2): negotiated
    /// and listed in the peer's new graceful-restart capability with the forwarding bit set. Stale
    /// routes of every other family are to be flushed now.
    pub fn preserved_afis(&self) -> Vec<u16> {
        let Some((_, families)) = &self.peer_graceful_restart else {
            return Vec::new();
        };
        families
            .iter()
            .filter(|&&(afi, safi, forwarding)| forwarding && self.has(afi, safi))
            .map(|&(afi, _, _)| afi)
            .collect()
    }
}

/// RFC 4271 §8.2.2 states, Connect and Active merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Stopped.
    Idle,
    /// Waiting for a TCP connection.
    Connect,
    /// OPEN sent, waiting for the peer's.
    OpenSent,
    /// OPENs exchanged, waiting for the first KEEPALIVE.
    OpenConfirm,
    /// Exchanging routes.
    Established,
}

/// Why a session went down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownReason {
    /// No message within the hold time (we sent Hold Timer Expired).
    HoldTimerExpired,
    /// The peer sent a NOTIFICATION.
    NotificationReceived(Notification),
    /// We refused something and sent a NOTIFICATION; the text says what.
    NotificationSent(Notification, String),
    /// The TCP connection closed.
    ConnectionClosed,
    /// Stopped by the operator or the tunnel (we sent Cease when connected).
    Stopped,
}

impl std::fmt::Display for DownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::HoldTimerExpired => {
                f.write_str("hold timer expired: no message from the peer within the hold time")
            }
            Self::NotificationReceived(n) => write!(f, "peer sent NOTIFICATION {n}"),
            Self::NotificationSent(n, why) => write!(f, "sent NOTIFICATION {n}: {why}"),
            Self::ConnectionClosed => f.write_str("the TCP connection closed"),
            Self::Stopped => f.write_str("stopped"),
        }
    }
}

/// What a session reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The session is established; announce the Adj-RIB-Out now.
    Established,
    /// The session is down. `keep_stale` is true when the peer advertised graceful restart for at
    /// least one negotiated family and the session ended without a NOTIFICATION (RFC 4724 §4.2):
    /// keep its routes of `stale_afis`, marked stale, for `restart_time` seconds, and drop the rest.
    Down {
        /// Why.
        reason: DownReason,
        /// Keep the peer's routes as stale.
        keep_stale: bool,
        /// The peer's restart time (s).
        restart_time: u16,
        /// The AFIs whose routes are kept (the families of the peer's graceful-restart capability).
        stale_afis: Vec<u16>,
    },
    /// Routes announced or withdrawn by the peer (also End-of-RIB markers).
    Update(Update),
    /// The peer asked for our routes again (RFC 2918).
    RouteRefresh {
        /// Address family.
        afi: u16,
        /// Subsequent address family.
        safi: u8,
    },
}

/// Message counters, for `list-bgp-peer-status`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    /// Messages sent.
    pub messages_sent: u64,
    /// Messages received.
    pub messages_received: u64,
    /// UPDATEs received.
    pub updates_received: u64,
    /// Prefixes received for families the session did not negotiate, ignored (RFC 4760 §7).
    pub prefixes_ignored: u64,
}

/// One BGP session.
pub struct Session {
    config: SessionConfig,
    state: State,
    buffer: Vec<u8>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    close: bool,
    connect_at: Option<Instant>,
    retry: Duration,
    hold_deadline: Option<Instant>,
    keepalive_deadline: Option<Instant>,
    hold: Duration,
    keepalive: Duration,
    four_octet: bool,
    negotiated: Negotiated,
    peer_open: Option<Open>,
    established_at: Option<Instant>,
    counters: Counters,
}

impl Session {
    /// A stopped session.
    pub fn new(config: SessionConfig) -> Self {
        let retry = config.connect_retry;
        Self {
            config,
            state: State::Idle,
            buffer: Vec::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            close: false,
            connect_at: None,
            retry,
            hold_deadline: None,
            keepalive_deadline: None,
            hold: Duration::ZERO,
            keepalive: Duration::ZERO,
            four_octet: false,
            negotiated: Negotiated::default(),
            peer_open: None,
            established_at: None,
            counters: Counters::default(),
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The peer's OPEN, once received.
    pub fn peer_open(&self) -> Option<&Open> {
        self.peer_open.as_ref()
    }

    /// When the session became established.
    pub fn established_at(&self) -> Option<Instant> {
        self.established_at
    }

    /// Message counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The negotiated hold time.
    pub fn hold_time(&self) -> Duration {
        self.hold
    }

    /// Whether AS_PATHs carry 4-octet ASNs on this session (RFC 6793).
    pub fn four_octet_as(&self) -> bool {
        self.four_octet
    }

    /// What the OPENs agreed (empty until the peer's OPEN arrived).
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// The families we announce in our OPEN (IPv4 unicast when the configuration lists none).
    fn own_families(&self) -> Vec<(u16, u8)> {
        if self.config.families.is_empty() {
            vec![(AFI_IPV4, SAFI_UNICAST)]
        } else {
            self.config.families.clone()
        }
    }

    /// ManualStart: begin connecting now.
    pub fn start(&mut self, now: Instant) {
        if self.state == State::Idle {
            self.state = State::Connect;
            self.connect_at = Some(now);
            self.retry = self.config.connect_retry;
        }
    }

    /// ManualStop: Cease/Administrative Shutdown if connected, then Idle (RFC 4271 §8.1.2, RFC 4486).
    pub fn stop(&mut self, now: Instant) {
        self.stop_with(now, 2);
    }

    /// Stops with Cease and the given subcode (1: maximum prefixes reached, 2: shutdown).
    pub fn stop_with(&mut self, _now: Instant, cease_subcode: u8) {
        if self.state == State::Idle {
            return;
        }
        if matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        ) {
            self.send(codec::encode_notification(&Notification {
                code: code::CEASE,
                subcode: cease_subcode,
                data: Vec::new(),
            }));
            self.close = true;
        }
        let reason = if cease_subcode == 2 {
            DownReason::Stopped
        } else {
            DownReason::NotificationSent(
                Notification {
                    code: code::CEASE,
                    subcode: cease_subcode,
                    data: Vec::new(),
                },
                "stopped by policy".into(),
            )
        };
        self.enter_down(reason, false);
        self.state = State::Idle;
        self.connect_at = None;
    }

    /// True once when it is time to open a TCP connection to the peer.
    pub fn poll_connect(&mut self, now: Instant) -> bool {
        if self.state == State::Connect && self.connect_at.is_some_and(|t| t <= now) {
            self.connect_at = None;
            return true;
        }
        false
    }

    /// The connection attempt failed: try again after the connect-retry interval.
    pub fn connection_failed(&mut self, now: Instant) {
        if self.state == State::Connect {
            self.schedule_retry(now);
        }
    }

    /// A TCP connection to the peer is up (ours or accepted): send OPEN (RFC 4271 §8.2.2).
    pub fn connection_opened(&mut self, now: Instant) {
        if self.state != State::Connect {
            return;
        }
        self.buffer.clear();
        self.close = false;
        self.negotiated = Negotiated::default();
        self.four_octet = false;
        let mut capabilities = Vec::new();
        for &(afi, safi) in &self.config.families {
            capabilities.push(Capability::Multiprotocol { afi, safi });
        }
        capabilities.push(Capability::RouteRefresh);
        if self.config.extended_next_hop {
            capabilities.push(Capability::ExtendedNextHop(vec![(
                AFI_IPV4,
                u16::from(SAFI_UNICAST),
                AFI_IPV6,
            )]));
        }
        capabilities.push(Capability::FourOctetAs(self.config.local_asn));
        if let Some(time) = self.config.graceful_restart {
            capabilities.push(Capability::GracefulRestart {
                restarting: self.config.restarting,
                restart_time: time,
                families: self
                    .config
                    .families
                    .iter()
                    .map(|&(afi, safi)| (afi, safi, self.config.restarting))
                    .collect(),
            });
        }
        let open = Open {
            version: 4,
            my_as: u16::try_from(self.config.local_asn).unwrap_or(AS_TRANS),
            hold_time: self.config.hold_time,
            bgp_id: self.config.router_id,
            capabilities,
        };
        self.send(codec::encode_open(&open));
        self.state = State::OpenSent;
        self.hold_deadline = Some(now + OPEN_HOLD);
    }

    /// The TCP connection closed (by the peer or the network).
    pub fn connection_closed(&mut self, now: Instant) {
        if matches!(self.state, State::Idle | State::Connect) {
            return;
        }
        let graceful = self.state == State::Established;
        self.fail(now, DownReason::ConnectionClosed, graceful);
    }

    /// Bytes from the TCP stream, in any split.
    pub fn handle_bytes(&mut self, now: Instant, mut data: &[u8]) {
        while !data.is_empty() {
            if matches!(self.state, State::Idle | State::Connect) {
                return;
            }
            let take = data.len().min(MAX_BUFFER - self.buffer.len());
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
            loop {
                let len = match codec::frame_len(&self.buffer) {
                    Ok(Some(len)) => len,
                    Ok(None) => break,
                    Err(e) => {
                        self.refuse(now, e);
                        return;
                    }
                };
                let frame: Vec<u8> = self.buffer.drain(..len).collect();
                self.counters.messages_received += 1;
                match codec::decode(&frame, self.four_octet) {
                    Ok(message) => self.handle_message(now, message),
                    Err(e) => {
                        self.refuse(now, e);
                        return;
                    }
                }
                if matches!(self.state, State::Idle | State::Connect) {
                    return;
                }
            }
        }
    }

    fn handle_message(&mut self, now: Instant, message: Message) {
        // Any message restarts the hold timer once the hold time is negotiated (§4.4).
        if self.state == State::OpenConfirm || self.state == State::Established {
            self.restart_hold(now);
        }
        match (self.state, message) {
            (_, Message::Notification(n)) => {
                self.fail(now, DownReason::NotificationReceived(n), false);
            }
            (State::OpenSent, Message::Open(open)) => self.handle_open(now, open),
            (State::OpenConfirm, Message::Keepalive) => {
                self.state = State::Established;
                self.established_at = Some(now);
                self.retry = self.config.connect_retry;
                self.events.push_back(Event::Established);
            }
            (State::Established, Message::Keepalive) => {}
            (State::Established, Message::Update(mut update)) => {
                self.counters.updates_received += 1;
                // RFC 4760 §7: NLRI of a family the session did not negotiate is ignored, not
                // learned.
                let before = update.announced.len() + update.withdrawn.len();
                let n = &self.negotiated;
                update.announced.retain(|p| n.carries(p));
                update.withdrawn.retain(|p| n.carries(p));
                if update.announced.is_empty() {
                    update.attributes = None;
                }
                if update
                    .end_of_rib
                    .is_some_and(|(afi, safi)| !n.has(afi, safi))
                {
                    update.end_of_rib = None;
                }
                let after = update.announced.len() + update.withdrawn.len();
                self.counters.prefixes_ignored += (before - after) as u64;
                if after > 0 || update.end_of_rib.is_some() {
                    self.events.push_back(Event::Update(update));
                }
            }
            (State::Established, Message::RouteRefresh { afi, safi }) => {
                // RFC 2918 §4: a refresh for a family we did not agree on is ignored.
                if self.negotiated.has(afi, safi) {
                    self.events.push_back(Event::RouteRefresh { afi, safi });
                }
            }
            (state, other) => {
                let what = match other {
                    Message::Open(_) => "OPEN",
                    Message::Update(_) => "UPDATE",
                    Message::Keepalive => "KEEPALIVE",
                    Message::RouteRefresh { .. } => "ROUTE-REFRESH",
                    Message::Notification(_) => "NOTIFICATION",
                };
                self.refuse(
                    now,
                    DecodeError {
                        code: code::FSM,
                        subcode: 0,
                        data: Vec::new(),
                        message: format!("unexpected {what} in state {state:?}"),
                    },
                );
            }
        }
    }

    /// OPEN checks (RFC 4271 §6.2) and hold-time negotiation (§4.2).
    fn handle_open(&mut self, now: Instant, open: Open) {
        let err = |subcode: u8, data: Vec<u8>, message: String| DecodeError {
            code: code::OPEN,
            subcode,
            data,
            message,
        };
        if open.version != 4 {
            return self.refuse(
                now,
                err(
                    1,
                    vec![0, 4],
                    format!("peer speaks BGP version {}", open.version),
                ),
            );
        }
        if open.asn() != self.config.peer_asn {
            let hint = if open.asn() == u32::from(AS_TRANS) && !open.four_octet_as() {
                " (AS_TRANS: the peer lacks the 4-octet AS capability, RFC 6793, so it cannot use a 4-octet ASN)"
            } else {
                ""
            };
            return self.refuse(
                now,
                err(
                    2,
                    Vec::new(),
                    format!(
                        "wrong ASN: we expected AS {}, the peer says AS {}{hint}",
                        self.config.peer_asn,
                        open.asn()
                    ),
                ),
            );
        }
        if open.hold_time == 1 || open.hold_time == 2 {
            return self.refuse(
                now,
                err(
                    6,
                    Vec::new(),
                    format!("hold time {} s is not allowed", open.hold_time),
                ),
            );
        }
        if open.bgp_id.is_unspecified()
            || (open.bgp_id == self.config.router_id && open.asn() == self.config.local_asn)
        {
            return self.refuse(
                now,
                err(3, Vec::new(), format!("bad BGP identifier {}", open.bgp_id)),
            );
        }
        let hold = open.hold_time.min(self.config.hold_time);
        self.hold = Duration::from_secs(u64::from(hold));
        let third = u64::from(hold / 3);
        let keepalive = match self.config.keepalive {
            0 => third,
            k => u64::from(k).min(third.max(1)),
        };
        self.keepalive = if hold == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(keepalive.max(1))
        };
        // We always advertise 4-octet AS and route refresh; the peer's OPEN decides.
        let ours = self.own_families();
        let theirs = open.families();
        self.negotiated = Negotiated {
            families: ours.into_iter().filter(|f| theirs.contains(f)).collect(),
            four_octet_as: open.four_octet_as(),
            extended_next_hop: self.config.extended_next_hop && open.extended_next_hop_ipv4(),
            route_refresh: open.route_refresh(),
            peer_graceful_restart: match open.graceful_restart() {
                Some(Capability::GracefulRestart {
                    restart_time,
                    families,
                    ..
                }) => Some((*restart_time, families.clone())),
                _ => None,
            },
        };
        self.four_octet = self.negotiated.four_octet_as;
        self.peer_open = Some(open);
        self.send(codec::encode_keepalive());
        self.state = State::OpenConfirm;
        self.restart_hold(now);
        self.keepalive_deadline = (!self.keepalive.is_zero()).then(|| now + self.keepalive);
    }

    fn restart_hold(&mut self, now: Instant) {
        self.hold_deadline = (!self.hold.is_zero()).then(|| now + self.hold);
    }

    /// Sends the NOTIFICATION an error calls for and goes down.
    fn refuse(&mut self, now: Instant, e: DecodeError) {
        let n = e.notification();
        self.send(codec::encode_notification(&n));
        self.close = true;
        self.fail(now, DownReason::NotificationSent(n, e.message), false);
    }

    fn fail(&mut self, now: Instant, reason: DownReason, graceful: bool) {
        self.enter_down(reason, graceful);
        self.schedule_retry(now);
    }

    fn enter_down(&mut self, reason: DownReason, graceful: bool) {
        let was_up = self.state == State::Established;
        // RFC 4724 §4.2: keep the routes of the families in the peer's capability, drop the rest.
        let stale_afis: Vec<u16> = match &self.negotiated.peer_graceful_restart {
            Some((_, families)) if graceful && was_up => {
                let mut afis: Vec<u16> = families
                    .iter()
                    .filter(|&&(afi, safi, _)| self.negotiated.has(afi, safi))
                    .map(|&(afi, _, _)| afi)
                    .collect();
                afis.dedup();
                afis
            }
            _ => Vec::new(),
        };
        let keep_stale = !stale_afis.is_empty();
        let restart_time = match &self.negotiated.peer_graceful_restart {
            Some((t, _)) if keep_stale => *t,
            _ => 0,
        };
        if !matches!(self.state, State::Idle | State::Connect) {
            self.events.push_back(Event::Down {
                reason,
                keep_stale,
                restart_time,
                stale_afis,
            });
        }
        self.hold_deadline = None;
        self.keepalive_deadline = None;
        self.established_at = None;
        self.buffer.clear();
        self.close = true;
    }

    fn schedule_retry(&mut self, now: Instant) {
        self.state = State::Connect;
        self.connect_at = Some(now + self.retry);
        self.retry = (self.retry * 2).min(MAX_RETRY);
    }

    fn send(&mut self, bytes: Vec<u8>) {
        self.counters.messages_sent += 1;
        self.transmit.push_back(bytes);
    }

    /// Announces `prefixes` with `attributes` (only while established). Prefixes the session cannot
    /// carry (see [`Negotiated::can_announce`]) are left out: the peer never receives a family it
    /// did not negotiate (RFC 4760 §6).
    pub fn announce(&mut self, attributes: &PathAttributes, prefixes: &[IpNet]) {
        if self.state != State::Established || prefixes.is_empty() {
            return;
        }
        let n = &self.negotiated;
        let wanted: Vec<IpNet> = prefixes
            .iter()
            .filter(|p| n.can_announce(p, attributes.next_hop))
            .copied()
            .collect();
        if wanted.is_empty() {
            return;
        }
        for m in codec::encode_announce_ext(
            attributes,
            &wanted,
            self.four_octet,
            self.negotiated.extended_next_hop,
        ) {
            self.send(m);
        }
    }

    /// Withdraws `prefixes` (only while established; only negotiated families).
    pub fn withdraw(&mut self, prefixes: &[IpNet]) {
        if self.state != State::Established || prefixes.is_empty() {
            return;
        }
        let n = &self.negotiated;
        let wanted: Vec<IpNet> = prefixes.iter().filter(|p| n.carries(p)).copied().collect();
        if wanted.is_empty() {
            return;
        }
        for m in codec::encode_withdraw(&wanted) {
            self.send(m);
        }
    }

    /// Sends End-of-RIB (RFC 4724 §2) after the initial announcements, for each negotiated family
    /// only: an MP_UNREACH for a family the peer did not announce is an error to it (RFC 4760 §6).
    pub fn end_of_rib(&mut self) {
        if self.state != State::Established {
            return;
        }
        let families = self.negotiated.families.clone();
        for (afi, safi) in families {
            self.send(codec::encode_end_of_rib(afi, safi));
        }
    }

    /// Asks the peer to send its routes again (RFC 2918 §3), if it supports it, for the negotiated
    /// families.
    pub fn request_refresh(&mut self) {
        if self.state == State::Established && self.negotiated.route_refresh {
            let families = self.negotiated.families.clone();
            for (afi, safi) in families {
                self.send(codec::encode_route_refresh(afi, safi));
            }
        }
    }

    /// The next timer deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.connect_at, self.hold_deadline, self.keepalive_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs expired timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.hold_deadline.is_some_and(|t| t <= now) {
            let n = Notification {
                code: code::HOLD_TIMER,
                subcode: 0,
                data: Vec::new(),
            };
            self.send(codec::encode_notification(&n));
            self.close = true;
            self.fail(now, DownReason::HoldTimerExpired, false);
            return;
        }
        if let Some(t) = self.keepalive_deadline
            && t <= now
        {
            self.send(codec::encode_keepalive());
            self.keepalive_deadline = Some(now + self.keepalive);
        }
    }

    /// Bytes to write to the TCP stream.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    /// True once when the caller should close the TCP connection (after writing what is queued).
    pub fn poll_close(&mut self) -> bool {
        std::mem::take(&mut self.close)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}
