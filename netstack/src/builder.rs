//! Builders of whole Ethernet frames into a caller's buffer, each returning the frame
//! length or `Err` if the buffer is too small or the input unusable; plus the RFC 1812 /
//! RFC 4443 predicate "may an ICMP error be sent about this packet".
//!
//! On `Err` the buffer contents are unspecified.

use crate::arp;
use crate::dns;
use crate::ethernet::{self, EtherType, EthernetAddress};
use crate::icmpv4;
use crate::icmpv6;
use crate::ip::{self, IpProtocol};
use crate::ipv4;
use crate::ipv6;
use crate::udp;
use crate::{Error, Result};
use core::net::{Ipv4Addr, Ipv6Addr};

/// TTL / hop limit of packets the firewall originates.
pub const DEFAULT_TTL: u8 = 64;
/// TOS of ICMPv4 errors: precedence 6, internetwork control (RFC 1812 §4.3.2.5).
pub const ICMP_ERROR_TOS: u8 = 0xc0;
/// Bytes of the original datagram's data quoted by an ICMPv4 error, after its header.
pub const ICMPV4_QUOTE_DATA: usize = 8;

fn eth(buf: &mut [u8], src: EthernetAddress, dst: EthernetAddress, ty: EtherType, len: usize) -> Result<&mut [u8]> {
    let frame = buf.get_mut(..ethernet::HEADER_LEN + len).ok_or(Error)?;
    ethernet::Repr { src_addr: src, dst_addr: dst, ethertype: ty }
        .emit(&mut ethernet::Frame::new_unchecked(&mut *frame));
    Ok(&mut frame[ethernet::HEADER_LEN..])
}

fn arp_frame(buf: &mut [u8], eth_dst: EthernetAddress, repr: arp::Repr) -> Result<usize> {
    let p = eth(buf, repr.source_hardware_addr, eth_dst, EtherType::Arp, arp::ETHERNET_IPV4_LEN)?;
    repr.emit(&mut arp::Packet::new_unchecked(p));
    Ok(ethernet::HEADER_LEN + arp::ETHERNET_IPV4_LEN)
}

/// An ARP request "who has `target_ip`? tell `src_ip`", broadcast.
pub fn arp_request(buf: &mut [u8], src_mac: EthernetAddress, src_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Result<usize> {
    arp_frame(
        buf,
        EthernetAddress::BROADCAST,
        arp::Repr {
            operation: arp::Operation::Request,
            source_hardware_addr: src_mac,
            source_protocol_addr: src_ip,
            target_hardware_addr: EthernetAddress::ZERO,
            target_protocol_addr: target_ip,
        },
    )
}

/// An ARP reply "`src_ip` is at `src_mac`", unicast to `dst_mac`/`dst_ip`.
pub fn arp_reply(
    buf: &mut [u8],
    src_mac: EthernetAddress,
    src_ip: Ipv4Addr,
    dst_mac: EthernetAddress,
    dst_ip: Ipv4Addr,
) -> Result<usize> {
    arp_frame(
        buf,
        dst_mac,
        arp::Repr {
            operation: arp::Operation::Reply,
            source_hardware_addr: src_mac,
            source_protocol_addr: src_ip,
            target_hardware_addr: dst_mac,
            target_protocol_addr: dst_ip,
        },
    )
}

/// A gratuitous ARP (RFC 5227 §3 announcement: a broadcast request with sender and target
/// protocol address both `ip` and a zero target hardware address).
pub fn gratuitous_arp(buf: &mut [u8], mac: EthernetAddress, ip: Ipv4Addr) -> Result<usize> {
    arp_request(buf, mac, ip, ip)
}

fn ipv4_frame(
    buf: &mut [u8],
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    repr: ipv4::Repr,
) -> Result<&mut [u8]> {
    let total = ipv4::HEADER_LEN + repr.payload_len;
    let ip = eth(buf, src_mac, dst_mac, EtherType::Ipv4, total)?;
    repr.emit(&mut ipv4::Packet::new_unchecked(&mut *ip))?;
    Ok(&mut ip[ipv4::HEADER_LEN..])
}

fn ipv4_repr(src: Ipv4Addr, dst: Ipv4Addr, proto: IpProtocol, payload_len: usize, tos: u8) -> ipv4::Repr {
    ipv4::Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: proto,
        payload_len,
        ttl: DEFAULT_TTL,
        ident: 0,
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
        tos,
    }
}

