//! Arbitrary bytes into the control packet decoder and into sessions in each state: nothing may panic,
//! a decoded packet must re-encode to what decodes the same, and the session's timers stay defined.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vgw_bfd::{Config, ControlPacket, Session, State};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = ControlPacket::decode(data) {
        assert_eq!(ControlPacket::decode(&p.encode()).as_ref(), Ok(&p));
    }
    let now = Instant::now();
    // Down, Init and Up sessions (the latter two reached with a well-formed peer first), then the
    // input split into 24-byte packets, each followed by a timer run.
    for warmup in [&[][..], &[State::Down][..], &[State::Down, State::Init][..]] {
        let mut s = Session::new(Config { discriminator: 0x11, ..Config::default() }, now);
        let mut t = now;
        for &state in warmup {
            let p = ControlPacket {
                diagnostic: vgw_bfd::Diagnostic::None,
                state,
                poll: false,
                final_: false,
                detect_mult: 3,
                my_discriminator: 0x22,
                your_discriminator: if state == State::Down { 0 } else { 0x11 },
                desired_min_tx: 300_000,
                required_min_rx: 300_000,
                required_min_echo_rx: 0,
            };
            let _ = s.handle_packet(t, &p.encode());
        }
        for chunk in data.chunks(24) {
            t += Duration::from_millis(u64::from(chunk[0]) * 10);
            let _ = s.handle_packet(t, chunk);
            s.handle_timeout(t);
            let _ = s.poll_timeout();
            let _ = s.transmit_interval();
            let _ = s.detection_time();
            while s.poll_transmit().is_some() {}
            while s.poll_event().is_some() {}
        }
    }
});
