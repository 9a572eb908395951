//! Security associations: sealing outbound and opening inbound ESP packets in tunnel mode
//! (RFC 4303 §3.3 and §3.4), with sequence numbers and ESN (§2.2.1, §3.3.3), anti-replay
//! (§3.4.3), and lifetime accounting (RFC 4301 §4.4.2.1).
//!
//! Work happens in place in the caller's buffer: seal wraps an inner packet that sits after
//! enough headroom; open decrypts where the packet lies and returns where the inner packet is.

use core::fmt;
use core::ops::Range;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::crypto::{Aead, AuthData, Cipher, MAX_ALIGN, MAX_ICV_LEN, MAX_IV_LEN, Suite};
use crate::header::{HEADER_LEN, TRAILER_LEN, next_header, next_header_for, pad_len};
use crate::replay::ReplayWindow;
use crate::{Error, Spi};

/// Headroom that is enough before the inner packet for every suite: header plus the longest IV.
pub const MAX_HEADROOM: usize = HEADER_LEN + MAX_IV_LEN;
/// Tailroom that is enough after the inner packet for every suite: padding, trailer, longest ICV.
pub const MAX_TAILROOM: usize = MAX_ALIGN - 1 + TRAILER_LEN + MAX_ICV_LEN;

/// Byte and packet limits of an SA (RFC 4301 §4.4.2.1): at the soft limit IKE should rekey, at
/// the hard limit the SA must no longer be used. `None` means no limit.
///
/// Bytes are those of the inner packets the SA protected, as strongSwan and Linux count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lifetime {
    /// Bytes after which a rekey should start.
    pub soft_bytes: Option<u64>,
    /// Bytes after which the SA is refused.
    pub hard_bytes: Option<u64>,
    /// Packets after which a rekey should start.
    pub soft_packets: Option<u64>,
    /// Packets after which the SA is refused.
    pub hard_packets: Option<u64>,
}

/// Where an SA stands against its [`Lifetime`] (RFC 4301 §4.4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum LimitState {
    /// Below both limits.
    #[default]
    Within,
    /// The soft limit is reached: time to rekey; traffic still flows.
    SoftReached,
    /// The hard limit is reached: packets are refused with [`Error::LifetimeExpired`].
    HardReached,
}

/// Packets and inner-packet bytes an SA processed successfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Packets sealed or opened.
    pub packets: u64,
    /// Bytes of the inner packets.
    pub bytes: u64,
}

/// What both directions need to build an SA, as IKE negotiated it (RFC 7296 §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaParams {
    /// The SPI the receiver chose (RFC 4303 §2.1).
    pub spi: Spi,
    /// Encryption and integrity transforms.
    pub suite: Suite,
    /// Whether Extended Sequence Numbers were negotiated (RFC 4303 §2.2.1, RFC 7296 §3.3.2).
    pub esn: bool,
    /// Byte and packet limits.
    pub lifetime: Lifetime,
}

/// Counters, limits and the edge-triggered limit report shared by both directions.
#[derive(Debug, Clone, Copy)]
struct Accounting {
    counters: Counters,
    lifetime: Lifetime,
    state: LimitState,
    reported: LimitState,
}

impl Accounting {
    fn new(lifetime: Lifetime) -> Self {
        Accounting {
            counters: Counters::default(),
            lifetime,
            state: LimitState::Within,
            reported: LimitState::Within,
        }
    }

    #[inline]
    fn usable(&self) -> Result<(), Error> {
        if self.state == LimitState::HardReached {
            Err(Error::LifetimeExpired)
        } else {
            Ok(())
        }
    }

    #[inline]
    fn add(&mut self, bytes: usize) {
        self.counters.packets += 1;
        self.counters.bytes += bytes as u64;
        let reached = |limit: Option<u64>, value: u64| limit.is_some_and(|l| value >= l);
        let c = self.counters;
        let l = self.lifetime;
        if reached(l.hard_bytes, c.bytes) || reached(l.hard_packets, c.packets) {
            self.state = LimitState::HardReached;
        } else if reached(l.soft_bytes, c.bytes) || reached(l.soft_packets, c.packets) {
            self.state = self.state.max(LimitState::SoftReached);
        }
    }

    fn poll(&mut self) -> Option<LimitState> {
        if self.state > self.reported {
            self.reported = self.state;
            Some(self.state)
        } else {
            None
        }
    }
}

