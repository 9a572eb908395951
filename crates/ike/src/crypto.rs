//! IKEv2 cryptography: transform ids, PRF and prf+ (RFC 7296 §2.13), SKEYSEED and the SA keys (§2.14),
//! Child SA key material (§2.17), the PSK AUTH value (§2.15), Diffie-Hellman (MODP via crypto-bigint,
//! ECP and Curve25519 via aws-lc-rs), and SK payload protection (§3.14; AEAD per RFC 5282 / RFC 7634).
//!
//! No cipher or bignum is written here: aws-lc-rs and crypto-bigint do the arithmetic.

use std::fmt;

use aws_lc_rs::{aead, agreement, cipher, hmac, rand};
use zeroize::Zeroizing;

use crate::message::{Transform, transform_type};

/// Key material that is wiped when dropped.
pub type Secret = Zeroizing<Vec<u8>>;

/// A crypto failure (bad peer value, authentication failure of an SK payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CryptoError {
    /// The peer's DH public value is invalid.
    InvalidPublicValue,
    /// The SK payload's ICV or AEAD tag did not verify.
    IntegrityCheckFailed,
    /// The SK payload is malformed (length, padding).
    Malformed,
    /// A transform we cannot run.
    Unsupported,
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CryptoError::InvalidPublicValue => "invalid Diffie-Hellman public value",
            CryptoError::IntegrityCheckFailed => "integrity check failed",
            CryptoError::Malformed => "malformed encrypted payload",
            CryptoError::Unsupported => "unsupported transform",
        })
    }
}

impl std::error::Error for CryptoError {}

/// Encryption transforms (IANA "Transform Type 1").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encryption {
    /// ENCR_3DES (legacy).
    TripleDes,
    /// ENCR_AES_CBC with a 128/192/256-bit key.
    AesCbc(u16),
    /// ENCR_AES_GCM_16 (RFC 4106/5282) with a 128/192/256-bit key.
    AesGcm16(u16),
    /// ENCR_CHACHA20_POLY1305 (RFC 7634).
    ChaCha20Poly1305,
}

impl Encryption {
    /// From a transform, if we support it.
    pub fn from_transform(t: &Transform) -> Option<Self> {
        match (t.id, t.key_len) {
            (3, None) => Some(Encryption::TripleDes),
            (12, Some(k @ (128 | 192 | 256))) => Some(Encryption::AesCbc(k)),
            (20, Some(k @ (128 | 192 | 256))) => Some(Encryption::AesGcm16(k)),
            (28, None) => Some(Encryption::ChaCha20Poly1305),
            _ => None,
        }
    }

    /// As a transform.
    pub fn transform(self) -> Transform {
        let (id, key_len) = match self {
            Encryption::TripleDes => (3, None),
            Encryption::AesCbc(k) => (12, Some(k)),
            Encryption::AesGcm16(k) => (20, Some(k)),
            Encryption::ChaCha20Poly1305 => (28, None),
        };
        Transform {
            kind: transform_type::ENCR,
            id,
            key_len,
        }
    }

    /// Combined-mode (AEAD) ciphers need no integrity transform.
    pub fn is_aead(self) -> bool {
        matches!(self, Encryption::AesGcm16(_) | Encryption::ChaCha20Poly1305)
    }

    /// Key material length in bytes, including the salt of AEAD ciphers (RFC 5282 §7.1, RFC 7634 §2).
    pub fn key_material_len(self) -> usize {
        match self {
            Encryption::TripleDes => 24,
            Encryption::AesCbc(k) => usize::from(k / 8),
            Encryption::AesGcm16(k) => usize::from(k / 8) + 4,
            Encryption::ChaCha20Poly1305 => 36,
        }
    }

    /// strongSwan-style name.
    pub fn name(self) -> String {
        match self {
            Encryption::TripleDes => "3DES_CBC".into(),
            Encryption::AesCbc(k) => format!("AES_CBC_{k}"),
            Encryption::AesGcm16(k) => format!("AES_GCM_16_{k}"),
            Encryption::ChaCha20Poly1305 => "CHACHA20_POLY1305".into(),
        }
    }
}

