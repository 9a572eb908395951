//! Certificate authentication (RFC 7296 §3.6–3.8, §2.15; RFC 7427): our certificate and private key,
//! the peer's trusted roots and revoked thumbprints, chain validation with `rustls-webpki`, identity
//! binding (§3.5 ID payload against the certificate), and AUTH signatures made and checked with
//! aws-lc-rs.
//!
//! Nothing here reads a clock: validity is checked at a time the caller passes in.

use std::collections::HashSet;
use std::fmt;

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair, UnparsedPublicKey};
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{ExtendedKeyUsageValidator, KeyPurposeId, KeyPurposeIdIter};
use x509_parser::oid_registry::{
    OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521, OID_NIST_HASH_SHA256,
    OID_NIST_HASH_SHA384, OID_NIST_HASH_SHA512, OID_PKCS1_RSAENCRYPTION, OID_PKCS1_RSASSAPSS,
    OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA, OID_PKCS1_SHA512WITHRSA,
    OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ECDSA_WITH_SHA512,
};
use x509_parser::prelude::*;

use crate::config::Reason;
use crate::message::{Identity, id_type};

/// AUTH payload methods (RFC 7296 §3.8, RFC 4754, RFC 7427 §3).
pub mod auth_method {
    /// RSA Digital Signature: RSASSA-PKCS1-v1_5 with SHA-1 (§3.8).
    pub const RSA_SIGNATURE: u8 = 1;
    /// Shared Key Message Integrity Code (§3.8).
    pub const SHARED_KEY: u8 = 2;
    /// ECDSA with SHA-256 on P-256 (RFC 4754).
    pub const ECDSA_256: u8 = 9;
    /// ECDSA with SHA-384 on P-384 (RFC 4754).
    pub const ECDSA_384: u8 = 10;
    /// ECDSA with SHA-512 on P-521 (RFC 4754).
    pub const ECDSA_521: u8 = 11;
    /// Digital Signature with an AlgorithmIdentifier (RFC 7427 §3).
    pub const DIGITAL_SIGNATURE: u8 = 14;
}

/// Hash algorithm numbers of the SIGNATURE_HASH_ALGORITHMS notify (RFC 7427 §4).
pub mod hash_algorithm {
    /// SHA-1.
    pub const SHA1: u16 = 1;
    /// SHA2-256.
    pub const SHA2_256: u16 = 2;
    /// SHA2-384.
    pub const SHA2_384: u16 = 3;
    /// SHA2-512.
    pub const SHA2_512: u16 = 4;
}

/// The hashes we announce in SIGNATURE_HASH_ALGORITHMS and accept in RFC 7427 signatures.
pub const SUPPORTED_HASHES: [u16; 3] = [
    hash_algorithm::SHA2_256,
    hash_algorithm::SHA2_384,
    hash_algorithm::SHA2_512,
];

/// Encoding 4 of the CERT and CERTREQ payloads: X.509 Certificate - Signature (§3.6).
pub const CERT_ENCODING_X509_SIGNATURE: u8 = 4;

/// The SIGNATURE_HASH_ALGORITHMS notify data (RFC 7427 §4): 16-bit hash numbers.
pub fn signature_hashes_notify_data() -> Vec<u8> {
    SUPPORTED_HASHES
        .iter()
        .flat_map(|h| h.to_be_bytes())
        .collect()
}

/// Parses SIGNATURE_HASH_ALGORITHMS notify data (RFC 7427 §4); a trailing odd byte is ignored.
pub fn parse_signature_hashes(data: &[u8]) -> Vec<u16> {
    data.chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}

/// A certificate's thumbprint as Azure shows it: SHA-1 of the DER, upper-case hex without separators.
pub fn thumbprint(der: &[u8]) -> String {
    hex_upper(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref())
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Normalises a thumbprint an operator typed: upper case, spaces, colons and invisible marks removed.
pub fn normalize_thumbprint(t: &str) -> String {
    t.chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// The ID_DER_ASN1_DN identity (§3.5) of a certificate's subject, or None if the DER does not parse.
pub fn subject_identity(cert_der: &[u8]) -> Option<Identity> {
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    Some(Identity {
        kind: id_type::DER_ASN1_DN,
        data: cert.subject().as_raw().to_vec(),
    })
}

/// A readable distinguished name from ID_DER_ASN1_DN data (§3.5), if it parses.
pub fn dn_string(der: &[u8]) -> Option<String> {
    let (rest, name) = X509Name::from_der(der).ok()?;
    rest.is_empty().then(|| name.to_string())
}

/// A problem with certificate or key material the control plane configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertError(pub String);

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CertError {}

/// Why a peer's certificate or signature was refused: the typed reason and a message that names the
/// certificate's subject and thumbprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFailure {
    /// The operator-facing reason.
    pub reason: Reason,
    /// What happened.
    pub message: String,
}

/// RSA signature padding for RFC 7427 signatures we make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RsaPadding {
    /// RSASSA-PKCS1-v1_5 (what strongSwan uses unless `rsa_pss` is set).
    #[default]
    Pkcs1,
    /// RSASSA-PSS with MGF1 and a salt as long as the hash (RFC 7427 §3, RFC 8017 §8.1).
    Pss,
}

