//! Sans-IO simulations: BGP sessions talking through memory on a simulated clock, feeding RIBs.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use vgw_bgp::codec::{
    self, AFI_IPV4, AFI_IPV6, Capability, Message, Open, Origin, PathAttributes, SAFI_UNICAST,
    Segment,
};
use vgw_bgp::{DownReason, Event, Negotiated, PeerInfo, Rib, Session, SessionConfig, State};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// What a session negotiating IPv4 and IPv6 unicast agrees.
fn both() -> Negotiated {
    Negotiated {
        families: vec![(AFI_IPV4, SAFI_UNICAST), (AFI_IPV6, SAFI_UNICAST)],
        four_octet_as: true,
        route_refresh: true,
        ..Negotiated::default()
    }
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
    /// Everything a wrote, message by message.
    a_sent: Vec<Vec<u8>>,
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
            a_sent: Vec::new(),
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
                self.a_sent.push(bytes);
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
    let c1 = rib.peer_established(1, &both());
    assert_eq!(c1.outbound[&1].announce[0].1, vec![net("10.2.0.0/16")]);
    rib.peer_established(2, &both());
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
    assert_eq!(looped.looped, vec![net("10.99.0.0/16")]);
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
    rib.peer_established(1, &both());
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
    rib.peer_established(1, &both());
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
            restart_time: 120,
            stale_afis,
        } if stale_afis == &[AFI_IPV4, AFI_IPV6]
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
    rib.peer_established(1, &both());
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

/// Every UPDATE, ROUTE-REFRESH and OPEN in `sent`, decoded as the peer would (`four` = 4-octet AS).
fn decoded(sent: &[Vec<u8>], four: bool) -> Vec<Message> {
    sent.iter()
        .map(|m| codec::decode(m, four).expect("vgw sent a malformed message"))
        .collect()
}

/// Asserts that nothing in `msgs` is IPv6: no MP_REACH/MP_UNREACH prefix, End-of-RIB or
/// ROUTE-REFRESH of AFI 2.
fn assert_no_ipv6(msgs: &[Message]) {
    for m in msgs {
        match m {
            Message::Update(u) => {
                assert!(
                    u.announced
                        .iter()
                        .chain(&u.withdrawn)
                        .all(|p| matches!(p, IpNet::V4(_))),
                    "IPv6 prefix sent: {u:?}"
                );
                assert_ne!(
                    u.end_of_rib,
                    Some((AFI_IPV6, SAFI_UNICAST)),
                    "IPv6 End-of-RIB sent"
                );
            }
            Message::RouteRefresh { afi, .. } => assert_eq!(*afi, AFI_IPV4, "IPv6 ROUTE-REFRESH"),
            _ => {}
        }
    }
}

#[test]
fn an_ipv4_only_peer_receives_no_ipv6_update_end_of_rib_or_refresh() {
    let t0 = Instant::now();
    let mut b = config(65010, 65515, [10, 1, 255, 254], 9);
    b.families = vec![(AFI_IPV4, SAFI_UNICAST)];
    let mut link = Link::new(config(65515, 65010, [10, 2, 255, 254], 9), b, t0);
    assert_eq!(link.a.state(), State::Established);
    assert_eq!(link.a.negotiated().families, vec![(AFI_IPV4, SAFI_UNICAST)]);
    link.a_sent.clear();
    let attrs = path(&[65515], "10.2.255.254");
    link.a
        .announce(&attrs, &[net("10.2.0.0/16"), net("2001:db8:2::/48")]);
    link.a
        .withdraw(&[net("2001:db8:2::/48"), net("10.3.0.0/16")]);
    link.a.end_of_rib();
    link.a.request_refresh();
    link.pump(t0);
    let msgs = decoded(&link.a_sent, true);
    assert_no_ipv6(&msgs);
    // The IPv4 part went out: one announcement, one withdrawal, the IPv4 End-of-RIB, one refresh.
    let updates: Vec<&codec::Update> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::Update(u) => Some(u),
            _ => None,
        })
        .collect();
    assert_eq!(updates.len(), 3, "{updates:?}");
    assert_eq!(updates[0].announced, vec![net("10.2.0.0/16")]);
    assert_eq!(updates[1].withdrawn, vec![net("10.3.0.0/16")]);
    assert_eq!(updates[2].end_of_rib, Some((AFI_IPV4, SAFI_UNICAST)));
    assert!(
        msgs.iter()
            .any(|m| matches!(m, Message::RouteRefresh { afi: AFI_IPV4, .. }))
    );
    // An hour later the session is still up on both sides.
    link.run(t0, t0 + Duration::from_secs(3600));
    assert!(
        !link
            .a_events
            .iter()
            .any(|e| matches!(e, Event::Down { .. }))
    );
    assert!(
        !link
            .b_events
            .iter()
            .any(|e| matches!(e, Event::Down { .. }))
    );
}

