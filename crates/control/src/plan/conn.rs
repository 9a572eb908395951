//! The kinds of connection the IKE engine runs for the control plane, as a type. The engine numbers
//! connections with one [`ConnId`]; this module is the one place that knows which numbers mean what:
//! site-to-site connections are allocated by the reconciler from 1, the point-to-site server has one
//! fixed id, and the engine allocates client sessions from [`vgw_ike::CLIENT_CONN_BASE`] upwards.

use vgw_ike::ConnId;

/// What a connection id of the IKE engine stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConnKind {
    /// A `vpn-connection` to a local network gateway, numbered by the reconciler.
    SiteToSite(ConnId),
    /// The point-to-site remote-access server (the gateway's `vpnClientConfiguration`).
    PointToSiteServer,
    /// One remote-access client session, numbered by the engine.
    PointToSiteClient(ConnId),
}

/// The point-to-site server's engine id: above every site-to-site id, below the client sessions.
const P2S_SERVER: ConnId = 0x7fff_0000;

impl ConnKind {
    /// The kind of the engine's connection `id`.
    pub fn of(id: ConnId) -> ConnKind {
        if id >= vgw_ike::CLIENT_CONN_BASE {
            ConnKind::PointToSiteClient(id)
        } else if id == P2S_SERVER {
            ConnKind::PointToSiteServer
        } else {
            ConnKind::SiteToSite(id)
        }
    }

    /// The engine's id for this connection.
    pub fn id(self) -> ConnId {
        match self {
            ConnKind::SiteToSite(id) | ConnKind::PointToSiteClient(id) => id,
            ConnKind::PointToSiteServer => P2S_SERVER,
        }
    }

    /// Whether the connection belongs to point-to-site (the server or one of its clients).
    pub fn is_point_to_site(self) -> bool {
        !matches!(self, ConnKind::SiteToSite(_))
    }
}

/// Hands out site-to-site ids from 1; refuses to run into the point-to-site range.
#[derive(Debug)]
pub struct SiteIds {
    next: ConnId,
}

impl Default for SiteIds {
    fn default() -> Self {
        Self { next: 1 }
    }
}

impl SiteIds {
    /// The next unused site-to-site id, or None when all (2^31 - 2^16) have been handed out.
    pub fn allocate(&mut self) -> Option<ConnId> {
        let id = self.next;
        if id >= P2S_SERVER {
            return None;
        }
        self.next += 1;
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_engine_ids() {
        for kind in [
            ConnKind::SiteToSite(1),
            ConnKind::SiteToSite(P2S_SERVER - 1),
            ConnKind::PointToSiteServer,
            ConnKind::PointToSiteClient(vgw_ike::CLIENT_CONN_BASE),
            ConnKind::PointToSiteClient(u32::MAX),
        ] {
            assert_eq!(ConnKind::of(kind.id()), kind);
        }
        assert!(!ConnKind::of(7).is_point_to_site());
        assert!(ConnKind::PointToSiteServer.is_point_to_site());
    }

    #[test]
    fn site_ids_stay_below_point_to_site() {
        let mut ids = SiteIds::default();
        assert_eq!(ids.allocate(), Some(1));
        assert_eq!(ids.allocate(), Some(2));
        let mut full = SiteIds {
            next: P2S_SERVER - 1,
        };
        assert_eq!(full.allocate(), Some(P2S_SERVER - 1));
        assert_eq!(full.allocate(), None);
    }
}