/// Integrity transforms (IANA "Transform Type 3").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Integrity {
    /// AUTH_HMAC_SHA1_96.
    HmacSha1_96,
    /// AUTH_HMAC_SHA2_256_128 (RFC 4868).
    HmacSha256_128,
    /// AUTH_HMAC_SHA2_384_192.
    HmacSha384_192,
    /// AUTH_HMAC_SHA2_512_256.
    HmacSha512_256,
}

impl Integrity {
    /// From a transform id.
    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            2 => Some(Integrity::HmacSha1_96),
            12 => Some(Integrity::HmacSha256_128),
            13 => Some(Integrity::HmacSha384_192),
            14 => Some(Integrity::HmacSha512_256),
            _ => None,
        }
    }

    /// The transform id.
    pub fn id(self) -> u16 {
        match self {
            Integrity::HmacSha1_96 => 2,
            Integrity::HmacSha256_128 => 12,
            Integrity::HmacSha384_192 => 13,
            Integrity::HmacSha512_256 => 14,
        }
    }

    fn algorithm(self) -> hmac::Algorithm {
        match self {
            Integrity::HmacSha1_96 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Integrity::HmacSha256_128 => hmac::HMAC_SHA256,
            Integrity::HmacSha384_192 => hmac::HMAC_SHA384,
            Integrity::HmacSha512_256 => hmac::HMAC_SHA512,
        }
    }

    /// Key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Integrity::HmacSha1_96 => 20,
            Integrity::HmacSha256_128 => 32,
            Integrity::HmacSha384_192 => 48,
            Integrity::HmacSha512_256 => 64,
        }
    }

    /// ICV length in bytes.
    pub fn icv_len(self) -> usize {
        match self {
            Integrity::HmacSha1_96 => 12,
            Integrity::HmacSha256_128 => 16,
            Integrity::HmacSha384_192 => 24,
            Integrity::HmacSha512_256 => 32,
        }
    }

    /// strongSwan-style name.
    pub fn name(self) -> &'static str {
        match self {
            Integrity::HmacSha1_96 => "HMAC_SHA1_96",
            Integrity::HmacSha256_128 => "HMAC_SHA2_256_128",
            Integrity::HmacSha384_192 => "HMAC_SHA2_384_192",
            Integrity::HmacSha512_256 => "HMAC_SHA2_512_256",
        }
    }
}

/// Pseudo-random functions (IANA "Transform Type 2").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prf {
    /// PRF_HMAC_SHA1.
    HmacSha1,
    /// PRF_HMAC_SHA2_256.
    HmacSha256,
    /// PRF_HMAC_SHA2_384.
    HmacSha384,
    /// PRF_HMAC_SHA2_512.
    HmacSha512,
}

impl Prf {
    /// From a transform id.
    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            2 => Some(Prf::HmacSha1),
            5 => Some(Prf::HmacSha256),
            6 => Some(Prf::HmacSha384),
            7 => Some(Prf::HmacSha512),
            _ => None,
        }
    }

    /// The transform id.
    pub fn id(self) -> u16 {
        match self {
            Prf::HmacSha1 => 2,
            Prf::HmacSha256 => 5,
            Prf::HmacSha384 => 6,
            Prf::HmacSha512 => 7,
        }
    }

    fn algorithm(self) -> hmac::Algorithm {
        match self {
            Prf::HmacSha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Prf::HmacSha256 => hmac::HMAC_SHA256,
            Prf::HmacSha384 => hmac::HMAC_SHA384,
            Prf::HmacSha512 => hmac::HMAC_SHA512,
        }
    }

    /// Output (and preferred key) length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Prf::HmacSha1 => 20,
            Prf::HmacSha256 => 32,
            Prf::HmacSha384 => 48,
            Prf::HmacSha512 => 64,
        }
    }

    /// prf(key, data).
    pub fn compute(self, key: &[u8], data: &[&[u8]]) -> Secret {
        let key = hmac::Key::new(self.algorithm(), key);
        let mut ctx = hmac::Context::with_key(&key);
        for d in data {
            ctx.update(d);
        }
        Zeroizing::new(ctx.sign().as_ref().to_vec())
    }

    /// prf+ (§2.13): T1 | T2 | ... truncated to `len` bytes.
    pub fn plus(self, key: &[u8], seed: &[u8], len: usize) -> Secret {
        let mut out = Zeroizing::new(Vec::with_capacity(len + self.output_len()));
        let mut last: Secret = Zeroizing::new(Vec::new());
        let mut counter = 1u8;
        while out.len() < len {
            last = self.compute(key, &[&last, seed, &[counter]]);
            out.extend_from_slice(&last);
            counter = counter.wrapping_add(1);
        }
        out.truncate(len);
        out
    }

    /// strongSwan-style name.
    pub fn name(self) -> &'static str {
        match self {
            Prf::HmacSha1 => "PRF_HMAC_SHA1",
            Prf::HmacSha256 => "PRF_HMAC_SHA2_256",
            Prf::HmacSha384 => "PRF_HMAC_SHA2_384",
            Prf::HmacSha512 => "PRF_HMAC_SHA2_512",
        }
    }
}

