//! Remote-access client address pools (Azure's `vpnClientAddressPool`), handed out through the
//! configuration payload (RFC 7296 §3.15, INTERNAL_IP4_ADDRESS / INTERNAL_IP6_ADDRESS).
//!
//! A pure data structure: no clock. Leases are sticky by identity: an address released by a client
//! stays reserved for it, so a reconnect gets the same address back, until the pool has no fresh
//! address left; then the longest-released lease is reclaimed. An address is never handed out twice
//! while leased. The network address, the broadcast address (IPv4) and the first usable address (kept
//! for the gateway) are never handed out.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a pool could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolError(pub String);

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PoolError {}

/// An IPv4 prefix (address, length).
pub type Ipv4Prefix = (Ipv4Addr, u8);
/// An IPv6 prefix (address, length).
pub type Ipv6Prefix = (Ipv6Addr, u8);

/// The addresses leased to one client session: one per configured family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lease {
    /// INTERNAL_IP4_ADDRESS.
    pub v4: Option<Ipv4Addr>,
    /// INTERNAL_IP6_ADDRESS (sent with prefix length 128).
    pub v6: Option<Ipv6Addr>,
}

impl Lease {
    /// The leased addresses, IPv4 first.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.v4
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.v6.map(IpAddr::V6))
            .collect()
    }
}

/// One family's range: addresses are offsets from the network address.
#[derive(Debug)]
struct Range {
    v6: bool,
    network: u128,
    /// First and last offsets that may be handed out.
    first: u128,
    last: u128,
    /// Next never-used offset.
    fresh: u128,
    /// Offset → (owner identity, leased now).
    slots: HashMap<u128, (String, bool)>,
    /// Identity → its sticky offset.
    sticky: HashMap<String, u128>,
    /// Released offsets in release order (sequence → offset), reclaimed oldest first.
    released: BTreeMap<u64, u128>,
    /// Offset → its release sequence number.
    released_seq: HashMap<u128, u64>,
    seq: u64,
}

impl Range {
    fn new(v6: bool, network: u128, prefix: u8) -> Result<Range, PoolError> {
        let bits: u32 = if v6 { 128 } else { 32 };
        if u32::from(prefix) > bits {
            return Err(PoolError(format!("prefix length {prefix} exceeds {bits}")));
        }
        let host_bits = bits - u32::from(prefix);
        let size: u128 = if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let network = if host_bits >= 128 { 0 } else { network & !size };
        // Offset 0 is the network address (the subnet-router anycast for IPv6); offset 1 is the
        // gateway's; IPv4's last offset is the broadcast address.
        let first = 2u128;
        let last = if v6 { size } else { size.saturating_sub(1) };
        if last < first {
            return Err(PoolError(format!(
                "/{prefix} leaves no address for clients"
            )));
        }
        Ok(Range {
            v6,
            network,
            first,
            last,
            fresh: first,
            slots: HashMap::new(),
            sticky: HashMap::new(),
            released: BTreeMap::new(),
            released_seq: HashMap::new(),
            seq: 0,
        })
    }

    fn addr(&self, offset: u128) -> u128 {
        self.network.wrapping_add(offset)
    }

    fn offset_of(&self, addr: u128) -> Option<u128> {
        let off = addr.wrapping_sub(self.network);
        (off >= self.first && off <= self.last && self.addr(off) == addr).then_some(off)
    }

    fn take_released(&mut self, offset: u128) {
        if let Some(seq) = self.released_seq.remove(&offset) {
            self.released.remove(&seq);
        }
    }

