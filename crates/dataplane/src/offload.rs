//! TUN offloads: the `virtio_net_hdr` that prefixes every packet on a TUN opened with
//! `IFF_VNET_HDR`, Internet checksums (RFC 1071), the GSO split of TCP/UDP super-packets the
//! kernel hands us, and the GRO-style coalescing of TCP segments we hand back.
//!
//! Why: with `TUNSETOFFLOAD` (TSO4/TSO6/USO, checksum) the kernel stops segmenting forwarded
//! TCP before the TUN and gives us up to 64 KB per `read`, and accepts the same from us on
//! `write`. One system call then moves ~45 segments instead of one; the per-segment work left is
//! a copy, a checksum and the AEAD. The split is ours (not the TUN library's) so each segment is
//! written straight into a slot with ESP headroom, ready to be sealed in place.
//!
//! Everything here treats its input as untrusted: a bogus header or truncated packet yields
//! `None` (the caller counts a drop), never a panic or an out-of-bounds access.

/// Length of the legacy `struct virtio_net_hdr` (no `num_buffers`), the TUN default.
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the L4 checksum is to be completed from `csum_start`.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_L4` (USO).
pub const GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN` flag bit of `gso_type`.
pub const GSO_ECN: u8 = 0x80;

/// Most TCP segments one coalesced super-packet carries.
pub const MAX_COALESCE: u32 = 64;

