//! Packet capture: `vnet-gateway packet-capture start|stop` and `vpn-connection packet-capture
//! start|stop`, with Azure's `filterData`, written as pcapng.
//!
//! The data plane shows every outer datagram (IKE, ESP-in-UDP, NAT keepalives) and every clear-text
//! inner packet to a [`CaptureTap`]; while a capture runs, [`CaptureManager`] keeps the packets its
//! filter selects in a ring bounded by `MaxFileSize` (the oldest packets go first, so the file holds the
//! most recent traffic before `stop`), and `stop` writes the ring as a pcapng file with two interfaces:
//! `outer` (IKE and ESP as they crossed the internet link, IPv4/IPv6 + UDP headers rebuilt from the
//! socket addresses, linktype RAW) and `inner` (the decrypted packets, with the connection's name in
//! each packet's comment). Wireshark and tshark dissect both.
//!
//! `filterData` fields (Azure's names; all optional):
//! - `TracingFlags`: bit 1 ESP, bit 2 IKE, bit 8 inner packets (Azure's default 11 = all three);
//!   bit 4 (OpenVPN) is accepted and ignored.
//! - `MaxPacketBufferSize`: bytes kept of each packet (snap length; default 65535).
//! - `MaxFileSize`: megabytes the capture may hold (default 100, 1 to 1024).
//! - `Filters[]`: a packet is kept when any filter matches (none: every packet). A filter matches on
//!   the packet's own headers, outer packets by their outer addresses and UDP ports, inner packets by
//!   theirs: `SourceSubnets`, `DestinationSubnets`, `SourcePort`, `DestinationPort`, `Protocol`
//!   (number or list), `TcpFlags` (mask of FIN 1, SYN 2, RST 4, PSH 8, ACK 16, URG 32; a TCP packet
//!   matches when it has any of them; -1 or absent: any), `CaptureSingleDirectionTrafficOnly` (false,
//!   the default, also keeps the reverse direction of the five-tuple). Empty lists match anything.
//!   To keep the IKE/ESP of a connection next to a filtered inner flow, add a second filter with the
//!   peer's public address.
//!
//! Limits, as Azure: one gateway-wide capture at a time, one per connection, five in all.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{Value, json};
use vgw_dataplane::{CaptureSink, CaptureTap, Direction, TunnelId};

/// TracingFlags bit: ESP (and NAT keepalives) on the outer interface.
pub const TRACE_ESP: u32 = 1;
/// TracingFlags bit: IKE on the outer interface.
pub const TRACE_IKE: u32 = 2;
/// TracingFlags bit: decrypted inner packets.
pub const TRACE_INNER: u32 = 8;
const MAX_CAPTURES: usize = 5;

/// Azure's `filterData`, parsed and checked.
#[derive(Clone, Debug)]
pub struct FilterData {
    /// Which kinds of packets to keep ([`TRACE_ESP`], [`TRACE_IKE`], [`TRACE_INNER`]).
    pub tracing_flags: u32,
    /// Bytes kept of each packet.
    pub snap_len: usize,
    /// Bytes the file may hold (the ring's bound).
    pub max_file_bytes: u64,
    /// Kept when any matches; empty keeps everything.
    pub filters: Vec<Filter>,
}

impl Default for FilterData {
    fn default() -> Self {
        Self {
            tracing_flags: TRACE_ESP | TRACE_IKE | TRACE_INNER,
            snap_len: 65535,
            max_file_bytes: 100 << 20,
            filters: Vec::new(),
        }
    }
}

