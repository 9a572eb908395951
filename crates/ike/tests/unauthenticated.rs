//! RFC 7296 §2.21 and §2.6: unauthenticated messages never change the state of an established IKE SA
//! or of a connection. A pair of engines is established, then forged datagrams "from" the peer's
//! address are injected (an IKE_SA_INIT with a refused proposal, an unprotected IKE_SA_INIT error
//! response carrying the established SA's SPI, INFORMATIONAL requests that fail integrity or name an
//! unknown SPI, and a complete second IKE SA from an attacker with the wrong key). None may produce
//! IkeSaDown or ChildSaDown, each is reported as `Event::Refused`, and the SA keeps working.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use vgw_ike::crypto::{DhGroup, Encryption, Integrity, Prf};
use vgw_ike::message::{
    Header, Identity, Message, Notify, Payload, TrafficSelector, exchange, flags, notify, protocol,
};
use vgw_ike::proposal::{ProposalSpec, default_esp, default_ike};
use vgw_ike::{ChildConfig, Config, Endpoint, Event, Mode};

const A: &str = "198.18.0.1";
const B: &str = "198.18.0.2";

fn config(local: &str, remote: &str, psk: &str, mode: Mode) -> Config {
    let l: IpAddr = local.parse().unwrap();
    let r: IpAddr = remote.parse().unwrap();
    Config {
        local_addr: l,
        remote_addr: r,
        local_id: Identity::from_ip(l),
        remote_id: Identity::from_ip(r),
        psk: zeroize::Zeroizing::new(psk.as_bytes().to_vec()),
        ike: default_ike(),
        esp: default_esp(true),
        mode,
        children: vec![ChildConfig {
            local: vec![TrafficSelector::any_v4()],
            remote: vec![TrafficSelector::any_v4()],
        }],
        dpd_timeout: Duration::from_secs(30),
        ..Default::default()
    }
}

/// Engine `a` (connection 1) and its peer `b` (connection 7); `c` is an attacker that claims B's
/// address. Datagrams from `a` reach both `b` and `c` (each ignores what is not its own).
struct Net {
    a: Endpoint,
    b: Endpoint,
    c: Option<Endpoint>,
    now: Instant,
    events_a: Vec<Event>,
    events_b: Vec<Event>,
    /// The last datagram `b` sent to `a` (to learn the SPIs an eavesdropper would see).
    last_b_to_a: Option<Vec<u8>>,
}

impl Net {
    fn run(&mut self, total: Duration, step: Duration) {
        let end = self.now + total;
        while self.now < end {
            self.a.handle_timeout(self.now);
            self.b.handle_timeout(self.now);
            if let Some(c) = self.c.as_mut() {
                c.handle_timeout(self.now);
            }
            for _ in 0..100 {
                let mut moved = false;
                while let Some(t) = self.a.poll_transmit() {
                    moved = true;
                    let from = SocketAddr::new(A.parse().unwrap(), t.local_port);
                    self.b
                        .handle_datagram(self.now, t.remote.port(), from, &t.data);
                    if let Some(c) = self.c.as_mut() {
                        c.handle_datagram(self.now, t.remote.port(), from, &t.data);
                    }
                }
                while let Some(t) = self.b.poll_transmit() {
                    moved = true;
                    self.last_b_to_a = Some(t.data.clone());
                    let from = SocketAddr::new(B.parse().unwrap(), t.local_port);
                    self.a
                        .handle_datagram(self.now, t.remote.port(), from, &t.data);
                }
                if let Some(c) = self.c.as_mut() {
                    while let Some(t) = c.poll_transmit() {
                        moved = true;
                        let from = SocketAddr::new(B.parse().unwrap(), t.local_port);
                        self.a
                            .handle_datagram(self.now, t.remote.port(), from, &t.data);
                    }
                    while c.poll_event().is_some() {}
                }
                if !moved {
                    break;
                }
            }
            while let Some(e) = self.a.poll_event() {
                self.events_a.push(e);
            }
            while let Some(e) = self.b.poll_event() {
                self.events_b.push(e);
            }
            self.now += step;
        }
    }

