//! Fuzz entry points for the firewall crate: dom0's rule commits and the per-frame pipeline
//! fed by clients and the uplink. Each must never panic and must keep its invariants (fail
//! closed on a bad commit; connection tracking within capacity; a removed client leaves no
//! flow behind).
#![forbid(unsafe_code)]

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use firewall::conntrack::ClientId;
use firewall::forward::{
    ChecksumState, ClientConfig, ConfigError, Decision, DownlinkConfig, DropCause, Egress, Firewall, Ingress, Rx,
    UplinkConfig, fragment,
};
use firewall::rules::{
    AcceptedBy, Action, ClientRules, DropReason, Family, Flow, HostId, HostTable, MatchContext, NoResolutions, RuleSet,
    RuleSetError, RulesStatus, Verdict,
};
use netstack::ethernet::{self, EtherType, EthernetAddress};
use netstack::{ipv4, udp};

type Fw = Firewall<64, 256, 8>;

/// The appliance's buffers: a page per received frame, a 4 KiB reply slot.
const SLOT: usize = 4096;
const MS: u64 = 1_000_000;

const UPLINK: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 6);
const SYS_NET: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 1);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 6);
const CLIENT1: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 17);
const CLIENT2: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 18);
const DNS1: Ipv4Addr = Ipv4Addr::new(10, 139, 1, 1);
const DNS2: Ipv4Addr = Ipv4Addr::new(10, 139, 1, 2);
const UP_MAC: EthernetAddress = EthernetAddress([0x00, 0x16, 0x3e, 0x5e, 0x6c, 0x00]);
const NET_MAC: EthernetAddress = EthernetAddress([0x00, 0x16, 0x3e, 0x5e, 0x6c, 0x01]);
const FE: EthernetAddress = EthernetAddress([0xfe, 0xff, 0xff, 0xff, 0xff, 0xff]);
const C1_MAC: EthernetAddress = EthernetAddress([0x00, 0x16, 0x3e, 0x5e, 0x6c, 0x11]);
const C2_MAC: EthernetAddress = EthernetAddress([0x00, 0x16, 0x3e, 0x5e, 0x6c, 0x12]);
/// The resolver's source port (reserved from NAT).
const RESOLVER_PORT: u16 = 5353;

const DNS_SERVERS: [IpAddr; 2] = [IpAddr::V4(DNS1), IpAddr::V4(DNS2)];

fn c(n: u16) -> ClientId {
    ClientId::new(n).expect("client id in range")
}

/// A deterministic stand-in for the CSPRNG (NAT ports, DNS ids), so a crash replays.
fn rng() -> impl FnMut() -> u32 {
    let mut r = 12345u32;
    move || {
        r = r.wrapping_mul(1_103_515_245).wrapping_add(12345);
        r
    }
}

/// The engine of `firewall/src/forward/tests.rs`: uplink, downlink, DNS servers, resolver
/// port, client 1 and client 2 present without rules.
fn base_engine() -> Box<Fw> {
    let mut fw = Box::new(Fw::new());
    fw.rekey(*b"0123456789abcdef");
    fw.set_uplink(Some(UplinkConfig {
        addr: UPLINK,
        netmask: Ipv4Addr::BROADCAST,
        gateway: SYS_NET,
        mac: UP_MAC,
        gateway_mac: NET_MAC,
        mtu: 1500,
    }));
    fw.set_downlink(Some(DownlinkConfig::qubes(GATEWAY)));
    fw.set_dns_servers(Some(DNS1), Some(DNS2));
    fw.set_resolver_port(RESOLVER_PORT);
    fw.add_client(c(1), ClientConfig { addr: CLIENT1, mac: C1_MAC }).expect("client 1");
    fw.add_client(c(2), ClientConfig { addr: CLIENT2, mac: C2_MAC }).expect("client 2");
    fw
}

// ----- rules_commit -----

/// The flow parameters at the start of a `rules_commit` input: destination (4), port (2),
/// protocol (1), ICMP type (1).
const FLOW_HEADER: usize = 8;