/// A NIST curve of an ECDSA key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// P-256.
    P256,
    /// P-384.
    P384,
    /// P-521.
    P521,
}

impl Curve {
    /// The hash RFC 4754 pairs with the curve.
    fn hash(self) -> u16 {
        match self {
            Curve::P256 => hash_algorithm::SHA2_256,
            Curve::P384 => hash_algorithm::SHA2_384,
            Curve::P521 => hash_algorithm::SHA2_512,
        }
    }
}

enum SigningKey {
    Rsa(RsaKeyPair),
    Ecdsa {
        curve: Curve,
        /// For RFC 7427 (DER-encoded Ecdsa-Sig-Value).
        asn1: EcdsaKeyPair,
        /// For RFC 4754 methods 9–11 (r || s).
        fixed: EcdsaKeyPair,
    },
}

/// Our certificate chain (DER, end-entity first) and private key (§3.6, §3.8). The key is parsed once;
/// it never appears in Debug output.
pub struct LocalCertificate {
    chain: Vec<Vec<u8>>,
    key: SigningKey,
    rsa_padding: RsaPadding,
    subject: String,
    thumbprint: String,
}

impl fmt::Debug for LocalCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCertificate")
            .field("subject", &self.subject)
            .field("thumbprint", &self.thumbprint)
            .field("chain", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl PartialEq for LocalCertificate {
    fn eq(&self, other: &Self) -> bool {
        self.chain == other.chain && self.rsa_padding == other.rsa_padding && {
            let (a, b) = (self.public_key(), other.public_key());
            a == b
        }
    }
}

impl LocalCertificate {
    /// Our certificate chain (DER, end-entity first, then intermediates) and the PKCS#8 private key of
    /// the end-entity certificate (RSA, or ECDSA on P-256, P-384 or P-521). Fails if the key does not
    /// parse or does not belong to the certificate.
    pub fn new(chain: Vec<Vec<u8>>, private_key_pkcs8: &[u8]) -> Result<Self, CertError> {
        let first = chain
            .first()
            .ok_or_else(|| CertError("empty certificate chain".into()))?;
        let (_, cert) = X509Certificate::from_der(first)
            .map_err(|e| CertError(format!("our certificate does not parse: {e}")))?;
        let key = if let Ok(k) = RsaKeyPair::from_pkcs8(private_key_pkcs8) {
            SigningKey::Rsa(k)
        } else {
            let curves = [
                (
                    Curve::P256,
                    &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                ),
                (
                    Curve::P384,
                    &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
                    &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                ),
                (
                    Curve::P521,
                    &signature::ECDSA_P521_SHA512_ASN1_SIGNING,
                    &signature::ECDSA_P521_SHA512_FIXED_SIGNING,
                ),
            ];
            curves
                .into_iter()
                .find_map(|(curve, asn1, fixed)| {
                    let a = EcdsaKeyPair::from_pkcs8(asn1, private_key_pkcs8).ok()?;
                    let f = EcdsaKeyPair::from_pkcs8(fixed, private_key_pkcs8).ok()?;
                    Some(SigningKey::Ecdsa {
                        curve,
                        asn1: a,
                        fixed: f,
                    })
                })
                .ok_or_else(|| {
                    CertError(
                        "private key is neither RSA nor ECDSA P-256/P-384/P-521 PKCS#8".into(),
                    )
                })?
        };
        let public: &[u8] = match &key {
            SigningKey::Rsa(k) => k.public_key().as_ref(),
            SigningKey::Ecdsa { asn1, .. } => asn1.public_key().as_ref(),
        };
        if cert.public_key().subject_public_key.data.as_ref() != public {
            return Err(CertError(
                "the private key does not belong to the certificate".into(),
            ));
        }
        let subject = cert.subject().to_string();
        let thumbprint = thumbprint(first);
        Ok(Self {
            chain,
            key,
            rsa_padding: RsaPadding::default(),
            subject,
            thumbprint,
        })
    }

    /// Chooses the padding of RSA signatures (RFC 7427); ignored for ECDSA keys.
    pub fn with_rsa_padding(mut self, padding: RsaPadding) -> Self {
        self.rsa_padding = padding;
        self
    }

    /// The chain, end-entity first (sent as CERT payloads, §3.6).
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// The subject of our certificate, e.g. `CN=vgw.example`.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The thumbprint of our certificate.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// Our identity as ID_DER_ASN1_DN (§3.5).
    pub fn identity(&self) -> Option<Identity> {
        self.chain.first().and_then(|c| subject_identity(c))
    }

    fn public_key(&self) -> Vec<u8> {
        match &self.key {
            SigningKey::Rsa(k) => k.public_key().as_ref().to_vec(),
            SigningKey::Ecdsa { asn1, .. } => asn1.public_key().as_ref().to_vec(),
        }
    }

    /// Signs the §2.15 signed octets. With a peer that announced RFC 7427 hashes, method 14 with the
    /// first hash we both support (SHA-256 first); otherwise ECDSA keys use RFC 4754 methods 9–11 and
    /// RSA keys still use method 14 with SHA-256 (aws-lc-rs does not sign with SHA-1).
    /// Returns the AUTH method and data.
    pub fn sign(&self, octets: &[u8], peer_hashes: &[u16]) -> Result<(u8, Vec<u8>), CertError> {
        let rng = SystemRandom::new();
        let fail = |_| CertError("signing failed".into());
        match &self.key {
            SigningKey::Rsa(k) => {
                let hash = SUPPORTED_HASHES
                    .into_iter()
                    .find(|h| peer_hashes.contains(h))
                    .unwrap_or(hash_algorithm::SHA2_256);
                let encoding: &'static dyn signature::RsaEncoding = match (self.rsa_padding, hash) {
                    (RsaPadding::Pkcs1, hash_algorithm::SHA2_384) => &signature::RSA_PKCS1_SHA384,
                    (RsaPadding::Pkcs1, hash_algorithm::SHA2_512) => &signature::RSA_PKCS1_SHA512,
                    (RsaPadding::Pkcs1, _) => &signature::RSA_PKCS1_SHA256,
                    (RsaPadding::Pss, hash_algorithm::SHA2_384) => &signature::RSA_PSS_SHA384,
                    (RsaPadding::Pss, hash_algorithm::SHA2_512) => &signature::RSA_PSS_SHA512,
                    (RsaPadding::Pss, _) => &signature::RSA_PSS_SHA256,
                };
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(encoding, &rng, octets, &mut sig).map_err(fail)?;
                let alg = match self.rsa_padding {
                    RsaPadding::Pkcs1 => rsa_pkcs1_algorithm_identifier(hash),
                    RsaPadding::Pss => rsa_pss_algorithm_identifier(hash),
                };
                Ok((
                    auth_method::DIGITAL_SIGNATURE,
                    digital_signature(&alg, &sig),
                ))
            }
            SigningKey::Ecdsa { curve, asn1, fixed } => {
                if peer_hashes.contains(&curve.hash()) {
                    let sig = asn1.sign(&rng, octets).map_err(fail)?;
                    let alg = ecdsa_algorithm_identifier(curve.hash());
                    Ok((
                        auth_method::DIGITAL_SIGNATURE,
                        digital_signature(&alg, sig.as_ref()),
                    ))
                } else {
                    let sig = fixed.sign(&rng, octets).map_err(fail)?;
                    let method = match curve {
                        Curve::P256 => auth_method::ECDSA_256,
                        Curve::P384 => auth_method::ECDSA_384,
                        Curve::P521 => auth_method::ECDSA_521,
                    };
                    Ok((method, sig.as_ref().to_vec()))
                }
            }
        }
    }
}

