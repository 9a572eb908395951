//! What the control plane tells the engine about a connection, and what the engine reports back.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cert::{LocalCertificate, TrustStore};
use crate::crypto::{DhGroup, Secret};
use crate::message::{Identity, TrafficSelector};
use crate::proposal::{EspSuite, ProposalSpec, default_esp, default_ike};

/// The control plane's handle for a connection.
pub type ConnId = u32;

/// Who may start negotiations (Azure's `connectionMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Initiate and respond.
    #[default]
    Default,
    /// Only initiate; refuse the peer's IKE_SA_INIT.
    InitiatorOnly,
    /// Only respond; never initiate.
    ResponderOnly,
}

/// One Child SA's selectors: route-based connections have one pair of "everything"; policy-based ones
/// one pair per prefix pair (`trafficSelectorPolicies`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildConfig {
    /// Our side.
    pub local: Vec<TrafficSelector>,
    /// The peer's side.
    pub remote: Vec<TrafficSelector>,
}

/// How we authenticate ourselves (RFC 7296 §2.15, §3.8).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum LocalAuth {
    /// Pre-shared key ([`Config::psk`]), AUTH method 2.
    #[default]
    Psk,
    /// Our certificate chain and private key: CERT payloads and a signature (methods 14, 9–11).
    Certificate(Arc<LocalCertificate>),
}

/// How the peer must authenticate (RFC 7296 §2.15, §3.8).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum PeerAuth {
    /// Pre-shared key ([`Config::psk`]).
    #[default]
    Psk,
    /// A certificate chaining to one of the trusted roots, not revoked, matching the peer's ID, and a
    /// valid signature (methods 1, 9–11, 14). We send CERTREQ for the roots (§3.7).
    Certificate(Arc<TrustStore>),
}

/// The remote-access (point-to-site) role of a connection.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum RemoteAccess {
    /// Site-to-site: one peer at `remote_addr`.
    #[default]
    None,
    /// Gateway for road-warrior clients: accepts IKE_SA_INIT from any address, one IKE SA per client,
    /// addresses from the pool via the configuration payload (§3.15).
    Server(RemoteAccessServer),
    /// A road-warrior client: sends CFG_REQUEST in IKE_AUTH and takes the address it is given.
    Client(RemoteAccessClient),
}

/// Settings of a remote-access gateway connection. The split-tunnel routes clients get as TSr are the
/// `local` selectors of the connection's first [`ChildConfig`]; its `remote` side is replaced by each
/// client's assigned addresses (TSi = address/32, /128).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RemoteAccessServer {
    /// IPv4 client pool (`vpnClientAddressPool`), e.g. 172.16.201.0/24.
    pub pool_v4: Option<(Ipv4Addr, u8)>,
    /// Optional IPv6 client pool.
    pub pool_v6: Option<(Ipv6Addr, u8)>,
    /// DNS servers sent as INTERNAL_IP4_DNS / INTERNAL_IP6_DNS (§3.15.1).
    pub dns: Vec<IpAddr>,
}

/// Settings of a remote-access client connection (§3.15.1 CFG_REQUEST).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAccessClient {
    /// Ask for INTERNAL_IP4_ADDRESS (and INTERNAL_IP4_DNS).
    pub request_v4: bool,
    /// Ask for INTERNAL_IP6_ADDRESS (and INTERNAL_IP6_DNS).
    pub request_v6: bool,
}

impl Default for RemoteAccessClient {
    fn default() -> Self {
        Self {
            request_v4: true,
            request_v6: false,
        }
    }
}

