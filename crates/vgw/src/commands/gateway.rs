//! `vgw vnet-gateway ...` (az network vnet-gateway).

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{bool_flag, seg, set};
use crate::Ctx;
use crate::output::Table;

/// `vnet-gateway` subcommands.
#[derive(Subcommand, Debug)]
pub enum GatewayCommand {
    /// Create the gateway (one per daemon).
    Create(GatewayArgs),
    /// Show the gateway.
    Show(NameArg),
    /// List the gateways (a daemon has at most one).
    List,
    /// Wait until the gateway reaches a condition (az's generic wait).
    Wait(GatewayWait),
    /// Change the gateway's settings; only the flags given change.
    Update(GatewayArgs),
    /// Delete the gateway (its connections must be deleted first).
    Delete(NameNoWait),
    /// Re-establish every tunnel, keeping the configuration (an evidence archive is taken first).
    Reset(ResetArgs),
    /// Collect an evidence archive (status, SAs, BGP, routes, logs, metrics, doctor, export).
    CollectEvidence(super::evidence::CollectArgs),
    /// Rehearse a failover: cut one connection's tunnel on this instance for a while (as an underlay
    /// failure would), probe across the tunnels, restore it, and report the traffic lost.
    FailoverDrill(DrillArgs),
    /// Show BGP peers and their state.
    ListBgpPeerStatus(PeerArgs),
    /// Show the routes the gateway has learned.
    ListLearnedRoutes(NameArg),
    /// Show the routes advertised to one BGP peer.
    ListAdvertisedRoutes(PeerArgs),
    /// NAT rules.
    #[command(subcommand)]
    NatRule(NatRuleCommand),
    /// Point-to-site trusted root certificates.
    #[command(subcommand)]
    RootCert(RootCertCommand),
    /// Point-to-site revoked client certificates.
    #[command(subcommand)]
    RevokedCert(RevokedCertCommand),
    /// Point-to-site client profiles and health.
    #[command(subcommand)]
    VpnClient(VpnClientCommand),
    /// Disconnect point-to-site clients by their vpnConnectionId (from `vpn-client show-health`).
    DisconnectVpnConnections(DisconnectArgs),
    /// Packet capture on the gateway.
    #[command(subcommand)]
    PacketCapture(PacketCaptureCommand),
}

/// `--name` (optional: the daemon's one gateway).
#[derive(Args, Debug)]
pub struct NameArg {
    /// Gateway name; defaults to the daemon's gateway.
    #[arg(short = 'n', long)]
    pub name: Option<String>,
}

/// `wait` flags.
#[derive(Args, Debug)]
pub struct GatewayWait {
    /// Gateway name; defaults to the daemon's gateway.
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// The condition.
    #[command(flatten)]
    pub wait: super::WaitArgs,
}

/// `--name` and `--no-wait`.
#[derive(Args, Debug)]
pub struct NameNoWait {
    /// Gateway name; defaults to the daemon's gateway.
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// Do not print the result.
    #[arg(long)]
    pub no_wait: bool,
}

/// `reset` flags.
#[derive(Args, Debug)]
pub struct ResetArgs {
    /// Gateway name; defaults to the daemon's gateway.
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// Reset only the instance with this public address (active-active).
    #[arg(long)]
    pub gateway_vip: Option<String>,
    /// Reset without taking the evidence snapshot first (when the snapshot itself would hang).
    #[arg(long)]
    pub skip_evidence: bool,
    /// Do not print the result.
    #[arg(long)]
    pub no_wait: bool,
}

/// `failover-drill` flags.
#[derive(Args, Debug)]
pub struct DrillArgs {
    /// Gateway name; defaults to the daemon's gateway.
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// The connection whose tunnel (on the instance you talk to) is cut.
    #[arg(long)]
    pub connection: String,
    /// How long the tunnel stays cut, in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// An IPv4 address behind the site that answers ping.
    #[arg(long)]
    pub probe_address: String,
    /// The probes' source: an address of this host inside the gateway's address space (found when omitted).
    #[arg(long)]
    pub source_address: Option<String>,
    /// Time between probes in milliseconds (50: 20 probes a second).
    #[arg(long, default_value_t = 50)]
    pub interval_ms: u64,
}

