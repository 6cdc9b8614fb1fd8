//! Source NAT: choosing the translated source port (Linux masquerade: keep the client's
//! port when free) and rewriting packets in place with incremental checksums.

use core::net::Ipv4Addr;

use netstack::checksum;
use netstack::nat::{Rewrite, rewrite_ipv4};

use super::Conntrack;
use super::state::Dir;
use super::tuple::{L4, Parsed, Tuple};
use crate::config::NAT_PORT_TRIES;
use crate::rules::IPPROTO_ICMP;

impl<const N: usize, const B: usize> Conntrack<N, B> {
    /// Whether `port` would be a usable translated source port for `orig`: not reserved for
    /// the appliance's own sockets, and no other flow's reply tuple is the one this flow
    /// would get (an expired holder is reclaimed on the way). `Some`: free, with the reply
    /// tuple's index tag if it was computed.
    fn port_free(&mut self, orig: &Tuple, nat: Ipv4Addr, port: u16, now: u64) -> Option<Option<u32>> {
        if orig.proto != IPPROTO_ICMP && self.reserved_ports.is_some_and(|(lo, hi)| (lo..=hi).contains(&port)) {
            return None;
        }
        let reply = Tuple { proto: orig.proto, src: orig.dst, src_port: orig.dst_port, dst: nat, dst_port: port };
        let mut tag = None;
        match self.lookup_tagged(&reply, Dir::Reply, now, &mut tag) {
            Some(_) => None,
            None => Some(tag),
        }
    }

    /// The translated source port (ICMP: identifier) for a new flow: the client's own when
    /// free, otherwise a random one from the same class (1–1023 for a privileged port,
    /// 1024–65535 otherwise, any for ICMP), tried [`NAT_PORT_TRIES`] times, with the reply
    /// tuple's index tag if it was computed. `None` when all tries failed.
    pub(crate) fn pick_port(
        &mut self,
        orig: &Tuple,
        nat: Ipv4Addr,
        now: u64,
        rng: &mut impl FnMut() -> u32,
    ) -> Option<(u16, Option<u32>)> {
        if let Some(tag) = self.port_free(orig, nat, orig.src_port, now) {
            return Some((orig.src_port, tag));
        }
        let (lo, hi): (u32, u32) = if orig.proto == IPPROTO_ICMP {
            (0, 65535)
        } else if orig.src_port < 1024 {
            (1, 1023)
        } else {
            (1024, 65535)
        };
        for _ in 0..NAT_PORT_TRIES {
            // The modulo bias over a 32-bit draw is below 2^-16: irrelevant here.
            let p = (lo + rng() % (hi - lo + 1)) as u16;
            if let Some(tag) = self.port_free(orig, nat, p, now) {
                return Some((p, tag));
            }
        }
        None
    }
}

/// Rewrite the source of a client's packet (parsed as `p`) to `addr`/`port` (ICMP echo: the
/// identifier).
#[inline(always)]
pub(crate) fn snat(packet: &mut [u8], p: &Parsed, addr: Ipv4Addr, port: u16, csum_blank: bool) -> netstack::Result<()> {
    if rewrite_tcp_udp(packet, p, End::Source, addr, port, csum_blank) {
        return Ok(());
    }
    let rw = Rewrite { src_addr: Some(addr), src_port: Some(port), ..Rewrite::default() };
    rewrite_ipv4(packet, &rw, csum_blank)
}

/// Rewrite the destination of a reply (parsed as `p`) to the client's `addr`/`port` (ICMP
/// echo reply: the identifier).
#[inline(always)]
pub(crate) fn unsnat(
    packet: &mut [u8],
    p: &Parsed,
    addr: Ipv4Addr,
    port: u16,
    csum_blank: bool,
) -> netstack::Result<()> {
    if rewrite_tcp_udp(packet, p, End::Destination, addr, port, csum_blank) {
        return Ok(());
    }
    let rw = Rewrite { dst_addr: Some(addr), dst_port: Some(port), ..Rewrite::default() };
    rewrite_ipv4(packet, &rw, csum_blank)
}

/// Which end of a packet NAT rewrites.
#[derive(Clone, Copy)]
enum End {
    Source,
    Destination,
}

