//! The packet-capture tap: where the data plane shows packets to a capture in progress.
//!
//! The workers call [`CaptureTap::outer`] for every UDP datagram they send or receive on the IKE and
//! NAT-T ports (IKE, ESP-in-UDP, keepalives) and [`CaptureTap::inner`] for every inner IP packet they
//! seal or deliver. With no capture running each call is one relaxed atomic load; only while an
//! operator captures do the calls take the sink's lock and copy the packet. That keeps the hot path
//! free of locks in normal operation, and a capture is a short diagnostic session where the cost is
//! accepted (it is documented in docs/operations.md).
//!
//! What to keep, in which format, and how big the file may grow is the sink's business
//! ([`CaptureSink`]); the control plane implements it with a filtered pcapng writer.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::fib::TunnelId;

/// Which way a packet went, seen from the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the peer (outer) or out of a tunnel towards the LAN (inner).
    Inbound,
    /// To the peer (outer) or from the LAN into a tunnel (inner).
    Outbound,
}

/// Receives the packets the tap shows while a capture runs.
pub trait CaptureSink: Send {
    /// A UDP payload exchanged with `remote` on our port `local_port` (500 or 4500), as on the wire
    /// (on 4500 this includes the non-ESP marker of IKE messages).
    fn outer(&mut self, direction: Direction, remote: SocketAddr, local_port: u16, payload: &[u8]);
    /// An inner IP packet of `tunnel`, in clear text.
    fn inner(&mut self, tunnel: TunnelId, direction: Direction, packet: &[u8]);
}

/// The switch between the data plane and a capture; shared by every worker.
#[derive(Default)]
pub struct CaptureTap {
    active: AtomicBool,
    sink: Mutex<Option<Box<dyn CaptureSink>>>,
}

impl CaptureTap {
    /// Whether a capture runs (one relaxed load: what the hot path pays when none does).
    #[inline]
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Starts showing packets to `sink`, replacing (and returning) any previous sink.
    pub fn start(&self, sink: Box<dyn CaptureSink>) -> Option<Box<dyn CaptureSink>> {
        let mut guard = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        let previous = guard.replace(sink);
        self.active.store(true, Ordering::Release);
        previous
    }

    /// Stops the capture and hands the sink back so the caller can finish its file.
    pub fn stop(&self) -> Option<Box<dyn CaptureSink>> {
        self.active.store(false, Ordering::Release);
        self.sink.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Shows an outer datagram (see [`CaptureSink::outer`]).
    #[inline]
    pub fn outer(&self, direction: Direction, remote: SocketAddr, local_port: u16, payload: &[u8]) {
        if !self.is_active() {
            return;
        }
        if let Some(sink) = self.sink.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            sink.outer(direction, remote, local_port, payload);
        }
    }

    /// Shows an inner packet (see [`CaptureSink::inner`]).
    #[inline]
    pub fn inner(&self, tunnel: TunnelId, direction: Direction, packet: &[u8]) {
        if !self.is_active() {
            return;
        }
        if let Some(sink) = self.sink.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            sink.inner(tunnel, direction, packet);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Default)]
    struct Counting(Arc<Mutex<(usize, usize)>>);

    impl CaptureSink for Counting {
        fn outer(&mut self, _: Direction, _: SocketAddr, _: u16, _: &[u8]) {
            self.0.lock().unwrap().0 += 1;
        }
        fn inner(&mut self, _: TunnelId, _: Direction, _: &[u8]) {
            self.0.lock().unwrap().1 += 1;
        }
    }

    #[test]
    fn shows_packets_only_while_started() {
        let tap = CaptureTap::default();
        let seen = Arc::new(Mutex::new((0, 0)));
        let remote: SocketAddr = "198.18.0.1:4500".parse().unwrap();
        tap.outer(Direction::Inbound, remote, 4500, b"x");
        assert!(!tap.is_active());
        tap.start(Box::new(Counting(seen.clone())));
        tap.outer(Direction::Inbound, remote, 4500, b"x");
        tap.inner(1, Direction::Outbound, b"y");
        assert!(tap.stop().is_some());
        tap.inner(1, Direction::Outbound, b"y");
        assert_eq!(*seen.lock().unwrap(), (1, 1));
    }
}