/// The echo reply to the ICMPv4 echo request in the IPv4 packet `request` (which must be
/// a whole, unfragmented echo request with a valid checksum). The reply goes from the
/// request's destination to its source, with the same identifier, sequence and data.
pub fn icmpv4_echo_reply(
    buf: &mut [u8],
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    request: &[u8],
) -> Result<usize> {
    let ip = ipv4::Packet::new_checked(request)?;
    let ipr = ipv4::Repr::parse(&ip)?;
    if ip.is_fragment() || ipr.next_header != IpProtocol::Icmp || !ip::ipv4_is_single_host(ipr.dst_addr) {
        return Err(Error);
    }
    let icmp = icmpv4::Packet::new_checked(ip.payload())?;
    let icmpv4::Repr::EchoRequest { ident, seq_no, data } = icmpv4::Repr::parse(&icmp)? else {
        return Err(Error);
    };
    let reply = icmpv4::Repr::EchoReply { ident, seq_no, data };
    let len = reply.buffer_len();
    let l4 = ipv4_frame(buf, src_mac, dst_mac, ipv4_repr(ipr.dst_addr, ipr.src_addr, IpProtocol::Icmp, len, 0))?;
    reply.emit(l4)?;
    Ok(ethernet::HEADER_LEN + ipv4::HEADER_LEN + len)
}

/// The kind of an ICMPv4 error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmpv4Error {
    /// Destination unreachable with any code.
    DstUnreachable(icmpv4::DstUnreachable),
    /// "Communication administratively prohibited" (code 13), the firewall's reject.
    AdminProhibited,
    /// "Fragmentation needed and DF set" (code 4) with the next-hop MTU.
    FragRequired {
        /// Next-hop MTU.
        mtu: u16,
    },
    /// Time exceeded.
    TimeExceeded(icmpv4::TimeExceeded),
    /// Parameter problem (code 0) pointing at an octet of the original header.
    ParamProblem {
        /// Offset of the offending octet.
        pointer: u8,
    },
}

/// An ICMPv4 error from `our_addr` to the source of `original` (an IPv4 packet that passes
/// `check_len`), quoting its header (options included) and the first 8 bytes of its data.
/// Check [`may_send_icmpv4_error`] first: this builder does not.
pub fn icmpv4_error(
    buf: &mut [u8],
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    our_addr: Ipv4Addr,
    kind: Icmpv4Error,
    original: &[u8],
) -> Result<usize> {
    let ip = ipv4::Packet::new_checked(original)?;
    let quote_len = (ip.header_len() + ICMPV4_QUOTE_DATA).min(usize::from(ip.total_len()));
    let quoted = &original[..quote_len];
    let repr = match kind {
        Icmpv4Error::DstUnreachable(reason) => icmpv4::Repr::DstUnreachable { reason, next_hop_mtu: 0, quoted },
        Icmpv4Error::AdminProhibited => {
            icmpv4::Repr::DstUnreachable { reason: icmpv4::DstUnreachable::CommProhibited, next_hop_mtu: 0, quoted }
        }
        Icmpv4Error::FragRequired { mtu } => {
            icmpv4::Repr::DstUnreachable { reason: icmpv4::DstUnreachable::FragRequired, next_hop_mtu: mtu, quoted }
        }
        Icmpv4Error::TimeExceeded(reason) => icmpv4::Repr::TimeExceeded { reason, quoted },
        Icmpv4Error::ParamProblem { pointer } => icmpv4::Repr::ParamProblem { code: 0, pointer, quoted },
    };
    let len = repr.buffer_len();
    let ipr = ipv4_repr(our_addr, ip.src_addr(), IpProtocol::Icmp, len, ICMP_ERROR_TOS);
    let l4 = ipv4_frame(buf, src_mac, dst_mac, ipr)?;
    repr.emit(l4)?;
    Ok(ethernet::HEADER_LEN + ipv4::HEADER_LEN + len)
}

