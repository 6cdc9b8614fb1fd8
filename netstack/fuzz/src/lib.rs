//! Shared bodies of the fuzz targets: each parses untrusted bytes and touches every
//! accessor, so that any panic (out-of-bounds, overflow in debug) is found.
#![forbid(unsafe_code)]

use netstack::*;
use std::hint::black_box;

pub fn arp(data: &[u8]) {
    if let Ok(p) = arp::Packet::new_checked(data) {
        black_box((p.hardware_type(), p.protocol_type(), p.operation()));
        black_box((p.source_hardware_addr(), p.source_protocol_addr()));
        black_box((p.target_hardware_addr(), p.target_protocol_addr()));
        if let Ok(r) = arp::Repr::parse(&p) {
            let mut out = [0u8; 28];
            r.emit(&mut arp::Packet::new_unchecked(&mut out[..]));
            assert_eq!(arp::Repr::parse(&arp::Packet::new_checked(&out[..]).unwrap()).unwrap(), r);
        }
    }
}

pub fn ipv4(data: &[u8]) {
    if let Ok(p) = ipv4::Packet::new_checked(data) {
        black_box((p.version(), p.dscp(), p.ecn(), p.ident(), p.flags(), p.frag_offset()));
        black_box((p.ttl(), p.next_header(), p.checksum(), p.src_addr(), p.dst_addr()));
        black_box((p.options(), p.payload(), p.verify_checksum(), p.is_fragment()));
        if let Ok(r) = ipv4::Repr::parse(&p) {
            let mut out = [0u8; 20];
            r.emit(&mut ipv4::Packet::new_unchecked(&mut out[..])).unwrap();
        }
        let mut copy = data.to_vec();
        let mut m = ipv4::Packet::new_unchecked(&mut copy[..]);
        m.decrement_ttl();
        m.fill_checksum();
        black_box(m.payload_mut().len());
        transport(p.next_header(), p.src_addr().into(), p.dst_addr().into(), p.payload(), !p.is_non_first_fragment());
        black_box(builder::may_send_icmpv4_error(data, EthernetAddress([2, 0, 0, 0, 0, 1])));
        let mut buf = [0u8; 1600];
        let _ = builder::icmpv4_error(
            &mut buf,
            EthernetAddress::ZERO,
            EthernetAddress::ZERO,
            p.dst_addr(),
            builder::Icmpv4Error::AdminProhibited,
            data,
        );
        let _ = builder::icmpv4_echo_reply(&mut buf, EthernetAddress::ZERO, EthernetAddress::ZERO, data);
    }
    if let Ok(q) = ipv4::Packet::new_quoted(data) {
        black_box((q.payload(), q.options(), q.src_addr()));
    }
}

pub fn ipv6(data: &[u8]) {
    if let Ok(p) = ipv6::Packet::new_checked(data) {
        black_box((p.version(), p.traffic_class(), p.flow_label(), p.hop_limit(), p.src_addr(), p.dst_addr()));
        black_box(ipv6::Repr::parse(&p).ok());
        if let Ok((u, rest)) = p.upper_layer_payload() {
            transport(u.protocol, p.src_addr().into(), p.dst_addr().into(), rest, !u.is_non_first_fragment());
        }
        for kind in [
            builder::Icmpv6Error::PktTooBig { mtu: 1280 },
            builder::Icmpv6Error::DstUnreachable(icmpv6::DstUnreachable::AdminProhibit),
        ] {
            black_box(builder::may_send_icmpv6_error(data, EthernetAddress([2, 0, 0, 0, 0, 1]), kind));
        }
        let mut buf = [0u8; 1400];
        let _ = builder::icmpv6_error(
            &mut buf,
            EthernetAddress::ZERO,
            EthernetAddress::ZERO,
            p.dst_addr(),
            builder::Icmpv6Error::TimeExceeded(0),
            data,
        );
        let _ = builder::icmpv6_echo_reply(&mut buf, EthernetAddress::ZERO, EthernetAddress::ZERO, data);
    }
    if let Ok(q) = ipv6::Packet::new_quoted(data) {
        black_box((q.payload(), q.upper_layer().ok()));
    }
    if let Some((&first, rest)) = data.split_first() {
        black_box(ipv6::walk_ext_headers(IpProtocol::from(first), rest).ok());
    }
}

fn transport(proto: IpProtocol, src: IpAddr, dst: IpAddr, data: &[u8], has_header: bool) {
    if !has_header {
        return;
    }
    match (proto, src, dst) {
        (IpProtocol::Tcp, ..) => tcp(data, src, dst),
        (IpProtocol::Udp, ..) => udp(data, src, dst),
        (IpProtocol::Icmp, ..) => icmpv4(data),
        (IpProtocol::Icmpv6, IpAddr::V6(s), IpAddr::V6(d)) => icmpv6(data, s, d),
        _ => {}
    }
}