/// One entry of `Filters[]`.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    source_subnets: Vec<IpNet>,
    destination_subnets: Vec<IpNet>,
    source_ports: Vec<u16>,
    destination_ports: Vec<u16>,
    protocols: Vec<u8>,
    tcp_flags: Option<u8>,
    single_direction: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            Self::One(v) => vec![v],
            Self::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct RawFilterData {
    tracing_flags: Option<u32>,
    max_packet_buffer_size: Option<u64>,
    max_file_size: Option<u64>,
    #[serde(default)]
    filters: Vec<RawFilter>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct RawFilter {
    #[serde(default)]
    source_subnets: Vec<String>,
    #[serde(default)]
    destination_subnets: Vec<String>,
    source_port: Option<OneOrMany<u16>>,
    destination_port: Option<OneOrMany<u16>>,
    protocol: Option<OneOrMany<u8>>,
    tcp_flags: Option<i32>,
    #[serde(default)]
    capture_single_direction_traffic_only: bool,
}

fn subnets(list: &[String], field: &str) -> Result<Vec<IpNet>, String> {
    list.iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| {
                    format!("filterData.Filters[].{field}: '{s}' is not a prefix like 10.1.0.0/24")
                })
        })
        .collect()
}

impl FilterData {
    /// Parses `filterData` as the API receives it: null, a JSON object, or (as Azure's examples send it)
    /// a string holding JSON, possibly with single quotes.
    pub fn parse(value: &Value) -> Result<Self, String> {
        let object = match value {
            Value::Null => return Ok(Self::default()),
            Value::String(s) if s.trim().is_empty() => return Ok(Self::default()),
            Value::String(s) => serde_json::from_str::<Value>(s)
                .or_else(|_| serde_json::from_str::<Value>(&s.replace('\'', "\"")))
                .map_err(|e| format!("filterData is not valid JSON: {e}"))?,
            other => other.clone(),
        };
        let raw: RawFilterData = serde_path_to_error::deserialize(object).map_err(|e| {
            let path = e.path().to_string();
            format!("filterData.{path}: {}", e.into_inner())
        })?;
        let mut data = Self::default();
        if let Some(flags) = raw.tracing_flags {
            if flags == 0 || flags & !(TRACE_ESP | TRACE_IKE | 4 | TRACE_INNER) != 0 {
                return Err(format!(
                    "filterData.TracingFlags: {flags} is not a combination of 1 (ESP), 2 (IKE), 4 (OpenVPN) and 8 (inner packets)"
                ));
            }
            data.tracing_flags = flags;
        }
        if let Some(size) = raw.max_packet_buffer_size {
            if !(64..=65535).contains(&size) {
                return Err(format!(
                    "filterData.MaxPacketBufferSize: {size} bytes is outside 64-65535"
                ));
            }
            data.snap_len = size as usize;
        }
        if let Some(mb) = raw.max_file_size {
            if !(1..=1024).contains(&mb) {
                return Err(format!("filterData.MaxFileSize: {mb} MB is outside 1-1024"));
            }
            data.max_file_bytes = mb << 20;
        }
        for f in raw.filters {
            let tcp_flags = match f.tcp_flags {
                None | Some(-1) | Some(0) => None,
                Some(v) if (1..=255).contains(&v) => Some(v as u8),
                Some(v) => {
                    return Err(format!(
                        "filterData.Filters[].TcpFlags: {v} is not a mask of FIN 1, SYN 2, RST 4, PSH 8, ACK 16, URG 32 (or -1 for any)"
                    ));
                }
            };
            data.filters.push(Filter {
                source_subnets: subnets(&f.source_subnets, "SourceSubnets")?,
                destination_subnets: subnets(&f.destination_subnets, "DestinationSubnets")?,
                source_ports: f.source_port.map(OneOrMany::into_vec).unwrap_or_default(),
                destination_ports: f
                    .destination_port
                    .map(OneOrMany::into_vec)
                    .unwrap_or_default(),
                protocols: f.protocol.map(OneOrMany::into_vec).unwrap_or_default(),
                tcp_flags,
                single_direction: f.capture_single_direction_traffic_only,
            });
        }
        Ok(data)
    }

    fn keeps(&self, headers: &Headers) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| f.matches(headers))
    }
}

/// The parts of an IP packet a filter looks at.
#[derive(Debug, PartialEq, Eq)]
struct Headers {
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    ports: Option<(u16, u16)>,
    tcp_flags: Option<u8>,
}

const TCP: u8 = 6;
const UDP: u8 = 17;