/// Diffie-Hellman groups (IANA "Transform Type 4").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DhGroup {
    /// 1024-bit MODP (group 2, legacy).
    Modp1024,
    /// 2048-bit MODP (group 14).
    Modp2048,
    /// 256-bit random ECP (group 19, RFC 5903).
    Ecp256,
    /// 384-bit random ECP (group 20).
    Ecp384,
    /// Curve25519 (group 31, RFC 8031).
    Curve25519,
}

impl DhGroup {
    /// From a group number.
    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            2 => Some(DhGroup::Modp1024),
            14 => Some(DhGroup::Modp2048),
            19 => Some(DhGroup::Ecp256),
            20 => Some(DhGroup::Ecp384),
            31 => Some(DhGroup::Curve25519),
            _ => None,
        }
    }

    /// The group number.
    pub fn id(self) -> u16 {
        match self {
            DhGroup::Modp1024 => 2,
            DhGroup::Modp2048 => 14,
            DhGroup::Ecp256 => 19,
            DhGroup::Ecp384 => 20,
            DhGroup::Curve25519 => 31,
        }
    }

    /// strongSwan-style name.
    pub fn name(self) -> &'static str {
        match self {
            DhGroup::Modp1024 => "MODP_1024",
            DhGroup::Modp2048 => "MODP_2048",
            DhGroup::Ecp256 => "ECP_256",
            DhGroup::Ecp384 => "ECP_384",
            DhGroup::Curve25519 => "CURVE_25519",
        }
    }
}

/// Fills `buf` from the system's CSPRNG.
pub fn random(buf: &mut [u8]) {
    // The system RNG failing is not recoverable; aws-lc aborts in that case too.
    rand::fill(buf).expect("system random number generator failed");
}

/// A random non-zero 64-bit SPI.
pub fn random_spi64() -> u64 {
    loop {
        let mut b = [0u8; 8];
        random(&mut b);
        let v = u64::from_be_bytes(b);
        if v != 0 {
            return v;
        }
    }
}

/// A random ESP SPI above 255 (RFC 4303 §2.1 reserves 1-255).
pub fn random_spi32() -> u32 {
    loop {
        let mut b = [0u8; 4];
        random(&mut b);
        let v = u32::from_be_bytes(b);
        if v > 255 {
            return v;
        }
    }
}

mod modp {
    use crypto_bigint::modular::{FixedMontyForm, FixedMontyParams};
    use crypto_bigint::{Odd, U1024, U2048};

    /// RFC 3526 §3 (group 14) prime.
    const P2048: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF";
    /// RFC 2409 §6.2 (group 2) prime.
    const P1024: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF";

