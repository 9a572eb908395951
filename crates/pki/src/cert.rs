//! Key generation and certificate issuance (rcgen on aws-lc-rs).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, RsaKeySize, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::{Error, Result};

/// The ikeIntermediate extended key usage (1.3.6.1.5.5.8.2.2).
pub const IKE_INTERMEDIATE_OID: &[u64] = &[1, 3, 6, 1, 5, 5, 8, 2, 2];

/// The key algorithm of a new certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256 (the default).
    #[default]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384,
    /// RSA 2048 with PKCS#1 v1.5 SHA-256 signatures.
    Rsa2048,
    /// RSA 3072.
    Rsa3072,
    /// RSA 4096.
    Rsa4096,
}

impl KeyType {
    /// All key types, in CLI order.
    pub const ALL: [KeyType; 5] = [
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
    ];

    /// The CLI name: `ecdsa-p256`, `rsa-2048`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa3072 => "rsa-3072",
            KeyType::Rsa4096 => "rsa-4096",
        }
    }

    /// Generates a fresh key pair of this type.
    pub(crate) fn generate(self) -> Result<KeyPair> {
        let rsa = |size| KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size);
        Ok(match self {
            KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
            KeyType::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?,
            KeyType::Rsa2048 => rsa(RsaKeySize::_2048)?,
            KeyType::Rsa3072 => rsa(RsaKeySize::_3072)?,
            KeyType::Rsa4096 => rsa(RsaKeySize::_4096)?,
        })
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        KeyType::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let all: Vec<_> = KeyType::ALL.iter().map(|k| k.as_str()).collect();
                Error::Invalid(format!(
                    "unknown key type '{s}' (one of {})",
                    all.join(", ")
                ))
            })
    }
}

/// A certificate's validity period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// First second of validity.
    pub not_before: OffsetDateTime,
    /// Last second of validity.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From five minutes ago (clock skew) until `days` days from now; `days == 0` gives a
    /// certificate that has expired by the time it is used.
    pub fn days_from_now(days: u32) -> Self {
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or(OffsetDateTime::now_utc());
        Validity {
            not_before: now - Duration::minutes(5),
            // Past year 9999 X.509 has no encoding: saturate there.
            not_after: now
                .checked_add(Duration::days(i64::from(days)))
                .filter(|t| t.year() <= 9999)
                .unwrap_or_else(|| rcgen::date_time_ymd(9999, 12, 31)),
        }
    }

    fn check(&self) -> Result<()> {
        if self.not_after < self.not_before {
            return Err(Error::Invalid(format!(
                "notAfter {} is before notBefore {}",
                self.not_after, self.not_before
            )));
        }
        Ok(())
    }
}

/// One subjectAltName entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubjectAltName {
    /// dNSName.
    Dns(String),
    /// iPAddress.
    Ip(IpAddr),
    /// rfc822Name (e-mail).
    Email(String),
}

impl FromStr for SubjectAltName {
    type Err = Error;
    /// `dns:x`, `ip:x`, `email:x`, or a bare value: an IP address, an e-mail address (has `@`),
    /// or else a DNS name.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let lower = s.to_ascii_lowercase();
        let bad = |what: &str| Error::Invalid(format!("bad subjectAltName '{s}': {what}"));
        if let Some(v) = lower.strip_prefix("ip:").map(|_| &s[3..]) {
            return v
                .parse()
                .map(SubjectAltName::Ip)
                .map_err(|_| bad("not an IP address"));
        }
        if let Some(v) = lower.strip_prefix("dns:").map(|_| &s[4..]) {
            return check_dns(v)
                .map(|_| SubjectAltName::Dns(v.to_string()))
                .map_err(|e| bad(&e));
        }
        if let Some(v) = lower.strip_prefix("email:").map(|_| &s[6..]) {
            return check_email(v)
                .map(|_| SubjectAltName::Email(v.to_string()))
                .map_err(|e| bad(&e));
        }
        if let Ok(ip) = s.parse() {
            return Ok(SubjectAltName::Ip(ip));
        }
        if s.contains('@') {
            return check_email(s)
                .map(|_| SubjectAltName::Email(s.to_string()))
                .map_err(|e| bad(&e));
        }
        check_dns(s)
            .map(|_| SubjectAltName::Dns(s.to_string()))
            .map_err(|e| bad(&e))
    }
}

