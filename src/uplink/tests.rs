use super::*;
use netstack::{checksum, udp};

const OUR_MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0, 0, 2];
const PEER_MAC: EthernetAddress = EthernetAddress([0x00, 0x16, 0x3e, 0, 0, 9]);
const GW_MAC: EthernetAddress = EthernetAddress([0x00, 0x16, 0x3e, 0, 0, 1]);
const OUR_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const GW_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);

fn host(debug: bool) -> UplinkHost {
    let mut h = UplinkHost::new(Some(UplinkAddress { ip: OUR_IP, prefix_len: 24, gateway: GW_IP }), debug);
    let mut buf = [0u8; 64];
    h.on_link_up(OUR_MAC, 0, &mut buf).unwrap();
    h
}

fn udp_frame(dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let n =
        builder::udp_ipv4(&mut buf, PEER_MAC, EthernetAddress(OUR_MAC), (PEER_IP, 40000), (OUR_IP, dst_port), payload)
            .unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn gratuitous_arp_on_link_up_announces_our_address() {
    let mut h = UplinkHost::new(Some(UplinkAddress { ip: OUR_IP, prefix_len: 24, gateway: GW_IP }), false);
    let mut buf = [0u8; 64];
    let n = h.on_link_up(OUR_MAC, 0, &mut buf).unwrap();
    let eth = ethernet::Frame::new_checked(&buf[..n]).unwrap();
    assert_eq!(eth.dst_addr(), EthernetAddress::BROADCAST);
    let r = arp::Repr::parse(&arp::Packet::new_checked(eth.payload()).unwrap()).unwrap();
    assert_eq!((r.source_protocol_addr, r.target_protocol_addr), (OUR_IP, OUR_IP));
    assert_eq!(r.source_hardware_addr, EthernetAddress(OUR_MAC));
}

#[test]
fn arp_for_our_address_is_answered_in_place() {
    let mut h = host(false);
    let mut frame = [0u8; 42];
    builder::arp_request(&mut frame, PEER_MAC, PEER_IP, OUR_IP).unwrap();
    let HostVerdict::Reply { len, .. } = h.handle(&mut frame, ChecksumOffload::default()) else { panic!() };
    let eth = ethernet::Frame::new_checked(&frame[..len]).unwrap();
    assert_eq!((eth.src_addr(), eth.dst_addr()), (EthernetAddress(OUR_MAC), PEER_MAC));
    let r = arp::Repr::parse(&arp::Packet::new_checked(eth.payload()).unwrap()).unwrap();
    assert_eq!(r.operation, arp::Operation::Reply);
    assert_eq!((r.source_hardware_addr, r.source_protocol_addr), (EthernetAddress(OUR_MAC), OUR_IP));
    assert_eq!((r.target_hardware_addr, r.target_protocol_addr), (PEER_MAC, PEER_IP));
    assert_eq!(h.counters.arp_replies, 1);
    assert_eq!(h.counters.dropped, 0);
}

#[test]
fn arp_for_someone_else_is_dropped_and_counted() {
    let mut h = host(false);
    let mut frame = [0u8; 42];
    builder::arp_request(&mut frame, PEER_MAC, PEER_IP, Ipv4Addr::new(10, 0, 0, 77)).unwrap();
    assert_eq!(h.handle(&mut frame, ChecksumOffload::default()), HostVerdict::Dropped(HostDrop::ArpNotForUs));
}

#[test]
fn the_gateway_mac_is_learned_from_arp_else_requested_then_falls_back() {
    let mut h = host(false);
    let mut buf = [0u8; 64];
    let mut t = 0;
    for i in 0..GATEWAY_ARP_ATTEMPTS {
        let n = h.poll(t, &mut buf).expect("an ARP request is due");
        let r = arp::Repr::parse(&arp::Packet::new_checked(&buf[14..n]).unwrap()).unwrap();
        assert_eq!(r.target_protocol_addr, GW_IP);
        assert!(h.poll(t, &mut buf).is_none(), "not twice at once");
        if i + 1 < GATEWAY_ARP_ATTEMPTS {
            assert_eq!(h.gateway_mac(), None);
        }
        t += GATEWAY_ARP_INTERVAL_NS;
    }
    assert_eq!(h.gateway_mac(), Some(GATEWAY_MAC_FALLBACK));
    // The gateway answers later: learned, no more requests.
    let mut reply = [0u8; 42];
    builder::arp_reply(&mut reply, GW_MAC, GW_IP, EthernetAddress(OUR_MAC), OUR_IP).unwrap();
    assert_eq!(h.handle(&mut reply, ChecksumOffload::default()), HostVerdict::Consumed);
    assert_eq!(h.gateway_mac(), Some(GW_MAC));
    assert_eq!(h.next_deadline(), None);
    assert!(h.poll(t + 100 * GATEWAY_ARP_SLOW_INTERVAL_NS, &mut buf).is_none());
}

#[test]
fn echo_services_are_off_by_default_and_to_self_traffic_goes_to_the_firewall() {
    let mut h = host(false);
    let mut frame = udp_frame(UDP_ECHO_PORT, b"hello");
    let before = frame.clone();
    assert_eq!(h.handle(&mut frame, ChecksumOffload::default()), HostVerdict::NotForUs);
    assert_eq!(frame, before, "untouched");
    assert_eq!(h.counters.udp_echoes + h.counters.dropped, 0);
}

#[test]
fn icmp_echo_is_answered_when_enabled() {
    let mut h = host(true);
    // Build an echo request by hand: an echo reply built towards us, type flipped to 8.
    let mut req = [0u8; 128];
    let payload = [0xabu8; 56];
    let icmp = netstack::icmpv4::Repr::EchoRequest { ident: 7, seq_no: 3, data: &payload };
    let l4_len = icmp.buffer_len();
    let ip = ipv4::Repr {
        src_addr: PEER_IP,
        dst_addr: OUR_IP,
        next_header: IpProtocol::Icmp,
        payload_len: l4_len,
        ttl: 64,
        ident: 1,
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
        tos: 0,
    };
    ethernet::Repr { src_addr: PEER_MAC, dst_addr: EthernetAddress(OUR_MAC), ethertype: EtherType::Ipv4 }
        .emit(&mut ethernet::Frame::new_unchecked(&mut req[..]));
    ip.emit(&mut ipv4::Packet::new_unchecked(&mut req[14..])).unwrap();
    icmp.emit(&mut req[34..34 + l4_len]).unwrap();
    let n = 34 + l4_len;
    let HostVerdict::Reply { len, .. } = h.handle(&mut req[..n], ChecksumOffload::default()) else { panic!() };
    assert_eq!(len, n);
    let eth = ethernet::Frame::new_checked(&req[..len]).unwrap();
    assert_eq!(eth.dst_addr(), PEER_MAC);
    let ipp = ipv4::Packet::new_checked(eth.payload()).unwrap();
    assert!(ipp.verify_checksum());
    assert_eq!((ipp.src_addr(), ipp.dst_addr()), (OUR_IP, PEER_IP));
    let reply = netstack::icmpv4::Repr::parse(&netstack::icmpv4::Packet::new_checked(ipp.payload()).unwrap()).unwrap();
    assert_eq!(reply, netstack::icmpv4::Repr::EchoReply { ident: 7, seq_no: 3, data: &payload });
}

#[test]
fn udp_echo_swaps_in_place_and_keeps_a_complete_checksum_valid() {
    let mut h = host(true);
    let payload: Vec<u8> = (0..1472u32).map(|i| (i * 7) as u8).collect();
    let mut frame = udp_frame(UDP_ECHO_PORT, &payload);
    let HostVerdict::Reply { len, csum } = h.handle(&mut frame, ChecksumOffload::default()) else { panic!() };
    assert_eq!((len, csum), (frame.len(), ChecksumOffload::default()));
    let eth = ethernet::Frame::new_checked(&frame[..]).unwrap();
    assert_eq!((eth.src_addr(), eth.dst_addr()), (EthernetAddress(OUR_MAC), PEER_MAC));
    let ipp = ipv4::Packet::new_checked(eth.payload()).unwrap();
    assert!(ipp.verify_checksum());
    let u = udp::Packet::new_checked(ipp.payload()).unwrap();
    assert_eq!((u.src_port(), u.dst_port()), (UDP_ECHO_PORT, 40000));
    assert!(u.verify_checksum(OUR_IP.into(), PEER_IP.into()), "full recompute agrees");
    assert_eq!(u.payload(), &payload[..]);
}

#[test]
fn udp_echo_of_a_csum_blank_frame_stays_a_valid_partial_sum() {
    let mut h = host(true);
    let mut frame = udp_frame(UDP_ECHO_PORT, b"partial");
    // Make it csum_blank as Linux sends it: the field holds the pseudo-header sum only.
    let udp_len = frame.len() - 34;
    let pseudo = checksum::pseudo_header_v4(PEER_IP, OUR_IP, 17, udp_len as u16);
    frame[40..42].copy_from_slice(&pseudo.to_be_bytes());
    let blank = ChecksumOffload { blank: true, validated: true };
    let HostVerdict::Reply { csum, .. } = h.handle(&mut frame, blank) else { panic!() };
    assert_eq!(csum, blank, "carried, not recomputed");
    let expected = checksum::pseudo_header_v4(OUR_IP, PEER_IP, 17, udp_len as u16);
    assert_eq!(u16::from_be_bytes([frame[40], frame[41]]), expected);
}

#[test]
fn other_ports_protocols_and_destinations() {
    let mut h = host(true);
    let mut frame = udp_frame(53, b"x");
    assert_eq!(h.handle(&mut frame, ChecksumOffload::default()), HostVerdict::NotForUs);
    let mut buf = vec![0u8; 128];
    let n = builder::udp_ipv4(&mut buf, PEER_MAC, EthernetAddress(OUR_MAC), (PEER_IP, 1), (GW_IP, 7), b"x").unwrap();
    assert_eq!(h.handle(&mut buf[..n], ChecksumOffload::default()), HostVerdict::NotForUs);
    let mut v6 = [0u8; 60];
    v6[12..14].copy_from_slice(&[0x86, 0xdd]);
    assert_eq!(h.handle(&mut v6, ChecksumOffload::default()), HostVerdict::Dropped(HostDrop::UnsupportedEtherType));
    let mut bad = udp_frame(UDP_ECHO_PORT, b"x");
    bad[24] ^= 0xff; // IP header checksum
    assert_eq!(h.handle(&mut bad, ChecksumOffload::default()), HostVerdict::Dropped(HostDrop::Malformed));
}

#[test]
fn garbage_frames_never_panic() {
    let mut h = host(true);
    let mut state = 0x1234_5678_9abc_def0u64;
    for i in 0..20_000 {
        let len = (i % 200) as usize;
        let mut frame = vec![0u8; len];
        for b in frame.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *b = state as u8;
        }
        // Steer some towards the interesting ethertypes and our address.
        if len >= 34 && i % 3 == 0 {
            frame[12..14].copy_from_slice(&[0x08, (i % 2) as u8 * 6]);
            frame[14] = 0x45;
            frame[30..34].copy_from_slice(&OUR_IP.octets());
        }
        let before = frame.len();
        if let HostVerdict::Reply { len, .. } = h.handle(&mut frame, ChecksumOffload::default()) {
            assert!(len <= before);
        }
    }
}

