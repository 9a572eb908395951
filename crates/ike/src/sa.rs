//! One IKE SA and its Child SAs: the exchanges of RFC 7296 §1.2–1.4 as a state machine driven by
//! messages and time.
//!
//! Requests use a window of one (§2.3): a request is retransmitted with exponential back-off until its
//! response arrives or its deadline passes; a retransmitted request from the peer gets our cached
//! response again (§2.1).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rustls_pki_types::UnixTime;
use zeroize::Zeroizing;

use crate::cert::{self, CERT_ENCODING_X509_SIGNATURE, PeerCertificate};
use crate::config::{
    ChildConfig, ChildSaKeys, Config, ConnId, Event, Failure, LocalAuth, Mode, PeerAuth, Reason,
    RemoteAccess,
};
use crate::crypto::{self, DhGroup, DhPrivate, IkeKeys, IkeSuite, Prf, Secret, SkCipher};
use crate::message::*;
use crate::pool::{AddressPool, Lease};
use crate::proposal::{self, EspSuite, ProposalSpec, describe_proposal};

/// The IKE port and the NAT-T port (RFC 3948).
pub const IKE_PORT: u16 = 500;
/// NAT-T port.
pub const NATT_PORT: u16 = 4500;

/// First retransmission interval; doubled each time (§2.1).
const RETRANSMIT_BASE: Duration = Duration::from_millis(500);
/// Longest wait between retransmissions.
const RETRANSMIT_MAX: Duration = Duration::from_secs(8);
/// How long IKE_SA_INIT and IKE_AUTH may go unanswered.
const SETUP_TIMEOUT: Duration = Duration::from_secs(12);
/// First wait before re-creating a Child SA the peer refused to re-create; doubled up to
/// [`CHILD_RETRY_MAX`].
const CHILD_RETRY_BASE: Duration = Duration::from_secs(1);
const CHILD_RETRY_MAX: Duration = Duration::from_secs(30);
/// Refused CREATE_CHILD_SA attempts, with no Child SA left, after which the IKE SA is replaced by a
/// new one (a fresh IKE_SA_INIT and IKE_AUTH, which also re-creates the Child SA).
const CHILD_ATTEMPTS: u8 = 3;
/// A re-created Child SA that the peer deletes again within this time counts as flapping: the next
/// re-creation waits twice as long (a peer that cannot install it must not make us loop).
const CHILD_STABLE: Duration = Duration::from_secs(60);

/// Selectors as text, comma-separated.
fn ts_text(ts: &[TrafficSelector]) -> String {
    ts.iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Our configured selector pairs as `local === remote`, one per Child SA.
fn our_selectors(config: &Config) -> Vec<String> {
    config
        .children
        .iter()
        .map(|c| format!("{} === {}", ts_text(&c.local), ts_text(&c.remote)))
        .collect()
}

/// What the endpoint lends an SA while it handles a message.
#[derive(Default)]
pub struct Context<'a> {
    /// Wall-clock time for certificate validity; without it certificates are refused.
    pub unix_time: Option<UnixTime>,
    /// The address pool of the remote-access connection the SA belongs to.
    pub pool: Option<&'a mut AddressPool>,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Our port (500 or 4500); on 4500 the driver adds the non-ESP marker.
    pub local_port: u16,
    /// Destination.
    pub remote: SocketAddr,
    /// The IKE message.
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// We sent IKE_SA_INIT (initiator) or answered it (responder).
    InitDone,
    /// IKE_AUTH sent (initiator).
    AuthSent,
    /// Established.
    Established,
    /// Deleting or dead: drops when the delete completes.
    Closing,
}

enum Request {
    Auth,
    CreateChild {
        config_index: usize,
        rekey_of: Option<u32>,
        spi: u32,
        nonce: Vec<u8>,
        dh: Option<DhPrivate>,
    },
    RekeyIke {
        spi: u64,
        nonce: Vec<u8>,
        dh: Option<DhPrivate>,
        group: DhGroup,
    },
    Liveness,
    DeleteChildren(Vec<u32>),
    DeleteIke,
}

struct Pending {
    message_id: u32,
    exchange: u8,
    /// The request's datagrams (several when fragmented, RFC 7383).
    bytes: Vec<Vec<u8>>,
    request: Request,
    next_retransmit: Instant,
    interval: Duration,
    deadline: Instant,
}

/// A message being reassembled from fragments (RFC 7383 §2.6): message ID, response flag, type of the
/// first inner payload, and the decrypted fragments by number.
type Reassembly = (u32, bool, u8, Vec<Option<Vec<u8>>>);

/// Our and the peer's rekey of one Child SA: (new inbound SPI, lowest nonce of the exchange).
type RekeyPair = (Option<(u32, Vec<u8>)>, Option<(u32, Vec<u8>)>);

/// A Child SA as the IKE SA tracks it.
#[derive(Debug, Clone)]
pub struct ChildSa {
    /// Which configured child (selector pair) it serves.
    pub config_index: usize,
    /// SPI we receive on.
    pub inbound_spi: u32,
    /// SPI the peer receives on.
    pub outbound_spi: u32,
    /// Suite.
    pub suite: EspSuite,
    /// When to rekey.
    pub rekey_at: Instant,
    /// Being replaced or deleted; not rekeyed again.
    pub retiring: bool,
}

/// An IKE SA.
pub struct IkeSa {
    /// The connection it belongs to.
    pub conn: ConnId,
    /// True when we are the original initiator of this IKE SA (§2.2).
    pub initiator: bool,
    /// Initiator's SPI.
    pub spi_i: u64,
    /// Responder's SPI.
    pub spi_r: u64,
    /// Where the peer is.
    pub remote: SocketAddr,
    /// Our port for this SA.
    pub local_port: u16,
    state: State,
    suite: Option<IkeSuite>,
    keys: Option<IkeKeys>,
    ni: Vec<u8>,
    nr: Vec<u8>,
    dh: Option<DhPrivate>,
    init_request: Vec<u8>,
    init_response: Vec<u8>,
    next_message_id: u32,
    pending: Option<Pending>,
    queue: VecDeque<Request>,
    peer_next_message_id: u32,
    last_response: Option<(u32, Vec<Vec<u8>>)>,
    /// Both sides announced IKE fragmentation (RFC 7383 §2.3).
    fragmentation: bool,
    /// Largest IKE message we send before fragmenting.
    fragment_size: usize,
    /// Rekeys per old inbound SPI, (ours, the peer's): new inbound SPI and lowest nonce (§2.8.1).
    collisions: std::collections::HashMap<u32, RekeyPair>,
    /// Fragments of the message being reassembled: (message ID, response?, first payload, fragments).
    reassembly: Option<Reassembly>,
    /// Child SAs.
    pub children: Vec<ChildSa>,
    /// When the SA was established.
    pub established_at: Option<Instant>,
    last_heard: Instant,
    rekey_at: Option<Instant>,
    /// Set when the SA has ended; the endpoint drops it.
    pub dead: bool,
    /// When a successor (rekeyed) SA exists, its initiator SPI and responder SPI.
    pub successor: Option<Box<IkeSa>>,
    /// Events for the endpoint.
    pub events: VecDeque<Event>,
    /// Datagrams to send.
    pub transmits: VecDeque<Transmit>,
    /// Cookie the responder asked for (§2.6).
    cookie: Option<Vec<u8>>,
    /// Rekeyed IKE SAs report IkeSaUp with `rekey: true`.
    is_rekey: bool,
    /// This SA was replaced by a rekey: its end is not a connection failure.
    replaced: bool,
    /// Our KE public value, kept so a COOKIE retry repeats the same request.
    ke_public: Vec<u8>,
    /// COOKIE round trips so far.
    cookie_rounds: u8,
    /// We send INITIAL_CONTACT in IKE_AUTH (set by the endpoint when no other SA with the peer exists).
    pub send_initial_contact: bool,
    /// The peer sent INITIAL_CONTACT: older SAs with it are stale (§2.4).
    pub peer_initial_contact: bool,
    /// When this SA was created.
    pub created_at: Instant,
    /// Where the IKE_SA_INIT request came from (the endpoint's half-open key, with `spi_i`).
    pub init_from: SocketAddr,
    /// Hashes the peer announced in SIGNATURE_HASH_ALGORITHMS (RFC 7427 §4); empty if none.
    peer_hashes: Vec<u16>,
    /// The peer's validated certificate (certificate authentication).
    pub peer_cert: Option<PeerCertificate>,
    /// The identity the peer authenticated as (IDi or IDr).
    pub peer_identity: Option<Identity>,
    /// Remote-access gateway: the addresses leased to this client (§3.15).
    pub lease: Option<Lease>,
    /// Remote-access client: the addresses the gateway assigned to us.
    pub virtual_ips: Vec<IpAddr>,
    /// When to re-create Child SAs the peer deleted (None: nothing to re-create).
    child_retry_at: Option<Instant>,
    /// The next wait after a refused re-creation.
    child_retry_interval: Duration,
    /// Refused re-creations in a row.
    child_failures: u8,
    /// When a Child SA was last created after the IKE SA's first (re-creations, extra Child SAs).
    child_recreated_at: Option<Instant>,
}

fn nonce() -> Vec<u8> {
    let mut n = vec![0u8; 32];
    crypto::random(&mut n);
    n
}

fn ike_exchange_name(t: u8) -> &'static str {
    exchange::name(t)
}

/// Jittered rekey time: 90% of the lifetime minus up to 5% random, so two peers rarely rekey at once.
fn rekey_time(now: Instant, lifetime: Duration) -> Instant {
    let mut b = [0u8; 2];
    crypto::random(&mut b);
    let jitter = lifetime.mul_f64(0.05 * f64::from(u16::from_be_bytes(b)) / 65535.0);
    now + lifetime.mul_f64(0.9) - jitter
}

fn id_body(id: &Identity) -> Vec<u8> {
    let mut v = vec![id.kind, 0, 0, 0];
    v.extend_from_slice(&id.data);
    v
}

/// True when a connection signs or verifies with certificates, so RFC 7427 hashes are announced.
fn uses_certificates(config: &Config) -> bool {
    matches!(config.local_auth, LocalAuth::Certificate(_))
        || matches!(config.peer_auth, PeerAuth::Certificate(_))
}

/// SIGNATURE_HASH_ALGORITHMS (RFC 7427 §4) for IKE_SA_INIT.
fn signature_hashes_notify() -> Payload {
    Payload::Notify(Notify::new(
        notify::SIGNATURE_HASH_ALGORITHMS,
        cert::signature_hashes_notify_data(),
    ))
}

/// The CERT payloads of a message (§3.6), encoding 4 only, in order: end-entity first.
fn peer_chain(payloads: &[Payload]) -> Vec<Vec<u8>> {
    payloads
        .iter()
        .filter_map(|p| match p {
            Payload::Cert { encoding, data } if *encoding == CERT_ENCODING_X509_SIGNATURE => {
                Some(data.clone())
            }
            _ => None,
        })
        .collect()
}

/// The configuration payload of a message (§3.15), if present and well-formed.
fn find_cp(payloads: &[Payload]) -> Option<ConfigPayload> {
    payloads.iter().find_map(|p| match p {
        Payload::Cp(body) => ConfigPayload::parse(body).ok(),
        _ => None,
    })
}

/// INTERNAL_IP4_SUBNET values (address, netmask) for the IPv4 selectors that are whole prefixes other
/// than 0.0.0.0/0 (a full tunnel needs no subnet attribute).
fn split_routes_v4(routes: &[TrafficSelector]) -> Vec<Vec<u8>> {
    routes
        .iter()
        .filter_map(|ts| match (ts.start, ts.end) {
            (IpAddr::V4(s), IpAddr::V4(e)) => {
                let (s, e) = (u32::from(s), u32::from(e));
                let host_mask = s ^ e;
                let aligned = host_mask.wrapping_add(1) & host_mask == 0 && s & host_mask == 0;
                (aligned && host_mask != u32::MAX).then(|| {
                    let mut v = s.to_be_bytes().to_vec();
                    v.extend_from_slice(&(!host_mask).to_be_bytes());
                    v
                })
            }
            _ => None,
        })
        .collect()
}

/// Host selectors for assigned addresses (/32, /128).
fn host_selectors(addresses: &[IpAddr]) -> Vec<TrafficSelector> {
    addresses
        .iter()
        .map(|a| TrafficSelector::from_prefix(*a, if a.is_ipv4() { 32 } else { 128 }))
        .collect()
}

impl IkeSa {
    fn blank(conn: ConnId, initiator: bool, remote: SocketAddr, now: Instant) -> IkeSa {
        IkeSa {
            conn,
            initiator,
            spi_i: 0,
            spi_r: 0,
            remote,
            local_port: IKE_PORT,
            state: State::InitDone,
            suite: None,
            keys: None,
            ni: Vec::new(),
            nr: Vec::new(),
            dh: None,
            init_request: Vec::new(),
            init_response: Vec::new(),
            next_message_id: 0,
            pending: None,
            queue: VecDeque::new(),
            peer_next_message_id: 0,
            last_response: None,
            fragmentation: false,
            fragment_size: 1200,
            collisions: std::collections::HashMap::new(),
            reassembly: None,
            children: Vec::new(),
            established_at: None,
            last_heard: now,
            rekey_at: None,
            dead: false,
            successor: None,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            cookie: None,
            is_rekey: false,
            replaced: false,
            ke_public: Vec::new(),
            cookie_rounds: 0,
            send_initial_contact: false,
            peer_initial_contact: false,
            created_at: now,
            init_from: remote,
            peer_hashes: Vec::new(),
            peer_cert: None,
            peer_identity: None,
            lease: None,
            virtual_ips: Vec::new(),
            child_retry_at: None,
            child_retry_interval: CHILD_RETRY_BASE,
            child_failures: 0,
            child_recreated_at: None,
        }
    }

