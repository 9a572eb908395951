//! Sans-IO Bidirectional Forwarding Detection (RFC 5880), single-hop or multihop (RFC 5883), for
//! vgw's redundant tunnels: a BFD session per tunnel notices a dead path in about a second and tells
//! the caller to withdraw that tunnel's routes, long before a BGP hold timer would.
//!
//! Like vgw's other engines it has no sockets, threads or clocks: the caller feeds received control
//! packets and `Instant`s in ([`Session::handle_packet`], [`Session::handle_timeout`]) and takes packets
//! to send ([`Session::poll_transmit`]), the next deadline ([`Session::poll_timeout`]) and state changes
//! ([`Session::poll_event`]). The caller owns UDP port 3784 (single hop) or 4784 (multihop).
//!
//! Implemented: the control packet codec (§4.1) with its validation rules (§6.8.6), the three-way
//! handshake of the state machine (§6.2: AdminDown, Down, Init, Up), timer negotiation (§6.8.2–6.8.4:
//! the transmit interval is the larger of our DesiredMinTxInterval and the peer's RequiredMinRxInterval,
//! jittered by up to 25% (§6.8.7); the detection time is the peer's Detect Mult times the larger of our
//! RequiredMinRxInterval and its DesiredMinTxInterval), the 1 s slow transmit rate while not Up
//! (§6.8.3), Poll/Final on parameter changes and on reaching Up, with a slower rate or a shorter
//! detection time held back until the Final (§6.5, §6.8.3), silence while the peer's
//! RequiredMinRxInterval is zero (§6.8.7), and diagnostics (§4.1). Not implemented:
//! authentication (§6.7) and Demand mode (§6.6), which vgw's tunnels do not need: the packets travel
//! inside the IPsec tunnel, which already authenticates them.

#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Session state (RFC 5880 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Administratively down.
    AdminDown = 0,
    /// Down.
    Down = 1,
    /// Init: heard the peer, which does not hear us yet.
    Init = 2,
    /// Up.
    Up = 3,
}

impl State {
    fn from_bits(v: u8) -> Self {
        match v & 3 {
            0 => Self::AdminDown,
            1 => Self::Down,
            2 => Self::Init,
            _ => Self::Up,
        }
    }
}

/// Why a session is (or went) down (RFC 5880 §4.1 Diagnostic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Diagnostic {
    /// No diagnostic.
    None = 0,
    /// Control detection time expired.
    DetectionTimeExpired = 1,
    /// Echo function failed.
    EchoFunctionFailed = 2,
    /// The neighbor signaled session down.
    NeighborSignaledDown = 3,
    /// Forwarding plane reset.
    ForwardingPlaneReset = 4,
    /// Path down.
    PathDown = 5,
    /// Concatenated path down.
    ConcatenatedPathDown = 6,
    /// Administratively down.
    AdminDown = 7,
    /// Reverse concatenated path down.
    ReverseConcatenatedPathDown = 8,
}

impl Diagnostic {
    /// Codes 9–31 are reserved (§4.1) and read as no diagnostic.
    fn from_bits(v: u8) -> Self {
        match v & 0x1f {
            1 => Self::DetectionTimeExpired,
            2 => Self::EchoFunctionFailed,
            3 => Self::NeighborSignaledDown,
            4 => Self::ForwardingPlaneReset,
            5 => Self::PathDown,
            6 => Self::ConcatenatedPathDown,
            7 => Self::AdminDown,
            8 => Self::ReverseConcatenatedPathDown,
            _ => Self::None,
        }
    }
}

/// A decoded control packet (RFC 5880 §4.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlPacket {
    /// Diagnostic.
    pub diagnostic: Diagnostic,
    /// Sender's state.
    pub state: State,
    /// Poll bit.
    pub poll: bool,
    /// Final bit.
    pub final_: bool,
    /// Detect Mult.
    pub detect_mult: u8,
    /// My Discriminator.
    pub my_discriminator: u32,
    /// Your Discriminator.
    pub your_discriminator: u32,
    /// Desired Min TX Interval (µs).
    pub desired_min_tx: u32,
    /// Required Min RX Interval (µs).
    pub required_min_rx: u32,
    /// Required Min Echo RX Interval (µs).
    pub required_min_echo_rx: u32,
}

