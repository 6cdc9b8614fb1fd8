//! Table-driven tests of the rule grammar and semantics.

use std::collections::HashMap;
use std::format;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::string::{String, ToString};
use std::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::config::{
    HOST_NAME_BYTES_PER_CLIENT, MAX_ADDRS_PER_HOST, MAX_HOSTS_PER_CLIENT, MAX_RULE_LEN, MAX_RULES_PER_CLIENT,
};

// ---------------------------------------------------------------------------------------
// helpers

const DNS: [IpAddr; 2] = [IpAddr::V4(Ipv4Addr::new(10, 139, 1, 1)), IpAddr::V4(Ipv4Addr::new(10, 139, 1, 2))];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn num(n: u16) -> RuleNumber {
    RuleNumber::new(n).unwrap()
}

fn tcp(dst: &str, port: u16) -> Flow {
    Flow::new(ip(dst), IPPROTO_TCP, port, 0)
}

fn udp(dst: &str, port: u16) -> Flow {
    Flow::new(ip(dst), IPPROTO_UDP, port, 0)
}

fn icmp(dst: &str, ty: u8) -> Flow {
    let proto = if dst.contains(':') { IPPROTO_ICMPV6 } else { IPPROTO_ICMP };
    Flow::new(ip(dst), proto, 0, ty)
}

fn other(dst: &str, proto: u8) -> Flow {
    Flow::new(ip(dst), proto, 0, 0)
}

fn family_of(rules: &[&str]) -> Family {
    if rules.iter().any(|r| r.contains("dst6=")) { Family::V6 } else { Family::V4 }
}

/// A rule set from rule strings numbered 0000, 0001, … and a policy.
fn rule_set(family: Family, policy: &str, rules: &[&str]) -> Result<RuleSet, RuleSetError> {
    let keys: Vec<String> = (0..rules.len()).map(|i| format!("{i:04}")).collect();
    let mut entries: Vec<(&[u8], &[u8])> = vec![(b"policy", policy.as_bytes())];
    for (k, r) in keys.iter().zip(rules) {
        entries.push((k.as_bytes(), r.as_bytes()));
    }
    RuleSet::parse(family, entries)
}

fn eval(set: &RuleSet, flow: Flow) -> Verdict {
    set.evaluate(&flow, &MatchContext { dns_servers: &DNS, hosts: &NoResolutions })
}

const ACCEPT_POLICY: Verdict = Verdict::Accept(AcceptedBy::Policy);
const DROP_POLICY: Verdict = Verdict::Drop(DropReason::Policy);

fn acc(n: u16) -> Verdict {
    Verdict::Accept(AcceptedBy::Rule(num(n)))
}

fn drop_(n: u16) -> Verdict {
    Verdict::Drop(DropReason::Rule(num(n)))
}

/// A fake resolver keyed by name.
#[derive(Clone)]
enum Fake {
    Unresolved,
    Failed,
    Resolved(Vec<IpAddr>, bool),
}

struct FakeResolver<'a> {
    set: &'a RuleSet,
    names: HashMap<&'static str, Fake>,
}

impl HostResolutions for FakeResolver<'_> {
    fn resolution(&self, id: HostId) -> Resolution<'_> {
        let Some(name) = self.set.host_name(id) else {
            return Resolution::Unresolved;
        };
        match self.names.get(name) {
            None | Some(Fake::Unresolved) => Resolution::Unresolved,
            Some(Fake::Failed) => Resolution::Failed,
            Some(Fake::Resolved(addrs, complete)) => Resolution::Resolved { addrs, complete: *complete },
        }
    }
}

// ---------------------------------------------------------------------------------------
// semantics, one table per key

struct Case {
    rules: &'static [&'static str],
    policy: &'static str,
    flow: Flow,
    want: Verdict,
}

fn run(cases: &[Case]) {
    for (i, c) in cases.iter().enumerate() {
        let set =
            rule_set(family_of(c.rules), c.policy, c.rules).unwrap_or_else(|e| panic!("case {i} {:?}: {e}", c.rules));
        let got = eval(&set, c.flow);
        assert_eq!(got, c.want, "case {i}: rules {:?} policy {} flow {:?}", c.rules, c.policy, c.flow);
    }
}

macro_rules! case {
    ([$($r:expr),* $(,)?], $policy:expr, $flow:expr => $want:expr) => {
        Case { rules: &[$($r),*], policy: $policy, flow: $flow, want: $want }
    };
}

#[test]
fn action_and_policy() {
    run(&[
        case!([], "accept", tcp("1.2.3.4", 80) => ACCEPT_POLICY),
        case!([], "drop", tcp("1.2.3.4", 80) => DROP_POLICY),
        case!(["action=accept"], "drop", udp("1.2.3.4", 1) => acc(0)),
        case!(["action=drop"], "accept", udp("1.2.3.4", 1) => drop_(0)),
        // first match wins
        case!(["action=drop", "action=accept"], "accept", tcp("1.2.3.4", 1) => drop_(0)),
        case!(["action=accept", "action=drop"], "drop", tcp("1.2.3.4", 1) => acc(0)),
        // dom0's default (no firewall.xml)
        case!(["action=accept"], "drop", other("8.8.8.8", 47) => acc(0)),
        // dom0's test_005_qdb_entries rule set
        case!(["action=drop proto=icmp", "action=drop proto=tcp dstports=80-80",
               "action=accept proto=udp", "action=accept specialtarget=dns"],
              "drop", icmp("1.1.1.1", 8) => drop_(0)),
        case!(["action=drop proto=icmp", "action=drop proto=tcp dstports=80-80",
               "action=accept proto=udp", "action=accept specialtarget=dns"],
              "drop", tcp("1.1.1.1", 80) => drop_(1)),
        case!(["action=drop proto=icmp", "action=drop proto=tcp dstports=80-80",
               "action=accept proto=udp", "action=accept specialtarget=dns"],
              "drop", udp("1.1.1.1", 53) => acc(2)),
        case!(["action=drop proto=icmp", "action=drop proto=tcp dstports=80-80",
               "action=accept proto=udp", "action=accept specialtarget=dns"],
              "drop", tcp("10.139.1.1", 53) => acc(3)),
        case!(["action=drop proto=icmp", "action=drop proto=tcp dstports=80-80",
               "action=accept proto=udp", "action=accept specialtarget=dns"],
              "drop", tcp("1.1.1.1", 443) => DROP_POLICY),
    ]);
}

#[test]
fn proto() {
    run(&[
        case!(["action=accept proto=tcp"], "drop", tcp("1.2.3.4", 80) => acc(0)),
        case!(["action=accept proto=tcp"], "drop", udp("1.2.3.4", 80) => DROP_POLICY),
        case!(["action=accept proto=tcp"], "drop", icmp("1.2.3.4", 8) => DROP_POLICY),
        case!(["action=accept proto=tcp"], "drop", other("1.2.3.4", 132) => DROP_POLICY),
        case!(["action=accept proto=udp"], "drop", udp("1.2.3.4", 80) => acc(0)),
        case!(["action=accept proto=udp"], "drop", tcp("1.2.3.4", 80) => DROP_POLICY),
        case!(["action=accept proto=icmp"], "drop", icmp("1.2.3.4", 0) => acc(0)),
        case!(["action=accept proto=icmp"], "drop", udp("1.2.3.4", 0) => DROP_POLICY),
        // ICMPv6 is `proto=icmp` in an IPv6 rule set; ICMPv4's number in IPv6 is not.
        case!(["action=accept proto=icmp dst6=::/0"], "drop", icmp("2001:db8::1", 128) => acc(0)),
        case!(["action=accept proto=icmp dst6=::/0"], "drop", other("2001:db8::1", 1) => DROP_POLICY),
        // no proto: anything
        case!(["action=drop"], "accept", other("1.2.3.4", 0) => drop_(0)),
    ]);
}

