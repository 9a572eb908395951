//! BGP-4 wire format (RFC 4271 §4) for the subset a VPN gateway speaks: OPEN with capabilities
//! (multiprotocol RFC 4760, route refresh RFC 2918, 4-octet AS RFC 6793, graceful restart RFC 4724),
//! UPDATE with IPv4 NLRI and MP_REACH/MP_UNREACH for IPv6 unicast, NOTIFICATION, KEEPALIVE and
//! ROUTE-REFRESH.
//!
//! Decision: an in-house codec rather than `netgauze-bgp-pkt`. The subset is a few hundred lines, every
//! malformed input must map to the exact NOTIFICATION code/subcode the FSM sends (RFC 4271 §6), and the
//! fuzz target then covers the code that actually runs. Unknown optional transitive attributes are
//! kept as raw bytes and passed on (with the Partial bit set, RFC 4271 §5); unknown non-transitive
//! ones are dropped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Every message starts with 16 bytes of 0xff (RFC 4271 §4.1).
pub const MARKER: [u8; 16] = [0xff; 16];
/// Header length: marker, length, type.
pub const HEADER_LEN: usize = 19;
/// Largest message (RFC 4271 §4.1).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// AS_TRANS, the 2-octet stand-in for a 4-octet ASN (RFC 6793 §9).
pub const AS_TRANS: u16 = 23456;

/// Address family identifiers (IANA).
pub const AFI_IPV4: u16 = 1;
/// IPv6.
pub const AFI_IPV6: u16 = 2;
/// Unicast SAFI.
pub const SAFI_UNICAST: u8 = 1;

/// NOTIFICATION error codes (RFC 4271 §4.5, RFC 4486, RFC 7313).
pub mod code {
    /// Message Header Error.
    pub const HEADER: u8 = 1;
    /// OPEN Message Error.
    pub const OPEN: u8 = 2;
    /// UPDATE Message Error.
    pub const UPDATE: u8 = 3;
    /// Hold Timer Expired.
    pub const HOLD_TIMER: u8 = 4;
    /// Finite State Machine Error.
    pub const FSM: u8 = 5;
    /// Cease.
    pub const CEASE: u8 = 6;
    /// ROUTE-REFRESH Message Error (RFC 7313).
    pub const ROUTE_REFRESH: u8 = 7;
}

/// A decoding failure, carrying the NOTIFICATION it calls for (RFC 4271 §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// NOTIFICATION error code.
    pub code: u8,
    /// Subcode.
    pub subcode: u8,
    /// Data field for the NOTIFICATION.
    pub data: Vec<u8>,
    /// What was wrong, for a person.
    pub message: String,
}

impl DecodeError {
    fn new(code: u8, subcode: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            subcode,
            data: Vec::new(),
            message: message.into(),
        }
    }

    fn with_data(mut self, data: &[u8]) -> Self {
        self.data = data.to_vec();
        self
    }

    /// The NOTIFICATION this error sends.
    pub fn notification(&self) -> Notification {
        Notification {
            code: self.code,
            subcode: self.subcode,
            data: self.data.clone(),
        }
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({})",
            self.message,
            describe_notification(self.code, self.subcode)
        )
    }
}

impl std::error::Error for DecodeError {}

fn update_error(subcode: u8, message: impl Into<String>) -> DecodeError {
    DecodeError::new(code::UPDATE, subcode, message)
}

/// The name of a NOTIFICATION code/subcode pair, e.g. "OPEN Message Error / Bad Peer AS" (RFC 4271
/// §4.5, RFC 4486 and RFC 9384 for Cease, RFC 6608 for FSM errors, RFC 7313 for ROUTE-REFRESH).
pub fn describe_notification(code: u8, subcode: u8) -> String {
    let (c, s) = match code {
        code::HEADER => (
            "Message Header Error",
            match subcode {
                1 => "Connection Not Synchronized",
                2 => "Bad Message Length",
                3 => "Bad Message Type",
                _ => "",
            },
        ),
        code::OPEN => (
            "OPEN Message Error",
            match subcode {
                1 => "Unsupported Version Number",
                2 => "Bad Peer AS",
                3 => "Bad BGP Identifier",
                4 => "Unsupported Optional Parameter",
                6 => "Unacceptable Hold Time",
                7 => "Unsupported Capability",
                11 => "Role Mismatch",
                _ => "",
            },
        ),
        code::UPDATE => (
            "UPDATE Message Error",
            match subcode {
                1 => "Malformed Attribute List",
                2 => "Unrecognized Well-known Attribute",
                3 => "Missing Well-known Attribute",
                4 => "Attribute Flags Error",
                5 => "Attribute Length Error",
                6 => "Invalid ORIGIN Attribute",
                8 => "Invalid NEXT_HOP Attribute",
                9 => "Optional Attribute Error",
                10 => "Invalid Network Field",
                11 => "Malformed AS_PATH",
                _ => "",
            },
        ),
        code::HOLD_TIMER => ("Hold Timer Expired", ""),
        code::FSM => (
            "Finite State Machine Error",
            match subcode {
                1 => "Unexpected Message in OpenSent",
                2 => "Unexpected Message in OpenConfirm",
                3 => "Unexpected Message in Established",
                _ => "",
            },
        ),
        code::CEASE => (
            "Cease",
            match subcode {
                1 => "Maximum Number of Prefixes Reached",
                2 => "Administrative Shutdown",
                3 => "Peer De-configured",
                4 => "Administrative Reset",
                5 => "Connection Rejected",
                6 => "Other Configuration Change",
                7 => "Connection Collision Resolution",
                8 => "Out of Resources",
                9 => "Hard Reset",
                10 => "BFD Down",
                _ => "",
            },
        ),
        code::ROUTE_REFRESH => (
            "ROUTE-REFRESH Message Error",
            match subcode {
                1 => "Invalid Message Length",
                _ => "",
            },
        ),
        _ => {
            return format!(
                "undefined error code {code} (subcode {subcode}; RFC 4271 defines codes 1-6)"
            );
        }
    };
    match (s.is_empty(), subcode) {
        (false, _) => format!("{c} / {s}"),
        (true, 0) => c.to_string(),
        (true, _) => format!("{c} / subcode {subcode}"),
    }
}

/// The name of an address family, e.g. "IPv6 unicast".
pub fn family_name(afi: u16, safi: u8) -> String {
    match (afi, safi) {
        (AFI_IPV4, SAFI_UNICAST) => "IPv4 unicast".into(),
        (AFI_IPV6, SAFI_UNICAST) => "IPv6 unicast".into(),
        (AFI_IPV4, 2) => "IPv4 multicast".into(),
        (AFI_IPV6, 2) => "IPv6 multicast".into(),
        (AFI_IPV4, 128) => "VPNv4".into(),
        (AFI_IPV6, 128) => "VPNv6".into(),
        (25, 70) => "L2VPN EVPN".into(),
        _ => format!("AFI {afi} / SAFI {safi}"),
    }
}

/// The name of a path attribute type (IANA registry).
fn attribute_name(typ: u8) -> String {
    let name = match typ {
        attr::ORIGIN => "ORIGIN",
        attr::AS_PATH => "AS_PATH",
        attr::NEXT_HOP => "NEXT_HOP",
        attr::MED => "MULTI_EXIT_DISC",
        attr::LOCAL_PREF => "LOCAL_PREF",
        attr::ATOMIC_AGGREGATE => "ATOMIC_AGGREGATE",
        attr::AGGREGATOR => "AGGREGATOR",
        attr::COMMUNITIES => "COMMUNITIES",
        attr::MP_REACH => "MP_REACH_NLRI",
        attr::MP_UNREACH => "MP_UNREACH_NLRI",
        16 => "EXTENDED COMMUNITIES",
        attr::AS4_PATH => "AS4_PATH",
        attr::AS4_AGGREGATOR => "AS4_AGGREGATOR",
        32 => "LARGE_COMMUNITY",
        _ => return format!("attribute type {typ}"),
    };
    format!("{name} (type {typ})")
}

