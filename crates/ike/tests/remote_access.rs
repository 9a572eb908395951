//! Point-to-site (remote access) sans-IO tests: road-warrior client endpoints behind NATs against one
//! remote-access gateway endpoint, with certificates made here by rcgen.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, RsaKeySize,
};
use vgw_ike::cert::{self, auth_method};
use vgw_ike::message::{Identity, TrafficSelector};
use vgw_ike::{
    ChildConfig, ChildSaKeys, Config, ConnId, Endpoint, Event, LocalAuth, LocalCertificate, Mode,
    PeerAuth, Reason, RemoteAccess, RemoteAccessClient, RemoteAccessServer, RsaPadding, TrustStore,
};

const GATEWAY: &str = "203.0.113.1";
const SERVER: ConnId = 1;
const CLIENT: ConnId = 5;
/// The NAT in front of every client maps its port p to 40000 + p.
const NAT_OFFSET: u16 = 40000;

// ---- certificates ----------------------------------------------------------------------------------

struct Ca {
    der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str, key: KeyPair) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).unwrap();
    Ca {
        der: cert.der().to_vec(),
        issuer: Issuer::new(params, key),
    }
}

fn intermediate(parent: &Ca, name: &str, key: KeyPair) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let cert = params.signed_by(&key, &parent.issuer).unwrap();
    Ca {
        der: cert.der().to_vec(),
        issuer: Issuer::new(params, key),
    }
}

/// An end-entity certificate and its PKCS#8 key.
struct Leaf {
    der: Vec<u8>,
    key: Vec<u8>,
}

fn leaf(issuer: &Ca, cn: &str, key: KeyPair, eku: Option<ExtendedKeyUsagePurpose>) -> Leaf {
    leaf_with(issuer, cn, key, eku, |_| {})
}

fn leaf_with(
    issuer: &Ca,
    cn: &str,
    key: KeyPair,
    eku: Option<ExtendedKeyUsagePurpose>,
    tweak: impl FnOnce(&mut CertificateParams),
) -> Leaf {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Contoso");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = eku.into_iter().collect();
    tweak(&mut params);
    let cert = params.signed_by(&key, &issuer.issuer).unwrap();
    Leaf {
        der: cert.der().to_vec(),
        key: key.serialize_der(),
    }
}

fn p256() -> KeyPair {
    KeyPair::generate().unwrap()
}

fn p384() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap()
}

fn rsa(size: RsaKeySize) -> KeyPair {
    KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size).unwrap()
}

fn identity(der: &[u8]) -> Identity {
    cert::subject_identity(der).unwrap()
}

// ---- configurations --------------------------------------------------------------------------------

fn split_routes() -> Vec<TrafficSelector> {
    vec![
        TrafficSelector::from_prefix("10.1.0.0".parse().unwrap(), 16),
        TrafficSelector::from_prefix("10.2.0.0".parse().unwrap(), 16),
        TrafficSelector::from_prefix("fd00:1::".parse().unwrap(), 64),
    ]
}

struct Gateway {
    cert: Leaf,
    chain: Vec<Vec<u8>>,
    roots: Vec<Vec<u8>>,
    revoked: Vec<String>,
    pool_v4: (Ipv4Addr, u8),
    padding: RsaPadding,
}

fn gateway_config(g: &Gateway) -> Config {
    let local = IpAddr::V4(GATEWAY.parse().unwrap());
    let mut chain = vec![g.cert.der.clone()];
    chain.extend(g.chain.iter().cloned());
    Config {
        local_addr: local,
        local_id: identity(&g.cert.der),
        local_auth: LocalAuth::Certificate(Arc::new(
            LocalCertificate::new(chain, &g.cert.key)
                .unwrap()
                .with_rsa_padding(g.padding),
        )),
        peer_auth: PeerAuth::Certificate(Arc::new(
            TrustStore::new(g.roots.clone(), g.revoked.clone()).unwrap(),
        )),
        remote_access: RemoteAccess::Server(RemoteAccessServer {
            pool_v4: Some(g.pool_v4),
            pool_v6: Some(("fd00:201::".parse().unwrap(), 120)),
            dns: vec!["10.1.0.4".parse().unwrap(), "fd00:1::53".parse().unwrap()],
        }),
        mode: Mode::ResponderOnly,
        children: vec![ChildConfig {
            local: split_routes(),
            remote: vec![TrafficSelector::any_v4()],
        }],
        ..Default::default()
    }
}

