//! BGP over the tunnels: the peers the desired state asks for, and what the speaker reports to the API
//! (`list-bgp-peer-status`, `list-learned-routes`, `list-advertised-routes`), the metrics and the status
//! page, in Azure's field names and formats.
//!
//! A peer exists for every connection with `enableBgp` whose local gateway has `bgpSettings`: vgw's
//! end is the gateway's `bgpPeeringAddress` (assigned to the TUN device so the kernel's TCP can use it),
//! the far end the local gateway's `bgpPeeringAddress`, reached by a host route through the
//! connection's tunnel (eBGP multihop). Timers and the prefix limit come from the local gateway's
//! `bgpSettings` (vgw extensions), else from the gateway's, else Azure's 180/60 s.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::model::MaxPrefixAction;
use crate::state::DesiredState;

use super::Instance;

/// Azure's default hold time (s).
pub const DEFAULT_HOLD_TIME: u16 = 180;
/// Azure's default keepalive interval (s).
pub const DEFAULT_KEEPALIVE: u16 = 60;
/// Default prefix limit per peer (Azure drops the session above 4000; vgw warns above this).
pub const DEFAULT_MAX_PREFIXES: u32 = 100_000;

/// One BGP neighbour, derived from a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    /// The connection that carries the session.
    pub connection: String,
    /// Our ASN.
    pub local_asn: u32,
    /// Our peering address.
    pub local_address: IpAddr,
    /// The neighbour's ASN.
    pub peer_asn: u32,
    /// The neighbour's peering address.
    pub peer_address: IpAddr,
    /// Weight added to its routes (local gateway's `peerWeight`, else the connection's `routingWeight`).
    pub weight: u32,
    /// Hold time (s).
    pub hold_time: u16,
    /// Keepalive interval (s).
    pub keepalive: u16,
    /// Prefix limit.
    pub max_prefixes: u32,
    /// What happens above the limit.
    pub max_prefix_action: MaxPrefixAction,
    /// BFD with the neighbour: interval and detection multiplier (vgw extension `enableBfd`).
    pub bfd: Option<(Duration, u8)>,
}

/// The gateway's own peering address when BGP is enabled: this instance's entry of
/// `bgpPeeringAddress` (the first, or the second on active-active instance 1).
pub fn local_peering_address(state: &DesiredState, instance: Instance) -> Option<IpAddr> {
    let gw = state.gateway.as_ref().filter(|g| g.enable_bgp)?;
    instance.peering_address(gw.bgp_settings.as_ref()?.bgp_peering_address.as_deref()?)
}

/// The peers the desired state asks for, keyed by connection name. Connections whose settings are
/// incomplete are skipped (validation already refuses most of those).
pub fn peers(state: &DesiredState, instance: Instance) -> BTreeMap<String, PeerSpec> {
    let mut out = BTreeMap::new();
    let Some(gw) = &state.gateway else {
        return out;
    };
    let Some(gw_bgp) = gw.bgp_settings.as_ref().filter(|_| gw.enable_bgp) else {
        return out;
    };
    let Some(local_address) = local_peering_address(state, instance) else {
        return out;
    };
    for (name, c) in &state.connections {
        if !c.enable_bgp {
            continue;
        }
        let Some(lg) = state.local_gateways.get(&c.local_network_gateway2.name) else {
            continue;
        };
        let Some(bgp) = &lg.bgp_settings else {
            continue;
        };
        let Some(peer_address) = bgp
            .bgp_peering_address
            .as_deref()
            .and_then(|a| a.trim().parse().ok())
        else {
            continue;
        };
        out.insert(
            name.clone(),
            PeerSpec {
                connection: name.clone(),
                local_asn: gw_bgp.asn as u32,
                local_address,
                peer_asn: bgp.asn as u32,
                peer_address,
                weight: if bgp.peer_weight > 0 {
                    bgp.peer_weight
                } else {
                    c.routing_weight
                },
                hold_time: bgp
                    .hold_time_seconds
                    .or(gw_bgp.hold_time_seconds)
                    .unwrap_or(DEFAULT_HOLD_TIME),
                keepalive: bgp
                    .keepalive_seconds
                    .or(gw_bgp.keepalive_seconds)
                    .unwrap_or(DEFAULT_KEEPALIVE),
                max_prefixes: bgp
                    .max_prefixes
                    .or(gw_bgp.max_prefixes)
                    .unwrap_or(DEFAULT_MAX_PREFIXES),
                max_prefix_action: bgp
                    .max_prefix_action
                    .or(gw_bgp.max_prefix_action)
                    .unwrap_or_default(),
                bfd: c.enable_bfd.then(|| {
                    (
                        Duration::from_millis(u64::from(
                            c.bfd_interval_milliseconds.unwrap_or(300),
                        )),
                        c.bfd_multiplier.unwrap_or(3),
                    )
                }),
            },
        );
    }
    out
}