/// The QubesDB entries of a commit: `entries` split on 0x00, each entry split at its first
/// 0x01 into name and value (no 0x01: an empty value).
fn split_entries(entries: &[u8]) -> Vec<(&[u8], &[u8])> {
    if entries.is_empty() {
        return Vec::new();
    }
    entries
        .split(|&b| b == 0)
        .map(|e| match e.iter().position(|&b| b == 1) {
            Some(at) => (&e[..at], &e[at + 1..]),
            None => (e, &e[e.len()..]),
        })
        .collect()
}

/// Flows of every transport to `dst` (and an IPv6 one of the same bytes).
fn flows(h: &[u8; FLOW_HEADER]) -> [Flow; 6] {
    let dst4 = IpAddr::V4(Ipv4Addr::new(h[0], h[1], h[2], h[3]));
    let mut six = [0u8; 16];
    for (i, b) in six.iter_mut().enumerate() {
        *b = h[i % FLOW_HEADER];
    }
    let dst6 = IpAddr::V6(Ipv6Addr::from(six));
    let port = u16::from_be_bytes([h[4], h[5]]);
    [
        Flow::new(dst4, 6, port, h[7]),
        Flow::new(dst4, 17, port, h[7]),
        Flow::new(dst4, 1, port, h[7]),
        Flow::new(dst4, h[6], port, h[7]),
        Flow::new(dst6, 58, port, h[7]),
        Flow::new(dst6, h[6], port, h[7]),
    ]
}

/// Every `dsthost` of a rule set resolved to `dst` (complete).
fn resolved_to(set: &RuleSet, dst: IpAddr) -> HostTable {
    let mut t = HostTable::new();
    for (id, _) in set.hosts() {
        t.set_resolved(id, [dst]);
    }
    t
}

/// A verdict of an active rule set must name what decided it: an existing rule of that action,
/// the policy, or an existing rule whose host is not (fully) known.
fn check_verdict(set: &RuleSet, flow: &Flow, v: Verdict, hosts_known: bool) {
    let rule_action = |n| set.rules().iter().find(|r| r.number == n).map(|r| r.action);
    let host_ok = |host: HostId| host.index() < set.host_count();
    if Family::of(&flow.dst) != set.family() {
        assert_eq!(v, Verdict::Drop(DropReason::WrongFamily));
        return;
    }
    match v {
        Verdict::Accept(AcceptedBy::Rule(n)) => assert_eq!(rule_action(n), Some(Action::Accept)),
        Verdict::Accept(AcceptedBy::Policy) => assert_eq!(set.policy(), Action::Accept),
        Verdict::Drop(DropReason::Rule(n)) => assert_eq!(rule_action(n), Some(Action::Drop)),
        Verdict::Drop(DropReason::Policy) => assert_eq!(set.policy(), Action::Drop),
        Verdict::Drop(
            DropReason::HostUnresolved { rule, host }
            | DropReason::HostFailed { rule, host }
            | DropReason::HostIncomplete { rule, host },
        ) => {
            assert!(!hosts_known, "{v:?} with every host resolved completely");
            assert!(rule_action(rule).is_some() && host_ok(host), "{v:?}");
        }
        Verdict::Drop(r @ (DropReason::NoRules | DropReason::InvalidRules | DropReason::WrongFamily)) => {
            panic!("active rule set gave {r:?}")
        }
    }
}

