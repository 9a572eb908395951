//! API routes for operator evidence, kept apart from [`crate::api`] and merged into its router:
//! `GET /api/diagnostics/host` (the daemon's host checks, [`crate::host_diag`]),
//! `POST /api/virtualNetworkGateways/{gw}/collectEvidence?connection=&logMinutes=&captureSeconds=` and
//! `GET /api/evidence/{file}` ([`crate::evidence`]), and [`reset_hook`], which takes an evidence
//! snapshot before every gateway or connection reset.

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::evidence::{self, Options};

/// The evidence routes, merged into [`crate::api::router`].
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/diagnostics/host", get(host_diagnostics))
        .route(
            "/api/virtualNetworkGateways/{gw}/collectEvidence",
            post(collect),
        )
        .route("/api/evidence/{file}", get(download))
}

async fn host_diagnostics() -> Response {
    let report = tokio::task::spawn_blocking(crate::host_diag::daemon_report_json)
        .await
        .unwrap_or_else(|e| json!({ "error": e.to_string() }));
    axum::Json(report).into_response()
}

fn options(q: &HashMap<String, String>, reason: String) -> Result<Options, ApiError> {
    let log_minutes = match q.get("logMinutes") {
        None => evidence::DEFAULT_LOG_MINUTES,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|m| (1..=10_080).contains(m))
            .ok_or_else(|| {
                ApiError::invalid(
                    "logMinutes",
                    format!("logMinutes must be 1-10080, got '{v}'"),
                )
            })?,
    };
    let capture_seconds = match q.get("captureSeconds") {
        None => 0,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|s| *s <= evidence::MAX_CAPTURE_SECONDS)
            .ok_or_else(|| {
                ApiError::invalid(
                    "captureSeconds",
                    format!(
                        "captureSeconds must be 0-{}, got '{v}'",
                        evidence::MAX_CAPTURE_SECONDS
                    ),
                )
            })?,
    };
    Ok(Options {
        connection: q.get("connection").cloned(),
        log_minutes,
        reason,
        capture_seconds,
    })
}

async fn collect(
    State(app): State<AppState>,
    Path(gw): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let result = async {
        let (state, _) = app.controller.snapshot().await;
        if state.gateway.as_ref().is_none_or(|g| g.name != gw) {
            return Err(ApiError::not_found("virtualNetworkGateways", &gw));
        }
        if let Some(c) = q.get("connection")
            && !state.connections.contains_key(c)
        {
            return Err(ApiError::not_found("connections", c));
        }
        let opts = options(&q, "collect-evidence".into())?;
        let (path, manifest) = evidence::collect(&app, &opts)
            .await
            .map_err(ApiError::internal)?;
        Ok(json!({ "archive": path.display().to_string(), "manifest": manifest }))
    }
    .await;
    match result {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn download(Path(file): Path<String>) -> Response {
    let valid = file.starts_with("evidence-")
        && file.ends_with(".tar.gz")
        && file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    let Some(dir) = crate::host_diag::state_dir().map(|d| evidence::dir(&d)) else {
        return ApiError::not_found("evidence", &file).into_response();
    };
    if !valid {
        return ApiError::invalid("file", format!("'{file}' is not an evidence archive name"))
            .into_response();
    }
    match tokio::fs::read(dir.join(&file)).await {
        Ok(bytes) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/gzip")],
            bytes,
        )
            .into_response(),
        Err(_) => ApiError::not_found("evidence", &file).into_response(),
    }
}

/// Before `POST .../virtualNetworkGateways/{gw}/reset` and `POST .../connections/{c}/resetconnection`,
/// collects an evidence bundle (unless `?skipEvidence=true`) and adds `evidenceArchive` (a vgw
/// extension) to the reset's JSON answer; a failed snapshot does not block the reset, it is reported
/// as `evidenceError`.
pub async fn reset_hook(State(app): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let path = request.uri().path().to_string();
    let segs: Vec<&str> = path.trim_start_matches("/api/").split('/').collect();
    let connection = match segs.as_slice() {
        ["virtualNetworkGateways", _, "reset"] => None,
        ["connections", c, "resetconnection"] => Some(c.to_string()),
        _ => return next.run(request).await,
    };
    let q: HashMap<String, String> = request
        .uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    if q.get("skipEvidence").is_some_and(|v| v == "true") {
        return next.run(request).await;
    }
    let opts = Options {
        connection,
        log_minutes: evidence::DEFAULT_LOG_MINUTES,
        reason: format!("before POST {path}"),
        capture_seconds: 0,
    };
    let snapshot = evidence::collect(&app, &opts).await;
    let response = next.run(request).await;
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let mut value: Value = match serde_json::from_slice(&bytes) {
        Ok(v @ Value::Object(_)) => v,
        _ if bytes.is_empty() => json!({}),
        _ => return Response::from_parts(parts, Body::from(bytes)),
    };
    match snapshot {
        Ok((archive, _)) => value["evidenceArchive"] = json!(archive.display().to_string()),
        Err(e) => value["evidenceError"] = json!(e),
    }
    let mut parts = parts;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(value.to_string()))
}
