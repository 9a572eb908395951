//! The plans as pure functions: desired state in, engine configurations out, no root and no sockets.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde_json::json;
use vgw_ike::crypto::{DhGroup, Encryption, Integrity, Prf};
use vgw_ike::message::TrafficSelector;
use vgw_ike::{Mode, RemoteAccess};

use super::Instance;
use crate::model::*;
use crate::state::DesiredState;

fn prefixes(list: &[&str]) -> AddressSpace {
    AddressSpace {
        address_prefixes: list.iter().map(|p| p.to_string()).collect(),
    }
}

fn ts(prefix: &str) -> TrafficSelector {
    let p: IpNet = prefix.parse().unwrap();
    TrafficSelector::from_prefix(p.addr(), p.prefix_len())
}

/// One gateway (two public addresses, active-active), one site and one connection to it.
fn site_to_site() -> DesiredState {
    let mut s = DesiredState {
        gateway: Some(VnetGatewaySpec {
            name: "gw".into(),
            ip_configurations: vec![
                IpConfiguration {
                    name: "a".into(),
                    public_ip_address: "198.18.0.2".into(),
                },
                IpConfiguration {
                    name: "b".into(),
                    public_ip_address: "198.18.0.3".into(),
                },
            ],
            address_space: prefixes(&["10.2.0.0/16"]),
            ..Default::default()
        }),
        ..Default::default()
    };
    s.local_gateways.insert(
        "site".into(),
        LocalGatewaySpec {
            name: "site".into(),
            gateway_ip_address: Some("198.18.0.1".into()),
            local_network_address_space: prefixes(&["10.1.0.0/16", "10.9.0.0/24"]),
            ..Default::default()
        },
    );
    s.connections.insert(
        "c1".into(),
        ConnectionSpec {
            name: "c1".into(),
            local_network_gateway2: ResourceRef::new(collection::LOCAL_GATEWAYS, "site"),
            shared_key: Some("abc123".into()),
            dpd_timeout_seconds: 45,
            ..Default::default()
        },
    );
    s
}

fn policy(v: serde_json::Value) -> IpsecPolicy {
    serde_json::from_value(v).expect("policy")
}

#[test]
fn route_based_site_to_site_uses_any_selectors_and_the_instances_address() {
    let s = site_to_site();
    let c = &s.connections["c1"];
    let (config, routed) = super::ipsec::build_config(&s, c, Instance(0)).unwrap();
    assert_eq!(config.local_addr, "198.18.0.2".parse::<IpAddr>().unwrap());
    assert_eq!(config.remote_addr, "198.18.0.1".parse::<IpAddr>().unwrap());
    assert_eq!(config.remote_port, 500);
    assert_eq!(&config.psk[..], b"abc123");
    assert_eq!(config.mode, Mode::Default);
    assert_eq!(config.dpd_timeout, Duration::from_secs(45));
    assert_eq!(config.children.len(), 1);
    assert_eq!(
        config.children[0].local,
        vec![TrafficSelector::any_v4(), TrafficSelector::any_v6()]
    );
    assert_eq!(
        routed,
        vec![
            "10.1.0.0/16".parse::<IpNet>().unwrap(),
            "10.9.0.0/24".parse().unwrap()
        ]
    );
    // Instance 1 of an active-active pair serves the second public address.
    let (config, _) = super::ipsec::build_config(&s, c, Instance(1)).unwrap();
    assert_eq!(config.local_addr, "198.18.0.3".parse::<IpAddr>().unwrap());
    // No third address: refused with the flag named, not a panic.
    let err = super::ipsec::build_config(&s, c, Instance(2)).unwrap_err();
    assert!(err.contains("--instance"), "{err}");
}

