//! The read-only status page (the "gateway blade") on the `--metrics-listen` address.
//!
//! `GET /` is server-rendered HTML with the current state filled in, so it reads without JavaScript;
//! `GET /status.json` is the same data as JSON, which the embedded script polls every two seconds to
//! update the page and draw per-connection throughput charts. The script and the style sheet are
//! embedded in the binary (no CDN, no external fonts) and every response carries a Content-Security-Policy
//! that allows only this origin. Like `/metrics`, the listener has no authentication: bind it to loopback
//! or a management network. Shared keys are never part of what is shown.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;

use crate::drivers::tunnels::ConnectionMetrics;
use crate::status::metrics::MetricsState;
use crate::status::{ConnectionState, ConnectionStatus, StatusSource, TunnelStatus};

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const STYLE_CSS: &str = include_str!("page/style.css");
const FAVICON_SVG: &str = include_str!("page/favicon.svg");

/// The Content-Security-Policy of every status page response: this origin only, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The status page routes (`/`, `/status.json`, `/static/*`), merged into the metrics router.
pub fn routes() -> Router<MetricsState> {
    Router::new()
        .route("/", get(index))
        .route("/status.json", get(status_json))
        .route("/static/app.js", get(app_js))
        .route("/static/style.css", get(style_css))
        .route("/static/favicon.svg", get(favicon))
}

/// The whole document behind the page and `/status.json`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDocument {
    /// When this document was made (RFC 3339, UTC).
    pub generated_at: String,
    /// The daemon itself.
    pub daemon: DaemonInfo,
    /// The gateway; null before `vnet-gateway create`.
    pub gateway: Option<GatewayInfo>,
    /// Every configured connection, by name.
    pub connections: Vec<ConnectionRow>,
    /// Failed or lost IKE SAs by typed reason (empty with the data plane off).
    pub negotiation_failures: Vec<ReasonCount>,
    /// Data-plane drops by cause (empty with the data plane off).
    pub dataplane_drops: Vec<CauseCount>,
    /// BGP neighbours; always empty until the BGP engine runs.
    pub bgp_peers: Vec<BgpPeer>,
    /// Routes learned over BGP; always empty until the BGP engine runs.
    pub learned_routes: Vec<LearnedRoute>,
    /// Connected point-to-site clients; always empty until the P2S engine runs.
    pub p2s_clients: Vec<P2sClient>,
}

/// The daemon's identity and health.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonInfo {
    /// vgw version.
    pub version: String,
    /// When the daemon started (RFC 3339, UTC).
    pub started_at: String,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Whether the data plane and tunnel engines run (false with `--dataplane off`).
    pub dataplane_running: bool,
}

/// The gateway summary: its configuration, without anything secret.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayInfo {
    /// Resource name.
    pub name: String,
    /// Always `Vpn`.
    pub gateway_type: String,
    /// `RouteBased` or `PolicyBased`.
    pub vpn_type: String,
    /// SKU name.
    pub sku: String,
    /// Two instances, two public addresses.
    pub active_active: bool,
    /// The addresses IKE listens on.
    pub public_ip_addresses: Vec<String>,
    /// The network behind the gateway.
    pub address_space: Vec<String>,
    /// Extra prefixes advertised to sites.
    pub custom_routes: Vec<String>,
    /// Whether BGP is enabled on the gateway.
    pub enable_bgp: bool,
    /// ASN and peering address when BGP settings exist.
    pub bgp_settings: Option<BgpInfo>,
    /// NAT rule names.
    pub nat_rules: Vec<String>,
    /// Point-to-site settings when configured.
    pub point_to_site: Option<P2sInfo>,
}

/// The gateway's BGP settings.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpInfo {
    /// Autonomous system number.
    pub asn: u64,
    /// The address BGP peers with.
    pub bgp_peering_address: Option<String>,
    /// Custom (APIPA) peering addresses of all instances.
    pub custom_bgp_ip_addresses: Vec<String>,
}

/// The gateway's point-to-site settings (not its certificates).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct P2sInfo {
    /// The client address pool.
    pub address_pool: Vec<String>,
    /// Client protocols.
    pub protocols: Vec<String>,
}

/// One row of the connections table.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionRow {
    /// Connection name.
    pub name: String,
    /// `IPsec` or `Vnet2Vnet`.
    pub connection_type: String,
    /// The local gateway (remote site) it connects to.
    pub local_network_gateway: String,
    /// The site's address or FQDN, from the local gateway.
    pub remote_address: Option<String>,
    /// The site's prefixes.
    pub remote_address_space: Vec<String>,
    /// Whether BGP runs over this connection.
    pub enable_bgp: bool,
    /// Azure's `connectionStatus`.
    pub connection_status: ConnectionState,
    /// The typed reason when not connected.
    pub connection_status_reason: Option<String>,
    /// The last failed exchange, as the REST API shows it.
    pub last_error: Option<serde_json::Value>,
    /// Inner bytes received from the site.
    pub ingress_bytes_transferred: u64,
    /// Inner bytes sent to the site.
    pub egress_bytes_transferred: u64,
    /// Packets received from the site.
    pub ingress_packets: u64,
    /// Packets sent to the site.
    pub egress_packets: u64,
    /// Installed Child SAs.
    pub child_sa_count: usize,
    /// IKE SA rekeys since the daemon started.
    pub ike_sa_rekeys: u64,
    /// Child SA rekeys since the daemon started.
    pub child_sa_rekeys: u64,
    /// Inbound packets outside the SA's traffic selectors.
    pub ingress_packet_drop_ts_mismatch: u64,
    /// Outbound packets no SA's selectors cover.
    pub egress_packet_drop_ts_mismatch: u64,
    /// Other inbound drops.
    pub ingress_packet_drop: u64,
    /// Other outbound drops.
    pub egress_packet_drop: u64,
    /// Per-tunnel status.
    pub tunnels: Vec<TunnelStatus>,
}