/// `--peer` for the BGP commands.
#[derive(Args, Debug)]
pub struct PeerArgs {
    /// Gateway name; defaults to the daemon's gateway.
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// The BGP neighbor's address.
    #[arg(long)]
    pub peer: Option<String>,
}

/// Flags of `create` and `update`, with az's names.
#[derive(Args, Debug)]
pub struct GatewayArgs {
    /// Gateway name (required for create).
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// The addresses to listen on; two for active-active.
    #[arg(long, num_args = 1..=2)]
    pub public_ip_addresses: Option<Vec<String>>,
    /// The network behind the gateway (Azure takes it from the VNet).
    #[arg(long, num_args = 1..)]
    pub vnet_address_space: Option<Vec<String>>,
    /// VpnGw1 .. VpnGw5AZ (kept for compatibility; vgw does not cap throughput by SKU).
    #[arg(long)]
    pub sku: Option<String>,
    /// RouteBased or PolicyBased.
    #[arg(long)]
    pub vpn_type: Option<String>,
    /// The gateway's BGP ASN (enables BGP).
    #[arg(long)]
    pub asn: Option<u64>,
    /// The gateway's BGP peering address.
    #[arg(long)]
    pub bgp_peering_address: Option<String>,
    /// Weight added to routes learned over BGP.
    #[arg(long)]
    pub peer_weight: Option<u32>,
    /// vgw's BGP timers and prefix limit.
    #[command(flatten)]
    pub bgp_tuning: super::BgpTuning,
    /// Enable or disable BGP.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = bool_flag())]
    pub enable_bgp: Option<bool>,
    /// Point-to-site client address pool.
    #[arg(long, num_args = 1..)]
    pub address_prefixes: Option<Vec<String>>,
    /// Point-to-site protocols: IkeV2 and/or WireGuard.
    #[arg(long, num_args = 1..)]
    pub client_protocol: Option<Vec<String>>,
    /// DNS servers for point-to-site clients (vgw).
    #[arg(long, num_args = 1..)]
    pub vpn_client_dns_servers: Option<Vec<String>>,
    /// WireGuard clients by name, in order (vgw; the list replaces the previous one).
    #[arg(long, num_args = 1..)]
    pub wireguard_peers: Option<Vec<String>>,
    /// Public keys WireGuard users generated themselves, as NAME=KEY (`wg pubkey` output); such a
    /// peer's private key never exists on the gateway (vgw; the list replaces the previous one, an
    /// empty string clears it).
    #[arg(long, num_args = 1.., value_name = "NAME=KEY")]
    pub wireguard_peer_public_keys: Option<Vec<String>>,
    /// Extra prefixes advertised to sites.
    #[arg(long, num_args = 1..)]
    pub custom_routes: Option<Vec<String>>,
    /// az's --set/--add/--remove/--force-string.
    #[command(flatten)]
    pub generic: super::GenericUpdate,
    /// Do not print the result.
    #[arg(long)]
    pub no_wait: bool,
}

/// `nat-rule` subcommands.
#[derive(Subcommand, Debug)]
pub enum NatRuleCommand {
    /// Add (or replace) a NAT rule.
    Add(NatRuleArgs),
    /// List NAT rules.
    List(GatewayNameArg),
    /// Remove a NAT rule.
    Remove(ItemArgs),
}

/// `--gateway-name`.
#[derive(Args, Debug)]
pub struct GatewayNameArg {
    /// Gateway name; defaults to the daemon's gateway.
    #[arg(long)]
    pub gateway_name: Option<String>,
}

/// `--gateway-name --name`.
#[derive(Args, Debug)]
pub struct ItemArgs {
    /// Gateway name; defaults to the daemon's gateway.
    #[arg(long)]
    pub gateway_name: Option<String>,
    /// Item name.
    #[arg(short = 'n', long)]
    pub name: String,
    /// Do not print the result.
    #[arg(long)]
    pub no_wait: bool,
}

