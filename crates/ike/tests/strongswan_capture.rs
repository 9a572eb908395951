//! Known-answer tests against a real strongSwan 5.9.8 exchange (tests/data/README.md): every IKE packet of
//! the capture parses and re-emits byte for byte; SKEYSEED and SK_* (RFC 7296 §2.14) come out as charon
//! logged them; the IKE_AUTH SK payloads decrypt (§3.14); both PSK AUTH values recompute (§2.15); the
//! Child SA keys match (§2.17).

use vgw_ike::crypto::{
    DhGroup, Encryption, IkeKeys, IkeSuite, Integrity, Prf, SkCipher, child_keymat, psk_auth,
};
use vgw_ike::message::{Message, Payload, exchange, parse_payloads};

const PCAP: &[u8] = include_bytes!("data/ikev2-psk-libipsec.pcap");
const HUB_LOG: &str = include_str!("data/charon-hub.keys.log");
const PSK: &[u8] = b"lab-psk-not-secret-0123456789abcdef";

/// One UDP datagram carrying IKE.
#[derive(Debug)]
struct IkePacket {
    src_port: u16,
    dst_port: u16,
    data: Vec<u8>,
}

/// A minimal pcap (Ethernet, IPv4, UDP) reader: just enough for this capture.
fn ike_packets() -> Vec<IkePacket> {
    let magic = u32::from_le_bytes(PCAP[0..4].try_into().unwrap());
    assert_eq!(magic, 0xa1b2_c3d4, "little-endian microsecond pcap");
    let linktype = u32::from_le_bytes(PCAP[20..24].try_into().unwrap());
    assert_eq!(linktype, 1, "Ethernet");
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= PCAP.len() {
        let incl = u32::from_le_bytes(PCAP[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &PCAP[at + 16..at + 16 + incl];
        at += 16 + incl;
        if frame[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        if ip[9] != 17 {
            continue;
        }
        let udp = &ip[ihl..total];
        let src_port = u16::from_be_bytes([udp[0], udp[1]]);
        let dst_port = u16::from_be_bytes([udp[2], udp[3]]);
        let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
        let mut payload = &udp[8..ulen];
        if dst_port == 4500 || src_port == 4500 {
            // RFC 3948 §2.2: IKE on 4500 starts with the 4-octet non-ESP marker; anything else is ESP.
            if payload.len() < 4 || payload[..4] != [0; 4] {
                continue;
            }
            payload = &payload[4..];
        } else if dst_port != 500 && src_port != 500 {
            continue;
        }
        out.push(IkePacket {
            src_port,
            dst_port,
            data: payload.to_vec(),
        });
    }
    out
}

/// The `n`th (0-based) hex dump labelled `label` in a charon level-4 log.
fn log_bytes(log: &str, label: &str, n: usize) -> Vec<u8> {
    let lines: Vec<&str> = log.lines().collect();
    let starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains(&format!("] {label} => ")))
        .map(|(i, _)| i)
        .collect();
    let i = *starts
        .get(n)
        .unwrap_or_else(|| panic!("no dump #{n} of {label}"));
    let header = lines[i];
    let len: usize = header
        .split(" => ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    let mut out = Vec::with_capacity(len);
    for l in &lines[i + 1..] {
        if out.len() >= len {
            break;
        }
        // "20:09:17 16[IKE]   16: BA E9 ..  ascii"
        let after = l.split_once("]").unwrap().1;
        let (_, hex) = after.split_once(": ").unwrap();
        let hex = hex.split("  ").next().unwrap();
        for tok in hex.split(' ').filter(|t| !t.is_empty()) {
            out.push(u8::from_str_radix(tok, 16).unwrap());
        }
    }
    out.truncate(len);
    assert_eq!(out.len(), len);
    out
}

/// The capture's IKE SA: AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048.
const SUITE: IkeSuite = IkeSuite {
    encryption: Encryption::AesCbc(256),
    integrity: Some(Integrity::HmacSha256_128),
    prf: Prf::HmacSha256,
    dh: DhGroup::Modp2048,
};

fn nonce(m: &Message) -> Vec<u8> {
    m.payloads
        .iter()
        .find_map(|p| {
            if let Payload::Nonce(n) = p {
                Some(n.clone())
            } else {
                None
            }
        })
        .expect("nonce")
}

#[test]
fn every_packet_parses_and_reemits_exactly() {
    let packets = ike_packets();
    assert_eq!(packets.len(), 14);
    for (i, p) in packets.iter().enumerate() {
        let m = Message::parse(&p.data).unwrap_or_else(|e| panic!("packet {i}: {e}"));
        // IKE_SA_INIT on 500, everything after on 4500 (libipsec always asks for encapsulation).
        let port = if m.header.exchange == exchange::IKE_SA_INIT {
            500
        } else {
            4500
        };
        assert!(
            p.src_port == port && p.dst_port == port,
            "packet {i} on {}->{}",
            p.src_port,
            p.dst_port
        );
        assert_eq!(
            m.emit(),
            p.data,
            "packet {i} ({}) re-encodes differently",
            exchange::name(m.header.exchange)
        );
    }
}

#[test]
fn keys_decryption_and_auth_match_strongswan() {
    let packets = ike_packets();
    let init_req = Message::parse(&packets[0].data).unwrap();
    let init_resp = Message::parse(&packets[1].data).unwrap();
    let (ni, nr) = (nonce(&init_req), nonce(&init_resp));
    let shared = log_bytes(HUB_LOG, "shared Diffie Hellman secret", 0);
    let keys = IkeKeys::derive(
        &SUITE,
        &ni,
        &nr,
        &shared,
        init_resp.header.spi_i,
        init_resp.header.spi_r,
    );
    for (label, ours) in [
        ("Sk_d secret", &keys.d),
        ("Sk_ai secret", &keys.ai),
        ("Sk_ar secret", &keys.ar),
        ("Sk_ei secret", &keys.ei),
        ("Sk_er secret", &keys.er),
        ("Sk_pi secret", &keys.pi),
        ("Sk_pr secret", &keys.pr),
    ] {
        assert_eq!(
            ours.as_slice(),
            log_bytes(HUB_LOG, label, 0).as_slice(),
            "{label}"
        );
    }

    // IKE_AUTH request (initiator keys) and response (responder keys).
    let inbound = [
        SkCipher::new(&SUITE, &keys.ei, &keys.ai),
        SkCipher::new(&SUITE, &keys.er, &keys.ar),
    ];
    let mut inner = Vec::new();
    for (i, cipher) in inbound.iter().enumerate() {
        let raw = &packets[2 + i].data;
        let m = Message::parse(raw).unwrap();
        let Some(Payload::Sk { first, body }) = m.payloads.last() else {
            panic!("no SK payload")
        };
        let sk_start = m.header.length as usize - body.len() - 4;
        let plain = cipher
            .open(&raw[..sk_start + 4], body)
            .expect("SK payload decrypts");
        inner.push(parse_payloads(*first, &plain).expect("inner payloads parse"));
    }
    let id_body = |p: &[Payload], initiator: bool| -> Vec<u8> {
        p.iter()
            .find_map(|x| match x {
                Payload::IdI(id) if initiator => Some(id.clone()),
                Payload::IdR(id) if !initiator => Some(id.clone()),
                _ => None,
            })
            .map(|id| [vec![id.kind, 0, 0, 0], id.data].concat())
            .expect("ID payload")
    };
    let auth = |p: &[Payload]| -> Vec<u8> {
        p.iter()
            .find_map(|x| {
                if let Payload::Auth { data, .. } = x {
                    Some(data.clone())
                } else {
                    None
                }
            })
            .expect("AUTH")
    };
    let ours_i = psk_auth(
        SUITE.prf,
        PSK,
        &packets[0].data,
        &nr,
        &keys.pi,
        &id_body(&inner[0], true),
    );
    assert_eq!(
        ours_i.as_slice(),
        auth(&inner[0]).as_slice(),
        "initiator AUTH"
    );
    let ours_r = psk_auth(
        SUITE.prf,
        PSK,
        &packets[1].data,
        &ni,
        &keys.pr,
        &id_body(&inner[1], false),
    );
    assert_eq!(
        ours_r.as_slice(),
        auth(&inner[1]).as_slice(),
        "responder AUTH"
    );

    // Child SA keys (aes256gcm16: 36 bytes per direction, initiator's first).
    let km = child_keymat(SUITE.prf, &keys.d, None, &ni, &nr, 72);
    let logged_i = log_bytes(HUB_LOG, "encryption initiator key", 0);
    let logged_r = log_bytes(HUB_LOG, "encryption responder key", 0);
    assert_eq!(&km[..36], logged_i.as_slice());
    assert_eq!(&km[36..], logged_r.as_slice());
}
