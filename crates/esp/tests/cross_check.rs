//! Cross-checks of our packet layout against a second crypto library: packets sealed by
//! vgw-esp (AEADs on ring, CBC on aws-lc-rs) are opened by hand with the other library,
//! following RFC 4106 §4-5, RFC 7634 §2 and RFC 4303 §2.2.1/§3.3.2 directly.

use aws_lc_rs::aead::{self as lc_aead, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{AES_128, AES_256, DecryptingKey, DecryptionContext, UnboundCipherKey};
use aws_lc_rs::iv::FixedLength;
use vgw_esp::{
    Encryption, Integrity, Lifetime, MAX_HEADROOM, MAX_TAILROOM, OutboundSa, SaParams, Spi, Suite,
};

fn sealed(suite: Suite, keymat: &[u8], esn: bool, start_seq_skip: usize, inner: &[u8]) -> Vec<u8> {
    let mut out = OutboundSa::new(
        SaParams {
            spi: Spi(0x0abc_def0),
            suite,
            esn,
            lifetime: Lifetime::default(),
        },
        keymat,
    )
    .unwrap();
    let mut buf = vec![0u8; MAX_HEADROOM + inner.len() + MAX_TAILROOM];
    for _ in 0..start_seq_skip {
        out.seal(inner, &mut buf).unwrap();
    }
    let n = out.seal(inner, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn inner_packet() -> Vec<u8> {
    let mut p: Vec<u8> = (0..77u8).collect();
    p[0] = 0x45;
    p
}

/// Checks the plaintext trailer by hand: RFC 4303 §2.4 padding 1, 2, 3..., then next header 4.
fn check_trailer(plain: &[u8], inner: &[u8], align: usize) {
    assert_eq!(plain.len() % align, 0);
    assert_eq!(&plain[..inner.len()], inner);
    let pad = plain[plain.len() - 2] as usize;
    assert_eq!(inner.len() + pad + 2, plain.len());
    assert!(pad < align);
    assert!(
        plain[inner.len()..inner.len() + pad]
            .iter()
            .enumerate()
            .all(|(i, &b)| b == i as u8 + 1)
    );
    assert_eq!(plain[plain.len() - 1], 4);
}

#[test]
fn aeads_open_with_aws_lc_rs() {
    let inner = inner_packet();
    for (suite, alg) in [
        (Suite::AES_GCM_128, &lc_aead::AES_128_GCM),
        (Suite::AES_GCM_256, &lc_aead::AES_256_GCM),
        (Suite::CHACHA20_POLY1305, &lc_aead::CHACHA20_POLY1305),
    ] {
        for esn in [false, true] {
            let keymat: Vec<u8> = (100..100 + suite.keymat_len() as u8).collect();
            let pkt = sealed(suite, &keymat, esn, 2, &inner);
            let (key, salt) = keymat.split_at(keymat.len() - 4);
            let key = LessSafeKey::new(UnboundKey::new(alg, key).unwrap());
            // Nonce = salt || explicit IV (RFC 4106 §4); the IV sits after SPI and sequence.
            let mut nonce = [0u8; 12];
            nonce[..4].copy_from_slice(salt);
            nonce[4..].copy_from_slice(&pkt[8..16]);
            // Third packet: sequence number 3, and our IV is that number.
            assert_eq!(&pkt[8..16], &3u64.to_be_bytes());
            let mut aad = pkt[..8].to_vec();
            if esn {
                // RFC 4106 §5: SPI || seq_hi || seq_lo.
                aad.splice(4..4, 0u32.to_be_bytes());
            }
            let mut body = pkt[16..].to_vec();
            let plain = key
                .open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(&aad[..]),
                    &mut body,
                )
                .unwrap_or_else(|_| panic!("{suite:?} esn={esn}"));
            check_trailer(plain, &inner, 4);
        }
    }
}

#[test]
fn cbc_hmac_checks_with_ring_hmac_and_aws_lc_cbc() {
    let inner = inner_packet();
    for (enc, cbc_alg) in [
        (Encryption::AesCbc128, &AES_128),
        (Encryption::AesCbc256, &AES_256),
    ] {
        for (integ, mac_alg) in [
            (
                Integrity::HmacSha1,
                ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            ),
            (Integrity::HmacSha256, ring::hmac::HMAC_SHA256),
            (Integrity::HmacSha384, ring::hmac::HMAC_SHA384),
            (Integrity::HmacSha512, ring::hmac::HMAC_SHA512),
        ] {
            for esn in [false, true] {
                let suite = Suite::new(enc, Some(integ)).unwrap();
                let keymat: Vec<u8> = (1..=suite.keymat_len() as u8).collect();
                let pkt = sealed(suite, &keymat, esn, 0, &inner);
                // RFC 7296 §2.17: encryption key first, then the integrity key.
                let (ek, ak) = keymat.split_at(enc.keymat_len());
                let icv_len = integ.icv_len();
                let (authed, icv) = pkt.split_at(pkt.len() - icv_len);
                // RFC 4303 §3.3.2.1: with ESN the high 32 bits follow the payload in the ICV.
                let mut mac_input = authed.to_vec();
                if esn {
                    mac_input.extend_from_slice(&0u32.to_be_bytes());
                }
                let tag = ring::hmac::sign(&ring::hmac::Key::new(mac_alg, ak), &mac_input);
                assert_eq!(&tag.as_ref()[..icv_len], icv, "{suite:?} esn={esn}");

                let iv: [u8; 16] = pkt[8..24].try_into().unwrap();
                let mut body = authed[24..].to_vec();
                let dec = DecryptingKey::cbc(UnboundCipherKey::new(cbc_alg, ek).unwrap()).unwrap();
                let plain = dec
                    .decrypt(&mut body, DecryptionContext::Iv128(FixedLength::from(iv)))
                    .unwrap();
                check_trailer(plain, &inner, 16);
            }
        }
    }
}
