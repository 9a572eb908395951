//! Prometheus metrics on `vgw serve --metrics-listen ADDR` (text exposition format 0.0.4).
//!
//! Names follow Azure's metrics in Prometheus style (`TunnelIngressBytes` becomes
//! `vgw_tunnel_ingress_bytes_total{connection_name,remote_ip}`), plus IKE SA and Child SA counts,
//! rekeys, negotiation failures by reason, data-plane drops by cause and the process's own health.
//! Off by default; the listener has no authentication, so bind it to loopback or a management network.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::controller::Controller;
use crate::drivers::tunnels::LiveStatus;

/// What the metrics endpoint reads.
#[derive(Clone)]
pub struct MetricsState {
    /// Desired state: the connections to report.
    pub controller: Arc<Controller>,
    /// Live tunnel status, when the data plane runs.
    pub live: Option<Arc<LiveStatus>>,
    /// When the daemon started.
    pub started: SystemTime,
    /// What the BGP speaker publishes.
    pub bgp: Arc<crate::plan::bgp::BgpStatus>,
    /// Connection status as the API shows it (with active-active, both instances' tunnels), for the
    /// status page; `live` when absent.
    pub status: Option<Arc<dyn crate::status::StatusSource>>,
}

/// `GET /metrics`: the text exposition of every metric.
pub(crate) async fn metrics(State(state): State<MetricsState>) -> impl IntoResponse {
    let body = render(&state).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

/// Escapes a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect();
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {value}");
        } else {
            let _ = writeln!(self.out, "{name}{{{}}} {value}", labels.join(","));
        }
    }
}

/// Resident memory and CPU seconds of this process, from /proc.
fn process_stats() -> (f64, f64) {
    let page = 4096.0;
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |pages| pages * page);
    // Fields 14 and 15 of /proc/self/stat are utime and stime in clock ticks (100 Hz on Linux).
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = after.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0);
    (rss, cpu)
}

