//! Validation of the desired state. Every rule names the resource, the field, the rule and the fix.
//!
//! A change is validated as a whole new state ([`validate_state`]) before it is stored, so cross-resource
//! rules (overlaps, references, a local gateway still in use) hold after every change, and a refused change
//! changes nothing.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

use crate::model::*;
use crate::state::DesiredState;

/// CLI names of the resource kinds, used as the prefix of every message.
pub mod kind {
    /// The gateway.
    pub const GATEWAY: &str = "vnet-gateway";
    /// A local gateway.
    pub const LOCAL_GATEWAY: &str = "local-gateway";
    /// A connection.
    pub const CONNECTION: &str = "vpn-connection";
}

type Result<T = ()> = std::result::Result<T, ValidationError>;

/// A broken validation rule: the field it concerns and what was wrong, where, and the fix. Not an
/// HTTP type: the API answers it with 400 InvalidParameter, the CLI prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// The field or resource the error is about, e.g. `ipsecPolicies[0].dhGroup`.
    pub target: Option<String>,
    /// What was wrong, where, and the fix.
    pub message: String,
}

impl ValidationError {
    /// `target` breaks a rule, as `message` says.
    pub fn invalid(target: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            target: Some(target.into()),
            message: message.into(),
        }
    }

    /// Prefixes the message with the resource it concerns: `vpn-connection c1: ...`.
    pub fn for_resource(mut self, kind: &str, name: &str) -> Self {
        let prefix = format!("{kind} {name}: ");
        if !self.message.starts_with(&prefix) {
            self.message = format!("{prefix}{}", self.message);
        }
        self
    }
}

impl std::fmt::Display for ValidationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ValidationError {}

/// Azure's resource-name rule: 1–80 characters of letters, digits, `_`, `.` and `-`, starting with a letter
/// or digit and ending with a letter, digit or `_`.
pub fn check_name(kind: &str, name: &str) -> Result {
    let ok = !name.is_empty()
        && name.len() <= 80
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::invalid(
            "name",
            format!(
                "{kind} name '{name}' is invalid: use 1-80 letters, digits, '_', '.' or '-', starting with a \
                 letter or digit and ending with a letter, digit or '_'"
            ),
        ))
    }
}

/// Parses a CIDR prefix and insists on its canonical network form (`10.1.0.0/16`, not `10.1.2.3/16`).
pub fn parse_prefix(target: &str, text: &str) -> Result<IpNet> {
    let net: IpNet = text.trim().parse().map_err(|_| {
        ValidationError::invalid(
            target,
            format!("'{text}' is not a CIDR prefix; write it as address/length, e.g. 10.1.0.0/16"),
        )
    })?;
    if net.trunc() != net {
        return Err(ValidationError::invalid(
            target,
            format!("'{text}' has host bits set; did you mean {}?", net.trunc()),
        ));
    }
    Ok(net)
}

fn parse_prefixes(target: &str, list: &[String]) -> Result<Vec<IpNet>> {
    list.iter()
        .enumerate()
        .map(|(i, p)| parse_prefix(&format!("{target}[{i}]"), p))
        .collect()
}

fn parse_ip(target: &str, text: &str) -> Result<IpAddr> {
    text.trim().parse().map_err(|_| {
        ValidationError::invalid(target, format!("'{text}' is not an IPv4 or IPv6 address"))
    })
}

/// ASNs Azure refuses for a gateway (RFC 7300 and RFC 5398 ranges, AS_TRANS 23456, Microsoft's own).
fn asn_reserved(asn: u64) -> bool {
    matches!(asn, 8074 | 8075 | 12076 | 23456 | 64496..=64511 | 65517..=65520 | 65535..=65551)
}

/// vgw's BGP timer and prefix-limit extensions: hold 0 or 3-65535 s (RFC 4271 §4.2), keepalive at
/// least 1 s and at most a third of the hold time, a non-zero prefix limit.
fn check_bgp_timers(bgp: &BgpSettings) -> Result {
    if let Some(hold) = bgp.hold_time_seconds
        && (1..3).contains(&hold)
    {
        return Err(ValidationError::invalid(
            "bgpSettings.holdTimeSeconds",
            format!(
                "hold time {hold} s is not allowed: use 0 (no keepalives) or 3-65535 (RFC 4271 §4.2)"
            ),
        ));
    }
    if let Some(keepalive) = bgp.keepalive_seconds {
        if keepalive == 0 {
            return Err(ValidationError::invalid(
                "bgpSettings.keepaliveSeconds",
                "the keepalive interval must be at least 1 s",
            ));
        }
        let hold = bgp.hold_time_seconds.unwrap_or(180);
        if hold != 0 && u32::from(keepalive) * 3 > u32::from(hold) {
            return Err(ValidationError::invalid(
                "bgpSettings.keepaliveSeconds",
                format!(
                    "keepalive {keepalive} s is more than a third of the hold time {hold} s; use at most {} s",
                    hold / 3
                ),
            ));
        }
    }
    if bgp.max_prefixes == Some(0) {
        return Err(ValidationError::invalid(
            "bgpSettings.maxPrefixes",
            "a prefix limit of 0 would refuse every route; omit it for the default (100000)",
        ));
    }
    Ok(())
}

