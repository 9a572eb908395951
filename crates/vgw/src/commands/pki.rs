//! `vgw pki`: the built-in PKI for point-to-site, offline (no daemon needed).
//!
//! `create-root` makes a CA whose `publicCertData` goes to `vgw vnet-gateway root-cert create`;
//! `issue-client` and `issue-server` sign certificates with it; `show` reads any certificate;
//! `profile` builds the client profile zip from a JSON description of the gateway.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use vgw_pki::time::OffsetDateTime;
use vgw_pki::time::format_description::well_known::Rfc3339;
use vgw_pki::{
    CertAuthority, ClientRequest, Issued, KeyType, P12Format, ServerRequest, SubjectAltName,
    Validity, files,
};

use crate::output::{self, Format};

/// `pki` subcommands.
#[derive(Subcommand, Debug)]
pub enum PkiCommand {
    /// Create a self-signed root CA: NAME.crt.pem and NAME.key.pem (0600).
    CreateRoot(CreateRootArgs),
    /// Issue a client certificate signed by a root: NAME.crt.pem, NAME.key.pem, NAME.p12.
    IssueClient(IssueClientArgs),
    /// Issue a gateway (IKEv2 server) certificate signed by a root.
    IssueServer(IssueServerArgs),
    /// Print a certificate's summary: thumbprint, subject, issuer, validity, SANs, EKUs.
    Show(ShowArgs),
    /// Build the client profile zip (strongSwan, Apple, Windows, WireGuard) from a JSON input.
    Profile(ProfileArgs),
}

/// Flags shared by the commands that write a key and certificate.
#[derive(Args, Debug)]
pub struct KeyArgs {
    /// Key algorithm: ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096.
    #[arg(long, default_value = "ecdsa-p256", value_parser = parse_key)]
    pub key: KeyType,
    /// Directory to write the files to.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
    /// Start of validity, RFC 3339 (default: five minutes ago); with --not-after, overrides --days.
    #[arg(long, value_parser = parse_time)]
    pub not_before: Option<OffsetDateTime>,
    /// End of validity, RFC 3339 (default: now + --days). Lets tests make expired certificates.
    #[arg(long, value_parser = parse_time)]
    pub not_after: Option<OffsetDateTime>,
}

/// `pki create-root` flags.
#[derive(Args, Debug)]
pub struct CreateRootArgs {
    /// The CA's name: its common name and the files' name.
    #[arg(short = 'n', long)]
    pub name: String,
    /// Days of validity.
    #[arg(long, default_value_t = 3650)]
    pub days: u32,
    #[command(flatten)]
    pub key: KeyArgs,
}

/// Where the signing root is.
#[derive(Args, Debug)]
pub struct RootArgs {
    /// The root's name (reads ROOT.crt.pem and ROOT.key.pem).
    #[arg(long)]
    pub root: String,
    /// Directory holding the root's files.
    #[arg(long, default_value = ".")]
    pub root_dir: PathBuf,
}

/// `pki issue-client` flags.
#[derive(Args, Debug)]
pub struct IssueClientArgs {
    /// The client's name: CN and file names.
    #[arg(short = 'n', long)]
    pub name: String,
    #[command(flatten)]
    pub root: RootArgs,
    /// subjectAltName: an e-mail address, DNS name or IP (prefix email:, dns: or ip: to be
    /// explicit); repeatable.
    #[arg(long)]
    pub san: Vec<String>,
    /// Days of validity (0: expired as soon as it is used).
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Password of the PKCS#12 file; generated and printed once when not given.
    #[arg(long, env = "VGW_P12_PASSWORD", hide_env_values = true)]
    pub p12_password: Option<String>,
    /// PKCS#12 protection: legacy (3DES, imports everywhere) or modern (AES-256).
    #[arg(long, default_value = "legacy", value_parser = parse_p12_format)]
    pub p12_format: P12Format,
    /// Do not write the PKCS#12 file.
    #[arg(long)]
    pub no_p12: bool,
    #[command(flatten)]
    pub key: KeyArgs,
}

