//! The rule model: what one parsed Qubes firewall rule and one client's rule set are.
//!
//! Everything here is decided when a rule set is committed; the matcher
//! ([`super::matcher`]) only compares integers.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use heapless::{String, Vec};

use crate::config::{HOST_NAME_BYTES_PER_CLIENT, MAX_HOSTS_PER_CLIENT, MAX_RULES_PER_CLIENT};

/// Address family of a rule set: dom0 writes one rule set per client address, under
/// `/qubes-firewall/<client IPv4>/` and (with the `ipv6` feature) `/qubes-firewall/<client
/// IPv6>/`, and each holds only the rules of its family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// The rule set of a client's IPv4 address (`dst6=` rules are refused in it).
    V4,
    /// The rule set of a client's IPv6 address (`dst4=` rules are refused in it).
    V6,
}

impl Family {
    /// The family of an address.
    #[must_use]
    pub const fn of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// What a rule (or the policy) does with a flow it matches.
///
/// `Drop` is tag 0 so that an empty rule set (policy `drop`) is all zero bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Action {
    /// `action=accept`: forward the flow.
    Accept = 1,
    /// `action=drop`: refuse the flow and answer with ICMP administratively prohibited, as
    /// Linux `sys-firewall` does (`reject with icmp type admin-prohibited`).
    Drop = 0,
}

/// `proto=`: the transport protocol a rule is restricted to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    /// `proto=tcp` (IP protocol 6).
    Tcp,
    /// `proto=udp` (IP protocol 17).
    Udp,
    /// `proto=icmp`: ICMP (protocol 1) in an IPv4 rule set, ICMPv6 (next header 58) in an
    /// IPv6 rule set, as Linux translates it.
    Icmp,
}

/// A rule's number: the 4-digit QubesDB key (`0000`–`9999`) it was stored under. Rules are
/// evaluated in increasing number; numbering may have gaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleNumber(u16);

impl RuleNumber {
    /// Largest rule number (the key `9999`).
    pub const MAX: u16 = 9999;

    /// The rule number `n`, if it fits four decimal digits.
    #[must_use]
    pub const fn new(n: u16) -> Option<Self> {
        if n <= Self::MAX { Some(Self(n)) } else { None }
    }

    /// The number as an integer.
    #[must_use]
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for RuleNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.0)
    }
}

/// An IPv4 network (`dst4=a.b.c.d/n`). Host bits of the written address are cleared, as
/// nftables and iptables do (`10.1.2.3/8` is `10.0.0.0/8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Prefix {
    net: u32,
    len: u8,
}

impl Ipv4Prefix {
    /// The network of `addr` with prefix length `len`; `None` if `len > 32`.
    #[must_use]
    pub const fn new(addr: Ipv4Addr, len: u8) -> Option<Self> {
        if len > 32 {
            return None;
        }
        Some(Self { net: addr.to_bits() & Self::mask(len), len })
    }

    const fn mask(len: u8) -> u32 {
        if len == 0 { 0 } else { u32::MAX << (32 - len as u32) }
    }

    /// The network address (host bits cleared).
    #[must_use]
    pub const fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.net)
    }

    /// The prefix length, 0–32.
    #[must_use]
    pub const fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether `addr` is in this network.
    #[must_use]
    pub const fn contains(&self, addr: Ipv4Addr) -> bool {
        addr.to_bits() & Self::mask(self.len) == self.net
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.len)
    }
}

/// An IPv6 network (`dst6=…/n`), host bits cleared like [`Ipv4Prefix`]. (Stored as bytes,
/// not `u128`, so that a [`Rule`] stays small and byte-aligned.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv6Prefix {
    net: Ipv6Addr,
    len: u8,
}

impl Ipv6Prefix {
    /// The network of `addr` with prefix length `len`; `None` if `len > 128`.
    #[must_use]
    pub const fn new(addr: Ipv6Addr, len: u8) -> Option<Self> {
        if len > 128 {
            return None;
        }
        Some(Self { net: Ipv6Addr::from_bits(addr.to_bits() & Self::mask(len)), len })
    }

    const fn mask(len: u8) -> u128 {
        if len == 0 { 0 } else { u128::MAX << (128 - len as u32) }
    }

    /// The network address (host bits cleared).
    #[must_use]
    pub const fn network(&self) -> Ipv6Addr {
        self.net
    }

    /// The prefix length, 0–128.
    #[must_use]
    pub const fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether `addr` is in this network.
    #[must_use]
    pub const fn contains(&self, addr: Ipv6Addr) -> bool {
        addr.to_bits() & Self::mask(self.len) == self.net.to_bits()
    }
}

impl fmt::Display for Ipv6Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.len)
    }
}

/// `dstports=lo-hi`: an inclusive range of destination ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    lo: u16,
    hi: u16,
}

impl PortRange {
    /// The ports `lo..=hi`; `None` if `lo > hi`.
    #[must_use]
    pub const fn new(lo: u16, hi: u16) -> Option<Self> {
        if lo <= hi { Some(Self { lo, hi }) } else { None }
    }

    /// The single port `port..=port`.
    #[must_use]
    pub const fn single(port: u16) -> Self {
        Self { lo: port, hi: port }
    }

    /// First port of the range.
    #[must_use]
    pub const fn lo(&self) -> u16 {
        self.lo
    }

    /// Last port of the range (inclusive).
    #[must_use]
    pub const fn hi(&self) -> u16 {
        self.hi
    }

