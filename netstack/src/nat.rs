//! In-place address/port rewriting of IPv4 packets with incremental checksum fix-up
//! (RFC 1624), for the firewall's NAT.
//!
//! The IPv4 header checksum and the TCP/UDP checksum (whose pseudo-header covers the
//! addresses) are both updated; ports change only the L4 checksum. For ICMP echo request and
//! reply, the identifier plays the role of the port and the ICMP checksum (no pseudo-header)
//! is updated.
//!
//! **`csum_blank`** (Xen's `NETTXF_csum_blank` / `NETRXF_csum_blank`, checksum offload): the
//! TCP/UDP checksum field holds only the *sum* of the pseudo-header, to be completed by
//! whoever computes the checksum later. An address change is then applied to that field as
//! a plain one's-complement sum ([`checksum::update_partial_v4_addr`]) and a port change
//! needs nothing, since ports are not in the pseudo-header.
//!
//! **UDP**: a zero checksum field (no checksum, IPv4 only) is left at zero; an update that
//! yields 0 is written as `0xffff`.

use crate::checksum;
use crate::icmpv4;
use crate::ip::IpProtocol;
use crate::ipv4;
use crate::{Error, Result, read_u16, tcp, write_u16};
use core::net::Ipv4Addr;

/// What to change. `None` leaves a field alone.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    /// New source address.
    pub src_addr: Option<Ipv4Addr>,
    /// New source port (for ICMP echo: the identifier).
    pub src_port: Option<u16>,
    /// New destination address.
    pub dst_addr: Option<Ipv4Addr>,
    /// New destination port (for ICMP echo: the identifier, if `src_port` is `None`).
    pub dst_port: Option<u16>,
}

/// Where the L4 checksum and ports live, per protocol.
struct L4 {
    csum_at: usize,
    src_port_at: usize,
    dst_port_at: usize,
    pseudo: bool,
    udp: bool,
}

/// Apply `rw` to the IPv4 packet at the start of `packet` (which must pass
/// [`ipv4::Packet::check_len`]). All checks happen before anything is written, so on `Err`
/// the packet is unchanged. `Err` if the packet is malformed, or a port change is asked for
/// a packet without ports (other protocols, non-first fragments, truncated L4 headers, ICMP
/// other than echo). An address-only change of a non-first fragment updates only the IP
/// header (the L4 checksum is in the first fragment).
pub fn rewrite_ipv4(packet: &mut [u8], rw: &Rewrite, csum_blank: bool) -> Result<()> {
    let ip = ipv4::Packet::new_checked(&*packet)?;
    let ihl = ip.header_len();
    let payload_len = ip.payload().len();
    let old_src = ip.src_addr();
    let old_dst = ip.dst_addr();
    let has_l4 = !ip.is_non_first_fragment();
    let want_ports = rw.src_port.is_some() || rw.dst_port.is_some();

    let l4 = if !has_l4 {
        None
    } else {
        match ip.next_header() {
            IpProtocol::Tcp if payload_len >= 20 => {
                Some(L4 { csum_at: 16, src_port_at: 0, dst_port_at: 2, pseudo: true, udp: false })
            }
            IpProtocol::Udp if payload_len >= 8 => {
                Some(L4 { csum_at: 6, src_port_at: 0, dst_port_at: 2, pseudo: true, udp: true })
            }
            IpProtocol::Icmp if payload_len >= icmpv4::HEADER_LEN => {
                let ty = icmpv4::Message::from(ip.payload()[0]);
                if matches!(ty, icmpv4::Message::EchoRequest | icmpv4::Message::EchoReply) {
                    Some(L4 { csum_at: 2, src_port_at: 4, dst_port_at: 4, pseudo: false, udp: false })
                } else {
                    None
                }
            }
            _ => None,
        }
    };
    if want_ports && l4.is_none() {
        return Err(Error);
    }
    // Ports and ICMP identifiers: the ICMP identifier is one field.
    let port_changes: [(usize, Option<u16>); 2] = match &l4 {
        Some(l) if !l.pseudo => [(l.src_port_at, rw.src_port.or(rw.dst_port)), (0, None)],
        Some(l) => [(l.src_port_at, rw.src_port), (l.dst_port_at, rw.dst_port)],
        None => [(0, None), (0, None)],
    };

    // IP header.
    let mut ipm = ipv4::Packet::new_unchecked(&mut *packet);
    let mut c = ipm.checksum();
    if let Some(a) = rw.src_addr {
        c = checksum::update_v4_addr(c, old_src, a);
        ipm.set_src_addr(a);
    }
    if let Some(a) = rw.dst_addr {
        c = checksum::update_v4_addr(c, old_dst, a);
        ipm.set_dst_addr(a);
    }
    ipm.set_checksum(c);

    let Some(l4) = l4 else { return Ok(()) };
    let seg = &mut packet[ihl..];
    let old = read_u16(seg, l4.csum_at);
    let mut c = old;
    let skip = l4.udp && old == 0 && !csum_blank;
    let partial = csum_blank && l4.pseudo;
    if l4.pseudo && !skip {
        for (o, n) in [(old_src, rw.src_addr), (old_dst, rw.dst_addr)] {
            if let Some(n) = n {
                c = if partial { checksum::update_partial_v4_addr(c, o, n) } else { checksum::update_v4_addr(c, o, n) };
            }
        }
    }
    for (at, port) in port_changes {
        if let Some(p) = port {
            let o = read_u16(seg, at);
            if !skip && !partial {
                c = checksum::update16(c, o, p);
            }
            write_u16(seg, at, p);
        }
    }
    if !skip {
        if l4.udp && !partial {
            c = checksum::udp_final(c);
        }
        if !l4.pseudo && c == 0 {
            // RFC 1624 eqn. 3 cannot tell the two one's-complement zeros apart: it gives 0
            // where the data sum is +0 (all-zero data) and the only valid checksum is
            // 0xffff. That needs an ICMP message whose other bytes are all zero (TCP/UDP
            // have the pseudo-header, IPv4 headers the version): check, it is rare.
            let icmp_len = payload_len;
            if seg[..icmp_len].iter().enumerate().all(|(i, &b)| b == 0 || i == l4.csum_at || i == l4.csum_at + 1) {
                c = 0xffff;
            }
        }
        write_u16(seg, l4.csum_at, c);
    }
    Ok(())
}

