//! The data plane: TUN device, UDP 500/4500 sockets, batching, forwarding table, counters.
//!
//! It is the only layer that touches packets at line rate; the engines it drives are sans-IO.
