//! Feeds arbitrary datagrams to a responder endpoint with a configured peer: nothing may panic,
//! whatever the state.
//!
//! Short run: cd crates/ike && RUSTC_BOOTSTRAP=1 cargo fuzz run endpoint --sanitizer none -- -max_total_time=60
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vgw_ike::message::{Identity, TrafficSelector};
use vgw_ike::proposal::{default_esp, default_ike};
use vgw_ike::{ChildConfig, Config, Endpoint, Mode};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut ep = Endpoint::new();
    let peer: SocketAddr = "198.18.0.1:500".parse().unwrap();
    ep.set_config(
        1,
        Config {
            local_addr: "198.18.0.2".parse().unwrap(),
            remote_addr: peer.ip(),
            remote_port: 500,
            local_id: Identity::from_ip("198.18.0.2".parse().unwrap()),
            remote_id: Identity::from_ip(peer.ip()),
            psk: vec![1u8; 16].into(),
            ike: default_ike(),
            esp: default_esp(true),
            pfs: None,
            mode: Mode::ResponderOnly,
            children: vec![ChildConfig {
                local: vec![TrafficSelector::any_v4()],
                remote: vec![TrafficSelector::any_v4()],
            }],
            dpd_timeout: Duration::from_secs(45),
            ike_lifetime: Duration::from_secs(3600),
            child_lifetime: Duration::from_secs(600),
            child_lifetime_bytes: None,
            fragment_size: 1200,
            ..Default::default()
        },
        now,
    );
    for chunk in data.split(|b| *b == 0xA5).take(8) {
        ep.handle_datagram(now, 500, peer, chunk);
        while ep.poll_transmit().is_some() {}
        while ep.poll_event().is_some() {}
    }
    ep.handle_timeout(now + Duration::from_secs(30));
});
