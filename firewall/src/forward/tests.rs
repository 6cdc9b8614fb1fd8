//! Forwarding tests: every decision of the pipeline, with frames built by netstack's wire
//! code and every produced frame checked field by field with checksums recomputed in full.

use core::net::Ipv4Addr;

use netstack::ethernet::{self, EtherType, EthernetAddress};
use netstack::ip::IpProtocol;
use netstack::nat::ipv4_checksums_valid;
use netstack::tcp::flags::{ACK, SYN};
use netstack::{checksum, icmpv4, ipv4, tcp, udp};
use proptest::prelude::*;

use super::*;
use crate::conntrack::{ClientId, Invalid};
use crate::rules::{DropReason, RuleNumber};
use crate::testutil::{Ip, ip_packet, tcp_seg, udp_dgram};

type Fw = Firewall<64, 256, 8>;

const SEC: u64 = 1_000_000_000;
const UPLINK: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 6);
const SYS_NET: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 1);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 6);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 17);
const CLIENT2: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 18);
const REMOTE: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);
const DNS1: Ipv4Addr = Ipv4Addr::new(10, 139, 1, 1);
const DNS2: Ipv4Addr = Ipv4Addr::new(10, 139, 1, 2);
const UP_MAC: EthernetAddress = EthernetAddress([0x00, 0x16, 0x3e, 0x5e, 0x6c, 0x00]);
const NET_MAC: EthernetAddress = EthernetAddress([0x00, 0x16, 0x3e, 0x5e, 0x6c, 0x01]);
const FE: EthernetAddress = EthernetAddress([0xfe, 0xff, 0xff, 0xff, 0xff, 0xff]);
const C1_MAC: EthernetAddress = EthernetAddress([0x00, 0x16, 0x3e, 0x5e, 0x6c, 0x11]);
const C2_MAC: EthernetAddress = EthernetAddress([0x00, 0x16, 0x3e, 0x5e, 0x6c, 0x12]);

fn c(n: u16) -> ClientId {
    ClientId::new(n).unwrap()
}

fn uplink_cfg(mtu: u16) -> UplinkConfig {
    UplinkConfig {
        addr: UPLINK,
        netmask: Ipv4Addr::BROADCAST,
        gateway: SYS_NET,
        mac: UP_MAC,
        gateway_mac: NET_MAC,
        mtu,
    }
}

/// An engine with two clients; client 1 accepts everything but TCP port 25 (dropped by rule
/// 0001) and client 2 has no rules committed.
fn engine() -> Box<Fw> {
    let mut fw = Box::new(Fw::new());
    fw.rekey(*b"0123456789abcdef");
    fw.set_uplink(Some(uplink_cfg(1500)));
    fw.set_downlink(Some(DownlinkConfig::qubes(GATEWAY)));
    fw.set_dns_servers(Some(DNS1), Some(DNS2));
    fw.add_client(c(1), ClientConfig { addr: CLIENT, mac: C1_MAC }).unwrap();
    fw.add_client(c(2), ClientConfig { addr: CLIENT2, mac: C2_MAC }).unwrap();
    let rules: [(&[u8], &[u8]); 3] =
        [(b"policy", b"drop"), (b"0001", b"action=drop proto=tcp dstports=25-25"), (b"0002", b"action=accept")];
    fw.commit_rules(c(1), rules).unwrap();
    fw
}

fn tcp_ip(h: &Ip, sp: u16, dp: u16, f: u16, payload: &[u8]) -> Vec<u8> {
    ip_packet(h, &tcp_seg(h.src, sp, h.dst, dp, f, payload))
}

fn udp_ip(h: &Ip, sp: u16, dp: u16, payload: &[u8]) -> Vec<u8> {
    ip_packet(h, &udp_dgram(h.src, sp, h.dst, dp, payload))
}

fn echo_ip(h: &Ip, ident: u16, data: &[u8]) -> Vec<u8> {
    let mut e = vec![0u8; 8 + data.len()];
    icmpv4::Repr::EchoRequest { ident, seq_no: 9, data }.emit(&mut e).unwrap();
    ip_packet(h, &e)
}

/// An Ethernet frame in a 4 KiB slot; returns the slot and the frame length.
fn frame(dst: EthernetAddress, src: EthernetAddress, ty: EtherType, payload: &[u8]) -> (Vec<u8>, usize) {
    let mut b = vec![0u8; 4096];
    ethernet::Repr { src_addr: src, dst_addr: dst, ethertype: ty }
        .emit(&mut ethernet::Frame::new_unchecked(&mut b[..]));
    b[14..14 + payload.len()].copy_from_slice(payload);
    (b, 14 + payload.len())
}

fn from_client(ip: &[u8]) -> (Vec<u8>, usize) {
    frame(FE, C1_MAC, EtherType::Ipv4, ip)
}

fn from_uplink(ip: &[u8]) -> (Vec<u8>, usize) {
    frame(UP_MAC, NET_MAC, EtherType::Ipv4, ip)
}

struct Out {
    d: Decision,
    buf: Vec<u8>,
    reply: Vec<u8>,
}

fn rng() -> impl FnMut() -> u32 {
    let mut r = 12345u32;
    move || {
        r = r.wrapping_mul(1_103_515_245).wrapping_add(12345);
        r
    }
}

fn run(fw: &mut Fw, from: Ingress, (mut buf, len): (Vec<u8>, usize), csum: ChecksumState, now: u64) -> Out {
    let mut reply = vec![0u8; 4096];
    let d = fw.process(Rx { from, len, csum }, &mut buf, &mut reply, now, &mut rng());
    Out { d, buf, reply }
}

fn client(fw: &mut Fw, ip: &[u8], now: u64) -> Out {
    run(fw, Ingress::Client(c(1)), from_client(ip), ChecksumState::Complete, now)
}

fn uplink(fw: &mut Fw, ip: &[u8], now: u64) -> Out {
    run(fw, Ingress::Uplink, from_uplink(ip), ChecksumState::Complete, now)
}

fn macs(f: &[u8]) -> (EthernetAddress, EthernetAddress) {
    let e = ethernet::Frame::new_checked(f).unwrap();
    (e.src_addr(), e.dst_addr())
}

/// The IPv4 packet of a forwarded frame.
fn fwd_ip(o: &Out) -> &[u8] {
    match o.d {
        Decision::Forward { len, .. } => &o.buf[14..len],
        d => panic!("not forwarded: {d:?}"),
    }
}

