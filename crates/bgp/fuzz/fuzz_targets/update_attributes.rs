//! UPDATE path attributes (RFC 4271 §4.3, §5; RFC 4760 MP_REACH/MP_UNREACH; RFC 6793 AS4_PATH;
//! RFC 7606 error handling): the fuzz input is the Path Attributes field of an UPDATE whose
//! header, Withdrawn Routes Length and Total Path Attribute Length are valid, so the decoder goes
//! straight into the attributes. Input: byte 0 bit 0 picks 4-octet AS numbers, bits 1-3 how many
//! IPv4 NLRI prefixes follow the attributes; the rest the attributes. A decoded announcement is
//! re-encoded and must decode again. Nothing may panic.
//!
//! Short run: cd crates/bgp/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run update_attributes --sanitizer none
#![no_main]

use libfuzzer_sys::fuzz_target;
use vgw_bgp::codec::{self, Message};

fuzz_target!(|data: &[u8]| {
    let [sel, attrs @ ..] = data else {
        return;
    };
    let four = sel & 1 != 0;
    let nlri_count = usize::from((sel >> 1) & 7);
    // 19 header + 2 + 2 + attributes + NLRI (10.n.0.0/16 each) within the 4096-byte maximum.
    let attrs = &attrs[..attrs.len().min(4096 - 23 - 3 * nlri_count)];
    let mut m = Vec::with_capacity(4096);
    m.extend_from_slice(&[0xff; 16]);
    let len = 23 + attrs.len() + 3 * nlri_count;
    m.extend_from_slice(&(len as u16).to_be_bytes());
    m.push(2);
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    m.extend_from_slice(attrs);
    for n in 0..nlri_count {
        m.extend_from_slice(&[16, 10, n as u8]);
    }
    assert_eq!(codec::frame_len(&m).ok().flatten(), Some(m.len()));
    if let Ok(Message::Update(u)) = codec::decode(&m, four)
        && let Some(a) = &u.attributes
    {
        let _ = a.as_path_string();
        let _ = a.as_path_len();
        let _ = a.first_as();
        for frame in codec::encode_announce(a, &u.announced, four) {
            assert!(frame.len() <= 4096, "encoded UPDATE over 4096 bytes");
            let _ = codec::decode(&frame, four);
        }
    }
});
