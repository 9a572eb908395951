//! The Azure vocabulary of vgw: the resources with Azure's names ([`model`]), every validation rule
//! with its own [`validate::ValidationError`], and the desired state as one value with its
//! export/apply document and diff ([`state`]). No HTTP, async runtime or database: the control
//! plane, the CLI and the PKI's client profiles share these types.

pub mod model;
pub mod state;
pub mod validate;
