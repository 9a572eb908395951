//! Point-to-site client profiles: one zip with ready configurations for strongSwan (swanctl),
//! Apple (a `.mobileconfig`), Windows (a PowerShell script), WireGuard, and a generic XML.
//!
//! The IKE and ESP proposals written into each file come from the gateway's configured policy
//! ([`IpsecPolicy`], Azure's `ipsecPolicies` / `vpnClientIpsecPolicies` names), mapped to each
//! client's own vocabulary. strongSwan takes every policy as an alternative proposal; Apple and
//! Windows can be given only one, so they get the first. A platform that cannot express the
//! policy (Windows has no Curve25519, Apple no DH group 24, ...) is left out of the zip and the
//! reason is written to `README.txt` and returned in [`ProfilePackage::notes`].
//!
//! Routes: strongSwan and Windows get the split-tunnel routes explicitly; Apple clients route
//! what the gateway's traffic selectors announce. The IKE SA lifetime is not part of Azure's
//! policy; the profiles use 8 hours (28800 s), as Azure does.

use std::fmt::Write as _;
use std::io::{Cursor, Write as _};

use serde::{Deserialize, Serialize};
use vgw_model::model::{
    DhGroup, IkeEncryption, IkeIntegrity, IpsecEncryption, IpsecIntegrity, PfsGroup,
};

use crate::inspect::{certs_from_pem_or_der, summarize, thumbprint};
use crate::{Error, Result};

/// The IKE SA lifetime the profiles ask for, in seconds.
pub const IKE_SA_LIFETIME_SECONDS: u64 = 28_800;

/// One IPsec/IKE policy with Azure's field names and values (`ipsecPolicies[]`); the values are the
/// model crate's algorithm names, parsed there and nowhere else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpsecPolicy {
    /// DES, DES3, AES128, AES192, AES256, GCMAES128, GCMAES256, ChaCha20Poly1305.
    pub ike_encryption: IkeEncryption,
    /// MD5, SHA1, SHA256, SHA384, SHA512, GCMAES128, GCMAES256 (the PRF for AEAD encryption).
    pub ike_integrity: IkeIntegrity,
    /// DHGroup1, DHGroup2, DHGroup14, DHGroup2048, ECP256, ECP384, DHGroup24, Curve25519.
    pub dh_group: DhGroup,
    /// None, DES, DES3, AES128, AES192, AES256, GCMAES128, GCMAES192, GCMAES256, ChaCha20Poly1305.
    pub ipsec_encryption: IpsecEncryption,
    /// MD5, SHA1, SHA256, GCMAES128, GCMAES192, GCMAES256, ChaCha20Poly1305.
    pub ipsec_integrity: IpsecIntegrity,
    /// None, PFS1, PFS2, PFS2048, PFS14, ECP256, ECP384, PFS24, PFSMM, Curve25519.
    pub pfs_group: PfsGroup,
    /// Child SA lifetime in seconds (0: the client's default).
    #[serde(default)]
    pub sa_life_time_seconds: u64,
    /// Child SA volume limit in KB (informational; clients do not take it).
    #[serde(default)]
    pub sa_data_size_kilobytes: u64,
}

impl Default for IpsecPolicy {
    /// AES256/SHA256/DHGroup14 for IKE, GCMAES256 without PFS for ESP, 8 h.
    fn default() -> Self {
        IpsecPolicy {
            ike_encryption: IkeEncryption::Aes256,
            ike_integrity: IkeIntegrity::Sha256,
            dh_group: DhGroup::DhGroup14,
            ipsec_encryption: IpsecEncryption::GcmAes256,
            ipsec_integrity: IpsecIntegrity::GcmAes256,
            pfs_group: PfsGroup::None,
            sa_life_time_seconds: 28_800,
            sa_data_size_kilobytes: 102_400_000,
        }
    }
}

/// How clients should check the gateway's certificate: its subject DN and/or one of its SANs.
/// The SAN is preferred as the IKE identity (Apple and Windows match the SAN).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerIdentity {
    /// e.g. `CN=vpn.example.com`.
    #[serde(default)]
    pub subject: Option<String>,
    /// A DNS name or IP address in the server certificate's subjectAltName.
    #[serde(default)]
    pub san: Option<String>,
}

/// The client the profile is made for (optional: without it files use `client` as the name).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientProfile {
    /// File name stem of the client's certificate files (`alice` for `alice.crt.pem`).
    pub name: String,
    /// The IKE identity the client sends (Apple's LocalIdentifier, swanctl `local.id`). Default:
    /// the certificate's first e-mail or DNS SAN, else none (the subject DN is used).
    #[serde(default)]
    pub identity: Option<String>,
    /// The client certificate (DER; base64 in JSON): gives Apple's CertificateType and the
    /// default identity.
    #[serde(default, with = "b64_opt")]
    pub certificate: Option<Vec<u8>>,
    /// The client's PKCS#12 (DER; base64 in JSON): embedded in the Apple profile, whose
    /// installer then asks for its password.
    #[serde(default, with = "b64_opt")]
    pub pkcs12: Option<Vec<u8>>,
}

/// One WireGuard peer the profile carries a configuration for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireGuardClient {
    /// File name stem: `WireGuard/<name>.conf`.
    pub name: String,
    /// The client's private key (base64); `None` writes a placeholder to replace.
    #[serde(default)]
    pub private_key: Option<String>,
    /// The tunnel address, e.g. `172.16.201.2/32`.
    pub address: String,
}

/// The gateway's WireGuard side.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireGuardInput {
    /// The gateway's public key (base64).
    pub server_public_key: String,
    /// `host:port` the clients connect to.
    pub endpoint: String,
    /// One configuration per entry.
    #[serde(default)]
    pub clients: Vec<WireGuardClient>,
}

/// Everything the profile generator needs to know about the gateway.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileInput {
    /// The gateway's name; names the connection on every platform.
    pub gateway_name: String,
    /// The gateway's public IP address.
    pub server_address: String,
    /// A DNS name for it; clients connect to this when given.
    #[serde(default)]
    pub server_dns_name: Option<String>,
    /// What the server certificate says.
    #[serde(default)]
    pub server_identity: ServerIdentity,
    /// Root CA certificates (DER; in JSON each is PEM or base64 DER).
    #[serde(with = "b64_certs")]
    pub root_certificates: Vec<Vec<u8>>,
    /// The configured policies, most preferred first; empty means [`IpsecPolicy::default`].
    #[serde(default)]
    pub policies: Vec<IpsecPolicy>,
    /// Split-tunnel routes (CIDR prefixes).
    #[serde(default)]
    pub routes: Vec<String>,
    /// DNS servers handed to clients.
    #[serde(default)]
    pub dns_servers: Vec<String>,
    /// The client address pool (CIDR prefixes).
    #[serde(default)]
    pub client_address_pool: Vec<String>,
    /// The client the files are for.
    #[serde(default)]
    pub client: Option<ClientProfile>,
    /// WireGuard data, when the gateway serves WireGuard.
    #[serde(default)]
    pub wireguard: Option<WireGuardInput>,
}

