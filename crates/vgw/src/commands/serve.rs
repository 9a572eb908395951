//! `vgw serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use vgw_control::server::{ServeConfig, serve};

/// `vgw serve` flags. The API socket and token file are the global `--api-socket` and `--api-token-file`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Directory holding the desired-state database.
    #[arg(long, default_value = "/var/lib/vgw")]
    pub state_dir: PathBuf,
    /// Also serve the API on this TCP address (requires --api-token-file).
    #[arg(long)]
    pub api_listen: Option<SocketAddr>,
    /// Run the data plane and tunnels (`off` serves only the API, for testing or a config-only host).
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    pub dataplane: String,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default; no authentication, so use loopback).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// HTTPS port for the point-to-site profile download (`vpn-client generate` URLs); 0 turns it off.
    #[arg(long, default_value_t = 8443)]
    pub p2s_download_port: u16,
    /// Profile download: seconds allowed for the TLS handshake, and again for the request headers.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub p2s_download_timeout: u64,
    /// Profile download: seconds a whole connection may last (one request per connection).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub p2s_download_request_timeout: u64,
    /// Profile download: connections open at once; beyond it new ones are closed at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub p2s_download_max_connections: u64,
    /// Profile download: connections open at once from one source address.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub p2s_download_max_per_source: u64,
    /// Name of the TUN device that carries the tunnels' inner packets.
    #[arg(long, default_value = "vgw0")]
    pub tun_name: String,
    /// TCP MSS clamp applied to SYNs through the tunnels (Azure recommends 1350).
    #[arg(long, default_value_t = 1350)]
    pub tcp_mss_clamp: u16,
    /// Active-active: which gateway instance this daemon is (0 or 1); it serves `ipConfigurations[N]`
    /// and the N-th address of `bgpSettings.bgpPeeringAddress`.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub instance: u8,
    /// Active-active: the other instance's TCP API (its `--api-listen`, on the LAN between the two);
    /// tunnels of both appear in `tunnelConnectionStatus` and each backs up the other's routes.
    #[arg(long)]
    pub peer_instance: Option<SocketAddr>,
    /// Active-active: pull the desired state from `--peer-instance` (this instance is the replica;
    /// writes go to the other one).
    #[arg(long)]
    pub replicate: bool,
    /// Most local network gateways, and most connections, the configuration may hold; a write that
    /// would exceed it is refused (409 ResourceCountLimitExceeded).
    #[arg(long, default_value_t = vgw_control::controller::DEFAULT_MAX_RESOURCES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_resources: usize,
    /// Days the activity log (`vgw monitor activity-log list`) keeps its entries.
    #[arg(long, default_value_t = vgw_control::activity::DEFAULT_RETENTION_DAYS, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub activity_log_retention_days: u32,
    /// The subscription id shown in every resource id (`/subscriptions/{id}/...`); `-g`/`--subscription`
    /// of the CLI must name it.
    #[arg(long, env = "VGW_SUBSCRIPTION_ID", default_value = vgw_control::model::DEFAULT_SUBSCRIPTION_ID)]
    pub subscription_id: String,
    /// The resource group every resource of this daemon lives in; a CLI command naming another one fails
    /// with ResourceGroupNotFound, as az does.
    #[arg(long, env = "VGW_RESOURCE_GROUP", default_value = vgw_control::model::DEFAULT_RESOURCE_GROUP)]
    pub resource_group: String,
    /// The `location` every resource shows (display only, as a label; vgw runs where it is started).
    #[arg(long, env = "VGW_LOCATION", default_value = vgw_control::model::DEFAULT_LOCATION)]
    pub location: String,
    /// Log filter (tracing's env-filter syntax), also RUST_LOG.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(args: &ServeArgs, api_socket: &Path, api_token_file: Option<&Path>) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log_level)
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    check_scope_part("--subscription-id", &args.subscription_id)?;
    check_scope_part("--resource-group", &args.resource_group)?;
    check_scope_part("--location", &args.location)?;
    vgw_control::model::set_resource_scope(vgw_control::model::ResourceScope {
        subscription_id: args.subscription_id.clone(),
        resource_group: args.resource_group.clone(),
        location: args.location.clone(),
    });
    serve(ServeConfig {
        state_dir: args.state_dir.clone(),
        api_socket: api_socket.to_path_buf(),
        api_listen: args.api_listen,
        api_token_file: api_token_file.map(Path::to_path_buf),
        metrics_listen: args.metrics_listen,
        p2s_download_port: args.p2s_download_port,
        p2s_download_limits: vgw_control::api::p2s_download::DownloadLimits {
            handshake_timeout: std::time::Duration::from_secs(args.p2s_download_timeout),
            connection_timeout: std::time::Duration::from_secs(args.p2s_download_request_timeout),
            max_connections: args.p2s_download_max_connections as usize,
            max_per_source: args.p2s_download_max_per_source as usize,
        },
        instance: usize::from(args.instance),
        max_resources: args.max_resources,
        peer_instance: args.peer_instance,
        replicate: args.replicate,
        activity_log_retention_days: args.activity_log_retention_days,
        dataplane: (args.dataplane == "on").then(|| vgw_dataplane::DataPlaneConfig {
            tun_name: args.tun_name.clone(),
            mss_clamp: args.tcp_mss_clamp,
            ..Default::default()
        }),
    })
    .await
    .map_err(|e| anyhow::anyhow!(e))
}

/// A subscription id or resource group goes into every resource id, so it must be one path segment
/// of Azure's characters (letters, digits, `-`, `_`, `.`, `(`, `)`; at most 90).
fn check_scope_part(flag: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 90
        && !value.ends_with('.')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'));
    if !ok {
        anyhow::bail!(
            "{flag} '{value}' is not valid: use 1-90 letters, digits, '-', '_', '.', '(' or ')', not ending in '.'"
        );
    }
    Ok(())
}
