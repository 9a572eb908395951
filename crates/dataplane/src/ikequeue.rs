//! Admission of IKE datagrams to the control plane: two bounded queues, token buckets, counters.
//!
//! One queue for everything let a flood of IKE_SA_INIT from forged sources starve the peers that
//! matter (issue 20): their retransmissions and DPD were dropped as "queue full" together with the
//! junk. Every IKE datagram the receive threads see is now classified by peeking at its fixed
//! header (RFC 7296 §3.1; no parse, no allocation):
//!
//! - **established**: it names one of our IKE SAs by the SPI we allocated (the responder SPI when
//!   the sender is the original initiator, the initiator SPI otherwise), as published by the
//!   control plane in [`KnownSet`]. It goes to the established queue, which the IKE driver
//!   always serves first, and is never rate-limited.
//! - **new**: anything else (IKE_SA_INIT requests, messages for SAs we do not know). It must pass a
//!   per-source token bucket and, for IKE_SA_INIT requests, a global token bucket per listening
//!   port, before it is copied into the new queue. RFC 7296 §2.6 cookies (above 64 half-open SAs,
//!   in the engine) keep the cost of what is admitted low; these buckets bound how much reaches
//!   the engine at all.
//!
//! IKE_SA_INIT requests from the address of a configured local gateway ([`IkeReceivers::known_peers`])
//! skip the global bucket (the per-source one still applies): a flood from forged sources cannot
//! keep a configured site from connecting. With point-to-site on, clients come from anywhere and
//! share the global bucket; the engine's cookies protect the DH computations.
//!
//! Memory is bounded: both queues have a fixed capacity, the per-source table is a fixed array
//! of buckets indexed by a hash of the address (sources that collide share a bucket), and
//! [`KnownSet`] is a fixed array of atomics. Every outcome is counted in [`IkeQueueCounters`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::IkeDatagram;

/// Capacity of the established queue (datagrams).
pub const ESTABLISHED_CAPACITY: usize = 2048;
/// Capacity of the new queue (datagrams).
pub const NEW_CAPACITY: usize = 1024;
/// Per-source bucket: datagrams per second a source may send for no known SA.
pub const PER_SOURCE_RATE: u32 = 50;
/// Per-source bucket: burst.
pub const PER_SOURCE_BURST: u32 = 200;
/// Global IKE_SA_INIT requests per second per listening port.
pub const INIT_RATE: u32 = 2000;
/// Global IKE_SA_INIT burst per listening port.
pub const INIT_BURST: u32 = 2000;
/// Buckets in the per-source table (a power of two).
const SOURCE_SLOTS: usize = 4096;
/// Slots in the known-SPI table (a power of two).
const SPI_SLOTS: usize = 8192;

/// IKE exchange type IKE_SA_INIT (RFC 7296 §3.1).
const IKE_SA_INIT: u8 = 34;
/// Header flag: the sender is the original initiator.
const FLAG_INITIATOR: u8 = 0x08;
/// Header flag: this is a response.
const FLAG_RESPONSE: u8 = 0x20;
/// Length of the IKE header.
const IKE_HEADER: usize = 28;

/// What the header says about a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IkeClass {
    /// Names an IKE SA of ours by our SPI.
    Established,
    /// An IKE_SA_INIT request (responder SPI zero).
    InitRequest,
    /// Anything else that looks like IKE: a message for an SA we do not know.
    Unknown,
    /// Shorter than an IKE header or not IKEv2: dropped here.
    Malformed,
}

/// Classifies an IKE message (non-ESP marker removed) by its header alone.
pub fn classify(msg: &[u8], known: &KnownSet) -> IkeClass {
    if msg.len() < IKE_HEADER || msg[17] >> 4 != 2 {
        return IkeClass::Malformed;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&msg[0..8]);
    let spi_i = u64::from_be_bytes(b);
    b.copy_from_slice(&msg[8..16]);
    let spi_r = u64::from_be_bytes(b);
    let (exchange, flags) = (msg[18], msg[19]);
    if exchange == IKE_SA_INIT && flags & FLAG_RESPONSE == 0 && spi_r == 0 {
        return IkeClass::InitRequest;
    }
    let ours = if flags & FLAG_INITIATOR != 0 {
        spi_r
    } else {
        spi_i
    };
    if known.contains(ours) {
        IkeClass::Established
    } else {
        IkeClass::Unknown
    }
}