/// A connection's IKE settings.
#[derive(Clone)]
pub struct Config {
    /// Our address (the gateway's public IP): the default ID and the NAT detection input.
    pub local_addr: IpAddr,
    /// The peer's address.
    pub remote_addr: IpAddr,
    /// The peer's IKE port (500).
    pub remote_port: u16,
    /// Our identity (default: our address).
    pub local_id: Identity,
    /// The identity the peer must present (default: its address).
    pub remote_id: Identity,
    /// The pre-shared key (used when `local_auth` or `peer_auth` is `Psk`).
    pub psk: Secret,
    /// How we authenticate (default: PSK).
    pub local_auth: LocalAuth,
    /// How the peer must authenticate (default: PSK).
    pub peer_auth: PeerAuth,
    /// Point-to-site role (default: none, site-to-site).
    pub remote_access: RemoteAccess,
    /// IKE proposals.
    pub ike: Vec<ProposalSpec>,
    /// ESP proposals (their `dh` lists are the acceptable PFS groups).
    pub esp: Vec<ProposalSpec>,
    /// PFS group we use when we create or rekey a Child SA (None: no PFS).
    pub pfs: Option<DhGroup>,
    /// Who may initiate.
    pub mode: Mode,
    /// Child SAs to establish.
    pub children: Vec<ChildConfig>,
    /// Dead-peer detection: a peer silent this long is probed; no answer within it means dead.
    pub dpd_timeout: Duration,
    /// IKE SA lifetime (rekeyed before it ends).
    pub ike_lifetime: Duration,
    /// Child SA lifetime (rekeyed before it ends).
    pub child_lifetime: Duration,
    /// Child SA volume limit in bytes.
    pub child_lifetime_bytes: Option<u64>,
    /// Largest IKE message sent whole; larger protected messages are fragmented (RFC 7383) when the peer
    /// supports it. 1200 fits a 1280-byte IPv6 minimum MTU with IP, UDP and the non-ESP marker.
    pub fragment_size: usize,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("local", &self.local_addr)
            .field("remote", &self.remote_addr)
            .field("mode", &self.mode)
            .field("psk", &"<redacted>")
            .field("local_auth", &self.local_auth)
            .field("peer_auth", &self.peer_auth)
            .field("remote_access", &self.remote_access)
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    /// Unspecified addresses, no key, PSK authentication, default proposals, one "everything" IPv4
    /// Child SA, DPD 45 s, IKE SA 8 h, Child SA 1 h: a base for `..Default::default()`.
    fn default() -> Self {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        Config {
            local_addr: any,
            remote_addr: any,
            remote_port: 500,
            local_id: Identity::from_ip(any),
            remote_id: Identity::from_ip(any),
            psk: Secret::default(),
            local_auth: LocalAuth::Psk,
            peer_auth: PeerAuth::Psk,
            remote_access: RemoteAccess::None,
            ike: default_ike(),
            esp: default_esp(true),
            pfs: None,
            mode: Mode::Default,
            children: vec![ChildConfig {
                local: vec![TrafficSelector::any_v4()],
                remote: vec![TrafficSelector::any_v4()],
            }],
            dpd_timeout: Duration::from_secs(45),
            ike_lifetime: Duration::from_secs(28_800),
            child_lifetime: Duration::from_secs(3600),
            child_lifetime_bytes: None,
            fragment_size: 1200,
        }
    }
}

impl Config {
    /// True for a remote-access gateway connection.
    pub fn is_remote_access_server(&self) -> bool {
        matches!(self.remote_access, RemoteAccess::Server(_))
    }
}

/// Why an IKE SA is down or could not be established: the typed reason operators read
/// (`connectionStatusReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The peer or we refused authentication (wrong PSK, AUTHENTICATION_FAILED).
    AuthorizationError,
    /// No common proposal (NO_PROPOSAL_CHOSEN, INVALID_KE_PAYLOAD loops).
    NegotiationFailure,
    /// The peer presented another identity than configured.
    PeerIdentityMismatch,
    /// Traffic selectors not acceptable.
    TsUnacceptable,
    /// Dead-peer detection: no answer to liveness checks.
    PeerDead,
    /// The peer never answered our IKE_SA_INIT.
    NoResponse,
    /// The peer deleted the IKE SA.
    DeletedByPeer,
    /// The peer deleted the last Child SA (INFORMATIONAL DELETE for ESP, RFC 7296 §1.4.1) while
    /// keeping the IKE SA: nothing carries traffic until a Child SA is created again.
    ChildSaDeletedByPeer,
    /// Reset or removed by the operator.
    Administrative,
    /// The peer sent something we could not process.
    ProtocolError,
    /// The peer's certificate does not chain to a trusted root (unknown CA).
    CertificateUntrusted,
    /// The peer's certificate (or one in its chain) has expired or is not valid yet.
    CertificateExpired,
    /// The peer's certificate (or one in its chain) is on the revocation list.
    CertificateRevoked,
    /// The peer sent no usable certificate (missing, malformed, unsupported key, wrong key usage).
    CertificateInvalid,
    /// The peer's ID payload does not match its certificate's subject or subjectAltName.
    CertificateIdentityMismatch,
    /// The remote-access address pool has no free address.
    PoolExhausted,
}

