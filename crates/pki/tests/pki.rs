//! Issuing chains and checking them with an independent verifier (rustls-webpki), openssl's
//! view of thumbprints, PKCS#12 and file modes.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use time::{Duration, OffsetDateTime};
use vgw_pki::{
    CertAuthority, ClientRequest, KeyType, P12Format, ServerRequest, SubjectAltName, Validity,
    create_root, files, issue_client_with_validity, pkcs12, summarize, thumbprint,
};
use webpki::{EndEntityCert, KeyUsage, anchor_from_trusted_cert};

fn root(key: KeyType) -> CertAuthority {
    let issued = create_root("vgw-test-root", key, Validity::days_from_now(30)).unwrap();
    CertAuthority::from_issued(issued).unwrap()
}

fn client_req(name: &str, key: KeyType) -> ClientRequest {
    ClientRequest {
        name: name.into(),
        key,
        validity: Validity::days_from_now(10),
        sans: vec!["alice@example.com".parse().unwrap()],
    }
}

fn verify(
    ca: &CertAuthority,
    leaf: &[u8],
    usage: KeyUsage,
    at: OffsetDateTime,
) -> Result<(), webpki::Error> {
    let ca_der = CertificateDer::from(ca.cert_der().to_vec());
    let anchors = [anchor_from_trusted_cert(&ca_der).unwrap()];
    let leaf = CertificateDer::from(leaf.to_vec());
    let ee = EndEntityCert::try_from(&leaf).unwrap();
    let time =
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(at.unix_timestamp() as u64));
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &[],
        time,
        usage,
        None,
        None,
    )
    .map(|_| ())
}

#[test]
fn client_chains_to_root_for_every_key_type() {
    // RSA-3072/4096 generation is slow; 2048 covers the RSA path.
    for (root_key, client_key) in [
        (KeyType::EcdsaP256, KeyType::EcdsaP256),
        (KeyType::EcdsaP384, KeyType::EcdsaP256),
        (KeyType::Rsa2048, KeyType::Rsa2048),
        (KeyType::EcdsaP256, KeyType::Rsa2048),
    ] {
        let ca = root(root_key);
        let client = ca.issue_client(&client_req("alice", client_key)).unwrap();
        verify(
            &ca,
            &client.cert_der,
            KeyUsage::client_auth(),
            OffsetDateTime::now_utc(),
        )
        .unwrap_or_else(|e| panic!("{root_key}/{client_key}: {e:?}"));
        // A client certificate is not a server certificate.
        assert!(
            verify(
                &ca,
                &client.cert_der,
                KeyUsage::server_auth(),
                OffsetDateTime::now_utc()
            )
            .is_err()
        );
        let s = summarize(&client.cert_der).unwrap();
        assert_eq!(s.subject, "CN=alice");
        assert_eq!(s.issuer, "CN=vgw-test-root");
        assert_eq!(s.key_type, client_key.as_str());
        assert_eq!(s.extended_key_usages, vec!["clientAuth"]);
        assert_eq!(s.subject_alternative_names, vec!["email:alice@example.com"]);
        assert!(!s.is_ca && !s.self_signed && !s.expired);
    }
}