/// Why a packet was discarded (RFC 5880 §6.8.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PacketError {
    /// Shorter than 24 bytes or than its Length field.
    Truncated,
    /// Version is not 1.
    BadVersion(u8),
    /// Length field below 24 (or 26 with authentication).
    BadLength(u8),
    /// Detect Mult is zero, or Multipoint is set, or My Discriminator is zero.
    Invalid(&'static str),
    /// Authentication is present; this implementation does not configure it.
    AuthenticationNotConfigured,
    /// Your Discriminator is not ours.
    UnknownDiscriminator(u32),
}

impl ControlPacket {
    /// Decodes and validates a control packet (§6.8.6 checks that need no session state).
    pub fn decode(b: &[u8]) -> Result<Self, PacketError> {
        if b.len() < 24 {
            return Err(PacketError::Truncated);
        }
        let version = b[0] >> 5;
        if version != 1 {
            return Err(PacketError::BadVersion(version));
        }
        let length = b[3];
        let auth = b[1] & 0x04 != 0;
        if length < 24 || (auth && length < 26) {
            return Err(PacketError::BadLength(length));
        }
        if usize::from(length) > b.len() {
            return Err(PacketError::Truncated);
        }
        if auth {
            return Err(PacketError::AuthenticationNotConfigured);
        }
        let detect_mult = b[2];
        if detect_mult == 0 {
            return Err(PacketError::Invalid("Detect Mult is zero"));
        }
        if b[1] & 0x01 != 0 {
            return Err(PacketError::Invalid("Multipoint is set"));
        }
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let my_discriminator = word(4);
        if my_discriminator == 0 {
            return Err(PacketError::Invalid("My Discriminator is zero"));
        }
        let state = State::from_bits(b[1] >> 6);
        let your_discriminator = word(8);
        if your_discriminator == 0 && !matches!(state, State::Down | State::AdminDown) {
            return Err(PacketError::Invalid(
                "Your Discriminator is zero outside Down/AdminDown",
            ));
        }
        Ok(Self {
            diagnostic: Diagnostic::from_bits(b[0]),
            state,
            poll: b[1] & 0x20 != 0,
            final_: b[1] & 0x10 != 0,
            detect_mult,
            my_discriminator,
            your_discriminator,
            desired_min_tx: word(12),
            required_min_rx: word(16),
            required_min_echo_rx: word(20),
        })
    }

    /// Encodes the packet (24 bytes, no authentication).
    pub fn encode(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[0] = (1 << 5) | (self.diagnostic as u8);
        b[1] = ((self.state as u8) << 6)
            | if self.poll { 0x20 } else { 0 }
            | if self.final_ { 0x10 } else { 0 };
        b[2] = self.detect_mult;
        b[3] = 24;
        b[4..8].copy_from_slice(&self.my_discriminator.to_be_bytes());
        b[8..12].copy_from_slice(&self.your_discriminator.to_be_bytes());
        b[12..16].copy_from_slice(&self.desired_min_tx.to_be_bytes());
        b[16..20].copy_from_slice(&self.required_min_rx.to_be_bytes());
        b[20..24].copy_from_slice(&self.required_min_echo_rx.to_be_bytes());
        b
    }
}

/// A session's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Our discriminator (non-zero, unique per session on this system).
    pub discriminator: u32,
    /// How often we would like to send while Up (e.g. 300 ms).
    pub desired_min_tx: Duration,
    /// How often we can accept packets (e.g. 300 ms).
    pub required_min_rx: Duration,
    /// Detection multiplier (e.g. 3: a path is dead after 3 missed intervals).
    pub detect_mult: u8,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            discriminator: 1,
            desired_min_tx: Duration::from_millis(300),
            required_min_rx: Duration::from_millis(300),
            detect_mult: 3,
        }
    }
}