    /// Our SPI: the key the endpoint files this SA under.
    pub fn local_spi(&self) -> u64 {
        if self.initiator {
            self.spi_i
        } else {
            self.spi_r
        }
    }

    /// True while this SA is our IKE_SA_INIT request waiting for its (unprotected) response: the only
    /// state an IKE_SA_INIT response may act on (RFC 7296 §2.21).
    pub fn awaiting_init_response(&self) -> bool {
        self.initiator
            && self.state == State::InitDone
            && self.keys.is_none()
            && self
                .pending
                .as_ref()
                .is_some_and(|p| p.exchange == exchange::IKE_SA_INIT)
    }

    /// Reports a message that did not authenticate (or could not be matched to this SA) and was
    /// dropped without changing anything (RFC 7296 §2.21).
    fn refused(&mut self, exchange: &'static str, reason: &'static str, remote: SocketAddr) {
        self.events.push_back(Event::Refused {
            conn: Some(self.conn),
            exchange,
            reason,
            remote,
            established: self.is_established(),
            failure: None,
        });
    }

    /// True once IKE_AUTH completed.
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    fn log(&mut self, level: &'static str, exchange: &'static str, message: String) {
        self.events.push_back(Event::Log {
            conn: Some(self.conn),
            level,
            exchange,
            message,
        });
    }

    fn fail(&mut self, failure: Failure) {
        self.log(
            "error",
            failure.exchange,
            format!("{}: {}", failure.reason.as_str(), failure.message),
        );
        for c in self.children.drain(..) {
            self.events.push_back(Event::ChildSaDown {
                conn: self.conn,
                inbound_spi: c.inbound_spi,
                outbound_spi: c.outbound_spi,
            });
        }
        self.events.push_back(Event::IkeSaDown {
            conn: self.conn,
            failure,
        });
        self.state = State::Closing;
        self.dead = true;
        self.pending = None;
        self.queue.clear();
    }

    fn simple_failure(
        reason: Reason,
        exchange: &'static str,
        notify: Option<u16>,
        direction: &'static str,
        message: String,
    ) -> Failure {
        Failure {
            reason,
            exchange,
            notify: notify.map(notify::name),
            direction,
            message,
            our_proposals: Vec::new(),
            peer_proposals: Vec::new(),
            our_selectors: Vec::new(),
            peer_selectors: Vec::new(),
        }
    }

    // ---- initiator: IKE_SA_INIT ------------------------------------------------------------------

    /// Starts an IKE SA as initiator (§1.2).
    pub fn initiate(
        conn: ConnId,
        config: &Config,
        now: Instant,
        group: Option<DhGroup>,
        cookie: Option<Vec<u8>>,
    ) -> IkeSa {
        let remote = SocketAddr::new(config.remote_addr, config.remote_port);
        let mut sa = IkeSa::blank(conn, true, remote, now);
        sa.spi_i = crypto::random_spi64();
        sa.cookie = cookie;
        sa.fragment_size = config.fragment_size;
        let group = group
            .or_else(|| config.ike.first().and_then(|p| p.dh.first().copied()))
            .unwrap_or(DhGroup::Ecp256);
        sa.send_init(config, group, now);
        sa
    }

    fn send_init(&mut self, config: &Config, group: DhGroup, now: Instant) {
        // A retry with a COOKIE repeats the same request (§2.6): same SPI, nonce and KE.
        if self.dh.is_none() || self.ni.is_empty() {
            let (dh, public) = match DhPrivate::generate(group) {
                Ok(v) => v,
                Err(e) => {
                    self.fail(Self::simple_failure(
                        Reason::NegotiationFailure,
                        "IKE_SA_INIT",
                        None,
                        "sent",
                        format!("cannot generate {}: {e}", group.name()),
                    ));
                    return;
                }
            };
            self.ni = nonce();
            self.dh = Some(dh);
            self.ke_public = public;
        }
        let public = self.ke_public.clone();
        let proposals: Vec<Proposal> = config
            .ike
            .iter()
            .enumerate()
            .map(|(i, p)| p.to_proposal(i as u8 + 1, protocol::IKE, vec![]))
            .collect();
        let mut payloads = Vec::new();
        if let Some(c) = &self.cookie {
            payloads.push(Payload::Notify(Notify::new(notify::COOKIE, c.clone())));
        }
        payloads.push(Payload::Sa(proposals));
        payloads.push(Payload::Ke {
            group: group.id(),
            data: public,
        });
        payloads.push(Payload::Nonce(self.ni.clone()));
        payloads.extend(self.nat_detection(config));
        payloads.push(Payload::Notify(Notify::new(
            notify::IKEV2_FRAGMENTATION_SUPPORTED,
            vec![],
        )));
        if uses_certificates(config) {
            payloads.push(signature_hashes_notify());
        }
        let header = Header {
            spi_i: self.spi_i,
            spi_r: 0,
            exchange: exchange::IKE_SA_INIT,
            flags: flags::INITIATOR,
            message_id: 0,
            ..Default::default()
        };
        let bytes = Message { header, payloads }.emit();
        self.init_request = bytes.clone();
        self.log(
            "info",
            "IKE_SA_INIT",
            format!(
                "sending request to {} with KE {}",
                self.remote,
                group.name()
            ),
        );
        self.next_message_id = 1;
        self.pending = Some(Pending {
            message_id: 0,
            exchange: exchange::IKE_SA_INIT,
            bytes: vec![bytes.clone()],
            request: Request::Auth,
            next_retransmit: now + RETRANSMIT_BASE,
            interval: RETRANSMIT_BASE,
            deadline: now + SETUP_TIMEOUT,
        });
        self.transmits.push_back(Transmit {
            local_port: IKE_PORT,
            remote: self.remote,
            data: bytes,
        });
    }

    /// NAT detection notifies (§2.23). Our source hash is deliberately not our address: vgw always asks
    /// for UDP encapsulation, which RFC 7296 §2.23 permits and which kernel-less ESP peers require.
    fn nat_detection(&self, config: &Config) -> Vec<Payload> {
        let mut fake = vec![0u8; 20];
        crypto::random(&mut fake);
        let dst = crypto::nat_detection_hash(self.spi_i, self.spi_r, self.remote);
        let _ = config;
        vec![
            Payload::Notify(Notify::new(notify::NAT_DETECTION_SOURCE_IP, fake)),
            Payload::Notify(Notify::new(notify::NAT_DETECTION_DESTINATION_IP, dst)),
        ]
    }

    /// Handles the IKE_SA_INIT response. Returns `Some(restart)` when the exchange must start over
    /// (cookie or another DH group).
    pub fn handle_init_response(
        &mut self,
        config: &Config,
        msg: &Message,
        raw: &[u8],
        now: Instant,
    ) -> Option<(Option<DhGroup>, Option<Vec<u8>>)> {
        self.pending = None;
        if let Some(c) = msg.notify(notify::COOKIE) {
            self.cookie_rounds += 1;
            if self.cookie_rounds > 3 {
                self.fail(Self::simple_failure(
                    Reason::NegotiationFailure,
                    "IKE_SA_INIT",
                    Some(notify::COOKIE),
                    "received",
                    "the responder keeps asking for a new COOKIE".into(),
                ));
                return None;
            }
            self.log(
                "info",
                "IKE_SA_INIT",
                "responder asked for a COOKIE; retrying with it".into(),
            );
            self.cookie = Some(c.data.clone());
            let group = self
                .dh
                .as_ref()
                .map(DhPrivate::group)
                .unwrap_or(DhGroup::Ecp256);
            self.send_init(config, group, now);
            return None;
        }
        if let Some(n) = msg.notify(notify::INVALID_KE_PAYLOAD) {
            let wanted = n
                .data
                .get(..2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .and_then(DhGroup::from_id);
            let offered = config
                .ike
                .iter()
                .any(|p| wanted.is_some_and(|w| p.dh.contains(&w)));
            if let (Some(w), true) = (wanted, offered) {
                self.log(
                    "info",
                    "IKE_SA_INIT",
                    format!("responder wants KE group {}; retrying", w.name()),
                );
                self.dead = true;
                return Some((Some(w), self.cookie.clone()));
            }
            self.fail(Self::proposal_failure(
                config,
                "IKE_SA_INIT",
                notify::INVALID_KE_PAYLOAD,
                "received",
                &[],
            ));
            return None;
        }
        if let Some(n) = find_error_notify(&msg.payloads) {
            let failure = if n == notify::NO_PROPOSAL_CHOSEN {
                Self::proposal_failure(config, "IKE_SA_INIT", n, "received", &[])
            } else {
                Self::simple_failure(
                    Reason::NegotiationFailure,
                    "IKE_SA_INIT",
                    Some(n),
                    "received",
                    format!("peer answered {}", notify::name(n)),
                )
            };
            self.fail(failure);
            return None;
        }
        let sa = find_sa(&msg.payloads).cloned();
        let ke = find_ke(&msg.payloads).map(|(g, d)| (g, d.clone()));
        let nr = find_nonce(&msg.payloads).cloned();
        let (Some(sa), Some((group, ke)), Some(nr)) = (sa, ke, nr) else {
            self.fail(Self::simple_failure(
                Reason::ProtocolError,
                "IKE_SA_INIT",
                None,
                "received",
                "response lacks SA, KE or Nonce".into(),
            ));
            return None;
        };
        let Some((suite, _)) = proposal::choose_ike(&sa, &config.ike).filter(|_| sa.len() == 1)
        else {
            let peer: Vec<String> = sa.iter().map(describe_proposal).collect();
            self.fail(Self::proposal_failure(
                config,
                "IKE_SA_INIT",
                notify::NO_PROPOSAL_CHOSEN,
                "sent",
                &peer,
            ));
            return None;
        };
        let Some(dh) = self
            .dh
            .take()
            .filter(|d| d.group().id() == group && suite.dh.id() == group)
        else {
            self.fail(Self::simple_failure(
                Reason::ProtocolError,
                "IKE_SA_INIT",
                None,
                "received",
                "KE group differs from the chosen proposal".into(),
            ));
            return None;
        };
        let shared = match dh.agree(&ke) {
            Ok(s) => s,
            Err(e) => {
                self.fail(Self::simple_failure(
                    Reason::ProtocolError,
                    "IKE_SA_INIT",
                    None,
                    "received",
                    format!("peer KE: {e}"),
                ));
                return None;
            }
        };
        self.spi_r = msg.header.spi_r;
        self.nr = nr;
        self.keys = Some(IkeKeys::derive(
            &suite, &self.ni, &self.nr, &shared, self.spi_i, self.spi_r,
        ));
        self.suite = Some(suite);
        self.init_response = raw.to_vec();
        // RFC 7383 §2.3: fragmentation is on when both sides announced it.
        self.fragmentation = msg.notify(notify::IKEV2_FRAGMENTATION_SUPPORTED).is_some();
        self.peer_hashes = msg
            .notify(notify::SIGNATURE_HASH_ALGORITHMS)
            .map(|n| cert::parse_signature_hashes(&n.data))
            .unwrap_or_default();
        self.log(
            "info",
            "IKE_SA_INIT",
            format!("established keys with {suite}; switching to UDP {NATT_PORT}"),
        );
        // We always request encapsulation, so IKE moves to 4500 now (RFC 3947/7296 §2.23).
        self.local_port = NATT_PORT;
        self.remote.set_port(NATT_PORT);
        self.send_auth(config, now);
        None
    }

    fn proposal_failure(
        config: &Config,
        exchange_name: &'static str,
        n: u16,
        direction: &'static str,
        peer: &[String],
    ) -> Failure {
        let ours: Vec<String> = config.ike.iter().map(ProposalSpec::describe).collect();
        Failure {
            reason: Reason::NegotiationFailure,
            exchange: exchange_name,
            notify: Some(notify::name(n)),
            direction,
            message: if peer.is_empty() {
                format!(
                    "{exchange_name} failed: {}; we offered {}",
                    notify::name(n),
                    ours.join(", ")
                )
            } else {
                format!(
                    "{exchange_name} failed: {}; peer offered {}, we accept {}",
                    notify::name(n),
                    peer.join(", "),
                    ours.join(", ")
                )
            },
            our_proposals: ours,
            peer_proposals: peer.to_vec(),
            our_selectors: Vec::new(),
            peer_selectors: Vec::new(),
        }
    }

    fn esp_failure(
        config: &Config,
        exchange_name: &'static str,
        n: u16,
        direction: &'static str,
        peer: &[String],
    ) -> Failure {
        if n == notify::TS_UNACCEPTABLE {
            // RFC 7296 §2.9: the peer's answer carries no selectors, so ours are what there is to
            // compare with its configuration.
            let ours = our_selectors(config);
            return Failure {
                reason: Reason::TsUnacceptable,
                exchange: exchange_name,
                notify: Some(notify::name(n)),
                direction,
                message: format!(
                    "{exchange_name}: the peer refused our traffic selectors (TS_UNACCEPTABLE): we \
                     proposed TSi === TSr {} (our side === the peer's side); the peer's local \
                     subnets must cover our remote side and its remote subnets our local side",
                    ours.join("; ")
                ),
                our_proposals: Vec::new(),
                peer_proposals: Vec::new(),
                our_selectors: ours,
                peer_selectors: Vec::new(),
            };
        }
        let ours: Vec<String> = config.esp.iter().map(ProposalSpec::describe).collect();
        let reason = Reason::NegotiationFailure;
        Failure {
            reason,
            exchange: exchange_name,
            notify: Some(notify::name(n)),
            direction,
            message: if peer.is_empty() {
                format!(
                    "{exchange_name}: {} for the Child SA; we offered ESP {}",
                    notify::name(n),
                    ours.join(", ")
                )
            } else {
                format!(
                    "{exchange_name}: {} for the Child SA; peer offered ESP {}, we accept {}",
                    notify::name(n),
                    peer.join(", "),
                    ours.join(", ")
                )
            },
            our_proposals: ours,
            peer_proposals: peer.to_vec(),
            our_selectors: Vec::new(),
            peer_selectors: Vec::new(),
        }
    }

    // ---- protected messages ----------------------------------------------------------------------

    fn ciphers(&self) -> Option<(SkCipher, SkCipher)> {
        let (suite, keys) = (self.suite.as_ref()?, self.keys.as_ref()?);
        let i = SkCipher::new(suite, &keys.ei, &keys.ai);
        let r = SkCipher::new(suite, &keys.er, &keys.ar);
        // Outbound uses the initiator keys when we are the original initiator (§2.14).
        Some(if self.initiator { (i, r) } else { (r, i) })
    }

    /// Builds a protected message (§3.14): one datagram, or RFC 7383 fragments (each its own Encrypted
    /// Fragment payload) when both sides support fragmentation and the message exceeds the fragment size.
    fn protect(
        &self,
        exchange: u8,
        response: bool,
        message_id: u32,
        payloads: &[Payload],
    ) -> Option<Vec<Vec<u8>>> {
        let (out, _) = self.ciphers()?;
        let mut plain = Vec::new();
        let first = emit_payloads(&mut plain, payloads);
        let mut flags_value = if self.initiator { flags::INITIATOR } else { 0 };
        if response {
            flags_value |= flags::RESPONSE;
        }
        let header = |next: u8, length: usize| Header {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            next_payload: next,
            exchange,
            flags: flags_value,
            message_id,
            length: length as u32,
        };
        let sk_len = 4 + out.overhead(plain.len()) + plain.len();
        if !self.fragmentation || HEADER_LEN + sk_len <= self.fragment_size {
            let mut msg = Vec::with_capacity(HEADER_LEN + sk_len);
            header(payload_type::SK, HEADER_LEN + sk_len).emit(&mut msg);
            msg.push(first);
            msg.push(0);
            msg.extend_from_slice(&(sk_len as u16).to_be_bytes());
            return out.seal(msg, &plain).ok().map(|m| vec![m]);
        }
        // RFC 7383 §2.5: split the plaintext; every fragment is protected on its own.
        let chunk = self
            .fragment_size
            .saturating_sub(HEADER_LEN + 8 + 64)
            .max(64);
        let total = plain.len().div_ceil(chunk);
        let mut datagrams = Vec::with_capacity(total);
        for (i, part) in plain.chunks(chunk).enumerate() {
            let skf_len = 8 + out.overhead(part.len()) + part.len();
            let mut msg = Vec::with_capacity(HEADER_LEN + skf_len);
            header(payload_type::SKF, HEADER_LEN + skf_len).emit(&mut msg);
            msg.push(if i == 0 { first } else { payload_type::NONE });
            msg.push(0);
            msg.extend_from_slice(&(skf_len as u16).to_be_bytes());
            msg.extend_from_slice(&(i as u16 + 1).to_be_bytes());
            msg.extend_from_slice(&(total as u16).to_be_bytes());
            datagrams.push(out.seal(msg, part).ok()?);
        }
        Some(datagrams)
    }

    /// Decrypts the SK payload of `raw` (§3.14), or collects an RFC 7383 fragment; returns the inner
    /// payloads once the message is whole (`Ok(None)` while fragments are missing).
    fn unprotect(
        &mut self,
        msg: &Message,
        raw: &[u8],
    ) -> Result<Option<Vec<Payload>>, &'static str> {
        let (_, inbound) = self.ciphers().ok_or("no keys yet")?;
        let total_len = msg.header.length as usize;
        match msg.payloads.last() {
            Some(Payload::Sk { first, body }) => {
                let sk_start = total_len
                    .checked_sub(body.len() + 4)
                    .ok_or("bad SK length")?;
                let plain = inbound
                    .open(&raw[..sk_start + 4], body)
                    .map_err(|_| "integrity check failed")?;
                parse_payloads(*first, &plain)
                    .map(Some)
                    .map_err(|_| "malformed encrypted payloads")
            }
            Some(Payload::Skf {
                first,
                number,
                total,
                body,
            }) => {
                if !self.fragmentation {
                    return Err("fragment received, but fragmentation was not negotiated");
                }
                if *total > 64 {
                    return Err("too many fragments");
                }
                let skf_start = total_len
                    .checked_sub(body.len() + 8)
                    .ok_or("bad SKF length")?;
                let plain = inbound
                    .open(&raw[..skf_start + 8], body)
                    .map_err(|_| "fragment integrity check failed")?;
                let key = (msg.header.message_id, msg.header.is_response());
                let fresh = !matches!(&self.reassembly, Some((id, resp, _, parts)) if (*id, *resp) == key && parts.len() == usize::from(*total));
                if fresh {
                    self.reassembly = Some((key.0, key.1, 0, vec![None; usize::from(*total)]));
                }
                let Some((_, _, first_type, parts)) = self.reassembly.as_mut() else {
                    return Ok(None);
                };
                if *number == 1 {
                    *first_type = *first;
                }
                parts[usize::from(*number) - 1] = Some(plain);
                if parts.iter().any(Option::is_none) {
                    return Ok(None);
                }
                let Some((_, _, first_type, parts)) = self.reassembly.take() else {
                    return Ok(None);
                };
                let whole: Vec<u8> = parts.into_iter().flatten().flatten().collect();
                parse_payloads(first_type, &whole)
                    .map(Some)
                    .map_err(|_| "malformed reassembled payloads")
            }
            _ => Err("no encrypted payload"),
        }
    }

