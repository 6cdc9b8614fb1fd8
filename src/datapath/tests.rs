//! The pipeline against plain buffers: what each kind of frame turns into, what leaves on
//! which link, and that no forwarded byte is copied by the pipeline.

use core::net::Ipv4Addr;

use firewall::conntrack::ClientId;
use firewall::forward::{ChecksumState, ClientConfig, DownlinkConfig, Firewall, UplinkConfig};
use netstack::ethernet::{self, EthernetAddress};
use netstack::{arp, builder, icmpv4, ipv4, udp};
use xen_front::netif::ChecksumOffload;

use super::pipeline::{Links, Pipeline};
use crate::downlink::{ClientLink, Downlink, LINK_MAC};
use crate::uplink::{UplinkAddress, UplinkHost};

type Fw = Firewall<1024, 4096, 8>;

const UP_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const UP_GW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const UP_MAC: EthernetAddress = EthernetAddress([0x00, 0x16, 0x3e, 0, 0, 2]);
const GW_MAC: EthernetAddress = EthernetAddress([0x00, 0x16, 0x3e, 0, 0, 1]);
const CLIENT_GW: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 1);
const C_IP: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 10);
const C_MAC: EthernetAddress = EthernetAddress([0x00, 0x16, 0x3e, 0x5e, 0x6c, 0x0a]);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

#[derive(Default)]
struct PlainLinks {
    free: usize,
    taken: usize,
    uplink_down: bool,
    uplink: Vec<(Vec<u8>, ChecksumState)>,
    clients: Vec<(ClientId, Vec<u8>, ChecksumState)>,
}

impl Links for PlainLinks {
    type Buf = Vec<u8>;
    fn take(&mut self) -> Option<Vec<u8>> {
        (self.taken < self.free).then(|| {
            self.taken += 1;
            vec![0u8; 4096]
        })
    }
    fn put_back(&mut self, _: Vec<u8>) {
        self.taken -= 1;
    }
    fn to_uplink(&mut self, buf: Vec<u8>, len: usize, csum: ChecksumState, _: bool) -> Result<(), Vec<u8>> {
        if self.uplink_down {
            return Err(buf);
        }
        self.taken -= 1;
        self.uplink.push((buf[..len].to_vec(), csum));
        Ok(())
    }
    fn to_client(
        &mut self,
        to: ClientId,
        buf: Vec<u8>,
        len: usize,
        csum: ChecksumState,
        _: bool,
    ) -> Result<(), Vec<u8>> {
        self.taken -= 1;
        self.clients.push((to, buf[..len].to_vec(), csum));
        Ok(())
    }
}

struct Rig {
    fw: Box<Fw>,
    p: Box<Pipeline>,
    down: Downlink,
    host: UplinkHost,
    links: PlainLinks,
    id: ClientId,
}

fn rig(rules: &[(&str, &str)]) -> Rig {
    let mut fw = Box::new(Fw::new());
    fw.rekey([7; 16]);
    fw.set_uplink(Some(UplinkConfig {
        addr: UP_IP,
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        gateway: UP_GW,
        mac: UP_MAC,
        gateway_mac: GW_MAC,
        mtu: 1500,
    }));
    fw.set_downlink(Some(DownlinkConfig::qubes(CLIENT_GW)));
    let id = ClientId::new(0).unwrap();
    fw.add_client(id, ClientConfig { addr: C_IP, mac: C_MAC }).unwrap();
    fw.commit_rules(id, rules.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()))).unwrap();
    let mut host = UplinkHost::new(Some(UplinkAddress { ip: UP_IP, prefix_len: 24, gateway: UP_GW }), false);
    host.on_link_up(UP_MAC.0, 0, &mut [0u8; 64]);
    Rig {
        fw,
        p: Box::new(Pipeline::new()),
        down: Downlink::new(Some(CLIENT_GW), false),
        host,
        links: PlainLinks { free: 16, ..Default::default() },
        id,
    }
}

