//! Two engines wired together in memory with a simulated clock (sans-IO pair tests).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use vgw_ike::crypto::{DhGroup, Encryption, Integrity, Prf};
use vgw_ike::message::{Identity, TrafficSelector};
use vgw_ike::proposal::{ProposalSpec, default_esp, default_ike};
use vgw_ike::{ChildConfig, Config, Endpoint, Event, Mode, Reason};

const A: &str = "198.18.0.1";
const B: &str = "198.18.0.2";

fn config(local: &str, remote: &str, psk: &str, mode: Mode) -> Config {
    let l: IpAddr = local.parse().unwrap();
    let r: IpAddr = remote.parse().unwrap();
    Config {
        local_addr: l,
        remote_addr: r,
        remote_port: 500,
        local_id: Identity::from_ip(l),
        remote_id: Identity::from_ip(r),
        psk: zeroize::Zeroizing::new(psk.as_bytes().to_vec()),
        ike: default_ike(),
        esp: default_esp(true),
        pfs: None,
        mode,
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
    }
}

struct Pair {
    a: Endpoint,
    b: Endpoint,
    now: Instant,
    events_a: Vec<Event>,
    events_b: Vec<Event>,
    drop_b_to_a: bool,
}

impl Pair {
    fn new(ca: Config, cb: Config) -> Pair {
        let now = Instant::now();
        let mut a = Endpoint::new();
        let mut b = Endpoint::new();
        a.set_config(1, ca, now);
        b.set_config(7, cb, now);
        Pair {
            a,
            b,
            now,
            events_a: vec![],
            events_b: vec![],
            drop_b_to_a: false,
        }
    }