#[test]
fn an_ipv6_update_from_a_peer_that_negotiated_only_ipv4_is_ignored() {
    let t0 = Instant::now();
    let mut a = config(65515, 65010, [10, 2, 255, 254], 9);
    a.families = vec![(AFI_IPV4, SAFI_UNICAST)];
    let mut link = Link::new(a, config(65010, 65515, [10, 1, 255, 254], 9), t0);
    // b sends raw IPv6 bytes past its own session's filter, as a misbehaving peer would.
    let attrs = path(&[65010], "10.1.255.254");
    for m in codec::encode_announce(&attrs, &[net("2001:db8:1::/48")], true) {
        link.a.handle_bytes(t0, &m);
    }
    link.a
        .handle_bytes(t0, &codec::encode_end_of_rib(AFI_IPV6, SAFI_UNICAST));
    link.pump(t0);
    assert!(
        !link.a_events.iter().any(|e| matches!(e, Event::Update(_))),
        "{:?}",
        link.a_events
    );
    assert_eq!(link.a.counters().prefixes_ignored, 1);
    assert_eq!(link.a.state(), State::Established);
}

/// Session `a` (our configuration) established with a hand-made peer OPEN; returns the session and
/// what it sent (its OPEN first).
fn with_raw_peer(a: SessionConfig, peer: Open, now: Instant) -> (Session, Vec<Vec<u8>>) {
    let mut s = Session::new(a);
    s.start(now);
    assert!(s.poll_connect(now));
    s.connection_opened(now);
    s.handle_bytes(now, &codec::encode_open(&peer));
    s.handle_bytes(now, &codec::encode_keepalive());
    let mut sent = Vec::new();
    while let Some(m) = s.poll_transmit() {
        sent.push(m);
    }
    assert_eq!(s.state(), State::Established, "{:?}", s.poll_event());
    while s.poll_event().is_some() {}
    (s, sent)
}

fn drain(s: &mut Session) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| s.poll_transmit()).collect()
}

/// A peer's OPEN: AS 65010, identifier 10.1.255.254, hold time 9, these capabilities.
fn peer_open(my_as: u16, capabilities: Vec<Capability>) -> Open {
    Open {
        version: 4,
        my_as,
        hold_time: 9,
        bgp_id: Ipv4Addr::new(10, 1, 255, 254),
        capabilities,
    }
}

#[test]
fn a_peer_without_any_multiprotocol_capability_gets_ipv4_only() {
    // RFC 4760 §8: no multiprotocol capability at all means IPv4 unicast only. This peer also lacks
    // route refresh, so no ROUTE-REFRESH goes to it either.
    let t0 = Instant::now();
    let (mut s, _) = with_raw_peer(
        config(65515, 65010, [10, 2, 255, 254], 9),
        peer_open(65010, vec![Capability::FourOctetAs(65010)]),
        t0,
    );
    assert_eq!(s.negotiated().families, vec![(AFI_IPV4, SAFI_UNICAST)]);
    s.announce(
        &path(&[65515], "10.2.255.254"),
        &[net("10.2.0.0/16"), net("2001:db8:2::/48")],
    );
    s.end_of_rib();
    s.request_refresh();
    let msgs = decoded(&drain(&mut s), true);
    assert_no_ipv6(&msgs);
    assert_eq!(
        msgs.len(),
        2,
        "one announcement and the IPv4 End-of-RIB: {msgs:?}"
    );
}

