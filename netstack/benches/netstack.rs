//! Benchmarks: checksum (fast vs. a plain byte loop), parsing Ethernet+IPv4+TCP, and an
//! incremental NAT rewrite. criterion measures; a summary of ns/op and ratios follows.
//!
//! Run: `cargo bench -p netstack`.

use criterion::{BenchmarkId, Criterion, Throughput, black_box};
use netstack::*;
use std::time::{Duration, Instant};

/// The baseline: one byte at a time, the textbook loop.
fn naive_checksum(data: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    for (i, &b) in data.iter().enumerate() {
        acc += if i % 2 == 0 { u32::from(b) << 8 } else { u32::from(b) };
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

fn tcp_frame() -> Vec<u8> {
    let src = Ipv4Addr::new(10, 137, 0, 17);
    let dst = Ipv4Addr::new(93, 184, 216, 34);
    let payload = [0x42u8; 1400];
    let opts = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    let t = tcp::Repr {
        src_port: 40000,
        dst_port: 443,
        seq_number: 1,
        ack_number: 2,
        flags: tcp::flags::ACK,
        window_len: 500,
        urgent_at: 0,
        options: &opts,
        payload: &payload,
    };
    let mut f = vec![0u8; 14 + 20 + t.buffer_len()];
    ethernet::Repr {
        src_addr: EthernetAddress([0, 0x16, 0x3e, 0, 0, 1]),
        dst_addr: EthernetAddress([0xfe, 0xff, 0xff, 0xff, 0xff, 0xff]),
        ethertype: ethernet::EtherType::Ipv4,
    }
    .emit(&mut ethernet::Frame::new_unchecked(&mut f[..]));
    ipv4::Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Tcp,
        payload_len: t.buffer_len(),
        ttl: 64,
        ident: 1,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
        tos: 0,
    }
    .emit(&mut ipv4::Packet::new_unchecked(&mut f[14..]))
    .unwrap();
    t.emit(&mut f[34..], src.into(), dst.into()).unwrap();
    f
}

/// Parse a frame down to the TCP header and read the fields a firewall looks at.
fn parse(frame: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u16, u16, u16)> {
    let eth = ethernet::Frame::new_checked(frame).ok()?;
    if eth.ethertype() != ethernet::EtherType::Ipv4 {
        return None;
    }
    let ip = ipv4::Packet::new_checked(eth.payload()).ok()?;
    if ip.version() != 4 || ip.next_header() != IpProtocol::Tcp || ip.is_non_first_fragment() {
        return None;
    }
    let tcp = tcp::Packet::new_checked(ip.payload()).ok()?;
    Some((ip.src_addr(), ip.dst_addr(), tcp.src_port(), tcp.dst_port(), tcp.flags()))
}

const REWRITES: [nat::Rewrite; 2] = [
    nat::Rewrite {
        src_addr: Some(Ipv4Addr::new(192, 168, 1, 200)),
        src_port: Some(61000),
        dst_addr: None,
        dst_port: None,
    },
    nat::Rewrite {
        src_addr: Some(Ipv4Addr::new(10, 137, 0, 17)),
        src_port: Some(40000),
        dst_addr: None,
        dst_port: None,
    },
];

fn benches(c: &mut Criterion) {
    let data: Vec<u8> = (0..9000u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut g = c.benchmark_group("checksum");
    for len in [64usize, 1500, 9000] {
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::new("netstack", len), &data[..len], |b, d| {
            b.iter(|| checksum::checksum(black_box(d)))
        });
        g.bench_with_input(BenchmarkId::new("byte_loop", len), &data[..len], |b, d| {
            b.iter(|| naive_checksum(black_box(d)))
        });
    }
    g.finish();
    let frame = tcp_frame();
    c.bench_function("parse_eth_ipv4_tcp", |b| b.iter(|| parse(black_box(&frame))));
    let mut f = frame.clone();
    let mut i = 0;
    c.bench_function("nat_rewrite_addr_port", |b| {
        b.iter(|| {
            i ^= 1;
            nat::rewrite_ipv4(black_box(&mut f[14..]), &REWRITES[i], false)
        })
    });
}

/// ns per call of `f`, measured over about `budget`.
fn ns_per_op(budget: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..1000 {
        f();
    }
    let mut iters = 1000u64;
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        let e = t.elapsed();
        if e >= budget {
            return e.as_nanos() as f64 / iters as f64;
        }
        iters *= 2;
    }
}

fn summary() {
    let budget = Duration::from_millis(300);
    let data: Vec<u8> = (0..9000u32).map(|i| (i * 7 + 3) as u8).collect();
    println!("\n== netstack summary (ns/op, best of 3) ==");
    let best = |f: &mut dyn FnMut()| (0..3).map(|_| ns_per_op(budget, &mut *f)).fold(f64::INFINITY, f64::min);
    for len in [64usize, 1500, 9000] {
        let d = &data[..len];
        let fast = best(&mut || {
            black_box(checksum::checksum(black_box(d)));
        });
        let slow = best(&mut || {
            black_box(naive_checksum(black_box(d)));
        });
        println!(
            "checksum {len:>5} B: netstack {fast:>8.1} ns ({:.2} GB/s), byte loop {slow:>8.1} ns ({:.2} GB/s), speed-up x{:.1}",
            len as f64 / fast,
            len as f64 / slow,
            slow / fast
        );
    }
    let frame = tcp_frame();
    let p = best(&mut || {
        black_box(parse(black_box(&frame)));
    });
    println!("parse Ethernet+IPv4+TCP: {p:.1} ns");
    let mut f = frame.clone();
    let mut i = 0;
    let n = best(&mut || {
        i ^= 1;
        black_box(nat::rewrite_ipv4(black_box(&mut f[14..]), &REWRITES[i], false)).unwrap();
    });
    let full = best(&mut || {
        let ip = &mut f[14..];
        let mut t = tcp::Packet::new_unchecked(&mut ip[20..]);
        t.fill_checksum(IpAddr::V4(Ipv4Addr::new(10, 137, 0, 17)), IpAddr::V4(Ipv4Addr::new(93, 184, 216, 34)));
        black_box(&t);
    });
    println!(
        "NAT rewrite src addr+port, incremental checksums: {n:.1} ns (full TCP checksum recompute of the 1432-byte segment: {full:.1} ns, x{:.1})",
        full / n
    );
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    benches(&mut c);
    c.final_summary();
    summary();
}