#[test]
fn dstports() {
    run(&[
        case!(["action=accept proto=tcp dstports=80-80"], "drop", tcp("1.2.3.4", 80) => acc(0)),
        case!(["action=accept proto=tcp dstports=80-80"], "drop", tcp("1.2.3.4", 79) => DROP_POLICY),
        case!(["action=accept proto=tcp dstports=80-80"], "drop", tcp("1.2.3.4", 81) => DROP_POLICY),
        case!(["action=accept proto=tcp dstports=80-80"], "drop", udp("1.2.3.4", 80) => DROP_POLICY),
        case!(["action=accept proto=udp dstports=1000-2000"], "drop", udp("1.2.3.4", 1000) => acc(0)),
        case!(["action=accept proto=udp dstports=1000-2000"], "drop", udp("1.2.3.4", 2000) => acc(0)),
        case!(["action=accept proto=udp dstports=1000-2000"], "drop", udp("1.2.3.4", 1500) => acc(0)),
        case!(["action=accept proto=udp dstports=1000-2000"], "drop", udp("1.2.3.4", 999) => DROP_POLICY),
        case!(["action=accept proto=udp dstports=1000-2000"], "drop", udp("1.2.3.4", 2001) => DROP_POLICY),
        case!(["action=accept proto=tcp dstports=0-65535"], "drop", tcp("1.2.3.4", 0) => acc(0)),
        case!(["action=accept proto=tcp dstports=0-65535"], "drop", tcp("1.2.3.4", 65535) => acc(0)),
        case!(["action=accept proto=tcp dstports=0-0"], "drop", tcp("1.2.3.4", 0) => acc(0)),
        case!(["action=accept proto=tcp dstports=0-0"], "drop", tcp("1.2.3.4", 1) => DROP_POLICY),
        case!(["action=accept proto=tcp dstports=65535-65535"], "drop", tcp("1.2.3.4", 65535) => acc(0)),
        case!(["action=accept proto=tcp dstports=65535-65535"], "drop", tcp("1.2.3.4", 65534) => DROP_POLICY),
        // a single port (Linux accepts it; dom0 always writes lo-hi)
        case!(["action=accept proto=tcp dstports=443"], "drop", tcp("1.2.3.4", 443) => acc(0)),
        case!(["action=accept proto=tcp dstports=443"], "drop", tcp("1.2.3.4", 444) => DROP_POLICY),
    ]);
}

#[test]
fn icmptype() {
    run(&[
        case!(["action=accept proto=icmp icmptype=8"], "drop", icmp("1.2.3.4", 8) => acc(0)),
        case!(["action=accept proto=icmp icmptype=8"], "drop", icmp("1.2.3.4", 0) => DROP_POLICY),
        case!(["action=accept proto=icmp icmptype=0"], "drop", icmp("1.2.3.4", 0) => acc(0)),
        case!(["action=accept proto=icmp icmptype=255"], "drop", icmp("1.2.3.4", 255) => acc(0)),
        case!(["action=accept proto=icmp icmptype=8"], "drop", tcp("1.2.3.4", 8) => DROP_POLICY),
        case!(["action=drop proto=icmp icmptype=13", "action=accept proto=icmp"], "drop",
              icmp("1.2.3.4", 13) => drop_(0)),
        case!(["action=drop proto=icmp icmptype=13", "action=accept proto=icmp"], "drop",
              icmp("1.2.3.4", 8) => acc(1)),
    ]);
}

#[test]
fn dst4_prefixes() {
    run(&[
        case!(["action=accept dst4=0.0.0.0/0"], "drop", tcp("255.255.255.255", 1) => acc(0)),
        case!(["action=accept dst4=0.0.0.0/0"], "drop", tcp("0.0.0.0", 1) => acc(0)),
        case!(["action=accept dst4=1.2.3.4/32"], "drop", tcp("1.2.3.4", 1) => acc(0)),
        case!(["action=accept dst4=1.2.3.4/32"], "drop", tcp("1.2.3.5", 1) => DROP_POLICY),
        case!(["action=accept dst4=1.2.3.4"], "drop", tcp("1.2.3.4", 1) => acc(0)),
        case!(["action=accept dst4=1.2.3.4"], "drop", tcp("1.2.3.3", 1) => DROP_POLICY),
        case!(["action=accept dst4=10.0.0.0/8"], "drop", tcp("10.255.255.255", 1) => acc(0)),
        case!(["action=accept dst4=10.0.0.0/8"], "drop", tcp("11.0.0.0", 1) => DROP_POLICY),
        case!(["action=accept dst4=10.0.0.0/8"], "drop", tcp("9.255.255.255", 1) => DROP_POLICY),
        // odd prefixes
        case!(["action=accept dst4=192.168.0.0/23"], "drop", tcp("192.168.1.255", 1) => acc(0)),
        case!(["action=accept dst4=192.168.0.0/23"], "drop", tcp("192.168.2.0", 1) => DROP_POLICY),
        case!(["action=accept dst4=128.0.0.0/1"], "drop", tcp("200.1.1.1", 1) => acc(0)),
        case!(["action=accept dst4=128.0.0.0/1"], "drop", tcp("127.255.255.255", 1) => DROP_POLICY),
        case!(["action=accept dst4=1.2.3.4/31"], "drop", tcp("1.2.3.5", 1) => acc(0)),
        case!(["action=accept dst4=1.2.3.4/31"], "drop", tcp("1.2.3.6", 1) => DROP_POLICY),
        case!(["action=accept dst4=172.16.0.0/12"], "drop", tcp("172.31.255.1", 1) => acc(0)),
        case!(["action=accept dst4=172.16.0.0/12"], "drop", tcp("172.32.0.1", 1) => DROP_POLICY),
        // host bits are cleared, as nftables does
        case!(["action=accept dst4=10.1.2.3/8"], "drop", tcp("10.9.9.9", 1) => acc(0)),
        // with proto and ports
        case!(["action=drop dst4=8.8.8.8 proto=udp dstports=53-53"], "accept", udp("8.8.8.8", 53) => drop_(0)),
        case!(["action=drop dst4=8.8.8.8 proto=udp dstports=53-53"], "accept", tcp("8.8.8.8", 53) => ACCEPT_POLICY),
        case!(["action=drop dst4=8.8.8.8 proto=udp dstports=53-53"], "accept", udp("8.8.4.4", 53) => ACCEPT_POLICY),
    ]);
}

#[test]
fn dst6_prefixes() {
    run(&[
        case!(["action=accept dst6=::/0"], "drop", tcp("2001:db8::1", 1) => acc(0)),
        case!(["action=accept dst6=2001:db8::1"], "drop", tcp("2001:db8::1", 1) => acc(0)),
        case!(["action=accept dst6=2001:db8::1/128"], "drop", tcp("2001:db8::2", 1) => DROP_POLICY),
        case!(["action=accept dst6=2001:db8::/32"], "drop", tcp("2001:db8:ffff::1", 1) => acc(0)),
        case!(["action=accept dst6=2001:db8::/32"], "drop", tcp("2001:db9::1", 1) => DROP_POLICY),
        case!(["action=accept dst6=fd09:24ef:4179::/47"], "drop", tcp("fd09:24ef:4179:1::1", 1) => acc(0)),
        case!(["action=accept dst6=fd09:24ef:4179::/47"], "drop", tcp("fd09:24ef:417a::1", 1) => DROP_POLICY),
        case!(["action=accept dst6=::ffff:1.2.3.4"], "drop", tcp("::ffff:1.2.3.4", 1) => acc(0)),
        case!(["action=accept dst6=2001:db8::/127"], "drop", tcp("2001:db8::1", 1) => acc(0)),
        case!(["action=accept dst6=2001:db8::/127"], "drop", tcp("2001:db8::2", 1) => DROP_POLICY),
        case!(["action=accept dst6=8000::/1"], "drop", tcp("ffff::1", 1) => acc(0)),
        case!(["action=accept dst6=8000::/1"], "drop", tcp("7fff::1", 1) => DROP_POLICY),
    ]);
}