    macro_rules! modp_impl {
        ($name:ident, $uint:ty, $prime:ident, $bytes:expr) => {
            /// g^x mod p, and the validity check 1 < y < p-1 (RFC 6989 §2.1).
            pub struct $name;
            impl $name {
                fn params() -> FixedMontyParams<{ <$uint>::LIMBS }> {
                    let p = <$uint>::from_be_hex($prime);
                    FixedMontyParams::new(Odd::new(p).expect("MODP primes are odd"))
                }
                /// `base^exp mod p` as big-endian bytes of the group's length.
                pub fn pow(base: &[u8], exp: &[u8]) -> Option<Vec<u8>> {
                    if base.len() != $bytes || exp.len() > $bytes {
                        return None;
                    }
                    let params = Self::params();
                    let p = <$uint>::from_be_hex($prime);
                    let b = <$uint>::from_be_slice(base);
                    let one = <$uint>::ONE;
                    let p_minus_1 = p.wrapping_sub(&one);
                    if b <= one || b >= p_minus_1 {
                        return None;
                    }
                    let mut e = [0u8; $bytes];
                    e[$bytes - exp.len()..].copy_from_slice(exp);
                    let x = <$uint>::from_be_slice(&e);
                    let r = FixedMontyForm::new(&b, &params).pow(&x).retrieve();
                    Some(r.to_be_bytes().as_ref().to_vec())
                }
                /// The generator 2 as group-length bytes.
                pub fn generator() -> Vec<u8> {
                    let mut g = vec![0u8; $bytes];
                    g[$bytes - 1] = 2;
                    g
                }
            }
        };
    }
    modp_impl!(Modp2048, U2048, P2048, 256);
    modp_impl!(Modp1024, U1024, P1024, 128);

    /// Our public value g^x (base 2 always passes the range check).
    pub fn public(group_bytes: usize, secret: &[u8]) -> Option<Vec<u8>> {
        match group_bytes {
            256 => Modp2048::pow(&Modp2048::generator(), secret),
            128 => Modp1024::pow(&Modp1024::generator(), secret),
            _ => None,
        }
    }
}

/// Our half of a Diffie-Hellman exchange.
pub enum DhPrivate {
    /// MODP: the secret exponent and the group length.
    Modp {
        /// Group.
        group: DhGroup,
        /// Secret exponent.
        secret: Secret,
    },
    /// ECP or Curve25519 through aws-lc-rs.
    Agreement {
        /// Group.
        group: DhGroup,
        /// The ephemeral key.
        key: agreement::PrivateKey,
    },
}

impl fmt::Debug for DhPrivate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DhPrivate({})", self.group().name())
    }
}

impl DhPrivate {
    /// Generates a key pair; returns it with the public value as the KE payload carries it.
    pub fn generate(group: DhGroup) -> Result<(DhPrivate, Vec<u8>), CryptoError> {
        match group {
            DhGroup::Modp1024 | DhGroup::Modp2048 => {
                let bytes = if group == DhGroup::Modp2048 { 256 } else { 128 };
                // 2 × the symmetric strength is enough exponent (RFC 3526 §8); use 512 bits to be generous.
                let mut secret = Zeroizing::new(vec![0u8; 64]);
                random(&mut secret);
                let public = modp::public(bytes, &secret).ok_or(CryptoError::Unsupported)?;
                Ok((DhPrivate::Modp { group, secret }, public))
            }
            DhGroup::Ecp256 | DhGroup::Ecp384 | DhGroup::Curve25519 => {
                let alg = agreement_alg(group);
                let key =
                    agreement::PrivateKey::generate(alg).map_err(|_| CryptoError::Unsupported)?;
                let public = key
                    .compute_public_key()
                    .map_err(|_| CryptoError::Unsupported)?;
                let mut public = public.as_ref().to_vec();
                if group != DhGroup::Curve25519 {
                    // RFC 5903 §7: the KE payload carries x || y, without the 0x04 point-format byte.
                    public.remove(0);
                }
                Ok((DhPrivate::Agreement { group, key }, public))
            }
        }
    }

    /// The group.
    pub fn group(&self) -> DhGroup {
        match self {
            DhPrivate::Modp { group, .. } | DhPrivate::Agreement { group, .. } => *group,
        }
    }

    /// The shared secret g^ir with the peer's public value.
    pub fn agree(&self, peer: &[u8]) -> Result<Secret, CryptoError> {
        match self {
            DhPrivate::Modp { group, secret } => {
                let shared = match group {
                    DhGroup::Modp2048 => modp::Modp2048::pow(peer, secret),
                    _ => modp::Modp1024::pow(peer, secret),
                };
                shared
                    .map(Zeroizing::new)
                    .ok_or(CryptoError::InvalidPublicValue)
            }
            DhPrivate::Agreement { group, key } => {
                let alg = agreement_alg(*group);
                let mut encoded = Vec::with_capacity(peer.len() + 1);
                if *group != DhGroup::Curve25519 {
                    encoded.push(0x04);
                }
                encoded.extend_from_slice(peer);
                let peer = agreement::UnparsedPublicKey::new(alg, encoded);
                agreement::agree(key, peer, CryptoError::InvalidPublicValue, |s| {
                    Ok(Zeroizing::new(s.to_vec()))
                })
            }
        }
    }
}