    fn allocate(&mut self, identity: &str) -> Option<u128> {
        // The identity's own address, if it is not in use (a reconnect).
        if let Some(&off) = self.sticky.get(identity)
            && let Some(slot) = self.slots.get_mut(&off)
            && !slot.1
        {
            slot.1 = true;
            self.take_released(off);
            return Some(off);
        }
        let has_sticky = self.sticky.contains_key(identity);
        let off = if self.fresh <= self.last {
            let off = self.fresh;
            self.fresh += 1;
            off
        } else {
            // Reclaim the lease released longest ago.
            let (&seq, &off) = self.released.iter().next()?;
            self.released.remove(&seq);
            self.released_seq.remove(&off);
            if let Some((owner, _)) = self.slots.remove(&off)
                && self.sticky.get(&owner) == Some(&off)
            {
                self.sticky.remove(&owner);
            }
            off
        };
        self.slots.insert(off, (identity.to_string(), true));
        if !has_sticky || !self.sticky.contains_key(identity) {
            self.sticky.insert(identity.to_string(), off);
        }
        Some(off)
    }

    fn release(&mut self, addr: u128) {
        let Some(off) = self.offset_of(addr) else {
            return;
        };
        let Some(slot) = self.slots.get_mut(&off) else {
            return;
        };
        if !slot.1 {
            return;
        }
        slot.1 = false;
        // A second concurrent session's address is not sticky: it loses its owner at once.
        if self.sticky.get(&slot.0) != Some(&off) {
            slot.0.clear();
        }
        self.seq += 1;
        self.released.insert(self.seq, off);
        self.released_seq.insert(off, self.seq);
    }

    fn leased(&self) -> usize {
        self.slots.values().filter(|s| s.1).count()
    }
}

/// A remote-access address pool: IPv4 and optionally IPv6 (RFC 7296 §3.15.1).
#[derive(Debug)]
pub struct AddressPool {
    v4: Option<Range>,
    v6: Option<Range>,
    v4_cidr: Option<(Ipv4Addr, u8)>,
    v6_cidr: Option<(Ipv6Addr, u8)>,
}

impl AddressPool {
    /// A pool over `v4` (e.g. 172.16.201.0/24) and optionally `v6`; at least one must be given.
    pub fn new(
        v4: Option<(Ipv4Addr, u8)>,
        v6: Option<(Ipv6Addr, u8)>,
    ) -> Result<AddressPool, PoolError> {
        if v4.is_none() && v6.is_none() {
            return Err(PoolError("an address pool needs a prefix".into()));
        }
        Ok(AddressPool {
            v4: v4
                .map(|(a, p)| Range::new(false, u128::from(u32::from(a)), p))
                .transpose()?,
            v6: v6
                .map(|(a, p)| Range::new(true, u128::from(a), p))
                .transpose()?,
            v4_cidr: v4,
            v6_cidr: v6,
        })
    }

    /// The prefixes the pool was built from.
    pub fn prefixes(&self) -> (Option<Ipv4Prefix>, Option<Ipv6Prefix>) {
        (self.v4_cidr, self.v6_cidr)
    }

    /// The address reserved for the gateway (first usable IPv4 address), if the pool has IPv4.
    pub fn gateway_v4(&self) -> Option<Ipv4Addr> {
        self.v4.as_ref().map(|r| Ipv4Addr::from(r.addr(1) as u32))
    }

    /// Leases addresses for `identity` (the client's certificate subject) in every family the pool has:
    /// its previous addresses when free, else fresh ones. None when a family is exhausted
    /// (POOL_EXHAUSTED).
    pub fn allocate(&mut self, identity: &str) -> Option<Lease> {
        self.allocate_families(identity, true, true)
    }

    /// Like [`AddressPool::allocate`], only for the families asked for (a family the pool lacks is
    /// left out of the lease).
    pub fn allocate_families(&mut self, identity: &str, v4: bool, v6: bool) -> Option<Lease> {
        let off4 = match self.v4.as_mut().filter(|_| v4) {
            Some(r) => Some(r.allocate(identity)?),
            None => None,
        };
        let off6 = match self.v6.as_mut().filter(|_| v6) {
            Some(r) => match r.allocate(identity) {
                Some(o) => Some(o),
                None => {
                    if let (Some(r4), Some(o)) = (self.v4.as_mut(), off4) {
                        let a = r4.addr(o);
                        r4.release(a);
                    }
                    return None;
                }
            },
            None => None,
        };
        Some(Lease {
            v4: off4.and_then(|o| self.v4.as_ref().map(|r| Ipv4Addr::from(r.addr(o) as u32))),
            v6: off6.and_then(|o| self.v6.as_ref().map(|r| Ipv6Addr::from(r.addr(o)))),
        })
    }

