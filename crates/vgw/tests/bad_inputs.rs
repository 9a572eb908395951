//! Bad input: every rule refuses with a non-zero exit or a 4xx that names the field, changes nothing,
//! and the daemon keeps serving.

mod common;

use common::Daemon;
use serde_json::Value;

fn setup(d: &Daemon) {
    d.ok(&[
        "vnet-gateway",
        "create",
        "-n",
        "gw1",
        "--public-ip-addresses",
        "198.18.0.2",
        "--vnet-address-space",
        "10.2.0.0/16",
        "--asn",
        "65515",
        "--address-prefixes",
        "172.16.200.0/24",
    ]);
    d.ok(&[
        "local-gateway",
        "create",
        "-n",
        "site1",
        "--gateway-ip-address",
        "198.18.0.1",
        "--local-address-prefixes",
        "10.1.0.0/16",
    ]);
    d.ok(&[
        "vpn-connection",
        "create",
        "-n",
        "c1",
        "--local-gateway2",
        "site1",
        "--shared-key",
        "GoodKey123",
    ]);
}

fn lg(name: &str, extra: &[&'static str]) -> Vec<String> {
    let mut v: Vec<String> = ["local-gateway", "create", "-n", name]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn policy(overrides: &[(&str, &str)]) -> Vec<String> {
    let mut flags = vec![
        ("--ike-encryption", "AES256"),
        ("--ike-integrity", "SHA256"),
        ("--dh-group", "DHGroup14"),
        ("--ipsec-encryption", "GCMAES256"),
        ("--ipsec-integrity", "GCMAES256"),
        ("--pfs-group", "None"),
        ("--sa-lifetime", "27000"),
        ("--sa-max-size", "102400000"),
    ];
    for (k, v) in overrides {
        flags
            .iter_mut()
            .find(|(f, _)| f == k)
            .expect("known flag")
            .1 = v;
    }
    let mut v: Vec<String> = [
        "vpn-connection",
        "ipsec-policy",
        "add",
        "--connection-name",
        "c1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (k, val) in flags {
        v.push(k.to_string());
        v.push(val.to_string());
    }
    v
}

fn conn(name: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["vpn-connection", "create", "-n", name]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[test]
fn bad_inputs_are_refused_with_the_field_named() {
    let (_tmp, d) = Daemon::start();
    setup(&d);
    let before = d.ok(&["export", "--include-secrets"]);
    let long_key = "a".repeat(129);

    let cli_cases: Vec<(Vec<String>, &str)> = vec![
        (
            lg(
                "bad1",
                &[
                    "--gateway-ip-address",
                    "198.18.0.9",
                    "--local-address-prefixes",
                    "10.5.0.0/33",
                ],
            ),
            "localNetworkAddressSpace.addressPrefixes[0]",
        ),
        (
            lg(
                "bad2",
                &[
                    "--gateway-ip-address",
                    "198.18.0.9",
                    "--local-address-prefixes",
                    "10.5.1.1/16",
                ],
            ),
            "did you mean 10.5.0.0/16",
        ),
        (
            lg(
                "bad3",
                &[
                    "--gateway-ip-address",
                    "198.18.0.9",
                    "--local-address-prefixes",
                    "10.2.5.0/24",
                ],
            ),
            "addressSpace",
        ),
        (
            lg(
                "bad4",
                &[
                    "--gateway-ip-address",
                    "198.18.0.9",
                    "--local-address-prefixes",
                    "172.16.200.0/25",
                ],
            ),
            "client pool",
        ),
        (
            lg(
                "bad5",
                &[
                    "--gateway-ip-address",
                    "300.1.1.1",
                    "--local-address-prefixes",
                    "10.6.0.0/16",
                ],
            ),
            "gatewayIpAddress",
        ),
        (
            lg("bad6", &["--local-address-prefixes", "10.6.0.0/16"]),
            "gatewayIpAddress",
        ),
        (
            lg(
                "bad7",
                &[
                    "--gateway-ip-address",
                    "198.18.0.9",
                    "--asn",
                    "65515",
                    "--bgp-peering-address",
                    "10.7.0.1",
                ],
            ),
            "bgpSettings.asn",
        ),
        (
            lg(
                "bad8",
                &[
                    "--gateway-ip-address",
                    "198.18.0.9",
                    "--asn",
                    "23456",
                    "--bgp-peering-address",
                    "10.7.0.1",
                ],
            ),
            "bgpSettings.asn",
        ),
        (
            lg(
                "bad9",
                &[
                    "--gateway-ip-address",
                    "198.18.0.9",
                    "--asn",
                    "65010",
                    "--bgp-peering-address",
                    "169.254.30.1",
                ],
            ),
            "APIPA",
        ),
        (
            lg(
                "bad name!",
                &[
                    "--gateway-ip-address",
                    "198.18.0.9",
                    "--local-address-prefixes",
                    "10.6.0.0/16",
                ],
            ),
            "name",
        ),
        (
            lg(
                "bad10",
                &[
                    "--gateway-ip-address",
                    "198.18.0.9",
                    "--local-address-prefixes",
                    "10.6.0.0/16",
                    "10.6.1.0/24",
                ],
            ),
            "overlap",
        ),
        (
            conn(
                "c9",
                &["--local-gateway2", "nosuchsite", "--shared-key", "abc"],
            ),
            "localNetworkGateway2",
        ),
        (
            conn(
                "c9",
                &["--local-gateway2", "site1", "--shared-key", "has space"],
            ),
            "sharedKey",
        ),
        (
            conn(
                "c9",
                &["--local-gateway2", "site1", "--shared-key", &long_key],
            ),
            "sharedKey",
        ),
        (
            conn(
                "c9",
                &["--local-gateway2", "site1", "--shared-key", "tilde~key"],
            ),
            "sharedKey",
        ),
        (conn("c9", &["--local-gateway2", "site1"]), "sharedKey"),
        (
            conn(
                "c9",
                &[
                    "--local-gateway2",
                    "site1",
                    "--shared-key",
                    "abc",
                    "--dpd-timeout-seconds",
                    "0",
                ],
            ),
            "dpdTimeoutSeconds",
        ),
        (
            conn(
                "c9",
                &[
                    "--local-gateway2",
                    "site1",
                    "--shared-key",
                    "abc",
                    "--enable-bfd",
                ],
            ),
            "enableBfd",
        ),
        (
            conn(
                "c9",
                &[
                    "--local-gateway2",
                    "site1",
                    "--shared-key",
                    "abc",
                    "--enable-bgp",
                    "--enable-bfd",
                    "--bfd-interval",
                    "5",
                ],
            ),
            "bfdIntervalMilliseconds",
        ),
        (
            conn(
                "c9",
                &[
                    "--local-gateway2",
                    "site1",
                    "--shared-key",
                    "abc",
                    "--routing-weight",
                    "40000",
                ],
            ),
            "routingWeight",
        ),
        (
            conn(
                "c9",
                &[
                    "--local-gateway2",
                    "site1",
                    "--shared-key",
                    "abc",
                    "--connection-protocol",
                    "IKEv1",
                ],
            ),
            "connectionProtocol",
        ),
        (
            conn(
                "c9",
                &[
                    "--local-gateway2",
                    "site1",
                    "--shared-key",
                    "abc",
                    "--enable-bgp",
                ],
            ),
            "enableBgp",
        ),
        (
            conn(
                "c9",
                &[
                    "--local-gateway2",
                    "site1",
                    "--shared-key",
                    "abc",
                    "--connection-mode",
                    "Sometimes",
                ],
            ),
            "connectionMode",
        ),
        (
            conn(
                "c9",
                &[
                    "--local-gateway2",
                    "site1",
                    "--shared-key",
                    "abc",
                    "--egress-nat-rule",
                    "nonat",
                ],
            ),
            "egressNatRules[0]",
        ),
        (policy(&[("--ipsec-integrity", "SHA256")]), "ipsecIntegrity"),
        (policy(&[("--sa-lifetime", "100")]), "saLifeTimeSeconds"),
        (policy(&[("--sa-max-size", "10")]), "saDataSizeKilobytes"),
        (policy(&[("--dh-group", "DHGroup2")]), "allow-legacy-crypto"),
        (policy(&[("--ike-encryption", "DES3")]), "ikeEncryption"),
        (
            policy(&[
                ("--ipsec-integrity", "MD5"),
                ("--ipsec-encryption", "AES256"),
            ]),
            "ipsecIntegrity",
        ),
        (policy(&[("--dh-group", "DHGroup99")]), "dhGroup"),
        (policy(&[("--ike-integrity", "GCMAES128")]), "ikeIntegrity"),
        (
            sv(&["local-gateway", "delete", "-n", "site1"]),
            "vpn-connection",
        ),
        (sv(&["vnet-gateway", "delete"]), "connections"),
        (
            sv(&[
                "vnet-gateway",
                "create",
                "-n",
                "gw2",
                "--public-ip-addresses",
                "198.18.0.3",
            ]),
            "already exists",
        ),
        (
            sv(&["vnet-gateway", "update", "--vpn-type", "Fancy"]),
            "vpnType",
        ),
        (
            sv(&["vnet-gateway", "update", "--client-protocol", "OpenVPN"]),
            "vpnClientProtocols",
        ),
        (
            sv(&[
                "vnet-gateway",
                "update",
                "--public-ip-addresses",
                "198.18.0.300",
            ]),
            "publicIpAddress",
        ),
        (
            sv(&["vnet-gateway", "update", "--asn", "64500"]),
            "bgpSettings.asn",
        ),
        (
            sv(&[
                "vnet-gateway",
                "nat-rule",
                "add",
                "-n",
                "n1",
                "--internal-mappings",
                "10.2.1.0/24",
                "--external-mappings",
                "100.64.0.0/16",
            ]),
            "externalMappings",
        ),
        (
            sv(&[
                "vnet-gateway",
                "nat-rule",
                "add",
                "-n",
                "n1",
                "--internal-mappings",
                "10.2.1.0/99",
                "--external-mappings",
                "100.64.0.0/24",
            ]),
            "internalMappings",
        ),
        (
            sv(&[
                "vnet-gateway",
                "revoked-cert",
                "create",
                "-n",
                "r1",
                "--thumbprint",
                "XYZ",
            ]),
            "thumbprint",
        ),
        (
            sv(&[
                "vnet-gateway",
                "root-cert",
                "create",
                "-n",
                "r1",
                "--public-cert-data",
                "bm90IGEgY2VydA==",
            ]),
            "publicCertData",
        ),
        (
            sv(&[
                "vpn-connection",
                "shared-key",
                "reset",
                "--connection-name",
                "c1",
                "--key-length",
                "500",
            ]),
            "keyLength",
        ),
        (sv(&["vpn-connection", "list", "--query", "[?"]), "--query"),
        (sv(&["vpn-connection", "show", "-n", "nosuch"]), "nosuch"),
    ];
    let mut refused = 0;
    for (args, needle) in &cli_cases {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = d.vgw(&argv);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "vgw {argv:?} was accepted");
        assert!(
            stderr.contains(needle),
            "vgw {argv:?}: error does not mention '{needle}':\n{stderr}"
        );
        refused += 1;
    }

    let site = br#"{"gatewayIpAddress":"198.18.0.9","localNetworkAddressSpace":{"addressPrefixes":["10.9.0.0/16"]}}"#;
    let huge = vec![b' '; 5 * 1024 * 1024];
    let http_cases: Vec<(&str, String, Vec<u8>, u16, &str)> = vec![
        (
            "PUT",
            "/api/localNetworkGateways/x1".into(),
            b"{\"gatewayIpAddress\": ".to_vec(),
            400,
            "not valid JSON",
        ),
        (
            "PUT",
            "/api/localNetworkGateways/x1".into(),
            br#"{"gatewayIpAddress":"198.18.0.9","bogusField":1}"#.to_vec(),
            400,
            "bogusField",
        ),
        (
            "PUT",
            "/api/localNetworkGateways/x1".into(),
            br#"{"gatewayIpAddress":"198.18.0.9","localNetworkAddressSpace":{"prefixes":[]}}"#
                .to_vec(),
            400,
            "localNetworkAddressSpace.prefixes",
        ),
        (
            "PUT",
            "/api/connections/x1".into(),
            br#"{"localNetworkGateway2":"site1","sharedKey":"abc","dpdTimeoutSeconds":"abc"}"#
                .to_vec(),
            400,
            "dpdTimeoutSeconds",
        ),
        (
            "PUT",
            "/api/connections/x1".into(),
            br#"{"sharedKey":"abc"}"#.to_vec(),
            400,
            "localNetworkGateway2",
        ),
        (
            "PUT",
            "/api/localNetworkGateways/x1".into(),
            huge,
            413,
            "exceeds",
        ),
        (
            "PUT",
            "/api/localNetworkGateways/x1".into(),
            b"[1,2]".to_vec(),
            400,
            "JSON object",
        ),
        (
            "PUT",
            "/api/localNetworkGateways/x1".into(),
            Vec::new(),
            400,
            "empty",
        ),
        (
            "PUT",
            "/api/localNetworkGateways/x1".into(),
            br#"{"name":"other","gatewayIpAddress":"198.18.0.9"}"#.to_vec(),
            400,
            "path names",
        ),
        (
            "POST",
            "/api/desiredState".into(),
            br#"{"apiVersion":"vgw/v9"}"#.to_vec(),
            400,
            "apiVersion",
        ),
        (
            "POST",
            "/api/desiredState".into(),
            br#"{"connections":[{"name":"c1","localNetworkGateway2":"site1"}]}"#.to_vec(),
            400,
            "no vnet-gateway",
        ),
        (
            "PUT",
            "/api/virtualNetworkGateways/gw1/natRules/n2".into(),
            br#"{"type":"Static","mode":"Sideways","internalMappings":[],"externalMappings":[]}"#
                .to_vec(),
            400,
            "mode",
        ),
        (
            "PUT",
            "/api/connections/c1/sharedkey".into(),
            br#"{"value":"bad key"}"#.to_vec(),
            400,
            "value",
        ),
        (
            "GET",
            "/api/nosuchpath".into(),
            Vec::new(),
            404,
            "no such API path",
        ),
        ("DELETE", "/openapi.json".into(), Vec::new(), 405, "method"),
        (
            "PUT",
            "/api/localNetworkGateways/x1".into(),
            site.to_vec(),
            0,
            "",
        ),
    ];
    for (method, path, body, want, needle) in &http_cases {
        let (status, text) = d.http(method, path, body);
        if *want == 0 {
            assert_eq!(status, 201, "control request failed: {text}");
            continue;
        }
        assert_eq!(status, *want, "{method} {path}: {text}");
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path}: error is not JSON: {text}"));
        let msg = format!("{} {}", v["error"]["message"], v["error"]["target"]);
        assert!(v["error"]["code"].is_string(), "{text}");
        assert!(
            msg.contains(needle),
            "{method} {path}: '{needle}' not in {msg}"
        );
        refused += 1;
    }
    // Optimistic concurrency: a stale etag is refused.
    let (status, _) = common::http_unix(
        &d.socket,
        "PUT",
        "/api/localNetworkGateways/x1",
        site,
        &[("If-Match", "W/\"stale\"")],
    );
    assert_eq!(status, 412);
    refused += 1;
    assert!(refused >= 30, "only {refused} bad inputs checked");

    // Nothing refused changed anything (x1 was the one good request), and the daemon still serves.
    d.ok(&["local-gateway", "delete", "-n", "x1"]);
    assert_eq!(d.ok(&["export", "--include-secrets"]), before);
    d.ok(&["vnet-gateway", "show"]);
}

fn sv(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[test]
fn tcp_listener_requires_the_token() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Port 0 is not usable for a test client, so pick a free loopback port first.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start_in(
        tmp.path(),
        &[
            "--api-listen",
            &addr,
            "--api-token-file",
            token_file.to_str().unwrap(),
        ],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let connect = || loop {
        match std::net::TcpStream::connect(&addr) {
            Ok(s) => break s,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("TCP listener never came up: {e}")
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    };
    let (status, body) =
        common::http_exchange(&mut connect(), "GET", "/api/localNetworkGateways", b"", &[]);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("AuthenticationFailed"));
    let (status, _) = common::http_exchange(
        &mut connect(),
        "GET",
        "/api/localNetworkGateways",
        b"",
        &[("Authorization", "Bearer wrong")],
    );
    assert_eq!(status, 401);
    let (status, _) = common::http_exchange(
        &mut connect(),
        "GET",
        "/api/localNetworkGateways",
        b"",
        &[("Authorization", "Bearer 0123456789abcdef0123456789abcdef")],
    );
    assert_eq!(status, 200);
    // The CLI over TCP with the token file.
    let out = std::process::Command::new(common::vgw_bin())
        .args([
            "local-gateway",
            "list",
            "--api-url",
            &format!("http://{addr}"),
            "--api-token-file",
            token_file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The Unix socket needs no token but is 0600.
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    d.ok(&["local-gateway", "list"]);
}
