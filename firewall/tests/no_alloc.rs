//! Zero allocation per packet: a counting global allocator around the system one; after
//! warm-up (table allocated, flows opened), tracking and translating packets both ways,
//! opening new flows, ICMP error translation, expiry, flush and a rule update allocate
//! nothing; and the whole forwarding pipeline (`forward::Firewall::process` for every kind of
//! decision, fragmenting, reassembly, the resolver, configuration changes) allocates nothing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};

use firewall::conntrack::{ClientId, DefaultConntrack, Inbound, Outbound};
use firewall::rules::{AcceptedBy, ClientRules, Family, MatchContext, NoResolutions, Verdict};
use netstack::ip::IpProtocol;
use netstack::tcp::flags::{ACK, SYN};
use netstack::{ipv4, tcp, udp};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 17);
const UPLINK: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 200);
const REMOTE: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);

fn ip(buf: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, proto: IpProtocol, l4_len: usize) -> usize {
    ipv4::Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: proto,
        payload_len: l4_len,
        ttl: 64,
        ident: 1,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
        tos: 0,
    }
    .emit(&mut ipv4::Packet::new_unchecked(&mut buf[..]))
    .unwrap();
    20 + l4_len
}

fn tcp_pkt(buf: &mut [u8; 128], src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16, f: u16) -> usize {
    let r = tcp::Repr {
        src_port: sp,
        dst_port: dp,
        seq_number: 1,
        ack_number: 1,
        flags: f,
        window_len: 100,
        urgent_at: 0,
        options: &[],
        payload: b"data",
    };
    let n = r.emit(&mut buf[20..], src.into(), dst.into()).unwrap();
    ip(buf, src, dst, IpProtocol::Tcp, n)
}

fn udp_pkt(buf: &mut [u8; 128], src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16) -> usize {
    let n = udp::Repr { src_port: sp, dst_port: dp }.emit(&mut buf[20..], src.into(), dst.into(), b"q").unwrap();
    ip(buf, src, dst, IpProtocol::Udp, n)
}

/// The tests share the allocation counter: they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn no_allocation_per_packet() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The default table is several MiB: build it on a thread with a big stack.
    std::thread::Builder::new().stack_size(64 << 20).spawn(run).unwrap().join().unwrap();
}

fn run() {
    let mut ct: Box<DefaultConntrack> = Box::new(DefaultConntrack::new());
    ct.rekey([9; 16]);
    ct.set_nat_address(Some(UPLINK));
    let mut rules = ClientRules::new(Family::V4);
    let set: [(&[u8], &[u8]); 2] = [(b"policy", b"drop"), (b"0000", b"action=accept proto=tcp")];
    rules.commit(Family::V4, set).unwrap();
    let ctx = MatchContext { dns_servers: &[], hosts: &NoResolutions };
    let client = ClientId::new(3).unwrap();
    let mut seed = 1u32;
    let mut rng = move || {
        seed = seed.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
        seed
    };
    let mut buf = [0u8; 128];
    let accept = |_: &_| Verdict::Accept(AcceptedBy::Policy);

    // Warm-up: one of everything (and any lazy initialisation in std's test harness).
    let n = tcp_pkt(&mut buf, CLIENT, 40000, REMOTE, 443, SYN);
    assert_eq!(ct.outbound(client, &mut buf[..n], false, 0, &mut rng, accept), Outbound::Forward { new: true });

    let before = ALLOCS.load(Ordering::SeqCst);
    for i in 0..10_000u64 {
        let now = i * 1_000_000;
        let n = tcp_pkt(&mut buf, CLIENT, 40000, REMOTE, 443, ACK);
        assert_eq!(
            ct.outbound(client, &mut buf[..n], i % 2 == 0, now, &mut rng, accept),
            Outbound::Forward { new: false }
        );
        let n = tcp_pkt(&mut buf, REMOTE, 443, UPLINK, 40000, SYN | ACK);
        assert_eq!(ct.inbound(&mut buf[..n], false, now), Inbound::Forward { client });
        // New flows (UDP, a port per packet) until the quota evicts the oldest.
        let n = udp_pkt(&mut buf, CLIENT, (i % 30_000) as u16 + 1024, REMOTE, 53);
        let _ = ct.outbound(client, &mut buf[..n], false, now, &mut rng, |f| rules.evaluate(f, &ctx));
        let _ = ct.outbound(client, &mut buf[..n], false, now, &mut rng, accept);
        ct.expire(now, 64);
    }
    ct.apply_rules(client, &rules, &ctx);
    ct.flush_client(client);
    let after = ALLOCS.load(Ordering::SeqCst);
    assert_eq!(after - before, 0, "allocations per packet after warm-up");
    assert!(ct.stats().created > 1000);
}

