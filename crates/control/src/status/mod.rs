//! Live status, computed from the engines rather than stored (architecture: "status is computed").
//!
//! The REST API asks a [`StatusSource`] for each connection's state. Until the tunnel engines run, the
//! daemon uses [`NoEngines`], which answers `Unknown` and zero bytes — the honest answer.

pub mod listener;
pub mod metrics;
pub mod page;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `connectionStatus` values (Azure's four).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConnectionState {
    /// No information yet.
    #[default]
    Unknown,
    /// Negotiating.
    Connecting,
    /// At least one Child SA is installed.
    Connected,
    /// Down; `connectionStatusReason` says why.
    NotConnected,
}

/// One tunnel of a connection (two with active-active), Azure's `tunnelConnectionStatus[]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TunnelStatus {
    /// `local-ip -> remote-ip` of this tunnel.
    pub tunnel: String,
    /// This tunnel's state.
    pub connection_status: ConnectionState,
    /// Bytes received from the site on this tunnel.
    pub ingress_bytes_transferred: u64,
    /// Bytes sent to the site on this tunnel.
    pub egress_bytes_transferred: u64,
    /// When the tunnel last came up (RFC 3339, UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_connection_established_utc_time: Option<String>,
}

/// The read-only status fields of a connection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStatus {
    /// Azure's `connectionStatus`.
    pub connection_status: ConnectionState,
    /// vgw's typed reason when not connected (e.g. `AUTHORIZATION_ERROR`), null otherwise.
    pub connection_status_reason: Option<String>,
    /// The last failed exchange, notify and proposal diff; null when none.
    pub last_error: Option<serde_json::Value>,
    /// Total bytes received from the site.
    pub ingress_bytes_transferred: u64,
    /// Total bytes sent to the site.
    pub egress_bytes_transferred: u64,
    /// Per-tunnel status.
    pub tunnel_connection_status: Vec<TunnelStatus>,
    /// vgw: IKE SA rekeys since the daemon started.
    pub ike_sa_rekeys: u64,
    /// vgw: Child SA rekeys since the daemon started.
    pub child_sa_rekeys: u64,
    /// vgw: unauthenticated IKE exchanges from this connection's peer address (or for its IKE SAs)
    /// that were refused or dropped since the daemon started: refused IKE_SA_INIT proposals,
    /// messages failing their integrity check, unknown SPIs. RFC 7296 §2.21: none of them changed
    /// the connection's status.
    pub refused_exchanges: u64,
    /// vgw: the last of those (time, exchange, reason, source address, detail); null when none.
    pub last_refused_exchange: Option<serde_json::Value>,
}

/// Where the API reads live status from; the data plane and the engines implement it.
pub trait StatusSource: Send + Sync {
    /// The status of connection `name`.
    fn connection_status(&self, name: &str) -> ConnectionStatus;
}

/// The status source before any engine runs: everything is `Unknown` with zero bytes.
pub struct NoEngines;

impl StatusSource for NoEngines {
    fn connection_status(&self, _name: &str) -> ConnectionStatus {
        ConnectionStatus::default()
    }
}