fn agreement_alg(group: DhGroup) -> &'static agreement::Algorithm {
    match group {
        DhGroup::Ecp256 => &agreement::ECDH_P256,
        DhGroup::Ecp384 => &agreement::ECDH_P384,
        _ => &agreement::X25519,
    }
}

/// The negotiated IKE SA transforms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IkeSuite {
    /// Encryption.
    pub encryption: Encryption,
    /// Integrity (None for AEAD).
    pub integrity: Option<Integrity>,
    /// PRF.
    pub prf: Prf,
    /// DH group.
    pub dh: DhGroup,
}

impl fmt::Display for IkeSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.encryption.name())?;
        if let Some(i) = self.integrity {
            write!(f, "/{}", i.name())?;
        }
        write!(f, "/{}/{}", self.prf.name(), self.dh.name())
    }
}

/// The seven IKE SA keys (§2.14).
pub struct IkeKeys {
    /// SK_d: derives Child SA keys.
    pub d: Secret,
    /// SK_ai / SK_ar.
    pub ai: Secret,
    /// Responder integrity key.
    pub ar: Secret,
    /// SK_ei / SK_er.
    pub ei: Secret,
    /// Responder encryption key.
    pub er: Secret,
    /// SK_pi / SK_pr: used in AUTH.
    pub pi: Secret,
    /// Responder's AUTH key.
    pub pr: Secret,
}

impl fmt::Debug for IkeKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IkeKeys(<secret>)")
    }
}

impl IkeKeys {
    /// SKEYSEED = prf(Ni | Nr, g^ir); {SK_d, SK_ai, ...} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr) (§2.14).
    pub fn derive(
        suite: &IkeSuite,
        ni: &[u8],
        nr: &[u8],
        shared: &[u8],
        spi_i: u64,
        spi_r: u64,
    ) -> IkeKeys {
        let prf = suite.prf;
        // For a PRF with a fixed key size, the key is the nonces' halves (§2.14); HMAC takes any length.
        let seed_key = [ni, nr].concat();
        let skeyseed = prf.compute(&seed_key, &[shared]);
        Self::from_skeyseed(suite, &skeyseed, ni, nr, spi_i, spi_r)
    }

    /// Rekeyed IKE SA (§2.18): SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr).
    pub fn derive_rekey(
        suite: &IkeSuite,
        old_d: &[u8],
        shared: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
    ) -> IkeKeys {
        let skeyseed = suite.prf.compute(old_d, &[shared, ni, nr]);
        Self::from_skeyseed(suite, &skeyseed, ni, nr, spi_i, spi_r)
    }

    fn from_skeyseed(
        suite: &IkeSuite,
        skeyseed: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
    ) -> IkeKeys {
        let prf = suite.prf;
        let integ = suite.integrity.map_or(0, Integrity::key_len);
        let encr = suite.encryption.key_material_len();
        let p = prf.output_len();
        let seed = [ni, nr, &spi_i.to_be_bytes(), &spi_r.to_be_bytes()].concat();
        let total = p + 2 * integ + 2 * encr + 2 * p;
        let km = prf.plus(skeyseed, &seed, total);
        let mut at = 0;
        let mut next = |n: usize| {
            let v = Zeroizing::new(km[at..at + n].to_vec());
            at += n;
            v
        };
        IkeKeys {
            d: next(p),
            ai: next(integ),
            ar: next(integ),
            ei: next(encr),
            er: next(encr),
            pi: next(p),
            pr: next(p),
        }
    }
}

/// Child SA key material (§2.17): KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr), in the order
/// initiator→responder encryption, integrity, then responder→initiator.
pub fn child_keymat(
    prf: Prf,
    sk_d: &[u8],
    shared: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
    len: usize,
) -> Secret {
    let seed = [shared.unwrap_or_default(), ni, nr].concat();
    prf.plus(sk_d, &seed, len)
}

