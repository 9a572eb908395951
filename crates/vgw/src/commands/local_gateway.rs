//! `vgw local-gateway ...` (az network local-gateway).

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::{seg, set};
use crate::Ctx;

/// `local-gateway` subcommands.
#[derive(Subcommand, Debug)]
pub enum LocalGatewayCommand {
    /// Create a local gateway (a remote site).
    Create(LocalGatewayArgs),
    /// Show one.
    Show(Name),
    /// List them.
    List,
    /// Change one; only the flags given change.
    Update(LocalGatewayArgs),
    /// Delete one (no connection may use it).
    Delete(NameNoWait),
}

/// `--name`.
#[derive(Args, Debug)]
pub struct Name {
    /// Local gateway name.
    #[arg(short = 'n', long)]
    pub name: String,
}

/// `--name --no-wait`.
#[derive(Args, Debug)]
pub struct NameNoWait {
    /// Local gateway name.
    #[arg(short = 'n', long)]
    pub name: String,
    /// Do not print the result.
    #[arg(long)]
    pub no_wait: bool,
}

/// `create`/`update` flags, as az.
#[derive(Args, Debug)]
pub struct LocalGatewayArgs {
    /// Local gateway name.
    #[arg(short = 'n', long)]
    pub name: String,
    /// The site device's public address.
    #[arg(long, conflicts_with = "fqdn")]
    pub gateway_ip_address: Option<String>,
    /// The site device's DNS name.
    #[arg(long)]
    pub fqdn: Option<String>,
    /// The site's prefixes.
    #[arg(long, num_args = 1..)]
    pub local_address_prefixes: Option<Vec<String>>,
    /// The site's BGP ASN.
    #[arg(long)]
    pub asn: Option<u64>,
    /// The site's BGP peering address.
    #[arg(long)]
    pub bgp_peering_address: Option<String>,
    /// Weight added to routes learned from this site.
    #[arg(long)]
    pub peer_weight: Option<u32>,
    /// vgw's BGP timers and prefix limit.
    #[command(flatten)]
    pub bgp_tuning: super::BgpTuning,
    /// az's --set/--add/--remove/--force-string.
    #[command(flatten)]
    pub generic: super::GenericUpdate,
    /// Do not print the result.
    #[arg(long)]
    pub no_wait: bool,
}

fn path(name: &str) -> String {
    format!("/api/localNetworkGateways/{}", seg(name))
}

fn apply_flags(body: &mut Value, a: &LocalGatewayArgs) {
    if let Some(ip) = &a.gateway_ip_address {
        body["gatewayIpAddress"] = json!(ip);
        if let Some(map) = body.as_object_mut() {
            map.shift_remove("fqdn");
        }
    }
    if let Some(fqdn) = &a.fqdn {
        body["fqdn"] = json!(fqdn);
        if let Some(map) = body.as_object_mut() {
            map.shift_remove("gatewayIpAddress");
        }
    }
    if let Some(p) = &a.local_address_prefixes {
        body["localNetworkAddressSpace"] = json!({"addressPrefixes": p});
    }
    if a.asn.is_some()
        || a.bgp_peering_address.is_some()
        || a.peer_weight.is_some()
        || a.bgp_tuning.is_set()
    {
        if !body["bgpSettings"].is_object() {
            body["bgpSettings"] = json!({});
        }
        let bgp = &mut body["bgpSettings"];
        set(bgp, "asn", a.asn);
        set(bgp, "bgpPeeringAddress", a.bgp_peering_address.clone());
        set(bgp, "peerWeight", a.peer_weight);
        a.bgp_tuning.apply(bgp);
    }
}

/// Runs a `local-gateway` command.
pub async fn run(ctx: &Ctx, cmd: LocalGatewayCommand) -> Result<()> {
    match cmd {
        LocalGatewayCommand::Create(a) => {
            let mut body = json!({"name": a.name});
            apply_flags(&mut body, &a);
            a.generic.apply(&mut body)?;
            if ctx
                .client
                .call(hyper::Method::GET, &path(&a.name), None, None)
                .await
                .is_ok()
            {
                bail!(
                    "local-gateway '{}' already exists; change it with 'vgw local-gateway update'",
                    a.name
                );
            }
            let out = ctx.client.put(&path(&a.name), &body, None).await?;
            if !a.no_wait {
                ctx.print(&out)?;
            }
        }
        LocalGatewayCommand::Show(a) => ctx.print(&ctx.client.get(&path(&a.name)).await?)?,
        LocalGatewayCommand::List => ctx.print_table(
            &ctx.client.get("/api/localNetworkGateways").await?["value"],
            crate::output::Table::LocalGateways,
        )?,
        LocalGatewayCommand::Update(a) => {
            let mut body = ctx.client.get(&path(&a.name)).await?;
            let etag = body["etag"].as_str().map(str::to_string);
            apply_flags(&mut body, &a);
            a.generic.apply(&mut body)?;
            let out = ctx
                .client
                .put(&path(&a.name), &body, etag.as_deref())
                .await?;
            if !a.no_wait {
                ctx.print(&out)?;
            }
        }
        LocalGatewayCommand::Delete(a) => ctx.client.delete(&path(&a.name)).await?,
    }
    Ok(())
}
