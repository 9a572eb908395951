//! The client profile zip: file list, and each platform's file carrying the gateway's policy.

use std::io::{Cursor, Read};

use vgw_pki::profiles::{
    ClientProfile, IpsecPolicy, ProfileInput, ServerIdentity, WIREGUARD_KEY_PLACEHOLDER,
    WireGuardClient, WireGuardInput, build_profile,
};
use vgw_pki::{CertAuthority, ClientRequest, KeyType, P12Format, Validity, create_root, pkcs12};

fn policy() -> IpsecPolicy {
    IpsecPolicy {
        ike_encryption: "GCMAES256".parse().unwrap(),
        ike_integrity: "SHA256".parse().unwrap(),
        dh_group: "ECP256".parse().unwrap(),
        ipsec_encryption: "GCMAES256".parse().unwrap(),
        ipsec_integrity: "GCMAES256".parse().unwrap(),
        pfs_group: "ECP256".parse().unwrap(),
        sa_life_time_seconds: 3600,
        sa_data_size_kilobytes: 102_400_000,
    }
}

fn input() -> ProfileInput {
    let root = create_root("p2s-root", KeyType::EcdsaP256, Validity::days_from_now(30)).unwrap();
    let root_der = root.cert_der.clone();
    let ca = CertAuthority::from_issued(root).unwrap();
    let alice = ca
        .issue_client(&ClientRequest {
            name: "alice".into(),
            key: KeyType::EcdsaP256,
            validity: Validity::days_from_now(30),
            sans: vec!["alice@example.com".parse().unwrap()],
        })
        .unwrap();
    let p12 = pkcs12("alice", &alice, &[&root_der], "pw", P12Format::Legacy).unwrap();
    ProfileInput {
        gateway_name: "gw1".into(),
        server_address: "198.18.0.2".into(),
        server_dns_name: Some("vpn.example.com".into()),
        server_identity: ServerIdentity {
            subject: Some("CN=vpn.example.com".into()),
            san: Some("vpn.example.com".into()),
        },
        root_certificates: vec![root_der],
        policies: vec![policy()],
        routes: vec!["10.1.0.0/16".into(), "10.2.0.0/16".into()],
        dns_servers: vec!["10.1.0.4".into()],
        client_address_pool: vec!["172.16.201.0/24".into()],
        client: Some(ClientProfile {
            name: "alice".into(),
            identity: None,
            certificate: Some(alice.cert_der.clone()),
            pkcs12: Some(p12),
        }),
        wireguard: Some(WireGuardInput {
            server_public_key: "c2VydmVyLXB1YmxpYy1rZXktMzItYnl0ZXMtbG9uZyE=".into(),
            endpoint: "vpn.example.com:51820".into(),
            clients: vec![
                WireGuardClient {
                    name: "alice-phone".into(),
                    private_key: Some("YWxpY2UtcHJpdmF0ZS1rZXktMzItYnl0ZXMtbG9uZyE=".into()),
                    address: "172.16.202.2/32".into(),
                },
                WireGuardClient {
                    name: "bob".into(),
                    private_key: None,
                    address: "172.16.202.3/32".into(),
                },
            ],
        }),
    }
}

fn unzip(zip: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = zip::ZipArchive::new(Cursor::new(zip)).unwrap();
    (0..archive.len())
        .map(|i| {
            let mut f = archive.by_index(i).unwrap();
            assert_eq!(f.compression(), zip::CompressionMethod::Deflated);
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            (f.name().unwrap().to_string(), data)
        })
        .collect()
}

fn text<'a>(files: &'a [(String, Vec<u8>)], name: &str) -> &'a str {
    let (_, data) = files
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} missing"));
    std::str::from_utf8(data).unwrap()
}

#[test]
fn zip_has_every_platform() {
    let pkg = build_profile(&input()).unwrap();
    assert!(pkg.notes.is_empty(), "{:?}", pkg.notes);
    let files = unzip(&pkg.zip);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "README.txt",
            "Generic/VpnSettings.xml",
            "strongSwan/swanctl.conf",
            "strongSwan/ca.crt.pem",
            "Apple/gw1.mobileconfig",
            "Windows/vpnconfig.ps1",
            "Windows/root0.cer",
            "WireGuard/alice-phone.conf",
            "WireGuard/bob.conf",
        ]
    );
    assert_eq!(pkg.files, names);
    let readme = text(&files, "README.txt");
    assert!(readme.contains("/etc/swanctl/private/alice.key.pem"));
    assert!(readme.contains("vpnconfig.ps1"));
    let xml = text(&files, "Generic/VpnSettings.xml");
    assert!(xml.contains("<VpnServer>vpn.example.com</VpnServer>"));
    assert!(xml.contains("<Route>10.1.0.0/16</Route>"));
    let thumb = vgw_pki::thumbprint(&input_root(&files));
    assert!(xml.contains(&thumb));
    assert!(text(&files, "strongSwan/ca.crt.pem").starts_with("-----BEGIN CERTIFICATE-----"));
}