/// Check an ICMP error reply completely: Ethernet addresses, IP addresses, TTL 64, TOS 0xc0,
/// type/code, the quote (the original header and 8 bytes), every checksum.
fn check_error(
    o: &Out,
    to: Egress,
    macs_want: (EthernetAddress, EthernetAddress),
    from: Ipv4Addr,
    original: &[u8],
    ty: u8,
    code: u8,
) -> icmpv4::Packet<Vec<u8>> {
    let Decision::Reply { to: t, len, dropped: Some(_) } = o.d else { panic!("no error reply: {:?}", o.d) };
    assert_eq!(t, to);
    let f = &o.reply[..len];
    assert_eq!(macs(f), macs_want);
    let ip = ipv4::Packet::new_checked(&f[14..]).unwrap();
    assert!(ipv4_checksums_valid(&f[14..]), "checksums");
    assert_eq!((ip.src_addr(), ip.dst_addr()), (from, ipv4::Packet::new_checked(original).unwrap().src_addr()));
    assert_eq!((ip.ttl(), ip.dscp() << 2 | ip.ecn(), ip.next_header()), (64, 0xc0, IpProtocol::Icmp));
    let icmp = icmpv4::Packet::new_checked(ip.payload().to_vec()).unwrap();
    assert_eq!((u8::from(icmp.msg_type()), icmp.msg_code()), (ty, code));
    assert_eq!(&ip.payload()[8..], &original[..28], "quote: header and 8 bytes");
    assert_eq!(len, 14 + 20 + 8 + 28);
    icmp
}

fn client_h() -> Ip {
    Ip::new(CLIENT, REMOTE, IpProtocol::Tcp)
}

// ---------------------------------------------------------------------------------------
// forwarding both ways

#[test]
fn tcp_flow_forwarded_with_nat_both_ways() {
    let mut fw = engine();
    let syn = tcp_ip(&client_h(), 40000, 443, SYN, b"");
    let o = client(&mut fw, &syn, 0);
    assert_eq!(o.d, Decision::Forward { to: Egress::Uplink, len: 14 + syn.len(), csum: ChecksumState::Complete });
    assert_eq!(macs(&o.buf), (UP_MAC, NET_MAC));
    let p = fwd_ip(&o);
    assert!(ipv4_checksums_valid(p));
    let ip = ipv4::Packet::new_checked(p).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr(), ip.ttl()), (UPLINK, REMOTE, 63));
    let t = tcp::Packet::new_checked(ip.payload()).unwrap();
    assert_eq!((t.src_port(), t.dst_port()), (40000, 443), "Linux masquerade keeps the port when free");
    // Everything else is unchanged (but the TCP checksum).
    for i in 24..p.len() {
        if !(36..38).contains(&i) {
            assert_eq!(p[i], syn[i], "byte {i}");
        }
    }

    let sa = tcp_ip(&Ip::new(REMOTE, UPLINK, IpProtocol::Tcp), 443, 40000, SYN | ACK, b"");
    let o = uplink(&mut fw, &sa, SEC);
    assert_eq!(o.d, Decision::Forward { to: Egress::Client(c(1)), len: 14 + sa.len(), csum: ChecksumState::Complete });
    assert_eq!(macs(&o.buf), (FE, C1_MAC));
    let p = fwd_ip(&o);
    assert!(ipv4_checksums_valid(p));
    let ip = ipv4::Packet::new_checked(p).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr(), ip.ttl()), (REMOTE, CLIENT, 63));
    assert_eq!(tcp::Packet::new_checked(ip.payload()).unwrap().dst_port(), 40000);
    let n = fw.counters();
    assert_eq!((n.forwarded_to_uplink, n.forwarded_to_clients, n.dropped_total()), (1, 1, 0));
}

#[test]
fn partial_checksum_keeps_pseudo_header_sum() {
    let mut fw = engine();
    for proto in [IpProtocol::Tcp, IpProtocol::Udp] {
        let h = Ip::new(CLIENT, REMOTE, proto);
        let mut p =
            if proto == IpProtocol::Tcp { tcp_ip(&h, 40001, 443, SYN, b"abc") } else { udp_ip(&h, 40001, 53, b"abc") };
        let at = if proto == IpProtocol::Tcp { 20 + 16 } else { 20 + 6 };
        let l4len = (p.len() - 20) as u16;
        let partial = |s, d| checksum::pseudo_header_v4(s, d, proto.into(), l4len);
        p[at..at + 2].copy_from_slice(&partial(CLIENT, REMOTE).to_be_bytes());
        let o = run(&mut fw, Ingress::Client(c(1)), from_client(&p), ChecksumState::PartialPseudoHeader, 0);
        let Decision::Forward { csum: ChecksumState::PartialPseudoHeader, .. } = o.d else { panic!("{:?}", o.d) };
        let q = fwd_ip(&o).to_vec();
        assert_eq!(u16::from_be_bytes([q[at], q[at + 1]]), partial(UPLINK, REMOTE));
        assert!(ipv4::Packet::new_checked(&q[..]).unwrap().verify_checksum());
        // The reply, also partial, goes back with the client's pseudo-header sum.
        let rh = Ip::new(REMOTE, UPLINK, proto);
        let mut r = if proto == IpProtocol::Tcp {
            tcp_ip(&rh, 443, 40001, SYN | ACK, b"")
        } else {
            udp_ip(&rh, 53, 40001, b"")
        };
        let rl = (r.len() - 20) as u16;
        r[at..at + 2].copy_from_slice(&checksum::pseudo_header_v4(REMOTE, UPLINK, proto.into(), rl).to_be_bytes());
        let o = run(&mut fw, Ingress::Uplink, from_uplink(&r), ChecksumState::PartialPseudoHeader, 0);
        let Decision::Forward { csum: ChecksumState::PartialPseudoHeader, to: Egress::Client(_), .. } = o.d else {
            panic!("{:?}", o.d)
        };
        let q = fwd_ip(&o);
        assert_eq!(
            u16::from_be_bytes([q[at], q[at + 1]]),
            checksum::pseudo_header_v4(REMOTE, CLIENT, proto.into(), rl)
        );
    }
    // A partial checksum is only for whole TCP/UDP packets.
    let e = echo_ip(&Ip::new(CLIENT, REMOTE, IpProtocol::Icmp), 1, b"x");
    let o = run(&mut fw, Ingress::Client(c(1)), from_client(&e), ChecksumState::PartialPseudoHeader, 0);
    assert_eq!(o.d, Decision::Drop(DropCause::BadChecksumState));
}

// ---------------------------------------------------------------------------------------
// drops: table-driven