/// RFC 7427 §3 authentication data: length of the AlgorithmIdentifier, the AlgorithmIdentifier, the
/// signature.
fn digital_signature(alg: &[u8], sig: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + alg.len() + sig.len());
    v.push(alg.len() as u8);
    v.extend_from_slice(alg);
    v.extend_from_slice(sig);
    v
}

/// A DER TLV with a short or long length.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    let n = content.len();
    if n < 0x80 {
        v.push(n as u8);
    } else if n < 0x100 {
        v.extend_from_slice(&[0x81, n as u8]);
    } else {
        v.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    }
    v.extend_from_slice(content);
    v
}

const DER_OID_PKCS1: [u8; 8] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
const DER_OID_NIST_HASH: [u8; 8] = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02];
const DER_OID_ECDSA_SHA2: [u8; 7] = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];

fn oid(prefix: &[u8], last: u8) -> Vec<u8> {
    let mut v = prefix.to_vec();
    v.push(last);
    tlv(0x06, &v)
}

fn hash_index(hash: u16) -> u8 {
    match hash {
        hash_algorithm::SHA2_384 => 2,
        hash_algorithm::SHA2_512 => 3,
        _ => 1,
    }
}

fn hash_len(hash: u16) -> u8 {
    match hash {
        hash_algorithm::SHA2_384 => 48,
        hash_algorithm::SHA2_512 => 64,
        _ => 32,
    }
}

