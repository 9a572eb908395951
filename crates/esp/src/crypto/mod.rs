//! ESP transforms: the [`Aead`] seal/open-in-place trait, the suites vgw negotiates, and how IKEv2
//! key material is laid out for them (RFC 4303 §3.2, RFC 4106, RFC 7634, RFC 3602, RFC 4868,
//! RFC 7296 §2.17).
//!
//! Combined-mode suites run on the AEAD library measured fastest for each (docs/performance.md):
//! AES-GCM-16 on `aws-lc-rs`, ChaCha20-Poly1305 on `ring`; the CBC + HMAC suites exist for interop
//! with older peers and run on `aws-lc-rs`, which has raw CBC. All sit behind [`Aead`], so the SA
//! code is the same for all.

mod cbc;
mod combined;

pub use cbc::CbcHmac;
pub use combined::CombinedAead;

use crate::Error;

/// Longest explicit IV of any suite: 16 bytes for AES-CBC (RFC 3602 §3).
pub const MAX_IV_LEN: usize = 16;
/// Longest ICV of any suite: 32 bytes for HMAC-SHA2-512-256 (RFC 4868 §2.3).
pub const MAX_ICV_LEN: usize = 32;
/// Largest padding alignment of any suite: the AES block (RFC 4303 §2.4).
pub const MAX_ALIGN: usize = 16;

/// Encryption transform (IKEv2 transform type 1, RFC 7296 §3.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Encryption {
    /// ENCR_AES_GCM_16 with a 128-bit key (RFC 4106): 4-byte salt, 8-byte IV, 16-byte ICV.
    AesGcm128,
    /// ENCR_AES_GCM_16 with a 256-bit key (RFC 4106).
    AesGcm256,
    /// ENCR_CHACHA20_POLY1305 (RFC 7634): 256-bit key, 4-byte salt, 8-byte IV, 16-byte ICV.
    ChaCha20Poly1305,
    /// ENCR_AES_CBC with a 128-bit key (RFC 3602); needs an [`Integrity`] algorithm.
    AesCbc128,
    /// ENCR_AES_CBC with a 256-bit key (RFC 3602); needs an [`Integrity`] algorithm.
    AesCbc256,
}

impl Encryption {
    /// IANA "Transform Type 1" number, as carried in IKEv2 proposals (RFC 7296 §3.3.2).
    pub const fn transform_id(self) -> u16 {
        match self {
            Encryption::AesGcm128 | Encryption::AesGcm256 => 20,
            Encryption::ChaCha20Poly1305 => 28,
            Encryption::AesCbc128 | Encryption::AesCbc256 => 12,
        }
    }

    /// Key length attribute in bits, where the transform has one (RFC 7296 §3.3.5).
    pub const fn key_bits(self) -> Option<u16> {
        match self {
            Encryption::AesGcm128 | Encryption::AesCbc128 => Some(128),
            Encryption::AesGcm256 | Encryption::AesCbc256 => Some(256),
            Encryption::ChaCha20Poly1305 => None,
        }
    }

    /// Whether this is a combined-mode (AEAD) transform, which takes no integrity algorithm.
    pub const fn is_combined(self) -> bool {
        matches!(
            self,
            Encryption::AesGcm128 | Encryption::AesGcm256 | Encryption::ChaCha20Poly1305
        )
    }

    /// Bytes of KEYMAT this transform takes: the key, plus the 4-byte salt for the combined
    /// modes (RFC 4106 §8.1, RFC 7634 §4).
    pub const fn keymat_len(self) -> usize {
        match self {
            Encryption::AesGcm128 => 16 + 4,
            Encryption::AesGcm256 | Encryption::ChaCha20Poly1305 => 32 + 4,
            Encryption::AesCbc128 => 16,
            Encryption::AesCbc256 => 32,
        }
    }

    const fn iv_len(self) -> usize {
        if self.is_combined() { 8 } else { 16 }
    }

    const fn align(self) -> usize {
        // RFC 4106 §3.2 and RFC 7634 §3 ask only for the 4-byte alignment of RFC 4303 §2.4;
        // CBC must fill whole blocks.
        if self.is_combined() { 4 } else { 16 }
    }
}

/// Integrity transform for the CBC suites (IKEv2 transform type 3, RFC 7296 §3.3.2).
///
/// The ICV is the HMAC truncated to half the hash (RFC 2404, RFC 4868).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Integrity {
    /// AUTH_HMAC_SHA1_96 (RFC 2404): 20-byte key, 12-byte ICV.
    HmacSha1,
    /// AUTH_HMAC_SHA2_256_128 (RFC 4868): 32-byte key, 16-byte ICV.
    HmacSha256,
    /// AUTH_HMAC_SHA2_384_192 (RFC 4868): 48-byte key, 24-byte ICV.
    HmacSha384,
    /// AUTH_HMAC_SHA2_512_256 (RFC 4868): 64-byte key, 32-byte ICV.
    HmacSha512,
}

