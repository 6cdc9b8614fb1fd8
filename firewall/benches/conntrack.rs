//! Per-packet cost of an established flow (lookup + state + NAT rewrite, client → outside)
//! at 64 B and 1500 B frames, against a floor of "copy the frame and touch the headers"
//! measured in the same run. Prints ns/op and the ratio.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use firewall::conntrack::{ClientId, Conntrack, Outbound};
use firewall::rules::{AcceptedBy, Verdict};
use netstack::ip::IpProtocol;
use netstack::tcp::flags::{ACK, SYN};
use netstack::{ipv4, tcp};

type Table = Conntrack<4096, 16384>;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 17);
const UPLINK: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 200);
const REMOTE: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);

/// An IPv4/TCP packet of `len` bytes (IP total length; the 14-byte Ethernet header is not
/// part of it) from the client.
fn packet(len: usize, f: u16) -> Vec<u8> {
    let payload = vec![0xabu8; len - 40];
    let mut b = vec![0u8; len];
    tcp::Repr {
        src_port: 40000,
        dst_port: 443,
        seq_number: 1,
        ack_number: 1,
        flags: f,
        window_len: 100,
        urgent_at: 0,
        options: &[],
        payload: &payload,
    }
    .emit(&mut b[20..], CLIENT.into(), REMOTE.into())
    .unwrap();
    ipv4::Repr {
        src_addr: CLIENT,
        dst_addr: REMOTE,
        next_header: IpProtocol::Tcp,
        payload_len: len - 20,
        ttl: 64,
        ident: 1,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
        tos: 0,
    }
    .emit(&mut ipv4::Packet::new_unchecked(&mut b[..]))
    .unwrap();
    b
}

fn setup() -> Box<Table> {
    let mut t = Box::new(Table::new());
    t.rekey([3; 16]);
    t.set_nat_address(Some(UPLINK));
    let mut rng = || 4u32;
    // Some other flows so that the index is not trivially empty.
    for p in 0..2000u16 {
        let mut q = packet(64, SYN);
        q[20..22].copy_from_slice(&(1000 + p).to_be_bytes());
        let _ =
            t.outbound(ClientId::new(1).unwrap(), &mut q, false, 0, &mut rng, |_| Verdict::Accept(AcceptedBy::Policy));
    }
    let mut syn = packet(64, SYN);
    let r =
        t.outbound(ClientId::new(0).unwrap(), &mut syn, false, 0, &mut rng, |_| Verdict::Accept(AcceptedBy::Policy));
    assert_eq!(r, Outbound::Forward { new: true });
    t
}

fn bench(c: &mut Criterion) {
    let mut results = Vec::new();
    for len in [64usize, 1500] {
        // The IP packet inside a 64-byte / 1500-byte-MTU frame.
        let ip_len = if len == 64 { 64 - 14 } else { 1500 };
        let template = packet(ip_len, ACK);
        let mut frame = vec![0u8; ip_len];
        let mut g = c.benchmark_group(format!("{len}B"));
        g.measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
        // Floor: copy the frame (as forwarding between grant pages does) and touch the headers
        // (read the addresses and ports, write the source and the IP checksum).
        g.bench_function("floor", |b| {
            b.iter(|| {
                frame.copy_from_slice(&template);
                let s = u32::from_be_bytes([frame[12], frame[13], frame[14], frame[15]]);
                let p = u16::from_be_bytes([frame[20], frame[21]]);
                frame[12..16].copy_from_slice(&(s ^ 1).to_be_bytes());
                frame[10] ^= (p as u8) | 1;
                black_box(&frame);
            })
        });
        let mut t = setup();
        let client = ClientId::new(0).unwrap();
        let mut rng = || 4u32;
        g.bench_function("established", |b| {
            b.iter(|| {
                frame.copy_from_slice(&template);
                let r = t.outbound(client, &mut frame, false, 1, &mut rng, |_| unreachable!());
                black_box(r);
            })
        });
        g.finish();
        // Own timing for the printed ratio (criterion's estimates are in its report).
        let n = 2_000_000;
        let time = |f: &mut dyn FnMut()| {
            let s = Instant::now();
            for _ in 0..n {
                f();
            }
            s.elapsed().as_nanos() as f64 / n as f64
        };
        let floor = time(&mut || {
            frame.copy_from_slice(&template);
            let s = u32::from_be_bytes([frame[12], frame[13], frame[14], frame[15]]);
            frame[12..16].copy_from_slice(&(s ^ 1).to_be_bytes());
            frame[10] ^= 1;
            black_box(&frame);
        });
        let est = time(&mut || {
            frame.copy_from_slice(&template);
            black_box(t.outbound(client, &mut frame, false, 1, &mut rng, |_| unreachable!()));
        });
        results.push((len, floor, est));
    }
    for (len, floor, est) in results {
        println!(
            "conntrack established flow, {len} B: {est:.1} ns/op, floor {floor:.1} ns/op, ratio {:.2}",
            est / floor
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