/// A counter by typed reason (the `reason` label of `vgw_negotiation_failures_total`).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReasonCount {
    /// The reason, e.g. `AUTHENTICATION_FAILED`.
    pub reason: String,
    /// How many.
    pub count: u64,
}

/// A counter by cause (the `cause` label of `vgw_dataplane_drops_total`).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CauseCount {
    /// The cause, e.g. `unknown_spi`.
    pub cause: String,
    /// How many.
    pub count: u64,
}

/// A BGP neighbour (filled in once the BGP engine exists).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpPeer {
    /// The neighbour's address.
    pub neighbor: String,
    /// The neighbour's ASN.
    pub asn: u64,
    /// The connection the session runs over.
    pub connection_name: String,
    /// Azure's state: Unknown, Stopped, Idle, Connecting or Connected.
    pub state: String,
    /// Seconds in the current state.
    pub uptime_seconds: u64,
    /// Prefixes received.
    pub routes_received: u64,
    /// Prefixes advertised.
    pub routes_advertised: u64,
}

/// A route learned over BGP (filled in once the BGP engine exists).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LearnedRoute {
    /// The prefix.
    pub prefix: String,
    /// Next hop.
    pub next_hop: String,
    /// The peer it came from.
    pub source_peer: String,
    /// AS path, space separated.
    pub as_path: String,
    /// Weight.
    pub weight: u32,
}

