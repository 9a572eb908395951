//! `vgw vnet-gateway collect-evidence` and the `--skip-evidence` flag of the resets: the daemon builds
//! an evidence archive (tar.gz with a manifest of SHA-256 hashes) in its state directory; `--output-file`
//! downloads it to this machine.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;

use super::seg;
use crate::Ctx;

/// `vnet-gateway collect-evidence` flags.
#[derive(Args, Debug)]
pub struct CollectArgs {
    /// Gateway name; defaults to the daemon's gateway.
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// Only this connection's diagnostics (default: every connection).
    #[arg(long)]
    pub connection: Option<String>,
    /// Minutes of diagnostic logs to include (1-10080).
    #[arg(long, default_value_t = 30)]
    pub log_minutes: u64,
    /// Include a packet capture of this many seconds (0-60; of --connection, or of the whole gateway).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60))]
    pub capture_seconds: u64,
    /// Also download the archive to this file; it stays in the daemon's STATE_DIR/evidence/ too.
    #[arg(long)]
    pub output_file: Option<PathBuf>,
}

/// `vpn-connection reset` flags.
#[derive(Args, Debug)]
pub struct ConnectionResetArgs {
    /// Connection name.
    #[arg(short = 'n', long)]
    pub name: String,
    /// Do not print the result.
    #[arg(long)]
    pub no_wait: bool,
    /// Reset without taking the evidence snapshot first (when the snapshot itself would hang).
    #[arg(long)]
    pub skip_evidence: bool,
}

/// The query suffix of a reset.
pub fn reset_query(skip_evidence: bool) -> &'static str {
    if skip_evidence {
        "skipEvidence=true"
    } else {
        ""
    }
}

/// Runs `collect-evidence`.
pub async fn collect(ctx: &Ctx, a: CollectArgs) -> Result<()> {
    let gw = super::gateway::gateway_name(ctx, a.name).await?;
    let mut path = format!(
        "/api/virtualNetworkGateways/{}/collectEvidence?logMinutes={}&captureSeconds={}",
        seg(&gw),
        a.log_minutes,
        a.capture_seconds
    );
    if let Some(c) = &a.connection {
        path.push_str(&format!("&connection={}", seg(c)));
    }
    let mut out = ctx.client.post(&path, None).await?;
    if let Some(file) = &a.output_file {
        let name = out["manifest"]["archive"]
            .as_str()
            .context("the daemon's answer names no archive")?
            .to_string();
        let bytes = ctx
            .client
            .get_bytes(&format!("/api/evidence/{}", seg(&name)))
            .await?;
        std::fs::write(file, &bytes).with_context(|| format!("cannot write {}", file.display()))?;
        out["outputFile"] = json!(file.display().to_string());
    }
    ctx.print(&out)
}
