//! Sans-IO ESP (RFC 4303) for vgw: security associations, seal/open, anti-replay, UDP
//! encapsulation (RFC 3948).
//!
//! The crate does no I/O, keeps no clock and spawns nothing; it works on buffers the caller
//! owns and allocates nothing per packet. The data plane drives it:
//!
//! - outbound: an inner IP packet, read from TUN into a buffer at [`MAX_HEADROOM`], is sealed
//!   in place by [`OutboundSa::seal_in_place`] (or many at once by [`OutboundSa::seal_batch`]);
//! - inbound: a UDP payload from port 4500 is classified by [`udp::classify_mut`], and ESP is
//!   opened in place by [`InboundSaTable::open_in_place`] (or [`InboundSaTable::open_batch`]),
//!   which finds the SA by SPI, checks replay, authenticates, decrypts and checks padding;
//! - every failure is an [`Error`] whose [`ErrorKind`] indexes per-cause drop counters;
//! - [`OutboundSa::poll_limit`] and [`InboundSa::poll_limit`] report reached lifetimes, for IKE
//!   to rekey (soft) or delete (hard) the Child SA.
//!
//! Suites: AES-GCM-16 128/256 (RFC 4106) on `aws-lc-rs` and ChaCha20-Poly1305 (RFC 7634) on
//! `ring`, each the faster here (docs/performance.md); AES-CBC 128/256 (RFC 3602) with
//! HMAC-SHA1-96 (RFC 2404) or HMAC-SHA2-256/384/512 (RFC 4868) on `aws-lc-rs`. Keys come from the Child SA KEYMAT as RFC 7296 §2.17 lays it out: see
//! [`Suite::split_child_keymat`] and [`Suite::cipher`].
//!
//! ```
//! use vgw_esp::{udp, InboundSaTable, InboundSa, Lifetime, OutboundSa, SaParams, Spi, Suite};
//! use vgw_esp::{MAX_HEADROOM, MAX_TAILROOM};
//!
//! // KEYMAT from IKE (RFC 7296 §2.17): initiator->responder half first.
//! let suite = Suite::AES_GCM_256;
//! let keymat = [7u8; 72];
//! let (i_to_r, _r_to_i) = suite.split_child_keymat(&keymat)?;
//! let params = SaParams { spi: Spi(0xc1a0_0001), suite, esn: true, lifetime: Lifetime::default() };
//! let mut outbound = OutboundSa::new(params, i_to_r)?; // at the initiator
//! let mut peer = InboundSaTable::new(); // at the responder
//! peer.insert(InboundSa::new(params, i_to_r)?);
//!
//! // The inner packet was read into the buffer after MAX_HEADROOM bytes.
//! let inner = [0x45u8; 60];
//! let mut buf = [0u8; MAX_HEADROOM + 60 + MAX_TAILROOM];
//! buf[MAX_HEADROOM..MAX_HEADROOM + 60].copy_from_slice(&inner);
//! let esp = outbound.seal_in_place(&mut buf, MAX_HEADROOM..MAX_HEADROOM + 60)?;
//!
//! // The datagram arrives on UDP 4500.
//! let (kind, datagram) = udp::classify_mut(&mut buf[esp])?;
//! assert_eq!(kind, udp::UdpKind::Esp);
//! let opened = peer.open_in_place(datagram)?;
//! assert_eq!(&datagram[opened.inner], &inner[..]);
//! assert_eq!(opened.next_header, 4);
//! # Ok::<(), vgw_esp::Error>(())
//! ```

pub mod batch;
pub mod crypto;
mod error;
pub mod header;
pub mod replay;
pub mod sa;
pub mod udp;

pub use batch::{BatchSummary, PacketSlot};
pub use crypto::{Aead, Cipher, Encryption, Integrity, Suite};
pub use error::{Error, ErrorKind};
pub use header::{EspHeader, Spi};
pub use replay::{ReplayWindow, WINDOW_SIZE};
pub use sa::{
    Counters, InboundSa, InboundSaTable, Lifetime, LimitState, MAX_HEADROOM, MAX_TAILROOM, Opened,
    OutboundSa, SaParams,
};