/// A connected point-to-site client.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct P2sClient {
    /// Certificate subject or peer name.
    pub user_name: String,
    /// `IkeV2` or `WireGuard`.
    pub protocol: String,
    /// The address given from the pool.
    pub vpn_client_ip_address: String,
    /// The client's public address and port.
    pub public_ip_address: String,
    /// When it connected (RFC 3339, UTC).
    pub connected_since: String,
    /// Bytes received from the client.
    pub ingress_bytes_transferred: u64,
    /// Bytes sent to the client.
    pub egress_bytes_transferred: u64,
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Gathers the desired state and the live status into one document.
pub async fn collect(state: &MetricsState) -> StatusDocument {
    let (desired, _) = state.controller.snapshot().await;
    let now = SystemTime::now();
    let names = desired.connections.keys().map(String::as_str);
    let metrics: Vec<ConnectionMetrics> = match &state.live {
        Some(live) => live.metrics(names),
        None => names.map(ConnectionMetrics::idle).collect(),
    };
    let connections = desired
        .connections
        .values()
        .zip(metrics)
        .map(|(c, m)| {
            let status = match (&state.status, &state.live) {
                (Some(merged), _) => merged.connection_status(&c.name),
                (None, Some(live)) => live.connection_status(&c.name),
                (None, None) => ConnectionStatus::default(),
            };
            let site = desired.local_gateways.get(&c.local_network_gateway2.name);
            ConnectionRow {
                name: c.name.clone(),
                connection_type: c.connection_type.to_string(),
                local_network_gateway: c.local_network_gateway2.name.clone(),
                remote_address: site
                    .and_then(|s| s.gateway_ip_address.clone().or_else(|| s.fqdn.clone())),
                remote_address_space: site
                    .map(|s| s.local_network_address_space.address_prefixes.clone())
                    .unwrap_or_default(),
                enable_bgp: c.enable_bgp,
                connection_status: status.connection_status,
                connection_status_reason: status.connection_status_reason,
                last_error: status.last_error,
                ingress_bytes_transferred: status.ingress_bytes_transferred,
                egress_bytes_transferred: status.egress_bytes_transferred,
                ingress_packets: m.ingress_packets,
                egress_packets: m.egress_packets,
                child_sa_count: m.child_sas,
                ike_sa_rekeys: m.ike_rekeys,
                child_sa_rekeys: m.child_rekeys,
                ingress_packet_drop_ts_mismatch: m.ingress_drop_ts,
                egress_packet_drop_ts_mismatch: m.egress_drop_ts,
                ingress_packet_drop: m.ingress_drop,
                egress_packet_drop: m.egress_drop,
                tunnels: status.tunnel_connection_status,
            }
        })
        .collect();
    let gateway = desired.gateway.as_ref().map(|g| GatewayInfo {
        name: g.name.clone(),
        gateway_type: g.gateway_type.to_string(),
        vpn_type: g.vpn_type.to_string(),
        sku: g.sku.name.to_string(),
        active_active: g.active_active,
        public_ip_addresses: g
            .ip_configurations
            .iter()
            .map(|c| c.public_ip_address.clone())
            .collect(),
        address_space: g.address_space.address_prefixes.clone(),
        custom_routes: g.custom_routes.address_prefixes.clone(),
        enable_bgp: g.enable_bgp,
        bgp_settings: g.bgp_settings.as_ref().map(|b| BgpInfo {
            asn: b.asn,
            bgp_peering_address: b.bgp_peering_address.clone(),
            custom_bgp_ip_addresses: b
                .bgp_peering_addresses
                .iter()
                .flat_map(|p| p.custom_bgp_ip_addresses.iter().cloned())
                .collect(),
        }),
        nat_rules: g.nat_rules.iter().map(|r| r.name.clone()).collect(),
        point_to_site: g.vpn_client_configuration.as_ref().map(|p| P2sInfo {
            address_pool: p.vpn_client_address_pool.address_prefixes.clone(),
            protocols: p
                .vpn_client_protocols
                .iter()
                .map(ToString::to_string)
                .collect(),
        }),
    });
    let (negotiation_failures, dataplane_drops) = match &state.live {
        Some(live) => (
            live.failures()
                .into_iter()
                .map(|(reason, count)| ReasonCount { reason, count })
                .collect(),
            live.dataplane_drops()
                .into_iter()
                .map(|(cause, count)| CauseCount {
                    cause: cause.to_string(),
                    count,
                })
                .collect(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    let bgp = state.bgp.snapshot();
    let bgp_peers = bgp
        .peers
        .iter()
        .map(|p| BgpPeer {
            neighbor: p.neighbor.clone(),
            asn: u64::from(p.asn),
            connection_name: p.connection.clone(),
            state: p.state.as_str().to_string(),
            uptime_seconds: p.connected_since.map_or(0, |t| t.elapsed().as_secs()),
            routes_received: p.routes_received,
            routes_advertised: p.routes_advertised,
        })
        .collect();
    // The page shows the first 500 learned routes; the API lists them all.
    let learned_routes = bgp
        .learned
        .iter()
        .filter(|r| r.origin != "Network")
        .take(500)
        .map(|r| LearnedRoute {
            prefix: r.network.clone(),
            next_hop: r.next_hop.clone(),
            source_peer: r.source_peer.clone(),
            as_path: r.as_path.clone(),
            weight: r.weight,
        })
        .collect();
    let p2s_clients = state
        .live
        .as_ref()
        .map(|l| l.p2s.rows())
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            let load = |f: fn(&vgw_dataplane::TunnelCounters) -> &std::sync::atomic::AtomicU64| {
                c.counters
                    .as_ref()
                    .map_or(0, |k| f(k).load(std::sync::atomic::Ordering::Relaxed))
            };
            P2sClient {
                user_name: c.user_name.clone(),
                protocol: "IkeV2".into(),
                vpn_client_ip_address: c
                    .addresses
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                public_ip_address: c.public.clone(),
                connected_since: crate::ops::diaglog::rfc3339(millis(c.connected_at)),
                ingress_bytes_transferred: load(|k| &k.ingress_bytes),
                egress_bytes_transferred: load(|k| &k.egress_bytes),
            }
        })
        .collect();
    StatusDocument {
        generated_at: crate::ops::diaglog::rfc3339(millis(now)),
        daemon: DaemonInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: crate::ops::diaglog::rfc3339(millis(state.started)),
            uptime_seconds: now.duration_since(state.started).map_or(0, |d| d.as_secs()),
            dataplane_running: state.live.is_some(),
        },
        gateway,
        connections,
        negotiation_failures,
        dataplane_drops,
        bgp_peers,
        learned_routes,
        p2s_clients,
    }
}

/// Headers every status page response carries.
fn security_headers(content_type: &'static str) -> [(HeaderName, &'static str); 5] {
    [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ]
}

async fn index(State(state): State<MetricsState>) -> impl IntoResponse {
    let doc = collect(&state).await;
    (
        security_headers("text/html; charset=utf-8"),
        render_html(&doc),
    )
}

async fn status_json(State(state): State<MetricsState>) -> impl IntoResponse {
    let doc = collect(&state).await;
    let body = serde_json::to_string(&doc).unwrap_or_else(|_| "{}".into());
    (security_headers("application/json"), body)
}

async fn app_js() -> impl IntoResponse {
    (security_headers("text/javascript; charset=utf-8"), APP_JS)
}

async fn style_css() -> impl IntoResponse {
    (security_headers("text/css; charset=utf-8"), STYLE_CSS)
}

async fn favicon() -> impl IntoResponse {
    (security_headers("image/svg+xml"), FAVICON_SVG)
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Bytes with binary units, as the page's script writes them.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

/// An integer with comma grouping (`1,234,567`).
pub fn format_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A duration as `3d 4h`, `4h 12m`, `12m 5s` or `5s`.
pub fn format_duration(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        (secs % 86_400) / 3600,
        (secs % 3600) / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// The CSS class of a status badge.
fn badge_class(state: ConnectionState) -> &'static str {
    match state {
        ConnectionState::Connected => "ok",
        ConnectionState::Connecting => "warn",
        ConnectionState::NotConnected => "bad",
        ConnectionState::Unknown => "unknown",
    }
}

/// The text shown for a connection state.
fn state_text(state: ConnectionState) -> &'static str {
    match state {
        ConnectionState::Unknown => "Unknown",
        ConnectionState::Connecting => "Connecting",
        ConnectionState::Connected => "Connected",
        ConnectionState::NotConnected => "NotConnected",
    }
}

