//! IKEv2 messages and payloads (RFC 7296 §3): parse untrusted bytes into [`Message`], emit it back.
//!
//! Parsing never panics and never trusts a length field: every read is bounds-checked and a bad
//! message is a [`ParseError`] naming what was wrong. The SK payload (§3.14) is kept as raw bytes here;
//! [`crate::crypto`] protects and unprotects it, and the decrypted inner chain is parsed with
//! [`parse_payloads`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Exchange types (§3.1).
pub mod exchange {
    /// IKE_SA_INIT.
    pub const IKE_SA_INIT: u8 = 34;
    /// IKE_AUTH.
    pub const IKE_AUTH: u8 = 35;
    /// CREATE_CHILD_SA.
    pub const CREATE_CHILD_SA: u8 = 36;
    /// INFORMATIONAL.
    pub const INFORMATIONAL: u8 = 37;

    /// The exchange's name, for logs.
    pub fn name(t: u8) -> &'static str {
        match t {
            IKE_SA_INIT => "IKE_SA_INIT",
            IKE_AUTH => "IKE_AUTH",
            CREATE_CHILD_SA => "CREATE_CHILD_SA",
            INFORMATIONAL => "INFORMATIONAL",
            _ => "UNKNOWN_EXCHANGE",
        }
    }
}

/// Header flags (§3.1).
pub mod flags {
    /// Set by the original initiator of the IKE SA.
    pub const INITIATOR: u8 = 0x08;
    /// Version: the sender could speak a higher version.
    pub const VERSION: u8 = 0x10;
    /// This message is a response.
    pub const RESPONSE: u8 = 0x20;
}

/// Payload types (§3.2, RFC 7383).
pub mod payload_type {
    /// No next payload.
    pub const NONE: u8 = 0;
    /// Security Association.
    pub const SA: u8 = 33;
    /// Key Exchange.
    pub const KE: u8 = 34;
    /// Identification - Initiator.
    pub const IDI: u8 = 35;
    /// Identification - Responder.
    pub const IDR: u8 = 36;
    /// Certificate.
    pub const CERT: u8 = 37;
    /// Certificate Request.
    pub const CERTREQ: u8 = 38;
    /// Authentication.
    pub const AUTH: u8 = 39;
    /// Nonce.
    pub const NONCE: u8 = 40;
    /// Notify.
    pub const NOTIFY: u8 = 41;
    /// Delete.
    pub const DELETE: u8 = 42;
    /// Vendor ID.
    pub const VENDOR: u8 = 43;
    /// Traffic Selector - Initiator.
    pub const TSI: u8 = 44;
    /// Traffic Selector - Responder.
    pub const TSR: u8 = 45;
    /// Encrypted and Authenticated.
    pub const SK: u8 = 46;
    /// Configuration.
    pub const CP: u8 = 47;
    /// EAP.
    pub const EAP: u8 = 48;
    /// Encrypted and Authenticated Fragment (RFC 7383).
    pub const SKF: u8 = 53;
}

/// Notify message types (§3.10.1, and the RFCs that added to it).
pub mod notify {
    /// Error: a critical payload we do not know.
    pub const UNSUPPORTED_CRITICAL_PAYLOAD: u16 = 1;
    /// Error: an SPI we do not know.
    pub const INVALID_IKE_SPI: u16 = 4;
    /// Error: a major version we do not speak.
    pub const INVALID_MAJOR_VERSION: u16 = 5;
    /// Error: malformed.
    pub const INVALID_SYNTAX: u16 = 7;
    /// Error: a message id outside the window.
    pub const INVALID_MESSAGE_ID: u16 = 9;
    /// Error: unknown ESP SPI.
    pub const INVALID_SPI: u16 = 11;
    /// Error: no proposal acceptable.
    pub const NO_PROPOSAL_CHOSEN: u16 = 14;
    /// Error: the KE group is not the one wanted; data is the wanted group.
    pub const INVALID_KE_PAYLOAD: u16 = 17;
    /// Error: authentication failed.
    pub const AUTHENTICATION_FAILED: u16 = 24;
    /// Error: single pair of selectors required.
    pub const SINGLE_PAIR_REQUIRED: u16 = 34;
    /// Error: no additional SAs.
    pub const NO_ADDITIONAL_SAS: u16 = 35;
    /// Error: internal address failure.
    pub const INTERNAL_ADDRESS_FAILURE: u16 = 36;
    /// Error: CP request failed.
    pub const FAILED_CP_REQUIRED: u16 = 37;
    /// Error: traffic selectors unacceptable.
    pub const TS_UNACCEPTABLE: u16 = 38;
    /// Error: invalid selectors.
    pub const INVALID_SELECTORS: u16 = 39;
    /// Error: temporary failure (rekey collision, §2.25).
    pub const TEMPORARY_FAILURE: u16 = 43;
    /// Error: the Child SA to rekey is gone.
    pub const CHILD_SA_NOT_FOUND: u16 = 44;
    /// Status: forget every other SA with this peer.
    pub const INITIAL_CONTACT: u16 = 16384;
    /// Status: we support window sizes above one.
    pub const SET_WINDOW_SIZE: u16 = 16385;
    /// Status: narrowed selectors.
    pub const ADDITIONAL_TS_POSSIBLE: u16 = 16386;
    /// Status: IPComp.
    pub const IPCOMP_SUPPORTED: u16 = 16387;
    /// Status: NAT detection, hash of the source.
    pub const NAT_DETECTION_SOURCE_IP: u16 = 16388;
    /// Status: NAT detection, hash of the destination.
    pub const NAT_DETECTION_DESTINATION_IP: u16 = 16389;
    /// Status: the responder wants a cookie.
    pub const COOKIE: u16 = 16390;
    /// Status: transport mode requested.
    pub const USE_TRANSPORT_MODE: u16 = 16391;
    /// Status: rekeying this Child SA.
    pub const REKEY_SA: u16 = 16393;
    /// Status: ESP TFC padding not supported.
    pub const ESP_TFC_PADDING_NOT_SUPPORTED: u16 = 16394;
    /// Status: no first fragments.
    pub const NON_FIRST_FRAGMENTS_ALSO: u16 = 16395;
    /// Status: MOBIKE.
    pub const MOBIKE_SUPPORTED: u16 = 16396;
    /// Status: IKE fragmentation supported (RFC 7383).
    pub const IKEV2_FRAGMENTATION_SUPPORTED: u16 = 16430;
    /// Status: signature hash algorithms (RFC 7427).
    pub const SIGNATURE_HASH_ALGORITHMS: u16 = 16431;