const ALLOW_UDP: &[(&str, &str)] =
    &[("policy", "drop"), ("0000", "action=accept proto=udp"), ("0001", "action=drop proto=tcp dstports=81-81")];

impl Rig {
    fn client_sends(&mut self, frame: &[u8], csum: ChecksumState) {
        let mut buf = self.links.take().unwrap();
        buf[..frame.len()].copy_from_slice(frame);
        let client = ClientLink { ip: Some(C_IP) };
        let mut rng = || 0x1234_5678;
        self.p.client_frame(
            &mut self.fw,
            &mut self.down,
            &mut self.links,
            self.id,
            &client,
            buf,
            frame.len(),
            csum,
            1,
            &mut rng,
        );
    }

    fn uplink_sends(&mut self, frame: &[u8], offset: usize, csum: ChecksumOffload) {
        let mut buf = self.links.take().unwrap();
        buf[offset..offset + frame.len()].copy_from_slice(frame);
        let mut rng = || 0x1234_5678;
        self.p.uplink_frame(&mut self.fw, &mut self.host, &mut self.links, buf, offset, frame.len(), csum, 2, &mut rng);
    }
}

fn udp_frame(
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
) -> Vec<u8> {
    let mut b = vec![0u8; 2048];
    let n = builder::udp_ipv4(&mut b, src_mac, dst_mac, src, dst, b"payload bytes").unwrap();
    b.truncate(n);
    b
}

#[test]
fn udp_out_and_back_is_nated_in_place_without_copies() {
    let mut r = rig(ALLOW_UDP);
    let out = udp_frame(C_MAC, LINK_MAC, (C_IP, 40000), (SERVER, 7));
    r.client_sends(&out, ChecksumState::Complete);
    assert_eq!(r.links.uplink.len(), 1, "{:?}", r.fw.counters());
    let (sent, csum) = r.links.uplink.pop().unwrap();
    assert_eq!(csum, ChecksumState::Complete);
    let eth = ethernet::Frame::new_checked(&sent[..]).unwrap();
    assert_eq!((eth.src_addr(), eth.dst_addr()), (UP_MAC, GW_MAC));
    let ip = ipv4::Packet::new_checked(&sent[14..]).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr(), ip.ttl()), (UP_IP, SERVER, 63));
    assert!(ip.verify_checksum());
    let u = udp::Packet::new_checked(ip.payload()).unwrap();
    assert!(u.verify_checksum(UP_IP.into(), SERVER.into()));
    assert_eq!(u.payload(), b"payload bytes");
    let nat_port = u.src_port();

    // The server's answer comes back to the client, translated.
    let back = udp_frame(GW_MAC, UP_MAC, (SERVER, 7), (UP_IP, nat_port));
    r.uplink_sends(&back, 0, ChecksumOffload::default());
    assert_eq!(r.links.clients.len(), 1, "{:?}", r.fw.counters());
    let (to, got, _) = r.links.clients.pop().unwrap();
    assert_eq!(to, r.id);
    let eth = ethernet::Frame::new_checked(&got[..]).unwrap();
    assert_eq!((eth.src_addr(), eth.dst_addr()), (LINK_MAC, C_MAC));
    let ip = ipv4::Packet::new_checked(&got[14..]).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr()), (SERVER, C_IP));
    let u = udp::Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(u.dst_port(), 40000);
    assert!(u.verify_checksum(SERVER.into(), C_IP.into()));

    let c = r.p.counters;
    assert_eq!((c.forwarded, c.internal_copy_bytes, c.realigned), (2, 0, 0));
    assert_eq!(c.forwarded_bytes, (out.len() + back.len()) as u64);
    assert_eq!(r.links.taken, 0, "every buffer accounted for");
}