/// Apply `rw` to the original packet *quoted* inside the ICMPv4 error carried by the IPv4
/// packet `packet` (the reverse translation NAT owes an error about a translated flow): the
/// quoted addresses (with the quoted header checksum, updated incrementally), the quoted
/// ports or echo identifier, and the quoted UDP/TCP checksum when it lies within the quote.
/// The ICMP checksum is then recomputed in full (an error is small). The outer header is not
/// touched: rewrite it with [`rewrite_ipv4`] (address only). All checks happen first, so
/// on `Err` the packet is unchanged. `Err` if `packet` is not an unfragmented ICMPv4 error
/// with a whole quoted header, or ports are asked for and the quote has none.
pub fn rewrite_icmpv4_error_quote(packet: &mut [u8], rw: &Rewrite) -> Result<()> {
    let ip = ipv4::Packet::new_checked(&*packet)?;
    if ip.next_header() != IpProtocol::Icmp || ip.is_fragment() {
        return Err(Error);
    }
    let (ihl, total) = (ip.header_len(), usize::from(ip.total_len()));
    let icmp = icmpv4::Packet::new_checked(ip.payload())?;
    let q = icmp.quoted_packet()?;
    let (qihl, qsrc, qdst, qproto) = (q.header_len(), q.src_addr(), q.dst_addr(), q.next_header());
    // What is quoted after the header (not bounded by the quoted total length, which the
    // peer chose and may be anything).
    let quoted_l4 = icmp.data().get(qihl..).ok_or(Error)?;
    let l4_len = quoted_l4.len();
    let ports_ok = !q.is_non_first_fragment()
        && match qproto {
            IpProtocol::Tcp | IpProtocol::Udp => l4_len >= 4,
            IpProtocol::Icmp => {
                l4_len >= icmpv4::HEADER_LEN
                    && matches!(
                        icmpv4::Message::from(quoted_l4[0]),
                        icmpv4::Message::EchoRequest | icmpv4::Message::EchoReply
                    )
            }
            _ => false,
        };
    if (rw.src_port.is_some() || rw.dst_port.is_some()) && !ports_ok {
        return Err(Error);
    }
    let icmp_bytes = &mut packet[ihl..total];
    let quote = &mut icmp_bytes[icmpv4::HEADER_LEN..];
    // Quoted IP header.
    let mut qp = ipv4::Packet::new_unchecked(&mut *quote);
    let mut c = qp.checksum();
    if let Some(a) = rw.src_addr {
        c = checksum::update_v4_addr(c, qsrc, a);
        qp.set_src_addr(a);
    }
    if let Some(a) = rw.dst_addr {
        c = checksum::update_v4_addr(c, qdst, a);
        qp.set_dst_addr(a);
    }
    qp.set_checksum(c);
    // Quoted L4: ports, and its checksum if quoted.
    let l4 = &mut quote[qihl..];
    let csum_at = match qproto {
        IpProtocol::Tcp if l4.len() >= 18 => Some(16),
        IpProtocol::Udp if l4.len() >= 8 && read_u16(l4, 6) != 0 => Some(6),
        IpProtocol::Icmp if ports_ok => Some(2),
        _ => None,
    };
    let mut c = csum_at.map(|at| read_u16(l4, at));
    if qproto != IpProtocol::Icmp {
        for (o, n) in [(qsrc, rw.src_addr), (qdst, rw.dst_addr)] {
            if let (Some(n), Some(cc)) = (n, c.as_mut()) {
                *cc = checksum::update_v4_addr(*cc, o, n);
            }
        }
    }
    if ports_ok {
        let changes = if qproto == IpProtocol::Icmp {
            [(4, rw.src_port.or(rw.dst_port)), (4, None)]
        } else {
            [(0, rw.src_port), (2, rw.dst_port)]
        };
        for (at, p) in changes {
            if let Some(p) = p {
                if let Some(cc) = c.as_mut() {
                    *cc = checksum::update16(*cc, read_u16(l4, at), p);
                }
                write_u16(l4, at, p);
            }
        }
    }
    if let (Some(at), Some(mut cc)) = (csum_at, c) {
        if qproto == IpProtocol::Udp {
            cc = checksum::udp_final(cc);
        }
        write_u16(l4, at, cc);
    }
    let mut ic = icmpv4::Packet::new_unchecked(icmp_bytes);
    ic.fill_checksum();
    Ok(())
}