    /// The notify type's name, for logs and `lastError`.
    pub fn name(t: u16) -> String {
        let s = match t {
            UNSUPPORTED_CRITICAL_PAYLOAD => "UNSUPPORTED_CRITICAL_PAYLOAD",
            INVALID_IKE_SPI => "INVALID_IKE_SPI",
            INVALID_MAJOR_VERSION => "INVALID_MAJOR_VERSION",
            INVALID_SYNTAX => "INVALID_SYNTAX",
            INVALID_MESSAGE_ID => "INVALID_MESSAGE_ID",
            INVALID_SPI => "INVALID_SPI",
            NO_PROPOSAL_CHOSEN => "NO_PROPOSAL_CHOSEN",
            INVALID_KE_PAYLOAD => "INVALID_KE_PAYLOAD",
            AUTHENTICATION_FAILED => "AUTHENTICATION_FAILED",
            SINGLE_PAIR_REQUIRED => "SINGLE_PAIR_REQUIRED",
            NO_ADDITIONAL_SAS => "NO_ADDITIONAL_SAS",
            INTERNAL_ADDRESS_FAILURE => "INTERNAL_ADDRESS_FAILURE",
            FAILED_CP_REQUIRED => "FAILED_CP_REQUIRED",
            TS_UNACCEPTABLE => "TS_UNACCEPTABLE",
            INVALID_SELECTORS => "INVALID_SELECTORS",
            TEMPORARY_FAILURE => "TEMPORARY_FAILURE",
            CHILD_SA_NOT_FOUND => "CHILD_SA_NOT_FOUND",
            INITIAL_CONTACT => "INITIAL_CONTACT",
            NAT_DETECTION_SOURCE_IP => "NAT_DETECTION_SOURCE_IP",
            NAT_DETECTION_DESTINATION_IP => "NAT_DETECTION_DESTINATION_IP",
            COOKIE => "COOKIE",
            USE_TRANSPORT_MODE => "USE_TRANSPORT_MODE",
            REKEY_SA => "REKEY_SA",
            IKEV2_FRAGMENTATION_SUPPORTED => "IKEV2_FRAGMENTATION_SUPPORTED",
            SIGNATURE_HASH_ALGORITHMS => "SIGNATURE_HASH_ALGORITHMS",
            _ => return format!("NOTIFY_{t}"),
        };
        s.to_string()
    }

    /// Error notifies are those below 16384 (§3.10.1).
    pub fn is_error(t: u16) -> bool {
        t < 16384
    }
}

/// Protocol ids in proposals, notifies and deletes (§3.3.1).
pub mod protocol {
    /// IKE.
    pub const IKE: u8 = 1;
    /// AH.
    pub const AH: u8 = 2;
    /// ESP.
    pub const ESP: u8 = 3;
}

/// A parse failure, naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Fewer bytes than a header or length field requires.
    Truncated(&'static str),
    /// A field has a value the RFC forbids.
    Invalid(&'static str),
    /// Not IKE version 2.
    UnsupportedVersion(u8),
    /// A payload marked critical that we do not know (§2.5).
    UnsupportedCritical(u8),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Truncated(what) => write!(f, "truncated {what}"),
            ParseError::Invalid(what) => write!(f, "invalid {what}"),
            ParseError::UnsupportedVersion(v) => {
                write!(f, "unsupported IKE version {}.{}", v >> 4, v & 0xf)
            }
            ParseError::UnsupportedCritical(t) => {
                write!(f, "unsupported critical payload type {t}")
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// The fixed IKE header (§3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// Initiator's SPI.
    pub spi_i: u64,
    /// Responder's SPI (0 in the first IKE_SA_INIT request).
    pub spi_r: u64,
    /// Type of the first payload.
    pub next_payload: u8,
    /// Exchange type.
    pub exchange: u8,
    /// Flags.
    pub flags: u8,
    /// Message ID.
    pub message_id: u32,
    /// Total length of the message.
    pub length: u32,
}

/// Length of the IKE header.
pub const HEADER_LEN: usize = 28;

impl Header {
    /// Parses the header of `bytes`, checking version and length.
    pub fn parse(bytes: &[u8]) -> Result<Header, ParseError> {
        if bytes.len() < HEADER_LEN {
            return Err(ParseError::Truncated("IKE header"));
        }
        let version = bytes[17];
        if version >> 4 != 2 {
            return Err(ParseError::UnsupportedVersion(version));
        }
        let length = u32::from_be_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]);
        if (length as usize) < HEADER_LEN || length as usize > bytes.len() {
            return Err(ParseError::Invalid("IKE header length"));
        }
        Ok(Header {
            spi_i: u64::from_be_bytes(
                bytes[0..8]
                    .try_into()
                    .map_err(|_| ParseError::Truncated("SPI"))?,
            ),
            spi_r: u64::from_be_bytes(
                bytes[8..16]
                    .try_into()
                    .map_err(|_| ParseError::Truncated("SPI"))?,
            ),
            next_payload: bytes[16],
            exchange: bytes[18],
            flags: bytes[19],
            message_id: u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]),
            length,
        })
    }

    /// Writes the header (with `length`) into the first 28 bytes of `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.spi_i.to_be_bytes());
        out.extend_from_slice(&self.spi_r.to_be_bytes());
        out.push(self.next_payload);
        out.push(0x20);
        out.push(self.exchange);
        out.push(self.flags);
        out.extend_from_slice(&self.message_id.to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
    }

    /// True for a response.
    pub fn is_response(&self) -> bool {
        self.flags & flags::RESPONSE != 0
    }

    /// True when the sender is the original initiator.
    pub fn is_initiator(&self) -> bool {
        self.flags & flags::INITIATOR != 0
    }
}