#[test]
fn drop_table() {
    let h = client_h();
    let spoofed = tcp_ip(&Ip::new(Ipv4Addr::new(10, 137, 0, 99), REMOTE, IpProtocol::Tcp), 1, 80, SYN, b"");
    let to_client2 = tcp_ip(&Ip::new(CLIENT, CLIENT2, IpProtocol::Tcp), 1, 80, SYN, b"");
    let bcast = udp_ip(&Ip::new(CLIENT, Ipv4Addr::BROADCAST, IpProtocol::Udp), 68, 67, b"");
    let mcast = udp_ip(&Ip::new(CLIENT, Ipv4Addr::new(224, 0, 0, 251), IpProtocol::Udp), 5353, 5353, b"");
    let ack_no_flow = tcp_ip(&h, 40000, 443, ACK, b"x");
    let gre = ip_packet(&Ip::new(CLIENT, REMOTE, IpProtocol::Unknown(47)), &[0; 8]);
    let mut bad_sum = tcp_ip(&h, 1, 2, SYN, b"");
    bad_sum[10] ^= 1;
    let in_syn = tcp_ip(&Ip::new(REMOTE, UPLINK, IpProtocol::Tcp), 443, 40000, SYN, b"");
    let in_to_client = tcp_ip(&Ip::new(REMOTE, CLIENT, IpProtocol::Tcp), 443, 22, SYN, b"");
    let in_other = tcp_ip(&Ip::new(REMOTE, Ipv4Addr::new(10, 137, 0, 200), IpProtocol::Tcp), 443, 22, SYN, b"");
    let in_spoof = tcp_ip(&Ip::new(CLIENT, UPLINK, IpProtocol::Tcp), 443, 22, SYN, b"");
    let in_ttl = udp_ip(&Ip { ttl: 1, ..Ip::new(REMOTE, UPLINK, IpProtocol::Udp) }, 53, 40000, b"");
    let no_rules = tcp_ip(&Ip::new(CLIENT2, REMOTE, IpProtocol::Tcp), 1, 80, SYN, b"");

    let cl = |ip: &[u8]| (Ingress::Client(c(1)), from_client(ip));
    type Case = (&'static str, Ingress, (Vec<u8>, usize), DropCause);
    let cases: Vec<Case> = vec![
        ("spoofed source", cl(&spoofed).0, cl(&spoofed).1, DropCause::Spoofed),
        ("unknown client", Ingress::Client(c(5)), from_client(&ack_no_flow), DropCause::UnknownClient),
        ("client to client", cl(&to_client2).0, cl(&to_client2).1, DropCause::ClientToClient),
        ("broadcast", cl(&bcast).0, cl(&bcast).1, DropCause::NotUnicast),
        ("multicast", cl(&mcast).0, cl(&mcast).1, DropCause::NotUnicast),
        ("tcp without syn", cl(&ack_no_flow).0, cl(&ack_no_flow).1, DropCause::Invalid(Invalid::NotNew)),
        (
            "other protocol",
            cl(&gre).0,
            cl(&gre).1,
            DropCause::Invalid(Invalid::Untrackable(crate::conntrack::Untrackable::Unsupported)),
        ),
        ("bad header checksum", cl(&bad_sum).0, cl(&bad_sum).1, DropCause::Malformed),
        ("truncated", Ingress::Client(c(1)), (from_client(&ack_no_flow).0, 30), DropCause::Malformed),
        ("runt", Ingress::Client(c(1)), (vec![0; 10], 10), DropCause::Malformed),
        // Found by fuzzing: a frame shorter than an Ethernet header in a whole 4 KiB slot.
        ("runt in a slot", Ingress::Client(c(1)), (from_client(&ack_no_flow).0, 13), DropCause::Malformed),
        ("empty frame in a slot", Ingress::Uplink, (from_uplink(&in_syn).0, 0), DropCause::Malformed),
        ("ipv6", Ingress::Client(c(1)), frame(FE, C1_MAC, EtherType::Ipv6, &[0x60; 40]), DropCause::Ipv6),
        ("arp", Ingress::Client(c(1)), frame(FE, C1_MAC, EtherType::Arp, &[0; 28]), DropCause::NotIpv4),
        (
            "no rules committed",
            Ingress::Client(c(2)),
            frame(FE, C2_MAC, EtherType::Ipv4, &no_rules),
            DropCause::Rules(DropReason::NoRules),
        ),
        ("new connection from outside", Ingress::Uplink, from_uplink(&in_syn), DropCause::NotTracked),
        ("outside to a client address", Ingress::Uplink, from_uplink(&in_to_client), DropCause::NotTracked),
        ("outside to another address", Ingress::Uplink, from_uplink(&in_other), DropCause::NotForUs),
        ("client address from uplink", Ingress::Uplink, from_uplink(&in_spoof), DropCause::SpoofedFromUplink),
        ("inbound ttl 1", Ingress::Uplink, from_uplink(&in_ttl), DropCause::TtlExpired),
        ("ipv6 from uplink", Ingress::Uplink, frame(UP_MAC, NET_MAC, EtherType::Ipv6, &[0x60; 40]), DropCause::Ipv6),
    ];
    let mut fw = engine();
    for (name, from, f, want) in cases {
        let before = fw.counters().dropped(want);
        let o = run(&mut fw, from, f, ChecksumState::Complete, 0);
        assert_eq!(o.d, Decision::Drop(want), "{name}");
        assert_eq!(fw.counters().dropped(want), before + 1, "{name}: counted");
    }
    assert_eq!(fw.counters().icmp_errors, 0);
    // Without an uplink nothing goes out.
    fw.set_uplink(None);
    let o = client(&mut fw, &tcp_ip(&h, 1, 80, SYN, b""), 0);
    assert_eq!(o.d, Decision::Drop(DropCause::NoUplink));
}

#[test]
fn drop_rule_answered_with_admin_prohibited() {
    let mut fw = engine();
    let smtp = tcp_ip(&client_h(), 40000, 25, SYN, b"");
    let o = client(&mut fw, &smtp, 0);
    let Decision::Reply { dropped: Some(cause), .. } = o.d else { panic!("{:?}", o.d) };
    assert_eq!(cause, DropCause::Rules(DropReason::Rule(RuleNumber::new(1).unwrap())));
    // Type 3 code 13 (Linux qubes-firewall: reject with icmp type admin-prohibited), from the
    // gateway address to the client, on the client's link.
    check_error(&o, Egress::Client(c(1)), (FE, C1_MAC), GATEWAY, &smtp, 3, 13);
    assert_eq!(fw.counters().dropped(cause), 1);
    assert_eq!(fw.counters().icmp_errors, 1);
    assert!(fw.conntrack().is_empty());
}

#[test]
fn ttl_expired_answered_with_time_exceeded() {
    let mut fw = engine();
    for ttl in [0u8, 1] {
        let p = tcp_ip(&Ip { ttl, ..client_h() }, 40000 + u16::from(ttl), 443, SYN, b"");
        let o = client(&mut fw, &p, 0);
        check_error(&o, Egress::Client(c(1)), (FE, C1_MAC), GATEWAY, &p, 11, 0);
    }
    // TTL 2 is forwarded with TTL 1.
    let p = tcp_ip(&Ip { ttl: 2, ..client_h() }, 40100, 443, SYN, b"");
    let o = client(&mut fw, &p, 0);
    assert_eq!(ipv4::Packet::new_checked(fwd_ip(&o)).unwrap().ttl(), 1);
    assert!(fw.conntrack().len() == 1, "expired packets open no flow");
}

#[test]
fn too_big_with_df_gets_frag_needed_with_mtu() {
    let mut fw = engine();
    fw.set_uplink(Some(uplink_cfg(1400)));
    let p = tcp_ip(&client_h(), 40000, 443, SYN, &[0x55; 1420]);
    let o = client(&mut fw, &p, 0);
    let icmp = check_error(&o, Egress::Client(c(1)), (FE, C1_MAC), GATEWAY, &p, 3, 4);
    assert_eq!(icmp.next_hop_mtu(), 1400);
    assert_eq!(fw.counters().dropped(DropCause::TooBig), 1);
    // Exactly the MTU passes.
    let p = tcp_ip(&client_h(), 40000, 443, SYN, &[0x55; 1400 - 40]);
    assert!(matches!(client(&mut fw, &p, 0).d, Decision::Forward { .. }));
}

#[test]
fn too_big_without_df_is_fragmented() {
    let mut fw = engine();
    fw.set_uplink(Some(uplink_cfg(576)));
    let payload: Vec<u8> = (0..1400u32).map(|i| i as u8).collect();
    let h = Ip { df: false, ..Ip::new(CLIENT, REMOTE, IpProtocol::Udp) };
    let p = udp_ip(&h, 40000, 9999, &payload);
    for csum in [ChecksumState::Complete, ChecksumState::PartialPseudoHeader] {
        let mut q = p.clone();
        if csum == ChecksumState::PartialPseudoHeader {
            let s = checksum::pseudo_header_v4(CLIENT, REMOTE, 17, (q.len() - 20) as u16);
            q[26..28].copy_from_slice(&s.to_be_bytes());
        }
        let o = run(&mut fw, Ingress::Client(c(1)), from_client(&q), csum, 0);
        let Decision::Fragment { to: Egress::Uplink, len, mtu: 576, count } = o.d else { panic!("{:?}", o.d) };
        assert_eq!(count, 3, "1428 bytes of payload in 552-byte pieces");
        // The whole datagram is translated, with a complete checksum.
        assert!(ipv4_checksums_valid(&o.buf[14..len]));
        let mut data = Vec::new();
        for i in 0..count {
            let mut f = vec![0u8; 4096];
            let n = fragment(&o.buf[..len], 576, i, &mut f).unwrap();
            assert!(n - 14 <= 576);
            assert_eq!(&f[..14], &o.buf[..14]);
            let ip = ipv4::Packet::new_checked(&f[14..n]).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!((ip.more_frags(), usize::from(ip.frag_offset()) * 8), (i + 1 < count, data.len()));
            assert_eq!(ip.src_addr(), UPLINK);
            data.extend_from_slice(ip.payload());
        }
        assert!(fragment(&o.buf[..len], 576, count, &mut [0u8; 4096]).is_none());
        assert_eq!(&data[..], &o.buf[34..len]);
    }
}

// ---------------------------------------------------------------------------------------
// traffic to portcullis itself

#[test]
fn echo_to_gateway_answered() {
    let mut fw = engine();
    let req = echo_ip(&Ip::new(CLIENT, GATEWAY, IpProtocol::Icmp), 0x4242, b"hello, gateway");
    let o = client(&mut fw, &req, 0);
    let Decision::Reply { to: Egress::Client(id), len, dropped: None } = o.d else { panic!("{:?}", o.d) };
    assert_eq!(id, c(1));
    let f = &o.reply[..len];
    assert_eq!(macs(f), (FE, C1_MAC));
    assert!(ipv4_checksums_valid(&f[14..]));
    let ip = ipv4::Packet::new_checked(&f[14..]).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr()), (GATEWAY, CLIENT));
    let icmp = icmpv4::Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(
        icmpv4::Repr::parse(&icmp).unwrap(),
        icmpv4::Repr::EchoReply { ident: 0x4242, seq_no: 9, data: b"hello, gateway" }
    );
    assert_eq!(fw.counters().echo_replies, 1);
}

