//! `vgw`: the daemon (`vgw serve`) and an az-style CLI for it, in one binary.
//!
//! The CLI mirrors `az network vnet-gateway|local-gateway|vpn-connection`: the same subcommands, flag
//! names, output formats and `--query`. It only talks to the daemon's API; it never opens the store.

mod client;
mod commands;
mod netns;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::client::{ApiFailure, Client, Endpoint};
use crate::output::Format;

/// vgw: a self-hosted VPN gateway. Site-to-site IKEv2/IPsec, point-to-site, BGP, with Azure VPN Gateway's
/// resources and an az-style CLI.
#[derive(Parser, Debug)]
#[command(name = "vgw", version, propagate_version = true, max_term_width = 110)]
pub struct Cli {
    /// The daemon's API socket.
    #[arg(
        long,
        global = true,
        env = "VGW_API_SOCKET",
        default_value = "/run/vgw/api.sock"
    )]
    pub api_socket: PathBuf,
    /// Use the daemon's TCP API instead of the socket, e.g. http://127.0.0.1:8080 (needs --api-token-file).
    #[arg(long, global = true, env = "VGW_API_URL")]
    pub api_url: Option<String>,
    /// File holding the bearer token of the TCP API (read by `serve --api-listen` and by the CLI).
    #[arg(long, global = true, env = "VGW_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum)]
    pub output: Option<Format>,
    /// JMESPath query applied to the output, as in az.
    #[arg(long, global = true)]
    pub query: Option<String>,
    /// The resource group, as az; it must be the daemon's (`vgw serve --resource-group`, default
    /// `vgw`), else the command fails with ResourceGroupNotFound (exit 3).
    #[arg(short = 'g', long, global = true)]
    pub resource_group: Option<String>,
    /// The subscription, as az; it must be the daemon's (`vgw serve --subscription-id`).
    #[arg(long, global = true)]
    pub subscription: Option<String>,
    /// One resource id (ARM form, or vgw's older `/vgw/...`) instead of --name, -g and --subscription.
    #[arg(long, global = true)]
    pub ids: Option<String>,
    /// Print errors only (az); vgw's commands print no warnings on success anyway.
    #[arg(long, global = true)]
    pub only_show_errors: bool,
    /// Also print how long the command took, on standard error (az).
    #[arg(long, global = true)]
    pub verbose: bool,
    /// Print every API request and response on standard error, secrets masked (az).
    #[arg(long, global = true)]
    pub debug: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon.
    Serve(commands::serve::ServeArgs),
    /// Build two gateways in network namespaces, bring up a tunnel, show it, clean up (root).
    Demo(commands::demo::DemoArgs),
    /// Manage the VPN gateway (az network vnet-gateway).
    #[command(name = "vnet-gateway", subcommand)]
    VnetGateway(commands::gateway::GatewayCommand),
    /// Manage local gateways: the remote sites (az network local-gateway).
    #[command(name = "local-gateway", subcommand)]
    LocalGateway(commands::local_gateway::LocalGatewayCommand),
    /// Manage connections (az network vpn-connection).
    #[command(name = "vpn-connection", subcommand)]
    VpnConnection(commands::connection::ConnectionCommand),
    /// Print the whole desired state as one YAML document.
    Export(commands::state::ExportArgs),
    /// Make the desired state match a document, printing the diff.
    Apply(commands::state::ApplyArgs),
    /// Read the diagnostic logs (Azure's five categories).
    Logs(commands::logs::LogsArgs),
    /// Check the host and (with --connection) walk through one tunnel; exit 1 when something is wrong.
    Doctor(commands::doctor::DoctorArgs),
    /// The activity log (az monitor activity-log).
    #[command(subcommand)]
    Monitor(commands::monitor::MonitorCommand),
    /// Built-in PKI for point-to-site: root CA, client and server certificates, client profiles
    /// (offline).
    #[command(subcommand)]
    Pki(commands::pki::PkiCommand),
}