/// The built zip and what was left out.
#[derive(Clone, Debug)]
pub struct ProfilePackage {
    /// The zip archive.
    pub zip: Vec<u8>,
    /// The paths inside the zip, in order.
    pub files: Vec<String>,
    /// Platforms left out and why.
    pub notes: Vec<String>,
}

mod b64_opt {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&base64::engine::general_purpose::STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let v: Option<String> = Option::deserialize(d)?;
        v.map(|s| {
            let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

mod b64_certs {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer, ser::SerializeSeq};

    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for der in v {
            seq.serialize_element(&base64::engine::general_purpose::STANDARD.encode(der))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let v: Vec<String> = Vec::deserialize(d)?;
        let mut out = Vec::new();
        for s in v {
            out.extend(
                crate::inspect::certs_from_pem_or_der(s.as_bytes())
                    .map_err(serde::de::Error::custom)?,
            );
        }
        Ok(out)
    }
}

// ---- the policy, parsed once --------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Enc {
    Null,
    Des,
    Des3,
    Aes(u16),
    Gcm(u16),
    ChaCha,
}

impl Enc {
    fn is_aead(self) -> bool {
        matches!(self, Enc::Gcm(_) | Enc::ChaCha)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hash {
    Md5,
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    Modp768,
    Modp1024,
    Modp2048,
    Modp2048s256,
    Ecp256,
    Ecp384,
    Curve25519,
}

impl Group {
    fn number(self) -> u16 {
        match self {
            Group::Modp768 => 1,
            Group::Modp1024 => 2,
            Group::Modp2048 => 14,
            Group::Modp2048s256 => 24,
            Group::Ecp256 => 19,
            Group::Ecp384 => 20,
            Group::Curve25519 => 31,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pfs {
    None,
    Group(Group),
    /// PFSMM: the IKE SA's group.
    SameAsIke,
}

/// A policy in typed form.
#[derive(Clone, Debug)]
struct Suite {
    ike_enc: Enc,
    /// Integrity (non-AEAD) or PRF (AEAD) hash.
    ike_hash: Hash,
    dh: Group,
    esp_enc: Enc,
    /// `None` for AEAD.
    esp_hash: Option<Hash>,
    pfs: Pfs,
    child_lifetime: u64,
}

impl Suite {
    fn pfs_group(&self) -> Option<Group> {
        match self.pfs {
            Pfs::None => None,
            Pfs::Group(g) => Some(g),
            Pfs::SameAsIke => Some(self.dh),
        }
    }
}

fn ike_enc(v: IkeEncryption) -> Enc {
    match v {
        IkeEncryption::Des => Enc::Des,
        IkeEncryption::Des3 => Enc::Des3,
        IkeEncryption::Aes128 => Enc::Aes(128),
        IkeEncryption::Aes192 => Enc::Aes(192),
        IkeEncryption::Aes256 => Enc::Aes(256),
        IkeEncryption::GcmAes128 => Enc::Gcm(128),
        IkeEncryption::GcmAes256 => Enc::Gcm(256),
        IkeEncryption::ChaCha20Poly1305 => Enc::ChaCha,
    }
}

fn esp_enc(v: IpsecEncryption) -> Enc {
    match v {
        IpsecEncryption::None => Enc::Null,
        IpsecEncryption::Des => Enc::Des,
        IpsecEncryption::Des3 => Enc::Des3,
        IpsecEncryption::Aes128 => Enc::Aes(128),
        IpsecEncryption::Aes192 => Enc::Aes(192),
        IpsecEncryption::Aes256 => Enc::Aes(256),
        IpsecEncryption::GcmAes128 => Enc::Gcm(128),
        IpsecEncryption::GcmAes192 => Enc::Gcm(192),
        IpsecEncryption::GcmAes256 => Enc::Gcm(256),
        IpsecEncryption::ChaCha20Poly1305 => Enc::ChaCha,
    }
}

fn dh_group(v: DhGroup) -> Option<Group> {
    Some(match v {
        DhGroup::None => return None,
        DhGroup::DhGroup1 => Group::Modp768,
        DhGroup::DhGroup2 => Group::Modp1024,
        DhGroup::DhGroup14 | DhGroup::DhGroup2048 => Group::Modp2048,
        DhGroup::DhGroup24 => Group::Modp2048s256,
        DhGroup::Ecp256 => Group::Ecp256,
        DhGroup::Ecp384 => Group::Ecp384,
        DhGroup::Curve25519 => Group::Curve25519,
    })
}

fn pfs_group(v: PfsGroup) -> Pfs {
    Pfs::Group(match v {
        PfsGroup::None => return Pfs::None,
        PfsGroup::PfsMm => return Pfs::SameAsIke,
        PfsGroup::Pfs1 => Group::Modp768,
        PfsGroup::Pfs2 => Group::Modp1024,
        PfsGroup::Pfs2048 | PfsGroup::Pfs14 => Group::Modp2048,
        PfsGroup::Pfs24 => Group::Modp2048s256,
        PfsGroup::Ecp256 => Group::Ecp256,
        PfsGroup::Ecp384 => Group::Ecp384,
        PfsGroup::Curve25519 => Group::Curve25519,
    })
}

fn parse_suite(p: &IpsecPolicy) -> Result<Suite> {
    let ike_enc = ike_enc(p.ike_encryption);
    let ike_hash = match p.ike_integrity {
        IkeIntegrity::Md5 => Hash::Md5,
        IkeIntegrity::Sha1 => Hash::Sha1,
        IkeIntegrity::Sha256 => Hash::Sha256,
        IkeIntegrity::Sha384 => Hash::Sha384,
        IkeIntegrity::Sha512 => Hash::Sha512,
        // As the gateway does: a GCM "integrity" means HMAC-SHA256 as the PRF.
        IkeIntegrity::GcmAes128 | IkeIntegrity::GcmAes256 if ike_enc.is_aead() => Hash::Sha256,
        IkeIntegrity::GcmAes128 | IkeIntegrity::GcmAes256 => {
            return Err(Error::Invalid(format!(
                "ikeIntegrity {} needs a GCM ikeEncryption (got {})",
                p.ike_integrity, p.ike_encryption
            )));
        }
    };
    let dh = dh_group(p.dh_group)
        .ok_or_else(|| Error::Invalid("dhGroup None: IKEv2 needs a DH group".into()))?;
    let esp_enc = esp_enc(p.ipsec_encryption);
    let esp_hash = match p.ipsec_integrity {
        IpsecIntegrity::Md5 => Some(Hash::Md5),
        IpsecIntegrity::Sha1 => Some(Hash::Sha1),
        IpsecIntegrity::Sha256 => Some(Hash::Sha256),
        IpsecIntegrity::GcmAes128
        | IpsecIntegrity::GcmAes192
        | IpsecIntegrity::GcmAes256
        | IpsecIntegrity::ChaCha20Poly1305 => None,
    };
    if esp_enc.is_aead() != esp_hash.is_none() && esp_enc != Enc::Null {
        return Err(Error::Invalid(format!(
            "ipsecEncryption {} does not go with ipsecIntegrity {}",
            p.ipsec_encryption, p.ipsec_integrity
        )));
    }
    if esp_enc == Enc::Null && esp_hash.is_none() {
        return Err(Error::Invalid(
            "ipsecEncryption None needs a non-AEAD ipsecIntegrity".into(),
        ));
    }
    Ok(Suite {
        ike_enc,
        ike_hash,
        dh,
        esp_enc,
        esp_hash,
        pfs: pfs_group(p.pfs_group),
        child_lifetime: p.sa_life_time_seconds,
    })
}

// ---- strongSwan ---------------------------------------------------------------------------

fn ss_enc(e: Enc) -> String {
    match e {
        Enc::Null => "null".into(),
        Enc::Des => "des".into(),
        Enc::Des3 => "3des".into(),
        Enc::Aes(b) => format!("aes{b}"),
        Enc::Gcm(b) => format!("aes{b}gcm16"),
        Enc::ChaCha => "chacha20poly1305".into(),
    }
}

fn ss_hash(h: Hash) -> &'static str {
    match h {
        Hash::Md5 => "md5",
        Hash::Sha1 => "sha1",
        Hash::Sha256 => "sha256",
        Hash::Sha384 => "sha384",
        Hash::Sha512 => "sha512",
    }
}

fn ss_group(g: Group) -> &'static str {
    match g {
        Group::Modp768 => "modp768",
        Group::Modp1024 => "modp1024",
        Group::Modp2048 => "modp2048",
        Group::Modp2048s256 => "modp2048s256",
        Group::Ecp256 => "ecp256",
        Group::Ecp384 => "ecp384",
        Group::Curve25519 => "curve25519",
    }
}

/// swanctl `proposals` (IKE) and `esp_proposals` (ESP) for one policy, e.g.
/// `aes256-sha256-modp2048` and `aes256gcm16`.
pub fn strongswan_proposals(p: &IpsecPolicy) -> Result<(String, String)> {
    let s = parse_suite(p)?;
    // In an IKE proposal the hash keyword stands for both integrity and PRF; with AEAD only
    // the PRF is wanted.
    let ike_mid = if s.ike_enc.is_aead() {
        format!("prf{}", ss_hash(s.ike_hash))
    } else {
        ss_hash(s.ike_hash).to_string()
    };
    let ike = format!("{}-{}-{}", ss_enc(s.ike_enc), ike_mid, ss_group(s.dh));
    let mut esp = ss_enc(s.esp_enc);
    if let Some(h) = s.esp_hash {
        esp.push('-');
        esp.push_str(ss_hash(h));
    }
    if let Some(g) = s.pfs_group() {
        esp.push('-');
        esp.push_str(ss_group(g));
    }
    Ok((ike, esp))
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `strongSwan/swanctl.conf`: a road-warrior connection that starts at load.
pub fn swanctl_conf(input: &ProfileInput) -> Result<String> {
    let policies = effective_policies(input);
    let mut ike = Vec::new();
    let mut esp = Vec::new();
    for p in &policies {
        let (i, e) = strongswan_proposals(p)?;
        if !ike.contains(&i) {
            ike.push(i);
        }
        if !esp.contains(&e) {
            esp.push(e);
        }
    }
    let lifetime = parse_suite(&policies[0])?.child_lifetime;
    let client = client_name(input);
    let conn = conn_name(&input.gateway_name);
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "# vgw point-to-site profile for gateway {}.",
        input.gateway_name
    );
    let _ = writeln!(
        w,
        "# Copy this file to /etc/swanctl/conf.d/{conn}.conf, ca.crt.pem to"
    );
    let _ = writeln!(
        w,
        "# /etc/swanctl/x509ca/, {client}.crt.pem to /etc/swanctl/x509/ and"
    );
    let _ = writeln!(
        w,
        "# {client}.key.pem to /etc/swanctl/private/, then run: swanctl --load-all"
    );
    let _ = writeln!(w, "connections {{");
    let _ = writeln!(w, "    {conn} {{");
    let _ = writeln!(w, "        version = 2");
    let _ = writeln!(w, "        remote_addrs = {}", connect_address(input));
    let _ = writeln!(w, "        vips = 0.0.0.0");
    let _ = writeln!(w, "        proposals = {}", ike.join(","));
    let _ = writeln!(
        w,
        "        rekey_time = {}s",
        IKE_SA_LIFETIME_SECONDS * 9 / 10
    );
    let _ = writeln!(w, "        dpd_delay = 30s");
    let _ = writeln!(w, "        local {{");
    let _ = writeln!(w, "            auth = pubkey");
    let _ = writeln!(w, "            certs = {client}.crt.pem");
    if let Some(id) = client_identity(input) {
        let _ = writeln!(w, "            id = {}", quote(&id));
    }
    let _ = writeln!(w, "        }}");
    let _ = writeln!(w, "        remote {{");
    let _ = writeln!(w, "            auth = pubkey");
    let _ = writeln!(w, "            id = {}", quote(&server_id(input)));
    let _ = writeln!(w, "        }}");
    let _ = writeln!(w, "        children {{");
    let _ = writeln!(w, "            vgw {{");
    let remote_ts = if input.routes.is_empty() {
        "0.0.0.0/0".to_string()
    } else {
        input.routes.join(",")
    };
    let _ = writeln!(w, "                remote_ts = {remote_ts}");
    let _ = writeln!(w, "                esp_proposals = {}", esp.join(","));
    if lifetime > 0 {
        let _ = writeln!(w, "                life_time = {lifetime}s");
        let _ = writeln!(w, "                rekey_time = {}s", lifetime * 9 / 10);
    }
    let _ = writeln!(w, "                dpd_action = restart");
    let _ = writeln!(w, "                start_action = start");
    let _ = writeln!(w, "            }}");
    let _ = writeln!(w, "        }}");
    let _ = writeln!(w, "    }}");
    let _ = writeln!(w, "}}");
    Ok(out)
}

// ---- Apple --------------------------------------------------------------------------------

fn apple_enc(e: Enc) -> Option<&'static str> {
    Some(match e {
        Enc::Des => "DES",
        Enc::Des3 => "3DES",
        Enc::Aes(128) => "AES-128",
        Enc::Aes(256) => "AES-256",
        Enc::Gcm(128) => "AES-128-GCM",
        Enc::Gcm(256) => "AES-256-GCM",
        Enc::ChaCha => "ChaCha20Poly1305",
        _ => return None,
    })
}

fn apple_hash(h: Hash) -> Option<&'static str> {
    Some(match h {
        Hash::Sha1 => "SHA1-96",
        Hash::Sha256 => "SHA2-256",
        Hash::Sha384 => "SHA2-384",
        Hash::Sha512 => "SHA2-512",
        Hash::Md5 => return None,
    })
}

fn apple_group(g: Group) -> Option<i64> {
    match g {
        Group::Modp2048s256 => None,
        other => Some(i64::from(other.number())),
    }
}

fn minutes(seconds: u64, default: i64) -> i64 {
    if seconds == 0 {
        return default;
    }
    // Apple accepts 10 to 1440 minutes.
    i64::try_from(seconds / 60).unwrap_or(1440).clamp(10, 1440)
}

fn uuid(seed: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, seed.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    b[6] = (b[6] & 0x0f) | 0x50; // name-based
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let h: String = b.iter().map(|x| format!("{x:02X}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `Apple/<gateway>.mobileconfig`: a configuration profile with the root CA(s), the client's
/// PKCS#12 when given, and an IKEv2 VPN payload. Errors if Apple cannot express the policy.
pub fn mobileconfig(input: &ProfileInput) -> Result<Vec<u8>> {
    use plist::{Dictionary, Value};
    let s = parse_suite(&effective_policies(input)[0])?;
    let unsupported = |what: String| Error::Invalid(format!("Apple clients do not support {what}"));
    let dict = |pairs: Vec<(&str, Value)>| {
        let mut d = Dictionary::new();
        for (k, v) in pairs {
            d.insert(k.to_string(), v);
        }
        Value::Dictionary(d)
    };
    let s_ = |v: &str| Value::String(v.to_string());
    let int = |v: i64| Value::Integer(v.into());

    let ike_params = dict(vec![
        (
            "EncryptionAlgorithm",
            s_(apple_enc(s.ike_enc)
                .ok_or_else(|| unsupported(format!("IKE encryption {:?}", s.ike_enc)))?),
        ),
        (
            "IntegrityAlgorithm",
            s_(apple_hash(s.ike_hash)
                .ok_or_else(|| unsupported(format!("IKE integrity {:?}", s.ike_hash)))?),
        ),
        (
            "DiffieHellmanGroup",
            int(apple_group(s.dh)
                .ok_or_else(|| unsupported(format!("DH group {}", s.dh.number())))?),
        ),
        (
            "LifeTimeInMinutes",
            int(minutes(IKE_SA_LIFETIME_SECONDS, 480)),
        ),
    ]);
    let child_group = s.pfs_group().unwrap_or(s.dh);
    let child_params = dict(vec![
        (
            "EncryptionAlgorithm",
            s_(apple_enc(s.esp_enc)
                .ok_or_else(|| unsupported(format!("ESP encryption {:?}", s.esp_enc)))?),
        ),
        // For AEAD the integrity value is not used; Apple still wants one.
        (
            "IntegrityAlgorithm",
            s_(match s.esp_hash {
                None => "SHA2-256",
                Some(h) => {
                    apple_hash(h).ok_or_else(|| unsupported(format!("ESP integrity {h:?}")))?
                }
            }),
        ),
        (
            "DiffieHellmanGroup",
            int(apple_group(child_group)
                .ok_or_else(|| unsupported(format!("PFS group {}", child_group.number())))?),
        ),
        ("LifeTimeInMinutes", int(minutes(s.child_lifetime, 480))),
    ]);

    let gw = &input.gateway_name;
    let base_id = format!("vgw.p2s.{}", sanitize(gw));
    let mut payloads = Vec::new();
    let mut root_cn = None;
    for (i, der) in input.root_certificates.iter().enumerate() {
        let summary = summarize(der)?;
        if root_cn.is_none() {
            root_cn = summary.subject.strip_prefix("CN=").map(str::to_string);
        }
        let id = format!("{base_id}.root{i}");
        payloads.push(dict(vec![
            ("PayloadType", s_("com.apple.security.root")),
            ("PayloadVersion", int(1)),
            ("PayloadIdentifier", s_(&id)),
            ("PayloadUUID", s_(&uuid(&id))),
            (
                "PayloadDisplayName",
                s_(&format!("{} (vgw root CA)", summary.subject)),
            ),
            (
                "PayloadCertificateFileName",
                s_(&format!("{}-root{i}.cer", sanitize(gw))),
            ),
            ("PayloadContent", Value::Data(der.clone())),
        ]));
    }
    let client = input.client.as_ref();
    let mut cert_uuid = None;
    if let Some(p12) = client.and_then(|c| c.pkcs12.as_ref()) {
        let id = format!("{base_id}.identity");
        let u = uuid(&format!("{id}.{}", client_name(input)));
        payloads.push(dict(vec![
            ("PayloadType", s_("com.apple.security.pkcs12")),
            ("PayloadVersion", int(1)),
            ("PayloadIdentifier", s_(&id)),
            ("PayloadUUID", s_(&u)),
            (
                "PayloadDisplayName",
                s_(&format!("{} (client certificate)", client_name(input))),
            ),
            (
                "PayloadCertificateFileName",
                s_(&format!("{}.p12", client_name(input))),
            ),
            ("PayloadContent", Value::Data(p12.clone())),
        ]));
        cert_uuid = Some(u);
    }
    let cert_type = client
        .and_then(|c| c.certificate.as_ref())
        .and_then(|der| summarize(der).ok())
        .map(|s| match s.key_type.as_str() {
            "ecdsa-p256" => "ECDSA256",
            "ecdsa-p384" => "ECDSA384",
            "ecdsa-p521" => "ECDSA521",
            _ => "RSA",
        })
        .unwrap_or("RSA");

    let mut ikev2 = vec![
        ("RemoteAddress", s_(&connect_address(input))),
        ("RemoteIdentifier", s_(&server_id(input))),
        (
            "LocalIdentifier",
            s_(&client_identity(input).unwrap_or_else(|| client_name(input))),
        ),
        ("AuthenticationMethod", s_("Certificate")),
        ("CertificateType", s_(cert_type)),
        ("ExtendedAuthEnabled", int(0)),
        ("EnablePFS", Value::Boolean(s.pfs_group().is_some())),
        ("DeadPeerDetectionRate", s_("Medium")),
        ("DisableMOBIKE", int(0)),
        ("DisableRedirect", int(0)),
        ("OnDemandEnabled", int(0)),
        ("IKESecurityAssociationParameters", ike_params),
        ("ChildSecurityAssociationParameters", child_params),
    ];
    if let Some(cn) = root_cn {
        ikev2.push(("ServerCertificateIssuerCommonName", s_(&cn)));
    }
    if let Some(u) = &cert_uuid {
        ikev2.push(("PayloadCertificateUUID", s_(u)));
    }
    let vpn_id = format!("{base_id}.vpn");
    payloads.push(dict(vec![
        ("PayloadType", s_("com.apple.vpn.managed")),
        ("PayloadVersion", int(1)),
        ("PayloadIdentifier", s_(&vpn_id)),
        ("PayloadUUID", s_(&uuid(&vpn_id))),
        ("PayloadDisplayName", s_(&format!("VPN {gw}"))),
        ("UserDefinedName", s_(gw)),
        ("VPNType", s_("IKEv2")),
        ("IKEv2", dict(ikev2)),
    ]));
    let profile = dict(vec![
        ("PayloadType", s_("Configuration")),
        ("PayloadVersion", int(1)),
        ("PayloadIdentifier", s_(&base_id)),
        ("PayloadUUID", s_(&uuid(&base_id))),
        ("PayloadDisplayName", s_(&format!("vgw VPN {gw}"))),
        (
            "PayloadDescription",
            s_(&format!("IKEv2 point-to-site VPN to {gw} (made by vgw)")),
        ),
        ("PayloadRemovalDisallowed", Value::Boolean(false)),
        ("PayloadContent", Value::Array(payloads)),
    ]);
    let mut out = Vec::new();
    profile
        .to_writer_xml(&mut out)
        .map_err(|e| Error::Archive(e.to_string()))?;
    Ok(out)
}

// ---- Windows ------------------------------------------------------------------------------

/// The values for `Set-VpnConnectionIPsecConfiguration`, in Windows' own enum names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowsIpsec {
    /// `-AuthenticationTransformConstants` (ESP integrity): SHA256128, GCMAES256, ...
    pub authentication_transform_constants: &'static str,
    /// `-CipherTransformConstants` (ESP encryption): AES256, GCMAES256, ...
    pub cipher_transform_constants: &'static str,
    /// `-EncryptionMethod` (IKE encryption).
    pub encryption_method: &'static str,
    /// `-IntegrityCheckMethod` (IKE integrity / PRF).
    pub integrity_check_method: &'static str,
    /// `-DHGroup`: Group14, ECP256, ...
    pub dh_group: &'static str,
    /// `-PfsGroup`: None, PFS2048, ECP256, PFSMM, ...
    pub pfs_group: &'static str,
}

/// Maps a policy to Windows' IPsec enum names; errors if Windows cannot express it.
pub fn windows_ipsec(p: &IpsecPolicy) -> Result<WindowsIpsec> {
    let s = parse_suite(p)?;
    let no = |what: String| Error::Invalid(format!("Windows clients do not support {what}"));
    let enc = |e: Enc| -> Option<&'static str> {
        Some(match e {
            Enc::Null => "None",
            Enc::Des => "DES",
            Enc::Des3 => "DES3",
            Enc::Aes(128) => "AES128",
            Enc::Aes(192) => "AES192",
            Enc::Aes(256) => "AES256",
            Enc::Gcm(128) => "GCMAES128",
            Enc::Gcm(192) => "GCMAES192",
            Enc::Gcm(256) => "GCMAES256",
            _ => return None,
        })
    };
    let encryption_method = match s.ike_enc {
        Enc::Null | Enc::Gcm(192) => None,
        e => enc(e),
    }
    .ok_or_else(|| no(format!("IKE encryption {}", p.ike_encryption)))?;
    let integrity_check_method = match s.ike_hash {
        Hash::Md5 => "MD5",
        Hash::Sha1 => "SHA1",
        Hash::Sha256 => "SHA256",
        Hash::Sha384 => "SHA384",
        Hash::Sha512 => return Err(no("IKE integrity SHA512".into())),
    };
    let group = |g: Group, pfs: bool| -> Option<&'static str> {
        Some(match (g, pfs) {
            (Group::Modp768, false) => "Group1",
            (Group::Modp1024, false) => "Group2",
            (Group::Modp2048, false) => "Group14",
            (Group::Modp2048s256, false) => "Group24",
            (Group::Modp768, true) => "PFS1",
            (Group::Modp1024, true) => "PFS2",
            (Group::Modp2048, true) => "PFS2048",
            (Group::Modp2048s256, true) => "PFS24",
            (Group::Ecp256, _) => "ECP256",
            (Group::Ecp384, _) => "ECP384",
            (Group::Curve25519, _) => return None,
        })
    };
    let dh_group = group(s.dh, false).ok_or_else(|| no(format!("dhGroup {}", p.dh_group)))?;
    let pfs_group = match s.pfs {
        Pfs::None => "None",
        Pfs::SameAsIke => "PFSMM",
        Pfs::Group(g) => group(g, true).ok_or_else(|| no(format!("pfsGroup {}", p.pfs_group)))?,
    };
    let cipher_transform_constants =
        enc(s.esp_enc).ok_or_else(|| no(format!("ipsecEncryption {}", p.ipsec_encryption)))?;
    let authentication_transform_constants = match (s.esp_enc, s.esp_hash) {
        (e, None) => enc(e).ok_or_else(|| no(format!("ipsecIntegrity {}", p.ipsec_integrity)))?,
        (_, Some(Hash::Md5)) => "MD596",
        (_, Some(Hash::Sha1)) => "SHA196",
        (_, Some(Hash::Sha256)) => "SHA256128",
        (_, Some(_)) => return Err(no(format!("ipsecIntegrity {}", p.ipsec_integrity))),
    };
    Ok(WindowsIpsec {
        authentication_transform_constants,
        cipher_transform_constants,
        encryption_method,
        integrity_check_method,
        dh_group,
        pfs_group,
    })
}

fn ps_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `Windows/vpnconfig.ps1`: imports the root CA (and the client's PKCS#12 when it sits next to
/// the script), creates the IKEv2 connection with split tunnelling, sets the IPsec policy and
/// adds the routes. Errors if Windows cannot express the policy.
pub fn windows_script(input: &ProfileInput) -> Result<String> {
    let ipsec = windows_ipsec(&effective_policies(input)[0])?;
    let name = ps_quote(&input.gateway_name);
    let client = client_name(input);
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "# vgw point-to-site profile for gateway {}.",
        input.gateway_name
    );
    let _ = writeln!(
        w,
        "# Run in an elevated PowerShell from the folder holding this script:"
    );
    let _ = writeln!(
        w,
        "#   powershell -ExecutionPolicy Bypass -File .\\vpnconfig.ps1"
    );
    let _ = writeln!(w, "#Requires -RunAsAdministrator");
    let _ = writeln!(w, "$ErrorActionPreference = 'Stop'");
    let _ = writeln!(w, "$here = Split-Path -Parent $MyInvocation.MyCommand.Path");
    let _ = writeln!(w, "$name = {name}");
    let _ = writeln!(w);
    let _ = writeln!(w, "# The gateway's root CA, trusted machine-wide.");
    for i in 0..input.root_certificates.len() {
        let _ = writeln!(
            w,
            "Import-Certificate -FilePath (Join-Path $here 'root{i}.cer') -CertStoreLocation Cert:\\LocalMachine\\Root | Out-Null"
        );
    }
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "# The client certificate (machine certificate authentication)."
    );
    let _ = writeln!(
        w,
        "$p12 = Join-Path $here {}",
        ps_quote(&format!("{client}.p12"))
    );
    let _ = writeln!(w, "if (Test-Path $p12) {{");
    let _ = writeln!(
        w,
        "    $password = Read-Host -AsSecureString -Prompt \"Password of $p12\""
    );
    let _ = writeln!(
        w,
        "    Import-PfxCertificate -FilePath $p12 -CertStoreLocation Cert:\\LocalMachine\\My -Password $password | Out-Null"
    );
    let _ = writeln!(w, "}} else {{");
    let _ = writeln!(
        w,
        "    Write-Warning \"$p12 not found: import the client certificate into Cert:\\LocalMachine\\My yourself.\""
    );
    let _ = writeln!(w, "}}");
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "if (Get-VpnConnection -AllUserConnection -Name $name -ErrorAction SilentlyContinue) {{"
    );
    let _ = writeln!(
        w,
        "    Remove-VpnConnection -AllUserConnection -Name $name -Force"
    );
    let _ = writeln!(w, "}}");
    let _ = writeln!(
        w,
        "Add-VpnConnection -Name $name -ServerAddress {} -TunnelType Ikev2 -AuthenticationMethod MachineCertificate -EncryptionLevel Required -SplitTunneling -AllUserConnection -Force",
        ps_quote(&connect_address(input))
    );
    let _ = writeln!(
        w,
        "Set-VpnConnectionIPsecConfiguration -ConnectionName $name -AuthenticationTransformConstants {} -CipherTransformConstants {} -EncryptionMethod {} -IntegrityCheckMethod {} -DHGroup {} -PfsGroup {} -AllUserConnection -Force",
        ipsec.authentication_transform_constants,
        ipsec.cipher_transform_constants,
        ipsec.encryption_method,
        ipsec.integrity_check_method,
        ipsec.dh_group,
        ipsec.pfs_group
    );
    for r in &input.routes {
        let _ = writeln!(
            w,
            "Add-VpnConnectionRoute -ConnectionName $name -DestinationPrefix {} -AllUserConnection",
            ps_quote(r)
        );
    }
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "Write-Host \"Created VPN connection $name. Connect with: rasdial $name\""
    );
    Ok(out)
}

