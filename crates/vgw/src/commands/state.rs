//! `vgw export` and `vgw apply -f FILE [--what-if]`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::Value;

use crate::Ctx;
use crate::output::{Format, render};

/// `export` flags.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Include the connections' shared keys (keep the file private).
    #[arg(long)]
    pub include_secrets: bool,
}

/// `apply` flags.
#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// The desired-state document (YAML or JSON); `-` reads standard input.
    #[arg(short = 'f', long)]
    pub file: PathBuf,
    /// Print what would change, change nothing.
    #[arg(long)]
    pub what_if: bool,
}

/// Prints the desired state, YAML unless `-o` says otherwise.
pub async fn export(ctx: &Ctx, args: ExportArgs) -> Result<()> {
    let path = if args.include_secrets {
        "/api/desiredState?includeSecrets=true"
    } else {
        "/api/desiredState"
    };
    let doc = ctx.client.get(path).await?;
    let format = ctx.output.unwrap_or(Format::Yaml);
    if format == Format::Yaml && ctx.query.is_none() {
        crate::output::emit("# vgw desired state; apply with: vgw apply -f FILE\n")?;
        if !args.include_secrets {
            crate::output::emit(
                "# shared keys are omitted (vgw export --include-secrets adds them)\n",
            )?;
        }
    }
    crate::output::print(&doc, format, ctx.query.as_deref())
}

/// Sends the document; prints the diff as text (or as data with `-o`).
pub async fn apply(ctx: &Ctx, args: ApplyArgs) -> Result<()> {
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("cannot read {}", args.file.display()))?
    };
    let doc: Value = serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not valid YAML or JSON", args.file.display()))?;
    let path = if args.what_if {
        "/api/desiredState?whatIf=true"
    } else {
        "/api/desiredState"
    };
    let result = ctx.client.post(path, Some(&doc)).await?;
    match ctx.output {
        Some(format) => crate::output::print(&result, format, ctx.query.as_deref()),
        None => crate::output::emit(&describe_changes(&result, args.what_if)),
    }
}

/// The diff as an operator reads it: `+` created, `~` changed (with each field), `-` deleted.
fn describe_changes(result: &Value, what_if: bool) -> String {
    let changes = result["changes"].as_array().cloned().unwrap_or_default();
    if changes.is_empty() {
        return "No changes: the desired state already matches.\n".to_string();
    }
    let mut out = String::new();
    for c in &changes {
        let mark = match c["action"].as_str() {
            Some("create") => "+",
            Some("delete") => "-",
            _ => "~",
        };
        out.push_str(&format!(
            "{mark} {}/{}\n",
            c["resourceType"].as_str().unwrap_or("?"),
            c["name"].as_str().unwrap_or("?")
        ));
        for f in c["fields"].as_array().into_iter().flatten() {
            let show = |v: &Value| {
                if v.is_null() {
                    "(none)".to_string()
                } else {
                    render(v, Format::Json)
                        .map(|s| s.replace('\n', " "))
                        .unwrap_or_default()
                }
            };
            out.push_str(&format!(
                "    {}: {} -> {}\n",
                f["path"].as_str().unwrap_or("?"),
                show(&f["before"]),
                show(&f["after"])
            ));
        }
    }
    let verb = if what_if {
        "would change (what-if: nothing was changed)"
    } else {
        "changed"
    };
    out.push_str(&format!("{} resource(s) {verb}.\n", changes.len()));
    out
}