/// The octets a signature AUTH covers (§2.15): the sender's first message | the peer's nonce |
/// prf(SK_p, ID payload body) — InitiatorSignedOctets or ResponderSignedOctets.
pub fn signed_octets(
    prf: Prf,
    first_message: &[u8],
    peer_nonce: &[u8],
    sk_p: &[u8],
    id_body: &[u8],
) -> Vec<u8> {
    let maced_id = prf.compute(sk_p, &[id_body]);
    [first_message, peer_nonce, &maced_id].concat()
}

/// The PSK AUTH value (§2.15): prf(prf(Shared Secret, "Key Pad for IKEv2"), `<SignedOctets>`), where
/// SignedOctets = the sender's first message | the peer's nonce | prf(SK_p, ID payload body).
pub fn psk_auth(
    prf: Prf,
    psk: &[u8],
    first_message: &[u8],
    peer_nonce: &[u8],
    sk_p: &[u8],
    id_body: &[u8],
) -> Secret {
    let key = prf.compute(psk, &[b"Key Pad for IKEv2"]);
    let maced_id = prf.compute(sk_p, &[id_body]);
    prf.compute(&key, &[first_message, peer_nonce, &maced_id])
}

/// Protects and unprotects SK payloads in one direction (§3.14).
pub struct SkCipher {
    encryption: Encryption,
    integrity: Option<Integrity>,
    enc_key: Secret,
    integ_key: Secret,
}

impl fmt::Debug for SkCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SkCipher({})", self.encryption.name())
    }
}

const AEAD_IV: usize = 8;
const AEAD_TAG: usize = 16;

impl SkCipher {
    /// A cipher from the negotiated suite and this direction's keys.
    pub fn new(suite: &IkeSuite, enc_key: &[u8], integ_key: &[u8]) -> SkCipher {
        SkCipher {
            encryption: suite.encryption,
            integrity: suite.integrity,
            enc_key: Zeroizing::new(enc_key.to_vec()),
            integ_key: Zeroizing::new(integ_key.to_vec()),
        }
    }

    fn iv_len(&self) -> usize {
        if self.encryption.is_aead() {
            AEAD_IV
        } else {
            16
        }
    }

    fn icv_len(&self) -> usize {
        match self.integrity {
            Some(i) => i.icv_len(),
            None => AEAD_TAG,
        }
    }

    /// Bytes the SK payload adds around `plaintext_len` bytes of inner payloads.
    pub fn overhead(&self, plaintext_len: usize) -> usize {
        let block = if self.encryption.is_aead() { 1 } else { 16 };
        let padded = (plaintext_len + 1).div_ceil(block) * block;
        self.iv_len() + padded - plaintext_len + self.icv_len()
    }

    fn aead_key(&self) -> Result<(aead::LessSafeKey, [u8; 4]), CryptoError> {
        let (alg, key_len) = match self.encryption {
            Encryption::AesGcm16(128) => (&aead::AES_128_GCM, 16),
            Encryption::AesGcm16(256) => (&aead::AES_256_GCM, 32),
            Encryption::ChaCha20Poly1305 => (&aead::CHACHA20_POLY1305, 32),
            _ => return Err(CryptoError::Unsupported),
        };
        if self.enc_key.len() != key_len + 4 {
            return Err(CryptoError::Unsupported);
        }
        let key = aead::UnboundKey::new(alg, &self.enc_key[..key_len])
            .map_err(|_| CryptoError::Unsupported)?;
        let mut salt = [0u8; 4];
        salt.copy_from_slice(&self.enc_key[key_len..]);
        Ok((aead::LessSafeKey::new(key), salt))
    }

