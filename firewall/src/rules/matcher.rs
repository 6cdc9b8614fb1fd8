//! Evaluating a flow's first packet against a client's rule set.
//!
//! Rules are tried in number order and the first that matches decides; the policy decides
//! when none does. Matching compares integers only: all text was parsed at commit time.
//!
//! ## Fail closed
//!
//! - No committed rule set → [`DropReason::NoRules`] (silent, like the `policy drop` of
//!   Linux's forward chain for a source without a chain).
//! - A rule set that failed to parse → [`DropReason::InvalidRules`] (Linux replaces it with
//!   one `drop` rule, so the drop is answered with admin-prohibited).
//! - A `dsthost` whose addresses are not known (not yet resolved, resolution failed, or an
//!   incomplete address list that does not contain the destination): the rule can neither be
//!   said to match nor not to match. For a `drop` rule the flow is dropped at once
//!   ([`DropReason::HostUnresolved`], …). For an `accept` rule evaluation continues: a later
//!   `accept` may still accept (the unknown rule would at most have accepted too), but a later
//!   `drop` or the policy reports the unknown host as the reason. Linux resolves at load time
//!   and drops *all* of the client's traffic when a name fails; this never accepts a flow
//!   Linux would refuse with the names resolved, and keeps unrelated traffic working.

use core::fmt;
use core::net::IpAddr;

use heapless::Vec;

use super::error::RuleSetError;
use super::model::{Action, Destination, Family, HostId, Proto, Rule, RuleNumber, RuleSet};
use crate::config::{MAX_ADDRS_PER_HOST, MAX_HOSTS_PER_CLIENT};

/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IP protocol number of ICMP (IPv4).
pub const IPPROTO_ICMP: u8 = 1;
/// Next-header number of ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;

/// The transport part of a flow, as far as the rules look at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// TCP to this destination port.
    Tcp {
        /// Destination port.
        dst_port: u16,
    },
    /// UDP to this destination port.
    Udp {
        /// Destination port.
        dst_port: u16,
    },
    /// ICMP (in IPv4) or ICMPv6 (in IPv6) of this type.
    Icmp {
        /// ICMP type.
        icmp_type: u8,
    },
    /// Any other protocol (matches only rules without `proto`).
    Other {
        /// IP protocol / next-header number.
        protocol: u8,
    },
}

/// What the rules see of a new flow (its first packet, reassembled if it was fragmented).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    /// Destination address (before NAT).
    pub dst: IpAddr,
    /// Protocol and destination port or ICMP type.
    pub transport: Transport,
}

impl Flow {
    /// A flow from header fields: `protocol` is the IP protocol / final next-header number;
    /// `dst_port` is used for TCP and UDP, `icmp_type` for ICMP of the destination's family
    /// (protocol 1 to an IPv4 address, 58 to an IPv6 address); other values are ignored.
    #[must_use]
    pub const fn new(dst: IpAddr, protocol: u8, dst_port: u16, icmp_type: u8) -> Self {
        let transport = match (protocol, &dst) {
            (IPPROTO_TCP, _) => Transport::Tcp { dst_port },
            (IPPROTO_UDP, _) => Transport::Udp { dst_port },
            (IPPROTO_ICMP, IpAddr::V4(_)) | (IPPROTO_ICMPV6, IpAddr::V6(_)) => Transport::Icmp { icmp_type },
            _ => Transport::Other { protocol },
        };
        Self { dst, transport }
    }
}

/// What is known of a `dsthost` name's addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution<'a> {
    /// Not resolved yet (the first query is under way, or was never sent).
    Unresolved,
    /// Resolution failed (no answer, an error, or a name with no address of either family)
    /// and no earlier addresses are still valid.
    Failed,
    /// The name's A and AAAA addresses.
    Resolved {
        /// The addresses (either family; only those of the flow's family can match).
        addrs: &'a [IpAddr],
        /// `false` if the answer had more addresses than could be kept
        /// ([`MAX_ADDRS_PER_HOST`]).
        complete: bool,
    },
}

/// Where the matcher gets `dsthost` addresses from: indexed by the [`HostId`]s of the rule
/// set being evaluated ([`RuleSet::hosts`] lists them with their names).
pub trait HostResolutions {
    /// What is known of host `id`. An id the source does not know must give
    /// [`Resolution::Unresolved`] (never a match).
    fn resolution(&self, id: HostId) -> Resolution<'_>;
}

/// No host is resolved (for rule sets without `dsthost`, and before the resolver runs).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoResolutions;

impl HostResolutions for NoResolutions {
    fn resolution(&self, _id: HostId) -> Resolution<'_> {
        Resolution::Unresolved
    }
}