impl fmt::Display for SubjectAltName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubjectAltName::Dns(v) => write!(f, "DNS:{v}"),
            SubjectAltName::Ip(v) => write!(f, "IP:{v}"),
            SubjectAltName::Email(v) => write!(f, "email:{v}"),
        }
    }
}

fn check_dns(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').enumerate().all(|(i, label)| {
            (!label.is_empty() && label.len() <= 63)
                && (label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    || (i == 0 && label == "*"))
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err("not a DNS name".into())
    }
}

fn check_email(s: &str) -> Result<(), String> {
    match s.split_once('@') {
        Some((local, domain)) if !local.is_empty() && s.is_ascii() && check_dns(domain).is_ok() => {
            Ok(())
        }
        _ => Err("not an e-mail address".into()),
    }
}

fn san_to_rcgen(san: &SubjectAltName) -> Result<SanType> {
    let ia5 = |s: &str| {
        rcgen::string::Ia5String::try_from(s.to_string())
            .map_err(|e| Error::Invalid(format!("subjectAltName '{s}': {e}")))
    };
    Ok(match san {
        SubjectAltName::Dns(v) => SanType::DnsName(ia5(v)?),
        SubjectAltName::Ip(v) => SanType::IpAddress(*v),
        SubjectAltName::Email(v) => SanType::Rfc822Name(ia5(v)?),
    })
}

/// A freshly issued certificate and its private key.
pub struct Issued {
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The certificate, PEM (`CERTIFICATE`).
    pub cert_pem: String,
    key: KeyPair,
}

impl Issued {
    /// The private key as PKCS#8 PEM (`PRIVATE KEY`). Write it with [`crate::files::write_private`].
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The private key as PKCS#8 DER.
    pub fn key_der(&self) -> &[u8] {
        self.key.serialized_der()
    }
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("cert_der", &format_args!("{} bytes", self.cert_der.len()))
            .field("key", &"<private>")
            .finish()
    }
}

fn validate_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
        return Err(Error::Invalid(format!(
            "name '{name}' must be 1-64 printable characters"
        )));
    }
    Ok(())
}

fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| Error::Invalid("the system random generator failed".into()))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // keep 16 significant bytes
    Ok(SerialNumber::from_slice(&bytes))
}

fn base_params(cn: &str, validity: &Validity) -> Result<CertificateParams> {
    validate_name(cn)?;
    validity.check()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

/// Creates a self-signed root CA named `CN=name`.
pub fn create_root(name: &str, key: KeyType, validity: Validity) -> Result<Issued> {
    let mut params = base_params(name, &validity)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = key.generate()?;
    let cert = params.self_signed(&key)?;
    Ok(Issued {
        cert_der: cert.der().to_vec(),
        cert_pem: cert.pem(),
        key,
    })
}

/// What to put in a client certificate.
#[derive(Clone, Debug)]
pub struct ClientRequest {
    /// The common name, e.g. `alice`.
    pub name: String,
    /// Key algorithm.
    pub key: KeyType,
    /// Validity period.
    pub validity: Validity,
    /// subjectAltName entries (e-mail or DNS usually); may be empty.
    pub sans: Vec<SubjectAltName>,
}

/// What to put in a server certificate.
#[derive(Clone, Debug)]
pub struct ServerRequest {
    /// The common name, e.g. `vpn.example.com`; also added as a DNS (or IP) subjectAltName.
    pub name: String,
    /// Key algorithm.
    pub key: KeyType,
    /// Validity period.
    pub validity: Validity,
    /// Further DNS subjectAltNames.
    pub dns: Vec<String>,
    /// IP subjectAltNames.
    pub ips: Vec<IpAddr>,
}

/// A root CA loaded for signing: its certificate and private key.
pub struct CertAuthority {
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertAuthority")
            .field("cert_der", &format_args!("{} bytes", self.cert_der.len()))
            .finish_non_exhaustive()
    }
}