/// The per-packet fast path of [`rewrite_ipv4`] for a whole TCP or UDP packet parsed as `p`
/// (so its header length and L4 header were checked): the same incremental updates in the
/// same order (address then port, RFC 1624; a partial checksum gets only the address change;
/// UDP keeps a zero "no checksum" and sends a computed 0 as `0xffff`), without parsing again.
/// Returns `false`, having written nothing, for anything else (ICMP, or a packet too short
/// for what `p` claims): the caller then uses [`rewrite_ipv4`].
#[inline(always)]
fn rewrite_tcp_udp(packet: &mut [u8], p: &Parsed, end: End, addr: Ipv4Addr, port: u16, csum_blank: bool) -> bool {
    let (udp, csum_at) = match p.l4 {
        L4::Tcp { .. } => (false, 16),
        L4::Udp => (true, 6),
        _ => return false,
    };
    // Fixed-size views (one length check each, then constant offsets).
    let Some((ip, l4)) = packet.split_at_mut_checked(p.header_len) else { return false };
    let (Some(ip), Some(l4)) = (ip.first_chunk_mut::<20>(), l4.first_chunk_mut::<18>().map(|a| &mut a[..])) else {
        // Too short for the fixed IPv4 header, or for a TCP header: UDP's is 8 bytes.
        return udp && rewrite_udp_short(packet, p, end, addr, port, csum_blank);
    };
    rewrite_views(ip, l4, udp, csum_at, end, addr, port, csum_blank);
    true
}

/// [`rewrite_tcp_udp`] for a UDP packet shorter than 18 bytes after the IPv4 header (a UDP
/// header with at most 9 bytes of data).
#[cold]
fn rewrite_udp_short(packet: &mut [u8], p: &Parsed, end: End, addr: Ipv4Addr, port: u16, csum_blank: bool) -> bool {
    let Some((ip, l4)) = packet.split_at_mut_checked(p.header_len) else { return false };
    let (Some(ip), Some(l4)) = (ip.first_chunk_mut::<20>(), l4.first_chunk_mut::<8>()) else { return false };
    rewrite_views(ip, &mut l4[..], true, 6, end, addr, port, csum_blank);
    true
}

/// The rewrite itself, on the fixed IPv4 header and at least `csum_at + 2` bytes of L4 header.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn rewrite_views(
    ip: &mut [u8; 20],
    l4: &mut [u8],
    udp: bool,
    csum_at: usize,
    end: End,
    addr: Ipv4Addr,
    port: u16,
    csum_blank: bool,
) {
    let (addr_at, port_at) = match end {
        End::Source => (12, 0),
        End::Destination => (16, 2),
    };
    let old_addr = u32::from_be_bytes([ip[addr_at], ip[addr_at + 1], ip[addr_at + 2], ip[addr_at + 3]]);
    let new_addr = addr.to_bits();
    let addr_delta =
        change(old_addr as u16, new_addr as u16) + change((old_addr >> 16) as u16, (new_addr >> 16) as u16);
    let ip_csum = !fold(u64::from(!u16::from_be_bytes([ip[10], ip[11]])) + addr_delta);
    ip[10..12].copy_from_slice(&ip_csum.to_be_bytes());
    ip[addr_at..addr_at + 4].copy_from_slice(&new_addr.to_be_bytes());
    let old_csum = u16::from_be_bytes([l4[csum_at], l4[csum_at + 1]]);
    let old_port = u16::from_be_bytes([l4[port_at], l4[port_at + 1]]);
    l4[port_at..port_at + 2].copy_from_slice(&port.to_be_bytes());
    if udp && old_csum == 0 && !csum_blank {
        return;
    }
    let c = if csum_blank {
        // A partial checksum is a plain sum of the pseudo-header: only the address changes.
        fold(u64::from(old_csum) + addr_delta)
    } else {
        let c = !fold(u64::from(!old_csum) + addr_delta + change(old_port, port));
        if udp { checksum::udp_final(c) } else { c }
    };
    l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
}

/// The terms RFC 1624 eqn. 3 adds for a 16-bit word changed from `old` to `new`: `~m + m'`.
///
/// All the changes of a packet are summed in one wide accumulator and folded once, instead
/// of chaining netstack's `checksum::update16` (a fold per word, one long dependency chain).
/// The result is the same value: one's-complement addition is associative, and both ways
/// give 0 only when every term is 0 (else a value in `1..=0xffff`, unique per residue).
const fn change(old: u16, new: u16) -> u64 {
    (!old) as u64 + new as u64
}

/// End-around-carry fold of a sum of 16-bit terms into a one's-complement sum, for sums
/// below 2^32 (here: a handful of terms below 2^17 each). Two folds, no loop: the first leaves
/// at most `0xffff + 0xffff`, the second at most `0xffff` (a carry out of the first fold means
/// its low half is at most `0xfffe`).
#[inline(always)]
const fn fold(acc: u64) -> u16 {
    debug_assert!(acc < 1 << 32);
    let acc = (acc & 0xffff) + (acc >> 16);
    ((acc & 0xffff) + (acc >> 16)) as u16
}
