//! `vgw vpn-connection ...` (az network vpn-connection).

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{bool_flag, seg, set};
use crate::Ctx;

/// `vpn-connection` subcommands.
#[derive(Subcommand, Debug)]
pub enum ConnectionCommand {
    /// Create a connection from the gateway to a local gateway.
    Create(ConnectionArgs),
    /// Show one, with its status.
    Show(Name),
    /// List them, with status.
    List,
    /// Change one; only the flags given change.
    Update(ConnectionArgs),
    /// Delete one (the peer is sent an IKE DELETE).
    Delete(NameNoWait),
    /// Tear down and re-establish one connection (an evidence archive is taken first).
    Reset(super::evidence::ConnectionResetArgs),
    /// Wait until the connection reaches a condition, e.g.
    /// `--custom "connectionStatus=='Connected'"` (az's generic wait).
    Wait(ConnectionWait),
    /// Custom IPsec/IKE policies.
    #[command(subcommand)]
    IpsecPolicy(IpsecPolicyCommand),
    /// The pre-shared key.
    #[command(subcommand)]
    SharedKey(SharedKeyCommand),
    /// Packet capture on one connection.
    #[command(subcommand)]
    PacketCapture(PacketCaptureCommand),
}

/// `--name`.
#[derive(Args, Debug)]
pub struct Name {
    /// Connection name.
    #[arg(short = 'n', long)]
    pub name: String,
}

/// `wait` flags.
#[derive(Args, Debug)]
pub struct ConnectionWait {
    /// Connection name.
    #[arg(short = 'n', long)]
    pub name: String,
    /// The condition.
    #[command(flatten)]
    pub wait: super::WaitArgs,
}

/// `--name --no-wait`.
#[derive(Args, Debug)]
pub struct NameNoWait {
    /// Connection name.
    #[arg(short = 'n', long)]
    pub name: String,
    /// Do not print the result.
    #[arg(long)]
    pub no_wait: bool,
}

/// `create`/`update` flags, as az.
#[derive(Args, Debug)]
pub struct ConnectionArgs {
    /// Connection name.
    #[arg(short = 'n', long)]
    pub name: String,
    /// The gateway (defaults to the daemon's).
    #[arg(long)]
    pub vnet_gateway1: Option<String>,
    /// The local gateway (remote site).
    #[arg(long)]
    pub local_gateway2: Option<String>,
    /// The pre-shared key (visible in the process list and shell history: prefer --shared-key-file).
    #[arg(long, conflicts_with = "shared_key_file")]
    pub shared_key: Option<String>,
    /// Read the pre-shared key from this file, or from standard input with `-` (vgw).
    #[arg(long, value_name = "FILE")]
    pub shared_key_file: Option<std::path::PathBuf>,
    /// Run BGP over this connection.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = bool_flag())]
    pub enable_bgp: Option<bool>,
    /// Route preference (0-32000).
    #[arg(long)]
    pub routing_weight: Option<u32>,
    /// One Child SA per prefix pair instead of 0.0.0.0/0.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = bool_flag())]
    pub use_policy_based_traffic_selectors: Option<bool>,
    /// IKEv2 (IKEv1 is not offered).
    #[arg(long)]
    pub connection_protocol: Option<String>,
    /// Default, InitiatorOnly or ResponderOnly.
    #[arg(long)]
    pub connection_mode: Option<String>,
    /// Dead-peer-detection timeout in seconds (vgw: 1-3600; Azure 9-3600). 1 detects a dead tunnel
    /// within about a second, for fast failover to a redundant tunnel.
    #[arg(long)]
    pub dpd_timeout_seconds: Option<u32>,
    /// Run BFD with the site's BGP speaker over the tunnel (vgw extension; needs --enable-bgp).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = bool_flag())]
    pub enable_bfd: Option<bool>,
    /// BFD interval in milliseconds (10-60000; default 300).
    #[arg(long)]
    pub bfd_interval: Option<u32>,
    /// BFD detection multiplier (2-50; default 3).
    #[arg(long)]
    pub bfd_multiplier: Option<u8>,
    /// Permit DES/3DES/MD5/DH1/DH2/DH24 on this connection.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = bool_flag())]
    pub allow_legacy_crypto: Option<bool>,
    /// NAT rules for traffic from the site.
    #[arg(long, num_args = 1..)]
    pub ingress_nat_rule: Option<Vec<String>>,
    /// NAT rules for traffic to the site.
    #[arg(long, num_args = 1..)]
    pub egress_nat_rule: Option<Vec<String>>,
    /// az's --set/--add/--remove/--force-string.
    #[command(flatten)]
    pub generic: super::GenericUpdate,
    /// Do not print the result.
    #[arg(long)]
    pub no_wait: bool,
}