#[test]
fn gaps_in_numbering_and_order() {
    // Entries arrive in any order and with gaps; evaluation is by number.
    let entries: [(&[u8], &[u8]); 4] = [
        (b"0007", b"action=accept"),
        (b"policy", b"drop"),
        (b"0003", b"action=drop proto=tcp dstports=22-22"),
        (b"0100", b"action=drop"),
    ];
    let set = RuleSet::parse(Family::V4, entries).unwrap();
    let numbers: Vec<u16> = set.rules().iter().map(|r| r.number.get()).collect();
    assert_eq!(numbers, [3, 7, 100]);
    assert_eq!(eval(&set, tcp("1.1.1.1", 22)), drop_(3));
    assert_eq!(eval(&set, tcp("1.1.1.1", 80)), acc(7));
    // dom0 skips expired and other-family rules without renumbering
    let entries: [(&[u8], &[u8]); 3] =
        [(b"policy", b"drop"), (b"0000", b"action=drop dst4=1.1.1.1"), (b"0002", b"action=accept")];
    let set = RuleSet::parse(Family::V4, entries).unwrap();
    assert_eq!(eval(&set, tcp("1.1.1.1", 1)), drop_(0));
    assert_eq!(eval(&set, tcp("1.1.1.2", 1)), acc(2)); // mirage stops at the gap
    // 9999 is the last number
    let entries: [(&[u8], &[u8]); 2] = [(b"policy", b"drop"), (b"9999", b"action=accept")];
    let set = RuleSet::parse(Family::V4, entries).unwrap();
    assert_eq!(eval(&set, tcp("1.1.1.2", 1)), acc(9999));
}

#[test]
fn specialtarget_dns() {
    run(&[
        // no proto: TCP and UDP port 53 to the DNS servers
        case!(["action=accept specialtarget=dns"], "drop", udp("10.139.1.1", 53) => acc(0)),
        case!(["action=accept specialtarget=dns"], "drop", tcp("10.139.1.2", 53) => acc(0)),
        case!(["action=accept specialtarget=dns"], "drop", udp("10.139.1.3", 53) => DROP_POLICY),
        case!(["action=accept specialtarget=dns"], "drop", udp("10.139.1.1", 54) => DROP_POLICY),
        case!(["action=accept specialtarget=dns"], "drop", icmp("10.139.1.1", 8) => DROP_POLICY),
        case!(["action=accept specialtarget=dns"], "drop", other("10.139.1.1", 132) => DROP_POLICY),
        // proto honoured (mirage ignores specialtarget when proto is set)
        case!(["action=accept proto=udp specialtarget=dns"], "drop", udp("10.139.1.1", 53) => acc(0)),
        case!(["action=accept proto=udp specialtarget=dns"], "drop", tcp("10.139.1.1", 53) => DROP_POLICY),
        case!(["action=accept proto=udp specialtarget=dns"], "drop", udp("1.1.1.1", 53) => DROP_POLICY),
        case!(["action=drop proto=tcp specialtarget=dns"], "accept", tcp("10.139.1.1", 53) => drop_(0)),
        case!(["action=drop proto=tcp specialtarget=dns"], "accept", tcp("1.1.1.1", 80) => ACCEPT_POLICY),
        case!(["action=drop proto=tcp specialtarget=dns"], "accept", udp("10.139.1.1", 53) => ACCEPT_POLICY),
        // proto=icmp with dns matches nothing (Linux emits no rule)
        case!(["action=drop proto=icmp specialtarget=dns"], "accept", icmp("10.139.1.1", 8) => ACCEPT_POLICY),
        // dstports: exactly 53 keeps it, anything else skips the rule (Linux)
        case!(["action=accept proto=udp specialtarget=dns dstports=53-53"], "drop", udp("10.139.1.1", 53) => acc(0)),
        case!(["action=accept proto=udp specialtarget=dns dstports=50-60"], "drop", udp("10.139.1.1", 53) => DROP_POLICY),
        case!(["action=accept proto=udp specialtarget=dns dstports=54-54"], "drop", udp("10.139.1.1", 54) => DROP_POLICY),
        // with a destination: the intersection
        case!(["action=accept dst4=10.139.1.1 specialtarget=dns"], "drop", udp("10.139.1.1", 53) => acc(0)),
        case!(["action=accept dst4=10.139.1.1 specialtarget=dns"], "drop", udp("10.139.1.2", 53) => DROP_POLICY),
        case!(["action=accept dst4=1.1.1.1 specialtarget=dns"], "drop", udp("1.1.1.1", 53) => DROP_POLICY),
    ]);
}

#[test]
fn specialtarget_dns_without_servers_matches_nothing() {
    let set = rule_set(Family::V4, "drop", &["action=accept specialtarget=dns"]).unwrap();
    let ctx = MatchContext { dns_servers: &[], hosts: &NoResolutions };
    assert_eq!(set.evaluate(&udp("10.139.1.1", 53), &ctx), DROP_POLICY);
}

#[test]
fn specialtarget_dns_ipv6_servers() {
    let set = rule_set(Family::V6, "drop", &["action=accept specialtarget=dns"]).unwrap();
    let servers = [ip("10.139.1.1"), ip("fd00::53")];
    let ctx = MatchContext { dns_servers: &servers, hosts: &NoResolutions };
    assert_eq!(set.evaluate(&udp("fd00::53", 53), &ctx), acc(0));
    assert_eq!(set.evaluate(&udp("fd00::54", 53), &ctx), DROP_POLICY);
}

#[test]
fn ignored_keys() {
    run(&[
        case!(["action=accept dpi=NO"], "drop", tcp("1.1.1.1", 1) => acc(0)),
        case!(["action=accept expire=1700000000"], "drop", tcp("1.1.1.1", 1) => acc(0)),
        case!(["action=accept proto=tcp comment=my web server: port 80, [test]"], "drop", tcp("1.1.1.1", 1) => acc(0)),
        case!(["action=drop comment="], "accept", tcp("1.1.1.1", 1) => drop_(0)),
        case!(["action=drop dst4=1.1.1.1 proto=tcp dstports=1-1 expire=5 dpi=NO comment=x y z"], "accept",
              tcp("1.1.1.1", 1) => drop_(0)),
    ]);
}

#[test]
fn keys_in_any_order() {
    run(&[
        case!(["proto=tcp dstports=80-80 action=drop"], "accept", tcp("1.1.1.1", 80) => drop_(0)),
        case!(["dst4=1.1.1.1 action=drop"], "accept", tcp("1.1.1.1", 80) => drop_(0)),
    ]);
}

#[test]
fn family_mismatch_drops_silently() {
    let set = rule_set(Family::V4, "accept", &["action=accept"]).unwrap();
    let v = eval(&set, tcp("2001:db8::1", 80));
    assert_eq!(v, Verdict::Drop(DropReason::WrongFamily));
    if let Verdict::Drop(r) = v {
        assert_eq!(r.answer(), DropAnswer::Silent);
    }
}

#[test]
fn drop_answers() {
    let admin = DropAnswer::AdminProhibited;
    assert_eq!(DropReason::Rule(num(3)).answer(), admin);
    assert_eq!(DropReason::Policy.answer(), admin);
    assert_eq!(DropReason::InvalidRules.answer(), admin);
    let host = HostId(0);
    assert_eq!(DropReason::HostUnresolved { rule: num(0), host }.answer(), admin);
    assert_eq!(DropReason::HostFailed { rule: num(0), host }.answer(), admin);
    assert_eq!(DropReason::HostIncomplete { rule: num(0), host }.answer(), admin);
    assert_eq!(DropReason::NoRules.answer(), DropAnswer::Silent);
}

#[test]
fn flow_new_maps_protocols() {
    assert_eq!(tcp("1.1.1.1", 5).transport, Transport::Tcp { dst_port: 5 });
    assert_eq!(udp("::1", 5).transport, Transport::Udp { dst_port: 5 });
    assert_eq!(Flow::new(ip("1.1.1.1"), 1, 9, 3).transport, Transport::Icmp { icmp_type: 3 });
    assert_eq!(Flow::new(ip("::1"), 58, 9, 3).transport, Transport::Icmp { icmp_type: 3 });
    assert_eq!(Flow::new(ip("::1"), 1, 9, 3).transport, Transport::Other { protocol: 1 });
    assert_eq!(Flow::new(ip("1.1.1.1"), 58, 9, 3).transport, Transport::Other { protocol: 58 });
}

// ---------------------------------------------------------------------------------------
// dsthost with a fake resolver

fn host_set(policy: &str, rules: &[&str]) -> RuleSet {
    rule_set(Family::V4, policy, rules).unwrap()
}