/// Reads the addresses, protocol, ports and TCP flags of an IPv4 or IPv6 packet (no extension-header
/// walk: a packet with one simply has no ports). Truncated packets yield `None`.
fn headers(packet: &[u8]) -> Option<Headers> {
    let version = packet.first()? >> 4;
    let (src, dst, protocol, l4) = match version {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            if ihl < 20 || packet.len() < ihl {
                return None;
            }
            let octets = |at: usize| -> Option<[u8; 4]> { packet.get(at..at + 4)?.try_into().ok() };
            let fragment_offset = u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff;
            let l4 = if fragment_offset == 0 {
                packet.get(ihl..)
            } else {
                None
            };
            (
                IpAddr::from(Ipv4Addr::from(octets(12)?)),
                IpAddr::from(Ipv4Addr::from(octets(16)?)),
                packet[9],
                l4,
            )
        }
        6 => {
            if packet.len() < 40 {
                return None;
            }
            let octets =
                |at: usize| -> Option<[u8; 16]> { packet.get(at..at + 16)?.try_into().ok() };
            (
                IpAddr::from(Ipv6Addr::from(octets(8)?)),
                IpAddr::from(Ipv6Addr::from(octets(24)?)),
                packet[6],
                packet.get(40..),
            )
        }
        _ => return None,
    };
    let ports = match (protocol, l4) {
        (TCP | UDP, Some(l4)) if l4.len() >= 4 => Some((
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        )),
        _ => None,
    };
    let tcp_flags = match (protocol, l4) {
        (TCP, Some(l4)) if l4.len() >= 14 => Some(l4[13] & 0x3f),
        _ => None,
    };
    Some(Headers {
        src,
        dst,
        protocol,
        ports,
        tcp_flags,
    })
}

impl Filter {
    fn matches(&self, h: &Headers) -> bool {
        if !self.protocols.is_empty() && !self.protocols.contains(&h.protocol) {
            return false;
        }
        if let (Some(mask), Some(flags)) = (self.tcp_flags, h.tcp_flags)
            && flags & mask == 0
        {
            return false;
        }
        let (sport, dport) = match h.ports {
            Some((s, d)) => (Some(s), Some(d)),
            None => (None, None),
        };
        let one_way = |src: IpAddr, dst: IpAddr, sp: Option<u16>, dp: Option<u16>| {
            in_nets(&self.source_subnets, src)
                && in_nets(&self.destination_subnets, dst)
                && in_ports(&self.source_ports, sp)
                && in_ports(&self.destination_ports, dp)
        };
        one_way(h.src, h.dst, sport, dport)
            || (!self.single_direction && one_way(h.dst, h.src, dport, sport))
    }
}

fn in_nets(nets: &[IpNet], addr: IpAddr) -> bool {
    nets.is_empty() || nets.iter().any(|n| n.contains(&addr))
}

fn in_ports(ports: &[u16], port: Option<u16>) -> bool {
    ports.is_empty() || port.is_some_and(|p| ports.contains(&p))
}

/// What a capture covers.
#[derive(Clone, Debug)]
pub enum Scope {
    /// Every tunnel of the gateway.
    Gateway(String),
    /// One connection: its tunnel's inner packets and the outer packets to and from its peer.
    Connection {
        /// Connection name.
        name: String,
        /// Its tunnel in the data plane.
        tunnel: TunnelId,
        /// The peer's public address, when known.
        remote: Option<IpAddr>,
    },
}

impl Scope {
    fn key(&self) -> String {
        match self {
            Self::Gateway(name) => format!("gateway:{name}"),
            Self::Connection { name, .. } => format!("connection:{name}"),
        }
    }

    fn file_stem(&self) -> String {
        match self {
            Self::Gateway(name) => format!("gateway-{name}"),
            Self::Connection { name, .. } => format!("connection-{name}"),
        }
    }
}

/// Our addresses, for the outer packets' rebuilt IP headers (the sockets are bound to the wildcard).
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalAddrs {
    /// The gateway's IPv4 public address.
    pub v4: Option<Ipv4Addr>,
    /// The gateway's IPv6 public address.
    pub v6: Option<Ipv6Addr>,
}

