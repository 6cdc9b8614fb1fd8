//! Translation of ICMP errors from the outside about a NAT'd packet of a tracked flow
//! (destination unreachable, time exceeded, parameter problem, source quench): what makes
//! traceroute and path-MTU discovery work through NAT.
//!
//! The error quotes our translated packet (source: the NAT address and port). It goes to the
//! client with the outer destination and the quoted source (address and port or echo
//! identifier) set back to the client's, with every checksum fixed: the rewriting itself is
//! netstack's (`nat::rewrite_icmpv4_error_quote`, then `nat::rewrite_ipv4` for the outer
//! destination). The flow's state and deadline are left alone (as Linux treats
//! `related` packets).

use netstack::ipv4;
use netstack::nat::{self, Rewrite};

use super::state::Dir;
use super::track::{Inbound, Invalid};
use super::tuple::{L4, Untrackable, parse_l4};
use super::{ClientId, Conntrack};

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
        let (qt, ql4) = match parse_l4(q.src_addr(), q.dst_addr(), q.next_header(), q.payload(), true) {
            Ok(x) => x,
            Err(e) => return Inbound::Invalid(Invalid::Untrackable(e)),
        };
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
        // The quote's source (address, port or echo identifier, with the quoted checksums),
        // then the outer destination; netstack checks everything before writing anything.
        let quote = Rewrite { src_addr: Some(client_addr), src_port: Some(client_port), ..Rewrite::default() };
        let outer = Rewrite { dst_addr: Some(client_addr), ..Rewrite::default() };
        if nat::rewrite_icmpv4_error_quote(packet, &quote).is_err() || nat::rewrite_ipv4(packet, &outer, false).is_err()
        {
            return BAD;
        }
        self.stats.icmp_errors_translated += 1;
        Inbound::Forward { client: ClientId(e.client) }
    }
}
