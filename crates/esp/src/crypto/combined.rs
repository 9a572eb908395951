//! Combined-mode transforms: AES-GCM-16 (RFC 4106) on `aws-lc-rs` and ChaCha20-Poly1305 (RFC 7634)
//! on `ring`.
//!
//! Each library was chosen by measurement on the target CPU (`cargo bench -p vgw-esp --bench
//! seal_open -- baseline`, see docs/performance.md): aws-lc-rs seals 1400-byte AES-GCM packets
//! 30–50% faster than ring (AES-128 and AES-256), ChaCha20-Poly1305 is equal in both and stays on
//! ring. Both sit behind the same [`Aead`] implementation, so the choice is local to this file.
//!
//! Both build the 12-byte nonce as salt(4) || explicit IV(8) (RFC 4106 §4, RFC 7634 §2) and use
//! the 16-byte tag as the ICV. The explicit IV we send is the 64-bit sequence number: RFC 4106
//! §3.1 asks only that an IV never repeat under a key, and the sequence number never does because
//! the SA refuses to cycle it (RFC 4303 §3.3.3). On receive the IV is taken from the wire, since
//! peers choose differently (strongSwan XORs the sequence number with a per-SA random value).

use aws_lc_rs::aead as lc;
use ring::aead::{self, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use zeroize::Zeroizing;

use super::{Aead, AuthData, Encryption};
use crate::Error;

const IV_LEN: usize = 8;
const SALT_LEN: usize = 4;
const ICV_LEN: usize = 16;

/// AES-GCM-16 or ChaCha20-Poly1305 for one direction of one SA.
pub struct CombinedAead {
    key: Key,
    // Half the nonce: secret, so zeroized on drop. ring zeroizes nothing of its own key schedule,
    // which it keeps opaque; we at least do not keep the raw key around.
    salt: Zeroizing<[u8; SALT_LEN]>,
    encryption: Encryption,
}

/// The key schedule, in the library that is fastest for the algorithm. ring's schedule is inline
/// (~540 bytes), aws-lc-rs keeps its own on the heap (allocated once, when the SA is built).
#[allow(clippy::large_enum_variant)]
enum Key {
    Ring(LessSafeKey),
    AwsLc(lc::LessSafeKey),
}

impl core::fmt::Debug for CombinedAead {
    // The algorithm only: neither key nor salt may reach a log.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CombinedAead")
            .field("encryption", &self.encryption)
            .finish_non_exhaustive()
    }
}

impl CombinedAead {
    /// Builds the transform from `key || salt` (RFC 4106 §8.1, RFC 7634 §4).
    pub fn new(encryption: Encryption, keymat: &[u8]) -> Result<Self, Error> {
        let (lc_algorithm, ring_algorithm) = match encryption {
            Encryption::AesGcm128 => (Some(&lc::AES_128_GCM), None),
            Encryption::AesGcm256 => (Some(&lc::AES_256_GCM), None),
            Encryption::ChaCha20Poly1305 => (None, Some(&aead::CHACHA20_POLY1305)),
            Encryption::AesCbc128 | Encryption::AesCbc256 => return Err(Error::InvalidSuite),
        };
        if keymat.len() != encryption.keymat_len() {
            return Err(Error::InvalidKeyLength {
                expected: encryption.keymat_len(),
                got: keymat.len(),
            });
        }
        let (key, salt_bytes) = keymat.split_at(keymat.len() - SALT_LEN);
        let key = match (lc_algorithm, ring_algorithm) {
            (Some(a), _) => Key::AwsLc(lc::LessSafeKey::new(
                lc::UnboundKey::new(a, key).map_err(|_| Error::Crypto)?,
            )),
            (None, Some(a)) => Key::Ring(LessSafeKey::new(
                UnboundKey::new(a, key).map_err(|_| Error::Crypto)?,
            )),
            (None, None) => return Err(Error::InvalidSuite),
        };
        let mut salt = Zeroizing::new([0u8; SALT_LEN]);
        salt.copy_from_slice(salt_bytes);
        Ok(CombinedAead {
            key,
            salt,
            encryption,
        })
    }

    /// Which of the combined-mode transforms this is.
    pub fn encryption(&self) -> Encryption {
        self.encryption
    }

