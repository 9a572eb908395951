//! Point-to-site with IKEv2 and certificates: the gateway's remote-access connection built from
//! `vpnClientConfiguration`, its server credentials, and the connected clients for `show-health`.
//!
//! Server credentials: the daemon authenticates to clients with `<state-dir>/p2s/server.crt.pem` and
//! `server.key.pem` when the operator put them there (for example from `vgw pki issue-server`);
//! otherwise it creates a gateway CA and a server certificate for the gateway's public address on first
//! use (`ca.crt.pem` is what clients must trust; keys 0600). The IKE identity is the public address,
//! which is in the certificate's subjectAltName, so strongSwan clients use `remote { id = <address> }`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use ipnet::IpNet;
use serde_json::{Value, json};
use vgw_ike::message::{Identity, TrafficSelector};
use vgw_ike::{
    ChildConfig, Config, ConnId, LocalAuth, LocalCertificate, Mode, PeerAuth, RemoteAccess,
    RemoteAccessServer, TrustStore,
};

use crate::state::DesiredState;

use super::Instance;

/// PEM blocks of one label, decoded.
pub fn pem_blocks(text: &str, label: &str) -> Vec<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(a) = rest.find(&begin) {
        let body_start = a + begin.len();
        let Some(b) = rest[body_start..].find(&end) else {
            break;
        };
        let body: String = rest[body_start..body_start + b]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(body) {
            out.push(der);
        }
        rest = &rest[body_start + b + end.len()..];
    }
    out
}