/// A transform (§3.3.2) with its optional key length attribute (§3.3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transform {
    /// Transform type: 1 ENCR, 2 PRF, 3 INTEG, 4 DH, 5 ESN.
    pub kind: u8,
    /// Transform id.
    pub id: u16,
    /// Key length in bits, for variable-length ciphers.
    pub key_len: Option<u16>,
}

/// Transform types (§3.3.2).
pub mod transform_type {
    /// Encryption.
    pub const ENCR: u8 = 1;
    /// Pseudo-random function.
    pub const PRF: u8 = 2;
    /// Integrity.
    pub const INTEG: u8 = 3;
    /// Diffie-Hellman group.
    pub const DH: u8 = 4;
    /// Extended sequence numbers.
    pub const ESN: u8 = 5;
}

/// A proposal (§3.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// Proposal number, from 1.
    pub number: u8,
    /// Protocol id (IKE or ESP).
    pub protocol: u8,
    /// The sender's SPI (empty for the first IKE_SA_INIT).
    pub spi: Vec<u8>,
    /// The transforms.
    pub transforms: Vec<Transform>,
}

/// An identification payload (§3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// ID type: 1 IPv4, 2 FQDN, 3 RFC822, 5 IPv6, 9 DER DN, 11 KEY_ID.
    pub kind: u8,
    /// The identification data.
    pub data: Vec<u8>,
}

/// ID types (§3.5).
pub mod id_type {
    /// IPv4 address.
    pub const IPV4_ADDR: u8 = 1;
    /// Fully qualified domain name.
    pub const FQDN: u8 = 2;
    /// Email address.
    pub const RFC822_ADDR: u8 = 3;
    /// IPv6 address.
    pub const IPV6_ADDR: u8 = 5;
    /// DER distinguished name.
    pub const DER_ASN1_DN: u8 = 9;
    /// Opaque key id.
    pub const KEY_ID: u8 = 11;
}

impl Identity {
    /// The identity of an IP address, as most devices expect by default.
    pub fn from_ip(ip: IpAddr) -> Identity {
        match ip {
            IpAddr::V4(a) => Identity {
                kind: id_type::IPV4_ADDR,
                data: a.octets().to_vec(),
            },
            IpAddr::V6(a) => Identity {
                kind: id_type::IPV6_ADDR,
                data: a.octets().to_vec(),
            },
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, self.data.len()) {
            (id_type::IPV4_ADDR, 4) => write!(
                f,
                "{}",
                Ipv4Addr::new(self.data[0], self.data[1], self.data[2], self.data[3])
            ),
            (id_type::IPV6_ADDR, 16) => {
                let octets: [u8; 16] = self.data.as_slice().try_into().map_err(|_| fmt::Error)?;
                write!(f, "{}", Ipv6Addr::from(octets))
            }
            (id_type::FQDN | id_type::RFC822_ADDR, _) => {
                write!(f, "{}", String::from_utf8_lossy(&self.data))
            }
            (id_type::DER_ASN1_DN, _) if crate::cert::dn_string(&self.data).is_some() => {
                write!(
                    f,
                    "{}",
                    crate::cert::dn_string(&self.data).unwrap_or_default()
                )
            }
            (kind, _) => write!(
                f,
                "id-type-{kind}:{}",
                self.data
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            ),
        }
    }
}

/// Configuration payload types and attributes (§3.15).
pub mod cfg {
    /// CFG_REQUEST.
    pub const REQUEST: u8 = 1;
    /// CFG_REPLY.
    pub const REPLY: u8 = 2;
    /// CFG_SET.
    pub const SET: u8 = 3;
    /// CFG_ACK.
    pub const ACK: u8 = 4;
    /// INTERNAL_IP4_ADDRESS (§3.15.1).
    pub const INTERNAL_IP4_ADDRESS: u16 = 1;
    /// INTERNAL_IP4_NETMASK.
    pub const INTERNAL_IP4_NETMASK: u16 = 2;
    /// INTERNAL_IP4_DNS.
    pub const INTERNAL_IP4_DNS: u16 = 3;
    /// INTERNAL_IP6_ADDRESS (address and prefix length).
    pub const INTERNAL_IP6_ADDRESS: u16 = 8;
    /// INTERNAL_IP6_DNS.
    pub const INTERNAL_IP6_DNS: u16 = 10;
    /// INTERNAL_IP4_SUBNET (address and netmask).
    pub const INTERNAL_IP4_SUBNET: u16 = 13;
    /// SUPPORTED_ATTRIBUTES.
    pub const SUPPORTED_ATTRIBUTES: u16 = 14;
    /// INTERNAL_IP6_SUBNET.
    pub const INTERNAL_IP6_SUBNET: u16 = 15;
}

/// The body of a CP payload (§3.15): a type and attributes (type, value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPayload {
    /// CFG_REQUEST, CFG_REPLY, CFG_SET or CFG_ACK.
    pub kind: u8,
    /// Attribute type (15 bits) and value; an empty value asks for one.
    pub attributes: Vec<(u16, Vec<u8>)>,
}

