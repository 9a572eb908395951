//! The routing information bases (RFC 4271 §3.2, §9): Adj-RIB-In per peer, the Loc-RIB with best-path
//! selection and ECMP, and Adj-RIB-Out per peer, sans-IO.
//!
//! Every change returns a [`RibChanges`]: what the forwarding table must do (a prefix now goes to
//! these peers' tunnels, or nowhere) and, per established peer, the announcements and withdrawals
//! that make its Adj-RIB-Out match the new Loc-RIB.
//!
//! Decision process (§9.1.2.2, with the usual vendor additions): highest weight (a local setting per
//! peer, Azure's `peerWeight`), highest LOCAL_PREF (100 when absent), shortest AS_PATH, lowest ORIGIN,
//! lowest MED (compared only between paths from the same neighbouring AS; absent = 0), eBGP over iBGP,
//! lowest BGP identifier, lowest peer address. Paths equal up to and including "eBGP over iBGP" form a
//! multipath set (at most `max_paths`), the ECMP group the data plane may spread over.
//!
//! Export policy: our own networks (origin IGP) and the best route of every prefix learned from
//! another peer (transit between sites, as Azure does), with our ASN prepended, the next hop set to
//! our peering address, and LOCAL_PREF and MED removed (they do not cross AS borders, §5.1.4/§5.1.5).
//! Never back to the peer it came from, and never to a peer whose ASN is already in the path
//! (sender-side loop prevention; the receiver drops paths containing its own ASN, §9.1.2).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::IpNet;

use crate::codec::{AFI_IPV4, AFI_IPV6, Origin, PathAttributes, Segment, Update};
use crate::session::Negotiated;

/// The caller's name for a peer.
pub type PeerId = u32;

/// What the RIB needs to know about a peer.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The peer's ASN.
    pub asn: u32,
    /// Its BGP identifier (for the tie-break), once known.
    pub router_id: Ipv4Addr,
    /// Its peering address.
    pub address: IpAddr,
    /// Weight of its routes.
    pub weight: u32,
    /// Our address towards it: the next hop we advertise.
    pub local_address: IpAddr,
}

/// A path in the Adj-RIB-In.
#[derive(Clone, Debug)]
pub struct Path {
    /// Where it came from.
    pub peer: PeerId,
    /// Its attributes.
    pub attributes: Arc<PathAttributes>,
    /// Kept across the peer's restart (RFC 4724), to be refreshed or flushed.
    pub stale: bool,
}

/// A forwarding-table change: `prefix` now goes to these peers (empty: remove it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FibChange {
    /// The prefix.
    pub prefix: IpNet,
    /// The multipath set, best first.
    pub next_hops: Vec<PeerId>,
}

/// What one peer must be told.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outbound {
    /// Announcements grouped by shared attributes.
    pub announce: Vec<(PathAttributes, Vec<IpNet>)>,
    /// Withdrawals.
    pub withdraw: Vec<IpNet>,
}

impl Outbound {
    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.announce.is_empty() && self.withdraw.is_empty()
    }
}

/// The result of a RIB operation.
#[derive(Clone, Debug, Default)]
pub struct RibChanges {
    /// Forwarding-table changes.
    pub fib: Vec<FibChange>,
    /// Per-peer UPDATE content.
    pub outbound: BTreeMap<PeerId, Outbound>,
    /// Announced prefixes dropped because their AS_PATH holds our own ASN (loop detection, RFC 4271
    /// §9.1.2): not learned.
    pub looped: Vec<IpNet>,
}

impl RibChanges {
    fn merge(&mut self, other: RibChanges) {
        self.fib.extend(other.fib);
        self.looped.extend(other.looped);
        for (peer, out) in other.outbound {
            let e = self.outbound.entry(peer).or_default();
            e.announce.extend(out.announce);
            e.withdraw.extend(out.withdraw);
        }
    }
}

