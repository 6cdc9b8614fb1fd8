//! Qubes firewall rules (R4 format): model, parser and matcher.
//!
//! dom0 writes one rule set per client address under `/qubes-firewall/<client-ip>/`
//! (`policy` and numbered rules `0000`, `0001`, … with gaps allowed), then commits it with an
//! empty write to `/qubes-firewall/<client-ip>`. [`ClientRules::commit`] parses the entries
//! once, at commit time, into a fixed-size [`RuleSet`]; [`ClientRules::evaluate`] then decides
//! each new flow ([`Flow`]) with integer comparisons only, first match wins, the policy when
//! nothing matches. Semantics follow Linux `sys-firewall` (`qubes-firewall` + nftables,
//! qubes-protocols.md §5.3), including where qubes-mirage-firewall differs:
//!
//! - the `policy` key is honoured and rules after a numbering gap are evaluated;
//! - `specialtarget=dns` honours `proto` (`proto=udp specialtarget=dns` is UDP port 53 to the
//!   DNS servers only), is skipped when `dstports` is not exactly 53, and is intersected with a
//!   destination key when one is given;
//! - `drop` is answered with ICMP admin-prohibited ([`DropAnswer`]);
//! - whatever cannot be evaluated drops (fail closed, [`DropReason`]).

mod error;
mod matcher;
mod model;
mod parse;

#[cfg(test)]
mod tests;

pub use error::{ErrorKind, Key, Location, RuleSetError, Snippet};
pub use matcher::{
    AcceptedBy, ClientRules, DropAnswer, DropReason, Flow, HostResolutions, HostTable, IPPROTO_ICMP, IPPROTO_ICMPV6,
    IPPROTO_TCP, IPPROTO_UDP, MatchContext, NoResolutions, Resolution, RulesStatus, Transport, Verdict,
};
pub use model::{
    Action, Destination, Family, HostId, Ipv4Prefix, Ipv6Prefix, PortRange, Proto, Rule, RuleNumber, RuleSet,
};
pub use parse::parse_rule;
