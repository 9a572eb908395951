//! `--metrics-listen`: the Prometheus exposition parses and carries the configured connections.

mod common;

use std::collections::HashSet;

use common::Daemon;

#[test]
fn metrics_exposition_is_well_formed() {
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start_in(tmp.path(), &["--metrics-listen", &addr]);
    d.ok(&[
        "vnet-gateway",
        "create",
        "-n",
        "gw",
        "--public-ip-addresses",
        "198.18.0.2",
        "--vnet-address-space",
        "10.2.0.0/16",
    ]);
    d.ok(&[
        "local-gateway",
        "create",
        "-n",
        "site",
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
        "site",
        "--shared-key",
        "abc",
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut stream = loop {
        match std::net::TcpStream::connect(&addr) {
            Ok(s) => break s,
            Err(e) if std::time::Instant::now() > deadline => panic!("metrics listener: {e}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    };
    let (status, body) = common::http_exchange(&mut stream, "GET", "/metrics", b"", &[]);
    assert_eq!(status, 200);
    let mut typed = HashSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().unwrap();
            assert!(matches!(parts.next(), Some("counter" | "gauge")), "{line}");
            assert!(name.starts_with("vgw_"));
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(typed.contains(name), "sample before its TYPE: {line}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
        }
    }
    for family in [
        "vgw_tunnel_ingress_bytes_total",
        "vgw_connection_up",
        "vgw_process_resident_memory_bytes",
        "vgw_ike_sas",
    ] {
        assert!(typed.contains(family), "{family} missing");
    }
    assert!(
        body.contains("vgw_tunnel_ingress_bytes_total{connection_name=\"c1\",remote_ip=\"\"} 0"),
        "{body}"
    );
    assert!(
        body.contains("vgw_connection_status{connection_name=\"c1\",status=\"Unknown\"} 1"),
        "{body}"
    );
}