    /// Delivers a forged datagram to `a` as if from B's address and `port`.
    fn forge(&mut self, port: u16, local_port: u16, data: &[u8]) {
        let from = SocketAddr::new(B.parse().unwrap(), port);
        self.a.handle_datagram(self.now, local_port, from, data);
        while let Some(e) = self.a.poll_event() {
            self.events_a.push(e);
        }
        // Whatever `a` answers to the forger goes nowhere (the forger is not on the path).
        while self.a.poll_transmit().is_some() {}
    }
}

fn downs(events: &[Event]) -> Vec<&Event> {
    events
        .iter()
        .filter(|e| matches!(e, Event::IkeSaDown { .. } | Event::ChildSaDown { .. }))
        .collect()
}

fn refused(events: &[Event]) -> Vec<(&'static str, &'static str, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Refused {
                exchange,
                reason,
                established,
                ..
            } => Some((*exchange, *reason, *established)),
            _ => None,
        })
        .collect()
}

fn child_ups(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::ChildSaUp { .. }))
        .count()
}

/// An IKE_SA_INIT request with a 3DES/SHA-1/MODP-1024 proposal, which vgw's defaults refuse.
fn refused_init() -> Vec<u8> {
    let weak = ProposalSpec {
        encryption: vec![Encryption::TripleDes],
        integrity: vec![Integrity::HmacSha1_96],
        prf: vec![Prf::HmacSha1],
        dh: vec![DhGroup::Modp1024],
    };
    Message {
        header: Header {
            spi_i: 0x1122_3344_5566_7788,
            spi_r: 0,
            exchange: exchange::IKE_SA_INIT,
            flags: flags::INITIATOR,
            message_id: 0,
            ..Default::default()
        },
        payloads: vec![
            Payload::Sa(vec![weak.to_proposal(1, protocol::IKE, vec![])]),
            Payload::Ke {
                group: DhGroup::Modp1024.id(),
                data: vec![7; 128],
            },
            Payload::Nonce(vec![9; 32]),
        ],
    }
    .emit()
}

