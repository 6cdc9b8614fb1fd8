//! Resolver tests: queries as sent, replies accepted, hostile replies refused, TTL bounds,
//! timeouts and fail-over, refresh and expiry.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netstack::dns;
use netstack::ethernet::EthernetAddress;
use netstack::nat::ipv4_checksums_valid;
use netstack::{ipv4, udp};

use super::*;
use std::vec::Vec;

const SEC: u64 = 1_000_000_000;
const DNS1: Ipv4Addr = Ipv4Addr::new(10, 139, 1, 1);
const DNS2: Ipv4Addr = Ipv4Addr::new(10, 139, 1, 2);
const ME: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 6);
const PORT: u16 = 33333;
const A1: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);
const A2: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 35);

fn setup() -> (Box<Resolver>, NameSlot) {
    let mut r = Box::new(Resolver::new());
    r.set_servers([Some(DNS1), Some(DNS2)]);
    r.set_port(PORT);
    let s = r.register("Example.COM").unwrap();
    (r, s)
}

#[derive(Debug, Clone)]
struct Sent {
    server: Ipv4Addr,
    id: u16,
    qtype: dns::Type,
    question: Vec<u8>,
}

fn poll_all(r: &mut Resolver, now: u64) -> Vec<Sent> {
    let mut out = vec![0u8; 1500];
    let mut seed = 77u32;
    let mut rng = move || {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        seed >> 7
    };
    let mut v = Vec::new();
    while let Some(n) = r.poll(now, &mut out, EthernetAddress([2; 6]), EthernetAddress([4; 6]), ME, &mut rng) {
        let ip = ipv4::Packet::new_checked(&out[14..n]).unwrap();
        assert!(ipv4_checksums_valid(&out[14..n]));
        assert_eq!(ip.src_addr(), ME);
        let u = udp::Packet::new_checked(ip.payload()).unwrap();
        assert_eq!((u.src_port(), u.dst_port()), (PORT, 53));
        let d = dns::Packet::new_checked(u.payload()).unwrap();
        let q = d.questions().next().unwrap().unwrap();
        assert!(q.name.eq_dotted("example.com"));
        v.push(Sent { server: ip.dst_addr(), id: d.id(), qtype: q.qtype, question: u.payload()[12..].to_vec() });
        assert!(v.len() < 100, "poll must stop");
    }
    v
}

/// A response to `q` with these answer records (owner given as an encoded name or a
/// pointer), flags QR|RD|RA plus `extra_flags`.
fn response(q: &Sent, extra_flags: u16, answers: &[(Vec<u8>, dns::Type, u32, Vec<u8>)]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&q.id.to_be_bytes());
    m.extend_from_slice(&(0x8180 | extra_flags).to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    m.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    m.extend_from_slice(&q.question);
    for (owner, ty, ttl, data) in answers {
        m.extend_from_slice(owner);
        m.extend_from_slice(&u16::from(*ty).to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m.extend_from_slice(&ttl.to_be_bytes());
        m.extend_from_slice(&(data.len() as u16).to_be_bytes());
        m.extend_from_slice(data);
    }
    m
}

const OWNER: [u8; 2] = [0xc0, 12];

fn a(ttl: u32, addr: Ipv4Addr) -> (Vec<u8>, dns::Type, u32, Vec<u8>) {
    (OWNER.to_vec(), dns::Type::A, ttl, addr.octets().to_vec())
}

fn name(n: &str) -> Vec<u8> {
    let mut b = [0u8; 300];
    let k = dns::emit_name(&mut b, n).unwrap();
    b[..k].to_vec()
}

fn answer_all(r: &mut Resolver, sent: &[Sent], ttl: u32, now: u64) {
    for q in sent {
        let recs = if q.qtype == dns::Type::A {
            vec![a(ttl, A1), a(ttl, A2)]
        } else {
            vec![(
                OWNER.to_vec(),
                dns::Type::Aaaa,
                ttl,
                "2606:2800:220:1::1".parse::<Ipv6Addr>().unwrap().octets().to_vec(),
            )]
        };
        r.handle_reply(q.server, 53, &response(q, 0, &recs), now).unwrap();
    }
}

fn addrs(r: &Resolver, s: NameSlot) -> Option<(Vec<IpAddr>, bool)> {
    match r.resolution(s) {
        Resolution::Resolved { addrs, complete } => Some((addrs.to_vec(), complete)),
        _ => None,
    }
}

#[test]
fn resolves_a_and_aaaa_from_the_primary() {
    let (mut r, s) = setup();
    assert_eq!(r.resolution(s), Resolution::Unresolved);
    let sent = poll_all(&mut r, 0);
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|q| q.server == DNS1));
    assert_eq!([sent[0].qtype, sent[1].qtype], [dns::Type::A, dns::Type::Aaaa]);
    assert_ne!(sent[0].id, sent[1].id);
    assert!(poll_all(&mut r, SEC).is_empty(), "nothing more until the timeout");
    answer_all(&mut r, &sent, 300, SEC);
    let (got, complete) = addrs(&r, s).unwrap();
    assert!(complete);
    assert_eq!(got.len(), 3);
    assert!(got.contains(&IpAddr::V4(A1)) && got.contains(&IpAddr::V4(A2)));
    assert_eq!(r.stats().resolved, 1);
    // Refresh at ¾ of the TTL, expiry at the TTL.
    assert_eq!(r.next_deadline(), Some(SEC + 225 * SEC));
}