#[test]
fn other_local_traffic_rejected_or_ignored() {
    let h = |p| Ip::new(CLIENT, GATEWAY, p);
    let tcp = tcp_ip(&h(IpProtocol::Tcp), 40000, 22, SYN, b"");
    let udp = udp_ip(&h(IpProtocol::Udp), 40000, 53, b"q");
    let gre = ip_packet(&h(IpProtocol::Unknown(47)), &[0; 8]);
    let dhcp = udp_ip(&h(IpProtocol::Udp), 67, 68, b"");
    let mut unreach = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
    unreach.extend_from_slice(&tcp[..28]);
    let c16 = checksum::checksum(&unreach);
    unreach[2..4].copy_from_slice(&c16.to_be_bytes());
    let icmp_err = ip_packet(&h(IpProtocol::Icmp), &unreach);
    // (packet, code with HostProhibited, code with Unreachable); None: ignored silently.
    let cases: [(&[u8], Option<u8>, Option<u8>); 5] = [
        (&tcp, Some(10), Some(3)),
        (&udp, Some(10), Some(3)),
        (&gre, Some(10), Some(2)),
        (&dhcp, None, None),
        (&icmp_err, None, None),
    ];
    for (how, pick) in [(LocalReject::HostProhibited, 0), (LocalReject::Unreachable, 1)] {
        let mut fw = engine();
        fw.set_local_reject(how);
        for (p, hp, un) in cases {
            let o = client(&mut fw, p, 0);
            match [hp, un][pick] {
                Some(code) => {
                    check_error(&o, Egress::Client(c(1)), (FE, C1_MAC), GATEWAY, p, 3, code);
                }
                None => assert_eq!(o.d, Decision::Drop(DropCause::LocalIgnored)),
            }
        }
        assert_eq!(fw.counters().dropped(DropCause::LocalRejected), 3);
    }
}

// ---------------------------------------------------------------------------------------
// ICMP error rules

#[test]
fn no_errors_about_errors_broadcasts_or_later_fragments() {
    let mut fw = engine();
    // An ICMP error with TTL 1: dropped, no time-exceeded about it.
    let inner = tcp_ip(&client_h(), 1, 2, SYN, b"");
    let mut unreach = vec![3u8, 1, 0, 0, 0, 0, 0, 0];
    unreach.extend_from_slice(&inner[..28]);
    let c16 = checksum::checksum(&unreach);
    unreach[2..4].copy_from_slice(&c16.to_be_bytes());
    let err = ip_packet(&Ip { ttl: 1, ..Ip::new(CLIENT, REMOTE, IpProtocol::Icmp) }, &unreach);
    assert_eq!(client(&mut fw, &err, 0).d, Decision::Drop(DropCause::TtlExpired));
    // A frame sent to the link broadcast address: no error either.
    let p = tcp_ip(&Ip { ttl: 1, ..client_h() }, 1, 2, SYN, b"");
    let o = run(
        &mut fw,
        Ingress::Client(c(1)),
        frame(EthernetAddress::BROADCAST, C1_MAC, EtherType::Ipv4, &p),
        ChecksumState::Complete,
        0,
    );
    assert_eq!(o.d, Decision::Drop(DropCause::TtlExpired));
    assert_eq!(fw.counters().icmp_not_allowed, 2);
    assert_eq!(fw.counters().icmp_errors, 0);
}