// ---- WireGuard ----------------------------------------------------------------------------

/// The placeholder written where a WireGuard private key was not given.
pub const WIREGUARD_KEY_PLACEHOLDER: &str = "<replace with this client's private key>";

/// `WireGuard/<client>.conf` for one client; AllowedIPs are the split-tunnel routes (all
/// traffic when there are none).
pub fn wireguard_conf(
    input: &ProfileInput,
    wg: &WireGuardInput,
    client: &WireGuardClient,
) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "# vgw WireGuard profile for {} on gateway {}",
        client.name, input.gateway_name
    );
    let _ = writeln!(w, "[Interface]");
    let _ = writeln!(
        w,
        "PrivateKey = {}",
        client
            .private_key
            .as_deref()
            .unwrap_or(WIREGUARD_KEY_PLACEHOLDER)
    );
    let _ = writeln!(w, "Address = {}", client.address);
    if !input.dns_servers.is_empty() {
        let _ = writeln!(w, "DNS = {}", input.dns_servers.join(", "));
    }
    let _ = writeln!(w);
    let _ = writeln!(w, "[Peer]");
    let _ = writeln!(w, "PublicKey = {}", wg.server_public_key);
    let _ = writeln!(w, "Endpoint = {}", wg.endpoint);
    let allowed = if input.routes.is_empty() {
        "0.0.0.0/0, ::/0".to_string()
    } else {
        input.routes.join(", ")
    };
    let _ = writeln!(w, "AllowedIPs = {allowed}");
    let _ = writeln!(w, "PersistentKeepalive = 25");
    out
}