impl ConfigPayload {
    /// Parses a CP body (§3.15.1); attributes past a malformed one are an error.
    pub fn parse(body: &[u8]) -> Result<ConfigPayload, ParseError> {
        let mut r = Reader::new(body);
        let kind = r.u8("CP type")?;
        r.take(3, "CP reserved")?;
        let mut attributes = Vec::new();
        while !r.is_empty() {
            let t = r.u16("CP attribute type")? & 0x7fff;
            let len = usize::from(r.u16("CP attribute length")?);
            attributes.push((t, r.take(len, "CP attribute value")?.to_vec()));
        }
        Ok(ConfigPayload { kind, attributes })
    }

    /// The CP body.
    pub fn emit(&self) -> Vec<u8> {
        let mut out = vec![self.kind, 0, 0, 0];
        for (t, v) in &self.attributes {
            out.extend_from_slice(&(t & 0x7fff).to_be_bytes());
            out.extend_from_slice(&(v.len() as u16).to_be_bytes());
            out.extend_from_slice(v);
        }
        out
    }

    /// True when an attribute of type `t` is present.
    pub fn has(&self, t: u16) -> bool {
        self.attributes.iter().any(|(k, _)| *k == t)
    }

    /// The addresses in attributes of type `t` (IPv4: 4 bytes; IPv6: 16 bytes, optionally followed by a
    /// prefix length).
    pub fn addresses(&self, t: u16) -> Vec<IpAddr> {
        self.attributes
            .iter()
            .filter(|(k, _)| *k == t)
            .filter_map(|(_, v)| match v.len() {
                4 => Some(IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3]))),
                16 | 17 => <[u8; 16]>::try_from(&v[..16])
                    .ok()
                    .map(|o| IpAddr::V6(Ipv6Addr::from(o))),
                _ => None,
            })
            .collect()
    }
}

/// A notify payload (§3.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// Protocol id (0 when no SPI).
    pub protocol: u8,
    /// SPI the notify concerns.
    pub spi: Vec<u8>,
    /// Notify message type.
    pub kind: u16,
    /// Notification data.
    pub data: Vec<u8>,
}

impl Notify {
    /// A notify without SPI.
    pub fn new(kind: u16, data: Vec<u8>) -> Notify {
        Notify {
            protocol: 0,
            spi: Vec::new(),
            kind,
            data,
        }
    }
}

/// A traffic selector (§3.13.1): an address range with protocol and port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    /// IP protocol, 0 = any.
    pub ip_protocol: u8,
    /// First port.
    pub start_port: u16,
    /// Last port.
    pub end_port: u16,
    /// First address.
    pub start: IpAddr,
    /// Last address.
    pub end: IpAddr,
}

impl TrafficSelector {
    /// Every IPv4 address, any protocol and port.
    pub fn any_v4() -> Self {
        Self {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            start: Ipv4Addr::UNSPECIFIED.into(),
            end: Ipv4Addr::BROADCAST.into(),
        }
    }

    /// Every IPv6 address.
    pub fn any_v6() -> Self {
        Self {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            start: Ipv6Addr::UNSPECIFIED.into(),
            end: Ipv6Addr::from(u128::MAX).into(),
        }
    }

    /// The range of an address prefix.
    pub fn from_prefix(addr: IpAddr, len: u8) -> Self {
        let (start, end) = match addr {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                let mask = if len == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(len.min(32)))
                };
                (
                    IpAddr::V4((a & mask).into()),
                    IpAddr::V4((a | !mask).into()),
                )
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(len.min(128)))
                };
                (
                    IpAddr::V6((a & mask).into()),
                    IpAddr::V6((a | !mask).into()),
                )
            }
        };
        Self {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            start,
            end,
        }
    }

    /// The intersection with `other` (§2.9 narrowing), if not empty.
    pub fn intersect(&self, other: &TrafficSelector) -> Option<TrafficSelector> {
        let proto = match (self.ip_protocol, other.ip_protocol) {
            (0, p) | (p, 0) => p,
            (a, b) if a == b => a,
            _ => return None,
        };
        let start_port = self.start_port.max(other.start_port);
        let end_port = self.end_port.min(other.end_port);
        if start_port > end_port {
            return None;
        }
        let start = max_ip(self.start, other.start)?;
        let end = min_ip(self.end, other.end)?;
        if ip_gt(start, end) {
            return None;
        }
        Some(TrafficSelector {
            ip_protocol: proto,
            start_port,
            end_port,
            start,
            end,
        })
    }
}

impl fmt::Display for TrafficSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)?;
        if self.ip_protocol != 0 {
            write!(f, "[proto {}]", self.ip_protocol)?;
        }
        if (self.start_port, self.end_port) != (0, 65535) {
            write!(f, "[ports {}-{}]", self.start_port, self.end_port)?;
        }
        Ok(())
    }
}

fn ip_gt(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a > b,
        (IpAddr::V6(a), IpAddr::V6(b)) => a > b,
        _ => true,
    }
}

fn max_ip(a: IpAddr, b: IpAddr) -> Option<IpAddr> {
    match (a, b) {
        (IpAddr::V4(x), IpAddr::V4(y)) => Some(IpAddr::V4(x.max(y))),
        (IpAddr::V6(x), IpAddr::V6(y)) => Some(IpAddr::V6(x.max(y))),
        _ => None,
    }
}

fn min_ip(a: IpAddr, b: IpAddr) -> Option<IpAddr> {
    match (a, b) {
        (IpAddr::V4(x), IpAddr::V4(y)) => Some(IpAddr::V4(x.min(y))),
        (IpAddr::V6(x), IpAddr::V6(y)) => Some(IpAddr::V6(x.min(y))),
        _ => None,
    }
}

