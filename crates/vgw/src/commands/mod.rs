//! The CLI's commands, one module per az command group.

pub mod connection;
pub mod demo;
pub mod doctor;
pub mod gateway;
pub mod local_gateway;
pub mod logs;
pub mod pki;
pub mod serve;
pub mod state;

use serde_json::Value;

/// vgw's BGP tuning flags, shared by `vnet-gateway` (defaults for every peer) and `local-gateway` (one
/// peer).
#[derive(clap::Args, Debug, Default)]
pub struct BgpTuning {
    /// BGP hold time in seconds (vgw; default 180, 0 or 3-65535).
    #[arg(long)]
    pub bgp_hold_time: Option<u16>,
    /// BGP keepalive interval in seconds (vgw; default 60, at most a third of the hold time).
    #[arg(long)]
    pub bgp_keepalive: Option<u16>,
    /// Prefixes a BGP peer may advertise before --bgp-max-prefix-action applies (vgw; default 100000).
    #[arg(long)]
    pub bgp_max_prefixes: Option<u32>,
    /// Warn (default) or Teardown when a peer exceeds --bgp-max-prefixes (vgw).
    #[arg(long, value_parser = ["Warn", "Teardown"])]
    pub bgp_max_prefix_action: Option<String>,
}

impl BgpTuning {
    /// Whether any flag was given.
    pub fn is_set(&self) -> bool {
        self.bgp_hold_time.is_some()
            || self.bgp_keepalive.is_some()
            || self.bgp_max_prefixes.is_some()
            || self.bgp_max_prefix_action.is_some()
    }

    /// Writes the given flags into a `bgpSettings` object.
    pub fn apply(&self, bgp: &mut Value) {
        set(bgp, "holdTimeSeconds", self.bgp_hold_time);
        set(bgp, "keepaliveSeconds", self.bgp_keepalive);
        set(bgp, "maxPrefixes", self.bgp_max_prefixes);
        set(bgp, "maxPrefixAction", self.bgp_max_prefix_action.clone());
    }
}

/// Parses az-style booleans for flags that take an optional value: `--enable-bgp`, `--enable-bgp false`.
pub fn bool_flag() -> clap::builder::BoolishValueParser {
    clap::builder::BoolishValueParser::new()
}

/// Sets `obj[key] = value` when the flag was given.
pub fn set<T: serde::Serialize>(obj: &mut Value, key: &str, value: Option<T>) {
    if let (Some(v), Some(map)) = (value, obj.as_object_mut()) {
        map.insert(
            key.to_string(),
            serde_json::to_value(v).unwrap_or(Value::Null),
        );
    }
}

/// Percent-encodes a path segment (names are validated server-side; this keeps odd input from
/// changing the path).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads a secret (a shared key) from `path`, or from standard input when `path` is `-`, so it never
/// appears in the process list or the shell history. One trailing newline (LF or CRLF) is dropped;
/// an empty secret is refused. `flag` names the option in errors.
pub fn read_secret(flag: &str, path: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context as _;
    use std::io::Read as _;
    let mut text = String::new();
    if path == std::path::Path::new("-") {
        std::io::stdin()
            .take(64 * 1024)
            .read_to_string(&mut text)
            .with_context(|| format!("{flag} -: cannot read the key from standard input"))?;
    } else {
        let file = std::fs::File::open(path)
            .with_context(|| format!("{flag}: cannot open {}", path.display()))?;
        file.take(64 * 1024)
            .read_to_string(&mut text)
            .with_context(|| format!("{flag}: cannot read {} as text", path.display()))?;
    }
    let key = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if key.is_empty() {
        anyhow::bail!(
            "{flag}: {} holds no key; write the key on one line",
            if path == std::path::Path::new("-") {
                "standard input".to_string()
            } else {
                path.display().to_string()
            }
        );
    }
    if key.contains('\n') {
        anyhow::bail!(
            "{flag}: the key spans several lines; write it on one line (one trailing newline is fine)"
        );
    }
    Ok(key.to_string())
}
