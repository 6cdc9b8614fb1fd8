//! Cross-check in the other direction: every frame netstack's builders produce is written
//! to a directory and dissected by scapy (`tests/data/check_frames.py`), which must find the
//! expected layers and fields and agree with every checksum.
//!
//! Needs python3 with scapy (`apt-get install -y python3-scapy`, or `pip install scapy`);
//! without it this test FAILS with that message. `NETSTACK_PYTHON` overrides the
//! interpreter.

use netstack::builder::*;
use netstack::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

const FW_MAC: EthernetAddress = EthernetAddress([0xfe, 0xff, 0xff, 0xff, 0xff, 0xff]);
const VM_MAC: EthernetAddress = EthernetAddress([0x00, 0x16, 0x3e, 0x5e, 0x6c, 0x0a]);
const FW_IP: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 1);
const VM_IP: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 17);

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn write(dir: &Path, name: &str, frame: &[u8], expect: Value) {
    std::fs::write(dir.join(format!("{name}.bin")), frame).unwrap();
    std::fs::write(dir.join(format!("{name}.expect.json")), serde_json::to_vec_pretty(&expect).unwrap()).unwrap();
}

fn build_all(dir: &Path) -> usize {
    let mut buf = [0u8; 1600];
    let mut n_frames = 0;
    let mut emit = |name: &str, len: usize, buf: &[u8], expect: Value| {
        write(dir, name, &buf[..len], expect);
        n_frames += 1;
    };

    let n = arp_request(&mut buf, FW_MAC, FW_IP, VM_IP).unwrap();
    emit(
        "arp_request",
        n,
        &buf,
        json!({ "layers": ["Ether", "ARP"], "fields": {
        "Ether": { "dst": "ff:ff:ff:ff:ff:ff", "type": 0x0806 },
        "ARP": { "op": 1, "hwsrc": "fe:ff:ff:ff:ff:ff", "psrc": "10.137.0.1", "pdst": "10.137.0.17", "hwdst": "00:00:00:00:00:00" } } }),
    );
    let n = arp_reply(&mut buf, FW_MAC, FW_IP, VM_MAC, VM_IP).unwrap();
    emit(
        "arp_reply",
        n,
        &buf,
        json!({ "layers": ["Ether", "ARP"], "fields": {
        "Ether": { "dst": "00:16:3e:5e:6c:0a" },
        "ARP": { "op": 2, "hwsrc": "fe:ff:ff:ff:ff:ff", "psrc": "10.137.0.1", "hwdst": "00:16:3e:5e:6c:0a", "pdst": "10.137.0.17" } } }),
    );
    let n = gratuitous_arp(&mut buf, FW_MAC, FW_IP).unwrap();
    emit(
        "arp_gratuitous",
        n,
        &buf,
        json!({ "layers": ["Ether", "ARP"], "fields": {
        "ARP": { "op": 1, "psrc": "10.137.0.1", "pdst": "10.137.0.1" } } }),
    );

    // An echo request from the VM, answered.
    let mut req = [0u8; 200];
    let icmp = icmpv4::Repr::EchoRequest { ident: 0x4242, seq_no: 7, data: b"0123456789abcdef" };
    let mut l4 = [0u8; 24];
    icmp.emit(&mut l4).unwrap();
    let rn = udp_like_ipv4(&mut req, VM_IP, FW_IP, IpProtocol::Icmp, &l4);
    let n = icmpv4_echo_reply(&mut buf, FW_MAC, VM_MAC, &req[..rn]).unwrap();
    emit(
        "icmpv4_echo_reply",
        n,
        &buf,
        json!({ "layers": ["Ether", "IP", "ICMP", "Raw"], "fields": {
        "IP": { "src": "10.137.0.1", "dst": "10.137.0.17", "proto": 1 },
        "ICMP": { "type": 0, "code": 0, "id": 0x4242, "seq": 7 },
        "Raw": { "load": "30313233343536373839616263646566" } } }),
    );

    // ICMPv4 errors about a UDP datagram and a TCP segment with IP options.
    let mut udp_dg = [0u8; 1000];
    let un = builder::udp_ipv4(
        &mut udp_dg,
        VM_MAC,
        FW_MAC,
        (VM_IP, 40000),
        (Ipv4Addr::new(93, 184, 216, 34), 443),
        &[0x55; 500],
    )
    .unwrap();
    let orig = &udp_dg[14..un];
    let n = icmpv4_error(&mut buf, FW_MAC, VM_MAC, FW_IP, Icmpv4Error::AdminProhibited, orig).unwrap();
    emit(
        "icmpv4_admin_prohibited",
        n,
        &buf,
        json!({ "layers": ["Ether", "IP", "ICMP", "IPerror", "UDPerror"], "fields": {
        "IP": { "src": "10.137.0.1", "dst": "10.137.0.17", "len": 56, "tos": 0xc0 },
        "ICMP": { "type": 3, "code": 13 },
        "IPerror": { "src": "10.137.0.17", "dst": "93.184.216.34", "len": 528 },
        "UDPerror": { "sport": 40000, "dport": 443, "len": 508 } } }),
    );
    let n = icmpv4_error(&mut buf, FW_MAC, VM_MAC, FW_IP, Icmpv4Error::FragRequired { mtu: 1400 }, orig).unwrap();
    emit(
        "icmpv4_frag_needed",
        n,
        &buf,
        json!({ "layers": ["Ether", "IP", "ICMP", "IPerror", "UDPerror"], "fields": {
        "ICMP": { "type": 3, "code": 4, "nexthopmtu": 1400 } } }),
    );
    let n = icmpv4_error(
        &mut buf,
        FW_MAC,
        VM_MAC,
        FW_IP,
        Icmpv4Error::TimeExceeded(icmpv4::TimeExceeded::TtlExpired),
        orig,
    )
    .unwrap();
    emit(
        "icmpv4_time_exceeded",
        n,
        &buf,
        json!({ "layers": ["Ether", "IP", "ICMP", "IPerror", "UDPerror"], "fields": {
        "ICMP": { "type": 11, "code": 0 } } }),
    );
    let n = icmpv4_error(
        &mut buf,
        FW_MAC,
        VM_MAC,
        FW_IP,
        Icmpv4Error::DstUnreachable(icmpv4::DstUnreachable::PortUnreachable),
        orig,
    )
    .unwrap();
    emit(
        "icmpv4_port_unreachable",
        n,
        &buf,
        json!({ "layers": ["Ether", "IP", "ICMP", "IPerror", "UDPerror"], "fields": {
        "ICMP": { "type": 3, "code": 3 } } }),
    );
    // Original with options: the quote covers the whole header plus 8 bytes.
    let mut with_opts = vec![0u8; 24 + 20];
    {
        let mut p = ipv4::Packet::new_unchecked(&mut with_opts[..]);
        p.set_version(4);
        p.set_header_len(24);
        p.set_total_len(44);
        p.set_ttl(1);
        p.set_next_header(IpProtocol::Tcp);
        p.set_src_addr(VM_IP);
        p.set_dst_addr(Ipv4Addr::new(1, 1, 1, 1));
        p.options_mut().copy_from_slice(&[1, 1, 1, 0]);
        p.fill_checksum();
    }
    let tcp = tcp::Repr {
        src_port: 41000,
        dst_port: 80,
        seq_number: 77,
        ack_number: 0,
        flags: tcp::flags::SYN,
        window_len: 1000,
        urgent_at: 0,
        options: &[],
        payload: &[],
    };
    tcp.emit(&mut with_opts[24..], VM_IP.into(), Ipv4Addr::new(1, 1, 1, 1).into()).unwrap();
    let n =
        icmpv4_error(&mut buf, FW_MAC, VM_MAC, FW_IP, Icmpv4Error::ParamProblem { pointer: 20 }, &with_opts).unwrap();
    emit(
        "icmpv4_param_problem_quote_options",
        n,
        &buf,
        json!({ "layers": ["Ether", "IP", "ICMP", "IPerror", "TCPerror"], "fields": {
        "IP": { "len": 20 + 8 + 32 }, "ICMP": { "type": 12, "ptr": 20 }, "IPerror": { "ihl": 6 }, "TCPerror": { "sport": 41000, "dport": 80, "seq": 77 } } }),
    );

    // ICMPv6: echo reply, errors (a large original is cut to 1280 bytes), NDP.
    let vm6 = v6("fd09:24ef:4179::a89:11");
    let fw6 = v6("fd09:24ef:4179::a89:1");
    let mut req6 = [0u8; 200];
    let echo = icmpv6::Repr::EchoRequest { ident: 9, seq_no: 10, data: b"ping6" };
    let ipr = ipv6::Repr {
        src_addr: vm6,
        dst_addr: fw6,
        next_header: IpProtocol::Icmpv6,
        payload_len: echo.buffer_len(),
        hop_limit: 64,
    };
    ipr.emit(&mut ipv6::Packet::new_unchecked(&mut req6[..])).unwrap();
    let l = echo.emit(&mut req6[40..], vm6, fw6).unwrap();
    let n = icmpv6_echo_reply(&mut buf, FW_MAC, VM_MAC, &req6[..40 + l]).unwrap();
    emit(
        "icmpv6_echo_reply",
        n,
        &buf,
        json!({ "layers": ["Ether", "IPv6", "ICMPv6EchoReply"], "fields": {
        "IPv6": { "src": "fd09:24ef:4179::a89:1", "dst": "fd09:24ef:4179::a89:11" },
        "ICMPv6EchoReply": { "id": 9, "seq": 10, "data": "70696e6736" } } }),
    );

    let mut big6 = vec![0u8; 40 + 1452];
    let ipr = ipv6::Repr {
        src_addr: vm6,
        dst_addr: v6("2001:db8::1"),
        next_header: IpProtocol::Udp,
        payload_len: 1452,
        hop_limit: 64,
    };
    ipr.emit(&mut ipv6::Packet::new_unchecked(&mut big6[..])).unwrap();
    udp::Repr { src_port: 5000, dst_port: 6000 }
        .emit(&mut big6[40..], vm6.into(), v6("2001:db8::1").into(), &[0x33; 1444])
        .unwrap();
    for (name, kind, layer, fields) in [
        (
            "icmpv6_admin_prohibited",
            Icmpv6Error::DstUnreachable(icmpv6::DstUnreachable::AdminProhibit),
            "ICMPv6DestUnreach",
            json!({ "type": 1, "code": 1 }),
        ),
        (
            "icmpv6_packet_too_big",
            Icmpv6Error::PktTooBig { mtu: 1280 },
            "ICMPv6PacketTooBig",
            json!({ "type": 2, "mtu": 1280 }),
        ),
        ("icmpv6_time_exceeded", Icmpv6Error::TimeExceeded(0), "ICMPv6TimeExceeded", json!({ "type": 3, "code": 0 })),
        (
            "icmpv6_param_problem",
            Icmpv6Error::ParamProblem { code: 0, pointer: 4 },
            "ICMPv6ParamProblem",
            json!({ "type": 4, "ptr": 4 }),
        ),
    ] {
        let n = icmpv6_error(&mut buf, FW_MAC, VM_MAC, fw6, kind, &big6).unwrap();
        let mut f = serde_json::Map::new();
        f.insert(layer.to_string(), fields);
        f.insert("IPv6".into(), json!({ "plen": 1240, "dst": "fd09:24ef:4179::a89:11" }));
        f.insert("IPerror6".into(), json!({ "plen": 1452 }));
        emit(
            name,
            n,
            &buf,
            json!({ "layers": ["Ether", "IPv6", layer, "IPerror6", "UDPerror", "Raw"], "fields": f, "max_len": 14 + 1280 }),
        );
    }
    let n = ndp_neighbor_advert(
        &mut buf,
        FW_MAC,
        VM_MAC,
        fw6,
        vm6,
        fw6,
        FW_MAC,
        icmpv6::na_flags::ROUTER | icmpv6::na_flags::SOLICITED,
    )
    .unwrap();
    emit(
        "ndp_na",
        n,
        &buf,
        json!({ "layers": ["Ether", "IPv6", "ICMPv6ND_NA", "ICMPv6NDOptDstLLAddr"], "fields": {
        "IPv6": { "hlim": 255 }, "ICMPv6ND_NA": { "R": 1, "S": 1, "O": 0, "tgt": "fd09:24ef:4179::a89:1" },
        "ICMPv6NDOptDstLLAddr": { "lladdr": "fe:ff:ff:ff:ff:ff" } } }),
    );
    let n = ndp_neighbor_solicit(&mut buf, FW_MAC, fw6, vm6).unwrap();
    emit(
        "ndp_ns",
        n,
        &buf,
        json!({ "layers": ["Ether", "IPv6", "ICMPv6ND_NS", "ICMPv6NDOptSrcLLAddr"], "fields": {
        "Ether": { "dst": "33:33:ff:89:00:11" }, "IPv6": { "dst": "ff02::1:ff89:11", "hlim": 255 },
        "ICMPv6ND_NS": { "tgt": "fd09:24ef:4179::a89:11" } } }),
    );

    // DNS queries over UDP/IPv4.
    for (name, qname, qtype, t) in [
        ("dns_query_a", "www.example.com", dns::Type::A, 1),
        ("dns_query_aaaa", "ipv6.example.org.", dns::Type::Aaaa, 28),
    ] {
        let n = dns_query_ipv4(
            &mut buf,
            FW_MAC,
            VM_MAC,
            (FW_IP, 40053),
            Ipv4Addr::new(10, 139, 1, 1),
            0x1234,
            qname,
            qtype,
        )
        .unwrap();
        emit(
            name,
            n,
            &buf,
            json!({ "layers": ["Ether", "IP", "UDP", "DNS"], "fields": {
            "UDP": { "dport": 53, "sport": 40053 }, "DNS": { "id": 0x1234, "rd": 1, "qdcount": 1 } } }),
        );
        let _ = t;
    }

    // NAT-rewritten packets: incremental checksums must satisfy scapy.
    let mut nat_udp = udp_dg[..un].to_vec();
    nat::rewrite_ipv4(
        &mut nat_udp[14..],
        &nat::Rewrite { src_addr: Some(Ipv4Addr::new(192, 168, 1, 200)), src_port: Some(61000), ..Default::default() },
        false,
    )
    .unwrap();
    emit(
        "nat_udp_snat",
        nat_udp.len(),
        &nat_udp,
        json!({ "layers": ["Ether", "IP", "UDP", "Raw"], "fields": {
        "IP": { "src": "192.168.1.200" }, "UDP": { "sport": 61000 } } }),
    );
    let mut tcp_frame = vec![0u8; 14 + 20 + 20 + 4];
    tcp_frame[..14].copy_from_slice(&udp_dg[..14]);
    let ipr = ipv4::Repr {
        src_addr: VM_IP,
        dst_addr: Ipv4Addr::new(1, 1, 1, 1),
        next_header: IpProtocol::Tcp,
        payload_len: 24,
        ttl: 64,
        ident: 1,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
        tos: 0,
    };
    ipr.emit(&mut ipv4::Packet::new_unchecked(&mut tcp_frame[14..])).unwrap();
    tcp::Repr { payload: b"data", flags: tcp::flags::ACK | tcp::flags::PSH, ..tcp }
        .emit(&mut tcp_frame[34..], VM_IP.into(), Ipv4Addr::new(1, 1, 1, 1).into())
        .unwrap();
    nat::rewrite_ipv4(
        &mut tcp_frame[14..],
        &nat::Rewrite {
            dst_addr: Some(Ipv4Addr::new(10, 139, 1, 2)),
            dst_port: Some(8080),
            src_port: Some(1),
            ..Default::default()
        },
        false,
    )
    .unwrap();
    emit(
        "nat_tcp_dnat",
        tcp_frame.len(),
        &tcp_frame,
        json!({ "layers": ["Ether", "IP", "TCP", "Raw"], "fields": {
        "IP": { "dst": "10.139.1.2" }, "TCP": { "dport": 8080, "sport": 1 } } }),
    );
    // NAT of an ICMP error's quote (the reverse translation of the UDP datagram above).
    let n = icmpv4_error(
        &mut buf,
        FW_MAC,
        VM_MAC,
        FW_IP,
        Icmpv4Error::DstUnreachable(icmpv4::DstUnreachable::HostUnreachable),
        &nat_udp[14..],
    )
    .unwrap();
    let mut err = buf[..n].to_vec();
    nat::rewrite_icmpv4_error_quote(
        &mut err[14..],
        &nat::Rewrite { src_addr: Some(VM_IP), src_port: Some(40000), ..Default::default() },
    )
    .unwrap();
    emit(
        "nat_icmp_error_quote",
        err.len(),
        &err,
        json!({ "layers": ["Ether", "IP", "ICMP", "IPerror", "UDPerror"], "fields": {
        "ICMP": { "type": 3, "code": 1 }, "IPerror": { "src": "10.137.0.17" }, "UDPerror": { "sport": 40000 } } }),
    );
    n_frames
}