/// `nat-rule add` flags, as az.
#[derive(Args, Debug)]
pub struct NatRuleArgs {
    /// Gateway name; defaults to the daemon's gateway.
    #[arg(long)]
    pub gateway_name: Option<String>,
    /// Rule name.
    #[arg(short = 'n', long)]
    pub name: String,
    /// Static or Dynamic.
    #[arg(long = "type", default_value = "Static")]
    pub rule_type: String,
    /// EgressSnat or IngressSnat.
    #[arg(long, default_value = "EgressSnat")]
    pub mode: String,
    /// Prefixes before translation.
    #[arg(long, num_args = 1.., required = true)]
    pub internal_mappings: Vec<String>,
    /// Prefixes after translation.
    #[arg(long, num_args = 1.., required = true)]
    pub external_mappings: Vec<String>,
    /// Port range of the internal mappings, low-high.
    #[arg(long)]
    pub internal_port_range: Option<String>,
    /// Port range of the external mappings, low-high.
    #[arg(long)]
    pub external_port_range: Option<String>,
    /// Restrict the rule to one instance (ipConfiguration name).
    #[arg(long)]
    pub ip_config_id: Option<String>,
    /// Do not print the result.
    #[arg(long)]
    pub no_wait: bool,
}

/// `root-cert` subcommands.
#[derive(Subcommand, Debug)]
pub enum RootCertCommand {
    /// Trust a root certificate for point-to-site clients.
    Create(RootCertArgs),
    /// Stop trusting it.
    Delete(ItemArgs),
}

/// `root-cert create` flags.
#[derive(Args, Debug)]
pub struct RootCertArgs {
    /// Gateway name; defaults to the daemon's gateway.
    #[arg(long)]
    pub gateway_name: Option<String>,
    /// Certificate name.
    #[arg(short = 'n', long)]
    pub name: String,
    /// The certificate: base64 DER (Azure's format), or a path to a PEM/base64 file.
    #[arg(long)]
    pub public_cert_data: String,
    /// Do not print the result.
    #[arg(long)]
    pub no_wait: bool,
}

/// `revoked-cert` subcommands.
#[derive(Subcommand, Debug)]
pub enum RevokedCertCommand {
    /// Revoke a client certificate by thumbprint.
    Create(RevokedCertArgs),
    /// Lift a revocation.
    Delete(ItemArgs),
}

/// `revoked-cert create` flags.
#[derive(Args, Debug)]
pub struct RevokedCertArgs {
    /// Gateway name; defaults to the daemon's gateway.
    #[arg(long)]
    pub gateway_name: Option<String>,
    /// Entry name.
    #[arg(short = 'n', long)]
    pub name: String,
    /// SHA-1 thumbprint of the client certificate (40 hex digits).
    #[arg(long)]
    pub thumbprint: String,
    /// Do not print the result.
    #[arg(long)]
    pub no_wait: bool,
}

/// `vpn-client` subcommands.
#[derive(Subcommand, Debug)]
pub enum VpnClientCommand {
    /// Build the client profile package and return a one-hour URL to it: the gateway's (IKEv2, no
    /// WireGuard key), or with --client one WireGuard user's own.
    Generate(PackageArgs),
    /// Return a URL of the current package (same as generate).
    ShowUrl(PackageArgs),
    /// Revoke package URLs: one (--url), a user's (--client) or every one issued so far (--all).
    RevokeUrl(RevokeUrlArgs),
    /// Connected point-to-site clients.
    ShowHealth(NameArg),
}

/// `vpn-client generate|show-url` flags.
#[derive(Args, Debug)]
pub struct PackageArgs {
    /// Gateway name; defaults to the daemon's gateway.
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// The WireGuard peer (from --wireguard-peers) whose own package this is (vgw).
    #[arg(long)]
    pub client: Option<String>,
}

/// `vpn-client revoke-url` flags (exactly one of --url, --client, --all).
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["url", "client", "all"])))]
pub struct RevokeUrlArgs {
    /// Gateway name; defaults to the daemon's gateway.
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// The URL to revoke, as generate printed it.
    #[arg(long)]
    pub url: Option<String>,
    /// Revoke every URL of this WireGuard peer's package issued so far.
    #[arg(long)]
    pub client: Option<String>,
    /// Revoke every URL issued so far.
    #[arg(long)]
    pub all: bool,
}

/// `disconnect-vpn-connections` flags.
#[derive(Args, Debug)]
pub struct DisconnectArgs {
    /// Gateway name; defaults to the daemon's gateway.
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// The clients' vpnConnectionIds.
    #[arg(long, num_args = 1.., required = true)]
    pub vpn_connection_ids: Vec<String>,
}

