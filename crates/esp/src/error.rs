//! Errors of ESP processing (RFC 4303 §3.3, §3.4), typed so the data plane can count drops by cause.

use core::fmt;

use crate::Spi;

/// Why a packet could not be sealed or opened.
///
/// Every variant maps to one [`ErrorKind`], which is what per-cause drop counters index by; the
/// fields only help logs and tests. Nothing here ever carries key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The packet is shorter than its header, IV, trailer and ICV (RFC 4303 §2).
    Truncated,
    /// The packet's lengths are inconsistent, e.g. ciphertext not a multiple of the cipher's
    /// alignment (RFC 4303 §2.4), or a UDP payload that is neither ESP, IKE nor a keepalive.
    Malformed,
    /// No inbound SA has this SPI (RFC 4303 §3.4.2: discard and audit).
    UnknownSpi(Spi),
    /// The sequence number was already received or is left of the window (RFC 4303 §3.4.3).
    ReplayedPacket {
        /// Full (ESN-inferred) sequence number of the rejected packet.
        seq: u64,
    },
    /// ICV verification failed (RFC 4303 §3.4.4): forged, corrupted, or the wrong key.
    AuthenticationFailed,
    /// Authenticated, but the padding or its length is not what RFC 4303 §2.4 requires.
    BadPadding,
    /// An authenticated dummy packet, next header 59 (RFC 4303 §2.6): it must be dropped.
    DummyPacket,
    /// The outbound sequence number would cycle: the SA must be rekeyed (RFC 4303 §3.3.3).
    SequenceOverflow,
    /// The SA's hard byte or packet lifetime is reached: it must not be used (RFC 4301 §4.4.2.1).
    LifetimeExpired,
    /// The caller's buffer has too little headroom or tailroom for the ESP framing.
    BufferTooSmall,
    /// The inner packet is not IPv4 or IPv6, so tunnel mode has no next header for it
    /// (RFC 4303 §2.6: 4 or 41).
    InvalidPayload,
    /// The key material does not have the length the suite needs (RFC 7296 §2.17).
    InvalidKeyLength {
        /// Bytes the suite needs for one direction.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// The SPI is reserved: 0 to 255 (RFC 4303 §2.1).
    InvalidSpi(Spi),
    /// The encryption and integrity algorithms do not combine: a combined-mode cipher takes no
    /// integrity algorithm, a CBC cipher needs one (RFC 4303 §3.2).
    InvalidSuite,
    /// The crypto backend refused an operation that its inputs should have allowed.
    Crypto,
}

impl Error {
    /// The counter bucket for this error.
    pub const fn kind(&self) -> ErrorKind {
        match self {
            Error::Truncated => ErrorKind::Truncated,
            Error::Malformed => ErrorKind::Malformed,
            Error::UnknownSpi(_) => ErrorKind::UnknownSpi,
            Error::ReplayedPacket { .. } => ErrorKind::ReplayedPacket,
            Error::AuthenticationFailed => ErrorKind::AuthenticationFailed,
            Error::BadPadding => ErrorKind::BadPadding,
            Error::DummyPacket => ErrorKind::DummyPacket,
            Error::SequenceOverflow => ErrorKind::SequenceOverflow,
            Error::LifetimeExpired => ErrorKind::LifetimeExpired,
            Error::BufferTooSmall => ErrorKind::BufferTooSmall,
            Error::InvalidPayload => ErrorKind::InvalidPayload,
            Error::InvalidKeyLength { .. } => ErrorKind::InvalidKeyLength,
            Error::InvalidSpi(_) => ErrorKind::InvalidSpi,
            Error::InvalidSuite => ErrorKind::InvalidSuite,
            Error::Crypto => ErrorKind::Crypto,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownSpi(spi) => write!(f, "unknown SPI {spi}"),
            Error::ReplayedPacket { seq } => write!(f, "replayed packet, sequence number {seq}"),
            Error::InvalidKeyLength { expected, got } => {
                write!(f, "key material is {got} bytes, suite needs {expected}")
            }
            Error::InvalidSpi(spi) => write!(f, "reserved SPI {spi}"),
            other => f.write_str(other.kind().as_str()),
        }
    }
}

impl std::error::Error for Error {}

/// Field-less twin of [`Error`], for arrays of per-cause drop counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ErrorKind {
    /// See [`Error::Truncated`].
    Truncated,
    /// See [`Error::Malformed`].
    Malformed,
    /// See [`Error::UnknownSpi`].
    UnknownSpi,
    /// See [`Error::ReplayedPacket`].
    ReplayedPacket,
    /// See [`Error::AuthenticationFailed`].
    AuthenticationFailed,
    /// See [`Error::BadPadding`].
    BadPadding,
    /// See [`Error::DummyPacket`].
    DummyPacket,
    /// See [`Error::SequenceOverflow`].
    SequenceOverflow,
    /// See [`Error::LifetimeExpired`].
    LifetimeExpired,
    /// See [`Error::BufferTooSmall`].
    BufferTooSmall,
    /// See [`Error::InvalidPayload`].
    InvalidPayload,
    /// See [`Error::InvalidKeyLength`].
    InvalidKeyLength,
    /// See [`Error::InvalidSpi`].
    InvalidSpi,
    /// See [`Error::InvalidSuite`].
    InvalidSuite,
    /// See [`Error::Crypto`].
    Crypto,
}

impl ErrorKind {
    /// Every kind, in [`ErrorKind::index`] order.
    pub const ALL: [ErrorKind; 15] = [
        ErrorKind::Truncated,
        ErrorKind::Malformed,
        ErrorKind::UnknownSpi,
        ErrorKind::ReplayedPacket,
        ErrorKind::AuthenticationFailed,
        ErrorKind::BadPadding,
        ErrorKind::DummyPacket,
        ErrorKind::SequenceOverflow,
        ErrorKind::LifetimeExpired,
        ErrorKind::BufferTooSmall,
        ErrorKind::InvalidPayload,
        ErrorKind::InvalidKeyLength,
        ErrorKind::InvalidSpi,
        ErrorKind::InvalidSuite,
        ErrorKind::Crypto,
    ];

    /// Number of kinds: the length of a per-cause counter array.
    pub const COUNT: usize = Self::ALL.len();

    /// Dense index in `0..COUNT`, so counters can be a plain array without a map.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Stable snake_case label for metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Truncated => "truncated",
            ErrorKind::Malformed => "malformed",
            ErrorKind::UnknownSpi => "unknown_spi",
            ErrorKind::ReplayedPacket => "replayed_packet",
            ErrorKind::AuthenticationFailed => "authentication_failed",
            ErrorKind::BadPadding => "bad_padding",
            ErrorKind::DummyPacket => "dummy_packet",
            ErrorKind::SequenceOverflow => "sequence_overflow",
            ErrorKind::LifetimeExpired => "lifetime_expired",
            ErrorKind::BufferTooSmall => "buffer_too_small",
            ErrorKind::InvalidPayload => "invalid_payload",
            ErrorKind::InvalidKeyLength => "invalid_key_length",
            ErrorKind::InvalidSpi => "invalid_spi",
            ErrorKind::InvalidSuite => "invalid_suite",
            ErrorKind::Crypto => "crypto",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_dense_and_labelled_uniquely() {
        for (i, kind) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
        let mut labels: Vec<_> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), ErrorKind::COUNT);
    }
}
