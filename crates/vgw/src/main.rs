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
        output::print(
            value,
            self.output.unwrap_or(Format::Json),
            self.query.as_deref(),
        )
    }
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
        client: Client::new(endpoint(&cli)?),
        output: cli.output,
        query: cli.query.clone(),
    };
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
    let cli = Cli::parse();
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
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
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