/// The name of a capability code (IANA registry).
fn capability_name(code_: u8) -> String {
    let name = match code_ {
        1 => "multiprotocol",
        2 => "route refresh",
        5 => "extended next hop",
        6 => "extended message",
        9 => "BGP role",
        64 => "graceful restart",
        65 => "4-octet AS",
        69 => "add-path",
        70 => "enhanced route refresh",
        71 => "long-lived graceful restart",
        73 => "FQDN",
        _ => return format!("capability {code_}"),
    };
    name.to_string()
}

/// Text for a peer-supplied byte string: the text when it is printable (ASCII, or any UTF-8 with
/// `utf8`), else hex.
fn bytes_as_text(data: &[u8], utf8: bool) -> String {
    const MAX: usize = 128;
    let shown = &data[..data.len().min(MAX)];
    let more = if data.len() > MAX { "..." } else { "" };
    match std::str::from_utf8(shown) {
        Ok(t) if !t.is_empty() && t.chars().all(|c| !c.is_control() && (utf8 || c.is_ascii())) => {
            format!("\"{t}{more}\"")
        }
        _ => {
            let hex: Vec<String> = shown.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{}{more}", hex.concat())
        }
    }
}

/// What a NOTIFICATION's data field says, decoded per code and subcode (RFC 4271 §4.5 and §6,
/// RFC 5492 §3, RFC 4486 §4, RFC 9003 shutdown communication), or None when it is empty.
pub fn notification_detail(code_: u8, subcode: u8, data: &[u8]) -> Option<String> {
    if data.is_empty() {
        return None;
    }
    let u16_at =
        |i: usize| -> Option<u16> { Some(u16::from_be_bytes([*data.get(i)?, *data.get(i + 1)?])) };
    let detail = match (code_, subcode) {
        (code::HEADER, 2) if data.len() == 2 => format!("length field {}", u16_at(0)?),
        (code::HEADER, 3) if data.len() == 1 => format!("message type {}", data[0]),
        (code::OPEN, 1) if data.len() == 2 => {
            format!("the peer speaks BGP version {} at most", u16_at(0)?)
        }
        (code::OPEN, 2) if data.len() == 2 || data.len() == 4 => {
            let asn = if data.len() == 2 {
                u32::from(u16_at(0)?)
            } else {
                u32::from_be_bytes([data[0], data[1], data[2], data[3]])
            };
            format!("AS {asn}")
        }
        (code::OPEN, 6) if data.len() == 2 => format!("hold time {} s", u16_at(0)?),
        (code::OPEN, 7) => {
            // The unsupported capabilities, each as code, length and value (RFC 5492 §3).
            let mut names = Vec::new();
            let mut rest = data;
            while let [c, len, tail @ ..] = rest {
                let len = usize::from(*len);
                let value = tail.get(..len).unwrap_or(tail);
                names.push(match (*c, value) {
                    (1, [a0, a1, _, safi]) => format!(
                        "multiprotocol {}",
                        family_name(u16::from_be_bytes([*a0, *a1]), *safi)
                    ),
                    (c, _) => capability_name(c),
                });
                rest = tail.get(len..).unwrap_or(&[]);
            }
            format!("unsupported: {}", names.join(", "))
        }
        (code::UPDATE, 3) if data.len() == 1 => format!("missing {}", attribute_name(data[0])),
        (code::UPDATE, 2 | 4 | 5 | 6 | 8 | 9) if data.len() >= 2 => {
            format!("in {}", attribute_name(data[1]))
        }
        (code::CEASE, 1) if data.len() >= 7 => format!(
            "{}, limit {} prefixes",
            family_name(u16_at(0)?, data[2]),
            u32::from_be_bytes([data[3], data[4], data[5], data[6]])
        ),
        // RFC 8203 / RFC 9003: a length octet and UTF-8 text.
        (code::CEASE, 2 | 4) if usize::from(data[0]) == data.len() - 1 => {
            if data.len() == 1 {
                return None;
            }
            format!("shutdown communication {}", bytes_as_text(&data[1..], true))
        }
        _ => format!("data {}", bytes_as_text(data, false)),
    };
    Some(detail)
}

/// An OPEN capability (RFC 5492).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// Multiprotocol extensions for one AFI/SAFI (RFC 4760), code 1.
    Multiprotocol {
        /// Address family.
        afi: u16,
        /// Subsequent address family.
        safi: u8,
    },
    /// Route refresh (RFC 2918), code 2.
    RouteRefresh,
    /// Extended next hop encoding (RFC 8950), code 5: (NLRI AFI, NLRI SAFI, next-hop AFI) tuples,
    /// e.g. IPv4 unicast NLRI with an IPv6 next hop.
    ExtendedNextHop(Vec<(u16, u16, u16)>),
    /// Graceful restart (RFC 4724), code 64.
    GracefulRestart {
        /// The R bit: the sender has restarted.
        restarting: bool,
        /// Seconds the peer keeps our routes while we restart.
        restart_time: u16,
        /// Families with their forwarding-state-preserved bit.
        families: Vec<(u16, u8, bool)>,
    },
    /// 4-octet AS numbers (RFC 6793), code 65.
    FourOctetAs(u32),
    /// Anything else, kept as received.
    Other {
        /// Capability code.
        code: u8,
        /// Value.
        data: Vec<u8>,
    },
}

/// OPEN (RFC 4271 §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// Protocol version (4).
    pub version: u8,
    /// My Autonomous System (AS_TRANS when the real ASN needs 4 octets).
    pub my_as: u16,
    /// Proposed hold time in seconds.
    pub hold_time: u16,
    /// BGP Identifier.
    pub bgp_id: Ipv4Addr,
    /// Capabilities from the optional parameters.
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// The sender's real ASN: the 4-octet capability's, else `my_as`.
    pub fn asn(&self) -> u32 {
        self.capabilities
            .iter()
            .find_map(|c| match c {
                Capability::FourOctetAs(asn) => Some(*asn),
                _ => None,
            })
            .unwrap_or(u32::from(self.my_as))
    }

    /// Whether the sender supports 4-octet AS numbers.
    pub fn four_octet_as(&self) -> bool {
        self.capabilities
            .iter()
            .any(|c| matches!(c, Capability::FourOctetAs(_)))
    }

    /// The families the sender announced (IPv4 unicast when it announced none, RFC 4760 §8).
    pub fn families(&self) -> Vec<(u16, u8)> {
        let mp: Vec<(u16, u8)> = self
            .capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol { afi, safi } => Some((*afi, *safi)),
                _ => None,
            })
            .collect();
        if mp.is_empty() {
            vec![(AFI_IPV4, SAFI_UNICAST)]
        } else {
            mp
        }
    }

    /// Whether the sender supports route refresh (RFC 2918).
    pub fn route_refresh(&self) -> bool {
        self.capabilities
            .iter()
            .any(|c| matches!(c, Capability::RouteRefresh))
    }

    /// Whether the sender accepts IPv4 unicast NLRI with an IPv6 next hop (RFC 8950 §4).
    pub fn extended_next_hop_ipv4(&self) -> bool {
        self.capabilities.iter().any(|c| match c {
            Capability::ExtendedNextHop(t) => t.iter().any(|&(afi, safi, nh)| {
                afi == AFI_IPV4 && safi == u16::from(SAFI_UNICAST) && nh == AFI_IPV6
            }),
            _ => false,
        })
    }

    /// The graceful-restart capability, if any.
    pub fn graceful_restart(&self) -> Option<&Capability> {
        self.capabilities
            .iter()
            .find(|c| matches!(c, Capability::GracefulRestart { .. }))
    }
}

/// ORIGIN values (RFC 4271 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    /// Learned from an interior protocol or a `network` statement.
    Igp = 0,
    /// Learned by EGP.
    Egp = 1,
    /// Learned some other way.
    Incomplete = 2,
}

/// An AS_PATH segment (RFC 4271 §4.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Ordered ASNs.
    Sequence(Vec<u32>),
    /// Unordered set (counts as one hop).
    Set(Vec<u32>),
}