    /// Whether `port` is in the range.
    #[must_use]
    pub const fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.lo, self.hi)
    }
}

/// Index of a `dsthost=` name in its rule set ([`RuleSet::host_name`]); the resolution of
/// that name is looked up by this index at match time ([`super::HostResolutions`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(pub(crate) u16);

impl HostId {
    /// The index (0-based, below [`RuleSet::host_count`]).
    #[must_use]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// A rule's destination predicate (at most one of `dst4`, `dst6`, `dsthost` per rule).
///
/// `H` is how a `dsthost` name is held: `&str` for a rule parsed on its own
/// ([`super::parse_rule`]), [`HostId`] inside a [`RuleSet`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Destination<H = HostId> {
    /// No destination key: any destination.
    Any,
    /// `dst4=`.
    V4(Ipv4Prefix),
    /// `dst6=`.
    V6(Ipv6Prefix),
    /// `dsthost=` with a DNS name: matches the name's A and AAAA addresses once resolved.
    /// (A `dsthost` that is an IPv4 literal becomes [`Destination::V4`] `/32`, as
    /// `getaddrinfo` would resolve it to itself.)
    Host(H),
}

/// One parsed rule. All predicates that are present must match (logical AND).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rule<H = HostId> {
    /// QubesDB key the rule came from (evaluation order).
    pub number: RuleNumber,
    /// `action=`.
    pub action: Action,
    /// `dst4=` / `dst6=` / `dsthost=`.
    pub destination: Destination<H>,
    /// `proto=`.
    pub proto: Option<Proto>,
    /// `specialtarget=dns`: TCP and UDP port 53 to the DNS servers (restricted further by
    /// `proto`, `dstports` and the destination when they are given, as Linux does).
    pub special_dns: bool,
    /// `dstports=` (only with `proto=tcp|udp`).
    pub dst_ports: Option<PortRange>,
    /// `icmptype=` (only with `proto=icmp`).
    pub icmp_type: Option<u8>,
}

#[derive(Clone, Copy, Debug)]
struct HostSpan {
    start: u16,
    len: u16,
}

/// One client's committed rule set for one address family: a policy and up to
/// [`MAX_RULES_PER_CLIENT`] rules sorted by number, plus the distinct `dsthost` names the
/// rules refer to.
///
/// Built by [`RuleSet::parse`] / [`RuleSet::parse_into`]; a rule set whose parse failed is
/// left empty with policy `drop`, so evaluating it drops everything.
#[derive(Clone, Debug)]
pub struct RuleSet {
    pub(crate) family: Family,
    pub(crate) policy: Action,
    pub(crate) rules: Vec<Rule, MAX_RULES_PER_CLIENT>,
    hosts: Vec<HostSpan, MAX_HOSTS_PER_CLIENT>,
    names: String<HOST_NAME_BYTES_PER_CLIENT>,
}

/// Why a `dsthost` name could not be added to a rule set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InternError {
    TooManyHosts,
    NamesFull,
}

impl RuleSet {
    /// An empty rule set of `family` with policy `drop` (drops everything).
    #[must_use]
    pub const fn new(family: Family) -> Self {
        Self { family, policy: Action::Drop, rules: Vec::new(), hosts: Vec::new(), names: String::new() }
    }

    /// Empties the rule set (policy `drop`), keeping `family`.
    pub(crate) fn reset(&mut self, family: Family) {
        self.family = family;
        self.policy = Action::Drop;
        self.rules.clear();
        self.hosts.clear();
        self.names.clear();
    }

    /// Address family the rule set applies to.
    #[must_use]
    pub const fn family(&self) -> Family {
        self.family
    }

    /// The `policy` key: what happens to a flow no rule matches.
    #[must_use]
    pub const fn policy(&self) -> Action {
        self.policy
    }

    /// The rules, in evaluation (number) order.
    #[must_use]
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Number of distinct `dsthost` names; their ids are `0..host_count()`.
    #[must_use]
    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// The DNS name of a `dsthost` (lower case, without a trailing dot); `None` for an id not
    /// of this rule set.
    #[must_use]
    pub fn host_name(&self, id: HostId) -> Option<&str> {
        let span = self.hosts.get(id.index())?;
        let start = usize::from(span.start);
        self.names.get(start..start + usize::from(span.len))
    }

    /// The `dsthost` names with their ids, for the resolver to resolve.
    pub fn hosts(&self) -> impl Iterator<Item = (HostId, &str)> + '_ {
        (0..self.hosts.len()).filter_map(|i| {
            let id = HostId(u16::try_from(i).ok()?);
            Some((id, self.host_name(id)?))
        })
    }

    /// The id of `name`, adding it if new.
    pub(crate) fn intern(&mut self, name: &str) -> Result<HostId, InternError> {
        if let Some((id, _)) = self.hosts().find(|(_, n)| *n == name) {
            return Ok(id);
        }
        let id = u16::try_from(self.hosts.len()).map_err(|_| InternError::TooManyHosts)?;
        let start = u16::try_from(self.names.len()).map_err(|_| InternError::NamesFull)?;
        let len = u16::try_from(name.len()).map_err(|_| InternError::NamesFull)?;
        if self.hosts.is_full() {
            return Err(InternError::TooManyHosts);
        }
        self.names.push_str(name).map_err(|()| InternError::NamesFull)?;
        self.hosts.push(HostSpan { start, len }).map_err(|_| InternError::TooManyHosts)?;
        Ok(HostId(id))
    }
}