// ---- generic XML and README ---------------------------------------------------------------

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// `Generic/VpnSettings.xml`: the settings in one neutral document, for other clients.
pub fn vpn_settings_xml(input: &ProfileInput) -> Result<String> {
    let mut out = String::new();
    let w = &mut out;
    let tag = |w: &mut String, indent: usize, name: &str, value: &str| {
        let _ = writeln!(w, "{:indent$}<{name}>{}</{name}>", "", xml_escape(value));
    };
    let _ = writeln!(w, "<?xml version=\"1.0\" encoding=\"utf-8\"?>");
    let _ = writeln!(w, "<VpnProfile>");
    tag(w, 2, "GatewayName", &input.gateway_name);
    tag(w, 2, "VpnServer", &connect_address(input));
    tag(w, 2, "VpnServerAddress", &input.server_address);
    tag(w, 2, "VpnServerIdentity", &server_id(input));
    tag(w, 2, "VpnType", "IKEv2");
    tag(w, 2, "AuthenticationType", "Certificate");
    let _ = writeln!(w, "  <RootCertificates>");
    for der in &input.root_certificates {
        let _ = writeln!(w, "    <Certificate thumbprint=\"{}\" />", thumbprint(der));
    }
    let _ = writeln!(w, "  </RootCertificates>");
    let _ = writeln!(w, "  <IpsecPolicies>");
    for p in effective_policies(input) {
        let (ike, esp) = strongswan_proposals(&p)?;
        let _ = writeln!(
            w,
            "    <Policy ikeEncryption=\"{}\" ikeIntegrity=\"{}\" dhGroup=\"{}\" ipsecEncryption=\"{}\" ipsecIntegrity=\"{}\" pfsGroup=\"{}\" saLifeTimeSeconds=\"{}\" ikeProposal=\"{}\" espProposal=\"{}\" />",
            xml_escape(p.ike_encryption.as_str()),
            xml_escape(p.ike_integrity.as_str()),
            xml_escape(p.dh_group.as_str()),
            xml_escape(p.ipsec_encryption.as_str()),
            xml_escape(p.ipsec_integrity.as_str()),
            xml_escape(p.pfs_group.as_str()),
            p.sa_life_time_seconds,
            ike,
            esp
        );
    }
    let _ = writeln!(w, "  </IpsecPolicies>");
    let list = |w: &mut String, outer: &str, inner: &str, items: &[String]| {
        let _ = writeln!(w, "  <{outer}>");
        for i in items {
            tag(w, 4, inner, i);
        }
        let _ = writeln!(w, "  </{outer}>");
    };
    list(w, "Routes", "Route", &input.routes);
    list(w, "DnsServers", "DnsServer", &input.dns_servers);
    list(
        w,
        "VpnClientAddressPool",
        "AddressPrefix",
        &input.client_address_pool,
    );
    let _ = writeln!(w, "</VpnProfile>");
    Ok(out)
}

