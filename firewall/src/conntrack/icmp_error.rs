//! Translation of ICMP errors from the outside about a NAT'd packet of a tracked flow
//! (destination unreachable, time exceeded, parameter problem, source quench): what makes
//! traceroute and path-MTU discovery work through NAT.
//!
//! The error quotes our translated packet (source: the NAT address and port). It goes to the
//! client with the outer destination and the quoted source (address and port or echo
//! identifier) set back to the client's; the quoted IP header checksum, the quoted L4
//! checksum (when the quote holds it) and the ICMP checksum (which covers the quote) are
//! updated incrementally. The flow's state and deadline are left alone (as Linux treats
//! `related` packets).

use netstack::checksum::{self, update16};
use netstack::ipv4;

use super::state::Dir;
use super::track::{Inbound, Invalid};
use super::tuple::{L4, Untrackable, parse_l4};
use super::{ClientId, Conntrack};
use crate::rules::{IPPROTO_TCP, IPPROTO_UDP};

fn get16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Write `new` at `at` of the ICMP message `m` (`at` even), keeping the ICMP checksum right.
fn put16(m: &mut [u8], at: usize, new: u16) {
    let old = get16(m, at);
    if old == new {
        return;
    }
    m[at..at + 2].copy_from_slice(&new.to_be_bytes());
    let c = update16(get16(m, 2), old, new);
    m[2..4].copy_from_slice(&c.to_be_bytes());
}

impl<const N: usize, const B: usize> Conntrack<N, B> {
    pub(crate) fn translate_icmp_error(&mut self, packet: &mut [u8], now: u64) -> Inbound {
        const BAD: Inbound = Inbound::Invalid(Invalid::Untrackable(Untrackable::Malformed));
        let Ok(ip) = ipv4::Packet::new_checked(&*packet) else { return BAD };
        let ihl = ip.header_len();
        let total = usize::from(ip.total_len());
        let outer_dst = ip.dst_addr();
        if total - ihl < 8 + ipv4::HEADER_LEN {
            return BAD;
        }
        let Ok(q) = ipv4::Packet::new_quoted(&packet[ihl + 8..total]) else { return BAD };
        if q.is_non_first_fragment() {
            return BAD;
        }
        let qihl = q.header_len();
        let (qt, ql4) = match parse_l4(q.src_addr(), q.dst_addr(), q.next_header(), q.payload(), true) {
            Ok(x) => x,
            Err(e) => return Inbound::Invalid(Invalid::Untrackable(e)),
        };
        let ql4_len = q.payload().len();
        if matches!(ql4, L4::EchoReply | L4::IcmpError) {
            return Inbound::NotTracked;
        }
        // The quoted packet went out as (NAT address, NAT port → remote): its reverse is the
        // flow's reply tuple.
        let Some(idx) = self.lookup(&qt.reversed(), Dir::Reply, now) else {
            return Inbound::NotTracked;
        };
        let e = self.entries[idx as usize];
        if outer_dst != e.nat_addr {
            return Inbound::NotTracked;
        }
        let (client_addr, client_port) = (e.orig.src, e.orig.src_port);
        let m = &mut packet[ihl..total];
        let qb = 8;
        let lb = qb + qihl;
        // Quoted source address, and the quoted IP header checksum.
        let old_src = qt.src;
        let qc = checksum::update_v4_addr(get16(m, qb + 10), old_src, client_addr);
        let a = client_addr.octets();
        put16(m, qb + 12, u16::from_be_bytes([a[0], a[1]]));
        put16(m, qb + 14, u16::from_be_bytes([a[2], a[3]]));
        put16(m, qb + 10, qc);
        // Quoted source port / identifier, and the quoted L4 checksum when quoted.
        match qt.proto {
            IPPROTO_TCP | IPPROTO_UDP => {
                let old_port = get16(m, lb);
                put16(m, lb, client_port);
                let at = if qt.proto == IPPROTO_TCP { lb + 16 } else { lb + 6 };
                let quoted = if qt.proto == IPPROTO_TCP { ql4_len >= 18 } else { ql4_len >= 8 };
                if quoted {
                    let old = get16(m, at);
                    if !(qt.proto == IPPROTO_UDP && old == 0) {
                        let mut c = checksum::update_v4_addr(old, old_src, client_addr);
                        c = update16(c, old_port, client_port);
                        if qt.proto == IPPROTO_UDP {
                            c = checksum::udp_final(c);
                        }
                        put16(m, at, c);
                    }
                }
            }
            _ => {
                // ICMP echo request: identifier at 4, checksum at 2 (no pseudo-header).
                let old_id = get16(m, lb + 4);
                put16(m, lb + 4, client_port);
                put16(m, lb + 2, update16(get16(m, lb + 2), old_id, client_port));
            }
        }
        // Outer destination (not covered by the ICMP checksum).
        let mut ipm = ipv4::Packet::new_unchecked(&mut *packet);
        let c = checksum::update_v4_addr(ipm.checksum(), outer_dst, client_addr);
        ipm.set_dst_addr(client_addr);
        ipm.set_checksum(c);
        self.stats.icmp_errors_translated += 1;
        Inbound::Forward { client: ClientId(e.client) }
    }
}