/// A delete payload (§3.11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// IKE (no SPIs: the IKE SA itself) or ESP.
    pub protocol: u8,
    /// The SPIs to delete (4 bytes each for ESP).
    pub spis: Vec<Vec<u8>>,
}

/// A payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// SA (§3.3).
    Sa(Vec<Proposal>),
    /// KE (§3.4): DH group and public value.
    Ke {
        /// DH group number.
        group: u16,
        /// Public value.
        data: Vec<u8>,
    },
    /// IDi (§3.5).
    IdI(Identity),
    /// IDr (§3.5).
    IdR(Identity),
    /// CERT (§3.6): encoding and data.
    Cert {
        /// Certificate encoding (4 = X.509 signature).
        encoding: u8,
        /// The certificate.
        data: Vec<u8>,
    },
    /// CERTREQ (§3.7).
    CertReq {
        /// Certificate encoding.
        encoding: u8,
        /// SHA-1 hashes of trusted CA public keys.
        data: Vec<u8>,
    },
    /// AUTH (§3.8): method and data.
    Auth {
        /// 1 RSA, 2 PSK, 3 DSS, 9-11 ECDSA, 14 digital signature (RFC 7427).
        method: u8,
        /// Authentication data.
        data: Vec<u8>,
    },
    /// Nonce (§3.9).
    Nonce(Vec<u8>),
    /// Notify (§3.10).
    Notify(Notify),
    /// Delete (§3.11).
    Delete(Delete),
    /// Vendor ID (§3.12).
    Vendor(Vec<u8>),
    /// TSi (§3.13).
    TsI(Vec<TrafficSelector>),
    /// TSr (§3.13).
    TsR(Vec<TrafficSelector>),
    /// CP (§3.15): kept raw here.
    Cp(Vec<u8>),
    /// EAP (§3.16): kept raw.
    Eap(Vec<u8>),
    /// SK (§3.14): IV || ciphertext || ICV, with the type of the first inner payload.
    Sk {
        /// Type of the first encrypted payload.
        first: u8,
        /// The payload body.
        body: Vec<u8>,
    },
    /// SKF (RFC 7383 §2.5): a fragment.
    Skf {
        /// Type of the first inner payload (first fragment only).
        first: u8,
        /// Fragment number, from 1.
        number: u16,
        /// Total fragments.
        total: u16,
        /// IV || ciphertext || ICV.
        body: Vec<u8>,
    },
    /// A non-critical payload we do not interpret.
    Unknown {
        /// Its type.
        kind: u8,
        /// Its body.
        body: Vec<u8>,
    },
}