#[derive(Clone, Copy, Debug)]
enum HostState {
    Unresolved,
    Failed,
    Resolved { complete: bool },
}

#[derive(Clone, Debug)]
struct HostEntry {
    state: HostState,
    addrs: Vec<IpAddr, MAX_ADDRS_PER_HOST>,
}

impl HostEntry {
    const UNRESOLVED: Self = Self { state: HostState::Unresolved, addrs: Vec::new() };
}

/// A fixed-size table of resolutions for one rule set's hosts (entry `i` is [`HostId`] `i`).
/// Every entry starts [`Resolution::Unresolved`].
#[derive(Clone, Debug)]
pub struct HostTable {
    entries: Vec<HostEntry, MAX_HOSTS_PER_CLIENT>,
}

impl Default for HostTable {
    fn default() -> Self {
        Self::new()
    }
}

impl HostTable {
    /// An empty table (every id unresolved).
    #[must_use]
    pub const fn new() -> Self {
        Self { entries: Vec::new() }
    }

    /// Forgets everything (after a new rule set was committed: ids changed meaning).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    fn entry(&mut self, id: HostId) -> Option<&mut HostEntry> {
        while self.entries.len() <= id.index() {
            self.entries.push(HostEntry::UNRESOLVED).ok()?;
        }
        self.entries.get_mut(id.index())
    }

    /// Records the addresses of `id` (duplicates are kept once); addresses beyond
    /// [`MAX_ADDRS_PER_HOST`] are not kept and mark the resolution incomplete. An empty list
    /// is recorded as a failure. Ignored for an id beyond [`MAX_HOSTS_PER_CLIENT`] (which no
    /// rule set has).
    pub fn set_resolved<I: IntoIterator<Item = IpAddr>>(&mut self, id: HostId, addrs: I) {
        let Some(e) = self.entry(id) else { return };
        e.addrs.clear();
        let mut complete = true;
        for addr in addrs {
            if !e.addrs.contains(&addr) && e.addrs.push(addr).is_err() {
                complete = false;
            }
        }
        e.state = if e.addrs.is_empty() { HostState::Failed } else { HostState::Resolved { complete } };
    }

    /// Records that resolving `id` failed.
    pub fn set_failed(&mut self, id: HostId) {
        if let Some(e) = self.entry(id) {
            e.state = HostState::Failed;
            e.addrs.clear();
        }
    }

    /// Records that `id` is not resolved (e.g. its addresses expired).
    pub fn set_unresolved(&mut self, id: HostId) {
        if let Some(e) = self.entry(id) {
            e.state = HostState::Unresolved;
            e.addrs.clear();
        }
    }
}

impl HostResolutions for HostTable {
    fn resolution(&self, id: HostId) -> Resolution<'_> {
        let Some(e) = self.entries.get(id.index()) else {
            return Resolution::Unresolved;
        };
        match e.state {
            HostState::Unresolved => Resolution::Unresolved,
            HostState::Failed => Resolution::Failed,
            HostState::Resolved { complete } => Resolution::Resolved { addrs: &e.addrs, complete },
        }
    }
}

/// What a rule set is evaluated with besides the flow.
#[derive(Clone, Copy, Debug)]
pub struct MatchContext<'a, R: ?Sized> {
    /// Addresses `specialtarget=dns` stands for: the client's DNS servers
    /// (`/qubes-primary-dns`, `/qubes-secondary-dns`). Empty: `specialtarget=dns` rules match
    /// nothing (as Linux skips them).
    pub dns_servers: &'a [IpAddr],
    /// Addresses of the rule set's `dsthost` names.
    pub hosts: &'a R,
}

/// Who accepted a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AcceptedBy {
    /// This `action=accept` rule.
    Rule(RuleNumber),
    /// No rule matched and the policy is `accept`.
    Policy,
}

/// Why a flow is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// This `action=drop` rule matched.
    Rule(RuleNumber),
    /// No rule matched and the policy is `drop`.
    Policy,
    /// The client has no committed rule set.
    NoRules,
    /// The client's rule set failed to parse ([`ClientRules::status`] has the error).
    InvalidRules,
    /// Rule `rule` names `host`, which is not resolved yet.
    HostUnresolved {
        /// The rule.
        rule: RuleNumber,
        /// Its `dsthost`.
        host: HostId,
    },
    /// Rule `rule` names `host`, whose resolution failed.
    HostFailed {
        /// The rule.
        rule: RuleNumber,
        /// Its `dsthost`.
        host: HostId,
    },
    /// Rule `rule` names `host`, whose address list is incomplete and lacks the destination.
    HostIncomplete {
        /// The rule.
        rule: RuleNumber,
        /// Its `dsthost`.
        host: HostId,
    },
    /// The destination is not of the rule set's family (an IPv6 flow evaluated against an
    /// IPv4 rule set); the caller picked the wrong rule set.
    WrongFamily,
}

