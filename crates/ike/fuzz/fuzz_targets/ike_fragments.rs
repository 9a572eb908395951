//! RFC 7383 IKE fragmentation: after an IKE_SA_INIT that negotiated fragmentation, the fuzz input
//! becomes Encrypted Fragment payloads of the IKE_AUTH request, each sealed with the SA's keys, so
//! reassembly (numbers, totals, duplicates, gaps, sizes) and the reassembled chain are exercised.
//! Input: byte 0 picks the variant (bit 0 AES-CBC, bit 1 certificates) and the mode: bit 4 clear,
//! records of tag, 2-byte length, bytes, each record one fragment with number = record byte 0,
//! total = record byte 1, first payload = record byte 2 and the rest the fragment's plaintext; bit 4
//! set, a valid IDi+AUTH prefix plus the remaining input, cut in pieces of byte 1 bytes and sent
//! last piece first. Nothing may panic.
//!
//! Short run: cd crates/ike/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ike_fragments --sanitizer none
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vgw_ike::message::{exchange, payload_type};
use vgw_ike_fuzz::{Harness, Variant, records};

fuzz_target!(|data: &[u8]| {
    vgw_ike_fuzz::self_check();
    let [sel, size, rest @ ..] = data else {
        return;
    };
    let v = Variant::from_byte(*sel);
    let Some(mut h) = Harness::as_initiator(v, true) else {
        panic!("harness: IKE_SA_INIT did not complete");
    };
    if sel & 0x10 == 0 {
        for (_, body) in records(rest, 16) {
            let [number, total, first, part @ ..] = body else {
                continue;
            };
            h.send_fragment(
                exchange::IKE_AUTH,
                1,
                *first,
                u16::from(*number),
                u16::from(*total),
                part,
            );
        }
    } else {
        let [first, tail @ ..] = rest else {
            return;
        };
        let mut plain = h.auth_prefix(*first);
        plain.extend_from_slice(tail);
        let chunk = usize::from(*size).max(1);
        let parts: Vec<&[u8]> = plain.chunks(chunk).collect();
        let total = parts.len().min(usize::from(u16::MAX)) as u16;
        for (i, part) in parts.iter().enumerate().rev().take(64) {
            let f = if i == 0 {
                h.auth_prefix_first()
            } else {
                payload_type::NONE
            };
            h.send_fragment(exchange::IKE_AUTH, 1, f, i as u16 + 1, total, part);
        }
    }
    h.advance(Duration::from_secs(40));
});