/// sha{256,384,512}WithRSAEncryption with NULL parameters (RFC 7427 Appendix A.1).
fn rsa_pkcs1_algorithm_identifier(hash: u16) -> Vec<u8> {
    let mut c = oid(&DER_OID_PKCS1, 10 + hash_index(hash));
    c.extend_from_slice(&[0x05, 0x00]);
    tlv(0x30, &c)
}

/// ecdsa-with-SHA{256,384,512} without parameters (RFC 7427 Appendix A.3).
fn ecdsa_algorithm_identifier(hash: u16) -> Vec<u8> {
    tlv(0x30, &oid(&DER_OID_ECDSA_SHA2, 1 + hash_index(hash)))
}

/// id-RSASSA-PSS with the hash, MGF1 with the same hash and a salt as long as the hash
/// (RFC 7427 Appendix A.4, RFC 4055 §3.1).
fn rsa_pss_algorithm_identifier(hash: u16) -> Vec<u8> {
    let mut hash_alg = oid(&DER_OID_NIST_HASH, hash_index(hash));
    hash_alg.extend_from_slice(&[0x05, 0x00]);
    let hash_alg = tlv(0x30, &hash_alg);
    let mut mgf = oid(&DER_OID_PKCS1, 8);
    mgf.extend_from_slice(&hash_alg);
    let mgf = tlv(0x30, &mgf);
    let mut params = tlv(0xa0, &hash_alg);
    params.extend(tlv(0xa1, &mgf));
    params.extend(tlv(0xa2, &tlv(0x02, &[hash_len(hash)])));
    let mut c = oid(&DER_OID_PKCS1, 10);
    c.extend(tlv(0x30, &params));
    tlv(0x30, &c)
}

/// The public key of a peer's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PeerKey {
    /// RSAPublicKey DER.
    Rsa(Vec<u8>),
    /// Uncompressed point.
    Ecdsa(Curve, Vec<u8>),
    Unsupported(String),
}

/// A subjectAltName entry used for identity binding.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AltName {
    Dns(String),
    Email(String),
    Ip(Vec<u8>),
}

/// A peer certificate that chained to a trusted root and is not revoked (§3.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The subject, e.g. `CN=client1, O=Contoso`.
    pub subject: String,
    /// The subject's common name, if any (Azure's `vpnUserName` for certificate clients).
    pub common_name: Option<String>,
    /// The end-entity thumbprint (SHA-1, upper-case hex).
    pub thumbprint: String,
    /// Thumbprints of every certificate the peer sent, end-entity first.
    pub chain_thumbprints: Vec<String>,
    subject_der: Vec<u8>,
    alt_names: Vec<AltName>,
    key: PeerKey,
}

impl PeerCertificate {
    /// The user name for remote access: the common name, else the whole subject.
    pub fn user_name(&self) -> String {
        self.common_name
            .clone()
            .unwrap_or_else(|| self.subject.clone())
    }

    /// `subject (thumbprint T)` for messages.
    pub fn describe(&self) -> String {
        format!("{} (thumbprint {})", self.subject, self.thumbprint)
    }

    /// Identity binding (RFC 7296 §3.5, RFC 4945 §3.1): ID_DER_ASN1_DN equal to the subject, or an
    /// ID_FQDN, ID_RFC822_ADDR, ID_IPV4_ADDR or ID_IPV6_ADDR present in subjectAltName.
    pub fn matches_identity(&self, id: &Identity) -> bool {
        match id.kind {
            id_type::DER_ASN1_DN => {
                id.data == self.subject_der
                    || dn_string(&id.data).is_some_and(|s| s == self.subject)
            }
            id_type::FQDN => std::str::from_utf8(&id.data).is_ok_and(|name| {
                self.alt_names
                    .iter()
                    .any(|a| matches!(a, AltName::Dns(d) if d.eq_ignore_ascii_case(name)))
            }),
            id_type::RFC822_ADDR => std::str::from_utf8(&id.data).is_ok_and(|mail| {
                self.alt_names
                    .iter()
                    .any(|a| matches!(a, AltName::Email(m) if m.eq_ignore_ascii_case(mail)))
            }),
            id_type::IPV4_ADDR | id_type::IPV6_ADDR => self
                .alt_names
                .iter()
                .any(|a| matches!(a, AltName::Ip(ip) if *ip == id.data)),
            _ => false,
        }
    }

