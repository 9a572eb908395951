//! Pure translation of the desired state into engine configurations: no I/O, no clocks, unit-tested.

pub mod bgp;
pub mod ipsec;
pub mod p2s;