impl Integrity {
    /// IANA "Transform Type 3" number (RFC 7296 §3.3.2).
    pub const fn transform_id(self) -> u16 {
        match self {
            Integrity::HmacSha1 => 2,
            Integrity::HmacSha256 => 12,
            Integrity::HmacSha384 => 13,
            Integrity::HmacSha512 => 14,
        }
    }

    /// Key length: the full hash output (RFC 2404 §3, RFC 4868 §2.1.1).
    pub const fn key_len(self) -> usize {
        match self {
            Integrity::HmacSha1 => 20,
            Integrity::HmacSha256 => 32,
            Integrity::HmacSha384 => 48,
            Integrity::HmacSha512 => 64,
        }
    }

    /// ICV length: the truncated HMAC.
    pub const fn icv_len(self) -> usize {
        match self {
            Integrity::HmacSha1 => 12,
            Integrity::HmacSha256 => 16,
            Integrity::HmacSha384 => 24,
            Integrity::HmacSha512 => 32,
        }
    }
}

/// A valid encryption + integrity pair, as selected in an IKEv2 Child SA proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Suite {
    encryption: Encryption,
    integrity: Option<Integrity>,
}

impl Suite {
    /// `aes128gcm16` (RFC 4106).
    pub const AES_GCM_128: Suite = Suite::combined(Encryption::AesGcm128);
    /// `aes256gcm16` (RFC 4106): strongSwan's and Azure's usual choice.
    pub const AES_GCM_256: Suite = Suite::combined(Encryption::AesGcm256);
    /// `chacha20poly1305` (RFC 7634).
    pub const CHACHA20_POLY1305: Suite = Suite::combined(Encryption::ChaCha20Poly1305);

    const fn combined(encryption: Encryption) -> Suite {
        Suite {
            encryption,
            integrity: None,
        }
    }

    /// Pairs an encryption and an integrity transform, refusing combinations RFC 4303 §3.2 and
    /// RFC 4106 §9 forbid: an AEAD with an integrity algorithm, or CBC without one.
    pub const fn new(encryption: Encryption, integrity: Option<Integrity>) -> Result<Suite, Error> {
        if encryption.is_combined() == integrity.is_none() {
            Ok(Suite {
                encryption,
                integrity,
            })
        } else {
            Err(Error::InvalidSuite)
        }
    }

    /// The encryption transform.
    pub const fn encryption(&self) -> Encryption {
        self.encryption
    }

    /// The integrity transform; `None` for combined-mode suites.
    pub const fn integrity(&self) -> Option<Integrity> {
        self.integrity
    }

    /// KEYMAT bytes for one direction: encryption key (with salt for AEADs), then integrity key.
    pub const fn keymat_len(&self) -> usize {
        let integ = match self.integrity {
            Some(i) => i.key_len(),
            None => 0,
        };
        self.encryption.keymat_len() + integ
    }

    /// Explicit IV bytes carried in every packet (RFC 4303 §2.3).
    pub const fn iv_len(&self) -> usize {
        self.encryption.iv_len()
    }

    /// ICV bytes at the end of every packet (RFC 4303 §2.8).
    pub const fn icv_len(&self) -> usize {
        match self.integrity {
            Some(i) => i.icv_len(),
            None => 16,
        }
    }

    /// Alignment the encrypted part (payload, padding, pad length, next header) is padded to
    /// (RFC 4303 §2.4).
    pub const fn align(&self) -> usize {
        self.encryption.align()
    }

    /// Splits Child SA KEYMAT into the initiator→responder and responder→initiator halves.
    ///
    /// RFC 7296 §2.17 takes keys from KEYMAT in this order: initiator-to-responder encryption key,
    /// then its integrity key, then the same two for responder-to-initiator (strongSwan does the
    /// same). Each half is what [`Suite::cipher`] expects. An initiator seals with the first half
    /// and opens with the second; a responder does the reverse.
    pub fn split_child_keymat<'k>(&self, keymat: &'k [u8]) -> Result<(&'k [u8], &'k [u8]), Error> {
        let half = self.keymat_len();
        if keymat.len() != 2 * half {
            return Err(Error::InvalidKeyLength {
                expected: 2 * half,
                got: keymat.len(),
            });
        }
        Ok(keymat.split_at(half))
    }

    /// Builds the transform for one direction from its KEYMAT: the encryption key (followed by
    /// the 4-byte salt for AES-GCM and ChaCha20-Poly1305, RFC 4106 §8.1, RFC 7634 §4), then the
    /// integrity key for CBC suites.
    pub fn cipher(&self, keymat: &[u8]) -> Result<Cipher, Error> {
        if keymat.len() != self.keymat_len() {
            return Err(Error::InvalidKeyLength {
                expected: self.keymat_len(),
                got: keymat.len(),
            });
        }
        match self.integrity {
            None => CombinedAead::new(self.encryption, keymat).map(Cipher::Combined),
            Some(integ) => {
                let (enc, auth) = keymat.split_at(self.encryption.keymat_len());
                CbcHmac::new(self.encryption, integ, enc, auth)
                    .map(|c| Cipher::CbcHmac(Box::new(c)))
            }
        }
    }
}

