//! Secrets that never go on the command line (`--shared-key-file`, `--value-file`, `-` for stdin),
//! and the per-user point-to-site packages and their revocable URLs.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{Daemon, vgw_bin};

fn with_stdin(d: &Daemon, args: &[&str], input: &str) -> std::process::Output {
    let mut child = Command::new(vgw_bin())
        .args(args)
        .env("VGW_API_SOCKET", &d.socket)
        .env_remove("VGW_API_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vgw");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn key_of(d: &Daemon, conn: &str) -> String {
    d.json(&[
        "vpn-connection",
        "shared-key",
        "show",
        "--connection-name",
        conn,
    ])["value"]
        .as_str()
        .unwrap()
        .to_string()
}

fn site(d: &Daemon) {
    d.ok(&[
        "vnet-gateway",
        "create",
        "-n",
        "gw1",
        "--public-ip-addresses",
        "198.18.0.2",
        "--vnet-address-space",
        "10.2.0.0/16",
        "--address-prefixes",
        "172.16.200.0/24",
        "--client-protocol",
        "IkeV2",
        "WireGuard",
        "--wireguard-peers",
        "alice",
        "bob",
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
}

#[test]
fn shared_keys_from_a_file_or_stdin() {
    let (tmp, d) = Daemon::start();
    site(&d);
    let file = tmp.path().join("psk");
    std::fs::write(&file, "FromAFile123\n").unwrap();
    let f = file.to_str().unwrap();
    d.ok(&[
        "vpn-connection",
        "create",
        "-n",
        "c1",
        "--local-gateway2",
        "site1",
        "--shared-key-file",
        f,
        "-o",
        "none",
    ]);
    assert_eq!(
        key_of(&d, "c1"),
        "FromAFile123",
        "one trailing newline dropped"
    );

    let out = with_stdin(
        &d,
        &[
            "vpn-connection",
            "update",
            "-n",
            "c1",
            "--shared-key-file",
            "-",
            "-o",
            "none",
        ],
        "FromStdin456\r\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(key_of(&d, "c1"), "FromStdin456");

    std::fs::write(&file, "Rotated789").unwrap();
    d.ok(&[
        "vpn-connection",
        "shared-key",
        "update",
        "--connection-name",
        "c1",
        "--value-file",
        f,
        "-o",
        "none",
    ]);
    assert_eq!(key_of(&d, "c1"), "Rotated789");
    let out = with_stdin(
        &d,
        &[
            "vpn-connection",
            "shared-key",
            "update",
            "--connection-name",
            "c1",
            "--shared-key-file",
            "-",
            "-o",
            "none",
        ],
        "ViaAlias000",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(key_of(&d, "c1"), "ViaAlias000");

    // Refusals: an empty file, a missing file, several lines, both forms at once, neither.
    let refused = |args: &[&str], needle: &str| {
        let out = d.vgw(args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
    };
    std::fs::write(&file, "\n").unwrap();
    refused(
        &[
            "vpn-connection",
            "update",
            "-n",
            "c1",
            "--shared-key-file",
            f,
        ],
        "holds no key",
    );
    std::fs::write(&file, "one\ntwo\n").unwrap();
    refused(
        &[
            "vpn-connection",
            "update",
            "-n",
            "c1",
            "--shared-key-file",
            f,
        ],
        "several lines",
    );
    refused(
        &[
            "vpn-connection",
            "update",
            "-n",
            "c1",
            "--shared-key-file",
            "/nonexistent/psk",
        ],
        "cannot open /nonexistent/psk",
    );
    refused(
        &[
            "vpn-connection",
            "update",
            "-n",
            "c1",
            "--shared-key-file",
            f,
            "--shared-key",
            "X",
        ],
        "cannot be used with",
    );
    refused(
        &[
            "vpn-connection",
            "shared-key",
            "update",
            "--connection-name",
            "c1",
        ],
        "--value",
    );
    assert_eq!(key_of(&d, "c1"), "ViaAlias000", "nothing changed");
}

#[test]
fn per_user_package_urls_and_their_revocation() {
    let (_tmp, d) = Daemon::start();
    site(&d);
    let url = |args: &[&str]| {
        let mut all = vec!["vnet-gateway", "vpn-client", "generate", "-o", "tsv"];
        all.extend_from_slice(args);
        d.ok(&all).trim().to_string()
    };
    let gw = url(&[]);
    assert!(gw.ends_with("/gw1.zip"), "{gw}");
    let alice = url(&["--client", "alice"]);
    assert!(alice.ends_with("/gw1/alice.zip"), "{alice}");
    let out = d.vgw(&[
        "vnet-gateway",
        "vpn-client",
        "generate",
        "--client",
        "mallory",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("alice, bob"), "{err}");

    let revoked = d.json(&["vnet-gateway", "vpn-client", "revoke-url", "--url", &alice]);
    assert_eq!(revoked["revoked"], "url");
    assert_eq!(revoked["wireGuardPeer"], "alice");
    let revoked = d.json(&[
        "vnet-gateway",
        "vpn-client",
        "revoke-url",
        "--client",
        "bob",
    ]);
    assert_eq!(revoked["revoked"], "wireGuardPeer");
    assert_eq!(
        d.json(&["vnet-gateway", "vpn-client", "revoke-url", "--all"])["revoked"],
        "all"
    );
    let out = d.vgw(&[
        "vnet-gateway",
        "vpn-client",
        "revoke-url",
        "--url",
        "https://198.18.0.2:8443/vpnclient/1/2/abcd/gw1.zip",
    ]);
    assert!(!out.status.success(), "a URL this daemon did not sign");
    assert!(
        !d.vgw(&["vnet-gateway", "vpn-client", "revoke-url"])
            .status
            .success()
    );

    // A registered public key: accepted when well formed and for a listed peer.
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    d.ok(&[
        "vnet-gateway",
        "update",
        "-n",
        "gw1",
        "--wireguard-peer-public-keys",
        &format!("bob={key}"),
        "-o",
        "none",
    ]);
    let shown = d.json(&["vnet-gateway", "show", "-n", "gw1"]);
    assert_eq!(
        shown["vpnClientConfiguration"]["wireGuardPeerPublicKeys"]["bob"],
        key
    );
    for (entry, needle) in [
        (format!("carol={key}"), "not among wireGuardPeers"),
        ("bob=short".to_string(), "not 32 bytes"),
        ("bob".to_string(), "not NAME=KEY"),
    ] {
        let out = d.vgw(&[
            "vnet-gateway",
            "update",
            "-n",
            "gw1",
            "--wireguard-peer-public-keys",
            &entry,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(needle),
            "{entry}: {err}"
        );
    }
}