fn readme(input: &ProfileInput, files: &[String], notes: &[String]) -> String {
    let gw = &input.gateway_name;
    let client = client_name(input);
    let conn = conn_name(gw);
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "vgw point-to-site VPN profile for gateway {gw}");
    let _ = writeln!(
        w,
        "Server: {} (identity {})",
        connect_address(input),
        server_id(input)
    );
    if !input.routes.is_empty() {
        let _ = writeln!(w, "Routes through the tunnel: {}", input.routes.join(", "));
    }
    for der in &input.root_certificates {
        let _ = writeln!(w, "Root CA thumbprint (SHA-1): {}", thumbprint(der));
    }
    let _ = writeln!(w);
    let _ = writeln!(w, "Files:");
    for f in files {
        let what = match f.as_str() {
            "Generic/VpnSettings.xml" => "every setting in one XML document, for other clients",
            "strongSwan/swanctl.conf" => "strongSwan (Linux) connection for swanctl",
            "strongSwan/ca.crt.pem" => "the root CA for strongSwan",
            "Windows/vpnconfig.ps1" => "PowerShell script creating the Windows connection",
            f if f.starts_with("Windows/root") => "the root CA for Windows",
            f if f.starts_with("Apple/") => "configuration profile for macOS and iOS",
            f if f.starts_with("WireGuard/") => "WireGuard configuration",
            _ => "this file",
        };
        let _ = writeln!(w, "  {f}: {what}");
    }
    if !notes.is_empty() {
        let _ = writeln!(w);
        let _ = writeln!(w, "Left out:");
        for n in notes {
            let _ = writeln!(w, "  {n}");
        }
    }
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "You also need the client certificate made by `vgw pki issue-client`:"
    );
    let _ = writeln!(
        w,
        "{client}.crt.pem and {client}.key.pem (Linux), or {client}.p12 (Windows, macOS, iOS)."
    );
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "Linux (strongSwan, Debian package strongswan-swanctl + charon-systemd):"
    );
    let _ = writeln!(
        w,
        "  sudo install -m 0644 strongSwan/ca.crt.pem /etc/swanctl/x509ca/{conn}-ca.crt.pem"
    );
    let _ = writeln!(
        w,
        "  sudo install -m 0644 {client}.crt.pem /etc/swanctl/x509/{client}.crt.pem"
    );
    let _ = writeln!(
        w,
        "  sudo install -m 0600 {client}.key.pem /etc/swanctl/private/{client}.key.pem"
    );
    let _ = writeln!(
        w,
        "  sudo install -m 0644 strongSwan/swanctl.conf /etc/swanctl/conf.d/{conn}.conf"
    );
    let _ = writeln!(
        w,
        "  sudo swanctl --load-all        # the connection starts by itself"
    );
    let _ = writeln!(
        w,
        "  sudo swanctl --list-sas        # check; stop with: swanctl --terminate --ike {conn}"
    );
    let _ = writeln!(
        w,
        "  A virtual IP is requested from the gateway (vips = 0.0.0.0); DNS servers handed out"
    );
    let _ = writeln!(w, "  need charon's resolve plugin.");
    let _ = writeln!(w);
    let _ = writeln!(w, "Windows 10/11 (IKEv2, machine certificate):");
    let _ = writeln!(
        w,
        "  Put {client}.p12 next to Windows/vpnconfig.ps1 and run in an elevated PowerShell:"
    );
    let _ = writeln!(
        w,
        "    powershell -ExecutionPolicy Bypass -File .\\vpnconfig.ps1"
    );
    let _ = writeln!(
        w,
        "  It trusts the root CA (Cert:\\LocalMachine\\Root), imports {client}.p12 into"
    );
    let _ = writeln!(
        w,
        "  Cert:\\LocalMachine\\My, creates the connection '{gw}' with split tunnelling, sets the"
    );
    let _ = writeln!(
        w,
        "  gateway's IPsec policy and adds the routes. Connect from the network menu or `rasdial`."
    );
    let _ = writeln!(w);
    let _ = writeln!(w, "macOS / iOS:");
    let _ = writeln!(
        w,
        "  Open the .mobileconfig (macOS: double-click, then System Settings > Privacy & Security >"
    );
    let _ = writeln!(
        w,
        "  Profiles; iOS: AirDrop or mail it, then Settings > Profile Downloaded). It installs the"
    );
    let _ = writeln!(
        w,
        "  root CA and the VPN; when it embeds {client}.p12 the installer asks for its password,"
    );
    let _ = writeln!(
        w,
        "  otherwise import {client}.p12 first (Keychain Access) and pick it in the VPN settings."
    );
    let _ = writeln!(
        w,
        "  iOS also needs the root trusted in Settings > General > About > Certificate Trust Settings."
    );
    if input.wireguard.is_some() {
        let _ = writeln!(w);
        let _ = writeln!(w, "WireGuard (any platform):");
        let _ = writeln!(
            w,
            "  Import WireGuard/<name>.conf in the WireGuard app, or on Linux copy it to"
        );
        let _ = writeln!(
            w,
            "  /etc/wireguard/ (mode 0600) and run `wg-quick up <name>`. Replace the PrivateKey line"
        );
        let _ = writeln!(w, "  if it holds a placeholder.");
        if input
            .wireguard
            .as_ref()
            .is_some_and(|wg| wg.clients.is_empty())
        {
            let _ = writeln!(
                w,
                "  This package is the gateway's and holds no WireGuard configuration: each user's is"
            );
            let _ = writeln!(
                w,
                "  in their own package, `vgw vnet-gateway vpn-client generate --client <name>`."
            );
        }
    }
    out
}