fn build_cipher(params: &SaParams, keymat: &[u8]) -> Result<Cipher, Error> {
    if !params.spi.is_assignable() {
        return Err(Error::InvalidSpi(params.spi));
    }
    params.suite.cipher(keymat)
}

/// The sending side of a Child SA: assigns sequence numbers and seals (RFC 4303 §3.3).
pub struct OutboundSa {
    spi: Spi,
    esn: bool,
    cipher: Cipher,
    /// Last sequence number sent; the first packet gets 1 (RFC 4303 §3.3.3).
    last_seq: u64,
    accounting: Accounting,
}

impl fmt::Debug for OutboundSa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundSa")
            .field("spi", &self.spi)
            .field("suite", &self.cipher.suite())
            .field("esn", &self.esn)
            .field("last_seq", &self.last_seq)
            .field("counters", &self.accounting.counters)
            .field("limit", &self.accounting.state)
            .finish_non_exhaustive()
    }
}

impl OutboundSa {
    /// Builds the SA from the KEYMAT of its direction: encryption key (with salt for AEADs), then
    /// integrity key (see [`Suite::split_child_keymat`]).
    pub fn new(params: SaParams, keymat: &[u8]) -> Result<Self, Error> {
        Ok(OutboundSa {
            spi: params.spi,
            esn: params.esn,
            cipher: build_cipher(&params, keymat)?,
            last_seq: 0,
            accounting: Accounting::new(params.lifetime),
        })
    }

    /// The peer's SPI, written into every packet.
    pub fn spi(&self) -> Spi {
        self.spi
    }

    /// The suite in use.
    pub fn suite(&self) -> Suite {
        self.cipher.suite()
    }

    /// Last sequence number sent, 0 before the first packet.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Packets and bytes sealed so far.
    pub fn counters(&self) -> Counters {
        self.accounting.counters
    }

    /// Where the SA stands against its lifetime.
    pub fn limit_state(&self) -> LimitState {
        self.accounting.state
    }

    /// Reports a newly reached soft or hard limit once, so the caller can ask IKE to rekey or
    /// delete without comparing states itself.
    pub fn poll_limit(&mut self) -> Option<LimitState> {
        self.accounting.poll()
    }

    /// Bytes needed before the inner packet: ESP header and IV.
    pub fn headroom(&self) -> usize {
        HEADER_LEN + self.cipher.iv_len()
    }

    /// ESP packet length for an inner packet of `inner_len` bytes.
    pub fn sealed_len(&self, inner_len: usize) -> usize {
        let align = self.cipher.align();
        self.headroom()
            + inner_len
            + pad_len(inner_len, align)
            + TRAILER_LEN
            + self.cipher.icv_len()
    }

    fn next_seq(&self) -> Result<u64, Error> {
        // RFC 4303 §3.3.3: the counter must never cycle; the SA has to be rekeyed first.
        let limit = if self.esn {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        };
        if self.last_seq >= limit {
            Err(Error::SequenceOverflow)
        } else {
            Ok(self.last_seq + 1)
        }
    }

    /// Seals the inner packet at `buf[inner]` in place and returns where the ESP packet is.
    ///
    /// `inner.start` must leave [`OutboundSa::headroom`] bytes (or [`MAX_HEADROOM`]) and
    /// `buf` must leave [`MAX_TAILROOM`] bytes after `inner.end`: the ESP packet is
    /// `buf[inner.start - headroom .. ]`. Padding is 1, 2, 3, ... up to the suite's alignment
    /// (RFC 4303 §2.4); the next header is 4 or 41 from the inner packet's IP version.
    pub fn seal_in_place(
        &mut self,
        buf: &mut [u8],
        inner: Range<usize>,
    ) -> Result<Range<usize>, Error> {
        let headroom = self.headroom();
        let align = self.cipher.align();
        let icv_len = self.cipher.icv_len();
        if inner.start < headroom || inner.start > inner.end || inner.end > buf.len() {
            return Err(Error::BufferTooSmall);
        }
        let next_header = next_header_for(&buf[inner.clone()])?;
        let pad = pad_len(inner.len(), align);
        let ct_end = inner.end + pad + TRAILER_LEN;
        let end = ct_end + icv_len;
        if end > buf.len() {
            return Err(Error::BufferTooSmall);
        }
        self.accounting.usable()?;
        let seq = self.next_seq()?;

        let start = inner.start - headroom;
        let auth = AuthData {
            spi: self.spi.0,
            seq,
            esn: self.esn,
        };
        buf[start..start + HEADER_LEN].copy_from_slice(&auth.header());
        for (i, b) in buf[inner.end..inner.end + pad].iter_mut().enumerate() {
            *b = (i + 1) as u8;
        }
        buf[ct_end - 2] = pad as u8;
        buf[ct_end - 1] = next_header;

        let (head, rest) = buf[start..end].split_at_mut(headroom);
        let (payload, icv) = rest.split_at_mut(ct_end - inner.start);
        self.cipher
            .seal(auth, &mut head[HEADER_LEN..], payload, icv)?;
        self.last_seq = seq;
        self.accounting.add(inner.len());
        Ok(start..end)
    }