/// Whether an ICMPv4 error may be sent about the IPv4 packet `packet`, received in a frame
/// addressed to `link_dst` (RFC 1812 §4.3.2.7). Not about: a malformed packet, an ICMP
/// error (or an ICMP message too short to tell; unknown ICMP types count as errors), a
/// packet sent to a link-layer broadcast/multicast, to an IP broadcast or multicast
/// address, from an address that is not a single host (unspecified, broadcast, multicast,
/// loopback, class E), or a fragment other than the first. Directed broadcasts need the
/// netmask and are the caller's to check.
pub fn may_send_icmpv4_error(packet: &[u8], link_dst: EthernetAddress) -> bool {
    let Ok(ip) = ipv4::Packet::new_checked(packet) else { return false };
    if ip.version() != 4 || link_dst.is_multicast() {
        return false;
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    if dst.is_broadcast() || dst.is_multicast() || !ip::ipv4_is_single_host(src) {
        return false;
    }
    if ip.is_non_first_fragment() {
        return false;
    }
    if ip.next_header() == IpProtocol::Icmp {
        match ip.payload().first() {
            Some(&t) if !icmpv4::Message::from(t).is_error() => {}
            _ => return false,
        }
    }
    true
}

fn ipv6_frame(
    buf: &mut [u8],
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    repr: ipv6::Repr,
) -> Result<&mut [u8]> {
    let ip = eth(buf, src_mac, dst_mac, EtherType::Ipv6, ipv6::HEADER_LEN + repr.payload_len)?;
    repr.emit(&mut ipv6::Packet::new_unchecked(&mut *ip))?;
    Ok(&mut ip[ipv6::HEADER_LEN..])
}

fn icmpv6_frame(
    buf: &mut [u8],
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    repr: icmpv6::Repr<'_>,
) -> Result<usize> {
    let len = repr.buffer_len();
    let ipr = ipv6::Repr { src_addr: src, dst_addr: dst, next_header: IpProtocol::Icmpv6, payload_len: len, hop_limit };
    let l4 = ipv6_frame(buf, src_mac, dst_mac, ipr)?;
    repr.emit(l4, src, dst)?;
    Ok(ethernet::HEADER_LEN + ipv6::HEADER_LEN + len)
}

/// The echo reply to the ICMPv6 echo request in the IPv6 packet `request` (unfragmented,
/// valid checksum, sent to a unicast address, which becomes the reply's source).
pub fn icmpv6_echo_reply(
    buf: &mut [u8],
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    request: &[u8],
) -> Result<usize> {
    let ip = ipv6::Packet::new_checked(request)?;
    let ipr = ipv6::Repr::parse(&ip)?;
    let (u, data) = ip.upper_layer_payload()?;
    if u.fragment.is_some() || u.protocol != IpProtocol::Icmpv6 || !ip::ipv6_is_single_host(ipr.dst_addr) {
        return Err(Error);
    }
    let icmp = icmpv6::Packet::new_checked(data)?;
    let icmpv6::Repr::EchoRequest { ident, seq_no, data } =
        icmpv6::Repr::parse(&icmp, ipr.src_addr, ip.pseudo_header_dst())?
    else {
        return Err(Error);
    };
    let reply = icmpv6::Repr::EchoReply { ident, seq_no, data };
    icmpv6_frame(buf, src_mac, dst_mac, ipr.dst_addr, ipr.src_addr, DEFAULT_TTL, reply)
}

/// The kind of an ICMPv6 error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmpv6Error {
    /// Destination unreachable (code 1 is "administratively prohibited").
    DstUnreachable(icmpv6::DstUnreachable),
    /// Packet too big.
    PktTooBig {
        /// MTU of the next hop.
        mtu: u32,
    },
    /// Time exceeded (code 0: hop limit exceeded, 1: reassembly time exceeded).
    TimeExceeded(u8),
    /// Parameter problem.
    ParamProblem {
        /// Code (0: erroneous header field, 1: unrecognized next header, 2: option).
        code: u8,
        /// Offset of the offending octet.
        pointer: u32,
    },
}

