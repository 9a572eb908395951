//! `vgw logs [--category C] [--connection N] [--since 10m] [--follow]`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use clap::Args;
use serde_json::Value;

use super::seg;
use crate::Ctx;

/// `logs` flags.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// GatewayDiagnosticLog, TunnelDiagnosticLog, RouteDiagnosticLog, IKEDiagnosticLog or P2SDiagnosticLog.
    #[arg(long)]
    pub category: Option<String>,
    /// Only records about this connection.
    #[arg(long)]
    pub connection: Option<String>,
    /// Only records newer than this: 30s, 10m, 2h, 1d.
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many records (the newest).
    #[arg(long, default_value_t = 1000)]
    pub limit: u32,
    /// Keep printing new records as they arrive.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

/// Parses `30s`, `10m`, `2h`, `1d` (a bare number is seconds).
fn parse_duration(text: &str) -> Result<Duration> {
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits
        .parse()
        .map_err(|_| anyhow::anyhow!("--since '{text}': expected a number and a unit, e.g. 10m"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        other => bail!("--since '{text}': unknown unit '{other}'; use s, m, h or d"),
    };
    Ok(Duration::from_secs(secs))
}

fn print_records(ctx: &Ctx, records: &[Value]) -> Result<()> {
    if ctx.output.is_some() || ctx.query.is_some() {
        return ctx.print(&Value::Array(records.to_vec()));
    }
    for r in records {
        let props = match &r["properties"] {
            Value::Null => String::new(),
            p => format!(" {p}"),
        };
        println!(
            "{} {:<22} {:<7} {} {}{}",
            r["time"].as_str().unwrap_or(""),
            r["category"].as_str().unwrap_or(""),
            r["level"].as_str().unwrap_or(""),
            r["resource"].as_str().unwrap_or(""),
            r["message"].as_str().unwrap_or(""),
            props
        );
    }
    Ok(())
}

/// Prints matching records, and with `--follow` keeps polling for new ones.
pub async fn run(ctx: &Ctx, args: LogsArgs) -> Result<()> {
    let mut query = vec![format!("limit={}", args.limit)];
    if let Some(c) = &args.category {
        query.push(format!("category={}", seg(c)));
    }
    if let Some(c) = &args.connection {
        query.push(format!("connection={}", seg(c)));
    }
    if let Some(s) = &args.since {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
        query.push(format!(
            "sinceMs={}",
            now.saturating_sub(parse_duration(s)?.as_millis() as u64)
        ));
    }
    let base = query.join("&");
    let mut last_seq = 0u64;
    let mut first = true;
    loop {
        let path = if first {
            format!("/api/logs?{base}")
        } else {
            format!("/api/logs?{base}&afterSeq={last_seq}")
        };
        let records = ctx.client.get(&path).await?["value"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(seq) = records.last().and_then(|r| r["seq"].as_u64()) {
            last_seq = seq;
        }
        print_records(ctx, &records)?;
        if !args.follow {
            return Ok(());
        }
        first = false;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("m").is_err());
    }
}
