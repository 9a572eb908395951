//! Operator tools: the diagnostic log, packet capture and the failover drill.

pub mod capture;
pub mod diaglog;
pub mod drill;