mod pipeline {
    use super::*;
    use firewall::forward::{
        ChecksumState, ClientConfig, Decision, DefaultFirewall, DownlinkConfig, Egress, Ingress, Rx, UplinkConfig,
        fragment,
    };
    use netstack::ethernet::EthernetAddress;
    use netstack::icmpv4;

    const GW: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 6);
    const DNS: Ipv4Addr = Ipv4Addr::new(10, 139, 1, 1);
    const MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 1]);

    fn eth(slot: &mut [u8], ip_len: usize) -> usize {
        slot[12] = 8;
        slot[13] = 0;
        14 + ip_len
    }

    /// An IPv4/UDP packet with `len` bytes of payload and the given fragment fields.
    fn udp_frame(slot: &mut [u8], src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16, len: usize) -> usize {
        let ip = &mut slot[14..];
        let n = udp::Repr { src_port: sp, dst_port: dp }
            .emit(&mut ip[20..20 + 8 + len], src.into(), dst.into(), &[0x5a; 2048][..len])
            .unwrap();
        super::ip(ip, src, dst, IpProtocol::Udp, n);
        eth(slot, 20 + n)
    }

    fn tcp_frame(slot: &mut [u8], src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16, f: u16) -> usize {
        let mut b = [0u8; 128];
        let n = tcp_pkt(&mut b, src, sp, dst, dp, f);
        slot[14..14 + n].copy_from_slice(&b[..n]);
        eth(slot, n)
    }

    #[test]
    fn no_allocation_in_the_forwarding_pipeline() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        std::thread::Builder::new().stack_size(128 << 20).spawn(run).unwrap().join().unwrap();
    }

    fn run() {
        let mut fw: Box<DefaultFirewall> = Box::new(DefaultFirewall::new());
        fw.rekey([5; 16]);
        fw.set_uplink(Some(UplinkConfig {
            addr: UPLINK,
            netmask: Ipv4Addr::BROADCAST,
            gateway: Ipv4Addr::new(192, 168, 1, 1),
            mac: MAC,
            gateway_mac: MAC,
            mtu: 1500,
        }));
        fw.set_downlink(Some(DownlinkConfig::qubes(GW)));
        fw.set_dns_servers(Some(DNS), None);
        fw.set_resolver_port(33333);
        let id = ClientId::new(3).unwrap();
        let rules: [(&[u8], &[u8]); 4] = [
            (b"policy", b"drop"),
            (b"0000", b"action=drop proto=tcp dstports=25-25"),
            (b"0001", b"action=accept dsthost=example.com"),
            (b"0002", b"action=accept"),
        ];
        let mut seed = 7u32;
        let mut rng = move || {
            seed = seed.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
            seed
        };
        let mut slot = vec![0u8; 4096];
        let mut reply = vec![0u8; 4096];
        let mut out = vec![0u8; 4096];
        let mut whole = vec![0u8; 4096];
        let csum = ChecksumState::Complete;
        let from_c = Ingress::Client(id);

        let mut step = |fw: &mut DefaultFirewall, i: u64| {
            let now = i * 1_000_000;
            let mut n;
            // Configuration changes.
            if i.is_multiple_of(1000) {
                fw.remove_client(id);
                fw.add_client(id, ClientConfig { addr: CLIENT, mac: MAC }).unwrap();
                fw.commit_rules(id, rules).unwrap();
            }
            // Established TCP both ways.
            n = tcp_frame(&mut slot, CLIENT, 40000, REMOTE, 443, if i.is_multiple_of(1000) { SYN } else { ACK });
            let d = fw.process(Rx { from: from_c, len: n, csum }, &mut slot, &mut reply, now, &mut rng);
            assert!(matches!(d, Decision::Forward { to: Egress::Uplink, .. }), "{d:?}");
            n = tcp_frame(&mut slot, REMOTE, 443, UPLINK, 40000, SYN | ACK);
            let d = fw.process(Rx { from: Ingress::Uplink, len: n, csum }, &mut slot, &mut reply, now, &mut rng);
            assert!(matches!(d, Decision::Forward { to: Egress::Client(_), .. }), "{d:?}");
            // A new UDP flow per packet, as a partial checksum.
            n = udp_frame(&mut slot, CLIENT, (i % 30_000) as u16 + 1024, REMOTE, 53, 20);
            let d = fw.process(
                Rx { from: from_c, len: n, csum: ChecksumState::PartialPseudoHeader },
                &mut slot,
                &mut reply,
                now,
                &mut rng,
            );
            assert!(matches!(d, Decision::Forward { .. }), "{d:?}");
            // A drop rule (admin-prohibited), TTL expiry, an echo to the gateway, a reject.
            n = tcp_frame(&mut slot, CLIENT, 40001, REMOTE, 25, SYN);
            let _ = fw.process(Rx { from: from_c, len: n, csum }, &mut slot, &mut reply, now, &mut rng);
            n = tcp_frame(&mut slot, CLIENT, 40002, REMOTE, 80, SYN);
            slot[14 + 8] = 1;
            let _ = fw.process(Rx { from: from_c, len: n, csum }, &mut slot, &mut reply, now, &mut rng);
            let mut e = [0u8; 12];
            icmpv4::Repr::EchoRequest { ident: 1, seq_no: 1, data: b"ping" }.emit(&mut e).unwrap();
            slot[34..46].copy_from_slice(&e);
            super::ip(&mut slot[14..], CLIENT, GW, IpProtocol::Icmp, 12);
            n = eth(&mut slot, 32);
            let d = fw.process(Rx { from: from_c, len: n, csum }, &mut slot, &mut reply, now, &mut rng);
            assert!(matches!(d, Decision::Reply { dropped: None, .. }), "{d:?}");
            n = tcp_frame(&mut slot, CLIENT, 40003, GW, 22, SYN);
            let _ = fw.process(Rx { from: from_c, len: n, csum }, &mut slot, &mut reply, now, &mut rng);
            // A datagram in two fragments, reassembled, then cut for a smaller MTU.
            n = udp_frame(&mut slot, CLIENT, 6000, REMOTE, 9000, 1800);
            {
                let mut ipp = ipv4::Packet::new_unchecked(&mut slot[14..n]);
                ipp.set_ident(i as u16);
                ipp.set_fragment(false, false, 0);
                ipp.fill_checksum();
            }
            whole[..n].copy_from_slice(&slot[..n]);
            let mut held = 0;
            for k in 0..2 {
                let m = fragment(&whole[..n], 1000, k, &mut out).unwrap();
                slot[..m].copy_from_slice(&out[..m]);
                match fw.process(Rx { from: from_c, len: m, csum }, &mut slot, &mut reply, now, &mut rng) {
                    Decision::Held => held += 1,
                    Decision::Fragment { len, mtu, count, .. } => {
                        for j in 0..count {
                            fragment(&slot[..len], mtu, j, &mut out).unwrap();
                        }
                    }
                    d => panic!("{d:?}"),
                }
            }
            assert_eq!(held, 1);
            // The resolver: queries out, a (wrong) reply in.
            while fw.poll_resolver(now, &mut out, &mut rng).is_some() {}
            n = udp_frame(&mut slot, DNS, 53, UPLINK, 33333, 12);
            let _ = fw.process(Rx { from: Ingress::Uplink, len: n, csum }, &mut slot, &mut reply, now, &mut rng);
            fw.expire(now, 64);
        };
        for i in 0..3 {
            step(&mut fw, i);
        }
        let before = ALLOCS.load(Ordering::SeqCst);
        for i in 3..3000 {
            step(&mut fw, i);
        }
        let after = ALLOCS.load(Ordering::SeqCst);
        assert_eq!(after - before, 0, "allocations in the pipeline after warm-up");
        assert!(fw.counters().reassembled > 2000);
        assert!(fw.counters().icmp_errors > 0 && fw.counters().echo_replies > 0);
    }
}