/// What every command needs: the client and the output settings.
pub struct Ctx {
    /// API client.
    pub client: Client,
    /// `-o`, if given.
    pub output: Option<Format>,
    /// `--query`.
    pub query: Option<String>,
}

impl Ctx {
    /// Prints `value` with the chosen format (JSON by default, as az).
    pub fn print(&self, value: &serde_json::Value) -> Result<()> {
        self.print_table(value, output::Table::Auto)
    }

    /// Prints `value`, with az's table transformer `table` for `-o table`.
    pub fn print_table(&self, value: &serde_json::Value, table: output::Table) -> Result<()> {
        output::print_table(
            value,
            self.output.unwrap_or(Format::Json),
            self.query.as_deref(),
            table,
        )
    }
}

/// Checks `-g`/`--subscription` against the daemon's scope, failing as az does when they differ.
async fn check_scope(client: &Client, cli: &Cli) -> Result<()> {
    if cli.resource_group.is_none() && cli.subscription.is_none() {
        return Ok(());
    }
    let scope = client.get("/api/scope").await?;
    let (sub, rg) = (
        scope["subscriptionId"].as_str().unwrap_or_default(),
        scope["resourceGroup"].as_str().unwrap_or_default(),
    );
    if let Some(given) = cli
        .subscription
        .as_ref()
        .filter(|g| !g.eq_ignore_ascii_case(sub))
    {
        return Err(anyhow::anyhow!(ApiFailure {
            status: 404,
            code: "SubscriptionNotFound".into(),
            message: format!(
                "The subscription '{given}' could not be found. This vgw daemon's subscription is '{sub}' (vgw serve --subscription-id)."
            ),
            target: Some("--subscription".into()),
        }));
    }
    // Azure's resource group names are case-insensitive.
    if let Some(given) = cli
        .resource_group
        .as_ref()
        .filter(|g| !g.eq_ignore_ascii_case(rg))
    {
        return Err(anyhow::anyhow!(ApiFailure {
            status: 404,
            code: "ResourceGroupNotFound".into(),
            message: format!(
                "Resource group '{given}' could not be found. This vgw daemon's resources are in resource group '{rg}' (vgw serve --resource-group)."
            ),
            target: Some("--resource-group".into()),
        }));
    }
    Ok(())
}

/// Replaces `--ids ID` by the flags it stands for (`--subscription`, `-g`, and `--name`, or
/// `--gateway-name`/`--connection-name` and `--name` for a child resource), as az resolves it.
fn expand_ids(args: Vec<std::ffi::OsString>) -> Result<Vec<std::ffi::OsString>> {
    let Some(pos) = args.iter().position(|a| a == "--ids") else {
        return Ok(args);
    };
    let values: Vec<String> = args[pos + 1..]
        .iter()
        .take_while(|a| !a.to_string_lossy().starts_with('-'))
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if values.len() != 1 {
        anyhow::bail!(
            "--ids: give exactly one resource id (got {}); a vgw daemon's commands act on one resource at a time",
            values.len()
        );
    }
    let id = &values[0];
    let segs: Vec<&str> = id.trim_matches('/').split('/').collect();
    let mut flags: Vec<String> = Vec::new();
    let rest: &[&str] = if segs.len() >= 8
        && segs[0].eq_ignore_ascii_case("subscriptions")
        && segs[2].eq_ignore_ascii_case("resourceGroups")
        && segs[4].eq_ignore_ascii_case("providers")
    {
        flags.extend(["--subscription".into(), segs[1].to_string()]);
        flags.extend(["--resource-group".into(), segs[3].to_string()]);
        &segs[6..]
    } else if segs.len() >= 3 && segs[0] == "vgw" {
        &segs[1..]
    } else {
        anyhow::bail!(
            "--ids: '{id}' is not a resource id; expected /subscriptions/SUB/resourceGroups/RG/providers/Microsoft.Network/COLLECTION/NAME"
        );
    };
    let is_connection_child = args
        .iter()
        .any(|a| a == "ipsec-policy" || a == "shared-key");
    match rest {
        [_, name] if is_connection_child => {
            flags.extend(["--connection-name".into(), name.to_string()])
        }
        [_, name] => flags.extend(["--name".into(), name.to_string()]),
        [_, parent, _, child] => {
            flags.extend(["--gateway-name".into(), parent.to_string()]);
            flags.extend(["--name".into(), child.to_string()]);
        }
        _ => anyhow::bail!("--ids: '{id}' does not end in COLLECTION/NAME"),
    }
    let mut out: Vec<std::ffi::OsString> = args[..pos].to_vec();
    out.extend(flags.into_iter().map(Into::into));
    out.extend(args[pos + 2..].iter().cloned());
    Ok(out)
}