#[test]
fn policy_based_selectors_pair_every_local_and_remote_prefix() {
    let mut s = site_to_site();
    s.connections
        .get_mut("c1")
        .unwrap()
        .use_policy_based_traffic_selectors = true;
    let (config, _) = super::ipsec::build_config(&s, &s.connections["c1"], Instance(0)).unwrap();
    assert_eq!(config.children.len(), 2);
    assert_eq!(config.children[0].local, vec![ts("10.2.0.0/16")]);
    assert_eq!(config.children[0].remote, vec![ts("10.1.0.0/16")]);
    assert_eq!(config.children[1].remote, vec![ts("10.9.0.0/24")]);

    // Explicit trafficSelectorPolicies win over the pairing.
    let c = s.connections.get_mut("c1").unwrap();
    c.traffic_selector_policies = vec![TrafficSelectorPolicy {
        local_address_ranges: vec!["10.2.1.0/24".into()],
        remote_address_ranges: vec!["10.1.1.0/24".into(), "10.1.2.0/24".into()],
    }];
    let (config, _) = super::ipsec::build_config(&s, &s.connections["c1"], Instance(0)).unwrap();
    assert_eq!(config.children.len(), 1);
    assert_eq!(config.children[0].local, vec![ts("10.2.1.0/24")]);
    assert_eq!(
        config.children[0].remote,
        vec![ts("10.1.1.0/24"), ts("10.1.2.0/24")]
    );
}

#[test]
fn custom_ipsec_policies_become_proposals_lifetimes_and_pfs() {
    let mut s = site_to_site();
    s.connections.get_mut("c1").unwrap().ipsec_policies = vec![policy(json!({
        "saLifeTimeSeconds": 3600, "saDataSizeKilobytes": 102400,
        "ipsecEncryption": "GCMAES256", "ipsecIntegrity": "GCMAES256",
        "ikeEncryption": "AES256", "ikeIntegrity": "SHA384",
        "dhGroup": "ECP384", "pfsGroup": "ECP384"
    }))];
    let (config, _) = super::ipsec::build_config(&s, &s.connections["c1"], Instance(0)).unwrap();
    assert_eq!(config.ike[0].encryption, vec![Encryption::AesCbc(256)]);
    assert_eq!(config.ike[0].integrity, vec![Integrity::HmacSha384_192]);
    assert_eq!(config.ike[0].prf, vec![Prf::HmacSha384]);
    assert_eq!(config.ike[0].dh, vec![DhGroup::Ecp384]);
    assert_eq!(config.esp[0].encryption, vec![Encryption::AesGcm16(256)]);
    assert!(config.esp[0].integrity.is_empty());
    assert_eq!(config.pfs, Some(DhGroup::Ecp384));
    assert_eq!(config.child_lifetime, Duration::from_secs(3600));
    assert_eq!(config.child_lifetime_bytes, Some(102_400 * 1024));
}

#[test]
fn a_bgp_neighbour_outside_the_sites_prefixes_is_routed_as_a_host() {
    let mut s = site_to_site();
    s.local_gateways.get_mut("site").unwrap().bgp_settings = Some(BgpSettings {
        asn: 65010,
        bgp_peering_address: Some("192.168.77.1".into()),
        ..Default::default()
    });
    let (_, routed) = super::ipsec::build_config(&s, &s.connections["c1"], Instance(0)).unwrap();
    assert!(routed.contains(&"192.168.77.1/32".parse().unwrap()));
}

#[test]
fn bgp_peers_take_this_instances_peering_address_and_inherit_timers() {
    let mut s = site_to_site();
    let gw = s.gateway.as_mut().unwrap();
    gw.enable_bgp = true;
    gw.bgp_settings = Some(BgpSettings {
        asn: 65515,
        bgp_peering_address: Some("10.2.255.30,10.2.255.31".into()),
        hold_time_seconds: Some(30),
        ..Default::default()
    });
    s.local_gateways.get_mut("site").unwrap().bgp_settings = Some(BgpSettings {
        asn: 65010,
        bgp_peering_address: Some("10.1.255.1".into()),
        keepalive_seconds: Some(5),
        ..Default::default()
    });
    // A connection without enableBgp has no peer.
    assert!(super::bgp::peers(&s, Instance(0)).is_empty());
    let c = s.connections.get_mut("c1").unwrap();
    c.enable_bgp = true;
    c.routing_weight = 7;
    let peers = super::bgp::peers(&s, Instance(0));
    let p = &peers["c1"];
    assert_eq!((p.local_asn, p.peer_asn), (65515, 65010));
    assert_eq!(p.local_address, "10.2.255.30".parse::<IpAddr>().unwrap());
    assert_eq!(p.peer_address, "10.1.255.1".parse::<IpAddr>().unwrap());
    assert_eq!((p.hold_time, p.keepalive), (30, 5));
    assert_eq!(p.max_prefixes, super::bgp::DEFAULT_MAX_PREFIXES);
    assert_eq!(p.weight, 7);
    assert_eq!(p.bfd, None);
    let p = &super::bgp::peers(&s, Instance(1))["c1"];
    assert_eq!(p.local_address, "10.2.255.31".parse::<IpAddr>().unwrap());
}