#[test]
fn hostile_replies_are_refused() {
    let (mut r, s) = setup();
    let sent = poll_all(&mut r, 0);
    let q = &sent[0];
    let good = response(q, 0, &[a(60, A1)]);
    let mut wrong_id = good.clone();
    wrong_id[0] ^= 0x55;
    let mut not_response = good.clone();
    not_response[2] &= 0x7f;
    let mut wrong_type = good.clone();
    let qt = 12 + q.question.len() - 4;
    wrong_type[qt + 1] = 28;
    let mut other_name = q.clone();
    other_name.question = name("example.org");
    other_name.question.extend_from_slice(&[0, 1, 0, 1]);
    let wrong_name = response(&other_name, 0, &[a(60, A1)]);
    let cut = good[..good.len() - 3].to_vec();
    let mut two_questions = good.clone();
    two_questions[5] = 2;
    let cases: [(&str, Ipv4Addr, u16, &[u8], ReplyRejected); 9] = [
        ("wrong id", DNS1, 53, &wrong_id, ReplyRejected::UnknownId),
        ("wrong server", DNS2, 53, &good, ReplyRejected::WrongSource),
        ("wrong address", A1, 53, &good, ReplyRejected::WrongSource),
        ("wrong port", DNS1, 5353, &good, ReplyRejected::WrongSource),
        ("not a response", DNS1, 53, &not_response, ReplyRejected::Malformed),
        ("wrong type", DNS1, 53, &wrong_type, ReplyRejected::WrongQuestion),
        ("wrong name", DNS1, 53, &wrong_name, ReplyRejected::WrongQuestion),
        ("cut short, no TC", DNS1, 53, &cut, ReplyRejected::Malformed),
        ("two questions", DNS1, 53, &two_questions, ReplyRejected::WrongQuestion),
    ];
    for (what, src, port, msg, want) in cases {
        assert_eq!(r.handle_reply(src, port, msg, 0), Err(want), "{what}");
        assert_eq!(r.resolution(s), Resolution::Unresolved, "{what}");
    }
    assert_eq!(r.handle_reply(DNS1, 53, &[0u8; 5], 0), Err(ReplyRejected::Malformed));
    let st = r.stats();
    assert_eq!((st.rejected_id, st.rejected_source, st.rejected_question, st.rejected_malformed), (1, 3, 3, 3));
    // The genuine reply still works (once: a replay is an unknown id).
    r.handle_reply(DNS1, 53, &good, 0).unwrap();
    assert_eq!(r.handle_reply(DNS1, 53, &good, 0), Err(ReplyRejected::UnknownId));
}

#[test]
fn ttl_is_clamped_between_floor_and_ceiling() {
    for (ttl, kept) in [(0u32, 30 * SEC), (5, 30 * SEC), (600, 600 * SEC), (u32::MAX, 3600 * SEC)] {
        let (mut r, s) = setup();
        let sent = poll_all(&mut r, 0);
        answer_all(&mut r, &sent, ttl, 0);
        // Refreshed at ¾ of the time kept …
        assert!(poll_all(&mut r, kept / 4 * 3 - 1).is_empty(), "ttl {ttl}");
        let again = poll_all(&mut r, kept / 4 * 3);
        assert_eq!(again.len(), 2, "ttl {ttl}");
        // … and, if the refresh is never answered, gone at the end of it (fail closed).
        assert!(addrs(&r, s).is_some());
        let _ = poll_all(&mut r, kept - 1);
        assert!(addrs(&r, s).is_some(), "ttl {ttl}: still valid just before expiry");
        let _ = poll_all(&mut r, kept);
        assert!(addrs(&r, s).is_none(), "ttl {ttl}: expired");
    }
}

