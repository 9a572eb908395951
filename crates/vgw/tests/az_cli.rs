//! az's command surface against a real daemon: `-g`/`--subscription`/`--ids`, ARM ids, `-o table`
//! and `-o tsv` with one row per item, `wait`, generic `--set`/`--remove`, and a closed pipe.

mod common;

use std::process::{Command, Stdio};

use common::Daemon;

const RG: &str = "RG-Net1";
const SUB: &str = "11111111-2222-3333-4444-555555555555";

fn build(d: &Daemon) {
    d.ok(&[
        "vnet-gateway",
        "create",
        "-g",
        RG,
        "-n",
        "gw1",
        "--public-ip-addresses",
        "198.18.0.2",
        "198.18.0.3",
        "--vnet-address-space",
        "10.2.0.0/16",
        "--asn",
        "65010",
        "-o",
        "none",
    ]);
    for (name, ip, prefix) in [
        ("site1", "198.18.0.1", "10.1.0.0/16"),
        ("site2", "198.18.1.1", "10.3.0.0/16"),
    ] {
        d.ok(&[
            "local-gateway",
            "create",
            "-g",
            RG,
            "-n",
            name,
            "--gateway-ip-address",
            ip,
            "--local-address-prefixes",
            prefix,
            "-o",
            "none",
        ]);
    }
    d.ok(&[
        "vnet-gateway",
        "nat-rule",
        "add",
        "-g",
        RG,
        "-n",
        "nat1",
        "--internal-mappings",
        "10.2.1.0/24",
        "--external-mappings",
        "100.64.1.0/24",
        "-o",
        "none",
    ]);
    for (name, site) in [("c1", "site1"), ("c2", "site2")] {
        d.ok(&[
            "vpn-connection",
            "create",
            "-g",
            RG,
            "-n",
            name,
            "--local-gateway2",
            site,
            "--shared-key",
            "AbcDef123456",
            "-o",
            "none",
        ]);
    }
}

/// Data rows of a table: everything after the header and the dashes.
fn table_rows(text: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 2 || lines.is_empty(), "not a table: {text}");
    if !lines.is_empty() {
        assert!(
            lines[1].starts_with("--"),
            "second line is not dashes: {text}"
        );
    }
    lines.len().saturating_sub(2)
}

