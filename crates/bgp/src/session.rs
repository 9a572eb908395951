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
use std::net::Ipv4Addr;
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
        }
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
    /// The session is down. `keep_stale` is true when the peer advertised graceful restart and the
    /// session ended without a NOTIFICATION (RFC 4724 §4.2): keep its routes, marked stale, for
    /// `restart_time` seconds.
    Down {
        /// Why.
        reason: DownReason,
        /// Keep the peer's routes as stale.
        keep_stale: bool,
        /// The peer's restart time (s).
        restart_time: u16,
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
        let mut capabilities = Vec::new();
        for &(afi, safi) in &self.config.families {
            capabilities.push(Capability::Multiprotocol { afi, safi });
        }
        capabilities.push(Capability::RouteRefresh);
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
            (State::Established, Message::Update(update)) => {
                self.counters.updates_received += 1;
                self.events.push_back(Event::Update(update));
            }
            (State::Established, Message::RouteRefresh { afi, safi }) => {
                self.events.push_back(Event::RouteRefresh { afi, safi });
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
            return self.refuse(
                now,
                err(
                    2,
                    Vec::new(),
                    format!(
                        "wrong ASN: we expected AS {}, the peer says AS {}",
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
        self.four_octet = open.four_octet_as();
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
        let (keep_stale, restart_time) =
            match self.peer_open.as_ref().and_then(|o| o.graceful_restart()) {
                Some(Capability::GracefulRestart { restart_time, .. }) if graceful && was_up => {
                    (true, *restart_time)
                }
                _ => (false, 0),
            };
        if !matches!(self.state, State::Idle | State::Connect) {
            self.events.push_back(Event::Down {
                reason,
                keep_stale,
                restart_time,
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

    /// Announces `prefixes` with `attributes` (only while established).
    pub fn announce(&mut self, attributes: &PathAttributes, prefixes: &[IpNet]) {
        if self.state != State::Established || prefixes.is_empty() {
            return;
        }
        for m in codec::encode_announce(attributes, prefixes, self.four_octet) {
            self.send(m);
        }
    }

    /// Withdraws `prefixes` (only while established).
    pub fn withdraw(&mut self, prefixes: &[IpNet]) {
        if self.state != State::Established || prefixes.is_empty() {
            return;
        }
        for m in codec::encode_withdraw(prefixes) {
            self.send(m);
        }
    }

    /// Sends End-of-RIB for every family (RFC 4724 §2), after the initial announcements.
    pub fn end_of_rib(&mut self) {
        if self.state != State::Established {
            return;
        }
        let families = self.config.families.clone();
        for (afi, safi) in families {
            self.send(codec::encode_end_of_rib(afi, safi));
        }
    }

    /// Asks the peer to send its routes again (RFC 2918), if it supports it.
    pub fn request_refresh(&mut self) {
        let supports = self.peer_open.as_ref().is_some_and(|o| {
            o.capabilities
                .iter()
                .any(|c| matches!(c, Capability::RouteRefresh))
        });
        if self.state == State::Established && supports {
            let families = self.config.families.clone();
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