pub fn tcp(data: &[u8], src: IpAddr, dst: IpAddr) {
    if let Ok(p) = tcp::Packet::new_checked(data) {
        black_box((p.src_port(), p.dst_port(), p.seq_number(), p.ack_number(), p.flags(), p.reserved()));
        black_box((p.window_len(), p.urgent_at(), p.options_len(), p.payload(), p.verify_checksum(src, dst)));
        for o in p.option_iter() {
            black_box(o.ok());
        }
        if let Ok(r) = tcp::Repr::parse(&p, src, dst) {
            let mut out = vec![0u8; r.buffer_len()];
            assert_eq!(r.emit(&mut out, src, dst).unwrap(), r.buffer_len());
        }
    }
}

pub fn udp(data: &[u8], src: IpAddr, dst: IpAddr) {
    if let Ok(p) = udp::Packet::new_checked(data) {
        black_box((p.src_port(), p.dst_port(), p.len(), p.checksum(), p.verify_checksum(src, dst)));
        if let Ok(r) = udp::Repr::parse(&p, src, dst) {
            let mut out = vec![0u8; r.buffer_len(p.payload().len())];
            r.emit(&mut out, src, dst, p.payload()).unwrap();
        }
        if p.src_port() == 53 || p.dst_port() == 53 {
            dns(p.payload());
        }
    }
}

pub fn icmpv4(data: &[u8]) {
    if let Ok(p) = icmpv4::Packet::new_checked(data) {
        black_box((p.msg_type(), p.msg_code(), p.echo_ident(), p.echo_seq_no(), p.next_hop_mtu(), p.pointer()));
        black_box((p.data(), p.verify_checksum()));
        if let Ok(q) = p.quoted_packet() {
            black_box((q.src_addr(), q.dst_addr(), q.payload()));
        }
        if let Ok(r) = icmpv4::Repr::parse(&p) {
            let mut out = vec![0u8; r.buffer_len()];
            r.emit(&mut out).unwrap();
        }
    }
}

pub fn icmpv6(data: &[u8], src: Ipv6Addr, dst: Ipv6Addr) {
    if let Ok(p) = icmpv6::Packet::new_checked(data) {
        black_box((p.msg_type(), p.msg_code(), p.echo_ident(), p.echo_seq_no(), p.mtu(), p.pointer()));
        black_box((p.na_flags(), p.target_addr(), p.data(), p.verify_checksum(src, dst)));
        for o in p.ndp_options() {
            black_box(o.ok());
        }
        if let Ok(q) = p.quoted_packet() {
            black_box((q.src_addr(), q.payload(), q.upper_layer().ok()));
        }
        if let Ok(r) = icmpv6::Repr::parse(&p, src, dst) {
            let mut out = vec![0u8; r.buffer_len()];
            r.emit(&mut out, src, dst).unwrap();
        }
    }
}

pub fn dns(data: &[u8]) {
    if let Ok(p) = dns::Packet::new_checked(data) {
        black_box((p.id(), p.flags(), p.opcode(), p.rcode(), p.is_response()));
        let mut text = [0u8; 300];
        for q in p.questions() {
            if let Ok(q) = q {
                black_box(q.name.write_dotted(&mut text).ok());
                black_box(q.name.eq_dotted("www.example.com"));
            }
        }
        for r in p.records() {
            if let Ok((_, r)) = r {
                black_box(r.name.write_dotted(&mut text).ok());
                if let dns::RecordData::Cname(n) = r.data {
                    black_box(n.eq_dotted("example.com"));
                }
            }
        }
        black_box(p.answers().count());
    }
}

pub fn frame(data: &[u8]) {
    let Ok(f) = ethernet::Frame::new_checked(data) else { return };
    black_box((f.src_addr(), f.dst_addr()));
    match f.ethertype() {
        ethernet::EtherType::Arp => arp(f.payload()),
        ethernet::EtherType::Ipv4 => ipv4(f.payload()),
        ethernet::EtherType::Ipv6 => ipv6(f.payload()),
        _ => {}
    }
}