fn eval_with(set: &RuleSet, names: &[(&'static str, Fake)], flow: Flow) -> Verdict {
    let resolver = FakeResolver { set, names: names.iter().cloned().collect() };
    set.evaluate(&flow, &MatchContext { dns_servers: &DNS, hosts: &resolver })
}

fn resolved(addrs: &[&str]) -> Fake {
    Fake::Resolved(addrs.iter().map(|a| ip(a)).collect(), true)
}

#[test]
fn dsthost_resolved() {
    let set = host_set("drop", &["action=accept dsthost=example.com proto=tcp dstports=443-443"]);
    let names = [("example.com", resolved(&["93.184.216.34", "93.184.216.35", "2606:2800::1"]))];
    assert_eq!(eval_with(&set, &names, tcp("93.184.216.34", 443)), acc(0));
    assert_eq!(eval_with(&set, &names, tcp("93.184.216.35", 443)), acc(0));
    assert_eq!(eval_with(&set, &names, tcp("93.184.216.36", 443)), DROP_POLICY);
    assert_eq!(eval_with(&set, &names, tcp("93.184.216.34", 80)), DROP_POLICY);
    // IPv6 rule set: AAAA addresses match
    let set6 = rule_set(Family::V6, "drop", &["action=accept dsthost=example.com"]).unwrap();
    assert_eq!(eval_with(&set6, &names, tcp("2606:2800::1", 1)), acc(0));
    assert_eq!(eval_with(&set6, &names, tcp("2606:2800::2", 1)), DROP_POLICY);
}

#[test]
fn dsthost_drop_rule_unresolved_or_failed_drops() {
    let set = host_set("accept", &["action=accept proto=udp", "action=drop dsthost=tracker.example", "action=accept"]);
    let host = HostId(0);
    let rule = num(1);
    for (state, want) in [
        (Fake::Unresolved, DropReason::HostUnresolved { rule, host }),
        (Fake::Failed, DropReason::HostFailed { rule, host }),
    ] {
        let names = [("tracker.example", state)];
        // rules before it still decide
        assert_eq!(eval_with(&set, &names, udp("1.1.1.1", 5)), acc(0));
        // reaching it: undecidable → drop with the reason, answered admin-prohibited
        let v = eval_with(&set, &names, tcp("1.1.1.1", 5));
        assert_eq!(v, Verdict::Drop(want));
    }
    // no entry in the resolver at all = unresolved
    assert_eq!(eval_with(&set, &[], tcp("1.1.1.1", 5)), Verdict::Drop(DropReason::HostUnresolved { rule, host }));
    let names = [("tracker.example", resolved(&["6.6.6.6"]))];
    assert_eq!(eval_with(&set, &names, tcp("6.6.6.6", 5)), drop_(1));
    assert_eq!(eval_with(&set, &names, tcp("1.1.1.1", 5)), acc(2));
}

#[test]
fn dsthost_accept_rule_unresolved_falls_through() {
    let set = host_set(
        "drop",
        &["action=accept dsthost=a.example", "action=accept proto=tcp dstports=22-22", "action=drop proto=udp"],
    );
    let host = HostId(0);
    let rule = num(0);
    let names = [("a.example", Fake::Unresolved)];
    // a later accept still accepts
    assert_eq!(eval_with(&set, &names, tcp("5.5.5.5", 22)), acc(1));
    // a later drop / the policy report the unresolved host
    assert_eq!(eval_with(&set, &names, udp("5.5.5.5", 1)), Verdict::Drop(DropReason::HostUnresolved { rule, host }));
    assert_eq!(eval_with(&set, &names, tcp("5.5.5.5", 80)), Verdict::Drop(DropReason::HostUnresolved { rule, host }));
    let names = [("a.example", Fake::Failed)];
    assert_eq!(eval_with(&set, &names, tcp("5.5.5.5", 80)), Verdict::Drop(DropReason::HostFailed { rule, host }));
    // an accept policy still accepts (the unknown rule could only have accepted too)
    let set = host_set("accept", &["action=accept dsthost=a.example"]);
    assert_eq!(eval_with(&set, &names, tcp("5.5.5.5", 80)), ACCEPT_POLICY);
}

#[test]
fn dsthost_unresolved_only_matters_if_other_predicates_match() {
    let set = host_set("accept", &["action=drop dsthost=a.example proto=tcp dstports=443-443"]);
    let names = [("a.example", Fake::Unresolved)];
    assert_eq!(eval_with(&set, &names, udp("5.5.5.5", 53)), ACCEPT_POLICY);
    assert_eq!(eval_with(&set, &names, tcp("5.5.5.5", 80)), ACCEPT_POLICY);
    assert_eq!(
        eval_with(&set, &names, tcp("5.5.5.5", 443)),
        Verdict::Drop(DropReason::HostUnresolved { rule: num(0), host: HostId(0) })
    );
}

#[test]
fn dsthost_incomplete_resolution() {
    let set = host_set("accept", &["action=drop dsthost=cdn.example"]);
    let names = [("cdn.example", Fake::Resolved(vec![ip("1.0.0.1")], false))];
    assert_eq!(eval_with(&set, &names, tcp("1.0.0.1", 1)), drop_(0));
    // not in the truncated list: cannot tell → drop
    assert_eq!(
        eval_with(&set, &names, tcp("1.0.0.2", 1)),
        Verdict::Drop(DropReason::HostIncomplete { rule: num(0), host: HostId(0) })
    );
    // an accept rule with a truncated list accepts what it knows and falls through otherwise
    let set = host_set("drop", &["action=accept dsthost=cdn.example", "action=accept proto=udp"]);
    assert_eq!(eval_with(&set, &names, tcp("1.0.0.1", 1)), acc(0));
    assert_eq!(eval_with(&set, &names, udp("1.0.0.2", 1)), acc(1));
    assert_eq!(
        eval_with(&set, &names, tcp("1.0.0.2", 1)),
        Verdict::Drop(DropReason::HostIncomplete { rule: num(0), host: HostId(0) })
    );
}

#[test]
fn dsthost_names_are_shared_and_listed() {
    let set = host_set(
        "drop",
        &[
            "action=accept dsthost=a.example proto=tcp",
            "action=accept dsthost=b.example",
            "action=drop dsthost=a.example.",
        ],
    );
    assert_eq!(set.host_count(), 2);
    let hosts: Vec<(usize, &str)> = set.hosts().map(|(id, n)| (id.index(), n)).collect();
    assert_eq!(hosts, [(0, "a.example"), (1, "b.example")]);
    assert_eq!(set.rules()[2].destination, Destination::Host(HostId(0)));
    assert_eq!(set.host_name(HostId(2)), None);
    // multiple A records, one rule per name, both hosts resolved
    let names = [("a.example", resolved(&["1.1.1.1", "1.1.1.2"])), ("b.example", resolved(&["2.2.2.2"]))];
    assert_eq!(eval_with(&set, &names, tcp("1.1.1.2", 1)), acc(0));
    assert_eq!(eval_with(&set, &names, udp("1.1.1.2", 1)), drop_(2));
    assert_eq!(eval_with(&set, &names, udp("2.2.2.2", 1)), acc(1));
}

#[test]
fn dsthost_ipv4_literal_is_an_address() {
    let set = host_set("drop", &["action=accept dsthost=1.2.3.4"]);
    assert_eq!(set.host_count(), 0);
    assert_eq!(eval(&set, tcp("1.2.3.4", 1)), acc(0));
    assert_eq!(eval(&set, tcp("1.2.3.5", 1)), DROP_POLICY);
}

#[test]
fn host_table() {
    let set = host_set("drop", &["action=accept dsthost=a.example", "action=accept dsthost=b.example"]);
    let mut table = HostTable::new();
    let ctx = |t: &HostTable, f: Flow| set.evaluate(&f, &MatchContext { dns_servers: &DNS, hosts: t });
    let unresolved = Verdict::Drop(DropReason::HostUnresolved { rule: num(0), host: HostId(0) });
    assert_eq!(ctx(&table, tcp("1.1.1.1", 1)), unresolved);
    table.set_resolved(HostId(1), [ip("2.2.2.2")]);
    assert_eq!(ctx(&table, tcp("2.2.2.2", 1)), acc(1));
    assert_eq!(ctx(&table, tcp("1.1.1.1", 1)), unresolved);
    table.set_resolved(HostId(0), [ip("1.1.1.1"), ip("1.1.1.1"), ip("::1")]);
    assert_eq!(
        table.resolution(HostId(0)),
        Resolution::Resolved { addrs: &[ip("1.1.1.1"), ip("::1")], complete: true }
    );
    assert_eq!(ctx(&table, tcp("1.1.1.1", 1)), acc(0));
    assert_eq!(ctx(&table, tcp("3.3.3.3", 1)), DROP_POLICY);
    table.set_failed(HostId(0));
    assert_eq!(ctx(&table, tcp("3.3.3.3", 1)), Verdict::Drop(DropReason::HostFailed { rule: num(0), host: HostId(0) }));
    table.set_resolved(HostId(0), []);
    assert_eq!(table.resolution(HostId(0)), Resolution::Failed);
    table.set_unresolved(HostId(0));
    assert_eq!(ctx(&table, tcp("3.3.3.3", 1)), unresolved);
    // too many addresses: kept up to capacity, marked incomplete
    let many = (0..=MAX_ADDRS_PER_HOST as u32).map(|i| IpAddr::V4(Ipv4Addr::from_bits(0x0a00_0000 + i)));
    table.set_resolved(HostId(0), many);
    match table.resolution(HostId(0)) {
        Resolution::Resolved { addrs, complete } => {
            assert_eq!(addrs.len(), MAX_ADDRS_PER_HOST);
            assert!(!complete);
        }
        r => panic!("{r:?}"),
    }
    // ids beyond capacity are ignored, never a match
    table.set_resolved(HostId(u16::MAX), [ip("9.9.9.9")]);
    assert_eq!(table.resolution(HostId(u16::MAX)), Resolution::Unresolved);
    table.clear();
    assert_eq!(table.resolution(HostId(1)), Resolution::Unresolved);
}

// ---------------------------------------------------------------------------------------
// client state: fail closed

#[test]
fn client_rules_lifecycle() {
    let ctx = MatchContext { dns_servers: &DNS, hosts: &NoResolutions };
    let flow = tcp("1.1.1.1", 80);
    let mut client = ClientRules::new(Family::V4);
    assert!(matches!(client.status(), RulesStatus::NotCommitted));
    assert_eq!(client.evaluate(&flow, &ctx), Verdict::Drop(DropReason::NoRules));
    assert!(client.active().is_none());

    let good: [(&[u8], &[u8]); 2] = [(b"policy", b"drop"), (b"0000", b"action=accept")];
    client.commit(Family::V4, good).unwrap();
    assert!(matches!(client.status(), RulesStatus::Active(_)));
    assert_eq!(client.evaluate(&flow, &ctx), acc(0));

    // a bad commit replaces the good rules: everything dropped, the error kept
    let bad: [(&[u8], &[u8]); 3] = [(b"policy", b"drop"), (b"0000", b"action=accept"), (b"0001", b"action=maybe")];
    let err = client.commit(Family::V4, bad).unwrap_err();
    assert_eq!(err, RuleSetError { location: Location::Rule(num(1)), kind: ErrorKind::BadValue(Key::Action) });
    assert_eq!(client.evaluate(&flow, &ctx), Verdict::Drop(DropReason::InvalidRules));
    match client.status() {
        RulesStatus::Invalid(e) => {
            assert_eq!(e.to_string(), "rule 0001: invalid value for 'action'")
        }
        s => panic!("{s:?}"),
    }
    assert!(client.active().is_none());

    client.commit(Family::V4, good).unwrap();
    assert_eq!(client.evaluate(&flow, &ctx), acc(0));
    client.clear();
    assert_eq!(client.evaluate(&flow, &ctx), Verdict::Drop(DropReason::NoRules));
}

#[test]
fn failed_parse_leaves_an_empty_drop_set() {
    let mut set = rule_set(Family::V4, "accept", &["action=accept"]).unwrap();
    let bad: [(&[u8], &[u8]); 1] = [(b"0000", b"action=accept")];
    assert!(set.parse_into(Family::V4, bad).is_err());
    assert!(set.rules().is_empty());
    assert_eq!(set.policy(), Action::Drop);
    assert_eq!(eval(&set, tcp("1.1.1.1", 1)), DROP_POLICY);
}

// ---------------------------------------------------------------------------------------
// parse results

#[test]
fn parsed_fields() {
    let r = parse_rule(Family::V4, num(5), b"action=drop dst4=10.1.0.0/16 proto=tcp dstports=22-80").unwrap();
    assert_eq!(r.number, num(5));
    assert_eq!(r.action, Action::Drop);
    assert_eq!(r.destination, Destination::V4(Ipv4Prefix::new(Ipv4Addr::new(10, 1, 0, 0), 16).unwrap()));
    assert_eq!(r.proto, Some(Proto::Tcp));
    assert!(!r.special_dns);
    assert_eq!(r.dst_ports, PortRange::new(22, 80));
    assert_eq!(r.icmp_type, None);
    let r = parse_rule(Family::V4, num(0), b"action=accept dsthost=www.qubes-os.org proto=icmp icmptype=8").unwrap();
    assert_eq!(r.destination, Destination::Host("www.qubes-os.org"));
    assert_eq!(r.icmp_type, Some(8));
    let r = parse_rule(Family::V6, num(0), b"action=accept dst6=fd09:24ef:4179::a89:5/64").unwrap();
    let p = Ipv6Prefix::new("fd09:24ef:4179::".parse::<Ipv6Addr>().unwrap(), 64).unwrap();
    assert_eq!(r.destination, Destination::V6(p));
    assert_eq!(p.to_string(), "fd09:24ef:4179::/64");
    let r = parse_rule(Family::V4, num(0), b"action=accept specialtarget=dns").unwrap();
    assert!(r.special_dns);
    assert_eq!(num(7).to_string(), "0007");
    assert_eq!(PortRange::single(8).to_string(), "8-8");
    assert_eq!(Ipv4Prefix::new(Ipv4Addr::new(10, 1, 2, 3), 8).unwrap().to_string(), "10.0.0.0/8");
}

// ---------------------------------------------------------------------------------------
// parse errors, one table

fn rule_err(family: Family, text: &[u8]) -> ErrorKind {
    match parse_rule(family, num(0), text) {
        Ok(r) => panic!("{:?} parsed: {r:?}", String::from_utf8_lossy(text)),
        Err(e) => e,
    }
}

#[test]
fn rule_parse_errors() {
    use ErrorKind as E;
    use Key as K;
    let v4: &[(&str, ErrorKind)] = &[
        // structure
        ("", E::Empty),
        (" action=accept", E::EmptyField),
        ("action=accept ", E::EmptyField),
        ("action=accept  proto=tcp", E::EmptyField),
        ("action", E::MissingEquals),
        ("action=accept proto", E::MissingEquals),
        ("action=accept\tproto=tcp", E::BadCharacter { offset: 13 }),
        ("action=accept\n", E::BadCharacter { offset: 13 }),
        ("action=accept\0", E::BadCharacter { offset: 13 }),
        ("action=accept proto=tcp!", E::BadCharacter { offset: 23 }),
        ("action=accept dsthost=\"x\"", E::BadCharacter { offset: 22 }),
        ("action=accept foo=bar", E::UnknownKey(Snippet::new(b"foo"))),
        ("action=accept ACTION=accept", E::UnknownKey(Snippet::new(b"ACTION"))),
        ("action=accept =x", E::UnknownKey(Snippet::new(b""))),
        ("action=accept dstname=a.b", E::UnknownKey(Snippet::new(b"dstname"))),
        ("action=accept action=drop", E::DuplicateKey(K::Action)),
        ("action=accept proto=tcp proto=udp", E::DuplicateKey(K::Proto)),
        ("action=accept dpi=NO dpi=NO", E::DuplicateKey(K::Dpi)),
        ("action=accept dst4=1.1.1.1 dst4=1.1.1.1", E::DuplicateKey(K::Dst4)),
        ("action=accept dst4=1.1.1.1 dsthost=a.b", E::MultipleDestinations),
        ("action=accept dsthost=a.b dst4=1.1.1.1", E::MultipleDestinations),
        ("action=accept dsthost=a.b dsthost=a.b", E::DuplicateKey(K::DstHost)),
        ("proto=tcp", E::MissingAction),
        ("comment=action=accept", E::BadValue(K::Comment)),
        ("comment=just a comment", E::MissingAction),
        ("action=accept comment=a comment=b", E::BadValue(K::Comment)),
        ("action=accept comment=x=y", E::BadValue(K::Comment)),
        ("action=accept comment=x\ty", E::BadCharacter { offset: 23 }),
        // action
        ("action=", E::BadValue(K::Action)),
        ("action=ACCEPT", E::BadValue(K::Action)),
        ("action=reject", E::BadValue(K::Action)),
        ("action=accept=1", E::BadValue(K::Action)),
        // dst4
        ("action=accept dst4=", E::BadValue(K::Dst4)),
        ("action=accept dst4=1.2.3", E::BadValue(K::Dst4)),
        ("action=accept dst4=1.2.3.4.5", E::BadValue(K::Dst4)),
        ("action=accept dst4=256.1.1.1", E::BadValue(K::Dst4)),
        ("action=accept dst4=01.1.1.1", E::BadValue(K::Dst4)),
        ("action=accept dst4=1.1.1.1/33", E::BadValue(K::Dst4)),
        ("action=accept dst4=1.1.1.1/", E::BadValue(K::Dst4)),
        ("action=accept dst4=1.1.1.1/-1", E::BadValue(K::Dst4)),
        ("action=accept dst4=1.1.1.1/8/8", E::BadValue(K::Dst4)),
        ("action=accept dst4=1.1.1.1/99999999999999999999999", E::BadValue(K::Dst4)),
        ("action=accept dst4=a.b.c.d", E::BadValue(K::Dst4)),
        ("action=accept dst4=::1", E::BadValue(K::Dst4)),
        ("action=accept dst6=::1", E::WrongFamily(K::Dst6)),
        // dst6 (in a v4 set: syntax errors first)
        ("action=accept dst6=1.2.3.4", E::BadValue(K::Dst6)),
        ("action=accept dst6=:::", E::BadValue(K::Dst6)),
        // dsthost
        ("action=accept dsthost=", E::BadValue(K::DstHost)),
        ("action=accept dsthost=.", E::BadValue(K::DstHost)),
        ("action=accept dsthost=Example.com", E::BadValue(K::DstHost)),
        ("action=accept dsthost=a..b", E::BadValue(K::DstHost)),
        ("action=accept dsthost=.a.b", E::BadValue(K::DstHost)),
        ("action=accept dsthost=a.b..", E::BadValue(K::DstHost)),
        ("action=accept dsthost=a:b", E::BadValue(K::DstHost)),
        ("action=accept dsthost=a/b", E::BadValue(K::DstHost)),
        ("action=accept dsthost=1.2.3", E::BadValue(K::DstHost)),
        ("action=accept dsthost=a.123", E::BadValue(K::DstHost)),
        ("action=accept dsthost=1.2.3.4.", E::BadValue(K::DstHost)),
        // proto
        ("action=accept proto=", E::BadValue(K::Proto)),
        ("action=accept proto=TCP", E::BadValue(K::Proto)),
        ("action=accept proto=sctp", E::BadValue(K::Proto)),
        ("action=accept proto=6", E::BadValue(K::Proto)),
        ("action=accept proto=icmpv6", E::BadValue(K::Proto)),
        // specialtarget
        ("action=accept specialtarget=", E::BadValue(K::SpecialTarget)),
        ("action=accept specialtarget=DNS", E::BadValue(K::SpecialTarget)),
        ("action=accept specialtarget=ntp", E::BadValue(K::SpecialTarget)),
        // dstports
        ("action=accept proto=tcp dstports=", E::BadValue(K::DstPorts)),
        ("action=accept proto=tcp dstports=-", E::BadValue(K::DstPorts)),
        ("action=accept proto=tcp dstports=80-", E::BadValue(K::DstPorts)),
        ("action=accept proto=tcp dstports=-80", E::BadValue(K::DstPorts)),
        ("action=accept proto=tcp dstports=80-79", E::BadValue(K::DstPorts)),
        ("action=accept proto=tcp dstports=0-65536", E::BadValue(K::DstPorts)),
        ("action=accept proto=tcp dstports=65536", E::BadValue(K::DstPorts)),
        ("action=accept proto=tcp dstports=1-2-3", E::BadValue(K::DstPorts)),
        ("action=accept proto=tcp dstports=a-b", E::BadValue(K::DstPorts)),
        ("action=accept proto=tcp dstports=1,2", E::BadValue(K::DstPorts)),
        ("action=accept proto=tcp dstports=99999999999999999999999-1", E::BadValue(K::DstPorts)),
        ("action=accept dstports=80-80", E::PortsWithoutTcpOrUdp),
        ("action=accept proto=icmp dstports=80-80", E::PortsWithoutTcpOrUdp),
        ("action=accept dstports=80-80 proto=icmp", E::PortsWithoutTcpOrUdp),
        // icmptype
        ("action=accept proto=icmp icmptype=", E::BadValue(K::IcmpType)),
        ("action=accept proto=icmp icmptype=256", E::BadValue(K::IcmpType)),
        ("action=accept proto=icmp icmptype=-1", E::BadValue(K::IcmpType)),
        ("action=accept proto=icmp icmptype=echo", E::BadValue(K::IcmpType)),
        ("action=accept icmptype=8", E::IcmpTypeWithoutIcmp),
        ("action=accept proto=tcp icmptype=8", E::IcmpTypeWithoutIcmp),
        // dpi, expire
        ("action=accept dpi=YES", E::BadValue(K::Dpi)),
        ("action=accept dpi=no", E::BadValue(K::Dpi)),
        ("action=accept expire=", E::BadValue(K::Expire)),
        ("action=accept expire=-5", E::BadValue(K::Expire)),
        ("action=accept expire=1.5", E::BadValue(K::Expire)),
        ("action=accept expire=99999999999999999999999", E::BadValue(K::Expire)),
    ];
    for (text, want) in v4 {
        assert_eq!(rule_err(Family::V4, text.as_bytes()), *want, "rule {text:?}");
    }
    let v6: &[(&str, ErrorKind)] = &[
        ("action=accept dst4=1.1.1.1", E::WrongFamily(K::Dst4)),
        ("action=accept dsthost=1.1.1.1", E::WrongFamily(K::DstHost)),
        ("action=accept dst6=::1/129", E::BadValue(K::Dst6)),
        ("action=accept dst6=::1 dsthost=a.b", E::MultipleDestinations),
        ("action=accept dst6=::1%1", E::BadCharacter { offset: 22 }),
        ("action=accept dst6=2001:db8::g", E::BadValue(K::Dst6)),
    ];
    for (text, want) in v6 {
        assert_eq!(rule_err(Family::V6, text.as_bytes()), *want, "rule {text:?}");
    }
}

#[test]
fn non_ascii_and_overlong() {
    assert_eq!(rule_err(Family::V4, "action=accept comment=café".as_bytes()), ErrorKind::NotAscii { offset: 25 });
    assert_eq!(rule_err(Family::V4, b"action=accept\xff"), ErrorKind::NotAscii { offset: 13 });
    assert_eq!(rule_err(Family::V4, b"\x80"), ErrorKind::NotAscii { offset: 0 });
    // exactly the limit is fine, one more is not
    let mut long = String::from("action=accept comment=");
    while long.len() < MAX_RULE_LEN {
        long.push('x');
    }
    assert!(parse_rule(Family::V4, num(0), long.as_bytes()).is_ok());
    long.push('x');
    assert_eq!(rule_err(Family::V4, long.as_bytes()), ErrorKind::TooLong);
    // dsthost name length: 253 ok, 254 not; labels up to 63
    let label63 = "a".repeat(63);
    let name253 = format!("{label63}.{label63}.{label63}.{}", "b".repeat(61));
    assert_eq!(name253.len(), 253);
    assert!(parse_rule(Family::V4, num(0), format!("action=accept dsthost={name253}").as_bytes()).is_ok());
    assert!(parse_rule(Family::V4, num(0), format!("action=accept dsthost={name253}.").as_bytes()).is_ok());
    let name254 = format!("{name253}c");
    assert_eq!(
        rule_err(Family::V4, format!("action=accept dsthost={name254}").as_bytes()),
        ErrorKind::BadValue(Key::DstHost)
    );
    let label64 = "a".repeat(64);
    assert_eq!(
        rule_err(Family::V4, format!("action=accept dsthost={label64}.com").as_bytes()),
        ErrorKind::BadValue(Key::DstHost)
    );
    // unknown keys are reported truncated
    let e = rule_err(Family::V4, b"action=accept averyveryverylongunknownkey=1");
    assert_eq!(e.to_string(), "unknown key 'averyveryverylon...'");
}

/// A QubesDB entry: key under `/qubes-firewall/<ip>/`, value.
type Entry<'a> = (&'a [u8], &'a [u8]);

fn set_err(entries: &[Entry]) -> RuleSetError {
    RuleSet::parse(Family::V4, entries.iter().copied()).unwrap_err()
}

#[test]
fn rule_set_errors() {
    use ErrorKind as E;
    let at = |n| Location::Rule(num(n));
    let cases: &[(&[Entry], Location, ErrorKind)] = &[
        (&[], Location::RuleSet, E::MissingPolicy),
        (&[(b"0000", b"action=accept")], Location::RuleSet, E::MissingPolicy),
        (&[(b"policy", b"")], Location::Policy, E::BadPolicy),
        (&[(b"policy", b"reject")], Location::Policy, E::BadPolicy),
        (&[(b"policy", b"Drop")], Location::Policy, E::BadPolicy),
        (&[(b"policy", b"drop "), (b"0000", b"action=accept")], Location::Policy, E::BadPolicy),
        (&[(b"policy", b"drop"), (b"policy", b"drop")], Location::Policy, E::DuplicatePolicy),
        (
            &[(b"policy", b"drop"), (b"000", b"action=accept")],
            Location::RuleSet,
            E::UnexpectedEntry(Snippet::new(b"000")),
        ),
        (
            &[(b"policy", b"drop"), (b"00000", b"action=accept")],
            Location::RuleSet,
            E::UnexpectedEntry(Snippet::new(b"00000")),
        ),
        (
            &[(b"policy", b"drop"), (b"000a", b"action=accept")],
            Location::RuleSet,
            E::UnexpectedEntry(Snippet::new(b"000a")),
        ),
        (&[(b"policy", b"drop"), (b"", b"action=accept")], Location::RuleSet, E::UnexpectedEntry(Snippet::new(b""))),
        (&[(b"policy", b"drop"), (b"0001/x", b"")], Location::RuleSet, E::UnexpectedEntry(Snippet::new(b"0001/x"))),
        (&[(b"policy", b"drop"), (b"\xff\x00", b"")], Location::RuleSet, E::UnexpectedEntry(Snippet::new(b"??"))),
        (&[(b"policy", b"drop"), (b"0002", b"action=accept"), (b"0002", b"action=drop")], at(2), E::DuplicateRule),
        (&[(b"policy", b"drop"), (b"0000", b"action=accept"), (b"0003", b"")], at(3), E::Empty),
        (&[(b"policy", b"drop"), (b"0042", b"proto=tcp")], at(42), E::MissingAction),
    ];
    for (entries, loc, kind) in cases {
        let e = set_err(entries);
        assert_eq!((e.location, e.kind), (*loc, *kind), "entries {entries:?}");
    }
}

#[test]
fn capacity_errors() {
    // rules
    let keys: Vec<String> = (0..=MAX_RULES_PER_CLIENT).map(|i| format!("{i:04}")).collect();
    let mut entries: Vec<(&[u8], &[u8])> = vec![(b"policy", b"drop")];
    entries.extend(keys.iter().take(MAX_RULES_PER_CLIENT).map(|k| (k.as_bytes(), &b"action=accept"[..])));
    assert_eq!(RuleSet::parse(Family::V4, entries.iter().copied()).unwrap().rules().len(), MAX_RULES_PER_CLIENT);
    entries.push((keys[MAX_RULES_PER_CLIENT].as_bytes(), b"action=accept"));
    assert_eq!(RuleSet::parse(Family::V4, entries).unwrap_err().kind, ErrorKind::TooManyRules);
    // distinct hosts
    let rules: Vec<String> =
        (0..=MAX_HOSTS_PER_CLIENT).map(|i| format!("action=accept dsthost=h{i}.example")).collect();
    let refs: Vec<&str> = rules.iter().map(String::as_str).collect();
    assert!(rule_set(Family::V4, "drop", &refs[..MAX_HOSTS_PER_CLIENT]).is_ok());
    let e = rule_set(Family::V4, "drop", &refs).unwrap_err();
    assert_eq!(e.kind, ErrorKind::TooManyHosts);
    assert_eq!(e.location, Location::Rule(num(MAX_HOSTS_PER_CLIENT as u16)));
    // name bytes
    let per = HOST_NAME_BYTES_PER_CLIENT / MAX_HOSTS_PER_CLIENT + 1;
    let rules: Vec<String> = (0..MAX_HOSTS_PER_CLIENT)
        .map(|i| format!("action=accept dsthost={:0>40}.{:0>width$}", i, "x", width = per - 41))
        .collect();
    let refs: Vec<&str> = rules.iter().map(String::as_str).collect();
    assert_eq!(rule_set(Family::V4, "drop", &refs).unwrap_err().kind, ErrorKind::HostNamesTooLong);
}

#[test]
fn error_display() {
    let e = set_err(&[(b"policy", b"drop"), (b"0012", b"action=accept proto=tcp dstports=1-0")]);
    assert_eq!(e.to_string(), "rule 0012: invalid value for 'dstports'");
    assert_eq!(set_err(&[]).to_string(), "rule set: no 'policy'");
    assert_eq!(set_err(&[(b"policy", b"x")]).to_string(), "policy: invalid policy");
    assert_eq!(
        DropReason::HostUnresolved { rule: num(3), host: HostId(1) }.to_string(),
        "rule 0003: dsthost #1 not resolved yet"
    );
    // every kind has a message
    for k in Key::ALL {
        assert!(!ErrorKind::BadValue(k).to_string().is_empty());
        assert_eq!(Key::from_name(k.name().as_bytes()), Some(k));
    }
}

// ---------------------------------------------------------------------------------------
// properties

fn rule_text() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        Just("action=accept".to_string()),
        Just("action=drop".to_string()),
        "dst4=[0-9./]{0,20}",
        "dst6=[0-9a-f:./]{0,45}",
        "dsthost=[a-z0-9._-]{0,20}",
        Just("proto=tcp".to_string()),
        Just("proto=udp".to_string()),
        Just("proto=icmp".to_string()),
        "proto=[a-z]{0,5}",
        Just("specialtarget=dns".to_string()),
        "dstports=[0-9-]{0,13}",
        "icmptype=[0-9]{0,4}",
        Just("dpi=NO".to_string()),
        "expire=[0-9]{0,22}",
        "comment=[ -~]{0,20}",
        "[ -~]{0,12}",
    ];
    proptest::collection::vec(field, 0..8).prop_map(|v| v.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parser_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_rule(Family::V4, num(0), &bytes);
        let _ = parse_rule(Family::V6, num(0), &bytes);
        let _ = RuleSet::parse(Family::V4, [(&b"policy"[..], &b"drop"[..]), (&bytes[..], &bytes[..])]);
    }

    #[test]
    fn parser_never_panics_on_grammar_like_text(text in rule_text()) {
        for family in [Family::V4, Family::V6] {
            if let Ok(rule) = parse_rule(family, num(1), text.as_bytes()) {
                // whatever parses satisfies the combination rules
                if rule.dst_ports.is_some() {
                    prop_assert!(matches!(rule.proto, Some(Proto::Tcp | Proto::Udp)));
                }
                if rule.icmp_type.is_some() {
                    prop_assert_eq!(rule.proto, Some(Proto::Icmp));
                }
                // and evaluates without panicking
                let set = RuleSet::parse(family, [(&b"policy"[..], &b"drop"[..]), (&b"0001"[..], text.as_bytes())]).unwrap();
                let dst = if family == Family::V4 { ip("10.139.1.1") } else { ip("fd00::1") };
                for flow in [Flow::new(dst, 6, 53, 0), Flow::new(dst, 17, 80, 0), Flow::new(dst, 1, 0, 8), Flow::new(dst, 58, 0, 128)] {
                    let _ = eval(&set, flow);
                }
            }
        }
    }

    #[test]
    fn dst4_prefix_matches_like_a_mask(addr in any::<u32>(), len in 0u8..=32, probe in any::<u32>()) {
        let set = rule_set(Family::V4, "drop", &[&format!("action=accept dst4={}/{len}", Ipv4Addr::from_bits(addr))]).unwrap();
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
        let want = if probe & mask == addr & mask { acc(0) } else { DROP_POLICY };
        prop_assert_eq!(eval(&set, tcp(&Ipv4Addr::from_bits(probe).to_string(), 1)), want);
        prop_assert_eq!(eval(&set, tcp(&Ipv4Addr::from_bits(addr).to_string(), 1)), acc(0));
    }

    #[test]
    fn dst6_prefix_matches_like_a_mask(addr in any::<u128>(), len in 0u8..=128, probe in any::<u128>()) {
        let set = rule_set(Family::V6, "drop", &[&format!("action=accept dst6={}/{len}", Ipv6Addr::from_bits(addr))]).unwrap();
        let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
        let want = if probe & mask == addr & mask { acc(0) } else { DROP_POLICY };
        let flow = Flow::new(IpAddr::V6(Ipv6Addr::from_bits(probe)), IPPROTO_TCP, 1, 0);
        prop_assert_eq!(eval(&set, flow), want);
    }

    #[test]
    fn port_range_is_inclusive(lo in any::<u16>(), hi in any::<u16>(), port in any::<u16>()) {
        let text = format!("action=accept proto=udp dstports={lo}-{hi}");
        match rule_set(Family::V4, "drop", &[&text]) {
            Ok(set) => {
                prop_assert!(lo <= hi);
                let want = if lo <= port && port <= hi { acc(0) } else { DROP_POLICY };
                prop_assert_eq!(eval(&set, udp("1.1.1.1", port)), want);
            }
            Err(e) => {
                prop_assert!(lo > hi);
                prop_assert_eq!(e.kind, ErrorKind::BadValue(Key::DstPorts));
            }
        }
    }
}

