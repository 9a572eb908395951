//! Sans-IO BGP-4 speaker (RFC 4271) for vgw: the wire codec ([`codec`]), one session's state machine
//! ([`session`]) and the RIBs with best-path selection and export policy ([`rib`]).
//!
//! Like vgw's IKE engine, nothing here touches a socket, a thread or a clock: the caller feeds TCP
//! bytes and `Instant`s in and takes bytes to send, timer deadlines, events and forwarding-table
//! changes out. That keeps the protocol logic deterministic under test (see `tests/pair.rs`, where
//! sessions talk through memory on a simulated clock) and lets the fuzz target reach every parser.
#![forbid(unsafe_code)]

pub mod codec;
pub mod rib;
pub mod session;

pub use codec::{Message, Notification, Origin, PathAttributes, Segment, Update};
pub use rib::{FibChange, Outbound, PeerId, PeerInfo, Rib, RibChanges, RouteView};
pub use session::{DownReason, Event, Negotiated, Session, SessionConfig, State};
