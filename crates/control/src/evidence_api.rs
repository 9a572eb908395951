//! API routes for operator evidence, kept apart from [`crate::api`] and merged into its router:
//! `GET /api/diagnostics/host` (the daemon's host checks, [`crate::host_diag`]).

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::AppState;

/// The evidence routes, merged into [`crate::api::router`].
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/diagnostics/host", get(host_diagnostics))
}

async fn host_diagnostics() -> Response {
    let report = tokio::task::spawn_blocking(crate::host_diag::daemon_report_json)
        .await
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
    axum::Json(report).into_response()
}
