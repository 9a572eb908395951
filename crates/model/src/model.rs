//! The desired-state resources, with Azure VPN Gateway's names and camelCase JSON fields.
//!
//! Decision (docs/api.md): vgw flattens Azure's `properties` object into the resource, as `az` does in its
//! output. These `*Spec` types hold only what an operator writes; `id`, `etag`, `provisioningState` and the
//! status fields are added on output by the control plane's API. Input is strict (`deny_unknown_fields`) so a typo in a
//! field name is an error naming the field, never a silently ignored setting.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Defines a string enum with Azure's spelling: serialised as written, parsed case-insensitively (as az
/// does), and an unknown value is an error that lists the accepted ones.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? } default $default:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every accepted value, in Azure's spelling.
            pub const ALL: &'static [&'static str] = &[$($text),+];

            /// The value as Azure spells it.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl Default for $name {
            fn default() -> Self { Self::$default }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $(if s.eq_ignore_ascii_case($text) { return Ok(Self::$variant); })+
                Err(format!("'{}' is not one of {}", s, Self::ALL.join(", ")))
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> { s.serialize_str(self.as_str()) }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> { stringify!($name).into() }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "type": "string", "enum": Self::ALL })
            }
        }
    };
}

string_enum!(
    /// `gatewayType`: vgw is a VPN gateway only.
    GatewayType { Vpn = "Vpn" } default Vpn
);
string_enum!(
    /// `vpnType`: route-based (0.0.0.0/0 selectors, routing decides) or policy-based.
    VpnType { RouteBased = "RouteBased", PolicyBased = "PolicyBased" } default RouteBased
);
string_enum!(
    /// `sku.name`. vgw keeps the SKU for compatibility; it does not cap throughput by SKU.
    SkuName {
        Basic = "Basic", VpnGw1 = "VpnGw1", VpnGw2 = "VpnGw2", VpnGw3 = "VpnGw3", VpnGw4 = "VpnGw4",
        VpnGw5 = "VpnGw5", VpnGw1Az = "VpnGw1AZ", VpnGw2Az = "VpnGw2AZ", VpnGw3Az = "VpnGw3AZ",
        VpnGw4Az = "VpnGw4AZ", VpnGw5Az = "VpnGw5AZ",
    } default VpnGw1
);
string_enum!(
    /// `connectionType`.
    ConnectionType { IPsec = "IPsec", Vnet2Vnet = "Vnet2Vnet" } default IPsec
);
string_enum!(
    /// `connectionProtocol`. IKEv1 is accepted by the parser so the error can say it is unsupported.
    ConnectionProtocol { IKEv2 = "IKEv2", IKEv1 = "IKEv1" } default IKEv2
);
string_enum!(
    /// `connectionMode`: who may start IKE negotiations.
    ConnectionMode { Default = "Default", InitiatorOnly = "InitiatorOnly", ResponderOnly = "ResponderOnly" } default Default
);
string_enum!(
    /// `ipsecPolicies[].ipsecEncryption`; ChaCha20Poly1305 is a vgw extension (RFC 7634).
    IpsecEncryption {
        None = "None", Des = "DES", Des3 = "DES3", Aes128 = "AES128", Aes192 = "AES192", Aes256 = "AES256",
        GcmAes128 = "GCMAES128", GcmAes192 = "GCMAES192", GcmAes256 = "GCMAES256",
        ChaCha20Poly1305 = "ChaCha20Poly1305",
    } default GcmAes256
);
string_enum!(
    /// `ipsecPolicies[].ipsecIntegrity`; an AEAD encryption names itself here too.
    IpsecIntegrity {
        Md5 = "MD5", Sha1 = "SHA1", Sha256 = "SHA256", GcmAes128 = "GCMAES128", GcmAes192 = "GCMAES192",
        GcmAes256 = "GCMAES256", ChaCha20Poly1305 = "ChaCha20Poly1305",
    } default GcmAes256
);
string_enum!(
    /// `ipsecPolicies[].ikeEncryption`; ChaCha20Poly1305 is a vgw extension (RFC 7634).
    IkeEncryption {
        Des = "DES", Des3 = "DES3", Aes128 = "AES128", Aes192 = "AES192", Aes256 = "AES256",
        GcmAes128 = "GCMAES128", GcmAes256 = "GCMAES256", ChaCha20Poly1305 = "ChaCha20Poly1305",
    } default Aes256
);
string_enum!(
    /// `ipsecPolicies[].ikeIntegrity`: the integrity algorithm, and the PRF hash for AEAD encryption.
    IkeIntegrity {
        Md5 = "MD5", Sha1 = "SHA1", Sha256 = "SHA256", Sha384 = "SHA384", Sha512 = "SHA512",
        GcmAes128 = "GCMAES128", GcmAes256 = "GCMAES256",
    } default Sha256
);
string_enum!(
    /// `ipsecPolicies[].dhGroup`; Curve25519 (group 31, RFC 8031) is a vgw extension.
    DhGroup {
        None = "None", DhGroup1 = "DHGroup1", DhGroup2 = "DHGroup2", DhGroup14 = "DHGroup14",
        DhGroup2048 = "DHGroup2048", Ecp256 = "ECP256", Ecp384 = "ECP384", DhGroup24 = "DHGroup24",
        Curve25519 = "Curve25519",
    } default DhGroup14
);
string_enum!(
    /// `ipsecPolicies[].pfsGroup`; PFSMM means "the IKE SA's group".
    PfsGroup {
        None = "None", Pfs1 = "PFS1", Pfs2 = "PFS2", Pfs2048 = "PFS2048", Ecp256 = "ECP256",
        Ecp384 = "ECP384", Pfs24 = "PFS24", Pfs14 = "PFS14", PfsMm = "PFSMM", Curve25519 = "Curve25519",
    } default None
);
string_enum!(
    /// `natRules[].type`.
    NatRuleType { Static = "Static", Dynamic = "Dynamic" } default Static
);
string_enum!(
    /// `natRules[].mode`.
    NatRuleMode { EgressSnat = "EgressSnat", IngressSnat = "IngressSnat" } default EgressSnat
);
string_enum!(
    /// `vpnClientProtocols[]`: vgw serves IKEv2 and WireGuard; the others parse so the error can say so.
    VpnClientProtocol { IkeV2 = "IkeV2", WireGuard = "WireGuard", OpenVpn = "OpenVPN", Sstp = "SSTP" } default IkeV2
);
string_enum!(
    /// `vpnAuthenticationTypes[]`.
    VpnAuthenticationType { Certificate = "Certificate", Radius = "Radius", Aad = "AAD" } default Certificate
);