/// `pki issue-server` flags.
#[derive(Args, Debug)]
pub struct IssueServerArgs {
    /// The gateway's DNS name (or IP): CN and first subjectAltName.
    #[arg(short = 'n', long)]
    pub name: String,
    #[command(flatten)]
    pub root: RootArgs,
    /// Further IP subjectAltNames; repeatable.
    #[arg(long)]
    pub ip: Vec<std::net::IpAddr>,
    /// Further DNS subjectAltNames; repeatable.
    #[arg(long)]
    pub dns: Vec<String>,
    /// Days of validity.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    #[command(flatten)]
    pub key: KeyArgs,
}

/// `pki show` flags.
#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The certificate: PEM, DER or base64 DER.
    #[arg(long)]
    pub cert: PathBuf,
}

/// `pki profile` flags.
#[derive(Args, Debug)]
pub struct ProfileArgs {
    /// JSON description of the gateway (vgw_pki::profiles::ProfileInput, camelCase).
    #[arg(long)]
    pub input: PathBuf,
    /// The zip to write.
    #[arg(long, default_value = "vpnclient.zip")]
    pub out: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
}

fn parse_key(s: &str) -> Result<KeyType, String> {
    s.parse().map_err(|e: vgw_pki::Error| e.to_string())
}

fn parse_p12_format(s: &str) -> Result<P12Format, String> {
    s.parse().map_err(|e: vgw_pki::Error| e.to_string())
}

fn parse_time(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|e| format!("not an RFC 3339 time: {e}"))
}

/// Runs a `pki` command; prints with `-o`/`--query` like every other command.
pub fn run(cmd: PkiCommand, format: Option<Format>, query: Option<&str>) -> Result<()> {
    let value = match cmd {
        PkiCommand::CreateRoot(a) => create_root(a)?,
        PkiCommand::IssueClient(a) => issue_client(a)?,
        PkiCommand::IssueServer(a) => issue_server(a)?,
        PkiCommand::Show(a) => show(a)?,
        PkiCommand::Profile(a) => profile(a)?,
    };
    output::print(&value, format.unwrap_or(Format::Json), query)
}

fn check_file_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.starts_with('.')
        || name.contains(['/', '\\', '\0'])
        || name.chars().any(char::is_control)
    {
        bail!("name '{name}' cannot be used as a file name");
    }
    Ok(())
}

fn validity(days: u32, k: &KeyArgs) -> Result<Validity> {
    let mut v = Validity::days_from_now(days);
    if let Some(nb) = k.not_before {
        v.not_before = nb;
    }
    if let Some(na) = k.not_after {
        v.not_after = na;
    }
    if v.not_after < v.not_before {
        bail!("the certificate would end before it starts");
    }
    Ok(v)
}

struct Paths {
    cert: PathBuf,
    key: PathBuf,
}

fn paths(dir: &Path, name: &str) -> Paths {
    Paths {
        cert: dir.join(format!("{name}.crt.pem")),
        key: dir.join(format!("{name}.key.pem")),
    }
}

/// Writes key and certificate; the summary JSON with the file names.
fn write_pair(issued: &Issued, p: &Paths, force: bool) -> Result<Value> {
    // Key first: if it cannot be written, no certificate without a key is left behind.
    files::write_private(&p.key, issued.key_pem().as_bytes(), force)?;
    files::write_public(&p.cert, issued.cert_pem.as_bytes(), force)?;
    let mut v = serde_json::to_value(vgw_pki::summarize(&issued.cert_der)?)?;
    v["files"] = json!({
        "certificate": p.cert.display().to_string(),
        "privateKey": p.key.display().to_string(),
    });
    Ok(v)
}

fn ensure_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