/// Commit arbitrary entries to a [`ClientRules`] of either family, then the same entries to
/// client 1 of an engine through [`Firewall::commit_rules`], with a flow of the client
/// established under accept-all rules beforehand.
///
/// Input: [`FLOW_HEADER`] bytes of flow parameters, then the entries ([`split_entries`]).
pub fn rules_commit(data: &[u8]) {
    let mut h = [0u8; FLOW_HEADER];
    let n = data.len().min(FLOW_HEADER);
    h[..n].copy_from_slice(&data[..n]);
    let entries = split_entries(&data[n..]);
    let flows = flows(&h);

    let mut results = [Ok(()); 2];
    for (k, family) in [Family::V4, Family::V6].into_iter().enumerate() {
        let mut rules = ClientRules::new(family);
        let r = rules.commit(family, entries.iter().copied());
        results[k] = r;
        match r {
            Err(e) => {
                // Fail closed: no active set, the error kept, every flow dropped.
                assert!(rules.active().is_none());
                assert!(matches!(rules.status(), RulesStatus::Invalid(kept) if kept == e));
                for f in &flows {
                    let ctx = MatchContext { dns_servers: &DNS_SERVERS, hosts: &NoResolutions };
                    assert_eq!(rules.evaluate(f, &ctx), Verdict::Drop(DropReason::InvalidRules));
                }
            }
            Ok(()) => {
                let set = rules.active().expect("a good commit is active");
                assert_eq!(set.family(), family);
                assert!(set.rules().windows(2).all(|w| w[0].number < w[1].number), "rules sorted");
                for f in &flows {
                    for dns in [&DNS_SERVERS[..], &[]] {
                        let ctx = MatchContext { dns_servers: dns, hosts: &NoResolutions };
                        let v = rules.evaluate(f, &ctx);
                        check_verdict(set, f, v, set.host_count() == 0);
                        let table = resolved_to(set, f.dst);
                        let ctx = MatchContext { dns_servers: dns, hosts: &table };
                        check_verdict(set, f, rules.evaluate(f, &ctx), true);
                    }
                }
            }
        }
    }

    engine_commit(&h, &entries, results[0]);
}

/// The engine half of [`rules_commit`]: `expected` is what [`ClientRules::commit`] said of the
/// same entries.
fn engine_commit(h: &[u8; FLOW_HEADER], entries: &[(&[u8], &[u8])], expected: Result<(), RuleSetError>) {
    let mut fw = base_engine();
    let accept_all: [(&[u8], &[u8]); 2] = [(b"policy", b"drop"), (b"0000", b"action=accept")];
    fw.commit_rules(c(1), accept_all).expect("accept-all commits");
    let dst = Ipv4Addr::new(h[0], h[1], h[2], h[3]);
    let port = u16::from_be_bytes([h[4], h[5]]);
    let mut r = rng();
    let mut reply = vec![0u8; SLOT];
    let send = |fw: &mut Fw, reply: &mut [u8], r: &mut dyn FnMut() -> u32| {
        let mut buf = vec![0u8; SLOT];
        let len = udp_frame(&mut buf, FE, C1_MAC, CLIENT1, 40000, dst, port, b"probe");
        let rx = Rx { from: Ingress::Client(c(1)), len, csum: ChecksumState::Complete };
        fw.process(rx, &mut buf, reply, 1_000 * MS, &mut || r())
    };
    let first = send(&mut fw, &mut reply, &mut r);
    let established = fw.conntrack().client_len(c(1)) == 1;
    assert_eq!(established, matches!(first, Decision::Forward { .. }), "{first:?}");

    let got = fw.commit_rules(c(1), entries.iter().copied());
    let again = send(&mut fw, &mut reply, &mut r);
    match got {
        Err(ConfigError::Rules(e)) => {
            assert_eq!(expected, Err(e), "the engine parses as ClientRules does");
            let rules = fw.rules(c(1)).expect("client 1 present");
            assert!(rules.active().is_none());
            assert_eq!(fw.conntrack().client_len(c(1)), 0, "a failed commit leaves no flow");
            if established {
                let cause = match again {
                    Decision::Drop(cause) | Decision::Reply { dropped: Some(cause), .. } => cause,
                    d => panic!("traffic after a failed commit: {d:?}"),
                };
                assert_eq!(cause, DropCause::Rules(DropReason::InvalidRules));
            }
        }
        Err(e) => panic!("commit to a present client: {e:?}"),
        Ok(removed) => {
            assert_eq!(expected, Ok(()), "the engine parses as ClientRules does");
            let set = fw.rules(c(1)).and_then(|r| r.active()).expect("a good commit is active");
            let survived = fw.conntrack().client_len(c(1)) == 1;
            assert_eq!(removed, u32::from(established && !survived));
            if established && set.host_count() == 0 {
                // Without names the engine's verdict is the rule set's own.
                let ctx = MatchContext { dns_servers: &DNS_SERVERS, hosts: &NoResolutions };
                let accepted = set.evaluate(&Flow::new(IpAddr::V4(dst), 17, port, 0), &ctx).is_accept();
                assert_eq!(survived, accepted, "a flow survives a commit exactly when the rules accept it");
                assert_eq!(matches!(again, Decision::Forward { .. }), accepted, "{again:?}");
            }
        }
    }
    assert!(fw.remove_client(c(1)) && fw.remove_client(c(2)));
    assert!(fw.conntrack().is_empty());
}