fn client_config(
    me: &Leaf,
    intermediates: &[Vec<u8>],
    server_id: Identity,
    roots: Vec<Vec<u8>>,
    padding: RsaPadding,
) -> Config {
    let mut chain = vec![me.der.clone()];
    chain.extend(intermediates.iter().cloned());
    Config {
        local_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        remote_addr: GATEWAY.parse().unwrap(),
        local_id: identity(&me.der),
        remote_id: server_id,
        local_auth: LocalAuth::Certificate(Arc::new(
            LocalCertificate::new(chain, &me.key)
                .unwrap()
                .with_rsa_padding(padding),
        )),
        peer_auth: PeerAuth::Certificate(Arc::new(TrustStore::new(roots, Vec::new()).unwrap())),
        remote_access: RemoteAccess::Client(RemoteAccessClient {
            request_v4: true,
            request_v6: true,
        }),
        mode: Mode::InitiatorOnly,
        children: vec![ChildConfig {
            local: vec![TrafficSelector::any_v4(), TrafficSelector::any_v6()],
            remote: vec![TrafficSelector::any_v4(), TrafficSelector::any_v6()],
        }],
        ..Default::default()
    }
}

// ---- the simulated network -------------------------------------------------------------------------

struct Net {
    now: Instant,
    gw: Endpoint,
    gw_events: Vec<Event>,
    clients: HashMap<IpAddr, (Endpoint, Vec<Event>)>,
    /// Datagrams the gateway sent, and the clients sent (sizes, fragment?).
    gw_datagrams: Vec<(usize, bool)>,
    client_datagrams: Vec<(usize, bool)>,
}

fn wall_clock() -> SystemTime {
    // 2027-01-15: inside every certificate's default validity, after the expired one's.
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

impl Net {
    fn new(gw_config: Config) -> Net {
        let now = Instant::now();
        let mut gw = Endpoint::new();
        gw.set_wall_clock(now, wall_clock());
        gw.set_config(SERVER, gw_config, now);
        Net {
            now,
            gw,
            gw_events: Vec::new(),
            clients: HashMap::new(),
            gw_datagrams: Vec::new(),
            client_datagrams: Vec::new(),
        }
    }

    fn add_client(&mut self, addr: IpAddr, config: Config) {
        let mut ep = Endpoint::new();
        ep.set_wall_clock(self.now, wall_clock());
        ep.set_config(CLIENT, config, self.now);
        self.clients.insert(addr, (ep, Vec::new()));
    }

    fn client_events(&self, addr: IpAddr) -> &[Event] {
        &self.clients[&addr].1
    }

    fn run(&mut self, total: Duration) {
        let step = Duration::from_millis(100);
        let end = self.now + total;
        while self.now < end {
            self.gw.handle_timeout(self.now);
            for (ep, _) in self.clients.values_mut() {
                ep.handle_timeout(self.now);
            }
            for _ in 0..1000 {
                let mut moved = false;
                let addrs: Vec<IpAddr> = self.clients.keys().copied().collect();
                for addr in addrs {
                    let (ep, _) = self.clients.get_mut(&addr).unwrap();
                    let mut out = Vec::new();
                    while let Some(t) = ep.poll_transmit() {
                        out.push(t);
                    }
                    for t in out {
                        moved = true;
                        self.client_datagrams
                            .push((t.data.len(), t.data.get(16) == Some(&53)));
                        let from = SocketAddr::new(addr, NAT_OFFSET + t.local_port);
                        self.gw
                            .handle_datagram(self.now, t.remote.port(), from, &t.data);
                    }
                }
                while let Some(t) = self.gw.poll_transmit() {
                    moved = true;
                    self.gw_datagrams
                        .push((t.data.len(), t.data.get(16) == Some(&53)));
                    if let Some((ep, _)) = self.clients.get_mut(&t.remote.ip()) {
                        let from = SocketAddr::new(GATEWAY.parse().unwrap(), t.local_port);
                        ep.handle_datagram(self.now, t.remote.port() - NAT_OFFSET, from, &t.data);
                    }
                }
                if !moved {
                    break;
                }
            }
            while let Some(e) = self.gw.poll_event() {
                self.gw_events.push(e);
            }
            for (ep, events) in self.clients.values_mut() {
                while let Some(e) = ep.poll_event() {
                    events.push(e);
                }
            }
            self.now += step;
        }
    }
}

fn client_addr(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xc633_6400 + i)) // 198.51.100.0 + i
}

fn child_keys(events: &[Event]) -> Vec<&ChildSaKeys> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaUp { keys, .. } => Some(keys),
            _ => None,
        })
        .collect()
}

fn client_ups(events: &[Event]) -> Vec<&vgw_ike::ClientInfo> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ClientUp(info) => Some(info),
            _ => None,
        })
        .collect()
}

fn client_downs(events: &[Event]) -> Vec<(ConnId, Reason, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ClientDown {
                client, failure, ..
            } => Some((*client, failure.reason, failure.message.clone())),
            _ => None,
        })
        .collect()
}

fn ike_down(events: &[Event]) -> Option<Reason> {
    events.iter().find_map(|e| match e {
        Event::IkeSaDown { failure, .. } => Some(failure.reason),
        _ => None,
    })
}

