//! The REST API: the router and handlers, its errors, the OpenAPI document and the P2S profile
//! download server.

pub mod error;
mod handlers;
pub mod openapi;
pub mod p2s_download;

pub use handlers::*;