impl Payload {
    /// The payload type number.
    pub fn kind(&self) -> u8 {
        use payload_type::*;
        match self {
            Payload::Sa(_) => SA,
            Payload::Ke { .. } => KE,
            Payload::IdI(_) => IDI,
            Payload::IdR(_) => IDR,
            Payload::Cert { .. } => CERT,
            Payload::CertReq { .. } => CERTREQ,
            Payload::Auth { .. } => AUTH,
            Payload::Nonce(_) => NONCE,
            Payload::Notify(_) => NOTIFY,
            Payload::Delete(_) => DELETE,
            Payload::Vendor(_) => VENDOR,
            Payload::TsI(_) => TSI,
            Payload::TsR(_) => TSR,
            Payload::Cp(_) => CP,
            Payload::Eap(_) => EAP,
            Payload::Sk { .. } => SK,
            Payload::Skf { .. } => SKF,
            Payload::Unknown { kind, .. } => *kind,
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ParseError> {
        let end = self.pos.checked_add(n).ok_or(ParseError::Truncated(what))?;
        let s = self
            .bytes
            .get(self.pos..end)
            .ok_or(ParseError::Truncated(what))?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, ParseError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, ParseError> {
        let s = self.take(2, what)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn rest(&mut self) -> &'a [u8] {
        let s = &self.bytes[self.pos.min(self.bytes.len())..];
        self.pos = self.bytes.len();
        s
    }
    fn is_empty(&self) -> bool {
        self.pos >= self.bytes.len()
    }
}

fn parse_sa(body: &[u8]) -> Result<Vec<Proposal>, ParseError> {
    let mut r = Reader::new(body);
    let mut proposals = Vec::new();
    loop {
        let last = r.u8("proposal header")?;
        r.u8("proposal header")?;
        let len = usize::from(r.u16("proposal length")?);
        if len < 8 {
            return Err(ParseError::Invalid("proposal length"));
        }
        let mut p = Reader::new(r.take(len - 4, "proposal")?);
        let number = p.u8("proposal number")?;
        let protocol = p.u8("protocol id")?;
        let spi_size = usize::from(p.u8("SPI size")?);
        let count = p.u8("transform count")?;
        let spi = p.take(spi_size, "proposal SPI")?.to_vec();
        let mut transforms = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            p.u8("transform header")?;
            p.u8("transform header")?;
            let tlen = usize::from(p.u16("transform length")?);
            if tlen < 8 {
                return Err(ParseError::Invalid("transform length"));
            }
            let mut t = Reader::new(p.take(tlen - 4, "transform")?);
            let kind = t.u8("transform type")?;
            t.u8("transform reserved")?;
            let id = t.u16("transform id")?;
            let mut key_len = None;
            while !t.is_empty() {
                let at = t.u16("attribute type")?;
                if at & 0x8000 != 0 {
                    let value = t.u16("attribute value")?;
                    if at & 0x7fff == 14 {
                        key_len = Some(value);
                    }
                } else {
                    let alen = usize::from(t.u16("attribute length")?);
                    t.take(alen, "attribute value")?;
                }
            }
            transforms.push(Transform { kind, id, key_len });
        }
        proposals.push(Proposal {
            number,
            protocol,
            spi,
            transforms,
        });
        if last == 0 {
            break;
        }
        if last != 2 {
            return Err(ParseError::Invalid("proposal last-substructure"));
        }
    }
    Ok(proposals)
}

fn parse_ts(body: &[u8]) -> Result<Vec<TrafficSelector>, ParseError> {
    let mut r = Reader::new(body);
    let count = r.u8("TS count")?;
    r.take(3, "TS reserved")?;
    let mut out = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let ts_type = r.u8("TS type")?;
        let ip_protocol = r.u8("TS protocol")?;
        let len = usize::from(r.u16("TS length")?);
        let addr_len = match ts_type {
            7 => 4,
            8 => 16,
            _ => return Err(ParseError::Invalid("TS type")),
        };
        if len != 8 + 2 * addr_len {
            return Err(ParseError::Invalid("TS length"));
        }
        let start_port = r.u16("TS start port")?;
        let end_port = r.u16("TS end port")?;
        let a = r.take(addr_len, "TS start address")?;
        let b = r.take(addr_len, "TS end address")?;
        let (start, end) = if addr_len == 4 {
            (
                IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
                IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
            )
        } else {
            let a: [u8; 16] = a
                .try_into()
                .map_err(|_| ParseError::Truncated("TS address"))?;
            let b: [u8; 16] = b
                .try_into()
                .map_err(|_| ParseError::Truncated("TS address"))?;
            (IpAddr::V6(a.into()), IpAddr::V6(b.into()))
        };
        out.push(TrafficSelector {
            ip_protocol,
            start_port,
            end_port,
            start,
            end,
        });
    }
    Ok(out)
}

fn parse_body(kind: u8, critical: bool, body: &[u8], next: u8) -> Result<Payload, ParseError> {
    use payload_type::*;
    let mut r = Reader::new(body);
    Ok(match kind {
        SA => Payload::Sa(parse_sa(body)?),
        KE => {
            let group = r.u16("KE group")?;
            r.take(2, "KE reserved")?;
            Payload::Ke {
                group,
                data: r.rest().to_vec(),
            }
        }
        IDI | IDR => {
            let id = Identity {
                kind: r.u8("ID type")?,
                data: {
                    r.take(3, "ID reserved")?;
                    r.rest().to_vec()
                },
            };
            if kind == IDI {
                Payload::IdI(id)
            } else {
                Payload::IdR(id)
            }
        }
        CERT => Payload::Cert {
            encoding: r.u8("CERT encoding")?,
            data: r.rest().to_vec(),
        },
        CERTREQ => Payload::CertReq {
            encoding: r.u8("CERTREQ encoding")?,
            data: r.rest().to_vec(),
        },
        AUTH => {
            let method = r.u8("AUTH method")?;
            r.take(3, "AUTH reserved")?;
            Payload::Auth {
                method,
                data: r.rest().to_vec(),
            }
        }
        NONCE => {
            if !(16..=256).contains(&body.len()) {
                return Err(ParseError::Invalid("nonce length (§3.9: 16-256 bytes)"));
            }
            Payload::Nonce(body.to_vec())
        }
        NOTIFY => {
            let protocol = r.u8("notify protocol")?;
            let spi_size = usize::from(r.u8("notify SPI size")?);
            let kind = r.u16("notify type")?;
            let spi = r.take(spi_size, "notify SPI")?.to_vec();
            Payload::Notify(Notify {
                protocol,
                spi,
                kind,
                data: r.rest().to_vec(),
            })
        }
        DELETE => {
            let protocol = r.u8("delete protocol")?;
            let spi_size = usize::from(r.u8("delete SPI size")?);
            let count = usize::from(r.u16("delete SPI count")?);
            let mut spis = Vec::with_capacity(count.min(256));
            for _ in 0..count {
                spis.push(r.take(spi_size, "delete SPI")?.to_vec());
            }
            Payload::Delete(Delete { protocol, spis })
        }
        VENDOR => Payload::Vendor(body.to_vec()),
        TSI => Payload::TsI(parse_ts(body)?),
        TSR => Payload::TsR(parse_ts(body)?),
        CP => Payload::Cp(body.to_vec()),
        EAP => Payload::Eap(body.to_vec()),
        SK => Payload::Sk {
            first: next,
            body: body.to_vec(),
        },
        SKF => {
            let number = r.u16("fragment number")?;
            let total = r.u16("total fragments")?;
            if number == 0 || number > total {
                return Err(ParseError::Invalid("fragment number"));
            }
            Payload::Skf {
                first: next,
                number,
                total,
                body: r.rest().to_vec(),
            }
        }
        other if critical => return Err(ParseError::UnsupportedCritical(other)),
        other => Payload::Unknown {
            kind: other,
            body: body.to_vec(),
        },
    })
}

/// Parses a payload chain starting with type `first` (§3.2). SK/SKF must be the last payload.
pub fn parse_payloads(mut next: u8, bytes: &[u8]) -> Result<Vec<Payload>, ParseError> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::new();
    while next != payload_type::NONE {
        let kind = next;
        next = r.u8("payload header")?;
        let critical = r.u8("payload header")? & 0x80 != 0;
        let len = usize::from(r.u16("payload length")?);
        if len < 4 {
            return Err(ParseError::Invalid("payload length"));
        }
        let body = r.take(len - 4, "payload body")?;
        let payload = parse_body(kind, critical, body, next)?;
        let encrypted = matches!(payload, Payload::Sk { .. } | Payload::Skf { .. });
        out.push(payload);
        if encrypted {
            // The SK payload's "next payload" names its first inner payload, not a following one.
            break;
        }
        if out.len() > 64 {
            return Err(ParseError::Invalid("payload count"));
        }
    }
    Ok(out)
}