/// `packet-capture` subcommands.
#[derive(Subcommand, Debug)]
pub enum PacketCaptureCommand {
    /// Start a capture.
    Start(CaptureStartArgs),
    /// Stop it and save the pcapng file (`--output`, default: its name in the current directory).
    Stop(CaptureStopArgs),
}

/// `packet-capture stop` flags.
#[derive(Args, Debug)]
pub struct CaptureStopArgs {
    /// Gateway name; defaults to the daemon's gateway.
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// Where to save the pcapng file.
    #[arg(long = "output-file", visible_alias = "file")]
    pub output_file: Option<std::path::PathBuf>,
}

/// Saves the file a `stopPacketCapture` answer names to `output` (or its name in the current
/// directory) and adds `savedTo` to the answer.
pub async fn save_capture(
    ctx: &Ctx,
    mut answer: Value,
    output: Option<std::path::PathBuf>,
) -> Result<Value> {
    let file_name = answer["fileName"]
        .as_str()
        .context("the daemon did not name the capture file")?
        .to_string();
    let bytes = ctx
        .client
        .get_bytes(&format!("/api/packetCaptures/{}", seg(&file_name)))
        .await?;
    let target = output.unwrap_or_else(|| std::path::PathBuf::from(&file_name));
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&target)
            .with_context(|| format!("cannot write {}", target.display()))?;
        f.write_all(&bytes)
            .with_context(|| format!("cannot write {}", target.display()))?;
    }
    answer["savedTo"] = json!(target.display().to_string());
    Ok(answer)
}

/// `packet-capture start` flags.
#[derive(Args, Debug)]
pub struct CaptureStartArgs {
    /// Gateway name; defaults to the daemon's gateway.
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// Azure's filterData JSON.
    #[arg(long)]
    pub filter_data: Option<String>,
}

/// The gateway's name: the one given, or the daemon's only gateway.
pub async fn gateway_name(ctx: &Ctx, given: Option<String>) -> Result<String> {
    if let Some(name) = given {
        return Ok(name);
    }
    let list = ctx.client.get("/api/virtualNetworkGateways").await?;
    list["value"][0]["name"]
        .as_str()
        .map(str::to_string)
        .context("no vnet-gateway exists yet; create one with 'vgw vnet-gateway create --name NAME --public-ip-addresses IP'")
}

fn gw_path(name: &str) -> String {
    format!("/api/virtualNetworkGateways/{}", seg(name))
}

/// Applies the flags of `create`/`update` to a gateway document.
fn apply_flags(body: &mut Value, a: &GatewayArgs) -> Result<()> {
    if let Some(ips) = &a.public_ip_addresses {
        let configs: Vec<Value> = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| json!({"name": if i == 0 { "default" } else { "activeActive" }, "publicIpAddress": ip}))
            .collect();
        body["activeActive"] = json!(ips.len() == 2);
        body["ipConfigurations"] = json!(configs);
    }
    if let Some(space) = &a.vnet_address_space {
        body["addressSpace"] = json!({"addressPrefixes": space});
    }
    if let Some(routes) = &a.custom_routes {
        body["customRoutes"] = json!({"addressPrefixes": routes});
    }
    if let Some(sku) = &a.sku {
        body["sku"] = json!({"name": sku});
    }
    set(body, "vpnType", a.vpn_type.clone());
    if a.asn.is_some()
        || a.bgp_peering_address.is_some()
        || a.peer_weight.is_some()
        || a.bgp_tuning.is_set()
    {
        if !body["bgpSettings"].is_object() {
            body["bgpSettings"] = json!({"asn": 65515});
        }
        let bgp = &mut body["bgpSettings"];
        set(bgp, "asn", a.asn);
        set(bgp, "bgpPeeringAddress", a.bgp_peering_address.clone());
        set(bgp, "peerWeight", a.peer_weight);
        a.bgp_tuning.apply(bgp);
        if a.enable_bgp.is_none() {
            body["enableBgp"] = json!(true);
        }
    }
    set(body, "enableBgp", a.enable_bgp);
    if a.address_prefixes.is_some()
        || a.client_protocol.is_some()
        || a.vpn_client_dns_servers.is_some()
        || a.wireguard_peers.is_some()
        || a.wireguard_peer_public_keys.is_some()
    {
        if !body["vpnClientConfiguration"].is_object() {
            body["vpnClientConfiguration"] =
                json!({"vpnClientProtocols": ["IkeV2"], "vpnAuthenticationTypes": ["Certificate"]});
        }
        let p2s = &mut body["vpnClientConfiguration"];
        if let Some(pool) = &a.address_prefixes {
            p2s["vpnClientAddressPool"] = json!({"addressPrefixes": pool});
        }
        set(p2s, "vpnClientProtocols", a.client_protocol.clone());
        set(p2s, "dnsServers", a.vpn_client_dns_servers.clone());
        set(p2s, "wireGuardPeers", a.wireguard_peers.clone());
        if let Some(keys) = &a.wireguard_peer_public_keys {
            let mut map = serde_json::Map::new();
            for entry in keys.iter().filter(|e| !e.is_empty()) {
                let Some((name, key)) = entry.split_once('=') else {
                    bail!(
                        "--wireguard-peer-public-keys: '{entry}' is not NAME=KEY (the peer's name, '=', its `wg pubkey` output)"
                    );
                };
                map.insert(name.to_string(), json!(key));
            }
            p2s["wireGuardPeerPublicKeys"] = Value::Object(map);
        }
    }
    Ok(())
}