    /// Seals a copy of `inner` into `out`, returning the ESP packet's length (it starts at
    /// `out[0]`). For callers whose inner packet is not already in a buffer with headroom.
    pub fn seal(&mut self, inner: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        let headroom = self.headroom();
        let dst = out
            .get_mut(headroom..headroom + inner.len())
            .ok_or(Error::BufferTooSmall)?;
        dst.copy_from_slice(inner);
        self.seal_in_place(out, headroom..headroom + inner.len())
            .map(|r| r.end)
    }

    #[cfg(test)]
    pub(crate) fn set_last_seq(&mut self, seq: u64) {
        self.last_seq = seq;
    }
}

/// A successfully opened ESP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Where the inner packet lies in the buffer given to open. In tunnel mode it may be
    /// followed by TFC padding (RFC 4303 §2.7); the inner IP header's length is authoritative.
    pub inner: Range<usize>,
    /// 4 (IPv4) or 41 (IPv6) in tunnel mode; other values are the caller's to refuse.
    pub next_header: u8,
    /// The full (ESN-inferred) sequence number.
    pub seq: u64,
    /// The SA's SPI.
    pub spi: Spi,
}

/// The receiving side of a Child SA: authenticates, checks replay, decrypts (RFC 4303 §3.4).
pub struct InboundSa {
    spi: Spi,
    esn: bool,
    cipher: Cipher,
    window: ReplayWindow,
    accounting: Accounting,
}

impl fmt::Debug for InboundSa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundSa")
            .field("spi", &self.spi)
            .field("suite", &self.cipher.suite())
            .field("esn", &self.esn)
            .field("top_seq", &self.window.top())
            .field("counters", &self.accounting.counters)
            .field("limit", &self.accounting.state)
            .finish_non_exhaustive()
    }
}

impl InboundSa {
    /// Builds the SA from the KEYMAT of its direction (see [`OutboundSa::new`]).
    pub fn new(params: SaParams, keymat: &[u8]) -> Result<Self, Error> {
        Ok(InboundSa {
            spi: params.spi,
            esn: params.esn,
            cipher: build_cipher(&params, keymat)?,
            window: ReplayWindow::new(),
            accounting: Accounting::new(params.lifetime),
        })
    }

    /// Our SPI, which the peer writes into every packet.
    pub fn spi(&self) -> Spi {
        self.spi
    }

    /// The suite in use.
    pub fn suite(&self) -> Suite {
        self.cipher.suite()
    }

    /// Highest sequence number authenticated so far.
    pub fn top_seq(&self) -> u64 {
        self.window.top()
    }

    /// Packets and bytes opened so far.
    pub fn counters(&self) -> Counters {
        self.accounting.counters
    }

    /// Where the SA stands against its lifetime.
    pub fn limit_state(&self) -> LimitState {
        self.accounting.state
    }

    /// Reports a newly reached soft or hard limit once (see [`OutboundSa::poll_limit`]).
    pub fn poll_limit(&mut self) -> Option<LimitState> {
        self.accounting.poll()
    }

