//! The forwarding table: longest-prefix match from a destination address to a tunnel, or to a set of
//! up to [`MAX_PATHS`] tunnels (BGP multipath) among which a flow hash picks one, so the packets of one
//! flow stay on one tunnel (no reordering) while flows spread over all of them.
//!
//! One hash map per prefix length, probed from the longest: at most 33 (IPv4) or 129 (IPv6) probes,
//! constant in the number of routes, so 10,000 BGP prefixes cost what 10 do.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// Identifies a tunnel (a connection) in the data plane.
pub type TunnelId = u32;

/// The most tunnels one prefix is spread over (the RIB's multipath limit).
pub const MAX_PATHS: usize = 4;

/// Where a prefix goes: one tunnel, or a multipath set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NextHops {
    tunnels: [TunnelId; MAX_PATHS],
    count: u8,
}

impl NextHops {
    fn new(tunnels: &[TunnelId]) -> Option<Self> {
        let count = tunnels.len().min(MAX_PATHS);
        if count == 0 {
            return None;
        }
        let mut set = [0; MAX_PATHS];
        set[..count].copy_from_slice(&tunnels[..count]);
        Some(Self {
            tunnels: set,
            count: count as u8,
        })
    }

    fn pick(&self, flow_hash: impl FnOnce() -> u32) -> TunnelId {
        match self.count {
            1 => self.tunnels[0],
            n => self.tunnels[(flow_hash() % u32::from(n)) as usize],
        }
    }

    /// Drops `tunnel` from the set; false when nothing is left.
    fn without(&mut self, tunnel: TunnelId) -> bool {
        let mut kept = 0;
        for i in 0..self.count as usize {
            if self.tunnels[i] != tunnel {
                self.tunnels[kept] = self.tunnels[i];
                kept += 1;
            }
        }
        self.count = kept as u8;
        kept > 0
    }
}

/// Longest-prefix-match table.
#[derive(Debug, Default, Clone)]
pub struct Fib {
    v4: Vec<HashMap<u32, NextHops>>,
    v6: Vec<HashMap<u128, NextHops>>,
    v4_lens: Vec<u8>,
    v6_lens: Vec<u8>,
}

fn mask4(addr: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        addr & (u32::MAX << (32 - len))
    }
}

fn mask6(addr: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        addr & (u128::MAX << (128 - len))
    }
}

impl Fib {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            v4: vec![HashMap::new(); 33],
            v6: vec![HashMap::new(); 129],
            v4_lens: Vec::new(),
            v6_lens: Vec::new(),
        }
    }

    /// Routes `prefix` into `tunnel`, replacing an earlier route for the same prefix.
    pub fn insert(&mut self, prefix: IpNet, tunnel: TunnelId) {
        self.insert_multipath(prefix, &[tunnel]);
    }

    /// Spreads `prefix` over `tunnels` (at most [`MAX_PATHS`], best first), replacing an earlier route;
    /// an empty set removes the route.
    pub fn insert_multipath(&mut self, prefix: IpNet, tunnels: &[TunnelId]) {
        let Some(next) = NextHops::new(tunnels) else {
            self.remove(prefix);
            return;
        };
        let len = prefix.prefix_len();
        match prefix.trunc() {
            IpNet::V4(p) => {
                self.v4[len as usize].insert(u32::from(p.addr()), next);
            }
            IpNet::V6(p) => {
                self.v6[len as usize].insert(u128::from(p.addr()), next);
            }
        }
        self.refresh_lengths();
    }

    /// Removes the route for `prefix`.
    pub fn remove(&mut self, prefix: IpNet) {
        let len = prefix.prefix_len() as usize;
        match prefix.trunc() {
            IpNet::V4(p) => {
                self.v4[len].remove(&u32::from(p.addr()));
            }
            IpNet::V6(p) => {
                self.v6[len].remove(&u128::from(p.addr()));
            }
        }
        self.refresh_lengths();
    }

    /// Removes `tunnel` from every route (a multipath set keeps its other tunnels).
    pub fn remove_tunnel(&mut self, tunnel: TunnelId) {
        self.v4
            .iter_mut()
            .for_each(|m| m.retain(|_, next| next.without(tunnel)));
        self.v6
            .iter_mut()
            .for_each(|m| m.retain(|_, next| next.without(tunnel)));
        self.refresh_lengths();
    }

    fn refresh_lengths(&mut self) {
        self.v4_lens = (0..=32u8)
            .rev()
            .filter(|l| !self.v4[*l as usize].is_empty())
            .collect();
        self.v6_lens = (0..=128u8)
            .rev()
            .filter(|l| !self.v6[*l as usize].is_empty())
            .collect();
    }

    /// The tunnel for `dst`, by longest prefix (a multipath set's first, best, tunnel).
    pub fn lookup(&self, dst: IpAddr) -> Option<TunnelId> {
        self.lookup_flow(dst, || 0)
    }

    /// The tunnel for a packet to `dst`: by longest prefix, and within a multipath set by
    /// `flow_hash` (called only for a multipath set).
    pub fn lookup_flow(&self, dst: IpAddr, flow_hash: impl FnOnce() -> u32) -> Option<TunnelId> {
        let next = match dst {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4_lens
                    .iter()
                    .find_map(|&l| self.v4[l as usize].get(&mask4(a, l)))
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6_lens
                    .iter()
                    .find_map(|&l| self.v6[l as usize].get(&mask6(a, l)))
            }
        }?;
        Some(next.pick(flow_hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let mut fib = Fib::new();
        fib.insert("10.0.0.0/8".parse().unwrap(), 1);
        fib.insert("10.1.0.0/16".parse().unwrap(), 2);
        fib.insert("2001:db8::/32".parse().unwrap(), 3);
        assert_eq!(fib.lookup("10.1.2.3".parse().unwrap()), Some(2));
        assert_eq!(fib.lookup("10.2.2.3".parse().unwrap()), Some(1));
        assert_eq!(fib.lookup("11.0.0.1".parse().unwrap()), None);
        assert_eq!(fib.lookup("2001:db8::1".parse().unwrap()), Some(3));
        fib.remove_tunnel(2);
        assert_eq!(fib.lookup("10.1.2.3".parse().unwrap()), Some(1));
    }

    #[test]
    fn multipath_spreads_flows_and_survives_a_dead_tunnel() {
        let mut fib = Fib::new();
        let p: IpNet = "10.1.0.0/16".parse().unwrap();
        let dst: IpAddr = "10.1.2.3".parse().unwrap();
        fib.insert_multipath(p, &[7, 8]);
        assert_eq!(fib.lookup(dst), Some(7));
        assert_eq!(fib.lookup_flow(dst, || 0), Some(7));
        assert_eq!(fib.lookup_flow(dst, || 1), Some(8));
        fib.remove_tunnel(7);
        assert_eq!(fib.lookup_flow(dst, || 0), Some(8));
        assert_eq!(fib.lookup_flow(dst, || 1), Some(8));
        fib.remove_tunnel(8);
        assert_eq!(fib.lookup(dst), None);
        fib.insert_multipath(p, &[1, 2, 3, 4, 5]);
        assert_eq!(fib.lookup_flow(dst, || 7), Some(4));
        fib.insert_multipath(p, &[]);
        assert_eq!(fib.lookup(dst), None);
    }
}
