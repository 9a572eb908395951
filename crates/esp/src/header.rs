//! The ESP packet format (RFC 4303 §2): header, trailer and next-header values.
//!
//! ```text
//!  0                   1                   2                   3
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |               Security Parameters Index (SPI)                 |
//! |                      Sequence Number                          |
//! |                 IV (explicit, per suite)                  ... |
//! |                 Payload (the inner IP packet)             ... |
//! |      Padding (0-255 bytes)    | Pad Length    | Next Header   |
//! |                 ICV (per suite)                           ... |
//! ```

use core::fmt;

use crate::Error;

/// Length of SPI plus sequence number (RFC 4303 §2.1, §2.2).
pub const HEADER_LEN: usize = 8;
/// Pad Length and Next Header bytes (RFC 4303 §2.5, §2.6).
pub const TRAILER_LEN: usize = 2;

/// Next header values ESP carries in tunnel mode (RFC 4303 §2.6, IANA protocol numbers).
pub mod next_header {
    /// An IPv4 packet (IP-in-IP).
    pub const IPV4: u8 = 4;
    /// An IPv6 packet.
    pub const IPV6: u8 = 41;
    /// No next header: a dummy packet to be dropped (RFC 4303 §2.6).
    pub const NONE: u8 = 59;
}

/// Security Parameters Index: picks the SA on receive (RFC 4303 §2.1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Spi(pub u32);

impl Spi {
    /// Whether the value may be used for an SA: 1-255 are reserved by IANA and 0 is for local
    /// use only, never sent (RFC 4303 §2.1).
    pub const fn is_assignable(self) -> bool {
        self.0 > 255
    }
}

impl fmt::Display for Spi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // strongSwan and `ip xfrm` print SPIs as 8 hex digits; match them for grepping logs.
        write!(f, "0x{:08x}", self.0)
    }
}

impl fmt::Debug for Spi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Spi({self})")
    }
}

/// The cleartext ESP header: SPI and the low 32 bits of the sequence number (RFC 4303 §2.1-2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspHeader {
    /// Security Parameters Index.
    pub spi: Spi,
    /// Sequence number as sent: the low 32 bits when ESN is in use (§2.2.1).
    pub seq: u32,
}

impl EspHeader {
    /// Reads the header at the start of `packet`.
    pub fn parse(packet: &[u8]) -> Result<EspHeader, Error> {
        let h: &[u8; HEADER_LEN] = packet
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(Error::Truncated)?;
        Ok(EspHeader {
            spi: Spi(u32::from_be_bytes([h[0], h[1], h[2], h[3]])),
            seq: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        })
    }

    /// Writes the header into the first 8 bytes of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Error> {
        let h = buf.get_mut(..HEADER_LEN).ok_or(Error::BufferTooSmall)?;
        h[..4].copy_from_slice(&self.spi.0.to_be_bytes());
        h[4..].copy_from_slice(&self.seq.to_be_bytes());
        Ok(())
    }
}

/// The SPI of an ESP packet, for picking its SA before anything else is read.
pub fn peek_spi(packet: &[u8]) -> Result<Spi, Error> {
    EspHeader::parse(packet).map(|h| h.spi)
}

/// The tunnel-mode next header for an inner IP packet, from its version nibble.
pub fn next_header_for(inner: &[u8]) -> Result<u8, Error> {
    match inner.first().map(|b| b >> 4) {
        Some(4) => Ok(next_header::IPV4),
        Some(6) => Ok(next_header::IPV6),
        _ => Err(Error::InvalidPayload),
    }
}

/// Padding bytes needed so payload + padding + trailer is a multiple of `align` (RFC 4303 §2.4).
#[inline]
pub const fn pad_len(payload_len: usize, align: usize) -> usize {
    (align - (payload_len + TRAILER_LEN) % align) % align
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = EspHeader {
            spi: Spi(0x8034_0f0b),
            seq: 7,
        };
        let mut buf = [0u8; 8];
        h.emit(&mut buf).unwrap();
        assert_eq!(buf, [0x80, 0x34, 0x0f, 0x0b, 0, 0, 0, 7]);
        assert_eq!(EspHeader::parse(&buf), Ok(h));
        assert_eq!(EspHeader::parse(&buf[..7]), Err(Error::Truncated));
        assert_eq!(format!("{}", h.spi), "0x80340f0b");
    }

    #[test]
    fn padding_reaches_alignment() {
        for align in [4, 16] {
            for len in 0..64 {
                let total = len + pad_len(len, align) + TRAILER_LEN;
                assert_eq!(total % align, 0);
                assert!(pad_len(len, align) < align);
            }
        }
        // The strongSwan fixture: an 84-byte ping gets 2 bytes of padding under AES-GCM.
        assert_eq!(pad_len(84, 4), 2);
    }
}