/// An ICMPv6 error from `our_addr` to the source of `original` (an IPv6 packet that passes
/// `check_len`), quoting as much of it as keeps the error within 1280 bytes (RFC 4443
/// §2.4(c)). A buffer of 14 + 1280 bytes always suffices. Check [`may_send_icmpv6_error`]
/// first: this builder does not.
pub fn icmpv6_error(
    buf: &mut [u8],
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    our_addr: Ipv6Addr,
    kind: Icmpv6Error,
    original: &[u8],
) -> Result<usize> {
    let ip = ipv6::Packet::new_checked(original)?;
    let whole = ipv6::HEADER_LEN + usize::from(ip.payload_len());
    let room = ipv6::MIN_MTU - ipv6::HEADER_LEN - icmpv6::HEADER_LEN;
    let quoted = &original[..whole.min(room)];
    let repr = match kind {
        Icmpv6Error::DstUnreachable(reason) => icmpv6::Repr::DstUnreachable { reason, quoted },
        Icmpv6Error::PktTooBig { mtu } => icmpv6::Repr::PktTooBig { mtu, quoted },
        Icmpv6Error::TimeExceeded(code) => icmpv6::Repr::TimeExceeded { code, quoted },
        Icmpv6Error::ParamProblem { code, pointer } => icmpv6::Repr::ParamProblem { code, pointer, quoted },
    };
    icmpv6_frame(buf, src_mac, dst_mac, our_addr, ip.src_addr(), DEFAULT_TTL, repr)
}

/// Whether an ICMPv6 error of `kind` may be sent about the IPv6 packet `packet`, received
/// in a frame addressed to `link_dst` (RFC 4443 §2.4(e)). Not about: a malformed packet or
/// extension-header chain, an ICMPv6 error or redirect (or an ICMPv6 message too short to
/// tell), a packet from the unspecified or a multicast address, a fragment other than the
/// first, or — except for packet-too-big and parameter-problem code 2 — a packet sent to an
/// IPv6 multicast or link-layer multicast/broadcast address.
pub fn may_send_icmpv6_error(packet: &[u8], link_dst: EthernetAddress, kind: Icmpv6Error) -> bool {
    let Ok(ip) = ipv6::Packet::new_checked(packet) else { return false };
    if ip.version() != 6 || !ip::ipv6_is_single_host(ip.src_addr()) {
        return false;
    }
    let exempt = matches!(kind, Icmpv6Error::PktTooBig { .. } | Icmpv6Error::ParamProblem { code: 2, .. });
    if !exempt && (ip.dst_addr().is_multicast() || link_dst.is_multicast()) {
        return false;
    }
    let Ok((u, data)) = ip.upper_layer_payload() else { return false };
    if u.is_non_first_fragment() {
        return false;
    }
    if u.protocol == IpProtocol::Icmpv6 {
        match data.first().map(|&t| icmpv6::Message::from(t)) {
            Some(m) if !m.is_error() && m != icmpv6::Message::Redirect => {}
            _ => return false,
        }
    }
    true
}

/// A neighbor advertisement (RFC 4861 §4.4) for `target` at `target_mac`, hop limit 255,
/// with a target link-layer address option.
#[allow(clippy::too_many_arguments)]
pub fn ndp_neighbor_advert(
    buf: &mut [u8],
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src_ip: Ipv6Addr,
    dst_ip: Ipv6Addr,
    target: Ipv6Addr,
    target_mac: EthernetAddress,
    flags: u8,
) -> Result<usize> {
    let repr = icmpv6::Repr::NeighborAdvert { flags, target_addr: target, lladdr: Some(target_mac) };
    icmpv6_frame(buf, src_mac, dst_mac, src_ip, dst_ip, 255, repr)
}

