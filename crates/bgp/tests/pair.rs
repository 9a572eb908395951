//! Sans-IO simulations: BGP sessions talking through memory on a simulated clock, feeding RIBs.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use vgw_bgp::codec::{self, Origin, PathAttributes, Segment};
use vgw_bgp::{DownReason, Event, PeerInfo, Rib, Session, SessionConfig, State};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn config(local_asn: u32, peer_asn: u32, id: [u8; 4], hold: u16) -> SessionConfig {
    SessionConfig {
        local_asn,
        peer_asn,
        router_id: Ipv4Addr::from(id),
        hold_time: hold,
        ..SessionConfig::default()
    }
}

/// Two sessions joined by an in-memory TCP stream.
struct Link {
    a: Session,
    b: Session,
    a_events: Vec<Event>,
    b_events: Vec<Event>,
    /// When false, b's bytes never reach a (a silent peer).
    b_to_a: bool,
    /// Bytes moved per write, to exercise stream reassembly (0: whole messages).
    chunk: usize,
}

impl Link {
    fn new(a: SessionConfig, b: SessionConfig, now: Instant) -> Self {
        let mut link = Self {
            a: Session::new(a),
            b: Session::new(b),
            a_events: Vec::new(),
            b_events: Vec::new(),
            b_to_a: true,
            chunk: 0,
        };
        link.a.start(now);
        link.b.start(now);
        assert!(link.a.poll_connect(now));
        link.a.connection_opened(now);
        link.b.connection_opened(now);
        link.pump(now);
        link
    }

    fn pump(&mut self, now: Instant) {
        for _ in 0..1000 {
            let mut moved = false;
            while let Some(bytes) = self.a.poll_transmit() {
                moved = true;
                feed(&mut self.b, now, &bytes, self.chunk);
            }
            while let Some(bytes) = self.b.poll_transmit() {
                moved = true;
                if self.b_to_a {
                    feed(&mut self.a, now, &bytes, self.chunk);
                }
            }
            while let Some(e) = self.a.poll_event() {
                self.a_events.push(e);
            }
            while let Some(e) = self.b.poll_event() {
                self.b_events.push(e);
            }
            if !moved {
                return;
            }
        }
        panic!("the sessions never went quiet");
    }

    /// Advances the clock to `until` in steps, running timers and moving bytes.
    fn run(&mut self, mut now: Instant, until: Instant) -> Instant {
        while now < until {
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(until)
                .min(until)
                .max(now);
            now = next;
            self.a.handle_timeout(now);
            self.b.handle_timeout(now);
            self.pump(now);
            if next == until {
                break;
            }
            now += Duration::from_millis(1);
        }
        now
    }
}

fn feed(s: &mut Session, now: Instant, bytes: &[u8], chunk: usize) {
    if chunk == 0 {
        s.handle_bytes(now, bytes);
    } else {
        for c in bytes.chunks(chunk) {
            s.handle_bytes(now, c);
        }
    }
}

#[test]
fn sessions_establish_and_keep_alive_for_an_hour() {
    let t0 = Instant::now();
    let mut link = Link::new(
        config(65515, 65010, [10, 2, 255, 254], 9),
        config(65010, 65515, [10, 1, 255, 254], 9),
        t0,
    );
    assert_eq!(link.a.state(), State::Established);
    assert_eq!(link.b.state(), State::Established);
    assert_eq!(link.a.hold_time(), Duration::from_secs(9));
    let sent_before = link.a.counters().messages_sent;
    link.run(t0, t0 + Duration::from_secs(3600));
    assert_eq!(link.a.state(), State::Established);
    assert!(link.a.counters().messages_sent > sent_before + 1000);
    assert!(
        !link
            .a_events
            .iter()
            .any(|e| matches!(e, Event::Down { .. }))
    );
}