/// Runs a `vnet-gateway` command.
pub async fn run(ctx: &Ctx, cmd: GatewayCommand) -> Result<()> {
    match cmd {
        GatewayCommand::Create(a) => {
            let Some(name) = a.name.clone() else {
                bail!("the following arguments are required: --name/-n")
            };
            let mut body = json!({"name": name});
            apply_flags(&mut body, &a)?;
            a.generic.apply(&mut body)?;
            // If-None-Match semantics: create must not silently replace an existing gateway.
            let exists = ctx.client.get("/api/virtualNetworkGateways").await?;
            if let Some(existing) = exists["value"][0]["name"].as_str() {
                bail!(
                    "vnet-gateway '{existing}' already exists; change it with 'vgw vnet-gateway update'"
                );
            }
            let out = ctx.client.put(&gw_path(&name), &body, None).await?;
            if !a.no_wait {
                ctx.print(&out)?;
            }
        }
        GatewayCommand::Wait(a) => {
            let name = match a.name {
                Some(n) => n,
                None if a.wait.deleted => match gateway_name(ctx, None).await {
                    Ok(n) => n,
                    Err(_) => return Ok(()),
                },
                None => gateway_name(ctx, None).await?,
            };
            super::wait(
                ctx,
                &gw_path(&name),
                &format!("vnet-gateway '{name}'"),
                &a.wait,
            )
            .await?;
        }
        GatewayCommand::List => {
            ctx.print(&ctx.client.get("/api/virtualNetworkGateways").await?["value"])?;
        }
        GatewayCommand::Show(a) => {
            let name = gateway_name(ctx, a.name).await?;
            ctx.print(&ctx.client.get(&gw_path(&name)).await?)?;
        }
        GatewayCommand::Update(a) => {
            let name = gateway_name(ctx, a.name.clone()).await?;
            let mut body = ctx.client.get(&gw_path(&name)).await?;
            let etag = body["etag"].as_str().map(str::to_string);
            apply_flags(&mut body, &a)?;
            a.generic.apply(&mut body)?;
            let out = ctx
                .client
                .put(&gw_path(&name), &body, etag.as_deref())
                .await?;
            if !a.no_wait {
                ctx.print(&out)?;
            }
        }
        GatewayCommand::Delete(a) => {
            let name = gateway_name(ctx, a.name).await?;
            ctx.client.delete(&gw_path(&name)).await?;
        }
        GatewayCommand::Reset(a) => {
            let name = gateway_name(ctx, a.name).await?;
            let mut path = format!("{}/reset", gw_path(&name));
            if let Some(vip) = &a.gateway_vip {
                path.push_str(&format!("?gatewayVip={}", seg(vip)));
            }
            if a.skip_evidence {
                path.push(if path.contains('?') { '&' } else { '?' });
                path.push_str(super::evidence::reset_query(true));
            }
            let out = ctx.client.post(&path, None).await?;
            if !a.no_wait {
                ctx.print(&out)?;
            }
        }
        GatewayCommand::CollectEvidence(a) => super::evidence::collect(ctx, a).await?,
        GatewayCommand::FailoverDrill(a) => {
            let name = gateway_name(ctx, a.name).await?;
            let mut path = format!(
                "{}/failoverDrill?connection={}&durationSeconds={}&probeAddress={}&intervalMilliseconds={}",
                gw_path(&name),
                seg(&a.connection),
                a.duration,
                seg(&a.probe_address),
                a.interval_ms
            );
            if let Some(s) = &a.source_address {
                path.push_str(&format!("&sourceAddress={}", seg(s)));
            }
            ctx.print(&ctx.client.post(&path, None).await?)?;
        }
        GatewayCommand::ListBgpPeerStatus(a) => {
            let name = gateway_name(ctx, a.name).await?;
            let mut path = format!("{}/getBgpPeerStatus", gw_path(&name));
            if let Some(peer) = &a.peer {
                path.push_str(&format!("?peer={}", seg(peer)));
            }
            ctx.print_table(&ctx.client.post(&path, None).await?, Table::BgpPeers)?;
        }
        GatewayCommand::ListLearnedRoutes(a) => {
            let name = gateway_name(ctx, a.name).await?;
            ctx.print_table(
                &ctx.client
                    .post(&format!("{}/getLearnedRoutes", gw_path(&name)), None)
                    .await?,
                Table::Routes,
            )?;
        }
        GatewayCommand::ListAdvertisedRoutes(a) => {
            let name = gateway_name(ctx, a.name).await?;
            let Some(peer) = a.peer else {
                bail!("the following arguments are required: --peer")
            };
            let path = format!("{}/getAdvertisedRoutes?peer={}", gw_path(&name), seg(&peer));
            ctx.print_table(&ctx.client.post(&path, None).await?, Table::Routes)?;
        }
        GatewayCommand::NatRule(cmd) => nat_rule(ctx, cmd).await?,
        GatewayCommand::RootCert(cmd) => root_cert(ctx, cmd).await?,
        GatewayCommand::RevokedCert(cmd) => revoked_cert(ctx, cmd).await?,
        GatewayCommand::DisconnectVpnConnections(a) => {
            let name = gateway_name(ctx, a.name).await?;
            let body = json!({ "vpnConnectionIds": a.vpn_connection_ids });
            ctx.print(
                &ctx.client
                    .post(
                        &format!(
                            "{}/disconnectVirtualNetworkGatewayVpnConnections",
                            gw_path(&name)
                        ),
                        Some(&body),
                    )
                    .await?,
            )?;
        }
        GatewayCommand::VpnClient(cmd) => {
            let (name, action, body) = match cmd {
                VpnClientCommand::Generate(a) => (
                    a.name,
                    "generatevpnclientpackage",
                    a.client.map(|c| json!({ "wireGuardPeer": c })),
                ),
                VpnClientCommand::ShowUrl(a) => (
                    a.name,
                    "getvpnclientpackageurl",
                    a.client.map(|c| json!({ "wireGuardPeer": c })),
                ),
                VpnClientCommand::RevokeUrl(a) => {
                    let body = match (a.url, a.client, a.all) {
                        (Some(u), _, _) => json!({ "url": u }),
                        (None, Some(c), _) => json!({ "wireGuardPeer": c }),
                        _ => json!({ "all": true }),
                    };
                    (a.name, "revokevpnclientpackageurls", Some(body))
                }
                VpnClientCommand::ShowHealth(a) => (a.name, "getVpnClientConnectionHealth", None),
            };
            let name = gateway_name(ctx, name).await?;
            ctx.print(
                &ctx.client
                    .post(&format!("{}/{action}", gw_path(&name)), body.as_ref())
                    .await?,
            )?;
        }
        GatewayCommand::PacketCapture(cmd) => {
            let (name, action, body) = match cmd {
                PacketCaptureCommand::Start(a) => {
                    let filter = a
                        .filter_data
                        .map(|f| {
                            serde_json::from_str::<Value>(&f)
                                .context("--filter-data is not valid JSON")
                        })
                        .transpose()?;
                    (
                        a.name,
                        "startPacketCapture",
                        Some(json!({"filterData": filter})),
                    )
                }
                PacketCaptureCommand::Stop(a) => {
                    let name = gateway_name(ctx, a.name).await?;
                    let answer = ctx
                        .client
                        .post(&format!("{}/stopPacketCapture", gw_path(&name)), None)
                        .await?;
                    ctx.print(&save_capture(ctx, answer, a.output_file).await?)?;
                    return Ok(());
                }
            };
            let name = gateway_name(ctx, name).await?;
            ctx.print(
                &ctx.client
                    .post(&format!("{}/{action}", gw_path(&name)), body.as_ref())
                    .await?,
            )?;
        }
    }
    Ok(())
}