    fn send_request(
        &mut self,
        exchange: u8,
        payloads: Vec<Payload>,
        request: Request,
        now: Instant,
        deadline: Duration,
    ) {
        let message_id = self.next_message_id;
        let Some(bytes) = self.protect(exchange, false, message_id, &payloads) else {
            return;
        };
        self.next_message_id += 1;
        for data in &bytes {
            self.transmits.push_back(Transmit {
                local_port: self.local_port,
                remote: self.remote,
                data: data.clone(),
            });
        }
        self.pending = Some(Pending {
            message_id,
            exchange,
            bytes,
            request,
            next_retransmit: now + RETRANSMIT_BASE,
            interval: RETRANSMIT_BASE,
            deadline: now + deadline,
        });
    }

    fn send_response(&mut self, exchange: u8, message_id: u32, payloads: Vec<Payload>) {
        if let Some(bytes) = self.protect(exchange, true, message_id, &payloads) {
            for data in &bytes {
                self.transmits.push_back(Transmit {
                    local_port: self.local_port,
                    remote: self.remote,
                    data: data.clone(),
                });
            }
            self.last_response = Some((message_id, bytes));
            self.peer_next_message_id = message_id + 1;
        }
    }

    // ---- IKE_AUTH ----------------------------------------------------------------------------------

    fn auth_value(&self, config: &Config, ours: bool, id: &Identity) -> Option<Secret> {
        let prf = self.suite?.prf;
        let keys = self.keys.as_ref()?;
        // The signer's own first message, the other side's nonce, prf(SK_p, ID) of the signer (§2.15).
        let signer_is_initiator = ours == self.initiator;
        let (first, nonce, sk_p) = if signer_is_initiator {
            (&self.init_request, &self.nr, &keys.pi)
        } else {
            (&self.init_response, &self.ni, &keys.pr)
        };
        Some(crypto::psk_auth(
            prf,
            &config.psk,
            first,
            nonce,
            sk_p,
            &id_body(id),
        ))
    }

    /// InitiatorSignedOctets or ResponderSignedOctets (§2.15) of the signer (`ours`: we sign).
    fn signed_octets(&self, ours: bool, id: &Identity) -> Option<Vec<u8>> {
        let prf = self.suite?.prf;
        let keys = self.keys.as_ref()?;
        let signer_is_initiator = ours == self.initiator;
        let (first, nonce, sk_p) = if signer_is_initiator {
            (&self.init_request, &self.nr, &keys.pi)
        } else {
            (&self.init_response, &self.ni, &keys.pr)
        };
        Some(crypto::signed_octets(prf, first, nonce, sk_p, &id_body(id)))
    }

    /// Our CERT payloads (§3.6): end-entity first, then intermediates; none with a PSK.
    fn our_certs(config: &Config) -> Vec<Payload> {
        match &config.local_auth {
            LocalAuth::Certificate(c) => c
                .chain()
                .iter()
                .map(|der| Payload::Cert {
                    encoding: CERT_ENCODING_X509_SIGNATURE,
                    data: der.clone(),
                })
                .collect(),
            LocalAuth::Psk => Vec::new(),
        }
    }

    /// CERTREQ (§3.7) for the roots we trust, when the peer authenticates by certificate.
    fn our_certreq(config: &Config) -> Option<Payload> {
        match &config.peer_auth {
            PeerAuth::Certificate(t) => Some(Payload::CertReq {
                encoding: CERT_ENCODING_X509_SIGNATURE,
                data: t.certreq_data().to_vec(),
            }),
            PeerAuth::Psk => None,
        }
    }

    /// Our AUTH payload (§3.8): the PSK MAC (method 2) or a signature with our certificate's key.
    fn our_auth(&self, config: &Config) -> Result<Payload, String> {
        match &config.local_auth {
            LocalAuth::Psk => self
                .auth_value(config, true, &config.local_id)
                .map(|v| Payload::Auth {
                    method: cert::auth_method::SHARED_KEY,
                    data: v.to_vec(),
                })
                .ok_or_else(|| "no IKE keys".to_string()),
            LocalAuth::Certificate(c) => {
                let octets = self
                    .signed_octets(true, &config.local_id)
                    .ok_or("no IKE keys")?;
                let (method, data) = c
                    .sign(&octets, &self.peer_hashes)
                    .map_err(|e| e.to_string())?;
                Ok(Payload::Auth { method, data })
            }
        }
    }

    /// Checks the peer's AUTH (§2.15) for identity `id`: the PSK MAC, or certificate chain, revocation,
    /// identity binding and signature. On success remembers the peer's certificate and identity and
    /// returns how it authenticated.
    fn verify_peer(
        &mut self,
        config: &Config,
        id: &Identity,
        method: u8,
        auth: &[u8],
        payloads: &[Payload],
        ctx: &Context<'_>,
    ) -> Result<String, (Reason, String)> {
        match &config.peer_auth {
            PeerAuth::Psk => {
                let expected = self.auth_value(config, false, id);
                let ok = method == cert::auth_method::SHARED_KEY
                    && expected.is_some_and(|e| {
                        aws_lc_rs::constant_time::verify_slices_are_equal(&e, auth).is_ok()
                    });
                if !ok {
                    return Err((
                        Reason::AuthorizationError,
                        format!(
                            "peer {id} failed PSK authentication (method {method}); check that both sides have the same shared key"
                        ),
                    ));
                }
                self.peer_identity = Some(id.clone());
                Ok("PSK".into())
            }
            PeerAuth::Certificate(trust) => {
                let Some(time) = ctx.unix_time else {
                    return Err((
                        Reason::CertificateInvalid,
                        "cannot check certificates: the engine has no wall-clock time".into(),
                    ));
                };
                let chain = peer_chain(payloads);
                let peer = trust
                    .verify(&chain, time)
                    .map_err(|f| (f.reason, f.message))?;
                if !peer.matches_identity(id) {
                    return Err((
                        Reason::CertificateIdentityMismatch,
                        format!(
                            "peer identity {id} does not match certificate {} (neither its subject nor a subjectAltName)",
                            peer.describe()
                        ),
                    ));
                }
                let octets = self
                    .signed_octets(false, id)
                    .ok_or((Reason::ProtocolError, "no IKE keys".to_string()))?;
                let how = peer.verify_auth(method, auth, &octets).map_err(|e| {
                    (
                        Reason::AuthorizationError,
                        format!("bad signature from certificate {}: {e}", peer.describe()),
                    )
                })?;
                let text = format!("certificate {} with {how}", peer.describe());
                self.peer_cert = Some(peer);
                self.peer_identity = Some(id.clone());
                Ok(text)
            }
        }
    }

    fn send_auth(&mut self, config: &Config, now: Instant) {
        let Some(child) = config.children.first() else {
            self.fail(Self::simple_failure(
                Reason::ProtocolError,
                "IKE_AUTH",
                None,
                "sent",
                "no traffic selectors configured".into(),
            ));
            return;
        };
        let auth = match self.our_auth(config) {
            Ok(a) => a,
            Err(e) => {
                self.fail(Self::simple_failure(
                    Reason::AuthorizationError,
                    "IKE_AUTH",
                    None,
                    "sent",
                    format!("cannot authenticate: {e}"),
                ));
                return;
            }
        };
        let spi = crypto::random_spi32();
        let proposals: Vec<Proposal> = config
            .esp
            .iter()
            .enumerate()
            .map(|(i, p)| {
                ProposalSpec {
                    dh: vec![],
                    ..p.clone()
                }
                .to_proposal(
                    i as u8 + 1,
                    protocol::ESP,
                    spi.to_be_bytes().to_vec(),
                )
            })
            .collect();
        let mut payloads = vec![Payload::IdI(config.local_id.clone())];
        payloads.extend(Self::our_certs(config));
        // §2.4: only when we hold no other IKE SA with this peer.
        if self.send_initial_contact {
            payloads.push(Payload::Notify(Notify::new(
                notify::INITIAL_CONTACT,
                vec![],
            )));
        }
        payloads.extend(Self::our_certreq(config));
        payloads.extend([Payload::IdR(config.remote_id.clone()), auth]);
        // §3.15.1: a remote-access client asks for its addresses and DNS servers.
        if let RemoteAccess::Client(c) = &config.remote_access {
            let mut attributes = Vec::new();
            if c.request_v4 {
                attributes.push((cfg::INTERNAL_IP4_ADDRESS, vec![]));
                attributes.push((cfg::INTERNAL_IP4_DNS, vec![]));
            }
            if c.request_v6 {
                attributes.push((cfg::INTERNAL_IP6_ADDRESS, vec![]));
                attributes.push((cfg::INTERNAL_IP6_DNS, vec![]));
            }
            payloads.push(Payload::Cp(
                ConfigPayload {
                    kind: cfg::REQUEST,
                    attributes,
                }
                .emit(),
            ));
        }
        payloads.extend([
            Payload::Sa(proposals),
            Payload::TsI(child.local.clone()),
            Payload::TsR(child.remote.clone()),
        ]);
        self.state = State::AuthSent;
        let how = match config.local_auth {
            LocalAuth::Psk => "PSK".to_string(),
            LocalAuth::Certificate(ref c) => format!("certificate {}", c.subject()),
        };
        self.log(
            "info",
            "IKE_AUTH",
            format!("sending request as {} ({how})", config.local_id),
        );
        self.send_request(
            exchange::IKE_AUTH,
            payloads,
            Request::CreateChild {
                config_index: 0,
                rekey_of: None,
                spi,
                nonce: vec![],
                dh: None,
            },
            now,
            SETUP_TIMEOUT,
        );
    }