    /// Checks the peer's AUTH payload (§3.8) over the §2.15 signed octets with the certificate's key:
    /// methods 1, 9–11 and 14 (RSASSA-PKCS1-v1_5, RSASSA-PSS, ECDSA with SHA-256/384/512).
    /// Returns a description of the algorithm used.
    pub fn verify_auth(&self, method: u8, data: &[u8], octets: &[u8]) -> Result<String, String> {
        let (alg, key, name): (&'static dyn signature::VerificationAlgorithm, &[u8], String) =
            match (method, &self.key) {
                (auth_method::RSA_SIGNATURE, PeerKey::Rsa(k)) => (
                    &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
                    k,
                    "RSA PKCS#1 v1.5 SHA-1 (method 1)".into(),
                ),
                (auth_method::ECDSA_256, PeerKey::Ecdsa(Curve::P256, k)) => (
                    &signature::ECDSA_P256_SHA256_FIXED,
                    k,
                    "ECDSA P-256 SHA-256 (method 9)".into(),
                ),
                (auth_method::ECDSA_384, PeerKey::Ecdsa(Curve::P384, k)) => (
                    &signature::ECDSA_P384_SHA384_FIXED,
                    k,
                    "ECDSA P-384 SHA-384 (method 10)".into(),
                ),
                (auth_method::ECDSA_521, PeerKey::Ecdsa(Curve::P521, k)) => (
                    &signature::ECDSA_P521_SHA512_FIXED,
                    k,
                    "ECDSA P-521 SHA-512 (method 11)".into(),
                ),
                (auth_method::DIGITAL_SIGNATURE, _) => {
                    let (&len, rest) = data
                        .split_first()
                        .ok_or("empty RFC 7427 authentication data")?;
                    if rest.len() < usize::from(len) {
                        return Err("truncated RFC 7427 AlgorithmIdentifier".into());
                    }
                    let (alg_der, sig) = rest.split_at(usize::from(len));
                    let (alg, name) = digital_signature_algorithm(alg_der, &self.key)?;
                    let key = match &self.key {
                        PeerKey::Rsa(k) | PeerKey::Ecdsa(_, k) => k,
                        PeerKey::Unsupported(what) => return Err(what.clone()),
                    };
                    UnparsedPublicKey::new(alg, key)
                        .verify(octets, sig)
                        .map_err(|_| format!("{name} signature does not verify"))?;
                    return Ok(format!("{name} (RFC 7427)"));
                }
                (m, PeerKey::Unsupported(what)) => {
                    return Err(format!("AUTH method {m} with {what}"));
                }
                (m, k) => {
                    return Err(format!(
                        "AUTH method {m} does not fit the certificate's {} key",
                        key_name(k)
                    ));
                }
            };
        UnparsedPublicKey::new(alg, key)
            .verify(octets, data)
            .map_err(|_| format!("{name} signature does not verify"))?;
        Ok(name)
    }
}

fn key_name(k: &PeerKey) -> &'static str {
    match k {
        PeerKey::Rsa(_) => "RSA",
        PeerKey::Ecdsa(Curve::P256, _) => "ECDSA P-256",
        PeerKey::Ecdsa(Curve::P384, _) => "ECDSA P-384",
        PeerKey::Ecdsa(Curve::P521, _) => "ECDSA P-521",
        PeerKey::Unsupported(_) => "unsupported",
    }
}

