//! Parser for the Qubes R4 firewall rule format as dom0 writes it into QubesDB.
//!
//! A rule is space-separated `key=value` fields (qubes-protocols.md §5.2). Accepted:
//! `action=accept|drop` (required), at most one of `dst4=a.b.c.d[/n]`, `dst6=addr[/n]`,
//! `dsthost=name`, then `proto=tcp|udp|icmp`, `specialtarget=dns`, `dstports=lo-hi` (or a
//! single port; needs tcp/udp), `icmptype=0..255` (needs icmp), `dpi=NO`, `expire=N` and a
//! final `comment=…` whose value runs to the end of the string and may contain spaces (the
//! admin-API form; dom0 does not write these two into QubesDB, they are tolerated and
//! ignored). Keys may come in any order (Linux `qubes-firewall` reads them into a dict);
//! a key given twice, an unknown key, an empty field or any byte outside the grammar's
//! character set is an error. Every error fails the whole rule set (fail closed).

use core::net::{Ipv4Addr, Ipv6Addr};
use core::str::FromStr;

use super::error::{ErrorKind, Key, Location, RuleSetError, Snippet};
use super::model::{
    Action, Destination, Family, InternError, Ipv4Prefix, Ipv6Prefix, PortRange, Proto, Rule, RuleNumber, RuleSet,
};
use crate::config::{MAX_HOST_NAME_LEN, MAX_RULE_LEN};

/// Whether `b` may appear anywhere in a rule string: dom0's `RuleOption` safe set
/// (`[A-Za-z0-9:;,./_\[\]-]`), plus `=` and the field separator.
fn is_rule_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b":;,./-_[]= ".contains(&b)
}

/// Parses one rule string (a QubesDB value) for a rule set of `family`. `number` is the
/// rule's key; it is stored in the rule. A `dsthost` name is returned borrowed from `text`.
///
/// # Errors
///
/// The first problem found, as an [`ErrorKind`].
pub fn parse_rule(family: Family, number: RuleNumber, text: &[u8]) -> Result<Rule<&str>, ErrorKind> {
    if text.is_empty() {
        return Err(ErrorKind::Empty);
    }
    if text.len() > MAX_RULE_LEN {
        return Err(ErrorKind::TooLong);
    }
    for (i, &b) in text.iter().enumerate() {
        // i < MAX_RULE_LEN (3072) fits u16.
        let offset = u16::try_from(i).unwrap_or(u16::MAX);
        if !b.is_ascii() {
            return Err(ErrorKind::NotAscii { offset });
        }
        if !is_rule_char(b) {
            return Err(ErrorKind::BadCharacter { offset });
        }
    }
    // Checked above: all ASCII.
    let text = core::str::from_utf8(text).map_err(|_| ErrorKind::NotAscii { offset: 0 })?;

    // `comment=` runs to the end (dom0's `from_api_string` partitions at it).
    let (options, has_comment) = match find_comment(text) {
        Some(at) => {
            let comment = &text[at + "comment=".len()..];
            // dom0's `Comment` safe set: the rule set without `=`.
            if comment.contains('=') {
                return Err(ErrorKind::BadValue(Key::Comment));
            }
            (text[..at].strip_suffix(' ').unwrap_or(&text[..at]), true)
        }
        None => (text, false),
    };

    let mut seen: u16 = if has_comment { Key::Comment.bit() } else { 0 };
    let mut action = None;
    let mut destination = Destination::Any;
    let mut proto = None;
    let mut special_dns = false;
    let mut dst_ports = None;
    let mut icmp_type = None;

    // `options` is empty only when the comment is the whole rule: no action then.
    if !options.is_empty() {
        for field in options.split(' ') {
            if field.is_empty() {
                return Err(ErrorKind::EmptyField);
            }
            let (name, value) = field.split_once('=').ok_or(ErrorKind::MissingEquals)?;
            let key =
                Key::from_name(name.as_bytes()).ok_or_else(|| ErrorKind::UnknownKey(Snippet::new(name.as_bytes())))?;
            if seen & key.bit() != 0 {
                return Err(ErrorKind::DuplicateKey(key));
            }
            seen |= key.bit();
            let bad = ErrorKind::BadValue(key);
            match key {
                Key::Action => {
                    action = Some(match value {
                        "accept" => Action::Accept,
                        "drop" => Action::Drop,
                        _ => return Err(bad),
                    });
                }
                Key::Dst4 | Key::Dst6 | Key::DstHost => {
                    if !matches!(destination, Destination::Any) {
                        return Err(ErrorKind::MultipleDestinations);
                    }
                    destination = parse_destination(family, key, value)?;
                }
                Key::Proto => {
                    proto = Some(match value {
                        "tcp" => Proto::Tcp,
                        "udp" => Proto::Udp,
                        "icmp" => Proto::Icmp,
                        _ => return Err(bad),
                    });
                }
                Key::SpecialTarget => {
                    if value != "dns" {
                        return Err(bad);
                    }
                    special_dns = true;
                }
                Key::DstPorts => dst_ports = Some(parse_ports(value).ok_or(bad)?),
                Key::IcmpType => {
                    let t = parse_decimal(value, u64::from(u8::MAX)).ok_or(bad)?;
                    icmp_type = Some(u8::try_from(t).map_err(|_| bad)?);
                }
                Key::Dpi => {
                    if value != "NO" {
                        return Err(bad);
                    }
                }
                Key::Expire => {
                    parse_decimal(value, u64::MAX).ok_or(bad)?;
                }
                // `find_comment` takes every `comment=` field; one can only be met here if
                // it is glued to a previous field, which `find_comment` does not do.
                Key::Comment => return Err(ErrorKind::DuplicateKey(Key::Comment)),
            }
        }
    }

    let action = action.ok_or(ErrorKind::MissingAction)?;
    if dst_ports.is_some() && !matches!(proto, Some(Proto::Tcp | Proto::Udp)) {
        return Err(ErrorKind::PortsWithoutTcpOrUdp);
    }
    if icmp_type.is_some() && proto != Some(Proto::Icmp) {
        return Err(ErrorKind::IcmpTypeWithoutIcmp);
    }
    Ok(Rule { number, action, destination, proto, special_dns, dst_ports, icmp_type })
}

