//! Pure translation of the desired state into engine configurations: no I/O, no clocks, unit-tested.

pub mod bgp;
pub mod conn;
pub mod ipsec;
pub mod p2s;
pub mod wireguard;

use std::net::IpAddr;

use crate::model::VnetGatewaySpec;

/// Which active-active instance this process is (`vgw serve --instance N`, 0 or 1). Passed into
/// every plan that depends on it (public address, BGP peering address), never read from a global.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Instance(pub usize);

impl Instance {
    /// The index, 0 unless `--instance 1`.
    pub fn index(self) -> usize {
        self.0
    }

    /// The other active-active instance.
    pub fn other(self) -> Instance {
        Instance(1 - self.0.min(1))
    }

    /// The public address this instance serves: `ipConfigurations[instance]`.
    pub fn public_ip(self, gw: &VnetGatewaySpec) -> Option<IpAddr> {
        gw.ip_configurations
            .get(self.0)
            .and_then(|c| c.public_ip_address.parse().ok())
    }

    /// This instance's entry of a comma-separated `bgpPeeringAddress` list.
    pub fn peering_address(self, list: &str) -> Option<IpAddr> {
        list.split(',').nth(self.0)?.trim().parse().ok()
    }
}

#[cfg(test)]
mod tests;
