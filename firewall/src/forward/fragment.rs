//! IPv4 fragments: reassembly before tracking, and fragmenting a datagram that is larger
//! than the egress MTU.
//!
//! **Reassembly** (as Linux's conntrack defragments before filtering): a fragment is copied
//! into a fixed table of [`REASSEMBLY_SLOTS`] datagrams keyed by (source, destination,
//! identification, protocol), each with its own buffer of [`MAX_REASSEMBLED`] bytes. When the
//! last hole is filled the whole datagram (header of the first fragment, flags and offset
//! cleared, length and checksum fixed) is written into the caller's slot after the Ethernet
//! header, and goes through the pipeline like any unfragmented packet: the rules and
//! connection tracking see the whole transport header (no tiny-fragment tricks, RFC 1858).
//!
//! Policies:
//! - **Size**: datagrams larger than [`MAX_REASSEMBLED`] (a reassembled frame must fit one
//!   4 KiB slot) are dropped (`TooBig`), as is any fragment reaching past it.
//! - **Overlap**: a fragment overlapping data already held drops the whole datagram (RFC 5722
//!   style; no overlap is ever resolved in favour of either copy). An exact duplicate of a
//!   fragment already held is dropped on its own (the first copy is kept).
//! - **Capacity**: a full table refuses new datagrams (`TableFull`; held datagrams are never
//!   evicted by newcomers, so a flood cannot push out one that is completing); one source may
//!   hold at most [`REASSEMBLY_PER_SOURCE`] datagrams (`SourceQuota`) and one datagram at most
//!   [`MAX_FRAGMENTS`] fragments (`TooMany`).
//! - **Timeout**: 30 s after its first fragment (Linux `ipfrag_time`) an incomplete datagram
//!   is freed and counted; no ICMP "reassembly time exceeded" is sent.
//!
//! **Fragmenting** ([`fragment`]): a (possibly reassembled) datagram that does not fit the
//! egress MTU and may be fragmented is cut into fragments of at most the MTU, each written by
//! the caller into a slot of its own. Datagrams with IP options are not fragmented (only some
//! options may be copied into later fragments; they are rare): they are dropped and counted.

use core::net::Ipv4Addr;

use heapless::Vec;
use netstack::{checksum, ethernet, ipv4};

use crate::config::{MAX_FRAGMENTS, MAX_REASSEMBLED, REASSEMBLY_PER_SOURCE, REASSEMBLY_SLOTS};

/// Reassembly timeout (Linux `ipfrag_time`, 30 s), in ns.
pub const REASSEMBLY_TIMEOUT: u64 = 30 * 1_000_000_000;

/// Why a fragment (or the datagram it belongs to) was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FragmentDrop {
    /// It overlaps data already held: the whole datagram is dropped.
    Overlap,
    /// An exact duplicate of a fragment already held.
    Duplicate,
    /// The datagram would be larger than [`MAX_REASSEMBLED`].
    TooBig,
    /// No free reassembly slot.
    TableFull,
    /// Its source already has [`REASSEMBLY_PER_SOURCE`] datagrams under reassembly.
    SourceQuota,
    /// Inconsistent: an empty fragment, a non-last fragment whose length is not a multiple
    /// of 8, two different ends, data past the end. The whole datagram is dropped.
    Invalid,
    /// More than [`MAX_FRAGMENTS`] fragments: the whole datagram is dropped.
    TooMany,
    /// An incomplete datagram timed out (counted by [`crate::forward::Firewall::expire`]).
    Timeout,
}

struct Datagram {
    used: bool,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    proto: u8,
    deadline: u64,
    header: [u8; ipv4::MAX_HEADER_LEN],
    header_len: usize,
    /// Payload length, known once the last fragment arrived.
    total: Option<usize>,
    /// Payload ranges held, `[start, end)`.
    ranges: Vec<(u16, u16), MAX_FRAGMENTS>,
    held: usize,
    data: [u8; MAX_REASSEMBLED],
}

impl Datagram {
    const FREE: Datagram = Datagram {
        used: false,
        src: Ipv4Addr::UNSPECIFIED,
        dst: Ipv4Addr::UNSPECIFIED,
        ident: 0,
        proto: 0,
        deadline: 0,
        header: [0; ipv4::MAX_HEADER_LEN],
        header_len: 0,
        total: None,
        ranges: Vec::new(),
        held: 0,
        data: [0; MAX_REASSEMBLED],
    };

    fn complete(&self) -> bool {
        self.header_len != 0 && self.total == Some(self.held)
    }
}

