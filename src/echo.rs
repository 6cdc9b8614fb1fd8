//! The debug echo services (ICMP echo and UDP port 7), answered **in place**: the reply is
//! written over the request in its slot, so the link can send that slot straight back.
//! Used on the uplink address and on the client gateway address when `debug-echo=1`.

use netstack::ethernet::{self, EthernetAddress};
use netstack::{builder, checksum, icmpv4, ipv4, udp};

/// The UDP port of the debug echo service.
pub const UDP_ECHO_PORT: u16 = 7;

/// Turns a checked IPv4 frame addressed to us around in place: Ethernet destination = its
/// source, source = `our_mac`; IP addresses swapped, TTL reset, header checksum refilled.
/// Returns the IP header length and the frame's length (without padding).
fn turn_around(frame: &mut [u8], our_mac: EthernetAddress) -> (usize, usize) {
    let mut eth = ethernet::Frame::new_unchecked(&mut *frame);
    let src = eth.src_addr();
    eth.set_dst_addr(src);
    eth.set_src_addr(our_mac);
    let mut ip = ipv4::Packet::new_unchecked(&mut frame[ethernet::HEADER_LEN..]);
    let (s, d) = (ip.src_addr(), ip.dst_addr());
    ip.set_src_addr(d);
    ip.set_dst_addr(s);
    ip.set_ttl(builder::DEFAULT_TTL);
    ip.fill_checksum();
    (ip.header_len(), ethernet::HEADER_LEN + usize::from(ip.total_len()))
}

/// Answers an ICMP echo request (in a checked, unfragmented IPv4 frame addressed to us) in
/// place: turned around, type 8 → 0, checksum updated incrementally (RFC 1624), data
/// untouched. `None` (frame untouched) if it is not an echo request.
pub fn icmp_echo(frame: &mut [u8], our_mac: EthernetAddress) -> Option<usize> {
    let is_request = {
        let ip = ipv4::Packet::new_unchecked(&frame[ethernet::HEADER_LEN..]);
        icmpv4::Packet::new_checked(ip.payload())
            .and_then(|p| icmpv4::Repr::parse(&p))
            .is_ok_and(|r| matches!(r, icmpv4::Repr::EchoRequest { .. }))
    };
    if !is_request {
        return None;
    }
    let (hl, len) = turn_around(frame, our_mac);
    let mut icmp = icmpv4::Packet::new_unchecked(&mut frame[ethernet::HEADER_LEN + hl..len]);
    icmp.set_msg_type(icmpv4::Message::EchoReply);
    // The type/code word goes from 0x0800 (echo request, code 0) to 0x0000.
    icmp.set_checksum(checksum::update16(icmp.checksum(), 0x0800, 0x0000));
    Some(len)
}

/// What [`udp_echo`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpEcho {
    /// The reply (this long) replaced the request.
    Echoed(usize),
    /// Not for the echo port: untouched.
    OtherPort,
    /// The UDP header is cut short: untouched.
    Truncated,
}

/// Echoes a UDP datagram to port 7 (in a checked, unfragmented IPv4 frame addressed to us)
/// in place: turned around, ports swapped. The UDP checksum (complete, or the pseudo-header
/// partial sum of a `csum_blank` frame) is unchanged by the swaps, so the frame keeps its
/// checksum state.
pub fn udp_echo(frame: &mut [u8], our_mac: EthernetAddress) -> UdpEcho {
    {
        let ip = ipv4::Packet::new_unchecked(&frame[ethernet::HEADER_LEN..]);
        let Ok(u) = udp::Packet::new_checked(ip.payload()) else { return UdpEcho::Truncated };
        if u.dst_port() != UDP_ECHO_PORT {
            return UdpEcho::OtherPort;
        }
    }
    let (hl, len) = turn_around(frame, our_mac);
    let mut u = udp::Packet::new_unchecked(&mut frame[ethernet::HEADER_LEN + hl..]);
    let (sp, dp) = (u.src_port(), u.dst_port());
    u.set_src_port(dp);
    u.set_dst_port(sp);
    UdpEcho::Echoed(len)
}