/// A parsed message: header and payloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The header.
    pub header: Header,
    /// The payloads, in order (an SK payload, if any, last).
    pub payloads: Vec<Payload>,
}

impl Message {
    /// Parses a whole datagram (without the non-ESP marker).
    pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
        let header = Header::parse(bytes)?;
        let payloads = parse_payloads(
            header.next_payload,
            &bytes[HEADER_LEN..header.length as usize],
        )?;
        Ok(Message { header, payloads })
    }

    /// The first notify of type `kind`.
    pub fn notify(&self, kind: u16) -> Option<&Notify> {
        find_notify(&self.payloads, kind)
    }
}

/// The SA payload's proposals.
pub fn find_sa(payloads: &[Payload]) -> Option<&Vec<Proposal>> {
    payloads.iter().find_map(|p| {
        if let Payload::Sa(s) = p {
            Some(s)
        } else {
            None
        }
    })
}

/// The KE payload: DH group and public value.
pub fn find_ke(payloads: &[Payload]) -> Option<(u16, &Vec<u8>)> {
    payloads.iter().find_map(|p| {
        if let Payload::Ke { group, data } = p {
            Some((*group, data))
        } else {
            None
        }
    })
}

/// The nonce.
pub fn find_nonce(payloads: &[Payload]) -> Option<&Vec<u8>> {
    payloads.iter().find_map(|p| {
        if let Payload::Nonce(n) = p {
            Some(n)
        } else {
            None
        }
    })
}

/// IDi.
pub fn find_idi(payloads: &[Payload]) -> Option<&Identity> {
    payloads.iter().find_map(|p| {
        if let Payload::IdI(i) = p {
            Some(i)
        } else {
            None
        }
    })
}

/// IDr.
pub fn find_idr(payloads: &[Payload]) -> Option<&Identity> {
    payloads.iter().find_map(|p| {
        if let Payload::IdR(i) = p {
            Some(i)
        } else {
            None
        }
    })
}

/// The AUTH payload: method and data.
pub fn find_auth(payloads: &[Payload]) -> Option<(u8, &Vec<u8>)> {
    payloads.iter().find_map(|p| {
        if let Payload::Auth { method, data } = p {
            Some((*method, data))
        } else {
            None
        }
    })
}

/// TSi.
pub fn find_tsi(payloads: &[Payload]) -> Option<&Vec<TrafficSelector>> {
    payloads.iter().find_map(|p| {
        if let Payload::TsI(t) = p {
            Some(t)
        } else {
            None
        }
    })
}

/// TSr.
pub fn find_tsr(payloads: &[Payload]) -> Option<&Vec<TrafficSelector>> {
    payloads.iter().find_map(|p| {
        if let Payload::TsR(t) = p {
            Some(t)
        } else {
            None
        }
    })
}

/// The first error notify (§3.10.1: types below 16384).
pub fn find_error_notify(payloads: &[Payload]) -> Option<u16> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if notify::is_error(n.kind) => Some(n.kind),
        _ => None,
    })
}

/// The first notify of type `kind` in `payloads`.
pub fn find_notify(payloads: &[Payload], kind: u16) -> Option<&Notify> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.kind == kind => Some(n),
        _ => None,
    })
}

fn emit_sa(out: &mut Vec<u8>, proposals: &[Proposal]) {
    for (i, p) in proposals.iter().enumerate() {
        let start = out.len();
        out.push(if i + 1 == proposals.len() { 0 } else { 2 });
        out.push(0);
        out.extend_from_slice(&[0, 0]);
        out.push(p.number);
        out.push(p.protocol);
        out.push(p.spi.len() as u8);
        out.push(p.transforms.len() as u8);
        out.extend_from_slice(&p.spi);
        for (j, t) in p.transforms.iter().enumerate() {
            out.push(if j + 1 == p.transforms.len() { 0 } else { 3 });
            out.push(0);
            let len: u16 = if t.key_len.is_some() { 12 } else { 8 };
            out.extend_from_slice(&len.to_be_bytes());
            out.push(t.kind);
            out.push(0);
            out.extend_from_slice(&t.id.to_be_bytes());
            if let Some(k) = t.key_len {
                out.extend_from_slice(&(0x8000u16 | 14).to_be_bytes());
                out.extend_from_slice(&k.to_be_bytes());
            }
        }
        let len = (out.len() - start) as u16;
        out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
    }
}

fn emit_ts(out: &mut Vec<u8>, list: &[TrafficSelector]) {
    out.push(list.len() as u8);
    out.extend_from_slice(&[0, 0, 0]);
    for ts in list {
        match (ts.start, ts.end) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                out.extend_from_slice(&[7, ts.ip_protocol]);
                out.extend_from_slice(&16u16.to_be_bytes());
                out.extend_from_slice(&ts.start_port.to_be_bytes());
                out.extend_from_slice(&ts.end_port.to_be_bytes());
                out.extend_from_slice(&a.octets());
                out.extend_from_slice(&b.octets());
            }
            (a, b) => {
                let to6 = |ip: IpAddr| match ip {
                    IpAddr::V6(v) => v.octets(),
                    IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
                };
                out.extend_from_slice(&[8, ts.ip_protocol]);
                out.extend_from_slice(&40u16.to_be_bytes());
                out.extend_from_slice(&ts.start_port.to_be_bytes());
                out.extend_from_slice(&ts.end_port.to_be_bytes());
                out.extend_from_slice(&to6(a));
                out.extend_from_slice(&to6(b));
            }
        }
    }
}

