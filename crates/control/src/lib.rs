//! The vgw control plane: desired state (resources with Azure's names), validation, the embedded store,
//! and the REST API. The API and the CLI only change desired state and read status; a reconciler (fed by
//! [`controller::Controller::subscribe`]) drives the engines toward it.

pub mod activity;
pub mod api;
pub mod bfd_service;
pub mod bgp;
pub mod bgp_speaker;
pub mod capture;
pub mod controller;
pub mod diaglog;
pub mod drill;
pub mod error;
pub mod evidence;
pub mod evidence_api;
pub mod ha;
pub mod host_diag;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod p2s;
pub mod p2s_download;
pub mod server;
pub mod state;
pub mod status;
pub mod statuspage;
pub mod store;
pub mod tunnels;
pub mod validate;
pub mod wireguard;
