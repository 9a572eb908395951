//! Site-to-site: a connection of the desired state to the IKE engine's [`Config`] and the prefixes
//! routed into it, and Azure's IPsec/IKE policy names to IKE transforms.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use vgw_ike::crypto::{DhGroup, Encryption, Integrity, Prf};
use vgw_ike::message::{Identity, TrafficSelector};
use vgw_ike::proposal::{ProposalSpec, default_esp, default_ike};
use vgw_ike::{ChildConfig, Config, Mode};
use zeroize::Zeroizing;

use super::Instance;
use crate::model::{self, ConnectionSpec, IpsecPolicy, LocalGatewaySpec, VnetGatewaySpec};
use crate::state::DesiredState;

/// Azure's policy names to IKE transforms.
pub fn policy_specs(
    p: &IpsecPolicy,
) -> Result<(ProposalSpec, ProposalSpec, Option<DhGroup>), String> {
    use model::{
        DhGroup as AzDh, IkeEncryption as AzIkeEnc, IkeIntegrity as AzIkeInt,
        IpsecEncryption as AzEnc, IpsecIntegrity as AzInt, PfsGroup as AzPfs,
    };
    let unsupported = |what: &str, v: &dyn std::fmt::Display| {
        format!("{what} {v} is not supported by vgw's engine")
    };
    let ike_enc = match p.ike_encryption {
        AzIkeEnc::Aes128 => Encryption::AesCbc(128),
        AzIkeEnc::Aes256 => Encryption::AesCbc(256),
        AzIkeEnc::GcmAes128 => Encryption::AesGcm16(128),
        AzIkeEnc::GcmAes256 => Encryption::AesGcm16(256),
        AzIkeEnc::ChaCha20Poly1305 => Encryption::ChaCha20Poly1305,
        other => return Err(unsupported("ikeEncryption", &other)),
    };
    let (ike_integ, prf) = match p.ike_integrity {
        AzIkeInt::Sha1 => (Integrity::HmacSha1_96, Prf::HmacSha1),
        AzIkeInt::Sha256 => (Integrity::HmacSha256_128, Prf::HmacSha256),
        AzIkeInt::Sha384 => (Integrity::HmacSha384_192, Prf::HmacSha384),
        AzIkeInt::Sha512 => (Integrity::HmacSha512_256, Prf::HmacSha512),
        AzIkeInt::GcmAes128 | AzIkeInt::GcmAes256 => (Integrity::HmacSha256_128, Prf::HmacSha256),
        other => return Err(unsupported("ikeIntegrity", &other)),
    };
    let dh = match p.dh_group {
        AzDh::DhGroup14 | AzDh::DhGroup2048 => DhGroup::Modp2048,
        AzDh::Ecp256 => DhGroup::Ecp256,
        AzDh::Ecp384 => DhGroup::Ecp384,
        AzDh::Curve25519 => DhGroup::Curve25519,
        AzDh::DhGroup2 => DhGroup::Modp1024,
        other => return Err(unsupported("dhGroup", &other)),
    };
    let ike = ProposalSpec {
        encryption: vec![ike_enc],
        integrity: if ike_enc.is_aead() {
            vec![]
        } else {
            vec![ike_integ]
        },
        prf: vec![prf],
        dh: vec![dh],
    };
    let esp_enc = match p.ipsec_encryption {
        AzEnc::Aes128 => Encryption::AesCbc(128),
        AzEnc::Aes256 => Encryption::AesCbc(256),
        AzEnc::GcmAes128 => Encryption::AesGcm16(128),
        AzEnc::GcmAes256 => Encryption::AesGcm16(256),
        AzEnc::ChaCha20Poly1305 => Encryption::ChaCha20Poly1305,
        other => return Err(unsupported("ipsecEncryption", &other)),
    };
    let esp_integ = match p.ipsec_integrity {
        AzInt::Sha1 => vec![Integrity::HmacSha1_96],
        AzInt::Sha256 => vec![Integrity::HmacSha256_128],
        AzInt::GcmAes128 | AzInt::GcmAes192 | AzInt::GcmAes256 | AzInt::ChaCha20Poly1305 => vec![],
        other => return Err(unsupported("ipsecIntegrity", &other)),
    };
    let pfs = match p.pfs_group {
        AzPfs::None => None,
        AzPfs::Pfs2048 | AzPfs::Pfs14 => Some(DhGroup::Modp2048),
        AzPfs::Ecp256 => Some(DhGroup::Ecp256),
        AzPfs::Ecp384 => Some(DhGroup::Ecp384),
        AzPfs::Curve25519 => Some(DhGroup::Curve25519),
        AzPfs::Pfs2 => Some(DhGroup::Modp1024),
        AzPfs::PfsMm => Some(dh),
        other => return Err(unsupported("pfsGroup", &other)),
    };
    let esp = ProposalSpec {
        encryption: vec![esp_enc],
        integrity: esp_integ,
        prf: vec![],
        dh: pfs.into_iter().collect(),
    };
    Ok((ike, esp, pfs))
}