/// `ipsec-policy` subcommands.
#[derive(Subcommand, Debug)]
pub enum IpsecPolicyCommand {
    /// Add a policy (all eight fields, as Azure requires).
    Add(IpsecPolicyArgs),
    /// List the connection's policies.
    List(ConnectionName),
    /// Remove all policies (back to vgw's defaults).
    Clear(ConnectionNameNoWait),
}

/// `--connection-name`.
#[derive(Args, Debug)]
pub struct ConnectionName {
    /// Connection name.
    #[arg(long)]
    pub connection_name: String,
}

/// `--connection-name --no-wait`.
#[derive(Args, Debug)]
pub struct ConnectionNameNoWait {
    /// Connection name.
    #[arg(long)]
    pub connection_name: String,
    /// Do not print the result.
    #[arg(long)]
    pub no_wait: bool,
}

/// `ipsec-policy add` flags, as az.
#[derive(Args, Debug)]
pub struct IpsecPolicyArgs {
    /// Connection name.
    #[arg(long)]
    pub connection_name: String,
    /// IKE encryption: AES128 AES192 AES256 GCMAES128 GCMAES256 ChaCha20Poly1305 (DES DES3 legacy).
    #[arg(long)]
    pub ike_encryption: String,
    /// IKE integrity: SHA256 SHA384 SHA512 GCMAES128 GCMAES256 (SHA1, MD5 legacy).
    #[arg(long)]
    pub ike_integrity: String,
    /// DH group: DHGroup14 DHGroup2048 ECP256 ECP384 Curve25519 (DHGroup1/2/24 legacy).
    #[arg(long)]
    pub dh_group: String,
    /// ESP encryption: AES128 AES192 AES256 GCMAES128 GCMAES192 GCMAES256 ChaCha20Poly1305.
    #[arg(long)]
    pub ipsec_encryption: String,
    /// ESP integrity: SHA1 SHA256 GCMAES128 GCMAES192 GCMAES256 ChaCha20Poly1305 (MD5 legacy).
    #[arg(long)]
    pub ipsec_integrity: String,
    /// PFS group: None PFS14 PFS2048 ECP256 ECP384 PFSMM Curve25519.
    #[arg(long)]
    pub pfs_group: String,
    /// Child SA lifetime in seconds (300-172799).
    #[arg(long, default_value_t = 27000)]
    pub sa_lifetime: u64,
    /// Child SA volume limit in KB (>= 1024).
    #[arg(long, default_value_t = 102_400_000)]
    pub sa_max_size: u64,
    /// Do not print the result.
    #[arg(long)]
    pub no_wait: bool,
}

/// `shared-key` subcommands.
#[derive(Subcommand, Debug)]
pub enum SharedKeyCommand {
    /// Print the key (the only command that does).
    Show(ConnectionName),
    /// Set the key.
    Update(SharedKeyUpdate),
    /// Generate a new random key.
    Reset(SharedKeyReset),
}

/// `shared-key update` flags.
#[derive(Args, Debug)]
pub struct SharedKeyUpdate {
    /// Connection name.
    #[arg(long)]
    pub connection_name: String,
    /// The new key (visible in the process list and shell history: prefer --value-file).
    #[arg(
        long,
        required_unless_present = "value_file",
        conflicts_with = "value_file"
    )]
    pub value: Option<String>,
    /// Read the new key from this file, or from standard input with `-` (vgw).
    #[arg(long, value_name = "FILE", alias = "shared-key-file")]
    pub value_file: Option<std::path::PathBuf>,
}

/// `shared-key reset` flags.
#[derive(Args, Debug)]
pub struct SharedKeyReset {
    /// Connection name.
    #[arg(long)]
    pub connection_name: String,
    /// Length of the generated key (1-128).
    #[arg(long, default_value_t = 32)]
    pub key_length: u32,
}

