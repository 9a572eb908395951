//! Interop with Debian's strongSwan: the profile's `swanctl.conf`, loaded unchanged with
//! certificates from this crate, brings up an IKE SA against a charon responder.
//!
//! Needs root, `ip`, `unshare` and `/usr/lib/ipsec/charon`; ignored by default. Run with
//! `cargo test -p vgw-pki --test strongswan -- --ignored`. Everything runs in two network
//! namespaces joined by a veth pair (198.18.0.1 – 198.18.0.2), each charon with a private /run.
//! Only the IKE SA is asserted: kernels without XFRM cannot install the CHILD_SA.

use std::io::{Cursor, Read};
use std::path::Path;
use std::process::Command;

use vgw_pki::profiles::{ClientProfile, IpsecPolicy, ProfileInput, ServerIdentity, build_profile};
use vgw_pki::{CertAuthority, ClientRequest, KeyType, ServerRequest, Validity, create_root, files};

const CHARON: &str = "/usr/lib/ipsec/charon";

const NODE: &str = r#"
mount -t tmpfs tmpfs /run
export STRONGSWAN_CONF=$1/strongswan.conf SWANCTL_DIR=$1
/usr/lib/ipsec/charon > $1/charon.log 2>&1 &
CH=$!
for i in $(seq 1 50); do [ -S /run/charon.vici ] && break; sleep 0.1; done
swanctl --load-all --file $1/swanctl.conf > $1/load.log 2>&1
sleep $2
swanctl --list-sas > $1/sas.log 2>&1
kill $CH; wait $CH
"#;

const STRONGSWAN_CONF: &str = "charon {\n  load_modular = yes\n  install_routes = no\n  install_virtual_ip = no\n  plugins {\n    include /etc/strongswan.d/charon/*.conf\n  }\n}\n";

struct Netns(Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn sh(cmd: &str) {
    let ok = Command::new("sh")
        .args(["-c", cmd])
        .status()
        .unwrap()
        .success();
    assert!(ok, "failed: {cmd}");
}

fn write(path: &Path, data: &[u8], private: bool) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    if private {
        files::write_private(path, data, true).unwrap();
    } else {
        files::write_public(path, data, true).unwrap();
    }
}