    #[inline]
    fn nonce_bytes(&self, iv: &[u8]) -> [u8; SALT_LEN + IV_LEN] {
        let mut n = [0u8; SALT_LEN + IV_LEN];
        n[..SALT_LEN].copy_from_slice(&*self.salt);
        n[SALT_LEN..].copy_from_slice(iv);
        n
    }
}

impl Aead for CombinedAead {
    #[inline]
    fn iv_len(&self) -> usize {
        IV_LEN
    }

    #[inline]
    fn icv_len(&self) -> usize {
        ICV_LEN
    }

    #[inline]
    fn align(&self) -> usize {
        4
    }

    fn seal(
        &self,
        auth: AuthData,
        iv: &mut [u8],
        payload: &mut [u8],
        icv: &mut [u8],
    ) -> Result<(), Error> {
        if iv.len() != IV_LEN || icv.len() != ICV_LEN {
            return Err(Error::BufferTooSmall);
        }
        iv.copy_from_slice(&auth.seq.to_be_bytes());
        let (aad, aad_len) = auth.aead_aad();
        let aad = &aad[..aad_len];
        let nonce = self.nonce_bytes(iv);
        match &self.key {
            Key::AwsLc(k) => {
                let tag = k
                    .seal_in_place_separate_tag(
                        lc::Nonce::assume_unique_for_key(nonce),
                        lc::Aad::from(aad),
                        payload,
                    )
                    .map_err(|_| Error::Crypto)?;
                icv.copy_from_slice(tag.as_ref());
            }
            Key::Ring(k) => {
                let tag = k
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad),
                        payload,
                    )
                    .map_err(|_| Error::Crypto)?;
                icv.copy_from_slice(tag.as_ref());
            }
        }
        Ok(())
    }

    fn open(&self, auth: AuthData, iv: &[u8], payload: &mut [u8], icv: &[u8]) -> Result<(), Error> {
        if iv.len() != IV_LEN {
            return Err(Error::Truncated);
        }
        if icv.len() != ICV_LEN {
            return Err(Error::Truncated);
        }
        let (aad, aad_len) = auth.aead_aad();
        let aad = &aad[..aad_len];
        let nonce = self.nonce_bytes(iv);
        match &self.key {
            Key::AwsLc(k) => k
                .open_in_place_separate_tag(
                    lc::Nonce::assume_unique_for_key(nonce),
                    lc::Aad::from(aad),
                    icv,
                    payload,
                )
                .map(|_| ())
                .map_err(|_| Error::AuthenticationFailed),
            Key::Ring(k) => {
                let tag = Tag::try_from(icv).map_err(|_| Error::Truncated)?;
                k.open_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    tag,
                    payload,
                    0..,
                )
                .map(|_| ())
                .map_err(|_| Error::AuthenticationFailed)
            }
        }
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

    /// RFC 7634 Appendix A: the ChaCha20-Poly1305 ESP example, checked byte for byte.
    #[test]
    fn rfc7634_appendix_a_esp_example() {
        let keymat = hex("80 81 82 83 84 85 86 87 88 89 8a 8b 8c 8d 8e 8f
             90 91 92 93 94 95 96 97 98 99 9a 9b 9c 9d 9e 9f
             a0 a1 a2 a3");
        let cipher = CombinedAead::new(Encryption::ChaCha20Poly1305, &keymat).unwrap();
        // The RFC's plaintext: an ICMP echo inside IPv4, then padding 01 02, pad length 2, next
        // header 4.
        let plaintext = hex("45 00 00 54 a6 f2 00 00 40 01 e7 78 c6 33 64 05
             c0 00 02 05 08 00 5b 7a 3a 08 00 00 55 3b ec 10
             00 07 36 27 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13
             14 15 16 17 18 19 1a 1b 1c 1d 1e 1f 20 21 22 23
             24 25 26 27 28 29 2a 2b 2c 2d 2e 2f 30 31 32 33
             34 35 36 37 01 02 02 04");
        let expected_ct = hex("24 03 94 28 b9 7f 41 7e 3c 13 75 3a 4f 05 08 7b
             67 c3 52 e6 a7 fa b1 b9 82 d4 66 ef 40 7a e5 c6
             14 ee 80 99 d5 28 44 eb 61 aa 95 df ab 4c 02 f7
             2a a7 1e 7c 4c 4f 64 c9 be fe 2f ac c6 38 e8 f3
             cb ec 16 3f ac 46 9b 50 27 73 f6 fb 94 e6 64 da
             91 65 b8 28 29 f6 41 e0");
        let expected_tag = hex("76 aa a8 26 6b 7f b0 f7 b1 1b 36 99 07 e1 ad 43");
        // SPI 0x01020304, sequence 5; the RFC's IV is 0x1011121314151617, not the sequence
        // number, so open with it rather than reseal.
        let auth = AuthData {
            spi: 0x0102_0304,
            seq: 5,
            esn: false,
        };
        let iv = hex("10 11 12 13 14 15 16 17");
        let mut buf = expected_ct.clone();
        cipher.open(auth, &iv, &mut buf, &expected_tag).unwrap();
        assert_eq!(buf, plaintext);

        // And the same nonce through ring directly gives the RFC's ciphertext and tag.
        let mut buf = plaintext.clone();
        let (aad, n) = auth.aead_aad();
        let Key::Ring(key) = &cipher.key else {
            panic!("ChaCha20-Poly1305 is on ring");
        };
        let nonce = Nonce::assume_unique_for_key(cipher.nonce_bytes(&iv));
        let tag = key
            .seal_in_place_separate_tag(nonce, Aad::from(&aad[..n]), &mut buf)
            .unwrap();
        assert_eq!(buf, expected_ct);
        assert_eq!(tag.as_ref(), &expected_tag[..]);
    }

    /// RFC 4106 has no test vectors; draft-mcgrew-gcm-test-01 §4 has ESP-shaped ones. Its first
    /// case: AES-128, SPI 0x00004321, 64-bit (ESN) sequence 0x8765432100000000, so the AAD is
    /// the 12-byte SPI || seq_hi || seq_lo form of RFC 4106 §5.
    #[test]
    fn gcm_test_draft_case_1() {
        let keymat = hex("4c80cdefbb5d10da906ac73c3613a634 2e443b68");
        let cipher = CombinedAead::new(Encryption::AesGcm128, &keymat).unwrap();
        let auth = AuthData {
            spi: 0x0000_4321,
            seq: 0x8765_4321_0000_0000,
            esn: true,
        };
        let iv = hex("4956ed7e3b244cfe");
        let plaintext = hex("45000048699a000080114db7c0a80102
             c0a801010a9bf15638d3010000010000
             00000000045f736970045f7564700373
             69700963796265726369747902646b00
             0021000101020201");
        let ct_and_tag = hex("fecf537e729d5b07dc30df528dd22b76
             8d1b98736696a6fd348509fa13ceac34
             cfa2436f14a3f3cf65925bf1f4a13c5d
             15b21e1884f5ff6247aeabb786b93bce
             61bc17d768fd9732459018148f6cbe72
             2fd04796562dfdb4");
        let (ct, tag) = ct_and_tag.split_at(ct_and_tag.len() - 16);
        let mut buf = ct.to_vec();
        cipher.open(auth, &iv, &mut buf, tag).unwrap();
        assert_eq!(buf, plaintext);
    }

    #[test]
    fn seal_uses_sequence_number_as_iv_and_detects_tamper() {
        for enc in [
            Encryption::AesGcm128,
            Encryption::AesGcm256,
            Encryption::ChaCha20Poly1305,
        ] {
            let keymat = vec![0x5a; enc.keymat_len()];
            let c = CombinedAead::new(enc, &keymat).unwrap();
            let auth = AuthData {
                spi: 0x1000,
                seq: 0x1_0000_0002,
                esn: true,
            };
            let mut iv = [0u8; 8];
            let mut icv = [0u8; 16];
            let mut payload = *b"0123456789abcdef";
            c.seal(auth, &mut iv, &mut payload, &mut icv).unwrap();
            assert_eq!(iv, 0x1_0000_0002u64.to_be_bytes());
            assert_ne!(&payload, b"0123456789abcdef");

            // ESN high bits are authenticated although not sent.
            let mut p = payload;
            let wrong_hi = AuthData { seq: 2, ..auth };
            assert_eq!(
                c.open(wrong_hi, &iv, &mut p, &icv),
                Err(Error::AuthenticationFailed)
            );
            let mut p = payload;
            p[3] ^= 1;
            assert_eq!(
                c.open(auth, &iv, &mut p, &icv),
                Err(Error::AuthenticationFailed)
            );
            let mut p = payload;
            c.open(auth, &iv, &mut p, &icv).unwrap();
            assert_eq!(&p, b"0123456789abcdef");
        }
    }
}