/// What a session reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The path is up.
    Up,
    /// The path went down, and why.
    Down(Diagnostic),
}

/// The slow rate while not Up (§6.8.3).
const SLOW_TX: Duration = Duration::from_secs(1);

/// One BFD session.
pub struct Session {
    config: Config,
    state: State,
    diagnostic: Diagnostic,
    remote_discriminator: u32,
    remote_state: State,
    remote_min_rx: Duration,
    remote_desired_tx: Duration,
    remote_detect_mult: u8,
    /// The transmit interval and Required Min RX in force, which lag the configured ones while a Poll
    /// sequence for a slower rate or a shorter detection time is outstanding (§6.8.3).
    active_tx: Duration,
    active_rx: Duration,
    poll_pending: bool,
    send_final: bool,
    next_tx: Option<Instant>,
    detect_deadline: Option<Instant>,
    transmit: VecDeque<[u8; 24]>,
    events: VecDeque<Event>,
    jitter: u32,
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

impl Session {
    /// A session in Down, sending at the slow rate from `now`.
    pub fn new(config: Config, now: Instant) -> Self {
        let jitter = config.discriminator.wrapping_mul(2_654_435_761);
        Self {
            active_tx: config.desired_min_tx,
            active_rx: config.required_min_rx,
            config,
            state: State::Down,
            diagnostic: Diagnostic::None,
            remote_discriminator: 0,
            remote_state: State::Down,
            remote_min_rx: Duration::from_micros(1),
            remote_desired_tx: Duration::ZERO,
            remote_detect_mult: 0,
            poll_pending: false,
            send_final: false,
            next_tx: Some(now),
            detect_deadline: None,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            jitter,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The local diagnostic.
    pub fn diagnostic(&self) -> Diagnostic {
        self.diagnostic
    }

    /// Our discriminator (My Discriminator).
    pub fn discriminator(&self) -> u32 {
        self.config.discriminator
    }

    /// The peer's discriminator, zero until heard or after a detection timeout (§6.8.1).
    pub fn remote_discriminator(&self) -> u32 {
        self.remote_discriminator
    }

    /// The state the peer last reported.
    pub fn remote_state(&self) -> State {
        self.remote_state
    }

    /// The periodic transmit interval in force, before jitter (§6.8.7); `None` while the peer asks
    /// for no packets (Required Min RX Interval zero).
    pub fn transmit_interval(&self) -> Option<Duration> {
        (!self.remote_min_rx.is_zero()).then(|| self.tx_interval())
    }

    /// The detection time in force (§6.8.4), once the peer's parameters are known.
    pub fn detection_time(&self) -> Option<Duration> {
        (self.remote_detect_mult > 0).then(|| {
            self.active_rx.max(self.remote_desired_tx) * u32::from(self.remote_detect_mult)
        })
    }

    /// Changes the timers; a Poll sequence tells the peer (§6.8.3). While Up, a slower transmit rate
    /// and a shorter Required Min RX take effect only when the Poll sequence ends, so the peer's
    /// detection time is never shorter than our real interval.
    pub fn set_timers(
        &mut self,
        desired_min_tx: Duration,
        required_min_rx: Duration,
        now: Instant,
    ) {
        self.config.desired_min_tx = desired_min_tx;
        self.config.required_min_rx = required_min_rx;
        if self.state == State::Up {
            self.active_tx = self.active_tx.min(desired_min_tx);
            self.active_rx = self.active_rx.max(required_min_rx);
        } else {
            self.active_tx = desired_min_tx;
            self.active_rx = required_min_rx;
        }
        self.poll_pending = true;
        self.next_tx = Some(now);
    }

    /// Changes our Detect Mult (carried in every packet; the peer's detection time follows it).
    pub fn set_detect_mult(&mut self, detect_mult: u8, now: Instant) {
        if detect_mult != 0 && detect_mult != self.config.detect_mult {
            self.config.detect_mult = detect_mult;
            self.poll_pending = true;
            self.next_tx = Some(now);
        }
    }

    /// Takes the session administratively down (the peer sees AdminDown and stops expecting us).
    pub fn admin_down(&mut self, now: Instant) {
        self.set_state(State::AdminDown, Diagnostic::AdminDown);
        self.next_tx = Some(now);
    }

    /// Leaves AdminDown.
    pub fn enable(&mut self, now: Instant) {
        if self.state == State::AdminDown {
            self.state = State::Down;
            self.diagnostic = Diagnostic::None;
            self.next_tx = Some(now);
        }
    }

    fn set_state(&mut self, state: State, diagnostic: Diagnostic) {
        if state == self.state {
            return;
        }
        let was_up = self.state == State::Up;
        self.state = state;
        if state != State::Up {
            self.diagnostic = diagnostic;
        }
        if state == State::Up {
            self.events.push_back(Event::Up);
            // Our Desired Min TX drops from the 1 s slow rate to the configured one (§6.8.3).
            if self.config.desired_min_tx < SLOW_TX {
                self.poll_pending = true;
            }
        } else if was_up {
            self.events.push_back(Event::Down(diagnostic));
        }
    }

    fn tx_interval(&self) -> Duration {
        if self.state != State::Up {
            return SLOW_TX.max(self.remote_min_rx);
        }
        self.active_tx.max(self.remote_min_rx)
    }

    /// Processes a received control packet (§6.8.6).
    pub fn handle_packet(&mut self, now: Instant, packet: &[u8]) -> Result<(), PacketError> {
        let p = ControlPacket::decode(packet)?;
        if p.your_discriminator != 0 && p.your_discriminator != self.config.discriminator {
            return Err(PacketError::UnknownDiscriminator(p.your_discriminator));
        }
        self.remote_discriminator = p.my_discriminator;
        self.remote_state = p.state;
        self.remote_desired_tx = Duration::from_micros(u64::from(p.desired_min_tx));
        self.remote_min_rx = Duration::from_micros(u64::from(p.required_min_rx));
        self.remote_detect_mult = p.detect_mult;
        if p.final_ {
            self.poll_pending = false;
            self.active_tx = self.config.desired_min_tx;
            self.active_rx = self.config.required_min_rx;
        }
        if p.poll {
            self.send_final = true;
            self.next_tx = Some(now);
        }
        if self.next_tx.is_none() && !self.remote_min_rx.is_zero() {
            self.next_tx = Some(now);
        }
        if self.state == State::AdminDown {
            return Ok(());
        }
        match (p.state, self.state) {
            (State::AdminDown, s) if s != State::Down => {
                self.set_state(State::Down, Diagnostic::NeighborSignaledDown)
            }
            (State::AdminDown, _) => {}
            (State::Down, State::Down) => self.set_state(State::Init, Diagnostic::None),
            // A peer still Up from an earlier session does not bring a Down session up: only Init
            // does, so both sides pass through the handshake (§6.8.6).
            (State::Init, State::Down) | (State::Init | State::Up, State::Init) => {
                self.set_state(State::Up, Diagnostic::None)
            }
            (State::Down, State::Up) => {
                self.set_state(State::Down, Diagnostic::NeighborSignaledDown)
            }
            _ => {}
        }
        // Every valid packet restarts the detection timer (§6.8.4).
        self.detect_deadline = self.detection_time().map(|d| now + d);
        Ok(())
    }

    /// The next deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.next_tx, self.detect_deadline]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs expired timers: detection (§6.8.4) and periodic transmission (§6.8.7).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.detect_deadline.is_some_and(|t| t <= now) {
            self.detect_deadline = None;
            if matches!(self.state, State::Init | State::Up) {
                self.set_state(State::Down, Diagnostic::DetectionTimeExpired);
            }
            // §6.8.1: the peer's discriminator is forgotten when the detection time expires, in any
            // state, so a restarted peer is found again by addresses.
            self.remote_discriminator = 0;
            self.remote_min_rx = Duration::from_micros(1);
            self.remote_detect_mult = 0;
        }
        if self.next_tx.is_some_and(|t| t <= now) {
            self.send(now);
        }
    }

