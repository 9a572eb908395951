//! Anti-replay window (RFC 4303 §3.4.3, bitmap after RFC 6479) and the inference of the unsent
//! high 32 bits of an Extended Sequence Number (RFC 4303 Appendix A2.2).
//!
//! The bitmap is a ring of 64-bit blocks indexed by the sequence number itself, so advancing the
//! window clears whole blocks instead of shifting bits: O(1) per packet whatever the jump.
//! RFC 6479 §2 keeps one block more than the window so the block being refilled is never one
//! still inside the window.

/// 64-bit blocks in the bitmap; a power of two so the ring index is a mask.
const BLOCKS: usize = 32;
const BLOCK_BITS: u64 = 64;

/// Packets the window accepts behind the highest one seen: 31 × 64 = 1984 (RFC 6479 §2: the
/// bitmap keeps one spare block). RFC 4303 §3.4.3 asks for at least 32 and recommends 64; a wide
/// window tolerates the reordering of multi-queue, batched receive paths.
pub const WINDOW_SIZE: u64 = (BLOCKS as u64 - 1) * BLOCK_BITS;

/// Why the window rejected a sequence number (RFC 4303 §3.4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// This sequence number was already accepted.
    Duplicate,
    /// Left of the window (or 0, which is never sent): cannot be told apart from a replay.
    TooOld,
}

/// Receive-side record of which sequence numbers were accepted.
#[derive(Clone)]
pub struct ReplayWindow {
    /// Highest authenticated sequence number; 0 before the first packet.
    top: u64,
    bitmap: [u64; BLOCKS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("top", &self.top)
            .finish_non_exhaustive()
    }
}

impl ReplayWindow {
    /// An empty window: the first valid sequence number is 1 (RFC 4303 §3.3.3).
    pub const fn new() -> Self {
        ReplayWindow {
            top: 0,
            bitmap: [0; BLOCKS],
        }
    }

    /// Highest sequence number accepted so far.
    pub const fn top(&self) -> u64 {
        self.top
    }

    /// Whether `seq` would be accepted, without changing anything: the cheap test RFC 4303
    /// §3.4.3 runs before the ICV.
    pub fn check(&self, seq: u64) -> Result<(), Replay> {
        if seq == 0 {
            return Err(Replay::TooOld);
        }
        if seq > self.top {
            return Ok(());
        }
        if self.top - seq >= WINDOW_SIZE {
            return Err(Replay::TooOld);
        }
        let (block, bit) = Self::position(seq);
        if self.bitmap[block] & bit != 0 {
            Err(Replay::Duplicate)
        } else {
            Ok(())
        }
    }

    /// Records `seq` as received, moving the window right if it is new. Call only after the
    /// packet authenticated (RFC 4303 §3.4.3), and after [`ReplayWindow::check`] passed.
    pub fn accept(&mut self, seq: u64) -> Result<(), Replay> {
        self.check(seq)?;
        if seq > self.top {
            let cur = self.top / BLOCK_BITS;
            let new = seq / BLOCK_BITS;
            // Blocks between the old top and the new one hold bits of numbers now left of the
            // window: clear them (all of them when the jump is at least a ring's worth).
            let clear = (new - cur).min(BLOCKS as u64);
            for i in 1..=clear {
                self.bitmap[((cur + i) % BLOCKS as u64) as usize] = 0;
            }
            self.top = seq;
        }
        let (block, bit) = Self::position(seq);
        self.bitmap[block] |= bit;
        Ok(())
    }

