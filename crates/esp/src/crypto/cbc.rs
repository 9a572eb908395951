//! AES-CBC (RFC 3602) with HMAC-SHA1-96 (RFC 2404) or HMAC-SHA2 (RFC 4868), on `aws-lc-rs`.
//!
//! Encrypt-then-MAC as RFC 4303 §3.3.2 orders it: the ICV covers SPI, sequence number, IV and
//! ciphertext, plus the unsent high 32 sequence bits at the end when ESN is on (§2.2.1,
//! §3.3.2.1). On receive the ICV is checked, in constant time, before anything is decrypted.
//!
//! The IV must be unpredictable (RFC 3602 §2.4). Rather than draw from an RNG per packet, we
//! encrypt a block holding the 64-bit sequence number with the SA's own key, the first method of
//! NIST SP 800-38A Appendix C: unique because the sequence number never repeats under a key,
//! unpredictable without the key, and deterministic, which keeps the engine sans-IO.

use aws_lc_rs::cipher::{
    AES_128, AES_256, DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext,
    UnboundCipherKey,
};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;

use super::{Aead, AuthData, Encryption, Integrity};
use crate::Error;

const BLOCK: usize = 16;
/// Fills the first half of the IV-generation block so it is never a sequence number alone.
const IV_DOMAIN: [u8; 8] = *b"vgw-esp\x01";

/// AES-CBC + HMAC for one direction of one SA. aws-lc-rs zeroizes its key schedules on drop.
pub struct CbcHmac {
    encrypt: EncryptingKey,
    decrypt: DecryptingKey,
    iv_gen: EncryptingKey,
    mac: hmac::Key,
    encryption: Encryption,
    integrity: Integrity,
}

impl core::fmt::Debug for CbcHmac {
    // The algorithms only: keys must never reach a log.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CbcHmac")
            .field("encryption", &self.encryption)
            .field("integrity", &self.integrity)
            .finish_non_exhaustive()
    }
}

impl CbcHmac {
    /// Builds the transform from the encryption key and the integrity key (RFC 7296 §2.17 order:
    /// encryption key first).
    pub fn new(
        encryption: Encryption,
        integrity: Integrity,
        enc_key: &[u8],
        auth_key: &[u8],
    ) -> Result<Self, Error> {
        let algorithm = match encryption {
            Encryption::AesCbc128 => &AES_128,
            Encryption::AesCbc256 => &AES_256,
            _ => return Err(Error::InvalidSuite),
        };
        if enc_key.len() != encryption.keymat_len() {
            return Err(Error::InvalidKeyLength {
                expected: encryption.keymat_len(),
                got: enc_key.len(),
            });
        }
        if auth_key.len() != integrity.key_len() {
            return Err(Error::InvalidKeyLength {
                expected: integrity.key_len(),
                got: auth_key.len(),
            });
        }
        let unbound = || UnboundCipherKey::new(algorithm, enc_key).map_err(|_| Error::Crypto);
        let mac_alg = match integrity {
            Integrity::HmacSha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Integrity::HmacSha256 => hmac::HMAC_SHA256,
            Integrity::HmacSha384 => hmac::HMAC_SHA384,
            Integrity::HmacSha512 => hmac::HMAC_SHA512,
        };
        Ok(CbcHmac {
            encrypt: EncryptingKey::cbc(unbound()?).map_err(|_| Error::Crypto)?,
            decrypt: DecryptingKey::cbc(unbound()?).map_err(|_| Error::Crypto)?,
            iv_gen: EncryptingKey::ecb(unbound()?).map_err(|_| Error::Crypto)?,
            mac: hmac::Key::new(mac_alg, auth_key),
            encryption,
            integrity,
        })
    }

    /// The CBC key size.
    pub fn encryption(&self) -> Encryption {
        self.encryption
    }

    /// The HMAC in use.
    pub fn integrity(&self) -> Integrity {
        self.integrity
    }

    fn icv(&self, auth: AuthData, iv: &[u8], ciphertext: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.mac);
        ctx.update(&auth.header());
        ctx.update(iv);
        ctx.update(ciphertext);
        if auth.esn {
            ctx.update(&((auth.seq >> 32) as u32).to_be_bytes());
        }
        ctx.sign()
    }
}

impl Aead for CbcHmac {
    #[inline]
    fn iv_len(&self) -> usize {
        BLOCK
    }

    #[inline]
    fn icv_len(&self) -> usize {
        self.integrity.icv_len()
    }

    #[inline]
    fn align(&self) -> usize {
        BLOCK
    }

