//! Reading certificates back: thumbprints, summaries, PEM/DER input.

use base64::Engine;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use x509_parser::extensions::GeneralName;
use x509_parser::public_key::PublicKey;

use crate::{Error, Result};

/// SHA-1 over the DER, upper-case hex without separators: the thumbprint Azure and Windows show.
pub fn thumbprint(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
    digest.as_ref().iter().map(|b| format!("{b:02X}")).collect()
}

/// The base64 DER without PEM armour or line breaks: Azure's `publicCertData`.
pub fn public_cert_data(der: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(der)
}

/// Certificates from PEM (one or more `CERTIFICATE` blocks), from base64 DER as Azure's
/// `publicCertData`, or from raw DER.
pub fn certs_from_pem_or_der(input: &[u8]) -> Result<Vec<Vec<u8>>> {
    if input.first() == Some(&0x30) {
        return Ok(vec![input.to_vec()]);
    }
    let text =
        std::str::from_utf8(input).map_err(|_| Error::Parse("neither DER nor PEM text".into()))?;
    if text.contains("-----BEGIN") {
        let blocks = pem::parse_many(text).map_err(|e| Error::Parse(e.to_string()))?;
        let certs: Vec<Vec<u8>> = blocks
            .into_iter()
            .filter(|b| b.tag() == "CERTIFICATE")
            .map(|b| b.into_contents())
            .collect();
        if certs.is_empty() {
            return Err(Error::Parse("no CERTIFICATE block in the PEM".into()));
        }
        return Ok(certs);
    }
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map(|der| vec![der])
        .map_err(|_| Error::Parse("neither DER, PEM nor base64 DER".into()))
}

/// What `vgw pki show` prints about a certificate (camelCase JSON).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CertSummary {
    /// Subject DN, e.g. `CN=alice`.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// SHA-1 thumbprint, upper-case hex.
    pub thumbprint: String,
    /// Serial number, colon-separated hex as openssl prints it.
    pub serial_number: String,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    /// Whether `now` is outside the validity period.
    pub expired: bool,
    /// `ecdsa-p256`, `rsa-2048`, ... as [`crate::KeyType`] names it, or the algorithm OID.
    pub key_type: String,
    /// basicConstraints CA flag.
    pub is_ca: bool,
    /// Whether subject == issuer.
    pub self_signed: bool,
    /// `DNS:x`, `IP:x`, `email:x`, `URI:x`.
    pub subject_alternative_names: Vec<String>,
    /// `serverAuth`, `clientAuth`, `ikeIntermediate`, or dotted OIDs.
    pub extended_key_usages: Vec<String>,
    /// base64 DER, Azure's `publicCertData`.
    pub public_cert_data: String,
}

/// Reads one DER certificate into a [`CertSummary`].
pub fn summarize(der: &[u8]) -> Result<CertSummary> {
    let (_, x509) =
        x509_parser::parse_x509_certificate(der).map_err(|e| Error::Parse(e.to_string()))?;
    let fmt_time = |t: x509_parser::time::ASN1Time| {
        t.to_datetime()
            .format(&Rfc3339)
            .unwrap_or_else(|_| t.to_string())
    };
    let validity = x509.validity();
    let now = time::OffsetDateTime::now_utc();
    let expired = now < validity.not_before.to_datetime() || now > validity.not_after.to_datetime();

    let spki = x509.public_key();
    let alg = spki.algorithm.algorithm.to_id_string();
    let key_type = match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => format!("rsa-{}", rsa.key_size()),
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => "ecdsa-p256".to_string(),
                Some("1.3.132.0.34") => "ecdsa-p384".to_string(),
                Some("1.3.132.0.35") => "ecdsa-p521".to_string(),
                Some(other) => format!("ec-{other}"),
                None => "ec".to_string(),
            }
        }
        _ if alg == "1.3.101.112" => "ed25519".to_string(),
        _ => alg,
    };

    let mut sans = Vec::new();
    if let Ok(Some(ext)) = x509.subject_alternative_name() {
        for name in &ext.value.general_names {
            sans.push(match name {
                GeneralName::DNSName(v) => format!("DNS:{v}"),
                GeneralName::RFC822Name(v) => format!("email:{v}"),
                GeneralName::URI(v) => format!("URI:{v}"),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => format!(
                        "IP:{}",
                        std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())
                    ),
                    16 => format!(
                        "IP:{}",
                        std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())
                    ),
                    _ => "IP:<invalid>".to_string(),
                },
                GeneralName::DirectoryName(n) => format!("DirName:{n}"),
                other => format!("{other:?}"),
            });
        }
    }

    let mut ekus = Vec::new();
    if let Ok(Some(ext)) = x509.extended_key_usage() {
        let e = &ext.value;
        let named = [
            (e.any, "anyExtendedKeyUsage"),
            (e.server_auth, "serverAuth"),
            (e.client_auth, "clientAuth"),
            (e.code_signing, "codeSigning"),
            (e.email_protection, "emailProtection"),
            (e.time_stamping, "timeStamping"),
            (e.ocsp_signing, "OCSPSigning"),
        ];
        ekus.extend(
            named
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, n)| n.to_string()),
        );
        for oid in &e.other {
            let id = oid.to_id_string();
            ekus.push(if id == "1.3.6.1.5.5.8.2.2" {
                "ikeIntermediate".to_string()
            } else {
                id
            });
        }
    }

    Ok(CertSummary {
        subject: x509.subject().to_string(),
        issuer: x509.issuer().to_string(),
        thumbprint: thumbprint(der),
        serial_number: x509.raw_serial_as_string(),
        not_before: fmt_time(validity.not_before),
        not_after: fmt_time(validity.not_after),
        expired,
        key_type,
        is_ca: x509.is_ca(),
        self_signed: x509.subject().as_raw() == x509.issuer().as_raw(),
        subject_alternative_names: sans,
        extended_key_usages: ekus,
        public_cert_data: public_cert_data(der),
    })
}