/// `packet-capture` subcommands.
#[derive(Subcommand, Debug)]
pub enum PacketCaptureCommand {
    /// Start a capture on one connection.
    Start(CaptureStart),
    /// Stop it and save the pcapng file (`--output-file`, default: its name in the current directory).
    Stop(CaptureStop),
}

/// `packet-capture stop` flags.
#[derive(Args, Debug)]
pub struct CaptureStop {
    /// Connection name.
    #[arg(short = 'n', long)]
    pub name: String,
    /// Where to save the pcapng file.
    #[arg(long = "output-file", visible_alias = "file")]
    pub output_file: Option<std::path::PathBuf>,
}

/// `packet-capture start` flags.
#[derive(Args, Debug)]
pub struct CaptureStart {
    /// Connection name.
    #[arg(short = 'n', long)]
    pub name: String,
    /// Azure's filterData JSON.
    #[arg(long)]
    pub filter_data: Option<String>,
}

fn path(name: &str) -> String {
    format!("/api/connections/{}", seg(name))
}

fn apply_flags(body: &mut Value, a: &ConnectionArgs) -> Result<()> {
    if let Some(gw) = &a.vnet_gateway1 {
        body["virtualNetworkGateway1"] = json!({"id": gw});
    }
    if let Some(lg) = &a.local_gateway2 {
        body["localNetworkGateway2"] = json!({"id": lg});
    }
    let key = match &a.shared_key_file {
        Some(f) => Some(super::read_secret("--shared-key-file", f)?),
        None => a.shared_key.clone(),
    };
    set(body, "sharedKey", key);
    set(body, "enableBgp", a.enable_bgp);
    set(body, "routingWeight", a.routing_weight);
    set(
        body,
        "usePolicyBasedTrafficSelectors",
        a.use_policy_based_traffic_selectors,
    );
    set(body, "connectionProtocol", a.connection_protocol.clone());
    set(body, "connectionMode", a.connection_mode.clone());
    set(body, "dpdTimeoutSeconds", a.dpd_timeout_seconds);
    set(body, "enableBfd", a.enable_bfd);
    set(body, "bfdIntervalMilliseconds", a.bfd_interval);
    set(body, "bfdMultiplier", a.bfd_multiplier);
    set(body, "allowLegacyCrypto", a.allow_legacy_crypto);
    set(body, "ingressNatRules", a.ingress_nat_rule.clone());
    set(body, "egressNatRules", a.egress_nat_rule.clone());
    Ok(())
}

async fn put_and_print(
    ctx: &Ctx,
    name: &str,
    body: &Value,
    etag: Option<&str>,
    no_wait: bool,
) -> Result<()> {
    let out = ctx.client.put(&path(name), body, etag).await?;
    if !no_wait {
        ctx.print(&out)?;
    }
    Ok(())
}