/// The human text of a `lastError`: its message, with the exchange and notify when present.
pub fn last_error_text(error: &serde_json::Value) -> Option<String> {
    let message = error.get("message").and_then(|m| m.as_str())?;
    let mut context = Vec::new();
    for key in ["exchange", "notify"] {
        if let Some(v) = error.get(key).filter(|v| !v.is_null()) {
            let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            context.push(format!("{key} {text}"));
        }
    }
    Some(if context.is_empty() {
        message.to_string()
    } else {
        format!("{message} ({})", context.join(", "))
    })
}

/// A list of strings escaped and joined, or a dash.
fn list(items: &[String]) -> String {
    if items.is_empty() {
        "—".into()
    } else {
        items
            .iter()
            .map(|s| escape_html(s))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn render_gateway(doc: &StatusDocument) -> String {
    let mut out = String::new();
    let Some(g) = &doc.gateway else {
        out.push_str(
            "<p class=\"empty\">No gateway is configured yet. Create one with <code>vgw vnet-gateway create</code>.</p>",
        );
        return out;
    };
    let sku = format!(
        "{} · {} · {}{}",
        g.sku,
        g.gateway_type,
        g.vpn_type,
        if g.active_active {
            " · active-active"
        } else {
            ""
        }
    );
    let bgp = if !g.enable_bgp {
        "Disabled".to_string()
    } else {
        match &g.bgp_settings {
            Some(b) => {
                let mut text = format!("ASN {}", b.asn);
                if let Some(addr) = &b.bgp_peering_address {
                    let _ = write!(text, " · {addr}");
                }
                if !b.custom_bgp_ip_addresses.is_empty() {
                    let _ = write!(text, " · APIPA {}", b.custom_bgp_ip_addresses.join(", "));
                }
                text
            }
            None => "Enabled".to_string(),
        }
    };
    let p2s = g.point_to_site.as_ref().map_or_else(
        || "Not configured".to_string(),
        |p| format!("{} · {}", p.address_pool.join(", "), p.protocols.join(", ")),
    );
    out.push_str("<dl class=\"facts\">");
    let facts: [(&str, &str, String); 7] = [
        ("Name", "gw-name", escape_html(&g.name)),
        ("SKU / type", "gw-sku", escape_html(&sku)),
        ("Public IPs", "gw-ips", list(&g.public_ip_addresses)),
        ("Address space", "gw-space", list(&g.address_space)),
        ("Custom routes", "gw-routes", list(&g.custom_routes)),
        ("BGP", "gw-bgp", escape_html(&bgp)),
        ("Point-to-site", "gw-p2s", escape_html(&p2s)),
    ];
    for (label, id, value) in facts {
        let _ = write!(
            out,
            "<div><dt>{label}</dt><dd id=\"{id}\">{value}</dd></div>"
        );
    }
    if !g.nat_rules.is_empty() {
        let _ = write!(
            out,
            "<div><dt>NAT rules</dt><dd id=\"gw-nat\">{}</dd></div>",
            list(&g.nat_rules)
        );
    }
    out.push_str("</dl>");
    out
}

fn render_daemon(doc: &StatusDocument) -> String {
    let d = &doc.daemon;
    let mut out = String::from("<dl class=\"facts\">");
    let facts: [(&str, &str, String); 4] = [
        ("Version", "d-version", escape_html(&d.version)),
        ("Uptime", "d-uptime", format_duration(d.uptime_seconds)),
        ("Started", "d-started", escape_html(&d.started_at)),
        (
            "Data plane",
            "d-dataplane",
            if d.dataplane_running {
                "Running".into()
            } else {
                "Off (status is Unknown)".into()
            },
        ),
    ];
    for (label, id, value) in facts {
        let _ = write!(
            out,
            "<div><dt>{label}</dt><dd id=\"{id}\">{value}</dd></div>"
        );
    }
    out.push_str("</dl>");
    out
}

fn render_kpis(doc: &StatusDocument) -> String {
    let count = |s: ConnectionState| {
        doc.connections
            .iter()
            .filter(|c| c.connection_status == s)
            .count()
    };
    let ingress: u64 = doc
        .connections
        .iter()
        .map(|c| c.ingress_bytes_transferred)
        .sum();
    let egress: u64 = doc
        .connections
        .iter()
        .map(|c| c.egress_bytes_transferred)
        .sum();
    let tiles = [
        (
            "k-total",
            "Connections",
            doc.connections.len().to_string(),
            "",
        ),
        (
            "k-connected",
            "Connected",
            count(ConnectionState::Connected).to_string(),
            "ok",
        ),
        (
            "k-down",
            "Not connected",
            count(ConnectionState::NotConnected).to_string(),
            "bad",
        ),
        (
            "k-unknown",
            "Unknown / connecting",
            (count(ConnectionState::Unknown) + count(ConnectionState::Connecting)).to_string(),
            "unknown",
        ),
        ("k-in", "Ingress total", format_bytes(ingress), ""),
        ("k-out", "Egress total", format_bytes(egress), ""),
    ];
    let mut out = String::new();
    for (id, label, value, class) in tiles {
        let _ = write!(
            out,
            "<div class=\"kpi {class}\"><span class=\"kpi-label\">{label}</span><span class=\"kpi-value\" id=\"{id}\">{value}</span></div>"
        );
    }
    out
}

fn render_connection_row(c: &ConnectionRow) -> String {
    let name = escape_html(&c.name);
    let mut out = String::new();
    let _ = write!(out, "<tr data-conn=\"{name}\">");
    let _ = write!(
        out,
        "<td><span class=\"conn-name\">{name}</span><span class=\"sub\">{}{}</span></td>",
        escape_html(&c.connection_type),
        if c.enable_bgp { " · BGP" } else { "" }
    );
    let _ = write!(
        out,
        "<td><span class=\"site\">{}</span><span class=\"sub mono\">{}</span><span class=\"sub mono\">{}</span></td>",
        escape_html(&c.local_network_gateway),
        escape_html(c.remote_address.as_deref().unwrap_or("—")),
        list(&c.remote_address_space)
    );
    let state = c.connection_status;
    let _ = write!(
        out,
        "<td><span class=\"badge {}\">{}</span>",
        badge_class(state),
        state_text(state)
    );
    if state == ConnectionState::Connected {
        if let Some(since) = c
            .tunnels
            .iter()
            .find_map(|t| t.last_connection_established_utc_time.as_deref())
        {
            let _ = write!(
                out,
                "<span class=\"sub\">since {}</span>",
                escape_html(since)
            );
        }
    } else {
        if let Some(reason) = &c.connection_status_reason {
            let _ = write!(
                out,
                "<span class=\"reason mono\">{}</span>",
                escape_html(reason)
            );
        }
        if let Some(text) = c.last_error.as_ref().and_then(last_error_text) {
            let _ = write!(out, "<span class=\"error\">{}</span>", escape_html(&text));
        }
    }
    out.push_str("</td>");
    let bytes = |n: u64| {
        format!(
            "<span title=\"{} bytes\">{}</span>",
            format_count(n),
            format_bytes(n)
        )
    };
    let _ = write!(
        out,
        "<td class=\"num\">{}<span class=\"sub\">{}</span></td>",
        bytes(c.ingress_bytes_transferred),
        bytes(c.egress_bytes_transferred)
    );
    let _ = write!(
        out,
        "<td class=\"num\">{}<span class=\"sub\">{}</span></td>",
        format_count(c.ingress_packets),
        format_count(c.egress_packets)
    );
    let _ = write!(out, "<td class=\"num\">{}</td>", c.child_sa_count);
    let _ = write!(
        out,
        "<td class=\"num\">{}<span class=\"sub\">{}</span></td>",
        format_count(c.ike_sa_rekeys),
        format_count(c.child_sa_rekeys)
    );
    let ts = c.ingress_packet_drop_ts_mismatch + c.egress_packet_drop_ts_mismatch;
    let _ = write!(
        out,
        "<td class=\"num{}\">{}<span class=\"sub\">{} / {}</span></td>",
        if ts > 0 { " warn-text" } else { "" },
        format_count(ts),
        format_count(c.ingress_packet_drop_ts_mismatch),
        format_count(c.egress_packet_drop_ts_mismatch)
    );
    out.push_str("</tr>");
    out
}

fn render_connections(doc: &StatusDocument) -> String {
    if doc.connections.is_empty() {
        return "<tr class=\"empty-row\"><td colspan=\"8\">No connections are configured. Create one with <code>vgw vpn-connection create</code>.</td></tr>".into();
    }
    doc.connections.iter().map(render_connection_row).collect()
}

fn render_charts(doc: &StatusDocument) -> String {
    if doc.connections.is_empty() {
        return "<p class=\"empty\">Charts appear here once a connection exists.</p>".into();
    }
    let mut out = String::new();
    for c in &doc.connections {
        let name = escape_html(&c.name);
        let _ = write!(
            out,
            "<figure class=\"chart\" data-conn=\"{name}\"><figcaption><span class=\"chart-name\">{name}</span><span class=\"legend\"><span class=\"in\">▼ in <b class=\"rate-in\">—</b></span><span class=\"out\">▲ out <b class=\"rate-out\">—</b></span></span></figcaption><svg class=\"spark\" viewBox=\"0 0 300 64\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"Throughput of {name}\"><line class=\"axis\" x1=\"0\" y1=\"63.5\" x2=\"300\" y2=\"63.5\"/></svg><span class=\"chart-note\">Waiting for samples (updates every 2 s).</span></figure>"
        );
    }
    out
}

fn render_bgp_peers(doc: &StatusDocument) -> String {
    let bgp_on = doc.gateway.as_ref().is_some_and(|g| g.enable_bgp);
    if doc.bgp_peers.is_empty() {
        let text = if bgp_on {
            "BGP is enabled but no peers are reported yet: the BGP engine is not running in this build."
        } else {
            "BGP is not configured on this gateway."
        };
        return format!("<p class=\"empty\">{text}</p>");
    }
    let mut out = String::from(
        "<table><thead><tr><th>Neighbor</th><th>ASN</th><th>Connection</th><th>State</th><th class=\"num\">Up</th><th class=\"num\">Routes rx / tx</th></tr></thead><tbody>",
    );
    for p in &doc.bgp_peers {
        let _ = write!(
            out,
            "<tr><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{} / {}</td></tr>",
            escape_html(&p.neighbor),
            p.asn,
            escape_html(&p.connection_name),
            escape_html(&p.state),
            format_duration(p.uptime_seconds),
            p.routes_received,
            p.routes_advertised
        );
    }
    out.push_str("</tbody></table>");
    out
}

fn render_routes(doc: &StatusDocument) -> String {
    if doc.learned_routes.is_empty() {
        return "<p class=\"empty\">No learned routes: routes learned over BGP appear here.</p>"
            .into();
    }
    let mut out = String::from(
        "<table><thead><tr><th>Prefix</th><th>Next hop</th><th>From</th><th>AS path</th><th class=\"num\">Weight</th></tr></thead><tbody>",
    );
    for r in &doc.learned_routes {
        let _ = write!(
            out,
            "<tr><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td class=\"num\">{}</td></tr>",
            escape_html(&r.prefix),
            escape_html(&r.next_hop),
            escape_html(&r.source_peer),
            escape_html(&r.as_path),
            r.weight
        );
    }
    out.push_str("</tbody></table>");
    out
}

fn render_p2s(doc: &StatusDocument) -> String {
    if doc.p2s_clients.is_empty() {
        let configured = doc
            .gateway
            .as_ref()
            .is_some_and(|g| g.point_to_site.is_some());
        let text = if configured {
            "No point-to-site clients are connected."
        } else {
            "No point-to-site clients: point-to-site is not configured on this gateway."
        };
        return format!("<p class=\"empty\">{text}</p>");
    }
    let mut out = String::from(
        "<table><thead><tr><th>User</th><th>Protocol</th><th>Client IP</th><th>Public address</th><th>Since</th><th class=\"num\">In / out</th></tr></thead><tbody>",
    );
    for c in &doc.p2s_clients {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td>{}</td><td class=\"num\">{} / {}</td></tr>",
            escape_html(&c.user_name),
            escape_html(&c.protocol),
            escape_html(&c.vpn_client_ip_address),
            escape_html(&c.public_ip_address),
            escape_html(&c.connected_since),
            format_bytes(c.ingress_bytes_transferred),
            format_bytes(c.egress_bytes_transferred)
        );
    }
    out.push_str("</tbody></table>");
    out
}

fn render_counts<'a>(items: impl Iterator<Item = (&'a str, u64)>, empty: &str) -> String {
    let nonzero: Vec<(&str, u64)> = items.filter(|(_, n)| *n > 0).collect();
    if nonzero.is_empty() {
        return format!("<p class=\"empty\">{}</p>", escape_html(empty));
    }
    let mut out = String::from("<ul class=\"counts\">");
    for (name, n) in nonzero {
        let _ = write!(
            out,
            "<li><span class=\"mono\">{}</span><b>{}</b></li>",
            escape_html(name),
            format_count(n)
        );
    }
    out.push_str("</ul>");
    out
}

