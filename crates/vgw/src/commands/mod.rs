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
