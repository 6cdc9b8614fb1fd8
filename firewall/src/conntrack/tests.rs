//! Connection tracking tests: state machine, NAT (property tests, checksums verified by full
//! recompute), eviction, quota, flush, expiry, ICMP errors, rule updates.

use core::net::{IpAddr, Ipv4Addr};

use netstack::ip::IpProtocol;
use netstack::nat::ipv4_checksums_valid;
use netstack::tcp::flags::{ACK, FIN, PSH, RST, SYN};
use netstack::{checksum, icmpv4, ipv4};
use proptest::prelude::*;

use super::*;
use crate::rules::{AcceptedBy, ClientRules, DropReason, Family, Flow, MatchContext, NoResolutions, Verdict};
use crate::testutil::{Ip, ip_packet, tcp_seg, udp_dgram};

type Small = Conntrack<64, 256>;

const SEC: u64 = 1_000_000_000;
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 17);
const CLIENT2: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 18);
const UPLINK: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 200);
const REMOTE: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);
const ROUTER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

fn c(n: u16) -> ClientId {
    ClientId::new(n).unwrap()
}

fn accept(_: &Flow) -> Verdict {
    Verdict::Accept(AcceptedBy::Policy)
}

fn table<const N: usize, const B: usize>() -> Box<Conntrack<N, B>> {
    let mut t = Box::new(Conntrack::<N, B>::new());
    t.rekey(*b"0123456789abcdef");
    t.set_nat_address(Some(UPLINK));
    t
}

fn ip(src: Ipv4Addr, dst: Ipv4Addr, proto: IpProtocol, l4: &[u8]) -> Vec<u8> {
    ip_packet(&Ip::new(src, dst, proto), l4)
}

fn tcp_pkt(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16, f: u16, payload: &[u8]) -> Vec<u8> {
    ip(src, dst, IpProtocol::Tcp, &tcp_seg(src, sp, dst, dp, f, payload))
}

fn udp_pkt(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16, payload: &[u8]) -> Vec<u8> {
    ip(src, dst, IpProtocol::Udp, &udp_dgram(src, sp, dst, dp, payload))
}

fn echo(src: Ipv4Addr, dst: Ipv4Addr, ident: u16, request: bool) -> Vec<u8> {
    let mut e = [0u8; 12];
    let r = if request {
        icmpv4::Repr::EchoRequest { ident, seq_no: 1, data: b"ping" }
    } else {
        icmpv4::Repr::EchoReply { ident, seq_no: 1, data: b"ping" }
    };
    r.emit(&mut e).unwrap();
    ip(src, dst, IpProtocol::Icmp, &e)
}

fn src_of(p: &[u8]) -> (Ipv4Addr, u16) {
    let ipp = ipv4::Packet::new_checked(p).unwrap();
    let l4 = ipp.payload();
    let port = if p[9] == 1 { u16::from_be_bytes([l4[4], l4[5]]) } else { u16::from_be_bytes([l4[0], l4[1]]) };
    (ipp.src_addr(), port)
}

fn dst_of(p: &[u8]) -> (Ipv4Addr, u16) {
    let ipp = ipv4::Packet::new_checked(p).unwrap();
    let l4 = ipp.payload();
    let port = if p[9] == 1 { u16::from_be_bytes([l4[4], l4[5]]) } else { u16::from_be_bytes([l4[2], l4[3]]) };
    (ipp.dst_addr(), port)
}

fn out<const N: usize, const B: usize>(t: &mut Conntrack<N, B>, cl: u16, p: &mut [u8], now: u64) -> Outbound {
    let mut r = 12345u32;
    let mut rng = move || {
        r = r.wrapping_mul(1_103_515_245).wrapping_add(12345);
        r
    };
    t.outbound(c(cl), p, false, now, &mut rng, accept)
}

/// A reply from the remote to the NAT'd packet `sent`.
fn reply_to(sent: &[u8], f: u16) -> Vec<u8> {
    let (s, sp) = src_of(sent);
    let (d, dp) = dst_of(sent);
    match sent[9] {
        6 => tcp_pkt(d, dp, s, sp, f, b"answer"),
        17 => udp_pkt(d, dp, s, sp, b"answer"),
        _ => echo(d, s, sp, false),
    }
}

// ---------------------------------------------------------------------------------------
// state machine

#[test]
fn tcp_state_machine() {
    use Dir::{Original as O, Reply as R};
    use TcpState::*;
    let steps: &[(TcpState, Dir, u16, TcpState)] = &[
        (SynSent, O, SYN, SynSent),
        (SynSent, R, SYN | ACK, SynRecv),
        (SynSent, R, SYN, SynRecv),
        (SynSent, O, ACK, SynSent),
        (SynRecv, O, ACK, Established),
        (SynRecv, R, SYN | ACK, SynRecv),
        (Established, O, ACK | PSH, Established),
        (Established, R, FIN | ACK, FinWait { closer: R }),
        (Established, O, FIN | ACK, FinWait { closer: O }),
        (FinWait { closer: O }, O, ACK, FinWait { closer: O }),
        (FinWait { closer: O }, R, ACK, CloseWait { closer: O }),
        (FinWait { closer: O }, R, FIN | ACK, LastAck { closer: O }),
        (CloseWait { closer: O }, R, ACK, CloseWait { closer: O }),
        (CloseWait { closer: O }, R, FIN | ACK, LastAck { closer: O }),
        (LastAck { closer: O }, R, ACK, LastAck { closer: O }),
        (LastAck { closer: O }, O, ACK, TimeWait),
        (TimeWait, R, ACK, TimeWait),
        (TimeWait, O, SYN, SynSent),
        (Close, O, SYN, SynSent),
        (Established, R, RST, Close),
        (SynSent, R, RST | ACK, Close),
        (FinWait { closer: R }, O, RST, Close),
    ];
    for &(from, dir, f, to) in steps {
        assert_eq!(from.next(dir, f), to, "{from:?} {dir:?} {f:#x}");
    }
}