#[test]
fn sizes_stay_small() {
    use core::mem::size_of;
    // Documented in the report / config: a rule is a few dozen bytes, a client's rule set
    // (256 rules + 4 KiB of names) about 16 KiB.
    assert!(size_of::<Rule>() <= 40, "Rule is {} bytes", size_of::<Rule>());
    assert!(size_of::<Verdict>() <= 8, "Verdict is {} bytes", size_of::<Verdict>());
    assert!(size_of::<RuleSetError>() <= 24, "RuleSetError is {} bytes", size_of::<RuleSetError>());
    std::println!(
        "Rule {} B, RuleSet {} B, ClientRules {} B, HostTable {} B, Verdict {} B",
        size_of::<Rule>(),
        size_of::<RuleSet>(),
        size_of::<ClientRules>(),
        size_of::<HostTable>(),
        size_of::<Verdict>()
    );
}

// ---------------------------------------------------------------------------------------
// differential test against a direct transcription of Linux `qubes-firewall`'s nftables
// translation (qubes-protocols.md §5.3), for rules without dsthost

#[derive(Clone, Debug)]
struct Spec {
    accept: bool,
    dst4: Option<(u32, u8)>,
    proto: Option<u8>,
    dns: bool,
    ports: Option<(u16, u16)>,
    icmp_type: Option<u8>,
}