/// Byte offset of the `comment=` field (at the start or after a space), if any.
fn find_comment(text: &str) -> Option<usize> {
    const KEY: &str = "comment=";
    if text.starts_with(KEY) {
        return Some(0);
    }
    text.find(" comment=").map(|at| at + 1)
}

fn parse_destination(family: Family, key: Key, value: &str) -> Result<Destination<&str>, ErrorKind> {
    let bad = ErrorKind::BadValue(key);
    match key {
        Key::Dst4 => {
            let (addr, len) = split_prefix(value, 32).ok_or(bad)?;
            let addr = Ipv4Addr::from_str(addr).map_err(|_| bad)?;
            let prefix = Ipv4Prefix::new(addr, len).ok_or(bad)?;
            if family != Family::V4 {
                return Err(ErrorKind::WrongFamily(key));
            }
            Ok(Destination::V4(prefix))
        }
        Key::Dst6 => {
            let (addr, len) = split_prefix(value, 128).ok_or(bad)?;
            // Only the textual forms of RFC 4291 (no zone index; `%` is not a rule char).
            let addr = Ipv6Addr::from_str(addr).map_err(|_| bad)?;
            let prefix = Ipv6Prefix::new(addr, len).ok_or(bad)?;
            if family != Family::V6 {
                return Err(ErrorKind::WrongFamily(key));
            }
            Ok(Destination::V6(prefix))
        }
        _ => parse_host(family, value),
    }
}

/// `addr[/len]` with `len <= max` (a bare address is a full-length prefix).
fn split_prefix(value: &str, max: u8) -> Option<(&str, u8)> {
    match value.split_once('/') {
        None => Some((value, max)),
        Some((addr, len)) => {
            let len = parse_decimal(len, u64::from(max))?;
            Some((addr, u8::try_from(len).ok()?))
        }
    }
}

/// `dsthost=`: a DNS name of `[a-z0-9._-]` (dom0's safe set), labels of 1–63 characters, at
/// most [`MAX_HOST_NAME_LEN`] characters, an optional trailing dot (dropped). A dotted-quad
/// IPv4 literal stands for itself (as `getaddrinfo` would resolve it); any other name whose
/// last label is all digits is refused (`getaddrinfo` would read `1.2.3` as an address, a DNS
/// resolver as a name: neither is what the user meant).
fn parse_host(family: Family, value: &str) -> Result<Destination<&str>, ErrorKind> {
    let bad = ErrorKind::BadValue(Key::DstHost);
    let name = value.strip_suffix('.').unwrap_or(value);
    if name.is_empty() || name.len() > MAX_HOST_NAME_LEN {
        return Err(bad);
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b)) {
        return Err(bad);
    }
    if name.split('.').any(|label| label.is_empty() || label.len() > 63) {
        return Err(bad);
    }
    if let Ok(addr) = Ipv4Addr::from_str(name) {
        if name.len() != value.len() {
            return Err(bad); // "1.2.3.4." is neither an address nor a name
        }
        return match family {
            Family::V4 => Ok(Destination::V4(Ipv4Prefix::new(addr, 32).ok_or(bad)?)),
            Family::V6 => Err(ErrorKind::WrongFamily(Key::DstHost)),
        };
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    Ok(Destination::Host(name))
}