impl DropReason {
    /// How the firewall answers the dropped packet.
    #[must_use]
    pub const fn answer(&self) -> DropAnswer {
        match self {
            DropReason::NoRules | DropReason::WrongFamily => DropAnswer::Silent,
            _ => DropAnswer::AdminProhibited,
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::Rule(n) => write!(f, "dropped by rule {n}"),
            DropReason::Policy => f.write_str("dropped by policy"),
            DropReason::NoRules => f.write_str("no rules committed"),
            DropReason::InvalidRules => f.write_str("rule set invalid"),
            DropReason::HostUnresolved { rule, host } => {
                write!(f, "rule {rule}: dsthost #{} not resolved yet", host.index())
            }
            DropReason::HostFailed { rule, host } => {
                write!(f, "rule {rule}: dsthost #{} failed to resolve", host.index())
            }
            DropReason::HostIncomplete { rule, host } => {
                write!(f, "rule {rule}: dsthost #{} address list incomplete", host.index())
            }
            DropReason::WrongFamily => f.write_str("address family of the wrong rule set"),
        }
    }
}

/// How a dropped packet is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropAnswer {
    /// ICMP destination unreachable, administratively prohibited (type 3 code 13), or ICMPv6
    /// type 1 code 1, as Linux's `reject with icmp type admin-prohibited` (subject to the
    /// ICMP error rules: not about ICMP errors, broadcasts, non-first fragments; rate-limited).
    AdminProhibited,
    /// No answer.
    Silent,
}

/// The decision for a new flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Forward it.
    Accept(AcceptedBy),
    /// Refuse it; [`DropReason::answer`] says whether to send admin-prohibited.
    Drop(DropReason),
}

impl Verdict {
    /// Whether the flow is accepted.
    #[must_use]
    pub const fn is_accept(&self) -> bool {
        matches!(self, Verdict::Accept(_))
    }
}

enum Match {
    Yes,
    No,
    Unknown(DropReason),
}

impl Rule {
    /// Whether this rule matches `flow`. Predicates that need no resolution are checked
    /// first, so an unresolved `dsthost` only matters for flows the rule could match.
    fn matches<R: HostResolutions + ?Sized>(&self, flow: &Flow, ctx: &MatchContext<'_, R>) -> Match {
        let port = match (self.proto, flow.transport) {
            (None, Transport::Tcp { dst_port } | Transport::Udp { dst_port }) => Some(dst_port),
            (None, _) => None,
            (Some(Proto::Tcp), Transport::Tcp { dst_port }) => Some(dst_port),
            (Some(Proto::Udp), Transport::Udp { dst_port }) => Some(dst_port),
            (Some(Proto::Icmp), Transport::Icmp { icmp_type }) => {
                if self.icmp_type.is_some_and(|t| t != icmp_type) {
                    return Match::No;
                }
                None
            }
            (Some(_), _) => return Match::No,
        };
        if let Some(range) = self.dst_ports {
            // Parsing guarantees proto tcp/udp here, so `port` is set when the proto matched.
            if !port.is_some_and(|p| range.contains(p)) {
                return Match::No;
            }
        }
        if self.special_dns {
            // Linux: TCP/UDP port 53 only; a rule whose dstports is not exactly 53 is skipped.
            if self.dst_ports.is_some_and(|r| r.lo() != 53 || r.hi() != 53)
                || port != Some(53)
                || !ctx.dns_servers.contains(&flow.dst)
            {
                return Match::No;
            }
        }
        match self.destination {
            Destination::Any => Match::Yes,
            Destination::V4(prefix) => match flow.dst {
                IpAddr::V4(a) if prefix.contains(a) => Match::Yes,
                _ => Match::No,
            },
            Destination::V6(prefix) => match flow.dst {
                IpAddr::V6(a) if prefix.contains(a) => Match::Yes,
                _ => Match::No,
            },
            Destination::Host(host) => {
                let rule = self.number;
                match ctx.hosts.resolution(host) {
                    Resolution::Unresolved => Match::Unknown(DropReason::HostUnresolved { rule, host }),
                    Resolution::Failed => Match::Unknown(DropReason::HostFailed { rule, host }),
                    Resolution::Resolved { addrs, complete } => {
                        if addrs.contains(&flow.dst) {
                            Match::Yes
                        } else if complete {
                            Match::No
                        } else {
                            Match::Unknown(DropReason::HostIncomplete { rule, host })
                        }
                    }
                }
            }
        }
    }
}