// ---- helpers and the zip ------------------------------------------------------------------

fn effective_policies(input: &ProfileInput) -> Vec<IpsecPolicy> {
    if input.policies.is_empty() {
        vec![IpsecPolicy::default()]
    } else {
        input.policies.clone()
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn conn_name(gateway: &str) -> String {
    format!("vgw-{}", sanitize(gateway))
}

fn client_name(input: &ProfileInput) -> String {
    input
        .client
        .as_ref()
        .map(|c| sanitize(&c.name))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "client".to_string())
}

fn client_identity(input: &ProfileInput) -> Option<String> {
    let c = input.client.as_ref()?;
    if let Some(id) = &c.identity {
        return Some(id.clone());
    }
    let summary = summarize(c.certificate.as_ref()?).ok()?;
    summary.subject_alternative_names.iter().find_map(|s| {
        s.strip_prefix("email:")
            .or_else(|| s.strip_prefix("DNS:"))
            .map(str::to_string)
    })
}

fn connect_address(input: &ProfileInput) -> String {
    input
        .server_dns_name
        .clone()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| input.server_address.clone())
}

fn server_id(input: &ProfileInput) -> String {
    let id = &input.server_identity;
    id.san
        .clone()
        .or_else(|| id.subject.clone())
        .unwrap_or_else(|| connect_address(input))
}