/// `lo-hi` or a single port, each 0–65535, `lo <= hi`.
fn parse_ports(value: &str) -> Option<PortRange> {
    let max = u64::from(u16::MAX);
    let (lo, hi) = match value.split_once('-') {
        Some((lo, hi)) => (parse_decimal(lo, max)?, parse_decimal(hi, max)?),
        None => {
            let p = parse_decimal(value, max)?;
            (p, p)
        }
    };
    PortRange::new(u16::try_from(lo).ok()?, u16::try_from(hi).ok()?)
}

/// A non-empty string of ASCII digits whose value is at most `max` (leading zeros allowed,
/// as Python's `int` allows them).
fn parse_decimal(s: &str, max: u64) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for b in s.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    (v <= max).then_some(v)
}

/// A QubesDB key under `/qubes-firewall/<ip>/`: `policy` or a 4-digit rule number.
fn parse_entry_key(key: &[u8]) -> Option<Option<RuleNumber>> {
    if key == b"policy" {
        return Some(None);
    }
    if key.len() != 4 || !key.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = key.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    Some(Some(RuleNumber::new(n)?))
}

impl RuleSet {
    /// Parses a client's rule set from its QubesDB entries: `(key, value)` pairs where `key`
    /// is the part after `/qubes-firewall/<client-ip>/` (`policy`, `0000`, `0001`, …), in any
    /// order. Numbers may have gaps; rules are evaluated in increasing number.
    ///
    /// # Errors
    ///
    /// The first problem found; see [`RuleSet::parse_into`].
    pub fn parse<'e, I>(family: Family, entries: I) -> Result<RuleSet, RuleSetError>
    where
        I: IntoIterator<Item = (&'e [u8], &'e [u8])>,
    {
        let mut set = RuleSet::new(family);
        set.parse_into(family, entries)?;
        Ok(set)
    }

    /// Like [`RuleSet::parse`], in place (the rule set is large; this avoids moving it).
    ///
    /// # Errors
    ///
    /// A missing, duplicate or invalid `policy`, an entry that is neither `policy` nor a
    /// 4-digit number, a rule that does not parse ([`parse_rule`]), a duplicate rule number,
    /// or a capacity of [`crate::config`] exceeded. `self` is then empty with policy `drop`
    /// (it drops everything).
    pub fn parse_into<'e, I>(&mut self, family: Family, entries: I) -> Result<(), RuleSetError>
    where
        I: IntoIterator<Item = (&'e [u8], &'e [u8])>,
    {
        self.reset(family);
        let result = self.fill(family, entries);
        if result.is_err() {
            self.reset(family);
        }
        result
    }

    fn fill<'e, I>(&mut self, family: Family, entries: I) -> Result<(), RuleSetError>
    where
        I: IntoIterator<Item = (&'e [u8], &'e [u8])>,
    {
        let err = |location, kind| RuleSetError { location, kind };
        let mut policy = None;
        for (key, value) in entries {
            match parse_entry_key(key) {
                None => {
                    return Err(err(Location::RuleSet, ErrorKind::UnexpectedEntry(Snippet::new(key))));
                }
                Some(None) => {
                    if policy.is_some() {
                        return Err(err(Location::Policy, ErrorKind::DuplicatePolicy));
                    }
                    policy = Some(match value {
                        b"accept" => Action::Accept,
                        b"drop" => Action::Drop,
                        _ => return Err(err(Location::Policy, ErrorKind::BadPolicy)),
                    });
                }
                Some(Some(number)) => {
                    let at = Location::Rule(number);
                    let rule = parse_rule(family, number, value).map_err(|kind| err(at, kind))?;
                    if self.rules.is_full() {
                        return Err(err(Location::RuleSet, ErrorKind::TooManyRules));
                    }
                    let destination = match rule.destination {
                        Destination::Any => Destination::Any,
                        Destination::V4(p) => Destination::V4(p),
                        Destination::V6(p) => Destination::V6(p),
                        Destination::Host(name) => Destination::Host(self.intern(name).map_err(|e| {
                            err(
                                at,
                                match e {
                                    InternError::TooManyHosts => ErrorKind::TooManyHosts,
                                    InternError::NamesFull => ErrorKind::HostNamesTooLong,
                                },
                            )
                        })?),
                    };
                    let rule = Rule {
                        number,
                        action: rule.action,
                        destination,
                        proto: rule.proto,
                        special_dns: rule.special_dns,
                        dst_ports: rule.dst_ports,
                        icmp_type: rule.icmp_type,
                    };
                    self.rules.push(rule).map_err(|_| err(Location::RuleSet, ErrorKind::TooManyRules))?;
                }
            }
        }
        self.policy = policy.ok_or(err(Location::RuleSet, ErrorKind::MissingPolicy))?;
        self.rules.sort_unstable_by_key(|r| r.number);
        if let Some(w) = self.rules.windows(2).find(|w| w[0].number == w[1].number) {
            return Err(err(Location::Rule(w[0].number), ErrorKind::DuplicateRule));
        }
        Ok(())
    }
}