/// The path attributes of an announcement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathAttributes {
    /// ORIGIN.
    pub origin: Origin,
    /// AS_PATH (4-octet ASNs once decoded).
    pub as_path: Vec<Segment>,
    /// NEXT_HOP for IPv4 NLRI, or MP_REACH's next hop for IPv6.
    pub next_hop: Option<IpAddr>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF (iBGP only).
    pub local_pref: Option<u32>,
    /// COMMUNITIES (RFC 1997), passed on.
    pub communities: Vec<u32>,
    /// Unknown optional transitive attributes: (flags, type, value), passed on.
    pub other: Vec<(u8, u8, Vec<u8>)>,
}

impl Default for PathAttributes {
    fn default() -> Self {
        Self {
            origin: Origin::Igp,
            as_path: Vec::new(),
            next_hop: None,
            med: None,
            local_pref: None,
            communities: Vec::new(),
            other: Vec::new(),
        }
    }
}

impl PathAttributes {
    /// Path length for best-path selection: each ASN of a sequence counts, a set counts once
    /// (RFC 4271 §9.1.2.2).
    pub fn as_path_len(&self) -> usize {
        self.as_path
            .iter()
            .map(|s| match s {
                Segment::Sequence(v) => v.len(),
                Segment::Set(_) => 1,
            })
            .sum()
    }

    /// Whether `asn` appears anywhere in the path (loop detection, RFC 4271 §9.1.2).
    pub fn contains_as(&self, asn: u32) -> bool {
        self.as_path.iter().any(|s| match s {
            Segment::Sequence(v) | Segment::Set(v) => v.contains(&asn),
        })
    }

    /// The neighbouring AS: the first ASN of the path.
    pub fn first_as(&self) -> Option<u32> {
        match self.as_path.first()? {
            Segment::Sequence(v) => v.first().copied(),
            Segment::Set(_) => None,
        }
    }

    /// The path as operators read it: "65010 65020 {65030 65040}".
    pub fn as_path_string(&self) -> String {
        self.as_path
            .iter()
            .map(|s| match s {
                Segment::Sequence(v) => v.iter().map(u32::to_string).collect::<Vec<_>>().join(" "),
                Segment::Set(v) => format!(
                    "{{{}}}",
                    v.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
                ),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A copy with `asn` prepended (what an eBGP speaker does before advertising, §5.1.2).
    pub fn prepend(&self, asn: u32) -> Self {
        let mut out = self.clone();
        match out.as_path.first_mut() {
            Some(Segment::Sequence(v)) if v.len() < 255 => v.insert(0, asn),
            _ => out.as_path.insert(0, Segment::Sequence(vec![asn])),
        }
        out
    }
}

/// UPDATE (RFC 4271 §4.3, RFC 4760), with IPv4 and IPv6 merged: `announced` shares `attributes`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    /// Withdrawn prefixes (IPv4 withdrawn routes and MP_UNREACH_NLRI).
    pub withdrawn: Vec<IpNet>,
    /// Announced prefixes (IPv4 NLRI and MP_REACH_NLRI).
    pub announced: Vec<IpNet>,
    /// Their attributes (None when nothing is announced).
    pub attributes: Option<PathAttributes>,
    /// End-of-RIB marker for this family (RFC 4724 §2): an empty UPDATE (IPv4) or an MP_UNREACH with
    /// no prefixes (other families).
    pub end_of_rib: Option<(u16, u8)>,
}

/// NOTIFICATION (RFC 4271 §4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Error code.
    pub code: u8,
    /// Subcode.
    pub subcode: u8,
    /// Data.
    pub data: Vec<u8>,
}

impl std::fmt::Display for Notification {
    /// The code and subcode by name, then the data decoded (see [`notification_detail`]), e.g.
    /// `Cease / Administrative Shutdown: shutdown communication "maintenance"`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&describe_notification(self.code, self.subcode))?;
        match notification_detail(self.code, self.subcode, &self.data) {
            Some(d) => write!(f, ": {d}"),
            None => Ok(()),
        }
    }
}

/// A BGP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// OPEN.
    Open(Open),
    /// UPDATE.
    Update(Update),
    /// NOTIFICATION.
    Notification(Notification),
    /// KEEPALIVE.
    Keepalive,
    /// ROUTE-REFRESH (RFC 2918) for one family.
    RouteRefresh {
        /// Address family.
        afi: u16,
        /// Subsequent address family.
        safi: u8,
    },
}

/// Message type codes.
mod kind {
    pub const OPEN: u8 = 1;
    pub const UPDATE: u8 = 2;
    pub const NOTIFICATION: u8 = 3;
    pub const KEEPALIVE: u8 = 4;
    pub const ROUTE_REFRESH: u8 = 5;
}

/// Attribute type codes.
mod attr {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MED: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const MP_REACH: u8 = 14;
    pub const MP_UNREACH: u8 = 15;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;

    pub const OPTIONAL: u8 = 0x80;
    pub const TRANSITIVE: u8 = 0x40;
    pub const PARTIAL: u8 = 0x20;
    pub const EXTENDED: u8 = 0x10;
}

/// How long a complete message at the start of `buf` is, once its header is there. Errors on a bad
/// marker or length (RFC 4271 §6.1).
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[..16] != MARKER {
        return Err(DecodeError::new(
            code::HEADER,
            1,
            "the message marker is not all ones",
        ));
    }
    let len = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(DecodeError::new(
            code::HEADER,
            2,
            format!("message length {len} out of range"),
        )
        .with_data(&buf[16..18]));
    }
    Ok((buf.len() >= len).then_some(len))
}