#[test]
fn the_lower_hold_time_wins_and_a_silent_peer_expires_it() {
    let t0 = Instant::now();
    let mut link = Link::new(
        config(65515, 65010, [10, 2, 255, 254], 180),
        config(65010, 65515, [10, 1, 255, 254], 9),
        t0,
    );
    assert_eq!(link.a.hold_time(), Duration::from_secs(9));
    link.b_to_a = false;
    let now = link.run(t0, t0 + Duration::from_secs(8));
    assert_eq!(link.a.state(), State::Established);
    link.run(now, t0 + Duration::from_millis(9_500));
    let down = link
        .a_events
        .iter()
        .find_map(|e| match e {
            Event::Down { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .expect("a went down");
    assert_eq!(down, DownReason::HoldTimerExpired);
    assert!(link.a.poll_close());
}

#[test]
fn a_wrong_asn_is_refused_with_bad_peer_as_on_both_sides() {
    let t0 = Instant::now();
    let link = Link::new(
        config(65515, 65099, [10, 2, 255, 254], 9),
        config(65010, 65515, [10, 1, 255, 254], 9),
        t0,
    );
    let reason_a = link
        .a_events
        .iter()
        .find_map(|e| match e {
            Event::Down { reason, .. } => Some(reason.to_string()),
            _ => None,
        })
        .unwrap();
    assert!(
        reason_a.contains("Bad Peer AS") && reason_a.contains("expected AS 65099"),
        "{reason_a}"
    );
    let reason_b = link
        .b_events
        .iter()
        .find_map(|e| match e {
            Event::Down { reason, .. } => Some(reason.to_string()),
            _ => None,
        })
        .unwrap();
    assert!(
        reason_b.contains("peer sent NOTIFICATION OPEN Message Error / Bad Peer AS"),
        "{reason_b}"
    );
    assert_eq!(link.a.state(), State::Connect);
}

#[test]
fn messages_split_at_every_position_decode_the_same() {
    for chunk in [1, 2, 3, 7, 19, 100] {
        let t0 = Instant::now();
        let mut link = Link::new(
            config(65515, 65010, [10, 2, 255, 254], 9),
            config(65010, 65515, [10, 1, 255, 254], 9),
            t0,
        );
        link.chunk = chunk;
        let attrs = PathAttributes {
            as_path: vec![Segment::Sequence(vec![65010])],
            next_hop: Some("10.1.255.254".parse().unwrap()),
            ..PathAttributes::default()
        };
        link.b
            .announce(&attrs, &[net("10.1.0.0/16"), net("2001:db8:1::/48")]);
        link.pump(t0);
        let announced: Vec<IpNet> = link
            .a_events
            .iter()
            .filter_map(|e| match e {
                Event::Update(u) => Some(u.announced.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(announced.len(), 2, "chunk {chunk}");
    }
}

fn peer(asn: u32, id: [u8; 4], local: [u8; 4]) -> PeerInfo {
    PeerInfo {
        asn,
        router_id: Ipv4Addr::from(id),
        address: IpAddr::from(id),
        weight: 0,
        local_address: IpAddr::from(local),
    }
}

fn path(asns: &[u32], nh: &str) -> PathAttributes {
    PathAttributes {
        origin: Origin::Igp,
        as_path: vec![Segment::Sequence(asns.to_vec())],
        next_hop: Some(nh.parse().unwrap()),
        ..PathAttributes::default()
    }
}

fn update(attrs: PathAttributes, prefixes: &[&str]) -> codec::Update {
    codec::Update {
        announced: prefixes.iter().map(|p| net(p)).collect(),
        attributes: Some(attrs),
        ..codec::Update::default()
    }
}

#[test]
fn hub_gives_transit_between_two_sites_and_never_echoes() {
    let hub = [10, 2, 255, 254];
    let mut rib = Rib::new(65515, 4);
    rib.add_peer(1, peer(65010, [10, 1, 255, 254], hub));
    rib.add_peer(2, peer(65020, [10, 21, 255, 254], hub));
    rib.set_networks([net("10.2.0.0/16")]);
    let c1 = rib.peer_established(1);
    assert_eq!(c1.outbound[&1].announce[0].1, vec![net("10.2.0.0/16")]);
    rib.peer_established(2);
    let changes = rib.update(1, &update(path(&[65010], "10.1.255.254"), &["10.1.0.0/16"]));
    // The FIB sends 10.1.0.0/16 to site A; site B hears it with the hub's ASN prepended.
    assert_eq!(changes.fib[0].next_hops, vec![1]);
    let to_b = &changes.outbound[&2];
    assert_eq!(to_b.announce[0].1, vec![net("10.1.0.0/16")]);
    assert_eq!(to_b.announce[0].0.as_path_string(), "65515 65010");
    assert_eq!(to_b.announce[0].0.next_hop, Some(IpAddr::from(hub)));
    // Never back to site A.
    assert!(!changes.outbound.contains_key(&1));
    // A path that already contains our ASN is a loop: ignored.
    let looped = rib.update(
        2,
        &update(path(&[65020, 65515], "10.21.255.254"), &["10.99.0.0/16"]),
    );
    assert!(looped.fib.is_empty());
    // Withdrawal reaches the FIB and site B.
    let w = rib.update(
        1,
        &codec::Update {
            withdrawn: vec![net("10.1.0.0/16")],
            ..codec::Update::default()
        },
    );
    assert_eq!(w.fib[0].next_hops, Vec::<u32>::new());
    assert_eq!(w.outbound[&2].withdraw, vec![net("10.1.0.0/16")]);
}

#[test]
fn best_path_prefers_weight_then_shorter_paths_and_spreads_over_equal_ones() {
    let hub = [10, 2, 255, 254];
    let mut rib = Rib::new(65515, 4);
    rib.add_peer(1, peer(65010, [10, 1, 255, 254], hub));
    rib.add_peer(2, peer(65010, [10, 1, 255, 253], hub));
    rib.add_peer(3, peer(65030, [10, 3, 255, 254], hub));
    rib.update(1, &update(path(&[65010], "10.1.255.254"), &["10.1.0.0/16"]));
    rib.update(2, &update(path(&[65010], "10.1.255.253"), &["10.1.0.0/16"]));
    rib.update(
        3,
        &update(
            path(&[65030, 65040, 65010], "10.3.255.254"),
            &["10.1.0.0/16"],
        ),
    );
    // Two equal paths form the ECMP set; the lower router id first.
    assert_eq!(rib.best(&net("10.1.0.0/16")).unwrap(), &[2, 1]);
    // Weight beats path length.
    let mut heavy = peer(65030, [10, 3, 255, 254], hub);
    heavy.weight = 100;
    rib.add_peer(3, heavy);
    rib.update(
        3,
        &update(
            path(&[65030, 65040, 65010], "10.3.255.254"),
            &["10.1.0.0/16"],
        ),
    );
    assert_eq!(rib.best(&net("10.1.0.0/16")).unwrap(), &[3]);
}

#[test]
fn graceful_restart_keeps_stale_routes_until_end_of_rib() {
    let hub = [10, 2, 255, 254];
    let mut rib = Rib::new(65515, 4);
    rib.add_peer(1, peer(65010, [10, 1, 255, 254], hub));
    rib.peer_established(1);
    rib.update(
        1,
        &update(
            path(&[65010], "10.1.255.254"),
            &["10.1.0.0/16", "10.11.0.0/16"],
        ),
    );
    let down = rib.peer_down(1, true);
    assert!(down.fib.is_empty(), "stale routes stay in the FIB");
    assert!(rib.best(&net("10.11.0.0/16")).is_some());
    rib.peer_established(1);
    // After the restart the peer re-announces only 10.1.0.0/16, then End-of-RIB.
    rib.update(1, &update(path(&[65010], "10.1.255.254"), &["10.1.0.0/16"]));
    let eor = rib.update(
        1,
        &codec::Update {
            end_of_rib: Some((codec::AFI_IPV4, codec::SAFI_UNICAST)),
            ..codec::Update::default()
        },
    );
    assert_eq!(eor.fib.len(), 1);
    assert_eq!(eor.fib[0].prefix, net("10.11.0.0/16"));
    assert!(rib.best(&net("10.1.0.0/16")).is_some());
}

#[test]
fn the_session_reports_graceful_restart_on_a_tcp_reset() {
    let t0 = Instant::now();
    let mut link = Link::new(
        config(65515, 65010, [10, 2, 255, 254], 9),
        config(65010, 65515, [10, 1, 255, 254], 9),
        t0,
    );
    link.a.connection_closed(t0);
    link.pump(t0);
    assert!(link.a_events.iter().any(|e| matches!(
        e,
        Event::Down {
            reason: DownReason::ConnectionClosed,
            keep_stale: true,
            restart_time: 120
        }
    )));
    // The session retries after the connect-retry interval.
    assert!(!link.a.poll_connect(t0));
    assert!(link.a.poll_connect(t0 + Duration::from_secs(3)));
}

#[test]
fn ten_thousand_prefixes_are_learned_quickly() {
    let t0 = Instant::now();
    let mut link = Link::new(
        config(65515, 65010, [10, 2, 255, 254], 9),
        config(65010, 65515, [10, 1, 255, 254], 9),
        t0,
    );
    let prefixes: Vec<IpNet> = (0..10_000u32)
        .map(|i| {
            IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a80_0000 + (i << 8)), 24).unwrap())
        })
        .collect();
    link.b.announce(&path(&[65010], "10.1.255.254"), &prefixes);
    let started = std::time::Instant::now();
    link.pump(t0);
    let mut rib = Rib::new(65515, 4);
    rib.add_peer(1, peer(65010, [10, 1, 255, 254], [10, 2, 255, 254]));
    rib.peer_established(1);
    let mut fib = 0;
    for e in link.a_events.drain(..) {
        if let Event::Update(u) = e {
            fib += rib.update(1, &u).fib.len();
        }
    }
    assert_eq!(fib, 10_000);
    assert_eq!(rib.received(1), 10_000);
    let took = started.elapsed();
    println!("10,000 prefixes decoded and selected in {took:?}");
    assert!(took < Duration::from_secs(5));
}