/// A neighbor solicitation (RFC 4861 §4.3) for `target`, sent to its solicited-node
/// multicast address, hop limit 255, with a source link-layer address option.
pub fn ndp_neighbor_solicit(
    buf: &mut [u8],
    src_mac: EthernetAddress,
    src_ip: Ipv6Addr,
    target: Ipv6Addr,
) -> Result<usize> {
    let dst = ip::solicited_node(target);
    let repr = icmpv6::Repr::NeighborSolicit { target_addr: target, lladdr: Some(src_mac) };
    icmpv6_frame(buf, src_mac, EthernetAddress::from_ipv6_multicast(dst), src_ip, dst, 255, repr)
}

/// A UDP/IPv4 frame carrying `payload`, checksum filled.
pub fn udp_ipv4(
    buf: &mut [u8],
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    payload: &[u8],
) -> Result<usize> {
    let u = udp::Repr { src_port: src.1, dst_port: dst.1 };
    let len = u.buffer_len(payload.len());
    let l4 = ipv4_frame(buf, src_mac, dst_mac, ipv4_repr(src.0, dst.0, IpProtocol::Udp, len, 0))?;
    u.emit(l4, src.0.into(), dst.0.into(), payload)?;
    Ok(ethernet::HEADER_LEN + ipv4::HEADER_LEN + len)
}