impl core::fmt::Display for Suite {
    /// strongSwan's proposal keyword (`aes256gcm16`, `aes128-sha256`), which operators know.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let enc = match self.encryption {
            Encryption::AesGcm128 => "aes128gcm16",
            Encryption::AesGcm256 => "aes256gcm16",
            Encryption::ChaCha20Poly1305 => "chacha20poly1305",
            Encryption::AesCbc128 => "aes128",
            Encryption::AesCbc256 => "aes256",
        };
        f.write_str(enc)?;
        match self.integrity {
            None => Ok(()),
            Some(Integrity::HmacSha1) => f.write_str("-sha1"),
            Some(Integrity::HmacSha256) => f.write_str("-sha256"),
            Some(Integrity::HmacSha384) => f.write_str("-sha384"),
            Some(Integrity::HmacSha512) => f.write_str("-sha512"),
        }
    }
}

/// The ESP header fields a transform authenticates (RFC 4303 §2.1, §2.2.1).
///
/// Without ESN only the low 32 bits of `seq` are on the wire and authenticated; with ESN the high
/// 32 bits are authenticated too, though never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthData {
    /// Security Parameters Index.
    pub spi: u32,
    /// Full 64-bit sequence number.
    pub seq: u64,
    /// Whether Extended Sequence Numbers were negotiated for this SA.
    pub esn: bool,
}

impl AuthData {
    /// The 8 header bytes as on the wire: SPI, then low 32 bits of the sequence number.
    pub fn header(&self) -> [u8; 8] {
        let mut h = [0u8; 8];
        h[..4].copy_from_slice(&self.spi.to_be_bytes());
        h[4..].copy_from_slice(&(self.seq as u32).to_be_bytes());
        h
    }

    /// AEAD associated data: SPI || seq, or SPI || seq_hi || seq_lo with ESN (RFC 4106 §5,
    /// RFC 7634 §2.2). Returns the buffer and how many bytes of it are used.
    pub fn aead_aad(&self) -> ([u8; 12], usize) {
        let mut aad = [0u8; 12];
        aad[..4].copy_from_slice(&self.spi.to_be_bytes());
        if self.esn {
            aad[4..].copy_from_slice(&self.seq.to_be_bytes());
            (aad, 12)
        } else {
            aad[4..8].copy_from_slice(&(self.seq as u32).to_be_bytes());
            (aad, 8)
        }
    }
}

/// Seal and open one ESP payload in place, on buffers the caller owns (no allocation).
///
/// The SA code lays out `SPI | seq | IV | payload+padding+trailer | ICV` and hands the transform
/// the pieces; the transform fills the IV and ICV and encrypts or decrypts `payload` in place.
pub trait Aead {
    /// Explicit IV length in bytes (RFC 4303 §2.3).
    fn iv_len(&self) -> usize;
    /// ICV length in bytes (RFC 4303 §2.8).
    fn icv_len(&self) -> usize;
    /// Alignment the encrypted part must reach (RFC 4303 §2.4).
    fn align(&self) -> usize;
    /// Encrypts `payload` in place and writes the explicit IV and the ICV.
    ///
    /// `payload` already holds the padding and trailer and is a multiple of [`Aead::align`];
    /// `iv` and `icv` have exactly [`Aead::iv_len`] and [`Aead::icv_len`] bytes.
    fn seal(
        &self,
        auth: AuthData,
        iv: &mut [u8],
        payload: &mut [u8],
        icv: &mut [u8],
    ) -> Result<(), Error>;
    /// Verifies the ICV, then decrypts `payload` in place (RFC 4303 §3.4.4: ICV before decryption).
    ///
    /// Fails with [`Error::AuthenticationFailed`]; `payload` is then garbage.
    fn open(&self, auth: AuthData, iv: &[u8], payload: &mut [u8], icv: &[u8]) -> Result<(), Error>;
}

/// Any supported transform; an enum rather than a trait object so the hot path dispatches
/// without a vtable and an SA needs no allocation besides its own.
// The AEAD variant (up to ring's key schedule, ~560 bytes) is the hot path and stays inline on purpose;
// the larger CBC state is boxed instead.
#[allow(clippy::large_enum_variant)]
pub enum Cipher {
    /// AES-GCM-16 (on `aws-lc-rs`) or ChaCha20-Poly1305 (on `ring`).
    Combined(CombinedAead),
    /// AES-CBC with an HMAC on `aws-lc-rs`, boxed: its three key schedules and HMAC state would
    /// otherwise make every SA larger.
    CbcHmac(Box<CbcHmac>),
}