impl Spec {
    /// The rule as dom0 writes it (key order of `Rule.rule`).
    fn render(&self) -> String {
        let mut s = String::from(if self.accept { "action=accept" } else { "action=drop" });
        if let Some((a, len)) = self.dst4 {
            s += &format!(" dst4={}/{len}", Ipv4Addr::from_bits(a));
        }
        if let Some(p) = self.proto {
            s += match p {
                6 => " proto=tcp",
                17 => " proto=udp",
                _ => " proto=icmp",
            };
        }
        if self.dns {
            s += " specialtarget=dns";
        }
        if let Some((lo, hi)) = self.ports {
            s += &format!(" dstports={lo}-{hi}");
        }
        if let Some(t) = self.icmp_type {
            s += &format!(" icmptype={t}");
        }
        s
    }

    /// nft: `ip protocol P ip daddr D [ip daddr @dns] tcp|udp dport X icmp type T`.
    fn linux_matches(&self, dst: u32, proto: u8, port: u16, ty: u8, dns: &[u32]) -> bool {
        let mut ports = self.ports;
        if self.dns {
            if ports.is_some_and(|p| p != (53, 53)) || dns.is_empty() {
                return false; // rule skipped
            }
            ports = Some((53, 53));
            if !dns.contains(&dst) {
                return false;
            }
        }
        if self.proto.is_some_and(|p| p != proto) {
            return false;
        }
        if let Some((a, len)) = self.dst4 {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            if dst & mask != a & mask {
                return false;
            }
        }
        if let Some((lo, hi)) = ports {
            // without proto: duplicated as a tcp and a udp rule
            if !(proto == 6 || proto == 17) || port < lo || port > hi {
                return false;
            }
        }
        if let Some(t) = self.icmp_type
            && (proto != 1 || ty != t)
        {
            return false;
        }
        true
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    let addr = prop_oneof![Just(0x0a8b_0101u32), Just(0x0102_0304u32), any::<u32>()];
    let port = prop_oneof![Just(53u16), Just(80u16), any::<u16>()];
    (
        any::<bool>(),
        proptest::option::of((addr, 0u8..=32)),
        proptest::option::of(prop_oneof![Just(6u8), Just(17u8), Just(1u8)]),
        any::<bool>(),
        proptest::option::of((port.clone(), port)),
        proptest::option::of(prop_oneof![Just(0u8), Just(8u8), any::<u8>()]),
    )
        .prop_map(|(accept, dst4, proto, dns, ports, icmp_type)| Spec {
            accept,
            dst4,
            proto,
            dns,
            // only the combinations dom0 allows
            ports: ports.filter(|_| matches!(proto, Some(6 | 17))).map(|(a, b)| (a.min(b), a.max(b))),
            icmp_type: icmp_type.filter(|_| proto == Some(1)),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn agrees_with_linux_translation(
        specs in proptest::collection::vec(spec(), 0..6),
        policy_accept in any::<bool>(),
        dst in prop_oneof![Just(0x0a8b_0101u32), Just(0x0a8b_0102u32), Just(0x0102_0304u32), any::<u32>()],
        proto in prop_oneof![Just(6u8), Just(17u8), Just(1u8), Just(47u8)],
        port in prop_oneof![Just(53u16), Just(80u16), any::<u16>()],
        ty in prop_oneof![Just(0u8), Just(8u8), any::<u8>()],
        with_dns in any::<bool>(),
    ) {
        let texts: Vec<String> = specs.iter().map(Spec::render).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let set = rule_set(Family::V4, if policy_accept { "accept" } else { "drop" }, &refs).unwrap();
        let dns_u32: &[u32] = if with_dns { &[0x0a8b_0101, 0x0a8b_0102] } else { &[] };
        let dns_ip: Vec<IpAddr> = dns_u32.iter().map(|&a| IpAddr::V4(Ipv4Addr::from_bits(a))).collect();
        let flow = Flow::new(IpAddr::V4(Ipv4Addr::from_bits(dst)), proto, port, ty);
        let got = set.evaluate(&flow, &MatchContext { dns_servers: &dns_ip, hosts: &NoResolutions });
        let want = specs
            .iter()
            .position(|s| s.linux_matches(dst, proto, port, ty, dns_u32))
            .map(|i| {
                let n = num(u16::try_from(i).unwrap());
                if specs[i].accept { Verdict::Accept(AcceptedBy::Rule(n)) } else { Verdict::Drop(DropReason::Rule(n)) }
            })
            .unwrap_or(if policy_accept { ACCEPT_POLICY } else { DROP_POLICY });
        prop_assert_eq!(got, want, "rules {:?}", texts);
    }
}
