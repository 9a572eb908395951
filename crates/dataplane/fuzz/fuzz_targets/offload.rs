//! The TUN offload path: the fuzz input is what a TUN with `IFF_VNET_HDR` hands over, a
//! `virtio_net_hdr` (virtio spec §5.1.6) and the packet; the split into GSO segments (TCPv4, TCPv6,
//! UDP_L4) or the checksum completion must never panic or write out of bounds, every segment must
//! be a whole IP packet, and the segments then go through the receive-side coalescer (GRO) as a
//! batch. Output buffers of varying size exercise the "too small: skip" path.
//!
//! Short run: cd crates/dataplane/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run offload --sanitizer none
#![no_main]

use libfuzzer_sys::fuzz_target;
use vgw_dataplane::offload::{Coalescer, Segments, VNET_HDR_LEN, VnetHdr, ip_len};

fuzz_target!(|data: &[u8]| {
    let [room, rest @ ..] = data else {
        return;
    };
    let Some(hdr) = VnetHdr::parse(rest) else {
        return;
    };
    let pkt = &rest[VNET_HDR_LEN..];
    // A small output buffer now and then, so a segment that does not fit is skipped, not a panic.
    let size = if *room < 16 {
        usize::from(*room) * 64
    } else {
        65_536
    };
    let mut out = vec![0u8; size];
    let mut segments: Vec<Vec<u8>> = Vec::new();
    if let Some(mut s) = Segments::new(hdr, pkt) {
        for _ in 0..4096 {
            match s.next_into(&mut out) {
                None => break,
                Some(None) => {}
                Some(Some(n)) => {
                    assert!(n <= out.len());
                    let seg = &out[..n];
                    let _ = ip_len(seg);
                    if segments.len() < 64 {
                        segments.push(seg.to_vec());
                    }
                }
            }
        }
    }
    // The same bytes as a batch of plain packets, then the segments, into the coalescer.
    let mut batch: Vec<&[u8]> = Vec::new();
    if let Some(n) = ip_len(pkt) {
        batch.push(&pkt[..n]);
    }
    batch.extend(segments.iter().map(Vec::as_slice));
    let mut c = Coalescer::new(batch.len().max(1), true);
    for (i, p) in batch.iter().enumerate() {
        c.push(p, (room & 1).into(), |j| batch[j as usize]);
        assert_eq!(c.len(), i + 1);
    }
    let items: Vec<_> = c.items().to_vec();
    for item in &items {
        let members: Vec<u32> = c.members(item).collect();
        assert_eq!(members.len(), item.count as usize);
        let mut head = batch[item.head as usize].to_vec();
        let _ = Coalescer::finish_head(item, &mut head);
    }
});