fn logs(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Log { message, .. } => Some(message.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A root CA, the gateway's certificate, and a gateway config base.
struct Pki {
    root: Ca,
    server: Leaf,
}

fn ecdsa_pki() -> Pki {
    let root = ca("vgw P2S Root", p256());
    let server = leaf(
        &root,
        "vpn.contoso.example",
        p256(),
        Some(ExtendedKeyUsagePurpose::ServerAuth),
    );
    Pki { root, server }
}

fn gateway(pki: &Pki) -> Gateway {
    Gateway {
        cert: Leaf {
            der: pki.server.der.clone(),
            key: pki.server.key.clone(),
        },
        chain: vec![],
        roots: vec![pki.root.der.clone()],
        revoked: vec![],
        pool_v4: ("172.16.201.0".parse().unwrap(), 24),
        padding: RsaPadding::Pkcs1,
    }
}

fn connect(net: &mut Net, pki: &Pki, addr: IpAddr, who: &Leaf) {
    net.add_client(
        addr,
        client_config(
            who,
            &[],
            identity(&pki.server.der),
            vec![pki.root.der.clone()],
            RsaPadding::Pkcs1,
        ),
    );
}

// ---- tests -------------------------------------------------------------------------------------------

#[test]
fn client_connects_gets_addresses_dns_and_narrowed_selectors() {
    let pki = ecdsa_pki();
    let alice = leaf(
        &pki.root,
        "alice",
        p256(),
        Some(ExtendedKeyUsagePurpose::ClientAuth),
    );
    let mut net = Net::new(gateway_config(&gateway(&pki)));
    let a = client_addr(1);
    connect(&mut net, &pki, a, &alice);
    net.run(Duration::from_secs(2));

    let ups = client_ups(&net.gw_events);
    assert_eq!(ups.len(), 1, "gateway: {}", logs(&net.gw_events));
    let info = ups[0];
    assert_eq!(info.server, SERVER);
    assert!(info.client >= vgw_ike::CLIENT_CONN_BASE);
    assert_eq!(info.user_name, "alice");
    assert_eq!(info.subject, "CN=alice, O=Contoso");
    assert_eq!(info.thumbprint, cert::thumbprint(&alice.der));
    assert_eq!(info.remote, SocketAddr::new(a, NAT_OFFSET + 4500));
    let v4: IpAddr = "172.16.201.2".parse().unwrap();
    let v6: IpAddr = "fd00:201::2".parse().unwrap();
    assert_eq!(info.addresses, vec![v4, v6]);
    assert_eq!(net.gw.clients(), vec![info.clone()]);

    let assigned = net
        .client_events(a)
        .iter()
        .find_map(|e| match e {
            Event::AddressesAssigned { addresses, dns, .. } => Some((addresses, dns)),
            _ => None,
        })
        .expect("client got no addresses");
    assert_eq!(*assigned.0, vec![v4, v6]);
    assert_eq!(
        *assigned.1,
        vec![
            "10.1.0.4".parse::<IpAddr>().unwrap(),
            "fd00:1::53".parse().unwrap()
        ]
    );

    let gw_keys = child_keys(&net.gw_events);
    let cl_keys = child_keys(net.client_events(a));
    assert_eq!(gw_keys.len(), 1);
    assert_eq!(cl_keys.len(), 1);
    assert!(
        net.gw_events
            .iter()
            .any(|e| matches!(e, Event::ChildSaUp { conn, .. } if *conn == info.client))
    );
    assert_eq!(gw_keys[0].inbound_spi, cl_keys[0].outbound_spi);
    assert_eq!(*gw_keys[0].inbound_key, *cl_keys[0].outbound_key);
    assert_eq!(*gw_keys[0].outbound_key, *cl_keys[0].inbound_key);
    // TSi narrowed to the client's addresses, TSr to the split-tunnel routes.
    let hosts = vec![
        TrafficSelector::from_prefix(v4, 32),
        TrafficSelector::from_prefix(v6, 128),
    ];
    assert_eq!(gw_keys[0].remote_ts, hosts);
    assert_eq!(gw_keys[0].local_ts, split_routes());
    assert_eq!(cl_keys[0].local_ts, hosts);
    assert_eq!(cl_keys[0].remote_ts, split_routes());
    assert_eq!(gw_keys[0].remote, SocketAddr::new(a, NAT_OFFSET + 4500));
    assert!(
        logs(&net.gw_events).contains("ECDSA P-256 SHA-256 (RFC 7427)"),
        "{}",
        logs(&net.gw_events)
    );

    // DPD keeps an idle client up; the gateway probes it.
    net.run(Duration::from_secs(120));
    assert!(client_downs(&net.gw_events).is_empty());
    assert_eq!(net.gw.clients().len(), 1);
}

#[test]
fn revoked_certificate_is_refused() {
    let pki = ecdsa_pki();
    let mallory = leaf(&pki.root, "mallory", p256(), None);
    let mut g = gateway(&pki);
    // As Azure shows thumbprints, in lower case with separators: matched case-insensitively.
    let shown = cert::thumbprint(&mallory.der).to_lowercase();
    g.revoked = vec![shown];
    let mut net = Net::new(gateway_config(&g));
    let a = client_addr(2);
    connect(&mut net, &pki, a, &mallory);
    net.run(Duration::from_secs(2));
    let downs = client_downs(&net.gw_events);
    assert_eq!(downs.len(), 1, "{}", logs(&net.gw_events));
    assert_eq!(downs[0].1, Reason::CertificateRevoked);
    assert_eq!(Reason::CertificateRevoked.as_str(), "CERTIFICATE_REVOKED");
    assert!(downs[0].2.contains(&cert::thumbprint(&mallory.der)));
    assert!(downs[0].2.contains("CN=mallory"));
    assert!(client_ups(&net.gw_events).is_empty());
    assert_eq!(
        ike_down(net.client_events(a)),
        Some(Reason::AuthorizationError)
    );
    assert!(child_keys(net.client_events(a)).is_empty());
}

#[test]
fn certificate_from_another_root_is_untrusted() {
    let pki = ecdsa_pki();
    let other = ca("Someone Else's Root", p256());
    let eve = leaf(&other, "eve", p256(), None);
    let mut net = Net::new(gateway_config(&gateway(&pki)));
    let a = client_addr(3);
    connect(&mut net, &pki, a, &eve);
    net.run(Duration::from_secs(2));
    let downs = client_downs(&net.gw_events);
    assert_eq!(downs.len(), 1, "{}", logs(&net.gw_events));
    assert_eq!(downs[0].1, Reason::CertificateUntrusted);
    assert_eq!(downs[0].1.as_str(), "CERTIFICATE_UNTRUSTED");
    assert!(downs[0].2.contains("CN=eve"));
}

#[test]
fn expired_certificate_is_refused() {
    let pki = ecdsa_pki();
    let old = leaf_with(&pki.root, "old", p256(), None, |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let mut net = Net::new(gateway_config(&gateway(&pki)));
    let a = client_addr(4);
    connect(&mut net, &pki, a, &old);
    net.run(Duration::from_secs(2));
    let downs = client_downs(&net.gw_events);
    assert_eq!(downs.len(), 1, "{}", logs(&net.gw_events));
    assert_eq!(downs[0].1, Reason::CertificateExpired);
    assert_eq!(downs[0].1.as_str(), "CERTIFICATE_EXPIRED");
}

#[test]
fn identity_must_match_the_certificate() {
    let pki = ecdsa_pki();
    let bob = leaf(&pki.root, "bob", p256(), None);
    let mut net = Net::new(gateway_config(&gateway(&pki)));
    let a = client_addr(5);
    let mut config = client_config(
        &bob,
        &[],
        identity(&pki.server.der),
        vec![pki.root.der.clone()],
        RsaPadding::Pkcs1,
    );
    config.local_id = Identity {
        kind: vgw_ike::message::id_type::FQDN,
        data: b"admin.contoso.example".to_vec(),
    };
    net.add_client(a, config);
    net.run(Duration::from_secs(2));
    let downs = client_downs(&net.gw_events);
    assert_eq!(downs.len(), 1, "{}", logs(&net.gw_events));
    assert_eq!(downs[0].1, Reason::CertificateIdentityMismatch);
}

#[test]
fn reconnect_gets_the_same_address() {
    let pki = ecdsa_pki();
    let alice = leaf(&pki.root, "alice", p256(), None);
    let bob = leaf(&pki.root, "bob", p256(), None);
    let mut net = Net::new(gateway_config(&gateway(&pki)));
    let (a, b) = (client_addr(10), client_addr(11));
    connect(&mut net, &pki, a, &alice);
    net.run(Duration::from_secs(2));
    let first = client_ups(&net.gw_events)[0].addresses.clone();

    // Alice disconnects (DELETE), Bob connects meanwhile, Alice comes back from another address.
    let now = net.now;
    net.clients.get_mut(&a).unwrap().0.remove(CLIENT, now);
    net.run(Duration::from_secs(2));
    assert_eq!(client_downs(&net.gw_events).len(), 1);
    assert_eq!(client_downs(&net.gw_events)[0].1, Reason::DeletedByPeer);
    connect(&mut net, &pki, b, &bob);
    net.run(Duration::from_secs(2));
    let a2 = client_addr(12);
    connect(&mut net, &pki, a2, &alice);
    net.run(Duration::from_secs(2));
    let ups = client_ups(&net.gw_events);
    assert_eq!(ups.len(), 3, "{}", logs(&net.gw_events));
    assert_ne!(ups[1].addresses, first, "bob must not get alice's address");
    assert_eq!(ups[2].user_name, "alice");
    assert_eq!(ups[2].addresses, first);
}

#[test]
fn two_hundred_clients_get_distinct_addresses() {
    let pki = ecdsa_pki();
    let mut net = Net::new(gateway_config(&gateway(&pki)));
    for i in 0..200 {
        let who = leaf(&pki.root, &format!("user{i}"), p256(), None);
        connect(&mut net, &pki, client_addr(100 + i), &who);
    }
    net.run(Duration::from_secs(5));
    let ups = client_ups(&net.gw_events);
    assert_eq!(ups.len(), 200, "{}", logs(&net.gw_events));
    let mut v4: Vec<IpAddr> = ups.iter().map(|u| u.addresses[0]).collect();
    v4.sort();
    v4.dedup();
    assert_eq!(v4.len(), 200);
    let mut ids: Vec<ConnId> = ups.iter().map(|u| u.client).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200);
    assert_eq!(net.gw.clients().len(), 200);
    for addr in net.clients.keys() {
        assert_eq!(child_keys(&net.clients[addr].1).len(), 1);
    }
}

#[test]
fn exhausted_pool_is_reported() {
    let pki = ecdsa_pki();
    let mut g = gateway(&pki);
    g.pool_v4 = ("172.16.201.0".parse().unwrap(), 29); // 5 client addresses
    let mut net = Net::new(gateway_config(&g));
    for i in 0..6 {
        let who = leaf(&pki.root, &format!("user{i}"), p256(), None);
        connect(&mut net, &pki, client_addr(20 + i), &who);
        net.run(Duration::from_millis(500));
    }
    assert_eq!(client_ups(&net.gw_events).len(), 5);
    let downs = client_downs(&net.gw_events);
    assert_eq!(downs.len(), 1, "{}", logs(&net.gw_events));
    assert_eq!(downs[0].1, Reason::PoolExhausted);
    assert_eq!(
        ike_down(net.client_events(client_addr(25))),
        Some(Reason::PoolExhausted)
    );
}

#[test]
fn disconnect_by_thumbprint_deletes_the_connected_client() {
    let pki = ecdsa_pki();
    let alice = leaf(&pki.root, "alice", p256(), None);
    let bob = leaf(&pki.root, "bob", p256(), None);
    let carol = leaf(&pki.root, "carol", p256(), None);
    let g = gateway(&pki);
    let mut net = Net::new(gateway_config(&g));
    let (a, b, c) = (client_addr(30), client_addr(31), client_addr(32));
    connect(&mut net, &pki, a, &alice);
    connect(&mut net, &pki, b, &bob);
    connect(&mut net, &pki, c, &carol);
    net.run(Duration::from_secs(2));
    assert_eq!(net.gw.clients().len(), 3);
    let alice_id = net
        .gw
        .clients()
        .iter()
        .find(|i| i.user_name == "alice")
        .unwrap()
        .client;

    let now = net.now;
    let thumb = cert::thumbprint(&alice.der).to_lowercase();
    assert_eq!(net.gw.disconnect_thumbprint(&thumb, now), 1);
    // Reported at once: Child SAs out, ClientDown with the reason.
    let mut immediate = Vec::new();
    while let Some(e) = net.gw.poll_event() {
        immediate.push(e);
    }
    assert!(
        immediate
            .iter()
            .any(|e| matches!(e, Event::ChildSaDown { conn, .. } if *conn == alice_id))
    );
    let downs = client_downs(&immediate);
    assert_eq!(downs.len(), 1);
    assert_eq!(downs[0].0, alice_id);
    assert_eq!(downs[0].1, Reason::CertificateRevoked);
    net.gw_events.extend(immediate);
    net.run(Duration::from_secs(2));
    // The DELETE reached Alice.
    assert_eq!(ike_down(net.client_events(a)), Some(Reason::DeletedByPeer));
    assert!(ike_down(net.client_events(b)).is_none());
    assert_eq!(net.gw.clients().len(), 2);

    // Revoking through the configuration drops a connected client too (and keeps Alice, who retries,
    // out).
    let mut g2 = gateway(&pki);
    g2.revoked = vec![cert::thumbprint(&alice.der), cert::thumbprint(&bob.der)];
    let now = net.now;
    net.gw.set_config(SERVER, gateway_config(&g2), now);
    net.run(Duration::from_secs(2));
    assert_eq!(ike_down(net.client_events(b)), Some(Reason::DeletedByPeer));
    assert!(ike_down(net.client_events(c)).is_none(), "carol must stay");
    assert_eq!(net.gw.clients().len(), 1);
    let downs = client_downs(&net.gw_events);
    assert!(downs.len() >= 2, "{downs:?}");
    assert!(
        downs.iter().all(|d| d.1 == Reason::CertificateRevoked),
        "{downs:?}"
    );

    // An operator disconnect.
    let carol_id = net.gw.clients()[0].client;
    let now = net.now;
    assert!(net.gw.disconnect_client(carol_id, now));
    net.run(Duration::from_secs(2));
    assert_eq!(ike_down(net.client_events(c)), Some(Reason::DeletedByPeer));
    assert!(net.gw.clients().is_empty());
}

fn rsa_pki(size: RsaKeySize) -> (Pki, Ca) {
    let root = ca("vgw RSA Root", rsa(size));
    let inter = intermediate(&root, "vgw RSA Issuing CA", rsa(size));
    let server = leaf(
        &inter,
        "vpn.contoso.example",
        rsa(size),
        Some(ExtendedKeyUsagePurpose::ServerAuth),
    );
    (Pki { root, server }, inter)
}

#[test]
fn rsa_pkcs1_and_pss_and_ecdsa_p384_authenticate() {
    let (pki, inter) = rsa_pki(RsaKeySize::_2048);
    let mut g = gateway(&pki);
    g.chain = vec![inter.der.clone()];
    g.padding = RsaPadding::Pss;
    // A second root with P-384 keys.
    let root384 = ca("vgw P-384 Root", p384());
    g.roots.push(root384.der.clone());
    let mut net = Net::new(gateway_config(&g));

    let rsa_client = leaf(&inter, "rsa-user", rsa(RsaKeySize::_2048), None);
    let pss_client = leaf(&inter, "pss-user", rsa(RsaKeySize::_2048), None);
    let ec_client = leaf(&root384, "p384-user", p384(), None);
    let server_id = identity(&pki.server.der);
    let roots = vec![pki.root.der.clone()];
    net.add_client(
        client_addr(40),
        client_config(
            &rsa_client,
            std::slice::from_ref(&inter.der),
            server_id.clone(),
            roots.clone(),
            RsaPadding::Pkcs1,
        ),
    );
    net.add_client(
        client_addr(41),
        client_config(
            &pss_client,
            std::slice::from_ref(&inter.der),
            server_id.clone(),
            roots.clone(),
            RsaPadding::Pss,
        ),
    );
    net.add_client(
        client_addr(42),
        client_config(&ec_client, &[], server_id, roots, RsaPadding::Pkcs1),
    );
    net.run(Duration::from_secs(3));
    let gw_log = logs(&net.gw_events);
    assert_eq!(client_ups(&net.gw_events).len(), 3, "{gw_log}");
    assert!(gw_log.contains("CN=rsa-user, O=Contoso"));
    assert!(
        gw_log.contains("RSA PKCS#1 v1.5 SHA-256 (RFC 7427)"),
        "{gw_log}"
    );
    assert!(gw_log.contains("RSASSA-PSS SHA-256 (RFC 7427)"), "{gw_log}");
    assert!(
        gw_log.contains("ECDSA P-384 SHA-384 (RFC 7427)"),
        "{gw_log}"
    );
    // The gateway signs with PSS; the clients verified it through the intermediate.
    let client_log = logs(net.client_events(client_addr(40)));
    assert!(
        client_log.contains("RSASSA-PSS SHA-256 (RFC 7427)"),
        "{client_log}"
    );
    for i in 40..43 {
        assert_eq!(child_keys(net.client_events(client_addr(i))).len(), 1);
    }
}

#[test]
fn rsa_4096_chain_is_fragmented() {
    let (pki, inter) = rsa_pki(RsaKeySize::_4096);
    let mut g = gateway(&pki);
    g.chain = vec![inter.der.clone()];
    let mut net = Net::new(gateway_config(&g));
    let user = leaf(&inter, "big-user", rsa(RsaKeySize::_4096), None);
    net.add_client(
        client_addr(50),
        client_config(
            &user,
            std::slice::from_ref(&inter.der),
            identity(&pki.server.der),
            vec![pki.root.der.clone()],
            RsaPadding::Pkcs1,
        ),
    );
    net.run(Duration::from_secs(3));
    assert_eq!(
        client_ups(&net.gw_events).len(),
        1,
        "{}",
        logs(&net.gw_events)
    );
    // IKE_AUTH both ways went as RFC 7383 fragments, none above the 1200-byte fragment size.
    let client_fragments = net.client_datagrams.iter().filter(|d| d.1).count();
    let gw_fragments = net.gw_datagrams.iter().filter(|d| d.1).count();
    assert!(
        client_fragments >= 3,
        "client sent {client_fragments} fragments"
    );
    assert!(gw_fragments >= 3, "gateway sent {gw_fragments} fragments");
    assert!(
        net.client_datagrams
            .iter()
            .chain(&net.gw_datagrams)
            .all(|d| d.0 <= 1200),
        "a datagram exceeds the fragment size"
    );
    assert_eq!(child_keys(net.client_events(client_addr(50))).len(), 1);
}

#[test]
fn signatures_round_trip_for_every_method() {
    let root = ca("Root", p256());
    let roots = vec![root.der.clone()];
    let store = TrustStore::new(roots, Vec::new()).unwrap();
    let time = cert::unix_time(wall_clock());
    let octets = b"InitiatorSignedOctets";
    let cases: Vec<(KeyPair, RsaPadding, &[u16], u8)> = vec![
        (p256(), RsaPadding::Pkcs1, &[], auth_method::ECDSA_256),
        (p384(), RsaPadding::Pkcs1, &[], auth_method::ECDSA_384),
        (
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).unwrap(),
            RsaPadding::Pkcs1,
            &[2, 3, 4],
            auth_method::DIGITAL_SIGNATURE,
        ),
        (
            p256(),
            RsaPadding::Pkcs1,
            &[2],
            auth_method::DIGITAL_SIGNATURE,
        ),
        (
            rsa(RsaKeySize::_2048),
            RsaPadding::Pkcs1,
            &[4],
            auth_method::DIGITAL_SIGNATURE,
        ),
        (
            rsa(RsaKeySize::_2048),
            RsaPadding::Pss,
            &[3],
            auth_method::DIGITAL_SIGNATURE,
        ),
    ];
    for (key, padding, hashes, method) in cases {
        let l = leaf(&root, "signer", key, None);
        let local = LocalCertificate::new(vec![l.der.clone()], &l.key)
            .unwrap()
            .with_rsa_padding(padding);
        let (m, data) = local.sign(octets, hashes).unwrap();
        assert_eq!(m, method);
        let peer = store.verify(std::slice::from_ref(&l.der), time).unwrap();
        peer.verify_auth(m, &data, octets).unwrap();
        assert!(peer.verify_auth(m, &data, b"other octets").is_err());
        let mut broken = data.clone();
        let last = broken.len() - 1;
        broken[last] ^= 1;
        assert!(peer.verify_auth(m, &broken, octets).is_err());
        assert!(
            peer.verify_auth(m, &data[..data.len() / 2], octets)
                .is_err()
        );
    }
    // A key that is not the certificate's is refused when configured.
    let l = leaf(&root, "signer", p256(), None);
    let other = p256().serialize_der();
    assert!(LocalCertificate::new(vec![l.der], &other).is_err());
    assert!(
        format!(
            "{:?}",
            LocalCertificate::new(vec![root.der.clone()], &[]).err()
        )
        .contains("key")
    );
}

#[test]
fn clients_rekey_and_dead_clients_are_detected() {
    let pki = ecdsa_pki();
    let alice = leaf(&pki.root, "alice", p256(), None);
    let bob = leaf(&pki.root, "bob", p256(), None);
    let mut net = Net::new(gateway_config(&gateway(&pki)));
    let (a, b) = (client_addr(60), client_addr(61));
    for (addr, who) in [(a, &alice), (b, &bob)] {
        let mut config = client_config(
            who,
            &[],
            identity(&pki.server.der),
            vec![pki.root.der.clone()],
            RsaPadding::Pkcs1,
        );
        config.ike_lifetime = Duration::from_secs(100);
        config.child_lifetime = Duration::from_secs(40);
        net.add_client(addr, config);
    }
    net.run(Duration::from_secs(2));
    assert_eq!(net.gw.clients().len(), 2);
    let alice_info = net
        .gw
        .clients()
        .into_iter()
        .find(|c| c.user_name == "alice")
        .unwrap();

    // The clients rekey their Child SAs and IKE SAs; the gateway keeps them as the same sessions with
    // the same narrowed selectors.
    net.run(Duration::from_secs(150));
    assert!(
        client_downs(&net.gw_events).is_empty(),
        "{}",
        logs(&net.gw_events)
    );
    assert_eq!(client_ups(&net.gw_events).len(), 2);
    assert!(net.gw_events.iter().any(
        |e| matches!(e, Event::IkeSaUp { conn, rekey: true, .. } if *conn == alice_info.client)
    ));
    let alice_children: Vec<&ChildSaKeys> = net
        .gw_events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaUp { conn, keys, .. } if *conn == alice_info.client => Some(keys),
            _ => None,
        })
        .collect();
    assert!(alice_children.len() >= 3, "{}", alice_children.len());
    let last = alice_children.last().unwrap();
    assert_eq!(
        last.remote_ts[0],
        TrafficSelector::from_prefix(alice_info.addresses[0], 32)
    );
    assert_eq!(net.gw.clients().len(), 2);

    // Alice vanishes: dead-peer detection ends her session and frees her address.
    net.clients.remove(&a);
    net.run(Duration::from_secs(60));
    let downs = client_downs(&net.gw_events);
    assert_eq!(downs.len(), 1, "{}", logs(&net.gw_events));
    assert_eq!(downs[0].0, alice_info.client);
    assert_eq!(downs[0].1, Reason::PeerDead);
    assert_eq!(net.gw.clients().len(), 1);
    assert!(
        net.gw_events
            .iter()
            .any(|e| matches!(e, Event::ChildSaDown { conn, .. } if *conn == alice_info.client))
    );
}