fn check_asn(target: &str, asn: u64, is_peer: bool) -> Result {
    if asn == 0 || asn > u32::MAX as u64 {
        return Err(ValidationError::invalid(
            target,
            format!("ASN {asn} is out of range; use 1-4294967295 (4-octet ASNs per RFC 6793)"),
        ));
    }
    if asn_reserved(asn) || (is_peer && asn == 65515) {
        return Err(ValidationError::invalid(
            target,
            format!(
                "ASN {asn} is reserved (8074, 8075, 12076, 23456, 64496-64511, 65517-65520, 65535-65551{}); \
                 pick another private ASN such as 65010",
                if is_peer {
                    ", and 65515 which is the gateway's default"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(())
}

/// Custom BGP (APIPA) addresses must lie in 169.254.21.0 – 169.254.22.255, as in Azure.
fn check_apipa(target: &str, text: &str) -> Result {
    let ip = parse_ip(target, text)?;
    let ok = match ip {
        IpAddr::V4(v4) => {
            let lo = Ipv4Addr::new(169, 254, 21, 0);
            let hi = Ipv4Addr::new(169, 254, 22, 255);
            v4 >= lo && v4 <= hi
        }
        IpAddr::V6(_) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ValidationError::invalid(
            target,
            format!(
                "custom BGP address {text} is outside the APIPA range 169.254.21.0 - 169.254.22.255"
            ),
        ))
    }
}

fn check_bgp_peering_address(target: &str, text: &str) -> Result {
    let ip = parse_ip(target, text)?;
    if let IpAddr::V4(v4) = ip
        && v4.is_link_local()
    {
        return check_apipa(target, text);
    }
    Ok(())
}

/// Pre-shared key rule: 1–128 printable ASCII characters without space, `-` or `~`.
pub fn check_shared_key(target: &str, key: &str) -> Result {
    if key.is_empty() || key.len() > 128 {
        return Err(ValidationError::invalid(
            target,
            format!(
                "shared key must be 1-128 characters (got {})",
                key.chars().count()
            ),
        ));
    }
    if let Some((pos, c)) = key
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_graphic() && c != '-' && c != '~'))
    {
        let shown = if c.is_ascii_graphic() || c == ' ' {
            format!("'{c}'")
        } else {
            format!("U+{:04X}", c as u32)
        };
        return Err(ValidationError::invalid(
            target,
            format!(
                "shared key has the character {shown} at position {}; use printable ASCII without space, '-' or '~'",
                pos + 1
            ),
        ));
    }
    Ok(())
}

/// Validates one ipsecPolicies entry. `allow_legacy` is the connection's `allowLegacyCrypto`.
pub fn check_ipsec_policy(target: &str, p: &IpsecPolicy, allow_legacy: bool) -> Result {
    if !(300..=172_799).contains(&p.sa_life_time_seconds) {
        return Err(ValidationError::invalid(
            format!("{target}.saLifeTimeSeconds"),
            format!(
                "saLifeTimeSeconds {} is outside 300-172799; Azure's default is 27000",
                p.sa_life_time_seconds
            ),
        ));
    }
    if p.sa_data_size_kilobytes < 1024 {
        return Err(ValidationError::invalid(
            format!("{target}.saDataSizeKilobytes"),
            format!(
                "saDataSizeKilobytes {} is below 1024; Azure's default is 102400000",
                p.sa_data_size_kilobytes
            ),
        ));
    }
    // RFC 4106 / RFC 7634: an AEAD cipher is also the integrity algorithm, so both fields must agree.
    let enc_aead = match p.ipsec_encryption {
        IpsecEncryption::GcmAes128 => Some(IpsecIntegrity::GcmAes128),
        IpsecEncryption::GcmAes192 => Some(IpsecIntegrity::GcmAes192),
        IpsecEncryption::GcmAes256 => Some(IpsecIntegrity::GcmAes256),
        IpsecEncryption::ChaCha20Poly1305 => Some(IpsecIntegrity::ChaCha20Poly1305),
        _ => None,
    };
    let integ_aead = matches!(
        p.ipsec_integrity,
        IpsecIntegrity::GcmAes128
            | IpsecIntegrity::GcmAes192
            | IpsecIntegrity::GcmAes256
            | IpsecIntegrity::ChaCha20Poly1305
    );
    match enc_aead {
        Some(needed) if needed != p.ipsec_integrity => {
            return Err(ValidationError::invalid(
                format!("{target}.ipsecIntegrity"),
                format!(
                    "ipsecEncryption {} is an AEAD cipher, so ipsecIntegrity must be {needed} (got {}); set \
                     --ipsec-integrity {needed}",
                    p.ipsec_encryption, p.ipsec_integrity
                ),
            ));
        }
        None if integ_aead => {
            return Err(ValidationError::invalid(
                format!("{target}.ipsecIntegrity"),
                format!(
                    "ipsecIntegrity {} is only valid with the matching ipsecEncryption (got {}); set \
                     --ipsec-encryption {}",
                    p.ipsec_integrity, p.ipsec_encryption, p.ipsec_integrity
                ),
            ));
        }
        _ => {}
    }
    let ike_gcm = match p.ike_encryption {
        IkeEncryption::GcmAes128 => Some(IkeIntegrity::GcmAes128),
        IkeEncryption::GcmAes256 => Some(IkeIntegrity::GcmAes256),
        _ => None,
    };
    let ike_integ_gcm = matches!(
        p.ike_integrity,
        IkeIntegrity::GcmAes128 | IkeIntegrity::GcmAes256
    );
    if ike_integ_gcm && ike_gcm != Some(p.ike_integrity) {
        return Err(ValidationError::invalid(
            format!("{target}.ikeIntegrity"),
            format!(
                "ikeIntegrity {} needs ikeEncryption {} (got {}); or choose SHA256/SHA384 as ikeIntegrity",
                p.ike_integrity, p.ike_integrity, p.ike_encryption
            ),
        ));
    }
    if !allow_legacy {
        let legacy: &[(&str, bool, String)] = &[
            (
                "ipsecEncryption",
                matches!(
                    p.ipsec_encryption,
                    IpsecEncryption::Des | IpsecEncryption::Des3 | IpsecEncryption::None
                ),
                p.ipsec_encryption.to_string(),
            ),
            (
                "ipsecIntegrity",
                p.ipsec_integrity == IpsecIntegrity::Md5,
                p.ipsec_integrity.to_string(),
            ),
            (
                "ikeEncryption",
                matches!(p.ike_encryption, IkeEncryption::Des | IkeEncryption::Des3),
                p.ike_encryption.to_string(),
            ),
            (
                "ikeIntegrity",
                p.ike_integrity == IkeIntegrity::Md5,
                p.ike_integrity.to_string(),
            ),
            (
                "dhGroup",
                matches!(
                    p.dh_group,
                    DhGroup::None | DhGroup::DhGroup1 | DhGroup::DhGroup2 | DhGroup::DhGroup24
                ),
                p.dh_group.to_string(),
            ),
            (
                "pfsGroup",
                matches!(
                    p.pfs_group,
                    PfsGroup::Pfs1 | PfsGroup::Pfs2 | PfsGroup::Pfs24
                ),
                p.pfs_group.to_string(),
            ),
        ];
        if let Some((field, _, value)) = legacy.iter().find(|(_, bad, _)| *bad) {
            return Err(ValidationError::invalid(
                format!("{target}.{field}"),
                format!(
                    "{field} {value} is legacy cryptography (RFC 8221/8247) and is refused; choose a modern \
                     algorithm, or set --allow-legacy-crypto true on the connection if the peer cannot"
                ),
            ));
        }
    }
    Ok(())
}

fn check_nat_rule(target: &str, rule: &NatRule) -> Result {
    check_name("nat-rule", &rule.name).map_err(|e| ValidationError {
        target: Some(format!("{target}.name")),
        ..e
    })?;
    for (field, list) in [
        ("internalMappings", &rule.internal_mappings),
        ("externalMappings", &rule.external_mappings),
    ] {
        if list.is_empty() {
            return Err(ValidationError::invalid(
                format!("{target}.{field}"),
                format!(
                    "nat-rule {}: {field} needs at least one address space",
                    rule.name
                ),
            ));
        }
        for (i, m) in list.iter().enumerate() {
            parse_prefix(
                &format!("{target}.{field}[{i}].addressSpace"),
                &m.address_space,
            )?;
            if let Some(range) = &m.port_range {
                let ok = range
                    .split_once('-')
                    .and_then(|(a, b)| {
                        Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
                    })
                    .is_some_and(|(a, b)| a >= 1 && a <= b);
                if !ok {
                    return Err(ValidationError::invalid(
                        format!("{target}.{field}[{i}].portRange"),
                        format!(
                            "port range '{range}' must be 'low-high' with 1 <= low <= high <= 65535"
                        ),
                    ));
                }
            }
        }
    }
    if rule.rule_type == NatRuleType::Static {
        if rule.internal_mappings.len() != rule.external_mappings.len() {
            return Err(ValidationError::invalid(
                format!("{target}.externalMappings"),
                format!(
                    "nat-rule {}: a Static rule maps prefixes 1:1, so it needs as many externalMappings as \
                     internalMappings",
                    rule.name
                ),
            ));
        }
        for (i, (a, b)) in rule
            .internal_mappings
            .iter()
            .zip(&rule.external_mappings)
            .enumerate()
        {
            let (a, b): (IpNet, IpNet) = (
                a.address_space.parse().unwrap_or_default(),
                b.address_space.parse().unwrap_or_default(),
            );
            if a.prefix_len() != b.prefix_len() || a.addr().is_ipv4() != b.addr().is_ipv4() {
                return Err(ValidationError::invalid(
                    format!("{target}.externalMappings[{i}].addressSpace"),
                    format!(
                        "nat-rule {}: Static mapping {a} -> {b} must keep the prefix length and address family",
                        rule.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn check_root_certificate(target: &str, cert: &RootCertificate) -> Result {
    use base64::Engine as _;
    check_name("root-cert", &cert.name).map_err(|e| ValidationError {
        target: Some(format!("{target}.name")),
        ..e
    })?;
    let body: String = cert
        .public_cert_data
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD.decode(body.as_bytes()).map_err(|e| {
        ValidationError::invalid(
            format!("{target}.publicCertData"),
            format!("root-cert {}: publicCertData is not base64 ({e}); pass the certificate's base64 body", cert.name),
        )
    })?;
    x509_parser::parse_x509_certificate(&der).map_err(|e| {
        ValidationError::invalid(
            format!("{target}.publicCertData"),
            format!(
                "root-cert {}: publicCertData is not an X.509 certificate ({e})",
                cert.name
            ),
        )
    })?;
    Ok(())
}

/// The SHA-1 thumbprint of a root certificate, as Azure and Windows show it (upper-case hex).
pub fn certificate_thumbprint(public_cert_data: &str) -> Option<String> {
    use base64::Engine as _;
    let body: String = public_cert_data
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .ok()?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &der);
    Some(digest.as_ref().iter().map(|b| format!("{b:02X}")).collect())
}

fn check_gateway(gw: &VnetGatewaySpec) -> Result {
    check_name(kind::GATEWAY, &gw.name)?;
    match gw.ip_configurations.len() {
        1 | 2 => {}
        0 => {
            return Err(ValidationError::invalid(
                "ipConfigurations",
                "the gateway needs a public address to listen on; pass --public-ip-addresses IP",
            ));
        }
        n => {
            return Err(ValidationError::invalid(
                "ipConfigurations",
                format!("{n} public addresses given; a gateway has one, or two for active-active"),
            ));
        }
    }
    for (i, cfg) in gw.ip_configurations.iter().enumerate() {
        parse_ip(
            &format!("ipConfigurations[{i}].publicIpAddress"),
            &cfg.public_ip_address,
        )?;
    }
    check_ipv6_outer(gw)?;
    if gw.ip_configurations.len() == 2
        && gw.ip_configurations[0].public_ip_address == gw.ip_configurations[1].public_ip_address
    {
        return Err(ValidationError::invalid(
            "ipConfigurations[1].publicIpAddress",
            "the two active-active addresses must differ",
        ));
    }
    if gw.active_active != (gw.ip_configurations.len() == 2) {
        return Err(ValidationError::invalid(
            "activeActive",
            format!(
                "activeActive is {} but {} public address(es) are configured; active-active needs exactly two",
                gw.active_active,
                gw.ip_configurations.len()
            ),
        ));
    }
    let space = parse_prefixes(
        "addressSpace.addressPrefixes",
        &gw.address_space.address_prefixes,
    )?;
    check_no_self_overlap("addressSpace.addressPrefixes", &space)?;
    parse_prefixes(
        "customRoutes.addressPrefixes",
        &gw.custom_routes.address_prefixes,
    )?;
    if let Some(bgp) = &gw.bgp_settings {
        check_asn("bgpSettings.asn", bgp.asn, false)?;
        check_bgp_timers(bgp)?;
        if let Some(addrs) = &bgp.bgp_peering_address {
            // Active-active: one address per instance, comma-separated as Azure shows them.
            let list: Vec<&str> = addrs.split(',').map(str::trim).collect();
            if list.len() > gw.ip_configurations.len() {
                return Err(ValidationError::invalid(
                    "bgpSettings.bgpPeeringAddress",
                    format!(
                        "{} peering addresses for {} gateway instance(s); give one per instance",
                        list.len(),
                        gw.ip_configurations.len()
                    ),
                ));
            }
            if gw.enable_bgp && gw.active_active && list.len() < 2 {
                return Err(ValidationError::invalid(
                    "bgpSettings.bgpPeeringAddress",
                    "an active-active gateway peers from each instance: give two addresses, --bgp-peering-address A,B",
                ));
            }
            for addr in list {
                check_bgp_peering_address("bgpSettings.bgpPeeringAddress", addr)?;
            }
        }
        for (i, entry) in bgp.bgp_peering_addresses.iter().enumerate() {
            for (j, a) in entry.custom_bgp_ip_addresses.iter().enumerate() {
                check_apipa(
                    &format!("bgpSettings.bgpPeeringAddresses[{i}].customBgpIpAddresses[{j}]"),
                    a,
                )?;
            }
            if !entry.ipconfiguration_id.is_empty()
                && !gw
                    .ip_configurations
                    .iter()
                    .any(|c| c.name == entry.ipconfiguration_id)
            {
                return Err(ValidationError::invalid(
                    format!("bgpSettings.bgpPeeringAddresses[{i}].ipconfigurationId"),
                    format!(
                        "'{}' names no ipConfiguration of the gateway",
                        entry.ipconfiguration_id
                    ),
                ));
            }
        }
    }
    if gw.enable_bgp && gw.bgp_settings.is_none() {
        return Err(ValidationError::invalid(
            "bgpSettings",
            "enableBgp needs bgpSettings; pass --asn (default 65515)",
        ));
    }
    let mut names = std::collections::HashSet::new();
    for (i, rule) in gw.nat_rules.iter().enumerate() {
        check_nat_rule(&format!("natRules[{i}]"), rule)?;
        if !names.insert(rule.name.as_str()) {
            return Err(ValidationError::invalid(
                format!("natRules[{i}].name"),
                format!("nat-rule '{}' is defined twice", rule.name),
            ));
        }
        if let Some(cfg) = &rule.ip_configuration_id
            && !gw.ip_configurations.iter().any(|c| &c.name == cfg)
        {
            return Err(ValidationError::invalid(
                format!("natRules[{i}].ipConfigurationId"),
                format!("'{cfg}' names no ipConfiguration of the gateway"),
            ));
        }
    }
    if let Some(p2s) = &gw.vpn_client_configuration {
        let pool = parse_prefixes(
            "vpnClientConfiguration.vpnClientAddressPool.addressPrefixes",
            &p2s.vpn_client_address_pool.address_prefixes,
        )?;
        check_no_overlap(
            "vpnClientConfiguration.vpnClientAddressPool.addressPrefixes",
            &pool,
            "the gateway's addressSpace",
            &space,
        )?;
        let mut peers = std::collections::HashSet::new();
        for (i, peer) in p2s.wire_guard_peers.iter().enumerate() {
            check_name("WireGuard peer", peer).map_err(|e| ValidationError {
                target: Some(format!("vpnClientConfiguration.wireGuardPeers[{i}]")),
                ..e
            })?;
            if !peers.insert(peer.as_str()) {
                return Err(ValidationError::invalid(
                    format!("vpnClientConfiguration.wireGuardPeers[{i}]"),
                    format!("WireGuard peer '{peer}' is listed twice"),
                ));
            }
        }
        for (name, key) in &p2s.wire_guard_peer_public_keys {
            let target = format!("vpnClientConfiguration.wireGuardPeerPublicKeys.{name}");
            if !peers.contains(name.as_str()) {
                return Err(ValidationError::invalid(
                    target,
                    format!(
                        "'{name}' is not among wireGuardPeers; add it with --wireguard-peers or drop its key"
                    ),
                ));
            }
            let key_ok = {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(key.trim())
                    .is_ok_and(|b| b.len() == 32)
            };
            if !key_ok {
                return Err(ValidationError::invalid(
                    target,
                    format!(
                        "the public key of '{name}' is not 32 bytes in base64 (as `wg pubkey` prints it)"
                    ),
                ));
            }
        }
        if !p2s.wire_guard_peers.is_empty()
            && !p2s
                .vpn_client_protocols
                .iter()
                .any(|p| matches!(p, VpnClientProtocol::WireGuard))
        {
            return Err(ValidationError::invalid(
                "vpnClientConfiguration.wireGuardPeers",
                "WireGuard peers need WireGuard among the client protocols; pass --client-protocol IkeV2 WireGuard",
            ));
        }
        for (i, d) in p2s.dns_servers.iter().enumerate() {
            if d.parse::<std::net::IpAddr>().is_err() {
                return Err(ValidationError::invalid(
                    format!("vpnClientConfiguration.dnsServers[{i}]"),
                    format!("'{d}' is not an IP address"),
                ));
            }
        }
        for (i, proto) in p2s.vpn_client_protocols.iter().enumerate() {
            if matches!(proto, VpnClientProtocol::OpenVpn | VpnClientProtocol::Sstp) {
                return Err(ValidationError::invalid(
                    format!("vpnClientConfiguration.vpnClientProtocols[{i}]"),
                    format!("{proto} is not offered by vgw; use IkeV2 and/or WireGuard"),
                ));
            }
        }
        for (i, t) in p2s.vpn_authentication_types.iter().enumerate() {
            if *t != VpnAuthenticationType::Certificate {
                return Err(ValidationError::invalid(
                    format!("vpnClientConfiguration.vpnAuthenticationTypes[{i}]"),
                    format!("{t} authentication is not offered by vgw; use Certificate"),
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, c) in p2s.vpn_client_root_certificates.iter().enumerate() {
            check_root_certificate(
                &format!("vpnClientConfiguration.vpnClientRootCertificates[{i}]"),
                c,
            )?;
            if !names.insert(c.name.as_str()) {
                return Err(ValidationError::invalid(
                    format!("vpnClientConfiguration.vpnClientRootCertificates[{i}].name"),
                    format!(
                        "root-cert '{}' exists already; delete it first or choose another name",
                        c.name
                    ),
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, c) in p2s.vpn_client_revoked_certificates.iter().enumerate() {
            let target = format!("vpnClientConfiguration.vpnClientRevokedCertificates[{i}]");
            check_name("revoked-cert", &c.name).map_err(|e| ValidationError {
                target: Some(format!("{target}.name")),
                ..e
            })?;
            if c.thumbprint.len() != 40 || !c.thumbprint.chars().all(|ch| ch.is_ascii_hexdigit()) {
                return Err(ValidationError::invalid(
                    format!("{target}.thumbprint"),
                    format!(
                        "thumbprint '{}' must be the 40 hex digits of the certificate's SHA-1",
                        c.thumbprint
                    ),
                ));
            }
            if !names.insert(c.name.as_str()) {
                return Err(ValidationError::invalid(
                    format!("{target}.name"),
                    format!("revoked-cert '{}' exists already", c.name),
                ));
            }
        }
        for (i, p) in p2s.vpn_client_ipsec_policies.iter().enumerate() {
            check_ipsec_policy(
                &format!("vpnClientConfiguration.vpnClientIpsecPolicies[{i}]"),
                p,
                false,
            )?;
        }
    }
    Ok(())
}

/// What works over IPv6 outer (public) addresses: IKE and UDP-encapsulated ESP of site-to-site
/// connections on a single-instance gateway, carrying IPv4 and IPv6 inner traffic. Active-active
/// (the instances' interconnect, replication and the failover drill) and point-to-site (the
/// WireGuard listener and the profile download) are built and tested for IPv4 only, so a gateway
/// that combines them with an IPv6 public address is refused rather than half-working.
fn check_ipv6_outer(gw: &VnetGatewaySpec) -> Result {
    let Some(i) = gw
        .ip_configurations
        .iter()
        .position(|c| matches!(c.public_ip_address.trim().parse(), Ok(IpAddr::V6(_))))
    else {
        return Ok(());
    };
    let target = format!("ipConfigurations[{i}].publicIpAddress");
    if gw.active_active || gw.ip_configurations.len() > 1 {
        return Err(ValidationError::invalid(
            target,
            "active-active gateways need IPv4 public addresses (the instances' interconnect and failover are IPv4 only); use two IPv4 addresses, or one IPv6 address without --active-active",
        ));
    }
    if gw.vpn_client_configuration.is_some() {
        return Err(ValidationError::invalid(
            "vpnClientConfiguration",
            format!(
                "point-to-site is offered on IPv4 public addresses only, and {target} is IPv6; use an IPv4 public address for a gateway with point-to-site"
            ),
        ));
    }
    Ok(())
}

/// IKE and ESP run between one address of each side, so both must be of the same family.
fn check_outer_families(gateway: IpAddr, site: IpAddr) -> Result {
    if gateway.is_ipv6() == site.is_ipv6() {
        return Ok(());
    }
    let family = |a: IpAddr| if a.is_ipv6() { "IPv6" } else { "IPv4" };
    Err(ValidationError::invalid(
        "localNetworkGateway2",
        format!(
            "the local gateway's gatewayIpAddress {site} is {} but the vnet-gateway's public address {gateway} is {}; IKE needs both ends in one address family: give the local gateway an {} address (or the vnet-gateway an {} one)",
            family(site),
            family(gateway),
            family(gateway),
            family(site),
        ),
    ))
}

fn check_no_self_overlap(target: &str, list: &[IpNet]) -> Result {
    for (i, a) in list.iter().enumerate() {
        for b in &list[i + 1..] {
            if a.contains(b) || b.contains(a) {
                return Err(ValidationError::invalid(
                    target,
                    format!("prefixes {a} and {b} overlap; list each range once"),
                ));
            }
        }
    }
    Ok(())
}

fn check_no_overlap(target: &str, ours: &[IpNet], what: &str, theirs: &[IpNet]) -> Result {
    for a in ours {
        for b in theirs {
            if a.contains(b) || b.contains(a) {
                return Err(ValidationError::invalid(
                    target,
                    format!(
                        "{a} overlaps {b} in {what}; routes would be ambiguous. Use disjoint prefixes, or a \
                         nat-rule and the translated prefixes"
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn check_local_gateway(lg: &LocalGatewaySpec) -> Result {
    check_name(kind::LOCAL_GATEWAY, &lg.name)?;
    match (&lg.gateway_ip_address, &lg.fqdn) {
        (Some(ip), None) => {
            parse_ip("gatewayIpAddress", ip)?;
        }
        (None, Some(fqdn)) => {
            let ok = fqdn.len() <= 253
                && fqdn.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                });
            if !ok {
                return Err(ValidationError::invalid(
                    "fqdn",
                    format!("'{fqdn}' is not a valid DNS name"),
                ));
            }
        }
        (Some(_), Some(_)) => {
            return Err(ValidationError::invalid(
                "fqdn",
                "give either --gateway-ip-address or --fqdn, not both",
            ));
        }
        (None, None) => {
            return Err(ValidationError::invalid(
                "gatewayIpAddress",
                "the site's device address is missing; pass --gateway-ip-address IP or --fqdn NAME",
            ));
        }
    }
    let prefixes = parse_prefixes(
        "localNetworkAddressSpace.addressPrefixes",
        &lg.local_network_address_space.address_prefixes,
    )?;
    check_no_self_overlap("localNetworkAddressSpace.addressPrefixes", &prefixes)?;
    if let Some(bgp) = &lg.bgp_settings {
        check_asn("bgpSettings.asn", bgp.asn, true)?;
        check_bgp_timers(bgp)?;
        match &bgp.bgp_peering_address {
            Some(addr) => check_bgp_peering_address("bgpSettings.bgpPeeringAddress", addr)?,
            None => {
                return Err(ValidationError::invalid(
                    "bgpSettings.bgpPeeringAddress",
                    "BGP on a local gateway needs the site's peering address; pass --bgp-peering-address IP",
                ));
            }
        }
        if !bgp.bgp_peering_addresses.is_empty() {
            return Err(ValidationError::invalid(
                "bgpSettings.bgpPeeringAddresses",
                "bgpPeeringAddresses belongs to the vnet-gateway; a local gateway has one bgpPeeringAddress",
            ));
        }
    } else if prefixes.is_empty() {
        return Err(ValidationError::invalid(
            "localNetworkAddressSpace.addressPrefixes",
            "a local gateway without BGP needs the site's prefixes; pass --local-address-prefixes CIDR...",
        ));
    }
    Ok(())
}

fn check_connection(c: &ConnectionSpec, state: &DesiredState) -> Result {
    check_name(kind::CONNECTION, &c.name)?;
    let Some(gw) = &state.gateway else {
        return Err(ValidationError::invalid(
            "virtualNetworkGateway1",
            "there is no vnet-gateway yet; create it first with 'vgw vnet-gateway create'",
        ));
    };
    if let Some(r) = &c.virtual_network_gateway1
        && r.name != gw.name
    {
        return Err(ValidationError::invalid(
            "virtualNetworkGateway1",
            format!(
                "this daemon serves vnet-gateway '{}', not '{}'",
                gw.name, r.name
            ),
        ));
    }
    let Some(lg) = state.local_gateways.get(&c.local_network_gateway2.name) else {
        return Err(ValidationError::invalid(
            "localNetworkGateway2",
            format!(
                "local-gateway '{}' does not exist; create it first or name an existing one ('vgw local-gateway list')",
                c.local_network_gateway2.name
            ),
        ));
    };
    if let Some(site) = lg.gateway_ip_address.as_deref() {
        let site: Option<IpAddr> = site.trim().parse().ok();
        for cfg in &gw.ip_configurations {
            if let (Ok(ours), Some(site)) = (cfg.public_ip_address.trim().parse(), site) {
                check_outer_families(ours, site)?;
            }
        }
    }
    if c.connection_protocol == ConnectionProtocol::IKEv1 {
        return Err(ValidationError::invalid(
            "connectionProtocol",
            "vgw speaks IKEv2 only; use --connection-protocol IKEv2",
        ));
    }
    if c.connection_type == ConnectionType::Vnet2Vnet {
        return Err(ValidationError::invalid(
            "connectionType",
            "model the other vgw as a local-gateway and use connectionType IPsec",
        ));
    }
    match &c.shared_key {
        Some(key) => check_shared_key("sharedKey", key)?,
        None => {
            return Err(ValidationError::invalid(
                "sharedKey",
                "the connection needs a pre-shared key; pass --shared-key KEY (in an apply file: sharedKey, which 'vgw export --include-secrets' writes)",
            ));
        }
    }
    if c.routing_weight > 32000 {
        return Err(ValidationError::invalid(
            "routingWeight",
            format!("routingWeight {} is above 32000", c.routing_weight),
        ));
    }
    // vgw accepts down to 1 s (Azure: 9): a fast dead-peer detection is what moves traffic to a
    // redundant tunnel within about a second when BFD is not used (docs/redundancy.md).
    if !(1..=3600).contains(&c.dpd_timeout_seconds) {
        return Err(ValidationError::invalid(
            "dpdTimeoutSeconds",
            format!(
                "dpdTimeoutSeconds {} is outside 1-3600 (Azure: 9-3600); Azure's default is 45",
                c.dpd_timeout_seconds
            ),
        ));
    }
    if c.enable_bfd && !c.enable_bgp {
        return Err(ValidationError::invalid(
            "enableBfd",
            "BFD runs between the BGP peering addresses; enable BGP on the connection (--enable-bgp) too",
        ));
    }
    if let Some(ms) = c.bfd_interval_milliseconds
        && !(10..=60_000).contains(&ms)
    {
        return Err(ValidationError::invalid(
            "bfdIntervalMilliseconds",
            format!("bfdIntervalMilliseconds {ms} is outside 10-60000"),
        ));
    }
    if let Some(m) = c.bfd_multiplier
        && !(2..=50).contains(&m)
    {
        return Err(ValidationError::invalid(
            "bfdMultiplier",
            format!("bfdMultiplier {m} is outside 2-50"),
        ));
    }
    if c.enable_bgp {
        if !gw.enable_bgp || gw.bgp_settings.is_none() {
            return Err(ValidationError::invalid(
                "enableBgp",
                format!(
                    "BGP is not enabled on vnet-gateway '{}'; update it with --asn first",
                    gw.name
                ),
            ));
        }
        if lg.bgp_settings.is_none() {
            return Err(ValidationError::invalid(
                "enableBgp",
                format!(
                    "local-gateway '{}' has no bgpSettings; set its --asn and --bgp-peering-address",
                    lg.name
                ),
            ));
        }
    }
    for (i, a) in c.gateway_custom_bgp_ip_addresses.iter().enumerate() {
        check_apipa(&format!("gatewayCustomBgpIpAddresses[{i}]"), a)?;
    }
    if c.ipsec_policies.len() > 10 {
        return Err(ValidationError::invalid(
            "ipsecPolicies",
            "at most 10 ipsecPolicies per connection",
        ));
    }
    for (i, p) in c.ipsec_policies.iter().enumerate() {
        check_ipsec_policy(&format!("ipsecPolicies[{i}]"), p, c.allow_legacy_crypto)?;
    }
    for (i, tsp) in c.traffic_selector_policies.iter().enumerate() {
        for (field, list) in [
            ("localAddressRanges", &tsp.local_address_ranges),
            ("remoteAddressRanges", &tsp.remote_address_ranges),
        ] {
            if list.is_empty() {
                return Err(ValidationError::invalid(
                    format!("trafficSelectorPolicies[{i}].{field}"),
                    format!("{field} needs at least one prefix"),
                ));
            }
            parse_prefixes(&format!("trafficSelectorPolicies[{i}].{field}"), list)?;
        }
    }
    for (field, refs, mode) in [
        (
            "ingressNatRules",
            &c.ingress_nat_rules,
            NatRuleMode::IngressSnat,
        ),
        (
            "egressNatRules",
            &c.egress_nat_rules,
            NatRuleMode::EgressSnat,
        ),
    ] {
        for (i, r) in refs.iter().enumerate() {
            match gw.nat_rules.iter().find(|n| n.name == r.name) {
                None => {
                    return Err(ValidationError::invalid(
                        format!("{field}[{i}]"),
                        format!(
                            "nat-rule '{}' does not exist on vnet-gateway '{}'",
                            r.name, gw.name
                        ),
                    ));
                }
                Some(rule) if rule.mode != mode => {
                    return Err(ValidationError::invalid(
                        format!("{field}[{i}]"),
                        format!(
                            "nat-rule '{}' has mode {}; {field} takes {mode} rules",
                            r.name, rule.mode
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// Validates a whole desired state: each resource, then the rules between them.
pub fn validate_state(state: &DesiredState) -> Result {
    let gw_space = match &state.gateway {
        Some(gw) => {
            check_gateway(gw).map_err(|e| e.for_resource(kind::GATEWAY, &gw.name))?;
            parse_prefixes("addressSpace", &gw.address_space.address_prefixes)?
        }
        None => Vec::new(),
    };
    let pool = state
        .gateway
        .as_ref()
        .and_then(|g| g.vpn_client_configuration.as_ref())
        .map(|p| parse_prefixes("pool", &p.vpn_client_address_pool.address_prefixes))
        .transpose()?
        .unwrap_or_default();
    for lg in state.local_gateways.values() {
        check_local_gateway(lg).map_err(|e| e.for_resource(kind::LOCAL_GATEWAY, &lg.name))?;
        let prefixes = parse_prefixes("x", &lg.local_network_address_space.address_prefixes)?;
        let target = "localNetworkAddressSpace.addressPrefixes";
        check_no_overlap(
            target,
            &prefixes,
            "the vnet-gateway's addressSpace",
            &gw_space,
        )
        .and_then(|_| check_no_overlap(target, &prefixes, "the point-to-site client pool", &pool))
        .map_err(|e| e.for_resource(kind::LOCAL_GATEWAY, &lg.name))?;
    }
    for c in state.connections.values() {
        check_connection(c, state).map_err(|e| e.for_resource(kind::CONNECTION, &c.name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> IpsecPolicy {
        IpsecPolicy {
            sa_life_time_seconds: 27000,
            sa_data_size_kilobytes: 102_400_000,
            ipsec_encryption: IpsecEncryption::GcmAes256,
            ipsec_integrity: IpsecIntegrity::GcmAes256,
            ike_encryption: IkeEncryption::Aes256,
            ike_integrity: IkeIntegrity::Sha256,
            dh_group: DhGroup::DhGroup14,
            pfs_group: PfsGroup::Pfs2048,
        }
    }

    #[test]
    fn gcm_pairing_and_legacy() {
        assert!(check_ipsec_policy("p", &policy(), false).is_ok());
        let mut p = policy();
        p.ipsec_integrity = IpsecIntegrity::Sha256;
        let e = check_ipsec_policy("p", &p, false).unwrap_err();
        assert_eq!(e.target.as_deref(), Some("p.ipsecIntegrity"));
        let mut p = policy();
        p.dh_group = DhGroup::DhGroup2;
        assert!(check_ipsec_policy("p", &p, false).is_err());
        assert!(check_ipsec_policy("p", &p, true).is_ok());
    }

    #[test]
    fn shared_key_charset() {
        assert!(check_shared_key("k", "abcDEF123!@#").is_ok());
        assert!(check_shared_key("k", "has space").is_err());
        assert!(check_shared_key("k", "has-dash").is_err());
        assert!(check_shared_key("k", "").is_err());
        assert!(check_shared_key("k", &"a".repeat(129)).is_err());
    }

    #[test]
    fn outer_families_must_match() {
        let v4: IpAddr = "198.18.0.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(check_outer_families(v4, "198.18.0.2".parse().unwrap()).is_ok());
        assert!(check_outer_families(v6, "2001:db8::2".parse().unwrap()).is_ok());
        let e = check_outer_families(v6, v4).unwrap_err();
        assert_eq!(e.target.as_deref(), Some("localNetworkGateway2"));
        assert!(e.message.contains("IPv4") && e.message.contains("IPv6"));
    }

    #[test]
    fn ipv6_public_address_refuses_active_active_and_p2s() {
        let mut gw: VnetGatewaySpec = serde_json::from_value(serde_json::json!({
            "name": "gw",
            "ipConfigurations": [{"name": "a", "publicIpAddress": "2001:db8::2"}],
        }))
        .unwrap();
        assert!(check_ipv6_outer(&gw).is_ok());
        gw.ip_configurations.push(gw.ip_configurations[0].clone());
        gw.ip_configurations[1].public_ip_address = "198.18.0.9".into();
        gw.active_active = true;
        let e = check_ipv6_outer(&gw).unwrap_err();
        assert_eq!(
            e.target.as_deref(),
            Some("ipConfigurations[0].publicIpAddress")
        );
        gw.ip_configurations.truncate(1);
        gw.active_active = false;
        gw.vpn_client_configuration = Some(Default::default());
        let e = check_ipv6_outer(&gw).unwrap_err();
        assert_eq!(e.target.as_deref(), Some("vpnClientConfiguration"));
        gw.ip_configurations[0].public_ip_address = "198.18.0.1".into();
        assert!(check_ipv6_outer(&gw).is_ok());
    }

    #[test]
    fn prefixes_and_asns() {
        assert!(parse_prefix("t", "10.1.0.0/16").is_ok());
        let e = parse_prefix("t", "10.1.2.3/16").unwrap_err();
        assert!(e.message.contains("10.1.0.0/16"));
        assert!(parse_prefix("t", "10.1.0.0/33").is_err());
        assert!(check_asn("a", 65515, false).is_ok());
        assert!(check_asn("a", 65515, true).is_err());
        assert!(check_asn("a", 23456, false).is_err());
        assert!(check_asn("a", 4_200_000_000, true).is_ok());
        assert!(check_apipa("a", "169.254.21.1").is_ok());
        assert!(check_apipa("a", "169.254.23.1").is_err());
    }
}