/// Formats a duration as .NET's `TimeSpan` does (`[d.]hh:mm:ss.fffffff`), Azure's `connectedDuration`.
pub fn timespan(d: Duration) -> String {
    let secs = d.as_secs();
    let ticks = d.subsec_nanos() / 100;
    let (days, h, m, s) = (
        secs / 86_400,
        (secs % 86_400) / 3600,
        (secs % 3600) / 60,
        secs % 60,
    );
    if days > 0 {
        format!("{days}.{h:02}:{m:02}:{s:02}.{ticks:07}")
    } else {
        format!("{h:02}:{m:02}:{s:02}.{ticks:07}")
    }
}

/// Azure's BGP peer `state` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PeerState {
    /// Not known yet.
    #[default]
    Unknown,
    /// Configured but not running (its tunnel is down).
    Stopped,
    /// Idle (waiting to retry).
    Idle,
    /// Connect/Active/OpenSent/OpenConfirm.
    Connecting,
    /// Established.
    Connected,
}

impl PeerState {
    /// Azure's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "Unknown",
            Self::Stopped => "Stopped",
            Self::Idle => "Idle",
            Self::Connecting => "Connecting",
            Self::Connected => "Connected",
        }
    }
}

/// One peer's live numbers.
#[derive(Clone, Debug, Default)]
pub struct PeerStatus {
    /// The peer's definition.
    pub connection: String,
    /// Our peering address.
    pub local_address: String,
    /// Its peering address.
    pub neighbor: String,
    /// Its ASN.
    pub asn: u32,
    /// Session state.
    pub state: PeerState,
    /// When the session was established.
    pub connected_since: Option<Instant>,
    /// Prefixes currently received.
    pub routes_received: u64,
    /// Prefixes currently advertised.
    pub routes_advertised: u64,
    /// Messages sent.
    pub messages_sent: u64,
    /// Messages received.
    pub messages_received: u64,
    /// Why the session is not up (last NOTIFICATION, hold timer, no route...).
    pub last_error: Option<String>,
    /// BFD session state (Up, Down, Init, AdminDown) when BFD is on.
    pub bfd_state: Option<String>,
    /// Resets of the Established session within [`FLAP_WINDOW`].
    pub flap_count: u32,
    /// Set while the session flaps (more than [`FLAP_THRESHOLD`] resets within [`FLAP_WINDOW`]),
    /// e.g. "reset 9 times in the last 5 minutes; last: peer sent NOTIFICATION ...".
    pub flap_reason: Option<String>,
    /// Resets of the Established session since vgw started.
    pub resets_total: u64,
}

/// The window in which session resets are counted (`flapCount`).
pub const FLAP_WINDOW: Duration = Duration::from_secs(300);
/// More resets than this within [`FLAP_WINDOW`] make a session "flapping" (`flapReason`).
pub const FLAP_THRESHOLD: u32 = 3;

/// `flapReason` for `count` resets within [`FLAP_WINDOW`], None up to [`FLAP_THRESHOLD`].
pub fn flap_reason(count: u32, last: Option<&str>) -> Option<String> {
    (count > FLAP_THRESHOLD).then(|| {
        let mut text = format!(
            "reset {count} times in the last {} minutes",
            FLAP_WINDOW.as_secs() / 60
        );
        if let Some(last) = last {
            text.push_str("; last: ");
            text.push_str(last);
        }
        text
    })
}

