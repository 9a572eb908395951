//! A Child SA deleted by the peer while the IKE SA stays (RFC 7296 §1.4.1): the engine reports at
//! once that nothing carries the connection (`Event::ChildSasGone`, reason
//! CHILD_SA_DELETED_BY_PEER) and, unless it may only respond, re-creates the Child SA with
//! CREATE_CHILD_SA, backing off and finally replacing the IKE SA when the peer keeps refusing.
//! Also: a TS_UNACCEPTABLE failure names both sides' traffic selectors.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use vgw_ike::crypto::DhGroup;
use vgw_ike::message::{Identity, TrafficSelector};
use vgw_ike::proposal::{default_esp, default_ike};
use vgw_ike::{ChildConfig, Config, Endpoint, Event, Mode, Reason};

const A: &str = "198.18.0.1";
const B: &str = "198.18.0.2";

fn config(local: &str, remote: &str, mode: Mode) -> Config {
    let l: IpAddr = local.parse().unwrap();
    let r: IpAddr = remote.parse().unwrap();
    Config {
        local_addr: l,
        remote_addr: r,
        local_id: Identity::from_ip(l),
        remote_id: Identity::from_ip(r),
        psk: zeroize::Zeroizing::new(b"child-psk".to_vec()),
        ike: default_ike(),
        esp: default_esp(true),
        mode,
        children: vec![ChildConfig {
            local: vec![TrafficSelector::any_v4()],
            remote: vec![TrafficSelector::any_v4()],
        }],
        ..Default::default()
    }
}

fn net(x: &str) -> TrafficSelector {
    let (addr, len) = x.split_once('/').unwrap();
    let base: std::net::Ipv4Addr = addr.parse().unwrap();
    let len: u32 = len.parse().unwrap();
    let start = u32::from(base);
    let end = start | (u32::MAX.checked_shr(len).unwrap_or(0));
    TrafficSelector {
        start: IpAddr::V4(start.into()),
        end: IpAddr::V4(end.into()),
        ..TrafficSelector::any_v4()
    }
}

struct Pair {
    a: Endpoint,
    b: Endpoint,
    now: Instant,
    events_a: Vec<(Instant, Event)>,
    events_b: Vec<(Instant, Event)>,
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
        }
    }

    fn pump(&mut self) {
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
                let from = SocketAddr::new(B.parse().unwrap(), t.local_port);
                self.a
                    .handle_datagram(self.now, t.remote.port(), from, &t.data);
            }
            if !moved {
                break;
            }
        }
        while let Some(e) = self.a.poll_event() {
            self.events_a.push((self.now, e));
        }
        while let Some(e) = self.b.poll_event() {
            self.events_b.push((self.now, e));
        }
    }

    fn run(&mut self, total: Duration, step: Duration) {
        let end = self.now + total;
        while self.now < end {
            self.a.handle_timeout(self.now);
            self.b.handle_timeout(self.now);
            self.pump();
            self.now += step;
        }
    }

    /// B deletes its Child SA (what `swanctl --terminate --child` does); returns when it did.
    fn b_deletes_child(&mut self) -> Instant {
        let spi = self
            .events_b
            .iter()
            .rev()
            .find_map(|(_, e)| match e {
                Event::ChildSaUp { keys, .. } => Some(keys.inbound_spi),
                _ => None,
            })
            .expect("B has a Child SA");
        assert!(self.b.delete_child_sa(7, spi, self.now));
        let at = self.now;
        self.pump();
        at
    }
}

fn ups_since(events: &[(Instant, Event)], since: Instant) -> Vec<&vgw_ike::ChildSaKeys> {
    events
        .iter()
        .filter(|(t, _)| *t >= since)
        .filter_map(|(_, e)| match e {
            Event::ChildSaUp {
                keys,
                replaces: None,
                ..
            } => Some(keys),
            _ => None,
        })
        .collect()
}

fn gone(events: &[(Instant, Event)]) -> Option<(Instant, &vgw_ike::Failure, bool)> {
    events.iter().find_map(|(t, e)| match e {
        Event::ChildSasGone {
            failure,
            recreating,
            ..
        } => Some((*t, failure, *recreating)),
        _ => None,
    })
}

#[test]
fn peer_deleting_the_last_child_sa_is_reported_and_recreated() {
    let mut p = Pair::new(
        config(A, B, Mode::Default),
        config(B, A, Mode::ResponderOnly),
    );
    p.run(Duration::from_secs(2), Duration::from_millis(100));
    assert_eq!(
        ups_since(&p.events_a, p.now - Duration::from_secs(10)).len(),
        1
    );
    let at = p.b_deletes_child();

    // At once (same instant): ChildSaDown, then ChildSasGone naming the DELETE.
    let (t, failure, recreating) = gone(&p.events_a).expect("no ChildSasGone");
    assert_eq!(t, at);
    assert!(recreating);
    assert_eq!(failure.reason, Reason::ChildSaDeletedByPeer);
    assert_eq!(failure.reason.as_str(), "CHILD_SA_DELETED_BY_PEER");
    assert_eq!(failure.notify.as_deref(), Some("DELETE"));
    assert!(
        failure.message.contains("INFORMATIONAL DELETE"),
        "{}",
        failure.message
    );
    assert!(
        p.events_a
            .iter()
            .any(|(t, e)| *t == at && matches!(e, Event::ChildSaDown { .. }))
    );
    assert!(p.a.is_established(1), "the IKE SA stays");
    assert!(
        !p.events_a
            .iter()
            .any(|(_, e)| matches!(e, Event::IkeSaDown { .. }))
    );

    // Re-created with CREATE_CHILD_SA on the same IKE SA, keys agree on both ends.
    p.run(Duration::from_secs(2), Duration::from_millis(100));
    let (ua, ub) = (ups_since(&p.events_a, at), ups_since(&p.events_b, at));
    assert_eq!(ua.len(), 1, "A re-created no Child SA: {:?}", p.events_a);
    assert_eq!(ub.len(), 1);
    assert_eq!(ua[0].outbound_spi, ub[0].inbound_spi);
    assert_eq!(*ua[0].outbound_key, *ub[0].inbound_key);
    // Deleted again within a minute (a peer that cannot keep it): the next re-creation waits longer.
    let again = p.b_deletes_child();
    p.run(Duration::from_millis(1500), Duration::from_millis(100));
    assert!(
        ups_since(&p.events_a, again).is_empty(),
        "re-created again after less than 1.5 s"
    );
    p.run(Duration::from_secs(2), Duration::from_millis(100));
    assert_eq!(ups_since(&p.events_a, again).len(), 1, "{:?}", p.events_a);
    let ike_ups = p
        .events_a
        .iter()
        .filter(|(_, e)| matches!(e, Event::IkeSaUp { .. }))
        .count();
    assert_eq!(ike_ups, 1, "no new IKE SA was needed");
}

