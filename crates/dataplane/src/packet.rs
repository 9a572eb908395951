//! Just enough IP parsing for forwarding: addresses of an inner packet, and TCP MSS clamping.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Source and destination of an IPv4 or IPv6 packet, or `None` if it is neither or truncated.
pub fn addresses(packet: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            let src: [u8; 4] = packet[12..16].try_into().ok()?;
            let dst: [u8; 4] = packet[16..20].try_into().ok()?;
            Some((
                IpAddr::V4(Ipv4Addr::from(src)),
                IpAddr::V4(Ipv4Addr::from(dst)),
            ))
        }
        6 if packet.len() >= 40 => {
            let src: [u8; 16] = packet[8..24].try_into().ok()?;
            let dst: [u8; 16] = packet[24..40].try_into().ok()?;
            Some((
                IpAddr::V6(Ipv6Addr::from(src)),
                IpAddr::V6(Ipv6Addr::from(dst)),
            ))
        }
        _ => None,
    }
}

/// A hash of the packet's flow (addresses, protocol and, for TCP/UDP first fragments, ports) that
/// picks one tunnel of a multipath set: every packet of a flow takes the same tunnel.
pub fn flow_hash(packet: &[u8]) -> u32 {
    let (addrs, proto, l4) = match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= 20 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let first_fragment = u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff == 0;
            (&packet[12..20], packet[9], first_fragment.then_some(ihl))
        }
        Some(6) if packet.len() >= 40 => (&packet[8..40], packet[6], Some(40)),
        _ => return 0,
    };
    // FNV-1a: cheap, and good enough to spread flows over at most four tunnels.
    let mut h: u32 = 0x811c_9dc5;
    let mut mix = |b: u8| h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    addrs.iter().for_each(|&b| mix(b));
    mix(proto);
    if matches!(proto, 6 | 17)
        && let Some(ports) = l4.and_then(|o| packet.get(o..o + 4))
    {
        ports.iter().for_each(|&b| mix(b));
    }
    h ^ (h >> 16)
}

/// Lowers the MSS option of a TCP SYN to `mss` so that the peer's segments fit the tunnel without
/// fragmentation; the TCP checksum is updated incrementally (RFC 1624). Other packets are untouched.
pub fn clamp_mss(packet: &mut [u8], mss: u16) {
    let (l4, proto) = match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= 20 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            // Only first fragments carry the TCP header.
            let frag_offset = u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff;
            if frag_offset != 0 {
                return;
            }
            (ihl, packet[9])
        }
        Some(6) if packet.len() >= 40 => (40, packet[6]),
        _ => return,
    };
    if proto != 6 || packet.len() < l4 + 20 {
        return;
    }
    let tcp = &mut packet[l4..];
    let flags = tcp[13];
    if flags & 0x02 == 0 {
        return; // not a SYN
    }
    let header_len = usize::from(tcp[12] >> 4) * 4;
    if header_len < 20 || header_len > tcp.len() {
        return;
    }
    let mut i = 20;
    while i < header_len {
        match tcp[i] {
            0 => return,
            1 => i += 1,
            kind => {
                let Some(&len) = tcp.get(i + 1) else { return };
                let len = usize::from(len);
                if len < 2 || i + len > header_len {
                    return;
                }
                if kind == 2 && len == 4 {
                    let old = u16::from_be_bytes([tcp[i + 2], tcp[i + 3]]);
                    if old > mss {
                        tcp[i + 2..i + 4].copy_from_slice(&mss.to_be_bytes());
                        let sum = u16::from_be_bytes([tcp[16], tcp[17]]);
                        tcp[16..18].copy_from_slice(&checksum_update(sum, old, mss).to_be_bytes());
                    }
                    return;
                }
                i += len;
            }
        }
    }
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m').
fn checksum_update(sum: u16, old: u16, new: u16) -> u16 {
    let mut acc = u32::from(!sum) + u32::from(!old) + u32::from(new);
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for chunk in data.chunks(2) {
            let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
            acc += u32::from(word);
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    fn tcp_checksum(pkt: &[u8]) -> u16 {
        let tcp = &pkt[20..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&pkt[12..20]);
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(tcp);
        checksum(&pseudo)
    }

    #[test]
    fn clamps_syn_mss_and_keeps_checksum_valid() {
        let mut pkt = vec![0u8; 44];
        pkt[0] = 0x45;
        pkt[9] = 6;
        pkt[12..16].copy_from_slice(&[10, 1, 0, 10]);
        pkt[16..20].copy_from_slice(&[10, 2, 0, 10]);
        let tcp = &mut pkt[20..];
        tcp[12] = 6 << 4; // 24-byte header
        tcp[13] = 0x02; // SYN
        tcp[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]); // MSS 1460
        let sum = tcp_checksum(&pkt);
        pkt[36..38].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(tcp_checksum(&pkt), 0);
        clamp_mss(&mut pkt, 1350);
        assert_eq!(u16::from_be_bytes([pkt[42], pkt[43]]), 1350);
        assert_eq!(tcp_checksum(&pkt), 0, "checksum must stay valid");
        assert_eq!(
            addresses(&pkt).unwrap().1,
            "10.2.0.10".parse::<IpAddr>().unwrap()
        );
        clamp_mss(&mut pkt[..30], 1000); // truncated: no panic
    }
}