    /// Opens the ESP packet that is the whole of `packet`, decrypting in place.
    ///
    /// Order (RFC 4303 §3.4): the replay window is consulted first without being changed, as
    /// §3.4.3 allows, so replays cost no crypto; the ICV is verified (§3.4.4); only then is the
    /// sequence number recorded in the window; then the trailer and padding are checked (§2.4).
    /// On error the buffer may hold garbage.
    pub fn open_in_place(&mut self, packet: &mut [u8]) -> Result<Opened, Error> {
        let iv_len = self.cipher.iv_len();
        let icv_len = self.cipher.icv_len();
        let headroom = HEADER_LEN + iv_len;
        if packet.len() < headroom + TRAILER_LEN + icv_len {
            return Err(Error::Truncated);
        }
        let spi = Spi(u32::from_be_bytes([
            packet[0], packet[1], packet[2], packet[3],
        ]));
        if spi != self.spi {
            return Err(Error::UnknownSpi(spi));
        }
        self.accounting.usable()?;
        let seq_lo = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        let seq = if self.esn {
            self.window.infer_esn(seq_lo).ok_or(Error::ReplayedPacket {
                seq: u64::from(seq_lo),
            })?
        } else {
            u64::from(seq_lo)
        };
        self.window
            .check(seq)
            .map_err(|_| Error::ReplayedPacket { seq })?;

        let ct_len = packet.len() - headroom - icv_len;
        let auth = AuthData {
            spi: spi.0,
            seq,
            esn: self.esn,
        };
        let (head, rest) = packet.split_at_mut(headroom);
        let (payload, icv) = rest.split_at_mut(ct_len);
        self.cipher.open(auth, &head[HEADER_LEN..], payload, icv)?;
        // Authenticated: now, and only now, the window may move.
        self.window
            .accept(seq)
            .map_err(|_| Error::ReplayedPacket { seq })?;

        let next_header = payload[ct_len - 1];
        let pad = usize::from(payload[ct_len - 2]);
        let inner_len = ct_len
            .checked_sub(TRAILER_LEN + pad)
            .ok_or(Error::BadPadding)?;
        let padding = &payload[inner_len..inner_len + pad];
        if padding.iter().enumerate().any(|(i, &b)| b != (i + 1) as u8) {
            return Err(Error::BadPadding);
        }
        self.accounting.add(inner_len);
        if next_header == next_header::NONE {
            return Err(Error::DummyPacket);
        }
        Ok(Opened {
            inner: headroom..headroom + inner_len,
            next_header,
            seq,
            spi,
        })
    }

    #[cfg(test)]
    pub(crate) fn window_mut(&mut self) -> &mut ReplayWindow {
        &mut self.window
    }
}

/// SPIs are chosen by our own IKE, randomly, so a plain multiplicative hash spreads them and an
/// attacker sending unknown SPIs cannot grow a bucket: lookups of unknown keys insert nothing.
#[derive(Default)]
struct SpiHasher(u64);

impl Hasher for SpiHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Inbound SAs by SPI, so a packet finds its SA (RFC 4303 §3.4.2) and unknown SPIs are
/// counted as [`Error::UnknownSpi`].
#[derive(Default)]
pub struct InboundSaTable {
    sas: HashMap<Spi, InboundSa, BuildHasherDefault<SpiHasher>>,
}

impl fmt::Debug for InboundSaTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.sas.values()).finish()
    }
}