struct Session {
    scope: Scope,
    filter: FilterData,
    local: LocalAddrs,
    names: HashMap<TunnelId, String>,
    started: SystemTime,
    /// Encoded Enhanced Packet Blocks, oldest first.
    ring: VecDeque<Vec<u8>>,
    ring_bytes: u64,
    seen: u64,
    kept: u64,
    evicted: u64,
}

/// pcapng interface ids.
const OUTER: u32 = 0;
const INNER: u32 = 1;
/// LINKTYPE_RAW: the packet starts with its IPv4 or IPv6 header.
const LINKTYPE_RAW: u16 = 101;
/// The file's fixed part: SHB and two IDBs (an upper bound, used to keep the file under the limit).
const HEADER_BYTES: u64 = 256;

impl Session {
    fn record(
        &mut self,
        interface: u32,
        direction: Direction,
        packet: &[u8],
        comment: Option<&str>,
    ) {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let block = enhanced_packet_block(
            interface,
            ts,
            &packet[..packet.len().min(self.filter.snap_len)],
            packet.len(),
            direction,
            comment,
        );
        self.ring_bytes += block.len() as u64;
        self.ring.push_back(block);
        self.kept += 1;
        // MaxFileSize as a ring: the oldest packets make room for the newest.
        while self.ring_bytes + HEADER_BYTES > self.filter.max_file_bytes {
            let Some(old) = self.ring.pop_front() else {
                break;
            };
            self.ring_bytes -= old.len() as u64;
            self.evicted += 1;
        }
    }

    fn outer(&mut self, direction: Direction, remote: SocketAddr, local_port: u16, payload: &[u8]) {
        if let Scope::Connection {
            remote: Some(peer), ..
        } = &self.scope
            && *peer != remote.ip()
        {
            return;
        }
        let is_ike = local_port != 4500 || (payload.len() >= 4 && payload[..4] == [0, 0, 0, 0]);
        let wanted = if is_ike { TRACE_IKE } else { TRACE_ESP };
        if self.filter.tracing_flags & wanted == 0 {
            return;
        }
        self.seen += 1;
        let local = match remote.ip() {
            IpAddr::V4(_) => self.local.v4.map(IpAddr::V4),
            IpAddr::V6(_) => self.local.v6.map(IpAddr::V6),
        }
        .unwrap_or(match remote.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        });
        let (src, dst) = match direction {
            Direction::Outbound => (SocketAddr::new(local, local_port), remote),
            Direction::Inbound => (remote, SocketAddr::new(local, local_port)),
        };
        let packet = udp_packet(src, dst, payload);
        if let Some(h) = headers(&packet)
            && self.filter.keeps(&h)
        {
            self.record(OUTER, direction, &packet, None);
        }
    }

    fn inner(&mut self, tunnel: TunnelId, direction: Direction, packet: &[u8]) {
        if self.filter.tracing_flags & TRACE_INNER == 0 {
            return;
        }
        if let Scope::Connection { tunnel: t, .. } = &self.scope
            && *t != tunnel
        {
            return;
        }
        self.seen += 1;
        if headers(packet).is_some_and(|h| self.filter.keeps(&h)) {
            let name = self.names.get(&tunnel).cloned();
            self.record(INNER, direction, packet, name.as_deref());
        }
    }

    /// The whole pcapng file.
    fn file(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity((self.ring_bytes + HEADER_BYTES) as usize);
        out.extend_from_slice(&section_header_block());
        let snap = self.filter.snap_len as u32;
        out.extend_from_slice(&interface_block(
            "outer",
            "IKE and ESP-in-UDP on the internet link",
            snap,
        ));
        out.extend_from_slice(&interface_block(
            "inner",
            "decrypted packets inside the tunnels",
            snap,
        ));
        for block in &self.ring {
            out.extend_from_slice(block);
        }
        out
    }
}

// ---- pcapng encoding (draft-ietf-opsawg-pcapng) ------------------------------------------------------

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
    pad4(out);
}

/// Wraps a block body with its type and both length fields.
fn block(kind: u32, body: &[u8]) -> Vec<u8> {
    let total = (12 + body.len()) as u32;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&total.to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&total.to_le_bytes());
    out
}