fn der_to_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// Builds the profile zip. Fails on an invalid policy or input; a platform that cannot express
/// a valid policy is left out with a note.
pub fn build_profile(input: &ProfileInput) -> Result<ProfilePackage> {
    if input.gateway_name.trim().is_empty() || input.server_address.trim().is_empty() {
        return Err(Error::Invalid(
            "the gateway's name and public address are required".into(),
        ));
    }
    if input.root_certificates.is_empty() {
        return Err(Error::Invalid(
            "at least one root certificate is required".into(),
        ));
    }
    for der in &input.root_certificates {
        summarize(der)?;
    }
    for p in effective_policies(input) {
        parse_suite(&p)?;
    }
    if let Some(wg) = &input.wireguard {
        // A package is handed to one person: a second private key in it would let that person (or
        // anyone holding its URL) impersonate another user.
        let keyed: Vec<&str> = wg
            .clients
            .iter()
            .filter(|c| c.private_key.is_some())
            .map(|c| c.name.as_str())
            .collect();
        if keyed.len() > 1 {
            return Err(Error::Invalid(format!(
                "wireguard.clients: a package may carry the private key of one client only, not of {}; \
                 build one package per client",
                keyed.join(", ")
            )));
        }
    }
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut notes = Vec::new();
    files.push((
        "Generic/VpnSettings.xml".into(),
        vpn_settings_xml(input)?.into_bytes(),
    ));
    files.push((
        "strongSwan/swanctl.conf".into(),
        swanctl_conf(input)?.into_bytes(),
    ));
    let ca_pem: String = input
        .root_certificates
        .iter()
        .map(|d| der_to_pem(d))
        .collect();
    files.push(("strongSwan/ca.crt.pem".into(), ca_pem.into_bytes()));
    match mobileconfig(input) {
        Ok(bytes) => files.push((
            format!("Apple/{}.mobileconfig", sanitize(&input.gateway_name)),
            bytes,
        )),
        Err(e) => notes.push(format!("Apple: {e}")),
    }
    match windows_script(input) {
        Ok(script) => {
            files.push(("Windows/vpnconfig.ps1".into(), script.into_bytes()));
            for (i, der) in input.root_certificates.iter().enumerate() {
                files.push((format!("Windows/root{i}.cer"), der.clone()));
            }
        }
        Err(e) => notes.push(format!("Windows: {e}")),
    }
    if let Some(wg) = &input.wireguard {
        for c in &wg.clients {
            files.push((
                format!("WireGuard/{}.conf", sanitize(&c.name)),
                wireguard_conf(input, wg, c).into_bytes(),
            ));
        }
    }
    let mut names: Vec<String> = vec!["README.txt".into()];
    names.extend(files.iter().map(|(n, _)| n.clone()));
    let readme = readme(input, &names, &notes);

    let zip_err = |e: zip::result::ZipError| Error::Archive(e.to_string());
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o644);
    zip.start_file("README.txt", opts).map_err(zip_err)?;
    zip.write_all(readme.as_bytes())
        .map_err(|e| Error::Archive(e.to_string()))?;
    for (name, data) in &files {
        zip.start_file(name.as_str(), opts).map_err(zip_err)?;
        zip.write_all(data)
            .map_err(|e| Error::Archive(e.to_string()))?;
    }
    let zip = zip.finish().map_err(zip_err)?.into_inner();
    Ok(ProfilePackage {
        zip,
        files: names,
        notes,
    })
}