fn create_root(a: CreateRootArgs) -> Result<Value> {
    check_file_name(&a.name)?;
    ensure_dir(&a.key.out)?;
    let p = paths(&a.key.out, &a.name);
    if !a.key.force {
        files::refuse_existing(&[&p.cert, &p.key])?;
    }
    let root = vgw_pki::create_root(&a.name, a.key.key, validity(a.days, &a.key)?)?;
    let v = write_pair(&root, &p, a.key.force)?;
    eprintln!(
        "Trust it on the gateway with:\n  vgw vnet-gateway root-cert create --name {} --public-cert-data {}",
        a.name,
        p.cert.display()
    );
    Ok(v)
}

fn load_root(r: &RootArgs) -> Result<CertAuthority> {
    check_file_name(&r.root)?;
    let p = paths(&r.root_dir, &r.root);
    let cert = std::fs::read_to_string(&p.cert)
        .with_context(|| format!("cannot read the root certificate {}", p.cert.display()))?;
    let key = std::fs::read_to_string(&p.key)
        .with_context(|| format!("cannot read the root key {}", p.key.display()))?;
    CertAuthority::from_pem(&cert, &key).with_context(|| format!("root {}", r.root))
}

fn issue_client(a: IssueClientArgs) -> Result<Value> {
    check_file_name(&a.name)?;
    let sans = a
        .san
        .iter()
        .map(|s| s.parse::<SubjectAltName>())
        .collect::<Result<Vec<_>, _>>()?;
    let ca = load_root(&a.root)?;
    ensure_dir(&a.key.out)?;
    let p = paths(&a.key.out, &a.name);
    let p12_path = a.key.out.join(format!("{}.p12", a.name));
    if !a.key.force {
        let mut all = vec![p.cert.as_path(), p.key.as_path()];
        if !a.no_p12 {
            all.push(&p12_path);
        }
        files::refuse_existing(&all)?;
    }
    let issued = ca.issue_client(&ClientRequest {
        name: a.name.clone(),
        key: a.key.key,
        validity: validity(a.days, &a.key)?,
        sans,
    })?;
    let mut v = write_pair(&issued, &p, a.key.force)?;
    if !a.no_p12 {
        let (password, generated) = match a.p12_password {
            Some(pw) => (pw, false),
            None => (vgw_pki::generate_password()?, true),
        };
        let p12 = vgw_pki::pkcs12(&a.name, &issued, &[ca.cert_der()], &password, a.p12_format)?;
        files::write_private(&p12_path, &p12, a.key.force)?;
        v["files"]["pkcs12"] = json!(p12_path.display().to_string());
        if generated {
            // Shown once; it is not stored anywhere.
            v["pkcs12Password"] = json!(password);
        }
    }
    Ok(v)
}

fn issue_server(a: IssueServerArgs) -> Result<Value> {
    check_file_name(&a.name)?;
    let ca = load_root(&a.root)?;
    ensure_dir(&a.key.out)?;
    let p = paths(&a.key.out, &a.name);
    if !a.key.force {
        files::refuse_existing(&[&p.cert, &p.key])?;
    }
    let issued = ca.issue_server(&ServerRequest {
        name: a.name.clone(),
        key: a.key.key,
        validity: validity(a.days, &a.key)?,
        dns: a.dns,
        ips: a.ip,
    })?;
    write_pair(&issued, &p, a.key.force)
}

fn show(a: ShowArgs) -> Result<Value> {
    let data =
        std::fs::read(&a.cert).with_context(|| format!("cannot read {}", a.cert.display()))?;
    let certs = vgw_pki::certs_from_pem_or_der(&data)?;
    let mut out = Vec::new();
    for der in &certs {
        out.push(serde_json::to_value(vgw_pki::summarize(der)?)?);
    }
    Ok(if out.len() == 1 {
        out.remove(0)
    } else {
        Value::Array(out)
    })
}