/// Writes an Ethernet + IPv4 + UDP frame (checksums filled) at the start of `buf`; returns its
/// length.
#[allow(clippy::too_many_arguments)]
fn udp_frame(
    buf: &mut [u8],
    dst_mac: EthernetAddress,
    src_mac: EthernetAddress,
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    payload: &[u8],
) -> usize {
    let eth = ethernet::HEADER_LEN;
    ethernet::Repr { src_addr: src_mac, dst_addr: dst_mac, ethertype: EtherType::Ipv4 }
        .emit(&mut ethernet::Frame::new_unchecked(&mut buf[..]));
    let l4 = udp::Repr { src_port: sport, dst_port: dport }
        .emit(&mut buf[eth + 20..], src.into(), dst.into(), payload)
        .expect("udp fits");
    ipv4::Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: netstack::IpProtocol::Udp,
        payload_len: l4,
        ttl: 64,
        ident: 7,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
        tos: 0,
    }
    .emit(&mut ipv4::Packet::new_unchecked(&mut buf[eth..]))
    .expect("ipv4 fits");
    eth + 20 + l4
}

// ----- engine_process -----

/// Operation byte: the low two bits pick the source (client 1, client 2, uplink) or a resolver
/// poll.
const OP_SOURCE: u8 = 0b11;
/// Operation byte: make the frame reach the pipeline (EtherType IPv4; the client's own source
/// address, or our uplink address as destination).
const OP_PATCH: u8 = 0b100;
/// Operation byte: the frame claims a partial (pseudo-header) checksum.
const OP_PARTIAL: u8 = 0b1000;

/// The engine of `firewall/src/forward/tests.rs` with client 1 accepting everything and client
/// 2 under a policy-drop rule set (DNS, a `dsthost` name, TCP 443 and echo requests accepted).
fn engine() -> Box<Fw> {
    let mut fw = base_engine();
    let accept_all: [(&[u8], &[u8]); 2] = [(b"policy", b"accept"), (b"0000", b"action=accept")];
    fw.commit_rules(c(1), accept_all).expect("client 1 rules");
    let restricted: [(&[u8], &[u8]); 6] = [
        (b"policy", b"drop"),
        (b"0000", b"action=accept specialtarget=dns"),
        (b"0001", b"action=accept dsthost=www.qubes-os.org proto=tcp dstports=443-443"),
        (b"0002", b"action=drop dst4=93.184.216.0/24 proto=udp"),
        (b"0003", b"action=accept proto=icmp icmptype=8"),
        (b"0004", b"action=accept dst4=93.184.216.34 proto=tcp dstports=80-80"),
    ];
    fw.commit_rules(c(2), restricted).expect("client 2 rules");
    fw
}

