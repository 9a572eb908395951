//! dashboards/grafana/vgw.json only queries metrics vgw exports (or the announced BGP/P2S ones), uses the
//! `${DS_PROMETHEUS}` input and has the `connection` variable.

use std::collections::BTreeSet;

use serde_json::Value;

const DASHBOARD: &str = include_str!("../../../dashboards/grafana/vgw.json");
const METRICS_SOURCE: &str = include_str!("../src/status/metrics.rs");

/// Metrics the BGP and point-to-site engines will export; the dashboard has placeholder panels for them.
const FUTURE_METRICS: &[&str] = &[];

/// Every `vgw_[a-z0-9_]+` token in `text`.
fn metric_names(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(pos) = text[i..].find("vgw_") {
        let start = i + pos;
        let preceded =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start + 4;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        if !preceded && end > start + 4 {
            out.push(text[start..end].to_string());
        }
        i = end;
    }
    out
}

/// The PromQL of the dashboard: every target `expr` and every variable query.
fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                match (k.as_str(), child) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::String(s)) => out.push(s.clone()),
                    _ => queries(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|c| queries(c, out)),
        _ => {}
    }
}

fn panels(v: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in v["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p.get("panels").and_then(Value::as_array) {
            out.extend(inner);
        }
    }
    out
}

#[test]
fn dashboard_metrics_exist() {
    let dash: Value = serde_json::from_str(DASHBOARD).expect("dashboard is JSON");
    let mut exprs = Vec::new();
    queries(&dash, &mut exprs);
    assert!(exprs.len() > 20, "only {} queries found", exprs.len());
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    for name in &used {
        let exported = METRICS_SOURCE.contains(&format!("\"{name}\""));
        assert!(
            exported || FUTURE_METRICS.contains(&name.as_str()),
            "the dashboard queries {name}, which metrics.rs does not export"
        );
    }
    // The panels the dashboard promises.
    for name in [
        "vgw_connection_up",
        "vgw_connection_status",
        "vgw_tunnel_ingress_bytes_total",
        "vgw_tunnel_egress_bytes_total",
        "vgw_tunnel_ingress_packets_total",
        "vgw_tunnel_egress_packets_total",
        "vgw_tunnel_ingress_packet_drop_ts_mismatch_total",
        "vgw_tunnel_egress_packet_drop_ts_mismatch_total",
        "vgw_child_sas",
        "vgw_ike_sa_rekeys_total",
        "vgw_child_sa_rekeys_total",
        "vgw_negotiation_failures_total",
        "vgw_dataplane_drops_total",
        "vgw_process_resident_memory_bytes",
        "vgw_process_cpu_seconds_total",
    ]
    .into_iter()
    .chain(FUTURE_METRICS.iter().copied())
    {
        assert!(used.contains(name), "no panel queries {name}");
    }
}

#[test]
fn dashboard_model() {
    let dash: Value = serde_json::from_str(DASHBOARD).unwrap();
    assert_eq!(dash["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert_eq!(dash["__inputs"][0]["pluginId"], "prometheus");
    let vars = dash["templating"]["list"].as_array().unwrap();
    let conn = vars
        .iter()
        .find(|v| v["name"] == "connection")
        .expect("connection variable");
    assert_eq!(
        conn["definition"],
        "label_values(vgw_tunnel_ingress_bytes_total, connection_name)"
    );
    let mut ids = BTreeSet::new();
    for p in panels(&dash) {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} repeats");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
        for t in p["targets"].as_array().expect("targets") {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}");
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()));
        }
        let g = &p["gridPos"];
        assert!(g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24);
    }
}

#[test]
fn scanner_finds_names() {
    assert_eq!(
        metric_names("sum(rate(vgw_a_total{x=\"vgw_y\"}[5m])) / my_vgw_b + vgw_c2"),
        vec!["vgw_a_total", "vgw_y", "vgw_c2"]
    );
}