    /// Responder side of IKE_SA_INIT (§1.2): returns the response or None if refused (with a notify sent).
    pub fn respond_init(
        conn: ConnId,
        config: &Config,
        msg: &Message,
        raw: &[u8],
        remote: SocketAddr,
        now: Instant,
    ) -> Result<IkeSa, (u16, Transmit)> {
        let refuse = |n: u16, data: Vec<u8>| {
            let header = Header {
                spi_i: msg.header.spi_i,
                spi_r: 0,
                exchange: exchange::IKE_SA_INIT,
                flags: flags::RESPONSE,
                message_id: 0,
                ..Default::default()
            };
            (
                n,
                Transmit {
                    local_port: IKE_PORT,
                    remote,
                    data: Message {
                        header,
                        payloads: vec![Payload::Notify(Notify::new(n, data))],
                    }
                    .emit(),
                },
            )
        };
        let sa = find_sa(&msg.payloads);
        let ke = find_ke(&msg.payloads);
        let ni = find_nonce(&msg.payloads);
        let (Some(sa), Some((group, ke)), Some(ni)) = (sa, ke, ni) else {
            return Err(refuse(notify::INVALID_SYNTAX, vec![]));
        };
        let Some((suite, number)) = proposal::choose_ike(sa, &config.ike) else {
            return Err(refuse(notify::NO_PROPOSAL_CHOSEN, vec![]));
        };
        if suite.dh.id() != group {
            return Err(refuse(
                notify::INVALID_KE_PAYLOAD,
                suite.dh.id().to_be_bytes().to_vec(),
            ));
        }
        let mut ike = IkeSa::blank(conn, false, remote, now);
        ike.spi_i = msg.header.spi_i;
        ike.spi_r = crypto::random_spi64();
        ike.fragment_size = config.fragment_size;
        ike.fragmentation = msg.notify(notify::IKEV2_FRAGMENTATION_SUPPORTED).is_some();
        ike.peer_hashes = msg
            .notify(notify::SIGNATURE_HASH_ALGORITHMS)
            .map(|n| cert::parse_signature_hashes(&n.data))
            .unwrap_or_default();
        ike.ni = ni.clone();
        ike.nr = nonce();
        let (dh, public) = DhPrivate::generate(suite.dh)
            .map_err(|_| refuse(notify::NO_PROPOSAL_CHOSEN, vec![]))?;
        let shared = dh
            .agree(ke)
            .map_err(|_| refuse(notify::INVALID_SYNTAX, vec![]))?;
        ike.keys = Some(IkeKeys::derive(
            &suite, &ike.ni, &ike.nr, &shared, ike.spi_i, ike.spi_r,
        ));
        ike.suite = Some(suite);
        ike.init_request = raw.to_vec();
        let chosen = ProposalSpec {
            encryption: vec![suite.encryption],
            integrity: suite.integrity.into_iter().collect(),
            prf: vec![suite.prf],
            dh: vec![suite.dh],
        };
        let mut payloads = vec![
            Payload::Sa(vec![chosen.to_proposal(number, protocol::IKE, vec![])]),
            Payload::Ke {
                group: suite.dh.id(),
                data: public,
            },
            Payload::Nonce(ike.nr.clone()),
        ];
        payloads.extend(ike.nat_detection(config));
        if ike.fragmentation {
            payloads.push(Payload::Notify(Notify::new(
                notify::IKEV2_FRAGMENTATION_SUPPORTED,
                vec![],
            )));
        }
        if uses_certificates(config) {
            payloads.push(signature_hashes_notify());
        }
        // §3.7: ask for the initiator's certificate in the IKE_SA_INIT response.
        payloads.extend(Self::our_certreq(config));
        let header = Header {
            spi_i: ike.spi_i,
            spi_r: ike.spi_r,
            exchange: exchange::IKE_SA_INIT,
            flags: flags::RESPONSE,
            message_id: 0,
            ..Default::default()
        };
        let bytes = Message { header, payloads }.emit();
        ike.init_response = bytes.clone();
        ike.peer_next_message_id = 1;
        ike.next_message_id = 0;
        ike.last_response = Some((0, vec![bytes.clone()]));
        ike.log(
            "info",
            "IKE_SA_INIT",
            format!("answered {remote} with {suite}"),
        );
        ike.transmits.push_back(Transmit {
            local_port: IKE_PORT,
            remote,
            data: bytes,
        });
        Ok(ike)
    }

    fn narrow(ours: &[TrafficSelector], theirs: &[TrafficSelector]) -> Vec<TrafficSelector> {
        let mut out = Vec::new();
        for t in theirs {
            for o in ours {
                if let Some(x) = t.intersect(o)
                    && !out.contains(&x)
                {
                    out.push(x);
                }
            }
        }
        out
    }

    /// Picks the configured child whose selectors overlap the peer's proposal best (§2.9).
    fn match_child(
        config: &Config,
        tsi: &[TrafficSelector],
        tsr: &[TrafficSelector],
        peer_is_initiator: bool,
        peer_override: Option<&[TrafficSelector]>,
    ) -> Option<(usize, Vec<TrafficSelector>, Vec<TrafficSelector>)> {
        // From our view: the peer's TSi is the peer's side when the peer initiates.
        let (peer_side, our_side) = if peer_is_initiator {
            (tsi, tsr)
        } else {
            (tsr, tsi)
        };
        config
            .children
            .iter()
            .enumerate()
            .find_map(|(i, c): (usize, &ChildConfig)| {
                let remote = Self::narrow(peer_override.unwrap_or(&c.remote), peer_side);
                let local = Self::narrow(&c.local, our_side);
                (!remote.is_empty() && !local.is_empty()).then_some((i, local, remote))
            })
    }