    /// Delivers datagrams until both are quiet, then runs timers; advances time by `step` up to `total`.
    fn run(&mut self, total: Duration, step: Duration) {
        let end = self.now + total;
        while self.now < end {
            self.a.handle_timeout(self.now);
            self.b.handle_timeout(self.now);
            for _ in 0..100 {
                let mut moved = false;
                while let Some(t) = self.a.poll_transmit() {
                    moved = true;
                    let from = SocketAddr::new(A.parse().unwrap(), t.local_port);
                    self.b
                        .handle_datagram(self.now, t.remote.port(), from, &t.data);
                }
                while let Some(t) = self.b.poll_transmit() {
                    moved = true;
                    if self.drop_b_to_a {
                        continue;
                    }
                    let from = SocketAddr::new(B.parse().unwrap(), t.local_port);
                    self.a
                        .handle_datagram(self.now, t.remote.port(), from, &t.data);
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
}

fn children(events: &[Event]) -> Vec<&vgw_ike::ChildSaKeys> {
    events
        .iter()
        .filter_map(|e| {
            if let Event::ChildSaUp { keys, .. } = e {
                Some(keys)
            } else {
                None
            }
        })
        .collect()
}

fn down_reason(events: &[Event]) -> Option<Reason> {
    events.iter().find_map(|e| {
        if let Event::IkeSaDown { failure, .. } = e {
            Some(failure.reason)
        } else {
            None
        }
    })
}

#[test]
fn establishes_with_matching_keys_and_rekeys_children() {
    let mut p = Pair::new(
        config(A, B, "secret-psk", Mode::Default),
        config(B, A, "secret-psk", Mode::ResponderOnly),
    );
    p.run(Duration::from_secs(2), Duration::from_millis(100));
    let (ca, cb) = (children(&p.events_a), children(&p.events_b));
    assert_eq!(ca.len(), 1, "initiator events: {:?}", p.events_a);
    assert_eq!(cb.len(), 1, "responder events: {:?}", p.events_b);
    assert_eq!(ca[0].outbound_spi, cb[0].inbound_spi);
    assert_eq!(ca[0].inbound_spi, cb[0].outbound_spi);
    assert_eq!(*ca[0].outbound_key, *cb[0].inbound_key);
    assert_eq!(*ca[0].inbound_key, *cb[0].outbound_key);
    assert_eq!(ca[0].suite.encryption, Encryption::AesGcm16(256));
    assert!(p.a.is_established(1) && p.b.is_established(7));

    // Child SA lifetime 600 s: the rekey happens around 540 s and the old SA is deleted on both sides.
    p.run(Duration::from_secs(600), Duration::from_secs(1));
    let (ca, cb) = (children(&p.events_a), children(&p.events_b));
    assert!(
        ca.len() >= 2 && cb.len() >= 2,
        "no Child SA rekey: {} / {}",
        ca.len(),
        cb.len()
    );
    // When both ends rekeyed at once (§2.8.1) their last installed SAs need not be the same pair:
    // compare A's last with B's SA of the same SPI.
    let last_a = ca.last().unwrap();
    let last_b = cb
        .iter()
        .find(|k| k.inbound_spi == last_a.outbound_spi)
        .expect("B has A's last Child SA");
    assert_eq!(*last_a.outbound_key, *last_b.inbound_key);
    let downs = p
        .events_a
        .iter()
        .filter(|e| matches!(e, Event::ChildSaDown { .. }))
        .count();
    assert!(downs >= 1, "old Child SA not deleted");
    assert!(
        down_reason(&p.events_a).is_none(),
        "IKE SA went down: {:?}",
        p.events_a
    );
    // Liveness checks kept the SA up across 10 idle minutes.
    assert!(p.a.is_established(1) && p.b.is_established(7));
}

#[test]
fn ike_sa_rekey_keeps_the_tunnel() {
    let mut ca = config(A, B, "k", Mode::Default);
    ca.ike_lifetime = Duration::from_secs(120);
    let mut p = Pair::new(ca, config(B, A, "k", Mode::ResponderOnly));
    p.run(Duration::from_secs(300), Duration::from_secs(1));
    let ups_a = p
        .events_a
        .iter()
        .filter(|e| matches!(e, Event::IkeSaUp { rekey: true, .. }))
        .count();
    let ups_b = p
        .events_b
        .iter()
        .filter(|e| matches!(e, Event::IkeSaUp { rekey: true, .. }))
        .count();
    assert!(
        ups_a >= 1 && ups_b >= 1,
        "no IKE rekey: {ups_a} {ups_b}; {:?}",
        p.events_a
    );
    assert!(
        down_reason(&p.events_a).is_none() && down_reason(&p.events_b).is_none(),
        "{:?}",
        p.events_b
    );
    // Child SAs survive the IKE rekey; a later Child SA rekey works on the new IKE SA.
    p.a.rekey_children(1, p.now);
    p.run(Duration::from_secs(5), Duration::from_millis(100));
    assert!(children(&p.events_a).len() >= 2);
    assert!(p.a.is_established(1) && p.b.is_established(7));
}

#[test]
fn wrong_psk_is_an_authorization_error_on_both_sides() {
    let mut p = Pair::new(
        config(A, B, "one", Mode::Default),
        config(B, A, "two", Mode::ResponderOnly),
    );
    p.run(Duration::from_secs(1), Duration::from_millis(100));
    assert_eq!(down_reason(&p.events_b), Some(Reason::AuthorizationError));
    assert_eq!(down_reason(&p.events_a), Some(Reason::AuthorizationError));
}

#[test]
fn disjoint_proposals_name_both_sides() {
    let mut ca = config(A, B, "k", Mode::Default);
    ca.ike = vec![ProposalSpec {
        encryption: vec![Encryption::AesCbc(128)],
        integrity: vec![Integrity::HmacSha1_96],
        prf: vec![Prf::HmacSha1],
        dh: vec![DhGroup::Modp2048],
    }];
    let mut cb = config(B, A, "k", Mode::ResponderOnly);
    cb.ike = vec![ProposalSpec {
        encryption: vec![Encryption::AesGcm16(256)],
        integrity: vec![],
        prf: vec![Prf::HmacSha256],
        dh: vec![DhGroup::Ecp256],
    }];
    let mut p = Pair::new(ca, cb);
    p.run(Duration::from_secs(1), Duration::from_millis(100));
    // The responder's refusal is unauthenticated (RFC 7296 §2.21): reported as Refused, with the
    // failure to show while nothing carries the connection.
    let failure_b = p
        .events_b
        .iter()
        .find_map(|e| {
            if let Event::Refused {
                failure: Some(failure),
                established: false,
                ..
            } = e
            {
                Some(failure.clone())
            } else {
                None
            }
        })
        .unwrap();
    assert_eq!(failure_b.reason, Reason::NegotiationFailure);
    assert!(
        failure_b.message.contains("AES_CBC_128") && failure_b.message.contains("AES_GCM_16_256"),
        "{}",
        failure_b.message
    );
    assert_eq!(down_reason(&p.events_a), Some(Reason::NegotiationFailure));
}

#[test]
fn invalid_ke_group_is_retried() {
    let mut ca = config(A, B, "k", Mode::Default);
    ca.ike[0].dh = vec![DhGroup::Ecp256, DhGroup::Modp2048];
    ca.ike.truncate(1);
    let mut cb = config(B, A, "k", Mode::ResponderOnly);
    cb.ike[0].dh = vec![DhGroup::Modp2048];
    cb.ike.truncate(1);
    let mut p = Pair::new(ca, cb);
    p.run(Duration::from_secs(2), Duration::from_millis(100));
    assert!(p.a.is_established(1), "{:?}", p.events_a);
}

#[test]
fn dead_peer_is_detected_within_the_timeout() {
    let mut ca = config(A, B, "k", Mode::Default);
    ca.dpd_timeout = Duration::from_secs(30);
    let mut p = Pair::new(ca, config(B, A, "k", Mode::ResponderOnly));
    p.run(Duration::from_secs(1), Duration::from_millis(100));
    assert!(p.a.is_established(1));
    p.drop_b_to_a = true;
    let started = p.now;
    let mut detected = None;
    while p.now < started + Duration::from_secs(60) {
        p.run(Duration::from_millis(500), Duration::from_millis(500));
        if down_reason(&p.events_a) == Some(Reason::PeerDead) {
            detected = Some(p.now - started);
            break;
        }
    }
    let took = detected.expect("peer death not detected");
    eprintln!("dead after {took:?}");
    // Probe after 10 s of silence, give up 30 s later.
    assert!(took <= Duration::from_secs(31), "took {took:?}");
    // And it comes back when the peer answers again.
    p.drop_b_to_a = false;
    p.run(Duration::from_secs(40), Duration::from_secs(1));
    assert!(
        p.a.is_established(1),
        "did not re-establish: {:?}",
        &p.events_a[p.events_a.len().saturating_sub(5)..]
    );
}

#[test]
fn policy_based_selectors_give_one_child_per_pair() {
    let pairs = |swap: bool| {
        let p1 = (
            TrafficSelector::from_prefix("10.2.1.0".parse().unwrap(), 24),
            TrafficSelector::from_prefix("10.1.1.0".parse().unwrap(), 24),
        );
        let p2 = (
            TrafficSelector::from_prefix("10.2.2.0".parse().unwrap(), 24),
            TrafficSelector::from_prefix("10.1.2.0".parse().unwrap(), 24),
        );
        [p1, p2]
            .iter()
            .map(|(l, r)| {
                if swap {
                    ChildConfig {
                        local: vec![*r],
                        remote: vec![*l],
                    }
                } else {
                    ChildConfig {
                        local: vec![*l],
                        remote: vec![*r],
                    }
                }
            })
            .collect::<Vec<_>>()
    };
    let mut ca = config(A, B, "k", Mode::Default);
    ca.children = pairs(false);
    let mut cb = config(B, A, "k", Mode::ResponderOnly);
    cb.children = pairs(true);
    let mut p = Pair::new(ca, cb);
    p.run(Duration::from_secs(2), Duration::from_millis(100));
    let ca = children(&p.events_a);
    assert_eq!(ca.len(), 2, "{:?}", p.events_a);
    assert_ne!(ca[0].local_ts, ca[1].local_ts);
}

#[test]
fn fragmented_messages_are_reassembled() {
    // A tiny fragment size forces IKE_AUTH and later exchanges into RFC 7383 fragments.
    let mut ca = config(A, B, "k", Mode::Default);
    ca.fragment_size = 160;
    let mut cb = config(B, A, "k", Mode::ResponderOnly);
    cb.fragment_size = 160;
    let mut p = Pair::new(ca, cb);
    p.run(Duration::from_secs(2), Duration::from_millis(100));
    let (ca, cb) = (children(&p.events_a), children(&p.events_b));
    assert_eq!(ca.len(), 1, "{:?}", p.events_a);
    assert_eq!(*ca[0].outbound_key, *cb[0].inbound_key);
    p.a.rekey_children(1, p.now);
    p.run(Duration::from_secs(3), Duration::from_millis(100));
    assert!(children(&p.events_a).len() >= 2);
    assert!(p.a.is_established(1) && p.b.is_established(7));
}

#[test]
fn simultaneous_child_rekeys_leave_one_sa() {
    let mut p = Pair::new(
        config(A, B, "k", Mode::Default),
        config(B, A, "k", Mode::Default),
    );
    p.run(Duration::from_secs(2), Duration::from_millis(100));
    assert!(p.a.is_established(1) && p.b.is_established(7));
    let now = p.now;
    p.a.rekey_children(1, now);
    p.b.rekey_children(7, now);
    p.run(Duration::from_secs(5), Duration::from_millis(100));
    // Count live Child SAs on each side: ups minus downs.
    let live = |events: &[Event]| {
        let mut spis = std::collections::HashSet::new();
        for e in events {
            match e {
                Event::ChildSaUp { keys, .. } => {
                    spis.insert(keys.inbound_spi);
                }
                Event::ChildSaDown { inbound_spi, .. } => {
                    spis.remove(inbound_spi);
                }
                _ => {}
            }
        }
        spis
    };
    let (la, lb) = (live(&p.events_a), live(&p.events_b));
    assert_eq!(la.len(), 1, "side A keeps {la:?}");
    assert_eq!(lb.len(), 1, "side B keeps {lb:?}");
    let a_up = children(&p.events_a)
        .into_iter()
        .find(|k| la.contains(&k.inbound_spi))
        .unwrap();
    assert!(lb.contains(&a_up.outbound_spi), "the surviving SAs pair up");
}

#[test]
fn cookies_under_half_open_pressure() {
    // 64 half-open IKE SAs (initiators that never continue) make the responder ask for a COOKIE (§2.6);
    // a real initiator echoes it and gets through.
    let mut p = Pair::new(
        config(A, B, "k", Mode::ResponderOnly),
        config(B, A, "k", Mode::ResponderOnly),
    );
    let from: SocketAddr = format!("{A}:500").parse().unwrap();
    for _ in 0..64 {
        let mut flood = Endpoint::new();
        flood.set_config(99, config(A, B, "k", Mode::Default), p.now);
        flood.handle_timeout(p.now);
        while let Some(t) = flood.poll_transmit() {
            p.b.handle_datagram(p.now, 500, from, &t.data);
        }
    }
    while p.b.poll_transmit().is_some() {}
    p.a.set_config(1, config(A, B, "k", Mode::Default), p.now);
    p.a.initiate(1, p.now);
    p.run(Duration::from_secs(2), Duration::from_millis(100));
    let asked = p
        .events_a
        .iter()
        .any(|e| matches!(e, Event::Log { message, .. } if message.contains("COOKIE")));
    assert!(asked, "no COOKIE was requested: {:?}", p.events_a);
    assert!(p.a.is_established(1), "{:?}", p.events_a);
}

#[test]
fn initial_contact_after_a_peer_restart_drops_the_stale_sa() {
    let mut p = Pair::new(
        config(A, B, "k", Mode::ResponderOnly),
        config(B, A, "k", Mode::Default),
    );
    p.run(Duration::from_secs(2), Duration::from_millis(100));
    assert!(p.a.is_established(1));
    // B restarts: a fresh engine with no memory of the old IKE SA initiates again.
    p.b = Endpoint::new();
    p.b.set_config(7, config(B, A, "k", Mode::Default), p.now);
    let before = p.events_a.len();
    p.run(Duration::from_secs(2), Duration::from_millis(100));
    let dropped = p.events_a[before..]
        .iter()
        .any(|e| matches!(e, Event::Log { message, .. } if message.contains("INITIAL_CONTACT")));
    assert!(dropped, "{:?}", &p.events_a[before..]);
    assert!(p.a.is_established(1) && p.b.is_established(7));
    assert!(
        down_reason(&p.events_a[before..]).is_none(),
        "the connection never went down"
    );
}

/// The data plane asks for a rekey when a Child SA nears its volume limit (either direction's
/// SPI names it); a second request while that rekey runs starts nothing.
#[test]
fn volume_rekey_replaces_the_named_child_sa_once() {
    let mut p = Pair::new(
        config(A, B, "k", Mode::Default),
        config(B, A, "k", Mode::ResponderOnly),
    );
    p.run(Duration::from_secs(1), Duration::from_millis(100));
    let first = children(&p.events_a)[0];
    let (first_in, first_out) = (first.inbound_spi, first.outbound_spi);
    assert!(!p.a.rekey_child_sa(1, 0x0bad_cafe, p.now), "unknown SPI");
    // The responder's inbound SA reached its limit: it names the SA by its own inbound SPI,
    // which is the initiator's outbound one.
    assert!(p.b.rekey_child_sa(7, first_out, p.now));
    assert!(!p.b.rekey_child_sa(7, first_in, p.now), "already rekeying");
    p.run(Duration::from_secs(2), Duration::from_millis(100));
    let after = children(&p.events_a);
    assert_eq!(after.len(), 2, "{:?}", p.events_a);
    assert_eq!(
        p.events_a
            .iter()
            .filter(|e| matches!(
                e,
                Event::ChildSaUp {
                    replaces: Some(_),
                    ..
                }
            ))
            .count(),
        1
    );
    assert!(after[1].inbound_spi != first_in);
    // The new SA can be rekeyed by volume in turn, by its outbound SPI on the initiator.
    let next_out = after[1].outbound_spi;
    assert!(p.a.rekey_child_sa(1, next_out, p.now));
    p.run(Duration::from_secs(2), Duration::from_millis(100));
    assert_eq!(children(&p.events_a).len(), 3);
    assert!(down_reason(&p.events_a).is_none() && down_reason(&p.events_b).is_none());
}