#[test]
fn icmp_errors_rate_limited_per_source_and_globally() {
    let mut fw = engine();
    let expired = |port: u16| tcp_ip(&Ip { ttl: 1, ..client_h() }, port, 443, SYN, b"");
    let mut sent = 0;
    for i in 0..20 {
        if matches!(client(&mut fw, &expired(i), 0).d, Decision::Reply { .. }) {
            sent += 1;
        }
    }
    assert_eq!(sent, 6, "Linux: burst of 6 per destination");
    assert_eq!(fw.counters().icmp_rate_limited, 14);
    assert_eq!(fw.counters().dropped(DropCause::TtlExpired), 20);
    // One more token per second.
    assert!(matches!(client(&mut fw, &expired(1), SEC).d, Decision::Reply { .. }));
    assert!(matches!(client(&mut fw, &expired(1), SEC).d, Decision::Drop(_)));
    // Frag-needed is exempt from the per-destination limit (path-MTU discovery).
    fw.set_uplink(Some(uplink_cfg(100)));
    let big = tcp_ip(&client_h(), 40000, 443, SYN, &[0; 100]);
    for _ in 0..10 {
        assert!(matches!(client(&mut fw, &big, SEC).d, Decision::Reply { .. }));
    }
    // The global bucket (50) bounds everything.
    let mut fw = engine();
    fw.set_icmp_limits(IcmpLimits { per_source_burst: 1000, ..IcmpLimits::LINUX });
    let sent = (0..100).filter(|&i| matches!(client(&mut fw, &expired(i), 5 * SEC).d, Decision::Reply { .. })).count();
    assert_eq!(sent, 50);
}

// ---------------------------------------------------------------------------------------
// inbound ICMP errors, rule updates, client changes

#[test]
fn icmp_error_about_tracked_flow_reaches_client() {
    let mut fw = engine();
    let p = udp_ip(&Ip::new(CLIENT, REMOTE, IpProtocol::Udp), 5000, 9999, b"probe");
    let o = client(&mut fw, &p, 0);
    let sent = fwd_ip(&o).to_vec();
    // The remote answers port unreachable, quoting what it received.
    let mut body = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
    body.extend_from_slice(&sent[..28]);
    let c16 = checksum::checksum(&body);
    body[2..4].copy_from_slice(&c16.to_be_bytes());
    let err = ip_packet(&Ip::new(REMOTE, UPLINK, IpProtocol::Icmp), &body);
    let o = uplink(&mut fw, &err, 0);
    let q = fwd_ip(&o);
    assert!(ipv4_checksums_valid(q));
    let ip = ipv4::Packet::new_checked(q).unwrap();
    assert_eq!(ip.dst_addr(), CLIENT);
    let icmp = icmpv4::Packet::new_checked(ip.payload()).unwrap();
    let quoted = icmp.quoted_packet().unwrap();
    assert_eq!(quoted.src_addr(), CLIENT);
    assert_eq!(
        icmp.data(),
        &{
            let mut want = p[..28].to_vec();
            // The quote is of the packet as it left (TTL decremented by us).
            want[8] = sent[8];
            ipv4::Packet::new_unchecked(&mut want[..]).fill_checksum();
            want
        }[..]
    );
}

#[test]
fn rule_update_removes_forbidden_flows() {
    let mut fw = engine();
    let syn = tcp_ip(&client_h(), 40000, 443, SYN, b"");
    assert!(matches!(client(&mut fw, &syn, 0).d, Decision::Forward { .. }));
    let u = udp_ip(&Ip::new(CLIENT, DNS1, IpProtocol::Udp), 5353, 53, b"q");
    assert!(matches!(client(&mut fw, &u, 0).d, Decision::Forward { .. }));
    assert_eq!(fw.conntrack().client_len(c(1)), 2);
    // Now only DNS is allowed: the HTTPS flow goes, the DNS flow stays.
    let rules: [(&[u8], &[u8]); 2] = [(b"policy", b"drop"), (b"0000", b"action=accept specialtarget=dns")];
    assert_eq!(fw.commit_rules(c(1), rules), Ok(1));
    assert_eq!(fw.conntrack().client_len(c(1)), 1);
    let reply = tcp_ip(&Ip::new(REMOTE, UPLINK, IpProtocol::Tcp), 443, 40000, SYN | ACK, b"");
    assert_eq!(uplink(&mut fw, &reply, 0).d, Decision::Drop(DropCause::NotTracked));
    // A rule set that does not parse drops everything.
    let bad: [(&[u8], &[u8]); 2] = [(b"policy", b"drop"), (b"0000", b"action=maybe")];
    assert!(matches!(fw.commit_rules(c(1), bad), Err(ConfigError::Rules(_))));
    assert_eq!(fw.conntrack().client_len(c(1)), 0);
    let o = client(&mut fw, &u, 0);
    assert!(matches!(o.d, Decision::Reply { dropped: Some(DropCause::Rules(DropReason::InvalidRules)), .. }));
}

#[test]
fn client_add_remove() {
    let mut fw = engine();
    let syn = tcp_ip(&client_h(), 40000, 443, SYN, b"");
    assert!(matches!(client(&mut fw, &syn, 0).d, Decision::Forward { .. }));
    assert_eq!(fw.add_client(c(3), ClientConfig { addr: CLIENT, mac: C1_MAC }), Err(ConfigError::AddressInUse));
    assert_eq!(
        fw.add_client(c(100), ClientConfig { addr: Ipv4Addr::new(10, 137, 0, 50), mac: C1_MAC }),
        Err(ConfigError::NoSuchClient)
    );
    assert_eq!(fw.client_by_addr(CLIENT), Some(c(1)));
    assert!(fw.remove_client(c(1)));
    assert!(!fw.remove_client(c(1)));
    assert!(fw.conntrack().is_empty(), "flows flushed");
    assert_eq!(fw.client_by_addr(CLIENT), None);
    assert_eq!(client(&mut fw, &syn, 0).d, Decision::Drop(DropCause::UnknownClient));
    // The address now counts as outside: from the uplink it is no longer spoofing.
    let p = tcp_ip(&Ip::new(CLIENT, UPLINK, IpProtocol::Tcp), 1, 2, SYN, b"");
    assert_eq!(uplink(&mut fw, &p, 0).d, Decision::Drop(DropCause::NotTracked));
    // Re-added (a disposable VM reusing the address): no rules until a commit.
    fw.add_client(c(3), ClientConfig { addr: CLIENT, mac: C1_MAC }).unwrap();
    let o = run(&mut fw, Ingress::Client(c(3)), from_client(&syn), ChecksumState::Complete, 0);
    assert_eq!(o.d, Decision::Drop(DropCause::Rules(DropReason::NoRules)));
}