/// Runs a `vpn-connection` command.
pub async fn run(ctx: &Ctx, cmd: ConnectionCommand) -> Result<()> {
    match cmd {
        ConnectionCommand::Create(a) => {
            if a.local_gateway2.is_none() {
                bail!("the following arguments are required: --local-gateway2");
            }
            if ctx
                .client
                .call(hyper::Method::GET, &path(&a.name), None, None)
                .await
                .is_ok()
            {
                bail!(
                    "vpn-connection '{}' already exists; change it with 'vgw vpn-connection update'",
                    a.name
                );
            }
            let mut body = json!({"name": a.name});
            apply_flags(&mut body, &a)?;
            a.generic.apply(&mut body)?;
            put_and_print(ctx, &a.name, &body, None, a.no_wait).await?;
        }
        ConnectionCommand::Show(a) => ctx.print(&ctx.client.get(&path(&a.name)).await?)?,
        ConnectionCommand::List => {
            ctx.print(&ctx.client.get("/api/connections").await?["value"])?
        }
        ConnectionCommand::Update(a) => {
            let mut body = ctx.client.get(&path(&a.name)).await?;
            let etag = body["etag"].as_str().map(str::to_string);
            apply_flags(&mut body, &a)?;
            a.generic.apply(&mut body)?;
            put_and_print(ctx, &a.name, &body, etag.as_deref(), a.no_wait).await?;
        }
        ConnectionCommand::Wait(a) => {
            super::wait(
                ctx,
                &path(&a.name),
                &format!("vpn-connection '{}'", a.name),
                &a.wait,
            )
            .await?
        }
        ConnectionCommand::Delete(a) => ctx.client.delete(&path(&a.name)).await?,
        ConnectionCommand::Reset(a) => {
            let out = ctx
                .client
                .post(
                    &format!(
                        "{}/resetconnection?{}",
                        path(&a.name),
                        super::evidence::reset_query(a.skip_evidence)
                    ),
                    None,
                )
                .await?;
            if !a.no_wait {
                ctx.print(&out)?;
            }
        }
        ConnectionCommand::IpsecPolicy(cmd) => match cmd {
            IpsecPolicyCommand::Add(a) => {
                let mut body = ctx.client.get(&path(&a.connection_name)).await?;
                let etag = body["etag"].as_str().map(str::to_string);
                let policy = json!({
                    "saLifeTimeSeconds": a.sa_lifetime,
                    "saDataSizeKilobytes": a.sa_max_size,
                    "ipsecEncryption": a.ipsec_encryption,
                    "ipsecIntegrity": a.ipsec_integrity,
                    "ikeEncryption": a.ike_encryption,
                    "ikeIntegrity": a.ike_integrity,
                    "dhGroup": a.dh_group,
                    "pfsGroup": a.pfs_group,
                });
                match body["ipsecPolicies"].as_array_mut() {
                    Some(list) => list.push(policy),
                    None => body["ipsecPolicies"] = json!([policy]),
                }
                let out = ctx
                    .client
                    .put(&path(&a.connection_name), &body, etag.as_deref())
                    .await?;
                if !a.no_wait {
                    ctx.print(&out["ipsecPolicies"])?;
                }
            }
            IpsecPolicyCommand::List(a) => {
                let body = ctx.client.get(&path(&a.connection_name)).await?;
                ctx.print(&body["ipsecPolicies"])?;
            }
            IpsecPolicyCommand::Clear(a) => {
                let mut body = ctx.client.get(&path(&a.connection_name)).await?;
                let etag = body["etag"].as_str().map(str::to_string);
                body["ipsecPolicies"] = json!([]);
                put_and_print(ctx, &a.connection_name, &body, etag.as_deref(), a.no_wait).await?;
            }
        },
        ConnectionCommand::SharedKey(cmd) => match cmd {
            SharedKeyCommand::Show(a) => ctx.print(
                &ctx.client
                    .get(&format!("{}/sharedkey", path(&a.connection_name)))
                    .await?,
            )?,
            SharedKeyCommand::Update(a) => {
                let value = match (&a.value_file, a.value) {
                    (Some(f), _) => super::read_secret("--value-file", f)?,
                    (None, Some(v)) => v,
                    (None, None) => {
                        bail!("give the new key with --value-file FILE (or - for stdin)")
                    }
                };
                let out = ctx
                    .client
                    .put(
                        &format!("{}/sharedkey", path(&a.connection_name)),
                        &json!({ "value": value }),
                        None,
                    )
                    .await?;
                ctx.print(&out)?;
            }
            SharedKeyCommand::Reset(a) => {
                let out = ctx
                    .client
                    .post(
                        &format!("{}/sharedkey/reset", path(&a.connection_name)),
                        Some(&json!({"keyLength": a.key_length})),
                    )
                    .await?;
                ctx.print(&out)?;
            }
        },
        ConnectionCommand::PacketCapture(cmd) => {
            let (name, action, body) = match cmd {
                PacketCaptureCommand::Start(a) => {
                    let filter = a
                        .filter_data
                        .map(|f| {
                            serde_json::from_str::<Value>(&f).map_err(|e| {
                                anyhow::anyhow!("--filter-data is not valid JSON: {e}")
                            })
                        })
                        .transpose()?;
                    (
                        a.name,
                        "startPacketCapture",
                        Some(json!({"filterData": filter})),
                    )
                }
                PacketCaptureCommand::Stop(a) => {
                    let answer = ctx
                        .client
                        .post(&format!("{}/stopPacketCapture", path(&a.name)), None)
                        .await?;
                    let saved = super::gateway::save_capture(ctx, answer, a.output_file).await?;
                    ctx.print(&saved)?;
                    return Ok(());
                }
            };
            ctx.print(
                &ctx.client
                    .post(&format!("{}/{action}", path(&name)), body.as_ref())
                    .await?,
            )?;
        }
    }
    Ok(())
}