/// Emits the body of one payload (without the generic header).
fn emit_body(out: &mut Vec<u8>, p: &Payload) {
    match p {
        Payload::Sa(proposals) => emit_sa(out, proposals),
        Payload::Ke { group, data } => {
            out.extend_from_slice(&group.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(data);
        }
        Payload::IdI(id) | Payload::IdR(id) => {
            out.extend_from_slice(&[id.kind, 0, 0, 0]);
            out.extend_from_slice(&id.data);
        }
        Payload::Cert { encoding, data } | Payload::CertReq { encoding, data } => {
            out.push(*encoding);
            out.extend_from_slice(data);
        }
        Payload::Auth { method, data } => {
            out.extend_from_slice(&[*method, 0, 0, 0]);
            out.extend_from_slice(data);
        }
        Payload::Nonce(n) => out.extend_from_slice(n),
        Payload::Notify(n) => {
            out.push(n.protocol);
            out.push(n.spi.len() as u8);
            out.extend_from_slice(&n.kind.to_be_bytes());
            out.extend_from_slice(&n.spi);
            out.extend_from_slice(&n.data);
        }
        Payload::Delete(d) => {
            out.push(d.protocol);
            out.push(
                d.spis
                    .first()
                    .map_or(if d.protocol == protocol::IKE { 0 } else { 4 }, Vec::len)
                    as u8,
            );
            out.extend_from_slice(&(d.spis.len() as u16).to_be_bytes());
            for spi in &d.spis {
                out.extend_from_slice(spi);
            }
        }
        Payload::TsI(ts) | Payload::TsR(ts) => emit_ts(out, ts),
        Payload::Vendor(b)
        | Payload::Cp(b)
        | Payload::Eap(b)
        | Payload::Unknown { body: b, .. } => out.extend_from_slice(b),
        Payload::Sk { body, .. } => out.extend_from_slice(body),
        Payload::Skf {
            number,
            total,
            body,
            ..
        } => {
            out.extend_from_slice(&number.to_be_bytes());
            out.extend_from_slice(&total.to_be_bytes());
            out.extend_from_slice(body);
        }
    }
}

/// Emits a payload chain; returns the type of the first payload. `next_after` is the "next payload"
/// of the last one (0 normally).
pub fn emit_payloads(out: &mut Vec<u8>, payloads: &[Payload]) -> u8 {
    for (i, p) in payloads.iter().enumerate() {
        let start = out.len();
        let next = match p {
            Payload::Sk { first, .. } | Payload::Skf { first, .. } => *first,
            _ => payloads
                .get(i + 1)
                .map_or(payload_type::NONE, Payload::kind),
        };
        out.push(next);
        out.push(0);
        out.extend_from_slice(&[0, 0]);
        emit_body(out, p);
        let len = (out.len() - start) as u16;
        out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
    }
    payloads.first().map_or(payload_type::NONE, Payload::kind)
}

impl Message {
    /// Emits the whole message, setting the header's next payload and length.
    pub fn emit(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let first = emit_payloads(&mut body, &self.payloads);
        let mut header = self.header;
        header.next_payload = first;
        header.length = (HEADER_LEN + body.len()) as u32;
        let mut out = Vec::with_capacity(header.length as usize);
        header.emit(&mut out);
        out.extend_from_slice(&body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        Message {
            header: Header {
                spi_i: 0x0102030405060708,
                spi_r: 0,
                exchange: exchange::IKE_SA_INIT,
                flags: flags::INITIATOR,
                message_id: 0,
                ..Default::default()
            },
            payloads: vec![
                Payload::Sa(vec![Proposal {
                    number: 1,
                    protocol: protocol::IKE,
                    spi: vec![],
                    transforms: vec![
                        Transform {
                            kind: transform_type::ENCR,
                            id: 20,
                            key_len: Some(256),
                        },
                        Transform {
                            kind: transform_type::PRF,
                            id: 5,
                            key_len: None,
                        },
                        Transform {
                            kind: transform_type::DH,
                            id: 19,
                            key_len: None,
                        },
                    ],
                }]),
                Payload::Ke {
                    group: 19,
                    data: vec![7; 64],
                },
                Payload::Nonce(vec![9; 32]),
                Payload::Notify(Notify::new(notify::NAT_DETECTION_SOURCE_IP, vec![1; 20])),
                Payload::TsI(vec![
                    TrafficSelector::from_prefix("10.1.0.0".parse().unwrap(), 16),
                    TrafficSelector::any_v6(),
                ]),
                Payload::Delete(Delete {
                    protocol: protocol::ESP,
                    spis: vec![vec![1, 2, 3, 4]],
                }),
                Payload::IdI(Identity::from_ip("198.18.0.1".parse().unwrap())),
                Payload::Auth {
                    method: 2,
                    data: vec![5; 32],
                },
            ],
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        let bytes = m.emit();
        let parsed = Message::parse(&bytes).unwrap();
        assert_eq!(parsed.payloads, m.payloads);
        assert_eq!(parsed.header.length as usize, bytes.len());
        assert_eq!(parsed.emit(), bytes);
    }

    #[test]
    fn truncations_are_errors_not_panics() {
        let bytes = sample().emit();
        for n in 0..bytes.len() {
            let _ = Message::parse(&bytes[..n]);
        }
        let mut evil = bytes.clone();
        for i in 28..evil.len() {
            evil[i] ^= 0xff;
            let _ = Message::parse(&evil);
            evil[i] ^= 0xff;
        }
    }

    #[test]
    fn ts_narrowing() {
        let a = TrafficSelector::from_prefix("10.0.0.0".parse().unwrap(), 8);
        let b = TrafficSelector::from_prefix("10.1.0.0".parse().unwrap(), 16);
        assert_eq!(a.intersect(&b), Some(b));
        let c = TrafficSelector::from_prefix("11.0.0.0".parse().unwrap(), 8);
        assert_eq!(a.intersect(&c), None);
        assert_eq!(a.intersect(&TrafficSelector::any_v6()), None);
    }
}