    /// Ends a lease; the addresses stay reserved for their identity until reclaimed.
    pub fn release(&mut self, lease: &Lease) {
        if let (Some(r), Some(a)) = (self.v4.as_mut(), lease.v4) {
            r.release(u128::from(u32::from(a)));
        }
        if let (Some(r), Some(a)) = (self.v6.as_mut(), lease.v6) {
            r.release(u128::from(a));
        }
    }

    /// Addresses leased now (per family, the larger count).
    pub fn leased(&self) -> usize {
        let a = self.v4.as_ref().map_or(0, Range::leased);
        let b = self.v6.as_ref().map_or(0, Range::leased);
        a.max(b)
    }

    /// True when `ip` is inside the pool's IPv4 or IPv6 prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self
                .v4
                .as_ref()
                .is_some_and(|r| !r.v6 && r.offset_of(u128::from(u32::from(a))).is_some()),
            IpAddr::V6(a) => self
                .v6
                .as_ref()
                .is_some_and(|r| r.v6 && r.offset_of(u128::from(a)).is_some()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn skips_network_gateway_and_broadcast() {
        let mut p = AddressPool::new(Some((v4("10.9.0.0"), 29)), None).unwrap();
        assert_eq!(p.gateway_v4(), Some(v4("10.9.0.1")));
        let got: Vec<Ipv4Addr> = (0..5)
            .map(|i| p.allocate(&format!("c{i}")).unwrap().v4.unwrap())
            .collect();
        assert_eq!(
            got,
            ["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"]
                .map(v4)
                .to_vec()
        );
        assert_eq!(p.allocate("c5"), None, "exhausted");
    }

    #[test]
    fn sticky_by_identity_and_reclaims_oldest() {
        let mut p = AddressPool::new(Some((v4("10.9.0.0"), 29)), None).unwrap();
        let a = p.allocate("alice").unwrap();
        let b = p.allocate("bob").unwrap();
        p.release(&a);
        p.release(&b);
        // Fresh addresses first, so alice and bob keep theirs.
        for i in 0..3 {
            p.allocate(&format!("x{i}")).unwrap();
        }
        assert_eq!(p.allocate("bob"), Some(b));
        // Pool full apart from alice's released lease: carol reclaims it.
        let c = p.allocate("carol").unwrap();
        assert_eq!(c, a);
        assert_eq!(p.allocate("alice"), None);
    }

    #[test]
    fn same_identity_twice_gets_two_addresses() {
        let mut p = AddressPool::new(
            Some((v4("10.9.0.0"), 24)),
            Some(("fd00::".parse().unwrap(), 120)),
        )
        .unwrap();
        let a = p.allocate("dave").unwrap();
        let b = p.allocate("dave").unwrap();
        assert_ne!(a.v4, b.v4);
        assert_ne!(a.v6, b.v6);
        assert_eq!(a.v6, Some("fd00::2".parse().unwrap()));
        p.release(&b);
        p.release(&a);
        assert_eq!(p.allocate("dave"), Some(a));
        assert_eq!(p.leased(), 1);
    }

    #[test]
    fn rejects_bad_prefixes() {
        assert!(AddressPool::new(Some((v4("10.0.0.0"), 31)), None).is_err());
        assert!(AddressPool::new(Some((v4("10.0.0.0"), 40)), None).is_err());
        assert!(AddressPool::new(None, None).is_err());
        let p = AddressPool::new(None, Some(("fd00::".parse().unwrap(), 0))).unwrap();
        assert!(p.contains("fd00::5".parse().unwrap()));
    }
}