// ---------------------------------------------------------------------------------------
// fragments

/// Fragments of `ip` (a whole packet) at the given payload boundaries (multiples of 8).
fn fragments(ip: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let payload = &ip[20..];
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(payload.len());
    bounds
        .windows(2)
        .map(|w| {
            let mut f = ip[..20].to_vec();
            f.extend_from_slice(&payload[w[0]..w[1]]);
            let mut p = ipv4::Packet::new_unchecked(&mut f[..]);
            p.set_total_len((20 + w[1] - w[0]) as u16);
            p.set_fragment(false, w[1] != payload.len(), (w[0] / 8) as u16);
            p.fill_checksum();
            f
        })
        .collect()
}

fn big_udp(sp: u16, n: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
    udp_ip(&Ip { df: false, ident: sp, ..Ip::new(CLIENT, REMOTE, IpProtocol::Udp) }, sp, 9000, &payload)
}

fn assert_reassembled(o: &Out, original: &[u8]) {
    let Decision::Forward { to: Egress::Uplink, len, .. } = o.d else { panic!("{:?}", o.d) };
    let p = &o.buf[14..len];
    assert!(ipv4_checksums_valid(p));
    assert_eq!(p.len(), original.len());
    let ip = ipv4::Packet::new_checked(p).unwrap();
    assert!(!ip.is_fragment());
    assert_eq!(&p[28..], &original[28..], "payload");
}

#[test]
fn fragments_in_order_and_out_of_order() {
    let p = big_udp(6000, 1000);
    for order in [[0usize, 1, 2], [2, 0, 1], [1, 2, 0]] {
        let mut fw = engine();
        let fr = fragments(&p, &[400, 800]);
        for (k, &i) in order.iter().enumerate() {
            let o = client(&mut fw, &fr[i], 0);
            if k < 2 {
                assert_eq!(o.d, Decision::Held);
            } else {
                assert_reassembled(&o, &p);
            }
        }
        assert_eq!(fw.counters().reassembled, 1);
        assert_eq!(fw.fragments_pending(), 0);
        // The flow is tracked: the reply comes back.
        let r = udp_ip(&Ip::new(REMOTE, UPLINK, IpProtocol::Udp), 9000, 6000, b"ok");
        assert!(matches!(uplink(&mut fw, &r, 0).d, Decision::Forward { to: Egress::Client(_), .. }));
    }
}

#[test]
fn fragment_overlap_duplicate_and_bad_fragments() {
    let p = big_udp(6001, 1000);
    let mut fw = engine();
    let a = fragments(&p, &[400, 800]);
    let b = fragments(&p, &[392, 800]); // b[1] starts inside a[0]
    assert_eq!(client(&mut fw, &a[0], 0).d, Decision::Held);
    assert_eq!(client(&mut fw, &a[0], 0).d, Decision::Drop(DropCause::Fragment(FragmentDrop::Duplicate)));
    assert_eq!(client(&mut fw, &b[1], 0).d, Decision::Drop(DropCause::Fragment(FragmentDrop::Overlap)));
    assert_eq!(fw.fragments_pending(), 0, "the whole datagram is dropped");
    // The rest alone cannot complete it.
    assert_eq!(client(&mut fw, &a[1], 0).d, Decision::Held);
    assert_eq!(client(&mut fw, &a[2], 0).d, Decision::Held);
    // A non-last fragment whose length is not a multiple of 8.
    let odd = fragments(&big_udp(6002, 1000), &[401]);
    assert_eq!(client(&mut fw, &odd[0], 0).d, Decision::Drop(DropCause::Fragment(FragmentDrop::Invalid)));
    // Too big to reassemble into one slot.
    let huge = fragments(&big_udp(6003, 5000), &[1480, 2960, 4440]);
    assert_eq!(client(&mut fw, &huge[0], 0).d, Decision::Held);
    assert_eq!(client(&mut fw, &huge[1], 0).d, Decision::Held);
    assert_eq!(client(&mut fw, &huge[3], 0).d, Decision::Drop(DropCause::Fragment(FragmentDrop::TooBig)));
    // Spoofed fragments are refused before they take room.
    let mut sp = a[0].clone();
    sp[15] = 99;
    ipv4::Packet::new_unchecked(&mut sp[..]).fill_checksum();
    assert_eq!(client(&mut fw, &sp, 0).d, Decision::Drop(DropCause::Spoofed));
}