#[test]
fn a_two_octet_peer_gets_as_trans_and_as4_path() {
    // RFC 6793 §4.2.2: towards a peer without the 4-octet AS capability, a 4-octet ASN is AS_TRANS in
    // the OPEN and in AS_PATH, and the real path travels in AS4_PATH.
    let t0 = Instant::now();
    let (mut s, sent) = with_raw_peer(
        config(4_200_000_001, 65010, [10, 2, 255, 254], 9),
        peer_open(65010, vec![]),
        t0,
    );
    assert!(!s.four_octet_as());
    match codec::decode(&sent[0], false).unwrap() {
        Message::Open(o) => {
            assert_eq!(o.my_as, codec::AS_TRANS);
            assert_eq!(o.asn(), 4_200_000_001);
        }
        other => panic!("{other:?}"),
    }
    s.announce(
        &path(&[4_200_000_001], "10.2.255.254"),
        &[net("10.2.0.0/16")],
    );
    let m = drain(&mut s).remove(0);
    // AS_PATH: SEQUENCE of one 2-octet ASN, AS_TRANS.
    assert!(
        m.windows(6).any(|w| w == [0x40, 2, 4, 2, 1, 0x5b]),
        "AS_PATH with AS_TRANS: {m:02x?}"
    );
    match codec::decode(&m, false).unwrap() {
        // A 2-octet decoder that honours AS4_PATH recovers the real path.
        Message::Update(u) => assert_eq!(
            u.attributes.unwrap().as_path,
            vec![Segment::Sequence(vec![4_200_000_001])]
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn no_add_path_is_offered_or_sent_even_to_a_peer_that_offers_it() {
    // RFC 7911: path identifiers are sent only to a peer that agreed to receive them; vgw never
    // advertises add-path, so its NLRI stay plain whatever the peer offers (capability 69,
    // IPv4 unicast, send/receive).
    let t0 = Instant::now();
    let add_path = Capability::Other {
        code: 69,
        data: vec![0, 1, 1, 3],
    };
    let (mut s, sent) = with_raw_peer(
        config(65515, 65010, [10, 2, 255, 254], 9),
        peer_open(
            65010,
            vec![
                Capability::Multiprotocol {
                    afi: AFI_IPV4,
                    safi: SAFI_UNICAST,
                },
                add_path,
                Capability::FourOctetAs(65010),
            ],
        ),
        t0,
    );
    match codec::decode(&sent[0], true).unwrap() {
        Message::Open(o) => assert!(
            !o.capabilities
                .iter()
                .any(|c| matches!(c, Capability::Other { code: 69, .. })),
            "vgw offered add-path"
        ),
        other => panic!("{other:?}"),
    }
    s.announce(
        &path(&[65515], "10.2.255.254"),
        &[net("10.2.0.0/16"), net("10.12.0.0/16")],
    );
    let m = drain(&mut s).remove(0);
    match codec::decode(&m, true).unwrap() {
        Message::Update(u) => {
            assert_eq!(u.announced, vec![net("10.2.0.0/16"), net("10.12.0.0/16")])
        }
        other => panic!("{other:?}"),
    }
    // The NLRI field is exactly the two prefixes (no 4-byte path identifiers).
    assert!(m.ends_with(&[16, 10, 2, 16, 10, 12]));
}

#[test]
fn ipv4_over_ipv6_peering_needs_extended_next_hop() {
    let t0 = Instant::now();
    let attrs = PathAttributes {
        as_path: vec![Segment::Sequence(vec![65515])],
        next_hop: Some("2001:db8:2::1".parse().unwrap()),
        ..PathAttributes::default()
    };
    // Both sides advertise RFC 8950 extended next hop: the IPv4 prefix goes in MP_REACH AFI 1 with
    // the IPv6 next hop.
    let mut a = config(65515, 65010, [10, 2, 255, 254], 9);
    a.extended_next_hop = true;
    let mut b = config(65010, 65515, [10, 1, 255, 254], 9);
    b.extended_next_hop = true;
    let mut link = Link::new(a.clone(), b, t0);
    assert!(link.a.negotiated().extended_next_hop);
    link.a.announce(&attrs, &[net("10.2.0.0/16")]);
    link.pump(t0);
    let got = link
        .b_events
        .iter()
        .find_map(|e| match e {
            Event::Update(u) if !u.announced.is_empty() => Some(u.clone()),
            _ => None,
        })
        .expect("b learned the IPv4 prefix");
    assert_eq!(got.announced, vec![net("10.2.0.0/16")]);
    assert_eq!(got.attributes.unwrap().next_hop, attrs.next_hop);
    // The peer does not advertise it: the IPv4 prefix is not sent (never with NEXT_HOP 0.0.0.0).
    let mut link = Link::new(a, config(65010, 65515, [10, 1, 255, 254], 9), t0);
    assert!(!link.a.negotiated().extended_next_hop);
    link.a_sent.clear();
    link.a.announce(&attrs, &[net("10.2.0.0/16")]);
    link.pump(t0);
    assert!(link.a_sent.is_empty(), "{:02x?}", link.a_sent);
    // The RIB does not export it either, so list-advertised-routes stays true.
    let mut rib = Rib::new(65515, 4);
    rib.add_peer(
        1,
        PeerInfo {
            asn: 65010,
            router_id: Ipv4Addr::new(10, 1, 255, 254),
            address: "2001:db8:1::1".parse().unwrap(),
            weight: 0,
            local_address: "2001:db8:2::1".parse().unwrap(),
        },
    );
    rib.set_networks([net("10.2.0.0/16"), net("2001:db8:2::/48")]);
    let out = rib.peer_established(1, link.a.negotiated());
    assert_eq!(out.outbound[&1].announce.len(), 1);
    assert_eq!(out.outbound[&1].announce[0].1, vec![net("2001:db8:2::/48")]);
    assert_eq!(rib.advertised_count(1), 1);
}

#[test]
fn the_rib_exports_only_negotiated_families() {
    let hub = [10, 2, 255, 254];
    let mut rib = Rib::new(65515, 4);
    rib.add_peer(1, peer(65010, [10, 1, 255, 254], hub));
    rib.set_networks([net("10.2.0.0/16"), net("2001:db8:2::/48")]);
    let v4_only = Negotiated {
        families: vec![(AFI_IPV4, SAFI_UNICAST)],
        ..both()
    };
    let c = rib.peer_established(1, &v4_only);
    let all: Vec<IpNet> = c.outbound[&1]
        .announce
        .iter()
        .flat_map(|(_, p)| p.clone())
        .collect();
    assert_eq!(all, vec![net("10.2.0.0/16")]);
    assert_eq!(rib.advertised_count(1), 1);
    // Removing the IPv6 network sends the IPv4-only peer no withdrawal either.
    let c = rib.set_networks([net("10.2.0.0/16")]);
    assert!(!c.outbound.contains_key(&1), "{:?}", c.outbound);
}

#[test]
fn graceful_restart_keeps_only_the_families_of_the_peers_capability() {
    // RFC 4724 §4.2: the peer's capability lists IPv4 only, so on a reset its IPv4 routes stay
    // (stale) and its IPv6 routes go at once.
    let t0 = Instant::now();
    let gr = Capability::GracefulRestart {
        restarting: false,
        restart_time: 90,
        families: vec![(AFI_IPV4, SAFI_UNICAST, true)],
    };
    let caps = vec![
        Capability::Multiprotocol {
            afi: AFI_IPV4,
            safi: SAFI_UNICAST,
        },
        Capability::Multiprotocol {
            afi: AFI_IPV6,
            safi: SAFI_UNICAST,
        },
        gr,
        Capability::FourOctetAs(65010),
    ];
    let (mut s, _) = with_raw_peer(
        config(65515, 65010, [10, 2, 255, 254], 9),
        peer_open(65010, caps),
        t0,
    );
    assert_eq!(s.negotiated().preserved_afis(), vec![AFI_IPV4]);
    s.connection_closed(t0);
    let down = std::iter::from_fn(|| s.poll_event())
        .find(|e| matches!(e, Event::Down { .. }))
        .unwrap();
    let Event::Down {
        keep_stale,
        restart_time,
        stale_afis,
        ..
    } = down
    else {
        unreachable!()
    };
    assert!(keep_stale);
    assert_eq!(restart_time, 90);
    assert_eq!(stale_afis, vec![AFI_IPV4]);
    let mut rib = Rib::new(65515, 4);
    rib.add_peer(1, peer(65010, [10, 1, 255, 254], [10, 2, 255, 254]));
    rib.peer_established(1, &both());
    let mut attrs = path(&[65010], "10.1.255.254");
    rib.update(1, &update(attrs.clone(), &["10.1.0.0/16"]));
    attrs.next_hop = Some("2001:db8:1::1".parse().unwrap());
    rib.update(1, &update(attrs, &["2001:db8:1::/48"]));
    let c = rib.peer_down_keeping(1, &stale_afis);
    assert_eq!(c.fib.len(), 1);
    assert_eq!(c.fib[0].prefix, net("2001:db8:1::/48"));
    assert!(rib.best(&net("10.1.0.0/16")).is_some());
}

#[test]
fn a_refresh_for_an_unnegotiated_family_is_ignored() {
    // RFC 2918 §4.
    let t0 = Instant::now();
    let (mut s, _) = with_raw_peer(
        config(65515, 65010, [10, 2, 255, 254], 9),
        peer_open(65010, vec![Capability::RouteRefresh]),
        t0,
    );
    s.handle_bytes(t0, &codec::encode_route_refresh(AFI_IPV6, SAFI_UNICAST));
    assert!(s.poll_event().is_none());
    s.handle_bytes(t0, &codec::encode_route_refresh(AFI_IPV4, SAFI_UNICAST));
    assert!(matches!(
        s.poll_event(),
        Some(Event::RouteRefresh { afi: AFI_IPV4, .. })
    ));
    assert_eq!(s.state(), State::Established);
}

#[test]
fn a_notification_is_reported_with_its_data_decoded() {
    let t0 = Instant::now();
    let mut link = Link::new(
        config(65515, 65010, [10, 2, 255, 254], 9),
        config(65010, 65515, [10, 1, 255, 254], 9),
        t0,
    );
    let mut data = vec![11];
    data.extend_from_slice(b"maintenance");
    link.a.handle_bytes(
        t0,
        &codec::encode_notification(&codec::Notification {
            code: 6,
            subcode: 2,
            data,
        }),
    );
    let reason = link
        .a
        .poll_event()
        .and_then(|e| match e {
            Event::Down { reason, .. } => Some(reason.to_string()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        reason,
        "peer sent NOTIFICATION Cease / Administrative Shutdown: shutdown communication \"maintenance\""
    );
}