/// A set of non-zero 64-bit keys (our IKE SPIs, or the configured peers' addresses as
/// [`peer_key`]s), published by the control plane for the receive threads (lock-free, fixed size).
///
/// Each key lives in one of two slots chosen by its hash; when both are taken by other keys it is
/// not recorded and its datagrams go through the new queue (slower under a flood, never lost to
/// classification alone).
pub struct KnownSet {
    slots: Box<[AtomicU64]>,
}

impl Default for KnownSet {
    fn default() -> Self {
        Self {
            slots: (0..SPI_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

fn spi_slot(spi: u64) -> usize {
    (spi.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as usize & (SPI_SLOTS - 1)
}

impl KnownSet {
    /// Whether `spi` is in the set (0 never is).
    pub fn contains(&self, spi: u64) -> bool {
        if spi == 0 {
            return false;
        }
        let s = spi_slot(spi);
        self.slots[s].load(Ordering::Relaxed) == spi
            || self.slots[s ^ 1].load(Ordering::Relaxed) == spi
    }

    /// Replaces the published set with `spis`: slots of SPIs no longer present are cleared.
    pub fn publish(&self, spis: &std::collections::HashSet<u64>) {
        for slot in self.slots.iter() {
            let v = slot.load(Ordering::Relaxed);
            if v != 0 && !spis.contains(&v) {
                slot.store(0, Ordering::Relaxed);
            }
        }
        for &spi in spis {
            if spi == 0 || self.contains(spi) {
                continue;
            }
            let s = spi_slot(spi);
            for i in [s, s ^ 1] {
                if self.slots[i].load(Ordering::Relaxed) == 0 {
                    self.slots[i].store(spi, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}

/// Counters of IKE admission, per queue and per drop reason.
#[derive(Debug, Default)]
pub struct IkeQueueCounters {
    /// Datagrams queued for established SAs.
    pub established_queued: AtomicU64,
    /// Established-SA datagrams dropped because their queue was full.
    pub established_full: AtomicU64,
    /// Datagrams queued in the new queue.
    pub new_queued: AtomicU64,
    /// New-queue datagrams dropped because the queue was full.
    pub new_full: AtomicU64,
    /// Dropped by the per-source token bucket.
    pub source_rate_limited: AtomicU64,
    /// IKE_SA_INIT requests dropped by the global token bucket.
    pub init_rate_limited: AtomicU64,
    /// Too short or not IKEv2.
    pub malformed: AtomicU64,
}

impl IkeQueueCounters {
    /// (queue or reason, count) pairs for metrics.
    pub fn snapshot(&self) -> [(&'static str, &'static str, u64); 7] {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("established", "queued", l(&self.established_queued)),
            ("established", "queue_full", l(&self.established_full)),
            ("new", "queued", l(&self.new_queued)),
            ("new", "queue_full", l(&self.new_full)),
            ("new", "source_rate_limited", l(&self.source_rate_limited)),
            ("new", "init_rate_limited", l(&self.init_rate_limited)),
            ("new", "malformed", l(&self.malformed)),
        ]
    }
}

/// A token bucket in milli-tokens, refilled from elapsed milliseconds.
#[derive(Clone, Copy, Default)]
struct Bucket {
    tag: u32,
    milli: u64,
    at_ms: u64,
}

impl Bucket {
    fn full(burst: u32) -> Self {
        Self {
            tag: 0,
            milli: u64::from(burst) * 1000,
            at_ms: 0,
        }
    }

    fn take(&mut self, now_ms: u64, rate: u32, burst: u32) -> bool {
        let cap = u64::from(burst) * 1000;
        let elapsed = now_ms.saturating_sub(self.at_ms);
        self.milli = (self.milli + elapsed.saturating_mul(u64::from(rate))).min(cap);
        self.at_ms = now_ms;
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// The [`KnownSet`] key of a peer address (never 0).
pub fn peer_key(ip: IpAddr) -> u64 {
    let v = match ip {
        IpAddr::V4(a) => u64::from(u32::from_be_bytes(a.octets())),
        IpAddr::V6(a) => {
            let o = u128::from_be_bytes(a.octets());
            ((o as u64) ^ ((o >> 64) as u64)).rotate_left(1)
        }
    };
    v | 1 << 63
}

fn source_hash(ip: IpAddr) -> u32 {
    let v = match ip {
        IpAddr::V4(a) => u64::from(u32::from_be_bytes(a.octets())),
        IpAddr::V6(a) => {
            let o = u128::from_be_bytes(a.octets());
            (o as u64) ^ ((o >> 64) as u64)
        }
    };
    (v.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32
}

/// Where the receive threads put IKE datagrams. Each thread holds its own clone: the buckets are
/// per clone (so per listening port), the queues, counters and known SPIs are shared.
pub struct IkeSender {
    established: tokio::sync::mpsc::Sender<IkeDatagram>,
    new: tokio::sync::mpsc::Sender<IkeDatagram>,
    known: Arc<KnownSet>,
    peers: Arc<KnownSet>,
    counters: Arc<IkeQueueCounters>,
    sources: Box<[Bucket]>,
    init: Bucket,
    started: Instant,
}

impl Clone for IkeSender {
    fn clone(&self) -> Self {
        Self {
            established: self.established.clone(),
            new: self.new.clone(),
            known: self.known.clone(),
            peers: self.peers.clone(),
            counters: self.counters.clone(),
            sources: vec![Bucket::default(); SOURCE_SLOTS].into_boxed_slice(),
            init: Bucket::full(INIT_BURST),
            started: self.started,
        }
    }
}

/// The control plane's end: the two queues (serve `established` first), the SPIs to publish, the
/// counters.
pub struct IkeReceivers {
    /// Datagrams for established IKE SAs.
    pub established: tokio::sync::mpsc::Receiver<IkeDatagram>,
    /// IKE_SA_INIT requests and datagrams for unknown SAs, after rate limiting.
    pub new: tokio::sync::mpsc::Receiver<IkeDatagram>,
    /// Our IKE SPIs, to keep current with [`KnownSet::publish`].
    pub known: Arc<KnownSet>,
    /// The configured peers' addresses ([`peer_key`]), to keep current with [`KnownSet::publish`].
    pub known_peers: Arc<KnownSet>,
    /// Admission counters.
    pub counters: Arc<IkeQueueCounters>,
}

/// Makes the queues.
pub fn channels() -> (IkeSender, IkeReceivers) {
    let (etx, erx) = tokio::sync::mpsc::channel(ESTABLISHED_CAPACITY);
    let (ntx, nrx) = tokio::sync::mpsc::channel(NEW_CAPACITY);
    let known = Arc::new(KnownSet::default());
    let peers = Arc::new(KnownSet::default());
    let counters = Arc::new(IkeQueueCounters::default());
    let sender = IkeSender {
        established: etx,
        new: ntx,
        known: known.clone(),
        peers: peers.clone(),
        counters: counters.clone(),
        sources: vec![Bucket::default(); SOURCE_SLOTS].into_boxed_slice(),
        init: Bucket::full(INIT_BURST),
        started: Instant::now(),
    };
    (
        sender,
        IkeReceivers {
            established: erx,
            new: nrx,
            known,
            known_peers: peers,
            counters,
        },
    )
}

impl IkeSender {
    /// Admits one IKE message (marker removed) received on `local_port` from `remote`: classifies
    /// it, applies the buckets and copies it into its queue. Returns false if it was dropped.
    pub fn offer(&mut self, local_port: u16, remote: SocketAddr, msg: &[u8]) -> bool {
        let now_ms = self.started.elapsed().as_millis() as u64 + 1;
        self.offer_at(local_port, remote, msg, now_ms)
    }

    fn offer_at(&mut self, local_port: u16, remote: SocketAddr, msg: &[u8], now_ms: u64) -> bool {
        let c = &self.counters;
        let class = classify(msg, &self.known);
        let queue = match class {
            IkeClass::Malformed => {
                c.malformed.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            IkeClass::Established => &self.established,
            IkeClass::InitRequest | IkeClass::Unknown => {
                let h = source_hash(remote.ip());
                let b = &mut self.sources[h as usize & (SOURCE_SLOTS - 1)];
                if b.tag != h {
                    // A new source (or one that collided): a fresh full bucket.
                    *b = Bucket {
                        tag: h,
                        milli: u64::from(PER_SOURCE_BURST) * 1000,
                        at_ms: now_ms,
                    };
                }
                if !b.take(now_ms, PER_SOURCE_RATE, PER_SOURCE_BURST) {
                    c.source_rate_limited.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                if class == IkeClass::InitRequest
                    && !self.peers.contains(peer_key(remote.ip()))
                    && !self.init.take(now_ms, INIT_RATE, INIT_BURST)
                {
                    c.init_rate_limited.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                &self.new
            }
        };
        let established = class == IkeClass::Established;
        // A full queue is detected before the copy: no allocation for a datagram that is dropped.
        let full = |c: &IkeQueueCounters| {
            if established {
                c.established_full.fetch_add(1, Ordering::Relaxed);
            } else {
                c.new_full.fetch_add(1, Ordering::Relaxed);
            }
        };
        let Ok(permit) = queue.try_reserve() else {
            full(c);
            return false;
        };
        permit.send(IkeDatagram {
            local_port,
            remote,
            data: msg.to_vec(),
        });
        if established {
            c.established_queued.fetch_add(1, Ordering::Relaxed);
        } else {
            c.new_queued.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// The admission counters.
    pub fn counters(&self) -> &Arc<IkeQueueCounters> {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(spi_i: u64, spi_r: u64, exchange: u8, flags: u8) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&spi_i.to_be_bytes());
        m.extend_from_slice(&spi_r.to_be_bytes());
        m.extend_from_slice(&[0, 0x20, exchange, flags, 0, 0, 0, 0, 0, 0, 0, 28]);
        m
    }

    fn addr(i: u32) -> SocketAddr {
        SocketAddr::from((std::net::Ipv4Addr::from(0xc612_0000 + i), 500))
    }

    #[test]
    fn classification_peeks_at_the_header() {
        let known = KnownSet::default();
        let mut set = std::collections::HashSet::new();
        set.insert(0x1111);
        known.publish(&set);
        assert_eq!(classify(&[0; 10], &known), IkeClass::Malformed);
        let mut v1 = header(5, 0, 34, 0x08);
        v1[17] = 0x10;
        assert_eq!(classify(&v1, &known), IkeClass::Malformed);
        assert_eq!(
            classify(&header(5, 0, 34, 0x08), &known),
            IkeClass::InitRequest
        );
        // The initiator's request for our responder SPI; a response to our request.
        assert_eq!(
            classify(&header(5, 0x1111, 37, 0x08), &known),
            IkeClass::Established
        );
        assert_eq!(
            classify(&header(0x1111, 9, 37, 0x20), &known),
            IkeClass::Established
        );
        assert_eq!(
            classify(&header(5, 0x2222, 37, 0x08), &known),
            IkeClass::Unknown
        );
        set.clear();
        known.publish(&set);
        assert_eq!(
            classify(&header(5, 0x1111, 37, 0x08), &known),
            IkeClass::Unknown
        );
    }

    #[test]
    fn a_flood_is_rate_limited_and_established_traffic_still_passes() {
        let (mut tx, mut rx) = channels();
        let mut set = std::collections::HashSet::new();
        set.insert(0x1111);
        rx.known.publish(&set);
        let init = header(7, 0, 34, 0x08);
        // One source: only its burst passes.
        let passed = (0..500)
            .filter(|_| tx.offer_at(500, addr(1), &init, 1))
            .count();
        assert_eq!(passed, PER_SOURCE_BURST as usize);
        // Many sources at once: the global bucket or the queue stops them; memory stays fixed.
        for i in 0..20_000 {
            tx.offer_at(500, addr(2 + i), &init, 2);
        }
        let c = tx.counters().clone();
        assert!(c.init_rate_limited.load(Ordering::Relaxed) > 0);
        assert!(c.new_queued.load(Ordering::Relaxed) <= NEW_CAPACITY as u64);
        // The established peer's datagram still gets through.
        assert!(tx.offer_at(500, addr(1), &header(5, 0x1111, 37, 0x08), 2));
        assert!(rx.established.try_recv().is_ok());
        // Tokens come back with time.
        assert!(tx.offer_at(500, addr(1), &init, 2_000) || c.new_full.load(Ordering::Relaxed) > 0);
        while rx.new.try_recv().is_ok() {}
        assert!(tx.offer_at(500, addr(1), &init, 4_000));
        // A configured peer's IKE_SA_INIT skips the exhausted global bucket.
        for i in 0..20_000 {
            tx.offer_at(500, addr(30_000 + i), &init, 4_001);
        }
        while rx.new.try_recv().is_ok() {}
        let site = addr(99_999);
        assert!(!tx.offer_at(500, addr(88_888), &init, 4_001));
        let mut peers = std::collections::HashSet::new();
        peers.insert(peer_key(site.ip()));
        rx.known_peers.publish(&peers);
        assert!(tx.offer_at(500, site, &init, 4_001));
    }
}