    fn child_keys(
        &self,
        suite: &EspSuite,
        shared: Option<&[u8]>,
        ni: &[u8],
        nr: &[u8],
        we_initiated: bool,
    ) -> Option<(Secret, Secret)> {
        let prf: Prf = self.suite?.prf;
        let keys = self.keys.as_ref()?;
        let half = suite.encryption.key_material_len() + suite.integrity.map_or(0, |i| i.key_len());
        let km = crypto::child_keymat(prf, &keys.d, shared, ni, nr, 2 * half);
        let i_to_r = Zeroizing::new(km[..half].to_vec());
        let r_to_i = Zeroizing::new(km[half..].to_vec());
        Some(if we_initiated {
            (i_to_r, r_to_i)
        } else {
            (r_to_i, i_to_r)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn install_child(
        &mut self,
        config: &Config,
        config_index: usize,
        inbound_spi: u32,
        outbound_spi: u32,
        suite: EspSuite,
        keys: (Secret, Secret),
        local_ts: Vec<TrafficSelector>,
        remote_ts: Vec<TrafficSelector>,
        replaces: Option<(u32, u32)>,
        now: Instant,
    ) {
        let (outbound_key, inbound_key) = keys;
        if replaces.is_none() {
            self.child_failures = 0;
            if self.state == State::Established {
                self.child_recreated_at = Some(now);
            }
        }
        self.children.push(ChildSa {
            config_index,
            inbound_spi,
            outbound_spi,
            suite,
            rekey_at: rekey_time(now, config.child_lifetime),
            retiring: false,
        });
        self.log(
            "info",
            "CHILD_SA",
            format!(
                "Child SA {inbound_spi:08x}_i {outbound_spi:08x}_o with {suite}: {} === {}",
                local_ts
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                remote_ts
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        );
        self.events.push_back(Event::ChildSaUp {
            conn: self.conn,
            keys: ChildSaKeys {
                inbound_spi,
                outbound_spi,
                suite,
                outbound_key,
                inbound_key,
                local_ts,
                remote_ts,
                remote: self.remote,
                lifetime_bytes: config.child_lifetime_bytes,
            },
            replaces,
        });
    }

    fn establish(&mut self, config: &Config, now: Instant) {
        self.state = State::Established;
        self.established_at = Some(now);
        self.rekey_at = Some(rekey_time(now, config.ike_lifetime));
        let suite = self.suite.map(|s| s.to_string()).unwrap_or_default();
        self.events.push_back(Event::IkeSaUp {
            conn: self.conn,
            suite,
            remote: self.remote,
            rekey: self.is_rekey,
        });
    }

    /// Handles a request from the peer on an existing SA.
    fn handle_request(
        &mut self,
        config: &Config,
        msg: &Message,
        raw: &[u8],
        from: SocketAddr,
        now: Instant,
        ctx: &mut Context<'_>,
    ) {
        let id = msg.header.message_id;
        if id.wrapping_add(1) == self.peer_next_message_id {
            // A retransmission: answer with the cached response (§2.1); for a fragmented request only
            // on its first fragment (RFC 7383 §2.6.1), not once per fragment.
            let first_fragment = match msg.payloads.last() {
                Some(Payload::Skf { number, .. }) => *number == 1,
                _ => true,
            };
            if first_fragment {
                self.resend_last_response();
            }
            return;
        }
        if id != self.peer_next_message_id {
            self.log(
                "warning",
                ike_exchange_name(msg.header.exchange),
                format!(
                    "dropped request with message ID {id}, expected {}",
                    self.peer_next_message_id
                ),
            );
            self.refused(
                ike_exchange_name(msg.header.exchange),
                "UNEXPECTED_MESSAGE_ID",
                from,
            );
            return;
        }
        let payloads = match self.unprotect(msg, raw) {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                self.log(
                    "warning",
                    ike_exchange_name(msg.header.exchange),
                    format!("dropped request from {from}: {e}"),
                );
                self.refused(
                    ike_exchange_name(msg.header.exchange),
                    if e.contains("integrity") {
                        "INTEGRITY_CHECK_FAILED"
                    } else {
                        "MALFORMED"
                    },
                    from,
                );
                return;
            }
        };
        // NAT-T: follow the peer's address (§2.23).
        if from != self.remote && from.port() != IKE_PORT {
            self.remote = from;
        }
        self.last_heard = now;
        match msg.header.exchange {
            exchange::IKE_AUTH => self.respond_auth(config, id, &payloads, now, ctx),
            exchange::INFORMATIONAL => self.respond_informational(config, id, &payloads, now),
            exchange::CREATE_CHILD_SA => self.respond_create_child(config, id, &payloads, now),
            other => self.log(
                "warning",
                "UNKNOWN",
                format!("ignored exchange type {other}"),
            ),
        }
    }

    fn respond_auth(
        &mut self,
        config: &Config,
        id: u32,
        payloads: &[Payload],
        now: Instant,
        ctx: &mut Context<'_>,
    ) {
        if self.state != State::InitDone || self.initiator {
            return;
        }
        let idi = find_idi(payloads).cloned();
        let auth = find_auth(payloads).map(|(m, d)| (m, d.clone()));
        let (Some(idi), Some((method, auth))) = (idi.clone(), auth) else {
            // §2.16: an IDi without AUTH asks for EAP, which vgw does not offer.
            if let Some(idi) = idi {
                self.send_response(
                    exchange::IKE_AUTH,
                    id,
                    vec![Payload::Notify(Notify::new(
                        notify::AUTHENTICATION_FAILED,
                        vec![],
                    ))],
                );
                self.fail(Self::simple_failure(
                    Reason::AuthorizationError,
                    "IKE_AUTH",
                    Some(notify::AUTHENTICATION_FAILED),
                    "sent",
                    format!("peer {idi} sent no AUTH payload (EAP authentication is not supported; use certificates or a PSK)"),
                ));
                return;
            }
            self.send_response(
                exchange::IKE_AUTH,
                id,
                vec![Payload::Notify(Notify::new(notify::INVALID_SYNTAX, vec![]))],
            );
            self.fail(Self::simple_failure(
                Reason::ProtocolError,
                "IKE_AUTH",
                Some(notify::INVALID_SYNTAX),
                "sent",
                "request lacks IDi or AUTH".into(),
            ));
            return;
        };
        let refuse = |sa: &mut IkeSa, reason: Reason, message: String| {
            sa.send_response(
                exchange::IKE_AUTH,
                id,
                vec![Payload::Notify(Notify::new(
                    notify::AUTHENTICATION_FAILED,
                    vec![],
                ))],
            );
            sa.fail(Self::simple_failure(
                reason,
                "IKE_AUTH",
                Some(notify::AUTHENTICATION_FAILED),
                "sent",
                message,
            ));
        };
        // A remote-access gateway accepts any client identity its certificate proves.
        let remote_access = match &config.remote_access {
            RemoteAccess::Server(ra) => Some(ra),
            _ => None,
        };
        if remote_access.is_none() && idi != config.remote_id {
            refuse(
                self,
                Reason::PeerIdentityMismatch,
                format!(
                    "peer identified as {idi}, but the local gateway expects {}",
                    config.remote_id
                ),
            );
            return;
        }
        let how = match self.verify_peer(config, &idi, method, &auth, payloads, ctx) {
            Ok(how) => how,
            Err((reason, message)) => {
                refuse(self, reason, message);
                return;
            }
        };
        let my_auth = match self.our_auth(config) {
            Ok(a) => a,
            Err(e) => {
                refuse(
                    self,
                    Reason::AuthorizationError,
                    format!("cannot authenticate ourselves: {e}"),
                );
                return;
            }
        };
        let mut response = vec![Payload::IdR(config.local_id.clone())];
        response.extend(Self::our_certs(config));
        response.push(my_auth);
        self.peer_initial_contact = find_notify(payloads, notify::INITIAL_CONTACT).is_some();
        // §3.15: a remote-access client gets its addresses before its Child SA is narrowed to them.
        let mut child_error = None;
        if let Some(ra) = remote_access {
            let routes = config
                .children
                .first()
                .map(|c| c.local.as_slice())
                .unwrap_or_default();
            match self.assign_addresses(ra, routes, payloads, ctx) {
                Ok(Some(reply)) => response.push(Payload::Cp(reply.emit())),
                Ok(None) => child_error = Some(notify::FAILED_CP_REQUIRED),
                Err(message) => {
                    response.push(Payload::Notify(Notify::new(
                        notify::INTERNAL_ADDRESS_FAILURE,
                        vec![],
                    )));
                    self.send_response(exchange::IKE_AUTH, id, response);
                    self.fail(Self::simple_failure(
                        Reason::PoolExhausted,
                        "IKE_AUTH",
                        Some(notify::INTERNAL_ADDRESS_FAILURE),
                        "sent",
                        message,
                    ));
                    return;
                }
            }
        }
        self.establish(config, now);
        self.log(
            "info",
            "IKE_AUTH",
            format!("peer {idi} authenticated with {how}; IKE SA established"),
        );
        // The Child SA (§1.3): failures here keep the IKE SA.
        if let Some(n) = child_error {
            self.log(
                "error",
                "IKE_AUTH",
                "remote-access client sent no configuration request; no Child SA".into(),
            );
            response.push(Payload::Notify(Notify::new(n, vec![])));
        } else {
            match self.negotiate_child(config, payloads, None, "IKE_AUTH", now) {
                Ok(child) => response.extend(child),
                Err(n) => response.push(Payload::Notify(Notify::new(n, vec![]))),
            }
        }
        self.send_response(exchange::IKE_AUTH, id, response);
    }

    /// Answers a remote-access client's CFG_REQUEST (§3.15.1): leases addresses from the pool for the
    /// certificate's user and builds the CFG_REPLY. `Ok(None)`: the client sent no request.
    fn assign_addresses(
        &mut self,
        ra: &crate::config::RemoteAccessServer,
        routes: &[TrafficSelector],
        payloads: &[Payload],
        ctx: &mut Context<'_>,
    ) -> Result<Option<ConfigPayload>, String> {
        let Some(request) = find_cp(payloads).filter(|c| c.kind == cfg::REQUEST) else {
            return Ok(None);
        };
        let user = self
            .peer_cert
            .as_ref()
            .map(PeerCertificate::user_name)
            .or_else(|| self.peer_identity.as_ref().map(|i| i.to_string()))
            .unwrap_or_default();
        let want_v4 = request.has(cfg::INTERNAL_IP4_ADDRESS);
        let want_v6 = request.has(cfg::INTERNAL_IP6_ADDRESS);
        let Some(pool) = ctx.pool.as_deref_mut() else {
            return Err("the remote-access connection has no address pool".into());
        };
        let lease = pool
            .allocate_families(&user, want_v4, want_v6)
            .ok_or_else(|| {
                format!(
                    "address pool exhausted: no address for {user} ({} leased)",
                    pool.leased()
                )
            })?;
        if lease.v4.is_none() && lease.v6.is_none() {
            return Err(format!(
                "{user} asked for no address family the pool has (IPv4 {want_v4}, IPv6 {want_v6})"
            ));
        }
        let mut attributes = Vec::new();
        if let Some(a) = lease.v4 {
            attributes.push((cfg::INTERNAL_IP4_ADDRESS, a.octets().to_vec()));
            if request.has(cfg::INTERNAL_IP4_NETMASK) {
                attributes.push((cfg::INTERNAL_IP4_NETMASK, vec![255, 255, 255, 255]));
            }
            // The split-tunnel routes for clients that take routes from the CP payload rather than
            // from the traffic selectors (§3.15.1 INTERNAL_IP4_SUBNET: address and netmask).
            for route in split_routes_v4(routes) {
                attributes.push((cfg::INTERNAL_IP4_SUBNET, route));
            }
        }
        if let Some(a) = lease.v6 {
            let mut v = a.octets().to_vec();
            v.push(128);
            attributes.push((cfg::INTERNAL_IP6_ADDRESS, v));
        }
        for dns in &ra.dns {
            match dns {
                IpAddr::V4(d) if lease.v4.is_some() => {
                    attributes.push((cfg::INTERNAL_IP4_DNS, d.octets().to_vec()));
                }
                IpAddr::V6(d) if lease.v6.is_some() => {
                    attributes.push((cfg::INTERNAL_IP6_DNS, d.octets().to_vec()));
                }
                _ => {}
            }
        }
        self.log(
            "info",
            "IKE_AUTH",
            format!(
                "assigned {} to {user}",
                lease
                    .addresses()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        self.lease = Some(lease);
        Ok(Some(ConfigPayload {
            kind: cfg::REPLY,
            attributes,
        }))
    }

    /// Responder half of a Child SA negotiation (IKE_AUTH or CREATE_CHILD_SA); returns the payloads for
    /// the response or the error notify.
    fn negotiate_child(
        &mut self,
        config: &Config,
        payloads: &[Payload],
        rekey_of: Option<u32>,
        exchange_name: &'static str,
        now: Instant,
    ) -> Result<Vec<Payload>, u16> {
        let sa = find_sa(payloads);
        let tsi = find_tsi(payloads);
        let tsr = find_tsr(payloads);
        let (Some(sa), Some(tsi), Some(tsr)) = (sa, tsi, tsr) else {
            return Err(notify::INVALID_SYNTAX);
        };
        let ke = find_ke(payloads);
        let ke_group = ke.and_then(|(g, _)| DhGroup::from_id(g));
        let Some((suite, peer_proposal)) = proposal::choose_esp(sa, &config.esp, ke_group) else {
            let peer: Vec<String> = sa.iter().map(describe_proposal).collect();
            let failure = Self::esp_failure(
                config,
                exchange_name,
                notify::NO_PROPOSAL_CHOSEN,
                "sent",
                &peer,
            );
            self.log("error", exchange_name, failure.message.clone());
            // A refused extra or rekeyed Child SA leaves the connection carried by the others.
            if self.children.is_empty() {
                self.events.push_back(Event::IkeSaDown {
                    conn: self.conn,
                    failure: Failure {
                        reason: Reason::NegotiationFailure,
                        ..failure
                    },
                });
            }
            return Err(notify::NO_PROPOSAL_CHOSEN);
        };
        // A remote-access client's side is its assigned addresses, whatever it proposed (§3.15).
        let client_side = self.lease.map(|l| host_selectors(&l.addresses()));
        let Some((index, local, remote)) =
            Self::match_child(config, tsi, tsr, true, client_side.as_deref())
        else {
            // The peer is the initiator: its TSi is its side, its TSr ours (§2.9).
            let theirs = format!("{} === {}", ts_text(tsi), ts_text(tsr));
            let ours = our_selectors(config);
            let message = format!(
                "TS_UNACCEPTABLE: the peer proposed TSi {} === TSr {} (its side === ours), which \
                 match none of ours: remote {}",
                ts_text(tsi),
                ts_text(tsr),
                config
                    .children
                    .iter()
                    .map(|c| format!("{} === local {}", ts_text(&c.remote), ts_text(&c.local)))
                    .collect::<Vec<_>>()
                    .join("; remote ")
            );
            self.log("error", exchange_name, message.clone());
            let mut failure = Self::simple_failure(
                Reason::TsUnacceptable,
                exchange_name,
                Some(notify::TS_UNACCEPTABLE),
                "sent",
                message,
            );
            failure.our_selectors = ours;
            failure.peer_selectors = vec![theirs];
            if self.children.is_empty() {
                self.events.push_back(Event::IkeSaDown {
                    conn: self.conn,
                    failure,
                });
            }
            return Err(notify::TS_UNACCEPTABLE);
        };
        let outbound_spi = u32::from_be_bytes(
            peer_proposal
                .spi
                .as_slice()
                .try_into()
                .map_err(|_| notify::INVALID_SYNTAX)?,
        );
        let inbound_spi = crypto::random_spi32();
        let mut response = Vec::new();
        let mut shared = None;
        let mut nonces = (self.ni.clone(), self.nr.clone());
        if exchange_name == "CREATE_CHILD_SA" {
            let ni = payloads
                .iter()
                .find_map(|p| {
                    if let Payload::Nonce(n) = p {
                        Some(n.clone())
                    } else {
                        None
                    }
                })
                .ok_or(notify::INVALID_SYNTAX)?;
            let nr = nonce();
            if let (Some(g), Some((_, data))) = (suite.dh, ke) {
                let (dh, public) =
                    DhPrivate::generate(g).map_err(|_| notify::NO_PROPOSAL_CHOSEN)?;
                shared = Some(dh.agree(data).map_err(|_| notify::INVALID_SYNTAX)?);
                response.push(Payload::Ke {
                    group: g.id(),
                    data: public,
                });
            }
            response.insert(0, Payload::Nonce(nr.clone()));
            nonces = (ni, nr);
        }
        let keys = self
            .child_keys(
                &suite,
                shared.as_deref().map(|s| s.as_slice()),
                &nonces.0,
                &nonces.1,
                false,
            )
            .ok_or(notify::NO_PROPOSAL_CHOSEN)?;
        let chosen = ProposalSpec {
            encryption: vec![suite.encryption],
            integrity: suite.integrity.into_iter().collect(),
            prf: vec![],
            dh: suite.dh.into_iter().collect(),
        };
        let mut proposal_out = chosen.to_proposal(
            peer_proposal.number,
            protocol::ESP,
            inbound_spi.to_be_bytes().to_vec(),
        );
        proposal_out
            .transforms
            .retain(|t| t.kind != transform_type::ESN);
        proposal_out.transforms.push(Transform {
            kind: transform_type::ESN,
            id: u16::from(suite.esn),
            key_len: None,
        });
        response.insert(0, Payload::Sa(vec![proposal_out]));
        response.push(Payload::TsI(remote.clone()));
        response.push(Payload::TsR(local.clone()));
        let replaces = rekey_of
            .and_then(|old_out| self.children.iter_mut().find(|c| c.outbound_spi == old_out))
            .map(|c| {
                c.retiring = true;
                (c.inbound_spi, c.outbound_spi)
            });
        self.install_child(
            config,
            index,
            inbound_spi,
            outbound_spi,
            suite,
            keys,
            local,
            remote,
            replaces,
            now,
        );
        if let Some((old_in, _)) = replaces {
            self.note_rekey(old_in, false, inbound_spi, &nonces.0, &nonces.1);
        }
        Ok(response)
    }

    /// Simultaneous Child SA rekeys (§2.8.1): when both sides rekeyed the same SA, the new SA created
    /// with the lowest of the four nonces is redundant and its creator deletes it.
    fn note_rekey(&mut self, old_in: u32, ours: bool, new_in: u32, ni: &[u8], nr: &[u8]) {
        let lowest = ni.min(nr).to_vec();
        let entry = self.collisions.entry(old_in).or_default();
        if ours {
            entry.0 = Some((new_in, lowest));
        } else {
            entry.1 = Some((new_in, lowest));
        }
        if let (Some((our_new, our_nonce)), Some((_, peer_nonce))) = entry.clone() {
            self.collisions.remove(&old_in);
            if our_nonce < peer_nonce {
                self.log(
                    "info",
                    "CREATE_CHILD_SA",
                    format!(
                        "rekey collision: deleting our redundant Child SA {our_new:08x}_i (§2.8.1)"
                    ),
                );
                self.queue.push_back(Request::DeleteChildren(vec![our_new]));
            }
        }
    }

    fn respond_informational(
        &mut self,
        config: &Config,
        id: u32,
        payloads: &[Payload],
        now: Instant,
    ) {
        let mut response = Vec::new();
        let mut delete_ike = false;
        let mut deleted = Vec::new();
        for p in payloads {
            if let Payload::Delete(d) = p {
                if d.protocol == protocol::IKE {
                    delete_ike = true;
                } else if d.protocol == protocol::ESP {
                    let mut ours = Vec::new();
                    for spi in &d.spis {
                        let Ok(b) = <[u8; 4]>::try_from(spi.as_slice()) else {
                            continue;
                        };
                        let out_spi = u32::from_be_bytes(b);
                        if let Some(pos) =
                            self.children.iter().position(|c| c.outbound_spi == out_spi)
                        {
                            let c = self.children.remove(pos);
                            self.collisions.remove(&c.inbound_spi);
                            ours.push(c.inbound_spi.to_be_bytes().to_vec());
                            deleted
                                .push(format!("{:08x}_i {:08x}_o", c.inbound_spi, c.outbound_spi));
                            self.events.push_back(Event::ChildSaDown {
                                conn: self.conn,
                                inbound_spi: c.inbound_spi,
                                outbound_spi: c.outbound_spi,
                            });
                            self.log(
                                "info",
                                "INFORMATIONAL",
                                format!(
                                    "peer deleted Child SA {:08x}_i {:08x}_o",
                                    c.inbound_spi, c.outbound_spi
                                ),
                            );
                        }
                    }
                    if !ours.is_empty() {
                        response.push(Payload::Delete(Delete {
                            protocol: protocol::ESP,
                            spis: ours,
                        }));
                    }
                }
            }
        }
        self.send_response(exchange::INFORMATIONAL, id, response);
        if !delete_ike && !deleted.is_empty() && self.state == State::Established {
            self.children_deleted(config, &deleted, now);
        }
        if delete_ike && self.replaced {
            self.log(
                "info",
                "INFORMATIONAL",
                "peer deleted the rekeyed IKE SA".into(),
            );
            self.dead = true;
        } else if delete_ike {
            self.fail(Self::simple_failure(
                Reason::DeletedByPeer,
                "INFORMATIONAL",
                None,
                "received",
                "peer deleted the IKE SA".into(),
            ));
        }
    }

    /// The peer deleted Child SAs (`deleted`) but kept the IKE SA. When none is left the connection
    /// carries nothing: [`Event::ChildSasGone`] says so at once. vgw re-creates the missing Child SAs
    /// with CREATE_CHILD_SA (§1.3.1) unless it may only respond (connectionMode ResponderOnly) or
    /// serves remote-access clients (the client re-creates its own).
    fn children_deleted(&mut self, config: &Config, deleted: &[String], now: Instant) {
        let recreate = config.mode != Mode::ResponderOnly && !config.is_remote_access_server();
        // The first re-creation waits a second (1 s, then doubling while the peer keeps deleting
        // what was re-created within a minute, up to 30 s).
        let flapping = self
            .child_recreated_at
            .is_some_and(|t| now.saturating_duration_since(t) < CHILD_STABLE);
        if !flapping {
            self.child_retry_interval = CHILD_RETRY_BASE;
        }
        let wait = self.child_retry_interval;
        if self.children.is_empty() {
            let what = if recreate {
                format!(
                    "re-creating it with CREATE_CHILD_SA in {} s",
                    wait.as_secs()
                )
            } else {
                format!(
                    "waiting for the peer to create one again ({})",
                    if config.is_remote_access_server() {
                        "a remote-access client re-creates its own"
                    } else {
                        "connectionMode ResponderOnly"
                    }
                )
            };
            let failure = Self::simple_failure(
                Reason::ChildSaDeletedByPeer,
                "INFORMATIONAL",
                None,
                "received",
                format!(
                    "the peer deleted Child SA {} (INFORMATIONAL DELETE for ESP) and kept the IKE \
                     SA, which now carries no Child SA; {what}",
                    deleted.join(", ")
                ),
            );
            self.log(
                "warning",
                "INFORMATIONAL",
                format!("{}: {}", failure.reason.as_str(), failure.message),
            );
            self.events.push_back(Event::ChildSasGone {
                conn: self.conn,
                failure: Failure {
                    notify: Some("DELETE".into()),
                    ..failure
                },
                recreating: recreate,
            });
        }
        if recreate {
            self.child_retry_interval = (wait * 2).min(CHILD_RETRY_MAX);
            self.child_retry_at = Some(now + wait);
        }
    }

    /// Queues CREATE_CHILD_SA for every configured Child SA that has none (and none under way).
    fn recreate_children(&mut self, config: &Config, now: Instant) {
        if self.child_retry_at.is_none_or(|t| now < t) || self.state != State::Established {
            return;
        }
        self.child_retry_at = None;
        for index in 0..config.children.len() {
            let present = self
                .children
                .iter()
                .any(|c| c.config_index == index && !c.retiring);
            let creating = |r: &Request| matches!(r, Request::CreateChild { config_index, .. } if *config_index == index);
            let under_way = self.queue.iter().any(creating)
                || self.pending.as_ref().is_some_and(|p| creating(&p.request));
            if !present && !under_way {
                self.log(
                    "info",
                    "CREATE_CHILD_SA",
                    format!(
                        "re-creating Child SA {} (attempt {})",
                        config.children[index]
                            .local
                            .iter()
                            .map(|t| t.to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                        self.child_failures + 1
                    ),
                );
                self.queue_create_child(config, index, None, now);
            }
        }
    }

    /// A CREATE_CHILD_SA for a new (not rekeyed) Child SA was refused or failed. With back-off
    /// (1 s doubling to 30 s) it is tried again; after [`CHILD_ATTEMPTS`] refusals with no Child SA
    /// left, the IKE SA is deleted and ends with `failure`, so the endpoint starts a new IKE SA (its
    /// IKE_AUTH creates the Child SA) with its own back-off.
    fn child_creation_failed(&mut self, config: &Config, failure: Failure, now: Instant) {
        self.child_failures = self.child_failures.saturating_add(1);
        let may_initiate = config.mode != Mode::ResponderOnly && !config.is_remote_access_server();
        if self.children.is_empty() && self.child_failures >= CHILD_ATTEMPTS && may_initiate {
            // §1.4.1: tell the peer (one try; the SA ends now either way).
            let delete = vec![Payload::Delete(Delete {
                protocol: protocol::IKE,
                spis: vec![],
            })];
            if let Some(bytes) = self.protect(
                exchange::INFORMATIONAL,
                false,
                self.next_message_id,
                &delete,
            ) {
                for data in bytes {
                    self.transmits.push_back(Transmit {
                        local_port: self.local_port,
                        remote: self.remote,
                        data,
                    });
                }
            }
            let message = format!(
                "{} after {} CREATE_CHILD_SA attempts; starting a new IKE SA",
                failure.message, self.child_failures
            );
            self.fail(Failure { message, ..failure });
            return;
        }
        if may_initiate {
            let wait = self.child_retry_interval;
            self.child_retry_interval = (wait * 2).min(CHILD_RETRY_MAX);
            self.child_retry_at = Some(now + wait);
            self.log(
                "warning",
                "CREATE_CHILD_SA",
                format!("{}; trying again in {} s", failure.message, wait.as_secs()),
            );
        }
    }

    fn respond_create_child(
        &mut self,
        config: &Config,
        id: u32,
        payloads: &[Payload],
        now: Instant,
    ) {
        if self.state != State::Established {
            self.send_response(
                exchange::CREATE_CHILD_SA,
                id,
                vec![Payload::Notify(Notify::new(
                    notify::TEMPORARY_FAILURE,
                    vec![],
                ))],
            );
            return;
        }
        let sa = find_sa(payloads);
        if sa.is_some_and(|s| s.iter().any(|p| p.protocol == protocol::IKE)) {
            self.respond_rekey_ike(config, id, payloads, now);
            return;
        }
        let rekey_of = find_notify(payloads, notify::REKEY_SA)
            .and_then(|n| <[u8; 4]>::try_from(n.spi.as_slice()).ok())
            .map(u32::from_be_bytes);
        if let Some(old) = rekey_of
            && !self.children.iter().any(|c| c.outbound_spi == old)
        {
            self.send_response(
                exchange::CREATE_CHILD_SA,
                id,
                vec![Payload::Notify(Notify {
                    protocol: protocol::ESP,
                    spi: old.to_be_bytes().to_vec(),
                    kind: notify::CHILD_SA_NOT_FOUND,
                    data: vec![],
                })],
            );
            return;
        }
        let response =
            match self.negotiate_child(config, payloads, rekey_of, "CREATE_CHILD_SA", now) {
                Ok(r) => r,
                Err(n) => vec![Payload::Notify(Notify::new(n, vec![]))],
            };
        self.send_response(exchange::CREATE_CHILD_SA, id, response);
    }

    fn respond_rekey_ike(&mut self, config: &Config, id: u32, payloads: &[Payload], now: Instant) {
        let sa = find_sa(payloads);
        let ke = find_ke(payloads);
        let ni = find_nonce(payloads).cloned();
        let (Some(sa), Some((group, ke)), Some(ni)) = (sa, ke, ni) else {
            self.send_response(
                exchange::CREATE_CHILD_SA,
                id,
                vec![Payload::Notify(Notify::new(notify::INVALID_SYNTAX, vec![]))],
            );
            return;
        };
        let Some((suite, number)) = proposal::choose_ike(sa, &config.ike) else {
            self.send_response(
                exchange::CREATE_CHILD_SA,
                id,
                vec![Payload::Notify(Notify::new(
                    notify::NO_PROPOSAL_CHOSEN,
                    vec![],
                ))],
            );
            return;
        };
        if suite.dh.id() != group {
            self.send_response(
                exchange::CREATE_CHILD_SA,
                id,
                vec![Payload::Notify(Notify::new(
                    notify::INVALID_KE_PAYLOAD,
                    suite.dh.id().to_be_bytes().to_vec(),
                ))],
            );
            return;
        }
        let Some(peer_spi) = sa
            .iter()
            .find(|p| p.number == number)
            .and_then(|p| <[u8; 8]>::try_from(p.spi.as_slice()).ok())
            .map(u64::from_be_bytes)
        else {
            self.send_response(
                exchange::CREATE_CHILD_SA,
                id,
                vec![Payload::Notify(Notify::new(notify::INVALID_SYNTAX, vec![]))],
            );
            return;
        };
        let Ok((dh, public)) = DhPrivate::generate(suite.dh) else {
            return;
        };
        let Ok(shared) = dh.agree(ke) else {
            self.send_response(
                exchange::CREATE_CHILD_SA,
                id,
                vec![Payload::Notify(Notify::new(notify::INVALID_SYNTAX, vec![]))],
            );
            return;
        };
        let Some(old) = self.keys.as_ref() else {
            return;
        };
        let Some(old_prf) = self.suite.map(|s| s.prf) else {
            return;
        };
        let nr = nonce();
        let my_spi = crypto::random_spi64();
        // §2.18: the rekey initiator's SPI is the new SPIi.
        let old_suite_prf = IkeSuite {
            prf: old_prf,
            ..suite
        };
        let keys =
            IkeKeys::derive_rekey(&old_suite_prf, &old.d, &shared, &ni, &nr, peer_spi, my_spi);
        let chosen = ProposalSpec {
            encryption: vec![suite.encryption],
            integrity: suite.integrity.into_iter().collect(),
            prf: vec![suite.prf],
            dh: vec![suite.dh],
        };
        let response = vec![
            Payload::Sa(vec![chosen.to_proposal(
                number,
                protocol::IKE,
                my_spi.to_be_bytes().to_vec(),
            )]),
            Payload::Nonce(nr.clone()),
            Payload::Ke {
                group: suite.dh.id(),
                data: public,
            },
        ];
        self.send_response(exchange::CREATE_CHILD_SA, id, response);
        let mut new = IkeSa::blank(self.conn, false, self.remote, now);
        new.spi_i = peer_spi;
        new.spi_r = my_spi;
        new.local_port = self.local_port;
        new.suite = Some(suite);
        new.keys = Some(keys);
        new.ni = ni;
        new.nr = nr;
        new.is_rekey = true;
        new.fragmentation = self.fragmentation;
        new.fragment_size = self.fragment_size;
        new.children = std::mem::take(&mut self.children);
        new.inherit_peer(self);
        new.establish(config, now);
        self.log(
            "info",
            "CREATE_CHILD_SA",
            format!("IKE SA rekeyed by the peer; new SPIs {peer_spi:016x}_i {my_spi:016x}_r"),
        );
        self.successor = Some(Box::new(new));
        self.replaced = true;
        self.rekey_at = None;
        // The peer deletes this SA next (§2.18); until then it only answers.
        self.state = State::Closing;
    }

    // ---- our requests ------------------------------------------------------------------------------

    /// Handles a response to our pending request.
    fn handle_response(
        &mut self,
        config: &Config,
        msg: &Message,
        raw: &[u8],
        now: Instant,
        ctx: &mut Context<'_>,
    ) {
        let Some(pending) = self.pending.as_ref() else {
            return;
        };
        if msg.header.message_id != pending.message_id || msg.header.exchange != pending.exchange {
            return;
        }
        let payloads = match self.unprotect(msg, raw) {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                self.log(
                    "warning",
                    ike_exchange_name(msg.header.exchange),
                    format!("dropped response: {e}"),
                );
                let remote = self.remote;
                self.refused(
                    ike_exchange_name(msg.header.exchange),
                    if e.contains("integrity") {
                        "INTEGRITY_CHECK_FAILED"
                    } else {
                        "MALFORMED"
                    },
                    remote,
                );
                return;
            }
        };
        self.last_heard = now;
        let Some(pending) = self.pending.take() else {
            return;
        };
        match pending.request {
            Request::CreateChild {
                config_index,
                rekey_of,
                spi,
                nonce,
                dh,
            } if pending.exchange == exchange::IKE_AUTH => {
                let _ = (config_index, rekey_of, nonce, dh);
                self.auth_response(config, &payloads, spi, now, ctx);
            }
            Request::CreateChild {
                config_index,
                rekey_of,
                spi,
                nonce,
                dh,
            } => {
                self.create_child_response(
                    config,
                    &payloads,
                    config_index,
                    rekey_of,
                    spi,
                    &nonce,
                    dh,
                    now,
                );
            }
            Request::RekeyIke {
                spi,
                nonce,
                dh: Some(dh),
                ..
            } => self.rekey_ike_response(config, &payloads, spi, &nonce, dh, now),
            Request::RekeyIke { .. } => {}
            Request::Liveness => {}
            Request::DeleteChildren(spis) => {
                for spi in spis {
                    if let Some(pos) = self.children.iter().position(|c| c.inbound_spi == spi) {
                        let c = self.children.remove(pos);
                        self.collisions.remove(&c.inbound_spi);
                        self.events.push_back(Event::ChildSaDown {
                            conn: self.conn,
                            inbound_spi: c.inbound_spi,
                            outbound_spi: c.outbound_spi,
                        });
                    }
                }
            }
            Request::DeleteIke => {
                self.dead = true;
                self.children_down();
            }
            Request::Auth => {}
        }
        self.send_queued(config, now);
    }

    fn auth_response(
        &mut self,
        config: &Config,
        payloads: &[Payload],
        spi: u32,
        now: Instant,
        ctx: &mut Context<'_>,
    ) {
        if let Some(n) = payloads.iter().find_map(|p| match p {
            Payload::Notify(n) if n.kind == notify::AUTHENTICATION_FAILED => Some(n.kind),
            _ => None,
        }) {
            let hint = match config.local_auth {
                LocalAuth::Psk => "the shared keys or identities differ",
                LocalAuth::Certificate(_) => {
                    "the peer does not trust our certificate, considers it revoked or expired, or our identity does not match it"
                }
            };
            self.fail(Self::simple_failure(
                Reason::AuthorizationError,
                "IKE_AUTH",
                Some(n),
                "received",
                format!("the peer refused our authentication (AUTHENTICATION_FAILED): {hint}"),
            ));
            return;
        }
        let idr = find_idr(payloads).cloned();
        let auth = find_auth(payloads).map(|(m, d)| (m, d.clone()));
        let (Some(idr), Some((method, auth))) = (idr, auth) else {
            let n = find_error_notify(payloads);
            self.fail(Self::simple_failure(
                Reason::NegotiationFailure,
                "IKE_AUTH",
                n,
                "received",
                format!(
                    "IKE_AUTH refused: {}",
                    n.map(notify::name).unwrap_or_else(|| "no IDr/AUTH".into())
                ),
            ));
            return;
        };
        if idr != config.remote_id {
            self.fail(Self::simple_failure(
                Reason::PeerIdentityMismatch,
                "IKE_AUTH",
                None,
                "received",
                format!("peer identified as {idr}, expected {}", config.remote_id),
            ));
            return;
        }
        let how = match self.verify_peer(config, &idr, method, &auth, payloads, ctx) {
            Ok(how) => how,
            Err((reason, message)) => {
                let message = if matches!(config.peer_auth, PeerAuth::Psk) {
                    format!("peer {idr} sent a wrong PSK AUTH value; the shared keys differ")
                } else {
                    message
                };
                self.fail(Self::simple_failure(
                    reason, "IKE_AUTH", None, "received", message,
                ));
                return;
            }
        };
        if find_notify(payloads, notify::INTERNAL_ADDRESS_FAILURE).is_some() {
            self.fail(Self::simple_failure(
                Reason::PoolExhausted,
                "IKE_AUTH",
                Some(notify::INTERNAL_ADDRESS_FAILURE),
                "received",
                "the gateway has no address for us (INTERNAL_ADDRESS_FAILURE)".into(),
            ));
            return;
        }
        self.establish(config, now);
        self.log(
            "info",
            "IKE_AUTH",
            format!("peer {idr} authenticated with {how}; IKE SA established"),
        );
        if let RemoteAccess::Client(_) = config.remote_access {
            match find_cp(payloads).filter(|c| c.kind == cfg::REPLY) {
                Some(reply) => {
                    let mut addresses = reply.addresses(cfg::INTERNAL_IP4_ADDRESS);
                    addresses.extend(reply.addresses(cfg::INTERNAL_IP6_ADDRESS));
                    let mut dns = reply.addresses(cfg::INTERNAL_IP4_DNS);
                    dns.extend(reply.addresses(cfg::INTERNAL_IP6_DNS));
                    self.virtual_ips = addresses.clone();
                    self.events.push_back(Event::AddressesAssigned {
                        conn: self.conn,
                        addresses,
                        dns,
                    });
                }
                None => self.log(
                    "warning",
                    "IKE_AUTH",
                    "the gateway sent no configuration reply (no address assigned)".into(),
                ),
            }
        }
        self.child_response(
            config,
            payloads,
            0,
            None,
            spi,
            None,
            (self.ni.clone(), self.nr.clone()),
            "IKE_AUTH",
            now,
        );
        self.start_extra_children(config, now);
    }

    fn start_extra_children(&mut self, config: &Config, now: Instant) {
        for index in 1..config.children.len() {
            if !self
                .children
                .iter()
                .any(|c| c.config_index == index && !c.retiring)
            {
                self.queue_create_child(config, index, None, now);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn child_response(
        &mut self,
        config: &Config,
        payloads: &[Payload],
        config_index: usize,
        rekey_of: Option<u32>,
        spi: u32,
        shared: Option<&[u8]>,
        nonces: (Vec<u8>, Vec<u8>),
        exchange_name: &'static str,
        now: Instant,
    ) {
        if let Some(n) = find_error_notify(payloads) {
            let failure = Self::esp_failure(config, exchange_name, n, "received", &[]);
            self.log("error", exchange_name, failure.message.clone());
            // Only a connection left without any Child SA is down; a refused extra or rekeyed SA
            // is logged.
            if rekey_of.is_none() && self.children.is_empty() {
                self.events.push_back(Event::IkeSaDown {
                    conn: self.conn,
                    failure,
                });
            }
            return;
        }
        let sa = find_sa(payloads);
        let tsi = find_tsi(payloads).cloned();
        let tsr = find_tsr(payloads).cloned();
        let (Some(sa), Some(tsi), Some(tsr)) = (sa, tsi, tsr) else {
            self.log("error", exchange_name, "response lacks SA or TS".into());
            return;
        };
        let ke_group = find_ke(payloads).and_then(|(g, _)| DhGroup::from_id(g));
        let Some((suite, proposal)) =
            proposal::choose_esp(sa, &config.esp, ke_group).filter(|_| sa.len() == 1)
        else {
            let peer: Vec<String> = sa.iter().map(describe_proposal).collect();
            let failure = Self::esp_failure(
                config,
                exchange_name,
                notify::NO_PROPOSAL_CHOSEN,
                "received",
                &peer,
            );
            self.log("error", exchange_name, failure.message.clone());
            return;
        };
        let Ok(bytes) = <[u8; 4]>::try_from(proposal.spi.as_slice()) else {
            return;
        };
        let outbound_spi = u32::from_be_bytes(bytes);
        let Some(keys) = self.child_keys(&suite, shared, &nonces.0, &nonces.1, true) else {
            return;
        };
        let replaces = rekey_of
            .and_then(|old_in| self.children.iter_mut().find(|c| c.inbound_spi == old_in))
            .map(|c| {
                c.retiring = true;
                (c.inbound_spi, c.outbound_spi)
            });
        // We initiated this exchange: TSi is our side.
        self.install_child(
            config,
            config_index,
            spi,
            outbound_spi,
            suite,
            keys,
            tsi,
            tsr,
            replaces,
            now,
        );
        if let Some((old_in, _)) = replaces {
            self.queue.push_back(Request::DeleteChildren(vec![old_in]));
            self.note_rekey(old_in, true, spi, &nonces.0, &nonces.1);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create_child_response(
        &mut self,
        config: &Config,
        payloads: &[Payload],
        config_index: usize,
        rekey_of: Option<u32>,
        spi: u32,
        ni: &[u8],
        dh: Option<DhPrivate>,
        now: Instant,
    ) {
        let nr = find_nonce(payloads).cloned();
        let ke = find_ke(payloads).map(|(_, d)| d.clone());
        let shared = match (dh, ke) {
            (Some(dh), Some(ke)) => match dh.agree(&ke) {
                Ok(s) => Some(s),
                Err(_) => return,
            },
            _ => None,
        };
        let Some(nr) = nr else {
            if rekey_of.is_none() {
                let n = find_error_notify(payloads).unwrap_or(notify::NO_PROPOSAL_CHOSEN);
                let failure = Self::esp_failure(config, "CREATE_CHILD_SA", n, "received", &[]);
                self.child_creation_failed(config, failure, now);
                return;
            }
            // Probably an error notify (TEMPORARY_FAILURE on a collision): retry later.
            self.log(
                "warning",
                "CREATE_CHILD_SA",
                "Child SA request refused; will retry".into(),
            );
            if let Some(c) =
                rekey_of.and_then(|old| self.children.iter_mut().find(|c| c.inbound_spi == old))
            {
                c.rekey_at = now + Duration::from_secs(2);
            }
            return;
        };
        let before = self.children.len();
        self.child_response(
            config,
            payloads,
            config_index,
            rekey_of,
            spi,
            shared.as_deref().map(|s| s.as_slice()),
            (ni.to_vec(), nr),
            "CREATE_CHILD_SA",
            now,
        );
        if rekey_of.is_none() && self.children.len() == before {
            // The answer could not be used (no acceptable proposal, no selectors): like a refusal.
            let failure = Self::esp_failure(
                config,
                "CREATE_CHILD_SA",
                notify::NO_PROPOSAL_CHOSEN,
                "received",
                &[],
            );
            self.child_creation_failed(config, failure, now);
        }
    }

    fn rekey_ike_response(
        &mut self,
        config: &Config,
        payloads: &[Payload],
        spi: u64,
        ni: &[u8],
        dh: DhPrivate,
        now: Instant,
    ) {
        let sa = find_sa(payloads);
        let ke = find_ke(payloads).map(|(_, d)| d.clone());
        let nr = find_nonce(payloads).cloned();
        let (Some(sa), Some(ke), Some(nr)) = (sa, ke, nr) else {
            self.log(
                "warning",
                "CREATE_CHILD_SA",
                "IKE SA rekey refused; will retry".into(),
            );
            self.rekey_at = Some(now + Duration::from_secs(5));
            return;
        };
        let Some((suite, _)) = proposal::choose_ike(sa, &config.ike) else {
            return;
        };
        let Some(peer_spi) = sa
            .first()
            .and_then(|p| <[u8; 8]>::try_from(p.spi.as_slice()).ok())
            .map(u64::from_be_bytes)
        else {
            return;
        };
        let Ok(shared) = dh.agree(&ke) else { return };
        let (Some(old), Some(old_prf)) = (self.keys.as_ref(), self.suite.map(|s| s.prf)) else {
            return;
        };
        let keys = IkeKeys::derive_rekey(
            &IkeSuite {
                prf: old_prf,
                ..suite
            },
            &old.d,
            &shared,
            ni,
            &nr,
            spi,
            peer_spi,
        );
        let mut new = IkeSa::blank(self.conn, true, self.remote, now);
        new.spi_i = spi;
        new.spi_r = peer_spi;
        new.local_port = self.local_port;
        new.suite = Some(suite);
        new.keys = Some(keys);
        new.ni = ni.to_vec();
        new.nr = nr;
        new.is_rekey = true;
        new.fragmentation = self.fragmentation;
        new.fragment_size = self.fragment_size;
        new.children = std::mem::take(&mut self.children);
        new.inherit_peer(self);
        new.establish(config, now);
        self.log(
            "info",
            "CREATE_CHILD_SA",
            format!("IKE SA rekeyed; new SPIs {spi:016x}_i {peer_spi:016x}_r"),
        );
        self.successor = Some(Box::new(new));
        self.replaced = true;
        // §2.18: the initiator of the rekey deletes the old SA.
        self.state = State::Closing;
        self.queue.clear();
        self.send_request(
            exchange::INFORMATIONAL,
            vec![Payload::Delete(Delete {
                protocol: protocol::IKE,
                spis: vec![],
            })],
            Request::DeleteIke,
            now,
            Duration::from_secs(10),
        );
    }

    fn queue_create_child(
        &mut self,
        config: &Config,
        config_index: usize,
        rekey_of: Option<u32>,
        now: Instant,
    ) {
        let spi = crypto::random_spi32();
        // The PFS key pair is made when the request is sent (below), so the public value is at hand.
        self.queue.push_back(Request::CreateChild {
            config_index,
            rekey_of,
            spi,
            nonce: nonce(),
            dh: None,
        });
        self.send_queued(config, now);
    }

    fn send_queued(&mut self, config: &Config, now: Instant) {
        if self.pending.is_some()
            || self.state == State::Closing
                && !matches!(self.queue.front(), Some(Request::DeleteIke))
        {
            return;
        }
        let Some(request) = self.queue.pop_front() else {
            return;
        };
        let deadline = config.dpd_timeout.max(Duration::from_secs(10));
        match request {
            Request::CreateChild {
                config_index,
                rekey_of,
                spi,
                nonce,
                dh: _,
            } => {
                let Some(child) = config.children.get(config_index) else {
                    return;
                };
                let (dh, public) = match config.pfs.map(DhPrivate::generate) {
                    Some(Ok((d, p))) => (Some(d), Some(p)),
                    _ => (None, None),
                };
                let proposals: Vec<Proposal> = config
                    .esp
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let spec = ProposalSpec {
                            dh: dh.as_ref().map(|d| vec![d.group()]).unwrap_or_default(),
                            ..p.clone()
                        };
                        spec.to_proposal(i as u8 + 1, protocol::ESP, spi.to_be_bytes().to_vec())
                    })
                    .collect();
                let mut payloads = Vec::new();
                if let Some(old) = rekey_of
                    && let Some(c) = self.children.iter().find(|c| c.inbound_spi == old)
                {
                    payloads.push(Payload::Notify(Notify {
                        protocol: protocol::ESP,
                        spi: c.inbound_spi.to_be_bytes().to_vec(),
                        kind: notify::REKEY_SA,
                        data: vec![],
                    }));
                }
                payloads.push(Payload::Sa(proposals));
                payloads.push(Payload::Nonce(nonce.clone()));
                if let (Some(d), Some(p)) = (&dh, public) {
                    payloads.push(Payload::Ke {
                        group: d.group().id(),
                        data: p,
                    });
                }
                payloads.push(Payload::TsI(child.local.clone()));
                payloads.push(Payload::TsR(child.remote.clone()));
                self.log(
                    "info",
                    "CREATE_CHILD_SA",
                    if rekey_of.is_some() {
                        "rekeying a Child SA".into()
                    } else {
                        "creating a Child SA".into()
                    },
                );
                self.send_request(
                    exchange::CREATE_CHILD_SA,
                    payloads,
                    Request::CreateChild {
                        config_index,
                        rekey_of,
                        spi,
                        nonce,
                        dh,
                    },
                    now,
                    deadline,
                );
            }
            Request::RekeyIke {
                spi, nonce, group, ..
            } => {
                let Ok((dh, public)) = DhPrivate::generate(group) else {
                    return;
                };
                let proposals: Vec<Proposal> = config
                    .ike
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        p.to_proposal(i as u8 + 1, protocol::IKE, spi.to_be_bytes().to_vec())
                    })
                    .collect();
                let payloads = vec![
                    Payload::Sa(proposals),
                    Payload::Nonce(nonce.clone()),
                    Payload::Ke {
                        group: dh.group().id(),
                        data: public,
                    },
                ];
                self.log("info", "CREATE_CHILD_SA", "rekeying the IKE SA".into());
                self.send_request(
                    exchange::CREATE_CHILD_SA,
                    payloads,
                    Request::RekeyIke {
                        spi,
                        nonce,
                        dh: Some(dh),
                        group,
                    },
                    now,
                    deadline,
                );
            }
            Request::DeleteChildren(spis) => {
                let list: Vec<Vec<u8>> = spis.iter().map(|s| s.to_be_bytes().to_vec()).collect();
                self.send_request(
                    exchange::INFORMATIONAL,
                    vec![Payload::Delete(Delete {
                        protocol: protocol::ESP,
                        spis: list,
                    })],
                    Request::DeleteChildren(spis),
                    now,
                    deadline,
                );
            }
            Request::DeleteIke => {
                self.send_request(
                    exchange::INFORMATIONAL,
                    vec![Payload::Delete(Delete {
                        protocol: protocol::IKE,
                        spis: vec![],
                    })],
                    Request::DeleteIke,
                    now,
                    Duration::from_secs(5),
                );
            }
            Request::Liveness => {
                // Probed after a third of the timeout of silence; the rest of it is the probe's
                // deadline, so a dead peer is reported dpdTimeoutSeconds after it fell silent.
                let deadline = config.dpd_timeout - config.dpd_timeout / 3;
                self.send_request(
                    exchange::INFORMATIONAL,
                    vec![],
                    Request::Liveness,
                    now,
                    deadline,
                );
                // A short timeout (fast failover, e.g. 1 s) retransmits sooner, so one lost probe
                // does not declare a live peer dead.
                if let Some(p) = self.pending.as_mut() {
                    p.interval = RETRANSMIT_BASE.min(deadline / 3);
                    p.next_retransmit = now + p.interval;
                }
            }
            Request::Auth => {}
        }
    }

    /// Sends DELETE for the whole IKE SA (§1.4.1); the SA is gone once answered or timed out.
    pub fn delete(&mut self, config: &Config, now: Instant) {
        for c in self.children.drain(..) {
            self.events.push_back(Event::ChildSaDown {
                conn: self.conn,
                inbound_spi: c.inbound_spi,
                outbound_spi: c.outbound_spi,
            });
        }
        if self.state == State::Established {
            self.state = State::Closing;
            self.pending = None;
            self.queue.clear();
            self.queue.push_back(Request::DeleteIke);
            self.send_queued(config, now);
        } else {
            self.dead = true;
        }
    }

    /// Closes this SA as a redundant duplicate: DELETE to the peer, Child SAs out, but no IkeSaDown (the
    /// connection stays up on the other SA).
    pub fn delete_duplicate(&mut self, config: &Config, now: Instant) {
        // The Child SAs stay installed until the peer has answered the DELETE: until then it may still
        // send on them (make-before-break for the duplicate, too).
        self.replaced = true;
        self.log(
            "info",
            "INFORMATIONAL",
            format!(
                "closing duplicate IKE SA {:016x} (both sides initiated)",
                self.local_spi()
            ),
        );
        self.state = State::Closing;
        self.pending = None;
        self.queue.clear();
        self.queue.push_back(Request::DeleteIke);
        self.send_queued(config, now);
    }

    /// A rekeyed IKE SA keeps the peer's authentication and addresses (§2.18).
    fn inherit_peer(&mut self, old: &IkeSa) {
        self.peer_hashes = old.peer_hashes.clone();
        self.peer_cert = old.peer_cert.clone();
        self.peer_identity = old.peer_identity.clone();
        self.lease = old.lease;
        self.virtual_ips = old.virtual_ips.clone();
        self.init_from = old.init_from;
    }

    /// Reports every remaining Child SA as gone (the IKE SA has ended).
    fn children_down(&mut self) {
        for c in self.children.drain(..) {
            self.events.push_back(Event::ChildSaDown {
                conn: self.conn,
                inbound_spi: c.inbound_spi,
                outbound_spi: c.outbound_spi,
            });
        }
    }

    /// The lowest nonce of the exchange that created this SA (ties broken by the duplicate rule).
    pub fn lowest_nonce(&self) -> Vec<u8> {
        self.ni.as_slice().min(self.nr.as_slice()).to_vec()
    }

    /// True once a rekey or duplicate resolution replaced this SA.
    pub fn is_replaced(&self) -> bool {
        self.replaced
    }

    /// Handles a datagram filed under this SA.
    #[allow(clippy::too_many_arguments)]
    pub fn handle(
        &mut self,
        config: &Config,
        msg: &Message,
        raw: &[u8],
        local_port: u16,
        from: SocketAddr,
        now: Instant,
        ctx: &mut Context<'_>,
    ) {
        if local_port == NATT_PORT {
            self.local_port = NATT_PORT;
        }
        if msg.header.is_response() {
            if msg.header.exchange == exchange::IKE_SA_INIT {
                return;
            }
            self.handle_response(config, msg, raw, now, ctx);
        } else {
            self.handle_request(config, msg, raw, from, now, ctx);
        }
    }

    /// Sends our cached response again (a retransmitted request arrived).
    pub fn resend_last_response(&mut self) {
        if let Some((id, bytes)) = &self.last_response {
            let port = if *id == 0 { IKE_PORT } else { self.local_port };
            for data in bytes {
                self.transmits.push_back(Transmit {
                    local_port: port,
                    remote: self.remote,
                    data: data.clone(),
                });
            }
        }
    }

    /// Marks the peer as alive (ESP arrived), postponing liveness checks.
    pub fn note_activity(&mut self, now: Instant) {
        self.last_heard = self.last_heard.max(now);
    }

    /// Timers: retransmission, request deadlines, rekeys, liveness checks.
    pub fn handle_timeout(&mut self, config: &Config, now: Instant) {
        // A half-open responder SA whose initiator never sent IKE_AUTH is forgotten (§2.6 pressure).
        if !self.initiator
            && self.state == State::InitDone
            && now >= self.last_heard + SETUP_TIMEOUT
        {
            self.dead = true;
            return;
        }
        if let Some(p) = self.pending.as_mut() {
            if now >= p.deadline {
                let exchange_name = ike_exchange_name(p.exchange);
                let (reason, message) = match (&p.request, self.state) {
                    (_, State::InitDone | State::AuthSent) if self.initiator => (
                        Reason::NoResponse,
                        format!("no response to {exchange_name} from {}", self.remote),
                    ),
                    (Request::DeleteIke, _) => {
                        self.dead = true;
                        self.pending = None;
                        self.children_down();
                        return;
                    }
                    _ => (
                        Reason::PeerDead,
                        format!(
                            "peer {} did not answer {exchange_name} for {} s (dead peer detection)",
                            self.remote,
                            config.dpd_timeout.as_secs()
                        ),
                    ),
                };
                self.fail(Self::simple_failure(
                    reason,
                    exchange_name,
                    None,
                    "sent",
                    message,
                ));
                return;
            }
            if now >= p.next_retransmit {
                p.interval = (p.interval * 2).min(RETRANSMIT_MAX);
                p.next_retransmit = now + p.interval;
                let port = if p.exchange == exchange::IKE_SA_INIT {
                    IKE_PORT
                } else {
                    self.local_port
                };
                for data in p.bytes.clone() {
                    self.transmits.push_back(Transmit {
                        local_port: port,
                        remote: self.remote,
                        data,
                    });
                }
            }
        }
        if self.state != State::Established {
            return;
        }
        if self.rekey_at.is_some_and(|t| now >= t)
            && !self
                .queue
                .iter()
                .any(|r| matches!(r, Request::RekeyIke { .. }))
        {
            self.rekey_at = None;
            let group = self.suite.map(|s| s.dh).unwrap_or(DhGroup::Ecp256);
            self.queue.push_back(Request::RekeyIke {
                spi: crypto::random_spi64(),
                nonce: nonce(),
                dh: None,
                group,
            });
        }
        self.recreate_children(config, now);
        let due: Vec<u32> = self
            .children
            .iter()
            .filter(|c| !c.retiring && now >= c.rekey_at)
            .map(|c| c.inbound_spi)
            .collect();
        for spi in due {
            if let Some(c) = self.children.iter_mut().find(|c| c.inbound_spi == spi) {
                c.rekey_at = now + config.child_lifetime;
                let index = c.config_index;
                self.queue_create_child(config, index, Some(spi), now);
            }
        }
        // Liveness (§1.4): probe a peer that has been silent for a third of the DPD timeout.
        let idle = config.dpd_timeout / 3;
        if self.pending.is_none()
            && self.queue.is_empty()
            && now.saturating_duration_since(self.last_heard) >= idle
        {
            self.queue.push_back(Request::Liveness);
        }
        self.send_queued(config, now);
    }

    /// The next time `handle_timeout` has work.
    pub fn poll_timeout(&self, config: &Config) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        if let Some(p) = &self.pending {
            consider(p.next_retransmit.min(p.deadline));
        }
        if !self.initiator && self.state == State::InitDone {
            consider(self.last_heard + SETUP_TIMEOUT);
        }
        if self.state == State::Established {
            if let Some(t) = self.rekey_at {
                consider(t);
            }
            for c in self.children.iter().filter(|c| !c.retiring) {
                consider(c.rekey_at);
            }
            if let Some(t) = self.child_retry_at {
                consider(t);
            }
            if self.pending.is_none() {
                consider(self.last_heard + config.dpd_timeout / 3);
            }
        }
        next
    }

    /// Starts the rekey of the Child SA that `spi` names (ours inbound or the peer's outbound),
    /// because the data plane saw it reach its soft volume limit (RFC 4301 §4.4.2.1, RFC 7296
    /// §2.8). Does nothing when that SA is already being rekeyed or deleted. Returns true when
    /// a rekey was queued.
    pub fn rekey_child_sa(&mut self, config: &Config, spi: u32, now: Instant) -> bool {
        let Some(child) = self
            .children
            .iter_mut()
            .find(|c| !c.retiring && (c.inbound_spi == spi || c.outbound_spi == spi))
        else {
            return false;
        };
        let inbound = child.inbound_spi;
        let is_rekey_of = |r: &Request| matches!(r, Request::CreateChild { rekey_of: Some(old), .. } if *old == inbound);
        if self.queue.iter().any(is_rekey_of)
            || self
                .pending
                .as_ref()
                .is_some_and(|p| is_rekey_of(&p.request))
        {
            return false;
        }
        // The time-based rekey starts over with the new SA; it must not fire for this one too.
        child.rekey_at = now + config.child_lifetime;
        let index = child.config_index;
        self.queue_create_child(config, index, Some(inbound), now);
        true
    }

    /// Deletes the Child SA that `spi` names (either direction's SPI) with an INFORMATIONAL DELETE
    /// (§1.4.1), keeping the IKE SA. Returns false when there is no such SA or it is already retiring.
    pub fn delete_child(&mut self, config: &Config, spi: u32, now: Instant) -> bool {
        let Some(child) = self
            .children
            .iter_mut()
            .find(|c| !c.retiring && (c.inbound_spi == spi || c.outbound_spi == spi))
        else {
            return false;
        };
        child.retiring = true;
        let inbound = child.inbound_spi;
        self.queue.push_back(Request::DeleteChildren(vec![inbound]));
        self.send_queued(config, now);
        true
    }

    /// Starts the Child SA rekey for testing and operator-triggered rekeys.
    pub fn rekey_children(&mut self, config: &Config, now: Instant) {
        let spis: Vec<(u32, usize)> = self
            .children
            .iter()
            .filter(|c| !c.retiring)
            .map(|c| (c.inbound_spi, c.config_index))
            .collect();
        for (spi, index) in spis {
            self.queue_create_child(config, index, Some(spi), now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_routes_become_ip4_subnets() {
        let routes = vec![
            TrafficSelector::from_prefix("10.1.0.0".parse().unwrap(), 16),
            TrafficSelector::from_prefix("192.0.2.7".parse().unwrap(), 32),
            TrafficSelector::any_v4(),
            TrafficSelector::any_v6(),
            TrafficSelector {
                start: "10.0.0.1".parse().unwrap(),
                end: "10.0.0.5".parse().unwrap(),
                ..TrafficSelector::any_v4()
            },
        ];
        assert_eq!(
            split_routes_v4(&routes),
            vec![
                vec![10, 1, 0, 0, 255, 255, 0, 0],
                vec![192, 0, 2, 7, 255, 255, 255, 255]
            ]
        );
    }
}