#[test]
fn fragment_timeout_table_full_and_source_quota() {
    let mut fw = engine();
    // Per-source quota: 4 datagrams from one source.
    for i in 0..4u16 {
        let f = fragments(&big_udp(7000 + i, 1000), &[400]);
        let mut f0 = f[0].clone();
        ipv4::Packet::new_unchecked(&mut f0[..]).set_ident(100 + i);
        ipv4::Packet::new_unchecked(&mut f0[..]).fill_checksum();
        assert_eq!(client(&mut fw, &f0, 0).d, Decision::Held);
    }
    let f = fragments(&big_udp(7100, 1000), &[400]);
    let mut f0 = f[0].clone();
    ipv4::Packet::new_unchecked(&mut f0[..]).set_ident(200);
    ipv4::Packet::new_unchecked(&mut f0[..]).fill_checksum();
    assert_eq!(client(&mut fw, &f0, 0).d, Decision::Drop(DropCause::Fragment(FragmentDrop::SourceQuota)));
    // Timeout after 30 s.
    fw.expire(29 * SEC, 64);
    assert_eq!(fw.fragments_pending(), 4);
    fw.expire(30 * SEC, 64);
    assert_eq!(fw.fragments_pending(), 0);
    assert_eq!(fw.counters().dropped(DropCause::Fragment(FragmentDrop::Timeout)), 4);
    // Table full: 16 datagrams from 4 remote sources (inbound, to us).
    let mut n = 0;
    for s in 0..5u8 {
        for i in 0..4u16 {
            let h = Ip { df: false, ident: i, ..Ip::new(Ipv4Addr::new(198, 51, 100, s), UPLINK, IpProtocol::Udp) };
            let fr = fragments(&udp_ip(&h, 53, 40000, &[1; 600]), &[400]);
            let o = uplink(&mut fw, &fr[0], 40 * SEC);
            if n < 16 {
                assert_eq!(o.d, Decision::Held);
            } else {
                assert_eq!(o.d, Decision::Drop(DropCause::Fragment(FragmentDrop::TableFull)));
            }
            n += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------
// dsthost rules through the resolver

#[test]
fn dsthost_rule_fails_closed_until_resolved() {
    let mut fw = engine();
    fw.set_resolver_port(33333);
    let rules: [(&[u8], &[u8]); 3] =
        [(b"policy", b"drop"), (b"0000", b"action=accept dsthost=example.com"), (b"0001", b"action=drop")];
    fw.commit_rules(c(1), rules).unwrap();
    let syn = tcp_ip(&client_h(), 40000, 443, SYN, b"");
    let o = client(&mut fw, &syn, 0);
    let Decision::Reply { dropped: Some(DropCause::Rules(DropReason::HostUnresolved { .. })), .. } = o.d else {
        panic!("{:?}", o.d)
    };
    // The resolver asks the primary server for A, then AAAA, through the uplink.
    let mut out = vec![0u8; 4096];
    let mut r = rng();
    let mut queries = Vec::new();
    while let Some(n) = fw.poll_resolver(0, &mut out, &mut r) {
        queries.push(out[..n].to_vec());
    }
    assert_eq!(queries.len(), 2);
    for q in &queries {
        assert_eq!(macs(q), (UP_MAC, NET_MAC));
        let ip = ipv4::Packet::new_checked(&q[14..]).unwrap();
        assert_eq!((ip.src_addr(), ip.dst_addr()), (UPLINK, DNS1));
        assert!(ipv4_checksums_valid(&q[14..]));
    }
    // Answer both (A: REMOTE; AAAA: nothing).
    for q in &queries {
        let u = udp::Packet::new_checked(&q[34..]).unwrap();
        let msg = u.payload();
        let mut a = msg.to_vec();
        a[2] = 0x81;
        a[3] = 0x80;
        if u16::from_be_bytes([msg[msg.len() - 4], msg[msg.len() - 3]]) == 1 {
            a[7] = 1;
            a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            a.extend_from_slice(&REMOTE.octets());
        }
        let r = udp_ip(&Ip::new(DNS1, UPLINK, IpProtocol::Udp), 53, u.src_port(), &a);
        assert_eq!(uplink(&mut fw, &r, 0).d, Decision::Consumed);
    }
    assert!(matches!(client(&mut fw, &syn, 0).d, Decision::Forward { .. }));
    // A forged reply (right port, wrong source) is rejected and counted.
    let forged = udp_ip(&Ip::new(REMOTE, UPLINK, IpProtocol::Udp), 53, 33333, &[0u8; 12]);
    assert_eq!(uplink(&mut fw, &forged, 0).d, Decision::Drop(DropCause::DnsReplyRejected));
    // Other hosts still hit the drop rule.
    let other = tcp_ip(&Ip::new(CLIENT, Ipv4Addr::new(1, 1, 1, 1), IpProtocol::Tcp), 40001, 443, SYN, b"");
    assert!(matches!(
        client(&mut fw, &other, 0).d,
        Decision::Reply { dropped: Some(DropCause::Rules(DropReason::Rule(_))), .. }
    ));
}

// ---------------------------------------------------------------------------------------
// properties

fn arb_state() -> impl Strategy<Value = ChecksumState> {
    prop_oneof![Just(ChecksumState::Complete), Just(ChecksumState::PartialPseudoHeader)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Client → outside → client: the outbound packet has the uplink address and keeps
    /// every other byte but the ones NAT and TTL touch; the reply comes back to the client's
    /// address and port; checksums are valid (Complete) or are exactly the pseudo-header sum
    /// of the translated addresses (PartialPseudoHeader).
    #[test]
    fn nat_reversible_and_checksums_valid(
        tcp_proto in any::<bool>(),
        sport in 1024u16..,
        dport in 1u16..,
        remote in any::<u32>().prop_filter("unicast", |a| netstack::ip::ipv4_is_single_host(Ipv4Addr::from_bits(*a)) && a >> 24 != 10 && a >> 24 != 0),
        payload in proptest::collection::vec(any::<u8>(), 0..200),
        state in arb_state(),
    ) {
        let mut fw = engine();
        let remote = Ipv4Addr::from_bits(remote);
        let proto = if tcp_proto { IpProtocol::Tcp } else { IpProtocol::Udp };
        prop_assume!(!(tcp_proto && dport == 25));
        let at = if tcp_proto { 36 } else { 26 };
        let build = |h: &Ip, sp, dp, f| if tcp_proto { tcp_ip(h, sp, dp, f, &payload) } else { udp_ip(h, sp, dp, &payload) };
        let blank = |p: &mut Vec<u8>| if state == ChecksumState::PartialPseudoHeader {
            let ip = ipv4::Packet::new_checked(&p[..]).unwrap();
            let s = checksum::pseudo_header_v4(ip.src_addr(), ip.dst_addr(), proto.into(), (p.len() - 20) as u16);
            p[at..at + 2].copy_from_slice(&s.to_be_bytes());
        };
        let check = |q: &[u8]| if state == ChecksumState::PartialPseudoHeader {
            let ip = ipv4::Packet::new_checked(q).unwrap();
            assert!(ip.verify_checksum());
            let s = checksum::pseudo_header_v4(ip.src_addr(), ip.dst_addr(), proto.into(), (q.len() - 20) as u16);
            assert_eq!(u16::from_be_bytes([q[at], q[at + 1]]), s);
        } else {
            assert!(ipv4_checksums_valid(q));
        };
        let mut p = build(&Ip::new(CLIENT, remote, proto), sport, dport, SYN);
        blank(&mut p);
        let o = run(&mut fw, Ingress::Client(c(1)), from_client(&p), state, 0);
        let q = fwd_ip(&o).to_vec();
        check(&q);
        let ip = ipv4::Packet::new_checked(&q[..]).unwrap();
        prop_assert_eq!(ip.src_addr(), UPLINK);
        let nat_port = u16::from_be_bytes([q[20], q[21]]);
        // Only source address, TTL, the two checksums and (if taken) the port changed.
        for i in 0..p.len() {
            let touched = (12..16).contains(&i) || i == 8 || (10..12).contains(&i) || (at..at + 2).contains(&i) || (20..22).contains(&i);
            if !touched { prop_assert_eq!(p[i], q[i], "byte {}", i); }
        }
        let mut r = build(&Ip::new(remote, UPLINK, proto), dport, nat_port, SYN | ACK);
        blank(&mut r);
        let o = run(&mut fw, Ingress::Uplink, from_uplink(&r), state, 0);
        let back = fwd_ip(&o).to_vec();
        check(&back);
        let ip = ipv4::Packet::new_checked(&back[..]).unwrap();
        prop_assert_eq!(ip.dst_addr(), CLIENT);
        prop_assert_eq!(u16::from_be_bytes([back[22], back[23]]), sport);
        prop_assert_eq!(&back[24..], &r[24..].iter().enumerate().map(|(i, &b)| if (at - 24..at - 22).contains(&i) { back[24 + i] } else { b }).collect::<Vec<_>>()[..]);
    }

    /// Whatever the bytes, the engine decides without panicking, from either side.
    #[test]
    fn arbitrary_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), uplink_side in any::<bool>(), state in arb_state()) {
        let mut fw = engine();
        let mut buf = vec![0u8; 4096];
        buf[..bytes.len()].copy_from_slice(&bytes);
        if bytes.len() >= 14 { buf[12] = 8; buf[13] = 0; }
        let from = if uplink_side { Ingress::Uplink } else { Ingress::Client(c(1)) };
        let mut reply = vec![0u8; 4096];
        let _ = fw.process(Rx { from, len: bytes.len(), csum: state }, &mut buf, &mut reply, 0, &mut rng());
    }
}

proptest! {
    /// The pipeline's specialised IPv4 header check agrees with netstack's general checksum,
    /// on random headers and on the same headers with a correct checksum.
    #[test]
    fn header_checksum_matches_netstack(words in proptest::collection::vec(any::<u32>(), 5..=15)) {
        let mut h: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        prop_assert_eq!(engine::header_checksum_ok(&h), checksum::data(&h) == 0xffff);
        h[10..12].copy_from_slice(&[0, 0]);
        let c = !checksum::data(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        prop_assert!(engine::header_checksum_ok(&h));
        prop_assert_eq!(checksum::data(&h), 0xffff);
    }
}

#[test]
fn block_client_drops_everything_until_the_next_commit() {
    let mut fw = engine();
    let syn = tcp_ip(&client_h(), 40000, 443, SYN, b"");
    assert!(matches!(client(&mut fw, &syn, 0).d, Decision::Forward { .. }));
    assert_eq!(fw.conntrack().client_len(c(1)), 1);
    assert_eq!(fw.block_client(c(1)), Some(1), "its one flow removed");
    assert_eq!(fw.conntrack().client_len(c(1)), 0);
    assert!(fw.rules(c(1)).unwrap().active().is_none());
    let reply = tcp_ip(&Ip::new(REMOTE, UPLINK, IpProtocol::Tcp), 443, 40000, SYN | ACK, b"");
    assert_eq!(uplink(&mut fw, &reply, 0).d, Decision::Drop(DropCause::NotTracked));
    assert!(!matches!(client(&mut fw, &syn, 0).d, Decision::Forward { .. }), "blocked");
    assert_eq!(fw.block_client(c(100)), None);
    assert_eq!(fw.block_client(c(5)), None, "not a present client");
    let rules: [(&[u8], &[u8]); 1] = [(b"policy", b"accept")];
    assert_eq!(fw.commit_rules(c(1), rules), Ok(0));
    assert!(matches!(client(&mut fw, &syn, 0).d, Decision::Forward { .. }), "a good commit lets it through");
}

#[test]
fn downlink_can_be_cleared() {
    let mut fw = engine();
    assert_eq!(fw.downlink().gateway, GATEWAY);
    fw.set_downlink(None);
    assert_eq!(fw.downlink(), Fw::DEFAULT_DOWNLINK);
}

// ---------------------------------------------------------------------------------------
// the conntrack flow cache behind the engine's configuration changes

/// An engine with a TCP flow of client 1 opened and used twice each way (both of its tuples
/// in the flow cache); returns the client's ACK and the remote's ACK to the NAT address.
fn engine_with_cached_flow() -> (Box<Fw>, Vec<u8>, Vec<u8>) {
    let mut fw = engine();
    assert!(matches!(client(&mut fw, &tcp_ip(&client_h(), 40000, 443, SYN, b""), 0).d, Decision::Forward { .. }));
    let ack = tcp_ip(&client_h(), 40000, 443, ACK, b"data");
    let reply = tcp_ip(&Ip::new(REMOTE, UPLINK, IpProtocol::Tcp), 443, 40000, ACK, b"answer");
    for _ in 0..2 {
        assert!(matches!(client(&mut fw, &ack, SEC).d, Decision::Forward { to: Egress::Uplink, .. }));
        assert!(matches!(uplink(&mut fw, &reply, SEC).d, Decision::Forward { to: Egress::Client(_), .. }));
    }
    (fw, ack, reply)
}

#[test]
fn configuration_changes_forget_cached_flows() {
    let not_new = Decision::Drop(DropCause::Invalid(Invalid::NotNew));
    type Change = (&'static str, fn(&mut Fw));
    let changes: [Change; 4] = [
        ("rule commit refusing the flow", |fw| {
            let rules: [(&[u8], &[u8]); 2] = [(b"policy", b"drop"), (b"0000", b"action=accept proto=udp")];
            assert_eq!(fw.commit_rules(c(1), rules), Ok(1));
        }),
        ("client removed and added again", |fw| {
            assert!(fw.remove_client(c(1)));
            fw.add_client(c(1), ClientConfig { addr: CLIENT, mac: C1_MAC }).unwrap();
            let rules: [(&[u8], &[u8]); 1] = [(b"policy", b"accept")];
            fw.commit_rules(c(1), rules).unwrap();
        }),
        ("rekey", |fw| fw.rekey(*b"fedcba9876543210")),
        ("new uplink address", |fw| {
            fw.set_uplink(Some(UplinkConfig { addr: Ipv4Addr::new(10, 137, 0, 7), ..uplink_cfg(1500) }));
        }),
    ];
    for (what, change) in changes {
        let (mut fw, ack, reply) = engine_with_cached_flow();
        change(&mut fw);
        assert!(fw.conntrack().is_empty(), "{what}");
        assert_eq!(client(&mut fw, &ack, 2 * SEC).d, not_new, "{what}");
        let want = if what == "new uplink address" { DropCause::NotForUs } else { DropCause::NotTracked };
        assert_eq!(uplink(&mut fw, &reply, 2 * SEC).d, Decision::Drop(want), "{what}");
    }
    // A commit that still accepts the flow keeps it, cached or not.
    let (mut fw, ack, reply) = engine_with_cached_flow();
    let rules: [(&[u8], &[u8]); 1] = [(b"policy", b"accept")];
    assert_eq!(fw.commit_rules(c(1), rules), Ok(0));
    assert!(matches!(client(&mut fw, &ack, 2 * SEC).d, Decision::Forward { to: Egress::Uplink, .. }));
    assert!(matches!(uplink(&mut fw, &reply, 2 * SEC).d, Decision::Forward { to: Egress::Client(_), .. }));
}