/// A cursor over untrusted bytes: every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(
        &mut self,
        n: usize,
        err: impl FnOnce() -> DecodeError,
    ) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(err());
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self, err: impl FnOnce() -> DecodeError) -> Result<u8, DecodeError> {
        Ok(self.take(1, err)?[0])
    }
    fn u16(&mut self, err: impl FnOnce() -> DecodeError) -> Result<u16, DecodeError> {
        let b = self.take(2, err)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Decodes one complete message (`frame` is exactly the bytes [`frame_len`] measured).
/// `four_octet_as` says whether AS_PATH carries 4-octet ASNs (both sides announced the capability).
pub fn decode(frame: &[u8], four_octet_as: bool) -> Result<Message, DecodeError> {
    let len =
        frame_len(frame)?.ok_or_else(|| DecodeError::new(code::HEADER, 2, "truncated message"))?;
    if len != frame.len() {
        return Err(DecodeError::new(code::HEADER, 2, "message length mismatch"));
    }
    let body = &frame[HEADER_LEN..];
    let bad_len = |what: &str| {
        DecodeError::new(code::HEADER, 2, format!("bad {what} length {len}"))
            .with_data(&(len as u16).to_be_bytes())
    };
    match frame[18] {
        kind::OPEN => {
            if body.len() < 10 {
                return Err(bad_len("OPEN"));
            }
            decode_open(body).map(Message::Open)
        }
        kind::UPDATE => {
            if body.len() < 4 {
                return Err(bad_len("UPDATE"));
            }
            decode_update(body, four_octet_as).map(Message::Update)
        }
        kind::NOTIFICATION => {
            if body.len() < 2 {
                return Err(bad_len("NOTIFICATION"));
            }
            Ok(Message::Notification(Notification {
                code: body[0],
                subcode: body[1],
                data: body[2..].to_vec(),
            }))
        }
        kind::KEEPALIVE => {
            if !body.is_empty() {
                return Err(bad_len("KEEPALIVE"));
            }
            Ok(Message::Keepalive)
        }
        kind::ROUTE_REFRESH => {
            if body.len() != 4 {
                return Err(bad_len("ROUTE-REFRESH"));
            }
            Ok(Message::RouteRefresh {
                afi: u16::from_be_bytes([body[0], body[1]]),
                safi: body[3],
            })
        }
        other => Err(
            DecodeError::new(code::HEADER, 3, format!("unknown message type {other}"))
                .with_data(&[other]),
        ),
    }
}

fn decode_open(body: &[u8]) -> Result<Open, DecodeError> {
    let mut r = Reader { buf: body };
    let short = || DecodeError::new(code::OPEN, 0, "truncated OPEN");
    let version = r.u8(short)?;
    let my_as = r.u16(short)?;
    let hold_time = r.u16(short)?;
    let id = r.take(4, short)?;
    let bgp_id = Ipv4Addr::new(id[0], id[1], id[2], id[3]);
    let opt_len = usize::from(r.u8(short)?);
    let mut params = Reader {
        buf: r.take(opt_len, short)?,
    };
    let mut capabilities = Vec::new();
    while !params.is_empty() {
        let ptype = params.u8(short)?;
        let plen = usize::from(params.u8(short)?);
        let value = params.take(plen, short)?;
        if ptype != 2 {
            return Err(DecodeError::new(
                code::OPEN,
                4,
                format!("unsupported optional parameter {ptype}"),
            ));
        }
        let mut caps = Reader { buf: value };
        while !caps.is_empty() {
            let ccode = caps.u8(short)?;
            let clen = usize::from(caps.u8(short)?);
            let data = caps.take(clen, short)?;
            capabilities.push(decode_capability(ccode, data)?);
        }
    }
    Ok(Open {
        version,
        my_as,
        hold_time,
        bgp_id,
        capabilities,
    })
}

fn decode_capability(code_: u8, data: &[u8]) -> Result<Capability, DecodeError> {
    let bad = || DecodeError::new(code::OPEN, 0, format!("malformed capability {code_}"));
    Ok(match code_ {
        1 if data.len() == 4 => Capability::Multiprotocol {
            afi: u16::from_be_bytes([data[0], data[1]]),
            safi: data[3],
        },
        2 if data.is_empty() => Capability::RouteRefresh,
        5 if data.len().is_multiple_of(6) => Capability::ExtendedNextHop(
            data.chunks_exact(6)
                .map(|c| {
                    (
                        u16::from_be_bytes([c[0], c[1]]),
                        u16::from_be_bytes([c[2], c[3]]),
                        u16::from_be_bytes([c[4], c[5]]),
                    )
                })
                .collect(),
        ),
        64 if data.len() >= 2 && (data.len() - 2).is_multiple_of(4) => {
            let flags_time = u16::from_be_bytes([data[0], data[1]]);
            Capability::GracefulRestart {
                restarting: flags_time & 0x8000 != 0,
                restart_time: flags_time & 0x0fff,
                families: data[2..]
                    .chunks_exact(4)
                    .map(|c| (u16::from_be_bytes([c[0], c[1]]), c[2], c[3] & 0x80 != 0))
                    .collect(),
            }
        }
        65 if data.len() == 4 => {
            Capability::FourOctetAs(u32::from_be_bytes([data[0], data[1], data[2], data[3]]))
        }
        1 | 2 | 5 | 64 | 65 => return Err(bad()),
        _ => Capability::Other {
            code: code_,
            data: data.to_vec(),
        },
    })
}

/// Reads `count` prefixes in RFC 4271 §4.3 NLRI encoding (length in bits, then the minimum bytes).
fn decode_prefixes(mut buf: &[u8], v6: bool, subcode: u8) -> Result<Vec<IpNet>, DecodeError> {
    let mut out = Vec::new();
    let max_bits = if v6 { 128 } else { 32 };
    while let Some((&bits, rest)) = buf.split_first() {
        if bits > max_bits {
            return Err(update_error(
                subcode,
                format!("prefix length {bits} too long"),
            ));
        }
        let bytes = usize::from(bits).div_ceil(8);
        if rest.len() < bytes {
            return Err(update_error(subcode, "truncated prefix"));
        }
        let net = if v6 {
            let mut a = [0u8; 16];
            a[..bytes].copy_from_slice(&rest[..bytes]);
            IpNet::V6(
                Ipv6Net::new(Ipv6Addr::from(a), bits)
                    .map_err(|_| update_error(subcode, "bad prefix"))?
                    .trunc(),
            )
        } else {
            let mut a = [0u8; 4];
            a[..bytes].copy_from_slice(&rest[..bytes]);
            IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from(a), bits)
                    .map_err(|_| update_error(subcode, "bad prefix"))?
                    .trunc(),
            )
        };
        out.push(net);
        buf = &rest[bytes..];
    }
    Ok(out)
}

fn decode_as_path(data: &[u8], four: bool) -> Result<Vec<Segment>, DecodeError> {
    let width = if four { 4 } else { 2 };
    let mut r = Reader { buf: data };
    let bad = || update_error(11, "malformed AS_PATH");
    let mut out = Vec::new();
    while !r.is_empty() {
        let stype = r.u8(bad)?;
        let count = usize::from(r.u8(bad)?);
        let raw = r.take(count * width, bad)?;
        let asns: Vec<u32> = raw
            .chunks_exact(width)
            .map(|c| {
                if four {
                    u32::from_be_bytes([c[0], c[1], c[2], c[3]])
                } else {
                    u32::from(u16::from_be_bytes([c[0], c[1]]))
                }
            })
            .collect();
        out.push(match stype {
            1 => Segment::Set(asns),
            2 => Segment::Sequence(asns),
            _ => return Err(bad()),
        });
    }
    Ok(out)
}

/// Path length counting every ASN of every segment (the count RFC 6793 §4.2.3 compares).
fn asn_count(path: &[Segment]) -> usize {
    path.iter()
        .map(|s| match s {
            Segment::Sequence(v) | Segment::Set(v) => v.len(),
        })
        .sum()
}

/// RFC 6793 §4.2.3: AS_PATH's leading ASNs (as many as it has more than AS4_PATH) followed by
/// AS4_PATH; when AS4_PATH is the longer, it is ignored.
fn merge_as4_path(as_path: &[Segment], as4: Vec<Segment>) -> Vec<Segment> {
    let (n, n4) = (asn_count(as_path), asn_count(&as4));
    if n4 > n {
        return as_path.to_vec();
    }
    let mut keep = n - n4;
    let mut out: Vec<Segment> = Vec::new();
    for s in as_path {
        if keep == 0 {
            break;
        }
        let (v, set) = match s {
            Segment::Sequence(v) => (v, false),
            Segment::Set(v) => (v, true),
        };
        let take = v.len().min(keep);
        keep -= take;
        let part = v[..take].to_vec();
        out.push(if set {
            Segment::Set(part)
        } else {
            Segment::Sequence(part)
        });
    }
    for s in as4 {
        match (out.last_mut(), s) {
            (Some(Segment::Sequence(v)), Segment::Sequence(w)) if v.len() + w.len() <= 255 => {
                v.extend(w)
            }
            (_, s) => out.push(s),
        }
    }
    out
}