/// One row of `list-learned-routes` / `list-advertised-routes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteView {
    /// The prefix.
    pub prefix: IpNet,
    /// The peer it came from (None: our own network).
    pub peer: Option<PeerId>,
    /// Attributes.
    pub attributes: Arc<PathAttributes>,
    /// Whether it is (among) the best.
    pub best: bool,
}

struct PeerEntry {
    info: PeerInfo,
    established: bool,
    /// What the session agreed: only these prefixes are exported to the peer.
    negotiated: Negotiated,
}

/// The RIBs of one speaker.
pub struct Rib {
    local_asn: u32,
    max_paths: usize,
    peers: HashMap<PeerId, PeerEntry>,
    networks: BTreeSet<IpNet>,
    adj_in: HashMap<PeerId, HashMap<IpNet, Path>>,
    /// Loc-RIB for learned prefixes: the multipath set.
    best: HashMap<IpNet, Vec<PeerId>>,
    adj_out: HashMap<PeerId, HashMap<IpNet, Arc<PathAttributes>>>,
}

impl Rib {
    /// An empty RIB for a speaker in `local_asn`, with ECMP over at most `max_paths` paths.
    pub fn new(local_asn: u32, max_paths: usize) -> Self {
        Self {
            local_asn,
            max_paths: max_paths.max(1),
            peers: HashMap::new(),
            networks: BTreeSet::new(),
            adj_in: HashMap::new(),
            best: HashMap::new(),
            adj_out: HashMap::new(),
        }
    }

    /// Our ASN.
    pub fn local_asn(&self) -> u32 {
        self.local_asn
    }

    /// Adds or updates a peer (not yet established).
    pub fn add_peer(&mut self, id: PeerId, info: PeerInfo) {
        match self.peers.get_mut(&id) {
            Some(e) => e.info = info,
            None => {
                self.peers.insert(
                    id,
                    PeerEntry {
                        info,
                        established: false,
                        negotiated: Negotiated::default(),
                    },
                );
            }
        }
    }

    /// Removes a peer and everything learned from it.
    pub fn remove_peer(&mut self, id: PeerId) -> RibChanges {
        let changes = self.peer_down(id, false);
        self.peers.remove(&id);
        self.adj_out.remove(&id);
        changes
    }

    /// Sets the peer's BGP identifier once its OPEN arrived.
    pub fn set_router_id(&mut self, id: PeerId, router_id: Ipv4Addr) {
        if let Some(e) = self.peers.get_mut(&id) {
            e.info.router_id = router_id;
        }
    }

    /// Our own networks (the gateway's address space, the point-to-site pool), origin IGP.
    pub fn set_networks(&mut self, networks: impl IntoIterator<Item = IpNet>) -> RibChanges {
        let new: BTreeSet<IpNet> = networks.into_iter().map(|n| n.trunc()).collect();
        let touched: Vec<IpNet> = new.symmetric_difference(&self.networks).copied().collect();
        self.networks = new;
        self.recompute(&touched)
    }

    /// The session came up: the peer gets our whole Adj-RIB-Out, limited to what `negotiated` lets
    /// the session carry (RFC 4760 §6: a family the peer did not announce is never exported to it,
    /// so `list-advertised-routes` shows what the peer really received).
    pub fn peer_established(&mut self, id: PeerId, negotiated: &Negotiated) -> RibChanges {
        let Some(e) = self.peers.get_mut(&id) else {
            return RibChanges::default();
        };
        e.established = true;
        e.negotiated = negotiated.clone();
        self.adj_out.insert(id, HashMap::new());
        let mut prefixes: Vec<IpNet> = self.networks.iter().copied().collect();
        prefixes.extend(self.best.keys().copied());
        let mut changes = RibChanges::default();
        let out = self.export_diff(id, &prefixes);
        if !out.is_empty() {
            changes.outbound.insert(id, out);
        }
        changes
    }