/// Checks a decision about a frame from `from` against what the pipeline may do.
fn check_decision(fw: &Fw, from: Ingress, d: Decision, buf: &[u8], reply: &[u8]) {
    match d {
        Decision::Forward { to, len, .. } => {
            assert!(len <= buf.len(), "{d:?}");
            let ip = ipv4::Packet::new_checked(&buf[ethernet::HEADER_LEN..len]).expect("forwarded IPv4 header");
            assert_eq!(usize::from(ip.total_len()) + ethernet::HEADER_LEN, len, "{d:?}");
            match (from, to) {
                (Ingress::Client(_), Egress::Uplink) => assert_eq!(ip.src_addr(), UPLINK, "source NAT"),
                (Ingress::Uplink, Egress::Client(id)) => {
                    let cfg = fw.client(id).expect("forwarded to a present client");
                    assert_eq!(ip.dst_addr(), cfg.addr, "reverse NAT");
                }
                _ => panic!("{from:?} forwarded to {to:?}"),
            }
        }
        Decision::Fragment { to, len, mtu, count } => {
            assert!(len <= buf.len() && count >= 2, "{d:?}");
            assert!(matches!((from, to), (Ingress::Client(_), Egress::Uplink) | (Ingress::Uplink, Egress::Client(_))));
            let mut out = vec![0u8; SLOT];
            for i in 0..count {
                let n = fragment(&buf[..len], mtu, i, &mut out).expect("every announced fragment");
                assert!(n <= ethernet::HEADER_LEN + usize::from(mtu), "fragment {i}: {n} bytes for MTU {mtu}");
            }
            assert_eq!(fragment(&buf[..len], mtu, count, &mut out), None);
        }
        Decision::Reply { to, len, .. } => {
            assert!(len <= reply.len(), "{d:?}");
            let back = match from {
                Ingress::Client(id) => Egress::Client(id),
                Ingress::Uplink => Egress::Uplink,
            };
            assert_eq!(to, back, "replies go back where the frame came from");
        }
        Decision::Held | Decision::Consumed | Decision::Drop(_) => {}
    }
}

/// A sequence of frames into a small engine, interleaved with expiry and resolver polls.
///
/// Input: chunks of `[op, time step, len (2 bytes, big-endian), frame (len bytes)]`; see
/// `OP_*`. Time advances by step³ ms before each chunk.
pub fn engine_process(data: &[u8]) {
    let mut fw = engine();
    let mut rng = rng();
    let mut reply = vec![0u8; SLOT];
    let mut buf = vec![0u8; SLOT];
    let mut now = 1_000 * MS;
    let mut rest = data;
    while let [op, step, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (frame, next) = tail.split_at(len);
        rest = next;
        now += u64::from(*step).pow(3) * MS;
        fw.expire(now, 16);
        let from = match op & OP_SOURCE {
            0 => Ingress::Client(c(1)),
            1 => Ingress::Client(c(2)),
            2 => Ingress::Uplink,
            _ => {
                reply.fill(0);
                while let Some(n) = fw.poll_resolver(now, &mut reply, &mut rng) {
                    assert!(n <= reply.len());
                }
                continue;
            }
        };
        buf.fill(0);
        let len = frame.len().min(SLOT);
        buf[..len].copy_from_slice(&frame[..len]);
        if op & OP_PATCH != 0 && len >= ethernet::HEADER_LEN + 20 {
            buf[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            let (at, addr) = match from {
                Ingress::Client(id) => (26, fw.client(id).expect("present").addr),
                Ingress::Uplink => (30, UPLINK),
            };
            buf[at..at + 4].copy_from_slice(&addr.octets());
        }
        let csum = if op & OP_PARTIAL != 0 { ChecksumState::PartialPseudoHeader } else { ChecksumState::Complete };
        let d = fw.process(Rx { from, len, csum }, &mut buf, &mut reply, now, &mut rng);
        check_decision(&fw, from, d, &buf, &reply);
        assert!(fw.conntrack().len() <= fw.conntrack().capacity());
    }
    assert!(fw.remove_client(c(1)) && fw.remove_client(c(2)));
    assert!(fw.conntrack().is_empty(), "flows left after every client went: {}", fw.conntrack().len());
}