fn decode_update(body: &[u8], four_octet_as: bool) -> Result<Update, DecodeError> {
    let mut r = Reader { buf: body };
    let malformed = || update_error(1, "malformed attribute list");
    let wlen = usize::from(r.u16(malformed)?);
    let withdrawn_raw = r.take(wlen, malformed)?;
    let alen = usize::from(r.u16(malformed)?);
    let attrs_raw = r.take(alen, malformed)?;
    let nlri_raw = r.buf;
    let mut update = Update {
        withdrawn: decode_prefixes(withdrawn_raw, false, 1)?,
        announced: decode_prefixes(nlri_raw, false, 10)?,
        ..Update::default()
    };
    let mut a = PathAttributes::default();
    let (mut seen_origin, mut seen_path, mut seen_nh) = (false, false, false);
    let mut as4_path: Option<Vec<Segment>> = None;
    let mut mp_reach = false;
    let mut seen = [false; 256];
    let mut ar = Reader { buf: attrs_raw };
    while !ar.is_empty() {
        let flags = ar.u8(malformed)?;
        let typ = ar.u8(malformed)?;
        let len = if flags & attr::EXTENDED != 0 {
            usize::from(ar.u16(malformed)?)
        } else {
            usize::from(ar.u8(malformed)?)
        };
        let value = ar.take(len, || {
            update_error(5, format!("attribute {typ} overruns the list"))
        })?;
        // RFC 4271 §5: an attribute appears at most once.
        if seen[usize::from(typ)] {
            return Err(update_error(1, format!("attribute {typ} appears twice")));
        }
        seen[usize::from(typ)] = true;
        let len_err = || update_error(5, format!("attribute {typ} has length {len}"));
        match typ {
            attr::ORIGIN => {
                if len != 1 {
                    return Err(len_err());
                }
                a.origin = match value[0] {
                    0 => Origin::Igp,
                    1 => Origin::Egp,
                    2 => Origin::Incomplete,
                    v => return Err(update_error(6, format!("ORIGIN {v}")).with_data(value)),
                };
                seen_origin = true;
            }
            attr::AS_PATH => {
                a.as_path = decode_as_path(value, four_octet_as)?;
                seen_path = true;
            }
            attr::NEXT_HOP => {
                if len != 4 {
                    return Err(len_err());
                }
                a.next_hop = Some(IpAddr::V4(Ipv4Addr::new(
                    value[0], value[1], value[2], value[3],
                )));
                seen_nh = true;
            }
            attr::MED | attr::LOCAL_PREF => {
                if len != 4 {
                    return Err(len_err());
                }
                let v = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
                if typ == attr::MED {
                    a.med = Some(v);
                } else {
                    a.local_pref = Some(v);
                }
            }
            attr::COMMUNITIES => {
                if len % 4 != 0 {
                    return Err(len_err());
                }
                a.communities = value
                    .chunks_exact(4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
            }
            attr::MP_REACH => {
                let mut m = Reader { buf: value };
                let bad = || update_error(9, "malformed MP_REACH_NLRI");
                let afi = m.u16(bad)?;
                let safi = m.u8(bad)?;
                let nh_len = usize::from(m.u8(bad)?);
                let nh = m.take(nh_len, bad)?;
                let _reserved = m.u8(bad)?;
                if afi == AFI_IPV6 && safi == SAFI_UNICAST {
                    // 16 bytes global, or 32 with a link-local address after it (RFC 2545 §3).
                    if nh_len != 16 && nh_len != 32 {
                        return Err(update_error(9, format!("IPv6 next hop of {nh_len} bytes")));
                    }
                    let mut g = [0u8; 16];
                    g.copy_from_slice(&nh[..16]);
                    a.next_hop = Some(IpAddr::V6(Ipv6Addr::from(g)));
                    update.announced.extend(decode_prefixes(m.buf, true, 9)?);
                    mp_reach = true;
                } else if afi == AFI_IPV4 && safi == SAFI_UNICAST && nh_len == 4 {
                    a.next_hop = Some(IpAddr::V4(Ipv4Addr::new(nh[0], nh[1], nh[2], nh[3])));
                    update.announced.extend(decode_prefixes(m.buf, false, 9)?);
                    mp_reach = true;
                } else if afi == AFI_IPV4 && safi == SAFI_UNICAST && (nh_len == 16 || nh_len == 32)
                {
                    // IPv4 NLRI with an IPv6 next hop (RFC 8950 §3).
                    let mut g = [0u8; 16];
                    g.copy_from_slice(&nh[..16]);
                    a.next_hop = Some(IpAddr::V6(Ipv6Addr::from(g)));
                    update.announced.extend(decode_prefixes(m.buf, false, 9)?);
                    mp_reach = true;
                }
                // Other families are not negotiated; RFC 4760 lets us ignore them.
            }
            attr::MP_UNREACH => {
                let mut m = Reader { buf: value };
                let bad = || update_error(9, "malformed MP_UNREACH_NLRI");
                let afi = m.u16(bad)?;
                let safi = m.u8(bad)?;
                if safi == SAFI_UNICAST && (afi == AFI_IPV6 || afi == AFI_IPV4) {
                    let prefixes = decode_prefixes(m.buf, afi == AFI_IPV6, 9)?;
                    let header = if flags & attr::EXTENDED != 0 { 4 } else { 3 };
                    if prefixes.is_empty()
                        && alen == len + header
                        && withdrawn_raw.is_empty()
                        && nlri_raw.is_empty()
                    {
                        update.end_of_rib = Some((afi, safi));
                    }
                    update.withdrawn.extend(prefixes);
                }
            }
            attr::AS4_PATH => as4_path = Some(decode_as_path(value, true)?),
            attr::ATOMIC_AGGREGATE | attr::AGGREGATOR | attr::AS4_AGGREGATOR => {}
            _ => {
                if flags & attr::OPTIONAL == 0 {
                    return Err(update_error(
                        2,
                        format!("unrecognized well-known attribute {typ}"),
                    )
                    .with_data(value));
                }
                if flags & attr::TRANSITIVE != 0 {
                    a.other.push((flags | attr::PARTIAL, typ, value.to_vec()));
                }
            }
        }
    }
    // RFC 6793 §4.2.3: from a 2-octet speaker, AS4_PATH restores the real ASNs of the path's tail;
    // the leading ASNs that AS_PATH has in excess (added by 2-octet speakers) stay. A NEW speaker's
    // AS4_PATH is ignored (§4.1).
    if !four_octet_as && let Some(p4) = as4_path {
        a.as_path = merge_as4_path(&a.as_path, p4);
    }
    if !update.announced.is_empty() {
        let has_v4_nlri = !nlri_raw.is_empty();
        let missing = if !seen_origin {
            Some(attr::ORIGIN)
        } else if !seen_path {
            Some(attr::AS_PATH)
        } else if has_v4_nlri && !seen_nh && !mp_reach {
            Some(attr::NEXT_HOP)
        } else {
            None
        };
        if let Some(t) = missing {
            return Err(
                update_error(3, format!("missing well-known attribute {t}")).with_data(&[t])
            );
        }
        update.attributes = Some(a);
    } else if body.len() == 4 {
        update.end_of_rib = Some((AFI_IPV4, SAFI_UNICAST));
    }
    Ok(update)
}

// ---- encoding ---------------------------------------------------------------------------------

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&MARKER);
    out.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
    out.push(kind);
    out.extend_from_slice(body);
    out
}

/// Encodes an OPEN.
pub fn encode_open(open: &Open) -> Vec<u8> {
    let mut caps = Vec::new();
    for c in &open.capabilities {
        let (code_, data): (u8, Vec<u8>) = match c {
            Capability::Multiprotocol { afi, safi } => {
                let mut d = afi.to_be_bytes().to_vec();
                d.extend_from_slice(&[0, *safi]);
                (1, d)
            }
            Capability::RouteRefresh => (2, Vec::new()),
            Capability::ExtendedNextHop(tuples) => (
                5,
                tuples
                    .iter()
                    .flat_map(|(a, s, n)| [a.to_be_bytes(), s.to_be_bytes(), n.to_be_bytes()])
                    .flatten()
                    .collect(),
            ),
            Capability::GracefulRestart {
                restarting,
                restart_time,
                families,
            } => {
                let ft = (restart_time & 0x0fff) | if *restarting { 0x8000 } else { 0 };
                let mut d = ft.to_be_bytes().to_vec();
                for (afi, safi, fwd) in families {
                    d.extend_from_slice(&afi.to_be_bytes());
                    d.push(*safi);
                    d.push(if *fwd { 0x80 } else { 0 });
                }
                (64, d)
            }
            Capability::FourOctetAs(asn) => (65, asn.to_be_bytes().to_vec()),
            Capability::Other { code, data } => (*code, data.clone()),
        };
        // One capability per optional parameter, as most speakers send them.
        caps.push(2u8);
        caps.push((data.len() + 2) as u8);
        caps.push(code_);
        caps.push(data.len() as u8);
        caps.extend_from_slice(&data);
    }
    let mut body = vec![open.version];
    body.extend_from_slice(&open.my_as.to_be_bytes());
    body.extend_from_slice(&open.hold_time.to_be_bytes());
    body.extend_from_slice(&open.bgp_id.octets());
    body.push(caps.len() as u8);
    body.extend_from_slice(&caps);
    frame(kind::OPEN, &body)
}