/// The whole exposition.
pub async fn render(state: &MetricsState) -> String {
    let (desired, _) = state.controller.snapshot().await;
    let mut out = String::new();
    let mut f = Family { out: &mut out };

    f.header(
        "vgw_build_info",
        "gauge",
        "vgw build; the value is always 1.",
    );
    f.sample(
        "vgw_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    let started = state
        .started
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    f.header(
        "vgw_process_start_time_seconds",
        "gauge",
        "Start time of the daemon since the Unix epoch.",
    );
    f.sample("vgw_process_start_time_seconds", &[], started);
    let (rss, cpu) = process_stats();
    f.header(
        "vgw_process_resident_memory_bytes",
        "gauge",
        "Resident memory of the daemon.",
    );
    f.sample("vgw_process_resident_memory_bytes", &[], rss);
    f.header(
        "vgw_process_cpu_seconds_total",
        "counter",
        "CPU time of the daemon (user and system).",
    );
    f.sample("vgw_process_cpu_seconds_total", &[], cpu);
    f.header(
        "vgw_dataplane_running",
        "gauge",
        "1 when the data plane and tunnel engines run.",
    );
    f.sample(
        "vgw_dataplane_running",
        &[],
        if state.live.is_some() { 1.0 } else { 0.0 },
    );

    let rows = match &state.live {
        Some(live) => live.metrics(desired.connections.keys().map(String::as_str)),
        None => desired
            .connections
            .keys()
            .map(|n| crate::drivers::tunnels::ConnectionMetrics::idle(n))
            .collect(),
    };
    type Getter = fn(&crate::drivers::tunnels::ConnectionMetrics) -> f64;
    let per_tunnel: [(&str, &str, &str, Getter); 8] = [
        (
            "vgw_tunnel_ingress_bytes_total",
            "counter",
            "Inner bytes received from the site (Azure TunnelIngressBytes).",
            |m| m.ingress_bytes as f64,
        ),
        (
            "vgw_tunnel_egress_bytes_total",
            "counter",
            "Inner bytes sent to the site (Azure TunnelEgressBytes).",
            |m| m.egress_bytes as f64,
        ),
        (
            "vgw_tunnel_ingress_packets_total",
            "counter",
            "Packets received from the site (Azure TunnelIngressPackets).",
            |m| m.ingress_packets as f64,
        ),
        (
            "vgw_tunnel_egress_packets_total",
            "counter",
            "Packets sent to the site (Azure TunnelEgressPackets).",
            |m| m.egress_packets as f64,
        ),
        (
            "vgw_tunnel_ingress_packet_drop_ts_mismatch_total",
            "counter",
            "Inbound packets outside the SA's traffic selectors (Azure TunnelIngressPacketDropTSMismatch).",
            |m| m.ingress_drop_ts as f64,
        ),
        (
            "vgw_tunnel_egress_packet_drop_ts_mismatch_total",
            "counter",
            "Outbound packets no SA's selectors cover (Azure TunnelEgressPacketDropTSMismatch).",
            |m| m.egress_drop_ts as f64,
        ),
        (
            "vgw_tunnel_ingress_packet_drop_total",
            "counter",
            "Inbound packets dropped (Azure TunnelIngressPacketDropCount).",
            |m| m.ingress_drop as f64,
        ),
        (
            "vgw_tunnel_egress_packet_drop_total",
            "counter",
            "Outbound packets dropped (Azure TunnelEgressPacketDropCount).",
            |m| m.egress_drop as f64,
        ),
    ];
    for (name, kind, help, get) in per_tunnel {
        f.header(name, kind, help);
        for m in &rows {
            f.sample(
                name,
                &[("connection_name", &m.name), ("remote_ip", &m.remote_ip)],
                get(m),
            );
        }
    }
    f.header(
        "vgw_connection_up",
        "gauge",
        "1 when the connection has an installed Child SA.",
    );
    for m in &rows {
        f.sample(
            "vgw_connection_up",
            &[("connection_name", &m.name)],
            if m.state == "Connected" { 1.0 } else { 0.0 },
        );
    }
    f.header(
        "vgw_connection_status",
        "gauge",
        "The connection's connectionStatus (1 for the current value).",
    );
    for m in &rows {
        f.sample(
            "vgw_connection_status",
            &[("connection_name", &m.name), ("status", &m.state)],
            1.0,
        );
    }
    f.header(
        "vgw_child_sas",
        "gauge",
        "Installed Child SAs per connection (Azure QmsaCount).",
    );
    for m in &rows {
        f.sample(
            "vgw_child_sas",
            &[("connection_name", &m.name)],
            m.child_sas as f64,
        );
    }
    f.header(
        "vgw_ike_sa_rekeys_total",
        "counter",
        "IKE SA rekeys since the daemon started.",
    );
    for m in &rows {
        f.sample(
            "vgw_ike_sa_rekeys_total",
            &[("connection_name", &m.name)],
            m.ike_rekeys as f64,
        );
    }
    f.header(
        "vgw_child_sa_rekeys_total",
        "counter",
        "Child SA rekeys since the daemon started.",
    );
    for m in &rows {
        f.sample(
            "vgw_child_sa_rekeys_total",
            &[("connection_name", &m.name)],
            m.child_rekeys as f64,
        );
    }
    f.header(
        "vgw_ike_sas",
        "gauge",
        "Established IKE SAs (Azure MmsaCount).",
    );
    f.sample(
        "vgw_ike_sas",
        &[],
        rows.iter().filter(|m| m.state == "Connected").count() as f64,
    );
    if let Some(live) = &state.live {
        f.header(
            "vgw_negotiation_failures_total",
            "counter",
            "Failed or lost IKE SAs by typed reason.",
        );
        for (reason, count) in live.failures() {
            f.sample(
                "vgw_negotiation_failures_total",
                &[("reason", &reason)],
                count as f64,
            );
        }
        f.header(
            "vgw_ike_refused_exchanges_total",
            "counter",
            "Unauthenticated IKE exchanges refused or dropped (refused IKE_SA_INIT, failed integrity \
             check, unknown SPI), by connection, exchange and reason; none changed a connection's \
             status (RFC 7296 section 2.21).",
        );
        for ((connection, exchange, reason), count) in live.refused() {
            f.sample(
                "vgw_ike_refused_exchanges_total",
                &[
                    ("connection_name", &connection),
                    ("exchange", exchange),
                    ("reason", reason),
                ],
                count as f64,
            );
        }
        f.header(
            "vgw_ike_queue_datagrams_total",
            "counter",
            "IKE datagrams by admission queue (established: naming one of our IKE SAs, served first; \
             new: IKE_SA_INIT and unknown SAs, rate-limited per source and globally) and outcome.",
        );
        for (queue, outcome, count) in live.ike_queue() {
            f.sample(
                "vgw_ike_queue_datagrams_total",
                &[("queue", queue), ("outcome", outcome)],
                count as f64,
            );
        }
        f.header(
            "vgw_dataplane_drops_total",
            "counter",
            "Data-plane drops by cause.",
        );
        for (cause, count) in live.dataplane_drops() {
            f.sample(
                "vgw_dataplane_drops_total",
                &[("cause", cause)],
                count as f64,
            );
        }
    }
    bgp_metrics(&mut f, &state.bgp.snapshot());
    let (clients, (p2s_in, p2s_out)) = state.live.as_ref().map_or((0, (0, 0)), |l| {
        let wg = l.wireguard_health();
        let (i, e) = l.p2s.bytes();
        (
            l.p2s.count() + wg.len(),
            (
                i + wg.iter().map(|p| p.ingress_bytes).sum::<u64>(),
                e + wg.iter().map(|p| p.egress_bytes).sum::<u64>(),
            ),
        )
    });
    f.header(
        "vgw_p2s_connections",
        "gauge",
        "Connected point-to-site clients (Azure's P2SConnectionCount).",
    );
    f.sample("vgw_p2s_connections", &[], clients as f64);
    f.header(
        "vgw_p2s_bytes_total",
        "counter",
        "Bytes over the point-to-site clients' tunnels (Azure's P2SBandwidth is its rate).",
    );
    f.sample(
        "vgw_p2s_bytes_total",
        &[("direction", "ingress")],
        p2s_in as f64,
    );
    f.sample(
        "vgw_p2s_bytes_total",
        &[("direction", "egress")],
        p2s_out as f64,
    );
    out
}

/// Azure's BgpPeerStatus, BgpRoutesLearned and BgpRoutesAdvertised, per neighbour.
fn bgp_metrics(f: &mut Family<'_>, snap: &crate::plan::bgp::Snapshot) {
    let rows = |f: &mut Family<'_>,
                name: &str,
                kind: &str,
                help: &str,
                value: &dyn Fn(&crate::plan::bgp::PeerStatus) -> f64| {
        f.header(name, kind, help);
        for p in &snap.peers {
            f.sample(
                name,
                &[
                    ("neighbor", &p.neighbor),
                    ("connection_name", &p.connection),
                ],
                value(p),
            );
        }
    };
    rows(
        f,
        "vgw_bgp_peer_up",
        "gauge",
        "BGP session state (Azure's BgpPeerStatus): 1 when Connected.",
        &|p| f64::from(u8::from(p.state == crate::plan::bgp::PeerState::Connected)),
    );
    rows(
        f,
        "vgw_bgp_routes_learned",
        "gauge",
        "Prefixes received from the neighbour (Azure's BgpRoutesLearned).",
        &|p| p.routes_received as f64,
    );
    rows(
        f,
        "vgw_bgp_routes_advertised",
        "gauge",
        "Prefixes advertised to the neighbour (Azure's BgpRoutesAdvertised).",
        &|p| p.routes_advertised as f64,
    );
    rows(
        f,
        "vgw_bgp_messages_sent_total",
        "counter",
        "BGP messages sent to the neighbour.",
        &|p| p.messages_sent as f64,
    );
    rows(
        f,
        "vgw_bgp_messages_received_total",
        "counter",
        "BGP messages received from the neighbour.",
        &|p| p.messages_received as f64,
    );
    rows(
        f,
        "vgw_bgp_session_resets_total",
        "counter",
        "Times an Established BGP session with the neighbour went down.",
        &|p| p.resets_total as f64,
    );
    rows(
        f,
        "vgw_bgp_session_flaps",
        "gauge",
        "Resets of the BGP session within the flap window (5 minutes); the status calls it flapping above 3.",
        &|p| f64::from(p.flap_count),
    );
    if snap.peers.iter().any(|p| p.bfd_state.is_some()) {
        f.header(
            "vgw_bfd_session_up",
            "gauge",
            "BFD session with the BGP neighbour (enableBfd): 1 when Up.",
        );
        for p in &snap.peers {
            if let Some(state) = &p.bfd_state {
                f.sample(
                    "vgw_bfd_session_up",
                    &[
                        ("neighbor", &p.neighbor),
                        ("connection_name", &p.connection),
                    ],
                    f64::from(u8::from(state == "Up")),
                );
            }
        }
    }
}