fn input_root(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    files
        .iter()
        .find(|(n, _)| n == "Windows/root0.cer")
        .unwrap()
        .1
        .clone()
}

#[test]
fn swanctl_conf_has_mapped_proposals_and_routes() {
    let files = unzip(&build_profile(&input()).unwrap().zip);
    let conf = text(&files, "strongSwan/swanctl.conf");
    for line in [
        "remote_addrs = vpn.example.com",
        "vips = 0.0.0.0",
        "proposals = aes256gcm16-prfsha256-ecp256",
        "certs = alice.crt.pem",
        "id = \"alice@example.com\"",
        "id = \"vpn.example.com\"",
        "remote_ts = 10.1.0.0/16,10.2.0.0/16",
        "esp_proposals = aes256gcm16-ecp256",
        "life_time = 3600s",
        "start_action = start",
    ] {
        assert!(conf.contains(line), "missing '{line}' in\n{conf}");
    }
    // Balanced braces, so swanctl's parser sees whole sections.
    assert_eq!(conf.matches('{').count(), conf.matches('}').count());
}

#[test]
fn mobileconfig_parses_and_names_the_proposals() {
    let inp = input();
    let files = unzip(&build_profile(&inp).unwrap().zip);
    let data = &files
        .iter()
        .find(|(n, _)| n == "Apple/gw1.mobileconfig")
        .unwrap()
        .1;
    let v = plist::Value::from_reader_xml(Cursor::new(data)).unwrap();
    let top = v.as_dictionary().unwrap();
    assert_eq!(top["PayloadType"].as_string(), Some("Configuration"));
    let payloads = top["PayloadContent"].as_array().unwrap();
    let by_type = |t: &str| {
        payloads
            .iter()
            .map(|p| p.as_dictionary().unwrap())
            .find(|p| p["PayloadType"].as_string() == Some(t))
            .unwrap_or_else(|| panic!("no {t} payload"))
    };
    let root = by_type("com.apple.security.root");
    assert_eq!(
        root["PayloadContent"].as_data(),
        Some(inp.root_certificates[0].as_slice())
    );
    let p12 = by_type("com.apple.security.pkcs12");
    let vpn = by_type("com.apple.vpn.managed");
    assert_eq!(vpn["VPNType"].as_string(), Some("IKEv2"));
    let ike = vpn["IKEv2"].as_dictionary().unwrap();
    assert_eq!(ike["RemoteAddress"].as_string(), Some("vpn.example.com"));
    assert_eq!(ike["RemoteIdentifier"].as_string(), Some("vpn.example.com"));
    assert_eq!(
        ike["LocalIdentifier"].as_string(),
        Some("alice@example.com")
    );
    assert_eq!(ike["AuthenticationMethod"].as_string(), Some("Certificate"));
    assert_eq!(ike["CertificateType"].as_string(), Some("ECDSA256"));
    assert_eq!(ike["PayloadCertificateUUID"], p12["PayloadUUID"]);
    assert_eq!(ike["OnDemandEnabled"].as_signed_integer(), Some(0));
    assert_eq!(ike["EnablePFS"].as_boolean(), Some(true));
    let sa = ike["IKESecurityAssociationParameters"]
        .as_dictionary()
        .unwrap();
    assert_eq!(sa["EncryptionAlgorithm"].as_string(), Some("AES-256-GCM"));
    assert_eq!(sa["IntegrityAlgorithm"].as_string(), Some("SHA2-256"));
    assert_eq!(sa["DiffieHellmanGroup"].as_signed_integer(), Some(19));
    let child = ike["ChildSecurityAssociationParameters"]
        .as_dictionary()
        .unwrap();
    assert_eq!(
        child["EncryptionAlgorithm"].as_string(),
        Some("AES-256-GCM")
    );
    assert_eq!(child["DiffieHellmanGroup"].as_signed_integer(), Some(19));
    assert_eq!(child["LifeTimeInMinutes"].as_signed_integer(), Some(60));
}

#[test]
fn windows_script_sets_the_policy_and_routes() {
    let files = unzip(&build_profile(&input()).unwrap().zip);
    let ps = text(&files, "Windows/vpnconfig.ps1");
    assert!(ps.contains(
        "Add-VpnConnection -Name $name -ServerAddress 'vpn.example.com' -TunnelType Ikev2 -AuthenticationMethod MachineCertificate"
    ));
    assert!(ps.contains("-SplitTunneling"));
    assert!(ps.contains(
        "Set-VpnConnectionIPsecConfiguration -ConnectionName $name -AuthenticationTransformConstants GCMAES256 -CipherTransformConstants GCMAES256 -EncryptionMethod GCMAES256 -IntegrityCheckMethod SHA256 -DHGroup ECP256 -PfsGroup ECP256"
    ));
    assert!(ps.contains("-DestinationPrefix '10.1.0.0/16'"));
    assert!(ps.contains("-DestinationPrefix '10.2.0.0/16'"));
    assert!(ps.contains("Cert:\\LocalMachine\\Root"));
    assert!(ps.contains("Import-Certificate"));
}