/// Encodes a KEEPALIVE.
pub fn encode_keepalive() -> Vec<u8> {
    frame(kind::KEEPALIVE, &[])
}

/// Encodes a NOTIFICATION.
pub fn encode_notification(n: &Notification) -> Vec<u8> {
    let mut body = vec![n.code, n.subcode];
    body.extend_from_slice(&n.data[..n.data.len().min(MAX_MESSAGE_LEN - HEADER_LEN - 2)]);
    frame(kind::NOTIFICATION, &body)
}

/// Encodes a ROUTE-REFRESH request.
pub fn encode_route_refresh(afi: u16, safi: u8) -> Vec<u8> {
    let mut body = afi.to_be_bytes().to_vec();
    body.extend_from_slice(&[0, safi]);
    frame(kind::ROUTE_REFRESH, &body)
}

fn push_prefix(out: &mut Vec<u8>, net: &IpNet) {
    let bits = net.prefix_len();
    out.push(bits);
    let bytes = usize::from(bits).div_ceil(8);
    match net.network() {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()[..bytes]),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()[..bytes]),
    }
}

fn prefix_wire_len(net: &IpNet) -> usize {
    1 + usize::from(net.prefix_len()).div_ceil(8)
}

fn push_attr(out: &mut Vec<u8>, flags: u8, typ: u8, value: &[u8]) {
    if value.len() > 255 {
        out.push(flags | attr::EXTENDED);
        out.push(typ);
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        out.push(flags & !attr::EXTENDED);
        out.push(typ);
        out.push(value.len() as u8);
    }
    out.extend_from_slice(value);
}

fn encode_as_path(path: &[Segment], four: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for s in path {
        let (t, v) = match s {
            Segment::Set(v) => (1u8, v),
            Segment::Sequence(v) => (2u8, v),
        };
        for chunk in v.chunks(255) {
            out.push(t);
            out.push(chunk.len() as u8);
            for asn in chunk {
                if four {
                    out.extend_from_slice(&asn.to_be_bytes());
                } else {
                    let two = u16::try_from(*asn).unwrap_or(AS_TRANS);
                    out.extend_from_slice(&two.to_be_bytes());
                }
            }
        }
    }
    out
}

/// The common attributes (everything but the NLRI-carrying ones).
fn encode_common_attrs(a: &PathAttributes, four: bool) -> Vec<u8> {
    let mut out = Vec::new();
    push_attr(&mut out, attr::TRANSITIVE, attr::ORIGIN, &[a.origin as u8]);
    push_attr(
        &mut out,
        attr::TRANSITIVE,
        attr::AS_PATH,
        &encode_as_path(&a.as_path, four),
    );
    // RFC 6793 §4.2.2: towards a 2-octet speaker, ASNs that do not fit are AS_TRANS in AS_PATH and
    // the real path goes in AS4_PATH (optional transitive).
    let wide = a.as_path.iter().any(|s| match s {
        Segment::Sequence(v) | Segment::Set(v) => v.iter().any(|asn| *asn > u32::from(u16::MAX)),
    });
    if !four && wide {
        push_attr(
            &mut out,
            attr::OPTIONAL | attr::TRANSITIVE,
            attr::AS4_PATH,
            &encode_as_path(&a.as_path, true),
        );
    }
    if let Some(med) = a.med {
        push_attr(&mut out, attr::OPTIONAL, attr::MED, &med.to_be_bytes());
    }
    if let Some(lp) = a.local_pref {
        push_attr(
            &mut out,
            attr::TRANSITIVE,
            attr::LOCAL_PREF,
            &lp.to_be_bytes(),
        );
    }
    if !a.communities.is_empty() {
        let v: Vec<u8> = a.communities.iter().flat_map(|c| c.to_be_bytes()).collect();
        push_attr(
            &mut out,
            attr::OPTIONAL | attr::TRANSITIVE,
            attr::COMMUNITIES,
            &v,
        );
    }
    for (flags, typ, value) in &a.other {
        push_attr(&mut out, *flags, *typ, value);
    }
    out
}

/// Room for NLRI in an UPDATE after the header, the two length fields and `attrs` bytes.
fn room(attrs: usize) -> usize {
    MAX_MESSAGE_LEN - HEADER_LEN - 4 - attrs
}

/// Encodes announcements of `prefixes` sharing `attrs` into as few UPDATEs as fit in 4096 bytes.
/// IPv4 uses NEXT_HOP and the NLRI field; IPv6 uses MP_REACH_NLRI (RFC 4760 §3). IPv4 prefixes whose
/// next hop is IPv6 cannot be encoded without extended next hop: see [`encode_announce_ext`]; here
/// they are left out.
pub fn encode_announce(attrs: &PathAttributes, prefixes: &[IpNet], four: bool) -> Vec<Vec<u8>> {
    encode_announce_ext(attrs, prefixes, four, false)
}

/// [`encode_announce`], and with `extended_next_hop` (RFC 8950, negotiated for IPv4 unicast) IPv4
/// prefixes with an IPv6 next hop go in MP_REACH_NLRI AFI 1 with a 16-byte next hop (RFC 8950 §3).
/// Without it such prefixes are left out: a NEXT_HOP of 0.0.0.0 would be a lie.
pub fn encode_announce_ext(
    attrs: &PathAttributes,
    prefixes: &[IpNet],
    four: bool,
    extended_next_hop: bool,
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let common = encode_common_attrs(attrs, four);
    let (v4, v6): (Vec<&IpNet>, Vec<&IpNet>) =
        prefixes.iter().partition(|p| matches!(p, IpNet::V4(_)));
    let v4_nh6 = match attrs.next_hop {
        Some(IpAddr::V6(a)) => Some(a),
        _ => None,
    };
    if !v4.is_empty()
        && let Some(nh) = v4_nh6
    {
        if extended_next_hop {
            encode_mp_reach(&mut out, &common, AFI_IPV4, nh, &v4);
        }
    } else if !v4.is_empty() {
        let mut attrs_bytes = common.clone();
        let nh = match attrs.next_hop {
            Some(IpAddr::V4(a)) => a,
            _ => Ipv4Addr::UNSPECIFIED,
        };
        push_attr(
            &mut attrs_bytes,
            attr::TRANSITIVE,
            attr::NEXT_HOP,
            &nh.octets(),
        );
        let limit = room(attrs_bytes.len());
        let mut nlri = Vec::new();
        for p in v4 {
            if nlri.len() + prefix_wire_len(p) > limit {
                out.push(update_bytes(&[], &attrs_bytes, &nlri));
                nlri.clear();
            }
            push_prefix(&mut nlri, p);
        }
        out.push(update_bytes(&[], &attrs_bytes, &nlri));
    }
    if !v6.is_empty() {
        let nh = match attrs.next_hop {
            Some(IpAddr::V6(a)) => a,
            Some(IpAddr::V4(a)) => a.to_ipv6_mapped(),
            None => Ipv6Addr::UNSPECIFIED,
        };
        encode_mp_reach(&mut out, &common, AFI_IPV6, nh, &v6);
    }
    out
}

/// MP_REACH_NLRI UPDATEs for `prefixes` of family `afi`/unicast with a 16-byte next hop.
fn encode_mp_reach(
    out: &mut Vec<Vec<u8>>,
    common: &[u8],
    afi: u16,
    nh: Ipv6Addr,
    prefixes: &[&IpNet],
) {
    // MP_REACH header: AFI, SAFI, next-hop length and address, reserved; plus 4 attribute-header
    // bytes (extended length).
    let fixed = common.len() + 4 + 3 + 1 + 16 + 1;
    let limit = room(fixed);
    let mut chunk: Vec<u8> = Vec::new();
    let flush = |chunk: &[u8], out: &mut Vec<Vec<u8>>| {
        let mut mp = afi.to_be_bytes().to_vec();
        mp.push(SAFI_UNICAST);
        mp.push(16);
        mp.extend_from_slice(&nh.octets());
        mp.push(0);
        mp.extend_from_slice(chunk);
        let mut attrs_bytes = common.to_vec();
        push_attr(&mut attrs_bytes, attr::OPTIONAL, attr::MP_REACH, &mp);
        out.push(update_bytes(&[], &attrs_bytes, &[]));
    };
    for p in prefixes {
        if chunk.len() + prefix_wire_len(p) > limit {
            flush(&chunk, out);
            chunk.clear();
        }
        push_prefix(&mut chunk, p);
    }
    flush(&chunk, out);
}