#[test]
fn mangled_datagrams_never_panic_the_gateway() {
    let pki = ecdsa_pki();
    let alice = leaf(&pki.root, "alice", p256(), None);
    // Record a real exchange, then replay mutated copies of every datagram to fresh gateways. This
    // reaches the unprotected layers (header, IKE_SA_INIT payloads, SK/SKF framing, integrity checks);
    // the fuzz target covers the rest of the codec.
    let mut recorder = Endpoint::new();
    let now = Instant::now();
    recorder.set_wall_clock(now, wall_clock());
    recorder.set_config(
        CLIENT,
        client_config(
            &alice,
            &[],
            identity(&pki.server.der),
            vec![pki.root.der.clone()],
            RsaPadding::Pkcs1,
        ),
        now,
    );
    let mut gw = Endpoint::new();
    gw.set_wall_clock(now, wall_clock());
    gw.set_config(SERVER, gateway_config(&gateway(&pki)), now);
    let from = |port: u16| SocketAddr::new(client_addr(70), port);
    let mut sent = Vec::new();
    recorder.handle_timeout(now);
    for _ in 0..10 {
        while let Some(t) = recorder.poll_transmit() {
            sent.push((t.remote.port(), t.local_port, t.data.clone()));
            gw.handle_datagram(now, t.remote.port(), from(t.local_port), &t.data);
        }
        while let Some(t) = gw.poll_transmit() {
            let gateway = SocketAddr::new(GATEWAY.parse().unwrap(), t.local_port);
            recorder.handle_datagram(now, t.remote.port(), gateway, &t.data);
        }
    }
    assert!(gw.clients().len() == 1 && sent.len() >= 2);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..300 {
        let mut target = Endpoint::new();
        target.set_wall_clock(now, wall_clock());
        target.set_config(SERVER, gateway_config(&gateway(&pki)), now);
        for (to_port, from_port, data) in &sent {
            let mut d = data.clone();
            for _ in 0..(1 + next() % 4) {
                let i = (next() as usize) % d.len();
                d[i] = next() as u8;
            }
            if round % 3 == 0 {
                d.truncate((next() as usize) % d.len());
            }
            target.handle_datagram(now, *to_port, from(*from_port), &d);
            // The unmutated original too, so later states are reached.
            target.handle_datagram(now, *to_port, from(*from_port), data);
            while target.poll_transmit().is_some() {}
            while target.poll_event().is_some() {}
        }
        target.handle_timeout(now + Duration::from_secs(30));
    }
}

