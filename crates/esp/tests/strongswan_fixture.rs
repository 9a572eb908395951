//! Interop known-answer test: open real ESP packets that strongSwan 5.9.8 (kernel-libipsec) sent,
//! with the Child SA keys charon logged, and check our sealing makes packets of the same shape.
//! See tests/data/README.md for where the capture and the log come from.

use vgw_esp::udp::{self, Classified};
use vgw_esp::{Error, InboundSa, Lifetime, OutboundSa, SaParams, Spi, Suite};

const PCAP: &[u8] = include_bytes!("data/ikev2-psk-libipsec.pcap");
const SITE_LOG: &str = include_str!("data/charon-site.keys.log");

const SITE_TO_HUB: Spi = Spi(0x8034_0f0b);
const HUB_TO_SITE: Spi = Spi(0x511c_1a36);

/// UDP payloads of a classic little-endian Ethernet pcap, with their ports.
fn udp_payloads(pcap: &[u8]) -> Vec<(u16, u16, Vec<u8>)> {
    assert_eq!(&pcap[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian pcap");
    assert_eq!(
        u32::from_le_bytes(pcap[20..24].try_into().unwrap()),
        1,
        "Ethernet"
    );
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= pcap.len() {
        let incl = u32::from_le_bytes(pcap[off + 8..off + 12].try_into().unwrap()) as usize;
        let frame = &pcap[off + 16..off + 16 + incl];
        off += 16 + incl;
        let ip = &frame[14..];
        assert_eq!(ip[0] >> 4, 4);
        assert_eq!(ip[9], 17, "every frame of the capture is UDP");
        let udp = &ip[usize::from(ip[0] & 0xf) * 4..];
        let sport = u16::from_be_bytes([udp[0], udp[1]]);
        let dport = u16::from_be_bytes([udp[2], udp[3]]);
        let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
        out.push((sport, dport, udp[8..len].to_vec()));
    }
    out
}

/// The hex dump charon prints after "`<label>` => N bytes", from the first such line on.
fn logged_key(log: &str, label: &str) -> Vec<u8> {
    let mut lines = log
        .lines()
        .skip_while(|l| !l.contains(&format!("{label} =>")));
    let header = lines.next().expect("key line in log");
    let len: usize = header
        .split("=> ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .expect("byte count");
    let mut key = Vec::new();
    for line in lines {
        // "20:09:17 14[CHD]    0: FB F6 D0 ...  ascii"
        let Some((_, dump)) = line.split_once("]") else {
            break;
        };
        let Some((offset, rest)) = dump.trim_start().split_once(": ") else {
            break;
        };
        if offset.parse::<usize>() != Ok(key.len()) {
            break;
        }
        let hex = rest.split("  ").next().unwrap();
        key.extend(
            hex.split_whitespace()
                .map(|b| u8::from_str_radix(b, 16).unwrap()),
        );
    }
    assert_eq!(key.len(), len, "{label}");
    key
}

fn inbound(spi: Spi, keymat: &[u8]) -> InboundSa {
    let params = SaParams {
        spi,
        suite: Suite::AES_GCM_256,
        esn: false,
        lifetime: Lifetime::default(),
    };
    InboundSa::new(params, keymat).unwrap()
}

#[test]
fn opens_strongswan_aes256gcm16_packets() {
    // RFC 7296 §2.17: the initiator (site) sends with the first key, the responder (hub) with the
    // second; charon calls them "encryption initiator/responder key" (key || 4-byte salt).
    let key_i = logged_key(SITE_LOG, "encryption initiator key");
    let key_r = logged_key(SITE_LOG, "encryption responder key");
    assert_eq!(key_i.len(), Suite::AES_GCM_256.keymat_len());
    let mut at_hub = inbound(SITE_TO_HUB, &key_i);
    let mut at_site = inbound(HUB_TO_SITE, &key_r);

    let mut esp_seen = [0u64; 2];
    let mut ike_seen = 0;
    for (sport, dport, mut payload) in udp_payloads(PCAP) {
        if dport != udp::NAT_T_PORT {
            // IKE_SA_INIT on port 500 carries no non-ESP marker.
            assert_eq!((sport, dport), (500, 500));
            continue;
        }
        match udp::classify(&payload).unwrap() {
            Classified::NatKeepalive => panic!("no keepalives in this capture"),
            Classified::Ike(msg) => {
                // IKE header: version 2.0 at offset 17.
                assert_eq!(msg[17], 0x20);
                ike_seen += 1;
                continue;
            }
            Classified::Esp(_) => {}
        }
        let wire = payload.clone();
        let spi = vgw_esp::header::peek_spi(&payload).unwrap();
        let (sa, dir) = match spi {
            SITE_TO_HUB => (&mut at_hub, 0),
            HUB_TO_SITE => (&mut at_site, 1),
            other => panic!("unexpected SPI {other}"),
        };
        let opened = sa.open_in_place(&mut payload).unwrap();
        esp_seen[dir] += 1;
        assert_eq!(opened.seq, esp_seen[dir]);
        assert_eq!(opened.next_header, 4);
        let inner = &payload[opened.inner.clone()];
        // An ICMP echo (request site->hub, reply hub->site) between the two /16s.
        assert_eq!(inner.len(), 84);
        assert_eq!(inner[0], 0x45);
        assert_eq!(inner[9], 1, "ICMP");
        let (src, dst) = (&inner[12..14], &inner[16..18]);
        if dir == 0 {
            assert_eq!((src, dst, inner[20]), (&[10, 1][..], &[10, 2][..], 8));
        } else {
            assert_eq!((src, dst, inner[20]), (&[10, 2][..], &[10, 1][..], 0));
        }
        // strongSwan pads as RFC 4303 §2.4 suggests and to 4 bytes: 84 + 2 + 2 = 88.
        assert_eq!(
            &payload[opened.inner.end..opened.inner.end + 4],
            &[1, 2, 2, 4]
        );
        // libipsec's explicit IV is not the sequence number (it is seq XOR a per-SA value).
        assert_ne!(&wire[8..16], &opened.seq.to_be_bytes());

        // Replaying the captured packet is caught.
        let mut replay = wire.clone();
        assert_eq!(
            sa.open_in_place(&mut replay),
            Err(Error::ReplayedPacket { seq: opened.seq })
        );

        // Our seal of the same inner packet has exactly strongSwan's length.
        let mut out = OutboundSa::new(
            SaParams {
                spi,
                suite: Suite::AES_GCM_256,
                esn: false,
                lifetime: Lifetime::default(),
            },
            if dir == 0 { &key_i } else { &key_r },
        )
        .unwrap();
        let mut buf = [0u8; 256];
        let n = out.seal(inner, &mut buf).unwrap();
        assert_eq!(n, wire.len());
    }
    assert_eq!(esp_seen, [6, 6]);
    assert_eq!(ike_seen, 12);
    assert_eq!(at_hub.counters().bytes, 6 * 84);
}

#[test]
fn wrong_direction_key_fails_authentication() {
    let key_r = logged_key(SITE_LOG, "encryption responder key");
    let mut sa = inbound(SITE_TO_HUB, &key_r);
    let (_, _, mut esp) = udp_payloads(PCAP).swap_remove(4);
    assert_eq!(sa.open_in_place(&mut esp), Err(Error::AuthenticationFailed));
    assert_eq!(sa.top_seq(), 0);
}
