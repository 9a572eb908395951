//! Seal and open throughput of one SA on one core, for 64, 512 and 1400-byte inner packets with
//! AES-GCM-256 and ChaCha20-Poly1305 (the suites vgw prefers).
//!
//! Run: `CARGO_TARGET_DIR=/work/target-esp cargo bench -p vgw-esp --bench seal_open`.
//! Open needs a fresh, authentic packet per iteration or the replay window would refuse it, so
//! the open benchmark seals a batch up front and replays it through a new SA each round; the
//! SA construction is outside the timed part.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use vgw_esp::{InboundSa, Lifetime, MAX_HEADROOM, MAX_TAILROOM, OutboundSa, SaParams, Spi, Suite};

const SIZES: [usize; 3] = [64, 512, 1400];
const OPEN_BATCH: usize = 256;

fn params(suite: Suite) -> SaParams {
    SaParams {
        spi: Spi(0x1000_0001),
        suite,
        esn: true,
        lifetime: Lifetime::default(),
    }
}

fn inner(len: usize) -> Vec<u8> {
    let mut p = vec![0x5a; len];
    p[0] = 0x45;
    p
}

fn bench(c: &mut Criterion) {
    for (name, suite) in [
        ("aes256gcm16", Suite::AES_GCM_256),
        ("chacha20poly1305", Suite::CHACHA20_POLY1305),
    ] {
        let keymat = vec![0x42; suite.keymat_len()];
        let mut group = c.benchmark_group(format!("seal/{name}"));
        for len in SIZES {
            group.throughput(Throughput::Bytes(len as u64));
            let mut sa = OutboundSa::new(params(suite), &keymat).unwrap();
            let pkt = inner(len);
            let mut buf = vec![0u8; MAX_HEADROOM + len + MAX_TAILROOM];
            group.bench_function(len.to_string(), |b| {
                b.iter(|| {
                    // Restore the plaintext the previous seal encrypted in place.
                    buf[MAX_HEADROOM..MAX_HEADROOM + len].copy_from_slice(&pkt);
                    black_box(
                        sa.seal_in_place(&mut buf, MAX_HEADROOM..MAX_HEADROOM + len)
                            .unwrap(),
                    );
                })
            });
        }
        group.finish();

        let mut group = c.benchmark_group(format!("open/{name}"));
        for len in SIZES {
            group.throughput(Throughput::Bytes((len * OPEN_BATCH) as u64));
            let mut out = OutboundSa::new(params(suite), &keymat).unwrap();
            let sealed: Vec<Vec<u8>> = (0..OPEN_BATCH)
                .map(|_| {
                    let mut buf = vec![0u8; out.sealed_len(len)];
                    let n = out.seal(&inner(len), &mut buf).unwrap();
                    buf.truncate(n);
                    buf
                })
                .collect();
            group.bench_function(format!("{len}x{OPEN_BATCH}"), |b| {
                b.iter_batched(
                    || {
                        (
                            InboundSa::new(params(suite), &keymat).unwrap(),
                            sealed.clone(),
                        )
                    },
                    |(mut sa, mut pkts)| {
                        for p in pkts.iter_mut() {
                            black_box(sa.open_in_place(p).unwrap());
                        }
                    },
                    BatchSize::LargeInput,
                )
            });
        }
        group.finish();
    }
}

/// The AEAD libraries alone on the same sizes: what the ESP framing costs on top, and the
/// measurement behind the choice of `ring` over `aws-lc-rs` for the AEAD suites (both are
/// dependencies; `aws-lc-rs` serves AES-CBC/HMAC).
fn baseline(c: &mut Criterion) {
    macro_rules! backend {
        ($group:expr, $lib:ident, $alg:ident) => {{
            use $lib::aead::{Aad, LessSafeKey, Nonce, UnboundKey};
            let key = LessSafeKey::new(
                UnboundKey::new(&$lib::aead::$alg, &[0x42; 32][..$lib::aead::$alg.key_len()])
                    .unwrap(),
            );
            let mut group = c.benchmark_group($group);
            for len in SIZES {
                group.throughput(Throughput::Bytes(len as u64));
                let mut buf = vec![0x5a; len + 4];
                let mut n = 0u64;
                group.bench_function(len.to_string(), |b| {
                    b.iter(|| {
                        n += 1;
                        let mut nonce = [0u8; 12];
                        nonce[4..].copy_from_slice(&n.to_be_bytes());
                        let _tag = black_box(
                            key.seal_in_place_separate_tag(
                                Nonce::assume_unique_for_key(nonce),
                                Aad::from(&[0u8; 8]),
                                &mut buf,
                            )
                            .unwrap(),
                        );
                    })
                });
            }
            group.finish();
        }};
    }
    backend!("baseline/ring-aes256gcm", ring, AES_256_GCM);
    backend!("baseline/aws-lc-rs-aes256gcm", aws_lc_rs, AES_256_GCM);
    backend!("baseline/ring-aes128gcm", ring, AES_128_GCM);
    backend!("baseline/aws-lc-rs-aes128gcm", aws_lc_rs, AES_128_GCM);
    backend!("baseline/ring-chacha20poly1305", ring, CHACHA20_POLY1305);
    backend!(
        "baseline/aws-lc-rs-chacha20poly1305",
        aws_lc_rs,
        CHACHA20_POLY1305
    );
}

criterion_group!(benches, bench, baseline);
criterion_main!(benches);
