//! Point-to-site over WireGuard, the plan: the gateway's keys (derived from one master secret), the
//! split of the client pool between IKEv2 and WireGuard, and each peer's address. The packet worker
//! is [`crate::drivers::wireguard`].

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use base64::Engine as _;
use boringtun::x25519::{PublicKey, StaticSecret};
use ipnet::{IpNet, Ipv4Net};

/// The default UDP port (WireGuard's usual one).
pub const DEFAULT_PORT: u16 = 51820;
/// Derives keys from the gateway's WireGuard master secret.
pub struct Keys {
    master: aws_lc_rs::hmac::Key,
}

impl Keys {
    /// Loads `<dir>/wireguard.key`, creating it (0600) on first use.
    pub fn load(dir: &Path) -> Result<Self, String> {
        let path = dir.join("wireguard.key");
        let secret = match std::fs::read(&path) {
            Ok(b) if b.len() == 32 => b,
            _ => {
                let mut b = vec![0u8; 32];
                aws_lc_rs::rand::fill(&mut b).map_err(|_| "no randomness".to_string())?;
                std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
                vgw_pki::files::write_private(&path, &b, true).map_err(|e| e.to_string())?;
                b
            }
        };
        Ok(Self {
            master: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret),
        })
    }

    fn derive(&self, label: &str) -> StaticSecret {
        let tag = aws_lc_rs::hmac::sign(&self.master, label.as_bytes());
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&tag.as_ref()[..32]);
        StaticSecret::from(bytes)
    }

    /// The gateway's static key.
    pub fn server(&self) -> StaticSecret {
        self.derive("vgw wireguard server")
    }

    /// Client `name`'s static key.
    pub fn client(&self, name: &str) -> StaticSecret {
        self.derive(&format!("vgw wireguard client {name}"))
    }
}

/// Base64 of a key, as WireGuard configurations write it.
pub fn b64(key: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// A public key as `wg pubkey` prints it (base64 of 32 bytes); None when it is not one.
pub fn parse_public_key(text: &str) -> Option<PublicKey> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()?;
    let bytes: [u8; 32] = bytes.try_into().ok()?;
    Some(PublicKey::from(bytes))
}

/// The two halves of an IPv4 pool: (IKEv2's, WireGuard's). A pool too small to split stays IKEv2's.
pub fn split_pool(pool: Ipv4Net) -> (Ipv4Net, Option<Ipv4Net>) {
    if pool.prefix_len() >= 30 {
        return (pool, None);
    }
    let mut halves = pool.subnets(pool.prefix_len() + 1).into_iter().flatten();
    match (halves.next(), halves.next()) {
        (Some(a), Some(b)) => (a, Some(b)),
        _ => (pool, None),
    }
}

/// The address of the `index`-th WireGuard peer in the WireGuard half.
pub fn peer_address(half: Ipv4Net, index: usize) -> Option<Ipv4Addr> {
    let first = u32::from(half.network()) + 1;
    let addr = first.checked_add(u32::try_from(index).ok()?)?;
    (addr < u32::from(half.broadcast())).then(|| Ipv4Addr::from(addr))
}

/// One WireGuard client as the server sees it.
#[derive(Clone)]
pub struct Peer {
    /// Its name.
    pub name: String,
    /// Its public key.
    pub public: PublicKey,
    /// Its address.
    pub address: IpAddr,
}

/// The WireGuard half of the configured pool, when WireGuard is on.
pub fn wireguard_half(pool: &[String]) -> Option<Ipv4Net> {
    pool.iter()
        .filter_map(|p| p.parse::<IpNet>().ok())
        .find_map(|n| match n {
            IpNet::V4(v4) => split_pool(v4.trunc()).1,
            IpNet::V6(_) => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_split_in_halves_and_peers_get_stable_addresses() {
        let (ike, wg) = split_pool("172.16.201.0/24".parse().unwrap());
        assert_eq!(ike.to_string(), "172.16.201.0/25");
        let wg = wg.unwrap();
        assert_eq!(wg.to_string(), "172.16.201.128/25");
        assert_eq!(peer_address(wg, 0).unwrap().to_string(), "172.16.201.129");
        assert_eq!(peer_address(wg, 125).unwrap().to_string(), "172.16.201.254");
        assert!(peer_address(wg, 126).is_none());
        assert_eq!(split_pool("10.0.0.0/30".parse().unwrap()).1, None);
    }

    #[test]
    fn keys_are_derived_stably_from_the_master_secret() {
        let dir = tempfile::tempdir().unwrap();
        let a = Keys::load(dir.path()).unwrap();
        let b = Keys::load(dir.path()).unwrap();
        assert_eq!(
            PublicKey::from(&a.client("alice")).as_bytes(),
            PublicKey::from(&b.client("alice")).as_bytes()
        );
        assert_ne!(
            PublicKey::from(&a.client("alice")).as_bytes(),
            PublicKey::from(&a.client("bob")).as_bytes()
        );
    }
}