fn profile(a: ProfileArgs) -> Result<Value> {
    let text = std::fs::read_to_string(&a.input)
        .with_context(|| format!("cannot read {}", a.input.display()))?;
    let input: vgw_pki::profiles::ProfileInput = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid profile input", a.input.display()))?;
    let pkg = vgw_pki::profiles::build_profile(&input)?;
    // The zip may carry a PKCS#12 or WireGuard private keys: keep it private then.
    let secret = input.client.as_ref().is_some_and(|c| c.pkcs12.is_some())
        || input
            .wireguard
            .as_ref()
            .is_some_and(|w| w.clients.iter().any(|c| c.private_key.is_some()));
    let mode = if secret {
        files::PRIVATE_MODE
    } else {
        files::PUBLIC_MODE
    };
    files::write_file(&a.out, &pkg.zip, mode, a.force)?;
    Ok(json!({
        "file": a.out.display().to_string(),
        "contents": pkg.files,
        "notes": pkg.notes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn cli(args: &[&str]) -> PkiCommand {
        let mut full = vec!["vgw", "pki"];
        full.extend_from_slice(args);
        match crate::Cli::try_parse_from(full).unwrap().command {
            crate::Command::Pki(c) => c,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn root_client_server_show() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let root = create_root_cmd(d, &["--key", "ecdsa-p384"]);
        assert_eq!(root["subject"], "CN=ca1");
        assert_eq!(root["keyType"], "ecdsa-p384");
        assert!(root["publicCertData"].as_str().unwrap().starts_with("MII"));
        // Refuses to overwrite, then --force works.
        let PkiCommand::CreateRoot(a) = cli(&["create-root", "--name", "ca1", "--out", d]) else {
            unreachable!()
        };
        assert!(create_root(a).is_err());
        create_root_cmd(d, &["--force"]);

        let PkiCommand::IssueClient(a) = cli(&[
            "issue-client",
            "--root",
            "ca1",
            "--root-dir",
            d,
            "--name",
            "alice",
            "--out",
            d,
            "--san",
            "alice@example.com",
            "--p12-password",
            "pw",
        ]) else {
            unreachable!()
        };
        let c = issue_client(a).unwrap();
        assert_eq!(c["issuer"], "CN=ca1");
        assert_eq!(c["extendedKeyUsages"], json!(["clientAuth"]));
        assert!(c.get("pkcs12Password").is_none());
        assert!(dir.path().join("alice.p12").exists());

        let PkiCommand::IssueClient(a) = cli(&[
            "issue-client",
            "--root",
            "ca1",
            "--root-dir",
            d,
            "--name",
            "old",
            "--out",
            d,
            "--not-before",
            "2020-01-01T00:00:00Z",
            "--not-after",
            "2020-01-02T00:00:00Z",
        ]) else {
            unreachable!()
        };
        let c = issue_client(a).unwrap();
        assert_eq!(c["expired"], true);
        assert_eq!(c["pkcs12Password"].as_str().unwrap().len(), 20);

        let PkiCommand::IssueServer(a) = cli(&[
            "issue-server",
            "--root",
            "ca1",
            "--root-dir",
            d,
            "--name",
            "vpn.example.com",
            "--ip",
            "198.18.0.2",
            "--out",
            d,
        ]) else {
            unreachable!()
        };
        let s = issue_server(a).unwrap();
        assert_eq!(
            s["subjectAlternativeNames"],
            json!(["DNS:vpn.example.com", "IP:198.18.0.2"])
        );
        assert_eq!(
            s["extendedKeyUsages"],
            json!(["serverAuth", "ikeIntermediate"])
        );

        let cert = format!("{d}/vpn.example.com.crt.pem");
        let PkiCommand::Show(a) = cli(&["show", "--cert", &cert]) else {
            unreachable!()
        };
        assert_eq!(show(a).unwrap()["thumbprint"], s["thumbprint"]);
    }

    fn create_root_cmd(d: &str, extra: &[&str]) -> Value {
        let mut args = vec!["create-root", "--name", "ca1", "--out", d];
        args.extend_from_slice(extra);
        let PkiCommand::CreateRoot(a) = cli(&args) else {
            unreachable!()
        };
        create_root(a).unwrap()
    }
}