#[test]
fn site_to_site_with_certificates_both_ways() {
    let pki = ecdsa_pki();
    let branch = leaf(
        &pki.root,
        "branch.contoso.example",
        p384(),
        Some(ExtendedKeyUsagePurpose::ServerAuth),
    );
    let b = client_addr(80);
    let trust = |revoked: Vec<String>| {
        PeerAuth::Certificate(Arc::new(
            TrustStore::new(vec![pki.root.der.clone()], revoked).unwrap(),
        ))
    };
    let responder = |revoked: Vec<String>| Config {
        local_addr: GATEWAY.parse().unwrap(),
        remote_addr: b,
        local_id: identity(&pki.server.der),
        remote_id: identity(&branch.der),
        local_auth: LocalAuth::Certificate(Arc::new(
            LocalCertificate::new(vec![pki.server.der.clone()], &pki.server.key).unwrap(),
        )),
        peer_auth: trust(revoked),
        mode: Mode::ResponderOnly,
        ..Default::default()
    };
    let mut net = Net::new(responder(vec![]));
    net.add_client(
        b,
        Config {
            local_addr: b,
            remote_addr: GATEWAY.parse().unwrap(),
            local_id: identity(&branch.der),
            remote_id: identity(&pki.server.der),
            local_auth: LocalAuth::Certificate(Arc::new(
                LocalCertificate::new(vec![branch.der.clone()], &branch.key).unwrap(),
            )),
            peer_auth: trust(vec![]),
            ..Default::default()
        },
    );
    net.run(Duration::from_secs(2));
    assert!(net.gw.is_established(SERVER), "{}", logs(&net.gw_events));
    assert!(
        client_ups(&net.gw_events).is_empty(),
        "not a remote-access connection"
    );
    let keys = child_keys(&net.gw_events);
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].remote_ts, vec![TrafficSelector::any_v4()]);
    assert!(logs(&net.gw_events).contains("ECDSA P-384 SHA-384 (RFC 7427)"));

    // Revoking the branch's certificate in the configuration resets the connection, and the branch's
    // next attempt is refused.
    let now = net.now;
    net.gw
        .set_config(SERVER, responder(vec![cert::thumbprint(&branch.der)]), now);
    net.run(Duration::from_secs(5));
    assert!(!net.gw.is_established(SERVER));
    assert!(net.gw_events.iter().any(|e| matches!(
        e,
        Event::IkeSaDown { failure, .. } if failure.reason == Reason::CertificateRevoked
    )));
}