fn prefix_ts(p: &IpNet) -> TrafficSelector {
    TrafficSelector::from_prefix(p.addr(), p.prefix_len())
}

/// The engine configuration of one connection, and the prefixes routed into it.
pub fn build_config(
    state: &DesiredState,
    c: &ConnectionSpec,
    instance: Instance,
) -> Result<(Config, Vec<IpNet>), String> {
    let gw: &VnetGatewaySpec = state.gateway.as_ref().ok_or("no vnet-gateway")?;
    let lg: &LocalGatewaySpec = state
        .local_gateways
        .get(&c.local_network_gateway2.name)
        .ok_or("local gateway missing")?;
    let local_addr: IpAddr = instance.public_ip(gw).ok_or(
        "the gateway has no public address for this instance (vgw serve --instance N needs ipConfigurations[N])",
    )?;
    let remote_addr: IpAddr = match (&lg.gateway_ip_address, &lg.fqdn) {
        (Some(ip), _) => ip
            .parse()
            .map_err(|_| format!("local gateway {}: bad address {ip}", lg.name))?,
        (None, Some(fqdn)) => {
            return Err(format!(
                "local gateway {}: FQDN {fqdn} resolution is not supported yet; use --gateway-ip-address",
                lg.name
            ));
        }
        _ => return Err(format!("local gateway {} has no address", lg.name)),
    };
    let psk = c.shared_key.clone().ok_or("no shared key")?;
    let (ike, esp, pfs) = if c.ipsec_policies.is_empty() {
        (default_ike(), default_esp(true), None)
    } else {
        let mut ike = Vec::new();
        let mut esp = Vec::new();
        let mut pfs = None;
        for p in &c.ipsec_policies {
            let (i, e, f) = policy_specs(p)?;
            ike.push(i);
            esp.push(e);
            pfs = pfs.or(f);
        }
        (ike, esp, pfs)
    };
    let parse =
        |list: &[String]| -> Vec<IpNet> { list.iter().filter_map(|p| p.parse().ok()).collect() };
    let ours = parse(&gw.address_space.address_prefixes);
    let theirs = parse(&lg.local_network_address_space.address_prefixes);
    let children = if !c.traffic_selector_policies.is_empty() {
        c.traffic_selector_policies
            .iter()
            .map(|t| ChildConfig {
                local: parse(&t.local_address_ranges)
                    .iter()
                    .map(prefix_ts)
                    .collect(),
                remote: parse(&t.remote_address_ranges)
                    .iter()
                    .map(prefix_ts)
                    .collect(),
            })
            .collect()
    } else if c.use_policy_based_traffic_selectors {
        let mut v = Vec::new();
        for l in &ours {
            for r in &theirs {
                v.push(ChildConfig {
                    local: vec![prefix_ts(l)],
                    remote: vec![prefix_ts(r)],
                });
            }
        }
        v
    } else {
        // Route-based (Azure's default): any-to-any selectors; routing decides what enters the tunnel.
        vec![ChildConfig {
            local: vec![TrafficSelector::any_v4(), TrafficSelector::any_v6()],
            remote: vec![TrafficSelector::any_v4(), TrafficSelector::any_v6()],
        }]
    };
    if children.is_empty() {
        return Err("policy-based selectors need address prefixes on both sides".into());
    }
    let child_lifetime = c
        .ipsec_policies
        .first()
        .map_or(27_000, |p| p.sa_life_time_seconds);
    let child_bytes = c
        .ipsec_policies
        .first()
        .map(|p| p.sa_data_size_kilobytes.saturating_mul(1024));
    let mode = match c.connection_mode {
        model::ConnectionMode::Default => Mode::Default,
        model::ConnectionMode::InitiatorOnly => Mode::InitiatorOnly,
        model::ConnectionMode::ResponderOnly => Mode::ResponderOnly,
    };
    let mut routed = theirs.clone();
    if let Some(bgp) = lg
        .bgp_settings
        .as_ref()
        .and_then(|b| b.bgp_peering_address.as_ref())
        .and_then(|a| a.parse::<IpAddr>().ok())
    {
        let host =
            IpNet::new(bgp, if bgp.is_ipv4() { 32 } else { 128 }).map_err(|e| e.to_string())?;
        if !routed.iter().any(|p| p.contains(&host)) {
            routed.push(host);
        }
    }
    Ok((
        Config {
            local_addr,
            remote_addr,
            remote_port: 500,
            local_id: Identity::from_ip(local_addr),
            remote_id: Identity::from_ip(remote_addr),
            psk: Zeroizing::new(psk.into_bytes()),
            ike,
            esp,
            pfs,
            mode,
            children,
            dpd_timeout: Duration::from_secs(u64::from(c.dpd_timeout_seconds)),
            ike_lifetime: Duration::from_secs(28_800),
            child_lifetime: Duration::from_secs(child_lifetime),
            child_lifetime_bytes: child_bytes,
            fragment_size: 1200,
            // Site-to-site authenticates with the shared key both ways.
            ..Config::default()
        },
        routed,
    ))
}