#[test]
fn wireguard_confs() {
    let files = unzip(&build_profile(&input()).unwrap().zip);
    let alice = text(&files, "WireGuard/alice-phone.conf");
    for line in [
        "[Interface]",
        "PrivateKey = YWxpY2UtcHJpdmF0ZS1rZXktMzItYnl0ZXMtbG9uZyE=",
        "Address = 172.16.202.2/32",
        "DNS = 10.1.0.4",
        "[Peer]",
        "PublicKey = c2VydmVyLXB1YmxpYy1rZXktMzItYnl0ZXMtbG9uZyE=",
        "Endpoint = vpn.example.com:51820",
        "AllowedIPs = 10.1.0.0/16, 10.2.0.0/16",
        "PersistentKeepalive = 25",
    ] {
        assert!(
            alice.lines().any(|l| l == line),
            "missing '{line}' in\n{alice}"
        );
    }
    let bob = text(&files, "WireGuard/bob.conf");
    assert!(bob.contains(&format!("PrivateKey = {WIREGUARD_KEY_PLACEHOLDER}")));
}

#[test]
fn platform_that_cannot_express_the_policy_is_left_out() {
    let mut inp = input();
    inp.policies = vec![IpsecPolicy {
        dh_group: "Curve25519".parse().unwrap(),
        pfs_group: "None".parse().unwrap(),
        ..policy()
    }];
    let pkg = build_profile(&inp).unwrap();
    assert!(!pkg.files.iter().any(|f| f.starts_with("Windows/")));
    assert!(pkg.files.iter().any(|f| f.starts_with("Apple/")));
    assert_eq!(pkg.notes.len(), 1);
    assert!(pkg.notes[0].contains("Curve25519"));
    let files = unzip(&pkg.zip);
    assert!(text(&files, "README.txt").contains("Left out:"));
    assert!(text(&files, "strongSwan/swanctl.conf").contains("aes256gcm16-prfsha256-curve25519"));
}

#[test]
fn several_policies_become_strongswan_alternatives() {
    let mut inp = input();
    inp.policies.push(IpsecPolicy::default());
    let files = unzip(&build_profile(&inp).unwrap().zip);
    let conf = text(&files, "strongSwan/swanctl.conf");
    assert!(conf.contains("proposals = aes256gcm16-prfsha256-ecp256,aes256-sha256-modp2048"));
    assert!(conf.contains("esp_proposals = aes256gcm16-ecp256,aes256gcm16"));
}

#[test]
fn input_round_trips_through_json() {
    let inp = input();
    let json = serde_json::to_string(&inp).unwrap();
    let back: ProfileInput = serde_json::from_str(&json).unwrap();
    assert_eq!(back, inp);
    // Roots may also be given as PEM.
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let pem = pem::encode(&pem::Pem::new(
        "CERTIFICATE",
        inp.root_certificates[0].clone(),
    ));
    v["rootCertificates"] = serde_json::json!([pem]);
    let back: ProfileInput = serde_json::from_value(v).unwrap();
    assert_eq!(back.root_certificates, inp.root_certificates);
}

#[test]
fn invalid_input_is_refused() {
    let mut inp = input();
    // An unknown name cannot reach the profiles: the model's names refuse it when parsed.
    assert!(
        serde_json::from_value::<IpsecPolicy>(serde_json::json!({
            "ikeEncryption": "ROT13", "ikeIntegrity": "SHA256", "dhGroup": "ECP256",
            "ipsecEncryption": "GCMAES256", "ipsecIntegrity": "GCMAES256", "pfsGroup": "None"
        }))
        .is_err()
    );
    // A combination of known names that does not go together is refused by the profiles.
    inp.policies[0].ike_encryption = "AES256".parse().unwrap();
    inp.policies[0].ike_integrity = "GCMAES256".parse().unwrap();
    assert!(build_profile(&inp).is_err());
    let mut inp = input();
    inp.root_certificates.clear();
    assert!(build_profile(&inp).is_err());
}

#[test]
fn a_package_carries_one_wireguard_private_key_at_most() {
    let mut inp = input();
    if let Some(wg) = inp.wireguard.as_mut() {
        wg.clients[1].private_key = Some("Ym9iLXByaXZhdGUta2V5LTMyLWJ5dGVzLWxvbmchISE=".into());
    }
    let err = build_profile(&inp).unwrap_err().to_string();
    assert!(err.contains("alice-phone, bob"), "{err}");
    assert!(err.contains("one package per client"), "{err}");
}

#[test]
fn a_gateway_package_without_wireguard_clients_says_where_they_are() {
    let mut inp = input();
    if let Some(wg) = inp.wireguard.as_mut() {
        wg.clients.clear();
    }
    let pkg = build_profile(&inp).unwrap();
    assert!(!pkg.files.iter().any(|f| f.starts_with("WireGuard/")));
    let files = unzip(&pkg.zip);
    assert!(text(&files, "README.txt").contains("vpn-client generate --client"));
    assert!(
        !files
            .iter()
            .any(|(_, d)| String::from_utf8_lossy(d).contains("PrivateKey ="))
    );
}