    /// The session went down. With `keep_stale` (graceful restart) its paths stay, marked stale,
    /// until an End-of-RIB or [`Rib::flush_stale`]; otherwise they go now.
    pub fn peer_down(&mut self, id: PeerId, keep_stale: bool) -> RibChanges {
        if keep_stale {
            self.peer_down_keeping(id, &[AFI_IPV4, AFI_IPV6])
        } else {
            self.peer_down_keeping(id, &[])
        }
    }

    /// The session went down gracefully (RFC 4724 §4.2): the paths of the families in `keep_afis`
    /// (those of the peer's graceful-restart capability) stay, marked stale; the others go now.
    pub fn peer_down_keeping(&mut self, id: PeerId, keep_afis: &[u16]) -> RibChanges {
        if let Some(e) = self.peers.get_mut(&id) {
            e.established = false;
        }
        self.adj_out.remove(&id);
        let paths = self.adj_in.entry(id).or_default();
        let mut touched = Vec::new();
        paths.retain(|prefix, p| {
            if keep_afis.contains(&afi_of(prefix)) {
                p.stale = true;
                true
            } else {
                touched.push(*prefix);
                false
            }
        });
        if paths.is_empty() {
            self.adj_in.remove(&id);
        }
        self.recompute(&touched)
    }

    /// Drops the peer's stale paths (restart timer expired, or End-of-RIB for `family`).
    pub fn flush_stale(&mut self, id: PeerId, family: Option<u16>) -> RibChanges {
        let Some(paths) = self.adj_in.get_mut(&id) else {
            return RibChanges::default();
        };
        let touched: Vec<IpNet> = paths
            .iter()
            .filter(|(prefix, p)| {
                p.stale
                    && family.is_none_or(|afi| (afi == AFI_IPV4) == matches!(prefix, IpNet::V4(_)))
            })
            .map(|(prefix, _)| *prefix)
            .collect();
        for prefix in &touched {
            paths.remove(prefix);
        }
        self.recompute(&touched)
    }

    /// Applies an UPDATE from `id`. Paths containing our ASN are treated as withdrawn (§9.1.2) and
    /// listed in [`RibChanges::looped`].
    pub fn update(&mut self, id: PeerId, update: &Update) -> RibChanges {
        let mut touched = Vec::with_capacity(update.announced.len() + update.withdrawn.len());
        let mut looped_prefixes = Vec::new();
        let paths = self.adj_in.entry(id).or_default();
        for prefix in &update.withdrawn {
            if paths.remove(prefix).is_some() {
                touched.push(*prefix);
            }
        }
        if let Some(attrs) = &update.attributes {
            let looped = attrs.contains_as(self.local_asn);
            let shared = Arc::new(attrs.clone());
            for prefix in &update.announced {
                let prefix = prefix.trunc();
                if looped {
                    looped_prefixes.push(prefix);
                    if paths.remove(&prefix).is_some() {
                        touched.push(prefix);
                    }
                    continue;
                }
                paths.insert(
                    prefix,
                    Path {
                        peer: id,
                        attributes: shared.clone(),
                        stale: false,
                    },
                );
                touched.push(prefix);
            }
        }
        let mut changes = self.recompute(&touched);
        changes.looped = looped_prefixes;
        if let Some((afi, _)) = update.end_of_rib {
            changes.merge(self.flush_stale(id, Some(afi)));
        }
        changes
    }

    /// How many prefixes `id` has in its Adj-RIB-In.
    pub fn received(&self, id: PeerId) -> usize {
        self.adj_in.get(&id).map_or(0, HashMap::len)
    }

    /// How many prefixes `id` has in its Adj-RIB-Out.
    pub fn advertised_count(&self, id: PeerId) -> usize {
        self.adj_out.get(&id).map_or(0, HashMap::len)
    }

    /// The best (multipath) set for a learned prefix.
    pub fn best(&self, prefix: &IpNet) -> Option<&[PeerId]> {
        self.best.get(prefix).map(Vec::as_slice)
    }

