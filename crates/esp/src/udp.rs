//! UDP encapsulation of ESP for NAT traversal (RFC 3948): telling apart what arrives on port
//! 4500, and the non-ESP marker that IKE messages carry there.
//!
//! On port 4500 three things share one socket (RFC 3948 §2.2, §2.3, §4):
//! - a NAT-keepalive: exactly one byte, 0xFF, to be dropped;
//! - IKE: the 4-byte non-ESP marker (zero, which no SPI may be) followed by the IKE message;
//! - ESP: anything else, whose first 4 bytes are the (non-zero) SPI.

use crate::Error;
use crate::header::HEADER_LEN;

/// The IKE/ESP NAT-traversal port (RFC 3948 §2, RFC 7296 §2.23).
pub const NAT_T_PORT: u16 = 4500;
/// Prefix of IKE messages on port 4500, where the SPI would be (RFC 3948 §2.2).
pub const NON_ESP_MARKER: [u8; 4] = [0; 4];
/// The single byte of a NAT-keepalive packet (RFC 3948 §2.3).
pub const NAT_KEEPALIVE: u8 = 0xff;

/// What a datagram on port 4500 holds; a `Copy` tag for counting and for in-place handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UdpKind {
    /// A NAT-keepalive: drop it (RFC 3948 §2.3).
    NatKeepalive,
    /// An IKE message, starting after the 4-byte non-ESP marker.
    Ike,
    /// An ESP packet, the whole datagram.
    Esp,
}

impl UdpKind {
    /// Classifies a UDP payload received on port 4500.
    ///
    /// Short or marker-only datagrams are [`Error::Truncated`]; an ESP packet must hold at
    /// least its 8-byte header.
    pub fn of(payload: &[u8]) -> Result<UdpKind, Error> {
        match payload {
            [NAT_KEEPALIVE] => Ok(UdpKind::NatKeepalive),
            [0, 0, 0, 0, _, ..] => Ok(UdpKind::Ike),
            p if p.len() >= HEADER_LEN && p[..4] != NON_ESP_MARKER => Ok(UdpKind::Esp),
            _ => Err(Error::Truncated),
        }
    }
}

/// A classified datagram with its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classified<'a> {
    /// A NAT-keepalive (RFC 3948 §2.3).
    NatKeepalive,
    /// The IKE message, non-ESP marker removed.
    Ike(&'a [u8]),
    /// The ESP packet.
    Esp(&'a [u8]),
}

/// Classifies a UDP payload received on port 4500 and strips the non-ESP marker from IKE.
pub fn classify(payload: &[u8]) -> Result<Classified<'_>, Error> {
    Ok(match UdpKind::of(payload)? {
        UdpKind::NatKeepalive => Classified::NatKeepalive,
        UdpKind::Ike => Classified::Ike(&payload[NON_ESP_MARKER.len()..]),
        UdpKind::Esp => Classified::Esp(payload),
    })
}

/// Classifies a mutable UDP payload, for opening ESP in place without a copy.
pub fn classify_mut(payload: &mut [u8]) -> Result<(UdpKind, &mut [u8]), Error> {
    let kind = UdpKind::of(payload)?;
    let body = match kind {
        UdpKind::NatKeepalive => &mut payload[..0],
        UdpKind::Ike => &mut payload[NON_ESP_MARKER.len()..],
        UdpKind::Esp => payload,
    };
    Ok((kind, body))
}

/// Writes an IKE message behind the non-ESP marker into `out`, for sending on port 4500;
/// returns the datagram length.
pub fn encapsulate_ike(ike: &[u8], out: &mut [u8]) -> Result<usize, Error> {
    let len = NON_ESP_MARKER.len() + ike.len();
    let dst = out.get_mut(..len).ok_or(Error::BufferTooSmall)?;
    dst[..4].copy_from_slice(&NON_ESP_MARKER);
    dst[4..].copy_from_slice(ike);
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_three_kinds() {
        assert_eq!(classify(&[0xff]), Ok(Classified::NatKeepalive));
        let ike = [0, 0, 0, 0, 0xcd, 0x09, 0xe1, 0x52];
        assert_eq!(classify(&ike), Ok(Classified::Ike(&ike[4..])));
        let esp = [0x80, 0x34, 0x0f, 0x0b, 0, 0, 0, 1, 0xaa];
        assert_eq!(classify(&esp), Ok(Classified::Esp(&esp[..])));
    }

    #[test]
    fn refuses_runts() {
        for p in [
            &[][..],
            &[0],
            &[0xfe],
            &[0xff, 0xff],
            &[0, 0, 0, 0],
            &[1, 2, 3, 4, 5],
        ] {
            assert_eq!(classify(p), Err(Error::Truncated), "{p:?}");
        }
    }

    #[test]
    fn ike_round_trips_through_the_marker() {
        let msg = [1u8, 2, 3, 4, 5];
        let mut out = [0u8; 16];
        let n = encapsulate_ike(&msg, &mut out).unwrap();
        assert_eq!(classify(&out[..n]), Ok(Classified::Ike(&msg[..])));
        let (kind, body) = classify_mut(&mut out[..n]).unwrap();
        assert_eq!((kind, &*body), (UdpKind::Ike, &msg[..]));
        assert_eq!(
            encapsulate_ike(&msg, &mut [0u8; 8]),
            Err(Error::BufferTooSmall)
        );
    }
}
