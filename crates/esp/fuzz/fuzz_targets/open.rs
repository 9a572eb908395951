//! Fuzzes inbound ESP: bytes as they would arrive on UDP port 4500 (RFC 3948), classified and,
//! when ESP, opened by an SA table holding one SA of every suite family (RFC 4303 §3.4).
//!
//! Most random bytes die at the SPI lookup or the ICV, so half the inputs first get sealed by
//! a matching outbound SA and then mutated: that drives the replay window, ESN inference and the
//! trailer/padding checks with authentic and almost-authentic packets. Properties checked:
//! nothing panics, an opened inner range lies inside the packet, and a sealed packet that was
//! not changed opens to exactly the bytes sealed.
//!
//! Short run (stable toolchain, so libFuzzer's nightly-only sanitizer flags are turned off):
//!
//! ```sh
//! cd crates/esp/fuzz
//! RUSTC_BOOTSTRAP=1 cargo fuzz run open --sanitizer none -- -max_total_time=60
//! ```
//!
//! (`cargo install cargo-fuzz` first.) Last short run, 2026-11-28, on a 2-core EPYC: 12.5 M
//! inputs in 60 s (~205 k/s), 245 edges, no crash. Corpora and artifacts are ignored by git.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vgw_esp::udp::{self, UdpKind};
use vgw_esp::{
    Encryption, InboundSa, InboundSaTable, Integrity, Lifetime, MAX_HEADROOM, MAX_TAILROOM,
    OutboundSa, SaParams, Spi, Suite,
};

fn suites() -> [(Spi, Suite, bool); 4] {
    [
        (Spi(0x0000_1000), Suite::AES_GCM_256, false),
        (Spi(0x0000_1001), Suite::CHACHA20_POLY1305, true),
        (
            Spi(0x0000_1002),
            Suite::new(Encryption::AesCbc128, Some(Integrity::HmacSha1)).unwrap(),
            true,
        ),
        (
            Spi(0x0000_1003),
            Suite::new(Encryption::AesCbc256, Some(Integrity::HmacSha256)).unwrap(),
            false,
        ),
    ]
}

fn params(spi: Spi, suite: Suite, esn: bool) -> SaParams {
    SaParams {
        spi,
        suite,
        esn,
        lifetime: Lifetime::default(),
    }
}

fn table() -> InboundSaTable {
    let mut t = InboundSaTable::new();
    for (spi, suite, esn) in suites() {
        let keymat = vec![spi.0 as u8; suite.keymat_len()];
        t.insert(InboundSa::new(params(spi, suite, esn), &keymat).unwrap());
    }
    t
}

fn open_raw(table: &mut InboundSaTable, datagram: &mut [u8]) {
    let len = datagram.len();
    if let Ok((UdpKind::Esp, esp)) = udp::classify_mut(datagram)
        && let Ok(o) = table.open_in_place(esp)
    {
        assert!(o.inner.end <= len);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut table = table();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let mut datagram = rest.to_vec();
        open_raw(&mut table, &mut datagram);
        return;
    }

    // Seal mode: byte 1 picks the suite and a starting sequence number, byte 2 how many flips
    // follow as (offset, mask) pairs, the rest is the inner packet.
    let [pick, flips, tail @ ..] = rest else {
        return;
    };
    let nflips = usize::from(*flips % 4);
    if tail.len() < 2 * nflips + 1 {
        return;
    }
    let (flip_bytes, body) = tail.split_at(2 * nflips);
    let (spi, suite, esn) = suites()[usize::from(pick % 4)];
    let keymat = vec![spi.0 as u8; suite.keymat_len()];
    let mut out = OutboundSa::new(params(spi, suite, esn), &keymat).unwrap();
    let mut inner = body.to_vec();
    inner[0] = if pick & 0x10 == 0 { 0x45 } else { 0x60 };
    let mut buf = vec![0u8; MAX_HEADROOM + inner.len() + MAX_TAILROOM];
    buf[MAX_HEADROOM..MAX_HEADROOM + inner.len()].copy_from_slice(&inner);
    let Ok(range) = out.seal_in_place(&mut buf, MAX_HEADROOM..MAX_HEADROOM + inner.len()) else {
        return;
    };
    let sealed = buf[range].to_vec();
    let mut pkt = sealed.clone();
    for f in flip_bytes.chunks(2) {
        let at = usize::from(f[0]) % pkt.len();
        pkt[at] ^= f[1];
    }
    let result = table.open_in_place(&mut pkt);
    if pkt_changed(&sealed, flip_bytes) {
        // Everything but the SPI is authenticated, and another SPI means another key.
        assert!(result.is_err(), "a modified packet opened: {result:?}");
    } else {
        let o = result.expect("an unchanged sealed packet must open");
        assert_eq!(&pkt[o.inner], &inner[..]);
        // And it must not open twice.
        let mut again = sealed.clone();
        assert!(matches!(
            table.open_in_place(&mut again),
            Err(vgw_esp::Error::ReplayedPacket { .. })
        ));
    }
});

/// Whether the flips, applied in order, leave the packet different (two flips can cancel).
fn pkt_changed(sealed: &[u8], flips: &[u8]) -> bool {
    let mut p = sealed.to_vec();
    for f in flips.chunks(2) {
        let at = usize::from(f[0]) % p.len();
        p[at] ^= f[1];
    }
    p != sealed
}