/// `{addressPrefixes: [...]}`, used for address spaces, custom routes and the client pool.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddressSpace {
    /// CIDR prefixes, IPv4 or IPv6, written in canonical network form.
    #[serde(default)]
    pub address_prefixes: Vec<String>,
}

impl AddressSpace {
    /// True when there are no prefixes.
    pub fn is_empty(&self) -> bool {
        self.address_prefixes.is_empty()
    }
}

/// `sku`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sku {
    /// VpnGw1 .. VpnGw5AZ.
    #[serde(default)]
    pub name: SkuName,
    /// Azure repeats the name as the tier; vgw fills it in when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<SkuName>,
}

/// `ipConfigurations[]`: one public address per gateway instance (two for active-active).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpConfiguration {
    /// Name of the instance's configuration, `default` and `activeActive` as az names them.
    pub name: String,
    /// The address the instance listens on for IKE (UDP 500/4500).
    pub public_ip_address: String,
}

/// `bgpSettings.bgpPeeringAddresses[]`: per-instance BGP addresses, including custom APIPA ones.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpPeeringAddress {
    /// The `ipConfigurations[].name` this entry belongs to.
    #[serde(default)]
    pub ipconfiguration_id: String,
    /// Custom BGP addresses in 169.254.21.0 – 169.254.22.255.
    #[serde(default)]
    pub custom_bgp_ip_addresses: Vec<String>,
}