#[test]
fn timeouts_alternate_servers_then_fail_closed() {
    let (mut r, s) = setup();
    let mut servers = Vec::new();
    let mut t = 0;
    for _ in 0..4 {
        let sent = poll_all(&mut r, t);
        assert_eq!(sent.len(), 2);
        servers.push(sent[0].server);
        t += 2 * SEC;
    }
    assert_eq!(servers, [DNS1, DNS2, DNS1, DNS2]);
    assert!(poll_all(&mut r, t).is_empty());
    assert_eq!(r.resolution(s), Resolution::Failed);
    assert_eq!((r.stats().timeouts, r.stats().failed), (8, 1));
    // Tried again later.
    assert_eq!(poll_all(&mut r, t + 30 * SEC).len(), 2);
    // With only a secondary, everything goes there.
    let (mut r, _) = setup();
    r.set_servers([None, Some(DNS2)]);
    assert!(poll_all(&mut r, 0).iter().all(|q| q.server == DNS2));
    // No server: nothing is sent and the name stays unresolved.
    r.set_servers([None, None]);
    assert!(poll_all(&mut r, 100 * SEC).is_empty());
}

#[test]
fn nxdomain_and_empty_answers_fail() {
    let (mut r, s) = setup();
    let sent = poll_all(&mut r, 0);
    for q in &sent {
        r.handle_reply(DNS1, 53, &response(q, 3, &[]), 0).unwrap(); // rcode 3
    }
    assert_eq!(r.resolution(s), Resolution::Failed);
}

#[test]
fn truncated_reply_marks_incomplete() {
    let (mut r, s) = setup();
    let sent = poll_all(&mut r, 0);
    let mut m = response(&sent[0], dns::flags::TC, &[a(60, A1), a(60, A2)]);
    m.truncate(m.len() - 6); // the second record is cut off, as a truncating server may
    r.handle_reply(DNS1, 53, &m, 0).unwrap();
    r.handle_reply(DNS1, 53, &response(&sent[1], 0, &[]), 0).unwrap();
    assert_eq!(addrs(&r, s), Some((vec![IpAddr::V4(A1)], false)));
}

#[test]
fn cname_chain_followed_and_strangers_ignored() {
    let mut r = Box::new(Resolver::new());
    r.set_servers([Some(DNS1), None]);
    r.set_port(PORT);
    let s = r.register("www.example.com").unwrap();
    let mut out = vec![0u8; 1500];
    let mut rng = || 0x1234u32;
    let n = r.poll(0, &mut out, EthernetAddress([2; 6]), EthernetAddress([4; 6]), ME, &mut rng).unwrap();
    let msg = udp::Packet::new_checked(&out[34..n]).unwrap().payload().to_vec();
    let q = Sent { server: DNS1, id: 0x1234, qtype: dns::Type::A, question: msg[12..].to_vec() };
    let answers = [
        (OWNER.to_vec(), dns::Type::Cname, 600, name("edge.example.net")),
        (name("edge.example.net"), dns::Type::A, 120, A2.octets().to_vec()),
        (name("evil.example.org"), dns::Type::A, 120, Ipv4Addr::new(6, 6, 6, 6).octets().to_vec()),
    ];
    r.handle_reply(DNS1, 53, &response(&q, 0, &answers), 0).unwrap();
    // The AAAA query (same id from this rng) gets an empty answer.
    let n = r.poll(0, &mut out, EthernetAddress([2; 6]), EthernetAddress([4; 6]), ME, &mut rng).unwrap();
    let msg = udp::Packet::new_checked(&out[34..n]).unwrap().payload().to_vec();
    let q6 = Sent { server: DNS1, id: 0x1234, qtype: dns::Type::Aaaa, question: msg[12..].to_vec() };
    r.handle_reply(DNS1, 53, &response(&q6, 0, &[]), 0).unwrap();
    assert_eq!(addrs(&r, s), Some((vec![IpAddr::V4(A2)], true)));
    // Kept for the smallest TTL used (120 s): refresh at 90 s.
    assert_eq!(r.next_deadline(), Some(90 * SEC));
}

#[test]
fn names_are_shared_and_released() {
    let (mut r, s) = setup();
    assert_eq!(r.register("example.com"), Some(s));
    r.release(s);
    assert_eq!(r.resolution(s), Resolution::Unresolved, "still referenced once");
    r.release(s);
    assert_eq!(r.resolution(s), Resolution::Failed, "released: unknown slots fail closed");
    // The cache is bounded: beyond it, names fail closed.
    let mut r = Box::new(Resolver::new());
    let mut buf = String::<16>::new();
    for i in 0..RESOLVER_NAMES {
        buf.clear();
        let _ = core::fmt::write(&mut buf, format_args!("h{i}.example"));
        assert!(r.register(&buf).is_some());
    }
    assert_eq!(r.register("one-too-many.example"), None);
    assert_eq!(r.stats().no_slot, 1);
    let map = [None];
    let view = ClientHosts { resolver: &r, map: &map };
    assert_eq!(view.resolution(HostId(0)), Resolution::Failed);
}