#[test]
fn forged_unauthenticated_messages_change_nothing() {
    let now = Instant::now();
    let mut a = Endpoint::new();
    let mut b = Endpoint::new();
    a.set_config(1, config(A, B, "right-psk", Mode::Default), now);
    b.set_config(7, config(B, A, "right-psk", Mode::ResponderOnly), now);
    let mut net = Net {
        a,
        b,
        c: None,
        now,
        events_a: vec![],
        events_b: vec![],
        last_b_to_a: None,
    };
    net.run(Duration::from_secs(2), Duration::from_millis(100));
    assert!(net.a.is_established(1) && net.b.is_established(7));
    assert_eq!(child_ups(&net.events_a), 1, "{:?}", net.events_a);
    let seen = Message::parse(net.last_b_to_a.as_deref().unwrap())
        .unwrap()
        .header;
    let (spi_i, spi_r) = (seen.spi_i, seen.spi_r);
    net.events_a.clear();
    net.events_b.clear();

    // 1. IKE_SA_INIT with a proposal vgw refuses, from the peer's address (port 500 and another).
    let init = refused_init();
    net.forge(500, 500, &init);
    net.forge(40_000, 500, &init);
    // 2. An unprotected IKE_SA_INIT "response" with NO_PROPOSAL_CHOSEN for the established SA (a
    //    forger who saw the SPIs): only a half-open exchange of ours may act on it.
    let error_response = Message {
        header: Header {
            spi_i,
            spi_r: 0,
            exchange: exchange::IKE_SA_INIT,
            flags: flags::RESPONSE,
            message_id: 0,
            ..Default::default()
        },
        payloads: vec![Payload::Notify(Notify::new(
            notify::NO_PROPOSAL_CHOSEN,
            vec![],
        ))],
    }
    .emit();
    net.forge(500, 500, &error_response);
    // 3. INFORMATIONAL requests with the established SA's SPIs whose SK payload is not protected
    //    with its keys (a forged DELETE), at the next message IDs and at the one just answered.
    for message_id in [0u32, 1, 2, 3, u32::MAX] {
        let forged = Message {
            header: Header {
                spi_i,
                spi_r,
                exchange: exchange::INFORMATIONAL,
                flags: 0,
                message_id,
                ..Default::default()
            },
            payloads: vec![Payload::Sk {
                first: 42, // DELETE
                body: vec![0x5a; 48],
            }],
        }
        .emit();
        net.forge(4500, 4500, &forged);
        net.forge(500, 500, &forged);
    }
    // 4. INFORMATIONAL for an IKE SA nobody has.
    let unknown = Message {
        header: Header {
            spi_i: 0xdead_beef_0000_0001,
            spi_r: 0xdead_beef_0000_0002,
            exchange: exchange::INFORMATIONAL,
            flags: flags::INITIATOR,
            message_id: 5,
            ..Default::default()
        },
        payloads: vec![Payload::Sk {
            first: 42,
            body: vec![1; 48],
        }],
    }
    .emit();
    net.forge(4500, 4500, &unknown);
    // 5. Garbage.
    net.forge(500, 500, &[0xff; 13]);

    // 6. An attacker with the peer's address and the wrong key runs a whole IKE_SA_INIT and IKE_AUTH:
    //    the second (new) SA fails before it authenticates; the established one carries on.
    let mut c = Endpoint::new();
    c.set_config(9, config(B, A, "wrong-psk", Mode::Default), net.now);
    c.initiate(9, net.now);
    net.c = Some(c);
    net.run(Duration::from_secs(3), Duration::from_millis(100));
    net.c = None;

    assert!(
        downs(&net.events_a).is_empty(),
        "a forged message took something down: {:?}",
        downs(&net.events_a)
    );
    assert!(net.a.is_established(1), "the IKE SA was lost");
    let reasons = refused(&net.events_a);
    for wanted in [
        ("IKE_SA_INIT", "NO_PROPOSAL_CHOSEN"),
        ("IKE_SA_INIT", "UNEXPECTED_RESPONSE"),
        ("INFORMATIONAL", "INTEGRITY_CHECK_FAILED"),
        ("INFORMATIONAL", "UNEXPECTED_MESSAGE_ID"),
        ("INFORMATIONAL", "UNKNOWN_SPI"),
        ("-", "MALFORMED"),
        ("IKE_AUTH", "AUTHORIZATION_ERROR"),
    ] {
        assert!(
            reasons.iter().any(|(e, r, _)| (*e, *r) == wanted),
            "no Refused {wanted:?} in {reasons:?}"
        );
    }
    assert!(
        reasons.iter().all(|(_, _, established)| *established),
        "every refusal happened while the SA was established: {reasons:?}"
    );
    // The refused IKE_SA_INIT carries the proposal detail, for a connection that is not connected.
    assert!(net.events_a.iter().any(|e| matches!(e,
        Event::Refused { reason: "NO_PROPOSAL_CHOSEN", failure: Some(f), .. }
            if f.message.contains("3DES") || f.message.contains("3des"))));

    // The SA still works: liveness checks are answered and a Child SA rekey completes on both sides.
    net.a.rekey_children(1, net.now);
    net.run(Duration::from_secs(70), Duration::from_millis(500));
    assert!(net.a.is_established(1) && net.b.is_established(7));
    assert!(
        child_ups(&net.events_a) >= 1 && child_ups(&net.events_b) >= 1,
        "no Child SA rekey after the forgeries: {:?}",
        net.events_a
    );
    assert!(
        !net.events_a
            .iter()
            .any(|e| matches!(e, Event::IkeSaDown { .. })),
        "{:?}",
        net.events_a
    );
}

/// Not connected: the same refused IKE_SA_INIT is the connection's evidence (the failure is given).
#[test]
fn refused_init_explains_a_connection_that_is_not_connected() {
    let now = Instant::now();
    let mut a = Endpoint::new();
    a.set_config(1, config(A, B, "right-psk", Mode::ResponderOnly), now);
    a.handle_datagram(
        now,
        500,
        SocketAddr::new(B.parse().unwrap(), 500),
        &refused_init(),
    );
    let events: Vec<Event> = std::iter::from_fn(|| a.poll_event()).collect();
    assert!(
        events.iter().any(|e| matches!(e,
            Event::Refused { conn: Some(1), reason: "NO_PROPOSAL_CHOSEN", established: false, failure: Some(f), .. }
                if f.reason == vgw_ike::Reason::NegotiationFailure)),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| matches!(e, Event::IkeSaDown { .. })));
    // The refusal itself is sent (NO_PROPOSAL_CHOSEN, §2.21.1).
    assert!(a.poll_transmit().is_some());
}