#[test]
fn tcp_flow_lifecycle_through_table() {
    let mut t = table::<64, 256>();
    let tos = Timeouts::LINUX;
    let mut syn = tcp_pkt(CLIENT, 40000, REMOTE, 443, SYN, b"");
    assert_eq!(out(&mut t, 0, &mut syn, 0), Outbound::Forward { new: true });
    let idx = t.find(&parse(&tcp_pkt(CLIENT, 40000, REMOTE, 443, SYN, b"")).unwrap().0, Dir::Original).unwrap();
    let st = |t: &Small| (t.entries[idx as usize].state, t.entries[idx as usize].expires);
    assert_eq!(st(&t), (FlowState::Tcp(TcpState::SynSent), tos.tcp_syn_sent));
    let mut sa = reply_to(&syn, SYN | ACK);
    assert_eq!(t.inbound(&mut sa, false, SEC), Inbound::Forward { client: c(0) });
    assert_eq!(dst_of(&sa), (CLIENT, 40000));
    assert_eq!(st(&t), (FlowState::Tcp(TcpState::SynRecv), SEC + tos.tcp_syn_recv));
    let mut ack = tcp_pkt(CLIENT, 40000, REMOTE, 443, ACK, b"");
    assert_eq!(out(&mut t, 0, &mut ack, 2 * SEC), Outbound::Forward { new: false });
    assert_eq!(st(&t), (FlowState::Tcp(TcpState::Established), 2 * SEC + tos.tcp_established));
    let mut fin = tcp_pkt(CLIENT, 40000, REMOTE, 443, FIN | ACK, b"");
    out(&mut t, 0, &mut fin, 3 * SEC);
    assert_eq!(st(&t).0, FlowState::Tcp(TcpState::FinWait { closer: Dir::Original }));
    let mut rst = reply_to(&syn, RST);
    t.inbound(&mut rst, false, 4 * SEC);
    assert_eq!(st(&t), (FlowState::Tcp(TcpState::Close), 4 * SEC + tos.tcp_close));
    // After 10 s the flow is gone and the reply tuple no longer matches.
    let mut late = reply_to(&syn, ACK);
    assert_eq!(t.inbound(&mut late, false, 15 * SEC), Inbound::NotTracked);
    assert!(t.is_empty());
    assert_eq!(t.stats().expired, 1);
}

#[test]
fn tcp_needs_syn_and_outside_cannot_open() {
    let mut t = table::<64, 256>();
    let mut ack = tcp_pkt(CLIENT, 40000, REMOTE, 443, ACK, b"x");
    assert_eq!(out(&mut t, 0, &mut ack, 0), Outbound::Invalid(Invalid::NotNew));
    let mut synack = tcp_pkt(CLIENT, 40000, REMOTE, 443, SYN | ACK, b"");
    assert_eq!(out(&mut t, 0, &mut synack, 0), Outbound::Invalid(Invalid::NotNew));
    let mut syn_in = tcp_pkt(REMOTE, 443, UPLINK, 40000, SYN, b"");
    assert_eq!(t.inbound(&mut syn_in, false, 0), Inbound::NotTracked);
    let mut ping_in = echo(REMOTE, UPLINK, 5, true);
    assert_eq!(t.inbound(&mut ping_in, false, 0), Inbound::NotTracked);
    assert!(t.is_empty());
}

#[test]
fn udp_and_icmp_timeouts() {
    let mut t = table::<64, 256>();
    let mut tos = Timeouts::LINUX;
    tos.udp_unreplied = 2 * SEC;
    t.set_timeouts(tos);
    let mut q = udp_pkt(CLIENT, 5353, REMOTE, 53, b"q");
    out(&mut t, 0, &mut q, 0);
    // Unreplied: gone after the short timeout.
    let mut a = reply_to(&q, 0);
    assert_eq!(t.inbound(&mut a.clone(), false, 2 * SEC), Inbound::NotTracked);
    let mut q = udp_pkt(CLIENT, 5353, REMOTE, 53, b"q");
    assert_eq!(out(&mut t, 0, &mut q, 3 * SEC), Outbound::Forward { new: true });
    assert_eq!(t.inbound(&mut a, false, 4 * SEC), Inbound::Forward { client: c(0) });
    // Replied: 120 s from the reply.
    let mut a2 = reply_to(&q, 0);
    assert_eq!(t.inbound(&mut a2, false, 4 * SEC + tos.udp_replied - 1), Inbound::Forward { client: c(0) });
    let mut a3 = reply_to(&q, 0);
    assert_eq!(t.inbound(&mut a3, false, 4 * SEC + 2 * tos.udp_replied), Inbound::NotTracked);
    // ICMP echo: 30 s.
    let mut p = echo(CLIENT, REMOTE, 77, true);
    assert_eq!(out(&mut t, 0, &mut p, 0), Outbound::Forward { new: true });
    let mut r = reply_to(&p, 0);
    assert_eq!(t.inbound(&mut r, false, 29 * SEC), Inbound::Forward { client: c(0) });
    assert_eq!(dst_of(&r), (CLIENT, 77));
    let mut r = reply_to(&p, 0);
    assert_eq!(t.inbound(&mut r, false, 60 * SEC), Inbound::NotTracked);
}

#[test]
fn expire_sweeps_in_budgeted_steps() {
    let mut t = table::<64, 256>();
    for i in 0..10 {
        let mut q = udp_pkt(CLIENT, 1000 + i, REMOTE, 53, b"q");
        out(&mut t, 0, &mut q, 0);
    }
    let mut s = tcp_pkt(CLIENT, 999, REMOTE, 80, SYN, b"");
    out(&mut t, 0, &mut s, 0);
    assert_eq!(t.expire(29 * SEC, 64), 0);
    let mut n = 0;
    for _ in 0..8 {
        n += t.expire(31 * SEC, 8);
    }
    assert_eq!(n, 10);
    assert_eq!(t.len(), 1);
    assert_eq!(t.client_len(c(0)), 1);
    assert_eq!(t.expire(121 * SEC, 64), 1);
    assert!(t.is_empty());
    assert_eq!(t.stats().expired, 11);
}

// ---------------------------------------------------------------------------------------
// NAT