impl Reason {
    /// The value shown as `connectionStatusReason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::AuthorizationError => "AUTHORIZATION_ERROR",
            Reason::NegotiationFailure => "NEGOTIATION_FAILURE",
            Reason::PeerIdentityMismatch => "PEER_IDENTITY_MISMATCH",
            Reason::TsUnacceptable => "TS_UNACCEPTABLE",
            Reason::PeerDead => "PEER_DEAD",
            Reason::NoResponse => "NO_RESPONSE",
            Reason::DeletedByPeer => "DELETED_BY_PEER",
            Reason::ChildSaDeletedByPeer => "CHILD_SA_DELETED_BY_PEER",
            Reason::Administrative => "ADMINISTRATIVE",
            Reason::ProtocolError => "PROTOCOL_ERROR",
            Reason::CertificateUntrusted => "CERTIFICATE_UNTRUSTED",
            Reason::CertificateExpired => "CERTIFICATE_EXPIRED",
            Reason::CertificateRevoked => "CERTIFICATE_REVOKED",
            Reason::CertificateInvalid => "CERTIFICATE_INVALID",
            Reason::CertificateIdentityMismatch => "CERTIFICATE_IDENTITY_MISMATCH",
            Reason::PoolExhausted => "POOL_EXHAUSTED",
        }
    }
}

/// The detail of a failure, for `lastError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The typed reason.
    pub reason: Reason,
    /// The exchange, e.g. `IKE_AUTH`.
    pub exchange: &'static str,
    /// The notify sent or received, e.g. `NO_PROPOSAL_CHOSEN`.
    pub notify: Option<String>,
    /// Whether the notify came from the peer (`received`) or from us (`sent`).
    pub direction: &'static str,
    /// What happened, for a person.
    pub message: String,
    /// Our proposals, strongSwan-style, for proposal failures.
    pub our_proposals: Vec<String>,
    /// The peer's proposals, for proposal failures.
    pub peer_proposals: Vec<String>,
    /// Our traffic selectors (`local === remote`, one per configured Child SA), for TS_UNACCEPTABLE.
    pub our_selectors: Vec<String>,
    /// The peer's traffic selectors (`TSi === TSr` as it proposed them), for TS_UNACCEPTABLE when the
    /// peer proposed; empty when it only refused ours.
    pub peer_selectors: Vec<String>,
}

/// Keys and parameters of a Child SA for the data plane (RFC 7296 §2.17).
pub struct ChildSaKeys {
    /// SPI we receive on.
    pub inbound_spi: u32,
    /// SPI we send with.
    pub outbound_spi: u32,
    /// The negotiated suite.
    pub suite: EspSuite,
    /// Key material for sending (encryption key then integrity key).
    pub outbound_key: Secret,
    /// Key material for receiving.
    pub inbound_key: Secret,
    /// Our selectors.
    pub local_ts: Vec<TrafficSelector>,
    /// The peer's selectors.
    pub remote_ts: Vec<TrafficSelector>,
    /// Where ESP goes (the peer's NAT-T address).
    pub remote: SocketAddr,
    /// Byte limit from the configuration.
    pub lifetime_bytes: Option<u64>,
}

impl std::fmt::Debug for ChildSaKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ChildSaKeys(in {:08x}, out {:08x}, {})",
            self.inbound_spi, self.outbound_spi, self.suite
        )
    }
}

/// A connected remote-access client (point-to-site session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// The remote-access connection the client came in on.
    pub server: ConnId,
    /// The engine's id for this client session; its IkeSaUp, ChildSaUp, ChildSaDown and IkeSaDown
    /// events carry it as `conn`. Allocated from [`CLIENT_CONN_BASE`] upwards.
    pub client: ConnId,
    /// `vpnUserName`: the certificate's common name, else its subject.
    pub user_name: String,
    /// The certificate subject, e.g. `CN=client1, O=Contoso`.
    pub subject: String,
    /// The end-entity certificate thumbprint (SHA-1, upper-case hex).
    pub thumbprint: String,
    /// The identity the client presented (IDi), as text.
    pub identity: String,
    /// The client's public address and port (after NAT).
    pub remote: SocketAddr,
    /// Addresses assigned from the pool.
    pub addresses: Vec<IpAddr>,
    /// When IKE_AUTH completed.
    pub connected_at: Instant,
    /// The same as wall-clock time, when the endpoint has one ([`crate::Endpoint::set_wall_clock`]).
    pub connected_at_wall: Option<std::time::SystemTime>,
}

/// Connection ids at and above this value are client sessions the engine allocated; the control plane
/// must keep its own ids below it.
pub const CLIENT_CONN_BASE: ConnId = 0x8000_0000;