#[test]
fn large_rsa_keys() {
    for key in [KeyType::Rsa3072, KeyType::Rsa4096] {
        let ca = root(key);
        let s = summarize(ca.cert_der()).unwrap();
        assert_eq!(s.key_type, key.as_str());
        let client = ca.issue_client(&client_req("r", KeyType::Rsa2048)).unwrap();
        verify(
            &ca,
            &client.cert_der,
            KeyUsage::client_auth(),
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        // An RSA key goes into PKCS#12 as well.
        let p12 = pkcs12("r", &client, &[ca.cert_der()], "pw", P12Format::Legacy).unwrap();
        assert!(!p12.is_empty());
    }
}

#[test]
fn a_client_of_another_root_is_rejected() {
    let ca = root(KeyType::EcdsaP256);
    let other = root(KeyType::EcdsaP256);
    let client = other
        .issue_client(&client_req("mallory", KeyType::EcdsaP256))
        .unwrap();
    assert!(
        verify(
            &ca,
            &client.cert_der,
            KeyUsage::client_auth(),
            OffsetDateTime::now_utc()
        )
        .is_err()
    );
}

#[test]
fn expired_client_certificate() {
    let ca = root(KeyType::EcdsaP256);
    let now = OffsetDateTime::now_utc();
    let expired = issue_client_with_validity(
        &ca,
        "old",
        KeyType::EcdsaP256,
        now - Duration::days(10),
        now - Duration::days(1),
    )
    .unwrap();
    assert!(summarize(&expired.cert_der).unwrap().expired);
    assert!(matches!(
        verify(&ca, &expired.cert_der, KeyUsage::client_auth(), now),
        Err(webpki::Error::CertExpired { .. })
    ));
    // It was valid back then.
    verify(
        &ca,
        &expired.cert_der,
        KeyUsage::client_auth(),
        now - Duration::days(5),
    )
    .unwrap();

    // --days 0 gives a certificate that is expired as soon as it is used.
    let zero = ca
        .issue_client(&ClientRequest {
            validity: Validity::days_from_now(0),
            ..client_req("zero", KeyType::EcdsaP256)
        })
        .unwrap();
    assert!(
        verify(
            &ca,
            &zero.cert_der,
            KeyUsage::client_auth(),
            now + Duration::seconds(2)
        )
        .is_err()
    );
    // notAfter before notBefore is refused.
    assert!(
        issue_client_with_validity(&ca, "x", KeyType::EcdsaP256, now, now - Duration::days(1))
            .is_err()
    );
}

#[test]
fn server_certificate_has_sans_and_ike_eku() {
    let ca = root(KeyType::EcdsaP256);
    let server = ca
        .issue_server(&ServerRequest {
            name: "vpn.example.com".into(),
            key: KeyType::EcdsaP256,
            validity: Validity::days_from_now(10),
            dns: vec!["vpn2.example.com".into()],
            ips: vec!["198.18.0.2".parse().unwrap()],
        })
        .unwrap();
    let s = summarize(&server.cert_der).unwrap();
    assert_eq!(s.extended_key_usages, vec!["serverAuth", "ikeIntermediate"]);
    assert_eq!(
        s.subject_alternative_names,
        vec![
            "DNS:vpn.example.com",
            "DNS:vpn2.example.com",
            "IP:198.18.0.2"
        ]
    );
    verify(
        &ca,
        &server.cert_der,
        KeyUsage::server_auth(),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    let der = CertificateDer::from(server.cert_der.clone());
    let ee = EndEntityCert::try_from(&der).unwrap();
    ee.verify_is_valid_for_subject_name(&ServerName::try_from("vpn.example.com").unwrap())
        .unwrap();
    ee.verify_is_valid_for_subject_name(&ServerName::try_from("198.18.0.2").unwrap())
        .unwrap();
    assert!(
        ee.verify_is_valid_for_subject_name(&ServerName::try_from("other.example.com").unwrap())
            .is_err()
    );
}

#[test]
fn root_reloads_from_pem_and_rejects_wrong_key() {
    let issued = create_root("r", KeyType::EcdsaP384, Validity::days_from_now(1)).unwrap();
    let other = create_root("o", KeyType::EcdsaP384, Validity::days_from_now(1)).unwrap();
    let ca = CertAuthority::from_pem(&issued.cert_pem, &issued.key_pem()).unwrap();
    let client = ca
        .issue_client(&client_req("bob", KeyType::EcdsaP256))
        .unwrap();
    verify(
        &ca,
        &client.cert_der,
        KeyUsage::client_auth(),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    assert!(CertAuthority::from_pem(&issued.cert_pem, &other.key_pem()).is_err());
    // A leaf is not a CA.
    assert!(CertAuthority::from_pem(&client.cert_pem, &client.key_pem()).is_err());
    assert!(issued.key_pem().starts_with("-----BEGIN PRIVATE KEY-----"));
    let s = summarize(&issued.cert_der).unwrap();
    assert!(s.is_ca && s.self_signed);
}

fn openssl(args: &[&str], input: Option<&[u8]>) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    if let Some(i) = input {
        child.stdin.take().unwrap().write_all(i).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out.stdout)
}

#[test]
fn thumbprint_is_sha1_of_der_like_openssl() {
    let issued = create_root("thumb", KeyType::EcdsaP256, Validity::days_from_now(1)).unwrap();
    let t = thumbprint(&issued.cert_der);
    assert_eq!(t.len(), 40);
    assert!(
        t.chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
    );
    // `openssl x509 -fingerprint -sha1` prints the same bytes, colon-separated.
    let Some(out) = openssl(
        &["x509", "-noout", "-fingerprint", "-sha1"],
        Some(issued.cert_pem.as_bytes()),
    ) else {
        eprintln!("openssl not installed; skipping the comparison");
        return;
    };
    let out = String::from_utf8(out).unwrap();
    let theirs = out.trim().rsplit('=').next().unwrap().replace(':', "");
    assert_eq!(theirs, t);
}

#[test]
fn pkcs12_holds_key_and_chain() {
    let ca = root(KeyType::EcdsaP256);
    let client = ca
        .issue_client(&client_req("alice", KeyType::EcdsaP256))
        .unwrap();
    for format in [P12Format::Legacy, P12Format::Modern] {
        let p12 = pkcs12("alice", &client, &[ca.cert_der()], "s3cret", format).unwrap();
        let store = p12_keystore::KeyStore::from_pkcs12(
            &p12,
            "s3cret",
            p12_keystore::Pkcs12ImportPolicy::Relaxed,
        )
        .unwrap();
        let (_, chain) = store.private_key_chain().unwrap();
        assert_eq!(chain.certs().len(), 2);
        assert_eq!(chain.certs()[0].as_der(), client.cert_der.as_slice());
        assert_eq!(chain.key().as_der(), client.key_der());
        assert!(
            p12_keystore::KeyStore::from_pkcs12(
                &p12,
                "wrong",
                p12_keystore::Pkcs12ImportPolicy::Relaxed
            )
            .is_err()
        );
        // OpenSSL reads it too (3DES and AES are both in its default provider).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.p12");
        std::fs::write(&path, &p12).unwrap();
        if let Some(out) = openssl(
            &[
                "pkcs12",
                "-in",
                path.to_str().unwrap(),
                "-passin",
                "pass:s3cret",
                "-nokeys",
            ],
            None,
        ) {
            let text = String::from_utf8_lossy(&out);
            assert_eq!(text.matches("BEGIN CERTIFICATE").count(), 2, "{format:?}");
        }
    }
}

#[test]
fn key_files_are_private_and_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.key.pem");
    let crt = dir.path().join("k.crt.pem");
    files::write_private(&key, b"secret", false).unwrap();
    files::write_public(&crt, b"cert", false).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&crt), 0o644);
    // Refused without force, and the content stays.
    assert!(files::write_private(&key, b"other", false).is_err());
    assert!(files::refuse_existing(&[&key]).is_err());
    assert_eq!(std::fs::read(&key).unwrap(), b"secret");
    // Replaced with force, same mode, no temporary file left.
    files::write_private(&key, b"other", true).unwrap();
    assert_eq!(std::fs::read(&key).unwrap(), b"other");
    assert_eq!(mode(&key), 0o600);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn san_kinds() {
    let ca = root(KeyType::EcdsaP256);
    let c = ca
        .issue_client(&ClientRequest {
            sans: vec![
                SubjectAltName::Dns("laptop.example.com".into()),
                "ip:10.1.2.3".parse().unwrap(),
            ],
            ..client_req("laptop", KeyType::EcdsaP256)
        })
        .unwrap();
    assert_eq!(
        summarize(&c.cert_der).unwrap().subject_alternative_names,
        vec!["DNS:laptop.example.com", "IP:10.1.2.3"]
    );
}