    /// Every learned path and our own networks, for `list-learned-routes`.
    pub fn learned(&self) -> Vec<RouteView> {
        let mut out: Vec<RouteView> = self
            .networks
            .iter()
            .map(|n| RouteView {
                prefix: *n,
                peer: None,
                attributes: Arc::new(PathAttributes::default()),
                best: true,
            })
            .collect();
        for (peer, paths) in &self.adj_in {
            for (prefix, p) in paths {
                out.push(RouteView {
                    prefix: *prefix,
                    peer: Some(*peer),
                    attributes: p.attributes.clone(),
                    best: self.best.get(prefix).is_some_and(|b| b.contains(peer)),
                });
            }
        }
        out.sort_by(|a, b| a.prefix.cmp(&b.prefix).then(a.peer.cmp(&b.peer)));
        out
    }

    /// What we advertise to `id`, for `list-advertised-routes`.
    pub fn advertised(&self, id: PeerId) -> Vec<RouteView> {
        let mut out: Vec<RouteView> = self
            .adj_out
            .get(&id)
            .into_iter()
            .flatten()
            .map(|(prefix, a)| RouteView {
                prefix: *prefix,
                peer: Some(id),
                attributes: a.clone(),
                best: true,
            })
            .collect();
        out.sort_by_key(|r| r.prefix);
        out
    }