/// Maps an RFC 7427 AlgorithmIdentifier and the certificate's key to an aws-lc-rs verification
/// algorithm. Only SHA-256/384/512 are accepted (the hashes we announce).
fn digital_signature_algorithm(
    der: &[u8],
    key: &PeerKey,
) -> Result<(&'static dyn signature::VerificationAlgorithm, String), String> {
    let (_, alg) = AlgorithmIdentifier::from_der(der)
        .map_err(|_| "malformed RFC 7427 AlgorithmIdentifier".to_string())?;
    let a = &alg.algorithm;
    let rsa = matches!(key, PeerKey::Rsa(_));
    let curve = match key {
        PeerKey::Ecdsa(c, _) => Some(*c),
        _ => None,
    };
    let chosen: Option<(&'static dyn signature::VerificationAlgorithm, &str)> =
        if *a == OID_PKCS1_SHA256WITHRSA && rsa {
            Some((
                &signature::RSA_PKCS1_2048_8192_SHA256,
                "RSA PKCS#1 v1.5 SHA-256",
            ))
        } else if *a == OID_PKCS1_SHA384WITHRSA && rsa {
            Some((
                &signature::RSA_PKCS1_2048_8192_SHA384,
                "RSA PKCS#1 v1.5 SHA-384",
            ))
        } else if *a == OID_PKCS1_SHA512WITHRSA && rsa {
            Some((
                &signature::RSA_PKCS1_2048_8192_SHA512,
                "RSA PKCS#1 v1.5 SHA-512",
            ))
        } else if *a == OID_PKCS1_RSASSAPSS && rsa {
            let params = alg
                .parameters
                .as_ref()
                .ok_or("RSASSA-PSS without parameters")?;
            let params = x509_parser::signature_algorithm::RsaSsaPssParams::try_from(params)
                .map_err(|_| "malformed RSASSA-PSS parameters".to_string())?;
            let hash = params.hash_algorithm_oid().clone();
            let mgf_hash = params
                .mask_gen_algorithm()
                .map_err(|_| "malformed RSASSA-PSS mask generation parameters".to_string())?
                .hash
                .clone();
            let salt = params.salt_length();
            let pick = |len: u32,
                        alg: &'static dyn signature::VerificationAlgorithm,
                        name: &'static str| {
                (mgf_hash == hash && salt == len).then_some((alg, name))
            };
            if hash == OID_NIST_HASH_SHA256 {
                pick(
                    32,
                    &signature::RSA_PSS_2048_8192_SHA256,
                    "RSASSA-PSS SHA-256",
                )
            } else if hash == OID_NIST_HASH_SHA384 {
                pick(
                    48,
                    &signature::RSA_PSS_2048_8192_SHA384,
                    "RSASSA-PSS SHA-384",
                )
            } else if hash == OID_NIST_HASH_SHA512 {
                pick(
                    64,
                    &signature::RSA_PSS_2048_8192_SHA512,
                    "RSASSA-PSS SHA-512",
                )
            } else {
                None
            }
        } else if let Some(c) = curve {
            let h = if *a == OID_SIG_ECDSA_WITH_SHA256 {
                Some(256)
            } else if *a == OID_SIG_ECDSA_WITH_SHA384 {
                Some(384)
            } else if *a == OID_SIG_ECDSA_WITH_SHA512 {
                Some(512)
            } else {
                None
            };
            let algs: [(&'static dyn signature::VerificationAlgorithm, &str); 3] = match c {
                Curve::P256 => [
                    (&signature::ECDSA_P256_SHA256_ASN1, "ECDSA P-256 SHA-256"),
                    (&signature::ECDSA_P256_SHA384_ASN1, "ECDSA P-256 SHA-384"),
                    (&signature::ECDSA_P256_SHA512_ASN1, "ECDSA P-256 SHA-512"),
                ],
                Curve::P384 => [
                    (&signature::ECDSA_P384_SHA256_ASN1, "ECDSA P-384 SHA-256"),
                    (&signature::ECDSA_P384_SHA384_ASN1, "ECDSA P-384 SHA-384"),
                    (&signature::ECDSA_P384_SHA512_ASN1, "ECDSA P-384 SHA-512"),
                ],
                Curve::P521 => [
                    (&signature::ECDSA_P521_SHA256_ASN1, "ECDSA P-521 SHA-256"),
                    (&signature::ECDSA_P521_SHA384_ASN1, "ECDSA P-521 SHA-384"),
                    (&signature::ECDSA_P521_SHA512_ASN1, "ECDSA P-521 SHA-512"),
                ],
            };
            h.map(|h| match h {
                256 => algs[0],
                384 => algs[1],
                _ => algs[2],
            })
        } else {
            None
        };
    chosen
        .map(|(alg, name)| (alg, name.to_string()))
        .ok_or_else(|| {
            format!(
                "unsupported RFC 7427 signature algorithm {} for a {} key",
                alg.algorithm,
                key_name(key)
            )
        })
}

/// Extended key usages accepted on IKE certificates (RFC 4945 §5.1.3.12): none at all, or one of
/// serverAuth, clientAuth, id-kp-ipsecIKE, ikeIntermediate, anyExtendedKeyUsage.
struct IkeKeyUsage;

const EKU_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
const EKU_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
const EKU_IPSEC_IKE: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x11];
const EKU_IKE_INTERMEDIATE: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x08, 0x02, 0x02];
const EKU_ANY: &[u8] = &[0x55, 0x1d, 0x25, 0x00];

impl ExtendedKeyUsageValidator for IkeKeyUsage {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        let mut present = Vec::new();
        for id in iter {
            let id = id?;
            if [
                EKU_SERVER_AUTH,
                EKU_CLIENT_AUTH,
                EKU_IPSEC_IKE,
                EKU_IKE_INTERMEDIATE,
                EKU_ANY,
            ]
            .iter()
            .any(|oid| KeyPurposeId::new(oid) == id)
            {
                return Ok(());
            }
            present.push(id.to_decoded_oid());
        }
        if present.is_empty() {
            Ok(())
        } else {
            Err(webpki::Error::RequiredEkuNotFoundContext(
                webpki::RequiredEkuNotFoundContext {
                    required: webpki::KeyUsage::required_if_present(EKU_CLIENT_AUTH),
                    present,
                },
            ))
        }
    }
}

