//! The IKE driver's side of flood protection (issue 20): publishing our IKE SPIs and the configured
//! peers' addresses to the data plane's admission ([`vgw_dataplane::ikequeue`]), and rate-limiting
//! the log lines that unauthenticated junk produces.
//!
//! A 30 s flood used to rotate away all 96 MB of diagnostic log history because every refused or
//! dropped unauthenticated datagram wrote a line. Now each kind (the refusal reason: MALFORMED,
//! UNKNOWN_SPI, UNKNOWN_PEER, …) writes at most [`LINES_PER_INTERVAL`] lines per
//! [`INTERVAL`]; the rest are counted, and once a minute one summary line per kind says how many
//! there were and from how many distinct sources ("1.2 M UNKNOWN_PEER IKE datagrams from 3,400
//! sources in the last minute"). Distinct sources are estimated with a fixed-size linear-counting
//! bitmap, so memory does not grow with the number of sources. Every datagram is still counted in
//! `vgw_ike_refused_exchanges_total`.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use vgw_dataplane::ikequeue::{KnownSet, peer_key};

/// Log lines per kind per interval before lines are only counted.
pub const LINES_PER_INTERVAL: u64 = 5;
/// The interval of [`LINES_PER_INTERVAL`].
pub const INTERVAL: Duration = Duration::from_secs(10);
/// How often the summary lines are written.
pub const SUMMARY_PERIOD: Duration = Duration::from_secs(60);
/// Bits of the distinct-source sketch per kind.
const SKETCH_BITS: usize = 1 << 16;

/// Counts of one kind of junk.
struct Kind {
    interval_start: Instant,
    interval_lines: u64,
    /// Since the last summary.
    datagrams: u64,
    logged: u64,
    sketch: Box<[u64]>,
}

impl Kind {
    fn new(now: Instant) -> Self {
        Self {
            interval_start: now,
            interval_lines: 0,
            datagrams: 0,
            logged: 0,
            sketch: vec![0u64; SKETCH_BITS / 64].into_boxed_slice(),
        }
    }

    fn note_source(&mut self, ip: IpAddr) {
        let h = (peer_key(ip).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize % SKETCH_BITS;
        self.sketch[h / 64] |= 1 << (h % 64);
    }

    /// Linear counting: n ≈ -m ln(V), V the fraction of bits still zero.
    fn sources(&self) -> u64 {
        let m = SKETCH_BITS as f64;
        let set: u32 = self.sketch.iter().map(|w| w.count_ones()).sum();
        let zero = m - f64::from(set);
        if zero <= 0.0 {
            return SKETCH_BITS as u64 * 10; // saturated: at least this many
        }
        (-m * (zero / m).ln()).round() as u64
    }
}

/// Rate limiter and summariser of log lines for unauthenticated junk.
pub struct JunkLog {
    kinds: BTreeMap<&'static str, Kind>,
    last_summary: Instant,
}

impl JunkLog {
    /// A limiter whose first summary is due one period after `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            kinds: BTreeMap::new(),
            last_summary: now,
        }
    }

    /// Counts one junk datagram of `kind` from `source`; true if its log line may be written.
    pub fn admit(&mut self, kind: &'static str, source: IpAddr, now: Instant) -> bool {
        let k = self.kinds.entry(kind).or_insert_with(|| Kind::new(now));
        k.datagrams += 1;
        k.note_source(source);
        if now.duration_since(k.interval_start) >= INTERVAL {
            k.interval_start = now;
            k.interval_lines = 0;
        }
        if k.interval_lines < LINES_PER_INTERVAL {
            k.interval_lines += 1;
            k.logged += 1;
            true
        } else {
            false
        }
    }

    /// The summary lines due at `now` (one per kind that had lines suppressed), and resets the counts.
    pub fn summaries(&mut self, now: Instant) -> Vec<(&'static str, String)> {
        if now.duration_since(self.last_summary) < SUMMARY_PERIOD {
            return Vec::new();
        }
        let minutes = now.duration_since(self.last_summary).as_secs_f64() / 60.0;
        self.last_summary = now;
        let mut out = Vec::new();
        for (kind, k) in std::mem::take(&mut self.kinds) {
            if k.datagrams > k.logged {
                let period = if minutes < 1.5 {
                    "the last minute".to_string()
                } else {
                    format!("the last {minutes:.0} minutes")
                };
                out.push((
                    kind,
                    format!(
                        "{} {kind} IKE datagrams from {} sources in {period} ({} logged, the rest \
                         only counted in vgw_ike_refused_exchanges_total)",
                        human(k.datagrams),
                        thousands(k.sources()),
                        k.logged
                    ),
                ));
            }
        }
        out
    }
}

/// 1234 → "1,234".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// 1_234_567 → "1.2 M"; below a million as [`thousands`].
pub fn human(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.1} M", n as f64 / 1e6)
    } else {
        thousands(n)
    }
}

/// Keeps the data plane's admission tables current: our IKE SPIs (datagrams naming them go to the
/// established queue) and the configured peers' addresses (their IKE_SA_INIT skips the global
/// bucket). Publishes only when a set changed.
pub struct Publisher {
    spis: std::sync::Arc<KnownSet>,
    peers: std::sync::Arc<KnownSet>,
    last_spis: HashSet<u64>,
    last_peers: HashSet<u64>,
}

impl Publisher {
    /// A publisher to the data plane's two tables.
    pub fn new(spis: std::sync::Arc<KnownSet>, peers: std::sync::Arc<KnownSet>) -> Self {
        Self {
            spis,
            peers,
            last_spis: HashSet::new(),
            last_peers: HashSet::new(),
        }
    }

    /// Publishes `spis` if they differ from the last published set.
    pub fn spis(&mut self, spis: impl Iterator<Item = u64>) {
        let set: HashSet<u64> = spis.collect();
        if set != self.last_spis {
            self.spis.publish(&set);
            self.last_spis = set;
        }
    }

    /// Publishes the peers' addresses if they differ from the last published set.
    pub fn peers(&mut self, peers: impl Iterator<Item = IpAddr>) {
        let set: HashSet<u64> = peers
            .filter(|a| !a.is_unspecified())
            .map(peer_key)
            .collect();
        if set != self.last_peers {
            self.peers.publish(&set);
            self.last_peers = set;
        }
    }

    /// How many SPIs were last published.
    pub fn spi_count(&self) -> usize {
        self.last_spis.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_is_logged_a_few_times_then_summarised() {
        let t0 = Instant::now();
        let mut j = JunkLog::new(t0);
        let mut logged = 0;
        for i in 0..1_200_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0xc612_0000 + i % 3400));
            if j.admit(
                "MALFORMED",
                ip,
                t0 + Duration::from_millis(u64::from(i) / 30),
            ) {
                logged += 1;
            }
        }
        // 40 s of flood: 4 intervals of 5 lines.
        assert_eq!(logged, 4 * LINES_PER_INTERVAL);
        assert!(j.summaries(t0 + Duration::from_secs(30)).is_empty());
        let lines = j.summaries(t0 + Duration::from_secs(60));
        assert_eq!(lines.len(), 1);
        let line = &lines[0].1;
        assert!(
            line.starts_with("1.2 M MALFORMED IKE datagrams from 3,"),
            "{line}"
        );
        assert!(line.contains("in the last minute"), "{line}");
        // Reset after the summary.
        assert!(j.summaries(t0 + Duration::from_secs(121)).is_empty());
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(3400), "3,400");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(human(1_234_567), "1.2 M");
        assert_eq!(human(12_345), "12,345");
    }
}
