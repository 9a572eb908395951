//! Arbitrary bytes into the BGP decoder (both AS widths) and into an established session's stream
//! reassembly: nothing may panic, and a session must end in a defined state.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use vgw_bgp::{Session, SessionConfig, codec};

fuzz_target!(|data: &[u8]| {
    let _ = codec::frame_len(data);
    let _ = codec::decode(data, true);
    let _ = codec::decode(data, false);
    // A session in OpenSent fed the bytes after a valid header prefix.
    let now = Instant::now();
    let mut s = Session::new(SessionConfig::default());
    s.start(now);
    s.connection_opened(now);
    s.handle_bytes(now, data);
    while s.poll_transmit().is_some() {}
    while s.poll_event().is_some() {}
});