#[test]
fn port_kept_when_free_random_when_taken() {
    let mut t = table::<64, 256>();
    let mut a = udp_pkt(CLIENT, 40000, REMOTE, 3478, b"stun");
    out(&mut t, 0, &mut a, 0);
    assert_eq!(src_of(&a), (UPLINK, 40000));
    // Another client, same port, same remote endpoint: the port is taken, a random one.
    let mut b = udp_pkt(CLIENT2, 40000, REMOTE, 3478, b"stun");
    out(&mut t, 1, &mut b, 0);
    let (addr, port) = src_of(&b);
    assert_eq!(addr, UPLINK);
    assert_ne!(port, 40000);
    assert!(port >= 1024);
    // Same port to another remote: kept (the reply tuples differ).
    let mut d = udp_pkt(CLIENT2, 40000, REMOTE, 3479, b"stun");
    out(&mut t, 1, &mut d, 0);
    assert_eq!(src_of(&d), (UPLINK, 40000));
    // A privileged port stays privileged.
    let mut p1 = tcp_pkt(CLIENT, 700, REMOTE, 22, SYN, b"");
    let mut p2 = tcp_pkt(CLIENT2, 700, REMOTE, 22, SYN, b"");
    out(&mut t, 0, &mut p1, 0);
    out(&mut t, 1, &mut p2, 0);
    assert_eq!(src_of(&p1).1, 700);
    assert!((1..1024).contains(&src_of(&p2).1) && src_of(&p2).1 != 700);
    // Reserved ports are never chosen, even to keep a client's port.
    t.reserve_local_ports(Some((50000, 50010)));
    let mut r = udp_pkt(CLIENT, 50005, REMOTE, 53, b"q");
    out(&mut t, 0, &mut r, 0);
    assert!(!(50000..=50010).contains(&src_of(&r).1));
}

#[test]
fn no_free_port_is_refused_and_counted() {
    let mut t = table::<64, 256>();
    let mut a = udp_pkt(CLIENT, 40000, REMOTE, 53, b"q");
    out(&mut t, 0, &mut a, 0);
    // An RNG that always proposes the taken port.
    let mut rng = || 40000u32 - 1024;
    let mut b = udp_pkt(CLIENT2, 40000, REMOTE, 53, b"q");
    assert_eq!(t.outbound(c(1), &mut b, false, 0, &mut rng, accept), Outbound::Refused(Refusal::NoFreePort));
    assert_eq!(t.stats().refused_no_port, 1);
    assert_eq!(t.len(), 1);
}

#[test]
fn rules_decide_new_flows_only() {
    let mut t = table::<64, 256>();
    let mut p = tcp_pkt(CLIENT, 40000, REMOTE, 80, SYN, b"");
    let mut rng = || 7u32;
    let mut seen = None;
    let r = t.outbound(c(0), &mut p, false, 0, &mut rng, |f| {
        seen = Some(*f);
        Verdict::Drop(DropReason::Policy)
    });
    assert_eq!(r, Outbound::Drop(DropReason::Policy));
    assert_eq!(seen, Some(Flow::new(IpAddr::V4(REMOTE), 6, 80, 0)));
    assert!(t.is_empty());
    let mut p = tcp_pkt(CLIENT, 40000, REMOTE, 80, SYN, b"");
    assert_eq!(out(&mut t, 0, &mut p, 0), Outbound::Forward { new: true });
    let mut p = tcp_pkt(CLIENT, 40000, REMOTE, 80, ACK, b"");
    let r = t.outbound(c(0), &mut p, false, 0, &mut rng, |_| panic!("rules asked for a known flow"));
    assert_eq!(r, Outbound::Forward { new: false });
    // No NAT address: nothing is opened.
    t.set_nat_address(None);
    assert!(t.is_empty());
    let mut p = udp_pkt(CLIENT, 1, REMOTE, 53, b"q");
    assert_eq!(out(&mut t, 0, &mut p, 0), Outbound::Invalid(Invalid::NoNatAddress));
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Tcp,
    Udp,
    Icmp,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Tcp), Just(Kind::Udp), Just(Kind::Icmp)]
}

fn mk(k: Kind, src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16, payload: &[u8]) -> Vec<u8> {
    match k {
        Kind::Tcp => tcp_pkt(src, sp, dst, dp, SYN, payload),
        Kind::Udp => udp_pkt(src, sp, dst, dp, payload),
        Kind::Icmp => {
            let mut e = vec![0u8; 8 + payload.len()];
            icmpv4::Repr::EchoRequest { ident: sp, seq_no: dp, data: payload }.emit(&mut e).unwrap();
            ip(src, dst, IpProtocol::Icmp, &e)
        }
    }
}

/// Put the pseudo-header sum in the L4 checksum field (what a `csum_blank` netfront sends).
fn blank(p: &mut [u8]) {
    let at = if p[9] == 6 { 36 } else { 26 };
    let s = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let d = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let sum = checksum::pseudo_header_v4(s, d, p[9], (p.len() - 20) as u16);
    p[at..at + 2].copy_from_slice(&sum.to_be_bytes());
}

