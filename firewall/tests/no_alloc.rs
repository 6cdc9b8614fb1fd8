//! Zero allocation per packet: a counting global allocator around the system one; after
//! warm-up (table allocated, flows opened), tracking and translating packets both ways,
//! opening new flows, ICMP error translation, expiry, flush and a rule update allocate
//! nothing.

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

#[test]
fn no_allocation_per_packet() {
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
