//! Sans-IO IKEv2 engine (RFC 7296): message codec, key derivation, exchanges.
//!
//! The engine knows nothing of sockets, threads or clocks: the caller passes datagrams and `Instant`s in
//! and takes datagrams, timers and events (new Child SA keys for the data plane) out.
