//! Source NAT: choosing the translated source port (Linux masquerade: keep the client's
//! port when free) and rewriting packets in place with incremental checksums.

use core::net::Ipv4Addr;

use netstack::nat::{Rewrite, rewrite_ipv4};

use super::Conntrack;
use super::state::Dir;
use super::tuple::Tuple;
use crate::config::NAT_PORT_TRIES;
use crate::rules::IPPROTO_ICMP;

impl<const N: usize, const B: usize> Conntrack<N, B> {
    /// Whether `port` would be a usable translated source port for `orig`: not reserved for
    /// the appliance's own sockets, and no other flow's reply tuple is the one this flow
    /// would get (an expired holder is reclaimed on the way).
    fn port_free(&mut self, orig: &Tuple, nat: Ipv4Addr, port: u16, now: u64) -> bool {
        if orig.proto != IPPROTO_ICMP && self.reserved_ports.is_some_and(|(lo, hi)| (lo..=hi).contains(&port)) {
            return false;
        }
        let reply = Tuple { proto: orig.proto, src: orig.dst, src_port: orig.dst_port, dst: nat, dst_port: port };
        self.lookup(&reply, Dir::Reply, now).is_none()
    }

    /// The translated source port (ICMP: identifier) for a new flow: the client's own when
    /// free, otherwise a random one from the same class (1–1023 for a privileged port,
    /// 1024–65535 otherwise, any for ICMP), tried [`NAT_PORT_TRIES`] times. `None` when all
    /// tries failed.
    pub(crate) fn pick_port(
        &mut self,
        orig: &Tuple,
        nat: Ipv4Addr,
        now: u64,
        rng: &mut impl FnMut() -> u32,
    ) -> Option<u16> {
        if self.port_free(orig, nat, orig.src_port, now) {
            return Some(orig.src_port);
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
            if self.port_free(orig, nat, p, now) {
                return Some(p);
            }
        }
        None
    }
}

/// Rewrite the source of a client's packet to `addr`/`port` (ICMP echo: the identifier).
pub(crate) fn snat(packet: &mut [u8], addr: Ipv4Addr, port: u16, csum_blank: bool) -> netstack::Result<()> {
    let rw = Rewrite { src_addr: Some(addr), src_port: Some(port), ..Rewrite::default() };
    rewrite_ipv4(packet, &rw, csum_blank)
}

/// Rewrite the destination of a reply to the client's `addr`/`port` (ICMP echo reply: the
/// identifier).
pub(crate) fn unsnat(packet: &mut [u8], addr: Ipv4Addr, port: u16, csum_blank: bool) -> netstack::Result<()> {
    let rw = Rewrite { dst_addr: Some(addr), dst_port: Some(port), ..Rewrite::default() };
    rewrite_ipv4(packet, &rw, csum_blank)
}