/// Whether an error is a closed standard output (`vgw export | head -1`), which is not a failure.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn endpoint(cli: &Cli) -> Result<Endpoint> {
    match &cli.api_url {
        None => Ok(Endpoint::Unix(cli.api_socket.clone())),
        Some(url) => {
            let authority = url
                .strip_prefix("http://")
                .ok_or_else(|| anyhow::anyhow!("--api-url must start with http:// (got '{url}')"))?
                .trim_end_matches('/')
                .to_string();
            let file = cli.api_token_file.as_ref().ok_or_else(|| {
                anyhow::anyhow!("--api-url needs --api-token-file (or VGW_API_TOKEN_FILE)")
            })?;
            let token = std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("cannot read token file {}: {e}", file.display()))?
                .trim()
                .to_string();
            Ok(Endpoint::Tcp { authority, token })
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    if let Command::Serve(args) = &cli.command {
        return commands::serve::run(args, &cli.api_socket, cli.api_token_file.as_deref()).await;
    }
    if let Command::Demo(args) = cli.command {
        return commands::demo::run_demo(args).await;
    }
    if let Command::Pki(cmd) = cli.command {
        return commands::pki::run(cmd, cli.output, cli.query.as_deref());
    }
    let ctx = Ctx {
        client: Client::new(endpoint(&cli)?).with_debug(cli.debug),
        output: cli.output,
        query: cli.query.clone(),
    };
    check_scope(&ctx.client, &cli).await?;
    match cli.command {
        Command::Serve(_) | Command::Demo(_) | Command::Pki(_) => unreachable!("handled above"),
        Command::VnetGateway(cmd) => commands::gateway::run(&ctx, cmd).await,
        Command::LocalGateway(cmd) => commands::local_gateway::run(&ctx, cmd).await,
        Command::VpnConnection(cmd) => commands::connection::run(&ctx, cmd).await,
        Command::Export(args) => commands::state::export(&ctx, args).await,
        Command::Apply(args) => commands::state::apply(&ctx, args).await,
        Command::Logs(args) => commands::logs::run(&ctx, args).await,
        Command::Doctor(args) => commands::doctor::run(&ctx, args).await,
        Command::Monitor(cmd) => commands::monitor::run(&ctx, cmd).await,
    }
}

fn main() -> ExitCode {
    // A `println!` into a closed pipe (`vgw logs | head`) panics; that is the reader going away, not a
    // failure: exit 0 without a panic message.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if text.contains("Broken pipe") {
            std::process::exit(0);
        }
        default_hook(info);
    }));
    let args = match expand_ids(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ERROR: {e:#}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
    let started = std::time::Instant::now();
    let verbose = cli.verbose || cli.debug;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ERROR: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    if verbose {
        eprintln!(
            "Command ran in {:.3} seconds",
            started.elapsed().as_secs_f64()
        );
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(api) = e.downcast_ref::<ApiFailure>() {
                eprintln!("ERROR: {api}");
                // az exits 3 when the resource does not exist.
                return if api.status == 404 {
                    ExitCode::from(3)
                } else {
                    ExitCode::FAILURE
                };
            }
            eprintln!("ERROR: {e:#}");
            ExitCode::FAILURE
        }
    }
}