impl InboundSaTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs an SA, returning the one it replaces (SPIs are unique per receiver).
    pub fn insert(&mut self, sa: InboundSa) -> Option<InboundSa> {
        self.sas.insert(sa.spi, sa)
    }

    /// Removes an SA, e.g. on DELETE or after a rekey's overlap.
    pub fn remove(&mut self, spi: Spi) -> Option<InboundSa> {
        self.sas.remove(&spi)
    }

    /// The SA with this SPI.
    pub fn get(&self, spi: Spi) -> Option<&InboundSa> {
        self.sas.get(&spi)
    }

    /// The SA with this SPI, mutably (for polling its limits).
    pub fn get_mut(&mut self, spi: Spi) -> Option<&mut InboundSa> {
        self.sas.get_mut(&spi)
    }

    /// Number of SAs installed.
    pub fn len(&self) -> usize {
        self.sas.len()
    }

    /// Whether no SA is installed.
    pub fn is_empty(&self) -> bool {
        self.sas.is_empty()
    }

    /// Every installed SA, in no particular order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut InboundSa> {
        self.sas.values_mut()
    }

    /// Finds the packet's SA by SPI and opens it (see [`InboundSa::open_in_place`]).
    pub fn open_in_place(&mut self, packet: &mut [u8]) -> Result<Opened, Error> {
        let spi = crate::header::peek_spi(packet)?;
        self.sas
            .get_mut(&spi)
            .ok_or(Error::UnknownSpi(spi))?
            .open_in_place(packet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{Encryption, Integrity};

    pub(crate) fn all_suites() -> Vec<Suite> {
        let mut v = vec![
            Suite::AES_GCM_128,
            Suite::AES_GCM_256,
            Suite::CHACHA20_POLY1305,
        ];
        for enc in [Encryption::AesCbc128, Encryption::AesCbc256] {
            for integ in [
                Integrity::HmacSha1,
                Integrity::HmacSha256,
                Integrity::HmacSha384,
                Integrity::HmacSha512,
            ] {
                v.push(Suite::new(enc, Some(integ)).unwrap());
            }
        }
        v
    }

    fn pair(suite: Suite, esn: bool, lifetime: Lifetime) -> (OutboundSa, InboundSa) {
        let keymat: Vec<u8> = (0..suite.keymat_len() as u8).collect();
        let params = SaParams {
            spi: Spi(0xc0ff_ee01),
            suite,
            esn,
            lifetime,
        };
        (
            OutboundSa::new(params, &keymat).unwrap(),
            InboundSa::new(params, &keymat).unwrap(),
        )
    }

    fn ipv4(len: usize, tag: u8) -> Vec<u8> {
        let mut p = vec![tag; len];
        p[0] = 0x45;
        p
    }

    fn seal(out: &mut OutboundSa, inner: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; MAX_HEADROOM + inner.len() + MAX_TAILROOM];
        buf[MAX_HEADROOM..MAX_HEADROOM + inner.len()].copy_from_slice(inner);
        let r = out
            .seal_in_place(&mut buf, MAX_HEADROOM..MAX_HEADROOM + inner.len())
            .unwrap();
        assert_eq!(r.len(), out.sealed_len(inner.len()));
        buf[r].to_vec()
    }

    #[test]
    fn round_trip_every_suite_and_size() {
        for suite in all_suites() {
            for esn in [false, true] {
                let (mut out, mut inb) = pair(suite, esn, Lifetime::default());
                for len in [1usize, 20, 63, 64, 65, 511, 1400] {
                    let inner = ipv4(len, len as u8);
                    let mut pkt = seal(&mut out, &inner);
                    assert_eq!(
                        (pkt.len() - HEADER_LEN - suite.iv_len() - suite.icv_len()) % suite.align(),
                        0
                    );
                    let o = inb.open_in_place(&mut pkt).unwrap();
                    assert_eq!(&pkt[o.inner.clone()], &inner[..], "{suite:?} len {len}");
                    assert_eq!(o.next_header, next_header::IPV4);
                    assert_eq!(o.seq, out.last_seq());
                }
                assert_eq!(inb.counters(), out.counters());
            }
        }
    }

    #[test]
    fn ipv6_gets_next_header_41_and_garbage_is_refused() {
        let (mut out, mut inb) = pair(Suite::AES_GCM_256, false, Lifetime::default());
        let mut inner = vec![0u8; 40];
        inner[0] = 0x60;
        let mut pkt = seal(&mut out, &inner);
        assert_eq!(inb.open_in_place(&mut pkt).unwrap().next_header, 41);
        let mut buf = [0u8; 100];
        assert_eq!(
            out.seal_in_place(&mut buf, MAX_HEADROOM..MAX_HEADROOM + 10),
            Err(Error::InvalidPayload)
        );
        let mut small = [0x45u8; 30];
        assert_eq!(
            out.seal_in_place(&mut small, 16..30),
            Err(Error::BufferTooSmall)
        );
        assert_eq!(
            out.seal_in_place(&mut small, 0..10),
            Err(Error::BufferTooSmall)
        );
    }

    #[test]
    fn tamper_anywhere_fails_authentication() {
        for suite in all_suites() {
            let (mut out, mut inb) = pair(suite, true, Lifetime::default());
            let pkt = seal(&mut out, &ipv4(60, 9));
            // Byte 0..4 is the SPI: changing it is an unknown SPI, not a forgery.
            for i in 4..pkt.len() {
                let mut p = pkt.clone();
                p[i] ^= 0x01;
                let err = inb.open_in_place(&mut p).unwrap_err();
                assert!(
                    matches!(
                        err,
                        Error::AuthenticationFailed | Error::ReplayedPacket { .. }
                    ),
                    "{suite:?} byte {i}: {err:?}"
                );
            }
            let mut p = pkt.clone();
            p[0] ^= 1;
            assert!(matches!(
                inb.open_in_place(&mut p),
                Err(Error::UnknownSpi(_))
            ));
            // The window did not move for any forgery; the genuine packet still opens.
            let mut p = pkt.clone();
            inb.open_in_place(&mut p).unwrap();
            let mut p = pkt.clone();
            assert_eq!(
                inb.open_in_place(&mut p),
                Err(Error::ReplayedPacket { seq: 1 })
            );
            assert_eq!(inb.open_in_place(&mut p[..10]), Err(Error::Truncated));
        }
    }

    #[test]
    fn forged_packets_do_not_advance_the_window() {
        let (mut out, mut inb) = pair(Suite::AES_GCM_128, false, Lifetime::default());
        let first = seal(&mut out, &ipv4(40, 1));
        // A forgery claiming a far-ahead sequence number.
        let mut forged = first.clone();
        forged[4..8].copy_from_slice(&100_000u32.to_be_bytes());
        assert_eq!(
            inb.open_in_place(&mut forged),
            Err(Error::AuthenticationFailed)
        );
        assert_eq!(inb.top_seq(), 0);
        let mut p = first.clone();
        inb.open_in_place(&mut p).unwrap();
    }

    #[test]
    fn reordered_duplicate_and_too_old() {
        let (mut out, mut inb) = pair(Suite::CHACHA20_POLY1305, false, Lifetime::default());
        let pkts: Vec<_> = (0..3000)
            .map(|i| seal(&mut out, &ipv4(30, i as u8)))
            .collect();
        // Newest first: the last 1984 are in the window, the rest too old.
        let mut accepted = 0;
        for (i, p) in pkts.iter().enumerate().rev() {
            let mut p = p.clone();
            match inb.open_in_place(&mut p) {
                Ok(o) => {
                    assert_eq!(o.seq, i as u64 + 1);
                    accepted += 1;
                }
                Err(Error::ReplayedPacket { seq }) => assert_eq!(seq, i as u64 + 1),
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!(accepted, crate::replay::WINDOW_SIZE);
        let mut dup = pkts[2999].clone();
        assert_eq!(
            inb.open_in_place(&mut dup),
            Err(Error::ReplayedPacket { seq: 3000 })
        );
    }

    #[test]
    fn esn_wraps_across_2_pow_32() {
        for suite in [
            Suite::AES_GCM_256,
            Suite::new(Encryption::AesCbc128, Some(Integrity::HmacSha256)).unwrap(),
        ] {
            let (mut out, mut inb) = pair(suite, true, Lifetime::default());
            let start = (1u64 << 32) - 3;
            out.set_last_seq(start - 1);
            inb.window_mut().accept(start - 1).unwrap();
            let pkts: Vec<_> = (0..6).map(|i| seal(&mut out, &ipv4(50, i))).collect();
            assert_eq!(out.last_seq(), (1 << 32) + 2);
            // Deliver across the wrap out of order: 2^32+1 before 2^32-2.
            for idx in [0usize, 3, 1, 2, 5, 4] {
                let mut p = pkts[idx].clone();
                let o = inb.open_in_place(&mut p).unwrap();
                assert_eq!(o.seq, start + idx as u64);
            }
            assert_eq!(inb.top_seq(), (1 << 32) + 2);
            let mut again = pkts[1].clone();
            assert_eq!(
                inb.open_in_place(&mut again),
                Err(Error::ReplayedPacket { seq: start + 1 })
            );
        }
    }

    #[test]
    fn sequence_overflow_demands_rekey() {
        let (mut out, _) = pair(Suite::AES_GCM_256, false, Lifetime::default());
        out.set_last_seq(u64::from(u32::MAX) - 1);
        let inner = ipv4(20, 0);
        let mut buf = vec![0u8; 200];
        out.seal(&inner, &mut buf).unwrap();
        assert_eq!(out.last_seq(), u64::from(u32::MAX));
        assert_eq!(out.seal(&inner, &mut buf), Err(Error::SequenceOverflow));

        let (mut out, _) = pair(Suite::AES_GCM_256, true, Lifetime::default());
        out.set_last_seq(u64::MAX - 1);
        out.seal(&inner, &mut buf).unwrap();
        assert_eq!(out.seal(&inner, &mut buf), Err(Error::SequenceOverflow));
    }

    #[test]
    fn lifetimes_report_soft_then_hard_once() {
        let lifetime = Lifetime {
            soft_bytes: Some(250),
            hard_bytes: Some(500),
            ..Lifetime::default()
        };
        let (mut out, mut inb) = pair(Suite::AES_GCM_256, false, lifetime);
        let inner = ipv4(100, 0);
        let mut seen = Vec::new();
        let mut sealed = 0;
        loop {
            let mut buf = [0u8; 200];
            match out.seal(&inner, &mut buf) {
                Ok(n) => {
                    sealed += 1;
                    inb.open_in_place(&mut buf[..n]).unwrap();
                }
                Err(e) => {
                    assert_eq!(e, Error::LifetimeExpired);
                    break;
                }
            }
            if let Some(s) = out.poll_limit() {
                seen.push(s);
            }
            assert!(sealed <= 5);
        }
        // 100-byte packets: soft at 300 bytes, hard at 500, the sixth is refused.
        assert_eq!(seen, [LimitState::SoftReached, LimitState::HardReached]);
        assert_eq!(out.counters().packets, 5);
        assert_eq!(out.poll_limit(), None);
        // Polled only now, the inbound side reports the highest state reached.
        assert_eq!(inb.poll_limit(), Some(LimitState::HardReached));
        assert_eq!(inb.limit_state(), LimitState::HardReached);
    }

    #[test]
    fn bad_padding_is_detected_after_authentication() {
        // Seal by hand with wrong padding bytes through the transform itself.
        let suite = Suite::AES_GCM_256;
        let keymat = [3u8; 36];
        let cipher = suite.cipher(&keymat).unwrap();
        let params = SaParams {
            spi: Spi(0x1234),
            suite,
            esn: false,
            lifetime: Lifetime::default(),
        };
        let mut inb = InboundSa::new(params, &keymat).unwrap();
        for (seq, trailer) in [
            (1u64, [9u8, 9, 2, 4]),
            (2, [1, 2, 7, 4]),
            (3, [1, 2, 2, 59]),
        ] {
            let mut pkt = vec![0u8; HEADER_LEN + 8 + 8 + 16];
            let auth = AuthData {
                spi: 0x1234,
                seq,
                esn: false,
            };
            pkt[..8].copy_from_slice(&auth.header());
            pkt[16] = 0x45;
            pkt[20..24].copy_from_slice(&trailer);
            let (head, rest) = pkt.split_at_mut(16);
            let (payload, icv) = rest.split_at_mut(8);
            cipher.seal(auth, &mut head[8..], payload, icv).unwrap();
            let expected = if trailer[3] == 59 {
                Error::DummyPacket
            } else {
                Error::BadPadding
            };
            assert_eq!(inb.open_in_place(&mut pkt), Err(expected));
        }
    }

    #[test]
    fn table_routes_by_spi() {
        let (mut out, inb) = pair(Suite::AES_GCM_256, false, Lifetime::default());
        let mut table = InboundSaTable::new();
        assert!(table.insert(inb).is_none());
        let mut pkt = seal(&mut out, &ipv4(64, 1));
        let o = table.open_in_place(&mut pkt).unwrap();
        assert_eq!(o.spi, Spi(0xc0ff_ee01));
        let mut other = pkt.clone();
        other[..4].copy_from_slice(&0x9999u32.to_be_bytes());
        assert_eq!(
            table.open_in_place(&mut other),
            Err(Error::UnknownSpi(Spi(0x9999)))
        );
        assert_eq!(table.open_in_place(&mut other[..3]), Err(Error::Truncated));
        assert!(table.remove(Spi(0xc0ff_ee01)).is_some());
        assert!(table.is_empty());
    }

    #[test]
    fn reserved_spis_and_bad_keys_are_refused() {
        let params = SaParams {
            spi: Spi(255),
            suite: Suite::AES_GCM_256,
            esn: false,
            lifetime: Lifetime::default(),
        };
        assert_eq!(
            OutboundSa::new(params, &[0; 36]).unwrap_err(),
            Error::InvalidSpi(Spi(255))
        );
        let params = SaParams {
            spi: Spi(256),
            ..params
        };
        assert_eq!(
            InboundSa::new(params, &[0; 32]).unwrap_err(),
            Error::InvalidKeyLength {
                expected: 36,
                got: 32
            }
        );
    }

    #[test]
    fn debug_output_has_no_key_material() {
        let (out, inb) = pair(Suite::AES_GCM_256, false, Lifetime::default());
        let s = format!("{out:?} {inb:?}");
        assert!(s.contains("0xc0ffee01"), "{s}");
        // The test keymat is 0, 1, 2, ...: its hex or decimal runs must not appear.
        assert!(!s.contains("0, 1, 2"));
        assert!(!s.contains("000102"));
    }
}