/// `bgpSettings` of the gateway or of a local gateway.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpSettings {
    /// Autonomous system number (4-octet allowed, RFC 6793).
    pub asn: u64,
    /// The address BGP peers with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp_peering_address: Option<String>,
    /// Weight added to routes learned from this peer.
    #[serde(default)]
    pub peer_weight: u32,
    /// Gateway only: per-instance custom (APIPA) addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bgp_peering_addresses: Vec<BgpPeeringAddress>,
    /// vgw: BGP hold time in seconds (0, or 3-65535; default 180 as Azure). On the gateway it is the
    /// default for every peer; on a local gateway it overrides it for that peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time_seconds: Option<u16>,
    /// vgw: keepalive interval in seconds (1 or more, at most a third of the hold time; default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_seconds: Option<u16>,
    /// vgw: prefixes a peer may advertise before `maxPrefixAction` applies (default 100000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_prefixes: Option<u32>,
    /// vgw: what happens above `maxPrefixes`: `Warn` (default: log and keep the session) or `Teardown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_prefix_action: Option<MaxPrefixAction>,
}

string_enum!(
    /// `bgpSettings.maxPrefixAction` (vgw): warn and keep the session, or tear it down (RFC 4486 Cease).
    MaxPrefixAction { Warn = "Warn", Teardown = "Teardown" } default Warn
);

/// One address mapping of a NAT rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NatMapping {
    /// A CIDR prefix.
    pub address_space: String,
    /// Optional `low-high` port range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range: Option<String>,
}

/// `natRules[]` of the gateway: address translation for overlapping address spaces.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NatRule {
    /// Rule name, unique within the gateway.
    pub name: String,
    /// Static (1:1 prefix mapping) or Dynamic (many to one).
    #[serde(default, rename = "type")]
    pub rule_type: NatRuleType,
    /// EgressSnat translates our side's addresses, IngressSnat the site's.
    #[serde(default)]
    pub mode: NatRuleMode,
    /// Addresses before translation.
    #[serde(default)]
    pub internal_mappings: Vec<NatMapping>,
    /// Addresses after translation.
    #[serde(default)]
    pub external_mappings: Vec<NatMapping>,
    /// Restricts the rule to one gateway instance (an `ipConfigurations[].name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_configuration_id: Option<String>,
}

/// `vpnClientRootCertificates[]`: a trust anchor for point-to-site client certificates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RootCertificate {
    /// Certificate name.
    pub name: String,
    /// Base64 of the DER certificate (Azure's format: a PEM body without the header lines).
    pub public_cert_data: String,
}

/// `vpnClientRevokedCertificates[]`: a client certificate refused by SHA-1 thumbprint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevokedCertificate {
    /// Entry name.
    pub name: String,
    /// 40 hex digits; stored upper case as Azure shows it.
    pub thumbprint: String,
}

/// `vpnClientConfiguration`: point-to-site settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VpnClientConfiguration {
    /// The pool client addresses come from.
    #[serde(default)]
    pub vpn_client_address_pool: AddressSpace,
    /// IkeV2 and/or WireGuard.
    #[serde(default)]
    pub vpn_client_protocols: Vec<VpnClientProtocol>,
    /// Certificate (Radius and AAD are refused).
    #[serde(default)]
    pub vpn_authentication_types: Vec<VpnAuthenticationType>,
    /// Trust anchors.
    #[serde(default)]
    pub vpn_client_root_certificates: Vec<RootCertificate>,
    /// Revoked client certificates.
    #[serde(default)]
    pub vpn_client_revoked_certificates: Vec<RevokedCertificate>,
    /// Custom proposals for clients.
    #[serde(default)]
    pub vpn_client_ipsec_policies: Vec<IpsecPolicy>,
    /// vgw: DNS servers handed to clients in the configuration payload (Azure takes the virtual
    /// network's DNS servers; vgw has no virtual network resource, so the gateway carries them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_servers: Vec<String>,
    /// vgw: WireGuard clients by name, in the order they were added (each gets the next address of the
    /// pool's WireGuard half, and a key pair the daemon derives; its .conf is in the client package).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wire_guard_peers: Vec<String>,
    /// vgw: public keys (base64, 32 bytes) the users of some `wireGuardPeers` generated themselves, by
    /// peer name. Such a peer's private key never exists on the gateway: its package carries a
    /// placeholder the user replaces with their own key.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub wire_guard_peer_public_keys: std::collections::BTreeMap<String, String>,
}