    fn seal(
        &self,
        auth: AuthData,
        iv: &mut [u8],
        payload: &mut [u8],
        icv: &mut [u8],
    ) -> Result<(), Error> {
        if iv.len() != BLOCK || icv.len() != self.icv_len() {
            return Err(Error::BufferTooSmall);
        }
        if !payload.len().is_multiple_of(BLOCK) {
            return Err(Error::Malformed);
        }
        let mut block = [0u8; BLOCK];
        block[..8].copy_from_slice(&IV_DOMAIN);
        block[8..].copy_from_slice(&auth.seq.to_be_bytes());
        self.iv_gen
            .less_safe_encrypt(&mut block, EncryptionContext::None)
            .map_err(|_| Error::Crypto)?;
        iv.copy_from_slice(&block);
        self.encrypt
            .less_safe_encrypt(payload, EncryptionContext::Iv128(FixedLength::from(block)))
            .map_err(|_| Error::Crypto)?;
        let tag = self.icv(auth, iv, payload);
        icv.copy_from_slice(&tag.as_ref()[..icv.len()]);
        Ok(())
    }

    fn open(&self, auth: AuthData, iv: &[u8], payload: &mut [u8], icv: &[u8]) -> Result<(), Error> {
        let iv: [u8; BLOCK] = iv.try_into().map_err(|_| Error::Truncated)?;
        if icv.len() != self.icv_len() {
            return Err(Error::Truncated);
        }
        let tag = self.icv(auth, &iv, payload);
        verify_slices_are_equal(&tag.as_ref()[..icv.len()], icv)
            .map_err(|_| Error::AuthenticationFailed)?;
        if !payload.len().is_multiple_of(BLOCK) {
            return Err(Error::Malformed);
        }
        self.decrypt
            .decrypt(payload, DecryptionContext::Iv128(FixedLength::from(iv)))
            .map(|_| ())
            .map_err(|_| Error::Crypto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 3602 §4, case #2: AES-128-CBC, 32 bytes, so the raw unpadded CBC path is right.
    #[test]
    fn rfc3602_case_2() {
        let key = hex("c286696d887c9aa0611bbb3e2025a45a");
        let iv = hex("562e17996d093d28ddb3ba695a2e6f58");
        let pt = hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
        let ct = hex("d296cd94c2cccf8a3a863028b5e1dc0a7586602d253cfff91b8266bea6d61ab1");
        let c = CbcHmac::new(Encryption::AesCbc128, Integrity::HmacSha1, &key, &[0; 20]).unwrap();
        let mut buf = pt.clone();
        let iv16: [u8; 16] = iv.as_slice().try_into().unwrap();
        c.encrypt
            .less_safe_encrypt(&mut buf, EncryptionContext::Iv128(FixedLength::from(iv16)))
            .unwrap();
        assert_eq!(buf, ct);
    }

    /// RFC 4231 test case 2 ("Jefe"), so each HMAC is keyed and truncated as RFC 4868 says.
    #[test]
    fn rfc4231_case_2_hmacs() {
        let data = b"what do ya want for nothing?";
        let full256 = hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        let full512 = hex(
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554
             9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
        );
        for (alg, full) in [(hmac::HMAC_SHA256, &full256), (hmac::HMAC_SHA512, &full512)] {
            let key = hmac::Key::new(alg, b"Jefe");
            assert_eq!(hmac::sign(&key, data).as_ref(), &full[..]);
        }
    }

    #[test]
    fn seal_open_and_tamper_every_integrity() {
        for enc in [Encryption::AesCbc128, Encryption::AesCbc256] {
            for integ in [
                Integrity::HmacSha1,
                Integrity::HmacSha256,
                Integrity::HmacSha384,
                Integrity::HmacSha512,
            ] {
                let ek = vec![0x11; enc.keymat_len()];
                let ak = vec![0x22; integ.key_len()];
                let c = CbcHmac::new(enc, integ, &ek, &ak).unwrap();
                let auth = AuthData {
                    spi: 0x4242,
                    seq: 0x2_0000_0001,
                    esn: true,
                };
                let mut iv = [0u8; 16];
                let mut icv = vec![0u8; integ.icv_len()];
                let plain = [0xabu8; 48];
                let mut payload = plain;
                c.seal(auth, &mut iv, &mut payload, &mut icv).unwrap();
                assert_ne!(payload, plain);

                // A different sequence number gives a different IV.
                let mut iv2 = [0u8; 16];
                let mut p2 = plain;
                c.seal(
                    AuthData { seq: 3, ..auth },
                    &mut iv2,
                    &mut p2,
                    &mut icv.clone(),
                )
                .unwrap();
                assert_ne!(iv, iv2);

                for flip in [0usize, 20, 47] {
                    let mut p = payload;
                    p[flip] ^= 0x80;
                    assert_eq!(
                        c.open(auth, &iv, &mut p, &icv),
                        Err(Error::AuthenticationFailed)
                    );
                }
                let mut bad_iv = iv;
                bad_iv[0] ^= 1;
                let mut p = payload;
                assert_eq!(
                    c.open(auth, &bad_iv, &mut p, &icv),
                    Err(Error::AuthenticationFailed)
                );
                let mut p = payload;
                assert_eq!(
                    c.open(AuthData { seq: 1, ..auth }, &iv, &mut p, &icv),
                    Err(Error::AuthenticationFailed),
                    "ESN high bits must be covered by the ICV"
                );
                let mut p = payload;
                c.open(auth, &iv, &mut p, &icv).unwrap();
                assert_eq!(p, plain);
            }
        }
    }
}