impl RuleSet {
    /// The verdict for a new flow (see the module docs for unresolved `dsthost` names).
    #[must_use]
    pub fn evaluate<R: HostResolutions + ?Sized>(&self, flow: &Flow, ctx: &MatchContext<'_, R>) -> Verdict {
        if Family::of(&flow.dst) != self.family {
            return Verdict::Drop(DropReason::WrongFamily);
        }
        // The first rule that could not be decided because of an unknown host, if any.
        let mut pending: Option<DropReason> = None;
        for rule in &self.rules {
            match (rule.matches(flow, ctx), rule.action) {
                (Match::No, _) => {}
                (Match::Yes, Action::Accept) => {
                    return Verdict::Accept(AcceptedBy::Rule(rule.number));
                }
                (Match::Yes, Action::Drop) => {
                    return Verdict::Drop(pending.unwrap_or(DropReason::Rule(rule.number)));
                }
                (Match::Unknown(why), Action::Drop) => {
                    return Verdict::Drop(pending.unwrap_or(why));
                }
                (Match::Unknown(why), Action::Accept) => {
                    pending.get_or_insert(why);
                }
            }
        }
        match self.policy {
            Action::Accept => Verdict::Accept(AcceptedBy::Policy),
            Action::Drop => Verdict::Drop(pending.unwrap_or(DropReason::Policy)),
        }
    }
}

/// A client's rules for one address family as the appliance keeps them: never committed,
/// committed but invalid, or active.
#[derive(Clone, Debug)]
pub struct ClientRules {
    set: RuleSet,
    state: State,
}

/// Explicit tags: `NotCommitted` (a client's start) is 0, so a new [`ClientRules`] is all
/// zero bytes.
#[derive(Clone, Copy, Debug)]
#[repr(u8)]
enum State {
    NotCommitted = 0,
    Invalid(RuleSetError) = 1,
    Active = 2,
}

/// What [`ClientRules`] holds, for reporting (`/qubes-iptables-error`, logs).
#[derive(Clone, Copy, Debug)]
pub enum RulesStatus<'a> {
    /// dom0 has not committed a rule set for this client yet: all its traffic is dropped.
    NotCommitted,
    /// The committed rule set is invalid: all its traffic is dropped.
    Invalid(RuleSetError),
    /// The rules in force.
    Active(&'a RuleSet),
}

impl ClientRules {
    /// A client with no committed rules (drops everything).
    #[must_use]
    pub const fn new(family: Family) -> Self {
        Self { set: RuleSet::new(family), state: State::NotCommitted }
    }

    /// Replaces the rules with those of a commit (dom0's empty write to
    /// `/qubes-firewall/<client-ip>`), parsed in place from the entries under it. On error
    /// the client's traffic is dropped until the next good commit.
    ///
    /// # Errors
    ///
    /// The parse error, also kept for [`ClientRules::status`].
    pub fn commit<'e, I>(&mut self, family: Family, entries: I) -> Result<(), RuleSetError>
    where
        I: IntoIterator<Item = (&'e [u8], &'e [u8])>,
    {
        match self.set.parse_into(family, entries) {
            Ok(()) => {
                self.state = State::Active;
                Ok(())
            }
            Err(e) => {
                self.state = State::Invalid(e);
                Err(e)
            }
        }
    }

    /// Forgets the rules (the client went away; a new one at the same address must get a
    /// commit of its own).
    pub fn clear(&mut self) {
        let family = self.set.family();
        self.set.reset(family);
        self.state = State::NotCommitted;
    }

    /// What is in force.
    #[must_use]
    pub fn status(&self) -> RulesStatus<'_> {
        match self.state {
            State::NotCommitted => RulesStatus::NotCommitted,
            State::Invalid(e) => RulesStatus::Invalid(e),
            State::Active => RulesStatus::Active(&self.set),
        }
    }

    /// The active rule set, if any.
    #[must_use]
    pub fn active(&self) -> Option<&RuleSet> {
        match self.state {
            State::Active => Some(&self.set),
            _ => None,
        }
    }

    /// The verdict for a new flow from this client.
    #[must_use]
    pub fn evaluate<R: HostResolutions + ?Sized>(&self, flow: &Flow, ctx: &MatchContext<'_, R>) -> Verdict {
        match self.state {
            State::NotCommitted => Verdict::Drop(DropReason::NoRules),
            State::Invalid(_) => Verdict::Drop(DropReason::InvalidRules),
            State::Active => self.set.evaluate(flow, ctx),
        }
    }
}