/// Encodes withdrawals of `prefixes` into as few UPDATEs as fit.
pub fn encode_withdraw(prefixes: &[IpNet]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let (v4, v6): (Vec<&IpNet>, Vec<&IpNet>) =
        prefixes.iter().partition(|p| matches!(p, IpNet::V4(_)));
    if !v4.is_empty() {
        let limit = room(0);
        let mut w = Vec::new();
        for p in v4 {
            if w.len() + prefix_wire_len(p) > limit {
                out.push(update_bytes(&w, &[], &[]));
                w.clear();
            }
            push_prefix(&mut w, p);
        }
        out.push(update_bytes(&w, &[], &[]));
    }
    if !v6.is_empty() {
        let limit = room(4 + 3);
        let mut chunk = Vec::new();
        let flush = |chunk: &[u8], out: &mut Vec<Vec<u8>>| {
            let mut mp = AFI_IPV6.to_be_bytes().to_vec();
            mp.push(SAFI_UNICAST);
            mp.extend_from_slice(chunk);
            let mut attrs_bytes = Vec::new();
            push_attr(&mut attrs_bytes, attr::OPTIONAL, attr::MP_UNREACH, &mp);
            out.push(update_bytes(&[], &attrs_bytes, &[]));
        };
        for p in v6 {
            if chunk.len() + prefix_wire_len(p) > limit {
                flush(&chunk, &mut out);
                chunk.clear();
            }
            push_prefix(&mut chunk, p);
        }
        flush(&chunk, &mut out);
    }
    out
}

/// The End-of-RIB marker for a family (RFC 4724 §2).
pub fn encode_end_of_rib(afi: u16, safi: u8) -> Vec<u8> {
    if afi == AFI_IPV4 && safi == SAFI_UNICAST {
        return update_bytes(&[], &[], &[]);
    }
    let mut mp = afi.to_be_bytes().to_vec();
    mp.push(safi);
    let mut attrs_bytes = Vec::new();
    push_attr(&mut attrs_bytes, attr::OPTIONAL, attr::MP_UNREACH, &mp);
    update_bytes(&[], &attrs_bytes, &[])
}