/// The vnet-gateway: one per daemon.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VnetGatewaySpec {
    /// Resource name.
    #[serde(default)]
    pub name: String,
    /// Always Vpn.
    #[serde(default)]
    pub gateway_type: GatewayType,
    /// RouteBased (default) or PolicyBased.
    #[serde(default)]
    pub vpn_type: VpnType,
    /// Kept for compatibility.
    #[serde(default)]
    pub sku: Sku,
    /// True with two ipConfigurations.
    #[serde(default)]
    pub active_active: bool,
    /// Whether the gateway speaks BGP.
    #[serde(default)]
    pub enable_bgp: bool,
    /// The gateway's ASN and peering addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp_settings: Option<BgpSettings>,
    /// The public addresses the gateway listens on.
    #[serde(default)]
    pub ip_configurations: Vec<IpConfiguration>,
    /// vgw extension: the network behind the gateway (Azure takes it from the VNet).
    #[serde(default)]
    pub address_space: AddressSpace,
    /// Extra prefixes advertised to sites.
    #[serde(default, skip_serializing_if = "AddressSpace::is_empty")]
    pub custom_routes: AddressSpace,
    /// Point-to-site settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpn_client_configuration: Option<VpnClientConfiguration>,
    /// NAT rules.
    #[serde(default)]
    pub nat_rules: Vec<NatRule>,
    /// Translate BGP-learned prefixes through NAT rules.
    #[serde(default)]
    pub enable_bgp_route_translation_for_nat: bool,
}

/// A local-gateway: the remote site as seen from here.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalGatewaySpec {
    /// Resource name.
    #[serde(default)]
    pub name: String,
    /// The site device's public address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_ip_address: Option<String>,
    /// Or its DNS name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fqdn: Option<String>,
    /// The site's prefixes, routed into the tunnel.
    #[serde(default)]
    pub local_network_address_space: AddressSpace,
    /// The site's BGP speaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp_settings: Option<BgpSettings>,
}

/// `ipsecPolicies[]` entry: Azure requires all eight fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpsecPolicy {
    /// Child SA lifetime, 300 – 172799 s.
    pub sa_life_time_seconds: u64,
    /// Child SA volume limit, >= 1024 KB.
    pub sa_data_size_kilobytes: u64,
    /// ESP encryption.
    pub ipsec_encryption: IpsecEncryption,
    /// ESP integrity.
    pub ipsec_integrity: IpsecIntegrity,
    /// IKE encryption.
    pub ike_encryption: IkeEncryption,
    /// IKE integrity / PRF.
    pub ike_integrity: IkeIntegrity,
    /// IKE DH group.
    pub dh_group: DhGroup,
    /// Child SA PFS group.
    pub pfs_group: PfsGroup,
}

/// `trafficSelectorPolicies[]`: one Child SA per local/remote pair.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficSelectorPolicy {
    /// Our side's prefixes.
    pub local_address_ranges: Vec<String>,
    /// The site's prefixes.
    pub remote_address_ranges: Vec<String>,
}

/// A reference to another resource, shown as Azure shows it: `{"id": "/.../name"}`. Input may be that
/// object, a full id, or just the name.
#[derive(Clone, Debug, Default)]
pub struct ResourceRef {
    /// The referenced resource's name.
    pub name: String,
    collection: String,
}

