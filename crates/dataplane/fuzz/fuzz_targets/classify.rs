//! The packet classifier: what the data plane does with an untrusted packet before it picks a
//! tunnel or an SA — UDP 4500 demultiplexing (RFC 3948 §2.2: keepalive, non-ESP marker + IKE, ESP),
//! the inner packet's claimed length, addresses and flow hash, the route lookup (longest prefix,
//! multipath), the Child SA's traffic selectors, and the TCP MSS clamp (which rewrites the packet).
//! Input: byte 0 the MSS to clamp to (× 8), the rest the packet. Nothing may panic.
//!
//! Short run: cd crates/dataplane/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run classify --sanitizer none
#![no_main]

use std::sync::OnceLock;

use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use vgw_dataplane::fib::Fib;
use vgw_dataplane::offload::ip_len;
use vgw_dataplane::packet::{addresses, clamp_mss, flow_hash};
use vgw_dataplane::{AddrRange, Selectors};

fn fib() -> &'static Fib {
    static FIB: OnceLock<Fib> = OnceLock::new();
    FIB.get_or_init(|| {
        let mut f = Fib::new();
        for (p, t) in [
            ("10.0.0.0/8", 1),
            ("10.1.0.0/16", 2),
            ("0.0.0.0/0", 3),
            ("fd00::/8", 4),
        ] {
            f.insert(p.parse::<IpNet>().expect("prefix"), t);
        }
        f.insert_multipath("192.168.0.0/16".parse().expect("prefix"), &[5, 6, 7]);
        f
    })
}

fuzz_target!(|data: &[u8]| {
    let [mss, pkt @ ..] = data else {
        return;
    };
    let _ = vgw_esp::udp::classify(pkt);
    let mut owned = pkt.to_vec();
    let _ = vgw_esp::udp::classify_mut(&mut owned);
    let inner = match ip_len(pkt) {
        Some(n) => {
            assert!(n <= pkt.len());
            &pkt[..n]
        }
        None => pkt,
    };
    let hash = flow_hash(inner);
    if let Some((src, dst)) = addresses(inner) {
        let _ = fib().lookup(dst);
        let _ = fib().lookup_flow(dst, || hash);
        let sel = Selectors {
            local: vec![
                AddrRange::any_v4(),
                AddrRange::from_prefix("fd00::/8".parse().expect("prefix")),
            ],
            remote: vec![AddrRange::from_prefix(
                "10.0.0.0/8".parse().expect("prefix"),
            )],
        };
        let _ = sel.allows_outbound(src, dst);
        let _ = sel.allows_inbound(src, dst);
    }
    let mut copy = inner.to_vec();
    clamp_mss(&mut copy, u16::from(*mss) * 8);
    assert_eq!(copy.len(), inner.len());
    // The clamp must not change the flow the packet belongs to.
    assert_eq!(addresses(&copy), addresses(inner));
});