    fn send(&mut self, now: Instant) {
        let packet = ControlPacket {
            diagnostic: self.diagnostic,
            state: self.state,
            poll: self.poll_pending && !self.send_final,
            final_: self.send_final,
            detect_mult: self.config.detect_mult,
            my_discriminator: self.config.discriminator,
            your_discriminator: self.remote_discriminator,
            desired_min_tx: micros(if self.state == State::Up {
                self.config.desired_min_tx
            } else {
                SLOW_TX.max(self.config.desired_min_tx)
            }),
            required_min_rx: micros(self.config.required_min_rx),
            required_min_echo_rx: 0,
        };
        self.send_final = false;
        self.transmit.push_back(packet.encode());
        // §6.8.7: no periodic packets while the peer's Required Min RX is zero (a Final still goes).
        if self.remote_min_rx.is_zero() {
            self.next_tx = None;
            return;
        }
        // §6.8.7: jitter between 75% and 100% of the interval (90% when Detect Mult is 1).
        self.jitter = self.jitter.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let floor = if self.config.detect_mult == 1 { 90 } else { 75 };
        let percent = floor + (self.jitter >> 16) % (100 - floor + 1);
        self.next_tx = Some(now + self.tx_interval() * percent / 100);
    }

    /// A control packet to send.
    pub fn poll_transmit(&mut self) -> Option<[u8; 24]> {
        self.transmit.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(now: Instant) -> (Session, Session) {
        let a = Session::new(
            Config {
                discriminator: 0x11,
                ..Config::default()
            },
            now,
        );
        let b = Session::new(
            Config {
                discriminator: 0x22,
                ..Config::default()
            },
            now,
        );
        (a, b)
    }

    /// Runs both sessions until `until`, delivering packets unless `cut` says the path is down.
    fn run(
        a: &mut Session,
        b: &mut Session,
        mut now: Instant,
        until: Instant,
        cut: bool,
    ) -> Instant {
        while now < until {
            a.handle_timeout(now);
            b.handle_timeout(now);
            while let Some(p) = a.poll_transmit() {
                if !cut {
                    b.handle_packet(now, &p).unwrap();
                }
            }
            while let Some(p) = b.poll_transmit() {
                if !cut {
                    a.handle_packet(now, &p).unwrap();
                }
            }
            let next = [a.poll_timeout(), b.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(until);
            now = next.max(now + Duration::from_millis(1)).min(until);
        }
        now
    }

    #[test]
    fn packets_round_trip_and_bad_ones_are_refused() {
        let p = ControlPacket {
            diagnostic: Diagnostic::DetectionTimeExpired,
            state: State::Up,
            poll: true,
            final_: false,
            detect_mult: 3,
            my_discriminator: 7,
            your_discriminator: 9,
            desired_min_tx: 300_000,
            required_min_rx: 300_000,
            required_min_echo_rx: 0,
        };
        let b = p.encode();
        assert_eq!(ControlPacket::decode(&b).unwrap(), p);
        let mut bad = b;
        bad[0] = 0x40;
        assert_eq!(ControlPacket::decode(&bad), Err(PacketError::BadVersion(2)));
        let mut bad = b;
        bad[2] = 0;
        assert!(ControlPacket::decode(&bad).is_err());
        assert_eq!(ControlPacket::decode(&b[..20]), Err(PacketError::Truncated));
        for len in 0..24 {
            let _ = ControlPacket::decode(&b[..len]);
        }
    }

    #[test]
    fn three_way_handshake_brings_both_up_and_loss_is_detected_within_a_second() {
        let t0 = Instant::now();
        let (mut a, mut b) = pair(t0);
        let now = run(&mut a, &mut b, t0, t0 + Duration::from_secs(3), false);
        assert_eq!((a.state(), b.state()), (State::Up, State::Up));
        assert_eq!(a.poll_event(), Some(Event::Up));
        assert_eq!(a.detection_time(), Some(Duration::from_millis(900)));
        // Cut the path: both sides declare it down within the 900 ms detection time.
        let cut_at = now;
        let mut t = now;
        while a.state() == State::Up {
            t = run(&mut a, &mut b, t, t + Duration::from_millis(10), true);
        }
        let took = t - cut_at;
        assert!(took <= Duration::from_millis(910), "{took:?}");
        assert_eq!(
            a.poll_event(),
            Some(Event::Down(Diagnostic::DetectionTimeExpired))
        );
        // The path returns: back up within a few slow-rate intervals.
        let t = run(&mut a, &mut b, t, t + Duration::from_secs(4), false);
        assert_eq!(a.state(), State::Up);
        let _ = t;
    }

    #[test]
    fn admin_down_is_signaled_to_the_peer() {
        let t0 = Instant::now();
        let (mut a, mut b) = pair(t0);
        let now = run(&mut a, &mut b, t0, t0 + Duration::from_secs(3), false);
        a.admin_down(now);
        run(&mut a, &mut b, now, now + Duration::from_millis(500), false);
        assert_eq!(b.state(), State::Down);
        assert_eq!(b.diagnostic(), Diagnostic::NeighborSignaledDown);
    }

    #[test]
    fn a_poll_sequence_changes_the_timers() {
        let t0 = Instant::now();
        let (mut a, mut b) = pair(t0);
        let now = run(&mut a, &mut b, t0, t0 + Duration::from_secs(3), false);
        a.set_timers(Duration::from_millis(100), Duration::from_millis(100), now);
        b.set_timers(Duration::from_millis(100), Duration::from_millis(100), now);
        run(&mut a, &mut b, now, now + Duration::from_secs(1), false);
        assert_eq!(a.detection_time(), Some(Duration::from_millis(300)));
        assert_eq!(a.state(), State::Up);
    }

    fn packet(state: State, my: u32, your: u32) -> ControlPacket {
        ControlPacket {
            diagnostic: Diagnostic::None,
            state,
            poll: false,
            final_: false,
            detect_mult: 3,
            my_discriminator: my,
            your_discriminator: your,
            desired_min_tx: 300_000,
            required_min_rx: 300_000,
            required_min_echo_rx: 0,
        }
    }

    #[test]
    fn a_down_session_is_not_brought_up_by_a_peer_still_up() {
        // §6.8.6: Down moves only on Down (to Init) or Init (to Up); a stale Up is ignored.
        let t0 = Instant::now();
        let (mut a, _) = pair(t0);
        a.handle_packet(t0, &packet(State::Up, 0x22, 0x11).encode())
            .unwrap();
        assert_eq!(a.state(), State::Down);
        assert_eq!(a.poll_event(), None);
        a.handle_packet(t0, &packet(State::Init, 0x22, 0x11).encode())
            .unwrap();
        assert_eq!(a.state(), State::Up);
    }

    #[test]
    fn detection_expiry_forgets_the_remote_discriminator_in_any_state() {
        let t0 = Instant::now();
        let (mut a, _) = pair(t0);
        a.handle_packet(t0, &packet(State::AdminDown, 0x22, 0).encode())
            .unwrap();
        assert_eq!(a.remote_discriminator(), 0x22);
        let t = t0 + Duration::from_secs(10);
        a.handle_timeout(t);
        assert_eq!(a.state(), State::Down);
        assert_eq!(a.remote_discriminator(), 0);
        while let Some(p) = a.poll_transmit() {
            assert_eq!(ControlPacket::decode(&p).unwrap().your_discriminator, 0);
        }
    }

    #[test]
    fn going_up_starts_a_poll_sequence_for_the_faster_rate() {
        let t0 = Instant::now();
        let (mut a, mut b) = pair(t0);
        let mut saw_poll = false;
        let mut now = t0;
        while now < t0 + Duration::from_secs(4) {
            a.handle_timeout(now);
            b.handle_timeout(now);
            while let Some(p) = a.poll_transmit() {
                saw_poll |= ControlPacket::decode(&p).unwrap().poll;
                b.handle_packet(now, &p).unwrap();
            }
            while let Some(p) = b.poll_transmit() {
                a.handle_packet(now, &p).unwrap();
            }
            now += Duration::from_millis(10);
        }
        assert!(saw_poll);
        assert_eq!(a.state(), State::Up);
        assert!(!a.poll_pending, "the peer's Final ends the sequence");
    }

    #[test]
    fn a_slower_rate_waits_for_the_final() {
        // §6.8.3: while Up, a larger Desired Min TX is used only after the Poll sequence ends.
        let t0 = Instant::now();
        let (mut a, mut b) = pair(t0);
        let now = run(&mut a, &mut b, t0, t0 + Duration::from_secs(3), false);
        a.set_timers(Duration::from_secs(2), Duration::from_millis(300), now);
        assert_eq!(a.transmit_interval(), Some(Duration::from_millis(300)));
        a.handle_timeout(now);
        let poll = a.poll_transmit().unwrap();
        assert!(ControlPacket::decode(&poll).unwrap().poll);
        b.handle_packet(now, &poll).unwrap();
        b.handle_timeout(now);
        let fin = b.poll_transmit().unwrap();
        assert!(ControlPacket::decode(&fin).unwrap().final_);
        a.handle_packet(now, &fin).unwrap();
        assert_eq!(a.transmit_interval(), Some(Duration::from_secs(2)));
        // The peer's detection time now covers our slower rate.
        assert_eq!(b.detection_time(), Some(Duration::from_secs(6)));
    }

    #[test]
    fn no_periodic_packets_while_the_peer_wants_none() {
        // §6.8.7: Required Min RX Interval zero means the peer wants no periodic packets.
        let t0 = Instant::now();
        let (mut a, _) = pair(t0);
        let mut p = packet(State::Down, 0x22, 0);
        p.required_min_rx = 0;
        a.handle_packet(t0, &p.encode()).unwrap();
        a.handle_timeout(t0);
        let _ = a.poll_transmit();
        assert_eq!(a.transmit_interval(), None);
        let mut t = t0;
        for _ in 0..50 {
            t += Duration::from_millis(100);
            a.handle_timeout(t);
        }
        assert!(a.poll_transmit().is_none());
        // Asking again restarts them.
        p.required_min_rx = 300_000;
        a.handle_packet(t, &p.encode()).unwrap();
        a.handle_timeout(t);
        assert!(a.poll_transmit().is_some());
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_keep_a_deadline() {
        // A cheap stand-in for the fuzz target (fuzz/) that runs with the unit tests: random and
        // bit-flipped packets into sessions in every state.
        let t0 = Instant::now();
        let mut seed = 0x1234_5678_u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut a, mut b) = pair(t0);
        let mut now = run(&mut a, &mut b, t0, t0 + Duration::from_secs(3), false);
        let valid = packet(State::Up, 0x22, 0x11).encode();
        for i in 0..20_000 {
            let mut buf = valid.to_vec();
            if i % 2 == 0 {
                let len = (rand() % 40) as usize;
                buf = (0..len).map(|_| rand() as u8).collect();
            } else {
                let bit = (rand() % 192) as usize;
                buf[bit / 8] ^= 1 << (bit % 8);
            }
            now += Duration::from_millis(rand() % 50);
            let _ = a.handle_packet(now, &buf);
            a.handle_timeout(now);
            assert!(
                a.poll_timeout().is_some(),
                "a session always has a next deadline"
            );
            while a.poll_transmit().is_some() {}
            while a.poll_event().is_some() {}
        }
    }

    #[test]
    fn every_diagnostic_code_round_trips() {
        // §4.1 codes 0–8; a peer's PathDown (5) must not read as "no diagnostic".
        for code in 0..=8u8 {
            let mut b = packet(State::Down, 0x22, 0).encode();
            b[0] = (1 << 5) | code;
            let p = ControlPacket::decode(&b).unwrap();
            assert_eq!(p.diagnostic as u8, code);
            assert_eq!(p.encode(), b);
        }
    }
}