/// Two references are equal when they name the same resource; the collection is presentation only.
impl PartialEq for ResourceRef {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl ResourceRef {
    /// A reference to a resource of `kind` (a collection name such as `localNetworkGateways`).
    pub fn new(collection: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            collection: collection.into(),
        }
    }
}

impl Serialize for ResourceRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(1))?;
        let collection = if self.collection.is_empty() {
            "resources"
        } else {
            &self.collection
        };
        map.serialize_entry("id", &resource_id(collection, &self.name))?;
        map.end()
    }
}

impl<'de> Deserialize<'de> for ResourceRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Object { id: String },
        }
        let text = match Form::deserialize(d)? {
            Form::Text(t) | Form::Object { id: t } => t,
        };
        let name = text.rsplit('/').next().unwrap_or_default().to_string();
        if name.is_empty() {
            return Err(serde::de::Error::custom(format!(
                "'{text}' names no resource"
            )));
        }
        Ok(Self {
            name,
            collection: String::new(),
        })
    }
}

impl JsonSchema for ResourceRef {
    fn schema_name() -> Cow<'static, str> {
        "ResourceRef".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A resource reference: {\"id\": \"...\"}, a resource id, or a name",
            "oneOf": [
                {"type": "string"},
                {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}
            ]
        })
    }
}

/// A vpn-connection between the gateway and a local gateway.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionSpec {
    /// Resource name.
    #[serde(default)]
    pub name: String,
    /// IPsec (site-to-site) or Vnet2Vnet.
    #[serde(default)]
    pub connection_type: ConnectionType,
    /// The gateway; defaults to this daemon's.
    #[serde(default)]
    pub virtual_network_gateway1: Option<ResourceRef>,
    /// The remote site.
    pub local_network_gateway2: ResourceRef,
    /// Write-only: the pre-shared key. Never serialised by `show`, `list` or `export`.
    #[serde(default, skip_serializing)]
    pub shared_key: Option<String>,
    /// IKEv2 only.
    #[serde(default)]
    pub connection_protocol: ConnectionProtocol,
    /// Who starts negotiations.
    #[serde(default)]
    pub connection_mode: ConnectionMode,
    /// Route preference, 0 – 32000.
    #[serde(default)]
    pub routing_weight: u32,
    /// Dead-peer detection timeout, 9 – 3600 s.
    #[serde(default = "default_dpd_timeout")]
    pub dpd_timeout_seconds: u32,
    /// Run BGP over this connection.
    #[serde(default)]
    pub enable_bgp: bool,
    /// vgw extension: BFD (RFC 5880, multihop RFC 5883) with the site's BGP peering address over the
    /// tunnel; a BFD failure takes the BGP session and its routes down within interval x multiplier.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enable_bfd: bool,
    /// vgw extension: BFD transmit and receive interval in milliseconds (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_interval_milliseconds: Option<u32>,
    /// vgw extension: BFD detection multiplier (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_multiplier: Option<u8>,
    /// Custom APIPA BGP addresses of the gateway for this connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway_custom_bgp_ip_addresses: Vec<String>,
    /// Negotiate one Child SA per prefix pair instead of 0.0.0.0/0.
    #[serde(default)]
    pub use_policy_based_traffic_selectors: bool,
    /// Explicit selector pairs.
    #[serde(default)]
    pub traffic_selector_policies: Vec<TrafficSelectorPolicy>,
    /// Custom proposals; empty means vgw's defaults.
    #[serde(default)]
    pub ipsec_policies: Vec<IpsecPolicy>,
    /// NAT rule names applied to traffic from the site.
    #[serde(default)]
    pub ingress_nat_rules: Vec<ResourceRef>,
    /// NAT rule names applied to traffic to the site.
    #[serde(default)]
    pub egress_nat_rules: Vec<ResourceRef>,
    /// vgw extension: permit DES, 3DES, MD5 and DH groups 1/2/24 on this connection.
    #[serde(default)]
    pub allow_legacy_crypto: bool,
}

