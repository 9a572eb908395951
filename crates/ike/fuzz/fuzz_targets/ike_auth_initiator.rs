//! The endpoint is the IKE initiator; the fuzz input is the decrypted inner payload chain of the
//! responder's IKE_AUTH response (RFC 7296 §1.2: IDr, CERT, AUTH, CP, SA, TSi, TSr, notifies).
//! Input: byte 0 picks the variant (bit 0 AES-CBC+HMAC, bit 1 certificate authentication, bit 4
//! prefix a valid IDr+AUTH so the rest is handled as authenticated), byte 1 is the type of the
//! first fuzz payload, the rest are the payloads. Nothing may panic.
//!
//! Short run: cd crates/ike/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ike_auth_initiator --sanitizer none
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vgw_ike::message::exchange;
use vgw_ike_fuzz::{Harness, Variant};

fuzz_target!(|data: &[u8]| {
    vgw_ike_fuzz::self_check();
    let [sel, first, rest @ ..] = data else {
        return;
    };
    let v = Variant::from_byte(*sel);
    let Some((mut h, id)) = Harness::as_responder(v) else {
        panic!("harness: the endpoint's IKE_SA_INIT / IKE_AUTH did not arrive");
    };
    if sel & 0x10 != 0 {
        let mut plain = h.auth_prefix(*first);
        plain.extend_from_slice(rest);
        let f = h.auth_prefix_first();
        h.send_sk(exchange::IKE_AUTH, true, id, f, &plain);
    } else {
        h.send_sk(exchange::IKE_AUTH, true, id, *first, rest);
    }
    h.advance(Duration::from_secs(40));
    h.advance(Duration::from_secs(4000));
});