/// The roots a peer's certificate must chain to, and the revoked thumbprints (Azure's
/// `vpnClientRootCertificates` and `vpnClientRevokedCertificates`).
pub struct TrustStore {
    roots: Vec<Vec<u8>>,
    anchors: Vec<TrustAnchor<'static>>,
    certreq: Vec<u8>,
    revoked: HashSet<String>,
}

impl fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustStore")
            .field("roots", &self.roots.len())
            .field("revoked", &self.revoked.len())
            .finish()
    }
}

impl PartialEq for TrustStore {
    fn eq(&self, other: &Self) -> bool {
        self.roots == other.roots && self.revoked == other.revoked
    }
}

impl TrustStore {
    /// Trusted root certificates (DER) and revoked thumbprints (SHA-1 hex, any case, separators
    /// ignored). Fails when a root does not parse.
    pub fn new(
        roots: Vec<Vec<u8>>,
        revoked_thumbprints: impl IntoIterator<Item = String>,
    ) -> Result<Self, CertError> {
        let mut anchors = Vec::with_capacity(roots.len());
        let mut certreq = Vec::with_capacity(20 * roots.len());
        for (i, der) in roots.iter().enumerate() {
            let cert = CertificateDer::from(der.as_slice());
            let anchor = webpki::anchor_from_trusted_cert(&cert)
                .map_err(|e| CertError(format!("trusted root {i} does not parse: {e}")))?;
            anchors.push(anchor.to_owned());
            let (_, parsed) = X509Certificate::from_der(der)
                .map_err(|e| CertError(format!("trusted root {i} does not parse: {e}")))?;
            // §3.7: CERTREQ carries SHA-1 hashes of the trusted CAs' SubjectPublicKeyInfo.
            certreq.extend_from_slice(
                digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, parsed.public_key().raw).as_ref(),
            );
        }
        Ok(Self {
            roots,
            anchors,
            certreq,
            revoked: revoked_thumbprints
                .into_iter()
                .map(|t| normalize_thumbprint(&t))
                .collect(),
        })
    }

    /// True when both stores trust the same roots (revocations aside).
    pub fn same_roots(&self, other: &TrustStore) -> bool {
        self.roots == other.roots
    }

    /// The CERTREQ payload data (§3.7): concatenated SHA-1 hashes of the roots' public key info.
    pub fn certreq_data(&self) -> &[u8] {
        &self.certreq
    }

    /// True when the thumbprint is on the revocation list (case-insensitive).
    pub fn is_revoked(&self, thumbprint: &str) -> bool {
        self.revoked.contains(&normalize_thumbprint(thumbprint))
    }

    /// The revoked thumbprints (normalised to upper case).
    pub fn revoked(&self) -> impl Iterator<Item = &str> {
        self.revoked.iter().map(String::as_str)
    }

    /// Validates the peer's chain (end-entity first) at `time`: not revoked, chains to one of our
    /// roots, valid at `time`, an acceptable key usage.
    pub fn verify(
        &self,
        chain: &[Vec<u8>],
        time: UnixTime,
    ) -> Result<PeerCertificate, CertFailure> {
        let invalid = |message: String| CertFailure {
            reason: Reason::CertificateInvalid,
            message,
        };
        let first = chain
            .first()
            .ok_or_else(|| invalid("the peer sent no certificate (CERT payload)".into()))?;
        let (_, cert) = X509Certificate::from_der(first)
            .map_err(|e| invalid(format!("the peer's certificate does not parse: {e}")))?;
        let subject = cert.subject().to_string();
        let thumb = thumbprint(first);
        let who = format!("{subject} (thumbprint {thumb})");
        let chain_thumbprints: Vec<String> = chain.iter().map(|c| thumbprint(c)).collect();
        if let Some(t) = chain_thumbprints.iter().find(|t| self.revoked.contains(*t)) {
            let which = if *t == thumb {
                String::new()
            } else {
                format!(" (its issuer {t} is revoked)")
            };
            return Err(CertFailure {
                reason: Reason::CertificateRevoked,
                message: format!("certificate {who} is revoked{which}"),
            });
        }
        let ee_der = CertificateDer::from(first.as_slice());
        let ee = webpki::EndEntityCert::try_from(&ee_der)
            .map_err(|e| invalid(format!("certificate {who} is not usable: {e}")))?;
        let intermediates: Vec<CertificateDer<'_>> = chain[1..]
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        if let Err(e) = ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            &intermediates,
            time,
            IkeKeyUsage,
            None,
            None,
        ) {
            use webpki::Error as E;
            let (reason, what) = match e {
                E::CertExpired { .. } => (Reason::CertificateExpired, "has expired".to_string()),
                E::CertNotValidYet { .. } => {
                    (Reason::CertificateExpired, "is not valid yet".to_string())
                }
                E::UnknownIssuer => (
                    Reason::CertificateUntrusted,
                    "does not chain to a trusted root certificate".to_string(),
                ),
                E::RequiredEkuNotFoundContext(_) => (
                    Reason::CertificateInvalid,
                    "has no extended key usage for IKE (clientAuth, serverAuth, ipsecIKE)"
                        .to_string(),
                ),
                other => (
                    Reason::CertificateUntrusted,
                    format!("failed chain validation ({other})"),
                ),
            };
            return Err(CertFailure {
                reason,
                message: format!("certificate {who} {what}"),
            });
        }
        let spki = cert.public_key();
        let key = if spki.algorithm.algorithm == OID_PKCS1_RSAENCRYPTION {
            PeerKey::Rsa(spki.subject_public_key.data.to_vec())
        } else if spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve_oid = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            match curve_oid {
                Some(c) if c == x509_parser::oid_registry::OID_EC_P256 => {
                    PeerKey::Ecdsa(Curve::P256, spki.subject_public_key.data.to_vec())
                }
                Some(c) if c == OID_NIST_EC_P384 => {
                    PeerKey::Ecdsa(Curve::P384, spki.subject_public_key.data.to_vec())
                }
                Some(c) if c == OID_NIST_EC_P521 => {
                    PeerKey::Ecdsa(Curve::P521, spki.subject_public_key.data.to_vec())
                }
                _ => PeerKey::Unsupported("an unsupported elliptic curve".into()),
            }
        } else {
            PeerKey::Unsupported(format!("public key algorithm {}", spki.algorithm.algorithm))
        };
        let mut alt_names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => alt_names.push(AltName::Dns((*d).to_string())),
                    GeneralName::RFC822Name(m) => alt_names.push(AltName::Email((*m).to_string())),
                    GeneralName::IPAddress(ip) => alt_names.push(AltName::Ip(ip.to_vec())),
                    _ => {}
                }
            }
        }
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string);
        Ok(PeerCertificate {
            subject,
            common_name,
            thumbprint: thumb,
            chain_thumbprints,
            subject_der: cert.subject().as_raw().to_vec(),
            alt_names,
            key,
        })
    }
}