/// Parse an IPv4 packet, make every checksum valid by a full recompute, rewrite
/// addresses/ports with incremental checksums (with and without `csum_blank`), and verify
/// the result by a full recompute. The last 11 input bytes choose the rewrite.
pub fn nat_rewrite(input: &[u8]) {
    if input.len() < 11 {
        return;
    }
    let (data, ctl) = input.split_at(input.len() - 11);
    let mut pkt = data.to_vec();
    let Ok(ip) = ipv4::Packet::new_checked(&pkt[..]) else { return };
    let ihl = ip.header_len();
    let total = usize::from(ip.total_len());
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let proto = ip.next_header();
    let frag = ip.is_fragment();
    ipv4::Packet::new_unchecked(&mut pkt[..]).fill_checksum();
    // Make the L4 checksum valid (full recompute) when the whole datagram is present.
    let l4 = &mut pkt[ihl..total];
    let udp_ok = proto == IpProtocol::Udp && udp::Packet::new_checked(&*l4).is_ok();
    let mut l4_len = l4.len();
    if !frag {
        match proto {
            IpProtocol::Tcp if l4.len() >= 20 => {
                tcp::Packet::new_unchecked(&mut *l4).fill_checksum(src.into(), dst.into())
            }
            IpProtocol::Udp if udp_ok => {
                l4_len = usize::from(udp::Packet::new_unchecked(&*l4).len());
                // Keep "no checksum" when the input says so.
                if udp::Packet::new_unchecked(&*l4).checksum() != 0 {
                    udp::Packet::new_unchecked(&mut *l4).fill_checksum(src.into(), dst.into());
                }
            }
            IpProtocol::Icmp if l4.len() >= 8 => icmpv4::Packet::new_unchecked(&mut *l4).fill_checksum(),
            _ => {}
        }
    }
    if !nat::ipv4_checksums_valid(&pkt) {
        // Too short to carry its L4 header: nothing to fill.
        return;
    }
    let a = |i: usize| Ipv4Addr::new(ctl[i], ctl[i + 1], ctl[i + 2], ctl[i + 3]);
    let sel = ctl[10];
    let rw = nat::Rewrite {
        src_addr: (sel & 1 != 0).then(|| a(0)),
        dst_addr: (sel & 2 != 0).then(|| a(4)),
        src_port: (sel & 4 != 0).then(|| u16::from_be_bytes([ctl[8], ctl[9]])),
        dst_port: (sel & 8 != 0).then(|| u16::from_be_bytes([ctl[9], ctl[8]])),
    };
    let before = pkt.clone();
    let csum_blank = sel & 16 != 0;
    if !csum_blank {
        let mut copy = pkt.clone();
        match nat::rewrite_icmpv4_error_quote(&mut copy, &rw) {
            Ok(()) => {
                assert!(nat::ipv4_checksums_valid(&copy), "ICMP checksum after quote rewrite");
                let ip = ipv4::Packet::new_checked(&copy[..]).unwrap();
                let icmp = icmpv4::Packet::new_checked(ip.payload()).unwrap();
                let q = icmp.quoted_packet().unwrap();
                let qsum = checksum::data(q.header());
                let before_q = ipv4::Packet::new_checked(&pkt[..]).unwrap();
                let before_q = icmpv4::Packet::new_checked(before_q.payload()).unwrap();
                let was_valid = checksum::data(before_q.quoted_packet().unwrap().header()) == 0xffff;
                assert!(!was_valid || qsum == 0xffff, "quoted header checksum");
            }
            Err(_) => assert_eq!(copy, pkt, "a refused quote rewrite changed the packet"),
        }
        match nat::rewrite_ipv4(&mut pkt, &rw, false) {
            Ok(()) => assert!(nat::ipv4_checksums_valid(&pkt), "incremental update disagrees with recompute"),
            Err(_) => assert_eq!(pkt, before, "a refused rewrite changed the packet"),
        }
        return;
    }
    // csum_blank: only for a whole TCP/UDP datagram with a checksum; put the pseudo-header
    // sum in the field, rewrite, then complete the checksum like an offload engine would.
    if frag || !matches!(proto, IpProtocol::Tcp | IpProtocol::Udp) || (proto == IpProtocol::Udp && !udp_ok) {
        return;
    }
    if proto == IpProtocol::Tcp && total - ihl < 20 {
        return;
    }
    let at = ihl + if proto == IpProtocol::Tcp { 16 } else { 6 };
    let seed = checksum::pseudo_header_v4(src, dst, proto.into(), l4_len as u16);
    pkt[at..at + 2].copy_from_slice(&seed.to_be_bytes());
    if nat::rewrite_ipv4(&mut pkt, &rw, true).is_err() {
        return;
    }
    let ip = ipv4::Packet::new_checked(&pkt[..]).unwrap();
    let want = checksum::pseudo_header_v4(ip.src_addr(), ip.dst_addr(), proto.into(), l4_len as u16);
    let got = u16::from_be_bytes([pkt[at], pkt[at + 1]]);
    assert!(got == want || (got == 0 && want == 0xffff) || (got == 0xffff && want == 0), "partial sum");
    let c = !checksum::data(&pkt[ihl..ihl + l4_len]);
    let c = if proto == IpProtocol::Udp { checksum::udp_final(c) } else { c };
    pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
    assert!(nat::ipv4_checksums_valid(&pkt));
}

/// Checksum: the fast sum must equal a byte loop, for every alignment.
pub fn checksum_equiv(data: &[u8]) {
    let mut acc: u32 = 0;
    for (i, b) in data.iter().enumerate() {
        acc += if i % 2 == 0 { u32::from(*b) << 8 } else { u32::from(*b) };
        acc = (acc & 0xffff) + (acc >> 16);
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    assert_eq!(checksum::data(data), acc as u16);
}