    /// Builds a complete protected message: `header_and_sk` holds the IKE header and the SK generic
    /// header (whose lengths must already cover the whole message); `plaintext` is the inner payload
    /// chain. Returns the message bytes.
    pub fn seal(&self, mut message: Vec<u8>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let iv_len = self.iv_len();
        let icv_len = self.icv_len();
        if self.encryption.is_aead() {
            // RFC 5282 §3: no padding needed, but the Pad Length byte is always present.
            let mut iv = [0u8; AEAD_IV];
            random(&mut iv);
            let (key, salt) = self.aead_key()?;
            let mut nonce = [0u8; 12];
            nonce[..4].copy_from_slice(&salt);
            nonce[4..].copy_from_slice(&iv);
            let mut buf = Vec::with_capacity(plaintext.len() + 1 + icv_len);
            buf.extend_from_slice(plaintext);
            buf.push(0);
            // RFC 5282 §5.1: AAD is the IKE header through the SK generic header, before the IV.
            let aad = message.clone();
            let tag = key
                .seal_in_place_separate_tag(
                    aead::Nonce::assume_unique_for_key(nonce),
                    aead::Aad::from(&aad),
                    &mut buf,
                )
                .map_err(|_| CryptoError::Unsupported)?;
            message.extend_from_slice(&iv);
            message.extend_from_slice(&buf);
            message.extend_from_slice(tag.as_ref());
        } else {
            let pad = 15 - (plaintext.len() % 16);
            let mut buf = Vec::with_capacity(plaintext.len() + pad + 1);
            buf.extend_from_slice(plaintext);
            buf.extend(std::iter::repeat_n(0u8, pad));
            buf.push(pad as u8);
            let mut iv = [0u8; 16];
            random(&mut iv);
            let alg = match self.encryption {
                Encryption::AesCbc(128) => &cipher::AES_128,
                Encryption::AesCbc(192) => return Err(CryptoError::Unsupported),
                Encryption::AesCbc(256) => &cipher::AES_256,
                _ => return Err(CryptoError::Unsupported),
            };
            let key = cipher::UnboundCipherKey::new(alg, &self.enc_key)
                .map_err(|_| CryptoError::Unsupported)?;
            let enc = cipher::EncryptingKey::cbc(key).map_err(|_| CryptoError::Unsupported)?;
            enc.less_safe_encrypt(
                &mut buf,
                cipher::EncryptionContext::Iv128(aws_lc_rs::iv::FixedLength::from(iv)),
            )
            .map_err(|_| CryptoError::Unsupported)?;
            message.extend_from_slice(&iv);
            message.extend_from_slice(&buf);
            let integ = self.integrity.ok_or(CryptoError::Unsupported)?;
            let key = hmac::Key::new(integ.algorithm(), &self.integ_key);
            let tag = hmac::sign(&key, &message);
            message.extend_from_slice(&tag.as_ref()[..icv_len]);
        }
        debug_assert_eq!(iv_len, if self.encryption.is_aead() { 8 } else { 16 });
        Ok(message)
    }

    /// Verifies and decrypts an SK payload. `authenticated` is the message from the IKE header up to
    /// the end of the SK generic header (the AAD, or the start of the MACed data); `body` is the SK
    /// payload body (IV || ciphertext || ICV). Returns the inner payload chain.
    pub fn open(&self, authenticated: &[u8], body: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let iv_len = self.iv_len();
        let icv_len = self.icv_len();
        if body.len() < iv_len + icv_len + 1 {
            return Err(CryptoError::Malformed);
        }
        let (iv, rest) = body.split_at(iv_len);
        let (ct, icv) = rest.split_at(rest.len() - icv_len);
        let mut plain = if self.encryption.is_aead() {
            let (key, salt) = self.aead_key()?;
            let mut nonce = [0u8; 12];
            nonce[..4].copy_from_slice(&salt);
            nonce[4..].copy_from_slice(iv);
            let mut buf = Vec::with_capacity(ct.len() + icv.len());
            buf.extend_from_slice(ct);
            buf.extend_from_slice(icv);
            let plain = key
                .open_in_place(
                    aead::Nonce::assume_unique_for_key(nonce),
                    aead::Aad::from(authenticated),
                    &mut buf,
                )
                .map_err(|_| CryptoError::IntegrityCheckFailed)?;
            plain.to_vec()
        } else {
            let integ = self.integrity.ok_or(CryptoError::Unsupported)?;
            let key = hmac::Key::new(integ.algorithm(), &self.integ_key);
            let mut ctx = hmac::Context::with_key(&key);
            ctx.update(authenticated);
            ctx.update(iv);
            ctx.update(ct);
            let tag = ctx.sign();
            aws_lc_rs::constant_time::verify_slices_are_equal(&tag.as_ref()[..icv_len], icv)
                .map_err(|_| CryptoError::IntegrityCheckFailed)?;
            if ct.is_empty() || ct.len() % 16 != 0 {
                return Err(CryptoError::Malformed);
            }
            let alg = match self.encryption {
                Encryption::AesCbc(128) => &cipher::AES_128,
                Encryption::AesCbc(256) => &cipher::AES_256,
                _ => return Err(CryptoError::Unsupported),
            };
            let key = cipher::UnboundCipherKey::new(alg, &self.enc_key)
                .map_err(|_| CryptoError::Unsupported)?;
            let dec = cipher::DecryptingKey::cbc(key).map_err(|_| CryptoError::Unsupported)?;
            let ivb: [u8; 16] = iv.try_into().map_err(|_| CryptoError::Malformed)?;
            let mut buf = ct.to_vec();
            dec.decrypt(
                &mut buf,
                cipher::DecryptionContext::Iv128(aws_lc_rs::iv::FixedLength::from(ivb)),
            )
            .map_err(|_| CryptoError::Malformed)?;
            buf
        };
        let pad = usize::from(*plain.last().ok_or(CryptoError::Malformed)?);
        if pad + 1 > plain.len() {
            return Err(CryptoError::Malformed);
        }
        plain.truncate(plain.len() - pad - 1);
        Ok(plain)
    }
}

