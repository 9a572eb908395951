//! `vgw monitor activity-log list` (after `az monitor activity-log list`): who wrote what, and which
//! actions ran, with their result and correlation id.

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::Ctx;

/// `vgw monitor` command groups.
#[derive(Subcommand, Debug)]
pub enum MonitorCommand {
    /// The gateway's activity log: every write and action on the API.
    #[command(name = "activity-log", subcommand)]
    ActivityLog(ActivityLogCommand),
}

/// `vgw monitor activity-log` commands.
#[derive(Subcommand, Debug)]
pub enum ActivityLogCommand {
    /// List entries, newest first (default: the last 6 hours, as az).
    List(ListArgs),
}

/// `activity-log list` flags (az's names).
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Start of the window, UTC (2026-12-02T20:00:00Z).
    #[arg(long)]
    pub start_time: Option<String>,
    /// End of the window, UTC (default: now).
    #[arg(long)]
    pub end_time: Option<String>,
    /// The window before --end-time: 1h, 30m, 2d, 1d2h (a bare number is hours).
    #[arg(long)]
    pub offset: Option<String>,
    /// Only this caller: a user name, uid:N, or api-token (the TCP listener's token).
    #[arg(long)]
    pub caller: Option<String>,
    /// Only Succeeded or Failed operations.
    #[arg(long, value_parser = ["Succeeded", "Failed"])]
    pub status: Option<String>,
    /// At most this many entries.
    #[arg(long, default_value_t = 1000)]
    pub max_events: u32,
}

/// Runs a `monitor` command.
pub async fn run(ctx: &Ctx, cmd: MonitorCommand) -> Result<()> {
    let MonitorCommand::ActivityLog(ActivityLogCommand::List(a)) = cmd;
    let mut query = vec![format!("maxEvents={}", a.max_events)];
    for (key, value) in [
        ("startTime", &a.start_time),
        ("endTime", &a.end_time),
        ("offset", &a.offset),
        ("caller", &a.caller),
        ("status", &a.status),
    ] {
        if let Some(v) = value {
            query.push(format!("{key}={}", encode(v)));
        }
    }
    let answer = ctx
        .client
        .get(&format!("/api/activityLog?{}", query.join("&")))
        .await?;
    ctx.print(answer.get("value").unwrap_or(&Value::Null))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