#[test]
fn runbook_commands_run_as_az_prints_them() {
    let tmp = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(
        tmp.path(),
        &[
            "--resource-group",
            RG,
            "--subscription-id",
            SUB,
            "--location",
            "westeurope",
        ],
    );
    build(&d);

    // ARM ids and the fields az prints.
    let gw = d.json(&[
        "vnet-gateway",
        "show",
        "--resource-group",
        RG,
        "--name",
        "gw1",
    ]);
    let id = format!(
        "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/virtualNetworkGateways/gw1"
    );
    assert_eq!(gw["id"], id.as_str());
    assert_eq!(gw["resourceGroup"], RG);
    assert_eq!(gw["location"], "westeurope");
    for f in [
        "name",
        "type",
        "etag",
        "provisioningState",
        "gatewayType",
        "vpnType",
        "sku",
        "activeActive",
        "enableBgp",
        "bgpSettings",
        "ipConfigurations",
    ] {
        assert!(gw.get(f).is_some(), "vnet-gateway show lacks {f}: {gw}");
    }
    // Another resource group or subscription fails as az does, exit 3.
    let out = d.vgw(&["vnet-gateway", "show", "-g", "other-rg", "-n", "gw1"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ResourceGroupNotFound"));
    let out = d.vgw(&["vpn-connection", "list", "--subscription", "nosuch"]);
    assert_eq!(out.status.code(), Some(3));
    // Resource group names are case-insensitive, as in Azure.
    d.ok(&["vpn-connection", "list", "-g", &RG.to_lowercase()]);
    // --ids stands for -g, --subscription and --name.
    let by_id = d.json(&["vnet-gateway", "show", "--ids", &id]);
    assert_eq!(by_id["name"], "gw1");
    let c1_id = d.json(&["vpn-connection", "show", "-g", RG, "-n", "c1"])["id"].clone();
    let c1 = d.json(&["vpn-connection", "show", "--ids", c1_id.as_str().unwrap()]);
    assert_eq!(c1["name"], "c1");
    assert_eq!(
        d.json(&["vnet-gateway", "list", "-g", RG])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Every list command: -o table and -o tsv have one row per JSON item.
    let lists: &[&[&str]] = &[
        &["vpn-connection", "list", "--resource-group", RG],
        &["local-gateway", "list", "-g", RG],
        &["vnet-gateway", "list", "-g", RG],
        &["vnet-gateway", "nat-rule", "list", "-g", RG],
        &[
            "vnet-gateway",
            "list-bgp-peer-status",
            "-g",
            RG,
            "-n",
            "gw1",
        ],
        &["vnet-gateway", "list-learned-routes", "-g", RG, "-n", "gw1"],
    ];
    for args in lists {
        let json = d.json(args);
        let items = match &json {
            serde_json::Value::Array(a) => a.len(),
            other => other["value"].as_array().map_or(1, Vec::len),
        };
        let mut t = args.to_vec();
        t.extend(["-o", "table"]);
        let table = d.ok(&t);
        assert_eq!(
            table_rows(&table),
            items,
            "{args:?} -o table:\n{table}\njson: {json}"
        );
        let mut t = args.to_vec();
        t.extend(["-o", "tsv"]);
        let tsv = d.ok(&t);
        assert_eq!(tsv.lines().count(), items, "{args:?} -o tsv:\n{tsv}");
    }
    let lg_table = d.ok(&["local-gateway", "list", "-o", "table"]);
    assert!(
        lg_table.lines().next().unwrap().starts_with(
            "Name   Location    ResourceGroup  ProvisioningState  GatewayIpAddress  AddressPrefixes"
        ),
        "{lg_table}"
    );

    // --query keeps a multiselect's key order.
    let q = d.ok(&[
        "vpn-connection",
        "list",
        "--query",
        "[].{zeta:name, alpha:connectionStatus}",
        "-o",
        "json",
    ]);
    assert!(q.find("zeta").unwrap() < q.find("alpha").unwrap(), "{q}");

    // Generic update: --set changes, --remove detaches a NAT rule.
    let c = d.json(&[
        "vpn-connection",
        "update",
        "-g",
        RG,
        "-n",
        "c1",
        "--egress-nat-rule",
        "nat1",
        "--set",
        "dpdTimeoutSeconds=30",
    ]);
    assert_eq!(c["dpdTimeoutSeconds"], 30);
    assert_eq!(c["egressNatRules"].as_array().unwrap().len(), 1);
    let c = d.json(&[
        "vpn-connection",
        "update",
        "-g",
        RG,
        "-n",
        "c1",
        "--remove",
        "egressNatRules",
        "0",
    ]);
    assert_eq!(c["egressNatRules"].as_array().unwrap().len(), 0);
    let g = d.json(&[
        "vnet-gateway",
        "update",
        "-g",
        RG,
        "-n",
        "gw1",
        "--set",
        "bgpSettings.peerWeight=5",
    ]);
    assert_eq!(g["bgpSettings"]["peerWeight"], 5);
    let out = d.vgw(&[
        "vpn-connection",
        "update",
        "-n",
        "c1",
        "--set",
        "noSuchField=1",
    ]);
    assert!(!out.status.success(), "an unknown field was accepted");

    // wait: met at once for --exists; a condition that never holds times out non-zero.
    d.ok(&[
        "vpn-connection",
        "wait",
        "-g",
        RG,
        "-n",
        "c1",
        "--exists",
        "--interval",
        "1",
        "--timeout",
        "5",
    ]);
    let out = d.vgw(&[
        "vpn-connection",
        "wait",
        "-g",
        RG,
        "-n",
        "c1",
        "--custom",
        "connectionStatus=='Connected'",
        "--interval",
        "1",
        "--timeout",
        "2",
    ]);
    assert!(
        !out.status.success(),
        "wait on a tunnel that is down returned success"
    );
    d.ok(&["vpn-connection", "delete", "-n", "c2"]);
    d.ok(&[
        "vpn-connection",
        "wait",
        "-n",
        "c2",
        "--deleted",
        "--interval",
        "1",
        "--timeout",
        "5",
    ]);

    // A closed pipe is not an error and never a panic.
    let mut child = Command::new(common::vgw_bin())
        .arg("export")
        .env("VGW_API_SOCKET", &d.socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));

    // --debug shows the exchange with secrets masked.
    let out = d.vgw(&[
        "vpn-connection",
        "shared-key",
        "show",
        "--connection-name",
        "c1",
        "--debug",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Request URL") && err.contains("Response status: 200"),
        "{err}"
    );
    assert!(
        !err.contains("AbcDef123456"),
        "--debug printed the shared key: {err}"
    );
}