async fn nat_rule(ctx: &Ctx, cmd: NatRuleCommand) -> Result<()> {
    match cmd {
        NatRuleCommand::Add(a) => {
            let gw = gateway_name(ctx, a.gateway_name).await?;
            let mapping = |list: &[String], range: &Option<String>| -> Vec<Value> {
                list.iter()
                    .map(|p| {
                        let mut m = json!({"addressSpace": p});
                        set(&mut m, "portRange", range.clone());
                        m
                    })
                    .collect()
            };
            let mut body = json!({
                "name": a.name,
                "type": a.rule_type,
                "mode": a.mode,
                "internalMappings": mapping(&a.internal_mappings, &a.internal_port_range),
                "externalMappings": mapping(&a.external_mappings, &a.external_port_range),
            });
            set(&mut body, "ipConfigurationId", a.ip_config_id);
            let out = ctx
                .client
                .put(
                    &format!("{}/natRules/{}", gw_path(&gw), seg(&a.name)),
                    &body,
                    None,
                )
                .await?;
            if !a.no_wait {
                ctx.print(&out)?;
            }
        }
        NatRuleCommand::List(a) => {
            let gw = gateway_name(ctx, a.gateway_name).await?;
            let out = ctx
                .client
                .get(&format!("{}/natRules", gw_path(&gw)))
                .await?;
            ctx.print(&out["value"])?;
        }
        NatRuleCommand::Remove(a) => {
            let gw = gateway_name(ctx, a.gateway_name).await?;
            ctx.client
                .delete(&format!("{}/natRules/{}", gw_path(&gw), seg(&a.name)))
                .await?;
        }
    }
    Ok(())
}

