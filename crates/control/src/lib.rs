//! The vgw control plane: desired state (resources with Azure's names), validation, the embedded store,
//! and the REST API. The API and the CLI only change desired state and read status; a reconciler (fed by
//! [`controller::Controller::subscribe`]) drives the engines toward it.
//!
//! The layout (docs/architecture.md): [`store`] keeps the desired state, [`plan`] translates it into
//! engine configurations, [`drivers`] run one event loop per engine, [`api`] serves the REST API,
//! [`status`] and [`ops`] are the operator evidence, [`ha`] the active-active interconnect, and
//! [`server`] wires them together.

pub mod activity;
pub mod api;
pub mod controller;
pub mod drivers;
pub mod evidence;
pub mod evidence_api;
pub mod ha;
pub mod host_diag;
pub mod ike_admission;
pub mod ops;
pub mod plan;
pub mod server;
pub mod status;
pub mod store;

/// The Azure vocabulary, from `crates/model`.
pub use vgw_model::{model, state, validate};