/// Converts a wall-clock time to the form `rustls-webpki` checks validity at.
pub fn unix_time(t: std::time::SystemTime) -> UnixTime {
    UnixTime::since_unix_epoch(
        t.duration_since(std::time::UNIX_EPOCH)
            .unwrap_or(std::time::Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_identifiers_match_rustls_pki_types() {
        use rustls_pki_types::alg_id;
        // pki-types holds the AlgorithmIdentifier contents without the outer SEQUENCE header.
        let inner = |v: Vec<u8>| v[2..].to_vec();
        let h = |x: u16| x;
        assert_eq!(
            inner(rsa_pss_algorithm_identifier(h(hash_algorithm::SHA2_256))),
            alg_id::RSA_PSS_SHA256.as_ref()
        );
        assert_eq!(
            inner(rsa_pss_algorithm_identifier(h(hash_algorithm::SHA2_512))),
            alg_id::RSA_PSS_SHA512.as_ref()
        );
        assert_eq!(
            inner(rsa_pkcs1_algorithm_identifier(hash_algorithm::SHA2_384)),
            alg_id::RSA_PKCS1_SHA384.as_ref()
        );
        assert_eq!(
            inner(ecdsa_algorithm_identifier(hash_algorithm::SHA2_256)),
            alg_id::ECDSA_SHA256.as_ref()
        );
    }

    #[test]
    fn thumbprints_normalise() {
        assert_eq!(normalize_thumbprint("ab:cd ef"), "ABCDEF");
        assert_eq!(thumbprint(b"").len(), 40);
    }

    #[test]
    fn garbage_never_panics() {
        let store = TrustStore::new(vec![], Vec::new()).unwrap();
        for junk in [&[][..], &[0x30], &[0x30, 0x82, 0xff, 0xff], &[1, 2, 3, 4]] {
            assert!(
                store
                    .verify(&[junk.to_vec()], unix_time(std::time::UNIX_EPOCH))
                    .is_err()
            );
            assert!(dn_string(junk).is_none() || junk.is_empty());
        }
        assert!(LocalCertificate::new(vec![vec![0x30]], &[1, 2]).is_err());
    }
}