/// `--public-cert-data` takes the base64 itself or, as az allows, a path to the certificate file.
fn cert_data(arg: &str) -> Result<String> {
    let path = std::path::Path::new(arg);
    let text = if arg.len() < 4096 && path.is_file() {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {arg}"))?
    } else {
        arg.to_string()
    };
    Ok(text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .concat())
}

async fn root_cert(ctx: &Ctx, cmd: RootCertCommand) -> Result<()> {
    match cmd {
        RootCertCommand::Create(a) => {
            let gw = gateway_name(ctx, a.gateway_name).await?;
            let body = json!({"name": a.name, "publicCertData": cert_data(&a.public_cert_data)?});
            let path = format!(
                "{}/vpnClientRootCertificates/{}",
                gw_path(&gw),
                seg(&a.name)
            );
            let out = ctx.client.put(&path, &body, None).await?;
            if !a.no_wait {
                ctx.print(&out)?;
            }
        }
        RootCertCommand::Delete(a) => {
            let gw = gateway_name(ctx, a.gateway_name).await?;
            ctx.client
                .delete(&format!(
                    "{}/vpnClientRootCertificates/{}",
                    gw_path(&gw),
                    seg(&a.name)
                ))
                .await?;
        }
    }
    Ok(())
}

async fn revoked_cert(ctx: &Ctx, cmd: RevokedCertCommand) -> Result<()> {
    match cmd {
        RevokedCertCommand::Create(a) => {
            let gw = gateway_name(ctx, a.gateway_name).await?;
            let body = json!({"name": a.name, "thumbprint": a.thumbprint});
            let path = format!(
                "{}/vpnClientRevokedCertificates/{}",
                gw_path(&gw),
                seg(&a.name)
            );
            let out = ctx.client.put(&path, &body, None).await?;
            if !a.no_wait {
                ctx.print(&out)?;
            }
        }
        RevokedCertCommand::Delete(a) => {
            let gw = gateway_name(ctx, a.gateway_name).await?;
            ctx.client
                .delete(&format!(
                    "{}/vpnClientRevokedCertificates/{}",
                    gw_path(&gw),
                    seg(&a.name)
                ))
                .await?;
        }
    }
    Ok(())
}