/// Fills `{{slot}}` markers of `template` in one pass; inserted text is never scanned again.
fn fill(template: &str, slots: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}").and_then(|end| {
            let key = &after[..end];
            slots.iter().find(|(k, _)| *k == key).map(|(_, v)| (v, end))
        }) {
            Some((value, end)) => {
                out.push_str(value);
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The page with `doc` filled in (server-side; the script takes over from there).
pub fn render_html(doc: &StatusDocument) -> String {
    let title = doc
        .gateway
        .as_ref()
        .map_or_else(|| "vgw".to_string(), |g| format!("{} · vgw", g.name));
    let gateway_name = doc
        .gateway
        .as_ref()
        .map_or("No gateway", |g| g.name.as_str());
    fill(
        INDEX_HTML,
        &[
            ("title", escape_html(&title)),
            ("gateway_name", escape_html(gateway_name)),
            ("version", escape_html(&doc.daemon.version)),
            ("generated_at", escape_html(&doc.generated_at)),
            ("kpis", render_kpis(doc)),
            ("gateway", render_gateway(doc)),
            ("daemon", render_daemon(doc)),
            ("connections", render_connections(doc)),
            ("charts", render_charts(doc)),
            ("bgp_peers", render_bgp_peers(doc)),
            ("learned_routes", render_routes(doc)),
            ("p2s_clients", render_p2s(doc)),
            (
                "failures",
                render_counts(
                    doc.negotiation_failures
                        .iter()
                        .map(|r| (r.reason.as_str(), r.count)),
                    "No negotiation failures.",
                ),
            ),
            (
                "drops",
                render_counts(
                    doc.dataplane_drops
                        .iter()
                        .map(|r| (r.cause.as_str(), r.count)),
                    "No data-plane drops.",
                ),
            ),
        ],
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt as _;

    use super::*;
    use crate::controller::Controller;
    use crate::model::*;
    use crate::ops::diaglog::DiagLog;
    use crate::store::SqliteStore;

    const SHARED_KEY: &str = "TopSecretKey12345";

    /// A controller over a fresh store with one gateway, one local gateway and one connection.
    async fn controller(dir: &std::path::Path) -> Arc<Controller> {
        let store = SqliteStore::open(dir).expect("store");
        let log = Arc::new(DiagLog::open(&dir.join("logs"), 1 << 20, 2).expect("log"));
        let controller = Arc::new(
            Controller::load(Box::new(store), log, Default::default()).expect("controller"),
        );
        controller
            .mutate(false, |s, _| {
                s.gateway = Some(VnetGatewaySpec {
                    name: "gw-east".into(),
                    ip_configurations: vec![IpConfiguration {
                        name: "default".into(),
                        public_ip_address: "198.18.0.2".into(),
                    }],
                    address_space: AddressSpace {
                        address_prefixes: vec!["10.2.0.0/16".into()],
                    },
                    ..Default::default()
                });
                s.local_gateways.insert(
                    "branch-site".into(),
                    LocalGatewaySpec {
                        name: "branch-site".into(),
                        gateway_ip_address: Some("198.18.0.1".into()),
                        local_network_address_space: AddressSpace {
                            address_prefixes: vec!["10.1.0.0/16".into()],
                        },
                        ..Default::default()
                    },
                );
                s.connections.insert(
                    "to-branch".into(),
                    ConnectionSpec {
                        name: "to-branch".into(),
                        local_network_gateway2: ResourceRef::new(
                            collection::LOCAL_GATEWAYS,
                            "branch-site",
                        ),
                        shared_key: Some(SHARED_KEY.into()),
                        dpd_timeout_seconds: 45,
                        ..Default::default()
                    },
                );
                Ok::<(), crate::controller::ControllerError>(())
            })
            .await
            .expect("create resources");
        controller
    }

    async fn get(router: Router, path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let res = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    fn app(controller: Arc<Controller>, live: bool) -> Router {
        crate::status::listener::router(MetricsState {
            controller,
            live: live.then(|| Arc::new(crate::drivers::tunnels::LiveStatus::default())),
            started: SystemTime::now(),
            bgp: Arc::default(),
            status: None,
        })
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape_html("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(escape_html("to-branch"), "to-branch");
    }

    #[test]
    fn formatting() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1536), "1.50 KiB");
        assert_eq!(format_bytes(5 << 30), "5.00 GiB");
        assert_eq!(format_count(0), "0");
        assert_eq!(format_count(1234567), "1,234,567");
        assert_eq!(format_count(100), "100");
        assert_eq!(format_duration(5), "5s");
        assert_eq!(format_duration(3725), "1h 2m");
        assert_eq!(format_duration(90_061), "1d 1h");
    }

    #[test]
    fn fill_does_not_rescan_inserted_text() {
        let out = fill(
            "a{{x}}b{{y}}c{{unknown}}",
            &[("x", "{{y}}".into()), ("y", "Y".into())],
        );
        assert_eq!(out, "a{{y}}bYc{{unknown}}");
    }

    /// Hostile text from the engines (reason, last error) and names reach the HTML escaped.
    #[test]
    fn rendered_html_escapes_everything() {
        let doc = StatusDocument {
            generated_at: "2026-01-01T00:00:00.000Z".into(),
            daemon: DaemonInfo {
                version: "0.1.0".into(),
                started_at: "2026-01-01T00:00:00.000Z".into(),
                uptime_seconds: 61,
                dataplane_running: true,
            },
            gateway: Some(GatewayInfo {
                name: "<b>gw</b>".into(),
                ..Default::default()
            }),
            connections: vec![
                ConnectionRow {
                    name: "<script>alert(1)</script>".into(),
                    connection_status: ConnectionState::NotConnected,
                    connection_status_reason: Some("<img src=x onerror=alert(2)>".into()),
                    last_error: Some(serde_json::json!({
                        "message": "peer said \"<svg onload=alert(3)>\"",
                        "exchange": "IKE_AUTH",
                    })),
                    ..Default::default()
                },
                ConnectionRow {
                    name: "up".into(),
                    connection_status: ConnectionState::Connected,
                    ingress_bytes_transferred: 1_234_567,
                    tunnels: vec![TunnelStatus {
                        tunnel: "198.18.0.2-198.18.0.1".into(),
                        connection_status: ConnectionState::Connected,
                        last_connection_established_utc_time: Some("2026-01-01T00:00:05Z".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
            negotiation_failures: vec![ReasonCount {
                reason: "<i>".into(),
                count: 1,
            }],
            dataplane_drops: vec![
                CauseCount {
                    cause: "unknown_spi".into(),
                    count: 3,
                },
                CauseCount {
                    cause: "replayed".into(),
                    count: 0,
                },
            ],
            bgp_peers: Vec::new(),
            learned_routes: Vec::new(),
            p2s_clients: Vec::new(),
        };
        let html = render_html(&doc);
        for hostile in ["<script>alert", "<img", "<svg onload", "<b>gw", "<i>"] {
            assert!(!html.contains(hostile), "{hostile} unescaped");
        }
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&lt;img src=x onerror=alert(2)&gt;"));
        assert!(html.contains("(exchange IKE_AUTH)"));
        assert!(html.contains("badge ok\">Connected"));
        assert!(html.contains("badge bad\">NotConnected"));
        assert!(html.contains("1.18 MiB"));
        assert!(html.contains("1,234,567 bytes"));
        assert!(html.contains("since 2026-01-01T00:00:05Z"));
        assert!(html.contains("unknown_spi</span><b>3</b>"));
        assert!(!html.contains("replayed"), "zero counts are left out");
        // The only scripts are the embedded file; no inline script or style.
        assert_eq!(html.matches("<script").count(), 1);
        assert!(html.contains("<script src=\"/static/app.js\" defer></script>"));
        assert!(!html.contains("style="));
        assert!(!html.contains("{{"), "unfilled slot");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn page_is_server_rendered_with_csp() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(controller(dir.path()).await, false);
        let (status, headers, body) = get(app.clone(), "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert!(!csp.contains("http"), "{csp}");
        for text in [
            "to-branch",
            "branch-site",
            "198.18.0.1",
            "10.1.0.0/16",
            "gw-east",
            "198.18.0.2",
            "10.2.0.0/16",
            "Unknown",
            "0 B",
            "BGP is not configured on this gateway.",
            "no point-to-site clients",
        ] {
            assert!(
                body.to_lowercase().contains(&text.to_lowercase()),
                "{text} missing"
            );
        }
        assert!(!body.contains(SHARED_KEY));
        assert!(!body.contains("sharedKey"));
        // No resource on the page comes from another origin.
        assert!(!body.contains("http://") && !body.contains("https://"));

        for (path, kind) in [
            ("/static/app.js", "text/javascript"),
            ("/static/style.css", "text/css"),
            ("/static/favicon.svg", "image/svg+xml"),
        ] {
            let (status, headers, body) = get(app.clone(), path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert!(
                headers[header::CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .starts_with(kind)
            );
            assert!(headers.contains_key(header::CONTENT_SECURITY_POLICY));
            assert!(!body.is_empty());
        }
        let (status, _, metrics) = get(app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(metrics.contains("vgw_connection_up{connection_name=\"to-branch\"} 0"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_json_shape() {
        let dir = tempfile::tempdir().unwrap();
        let controller = controller(dir.path()).await;
        for live in [false, true] {
            let (status, headers, body) = get(app(controller.clone(), live), "/status.json").await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(headers[header::CONTENT_TYPE], "application/json");
            assert!(headers.contains_key(header::CONTENT_SECURITY_POLICY));
            assert!(!body.contains(SHARED_KEY));
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            for key in [
                "generatedAt",
                "daemon",
                "gateway",
                "connections",
                "negotiationFailures",
                "dataplaneDrops",
                "bgpPeers",
                "learnedRoutes",
                "p2sClients",
            ] {
                assert!(v.get(key).is_some(), "{key} missing");
            }
            assert_eq!(v["bgpPeers"], serde_json::json!([]));
            assert_eq!(v["learnedRoutes"], serde_json::json!([]));
            assert_eq!(v["p2sClients"], serde_json::json!([]));
            assert_eq!(v["daemon"]["dataplaneRunning"], live);
            assert_eq!(v["daemon"]["version"], env!("CARGO_PKG_VERSION"));
            assert!(v["daemon"]["uptimeSeconds"].is_u64());
            let gw = &v["gateway"];
            assert_eq!(gw["name"], "gw-east");
            assert_eq!(gw["publicIpAddresses"], serde_json::json!(["198.18.0.2"]));
            assert_eq!(gw["sku"], "VpnGw1");
            assert_eq!(gw["enableBgp"], false);
            let conns = v["connections"].as_array().unwrap();
            assert_eq!(conns.len(), 1);
            let c = &conns[0];
            assert_eq!(c["name"], "to-branch");
            assert_eq!(c["localNetworkGateway"], "branch-site");
            assert_eq!(c["remoteAddress"], "198.18.0.1");
            assert_eq!(c["connectionStatus"], "Unknown");
            assert!(c["connectionStatusReason"].is_null());
            for counter in [
                "ingressBytesTransferred",
                "egressBytesTransferred",
                "ingressPackets",
                "egressPackets",
                "childSaCount",
                "ikeSaRekeys",
                "childSaRekeys",
                "ingressPacketDropTsMismatch",
                "egressPacketDropTsMismatch",
                "ingressPacketDrop",
                "egressPacketDrop",
            ] {
                assert_eq!(c[counter], 0, "{counter}");
            }
            assert!(c["tunnels"].is_array());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn empty_daemon_renders() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let log = Arc::new(DiagLog::open(&dir.path().join("logs"), 1 << 20, 2).unwrap());
        let controller =
            Arc::new(Controller::load(Box::new(store), log, Default::default()).unwrap());
        let (status, _, body) = get(app(controller.clone(), false), "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("No gateway is configured yet"));
        assert!(body.contains("No connections are configured"));
        let (_, _, json) = get(app(controller, false), "/status.json").await;
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(v["gateway"].is_null());
        assert_eq!(v["connections"], serde_json::json!([]));
    }
}