/// One route, as `list-learned-routes` and `list-advertised-routes` show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRow {
    /// Our peering address.
    pub local_address: String,
    /// The prefix.
    pub network: String,
    /// Its next hop.
    pub next_hop: String,
    /// The peer it came from (empty for our own networks).
    pub source_peer: String,
    /// Network, EBgp, IBgp or Static.
    pub origin: String,
    /// Space-separated ASNs.
    pub as_path: String,
    /// Weight.
    pub weight: u32,
}

impl RouteRow {
    /// Azure's JSON shape.
    pub fn to_json(&self) -> Value {
        json!({
            "localAddress": self.local_address,
            "network": self.network,
            "nextHop": self.next_hop,
            "sourcePeer": self.source_peer,
            "origin": self.origin,
            "asPath": self.as_path,
            "weight": self.weight,
        })
    }
}

/// What the BGP speaker publishes for the API, metrics and the status page.
#[derive(Default)]
pub struct BgpStatus {
    inner: RwLock<Snapshot>,
}

/// A consistent view of the speaker's state.
#[derive(Clone, Default)]
pub struct Snapshot {
    /// Peers by neighbour address.
    pub peers: Vec<PeerStatus>,
    /// Our own networks and the learned routes (Loc-RIB), for `list-learned-routes`.
    pub learned: Vec<RouteRow>,
    /// Adj-RIB-Out per neighbour address.
    pub advertised: BTreeMap<String, Vec<RouteRow>>,
}

impl BgpStatus {
    /// Replaces the published state.
    pub fn publish(&self, snapshot: Snapshot) {
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = snapshot;
    }

    /// A copy of the published state.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `getBgpPeerStatus` rows (optionally one neighbour).
    pub fn peer_status_json(&self, peer: Option<&str>) -> Value {
        let snap = self.snapshot();
        let now = Instant::now();
        let value: Vec<Value> = snap
            .peers
            .iter()
            .filter(|p| peer.is_none_or(|want| p.neighbor == want))
            .map(|p| {
                json!({
                    "localAddress": p.local_address,
                    "neighbor": p.neighbor,
                    "asn": p.asn,
                    "state": p.state.as_str(),
                    "connectedDuration": p
                        .connected_since
                        .map(|t| timespan(now.saturating_duration_since(t)))
                        .unwrap_or_else(|| timespan(Duration::ZERO)),
                    "routesReceived": p.routes_received,
                    "messagesSent": p.messages_sent,
                    "messagesReceived": p.messages_received,
                    "connection": p.connection,
                    "lastError": p.last_error,
                    "bfdState": p.bfd_state,
                    "flapCount": p.flap_count,
                    "flapReason": p.flap_reason,
                })
            })
            .collect();
        json!({ "value": value })
    }

    /// `getLearnedRoutes` rows.
    pub fn learned_json(&self) -> Value {
        let snap = self.snapshot();
        json!({ "value": snap.learned.iter().map(RouteRow::to_json).collect::<Vec<_>>() })
    }

    /// `getAdvertisedRoutes` rows for one neighbour.
    pub fn advertised_json(&self, peer: &str) -> Value {
        let snap = self.snapshot();
        let rows = snap.advertised.get(peer).cloned().unwrap_or_default();
        json!({ "value": rows.iter().map(RouteRow::to_json).collect::<Vec<_>>() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespans_look_like_dotnet() {
        assert_eq!(timespan(Duration::from_millis(1500)), "00:00:01.5000000");
        assert_eq!(
            timespan(Duration::from_secs(86_400 + 3723) + Duration::from_nanos(1234567)),
            "1.01:02:03.0012345"
        );
    }

    #[test]
    fn flapping_is_named_above_the_threshold() {
        assert_eq!(flap_reason(3, Some("x")), None);
        assert_eq!(
            flap_reason(9, Some("peer sent NOTIFICATION Cease")).as_deref(),
            Some("reset 9 times in the last 5 minutes; last: peer sent NOTIFICATION Cease")
        );
    }
}
