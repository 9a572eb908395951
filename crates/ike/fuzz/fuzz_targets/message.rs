//! Fuzzes the IKEv2 message decoder with arbitrary datagrams; a parsed message must re-emit and
//! re-parse to the same payloads.
//!
//! Short run (cargo-fuzz needs nightly features; the stable toolchain allows them with RUSTC_BOOTSTRAP):
//!   cargo install cargo-fuzz
//!   cd crates/ike && RUSTC_BOOTSTRAP=1 cargo fuzz run message --sanitizer none -- -max_total_time=60
#![no_main]

use libfuzzer_sys::fuzz_target;
use vgw_ike::message::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse(data) {
        let bytes = m.emit();
        let again = Message::parse(&bytes).expect("emitted message must parse");
        assert_eq!(again.payloads, m.payloads);
    }
});
