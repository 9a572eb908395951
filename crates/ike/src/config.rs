//! What the control plane tells the engine about a connection, and what the engine reports back.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::crypto::{DhGroup, Secret};
use crate::message::{Identity, TrafficSelector};
use crate::proposal::{EspSuite, ProposalSpec};

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
    /// The pre-shared key.
    pub psk: Secret,
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
            .finish_non_exhaustive()
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
    /// Reset or removed by the operator.
    Administrative,
    /// The peer sent something we could not process.
    ProtocolError,
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
            Reason::Administrative => "ADMINISTRATIVE",
            Reason::ProtocolError => "PROTOCOL_ERROR",
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

/// What the engine reports.
#[derive(Debug)]
pub enum Event {
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
    /// The IKE SA is down (with its Child SAs, reported separately).
    IkeSaDown {
        /// Connection.
        conn: ConnId,
        /// Why.
        failure: Failure,
    },
    /// Something worth a line in IKEDiagnosticLog.
    Log {
        /// Connection (None: a datagram we could not attribute).
        conn: Option<ConnId>,
        /// info, warning, error.
        level: &'static str,
        /// The exchange.
        exchange: &'static str,
        /// The line.
        message: String,
    },
}