/// What [`Reassembly::insert`] did with a fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Inserted {
    /// Held; the datagram is still incomplete.
    Held,
    /// The datagram in this slot is complete: fetch it with [`Reassembly::take`].
    Complete(usize),
}

/// The reassembly table.
pub(crate) struct Reassembly {
    slots: [Datagram; REASSEMBLY_SLOTS],
}

impl Reassembly {
    pub(crate) const fn new() -> Self {
        Self { slots: [const { Datagram::FREE }; REASSEMBLY_SLOTS] }
    }

    /// Datagrams under reassembly.
    pub(crate) fn len(&self) -> usize {
        self.slots.iter().filter(|d| d.used).count()
    }

    /// Free the datagrams whose time is up; returns how many.
    pub(crate) fn expire(&mut self, now: u64) -> u32 {
        let mut n = 0;
        for d in self.slots.iter_mut().filter(|d| d.used && d.deadline <= now) {
            d.used = false;
            n += 1;
        }
        n
    }

    /// Forget everything.
    pub(crate) fn clear(&mut self) {
        for d in &mut self.slots {
            d.used = false;
        }
    }

    /// Take in the fragment `packet` (an IPv4 packet that passed `check_len`, a fragment).
    pub(crate) fn insert(&mut self, packet: &[u8], now: u64) -> Result<Inserted, FragmentDrop> {
        let ip = ipv4::Packet::new_unchecked(packet);
        let (src, dst, ident, proto) = (ip.src_addr(), ip.dst_addr(), ip.ident(), u8::from(ip.next_header()));
        let ihl = ip.header_len();
        let payload = &packet[ihl..usize::from(ip.total_len())];
        let start = usize::from(ip.frag_offset()) * 8;
        let end = start + payload.len();
        let last = !ip.more_frags();
        if payload.is_empty() || (!last && !payload.len().is_multiple_of(8)) {
            return Err(FragmentDrop::Invalid);
        }
        if end + ipv4::HEADER_LEN > MAX_REASSEMBLED || (start == 0 && end + ihl > MAX_REASSEMBLED) {
            // Drop what is held of it too: it can never complete.
            if let Some(i) = self.find(src, dst, ident, proto) {
                self.slots[i].used = false;
            }
            return Err(FragmentDrop::TooBig);
        }
        let i = match self.find(src, dst, ident, proto) {
            Some(i) => i,
            None => self.allocate(src, dst, ident, proto, now)?,
        };
        let d = &mut self.slots[i];
        let bad = |d: &mut Datagram, why| {
            d.used = false;
            Err(why)
        };
        if d.ranges.iter().any(|&(s, e)| usize::from(s) == start && usize::from(e) == end) {
            return Err(FragmentDrop::Duplicate);
        }
        if d.ranges.iter().any(|&(s, e)| start < usize::from(e) && usize::from(s) < end) {
            return bad(d, FragmentDrop::Overlap);
        }
        if last {
            if d.total.is_some_and(|t| t != end) || d.ranges.iter().any(|&(_, e)| usize::from(e) > end) {
                return bad(d, FragmentDrop::Invalid);
            }
            d.total = Some(end);
        } else if d.total.is_some_and(|t| end > t) {
            return bad(d, FragmentDrop::Invalid);
        }
        if start == 0 {
            if d.header_len + end > MAX_REASSEMBLED && d.header_len != 0 {
                return bad(d, FragmentDrop::TooBig);
            }
            d.header[..ihl].copy_from_slice(&packet[..ihl]);
            d.header_len = ihl;
        }
        if d.total.is_some_and(|t| d.header_len.max(ipv4::HEADER_LEN) + t > MAX_REASSEMBLED) {
            return bad(d, FragmentDrop::TooBig);
        }
        if d.ranges.push((start as u16, end as u16)).is_err() {
            return bad(d, FragmentDrop::TooMany);
        }
        d.data[start..end].copy_from_slice(payload);
        d.held += payload.len();
        Ok(if d.complete() { Inserted::Complete(i) } else { Inserted::Held })
    }

    fn find(&self, src: Ipv4Addr, dst: Ipv4Addr, ident: u16, proto: u8) -> Option<usize> {
        self.slots.iter().position(|d| d.used && d.src == src && d.dst == dst && d.ident == ident && d.proto == proto)
    }