    /// Re-runs the decision process for `prefixes` and derives the FIB and Adj-RIB-Out changes.
    fn recompute(&mut self, prefixes: &[IpNet]) -> RibChanges {
        let mut changes = RibChanges::default();
        let mut unique: Vec<IpNet> = prefixes.to_vec();
        unique.sort();
        unique.dedup();
        let mut exported = Vec::new();
        for prefix in &unique {
            let new_best = self.select(prefix);
            let old_best = self.best.get(prefix).cloned().unwrap_or_default();
            if new_best != old_best {
                if new_best.is_empty() {
                    self.best.remove(prefix);
                } else {
                    self.best.insert(*prefix, new_best.clone());
                }
                changes.fib.push(FibChange {
                    prefix: *prefix,
                    next_hops: new_best,
                });
            }
            exported.push(*prefix);
        }
        let established: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, e)| e.established)
            .map(|(id, _)| *id)
            .collect();
        for peer in established {
            let out = self.export_diff(peer, &exported);
            if !out.is_empty() {
                changes.outbound.insert(peer, out);
            }
        }
        changes
    }

    /// The multipath set for a learned prefix (empty when none, or when it is our own network).
    fn select(&self, prefix: &IpNet) -> Vec<PeerId> {
        if self.networks.contains(prefix) {
            return Vec::new();
        }
        let mut candidates: Vec<&Path> = self
            .adj_in
            .values()
            .filter_map(|paths| paths.get(prefix))
            .collect();
        if candidates.is_empty() {
            return Vec::new();
        }
        candidates.sort_by(|a, b| self.compare(a, b));
        let best = candidates[0];
        candidates
            .iter()
            .filter(|p| self.compare_multipath(best, p) == Ordering::Equal)
            .take(self.max_paths)
            .map(|p| p.peer)
            .collect()
    }

    fn info(&self, peer: PeerId) -> Option<&PeerInfo> {
        self.peers.get(&peer).map(|e| &e.info)
    }

    fn is_ebgp(&self, peer: PeerId) -> bool {
        self.info(peer).is_none_or(|i| i.asn != self.local_asn)
    }

    /// The steps up to "eBGP over iBGP": equal here means the paths may share traffic.
    fn compare_multipath(&self, a: &Path, b: &Path) -> Ordering {
        let weight = |p: &Path| self.info(p.peer).map_or(0, |i| i.weight);
        let lp = |p: &Path| p.attributes.local_pref.unwrap_or(100);
        weight(b)
            .cmp(&weight(a))
            .then(lp(b).cmp(&lp(a)))
            .then(a.attributes.as_path_len().cmp(&b.attributes.as_path_len()))
            .then((a.attributes.origin as u8).cmp(&(b.attributes.origin as u8)))
            .then_with(|| {
                if a.attributes.first_as() == b.attributes.first_as() {
                    a.attributes
                        .med
                        .unwrap_or(0)
                        .cmp(&b.attributes.med.unwrap_or(0))
                } else {
                    Ordering::Equal
                }
            })
            .then(self.is_ebgp(b.peer).cmp(&self.is_ebgp(a.peer)))
    }

    /// The full decision process (§9.1.2.2): multipath steps, then the tie-breaks.
    fn compare(&self, a: &Path, b: &Path) -> Ordering {
        self.compare_multipath(a, b)
            .then_with(|| {
                let id = |p: &Path| self.info(p.peer).map(|i| i.router_id);
                id(a).cmp(&id(b))
            })
            .then_with(|| {
                let addr = |p: &Path| self.info(p.peer).map(|i| i.address);
                addr(a).cmp(&addr(b))
            })
            .then(a.peer.cmp(&b.peer))
    }

    /// What `peer` should have for `prefix` under the export policy.
    fn export_for(&self, peer: PeerId, prefix: &IpNet) -> Option<PathAttributes> {
        let entry = self.peers.get(&peer)?;
        let info = &entry.info;
        let next_hop = match (prefix, info.local_address) {
            (IpNet::V6(_), IpAddr::V4(a)) => IpAddr::V6(a.to_ipv6_mapped()),
            (_, a) => a,
        };
        if !entry.negotiated.can_announce(prefix, Some(next_hop)) {
            return None;
        }
        if self.networks.contains(prefix) {
            return Some(PathAttributes {
                origin: Origin::Igp,
                as_path: vec![Segment::Sequence(vec![self.local_asn])],
                next_hop: Some(next_hop),
                ..PathAttributes::default()
            });
        }
        let best = *self.best.get(prefix)?.first()?;
        if best == peer {
            return None;
        }
        let path = self.adj_in.get(&best)?.get(prefix)?;
        if path.attributes.contains_as(info.asn) {
            return None;
        }
        let mut attrs = path.attributes.prepend(self.local_asn);
        attrs.next_hop = Some(next_hop);
        attrs.local_pref = None;
        attrs.med = None;
        Some(attrs)
    }

    /// Brings `peer`'s Adj-RIB-Out in line for `prefixes`, returning what to send.
    fn export_diff(&mut self, peer: PeerId, prefixes: &[IpNet]) -> Outbound {
        let wanted: Vec<(IpNet, Option<PathAttributes>)> = prefixes
            .iter()
            .map(|p| (*p, self.export_for(peer, p)))
            .collect();
        let out_rib = self.adj_out.entry(peer).or_default();
        let mut groups: HashMap<PathAttributes, Vec<IpNet>> = HashMap::new();
        let mut withdraw = Vec::new();
        for (prefix, want) in wanted {
            match want {
                Some(attrs) => {
                    if out_rib.get(&prefix).is_some_and(|a| **a == attrs) {
                        continue;
                    }
                    out_rib.insert(prefix, Arc::new(attrs.clone()));
                    groups.entry(attrs).or_default().push(prefix);
                }
                None => {
                    if out_rib.remove(&prefix).is_some() {
                        withdraw.push(prefix);
                    }
                }
            }
        }
        let mut announce: Vec<(PathAttributes, Vec<IpNet>)> = groups.into_iter().collect();
        announce.sort_by(|a, b| a.1.first().cmp(&b.1.first()));
        Outbound { announce, withdraw }
    }
}

/// Address family of a prefix, as an AFI.
pub fn afi_of(prefix: &IpNet) -> u16 {
    match prefix {
        IpNet::V4(_) => AFI_IPV4,
        IpNet::V6(_) => AFI_IPV6,
    }
}
