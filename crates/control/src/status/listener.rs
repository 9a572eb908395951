//! The evidence listener of `vgw serve --metrics-listen ADDR`: `GET /metrics` ([`super::metrics`]) and
//! the read-only status page ([`super::page`]) on one router.

use axum::Router;
use axum::routing::get;

use super::metrics::{MetricsState, metrics};

/// The metrics router: `GET /metrics`, plus the read-only status page.
pub fn router(state: MetricsState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .merge(super::page::routes())
        .with_state(state)
}