fn point_to_site(protocols: &[VpnClientProtocol]) -> DesiredState {
    let root = vgw_pki::create_root(
        "P2S Root",
        vgw_pki::KeyType::EcdsaP256,
        vgw_pki::Validity::days_from_now(30),
    )
    .unwrap();
    let mut s = site_to_site();
    s.gateway.as_mut().unwrap().vpn_client_configuration = Some(VpnClientConfiguration {
        vpn_client_address_pool: prefixes(&["172.16.201.0/24"]),
        vpn_client_protocols: protocols.to_vec(),
        vpn_client_root_certificates: vec![RootCertificate {
            name: "root".into(),
            public_cert_data: vgw_pki::public_cert_data(&root.cert_der),
        }],
        dns_servers: vec!["10.2.0.53".into()],
        wire_guard_peers: vec!["laptop".into(), "phone".into()],
        ..Default::default()
    });
    s
}

#[test]
fn point_to_site_is_a_responder_with_the_pool_split_routes_and_dns() {
    let dir = tempfile::tempdir().unwrap();
    // Not configured: no remote-access connection at all.
    assert!(super::p2s::build_config(&site_to_site(), dir.path(), Instance(0)).is_none());

    let s = point_to_site(&[VpnClientProtocol::IkeV2]);
    let config = super::p2s::build_config(&s, dir.path(), Instance(0))
        .expect("configured")
        .expect("valid");
    assert_eq!(config.mode, Mode::ResponderOnly);
    assert_eq!(config.local_addr, "198.18.0.2".parse::<IpAddr>().unwrap());
    let RemoteAccess::Server(server) = &config.remote_access else {
        panic!("not a remote-access server");
    };
    assert_eq!(server.pool_v4, Some(("172.16.201.0".parse().unwrap(), 24)));
    assert_eq!(server.dns, vec!["10.2.0.53".parse::<IpAddr>().unwrap()]);
    // Split routes: the gateway's space and every site's, not the whole internet.
    assert_eq!(
        config.children[0].local,
        vec![ts("10.1.0.0/16"), ts("10.2.0.0/16"), ts("10.9.0.0/24")]
    );

    // With WireGuard on as well, IKEv2 leases from the lower half of the pool.
    let s = point_to_site(&[VpnClientProtocol::IkeV2, VpnClientProtocol::WireGuard]);
    let config = super::p2s::build_config(&s, dir.path(), Instance(0))
        .unwrap()
        .unwrap();
    let RemoteAccess::Server(server) = &config.remote_access else {
        panic!("not a remote-access server");
    };
    assert_eq!(server.pool_v4, Some(("172.16.201.0".parse().unwrap(), 25)));
}

#[test]
fn wireguard_peers_get_stable_keys_and_addresses_from_the_upper_half() {
    let dir = tempfile::tempdir().unwrap();
    let keys = crate::drivers::wireguard::Keys::load(dir.path()).unwrap();
    let s = point_to_site(&[VpnClientProtocol::WireGuard]);
    let p2s = s
        .gateway
        .as_ref()
        .unwrap()
        .vpn_client_configuration
        .as_ref()
        .unwrap();
    assert!(super::p2s::wireguard_on(p2s));
    let peers = super::p2s::wireguard_peers(p2s, &keys);
    assert_eq!(peers.len(), 2);
    assert_eq!(peers[0].0.name, "laptop");
    assert_ne!(peers[0].0.address, peers[1].0.address);
    for (peer, _) in &peers {
        let IpAddr::V4(a) = peer.address else {
            panic!("WireGuard peers are IPv4");
        };
        assert!(a.octets()[3] >= 128, "{a} is not in the upper half");
    }
    // The same master key derives the same client keys.
    let again = super::p2s::wireguard_peers(p2s, &keys);
    assert_eq!(peers[0].1, again[0].1);
    assert_eq!(peers[0].0.public.as_bytes(), again[0].0.public.as_bytes());
}