    fn allocate(
        &mut self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ident: u16,
        proto: u8,
        now: u64,
    ) -> Result<usize, FragmentDrop> {
        // Timed-out datagrams are reclaimed by `expire`; reclaim them here too so a caller
        // that forgets to sweep still gets room.
        for d in self.slots.iter_mut().filter(|d| d.used && d.deadline <= now) {
            d.used = false;
        }
        if self.slots.iter().filter(|d| d.used && d.src == src).count() >= REASSEMBLY_PER_SOURCE {
            return Err(FragmentDrop::SourceQuota);
        }
        let i = self.slots.iter().position(|d| !d.used).ok_or(FragmentDrop::TableFull)?;
        let d = &mut self.slots[i];
        d.used = true;
        d.src = src;
        d.dst = dst;
        d.ident = ident;
        d.proto = proto;
        d.deadline = now.saturating_add(REASSEMBLY_TIMEOUT);
        d.header_len = 0;
        d.total = None;
        d.ranges.clear();
        d.held = 0;
        Ok(i)
    }

    /// Write the complete datagram of slot `i` at the start of `out` and free the slot;
    /// returns its length (`None` if `out` is too small or the slot is not complete).
    pub(crate) fn take(&mut self, i: usize, out: &mut [u8]) -> Option<usize> {
        let d = self.slots.get_mut(i)?;
        if !d.used || !d.complete() {
            return None;
        }
        d.used = false;
        let (h, t) = (d.header_len, d.total?);
        let out = out.get_mut(..h + t)?;
        out[..h].copy_from_slice(&d.header[..h]);
        out[h..].copy_from_slice(&d.data[..t]);
        let mut ip = ipv4::Packet::new_unchecked(&mut *out);
        ip.set_total_len((h + t) as u16);
        ip.set_fragment(false, false, 0);
        ip.fill_checksum();
        Some(h + t)
    }
}

/// How many fragments a datagram of `ip_len` bytes with a `header_len`-byte header needs at
/// `mtu`, or `None` if it cannot be fragmented (options, or an MTU below 68 − the minimum
/// every IPv4 link must carry).
#[must_use]
pub fn fragment_count(ip_len: usize, header_len: usize, mtu: u16) -> Option<usize> {
    if header_len != ipv4::HEADER_LEN || mtu < 68 {
        return None;
    }
    let per = (usize::from(mtu) - header_len) & !7;
    Some((ip_len - header_len).div_ceil(per))
}

/// Write fragment `index` of the Ethernet/IPv4 frame `frame` (a whole, unfragmented datagram
/// without options, the frame a [`crate::forward::Decision::Fragment`] names) for an egress
/// MTU of `mtu` into `out`; returns the fragment frame's length. `None` if `index` is past
/// the last fragment, the datagram cannot be fragmented, or `out` is too small.
#[must_use]
pub fn fragment(frame: &[u8], mtu: u16, index: usize, out: &mut [u8]) -> Option<usize> {
    let eth = ethernet::HEADER_LEN;
    let ip = ipv4::Packet::new_checked(frame.get(eth..)?).ok()?;
    let (h, total) = (ip.header_len(), usize::from(ip.total_len()));
    if ip.is_fragment() {
        return None;
    }
    let count = fragment_count(total, h, mtu)?;
    if index >= count {
        return None;
    }
    let per = (usize::from(mtu) - h) & !7;
    let start = index * per;
    let end = (start + per).min(total - h);
    let n = eth + h + (end - start);
    let o = out.get_mut(..n)?;
    o[..eth + h].copy_from_slice(&frame[..eth + h]);
    o[eth + h..].copy_from_slice(&frame[eth + h + start..eth + h + end]);
    let mut f = ipv4::Packet::new_unchecked(&mut o[eth..]);
    f.set_total_len((h + end - start) as u16);
    f.set_fragment(false, index + 1 < count, (start / 8) as u16);
    f.fill_checksum();
    Some(n)
}

/// Complete the partial (pseudo-header only) TCP/UDP checksum of a whole IPv4 packet, as an
/// offload engine would: needed before the packet is cut into fragments.
pub(crate) fn complete_checksum(packet: &mut [u8]) {
    let Ok(ip) = ipv4::Packet::new_checked(&*packet) else { return };
    let (h, total, proto) = (ip.header_len(), usize::from(ip.total_len()), u8::from(ip.next_header()));
    let at = match proto {
        6 => h + 16,
        17 => h + 6,
        _ => return,
    };
    if at + 2 > total {
        return;
    }
    // The field holds the pseudo-header sum: summing the whole segment with it gives the sum
    // the checksum is the complement of.
    let c = !checksum::data(&packet[h..total]);
    let c = if proto == 17 { checksum::udp_final(c) } else { c };
    packet[at..at + 2].copy_from_slice(&c.to_be_bytes());
}
