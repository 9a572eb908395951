//! The CLI against a real daemon: resources with Azure's field names, output formats, export/apply.

mod common;

use common::Daemon;
use serde_json::Value;

const PSK1: &str = "Site1PskShouldNeverPrint";

fn build_state(d: &Daemon) {
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
        "--bgp-peering-address",
        "10.2.255.254",
        "--address-prefixes",
        "172.16.200.0/24",
        "--client-protocol",
        "IkeV2",
        "WireGuard",
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
        "10.11.0.0/16",
    ]);
    d.ok(&[
        "local-gateway",
        "create",
        "-n",
        "site2",
        "--gateway-ip-address",
        "198.18.1.1",
        "--local-address-prefixes",
        "10.3.0.0/16",
        "--asn",
        "65020",
        "--bgp-peering-address",
        "10.3.255.254",
    ]);
    d.ok(&[
        "vnet-gateway",
        "nat-rule",
        "add",
        "-n",
        "nat1",
        "--type",
        "Static",
        "--mode",
        "EgressSnat",
        "--internal-mappings",
        "10.2.1.0/24",
        "--external-mappings",
        "100.64.1.0/24",
    ]);
    d.ok(&[
        "vpn-connection",
        "create",
        "-n",
        "c1",
        "--local-gateway2",
        "site1",
        "--shared-key",
        PSK1,
        "--dpd-timeout-seconds",
        "30",
        "--egress-nat-rule",
        "nat1",
    ]);
    d.ok(&[
        "vpn-connection",
        "create",
        "-n",
        "c2",
        "--local-gateway2",
        "site2",
        "--shared-key",
        "OtherKey0987",
        "--enable-bgp",
        "--connection-mode",
        "ResponderOnly",
    ]);
    d.ok(&[
        "vpn-connection",
        "ipsec-policy",
        "add",
        "--connection-name",
        "c1",
        "--ike-encryption",
        "GCMAES256",
        "--ike-integrity",
        "SHA384",
        "--dh-group",
        "ECP384",
        "--ipsec-encryption",
        "GCMAES256",
        "--ipsec-integrity",
        "GCMAES256",
        "--pfs-group",
        "ECP384",
        "--sa-lifetime",
        "3600",
        "--sa-max-size",
        "102400000",
    ]);
}