/// NAT detection hash (§2.23): SHA-1(SPIi | SPIr | IP | port).
pub fn nat_detection_hash(spi_i: u64, spi_r: u64, addr: std::net::SocketAddr) -> Vec<u8> {
    use aws_lc_rs::digest;
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(&spi_i.to_be_bytes());
    ctx.update(&spi_r.to_be_bytes());
    match addr.ip() {
        std::net::IpAddr::V4(a) => ctx.update(&a.octets()),
        std::net::IpAddr::V6(a) => ctx.update(&a.octets()),
    }
    ctx.update(&addr.port().to_be_bytes());
    ctx.finish().as_ref().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dh_agrees_for_every_group() {
        for group in [
            DhGroup::Modp2048,
            DhGroup::Ecp256,
            DhGroup::Ecp384,
            DhGroup::Curve25519,
            DhGroup::Modp1024,
        ] {
            let (a, pa) = DhPrivate::generate(group).unwrap();
            let (b, pb) = DhPrivate::generate(group).unwrap();
            assert_eq!(*a.agree(&pb).unwrap(), *b.agree(&pa).unwrap(), "{group:?}");
        }
        let (a, _) = DhPrivate::generate(DhGroup::Modp2048).unwrap();
        let mut one = vec![0u8; 256];
        one[255] = 1;
        assert!(a.agree(&one).is_err(), "y = 1 must be refused");
        assert!(a.agree(&[1, 2, 3]).is_err());
    }

    #[test]
    fn sk_round_trip_every_cipher() {
        let suites = [
            (Encryption::AesGcm16(256), None),
            (Encryption::AesGcm16(128), None),
            (Encryption::ChaCha20Poly1305, None),
            (Encryption::AesCbc(256), Some(Integrity::HmacSha256_128)),
            (Encryption::AesCbc(128), Some(Integrity::HmacSha1_96)),
        ];
        for (encryption, integrity) in suites {
            let suite = IkeSuite {
                encryption,
                integrity,
                prf: Prf::HmacSha256,
                dh: DhGroup::Ecp256,
            };
            let keys = IkeKeys::derive(&suite, &[1; 32], &[2; 32], &[3; 32], 1, 2);
            let c = SkCipher::new(&suite, &keys.ei, &keys.ai);
            let header = vec![7u8; 32];
            let sealed = c.seal(header.clone(), b"inner payloads").unwrap();
            let body = &sealed[32..];
            assert_eq!(c.open(&header, body).unwrap(), b"inner payloads");
            let mut bad = body.to_vec();
            let n = bad.len();
            bad[n - 1] ^= 1;
            assert_eq!(
                c.open(&header, &bad),
                Err(CryptoError::IntegrityCheckFailed)
            );
        }
    }

    #[test]
    fn prf_plus_is_the_concatenation() {
        let out = Prf::HmacSha256.plus(b"key", b"seed", 70);
        let t1 = Prf::HmacSha256.compute(b"key", &[b"seed", &[1]]);
        let t2 = Prf::HmacSha256.compute(b"key", &[&t1, b"seed", &[2]]);
        assert_eq!(&out[..32], &t1[..]);
        assert_eq!(&out[32..64], &t2[..]);
        assert_eq!(out.len(), 70);
    }
}