fn section_header_block() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
    body.extend_from_slice(&1u16.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&u64::MAX.to_le_bytes()); // section length unknown
    option(
        &mut body,
        4,
        format!("vgw {}", env!("CARGO_PKG_VERSION")).as_bytes(),
    );
    option(&mut body, 0, &[]);
    block(0x0A0D_0D0A, &body)
}

fn interface_block(name: &str, description: &str, snap_len: u32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&snap_len.to_le_bytes());
    option(&mut body, 2, name.as_bytes());
    option(&mut body, 3, description.as_bytes());
    option(&mut body, 0, &[]);
    block(1, &body)
}

fn enhanced_packet_block(
    interface: u32,
    micros: u64,
    data: &[u8],
    original_len: usize,
    direction: Direction,
    comment: Option<&str>,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(32 + data.len() + 32);
    body.extend_from_slice(&interface.to_le_bytes());
    body.extend_from_slice(&((micros >> 32) as u32).to_le_bytes());
    body.extend_from_slice(&(micros as u32).to_le_bytes());
    body.extend_from_slice(&(data.len() as u32).to_le_bytes());
    body.extend_from_slice(&(original_len as u32).to_le_bytes());
    body.extend_from_slice(data);
    pad4(&mut body);
    // epb_flags: bits 0-1 are the direction (1 inbound, 2 outbound).
    let flags: u32 = match direction {
        Direction::Inbound => 1,
        Direction::Outbound => 2,
    };
    option(&mut body, 2, &flags.to_le_bytes());
    if let Some(c) = comment {
        option(&mut body, 1, c.as_bytes());
    }
    option(&mut body, 0, &[]);
    block(6, &body)
}

/// Rebuilds an IPv4 or IPv6 + UDP packet around `payload` (UDP checksum 0 for IPv4, computed for IPv6
/// where it is mandatory).
fn udp_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let udp_len = (8 + payload.len()).min(65535) as u16;
    let mut udp = Vec::with_capacity(usize::from(udp_len));
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&payload[..usize::from(udp_len) - 8]);
    match (src.ip(), dst.ip()) {
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut sum = 0u32;
            for chunk in s.octets().chunks(2).chain(d.octets().chunks(2)) {
                sum += u32::from(u16::from_be_bytes([chunk[0], chunk[1]]));
            }
            sum += u32::from(udp_len) + u32::from(UDP);
            let mut csum = checksum(&udp, sum);
            if csum == 0 {
                csum = 0xffff;
            }
            udp[6..8].copy_from_slice(&csum.to_be_bytes());
            let mut out = Vec::with_capacity(40 + udp.len());
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&udp_len.to_be_bytes());
            out.extend_from_slice(&[UDP, 64]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            out.extend_from_slice(&udp);
            out
        }
        (s, d) => {
            let s = match s {
                IpAddr::V4(a) => a,
                IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
            };
            let d = match d {
                IpAddr::V4(a) => a,
                IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
            };
            let total = (20 + udp.len()).min(65535) as u16;
            let mut out = Vec::with_capacity(usize::from(total));
            out.extend_from_slice(&[0x45, 0]);
            out.extend_from_slice(&total.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0x40, 0, 64, UDP, 0, 0]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            let csum = checksum(&out, 0);
            out[10..12].copy_from_slice(&csum.to_be_bytes());
            out.extend_from_slice(&udp[..usize::from(total) - 20]);
            out
        }
    }
}

/// RFC 1071 Internet checksum of `data`, starting from `sum`.
fn checksum(data: &[u8], mut sum: u32) -> u16 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

// ---- the manager ---------------------------------------------------------------------------------

/// Sessions shared between the tap's sink and the manager.
type Sessions = Arc<Mutex<Vec<Session>>>;

/// The tap's sink: hands each packet to every running session.
struct Fanout(Sessions);

impl CaptureSink for Fanout {
    fn outer(&mut self, direction: Direction, remote: SocketAddr, local_port: u16, payload: &[u8]) {
        for s in self.0.lock().unwrap_or_else(|p| p.into_inner()).iter_mut() {
            s.outer(direction, remote, local_port, payload);
        }
    }

