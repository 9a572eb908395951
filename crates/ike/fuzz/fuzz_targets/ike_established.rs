//! An IKE SA established with a valid IKE_AUTH; then each fuzz record becomes the decrypted inner
//! payload chain of a protected exchange on it: an INFORMATIONAL or CREATE_CHILD_SA request from the
//! peer (RFC 7296 §1.3, §1.4: rekeys, deletes, notifies), or the peer's response to the endpoint's
//! own CREATE_CHILD_SA (Child SA rekey) or INFORMATIONAL (DPD). Input: byte 0 bit 0 picks AES-CBC;
//! then records of tag, 2-byte length, bytes: tag bits 0-1 the exchange kind, bit 2 a wrong
//! message id; the record's first byte is the first payload's type. Nothing may panic.
//!
//! Short run: cd crates/ike/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run ike_established --sanitizer none
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vgw_ike::message::{Header, exchange};
use vgw_ike_fuzz::{CONN, Harness, Variant, records};

fuzz_target!(|data: &[u8]| {
    vgw_ike_fuzz::self_check();
    let [sel, rest @ ..] = data else {
        return;
    };
    let v = Variant::from_byte(*sel & 1);
    let Some(mut h) = Harness::as_initiator(v, false) else {
        panic!("harness: IKE_SA_INIT did not complete");
    };
    assert!(h.establish(), "harness: IKE_AUTH did not establish the SA");
    for (tag, body) in records(rest, 8) {
        let [first, plain @ ..] = body else {
            continue;
        };
        let skew = u32::from(tag & 4 != 0);
        match tag & 3 {
            0 | 1 => {
                let ex = if tag & 3 == 0 {
                    exchange::INFORMATIONAL
                } else {
                    exchange::CREATE_CHILD_SA
                };
                let id = h.next_request + skew;
                h.send_sk(ex, false, id, *first, plain);
                h.next_request += 1;
            }
            kind => {
                let sent = if kind == 2 {
                    h.ep.rekey_children(CONN, h.now);
                    h.drain()
                } else {
                    // Quiet for longer than the DPD interval: the endpoint probes (§2.4).
                    h.now += Duration::from_secs(50);
                    h.ep.handle_timeout(h.now);
                    h.drain()
                };
                for d in sent {
                    if let Ok(hd) = Header::parse(&d)
                        && !hd.is_response()
                    {
                        h.send_sk(hd.exchange, true, hd.message_id + skew, *first, plain);
                        break;
                    }
                }
            }
        }
    }
    h.advance(Duration::from_secs(4000));
});
