//! The CLI's commands, one module per az command group.

pub mod connection;
pub mod demo;
pub mod doctor;
pub mod evidence;
pub mod gateway;
pub mod local_gateway;
pub mod logs;
pub mod monitor;
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
