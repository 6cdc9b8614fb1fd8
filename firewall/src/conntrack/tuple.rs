//! Flow tuples: what identifies a flow in one direction, parsed from an IPv4 packet.

use core::net::Ipv4Addr;

use netstack::icmpv4::{self, Message};
use netstack::ip::IpProtocol;
use netstack::{ipv4, tcp, udp};

use crate::rules::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

/// The identity of a flow seen in one direction: protocol, addresses and ports.
///
/// For ICMP echo the identifier plays the port: an echo request has it as `src_port` (and
/// `dst_port` 0), an echo reply as `dst_port` (and `src_port` 0), so that the reply of a
/// request has exactly the reversed tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// IP protocol number (6, 17 or 1).
    pub proto: u8,
    /// Source address.
    pub src: Ipv4Addr,
    /// Source port (ICMP echo request: identifier).
    pub src_port: u16,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Destination port (ICMP echo reply: identifier).
    pub dst_port: u16,
}

impl Tuple {
    /// An all-zero tuple (unused table slots).
    pub const ZERO: Tuple =
        Tuple { proto: 0, src: Ipv4Addr::UNSPECIFIED, src_port: 0, dst: Ipv4Addr::UNSPECIFIED, dst_port: 0 };

    /// The tuple of the other direction.
    #[must_use]
    pub const fn reversed(&self) -> Tuple {
        Tuple { proto: self.proto, src: self.dst, src_port: self.dst_port, dst: self.src, dst_port: self.src_port }
    }

    /// The bytes the keyed hash covers.
    pub(crate) fn to_bytes(self) -> [u8; 13] {
        let s = self.src.octets();
        let d = self.dst.octets();
        let sp = self.src_port.to_be_bytes();
        let dp = self.dst_port.to_be_bytes();
        [self.proto, s[0], s[1], s[2], s[3], sp[0], sp[1], d[0], d[1], d[2], d[3], dp[0], dp[1]]
    }
}

/// What connection tracking needs of a packet besides its tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// TCP with these flags ([`tcp::flags`]).
    Tcp {
        /// The flags.
        flags: u16,
    },
    /// UDP.
    Udp,
    /// ICMP echo request.
    EchoRequest,
    /// ICMP echo reply.
    EchoReply,
    /// An ICMP error (destination unreachable, time exceeded, …) quoting another packet.
    IcmpError,
}

/// Why a packet cannot be tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Untrackable {
    /// The packet is malformed (lengths, truncated L4 header).
    Malformed,
    /// A fragment: it must be reassembled first (the fragment table's job).
    Fragment,
    /// A protocol (or ICMP type) connection tracking does not handle.
    Unsupported,
}

/// Parse the tuple and L4 facts of the IPv4 packet at the start of `packet`.
///
/// # Errors
///
/// [`Untrackable`] for malformed packets, fragments and other protocols.
pub fn parse(packet: &[u8]) -> Result<(Tuple, L4), Untrackable> {
    parse_packet(packet).map(|p| (p.tuple, p.l4))
}

/// A packet parsed once for connection tracking and NAT: what [`parse`] returns, plus where
/// its L4 header starts (the IPv4 header length, checked against the packet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub(crate) tuple: Tuple,
    pub(crate) l4: L4,
    pub(crate) header_len: usize,
}

impl Parsed {
    /// The L4 part of an IPv4 packet whose header the caller has checked already (lengths,
    /// version; `ip` ends at the datagram's total length): `header_len` is its header length
    /// and `fragment` whether it is a fragment.
    #[inline(always)]
    pub(crate) fn from_checked_header(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: IpProtocol,
        header_len: usize,
        fragment: bool,
        ip: &[u8],
    ) -> Result<Parsed, Untrackable> {
        if fragment {
            return Err(Untrackable::Fragment);
        }
        let l4 = ip.get(header_len..).ok_or(Untrackable::Malformed)?;
        let (tuple, l4) = parse_l4(src, dst, proto, l4, false)?;
        Ok(Parsed { tuple, l4, header_len })
    }
}

/// [`parse`], keeping the header length.
pub(crate) fn parse_packet(packet: &[u8]) -> Result<Parsed, Untrackable> {
    let ip = ipv4::Packet::new_checked(packet).map_err(|_| Untrackable::Malformed)?;
    if ip.version() != 4 {
        return Err(Untrackable::Malformed);
    }
    if ip.is_fragment() {
        return Err(Untrackable::Fragment);
    }
    let (tuple, l4) = parse_l4(ip.src_addr(), ip.dst_addr(), ip.next_header(), ip.payload(), false)?;
    Ok(Parsed { tuple, l4, header_len: ip.header_len() })
}

/// Parse the L4 part. `quoted`: the payload is the (usually 8-byte) start of a datagram
/// quoted in an ICMP error, so only the first 8 bytes are required.
#[inline(always)]
pub(crate) fn parse_l4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: IpProtocol,
    l4: &[u8],
    quoted: bool,
) -> Result<(Tuple, L4), Untrackable> {
    let t = |proto: u8, src_port: u16, dst_port: u16| Tuple { proto, src, src_port, dst, dst_port };
    let ports = |l4: &[u8]| (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]]));
    match proto {
        IpProtocol::Tcp => {
            if quoted {
                if l4.len() < 8 {
                    return Err(Untrackable::Malformed);
                }
                let (s, d) = ports(l4);
                let flags = if l4.len() >= 14 { u16::from_be_bytes([l4[12], l4[13]]) & tcp::flags::ALL } else { 0 };
                return Ok((t(IPPROTO_TCP, s, d), L4::Tcp { flags }));
            }
            let p = tcp::Packet::new_checked(l4).map_err(|_| Untrackable::Malformed)?;
            Ok((t(IPPROTO_TCP, p.src_port(), p.dst_port()), L4::Tcp { flags: p.flags() }))
        }
        IpProtocol::Udp => {
            if l4.len() < udp::HEADER_LEN {
                return Err(Untrackable::Malformed);
            }
            let (s, d) = ports(l4);
            Ok((t(IPPROTO_UDP, s, d), L4::Udp))
        }
        IpProtocol::Icmp => {
            if l4.len() < icmpv4::HEADER_LEN {
                return Err(Untrackable::Malformed);
            }
            let id = u16::from_be_bytes([l4[4], l4[5]]);
            match Message::from(l4[0]) {
                Message::EchoRequest => Ok((t(IPPROTO_ICMP, id, 0), L4::EchoRequest)),
                Message::EchoReply => Ok((t(IPPROTO_ICMP, 0, id), L4::EchoReply)),
                Message::DstUnreachable | Message::TimeExceeded | Message::ParamProblem | Message::SourceQuench
                    if !quoted =>
                {
                    Ok((t(IPPROTO_ICMP, 0, 0), L4::IcmpError))
                }
                _ => Err(Untrackable::Unsupported),
            }
        }
        _ => Err(Untrackable::Unsupported),
    }
}