/// Recompute every checksum of an IPv4 packet from scratch and report whether the stored
/// ones are all valid: the header checksum, and for a whole (unfragmented) TCP, UDP or ICMP
/// datagram the L4 checksum (a zero UDP checksum counts as valid). A TCP, UDP or ICMP
/// payload too short for its header is invalid. Not bypassed when
/// fuzzing; meant for tests and for checking packets from untrusted peers.
pub fn ipv4_checksums_valid(packet: &[u8]) -> bool {
    let Ok(ip) = ipv4::Packet::new_checked(packet) else { return false };
    if checksum::data(ip.header()) != 0xffff {
        return false;
    }
    if ip.is_fragment() {
        return true;
    }
    let p = ip.payload();
    let (s, d) = (ip.src_addr(), ip.dst_addr());
    let pseudo = |proto: IpProtocol| checksum::pseudo_header_v4(s, d, proto.into(), p.len() as u16);
    match ip.next_header() {
        IpProtocol::Tcp => {
            tcp::Packet::new_checked(p).is_ok() && checksum::add(pseudo(IpProtocol::Tcp), checksum::data(p)) == 0xffff
        }
        IpProtocol::Udp => {
            let Ok(u) = crate::udp::Packet::new_checked(p) else { return false };
            if u.checksum() == 0 {
                return true;
            }
            let l = usize::from(u.len());
            checksum::add(checksum::pseudo_header_v4(s, d, 17, l as u16), checksum::data(&p[..l])) == 0xffff
        }
        IpProtocol::Icmp => p.len() >= icmpv4::HEADER_LEN && checksum::data(p) == 0xffff,
        _ => true,
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::udp;
    use core::net::IpAddr;

    fn ip_packet(proto: IpProtocol, l4: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 20 + l4.len()];
        ipv4::Repr {
            src_addr: Ipv4Addr::new(10, 137, 0, 17),
            dst_addr: Ipv4Addr::new(93, 184, 216, 34),
            next_header: proto,
            payload_len: l4.len(),
            ttl: 64,
            ident: 7,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
            tos: 0,
        }
        .emit(&mut ipv4::Packet::new_unchecked(&mut b[..]))
        .unwrap();
        b[20..].copy_from_slice(l4);
        b
    }

    fn tcp_packet() -> Vec<u8> {
        let s: IpAddr = Ipv4Addr::new(10, 137, 0, 17).into();
        let d: IpAddr = Ipv4Addr::new(93, 184, 216, 34).into();
        let mut seg = [0u8; 25];
        tcp::Repr {
            src_port: 40000,
            dst_port: 443,
            seq_number: 1,
            ack_number: 2,
            flags: tcp::flags::ACK | tcp::flags::PSH,
            window_len: 500,
            urgent_at: 0,
            options: &[],
            payload: b"hello",
        }
        .emit(&mut seg, s, d)
        .unwrap();
        ip_packet(IpProtocol::Tcp, &seg)
    }

    fn udp_packet(zero: bool) -> Vec<u8> {
        let s: IpAddr = Ipv4Addr::new(10, 137, 0, 17).into();
        let d: IpAddr = Ipv4Addr::new(93, 184, 216, 34).into();
        let mut dg = [0u8; 13];
        udp::Repr { src_port: 5353, dst_port: 53 }.emit(&mut dg, s, d, b"query").unwrap();
        if zero {
            dg[6] = 0;
            dg[7] = 0;
        }
        ip_packet(IpProtocol::Udp, &dg)
    }

    const NAT: Rewrite = Rewrite {
        src_addr: Some(Ipv4Addr::new(192, 168, 1, 200)),
        src_port: Some(61000),
        dst_addr: None,
        dst_port: None,
    };

    #[test]
    fn tcp_snat() {
        let mut p = tcp_packet();
        rewrite_ipv4(&mut p, &NAT, false).unwrap();
        assert!(ipv4_checksums_valid(&p));
        let ip = ipv4::Packet::new_checked(&p[..]).unwrap();
        assert_eq!(ip.src_addr(), Ipv4Addr::new(192, 168, 1, 200));
        assert_eq!(tcp::Packet::new_checked(ip.payload()).unwrap().src_port(), 61000);
        // Back again.
        let back =
            Rewrite { src_addr: Some(Ipv4Addr::new(10, 137, 0, 17)), src_port: Some(40000), ..Rewrite::default() };
        rewrite_ipv4(&mut p, &back, false).unwrap();
        assert_eq!(p, tcp_packet());
    }

    #[test]
    fn udp_dnat_and_zero_checksum() {
        let mut p = udp_packet(false);
        let rw = Rewrite { dst_addr: Some(Ipv4Addr::new(10, 139, 1, 1)), dst_port: Some(5300), ..Rewrite::default() };
        rewrite_ipv4(&mut p, &rw, false).unwrap();
        assert!(ipv4_checksums_valid(&p));
        assert_ne!(read_u16(&p, 26), 0);
        let mut z = udp_packet(true);
        rewrite_ipv4(&mut z, &rw, false).unwrap();
        assert_eq!(read_u16(&z, 26), 0);
        assert!(ipv4_checksums_valid(&z));
    }

    #[test]
    fn csum_blank_updates_pseudo_header_sum_only() {
        for mut p in [tcp_packet(), udp_packet(false)] {
            let proto = p[9];
            let at = if proto == 6 { 36 } else { 26 };
            let l4len = (p.len() - 20) as u16;
            let s = Ipv4Addr::new(10, 137, 0, 17);
            let d = Ipv4Addr::new(93, 184, 216, 34);
            // Put the partial checksum (pseudo-header sum) in the field.
            let partial = checksum::pseudo_header_v4(s, d, proto, l4len);
            write_u16(&mut p, at, partial);
            rewrite_ipv4(&mut p, &NAT, true).unwrap();
            let want = checksum::pseudo_header_v4(Ipv4Addr::new(192, 168, 1, 200), d, proto, l4len);
            assert_eq!(read_u16(&p, at), want);
            // Completing it like the offload engine gives a valid packet.
            let c = !checksum::add(0, checksum::data(&p[20..]));
            write_u16(&mut p, at, if proto == 17 { checksum::udp_final(c) } else { c });
            assert!(ipv4_checksums_valid(&p));
        }
    }

    #[test]
    fn icmp_echo_ident() {
        let mut e = [0u8; 12];
        icmpv4::Repr::EchoRequest { ident: 1, seq_no: 2, data: b"ping" }.emit(&mut e).unwrap();
        let mut p = ip_packet(IpProtocol::Icmp, &e);
        rewrite_ipv4(&mut p, &NAT, false).unwrap();
        assert!(ipv4_checksums_valid(&p));
        assert_eq!(read_u16(&p, 24), 61000);
    }

    #[test]
    fn icmp_error_quote() {
        // The firewall SNATed 10.137.0.17:5353 to 192.168.1.200:61000; an error comes back
        // quoting the translated datagram; translate the quote back.
        let mut orig = udp_packet(false);
        rewrite_ipv4(&mut orig, &NAT, false).unwrap();
        let mut frame = [0u8; 200];
        let n = crate::builder::icmpv4_error(
            &mut frame,
            crate::EthernetAddress::ZERO,
            crate::EthernetAddress::ZERO,
            Ipv4Addr::new(93, 184, 216, 34),
            crate::builder::Icmpv4Error::DstUnreachable(icmpv4::DstUnreachable::PortUnreachable),
            &orig,
        )
        .unwrap();
        let mut err = frame[14..n].to_vec();
        let back =
            Rewrite { src_addr: Some(Ipv4Addr::new(10, 137, 0, 17)), src_port: Some(5353), ..Rewrite::default() };
        rewrite_icmpv4_error_quote(&mut err, &back).unwrap();
        assert!(ipv4_checksums_valid(&err));
        let ip = ipv4::Packet::new_checked(&err[..]).unwrap();
        let icmp = icmpv4::Packet::new_checked(ip.payload()).unwrap();
        let q = icmp.quoted_packet().unwrap();
        assert!(q.verify_checksum());
        assert_eq!(q.src_addr(), Ipv4Addr::new(10, 137, 0, 17));
        // The quote is now the start of the untranslated datagram, checksums included.
        assert_eq!(icmp.data(), &udp_packet(false)[..28]);
        // Found by fuzzing: a quoted header whose total length is 0 but which is followed
        // by a quoted echo request must not panic.
        let mut odd = err.clone();
        let q = 20 + 8;
        odd[q + 2] = 0;
        odd[q + 3] = 0;
        odd[q + 9] = 1;
        odd[q + 20] = 8;
        ipv4::Packet::new_unchecked(&mut odd[q..]).fill_checksum();
        let _ = rewrite_icmpv4_error_quote(&mut odd, &back);
        // Not an error: refused, unchanged.
        let mut p = tcp_packet();
        let before = p.clone();
        assert!(rewrite_icmpv4_error_quote(&mut p, &back).is_err());
        assert_eq!(p, before);
    }

    #[test]
    fn icmp_all_zero_gets_ffff() {
        // Found by the nat_rewrite fuzz target: an echo reply whose bytes are all zero once
        // the identifier is rewritten to 0 needs checksum 0xffff, not 0.
        let mut e = [0u8; 9];
        icmpv4::Repr::EchoReply { ident: 0x1234, seq_no: 0, data: &[0] }.emit(&mut e).unwrap();
        let mut p = ip_packet(IpProtocol::Icmp, &e);
        let rw = Rewrite { src_port: Some(0), ..Rewrite::default() };
        rewrite_ipv4(&mut p, &rw, false).unwrap();
        assert_eq!(read_u16(&p, 22), 0xffff);
        assert!(ipv4_checksums_valid(&p));
    }

    #[test]
    fn refusals_leave_packet_unchanged() {
        let mut p = tcp_packet();
        p.truncate(20 + 10);
        p[3] = 30;
        ipv4::Packet::new_unchecked(&mut p[..]).fill_checksum();
        let before = p.clone();
        assert!(rewrite_ipv4(&mut p, &NAT, false).is_err());
        assert_eq!(p, before);
        // Address-only change of a non-first fragment works.
        let mut f = tcp_packet();
        let mut ip = ipv4::Packet::new_unchecked(&mut f[..]);
        ip.set_fragment(false, false, 100);
        ip.fill_checksum();
        assert!(rewrite_ipv4(&mut f, &NAT, false).is_err());
        let addr_only = Rewrite { src_addr: NAT.src_addr, ..Rewrite::default() };
        rewrite_ipv4(&mut f, &addr_only, false).unwrap();
        assert!(ipv4_checksums_valid(&f));
        assert!(rewrite_ipv4(&mut [0u8; 10], &addr_only, false).is_err());
    }
}