    fn inner(&mut self, tunnel: TunnelId, direction: Direction, packet: &[u8]) {
        for s in self.0.lock().unwrap_or_else(|p| p.into_inner()).iter_mut() {
            s.inner(tunnel, direction, packet);
        }
    }
}

/// A finished capture.
#[derive(Debug)]
pub struct CaptureResult {
    /// Where the pcapng file was written (0600).
    pub file: PathBuf,
    /// The response body: file, counts and times.
    pub summary: Value,
}

/// Starts and stops captures; owns the captures directory.
pub struct CaptureManager {
    dir: PathBuf,
    sessions: Sessions,
}

impl CaptureManager {
    /// A manager writing into `dir` (created 0700 on first use).
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            sessions: Arc::default(),
        }
    }

    /// The captures directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts a capture on `tap`. Errors say what is wrong (already running, too many).
    pub fn start(
        &self,
        tap: &CaptureTap,
        scope: Scope,
        filter: FilterData,
        local: LocalAddrs,
        names: HashMap<TunnelId, String>,
    ) -> Result<Value, String> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let key = scope.key();
        if sessions.iter().any(|s| s.scope.key() == key) {
            return Err(format!(
                "a packet capture on {} is already running; stop it first",
                key.replace(':', " ")
            ));
        }
        if matches!(scope, Scope::Gateway(_))
            && sessions
                .iter()
                .any(|s| matches!(s.scope, Scope::Gateway(_)))
        {
            return Err("a gateway-wide packet capture is already running; stop it first".into());
        }
        if sessions.len() >= MAX_CAPTURES {
            return Err(format!(
                "{MAX_CAPTURES} packet captures are already running; stop one first"
            ));
        }
        let started = SystemTime::now();
        let summary = json!({
            "status": "InProgress",
            "scope": key,
            "startTime": crate::ops::diaglog::rfc3339(millis(started)),
            "tracingFlags": filter.tracing_flags,
            "maxPacketBufferSize": filter.snap_len,
            "maxFileSizeBytes": filter.max_file_bytes,
            "filters": filter.filters.len(),
        });
        sessions.push(Session {
            scope,
            filter,
            local,
            names,
            started,
            ring: VecDeque::new(),
            ring_bytes: 0,
            seen: 0,
            kept: 0,
            evicted: 0,
        });
        if !tap.is_active() {
            tap.start(Box::new(Fanout(self.sessions.clone())));
        }
        Ok(summary)
    }

    /// Stops the capture of `scope` and writes its file.
    pub fn stop(&self, tap: &CaptureTap, scope: &Scope) -> Result<CaptureResult, String> {
        let session = {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            let key = scope.key();
            let Some(at) = sessions.iter().position(|s| s.scope.key() == key) else {
                return Err(format!(
                    "no packet capture is running on {}; start one with 'packet-capture start'",
                    key.replace(':', " ")
                ));
            };
            let session = sessions.remove(at);
            if sessions.is_empty() {
                drop(sessions);
                tap.stop();
            }
            session
        };
        let stopped = SystemTime::now();
        let stamp = crate::ops::diaglog::rfc3339(millis(stopped))
            .replace([':', '-'], "")
            .replace('.', "");
        let file = self
            .dir
            .join(format!("{}-{stamp}.pcapng", session.scope.file_stem()));
        let bytes = session.file();
        write_private(&self.dir, &file, &bytes)
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        let summary = json!({
            "status": "Succeeded",
            "scope": session.scope.key(),
            "file": file.display().to_string(),
            "fileName": file.file_name().map(|n| n.to_string_lossy().into_owned()),
            "fileBytes": bytes.len(),
            "startTime": crate::ops::diaglog::rfc3339(millis(session.started)),
            "endTime": crate::ops::diaglog::rfc3339(millis(stopped)),
            "packetsSeen": session.seen,
            "packetsCaptured": session.ring.len(),
            "packetsDroppedForMaxFileSize": session.evicted,
        });
        Ok(CaptureResult { file, summary })
    }

    /// The bytes of a finished capture file by its name (no paths: only files in the directory).
    pub fn read(&self, file_name: &str) -> Option<Vec<u8>> {
        if file_name.contains('/') || file_name.starts_with('.') || !file_name.ends_with(".pcapng")
        {
            return None;
        }
        std::fs::read(self.dir.join(file_name)).ok()
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn write_private(dir: &Path, file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn icmp(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]);
        p
    }

    fn tcp(flags: u8) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, TCP, 0, 0, 10, 1, 0, 10, 10, 2, 0, 10,
        ];
        p.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0, 0]);
        p.extend_from_slice(&[0, 0, 0, 0]);
        p
    }

    #[test]
    fn parses_azure_examples_including_single_quoted_strings() {
        let s = "{'TracingFlags': 11,'MaxPacketBufferSize': 120,'MaxFileSize': 200,'Filters': [{'SourceSubnets': ['20.1.1.0/24'],'DestinationSubnets': ['10.1.1.0/24'],'SourcePort': [500],'DestinationPort': [4500],'Protocol': 6,'TcpFlags': 16,'CaptureSingleDirectionTrafficOnly': true}]}";
        let f = FilterData::parse(&Value::String(s.into())).unwrap();
        assert_eq!(f.tracing_flags, 11);
        assert_eq!(f.snap_len, 120);
        assert_eq!(f.max_file_bytes, 200 << 20);
        assert_eq!(f.filters[0].protocols, vec![6]);
        assert!(f.filters[0].single_direction);
        let f = FilterData::parse(&json!({"Filters": [{"Protocol": [6, 17], "TcpFlags": -1}]}))
            .unwrap();
        assert_eq!(f.filters[0].protocols, vec![6, 17]);
        assert_eq!(f.filters[0].tcp_flags, None);
    }

    #[test]
    fn bad_filter_data_names_the_field() {
        for (bad, needle) in [
            (json!({"TracingFlags": 0}), "TracingFlags"),
            (json!({"MaxFileSize": 0}), "MaxFileSize"),
            (json!({"MaxPacketBufferSize": 10}), "MaxPacketBufferSize"),
            (
                json!({"Filters": [{"SourceSubnets": ["nope"]}]}),
                "SourceSubnets",
            ),
            (json!({"Filters": [{"TcpFlags": 999}]}), "TcpFlags"),
            (json!({"Bogus": 1}), "Bogus"),
            (Value::String("{not json".into()), "not valid JSON"),
        ] {
            let err = FilterData::parse(&bad).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn filters_match_subnets_both_ways_protocols_and_tcp_flags() {
        let f = FilterData::parse(&json!({"Filters": [{"SourceSubnets": ["10.1.0.0/24"], "DestinationSubnets": ["10.2.0.0/24"]}]})).unwrap();
        assert!(f.keeps(&headers(&icmp([10, 1, 0, 5], [10, 2, 0, 9])).unwrap()));
        assert!(f.keeps(&headers(&icmp([10, 2, 0, 9], [10, 1, 0, 5])).unwrap()));
        assert!(!f.keeps(&headers(&icmp([10, 1, 0, 5], [10, 3, 0, 9])).unwrap()));
        let one_way = FilterData::parse(&json!({"Filters": [{"SourceSubnets": ["10.1.0.0/24"], "CaptureSingleDirectionTrafficOnly": true}]})).unwrap();
        assert!(!one_way.keeps(&headers(&icmp([10, 2, 0, 9], [10, 1, 0, 5])).unwrap()));
        let syn = FilterData::parse(
            &json!({"Filters": [{"Protocol": 6, "TcpFlags": 2, "DestinationPort": 80}]}),
        )
        .unwrap();
        assert!(syn.keeps(&headers(&tcp(0x02)).unwrap()));
        assert!(!syn.keeps(&headers(&tcp(0x10)).unwrap()));
        assert!(!syn.keeps(&headers(&icmp([10, 1, 0, 5], [10, 2, 0, 9])).unwrap()));
    }

    #[test]
    fn header_parser_rejects_truncated_packets() {
        let p = tcp(0x02);
        for len in 0..p.len() {
            let _ = headers(&p[..len]);
        }
        assert!(headers(&[0x45, 0, 0]).is_none());
        assert!(headers(&[0x60; 39]).is_none());
    }

    #[test]
    fn rebuilt_udp_packets_have_valid_ipv4_checksums() {
        let p = udp_packet(
            "198.18.0.2:4500".parse().unwrap(),
            "198.18.0.1:4500".parse().unwrap(),
            &[1, 2, 3, 4, 5],
        );
        assert_eq!(p.len(), 20 + 8 + 5);
        assert_eq!(checksum(&p[..20], 0), 0);
        let h = headers(&p).unwrap();
        assert_eq!(h.ports, Some((4500, 4500)));
        let v6 = udp_packet(
            "[2001:db8::1]:500".parse().unwrap(),
            "[2001:db8::2]:500".parse().unwrap(),
            &[9; 11],
        );
        assert_eq!(v6.len(), 40 + 8 + 11);
    }

    #[test]
    fn ring_keeps_the_newest_packets_under_max_file_size() {
        let dir = tempfile::tempdir().unwrap();
        let manager = CaptureManager::new(dir.path().join("captures"));
        let tap = CaptureTap::default();
        let filter = FilterData::parse(&json!({"MaxFileSize": 1})).unwrap();
        manager
            .start(
                &tap,
                Scope::Gateway("gw".into()),
                filter,
                LocalAddrs::default(),
                HashMap::from([(1, "c1".to_string())]),
            )
            .unwrap();
        assert!(tap.is_active());
        let mut packet = icmp([10, 1, 0, 5], [10, 2, 0, 9]);
        packet.resize(1400, 0);
        for _ in 0..2000 {
            tap.inner(1, Direction::Outbound, &packet);
        }
        let result = manager.stop(&tap, &Scope::Gateway("gw".into())).unwrap();
        assert!(!tap.is_active());
        let len = std::fs::metadata(&result.file).unwrap().len();
        assert!(len <= 1 << 20, "{len}");
        assert!(len > 900_000, "{len}");
        assert!(
            result.summary["packetsDroppedForMaxFileSize"]
                .as_u64()
                .unwrap()
                > 0
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&result.file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let name = result.summary["fileName"].as_str().unwrap();
        let bytes = manager.read(name).unwrap();
        assert_eq!(&bytes[..4], &[0x0A, 0x0D, 0x0D, 0x0A]);
        assert!(manager.read("../etc/passwd").is_none());
        assert!(manager.stop(&tap, &Scope::Gateway("gw".into())).is_err());
    }

    #[test]
    fn connection_scope_keeps_only_its_tunnel_and_peer() {
        let dir = tempfile::tempdir().unwrap();
        let manager = CaptureManager::new(dir.path().to_path_buf());
        let tap = CaptureTap::default();
        let scope = Scope::Connection {
            name: "c1".into(),
            tunnel: 1,
            remote: Some("198.18.0.1".parse().unwrap()),
        };
        manager
            .start(
                &tap,
                scope.clone(),
                FilterData::default(),
                LocalAddrs::default(),
                HashMap::new(),
            )
            .unwrap();
        assert!(
            manager
                .start(
                    &tap,
                    scope.clone(),
                    FilterData::default(),
                    LocalAddrs::default(),
                    HashMap::new()
                )
                .is_err()
        );
        let packet = icmp([10, 1, 0, 5], [10, 2, 0, 9]);
        tap.inner(1, Direction::Inbound, &packet);
        tap.inner(2, Direction::Inbound, &packet);
        tap.outer(
            Direction::Inbound,
            "198.18.0.1:4500".parse().unwrap(),
            4500,
            &[1, 2, 3, 4, 0, 0, 0, 1],
        );
        tap.outer(
            Direction::Inbound,
            "198.18.0.9:4500".parse().unwrap(),
            4500,
            &[1, 2, 3, 4, 0, 0, 0, 1],
        );
        let result = manager.stop(&tap, &scope).unwrap();
        assert_eq!(result.summary["packetsCaptured"], 2);
    }
}
