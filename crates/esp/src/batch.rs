//! Batch seal and open: many packets per call, for a data plane that reads and writes TUN and
//! UDP in batches (recvmmsg/sendmmsg, GSO/GRO). One call amortises the SA lookup and keeps the
//! transform's key schedule hot in cache; each packet still gets its own outcome, so one bad
//! packet does not spoil the batch.

use core::ops::Range;

use crate::sa::{InboundSa, InboundSaTable, Opened, OutboundSa};
use crate::{Error, Spi};

/// One packet of a batch: its buffer, where its bytes lie in it, and what became of it.
///
/// Before a seal, `data` is the inner packet (with headroom before it and tailroom after);
/// after a successful seal it is the ESP packet. Before an open, `data` is the ESP packet;
/// after a successful one it is the inner packet and `next_header`, `seq` and `spi` are set.
#[derive(Debug)]
pub struct PacketSlot<'a> {
    /// The buffer, owned by the caller (a chunk of a larger batch buffer, typically).
    pub buf: &'a mut [u8],
    /// Where the packet lies in `buf`.
    pub data: Range<usize>,
    /// Next header of an opened packet (RFC 4303 §2.6); 0 otherwise.
    pub next_header: u8,
    /// Full sequence number of the sealed or opened packet.
    pub seq: u64,
    /// SPI of the SA that handled the packet.
    pub spi: Spi,
    /// The outcome; packets that failed are to be dropped and counted by [`Error::kind`].
    pub result: Result<(), Error>,
}

impl<'a> PacketSlot<'a> {
    /// A slot for the packet at `buf[data]`, not yet processed.
    pub fn new(buf: &'a mut [u8], data: Range<usize>) -> Self {
        PacketSlot {
            buf,
            data,
            next_header: 0,
            seq: 0,
            spi: Spi(0),
            result: Ok(()),
        }
    }

    /// The packet's current bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.data.clone()]
    }

    fn record_open(&mut self, opened: Result<Opened, Error>) -> bool {
        match opened {
            Ok(o) => {
                let base = self.data.start;
                self.data = base + o.inner.start..base + o.inner.end;
                self.next_header = o.next_header;
                self.seq = o.seq;
                self.spi = o.spi;
                self.result = Ok(());
                true
            }
            Err(e) => {
                self.result = Err(e);
                false
            }
        }
    }
}

/// How many packets of a batch succeeded and failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchSummary {
    /// Packets sealed or opened.
    pub ok: usize,
    /// Packets whose `result` is an error.
    pub failed: usize,
}

impl BatchSummary {
    fn count(&mut self, ok: bool) {
        if ok {
            self.ok += 1;
        } else {
            self.failed += 1;
        }
    }
}

impl OutboundSa {
    /// Seals every slot's inner packet in place, in order, so sequence numbers follow the
    /// slice order (RFC 4303 §3.3.3).
    pub fn seal_batch(&mut self, slots: &mut [PacketSlot<'_>]) -> BatchSummary {
        let mut summary = BatchSummary::default();
        for slot in slots.iter_mut() {
            let r = self.seal_in_place(slot.buf, slot.data.clone());
            let ok = r.is_ok();
            match r {
                Ok(range) => {
                    slot.data = range;
                    slot.seq = self.last_seq();
                    slot.spi = self.spi();
                    slot.result = Ok(());
                }
                Err(e) => slot.result = Err(e),
            }
            summary.count(ok);
        }
        summary
    }
}

impl InboundSa {
    /// Opens every slot's ESP packet in place with this SA (RFC 4303 §3.4).
    pub fn open_batch(&mut self, slots: &mut [PacketSlot<'_>]) -> BatchSummary {
        let mut summary = BatchSummary::default();
        for slot in slots.iter_mut() {
            // A range outside the buffer is the caller's bug; count it rather than panic.
            let r = match slot.buf.get_mut(slot.data.clone()) {
                Some(packet) => self.open_in_place(packet),
                None => Err(Error::BufferTooSmall),
            };
            summary.count(slot.record_open(r));
        }
        summary
    }
}

impl InboundSaTable {
    /// Opens every slot's ESP packet with the SA its SPI names (RFC 4303 §3.4.2).
    pub fn open_batch(&mut self, slots: &mut [PacketSlot<'_>]) -> BatchSummary {
        let mut summary = BatchSummary::default();
        for slot in slots.iter_mut() {
            // A range outside the buffer is the caller's bug; count it rather than panic.
            let r = match slot.buf.get_mut(slot.data.clone()) {
                Some(packet) => self.open_in_place(packet),
                None => Err(Error::BufferTooSmall),
            };
            summary.count(slot.record_open(r));
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sa::{InboundSa, Lifetime, MAX_HEADROOM, MAX_TAILROOM, SaParams};
    use crate::{ErrorKind, Suite};

    const SLOT: usize = 2048;

    #[test]
    fn seal_then_open_a_batch_with_a_bad_packet_in_it() {
        let params = SaParams {
            spi: Spi(0x1000),
            suite: Suite::AES_GCM_256,
            esn: true,
            lifetime: Lifetime::default(),
        };
        let keymat = [9u8; 36];
        let mut out = OutboundSa::new(params, &keymat).unwrap();
        let mut table = InboundSaTable::new();
        table.insert(InboundSa::new(params, &keymat).unwrap());

        let sizes = [64usize, 512, 1400, 0, 100];
        let mut big = vec![0u8; SLOT * sizes.len()];
        let mut slots: Vec<PacketSlot<'_>> = big
            .chunks_mut(SLOT)
            .zip(sizes)
            .map(|(buf, len)| {
                if len > 0 {
                    buf[MAX_HEADROOM] = 0x45;
                }
                PacketSlot::new(buf, MAX_HEADROOM..MAX_HEADROOM + len)
            })
            .collect();
        let s = out.seal_batch(&mut slots);
        // The empty packet has no IP version, so it cannot be tunnelled.
        assert_eq!(s, BatchSummary { ok: 4, failed: 1 });
        assert_eq!(slots[3].result, Err(Error::InvalidPayload));
        assert_eq!(slots[4].seq, 4);
        assert!(slots[2].data.end <= MAX_HEADROOM + 1400 + MAX_TAILROOM);

        // Corrupt one, and make the failed one an obvious runt.
        let last = slots[1].data.end - 1;
        slots[1].buf[last] ^= 1;
        slots[3].data = 0..3;
        let s = table.open_batch(&mut slots);
        assert_eq!(s, BatchSummary { ok: 3, failed: 2 });
        assert_eq!(
            slots[1].result.map_err(|e| e.kind()),
            Err(ErrorKind::AuthenticationFailed)
        );
        assert_eq!(slots[3].result, Err(Error::Truncated));

        // A range past the buffer is refused, not a panic.
        let mut tiny = [0u8; 4];
        let mut bad = [PacketSlot::new(&mut tiny, 2..9)];
        assert_eq!(table.open_batch(&mut bad).failed, 1);
        assert_eq!(out.seal_batch(&mut bad).failed, 1);
        assert_eq!(bad[0].result, Err(Error::BufferTooSmall));
        for (slot, len) in slots.iter().zip(sizes) {
            if slot.result.is_ok() {
                assert_eq!(slot.data.len(), len);
                assert_eq!(slot.data.start, MAX_HEADROOM);
                assert_eq!(slot.next_header, 4);
                assert_eq!(slot.spi, Spi(0x1000));
            }
        }
    }
}