#[test]
fn responder_only_waits_for_the_peer() {
    let mut p = Pair::new(
        config(A, B, Mode::ResponderOnly),
        config(B, A, Mode::Default),
    );
    p.run(Duration::from_secs(2), Duration::from_millis(100));
    assert!(p.a.is_established(1));
    // A (ResponderOnly) is the one whose peer deletes: swap roles by letting B delete.
    let at = p.b_deletes_child();
    let (_, failure, recreating) = gone(&p.events_a).expect("no ChildSasGone");
    assert!(!recreating);
    assert!(
        failure.message.contains("ResponderOnly"),
        "{}",
        failure.message
    );
    p.run(Duration::from_secs(10), Duration::from_millis(200));
    assert!(
        ups_since(&p.events_a, at).is_empty(),
        "ResponderOnly initiated"
    );
}

#[test]
fn refused_recreation_backs_off_then_replaces_the_ike_sa() {
    // A uses PFS for new Child SAs; B accepts no PFS group, so CREATE_CHILD_SA is refused while the
    // IKE_AUTH Child SA (no KE, §1.2) is fine.
    let mut ca = config(A, B, Mode::Default);
    ca.pfs = Some(DhGroup::Ecp256);
    let mut cb = config(B, A, Mode::ResponderOnly);
    cb.esp = default_esp(false);
    let mut p = Pair::new(ca, cb);
    p.run(Duration::from_secs(2), Duration::from_millis(100));
    assert!(p.a.is_established(1));
    let at = p.b_deletes_child();
    assert!(gone(&p.events_a).is_some());
    p.run(Duration::from_secs(15), Duration::from_millis(100));
    let retries: Vec<Instant> = p
        .events_a
        .iter()
        .filter_map(|(t, e)| match e {
            Event::Log { message, .. } if message.starts_with("re-creating Child SA") => Some(*t),
            _ => None,
        })
        .collect();
    assert!(retries.len() >= 3, "{retries:?}");
    // Back-off: the waits grow.
    assert!(
        retries[2] - retries[1] > retries[1] - retries[0],
        "{retries:?}"
    );
    // Then a new IKE SA, whose IKE_AUTH brings the Child SA back.
    let down = p.events_a.iter().find_map(|(t, e)| match e {
        Event::IkeSaDown { failure, .. } => Some((*t, failure.message.clone())),
        _ => None,
    });
    let (down_at, message) = down.expect("the IKE SA was not replaced");
    assert!(message.contains("starting a new IKE SA"), "{message}");
    assert!(down_at > at);
    assert!(
        !ups_since(&p.events_a, down_at).is_empty(),
        "no Child SA after the new IKE SA: {:?}",
        p.events_a
    );
    assert!(p.a.is_established(1));
}

#[test]
fn ts_unacceptable_names_both_sides_selectors() {
    let mut ca = config(A, B, Mode::Default);
    ca.children = vec![ChildConfig {
        local: vec![net("10.1.0.0/16")],
        remote: vec![net("10.2.0.0/16")],
    }];
    let mut cb = config(B, A, Mode::ResponderOnly);
    cb.children = vec![ChildConfig {
        local: vec![net("10.9.0.0/16")],
        remote: vec![net("10.8.0.0/16")],
    }];
    let mut p = Pair::new(ca, cb);
    p.run(Duration::from_secs(2), Duration::from_millis(100));
    let failure = |events: &[(Instant, Event)]| {
        events
            .iter()
            .find_map(|(_, e)| match e {
                Event::IkeSaDown { failure, .. } if failure.reason == Reason::TsUnacceptable => {
                    Some(failure.clone())
                }
                _ => None,
            })
            .expect("no TS_UNACCEPTABLE")
    };
    // The responder saw the initiator's selectors and has its own.
    let fb = failure(&p.events_b);
    for t in ["10.1.0.0", "10.2.0.0", "10.9.0.0", "10.8.0.0"] {
        assert!(fb.message.contains(t), "{t} missing: {}", fb.message);
    }
    assert!(!fb.our_selectors.is_empty() && !fb.peer_selectors.is_empty());
    // The initiator knows only its own (the refusal carries none), and lists no ESP proposals.
    let fa = failure(&p.events_a);
    for t in ["10.1.0.0", "10.2.0.0"] {
        assert!(fa.message.contains(t), "{t} missing: {}", fa.message);
    }
    assert!(!fa.message.contains("AES"), "{}", fa.message);
    assert!(!fa.our_selectors.is_empty() && fa.our_proposals.is_empty());
}
