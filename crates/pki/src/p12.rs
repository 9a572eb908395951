//! PKCS#12 bundles (through the `p12-keystore` crate) and generated passwords.

use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKey,
    PrivateKeyChain,
};

use crate::{Error, Issued, Result};

/// How the PKCS#12 file is protected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum P12Format {
    /// PBE-SHA1-3DES with an HMAC-SHA1 MAC: imports on every Windows and macOS release.
    #[default]
    Legacy,
    /// PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) with an HMAC-SHA256 MAC: OpenSSL 3's default;
    /// older macOS and Windows releases refuse it.
    Modern,
}

impl std::str::FromStr for P12Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "legacy" => Ok(P12Format::Legacy),
            "modern" => Ok(P12Format::Modern),
            _ => Err(Error::Invalid(format!(
                "unknown PKCS#12 format '{s}' (legacy or modern)"
            ))),
        }
    }
}

/// Bundles the issued key and certificate with the CA chain (`chain`, DER, issuer first) into a
/// password-protected PKCS#12 file. `name` becomes the friendly name.
pub fn pkcs12(
    name: &str,
    issued: &Issued,
    chain: &[&[u8]],
    password: &str,
    format: P12Format,
) -> Result<Vec<u8>> {
    let p12err = |e: p12_keystore::error::Error| Error::Pkcs12(e.to_string());
    let key = PrivateKey::from_der(issued.key_der()).map_err(p12err)?;
    let mut certs = vec![Certificate::from_der(&issued.cert_der).map_err(p12err)?];
    for c in chain {
        certs.push(Certificate::from_der(c).map_err(p12err)?);
    }
    // The local key id ties the key bag to the certificate bag; the thumbprint bytes are unique.
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        &issued.cert_der,
    );
    let chain = PrivateKeyChain::new(digest.as_ref(), key, certs);
    let mut store = KeyStore::new();
    store.add_entry(name, KeyStoreEntry::PrivateKeyChain(chain));
    let writer = store.writer(password);
    let writer = match format {
        P12Format::Legacy => writer
            .encryption_algorithm(EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
            .mac_algorithm(MacAlgorithm::HmacSha1),
        P12Format::Modern => writer
            .encryption_algorithm(EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
            .mac_algorithm(MacAlgorithm::HmacSha256),
    };
    writer.write().map_err(p12err)
}

/// A random 20-character password from an alphabet without look-alike characters.
pub fn generate_password() -> Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut out = String::with_capacity(20);
    while out.len() < 20 {
        let mut buf = [0u8; 32];
        aws_lc_rs::rand::fill(&mut buf)
            .map_err(|_| Error::Invalid("the system random generator failed".into()))?;
        // Rejection sampling keeps the distribution uniform.
        let limit = 256 - (256 % ALPHABET.len());
        for b in buf {
            if (b as usize) < limit && out.len() < 20 {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}