fn update_bytes(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(4 + withdrawn.len() + attrs.len() + nlri.len());
    body.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    body.extend_from_slice(withdrawn);
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(nlri);
    frame(kind::UPDATE, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn open_round_trips_with_every_capability() {
        let open = Open {
            version: 4,
            my_as: AS_TRANS,
            hold_time: 9,
            bgp_id: Ipv4Addr::new(10, 2, 255, 254),
            capabilities: vec![
                Capability::Multiprotocol {
                    afi: AFI_IPV4,
                    safi: SAFI_UNICAST,
                },
                Capability::Multiprotocol {
                    afi: AFI_IPV6,
                    safi: SAFI_UNICAST,
                },
                Capability::RouteRefresh,
                Capability::FourOctetAs(4_200_000_001),
                Capability::GracefulRestart {
                    restarting: true,
                    restart_time: 120,
                    families: vec![(AFI_IPV4, SAFI_UNICAST, true)],
                },
            ],
        };
        let bytes = encode_open(&open);
        assert_eq!(frame_len(&bytes).unwrap(), Some(bytes.len()));
        let back = decode(&bytes, true).unwrap();
        assert_eq!(back, Message::Open(open.clone()));
        assert_eq!(open.asn(), 4_200_000_001);
        // Known answer: the fixed part of the OPEN.
        assert_eq!(
            &bytes[18..29],
            &[1, 4, 0x5b, 0xa0, 0, 9, 10, 2, 255, 254, bytes[28]]
        );
    }

    #[test]
    fn ipv4_update_known_answer_and_round_trip() {
        let attrs = PathAttributes {
            origin: Origin::Igp,
            as_path: vec![Segment::Sequence(vec![65010])],
            next_hop: Some("10.1.255.254".parse().unwrap()),
            ..Default::default()
        };
        let msgs = encode_announce(&attrs, &[net("10.1.0.0/16"), net("10.11.0.0/16")], true);
        assert_eq!(msgs.len(), 1);
        let expected: Vec<u8> = [
            &MARKER[..],
            &[0, 49, 2],                           // length 49, UPDATE
            &[0, 0],                               // no withdrawn routes
            &[0, 20],                              // attributes length
            &[0x40, 1, 1, 0],                      // ORIGIN IGP
            &[0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xf2], // AS_PATH SEQUENCE [65010]
            &[0x40, 3, 4, 10, 1, 255, 254],        // NEXT_HOP
            &[16, 10, 1, 16, 10, 11],              // NLRI
        ]
        .concat();
        assert_eq!(msgs[0], expected);
        match decode(&msgs[0], true).unwrap() {
            Message::Update(u) => {
                assert_eq!(u.announced, vec![net("10.1.0.0/16"), net("10.11.0.0/16")]);
                assert_eq!(u.attributes.unwrap(), attrs);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ipv6_update_uses_mp_reach_and_withdraw_uses_mp_unreach() {
        let attrs = PathAttributes {
            as_path: vec![Segment::Sequence(vec![65515])],
            next_hop: Some("2001:db8:2::1".parse().unwrap()),
            ..Default::default()
        };
        let m = encode_announce(&attrs, &[net("2001:db8:1::/48")], true);
        match decode(&m[0], true).unwrap() {
            Message::Update(u) => {
                assert_eq!(u.announced, vec![net("2001:db8:1::/48")]);
                assert_eq!(u.attributes.unwrap().next_hop, attrs.next_hop);
            }
            other => panic!("{other:?}"),
        }
        let w = encode_withdraw(&[net("2001:db8:1::/48"), net("10.1.0.0/16")]);
        let mut withdrawn = Vec::new();
        for m in w {
            if let Message::Update(u) = decode(&m, true).unwrap() {
                withdrawn.extend(u.withdrawn);
            }
        }
        withdrawn.sort();
        assert_eq!(withdrawn, vec![net("10.1.0.0/16"), net("2001:db8:1::/48")]);
    }

    #[test]
    fn ten_thousand_prefixes_pack_into_few_messages() {
        let attrs = PathAttributes {
            as_path: vec![Segment::Sequence(vec![65010])],
            next_hop: Some("10.1.255.254".parse().unwrap()),
            ..Default::default()
        };
        let prefixes: Vec<IpNet> = (0..10_000u32)
            .map(|i| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a80_0000 + (i << 8)), 24).unwrap()))
            .collect();
        let msgs = encode_announce(&attrs, &prefixes, true);
        assert!(msgs.iter().all(|m| m.len() <= MAX_MESSAGE_LEN));
        assert!(msgs.len() <= 11, "{} messages", msgs.len());
        let mut n = 0;
        for m in &msgs {
            if let Message::Update(u) = decode(m, true).unwrap() {
                n += u.announced.len();
            }
        }
        assert_eq!(n, 10_000);
    }

    #[test]
    fn end_of_rib_markers_are_recognised() {
        for (afi, safi) in [(AFI_IPV4, SAFI_UNICAST), (AFI_IPV6, SAFI_UNICAST)] {
            match decode(&encode_end_of_rib(afi, safi), true).unwrap() {
                Message::Update(u) => assert_eq!(u.end_of_rib, Some((afi, safi))),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn malformed_updates_map_to_the_right_notification() {
        let good = encode_announce(
            &PathAttributes {
                as_path: vec![Segment::Sequence(vec![65010])],
                next_hop: Some("10.1.255.254".parse().unwrap()),
                ..Default::default()
            },
            &[net("10.1.0.0/16")],
            true,
        )
        .remove(0);
        // ORIGIN value 7.
        let mut bad_origin = good.clone();
        bad_origin[26] = 7;
        let e = decode(&bad_origin, true).unwrap_err();
        assert_eq!((e.code, e.subcode), (code::UPDATE, 6));
        // A broken AS_PATH segment type.
        let mut bad_path = good.clone();
        bad_path[30] = 9;
        assert_eq!(decode(&bad_path, true).unwrap_err().subcode, 11);
        // NLRI without NEXT_HOP: drop the NEXT_HOP attribute (7 bytes) and fix the lengths.
        let mut no_nh = good[..HEADER_LEN + 4].to_vec();
        no_nh.extend_from_slice(&good[HEADER_LEN + 4..HEADER_LEN + 4 + 13]);
        no_nh.extend_from_slice(&good[HEADER_LEN + 4 + 20..]);
        let body_attrs = 13u16;
        no_nh[HEADER_LEN + 2..HEADER_LEN + 4].copy_from_slice(&body_attrs.to_be_bytes());
        let len = no_nh.len() as u16;
        no_nh[16..18].copy_from_slice(&len.to_be_bytes());
        let e = decode(&no_nh, true).unwrap_err();
        assert_eq!(
            (e.code, e.subcode, e.data.clone()),
            (code::UPDATE, 3, vec![3])
        );
        // Bad marker and bad length.
        let mut bad_marker = good.clone();
        bad_marker[0] = 0;
        assert_eq!(frame_len(&bad_marker).unwrap_err().subcode, 1);
        let mut bad_len = good;
        bad_len[16] = 0x20;
        assert_eq!(frame_len(&bad_len).unwrap_err().subcode, 2);
    }

    #[test]
    fn two_octet_as_paths_decode() {
        let attrs = PathAttributes {
            as_path: vec![Segment::Sequence(vec![65010, 100])],
            next_hop: Some("10.1.255.254".parse().unwrap()),
            ..Default::default()
        };
        let m = encode_announce(&attrs, &[net("10.1.0.0/16")], false).remove(0);
        match decode(&m, false).unwrap() {
            Message::Update(u) => assert_eq!(u.attributes.unwrap().as_path, attrs.as_path),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn notifications_are_decoded_into_words() {
        let n = |code, subcode, data: &[u8]| {
            Notification {
                code,
                subcode,
                data: data.to_vec(),
            }
            .to_string()
        };
        // What GoBGP sends for an address family the session did not negotiate.
        assert_eq!(
            n(0, 0, &[]),
            "undefined error code 0 (subcode 0; RFC 4271 defines codes 1-6)"
        );
        assert_eq!(
            n(6, 4, b"\x07upgrade"),
            "Cease / Administrative Reset: shutdown communication \"upgrade\""
        );
        assert_eq!(n(6, 2, &[]), "Cease / Administrative Shutdown");
        assert_eq!(
            n(6, 1, &[0, 1, 1, 0, 0, 0x13, 0x88]),
            "Cease / Maximum Number of Prefixes Reached: IPv4 unicast, limit 5000 prefixes"
        );
        assert_eq!(
            n(2, 7, &[1, 4, 0, 2, 0, 1, 69, 4, 0, 1, 1, 3]),
            "OPEN Message Error / Unsupported Capability: unsupported: multiprotocol IPv6 unicast, add-path"
        );
        assert_eq!(
            n(2, 2, &[0xfd, 0xe8]),
            "OPEN Message Error / Bad Peer AS: AS 65000"
        );
        assert_eq!(
            n(3, 3, &[3]),
            "UPDATE Message Error / Missing Well-known Attribute: missing NEXT_HOP (type 3)"
        );
        assert_eq!(
            n(3, 4, &[0x80, 14, 3, 0, 2, 1]),
            "UPDATE Message Error / Attribute Flags Error: in MP_REACH_NLRI (type 14)"
        );
        assert_eq!(
            n(1, 2, &[0x20, 0]),
            "Message Header Error / Bad Message Length: length field 8192"
        );
        assert_eq!(n(4, 0, &[]), "Hold Timer Expired");
        assert_eq!(
            n(5, 3, &[]),
            "Finite State Machine Error / Unexpected Message in Established"
        );
        assert_eq!(n(6, 99, &[0xde, 0xad]), "Cease / subcode 99: data 0xdead");
        assert_eq!(
            n(6, 2, b"\x03a\x07b"),
            "Cease / Administrative Shutdown: shutdown communication 0x610762"
        );
    }

    #[test]
    fn as4_path_restores_the_real_asns_behind_a_two_octet_speaker() {
        // RFC 6793 §4.2.3: a 2-octet speaker (AS 65001) prepended itself to AS_PATH only.
        let as_path = vec![Segment::Sequence(vec![65001, 23456, 65010])];
        let as4 = vec![Segment::Sequence(vec![4_200_000_001, 65010])];
        assert_eq!(
            merge_as4_path(&as_path, as4),
            vec![Segment::Sequence(vec![65001, 4_200_000_001, 65010])]
        );
        // An AS4_PATH longer than AS_PATH is ignored.
        let as4 = vec![Segment::Sequence(vec![1, 2, 3, 4])];
        assert_eq!(merge_as4_path(&as_path, as4), as_path);
        // Round trip through a 2-octet encoding.
        let attrs = PathAttributes {
            as_path: vec![Segment::Sequence(vec![65515, 4_200_000_001])],
            next_hop: Some("10.1.255.254".parse().unwrap()),
            ..Default::default()
        };
        let m = encode_announce(&attrs, &[net("10.1.0.0/16")], false).remove(0);
        match decode(&m, false).unwrap() {
            Message::Update(u) => assert_eq!(u.attributes.unwrap().as_path, attrs.as_path),
            other => panic!("{other:?}"),
        }
        // A 4-octet session sends no AS4_PATH.
        let m = encode_announce(&attrs, &[net("10.1.0.0/16")], true).remove(0);
        assert!(!m.windows(2).any(|w| w == [0xc0, attr::AS4_PATH]));
    }

    #[test]
    fn extended_next_hop_round_trips() {
        let cap = Capability::ExtendedNextHop(vec![(AFI_IPV4, 1, AFI_IPV6)]);
        let open = Open {
            version: 4,
            my_as: 65010,
            hold_time: 9,
            bgp_id: Ipv4Addr::new(10, 1, 255, 254),
            capabilities: vec![cap],
        };
        match decode(&encode_open(&open), true).unwrap() {
            Message::Open(o) => {
                assert!(o.extended_next_hop_ipv4());
                assert_eq!(o, open);
            }
            other => panic!("{other:?}"),
        }
        let attrs = PathAttributes {
            as_path: vec![Segment::Sequence(vec![65010])],
            next_hop: Some("2001:db8:1::1".parse().unwrap()),
            ..Default::default()
        };
        assert!(encode_announce(&attrs, &[net("10.1.0.0/16")], true).is_empty());
        let m = encode_announce_ext(&attrs, &[net("10.1.0.0/16")], true, true).remove(0);
        match decode(&m, true).unwrap() {
            Message::Update(u) => {
                assert_eq!(u.announced, vec![net("10.1.0.0/16")]);
                assert_eq!(u.attributes.unwrap().next_hop, attrs.next_hop);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seed = encode_announce(
            &PathAttributes {
                as_path: vec![Segment::Sequence(vec![65010])],
                next_hop: Some("10.1.255.254".parse().unwrap()),
                ..Default::default()
            },
            &[net("10.1.0.0/16"), net("2001:db8::/32")],
            true,
        );
        for i in 0..20_000 {
            let mut m = seed[i % seed.len()].clone();
            let flips = 1 + (next() % 6) as usize;
            for _ in 0..flips {
                let at = HEADER_LEN + (next() as usize % (m.len() - HEADER_LEN));
                m[at] = next() as u8;
            }
            if next() % 4 == 0 {
                let cut = HEADER_LEN + (next() as usize % (m.len() - HEADER_LEN));
                m.truncate(cut);
                let len = m.len() as u16;
                m[16..18].copy_from_slice(&len.to_be_bytes());
            }
            let _ = decode(&m, i % 2 == 0);
        }
    }
}
