use super::*;
use netstack::udp;

const CLIENT_MAC: EthernetAddress = EthernetAddress([0x00, 0x16, 0x3e, 0x5e, 0x6c, 0x0a]);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 10);
const OTHER_IP: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 11);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 1);
const CLIENT: ClientLink = ClientLink { ip: Some(CLIENT_IP) };

fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut buf = vec![0u8; 60];
    let n = builder::arp_request(&mut buf, CLIENT_MAC, CLIENT_IP, target).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn proxy_arp_answers_for_the_gateway_and_for_other_clients_with_our_mac() {
    let mut link = Downlink::new(Some(GATEWAY), false);
    for target in [GATEWAY, OTHER_IP, Ipv4Addr::new(8, 8, 8, 8)] {
        let mut frame = arp_request(target);
        let LinkVerdict::Reply { len } = link.handle(&CLIENT, &mut frame) else { panic!("no reply for {target}") };
        let mut expected = [0u8; 64];
        let n = builder::arp_reply(&mut expected, LINK_MAC, target, CLIENT_MAC, CLIENT_IP).unwrap();
        assert_eq!(&frame[..len], &expected[..n], "byte-exact reply for {target}");
        let r = arp::Repr::parse(&arp::Packet::new_checked(&frame[14..len]).unwrap()).unwrap();
        assert_eq!(
            (r.operation, r.source_hardware_addr, r.source_protocol_addr),
            (arp::Operation::Reply, LINK_MAC, target)
        );
    }
    assert_eq!(link.counters.arp_replies, 3);
}

#[test]
fn arp_for_the_clients_own_address_and_non_requests_are_dropped() {
    let mut link = Downlink::new(Some(GATEWAY), false);
    let mut probe = arp_request(CLIENT_IP);
    let before = probe.clone();
    assert_eq!(link.handle(&CLIENT, &mut probe), LinkVerdict::Dropped(LinkDrop::ArpForItself));
    assert_eq!(probe, before, "untouched");
    let mut reply = [0u8; 60];
    builder::arp_reply(&mut reply, CLIENT_MAC, CLIENT_IP, LINK_MAC, GATEWAY).unwrap();
    assert_eq!(link.handle(&CLIENT, &mut reply), LinkVerdict::Dropped(LinkDrop::ArpNotRequest));
    let mut unspecified = arp_request(Ipv4Addr::UNSPECIFIED);
    assert_eq!(link.handle(&CLIENT, &mut unspecified), LinkVerdict::Dropped(LinkDrop::ArpForItself));
    assert_eq!(link.counters.dropped, 3);
    assert_eq!(link.counters.arp_replies, 0);
}

#[test]
fn a_client_without_an_address_still_gets_answers_for_others() {
    let mut link = Downlink::new(Some(GATEWAY), false);
    let mut frame = arp_request(GATEWAY);
    assert!(matches!(link.handle(&ClientLink { ip: None }, &mut frame), LinkVerdict::Reply { .. }));
}

fn udp_to(dst: Ipv4Addr, port: u16, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let n = builder::udp_ipv4(&mut buf, CLIENT_MAC, LINK_MAC, (CLIENT_IP, 40000), (dst, port), payload).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn debug_udp_echo_on_the_gateway_only_when_enabled() {
    let mut off = Downlink::new(Some(GATEWAY), false);
    let mut frame = udp_to(GATEWAY, echo::UDP_ECHO_PORT, b"hello");
    assert_eq!(off.handle(&CLIENT, &mut frame), LinkVerdict::Firewall);

    let mut on = Downlink::new(Some(GATEWAY), true);
    let LinkVerdict::Reply { len } = on.handle(&CLIENT, &mut frame) else { panic!() };
    let eth = ethernet::Frame::new_checked(&frame[..len]).unwrap();
    assert_eq!((eth.dst_addr(), eth.src_addr()), (CLIENT_MAC, LINK_MAC));
    let ip = ipv4::Packet::new_checked(&frame[14..len]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!((ip.src_addr(), ip.dst_addr()), (GATEWAY, CLIENT_IP));
    let u = udp::Packet::new_checked(ip.payload()).unwrap();
    assert_eq!((u.src_port(), u.dst_port(), u.payload()), (echo::UDP_ECHO_PORT, 40000, &b"hello"[..]));
    assert!(u.verify_checksum(GATEWAY.into(), CLIENT_IP.into()), "a complete checksum stays valid");
    assert_eq!(on.counters.udp_echoes, 1);

    // Other ports, other destinations: the firewall's.
    for mut f in [udp_to(GATEWAY, 53, b"x"), udp_to(OTHER_IP, echo::UDP_ECHO_PORT, b"x")] {
        let before = f.clone();
        assert_eq!(on.handle(&CLIENT, &mut f), LinkVerdict::Firewall);
        assert_eq!(f, before);
    }
}

#[test]
fn garbage_frames_never_panic() {
    let mut link = Downlink::new(Some(GATEWAY), true);
    let mut seed = 0x1234_5678_u32;
    for i in 0..20_000 {
        let len = i % 100;
        let mut f = vec![0u8; len];
        for b in f.iter_mut() {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (seed >> 16) as u8;
        }
        if len > 14 {
            f[12..14].copy_from_slice(if i % 2 == 0 { &[0x08, 0x06] } else { &[0x08, 0x00] });
        }
        let _ = link.handle(&CLIENT, &mut f);
    }
}
