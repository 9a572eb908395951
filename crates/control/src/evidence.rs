//! Evidence bundles (`vgw vnet-gateway collect-evidence`, and the snapshot every reset takes first):
//! one tar.gz with what an incident needs before anything is changed.
//!
//! Parts: the gateways, the connections (status) and each connection's diagnostics (SAs, counters,
//! routes into the tunnel), BGP peer status, learned routes and the routes advertised to each peer,
//! the kernel's routes, rules and links and the forwarding switches, a metrics snapshot, the
//! diagnostic logs of the last N minutes, the daemon's host checks (`doctor`), the desired state as
//! `export` prints it (without secrets), and `manifest.json` with the collection times, sizes and
//! SHA-256 of every part. Built by the daemon from its own API (so it works from a remote CLI) and kept
//! in `STATE_DIR/evidence/`, the newest [`KEEP`] archives.

use std::io::Write;
use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::api::AppState;
use crate::ops::diaglog::{now_ms, rfc3339};

/// Archives kept in the evidence directory; older ones are deleted.
pub const KEEP: usize = 10;
/// Default window of diagnostic logs, in minutes.
pub const DEFAULT_LOG_MINUTES: u64 = 30;

/// What to collect.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Only this connection's diagnostics (all connections when None).
    pub connection: Option<String>,
    /// Minutes of diagnostic logs.
    pub log_minutes: u64,
    /// Why the bundle is taken (`collect-evidence`, `reset of ...`).
    pub reason: String,
    /// Seconds of packet capture to include (0: none; at most [`MAX_CAPTURE_SECONDS`]).
    pub capture_seconds: u64,
}

/// Longest packet capture a bundle takes.
pub const MAX_CAPTURE_SECONDS: u64 = 60;

/// The evidence directory of a state directory.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("evidence")
}

struct Part {
    name: String,
    bytes: Vec<u8>,
    source: String,
    status: u16,
    collected_ms: u64,
}

async fn call(app: &Router, method: Method, uri: &str) -> (u16, Vec<u8>) {
    let request = match Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
    {
        Ok(r) => r,
        Err(e) => return (500, format!("bad internal request {uri}: {e}").into_bytes()),
    };
    match app.clone().oneshot(request).await {
        Ok(response) => {
            let status = response.status().as_u16();
            match axum::body::to_bytes(response.into_body(), 256 << 20).await {
                Ok(b) => (status, b.to_vec()),
                Err(e) => (500, format!("cannot read {uri}: {e}").into_bytes()),
            }
        }
        Err(e) => (500, format!("{uri}: {e}").into_bytes()),
    }
}

fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn safe_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Collects a bundle and writes it to the evidence directory; returns its path and manifest.
pub async fn collect(app_state: &AppState, options: &Options) -> Result<(PathBuf, Value), String> {
    let state_dir = crate::host_diag::state_dir()
        .ok_or("the evidence directory is unknown (the daemon was not started by vgw serve)")?;
    let started = now_ms();
    let app = crate::api::router(app_state.clone());
    let mut parts: Vec<Part> = Vec::new();
    let mut get = async |name: String, method: Method, uri: String| -> Value {
        let (status, bytes) = call(&app, method, &uri).await;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        parts.push(Part {
            name,
            bytes,
            source: uri,
            status,
            collected_ms: now_ms(),
        });
        value
    };
    let gateways = get(
        "gateways.json".into(),
        Method::GET,
        "/api/virtualNetworkGateways".into(),
    )
    .await;
    let connections = get(
        "connections.json".into(),
        Method::GET,
        "/api/connections".into(),
    )
    .await;
    let names: Vec<String> = match &options.connection {
        Some(c) => vec![c.clone()],
        None => connections["value"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    };
    for name in &names {
        get(
            format!("connections/{}-diagnostics.json", safe_name(name)),
            Method::GET,
            format!("/api/connections/{}/diagnostics", seg(name)),
        )
        .await;
    }
    let gw_names: Vec<String> = gateways["value"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|g| g["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for gw in &gw_names {
        let base = format!("/api/virtualNetworkGateways/{}", seg(gw));
        let peers = get(
            "bgp-peer-status.json".into(),
            Method::POST,
            format!("{base}/getBgpPeerStatus"),
        )
        .await;
        get(
            "learned-routes.json".into(),
            Method::POST,
            format!("{base}/getLearnedRoutes"),
        )
        .await;
        let neighbors: Vec<String> = peers["value"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p["neighbor"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for n in neighbors {
            get(
                format!("advertised-routes/{}.json", safe_name(&n)),
                Method::POST,
                format!("{base}/getAdvertisedRoutes?peer={}", seg(&n)),
            )
            .await;
        }
    }
    let mut capture_error = None;
    if options.capture_seconds > 0 {
        let base = match (&options.connection, gw_names.first()) {
            (Some(c), _) => format!("/api/connections/{}", seg(c)),
            (None, Some(gw)) => format!("/api/virtualNetworkGateways/{}", seg(gw)),
            (None, None) => String::new(),
        };
        let (status, body) = call(&app, Method::POST, &format!("{base}/startPacketCapture")).await;
        if status < 300 {
            tokio::time::sleep(std::time::Duration::from_secs(
                options.capture_seconds.min(MAX_CAPTURE_SECONDS),
            ))
            .await;
            let stopped = get(
                "capture-stop.json".into(),
                Method::POST,
                format!("{base}/stopPacketCapture"),
            )
            .await;
            if let Some(file) = stopped["fileName"].as_str() {
                get(
                    "capture.pcapng".into(),
                    Method::GET,
                    format!("/api/packetCaptures/{}", seg(file)),
                )
                .await;
            }
        } else {
            capture_error = Some(Part {
                name: "capture-error.json".into(),
                bytes: body,
                source: format!("POST {base}/startPacketCapture"),
                status,
                collected_ms: now_ms(),
            });
        }
    }
    let since = started.saturating_sub(options.log_minutes.max(1) * 60_000);
    get(
        "diagnostic-logs.json".into(),
        Method::GET,
        format!("/api/logs?sinceMs={since}&limit=10000"),
    )
    .await;
    get(
        "export.json".into(),
        Method::GET,
        "/api/desiredState".into(),
    )
    .await;
    parts.extend(capture_error);
    // The daemon's host checks, the kernel's view and the metrics.
    let (host, kernel) =
        tokio::task::spawn_blocking(|| (crate::host_diag::daemon_report_json(), kernel_view()))
            .await
            .map_err(|e| e.to_string())?;
    let at = now_ms();
    parts.push(Part {
        name: "doctor.json".into(),
        bytes: serde_json::to_vec_pretty(&host).unwrap_or_default(),
        source: "host checks (GET /api/diagnostics/host)".into(),
        status: 200,
        collected_ms: at,
    });
    parts.push(Part {
        name: "kernel-routes.txt".into(),
        bytes: kernel.into_bytes(),
        source: "ip route/rule/link, /proc/sys/net/*/forwarding".into(),
        status: 200,
        collected_ms: now_ms(),
    });
    let metrics = crate::status::metrics::render(&crate::status::metrics::MetricsState {
        controller: app_state.controller.clone(),
        live: app_state.live.clone(),
        started: crate::host_diag::started(),
        bgp: app_state.bgp.clone(),
        status: Some(app_state.status.clone()),
    })
    .await;
    parts.push(Part {
        name: "metrics.txt".into(),
        bytes: metrics.into_bytes(),
        source: "GET /metrics".into(),
        status: 200,
        collected_ms: now_ms(),
    });
    let finished = now_ms();
    let file_name = format!(
        "evidence-{}.tar.gz",
        rfc3339(started).replace([':', '.'], "-")
    );
    let manifest = json!({
        "archive": file_name,
        "reason": options.reason,
        "startedUtc": rfc3339(started),
        "finishedUtc": rfc3339(finished),
        "connection": options.connection,
        "logMinutes": options.log_minutes,
        "captureSeconds": options.capture_seconds,
        "host": crate::host_diag::identity("daemon"),
        "parts": parts.iter().map(|p| json!({
            "name": p.name,
            "source": p.source,
            "httpStatusCode": p.status,
            "bytes": p.bytes.len(),
            "sha256": hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &p.bytes).as_ref()),
            "collectedUtc": rfc3339(p.collected_ms),
        })).collect::<Vec<_>>(),
    });
    let dir = dir(&state_dir);
    let path = dir.join(&file_name);
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    let write_path = path.clone();
    tokio::task::spawn_blocking(move || {
        write_archive(&write_path, &parts, &manifest_bytes, started)
    })
    .await
    .map_err(|e| e.to_string())??;
    prune(&dir);
    Ok((path, manifest))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_archive(
    path: &Path,
    parts: &[Part],
    manifest: &[u8],
    started_ms: u64,
) -> Result<(), String> {
    let dir = path.parent().ok_or("no evidence directory")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let tmp = path.with_extension("partial");
    let file =
        std::fs::File::create(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let root = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".tar.gz"))
        .unwrap_or("evidence")
        .to_string();
    fn add<W: Write>(
        tar: &mut tar::Builder<W>,
        root: &str,
        name: &str,
        bytes: &[u8],
        started_ms: u64,
    ) -> std::io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(started_ms / 1000);
        header.set_cksum();
        tar.append_data(&mut header, format!("{root}/{name}"), bytes)
    }
    let result = (|| -> std::io::Result<()> {
        add(&mut tar, &root, "manifest.json", manifest, started_ms)?;
        for p in parts {
            add(&mut tar, &root, &p.name, &p.bytes, started_ms)?;
        }
        let gz = tar.into_inner()?;
        let mut file = gz.finish()?;
        file.flush()?;
        file.sync_all()
    })();
    result.map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot rename to {}: {e}", path.display()))
}

/// Deletes all but the newest [`KEEP`] archives.
fn prune(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(KEEP);
    for old in names.into_iter().take(excess) {
        let _ = std::fs::remove_file(old);
    }
}

/// `ip` output and the forwarding switches of the daemon's namespace.
fn kernel_view() -> String {
    let mut out = String::new();
    for args in [
        &["-4", "route", "show", "table", "all"][..],
        &["-6", "route", "show", "table", "all"],
        &["rule", "show"],
        &["-s", "link", "show"],
        &["addr", "show"],
    ] {
        out.push_str(&format!("$ ip {}\n", args.join(" ")));
        match std::process::Command::new("ip").args(args).output() {
            Ok(o) => {
                out.push_str(&String::from_utf8_lossy(&o.stdout));
                out.push_str(&String::from_utf8_lossy(&o.stderr));
            }
            Err(e) => out.push_str(&format!("cannot run ip: {e}\n")),
        }
        out.push('\n');
    }
    for f in [
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/net/ipv6/conf/all/forwarding",
    ] {
        let v = std::fs::read_to_string(f).unwrap_or_else(|e| format!("{e}\n"));
        out.push_str(&format!("{f} = {v}"));
    }
    out
}