#[test]
fn a_partial_checksum_stays_partial() {
    let mut r = rig(ALLOW_UDP);
    let mut out = udp_frame(C_MAC, LINK_MAC, (C_IP, 40000), (SERVER, 7));
    // csum_blank: the field holds the pseudo-header sum only.
    let udp_len = (out.len() - 34) as u16;
    let pseudo = netstack::checksum::pseudo_header_v4(C_IP, SERVER, 17, udp_len);
    out[40..42].copy_from_slice(&pseudo.to_be_bytes());
    r.client_sends(&out, ChecksumState::PartialPseudoHeader);
    let (sent, csum) = r.links.uplink.pop().unwrap();
    assert_eq!(csum, ChecksumState::PartialPseudoHeader);
    let expected = netstack::checksum::pseudo_header_v4(UP_IP, SERVER, 17, udp_len);
    assert_eq!(u16::from_be_bytes([sent[40], sent[41]]), expected, "partial sum moved to the NAT address");
}

#[test]
fn link_answers_come_back_to_the_client() {
    let mut r = rig(ALLOW_UDP);
    let mut req = [0u8; 60];
    let n = builder::arp_request(&mut req, C_MAC, C_IP, Ipv4Addr::new(10, 137, 0, 11)).unwrap();
    r.client_sends(&req[..n], ChecksumState::Complete);
    let (to, got, _) = r.links.clients.pop().unwrap();
    assert_eq!(to, r.id);
    let a = arp::Repr::parse(&arp::Packet::new_checked(&got[14..]).unwrap()).unwrap();
    assert_eq!((a.operation, a.source_hardware_addr), (arp::Operation::Reply, LINK_MAC));
    assert_eq!(r.p.counters.link_replies, 1);
    assert!(r.links.uplink.is_empty());
}

#[test]
fn the_gateway_answers_ping_and_a_drop_rule_answers_admin_prohibited() {
    let mut r = rig(ALLOW_UDP);
    let mut ping = vec![0u8; 128];
    let n = icmp_echo_request(&mut ping, CLIENT_GW);
    r.client_sends(&ping[..n], ChecksumState::Complete);
    let (_, got, _) = r.links.clients.pop().expect("echo reply");
    let ip = ipv4::Packet::new_checked(&got[14..]).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr()), (CLIENT_GW, C_IP));
    assert!(matches!(
        icmpv4::Repr::parse(&icmpv4::Packet::new_checked(ip.payload()).unwrap()).unwrap(),
        icmpv4::Repr::EchoReply { .. }
    ));

    let mut syn = tcp_syn(81);
    r.client_sends(&syn.clone(), ChecksumState::Complete);
    let (_, got, _) = r.links.clients.pop().expect("an ICMP error");
    let ip = ipv4::Packet::new_checked(&got[14..]).unwrap();
    let icmp = icmpv4::Packet::new_checked(ip.payload()).unwrap();
    assert_eq!((icmp.msg_type(), icmp.msg_code()), (icmpv4::Message::DstUnreachable, 13));
    // Not allowed by any rule: the policy (drop) answers admin-prohibited too, as Qubes does.
    syn = tcp_syn(82);
    r.client_sends(&syn, ChecksumState::Complete);
    assert_eq!(r.links.clients.len(), 1);
    assert!(r.links.uplink.is_empty());
    assert_eq!(r.p.counters.engine_replies, 3);
    assert_eq!(r.links.taken, 0);
}

#[test]
fn refusals_and_a_shortage_of_buffers_are_counted_and_nothing_leaks() {
    let mut r = rig(ALLOW_UDP);
    r.links.uplink_down = true;
    r.client_sends(&udp_frame(C_MAC, LINK_MAC, (C_IP, 40000), (SERVER, 7)), ChecksumState::Complete);
    assert_eq!(r.p.counters.egress_refused, 1);
    assert_eq!(r.links.taken, 0);
    // The only buffer is the frame's own: the echo reply cannot be built.
    r.links.free = 1;
    let mut ping = vec![0u8; 128];
    let n = icmp_echo_request(&mut ping, CLIENT_GW);
    r.client_sends(&ping[..n], ChecksumState::Complete);
    // put_back of the request happens before the reply takes a buffer: the reply fits.
    assert_eq!(r.links.clients.len(), 1);
    assert_eq!(r.links.taken, 0);
}