#[test]
fn resources_formats_and_export_apply() {
    let (_tmp, d) = Daemon::start();
    build_state(&d);

    // show/list carry Azure's field names, and never the shared key.
    let gw = d.json(&["vnet-gateway", "show"]);
    for field in [
        "id",
        "name",
        "etag",
        "provisioningState",
        "gatewayType",
        "vpnType",
        "sku",
        "activeActive",
        "enableBgp",
        "bgpSettings",
        "ipConfigurations",
        "vpnClientConfiguration",
        "natRules",
    ] {
        assert!(
            gw.get(field).is_some(),
            "vnet-gateway show lacks {field}: {gw}"
        );
    }
    assert_eq!(gw["bgpSettings"]["asn"], 65515);
    assert_eq!(gw["natRules"][0]["provisioningState"], "Succeeded");
    assert!(
        gw["natRules"][0]["etag"]
            .as_str()
            .unwrap()
            .starts_with("W/")
    );
    let c1 = d.json(&["vpn-connection", "show", "-n", "c1"]);
    for field in [
        "id",
        "name",
        "etag",
        "provisioningState",
        "connectionStatus",
        "ingressBytesTransferred",
        "egressBytesTransferred",
        "tunnelConnectionStatus",
        "ipsecPolicies",
        "trafficSelectorPolicies",
        "localNetworkGateway2",
        "dpdTimeoutSeconds",
        "connectionMode",
        "connectionProtocol",
        "usePolicyBasedTrafficSelectors",
        "connectionStatusReason",
    ] {
        assert!(
            c1.get(field).is_some(),
            "vpn-connection show lacks {field}: {c1}"
        );
    }
    assert_eq!(c1["connectionStatus"], "Unknown");
    assert_eq!(c1["ingressBytesTransferred"], 0);
    assert_eq!(c1["ipsecPolicies"][0]["dhGroup"], "ECP384");
    assert_eq!(
        c1["localNetworkGateway2"]["id"],
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/vgw/providers/Microsoft.Network/localNetworkGateways/site1"
    );
    let lgs = d.json(&["local-gateway", "list"]);
    assert_eq!(lgs.as_array().unwrap().len(), 2);
    assert_eq!(
        lgs[0]["localNetworkAddressSpace"]["addressPrefixes"][1],
        "10.11.0.0/16"
    );
    assert_eq!(lgs[1]["bgpSettings"]["asn"], 65020);

    for args in [
        &["vpn-connection", "list"][..],
        &["vpn-connection", "show", "-n", "c1"],
        &["export"],
        &["vpn-connection", "list", "-o", "yaml"],
    ] {
        let text = d.ok(args);
        assert!(!text.contains(PSK1), "{args:?} printed the shared key");
    }
    assert!(!d.log().contains(PSK1), "the daemon logged the shared key");

    // Diagnostic logs record every change, filterable, without secrets.
    let logs = d.ok(&["logs", "--category", "GatewayDiagnosticLog"]);
    assert!(
        logs.contains("c1 created") && logs.contains("GatewayDiagnosticLog"),
        "{logs}"
    );
    let c1_logs = d.json(&["logs", "--connection", "c1", "-o", "json"]);
    assert!(!c1_logs.as_array().unwrap().is_empty());
    assert!(
        d.ok(&["logs", "--category", "IKEDiagnosticLog", "--since", "1h"])
            .is_empty()
    );
    assert!(!d.vgw(&["logs", "--category", "NoSuchLog"]).status.success());
    d.ok(&[
        "vpn-connection",
        "shared-key",
        "update",
        "--connection-name",
        "c1",
        "--value",
        "RotatedKey42",
    ]);
    d.ok(&[
        "vpn-connection",
        "shared-key",
        "update",
        "--connection-name",
        "c1",
        "--value",
        PSK1,
    ]);
    let files = std::fs::read_dir(d.state_dir.join("logs")).unwrap();
    for f in files {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        assert!(
            !text.contains(PSK1) && !text.contains("RotatedKey42"),
            "a log file holds a shared key"
        );
    }
    assert_eq!(
        d.json(&[
            "vpn-connection",
            "shared-key",
            "show",
            "--connection-name",
            "c1"
        ])["value"],
        PSK1
    );

    // az's output formats and --query.
    let table = d.ok(&["vpn-connection", "list", "-o", "table"]);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("Name") && header.contains("ConnectionStatus"),
        "{table}"
    );
    assert!(lines.next().unwrap().starts_with("----"));
    assert!(lines.next().unwrap().starts_with("c1 "));
    let tsv = d.ok(&["local-gateway", "list", "-o", "tsv"]);
    assert_eq!(tsv.lines().count(), 2);
    assert!(
        tsv.lines()
            .next()
            .unwrap()
            .split('\t')
            .any(|f| f == "site1")
    );
    assert_eq!(
        d.json(&["vpn-connection", "list", "--query", "[].name"]),
        serde_json::json!(["c1", "c2"])
    );
    assert_eq!(
        d.ok(&["local-gateway", "list", "--query", "[].name", "-o", "tsv"]),
        "site1\nsite2\n"
    );
    assert_eq!(
        d.ok(&[
            "vpn-connection",
            "show",
            "-n",
            "c2",
            "--query",
            "connectionMode",
            "-o",
            "tsv"
        ]),
        "ResponderOnly\n"
    );
    assert!(d.ok(&["vnet-gateway", "show", "-o", "none"]).is_empty());
    let jsonc = d.ok(&["vnet-gateway", "show", "-o", "jsonc"]);
    assert!(jsonc.contains("\x1b["));

    // Status commands answer honestly with empty lists.
    assert_eq!(
        d.json(&["vnet-gateway", "list-bgp-peer-status"])["value"],
        serde_json::json!([])
    );
    assert_eq!(
        d.json(&["vnet-gateway", "list-learned-routes"])["value"],
        serde_json::json!([])
    );
    assert_eq!(
        d.json(&[
            "vnet-gateway",
            "list-advertised-routes",
            "--peer",
            "10.3.255.254"
        ])["value"],
        serde_json::json!([])
    );
    assert_eq!(
        d.json(&["vnet-gateway", "vpn-client", "show-health"])["vpnClientConnectionsCount"],
        0
    );
    d.ok(&["vnet-gateway", "reset"]);
    d.ok(&["vpn-connection", "reset", "-n", "c1"]);

    // update changes only what is given, and honours etags.
    let before = d.json(&["vpn-connection", "show", "-n", "c2"]);
    d.ok(&[
        "vpn-connection",
        "update",
        "-n",
        "c2",
        "--routing-weight",
        "10",
    ]);
    let after = d.json(&["vpn-connection", "show", "-n", "c2"]);
    assert_eq!(after["routingWeight"], 10);
    assert_eq!(after["connectionMode"], "ResponderOnly");
    assert_ne!(before["etag"], after["etag"]);
    d.ok(&[
        "vpn-connection",
        "shared-key",
        "reset",
        "--connection-name",
        "c2",
        "--key-length",
        "40",
    ]);
    let key = d.json(&[
        "vpn-connection",
        "shared-key",
        "show",
        "--connection-name",
        "c2",
    ]);
    assert_eq!(key["value"].as_str().unwrap().len(), 40);

    // export, then apply to a fresh daemon: the same state, and a second apply changes nothing.
    let exported = d.ok(&["export", "--include-secrets"]);
    let dir2 = tempfile::tempdir().unwrap();
    let file = dir2.path().join("state.yaml");
    std::fs::write(&file, &exported).unwrap();
    let d2 = Daemon::start_in(dir2.path(), &[]);
    let what_if = d2.ok(&["apply", "-f", file.to_str().unwrap(), "--what-if"]);
    assert!(
        what_if.contains("+ connections/c1") && what_if.contains("nothing was changed"),
        "{what_if}"
    );
    assert!(
        d2.json(&["local-gateway", "list"])
            .as_array()
            .unwrap()
            .is_empty(),
        "what-if changed state"
    );
    let applied = d2.ok(&["apply", "-f", file.to_str().unwrap()]);
    assert!(
        applied.contains("+ virtualNetworkGateways/gw1"),
        "{applied}"
    );
    assert!(!applied.contains(PSK1));
    assert_eq!(d2.ok(&["export", "--include-secrets"]), exported);
    let strip = |mut v: Value| {
        for item in v.as_array_mut().into_iter().flatten() {
            item.as_object_mut().unwrap().remove("etag");
        }
        v
    };
    assert_eq!(
        strip(d2.json(&["vpn-connection", "list"])),
        strip(d.json(&["vpn-connection", "list"]))
    );
    assert_eq!(
        d2.json(&[
            "vpn-connection",
            "shared-key",
            "show",
            "--connection-name",
            "c1"
        ])["value"],
        PSK1
    );
    let again = d2.ok(&["apply", "-f", file.to_str().unwrap()]);
    assert!(again.starts_with("No changes"), "{again}");
    // A file without secrets keeps the existing keys.
    let plain = d.ok(&["export"]);
    std::fs::write(&file, &plain).unwrap();
    let again = d2.ok(&["apply", "-f", file.to_str().unwrap()]);
    assert!(again.starts_with("No changes"), "{again}");

    // An edit shows as a field-level diff.
    std::fs::write(
        &file,
        plain.replace("dpdTimeoutSeconds: 30", "dpdTimeoutSeconds: 60"),
    )
    .unwrap();
    let diff = d2.ok(&["apply", "-f", file.to_str().unwrap()]);
    assert!(
        diff.contains("~ connections/c1") && diff.contains("dpdTimeoutSeconds: 30 -> 60"),
        "{diff}"
    );

    // Deleting in dependency order works, and state survives a restart.
    d.ok(&["vpn-connection", "delete", "-n", "c2"]);
    d.ok(&["local-gateway", "delete", "-n", "site2"]);
    drop(d2);
}

#[test]
fn state_survives_restart_and_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let (_tmp, mut d) = Daemon::start();
    build_state(&d);
    let before = d.ok(&["export", "--include-secrets"]);
    d.kill();
    d.restart();
    assert_eq!(d.ok(&["export", "--include-secrets"]), before);
    for f in [d.socket.clone(), d.state_dir.join("state.db")] {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", f.display());
    }
    let mode = std::fs::metadata(&d.state_dir)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
}

#[test]
fn openapi_document_is_served() {
    let (_tmp, d) = Daemon::start();
    let (status, body) = d.http("GET", "/openapi.json", b"");
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/connections/{name}"]["put"].is_object());
    assert!(
        doc["components"]["schemas"]["ConnectionSpec"]["properties"]["ipsecPolicies"].is_object()
    );
}