impl fmt::Debug for ConnectionSpec {
    /// Written by hand so the shared key can never reach a log through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionSpec")
            .field("name", &self.name)
            .field("local_network_gateway2", &self.local_network_gateway2.name)
            .field(
                "shared_key",
                &self.shared_key.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// Azure's default dead-peer-detection timeout.
pub fn default_dpd_timeout() -> u32 {
    45
}

/// The subscription id a daemon's resources live in when `vgw serve --subscription-id` is not given.
pub const DEFAULT_SUBSCRIPTION_ID: &str = "00000000-0000-0000-0000-000000000000";
/// The resource group a daemon's resources live in when `vgw serve --resource-group` is not given.
pub const DEFAULT_RESOURCE_GROUP: &str = "vgw";

/// The `location` a daemon's resources show when `vgw serve --location` is not given.
pub const DEFAULT_LOCATION: &str = "local";

/// Where a daemon's resources live, in Azure's terms: one subscription, one resource group, one
/// location (display only; vgw runs where it is started).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceScope {
    /// The subscription id in every resource id.
    pub subscription_id: String,
    /// The resource group in every resource id and `resourceGroup` field.
    pub resource_group: String,
    /// The `location` field of every top-level resource.
    pub location: String,
}

static RESOURCE_SCOPE: std::sync::OnceLock<ResourceScope> = std::sync::OnceLock::new();
static DEFAULT_SCOPE: std::sync::LazyLock<ResourceScope> =
    std::sync::LazyLock::new(|| ResourceScope {
        subscription_id: DEFAULT_SUBSCRIPTION_ID.into(),
        resource_group: DEFAULT_RESOURCE_GROUP.into(),
        location: DEFAULT_LOCATION.into(),
    });

/// Sets the scope of every resource of this process (once, at start-up; a second call is ignored and
/// returns false).
pub fn set_resource_scope(scope: ResourceScope) -> bool {
    RESOURCE_SCOPE.set(scope).is_ok()
}

/// This process's resource scope (the defaults until [`set_resource_scope`]).
pub fn resource_scope() -> &'static ResourceScope {
    RESOURCE_SCOPE.get().unwrap_or(&DEFAULT_SCOPE)
}

/// The id vgw gives a resource. Decision (docs/architecture.md): Azure's ARM form,
/// `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/{collection}/{name}`, with the
/// daemon's one subscription id and resource group. Input references are matched on their last segment,
/// so the older `/vgw/{collection}/{name}` ids in stored state and documents keep working.
pub fn resource_id(collection: &str, name: &str) -> String {
    let ResourceScope {
        subscription_id: sub,
        resource_group: rg,
        ..
    } = resource_scope();
    format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/{collection}/{name}"
    )
}

/// Collection names, as in Azure's resource types (`Microsoft.Network/<collection>`).
pub mod collection {
    /// The gateway.
    pub const GATEWAYS: &str = "virtualNetworkGateways";
    /// Local gateways.
    pub const LOCAL_GATEWAYS: &str = "localNetworkGateways";
    /// Connections.
    pub const CONNECTIONS: &str = "connections";
}

impl ConnectionSpec {
    /// Restores the collection names of references after deserialisation, so output ids are complete.
    pub fn normalise_refs(&mut self, gateway_name: Option<&str>) {
        self.local_network_gateway2.collection = collection::LOCAL_GATEWAYS.into();
        match (&mut self.virtual_network_gateway1, gateway_name) {
            (Some(r), _) => r.collection = collection::GATEWAYS.into(),
            (None, Some(g)) => {
                self.virtual_network_gateway1 = Some(ResourceRef::new(collection::GATEWAYS, g))
            }
            (None, None) => {}
        }
        let nat_collection = format!(
            "{}/{}/natRules",
            collection::GATEWAYS,
            gateway_name.unwrap_or("-")
        );
        for r in self
            .ingress_nat_rules
            .iter_mut()
            .chain(self.egress_nat_rules.iter_mut())
        {
            r.collection = nat_collection.clone();
        }
    }
}
