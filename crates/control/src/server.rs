//! `vgw serve`: opens the store, and serves the API on a Unix socket (mode 0600) and, optionally, on TCP
//! with a bearer token.

use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use crate::api::error::ApiError;
use crate::api::{AppState, router};
use crate::controller::Controller;
use crate::ops::diaglog::{Category, DiagLog};
use crate::status::{NoEngines, StatusSource};
use crate::store::SqliteStore;

/// Size at which the diagnostic log rotates.
const LOG_FILE_BYTES: u64 = 16 << 20;
/// Rotated diagnostic log files kept.
const LOG_FILES_KEPT: usize = 5;

/// Where and how the daemon serves.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Directory of the state database (created 0700).
    pub state_dir: PathBuf,
    /// The Unix socket of the API (created 0600).
    pub api_socket: PathBuf,
    /// Optional TCP listener; needs `api_token_file`.
    pub api_listen: Option<SocketAddr>,
    /// File holding the bearer token for the TCP listener.
    pub api_token_file: Option<PathBuf>,
    /// The data plane (TUN, UDP 500/4500) and the tunnel engines; None serves the API only.
    pub dataplane: Option<vgw_dataplane::DataPlaneConfig>,
    /// Serve Prometheus metrics on this TCP address (no authentication: use loopback).
    pub metrics_listen: Option<SocketAddr>,
    /// HTTPS port of the point-to-site profile download (0: off).
    pub p2s_download_port: u16,
    /// Timeouts and connection caps of the profile download listener.
    pub p2s_download_limits: crate::api::p2s_download::DownloadLimits,
    /// Active-active instance index (0 or 1): which `ipConfigurations[]` and peering address to serve.
    pub instance: usize,
    /// The other active-active instance's API address (its LAN address), for the interconnect.
    pub peer_instance: Option<SocketAddr>,
    /// Pull the desired state from the other instance (this instance is the replica).
    pub replicate: bool,
    /// Most local network gateways, and most connections, the configuration may hold.
    pub max_resources: usize,
    /// Days the activity log keeps its entries ([`crate::activity`]).
    pub activity_log_retention_days: u32,
}

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn serve(config: ServeConfig) -> Result<(), String> {
    // Everything the daemon creates (database, WAL, socket, logs) is private to its user.
    // SAFETY: umask only swaps the process's file-creation mask; it cannot fail.
    unsafe { libc::umask(0o077) };
    create_private_dir(&config.state_dir)?;
    crate::host_diag::configure(crate::host_diag::HostConfig {
        state_dir: config.state_dir.clone(),
        tun_name: config.dataplane.as_ref().map(|d| d.tun_name.clone()),
        mss_clamp: config.dataplane.as_ref().map_or(1350, |d| d.mss_clamp),
    });
    let store = SqliteStore::open(&config.state_dir)?;
    let activity = Arc::new(crate::activity::ActivityLog::open(
        &config.state_dir,
        config.activity_log_retention_days,
    )?);
    let log = Arc::new(
        DiagLog::open(
            &config.state_dir.join("logs"),
            LOG_FILE_BYTES,
            LOG_FILES_KEPT,
        )
        .map_err(|e| {
            format!(
                "cannot open the diagnostic log in {}: {e}",
                config.state_dir.display()
            )
        })?,
    );
    let controller = Arc::new(Controller::load(
        Box::new(store),
        log.clone(),
        crate::plan::Instance(config.instance),
    )?);
    controller.set_max_resources(config.max_resources);
    let started = std::time::SystemTime::now();
    let bgp_status = Arc::new(crate::plan::bgp::BgpStatus::default());
    let downloads = Arc::new(crate::api::p2s_download::Downloads::with_limits(
        config.p2s_download_port,
        config.state_dir.join("p2s"),
        config.p2s_download_limits.clone(),
    ));
    let (status, tunnels, live): (Arc<dyn StatusSource>, _, _) = match config.dataplane.clone() {
        Some(dp) => {
            crate::ops::drill::clear_leftover_cut();
            let live = Arc::new(crate::drivers::tunnels::LiveStatus::default());
            let (handle, bgp_links) = crate::drivers::tunnels::start(controller.clone(), log.clone(), live.clone(), dp, config.state_dir.join("p2s")).map_err(|e| {
                format!("cannot start the data plane: {e}; run vgw serve as root (it needs /dev/net/tun and UDP 500/4500), or pass --dataplane off to serve only the API")
            })?;
            crate::drivers::bgp_speaker::spawn(
                controller.clone(),
                log.clone(),
                bgp_status.clone(),
                bgp_links,
            );
            (
                live.clone() as Arc<dyn StatusSource>,
                Some(handle),
                Some(live),
            )
        }
        None => (Arc::new(NoEngines) as Arc<dyn StatusSource>, None, None),
    };
    let local_status = status.clone();
    let ha = match config.peer_instance {
        Some(api) => {
            let token_file = config.api_token_file.as_ref().ok_or(
                "--peer-instance needs --api-token-file: the instances authenticate to each other with the shared token",
            )?;
            let token = read_token(token_file)?;
            Some(crate::ha::spawn(
                crate::ha::PeerInstance {
                    api,
                    token,
                    replicate: config.replicate,
                },
                controller.clone(),
                log.clone(),
            ))
        }
        None if config.replicate => {
            return Err(
                "--replicate needs --peer-instance ADDR (the primary instance's API)".into(),
            );
        }
        None => None,
    };
    let status: Arc<dyn StatusSource> = match &ha {
        Some(ha) => Arc::new(crate::ha::MergedStatus {
            local: local_status.clone(),
            ha: ha.clone(),
        }),
        None => status,
    };
    let metrics_app = crate::status::listener::router(crate::status::metrics::MetricsState {
        controller: controller.clone(),
        live: live.clone(),
        started,
        bgp: bgp_status.clone(),
        status: Some(status.clone()),
    });
    log.log(
        Category::GatewayDiagnosticLog,
        "info",
        "/vgw",
        &format!("vgw {} started", env!("CARGO_PKG_VERSION")),
        serde_json::Value::Null,
    );
    let controller_for_downloads = controller.clone();
    let app = router(AppState {
        controller,
        status,
        log: log.clone(),
        tunnels,
        live,
        captures: Arc::new(crate::ops::capture::CaptureManager::new(
            config.state_dir.join("captures"),
        )),
        bgp: bgp_status,
        downloads: downloads.clone(),
        local_status,
        ha,
    });

    let unix = bind_unix(&config.api_socket)?;
    tracing::info!(socket = %config.api_socket.display(), state_dir = %config.state_dir.display(), "vgw API serving");
    let mut tasks = tokio::task::JoinSet::new();
    // The profile download runs on the gateway host only (with the data plane); it is detached, so it
    // does not hold the daemon up at shutdown.
    if config.dataplane.is_some() && config.p2s_download_port != 0 {
        let (controller, downloads) = (controller_for_downloads, downloads.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::api::p2s_download::serve(controller, downloads).await {
                tracing::warn!(error = %e, "point-to-site profile downloads are off");
            }
        });
    }
    if let Some(addr) = config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?;
        tracing::info!(%addr, "Prometheus metrics at /metrics");
        tasks.spawn(async move {
            axum::serve(listener, metrics_app)
                .with_graceful_shutdown(shutdown_signal())
                .await
                .map_err(|e| e.to_string())
        });
    }
    let app = app.merge(crate::activity::routes(activity.clone()));
    {
        let app = app.clone().layer(middleware::from_fn_with_state(
            (activity.clone(), crate::activity::Listener::Unix),
            crate::activity::record,
        ));
        let app = app.into_make_service_with_connect_info::<crate::activity::PeerCred>();
        tasks.spawn(async move {
            axum::serve(unix, app)
                .with_graceful_shutdown(shutdown_signal())
                .await
                .map_err(|e| e.to_string())
        });
    }
    if let Some(addr) = config.api_listen {
        let token_file = config.api_token_file.as_ref().ok_or(
            "--api-listen needs --api-token-file: the TCP listener never serves without a token",
        )?;
        let token = read_token(token_file)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        tracing::info!(%addr, "vgw API serving on TCP with bearer-token authentication");
        let app: Router = app
            .layer(middleware::from_fn_with_state(
                (activity.clone(), crate::activity::Listener::Tcp),
                crate::activity::record,
            ))
            .layer(middleware::from_fn_with_state(
                Arc::new(token),
                require_token,
            ));
        tasks.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown_signal())
                .await
                .map_err(|e| e.to_string())
        });
    }
    let mut result = Ok(());
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(e)) | Err(e) = done.map_err(|e| e.to_string()) {
            result = Err(e);
        }
    }
    let _ = std::fs::remove_file(&config.api_socket);
    tracing::info!("vgw stopped");
    result
}

fn create_private_dir(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create state directory {}: {e}", dir.display()))
}

/// Binds the API socket, 0600. A stale socket from a crashed daemon is replaced; a live one is an error.
fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener, String> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
        && !parent.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!(
                "another vgw is serving on {}; stop it or pass another --api-socket",
                path.display()
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
    Ok(listener)
}

fn read_token(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(file = %path.display(), "the API token file is readable by group or others; chmod 600 it");
    }
    let token = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
    let token = token.trim().to_string();
    if token.len() < 16 {
        return Err(format!(
            "the token in {} is shorter than 16 characters; use a long random token",
            path.display()
        ));
    }
    Ok(token)
}

async fn require_token(State(token): State<Arc<String>>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if aws_lc_rs::constant_time::verify_slices_are_equal(presented.as_bytes(), token.as_bytes())
        .is_err()
    {
        return ApiError::unauthorized().into_response();
    }
    next.run(request).await
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