#[test]
fn a_new_address_forgets_the_gateway_and_asks_again() {
    let mut h = host(false);
    let mut buf = [0u8; 64];
    // Learn the gateway.
    let n = builder::arp_reply(&mut buf, GW_MAC, GW_IP, EthernetAddress(OUR_MAC), OUR_IP).unwrap();
    assert_eq!(h.handle(&mut buf[..n], ChecksumOffload::default()), HostVerdict::Consumed);
    assert_eq!(h.gateway_mac(), Some(GW_MAC));
    let same = h.address();
    assert!(!h.set_address(same, 5), "rewritten with the same value: nothing to do");
    assert_eq!(h.gateway_mac(), Some(GW_MAC));
    let new_gw = Ipv4Addr::new(10, 0, 0, 3);
    assert!(h.set_address(Some(UplinkAddress { ip: OUR_IP, prefix_len: 24, gateway: new_gw }), 7));
    assert_eq!(h.gateway_mac(), None, "the old gateway's MAC is not used for the new one");
    assert_eq!(h.next_deadline(), Some(7));
    let n = h.poll(7, &mut buf).expect("an ARP request for the new gateway at once");
    let eth = ethernet::Frame::new_checked(&buf[..n]).unwrap();
    let r = arp::Repr::parse(&arp::Packet::new_checked(eth.payload()).unwrap()).unwrap();
    assert_eq!((r.source_protocol_addr, r.target_protocol_addr), (OUR_IP, new_gw));
    // No address: nothing is asked.
    assert!(h.set_address(None, 8));
    assert_eq!(h.poll(100_000_000_000, &mut buf), None);
    assert_eq!(h.next_deadline(), None);
}