#[test]
fn a_frame_not_at_offset_zero_is_moved_and_the_copy_counted() {
    let mut r = rig(ALLOW_UDP);
    r.client_sends(&udp_frame(C_MAC, LINK_MAC, (C_IP, 40000), (SERVER, 7)), ChecksumState::Complete);
    let (sent, _) = r.links.uplink.pop().unwrap();
    let nat_port = u16::from_be_bytes([sent[34], sent[35]]);
    let back = udp_frame(GW_MAC, UP_MAC, (SERVER, 7), (UP_IP, nat_port));
    r.uplink_sends(&back, 2, ChecksumOffload::default());
    assert_eq!(r.links.clients.len(), 1);
    assert_eq!(r.p.counters.realigned, 1);
    assert_eq!(r.p.counters.internal_copy_bytes, back.len() as u64);
}

#[test]
fn garbage_from_both_sides_never_panics_or_leaks() {
    let mut r = rig(ALLOW_UDP);
    let mut seed = 99u32;
    for i in 0..5000 {
        let len = 1 + i % 200;
        let mut f = vec![0u8; len];
        for b in f.iter_mut() {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (seed >> 16) as u8;
        }
        if len > 14 {
            f[12..14].copy_from_slice(&[[0x08, 0x00], [0x08, 0x06], [0x86, 0xdd]][i % 3]);
        }
        if i % 2 == 0 {
            r.client_sends(&f, ChecksumState::Complete);
        } else {
            r.uplink_sends(&f, 0, ChecksumOffload { blank: i % 4 == 1, validated: false });
        }
        r.links.uplink.clear();
        r.links.clients.clear();
        assert_eq!(r.links.taken, 0);
    }
}

fn icmp_echo_request(buf: &mut [u8], dst: Ipv4Addr) -> usize {
    let data = b"ping data";
    let icmp = icmpv4::Repr::EchoRequest { ident: 9, seq_no: 1, data };
    let ip = ipv4::Repr {
        src_addr: C_IP,
        dst_addr: dst,
        next_header: netstack::ip::IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        ttl: 64,
        ident: 1,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
        tos: 0,
    };
    let eth = ethernet::Repr { src_addr: C_MAC, dst_addr: LINK_MAC, ethertype: ethernet::EtherType::Ipv4 };
    let n = 14 + ip.buffer_len() + icmp.buffer_len();
    eth.emit(&mut ethernet::Frame::new_unchecked(&mut buf[..14]));
    ip.emit(&mut ipv4::Packet::new_unchecked(&mut buf[14..34])).unwrap();
    icmp.emit(&mut buf[34..n]).unwrap();
    n
}

fn tcp_syn(port: u16) -> Vec<u8> {
    let mut b = vec![0u8; 14 + 20 + 20];
    b[..6].copy_from_slice(&LINK_MAC.0);
    b[6..12].copy_from_slice(&C_MAC.0);
    b[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = ipv4::Repr {
        src_addr: C_IP,
        dst_addr: SERVER,
        next_header: netstack::ip::IpProtocol::Tcp,
        payload_len: 20,
        ttl: 64,
        ident: 1,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
        tos: 0,
    };
    ip.emit(&mut ipv4::Packet::new_unchecked(&mut b[14..34])).unwrap();
    let t = &mut b[34..];
    t[0..2].copy_from_slice(&40001u16.to_be_bytes());
    t[2..4].copy_from_slice(&port.to_be_bytes());
    t[4..8].copy_from_slice(&1u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02; // SYN
    t[14..16].copy_from_slice(&8192u16.to_be_bytes());
    let sum = netstack::checksum::pseudo_header_v4(C_IP, SERVER, 6, 20);
    let c = !netstack::checksum::combine(&[sum, netstack::checksum::data(t)]);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    b
}
