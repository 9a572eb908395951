//! The forwarding table: longest-prefix match from a destination address to a tunnel.
//!
//! One hash map per prefix length, probed from the longest: at most 33 (IPv4) or 129 (IPv6) probes,
//! constant in the number of routes, so 10,000 BGP prefixes cost what 10 do.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// Identifies a tunnel (a connection) in the data plane.
pub type TunnelId = u32;

/// Longest-prefix-match table.
#[derive(Debug, Default, Clone)]
pub struct Fib {
    v4: Vec<HashMap<u32, TunnelId>>,
    v6: Vec<HashMap<u128, TunnelId>>,
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
        let len = prefix.prefix_len();
        match prefix.trunc() {
            IpNet::V4(p) => {
                self.v4[len as usize].insert(u32::from(p.addr()), tunnel);
            }
            IpNet::V6(p) => {
                self.v6[len as usize].insert(u128::from(p.addr()), tunnel);
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

    /// Removes every route into `tunnel`.
    pub fn remove_tunnel(&mut self, tunnel: TunnelId) {
        self.v4
            .iter_mut()
            .for_each(|m| m.retain(|_, t| *t != tunnel));
        self.v6
            .iter_mut()
            .for_each(|m| m.retain(|_, t| *t != tunnel));
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

    /// The tunnel for `dst`, by longest prefix.
    pub fn lookup(&self, dst: IpAddr) -> Option<TunnelId> {
        match dst {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4_lens
                    .iter()
                    .find_map(|&l| self.v4[l as usize].get(&mask4(a, l)).copied())
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6_lens
                    .iter()
                    .find_map(|&l| self.v6[l as usize].get(&mask6(a, l)).copied())
            }
        }
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
}
