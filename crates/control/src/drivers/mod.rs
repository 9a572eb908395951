//! One event loop per engine: the IKE/ESP reconciler ([`tunnels`]), the BGP speaker, BFD's sockets and
//! the WireGuard server. They take configurations from [`crate::plan`] and report live status.

pub mod bfd;
pub mod bgp_speaker;
pub mod tunnels;
pub mod wireguard;