/// Complete a `csum_blank` packet as the offload engine would, in place.
fn complete(p: &mut [u8]) {
    let at = if p[9] == 6 { 36 } else { 26 };
    let c = !checksum::data(&p[20..]);
    let c = if p[9] == 17 { checksum::udp_final(c) } else { c };
    p[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Client packet → NAT'd (checksums valid by full recompute, source = uplink, port kept
    /// when free) → reply → de-NAT'd (checksums valid, equal to the exact reverse of the
    /// original); with taken ports the choice is random and replies still find the client.
    #[test]
    fn nat_roundtrip(
        k in kind(),
        flows in proptest::collection::vec((0u8..4, any::<u16>(), any::<u16>(), 0u8..3), 1..20),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
        seed in any::<u32>(),
        blank_csum in any::<bool>(),
    ) {
        let mut t = table::<64, 256>();
        let mut r = seed;
        let mut rng = move || { r ^= r << 13; r ^= r >> 17; r ^= r << 5; r };
        let mut sent: Vec<(Vec<u8>, Vec<u8>, u16)> = Vec::new();
        for &(cl, sp, dp, remote) in &flows {
            let src = Ipv4Addr::new(10, 137, 0, 10 + cl);
            let dst = Ipv4Addr::new(93, 184, 216, 30 + remote);
            let orig = mk(k, src, sp, dst, dp, &payload);
            let mut p = orig.clone();
            let csum_blank = blank_csum && !matches!(k, Kind::Icmp);
            if csum_blank { blank(&mut p); }
            let key = parse(&orig).unwrap().0;
            let known = t.find(&key, Dir::Original).map(|i| t.entries[i as usize].nat_port);
            let reply_taken = {
                let want = Tuple { dst: UPLINK, ..key.reversed() };
                let want = if matches!(k, Kind::Icmp) { Tuple { src_port: 0, dst_port: sp, ..want } } else { want };
                t.find(&want, Dir::Reply).is_some()
            };
            let res = t.outbound(c(u16::from(cl)), &mut p, csum_blank, 0, &mut rng, accept);
            prop_assert_eq!(res, Outbound::Forward { new: known.is_none() });
            if csum_blank { complete(&mut p); }
            prop_assert!(ipv4_checksums_valid(&p));
            let (a, port) = src_of(&p);
            prop_assert_eq!(a, UPLINK);
            match known {
                Some(kp) => prop_assert_eq!(port, kp),
                None if !reply_taken => prop_assert_eq!(port, sp),
                None => prop_assert_ne!(port, sp),
            }
            prop_assert_eq!(&p[20..][..0], &orig[20..][..0]);
            sent.push((orig, p, port));
        }
        for (orig, p, _) in &sent {
            let mut rep = reply_to(p, ACK);
            let csum_blank = blank_csum && !matches!(k, Kind::Icmp);
            if csum_blank { blank(&mut rep); }
            let res = t.inbound(&mut rep, csum_blank, 0);
            let cl = orig[15] - 10;
            prop_assert_eq!(res, Inbound::Forward { client: c(u16::from(cl)) });
            if csum_blank { complete(&mut rep); }
            prop_assert!(ipv4_checksums_valid(&rep));
            prop_assert_eq!(dst_of(&rep), src_of(orig));
            prop_assert_eq!(src_of(&rep), dst_of(orig));
            // Everything else is exactly what the remote sent to the NAT'd packet.
            let mut want = reply_to(orig, ACK);
            if csum_blank { blank(&mut want); complete(&mut want); }
            prop_assert_eq!(&rep, &want);
        }
    }

    /// Rewriting is exactly reversible: NAT then de-NAT of the same bytes gives them back.
    #[test]
    fn nat_is_reversible(k in kind(), sp in any::<u16>(), dp in any::<u16>(),
                         payload in proptest::collection::vec(any::<u8>(), 0..40), blank_csum in any::<bool>()) {
        let orig = mk(k, CLIENT, sp, REMOTE, dp, &payload);
        let mut p = orig.clone();
        let csum_blank = blank_csum && !matches!(k, Kind::Icmp);
        if csum_blank { blank(&mut p); }
        let before = p.clone();
        let parsed = tuple::parse_packet(&p).unwrap();
        nat::snat(&mut p, &parsed, UPLINK, sp.wrapping_add(17), csum_blank).unwrap();
        let mut q = p.clone();
        if csum_blank { complete(&mut q); }
        prop_assert!(ipv4_checksums_valid(&q));
        // Undo by swapping roles: rewrite the source back.
        let rw = netstack::nat::Rewrite { src_addr: Some(CLIENT), src_port: Some(sp), ..Default::default() };
        netstack::nat::rewrite_ipv4(&mut p, &rw, csum_blank).unwrap();
        // One's-complement arithmetic may flip 0x0000 and 0xffff; compare checksum-valid forms.
        if !csum_blank { prop_assert!(ipv4_checksums_valid(&p)); }
        let mut a = p.clone();
        let mut b = before.clone();
        if csum_blank { complete(&mut a); complete(&mut b); }
        prop_assert_eq!(a, b);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The per-packet NAT rewrite (from the packet parsed once) writes exactly the bytes
    /// netstack's general `rewrite_ipv4` writes, source and destination, complete and
    /// partial checksums, UDP with a zero ("none") checksum, random addresses and ports.
    #[test]
    fn nat_fast_path_matches_netstack(
        k in kind(), sp in any::<u16>(), dp in any::<u16>(), port in any::<u16>(), addr in any::<u32>(),
        payload in proptest::collection::vec(any::<u8>(), 0..40),
        blank_csum in any::<bool>(), zero_udp_csum in any::<bool>(),
    ) {
        let mut orig = mk(k, CLIENT, sp, REMOTE, dp, &payload);
        let csum_blank = blank_csum && !matches!(k, Kind::Icmp);
        if csum_blank { blank(&mut orig); }
        if zero_udp_csum && orig[9] == 17 { orig[26..28].copy_from_slice(&[0, 0]); }
        let parsed = tuple::parse_packet(&orig).unwrap();
        let addr = Ipv4Addr::from_bits(addr);
        for src in [true, false] {
            let mut fast = orig.clone();
            let mut general = orig.clone();
            let rw = if src {
                nat::snat(&mut fast, &parsed, addr, port, csum_blank).unwrap();
                netstack::nat::Rewrite { src_addr: Some(addr), src_port: Some(port), ..Default::default() }
            } else {
                nat::unsnat(&mut fast, &parsed, addr, port, csum_blank).unwrap();
                netstack::nat::Rewrite { dst_addr: Some(addr), dst_port: Some(port), ..Default::default() }
            };
            netstack::nat::rewrite_ipv4(&mut general, &rw, csum_blank).unwrap();
            prop_assert_eq!(fast, general);
        }
    }
}

// ---------------------------------------------------------------------------------------
// capacity, quota, eviction, flush

#[test]
fn quota_evicts_own_oldest_unreplied_then_refuses() {
    let mut t = table::<64, 256>();
    t.set_client_quota(4);
    // Client 0: 2 established TCP flows and 2 unreplied UDP flows.
    for port in [1000u16, 1001] {
        let mut s = tcp_pkt(CLIENT, port, REMOTE, 80, SYN, b"");
        out(&mut t, 0, &mut s, 0);
        t.inbound(&mut reply_to(&s, SYN | ACK), false, 0);
        out(&mut t, 0, &mut tcp_pkt(CLIENT, port, REMOTE, 80, ACK, b""), 0);
    }
    for port in [2000u16, 2001] {
        out(&mut t, 0, &mut udp_pkt(CLIENT, port, REMOTE, 53, b"q"), SEC);
    }
    // Client 1 has one flow that must never be touched.
    out(&mut t, 1, &mut udp_pkt(CLIENT2, 3000, REMOTE, 53, b"q"), 0);
    assert_eq!(t.client_len(c(0)), 4);
    // A fifth flow evicts client 0's oldest unreplied flow (port 2000).
    assert_eq!(out(&mut t, 0, &mut udp_pkt(CLIENT, 2002, REMOTE, 53, b"q"), 2 * SEC), Outbound::Forward { new: true });
    assert_eq!(t.stats().evicted_quota, 1);
    let gone = parse(&udp_pkt(CLIENT, 2000, REMOTE, 53, b"")).unwrap().0;
    assert!(t.find(&gone, Dir::Original).is_none());
    assert_eq!(t.client_len(c(0)), 4);
    assert_eq!(t.client_len(c(1)), 1);
    // Reply to the two UDP flows: now all four are assured and a new flow is refused.
    for port in [2001u16, 2002] {
        let q = udp_pkt(UPLINK, port, REMOTE, 53, b"");
        t.inbound(&mut reply_to(&q, 0), false, 3 * SEC);
    }
    assert_eq!(
        out(&mut t, 0, &mut udp_pkt(CLIENT, 2003, REMOTE, 53, b"q"), 4 * SEC),
        Outbound::Refused(Refusal::QuotaFull)
    );
    assert_eq!(t.stats().refused_quota, 1);
    assert_eq!(t.len(), 5);
}

#[test]
fn full_table_evicts_oldest_evictable_of_any_client_never_assured() {
    let mut t = table::<8, 32>();
    // Client 0: 6 assured UDP flows; client 1: 2 unreplied.
    for port in 0..6u16 {
        let mut q = udp_pkt(CLIENT, 1000 + port, REMOTE, 53, b"q");
        out(&mut t, 0, &mut q, 0);
        t.inbound(&mut reply_to(&q, 0), false, 0);
    }
    out(&mut t, 1, &mut udp_pkt(CLIENT2, 5000, REMOTE, 53, b"q"), SEC);
    out(&mut t, 1, &mut udp_pkt(CLIENT2, 5001, REMOTE, 53, b"q"), 2 * SEC);
    assert_eq!(t.len(), 8);
    // Client 0 opens a new flow: client 1's oldest unreplied one goes.
    assert_eq!(out(&mut t, 0, &mut udp_pkt(CLIENT, 7000, REMOTE, 53, b"q"), 3 * SEC), Outbound::Forward { new: true });
    assert_eq!(t.stats().evicted_full, 1);
    assert!(t.find(&parse(&udp_pkt(CLIENT2, 5000, REMOTE, 53, b"")).unwrap().0, Dir::Original).is_none());
    assert!(t.find(&parse(&udp_pkt(CLIENT2, 5001, REMOTE, 53, b"")).unwrap().0, Dir::Original).is_some());
    // Make everything assured: the next new flow is refused.
    for (cl, ip_, port) in [(1u16, CLIENT2, 5001u16), (0, CLIENT, 7000)] {
        let _ = (cl, ip_);
        t.inbound(&mut reply_to(&udp_pkt(UPLINK, port, REMOTE, 53, b""), 0), false, 3 * SEC);
    }
    assert_eq!(
        out(&mut t, 1, &mut udp_pkt(CLIENT2, 5002, REMOTE, 53, b"q"), 4 * SEC),
        Outbound::Refused(Refusal::TableFull)
    );
    assert_eq!(t.stats().refused_full, 1);
    // An expired flow is reclaimed (counted as expired, not evicted).
    assert_eq!(
        out(&mut t, 1, &mut udp_pkt(CLIENT2, 5002, REMOTE, 53, b"q"), 1000 * SEC),
        Outbound::Forward { new: true }
    );
    assert_eq!(t.stats().evicted_full, 1);
    assert!(t.stats().expired >= 1);
}

#[test]
fn closed_tcp_flows_are_evictable() {
    let mut t = table::<2, 8>();
    let mut s = tcp_pkt(CLIENT, 1, REMOTE, 80, SYN, b"");
    out(&mut t, 0, &mut s, 0);
    t.inbound(&mut reply_to(&s, SYN | ACK), false, 0);
    out(&mut t, 0, &mut tcp_pkt(CLIENT, 1, REMOTE, 80, ACK, b""), 0);
    let mut s2 = tcp_pkt(CLIENT, 2, REMOTE, 80, SYN, b"");
    out(&mut t, 0, &mut s2, 0);
    t.inbound(&mut reply_to(&s2, SYN | ACK), false, 0);
    out(&mut t, 0, &mut tcp_pkt(CLIENT, 2, REMOTE, 80, ACK, b""), 0);
    // (The quota is clamped to the capacity, 2, so the quota check refuses first.)
    assert_eq!(out(&mut t, 0, &mut udp_pkt(CLIENT, 3, REMOTE, 53, b""), 0), Outbound::Refused(Refusal::QuotaFull));
    // Flow 1 is reset: it may now make room.
    t.inbound(&mut reply_to(&s, RST), false, 0);
    assert_eq!(out(&mut t, 0, &mut udp_pkt(CLIENT, 3, REMOTE, 53, b""), 0), Outbound::Forward { new: true });
    assert_eq!(t.stats().evicted_quota, 1);
    assert!(t.find(&parse(&tcp_pkt(CLIENT, 1, REMOTE, 80, ACK, b"")).unwrap().0, Dir::Original).is_none());
}

#[test]
fn flush_client_forgets_only_its_flows() {
    let mut t = table::<64, 256>();
    for p in 0..5 {
        out(&mut t, 0, &mut udp_pkt(CLIENT, 100 + p, REMOTE, 53, b"q"), 0);
        out(&mut t, 1, &mut tcp_pkt(CLIENT2, 100 + p, REMOTE, 80, SYN, b""), 0);
    }
    let mut q = udp_pkt(CLIENT, 100, REMOTE, 53, b"q");
    out(&mut t, 0, &mut q, 0);
    assert_eq!(t.flush_client(c(0)), 5);
    assert_eq!(t.stats().flushed, 5);
    assert_eq!(t.client_len(c(0)), 0);
    assert_eq!(t.len(), 5);
    assert_eq!(t.inbound(&mut reply_to(&q, 0), false, 0), Inbound::NotTracked);
    // The same address comes back (a disposable VM): a fresh flow.
    assert_eq!(out(&mut t, 0, &mut udp_pkt(CLIENT, 100, REMOTE, 53, b"q"), 0), Outbound::Forward { new: true });
}

/// Random operations against a simple model: the index never loses or invents a flow
/// (backward-shift deletion, list links) and the counts agree.
#[test]
fn index_consistency_under_churn() {
    let mut t = table::<16, 64>();
    let mut x = 99u32;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    for step in 0..20_000u64 {
        let r = next();
        let port = (r % 40) as u16;
        let cl = (r >> 8) % 3;
        let src = Ipv4Addr::new(10, 0, 0, cl as u8);
        match (r >> 12) % 5 {
            0..=2 => {
                let _ = out(&mut t, cl as u16, &mut udp_pkt(src, port, REMOTE, 53, b""), step);
            }
            3 => {
                let q = udp_pkt(UPLINK, port, REMOTE, 53, b"");
                let _ = t.inbound(&mut reply_to(&q, 0), false, step);
            }
            _ => {
                if r % 97 == 0 {
                    t.flush_client(c(cl as u16));
                } else {
                    t.expire(step, 4);
                }
            }
        }
        // Every live entry is findable by both tuples; counts match.
        let mut live = 0;
        let mut per = [0usize; 3];
        for (i, e) in t.entries.iter().enumerate() {
            if e.live {
                live += 1;
                per[usize::from(e.client)] += 1;
                assert_eq!(t.find(&e.orig, Dir::Original), Some(i as u32));
                assert_eq!(t.find(&e.reply(), Dir::Reply), Some(i as u32));
            }
        }
        assert_eq!(live, t.len());
        for (k, n) in per.iter().enumerate() {
            assert_eq!(*n, t.client_len(c(k as u16)));
        }
    }
    assert!(t.stats().evicted_full + t.stats().evicted_quota + t.stats().expired > 0);
}

// ---------------------------------------------------------------------------------------
// ICMP errors

fn icmp_error_about(sent: &[u8], ty: u8, code: u8, quote: usize) -> Vec<u8> {
    let (s, _) = src_of(sent);
    let q = &sent[..sent.len().min(20 + quote)];
    let mut m = vec![0u8; 8 + q.len()];
    m[0] = ty;
    m[1] = code;
    m[6..8].copy_from_slice(&1400u16.to_be_bytes());
    m[8..].copy_from_slice(q);
    let c = !checksum::data(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ip(ROUTER, s, IpProtocol::Icmp, &m)
}

#[test]
fn icmp_errors_are_translated() {
    for (k, quote) in [(Kind::Tcp, 8), (Kind::Tcp, 40), (Kind::Udp, 8), (Kind::Udp, 100), (Kind::Icmp, 8)] {
        let mut t = table::<64, 256>();
        // Force a port change: another client holds the port first.
        let first = mk(k, CLIENT2, 4242, REMOTE, 53, b"payload!");
        out(&mut t, 1, &mut first.clone(), 0);
        let orig = mk(k, CLIENT, 4242, REMOTE, 53, b"payload!");
        let mut sent = orig.clone();
        out(&mut t, 0, &mut sent, 0);
        assert_ne!(src_of(&sent).1, 4242);
        let mut err = icmp_error_about(&sent, 3, 4, quote);
        assert!(ipv4_checksums_valid(&err));
        assert_eq!(t.inbound(&mut err, false, SEC), Inbound::Forward { client: c(0) }, "{k:?} {quote}");
        assert!(ipv4_checksums_valid(&err), "{k:?} {quote}");
        // Exactly what the router would have sent about the client's own packet.
        let mut want = icmp_error_about(&orig, 3, 4, quote);
        let mut w = ipv4::Packet::new_unchecked(&mut want[..]);
        w.set_dst_addr(CLIENT);
        w.fill_checksum();
        assert_eq!(err, want, "{k:?} {quote}");
    }
    assert_eq!(Small::new().stats().icmp_errors_translated, 0);
}

#[test]
fn icmp_errors_about_unknown_flows_are_not_tracked() {
    let mut t = table::<64, 256>();
    let sent = udp_pkt(UPLINK, 999, REMOTE, 53, b"x");
    let mut err = icmp_error_about(&sent, 11, 0, 8);
    assert_eq!(t.inbound(&mut err, false, 0), Inbound::NotTracked);
    let mut short = ip(ROUTER, UPLINK, IpProtocol::Icmp, &[3, 1, 0, 0, 0, 0, 0, 0, 0x45]);
    assert!(matches!(t.inbound(&mut short, false, 0), Inbound::Invalid(_)));
}

// ---------------------------------------------------------------------------------------
// rule updates

#[test]
fn rule_update_removes_flows_the_new_rules_refuse() {
    let mut t = table::<64, 256>();
    let ctx = MatchContext { dns_servers: &[], hosts: &NoResolutions };
    for (cl, src) in [(0u16, CLIENT), (1, CLIENT2)] {
        let mut s = tcp_pkt(src, 1000, REMOTE, 443, SYN, b"");
        out(&mut t, cl, &mut s, 0);
        t.inbound(&mut reply_to(&s, SYN | ACK), false, 0);
        out(&mut t, cl, &mut tcp_pkt(src, 1000, REMOTE, 443, ACK, b""), 0);
        out(&mut t, cl, &mut tcp_pkt(src, 1001, REMOTE, 80, SYN, b""), 0);
        out(&mut t, cl, &mut udp_pkt(src, 1002, REMOTE, 53, b"q"), 0);
        out(&mut t, cl, &mut echo(src, REMOTE, 9, true), 0);
    }
    let mut rules = ClientRules::new(Family::V4);
    let set: [(&[u8], &[u8]); 3] = [
        (b"policy", b"drop"),
        (b"0000", b"action=accept proto=tcp dstports=443-443"),
        (b"0001", b"action=accept proto=icmp icmptype=8"),
    ];
    rules.commit(Family::V4, set).unwrap();
    assert_eq!(t.apply_rules(c(0), &rules, &ctx), 2);
    assert_eq!(t.client_len(c(0)), 2);
    assert_eq!(t.client_len(c(1)), 4);
    assert_eq!(t.stats().rules_removed, 2);
    let kept = parse(&tcp_pkt(CLIENT, 1000, REMOTE, 443, ACK, b"")).unwrap().0;
    assert!(t.find(&kept, Dir::Original).is_some());
    // RuleSet form, and an uncommitted rule set drops everything.
    assert_eq!(t.apply_rule_set(c(0), rules.active().unwrap(), &ctx), 0);
    assert_eq!(t.apply_rules(c(1), &ClientRules::new(Family::V4), &ctx), 4);
    assert_eq!(t.client_len(c(1)), 0);
}

#[test]
fn rekey_and_sizes() {
    let mut t = table::<64, 256>();
    out(&mut t, 0, &mut udp_pkt(CLIENT, 1, REMOTE, 53, b"q"), 0);
    t.rekey([7; 16]);
    assert!(t.is_empty());
    assert_eq!(out(&mut t, 0, &mut udp_pkt(CLIENT, 1, REMOTE, 53, b"q"), 0), Outbound::Forward { new: true });
    let size = core::mem::size_of::<DefaultConntrack>();
    eprintln!("DefaultConntrack: {size} bytes, entry {} bytes", core::mem::size_of::<table::Entry>());
    assert!(size < 8 << 20, "{size}");
}

/// A new table stores its defaults as zero ("unset"): they read back as the documented
/// defaults, and set values replace them.
#[test]
fn defaults_until_set() {
    let mut t = table::<64, 256>();
    assert_eq!(t.client_quota(), 64);
    assert_eq!(*t.timeouts(), Timeouts::LINUX);
    // Larger than the default quota (a static: too big for the test thread's stack).
    static BIG: Conntrack<32768, 131_072> = Conntrack::new();
    assert_eq!(BIG.client_quota(), crate::config::CONNTRACK_CLIENT_QUOTA);
    t.set_client_quota(3);
    assert_eq!(t.client_quota(), 3);
    let tos = Timeouts { udp_unreplied: 7, ..Timeouts::LINUX };
    t.set_timeouts(tos);
    assert_eq!(*t.timeouts(), tos);
}

/// Every one of the `N` entries is used (never-used ones after removed ones), and a table
/// emptied by a flush fills up again.
#[test]
fn every_entry_is_usable_and_reused() {
    let mut t = table::<16, 64>();
    t.set_client_quota(16);
    for round in 0..3u64 {
        for p in 0..16u16 {
            let r = out(&mut t, 0, &mut udp_pkt(CLIENT, 1000 + p, REMOTE, 53, b""), round);
            assert_eq!(r, Outbound::Forward { new: true }, "round {round}, flow {p}");
        }
        assert_eq!(t.len(), 16);
        assert!(t.entries.iter().all(|e| e.live));
        // Full, every flow replied (not evictable): another client's new flow is refused.
        for p in 0..16u16 {
            let q = udp_pkt(UPLINK, 1000 + p, REMOTE, 53, b"");
            assert!(matches!(t.inbound(&mut reply_to(&q, 0), false, round), Inbound::Forward { .. }));
        }
        let r = out(&mut t, 1, &mut udp_pkt(CLIENT2, 2000, REMOTE, 53, b""), round);
        assert_eq!(r, Outbound::Refused(Refusal::TableFull));
        assert_eq!(t.flush_client(c(0)), 16);
        assert!(t.is_empty());
    }
}

proptest! {
    /// The index's written-out SipHash-1-3 is the `siphasher` crate's, for any key and tuple.
    #[test]
    fn tuple_hash_is_siphash13(k0 in any::<u64>(), k1 in any::<u64>(), proto in any::<u8>(), src in any::<u32>(),
                               sp in any::<u16>(), dst in any::<u32>(), dp in any::<u16>()) {
        use core::hash::Hasher;
        let t = Tuple { proto, src: Ipv4Addr::from_bits(src), src_port: sp, dst: Ipv4Addr::from_bits(dst), dst_port: dp };
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&k0.to_le_bytes());
        key[8..].copy_from_slice(&k1.to_le_bytes());
        let mut table = Small::new();
        table.rekey(key);
        let mut h = siphasher::sip::SipHasher13::new_with_keys(k0, k1);
        h.write(&t.to_bytes());
        prop_assert_eq!(table.hash(&t), h.finish() as u32);
    }
}

// ---------------------------------------------------------------------------------------
// flow cache: a cached lookup never yields a removed, stale or different flow

/// A TCP flow of client 0 from `sp`, opened and used twice each way (so that both of its
/// tuples are in the flow cache); returns the client's ACK and the remote's ACK.
fn cached_tcp_flow(t: &mut Small, sp: u16) -> (Vec<u8>, Vec<u8>) {
    let mut syn = tcp_pkt(CLIENT, sp, REMOTE, 443, SYN, b"");
    assert_eq!(out(t, 0, &mut syn, 0), Outbound::Forward { new: true });
    let ack = tcp_pkt(CLIENT, sp, REMOTE, 443, ACK, b"data");
    let mut sent = ack.clone();
    for _ in 0..2 {
        sent = ack.clone();
        assert_eq!(out(t, 0, &mut sent, SEC), Outbound::Forward { new: false });
        let mut r = reply_to(&sent, ACK);
        assert_eq!(t.inbound(&mut r, false, SEC), Inbound::Forward { client: c(0) });
    }
    (ack, reply_to(&sent, ACK))
}

/// After the flow is gone, neither of its cached tuples finds anything.
fn assert_forgotten(t: &mut Small, (ack, reply): &(Vec<u8>, Vec<u8>), now: u64) {
    assert_eq!(out(t, 0, &mut ack.clone(), now), Outbound::Invalid(Invalid::NotNew));
    assert_eq!(t.inbound(&mut reply.clone(), false, now), Inbound::NotTracked);
}

#[test]
fn flow_cache_forgets_flows_removed_by_expiry() {
    // Expired when looked up (the cache hit is checked against the deadline).
    let mut t = table::<64, 256>();
    let f = cached_tcp_flow(&mut t, 40000);
    assert_forgotten(&mut t, &f, 200 * SEC);
    assert!(t.is_empty());
    // Removed by the sweep before the lookup.
    let f = cached_tcp_flow(&mut t, 40000);
    assert_eq!(t.expire(400 * SEC, 64), 1);
    assert_forgotten(&mut t, &f, 400 * SEC);
}

#[test]
fn flow_cache_forgets_flows_removed_by_rules_flush_rekey_and_nat_address() {
    type Removal = (&'static str, fn(&mut Small));
    let removals: [Removal; 6] = [
        ("rule update", |t| assert_eq!(t.retain_flows(c(0), |_| false), 1)),
        ("client flush", |t| assert_eq!(t.flush_client(c(0)), 1)),
        ("rekey", |t| t.rekey(*b"fedcba9876543210")),
        ("same key again", |t| t.rekey(*b"0123456789abcdef")),
        ("clear", |t| t.clear()),
        ("new NAT address", |t| t.set_nat_address(Some(Ipv4Addr::new(192, 168, 1, 201)))),
    ];
    for (what, remove) in removals {
        let mut t = table::<64, 256>();
        let f = cached_tcp_flow(&mut t, 40000);
        remove(&mut t);
        assert!(t.is_empty(), "{what}");
        assert_forgotten(&mut t, &f, 2 * SEC);
    }
    // Setting the same NAT address keeps the flows: the cache still finds them.
    let mut t = table::<64, 256>();
    let (ack, _) = cached_tcp_flow(&mut t, 40000);
    t.set_nat_address(Some(UPLINK));
    assert_eq!(out(&mut t, 0, &mut ack.clone(), 2 * SEC), Outbound::Forward { new: false });
}

#[test]
fn flow_cache_ignores_an_entry_reused_by_another_flow() {
    let mut t = table::<64, 256>();
    let old = cached_tcp_flow(&mut t, 40000);
    assert_eq!(t.flush_client(c(0)), 1);
    // The freed entry (the free list's head) now holds another flow: the cache slots of the
    // old tuples still name it, and must not match.
    let (ack, reply) = cached_tcp_flow(&mut t, 40001);
    assert_eq!(t.len(), 1);
    assert_forgotten(&mut t, &old, 2 * SEC);
    let mut p = ack.clone();
    assert_eq!(out(&mut t, 0, &mut p, 2 * SEC), Outbound::Forward { new: false });
    assert_eq!(src_of(&p), (UPLINK, 40001));
    let mut r = reply.clone();
    assert_eq!(t.inbound(&mut r, false, 2 * SEC), Inbound::Forward { client: c(0) });
    assert_eq!(dst_of(&r), (CLIENT, 40001));
}

/// Two client ports whose flows to `REMOTE:53` (UDP) share a flow cache slot in direction
/// `dir` (their original tuples, or their reply tuples with the client's port kept).
fn colliding_ports(dir: Dir) -> (u16, u16) {
    let tuple = |sp: u16| match dir {
        Dir::Original => Tuple { proto: 17, src: CLIENT, src_port: sp, dst: REMOTE, dst_port: 53 },
        Dir::Reply => Tuple { proto: 17, src: REMOTE, src_port: 53, dst: UPLINK, dst_port: sp },
    };
    let first = Small::cache_slot(&tuple(20000), dir);
    let other = (20001..u16::MAX).find(|&sp| Small::cache_slot(&tuple(sp), dir) == first).unwrap();
    (20000, other)
}

#[test]
fn flow_cache_slot_shared_by_two_flows() {
    for dir in [Dir::Original, Dir::Reply] {
        let (a, b) = colliding_ports(dir);
        let mut t = table::<64, 256>();
        let mut sent = [Vec::new(), Vec::new()];
        for (i, sp) in [a, b].into_iter().enumerate() {
            let mut p = udp_pkt(CLIENT, sp, REMOTE, 53, b"q");
            assert_eq!(out(&mut t, 0, &mut p, 0), Outbound::Forward { new: true });
            sent[i] = p;
        }
        // Alternating, so that each lookup finds the other flow in the slot.
        for round in 0..3u64 {
            for (i, sp) in [a, b].into_iter().enumerate() {
                let mut p = udp_pkt(CLIENT, sp, REMOTE, 53, b"q");
                assert_eq!(out(&mut t, 0, &mut p, round), Outbound::Forward { new: false }, "{dir:?} {sp}");
                assert_eq!(src_of(&p), (UPLINK, sp), "{dir:?}: translated as its own flow");
                let mut r = reply_to(&sent[i], 0);
                assert_eq!(t.inbound(&mut r, false, round), Inbound::Forward { client: c(0) });
                assert_eq!(dst_of(&r), (CLIENT, sp), "{dir:?}: reply translated back to its own flow");
            }
        }
        assert_eq!(t.stats().created, 2);
        // `b` expires while `a` (used later) lives on: `a` is still its own flow, and `b` is a
        // new one, whichever of them the slot names.
        let late = 10 * SEC;
        assert_eq!(out(&mut t, 0, &mut udp_pkt(CLIENT, a, REMOTE, 53, b"q"), late), Outbound::Forward { new: false });
        let now = 2 + t.timeouts().udp_replied;
        for (sp, new) in [(b, true), (a, false), (b, false)] {
            let mut p = udp_pkt(CLIENT, sp, REMOTE, 53, b"q");
            assert_eq!(out(&mut t, 0, &mut p, now), Outbound::Forward { new }, "{dir:?} {sp}");
            assert_eq!(src_of(&p), (UPLINK, sp));
        }
        assert_eq!((t.stats().created, t.stats().expired), (3, 1));
    }
}