/// The server certificate chain and key, loaded or created (see the module docs).
pub fn server_credentials(dir: &Path, public_ip: IpAddr) -> Result<LocalCertificate, String> {
    let cert_path = dir.join("server.crt.pem");
    let key_path = dir.join("server.key.pem");
    if !cert_path.exists() {
        create_server_credentials(dir, public_ip)?;
    }
    let cert = std::fs::read_to_string(&cert_path)
        .map_err(|e| format!("cannot read {}: {e}", cert_path.display()))?;
    let key = std::fs::read_to_string(&key_path)
        .map_err(|e| format!("cannot read {}: {e}", key_path.display()))?;
    let chain = pem_blocks(&cert, "CERTIFICATE");
    let pkcs8 = pem_blocks(&key, "PRIVATE KEY")
        .pop()
        .ok_or_else(|| format!("{} holds no PKCS#8 PRIVATE KEY", key_path.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", cert_path.display()));
    }
    LocalCertificate::new(chain, &pkcs8).map_err(|e| format!("server certificate: {e}"))
}

fn create_server_credentials(dir: &Path, public_ip: IpAddr) -> Result<(), String> {
    use vgw_pki::{CertAuthority, KeyType, ServerRequest, Validity};
    let err = |e: vgw_pki::Error| e.to_string();
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let root = vgw_pki::create_root(
        "vgw gateway CA",
        KeyType::EcdsaP256,
        Validity::days_from_now(3650),
    )
    .map_err(err)?;
    let root_pem = root.cert_pem.clone();
    let ca = CertAuthority::from_issued(root).map_err(err)?;
    let server = ca
        .issue_server(&ServerRequest {
            name: public_ip.to_string(),
            key: KeyType::EcdsaP256,
            validity: Validity::days_from_now(825),
            dns: Vec::new(),
            ips: vec![public_ip],
        })
        .map_err(err)?;
    vgw_pki::files::write_public(&dir.join("ca.crt.pem"), root_pem.as_bytes(), true)
        .map_err(err)?;
    vgw_pki::files::write_public(
        &dir.join("server.crt.pem"),
        server.cert_pem.as_bytes(),
        true,
    )
    .map_err(err)?;
    vgw_pki::files::write_private(
        &dir.join("server.key.pem"),
        server.key_pem().as_bytes(),
        true,
    )
    .map_err(err)
}

fn prefix_ts(net: &IpNet) -> TrafficSelector {
    TrafficSelector::from_prefix(net.addr(), net.prefix_len())
}

/// The remote-access connection `state` asks for: None when point-to-site over IKEv2 is not set up
/// (no pool, no IkeV2 protocol, or no trusted root).
pub fn build_config(
    state: &DesiredState,
    credentials: &Path,
    instance: Instance,
) -> Option<Result<Config, String>> {
    let gw = state.gateway.as_ref()?;
    let p2s = gw.vpn_client_configuration.as_ref()?;
    if !p2s
        .vpn_client_protocols
        .iter()
        .any(|p| matches!(p, crate::model::VpnClientProtocol::IkeV2))
        || p2s.vpn_client_root_certificates.is_empty()
    {
        return None;
    }
    Some((|| {
        let (ike, esp, pfs) = proposals(p2s)?;
        let public_ip: IpAddr = instance
            .public_ip(gw)
            .ok_or("the gateway has no public IP address")?;
        let mut pool_v4: Option<(Ipv4Addr, u8)> = None;
        let mut pool_v6: Option<(Ipv6Addr, u8)> = None;
        for p in &p2s.vpn_client_address_pool.address_prefixes {
            match p.parse::<IpNet>() {
                // With WireGuard on, IKEv2 leases from the lower half (crate::drivers::wireguard's decision).
                Ok(IpNet::V4(n)) if pool_v4.is_none() && wireguard_on(p2s) => {
                    let (ike, _) = crate::plan::wireguard::split_pool(n.trunc());
                    pool_v4 = Some((ike.network(), ike.prefix_len()));
                }
                Ok(IpNet::V4(n)) if pool_v4.is_none() => {
                    pool_v4 = Some((n.network(), n.prefix_len()))
                }
                Ok(IpNet::V6(n)) if pool_v6.is_none() => {
                    pool_v6 = Some((n.network(), n.prefix_len()))
                }
                _ => {}
            }
        }
        if pool_v4.is_none() && pool_v6.is_none() {
            return Err("vpnClientAddressPool has no prefix".to_string());
        }
        let roots: Vec<Vec<u8>> = p2s
            .vpn_client_root_certificates
            .iter()
            .filter_map(|r| {
                let data: String = r
                    .public_cert_data
                    .lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect();
                base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .ok()
            })
            .collect();
        let revoked = p2s
            .vpn_client_revoked_certificates
            .iter()
            .map(|r| r.thumbprint.clone());
        let trust = TrustStore::new(roots, revoked).map_err(|e| e.to_string())?;
        let server = server_credentials(credentials, public_ip)?;
        let routes = split_routes(state);
        Ok(Config {
            local_addr: public_ip,
            remote_addr: match public_ip {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            },
            local_id: Identity::from_ip(public_ip),
            mode: Mode::ResponderOnly,
            children: vec![ChildConfig {
                local: routes.iter().map(prefix_ts).collect(),
                remote: vec![TrafficSelector::any_v4(), TrafficSelector::any_v6()],
            }],
            local_auth: LocalAuth::Certificate(Arc::new(server)),
            peer_auth: PeerAuth::Certificate(Arc::new(trust)),
            remote_access: RemoteAccess::Server(RemoteAccessServer {
                pool_v4,
                pool_v6,
                dns: p2s
                    .dns_servers
                    .iter()
                    .filter_map(|d| d.parse().ok())
                    .collect(),
            }),
            dpd_timeout: Duration::from_secs(30),
            ike,
            esp,
            pfs,
            ..Config::default()
        })
    })())
}

/// Split tunnel: the gateway's address space, its custom routes and every site's prefixes.
fn split_routes(state: &DesiredState) -> Vec<IpNet> {
    let mut routes: Vec<IpNet> = Vec::new();
    if let Some(gw) = &state.gateway {
        for list in [
            &gw.address_space.address_prefixes,
            &gw.custom_routes.address_prefixes,
        ] {
            routes.extend(list.iter().filter_map(|p| p.parse::<IpNet>().ok()));
        }
    }
    for lg in state.local_gateways.values() {
        routes.extend(
            lg.local_network_address_space
                .address_prefixes
                .iter()
                .filter_map(|p| p.parse::<IpNet>().ok()),
        );
    }
    let mut routes: Vec<IpNet> = routes.into_iter().map(|n| n.trunc()).collect();
    routes.sort();
    routes.dedup();
    routes
}

/// Whether the gateway serves WireGuard clients.
pub fn wireguard_on(p2s: &crate::model::VpnClientConfiguration) -> bool {
    p2s.vpn_client_protocols
        .iter()
        .any(|p| matches!(p, crate::model::VpnClientProtocol::WireGuard))
}

/// The WireGuard peers `p2s` lists, with their addresses and keys: a registered public key
/// (`wireGuardPeerPublicKeys`, no private key here), else the derived pair (base64 private key).
pub fn wireguard_peers(
    p2s: &crate::model::VpnClientConfiguration,
    keys: &crate::plan::wireguard::Keys,
) -> Vec<(crate::plan::wireguard::Peer, Option<String>)> {
    let Some(half) =
        crate::plan::wireguard::wireguard_half(&p2s.vpn_client_address_pool.address_prefixes)
    else {
        return Vec::new();
    };
    p2s.wire_guard_peers
        .iter()
        .enumerate()
        .filter_map(|(i, name)| {
            let address = crate::plan::wireguard::peer_address(half, i)?;
            let (public, private) = match p2s.wire_guard_peer_public_keys.get(name) {
                // Validation refuses a malformed key; one that slips through keeps the peer out.
                Some(key) => (crate::plan::wireguard::parse_public_key(key)?, None),
                None => {
                    let secret = keys.client(name);
                    (
                        boringtun::x25519::PublicKey::from(&secret),
                        Some(crate::plan::wireguard::b64(secret.as_bytes())),
                    )
                }
            };
            Some((
                crate::plan::wireguard::Peer {
                    name: name.clone(),
                    public,
                    address: IpAddr::V4(address),
                },
                private,
            ))
        })
        .collect()
}

/// The proposals the remote-access connection uses: `vpnClientIpsecPolicies`, else the defaults.
#[allow(clippy::type_complexity)]
fn proposals(
    p2s: &crate::model::VpnClientConfiguration,
) -> Result<
    (
        Vec<vgw_ike::proposal::ProposalSpec>,
        Vec<vgw_ike::proposal::ProposalSpec>,
        Option<vgw_ike::crypto::DhGroup>,
    ),
    String,
> {
    if p2s.vpn_client_ipsec_policies.is_empty() {
        return Ok((
            vgw_ike::proposal::default_ike(),
            vgw_ike::proposal::default_esp(true),
            None,
        ));
    }
    let (mut ike, mut esp, mut pfs) = (Vec::new(), Vec::new(), None);
    for p in &p2s.vpn_client_ipsec_policies {
        let (i, e, f) = crate::plan::ipsec::policy_specs(p)?;
        ike.push(i);
        esp.push(e);
        pfs = pfs.or(f);
    }
    Ok((ike, esp, pfs))
}

/// What the client package is built from: the gateway's address and identity, the CA clients must
/// trust, the live proposals, the split routes, DNS and the pool.
///
/// `client` names the WireGuard peer the package is for: its package carries its .conf and no other
/// peer's. The gateway-wide package (`None`) carries no WireGuard configuration at all, so no
/// private key, ever.
pub fn profile_input(
    state: &DesiredState,
    dir: &Path,
    instance: Instance,
    client: Option<&str>,
) -> Result<vgw_pki::profiles::ProfileInput, String> {
    let gw = state.gateway.as_ref().ok_or("no vnet-gateway")?;
    let p2s = gw
        .vpn_client_configuration
        .as_ref()
        .ok_or("point-to-site is not configured")?;
    if let Some(name) = client
        && !p2s.wire_guard_peers.iter().any(|p| p == name)
    {
        return Err(format!(
            "'{name}' is not a WireGuard peer of vnet-gateway {}; add it with --wireguard-peers",
            gw.name
        ));
    }
    let public_ip: IpAddr = instance
        .public_ip(gw)
        .ok_or("the gateway has no public IP address")?;
    server_credentials(dir, public_ip)?;
    let ca = std::fs::read_to_string(dir.join("ca.crt.pem"))
        .map(|t| pem_blocks(&t, "CERTIFICATE"))
        .unwrap_or_default();
    let roots = if ca.is_empty() {
        // An operator-supplied server certificate: clients trust the top of its chain.
        let chain = std::fs::read_to_string(dir.join("server.crt.pem"))
            .map(|t| pem_blocks(&t, "CERTIFICATE"))
            .unwrap_or_default();
        chain.last().cloned().into_iter().collect()
    } else {
        ca
    };
    let policies = p2s
        .vpn_client_ipsec_policies
        .iter()
        .map(|p| vgw_pki::profiles::IpsecPolicy {
            ike_encryption: p.ike_encryption,
            ike_integrity: p.ike_integrity,
            dh_group: p.dh_group,
            ipsec_encryption: p.ipsec_encryption,
            ipsec_integrity: p.ipsec_integrity,
            pfs_group: p.pfs_group,
            sa_life_time_seconds: p.sa_life_time_seconds,
            sa_data_size_kilobytes: p.sa_data_size_kilobytes,
        })
        .collect();
    let routes = split_routes(state)
        .iter()
        .map(ToString::to_string)
        .collect();
    let wireguard = wireguard_input(p2s, dir, public_ip, client)?;
    Ok(vgw_pki::profiles::ProfileInput {
        gateway_name: gw.name.clone(),
        server_address: public_ip.to_string(),
        server_dns_name: None,
        server_identity: vgw_pki::profiles::ServerIdentity {
            subject: None,
            san: Some(public_ip.to_string()),
        },
        root_certificates: roots,
        policies,
        routes,
        dns_servers: p2s.dns_servers.clone(),
        client_address_pool: p2s.vpn_client_address_pool.address_prefixes.clone(),
        client: None,
        wireguard,
    })
}

/// The WireGuard part of a package: the gateway's key and endpoint, and `client`'s .conf only.
fn wireguard_input(
    p2s: &crate::model::VpnClientConfiguration,
    dir: &Path,
    public_ip: IpAddr,
    client: Option<&str>,
) -> Result<Option<vgw_pki::profiles::WireGuardInput>, String> {
    if !wireguard_on(p2s) {
        return Ok(None);
    }
    let keys = crate::plan::wireguard::Keys::load(dir).map_err(|e| {
        format!(
            "the WireGuard keys in {} are unavailable: {e}",
            dir.display()
        )
    })?;
    let server = boringtun::x25519::PublicKey::from(&keys.server());
    let clients: Vec<_> = wireguard_peers(p2s, &keys)
        .into_iter()
        .filter(|(peer, _)| client == Some(peer.name.as_str()))
        .map(|(peer, private)| vgw_pki::profiles::WireGuardClient {
            name: peer.name,
            private_key: private,
            address: format!("{}/32", peer.address),
        })
        .collect();
    if let Some(name) = client
        && clients.is_empty()
    {
        return Err(format!(
            "WireGuard peer '{name}' has no address: the pool's WireGuard half is too small or missing"
        ));
    }
    Ok(Some(vgw_pki::profiles::WireGuardInput {
        server_public_key: crate::plan::wireguard::b64(server.as_bytes()),
        endpoint: format!("{public_ip}:{}", crate::plan::wireguard::DEFAULT_PORT),
        clients,
    }))
}

/// One connected client, for `show-health`.
#[derive(Clone, Debug)]
pub struct ClientRow {
    /// Engine id.
    pub id: ConnId,
    /// The certificate's CN.
    pub user_name: String,
    /// Its thumbprint.
    pub thumbprint: String,
    /// Public address and port.
    pub public: String,
    /// Pool addresses.
    pub addresses: Vec<IpAddr>,
    /// When it connected.
    pub connected_at: SystemTime,
    /// Its tunnel's counters.
    pub counters: Option<Arc<vgw_dataplane::TunnelCounters>>,
}

/// The connected clients.
#[derive(Default)]
pub struct P2sStatus {
    clients: RwLock<BTreeMap<ConnId, ClientRow>>,
}

/// Azure's `vpnConnectionId` for an engine client id.
pub fn connection_id(id: ConnId) -> String {
    format!("IKEv2_{id:08x}")
}

/// The engine client id of a `vpnConnectionId`.
pub fn parse_connection_id(s: &str) -> Option<ConnId> {
    ConnId::from_str_radix(s.strip_prefix("IKEv2_")?, 16).ok()
}

impl P2sStatus {
    /// Records a connected client.
    pub fn insert(&self, row: ClientRow) {
        self.clients
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(row.id, row);
    }

    /// Forgets a client.
    pub fn remove(&self, id: ConnId) -> Option<ClientRow> {
        self.clients
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id)
    }

    /// A copy of every connected client.
    pub fn rows(&self) -> Vec<ClientRow> {
        self.clients
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// How many clients are connected.
    pub fn count(&self) -> usize {
        self.clients.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Bytes in and out over every client tunnel (P2SBandwidth's source).
    pub fn bytes(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        let map = self.clients.read().unwrap_or_else(|p| p.into_inner());
        map.values()
            .filter_map(|c| c.counters.as_ref())
            .fold((0, 0), |(i, e), c| {
                (
                    i + c.ingress_bytes.load(Ordering::Relaxed),
                    e + c.egress_bytes.load(Ordering::Relaxed),
                )
            })
    }

    /// `getVpnClientConnectionHealth` in Azure's shape, IKEv2 clients and the WireGuard peers `wg`.
    pub fn health_json_with(&self, wg: &[crate::drivers::wireguard::PeerHealth]) -> Value {
        let mut v = self.health_json();
        let now = std::time::Instant::now();
        for p in wg {
            let since = p.last_seen.map(|t| now.saturating_duration_since(t));
            if let Some(list) = v["value"].as_array_mut() {
                list.push(json!({
                    "vpnConnectionId": format!("WireGuard_{}", p.name),
                    "vpnConnectionDuration": Value::Null,
                    "lastPacketSecondsAgo": since.map(|d| d.as_secs()),
                    "publicIpAddress": p.endpoint.map(|e| e.to_string()),
                    "privateIpAddress": p.address.to_string(),
                    "vpnUserName": p.name,
                    "protocol": "WireGuard",
                    "ingressBytesTransferred": p.ingress_bytes,
                    "egressBytesTransferred": p.egress_bytes,
                }));
            }
            if let Some(list) = v["allocatedIpAddresses"].as_array_mut() {
                list.push(json!(p.address.to_string()));
            }
        }
        let n = v["value"].as_array().map_or(0, Vec::len);
        v["vpnClientConnectionsCount"] = json!(n);
        v
    }

    /// `getVpnClientConnectionHealth` in Azure's shape (IKEv2 clients only).
    pub fn health_json(&self) -> Value {
        use std::sync::atomic::Ordering;
        let map = self.clients.read().unwrap_or_else(|p| p.into_inner());
        let now = SystemTime::now();
        let value: Vec<Value> = map
            .values()
            .map(|c| {
                let (i, e) = c.counters.as_ref().map_or((0, 0), |k| {
                    (
                        k.ingress_bytes.load(Ordering::Relaxed),
                        k.egress_bytes.load(Ordering::Relaxed),
                    )
                });
                json!({
                    "vpnConnectionId": connection_id(c.id),
                    "vpnConnectionDuration": crate::plan::bgp::timespan(
                        now.duration_since(c.connected_at).unwrap_or_default()
                    ),
                    "vpnConnectionTime": crate::ops::diaglog::rfc3339(
                        c.connected_at
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_millis() as u64)
                            .unwrap_or(0)
                    ),
                    "publicIpAddress": c.public,
                    "privateIpAddress": c.addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
                    "vpnUserName": c.user_name,
                    "thumbprint": c.thumbprint,
                    "ingressBytesTransferred": i,
                    "egressBytesTransferred": e,
                })
            })
            .collect();
        let allocated: Vec<String> = map
            .values()
            .flat_map(|c| c.addresses.iter().map(ToString::to_string))
            .collect();
        json!({
            "vpnClientConnectionsCount": map.len(),
            "allocatedIpAddresses": allocated,
            "value": value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_ids_round_trip() {
        assert_eq!(
            parse_connection_id(&connection_id(0x8000_0003)),
            Some(0x8000_0003)
        );
        assert_eq!(parse_connection_id("nope"), None);
    }

    fn wireguard_state(public_keys: serde_json::Value) -> DesiredState {
        let gw: crate::model::VnetGatewaySpec = serde_json::from_value(json!({
            "name": "hub-gw",
            "ipConfigurations": [{"name": "default", "publicIpAddress": "198.18.0.2"}],
            "vpnClientConfiguration": {
                "vpnClientAddressPool": {"addressPrefixes": ["172.16.201.0/24"]},
                "vpnClientProtocols": ["IkeV2", "WireGuard"],
                "wireGuardPeers": ["alice", "bob", "carol"],
                "wireGuardPeerPublicKeys": public_keys,
            }
        }))
        .unwrap();
        DesiredState {
            gateway: Some(gw),
            ..DesiredState::default()
        }
    }

    fn private_keys(input: &vgw_pki::profiles::ProfileInput) -> Vec<(String, Option<String>)> {
        input
            .wireguard
            .as_ref()
            .unwrap()
            .clients
            .iter()
            .map(|c| (c.name.clone(), c.private_key.clone()))
            .collect()
    }

    #[test]
    fn each_package_holds_its_own_users_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let carol = crate::plan::wireguard::b64(&[7u8; 32]);
        let state = wireguard_state(json!({ "carol": carol }));
        let keys = crate::plan::wireguard::Keys::load(dir.path()).unwrap();
        let alice_key = crate::plan::wireguard::b64(keys.client("alice").as_bytes());
        let bob_key = crate::plan::wireguard::b64(keys.client("bob").as_bytes());

        // The gateway-wide package: no WireGuard configuration, so no private key at all.
        let gw = profile_input(&state, dir.path(), Instance(0), None).unwrap();
        assert!(private_keys(&gw).is_empty());
        let zip = vgw_pki::profiles::build_profile(&gw).unwrap().zip;
        let text = String::from_utf8_lossy(&zip).to_string();
        assert!(!text.contains(&alice_key) && !text.contains(&bob_key));

        // Alice's: her key, nobody else's.
        let alice = profile_input(&state, dir.path(), Instance(0), Some("alice")).unwrap();
        assert_eq!(
            private_keys(&alice),
            vec![("alice".to_string(), Some(alice_key.clone()))]
        );
        let pkg = vgw_pki::profiles::build_profile(&alice).unwrap();
        assert_eq!(
            pkg.files
                .iter()
                .filter(|f| f.starts_with("WireGuard/"))
                .collect::<Vec<_>>(),
            vec!["WireGuard/alice.conf"]
        );

        // Carol registered her public key: her package has a placeholder, the gateway her key.
        let carol_in = profile_input(&state, dir.path(), Instance(0), Some("carol")).unwrap();
        assert_eq!(private_keys(&carol_in), vec![("carol".to_string(), None)]);
        let p2s = state
            .gateway
            .as_ref()
            .unwrap()
            .vpn_client_configuration
            .as_ref()
            .unwrap();
        let peers = wireguard_peers(p2s, &keys);
        let c = peers.iter().find(|(p, _)| p.name == "carol").unwrap();
        assert_eq!(c.0.public.as_bytes(), &[7u8; 32]);
        assert!(c.1.is_none());

        // A name that is not a peer gets no package.
        let err = profile_input(&state, dir.path(), Instance(0), Some("mallory")).unwrap_err();
        assert!(err.contains("not a WireGuard peer"), "{err}");
    }

    #[test]
    fn credentials_are_created_once_with_a_private_key_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ip: IpAddr = "198.18.0.2".parse().unwrap();
        server_credentials(dir.path(), ip).unwrap();
        let first = std::fs::read(dir.path().join("server.crt.pem")).unwrap();
        server_credentials(dir.path(), ip).unwrap();
        assert_eq!(
            first,
            std::fs::read(dir.path().join("server.crt.pem")).unwrap()
        );
        let mode = std::fs::metadata(dir.path().join("server.key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
