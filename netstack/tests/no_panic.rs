//! Property test: no input bytes make any parser, builder or rewrite panic. Inputs are the
//! scapy corpus frames with random byte changes and truncations, and plain random bytes.
//! (The cargo-fuzz targets in `fuzz/` do the same at much greater depth.)

use netstack::*;
use proptest::prelude::*;
use std::hint::black_box;

fn corpus() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/corpus");
    let mut v: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .expect("corpus missing; run tests/data/gen_corpus.py")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    v.sort();
    assert!(!v.is_empty());
    v
}

fn transport(proto: IpProtocol, src: IpAddr, dst: IpAddr, d: &[u8]) {
    match proto {
        IpProtocol::Tcp => {
            if let Ok(p) = tcp::Packet::new_checked(d) {
                black_box((p.payload(), p.verify_checksum(src, dst), p.option_iter().count()));
                let _ = tcp::Repr::parse(&p, src, dst);
            }
        }
        IpProtocol::Udp => {
            if let Ok(p) = udp::Packet::new_checked(d) {
                black_box((p.payload(), p.verify_checksum(src, dst)));
                let _ = udp::Repr::parse(&p, src, dst);
                if let Ok(m) = dns::Packet::new_checked(p.payload()) {
                    let mut t = [0u8; 300];
                    for q in m.questions().flatten() {
                        black_box(q.name.write_dotted(&mut t).ok());
                        black_box(q.name.eq_dotted("example.com"));
                    }
                    for r in m.records().flatten() {
                        black_box(r.1.name.write_dotted(&mut t).ok());
                    }
                }
            }
        }
        IpProtocol::Icmp => {
            if let Ok(p) = icmpv4::Packet::new_checked(d) {
                black_box((p.data(), p.verify_checksum(), p.quoted_packet().map(|q| q.payload().len()).ok()));
                let _ = icmpv4::Repr::parse(&p);
            }
        }
        IpProtocol::Icmpv6 => {
            if let (Ok(p), IpAddr::V6(s), IpAddr::V6(t)) = (icmpv6::Packet::new_checked(d), src, dst) {
                black_box((p.data(), p.target_addr(), p.ndp_options().count(), p.verify_checksum(s, t)));
                let _ = icmpv6::Repr::parse(&p, s, t);
            }
        }
        _ => {}
    }
}

fn everything(frame: &[u8]) {
    let Ok(f) = ethernet::Frame::new_checked(frame) else { return };
    let mut buf = [0u8; 1600];
    let z = EthernetAddress::ZERO;
    match f.ethertype() {
        ethernet::EtherType::Arp => {
            if let Ok(p) = arp::Packet::new_checked(f.payload()) {
                black_box((p.source_hardware_addr(), p.target_protocol_addr(), arp::Repr::parse(&p).ok()));
            }
        }
        ethernet::EtherType::Ipv4 => {
            let d = f.payload();
            if let Ok(p) = ipv4::Packet::new_checked(d) {
                black_box((p.options(), p.verify_checksum(), ipv4::Repr::parse(&p).ok()));
                if !p.is_non_first_fragment() {
                    transport(p.next_header(), p.src_addr().into(), p.dst_addr().into(), p.payload());
                }
                black_box(builder::may_send_icmpv4_error(d, f.dst_addr()));
                let _ = builder::icmpv4_error(&mut buf, z, z, p.dst_addr(), builder::Icmpv4Error::AdminProhibited, d);
                let _ = builder::icmpv4_echo_reply(&mut buf, z, z, d);
                let mut copy = d.to_vec();
                let rw = nat::Rewrite {
                    src_addr: Some(Ipv4Addr::new(1, 2, 3, 4)),
                    src_port: Some(5),
                    dst_addr: Some(Ipv4Addr::new(6, 7, 8, 9)),
                    dst_port: Some(10),
                };
                let _ = nat::rewrite_ipv4(&mut copy, &rw, false);
                let _ = nat::rewrite_ipv4(&mut copy, &rw, true);
                black_box(nat::ipv4_checksums_valid(&copy));
            }
        }
        ethernet::EtherType::Ipv6 => {
            let d = f.payload();
            if let Ok(p) = ipv6::Packet::new_checked(d) {
                if let Ok((u, rest)) = p.upper_layer_payload()
                    && !u.is_non_first_fragment()
                {
                    transport(u.protocol, p.src_addr().into(), p.pseudo_header_dst().into(), rest);
                }
                let k = builder::Icmpv6Error::TimeExceeded(0);
                black_box(builder::may_send_icmpv6_error(d, f.dst_addr(), k));
                let _ = builder::icmpv6_error(&mut buf, z, z, p.dst_addr(), k, d);
                let _ = builder::icmpv6_echo_reply(&mut buf, z, z, d);
            }
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_corpus_frames(
        pick in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let c = corpus();
        let mut f = c[pick.index(c.len())].clone();
        for (at, v) in edits {
            let i = at.index(f.len());
            f[i] = v;
        }
        let keep = cut.index(f.len() + 1);
        everything(&f);
        everything(&f[..keep]);
    }

    #[test]
    fn random_bytes(v in prop::collection::vec(any::<u8>(), 0..200)) {
        everything(&v);
        let mut with_header = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 0x08, 0x00];
        with_header.extend_from_slice(&v);
        everything(&with_header);
        with_header[12] = 0x86;
        with_header[13] = 0xdd;
        everything(&with_header);
    }
}