    /// Infers the full 64-bit sequence number from the 32 bits on the wire, assuming it lies
    /// within the window or beyond it (RFC 4303 Appendix A2.2).
    ///
    /// `None` when the guess would be below zero: such a packet can only be a replay. The guess
    /// is confirmed only by the ICV, which covers the high bits (§2.2.1).
    pub fn infer_esn(&self, seq_lo: u32) -> Option<u64> {
        let th = (self.top >> 32) as u32;
        let tl = self.top as u32;
        // Bottom of the window, low half (A2.2 "Tl - W + 1"), modulo 2^32.
        let bottom = tl.wrapping_sub(WINDOW_SIZE as u32 - 1);
        let seq_hi = if u64::from(tl) >= WINDOW_SIZE - 1 {
            // Case A: the window does not straddle a 2^32 boundary.
            if seq_lo >= bottom {
                Some(th)
            } else {
                th.checked_add(1)
            }
        } else {
            // Case B: the window straddles a boundary; a large seq_lo lies before it.
            if seq_lo >= bottom {
                th.checked_sub(1)
            } else {
                Some(th)
            }
        }?;
        Some((u64::from(seq_hi) << 32) | u64::from(seq_lo))
    }

    #[inline]
    fn position(seq: u64) -> (usize, u64) {
        let block = ((seq / BLOCK_BITS) % BLOCKS as u64) as usize;
        (block, 1u64 << (seq % BLOCK_BITS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_window_duplicate_and_too_old() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.check(0), Err(Replay::TooOld));
        for s in [1, 3, 2, 10] {
            w.accept(s).unwrap();
        }
        assert_eq!(w.accept(3), Err(Replay::Duplicate));
        assert_eq!(w.check(5), Ok(()));
        w.accept(5000).unwrap();
        // 5000 - 1984 = 3016 is the first left of the window.
        assert_eq!(w.check(5000 - WINDOW_SIZE), Err(Replay::TooOld));
        assert_eq!(w.check(5000 - WINDOW_SIZE + 1), Ok(()));
        assert_eq!(w.check(10), Err(Replay::TooOld));
        assert_eq!(w.check(5000), Err(Replay::Duplicate));
        // Reordered packets within the window are all accepted once.
        for s in (5000 - 100..5000).rev() {
            w.accept(s).unwrap();
            assert_eq!(w.check(s), Err(Replay::Duplicate));
        }
    }

    #[test]
    fn stale_bits_are_cleared_when_the_window_moves() {
        let mut w = ReplayWindow::new();
        // Fill every bit, then jump by exactly one ring and by less: no old bit may make a fresh
        // number look like a duplicate.
        for s in 1..=2048 {
            w.accept(s).unwrap();
        }
        for jump in [64, 65, 1000, 2048, 4096, 1 << 20] {
            let top = w.top();
            w.accept(top + jump).unwrap();
            for s in (top + 1)..(top + jump).min(top + 3000) {
                if top + jump - s < WINDOW_SIZE {
                    assert_eq!(w.check(s), Ok(()), "jump {jump} seq {s}");
                }
            }
        }
    }

    #[test]
    fn esn_inference_follows_appendix_a() {
        let mut w = ReplayWindow::new();
        w.accept(1).unwrap();
        // Case B at the very start: a huge low value lies before 0, so it is a replay.
        assert_eq!(w.infer_esn(u32::MAX), None);
        assert_eq!(w.infer_esn(2), Some(2));

        // Top just below 2^32: case A; small values belong to the next epoch.
        let mut w = ReplayWindow::new();
        w.accept(u64::from(u32::MAX) - 5).unwrap();
        assert_eq!(w.infer_esn(u32::MAX), Some(u64::from(u32::MAX)));
        assert_eq!(w.infer_esn(3), Some((1 << 32) | 3));
        assert_eq!(w.infer_esn(u32::MAX - 100), Some(u64::from(u32::MAX - 100)));

        // Top just above 2^32: case B; values near 2^32 - 1 are still in the old epoch.
        let mut w = ReplayWindow::new();
        w.accept((1 << 32) + 10).unwrap();
        assert_eq!(w.infer_esn(u32::MAX - 3), Some(u64::from(u32::MAX - 3)));
        assert_eq!(w.infer_esn(11), Some((1 << 32) + 11));
        assert_eq!(w.infer_esn(5), Some((1 << 32) + 5));
    }
}