impl CertAuthority {
    /// Loads a CA from its PEM certificate and PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| Error::Key(e.to_string()))?;
        let der = crate::inspect::certs_from_pem_or_der(cert_pem.as_bytes())?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Parse("no certificate in the PEM".into()))?;
        Self::from_der(&der, key)
    }

    /// Loads a CA from its DER certificate and its key pair.
    pub fn from_der(cert_der: &[u8], key: KeyPair) -> Result<Self> {
        let (_, x509) = x509_parser::parse_x509_certificate(cert_der)
            .map_err(|e| Error::Parse(e.to_string()))?;
        if !x509.is_ca() {
            return Err(Error::Invalid(format!(
                "{} is not a CA certificate (basicConstraints CA:FALSE or missing)",
                x509.subject()
            )));
        }
        if x509.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
            return Err(Error::Key(
                "the private key does not belong to the CA certificate".into(),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der.to_vec().into(), key)?;
        Ok(CertAuthority {
            cert_der: cert_der.to_vec(),
            issuer,
        })
    }

    /// Wraps a just-created root.
    pub fn from_issued(root: Issued) -> Result<Self> {
        Self::from_der(&root.cert_der.clone(), root.key)
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    fn sign(&self, params: CertificateParams, key: KeyPair) -> Result<Issued> {
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key,
        })
    }

    /// Issues a client certificate: CN=name, the given SANs, EKU clientAuth, digitalSignature.
    pub fn issue_client(&self, req: &ClientRequest) -> Result<Issued> {
        let mut params = base_params(&req.name, &req.validity)?;
        params.subject_alt_names = req.sans.iter().map(san_to_rcgen).collect::<Result<_>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        self.sign(params, req.key.generate()?)
    }

    /// Issues a server certificate: CN=name, SAN DNS/IP (the name first), EKU serverAuth and
    /// ikeIntermediate, digitalSignature.
    pub fn issue_server(&self, req: &ServerRequest) -> Result<Issued> {
        let mut params = base_params(&req.name, &req.validity)?;
        let mut sans: Vec<SubjectAltName> = Vec::new();
        let mut push = |s: SubjectAltName| {
            if !sans.contains(&s) {
                sans.push(s);
            }
        };
        match req.name.parse::<IpAddr>() {
            Ok(ip) => push(SubjectAltName::Ip(ip)),
            Err(_) => {
                check_dns(&req.name).map_err(|_| {
                    Error::Invalid(format!(
                        "server name '{}' must be a DNS name or an IP address",
                        req.name
                    ))
                })?;
                push(SubjectAltName::Dns(req.name.clone()));
            }
        }
        for d in &req.dns {
            check_dns(d).map_err(|e| Error::Invalid(format!("--dns '{d}': {e}")))?;
            push(SubjectAltName::Dns(d.clone()));
        }
        for ip in &req.ips {
            push(SubjectAltName::Ip(*ip));
        }
        params.subject_alt_names = sans.iter().map(san_to_rcgen).collect::<Result<_>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::Other(IKE_INTERMEDIATE_OID.to_vec()),
        ];
        params.use_authority_key_identifier_extension = true;
        self.sign(params, req.key.generate()?)
    }
}

/// Issues a client certificate with an explicit validity period, e.g. one that has already
/// expired, for tests of certificate rejection.
pub fn issue_client_with_validity(
    ca: &CertAuthority,
    name: &str,
    key: KeyType,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Issued> {
    ca.issue_client(&ClientRequest {
        name: name.to_string(),
        key,
        validity: Validity {
            not_before,
            not_after,
        },
        sans: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn san_parsing() {
        assert_eq!(
            "alice@example.com".parse::<SubjectAltName>().unwrap(),
            SubjectAltName::Email("alice@example.com".into())
        );
        assert_eq!(
            "198.18.0.2".parse::<SubjectAltName>().unwrap(),
            SubjectAltName::Ip("198.18.0.2".parse().unwrap())
        );
        assert_eq!(
            "DNS:laptop.example.com".parse::<SubjectAltName>().unwrap(),
            SubjectAltName::Dns("laptop.example.com".into())
        );
        assert!("bad name!".parse::<SubjectAltName>().is_err());
        assert!("ip:nope".parse::<SubjectAltName>().is_err());
    }

    #[test]
    fn huge_validity_saturates() {
        assert_eq!(Validity::days_from_now(u32::MAX).not_after.year(), 9999);
    }

    #[test]
    fn key_type_names_round_trip() {
        for k in KeyType::ALL {
            assert_eq!(k.as_str().parse::<KeyType>().unwrap(), k);
        }
        assert!("dsa-1024".parse::<KeyType>().is_err());
    }
}