#[test]
#[ignore = "needs root, network namespaces and strongSwan's charon"]
fn swanctl_profile_establishes_ike_sa_with_charon() {
    if !Path::new(CHARON).exists() || not_root() {
        eprintln!("skipped: needs root and {CHARON}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = create_root(
        "interop-root",
        KeyType::EcdsaP256,
        Validity::days_from_now(1),
    )
    .unwrap();
    let root_pem = root.cert_pem.clone();
    let ca = CertAuthority::from_issued(root).unwrap();
    let client = ca
        .issue_client(&ClientRequest {
            name: "alice".into(),
            key: KeyType::EcdsaP256,
            validity: Validity::days_from_now(1),
            sans: vec!["alice@example.com".parse().unwrap()],
        })
        .unwrap();
    let server = ca
        .issue_server(&ServerRequest {
            name: "vpn.example.com".into(),
            key: KeyType::Rsa2048,
            validity: Validity::days_from_now(1),
            dns: vec![],
            ips: vec!["198.18.0.2".parse().unwrap()],
        })
        .unwrap();
    let policy = IpsecPolicy {
        ike_encryption: "GCMAES256".parse().unwrap(),
        ike_integrity: "SHA384".parse().unwrap(),
        dh_group: "ECP384".parse().unwrap(),
        ipsec_encryption: "GCMAES256".parse().unwrap(),
        ipsec_integrity: "GCMAES256".parse().unwrap(),
        pfs_group: "ECP384".parse().unwrap(),
        sa_life_time_seconds: 3600,
        sa_data_size_kilobytes: 102_400_000,
    };
    let input = ProfileInput {
        gateway_name: "gw1".into(),
        server_address: "198.18.0.2".into(),
        server_identity: ServerIdentity {
            subject: None,
            san: Some("vpn.example.com".into()),
        },
        root_certificates: vec![ca.cert_der().to_vec()],
        policies: vec![policy],
        routes: vec!["10.1.0.0/16".into()],
        client: Some(ClientProfile {
            name: "alice".into(),
            certificate: Some(client.cert_der.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let zip = build_profile(&input).unwrap().zip;
    let mut archive = zip::ZipArchive::new(Cursor::new(zip)).unwrap();
    let mut conf = String::new();
    archive
        .by_name("strongSwan/swanctl.conf")
        .unwrap()
        .read_to_string(&mut conf)
        .unwrap();
    let mut ca_pem = String::new();
    archive
        .by_name("strongSwan/ca.crt.pem")
        .unwrap()
        .read_to_string(&mut ca_pem)
        .unwrap();

    // The client, laid out as README.txt says.
    let cl = d.join("client");
    write(&cl.join("conf.d/vgw-gw1.conf"), conf.as_bytes(), false);
    write(&cl.join("swanctl.conf"), b"include conf.d/*.conf\n", false);
    write(&cl.join("x509ca/ca.crt.pem"), ca_pem.as_bytes(), false);
    write(
        &cl.join("x509/alice.crt.pem"),
        client.cert_pem.as_bytes(),
        false,
    );
    write(
        &cl.join("private/alice.key.pem"),
        client.key_pem().as_bytes(),
        true,
    );
    write(
        &cl.join("strongswan.conf"),
        STRONGSWAN_CONF.as_bytes(),
        false,
    );
    // The responder.
    let gw = d.join("gw");
    let gw_conf = "connections {\n p2s {\n  version = 2\n  local_addrs = 198.18.0.2\n  pools = p2s\n  proposals = aes256gcm16-prfsha384-ecp384\n  local {\n   auth = pubkey\n   certs = server.crt.pem\n   id = vpn.example.com\n  }\n  remote {\n   auth = pubkey\n  }\n  children {\n   net {\n    local_ts = 10.1.0.0/16\n    esp_proposals = aes256gcm16-ecp384\n   }\n  }\n }\n}\npools {\n p2s {\n  addrs = 172.16.201.0/24\n }\n}\n";
    write(&gw.join("swanctl.conf"), gw_conf.as_bytes(), false);
    write(&gw.join("x509ca/root.crt.pem"), root_pem.as_bytes(), false);
    write(
        &gw.join("x509/server.crt.pem"),
        server.cert_pem.as_bytes(),
        false,
    );
    write(
        &gw.join("private/server.key.pem"),
        server.key_pem().as_bytes(),
        true,
    );
    write(
        &gw.join("strongswan.conf"),
        STRONGSWAN_CONF.as_bytes(),
        false,
    );
    write(&d.join("node.sh"), NODE.as_bytes(), false);

    let id = std::process::id();
    let (ngw, ncl) = (format!("pkigw{id}"), format!("pkicl{id}"));
    let (va, vb) = (format!("pv{id}a"), format!("pv{id}b"));
    sh(&format!("ip netns add {ngw}"));
    let _guard = Netns(vec![ngw.clone(), ncl.clone()]);
    sh(&format!("ip netns add {ncl}"));
    sh(&format!(
        "ip link add {va} type veth peer name {vb} && ip link set {va} netns {ngw} && ip link set {vb} netns {ncl} \
         && ip -n {ngw} addr add 198.18.0.2/24 dev {va} && ip -n {ncl} addr add 198.18.0.1/24 dev {vb} \
         && ip -n {ngw} link set {va} up && ip -n {ncl} link set {vb} up \
         && ip -n {ngw} link set lo up && ip -n {ncl} link set lo up"
    ));
    let node = d.join("node.sh");
    let mut responder = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ngw,
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
        ])
        .arg(&node)
        .arg(&gw)
        .arg("10")
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let status = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ncl,
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
        ])
        .arg(&node)
        .arg(&cl)
        .arg("5")
        .status()
        .unwrap();
    let _ = responder.wait();
    assert!(status.success());
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let load = read(&cl.join("load.log"));
    assert!(load.contains("loaded connection 'vgw-gw1'"), "{load}");
    let sas = read(&cl.join("sas.log"));
    assert!(
        sas.contains("ESTABLISHED") && sas.contains("AES_GCM_16-256/PRF_HMAC_SHA2_384/ECP_384"),
        "client SAs:\n{sas}\nclient log:\n{}\nresponder log:\n{}",
        read(&cl.join("charon.log")),
        read(&gw.join("charon.log"))
    );
    assert!(sas.contains("'alice@example.com'") && sas.contains("'vpn.example.com'"));
}

fn not_root() -> bool {
    // `id -u` keeps this file free of unsafe code.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() != "0")
        .unwrap_or(true)
}