impl Cipher {
    /// The suite this transform implements.
    pub fn suite(&self) -> Suite {
        match self {
            Cipher::Combined(c) => Suite::combined(c.encryption()),
            Cipher::CbcHmac(c) => Suite {
                encryption: c.encryption(),
                integrity: Some(c.integrity()),
            },
        }
    }
}

impl core::fmt::Debug for Cipher {
    // Only the algorithm names: key schedules must never reach a log.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let suite = self.suite();
        f.debug_struct("Cipher")
            .field("encryption", &suite.encryption)
            .field("integrity", &suite.integrity)
            .finish_non_exhaustive()
    }
}

impl Aead for Cipher {
    #[inline]
    fn iv_len(&self) -> usize {
        match self {
            Cipher::Combined(c) => c.iv_len(),
            Cipher::CbcHmac(c) => c.iv_len(),
        }
    }

    #[inline]
    fn icv_len(&self) -> usize {
        match self {
            Cipher::Combined(c) => c.icv_len(),
            Cipher::CbcHmac(c) => c.icv_len(),
        }
    }

    #[inline]
    fn align(&self) -> usize {
        match self {
            Cipher::Combined(c) => c.align(),
            Cipher::CbcHmac(c) => c.align(),
        }
    }

    #[inline]
    fn seal(
        &self,
        auth: AuthData,
        iv: &mut [u8],
        payload: &mut [u8],
        icv: &mut [u8],
    ) -> Result<(), Error> {
        match self {
            Cipher::Combined(c) => c.seal(auth, iv, payload, icv),
            Cipher::CbcHmac(c) => c.seal(auth, iv, payload, icv),
        }
    }

    #[inline]
    fn open(&self, auth: AuthData, iv: &[u8], payload: &mut [u8], icv: &[u8]) -> Result<(), Error> {
        match self {
            Cipher::Combined(c) => c.open(auth, iv, payload, icv),
            Cipher::CbcHmac(c) => c.open(auth, iv, payload, icv),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_reject_bad_pairs() {
        assert_eq!(
            Suite::new(Encryption::AesGcm256, Some(Integrity::HmacSha256)),
            Err(Error::InvalidSuite)
        );
        assert_eq!(
            Suite::new(Encryption::AesCbc128, None),
            Err(Error::InvalidSuite)
        );
        assert!(Suite::new(Encryption::AesCbc256, Some(Integrity::HmacSha512)).is_ok());
    }

    #[test]
    fn keymat_lengths_follow_rfc_7296_2_17() {
        assert_eq!(Suite::AES_GCM_256.keymat_len(), 36);
        assert_eq!(Suite::AES_GCM_128.keymat_len(), 20);
        assert_eq!(Suite::CHACHA20_POLY1305.keymat_len(), 36);
        let cbc = Suite::new(Encryption::AesCbc256, Some(Integrity::HmacSha256)).unwrap();
        assert_eq!(cbc.keymat_len(), 64);
        let keymat = [7u8; 128];
        let (i2r, r2i) = cbc.split_child_keymat(&keymat).unwrap();
        assert_eq!((i2r.len(), r2i.len()), (64, 64));
        assert!(cbc.split_child_keymat(&keymat[..100]).is_err());
    }

    #[test]
    fn suites_print_as_strongswan_keywords() {
        assert_eq!(Suite::AES_GCM_256.to_string(), "aes256gcm16");
        let cbc = Suite::new(Encryption::AesCbc128, Some(Integrity::HmacSha256)).unwrap();
        assert_eq!(cbc.to_string(), "aes128-sha256");
    }

    #[test]
    fn sas_can_move_to_worker_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Cipher>();
        send_sync::<crate::OutboundSa>();
        send_sync::<crate::InboundSa>();
        send_sync::<crate::InboundSaTable>();
    }

    #[test]
    fn esn_aad_carries_high_bits() {
        let a = AuthData {
            spi: 0x0102_0304,
            seq: 0x0000_0005_0000_0006,
            esn: true,
        };
        let (aad, n) = a.aead_aad();
        assert_eq!(&aad[..n], &[1, 2, 3, 4, 0, 0, 0, 5, 0, 0, 0, 6]);
        let (aad, n) = AuthData { esn: false, ..a }.aead_aad();
        assert_eq!(&aad[..n], &[1, 2, 3, 4, 0, 0, 0, 6]);
        assert_eq!(a.header(), [1, 2, 3, 4, 0, 0, 0, 6]);
    }
}
