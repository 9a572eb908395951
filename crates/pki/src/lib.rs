//! vgw's built-in PKI and point-to-site client profiles.
//!
//! Azure makes point-to-site certificates awkward (PowerShell or makecert, RSA only). This crate
//! makes the three kinds of certificate a P2S deployment needs, with ECDSA or RSA keys:
//!
//! - a self-signed root CA ([`create_root`]), whose base64 DER ([`public_cert_data`]) is what
//!   `vnet-gateway root-cert create --public-cert-data` takes;
//! - client certificates ([`CertAuthority::issue_client`]): EKU clientAuth, digitalSignature;
//! - server certificates ([`CertAuthority::issue_server`]): EKU serverAuth and ikeIntermediate
//!   (1.3.6.1.5.5.8.2.2, wanted by macOS and Windows IKEv2 clients), digitalSignature.
//!
//! It also reads any certificate back ([`summarize`]), bundles a client key with its chain as
//! PKCS#12 ([`pkcs12`]), writes key files with mode 0600 without races ([`files`]), and builds
//! the client profile zip ([`profiles`]).
//!
//! Decisions:
//! - Keys come from aws-lc-rs through rcgen; the pure-Rust `rsa` crate is not used.
//! - Serial numbers are 16 random bytes (top bit cleared, so the INTEGER is positive).
//! - A root has `basicConstraints CA:TRUE, pathlen:0`: it signs end-entity certificates only.
//! - Thumbprints are SHA-1 over the DER, upper-case hex without separators, as Azure shows them
//!   (`openssl x509 -fingerprint -sha1` prints the same bytes with colons).
//! - PKCS#12 is written by the `p12-keystore` crate; the default is the legacy
//!   3DES/HMAC-SHA1 scheme, which every Windows and macOS version imports; AES-256/HMAC-SHA256 is
//!   available as [`P12Format::Modern`].

pub mod files;
pub mod profiles;

mod cert;
mod inspect;
mod p12;

pub use cert::{
    CertAuthority, ClientRequest, IKE_INTERMEDIATE_OID, Issued, KeyType, ServerRequest,
    SubjectAltName, Validity, create_root, issue_client_with_validity,
};
pub use inspect::{CertSummary, certs_from_pem_or_der, public_cert_data, summarize, thumbprint};
pub use p12::{P12Format, generate_password, pkcs12};
/// The `time` crate, re-exported for [`Validity`]'s fields.
pub use time;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Certificate or key generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A certificate could not be parsed.
    #[error("cannot parse certificate: {0}")]
    Parse(String),
    /// A private key could not be read.
    #[error("cannot read private key: {0}")]
    Key(String),
    /// Bad input from the caller.
    #[error("{0}")]
    Invalid(String),
    /// PKCS#12 encoding failed.
    #[error("PKCS#12: {0}")]
    Pkcs12(String),
    /// Building the profile archive failed.
    #[error("profile archive: {0}")]
    Archive(String),
    /// File system error, with the path.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