/// The `virtio_net_hdr` (virtio spec §5.1.6), in host byte order as the TUN uses it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM` or 0.
    pub flags: u8,
    /// One of the `GSO_*` constants, possibly with [`GSO_ECN`].
    pub gso_type: u8,
    /// Length of the headers (L3 + L4) of a GSO packet.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where the L4 header starts (checksum coverage starts here).
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Parses the first [`VNET_HDR_LEN`] bytes of `b`.
    pub fn parse(b: &[u8]) -> Option<Self> {
        let b = b.get(..VNET_HDR_LEN)?;
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    /// The header's wire form.
    pub fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

/// Adds `data` to a one's-complement running sum (RFC 1071). Pieces summed one after the other
/// must all have even length except the last.
///
/// The piece is summed as native-endian 32-bit words in four independent accumulators (no carry
/// chain, so the CPU overlaps the adds), folded, and byte-swapped into network order (RFC 1071
/// §2(B): the sum is byte-order independent).
#[inline]
pub fn csum_add(acc: u64, data: &[u8]) -> u64 {
    let word = |c: &[u8]| u64::from(u32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
    let (mut a0, mut a1, mut a2, mut a3) = (0u64, 0u64, 0u64, 0u64);
    let mut chunks = data.chunks_exact(16);
    for c in &mut chunks {
        a0 += word(&c[0..4]);
        a1 += word(&c[4..8]);
        a2 += word(&c[8..12]);
        a3 += word(&c[12..16]);
    }
    let mut sum = a0 + a1 + a2 + a3;
    let mut words = chunks.remainder().chunks_exact(4);
    for c in &mut words {
        sum += word(c);
    }
    let tail = words.remainder();
    let mut w = [0u8; 4];
    w[..tail.len()].copy_from_slice(tail);
    sum += word(&w);
    let folded = csum_fold(sum);
    acc + u64::from(if cfg!(target_endian = "little") {
        folded.swap_bytes()
    } else {
        folded
    })
}

/// Folds a running sum to 16 bits (not complemented).
#[inline]
pub fn csum_fold(acc: u64) -> u16 {
    let mut a = (acc & 0xffff_ffff) + (acc >> 32);
    a = (a & 0xffff_ffff) + (a >> 32);
    a = (a & 0xffff) + (a >> 16);
    a = (a & 0xffff) + (a >> 16);
    a as u16
}

/// The pseudo-header sum of TCP/UDP (RFC 9293 §3.1, RFC 8200 §8.1) for `len` L4 bytes.
#[inline]
pub fn pseudo_sum(src: &[u8], dst: &[u8], proto: u8, len: usize) -> u64 {
    csum_add(csum_add(0, src), dst) + u64::from(proto) + len as u64
}

/// Where the addresses of an IPv4 or IPv6 header lie.
fn addr_ranges(pkt: &[u8]) -> Option<(std::ops::Range<usize>, std::ops::Range<usize>)> {
    match pkt.first()? >> 4 {
        4 => Some((12..16, 16..20)),
        6 => Some((8..24, 24..40)),
        _ => None,
    }
}

/// Recomputes the IPv4 header checksum of `ip` (the IHL bytes of the header).
fn ipv4_header_checksum(ip: &mut [u8], ihl: usize) {
    ip[10] = 0;
    ip[11] = 0;
    let sum = !csum_fold(csum_add(0, &ip[..ihl]));
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// Splits one packet read from the TUN (after its `virtio_net_hdr`) into wire-ready IP packets.
///
/// A GSO packet (TCPv4/TCPv6/UDP_L4) becomes `gso_size`-payload segments with their own IP
/// lengths and IDs, TCP sequence numbers, flags (FIN/PSH only on the last, CWR only on the first)
/// and freshly computed checksums; a plain packet whose checksum the kernel left partial
/// (`NEEDS_CSUM`) gets it completed. The split keeps its position, so a caller that runs out of
/// room can continue with the same `Segments` later.
#[derive(Debug)]
pub struct Segments<'a> {
    pkt: &'a [u8],
    hdr: VnetHdr,
    /// L3 + L4 header length of each segment (GSO only).
    hdr_len: usize,
    /// Offset of the next payload byte to emit.
    next: usize,
    index: u32,
    done: bool,
}

impl<'a> Segments<'a> {
    /// Validates `hdr` against `pkt`; `None` if they are inconsistent (a drop, not a panic).
    pub fn new(hdr: VnetHdr, pkt: &'a [u8]) -> Option<Self> {
        let gso = hdr.gso_type & !GSO_ECN;
        let version = pkt.first()? >> 4;
        let l4 = usize::from(hdr.csum_start);
        let hdr_len = match gso {
            GSO_NONE => {
                if hdr.flags & F_NEEDS_CSUM != 0 {
                    let field = l4.checked_add(usize::from(hdr.csum_offset))?;
                    if field + 2 > pkt.len() {
                        return None;
                    }
                }
                0
            }
            GSO_TCPV4 | GSO_TCPV6 | GSO_UDP_L4 => {
                match (gso, version) {
                    (GSO_TCPV4, 4) | (GSO_TCPV6, 6) | (GSO_UDP_L4, 4 | 6) => {}
                    _ => return None,
                }
                if hdr.gso_size == 0 {
                    return None;
                }
                if version == 4 {
                    let ihl = usize::from(pkt[0] & 0x0f) * 4;
                    if ihl < 20 || ihl != l4 {
                        return None;
                    }
                } else if l4 < 40 {
                    return None;
                }
                // The kernel's hdr_len is not trusted (on forwarding it can cover the whole first
                // segment): the L4 header's own length is.
                let l4_len = if gso == GSO_UDP_L4 {
                    8
                } else {
                    let off = usize::from(*pkt.get(l4 + 12)? >> 4) * 4;
                    if !(20..=60).contains(&off) {
                        return None;
                    }
                    off
                };
                let hdr_len = l4 + l4_len;
                if hdr_len > pkt.len() {
                    return None;
                }
                hdr_len
            }
            _ => return None,
        };
        Some(Self {
            pkt,
            hdr,
            hdr_len,
            next: hdr_len,
            index: 0,
            done: false,
        })
    }

    /// Whether the packet is a GSO super-packet.
    pub fn is_gso(&self) -> bool {
        self.hdr.gso_type & !GSO_ECN != GSO_NONE
    }

    /// Writes the next segment to the start of `out` and returns its length; `None` when all
    /// are out, `Some(None)` if `out` is too small (the segment is skipped: a drop).
    pub fn next_into(&mut self, out: &mut [u8]) -> Option<Option<usize>> {
        if self.done {
            return None;
        }
        if !self.is_gso() {
            self.done = true;
            return Some(self.whole(out));
        }
        let payload = self.pkt.len() - self.hdr_len;
        let gso = usize::from(self.hdr.gso_size);
        let start = self.next;
        let end = start.saturating_add(gso).min(self.pkt.len());
        let last = end == self.pkt.len();
        if last {
            self.done = true;
        }
        self.next = end;
        let i = self.index;
        self.index += 1;
        if payload == 0 {
            // A GSO header on a packet without payload: emit the headers alone, once.
            self.done = true;
        }
        Some(self.segment(out, start..end, i, last))
    }

    fn whole(&self, out: &mut [u8]) -> Option<usize> {
        let n = self.pkt.len();
        let out = out.get_mut(..n)?;
        out.copy_from_slice(self.pkt);
        if self.hdr.flags & F_NEEDS_CSUM != 0 {
            let start = usize::from(self.hdr.csum_start);
            let field = start + usize::from(self.hdr.csum_offset);
            // The field holds the pseudo-header sum; the rest of the L4 bytes complete it.
            let mut sum = !csum_fold(csum_add(0, &out[start..]));
            if sum == 0 {
                sum = 0xffff;
            }
            out[field..field + 2].copy_from_slice(&sum.to_be_bytes());
        }
        Some(n)
    }

    fn segment(
        &self,
        out: &mut [u8],
        payload: std::ops::Range<usize>,
        i: u32,
        last: bool,
    ) -> Option<usize> {
        let h = self.hdr_len;
        let len = h + payload.len();
        let out = out.get_mut(..len)?;
        out[..h].copy_from_slice(&self.pkt[..h]);
        out[h..].copy_from_slice(&self.pkt[payload.clone()]);
        let l4 = usize::from(self.hdr.csum_start);
        let l4_len = len - l4;
        if out[0] >> 4 == 4 {
            let total = u16::try_from(len).ok()?;
            out[2..4].copy_from_slice(&total.to_be_bytes());
            let id = u16::from_be_bytes([out[4], out[5]]).wrapping_add(i as u16);
            out[4..6].copy_from_slice(&id.to_be_bytes());
            ipv4_header_checksum(out, l4);
        } else {
            let plen = u16::try_from(len - 40).ok()?;
            out[4..6].copy_from_slice(&plen.to_be_bytes());
        }
        let gso = self.hdr.gso_type & !GSO_ECN;
        let (proto, field) = if gso == GSO_UDP_L4 {
            let ulen = u16::try_from(l4_len).ok()?;
            out[l4 + 4..l4 + 6].copy_from_slice(&ulen.to_be_bytes());
            (17u8, l4 + 6)
        } else {
            let offset = (payload.start - self.hdr_len) as u32;
            let seq = u32::from_be_bytes([out[l4 + 4], out[l4 + 5], out[l4 + 6], out[l4 + 7]])
                .wrapping_add(offset);
            out[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
            if !last {
                out[l4 + 13] &= !(0x01 | 0x08); // FIN, PSH only on the last segment
            }
            if i > 0 {
                out[l4 + 13] &= !0x80; // CWR only on the first
            }
            (6u8, l4 + 16)
        };
        out[field] = 0;
        out[field + 1] = 0;
        let (s, d) = addr_ranges(out)?;
        let acc = pseudo_sum(&out[s], &out[d], proto, l4_len);
        let mut sum = !csum_fold(csum_add(acc, &out[l4..]));
        if proto == 17 && sum == 0 {
            sum = 0xffff;
        }
        out[field..field + 2].copy_from_slice(&sum.to_be_bytes());
        Some(len)
    }
}

/// The IP length an inner packet claims (IPv4 total length, IPv6 40 + payload length), or
/// `None` if it is not IP or claims more than `pkt` holds. Bytes past it are ESP TFC padding.
pub fn ip_len(pkt: &[u8]) -> Option<usize> {
    let n = match pkt.first()? >> 4 {
        4 if pkt.len() >= 20 => usize::from(u16::from_be_bytes([pkt[2], pkt[3]])),
        6 if pkt.len() >= 40 => 40 + usize::from(u16::from_be_bytes([pkt[4], pkt[5]])),
        _ => return None,
    };
    (n <= pkt.len()).then_some(n)
}

/// What the coalescer learned about one TCP segment.
#[derive(Clone, Copy, Debug)]
struct TcpSeg {
    v6: bool,
    /// IP header length (IPv4 without options: 20; IPv6 without extension headers: 40).
    iph: usize,
    /// IP + TCP header length.
    hdr: usize,
    payload: usize,
    seq: u32,
    ack: u32,
    flags: u8,
}

/// Parses a TCP segment that may be coalesced: IPv4 without options or fragmentation, or IPv6
/// without extension headers; only ACK/PSH set; a payload. The packet must be exactly its IP length.
fn coalescable(pkt: &[u8]) -> Option<TcpSeg> {
    let (v6, iph) = match pkt.first()? >> 4 {
        4 => {
            if pkt[0] != 0x45 || pkt.len() < 40 || pkt[9] != 6 {
                return None;
            }
            // MF or a fragment offset: not a whole segment.
            if u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff != 0 {
                return None;
            }
            (false, 20)
        }
        6 => {
            if pkt.len() < 60 || pkt[6] != 6 {
                return None;
            }
            (true, 40)
        }
        _ => return None,
    };
    let off = usize::from(pkt[iph + 12] >> 4) * 4;
    let flags = pkt[iph + 13];
    // Only ACK (0x10) and PSH (0x08): SYN, FIN, RST, URG, ECE, CWR are delivered alone.
    if !(20..=60).contains(&off) || flags & !0x18 != 0 || flags & 0x10 == 0 {
        return None;
    }
    let hdr = iph + off;
    if pkt.len() <= hdr {
        return None;
    }
    let at = |i: usize| u32::from_be_bytes([pkt[i], pkt[i + 1], pkt[i + 2], pkt[i + 3]]);
    Some(TcpSeg {
        v6,
        iph,
        hdr,
        payload: pkt.len() - hdr,
        seq: at(iph + 4),
        ack: at(iph + 8),
        flags,
    })
}

/// One write to the TUN: a single packet, or a head segment followed by the payloads of
/// `count - 1` more segments of the same TCP flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item {
    /// Index of the first packet.
    pub head: u32,
    /// Index of the last packet (members are linked from `head`, see [`Coalescer::members`]).
    pub last: u32,
    /// Packets in the item.
    pub count: u32,
    /// The caller's tag of every member (a tunnel).
    pub tag: u32,
    /// Sum of the members' packet lengths (inner bytes, for the counters).
    pub bytes: u64,
    /// IP + TCP header length: what to skip in members after the head.
    pub hdr_len: u16,
    /// Payload per segment (the head's).
    pub gso_size: u16,
    /// IP header length.
    iph: u16,
    v6: bool,
    /// Next expected sequence number.
    next_seq: u32,
    ack: u32,
    /// Total IP length once coalesced.
    total: u32,
    /// PSH of the last member, to be set on the head.
    psh: bool,
    /// No more members may join.
    closed: bool,
}

/// Coalesces consecutive TCP segments of one flow into super-packets for a TUN with
/// `IFF_VNET_HDR` (the receive side of the GSO split, like the kernel's GRO). Works on packet
/// indices and lengths only: no copy, the caller writes each [`Item`] with one `writev`.
#[derive(Debug)]
pub struct Coalescer {
    items: Vec<Item>,
    /// Next member of each packet's item; `u32::MAX` ends the list.
    next: Vec<u32>,
    /// Items that may still grow, most recent last.
    open: Vec<u32>,
    enabled: bool,
}

/// How many flows may be growing at once.
const MAX_OPEN: usize = 16;

impl Coalescer {
    /// A coalescer for up to `capacity` packets per batch; `enabled: false` makes every packet
    /// its own item (a TUN without offloads).
    pub fn new(capacity: usize, enabled: bool) -> Self {
        Self {
            items: Vec::with_capacity(capacity),
            next: Vec::with_capacity(capacity),
            open: Vec::with_capacity(MAX_OPEN),
            enabled,
        }
    }

    /// Starts a new batch.
    pub fn clear(&mut self) {
        self.items.clear();
        self.next.clear();
        self.open.clear();
    }

    /// Packets pushed since [`Coalescer::clear`].
    pub fn len(&self) -> usize {
        self.next.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.next.is_empty()
    }

    /// Whether another packet fits the batch without allocating.
    pub fn is_full(&self) -> bool {
        self.next.len() == self.next.capacity()
    }

    /// The writes, in order of their first packet.
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// Members of `item`, head first.
    pub fn members(&self, item: &Item) -> impl Iterator<Item = u32> + '_ {
        let mut cur = item.head;
        std::iter::from_fn(move || {
            if cur == u32::MAX {
                return None;
            }
            let this = cur;
            cur = self.next[this as usize];
            Some(this)
        })
    }

    /// Adds the next packet of the batch (its index is [`Coalescer::len`] before the call).
    /// `pkt` must be exactly one IP packet, `packets` gives access to earlier packets by index
    /// (for header comparisons); `tag` separates tunnels, whose packets never share an item.
    pub fn push<'p>(&mut self, pkt: &[u8], tag: u32, packets: impl Fn(u32) -> &'p [u8]) {
        let index = self.next.len() as u32;
        self.next.push(u32::MAX);
        let seg = if self.enabled { coalescable(pkt) } else { None };
        if let Some(seg) = seg {
            // Find the open item of this flow.
            let mut found = None;
            for (slot, &it) in self.open.iter().enumerate().rev() {
                let item = &self.items[it as usize];
                let head = packets(item.head);
                if item.tag == tag && item.v6 == seg.v6 && same_flow(head, pkt, seg.iph) {
                    found = Some((slot, it));
                    break;
                }
            }
            if let Some((slot, it)) = found {
                let item = &self.items[it as usize];
                let head = packets(item.head);
                if can_append(item, head, pkt, &seg) {
                    let item = &mut self.items[it as usize];
                    self.next[item.last as usize] = index;
                    item.last = index;
                    item.count += 1;
                    item.bytes += pkt.len() as u64;
                    item.total += seg.payload as u32;
                    item.next_seq = seg.seq.wrapping_add(seg.payload as u32);
                    item.psh = seg.flags & 0x08 != 0;
                    if item.psh || seg.payload < usize::from(item.gso_size) {
                        item.closed = true;
                    }
                    if item.closed || item.count >= MAX_COALESCE {
                        self.open.remove(slot);
                    }
                    return;
                }
                // The flow continues in a new item: the old one must not take later segments.
                self.open.remove(slot);
            }
            let it = self.items.len() as u32;
            let closed = seg.flags & 0x08 != 0;
            self.items.push(Item {
                head: index,
                last: index,
                count: 1,
                tag,
                bytes: pkt.len() as u64,
                hdr_len: seg.hdr as u16,
                gso_size: seg.payload.min(usize::from(u16::MAX)) as u16,
                iph: seg.iph as u16,
                v6: seg.v6,
                next_seq: seg.seq.wrapping_add(seg.payload as u32),
                ack: seg.ack,
                total: pkt.len() as u32,
                psh: closed,
                closed,
            });
            if !closed {
                if self.open.len() == MAX_OPEN {
                    self.open.remove(0);
                }
                self.open.push(it);
            }
        } else {
            // A segment that cannot join (SYN, FIN, URG, IP options...) must not be overtaken by a
            // later segment of its flow joining an earlier item: close the items of its addresses.
            if let Some(addrs) = addr_ranges(pkt).map(|(s, d)| s.start..d.end)
                && pkt.len() >= addrs.end
            {
                let items = &self.items;
                self.open.retain(|&it| {
                    let head = packets(items[it as usize].head);
                    head.get(addrs.clone()) != Some(&pkt[addrs.clone()])
                });
            }
            self.items.push(Item {
                head: index,
                last: index,
                count: 1,
                tag,
                bytes: pkt.len() as u64,
                hdr_len: 0,
                gso_size: 0,
                iph: 0,
                v6: false,
                next_seq: 0,
                ack: 0,
                total: pkt.len() as u32,
                psh: false,
                closed: true,
            });
        }
    }

    /// Rewrites the head packet of a multi-packet `item` into the super-packet's headers (IP
    /// length and header checksum, PSH, pseudo-header checksum) and returns its `virtio_net_hdr`;
    /// single packets get an empty header and stay untouched.
    pub fn finish_head(item: &Item, head: &mut [u8]) -> VnetHdr {
        if item.count < 2 {
            return VnetHdr::default();
        }
        let iph = usize::from(item.iph);
        let total = item.total as usize;
        if item.v6 {
            head[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        } else {
            head[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            ipv4_header_checksum(head, iph);
        }
        if item.psh {
            head[iph + 13] |= 0x08;
        }
        let (s, d) = if item.v6 {
            (8..24, 24..40)
        } else {
            (12..16, 16..20)
        };
        // CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum, not complemented.
        let psum = csum_fold(pseudo_sum(&head[s], &head[d], 6, total - iph));
        head[iph + 16..iph + 18].copy_from_slice(&psum.to_be_bytes());
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if item.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: item.hdr_len,
            gso_size: item.gso_size,
            csum_start: item.iph,
            csum_offset: 16,
        }
    }
}

/// Same addresses and ports.
fn same_flow(a: &[u8], b: &[u8], iph: usize) -> bool {
    let addrs = if iph == 20 { 12..20 } else { 8..40 };
    a.get(addrs.clone()) == b.get(addrs) && a.get(iph..iph + 4) == b.get(iph..iph + 4)
}

fn can_append(item: &Item, head: &[u8], pkt: &[u8], seg: &TcpSeg) -> bool {
    if item.closed
        || item.count >= MAX_COALESCE
        || seg.hdr != usize::from(item.hdr_len)
        || seg.seq != item.next_seq
        || seg.ack != item.ack
        || seg.payload > usize::from(item.gso_size)
        || item.total as usize + seg.payload > usize::from(u16::MAX) + if item.v6 { 40 } else { 0 }
    {
        return false;
    }
    let iph = seg.iph;
    // Same TOS/traffic class and TTL/hop limit, same DF; same TCP options (timestamps).
    let ip_same = if item.v6 {
        head[..4] == pkt[..4] && head[7] == pkt[7]
    } else {
        head[1] == pkt[1] && head[8] == pkt[8] && (head[6] & 0x40) == (pkt[6] & 0x40)
    };
    ip_same && head[iph + 20..seg.hdr] == pkt[iph + 20..seg.hdr]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071 the slow way, 16 bits at a time.
    fn reference_checksum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for c in data.chunks(2) {
            acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    /// Verifies the L4 checksum of a whole packet from scratch: 0 means valid.
    fn l4_verify(pkt: &[u8]) -> u16 {
        let (iph, proto, src, dst) = if pkt[0] >> 4 == 4 {
            (
                usize::from(pkt[0] & 15) * 4,
                pkt[9],
                &pkt[12..16],
                &pkt[16..20],
            )
        } else {
            (40, pkt[6], &pkt[8..24], &pkt[24..40])
        };
        let mut v = Vec::new();
        v.extend_from_slice(src);
        v.extend_from_slice(dst);
        v.extend_from_slice(&[0, proto]);
        let l4 = &pkt[iph..];
        v.extend_from_slice(
            &(l4.len() as u32).to_be_bytes()[if pkt[0] >> 4 == 4 { 2 } else { 0 }..],
        );
        v.extend_from_slice(l4);
        reference_checksum(&v)
    }

    fn tcp_packet(v6: bool, seq: u32, payload: &[u8], flags: u8) -> Vec<u8> {
        let iph = if v6 { 40 } else { 20 };
        let mut p = vec![0u8; iph + 32];
        if v6 {
            p[0] = 0x60;
            p[4..6].copy_from_slice(&((32 + payload.len()) as u16).to_be_bytes());
            p[6] = 6;
            p[7] = 64;
            p[8..24].copy_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            p[24..40].copy_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        } else {
            p[0] = 0x45;
            p[2..4].copy_from_slice(&((iph + 32 + payload.len()) as u16).to_be_bytes());
            p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
            p[6] = 0x40;
            p[8] = 64;
            p[9] = 6;
            p[12..16].copy_from_slice(&[10, 1, 0, 10]);
            p[16..20].copy_from_slice(&[10, 2, 0, 10]);
        }
        let t = iph;
        p[t..t + 2].copy_from_slice(&5201u16.to_be_bytes());
        p[t + 2..t + 4].copy_from_slice(&40000u16.to_be_bytes());
        p[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
        p[t + 8..t + 12].copy_from_slice(&77u32.to_be_bytes());
        p[t + 12] = 8 << 4;
        p[t + 13] = flags;
        p[t + 14..t + 16].copy_from_slice(&500u16.to_be_bytes());
        p[t + 20..t + 32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7]); // timestamps
        p.extend_from_slice(payload);
        if !v6 {
            ipv4_header_checksum(&mut p, 20);
        }
        let sum = l4_verify(&p);
        p[t + 16..t + 18].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(l4_verify(&p), 0);
        p
    }

    #[test]
    fn checksum_matches_reference_for_odd_lengths() {
        let data: Vec<u8> = (0..1501u32).map(|i| (i * 7 + 3) as u8).collect();
        for n in [0, 1, 2, 7, 8, 9, 63, 1500, 1501] {
            assert_eq!(
                !csum_fold(csum_add(0, &data[..n])),
                reference_checksum(&data[..n])
            );
        }
        assert_eq!(csum_fold(csum_add(0, &[0xff; 64])), 0xffff);
    }

    fn split(hdr: VnetHdr, pkt: &[u8]) -> Vec<Vec<u8>> {
        let mut s = Segments::new(hdr, pkt).expect("valid");
        let mut out = vec![];
        let mut buf = [0u8; 2000];
        while let Some(n) = s.next_into(&mut buf) {
            out.push(buf[..n.expect("fits")].to_vec());
        }
        out
    }

    /// A TSO super-packet as the kernel hands it: IP lengths of the whole, partial checksum.
    fn super_packet(v6: bool, payload: &[u8], flags: u8) -> (VnetHdr, Vec<u8>) {
        let mut p = tcp_packet(v6, 1000, payload, flags);
        let iph = if v6 { 40 } else { 20 };
        p[iph + 16] = 0xde; // garbage: the split must not trust it
        p[iph + 17] = 0xad;
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: (iph + 32) as u16,
            gso_size: 1000,
            csum_start: iph as u16,
            csum_offset: 16,
        };
        (hdr, p)
    }

    #[test]
    fn gso_split_tcp_v4_and_v6() {
        for v6 in [false, true] {
            let payload: Vec<u8> = (0..3500u32).map(|i| (i % 251) as u8).collect();
            let (hdr, pkt) = super_packet(v6, &payload, 0x18 | 0x80);
            let segs = split(hdr, &pkt);
            assert_eq!(segs.len(), 4);
            let iph = if v6 { 40 } else { 20 };
            let mut got = Vec::new();
            for (i, s) in segs.iter().enumerate() {
                assert_eq!(l4_verify(s), 0, "TCP checksum of segment {i}");
                assert_eq!(ip_len(s), Some(s.len()));
                if !v6 {
                    assert_eq!(reference_checksum(&s[..20]), 0, "IPv4 header checksum");
                    assert_eq!(u16::from_be_bytes([s[4], s[5]]), 0x1234 + i as u16);
                }
                let seq = u32::from_be_bytes(s[iph + 4..iph + 8].try_into().unwrap());
                assert_eq!(seq, 1000 + 1000 * i as u32);
                let flags = s[iph + 13];
                assert_eq!(flags & 0x08 != 0, i == 3, "PSH only last");
                assert_eq!(flags & 0x80 != 0, i == 0, "CWR only first");
                got.extend_from_slice(&s[iph + 32..]);
            }
            assert_eq!(got, payload);
            assert_eq!(segs[3].len(), iph + 32 + 500);
        }
    }

    #[test]
    fn gso_split_udp_and_partial_checksum() {
        // USO: 3 datagrams of 100 bytes.
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 1, 0, 10]);
        p[16..20].copy_from_slice(&[10, 2, 0, 10]);
        p.extend((0..250u32).map(|i| i as u8));
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: 28,
            gso_size: 100,
            csum_start: 20,
            csum_offset: 6,
        };
        let segs = split(hdr, &p);
        assert_eq!(
            segs.iter().map(Vec::len).collect::<Vec<_>>(),
            [128, 128, 78]
        );
        for s in &segs {
            assert_eq!(l4_verify(s), 0);
            assert_eq!(u16::from_be_bytes([s[24], s[25]]) as usize, s.len() - 20);
        }
        // A plain packet with a partial checksum gets it completed.
        let mut pkt = tcp_packet(false, 5, b"hello", 0x18);
        let psum = csum_fold(pseudo_sum(
            &[10, 1, 0, 10],
            &[10, 2, 0, 10],
            6,
            pkt.len() - 20,
        ));
        pkt[36..38].copy_from_slice(&psum.to_be_bytes());
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 20,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        let segs = split(hdr, &pkt);
        assert_eq!(segs.len(), 1);
        assert_eq!(l4_verify(&segs[0]), 0);
    }

    #[test]
    fn bogus_headers_are_refused_not_panics() {
        let (hdr, pkt) = super_packet(false, &[7u8; 3000], 0x10);
        let bad = [
            VnetHdr { gso_size: 0, ..hdr },
            VnetHdr {
                csum_start: 24,
                ..hdr
            },
            VnetHdr {
                gso_type: GSO_TCPV6,
                ..hdr
            },
            VnetHdr { gso_type: 3, ..hdr },
            VnetHdr {
                gso_type: GSO_NONE,
                csum_start: 60000,
                ..hdr
            },
        ];
        for h in bad {
            assert!(Segments::new(h, &pkt).is_none(), "{h:?}");
        }
        for n in 0..60 {
            if let Some(mut s) = Segments::new(hdr, &pkt[..n]) {
                let mut buf = [0u8; 2000];
                while s.next_into(&mut buf).is_some() {}
            }
        }
        // A segment that does not fit the slot is reported, and the split goes on.
        let mut s = Segments::new(hdr, &pkt).unwrap();
        assert_eq!(s.next_into(&mut [0u8; 100]), Some(None));
        assert!(s.next_into(&mut [0u8; 2000]).unwrap().is_some());
        assert_eq!(VnetHdr::parse(&hdr.encode()), Some(hdr));
        assert_eq!(VnetHdr::parse(&[0u8; 9]), None);
    }

    fn coalesce(packets: &[Vec<u8>], tags: &[u32]) -> Coalescer {
        let mut c = Coalescer::new(64, true);
        for (p, &t) in packets.iter().zip(tags) {
            c.push(p, t, |i| &packets[i as usize]);
        }
        c
    }

    /// Builds the super-packet the TUN would receive and splits it again with our own GSO split:
    /// the round trip must give back the original segments byte for byte.
    fn write_and_resplit(c: &Coalescer, packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for item in c.items() {
            let mut members = c.members(item);
            let mut head = packets[members.next().unwrap() as usize].clone();
            let hdr = Coalescer::finish_head(item, &mut head);
            for m in members {
                head.extend_from_slice(&packets[m as usize][usize::from(item.hdr_len)..]);
            }
            if hdr.gso_type == GSO_NONE {
                out.push(head);
                continue;
            }
            assert_eq!(ip_len(&head), Some(head.len()));
            out.extend(split(hdr, &head));
        }
        out
    }

    #[test]
    fn gro_coalesces_a_flow_and_round_trips() {
        for v6 in [false, true] {
            let mut pkts: Vec<Vec<u8>> = (0..5u32)
                .map(|i| tcp_packet(v6, 1000 + 100 * i, &[i as u8; 100], 0x10))
                .collect();
            // Last one short with PSH, then one more that must start a new item.
            pkts.push(tcp_packet(v6, 1500, &[9u8; 40], 0x18));
            pkts.push(tcp_packet(v6, 1540, &[8u8; 100], 0x10));
            if !v6 {
                // IPv4 IDs as a sender's TSO split would make them.
                for (i, p) in pkts.iter_mut().enumerate() {
                    p[4..6].copy_from_slice(&(0x1234 + i as u16).to_be_bytes());
                    ipv4_header_checksum(p, 20);
                }
            }
            let c = coalesce(&pkts, &[1; 7]);
            let counts: Vec<u32> = c.items().iter().map(|i| i.count).collect();
            assert_eq!(counts, [6, 1]);
            assert_eq!(
                c.items()[0].bytes,
                pkts[..6].iter().map(|p| p.len() as u64).sum::<u64>()
            );
            let back = write_and_resplit(&c, &pkts);
            assert_eq!(back, pkts);
        }
    }

    #[test]
    fn gro_keeps_flows_apart_and_refuses_what_it_must() {
        let a = |seq: u32| tcp_packet(false, seq, &[1u8; 100], 0x10);
        let mut other = tcp_packet(false, 1100, &[1u8; 100], 0x10);
        other[20..22].copy_from_slice(&5202u16.to_be_bytes()); // another flow
        let syn = tcp_packet(false, 1200, &[], 0x02);
        let gap = a(1500);
        let pkts = vec![a(1000), other, a(1100), syn, a(1200), gap, a(1600)];
        let c = coalesce(&pkts, &[1; 7]);
        let groups: Vec<Vec<u32>> = c.items().iter().map(|i| c.members(i).collect()).collect();
        // The SYN between them (same addresses) ends the first item.
        assert_eq!(groups, [vec![0, 2], vec![1], vec![3], vec![4], vec![5, 6]]);
        // A segment that cannot be coalesced (URG) closes its flow's item: the next one must not
        // jump ahead of it.
        let mut urg = a(1100);
        urg[33] |= 0x20;
        let pkts2 = vec![a(1000), urg, a(1200)];
        let c = coalesce(&pkts2, &[1; 3]);
        assert_eq!(
            c.items().iter().map(|i| i.head).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        // Different tunnels never share an item.
        let c = coalesce(&pkts[..3], &[1, 1, 2]);
        assert_eq!(c.items().len(), 3);
        // Disabled: one item per packet.
        let mut c = Coalescer::new(8, false);
        for p in &pkts[..3] {
            c.push(p, 0, |i| &pkts[i as usize]);
        }
        assert_eq!(c.items().len(), 3);
        assert_eq!(
            Coalescer::finish_head(&c.items()[0], &mut pkts[0].clone()),
            VnetHdr::default()
        );
    }
}