/// Build an IPv4 packet (no Ethernet) carrying `l4`.
fn udp_like_ipv4(out: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, proto: IpProtocol, l4: &[u8]) -> usize {
    let r = ipv4::Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: proto,
        payload_len: l4.len(),
        ttl: 64,
        ident: 9,
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
        tos: 0,
    };
    r.emit(&mut ipv4::Packet::new_unchecked(&mut out[..])).unwrap();
    out[20..20 + l4.len()].copy_from_slice(l4);
    20 + l4.len()
}

fn python_with_scapy() -> std::result::Result<String, String> {
    let mut candidates = vec![];
    if let Ok(p) = std::env::var("NETSTACK_PYTHON") {
        candidates.push(p);
    }
    candidates.extend(["python3".to_string(), "/usr/bin/python3".to_string()]);
    for c in &candidates {
        if let Ok(o) = Command::new(c).args(["-c", "import scapy.all"]).output()
            && o.status.success()
        {
            return Ok(c.clone());
        }
    }
    Err(format!(
        "no python3 with scapy found (tried {candidates:?}). Install it: `apt-get install -y python3-scapy` \
         (or `pip install scapy`), or point NETSTACK_PYTHON at an interpreter that has it."
    ))
}

#[test]
fn builder_frames_accepted_by_scapy() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("netstack-builder-frames");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let n = build_all(&dir);
    let python = python_with_scapy().unwrap_or_else(|e| panic!("{e}"));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/check_frames.py");
    let out = Command::new(&python).arg(&script).arg(&dir).output().expect("run check_frames.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scapy rejected builder frames (in {}):\n{stdout}\n{stderr}", dir.display());
    assert!(stdout.contains(&format!("{n} passed, 0 failed")), "unexpected checker output:\n{stdout}\n{stderr}");
    println!("{n} builder frames accepted by scapy");
}