/// Parses root certificates given as PEM, base64 DER or DER, for [`ProfileInput::root_certificates`].
pub fn roots_from(inputs: &[&[u8]]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for i in inputs {
        out.extend(certs_from_pem_or_der(i)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(
        ike: &str,
        integ: &str,
        dh: &str,
        esp: &str,
        esp_integ: &str,
        pfs: &str,
    ) -> IpsecPolicy {
        IpsecPolicy {
            ike_encryption: ike.parse().unwrap(),
            ike_integrity: integ.parse().unwrap(),
            dh_group: dh.parse().unwrap(),
            ipsec_encryption: esp.parse().unwrap(),
            ipsec_integrity: esp_integ.parse().unwrap(),
            pfs_group: pfs.parse().unwrap(),
            sa_life_time_seconds: 3600,
            sa_data_size_kilobytes: 102_400_000,
        }
    }

    #[test]
    fn strongswan_mapping() {
        let (ike, esp) = strongswan_proposals(&policy(
            "AES256",
            "SHA256",
            "DHGroup14",
            "GCMAES256",
            "GCMAES256",
            "None",
        ))
        .unwrap();
        assert_eq!(
            (ike.as_str(), esp.as_str()),
            ("aes256-sha256-modp2048", "aes256gcm16")
        );
        let (ike, esp) = strongswan_proposals(&policy(
            "GCMAES256",
            "SHA384",
            "ECP384",
            "AES256",
            "SHA256",
            "PFS24",
        ))
        .unwrap();
        assert_eq!(
            (ike.as_str(), esp.as_str()),
            ("aes256gcm16-prfsha384-ecp384", "aes256-sha256-modp2048s256")
        );
        let (ike, esp) = strongswan_proposals(&policy(
            "GCMAES128",
            "GCMAES128",
            "ECP256",
            "GCMAES128",
            "GCMAES128",
            "PFSMM",
        ))
        .unwrap();
        assert_eq!(
            (ike.as_str(), esp.as_str()),
            ("aes128gcm16-prfsha256-ecp256", "aes128gcm16-ecp256")
        );
        let (_, esp) = strongswan_proposals(&policy(
            "AES128", "SHA1", "DHGroup2", "AES128", "SHA1", "PFS2048",
        ))
        .unwrap();
        assert_eq!(esp, "aes128-sha1-modp2048");
    }

    #[test]
    fn bad_policies_are_refused() {
        // Unknown names never get here: the model's names refuse them when parsed.
        assert!("AES512".parse::<IkeEncryption>().is_err());
        assert!(
            strongswan_proposals(&policy(
                "AES256",
                "SHA256",
                "None",
                "GCMAES256",
                "GCMAES256",
                "None"
            ))
            .is_err()
        );
        assert!(
            strongswan_proposals(&policy(
                "AES256",
                "GCMAES256",
                "DHGroup14",
                "GCMAES256",
                "GCMAES256",
                "None"
            ))
            .is_err()
        );
        assert!(
            strongswan_proposals(&policy(
                "AES256",
                "SHA256",
                "DHGroup14",
                "GCMAES256",
                "SHA256",
                "None"
            ))
            .is_err()
        );
        assert!(
            strongswan_proposals(&policy(
                "AES256",
                "SHA256",
                "DHGroup14",
                "AES256",
                "GCMAES256",
                "None"
            ))
            .is_err()
        );
    }

    #[test]
    fn windows_mapping() {
        let w = windows_ipsec(&policy(
            "GCMAES256",
            "SHA384",
            "ECP384",
            "GCMAES256",
            "GCMAES256",
            "ECP384",
        ))
        .unwrap();
        assert_eq!(w.encryption_method, "GCMAES256");
        assert_eq!(w.integrity_check_method, "SHA384");
        assert_eq!(w.dh_group, "ECP384");
        assert_eq!(w.cipher_transform_constants, "GCMAES256");
        assert_eq!(w.authentication_transform_constants, "GCMAES256");
        assert_eq!(w.pfs_group, "ECP384");
        let w = windows_ipsec(&policy(
            "AES256",
            "SHA256",
            "DHGroup14",
            "AES256",
            "SHA256",
            "PFS2048",
        ))
        .unwrap();
        assert_eq!(
            (
                w.dh_group,
                w.pfs_group,
                w.authentication_transform_constants
            ),
            ("Group14", "PFS2048", "SHA256128")
        );
        assert!(
            windows_ipsec(&policy(
                "AES256",
                "SHA256",
                "Curve25519",
                "AES256",
                "SHA256",
                "None"
            ))
            .is_err()
        );
    }

    #[test]
    fn uuids_are_stable_and_well_formed() {
        let a = uuid("x");
        assert_eq!(a, uuid("x"));
        assert_ne!(a, uuid("y"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "5");
    }
}