/// A DNS query over UDP/IPv4 for `name` (class IN, RD set) to port 53 of `resolver`.
#[allow(clippy::too_many_arguments)]
pub fn dns_query_ipv4(
    buf: &mut [u8],
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src: (Ipv4Addr, u16),
    resolver: Ipv4Addr,
    id: u16,
    name: &str,
    qtype: dns::Type,
) -> Result<usize> {
    let mut msg = [0u8; dns::HEADER_LEN + dns::MAX_NAME_LEN + 4];
    let n = dns::emit_query(&mut msg, id, name, qtype)?;
    udp_ipv4(buf, src_mac, dst_mac, src, (resolver, 53), &msg[..n])
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::nat::ipv4_checksums_valid;

    const A: EthernetAddress = EthernetAddress([0x00, 0x16, 0x3e, 0x5e, 0x6c, 0x00]);
    const B: EthernetAddress = EthernetAddress([0xfe, 0xff, 0xff, 0xff, 0xff, 0xff]);
    const IP_A: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 1);
    const IP_B: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 17);

    #[test]
    fn arp_frames() {
        let mut buf = [0xa5u8; 64];
        let n = arp_request(&mut buf, A, IP_A, IP_B).unwrap();
        assert_eq!(n, 42);
        assert_eq!(buf[42], 0xa5);
        let f = ethernet::Frame::new_checked(&buf[..n]).unwrap();
        assert_eq!(f.dst_addr(), EthernetAddress::BROADCAST);
        let r = arp::Repr::parse(&arp::Packet::new_checked(f.payload()).unwrap()).unwrap();
        assert_eq!(r.target_protocol_addr, IP_B);
        let n = arp_reply(&mut buf, A, IP_A, B, IP_B).unwrap();
        let f = ethernet::Frame::new_checked(&buf[..n]).unwrap();
        let r = arp::Repr::parse(&arp::Packet::new_checked(f.payload()).unwrap()).unwrap();
        assert_eq!((r.operation, r.target_hardware_addr), (arp::Operation::Reply, B));
        let n = gratuitous_arp(&mut buf, A, IP_A).unwrap();
        let f = ethernet::Frame::new_checked(&buf[..n]).unwrap();
        let r = arp::Repr::parse(&arp::Packet::new_checked(f.payload()).unwrap()).unwrap();
        assert_eq!(r.source_protocol_addr, r.target_protocol_addr);
        assert!(arp_request(&mut buf[..41], A, IP_A, IP_B).is_err());
    }

    fn udp_frame() -> Vec<u8> {
        let mut buf = vec![0u8; 200];
        let n = udp_ipv4(&mut buf, B, A, (IP_B, 40000), (Ipv4Addr::new(8, 8, 8, 8), 53), &[7; 30]).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn icmpv4_errors_quote_header_and_8_bytes() {
        let orig = udp_frame();
        let ip = &orig[14..];
        let mut buf = [0xa5u8; 200];
        let n = icmpv4_error(&mut buf, A, B, IP_A, Icmpv4Error::AdminProhibited, ip).unwrap();
        assert_eq!(n, 14 + 20 + 8 + 28);
        assert!(ipv4_checksums_valid(&buf[14..n]));
        let outer = ipv4::Packet::new_checked(&buf[14..n]).unwrap();
        assert_eq!(outer.dst_addr(), IP_B);
        let icmp = icmpv4::Packet::new_checked(outer.payload()).unwrap();
        assert_eq!((icmp.msg_type(), icmp.msg_code()), (icmpv4::Message::DstUnreachable, 13));
        assert_eq!(icmp.data(), &ip[..28]);
        let n = icmpv4_error(&mut buf, A, B, IP_A, Icmpv4Error::FragRequired { mtu: 1400 }, ip).unwrap();
        let icmp = icmpv4::Packet::new_checked(&buf[34..n]).unwrap();
        assert_eq!(icmp.next_hop_mtu(), 1400);
        assert!(icmpv4_error(&mut buf[..69], A, B, IP_A, Icmpv4Error::AdminProhibited, ip).is_err());
    }

    #[test]
    fn icmpv4_predicate() {
        let orig = udp_frame();
        let ip = orig[14..].to_vec();
        assert!(may_send_icmpv4_error(&ip, A));
        assert!(!may_send_icmpv4_error(&ip, EthernetAddress::BROADCAST));
        let mut bcast = ip.clone();
        bcast[16..20].copy_from_slice(&[255; 4]);
        assert!(!may_send_icmpv4_error(&bcast, A));
        let mut mcast_src = ip.clone();
        mcast_src[12] = 224;
        assert!(!may_send_icmpv4_error(&mcast_src, A));
        let mut frag = ip.clone();
        ipv4::Packet::new_unchecked(&mut frag[..]).set_fragment(false, false, 3);
        assert!(!may_send_icmpv4_error(&frag, A));
        // About an ICMP error: no; about an echo request: yes.
        let mut buf = [0u8; 200];
        let n = icmpv4_error(&mut buf, A, B, IP_A, Icmpv4Error::AdminProhibited, &ip).unwrap();
        assert!(!may_send_icmpv4_error(&buf[14..n], A));
        let mut e = [0u8; 12];
        icmpv4::Repr::EchoRequest { ident: 1, seq_no: 1, data: b"ping" }.emit(&mut e).unwrap();
        let mut f = [0u8; 100];
        let n = ipv4_frame(&mut f, A, B, ipv4_repr(IP_B, IP_A, IpProtocol::Icmp, 12, 0))
            .map(|p| p.copy_from_slice(&e))
            .map(|_| 46)
            .unwrap();
        assert!(may_send_icmpv4_error(&f[14..n], A));
        let mut buf2 = [0u8; 100];
        let m = icmpv4_echo_reply(&mut buf2, A, B, &f[14..n]).unwrap();
        assert!(ipv4_checksums_valid(&buf2[14..m]));
        assert_eq!(buf2[34], 0);
        assert!(!may_send_icmpv4_error(&[0u8; 10], A));
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn icmpv6_errors_and_predicate() {
        // A large UDP/IPv6 packet: the quote is cut so the error is exactly 1280 bytes.
        let mut orig = vec![0u8; 40 + 1400];
        let r = ipv6::Repr {
            src_addr: v6("fd00::17"),
            dst_addr: v6("2001:db8::1"),
            next_header: IpProtocol::Udp,
            payload_len: 1400,
            hop_limit: 64,
        };
        r.emit(&mut ipv6::Packet::new_unchecked(&mut orig[..])).unwrap();
        let mut buf = vec![0xa5u8; 1400];
        let kind = Icmpv6Error::DstUnreachable(icmpv6::DstUnreachable::AdminProhibit);
        assert!(may_send_icmpv6_error(&orig, A, kind));
        let n = icmpv6_error(&mut buf, A, B, v6("fd00::1"), kind, &orig).unwrap();
        assert_eq!(n, 14 + 1280);
        let ip = ipv6::Packet::new_checked(&buf[14..n]).unwrap();
        let icmp = icmpv6::Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum(ip.src_addr(), ip.dst_addr()));
        assert!(!may_send_icmpv6_error(&buf[14..n], A, kind));
        let mut mc = orig.clone();
        mc[24] = 0xff;
        assert!(!may_send_icmpv6_error(&mc, A, kind));
        assert!(may_send_icmpv6_error(&mc, A, Icmpv6Error::PktTooBig { mtu: 1280 }));
        assert!(!may_send_icmpv6_error(&orig, EthernetAddress([0x33, 0x33, 0, 0, 0, 1]), kind));
        // Small packet: quoted whole.
        orig.truncate(48);
        orig[4..6].copy_from_slice(&8u16.to_be_bytes());
        let n = icmpv6_error(&mut buf, A, B, v6("fd00::1"), Icmpv6Error::TimeExceeded(0), &orig).unwrap();
        assert_eq!(n, 14 + 40 + 8 + 48);
    }

    #[test]
    fn ndp_and_echo6() {
        let mut buf = [0xa5u8; 200];
        let n = ndp_neighbor_solicit(&mut buf, A, v6("fe80::1"), v6("fe80::216:3eff:fe5e:6c0a")).unwrap();
        let ip = ipv6::Packet::new_checked(&buf[14..n]).unwrap();
        assert_eq!(ip.dst_addr(), v6("ff02::1:ff5e:6c0a"));
        assert_eq!(&buf[0..6], &[0x33, 0x33, 0xff, 0x5e, 0x6c, 0x0a]);
        let n = ndp_neighbor_advert(&mut buf, A, B, v6("fe80::1"), v6("fe80::2"), v6("fe80::1"), A, 0x60).unwrap();
        let ip = ipv6::Packet::new_checked(&buf[14..n]).unwrap();
        assert_eq!(ip.hop_limit(), 255);
        let r = icmpv6::Repr::parse(&icmpv6::Packet::new_checked(ip.payload()).unwrap(), ip.src_addr(), ip.dst_addr())
            .unwrap();
        assert_eq!(r, icmpv6::Repr::NeighborAdvert { flags: 0x60, target_addr: v6("fe80::1"), lladdr: Some(A) });

        let mut req = [0u8; 14 + 40 + 12];
        let e = icmpv6::Repr::EchoRequest { ident: 3, seq_no: 4, data: b"ping" };
        let m = icmpv6_frame(&mut req, B, A, v6("fd00::17"), v6("fd00::1"), 64, e).unwrap();
        let n = icmpv6_echo_reply(&mut buf, A, B, &req[14..m]).unwrap();
        let ip = ipv6::Packet::new_checked(&buf[14..n]).unwrap();
        let r = icmpv6::Repr::parse(&icmpv6::Packet::new_checked(ip.payload()).unwrap(), ip.src_addr(), ip.dst_addr())
            .unwrap();
        assert_eq!(r, icmpv6::Repr::EchoReply { ident: 3, seq_no: 4, data: b"ping" });
        assert_eq!(ip.src_addr(), v6("fd00::1"));
    }

    #[test]
    fn dns_query_frame() {
        let mut buf = [0u8; 300];
        let n = dns_query_ipv4(&mut buf, A, B, (IP_A, 33333), IP_B, 0x4242, "example.com", dns::Type::A).unwrap();
        assert!(ipv4_checksums_valid(&buf[14..n]));
        let u = udp::Packet::new_checked(&buf[34..n]).unwrap();
        let d = dns::Packet::new_checked(u.payload()).unwrap();
        assert_eq!(d.id(), 0x4242);
        assert!(d.questions().next().unwrap().unwrap().name.eq_dotted("example.com"));
    }
}