/// What the engine reports.
#[derive(Debug)]
pub enum Event {
    /// A remote-access client authenticated and got its addresses (its Child SA follows as ChildSaUp
    /// with `conn` = `info.client`).
    ClientUp(ClientInfo),
    /// A remote-access client session ended (or failed authentication): its Child SAs are reported
    /// gone separately; its lease is released (and kept for it a while).
    ClientDown {
        /// The remote-access connection.
        server: ConnId,
        /// The client session id.
        client: ConnId,
        /// `vpnUserName`, when the certificate was read.
        user_name: Option<String>,
        /// The client's address.
        remote: SocketAddr,
        /// Why.
        failure: Failure,
    },
    /// A remote-access client connection was given addresses and DNS servers (CFG_REPLY, §3.15).
    AddressesAssigned {
        /// Connection.
        conn: ConnId,
        /// INTERNAL_IP4_ADDRESS / INTERNAL_IP6_ADDRESS.
        addresses: Vec<IpAddr>,
        /// INTERNAL_IP4_DNS / INTERNAL_IP6_DNS.
        dns: Vec<IpAddr>,
    },
    /// An IKE SA is established.
    IkeSaUp {
        /// Connection.
        conn: ConnId,
        /// Negotiated suite, as text.
        suite: String,
        /// The peer's address.
        remote: SocketAddr,
        /// True when this replaced an older IKE SA (rekey).
        rekey: bool,
    },
    /// A Child SA is ready: install it. `replaces` names the SPIs (inbound, outbound) of the SA it rekeys.
    ChildSaUp {
        /// Connection.
        conn: ConnId,
        /// Keys and selectors.
        keys: ChildSaKeys,
        /// The Child SA this one replaces.
        replaces: Option<(u32, u32)>,
    },
    /// A Child SA is gone: remove it.
    ChildSaDown {
        /// Connection.
        conn: ConnId,
        /// Our inbound SPI.
        inbound_spi: u32,
        /// Our outbound SPI.
        outbound_spi: u32,
    },
    /// The IKE SA stays established but carries no Child SA any more: the peer deleted the last one
    /// (INFORMATIONAL DELETE for ESP, RFC 7296 §1.4.1; its ChildSaDown came first). The connection
    /// carries no traffic until a Child SA is created again (reported as ChildSaUp with no `replaces`).
    ChildSasGone {
        /// Connection.
        conn: ConnId,
        /// Why (reason [`Reason::ChildSaDeletedByPeer`]).
        failure: Failure,
        /// True when vgw re-creates the Child SA itself (CREATE_CHILD_SA with back-off, then a new
        /// IKE SA); false when it waits for the peer (connectionMode ResponderOnly).
        recreating: bool,
    },
    /// The IKE SA is down (with its Child SAs, reported separately).
    IkeSaDown {
        /// Connection.
        conn: ConnId,
        /// Why.
        failure: Failure,
    },
    /// An exchange that was not authenticated was refused or dropped: an IKE_SA_INIT we refused, a
    /// datagram for an unknown IKE SA or one that failed its integrity check, an unexpected
    /// IKE_SA_INIT response, a new IKE SA that failed before it authenticated. RFC 7296 §2.21 and
    /// §2.6: such a message may end only the half-open exchange it belongs to; it changed no
    /// established IKE SA and no Child SA. Count it; show `failure` as the connection's lastError only
    /// when `established` is false (nothing carries the connection); never stop BGP for it.
    Refused {
        /// The connection the datagram belongs to or whose peer address it came from (None: no
        /// connection has that address). Client sessions report their remote-access connection.
        conn: Option<ConnId>,
        /// The exchange, e.g. `IKE_SA_INIT`.
        exchange: &'static str,
        /// A short, fixed label for counters, e.g. `NO_PROPOSAL_CHOSEN`, `INTEGRITY_CHECK_FAILED`,
        /// `UNKNOWN_SPI`, `AUTHORIZATION_ERROR`.
        reason: &'static str,
        /// Where the datagram came from.
        remote: SocketAddr,
        /// True when the connection has an established IKE SA (which this exchange did not touch).
        established: bool,
        /// What an operator should read when this refusal explains why a connection that is not
        /// connected cannot connect (e.g. a proposal mismatch); None for mere noise.
        failure: Option<Failure>,
    },
    /// Something worth a line in IKEDiagnosticLog.
    Log {
        /// Connection (None: a datagram we could not attribute). Lines about a remote-access client carry
        /// the remote-access connection's id and begin with `client <id> (<address>)`.
        conn: Option<ConnId>,
        /// info, warning, error.
        level: &'static str,
        /// The exchange.
        exchange: &'static str,
        /// The line.
        message: String,
    },
}
