//! Typed parse errors: which entry (policy, rule number) and what was wrong with it.
//!
//! Errors are small `Copy` values; their `Display` text is what the appliance logs and writes
//! to `/qubes-iptables-error`.

use core::fmt;

use super::model::RuleNumber;

/// A key of the rule grammar (qubes-doc "Firewall rules in 4.x", plus `expire` and `comment`
/// from dom0's admin API, which are tolerated).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    /// `action=`
    Action,
    /// `dst4=`
    Dst4,
    /// `dst6=`
    Dst6,
    /// `dsthost=`
    DstHost,
    /// `proto=`
    Proto,
    /// `specialtarget=`
    SpecialTarget,
    /// `dstports=`
    DstPorts,
    /// `icmptype=`
    IcmpType,
    /// `dpi=` (only `NO`)
    Dpi,
    /// `expire=` (tolerated, ignored: dom0 removes expired rules itself)
    Expire,
    /// `comment=` (tolerated, ignored; must be last, its value runs to the end of the rule)
    Comment,
}

impl Key {
    /// Every key, in the order qubes-doc lists them.
    pub const ALL: [Key; 11] = [
        Key::Action,
        Key::Dst4,
        Key::Dst6,
        Key::DstHost,
        Key::Proto,
        Key::SpecialTarget,
        Key::DstPorts,
        Key::IcmpType,
        Key::Dpi,
        Key::Expire,
        Key::Comment,
    ];

    /// The key as written in a rule (without `=`).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Key::Action => "action",
            Key::Dst4 => "dst4",
            Key::Dst6 => "dst6",
            Key::DstHost => "dsthost",
            Key::Proto => "proto",
            Key::SpecialTarget => "specialtarget",
            Key::DstPorts => "dstports",
            Key::IcmpType => "icmptype",
            Key::Dpi => "dpi",
            Key::Expire => "expire",
            Key::Comment => "comment",
        }
    }

    /// The key named `name`, if any.
    #[must_use]
    pub fn from_name(name: &[u8]) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.name().as_bytes() == name)
    }

    pub(crate) const fn bit(self) -> u16 {
        1 << self as u16
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A short, printable copy of some offending text (the first bytes of an unknown key or a
/// stray QubesDB entry) so that an error can name it without allocating.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Snippet {
    buf: [u8; Snippet::CAPACITY],
    len: u8,
    truncated: bool,
}

impl Snippet {
    /// Bytes kept.
    pub const CAPACITY: usize = 16;

    /// A copy of the start of `bytes`, with anything but printable ASCII replaced by `?`.
    #[must_use]
    pub fn new(bytes: &[u8]) -> Self {
        let mut buf = [0u8; Self::CAPACITY];
        let n = bytes.len().min(Self::CAPACITY);
        for (dst, &b) in buf.iter_mut().zip(&bytes[..n]) {
            *dst = if b.is_ascii_graphic() || b == b' ' { b } else { b'?' };
        }
        Self {
            buf,
            // n <= CAPACITY = 16
            len: n as u8,
            truncated: bytes.len() > Self::CAPACITY,
        }
    }

    /// The kept text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Only printable ASCII is stored, so this cannot fail.
        core::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("?")
    }
}

impl fmt::Display for Snippet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())?;
        if self.truncated {
            f.write_str("...")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Snippet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())?;
        if self.truncated {
            f.write_str("...")?;
        }
        Ok(())
    }
}

/// What was wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    // --- one rule string ---
    /// The rule string is empty.
    Empty,
    /// The rule string is longer than [`crate::config::MAX_RULE_LEN`].
    TooLong,
    /// A byte that is not ASCII, at this offset.
    NotAscii {
        /// Byte offset in the rule string.
        offset: u16,
    },
    /// An ASCII character outside the grammar's set (letters, digits, `:;,./-_[]= `), e.g. a
    /// tab or control character, at this offset.
    BadCharacter {
        /// Byte offset in the rule string.
        offset: u16,
    },
    /// Two spaces in a row, or a leading or trailing space.
    EmptyField,
    /// A field without `=`.
    MissingEquals,
    /// A key the grammar does not have.
    UnknownKey(Snippet),
    /// The same key twice.
    DuplicateKey(Key),
    /// A value the key does not accept (out of range, malformed, unknown word).
    BadValue(Key),
    /// No `action=`.
    MissingAction,
    /// More than one of `dst4`, `dst6`, `dsthost`.
    MultipleDestinations,
    /// `dstports` without `proto=tcp` or `proto=udp`.
    PortsWithoutTcpOrUdp,
    /// `icmptype` without `proto=icmp`.
    IcmpTypeWithoutIcmp,
    /// A destination of the other family: `dst6` in an IPv4 rule set, `dst4` (or an IPv4
    /// literal `dsthost`) in an IPv6 rule set (Linux refuses these too).
    WrongFamily(Key),
    // --- the rule set ---
    /// No `policy` entry.
    MissingPolicy,
    /// `policy` is neither `accept` nor `drop`.
    BadPolicy,
    /// More than one `policy` entry.
    DuplicatePolicy,
    /// An entry that is neither `policy` nor a 4-digit rule number.
    UnexpectedEntry(Snippet),
    /// The same rule number twice.
    DuplicateRule,
    /// More than [`crate::config::MAX_RULES_PER_CLIENT`] rules.
    TooManyRules,
    /// More than [`crate::config::MAX_HOSTS_PER_CLIENT`] distinct `dsthost` names.
    TooManyHosts,
    /// The `dsthost` names exceed [`crate::config::HOST_NAME_BYTES_PER_CLIENT`] bytes.
    HostNamesTooLong,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Empty => f.write_str("empty rule"),
            ErrorKind::TooLong => f.write_str("rule too long"),
            ErrorKind::NotAscii { offset } => write!(f, "non-ASCII byte at offset {offset}"),
            ErrorKind::BadCharacter { offset } => {
                write!(f, "invalid character at offset {offset}")
            }
            ErrorKind::EmptyField => f.write_str("empty field (extra space)"),
            ErrorKind::MissingEquals => f.write_str("field without '='"),
            ErrorKind::UnknownKey(k) => write!(f, "unknown key '{k}'"),
            ErrorKind::DuplicateKey(k) => write!(f, "key '{k}' given twice"),
            ErrorKind::BadValue(k) => write!(f, "invalid value for '{k}'"),
            ErrorKind::MissingAction => f.write_str("no 'action'"),
            ErrorKind::MultipleDestinations => f.write_str("more than one of 'dst4', 'dst6', 'dsthost'"),
            ErrorKind::PortsWithoutTcpOrUdp => f.write_str("'dstports' needs proto=tcp or udp"),
            ErrorKind::IcmpTypeWithoutIcmp => f.write_str("'icmptype' needs proto=icmp"),
            ErrorKind::WrongFamily(k) => write!(f, "'{k}' of the wrong address family"),
            ErrorKind::MissingPolicy => f.write_str("no 'policy'"),
            ErrorKind::BadPolicy => f.write_str("invalid policy"),
            ErrorKind::DuplicatePolicy => f.write_str("'policy' given twice"),
            ErrorKind::UnexpectedEntry(e) => write!(f, "unexpected entry '{e}'"),
            ErrorKind::DuplicateRule => f.write_str("rule number given twice"),
            ErrorKind::TooManyRules => f.write_str("too many rules"),
            ErrorKind::TooManyHosts => f.write_str("too many dsthost names"),
            ErrorKind::HostNamesTooLong => f.write_str("dsthost names too long in total"),
        }
    }
}

/// Where in a rule set an error is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    /// The rule set as a whole (missing policy, stray entry, capacity).
    RuleSet,
    /// The `policy` entry.
    Policy,
    /// The rule with this number.
    Rule(RuleNumber),
}

/// A rule set that cannot be used: where and what. The client's traffic is then dropped
/// ([`super::DropReason::InvalidRules`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleSetError {
    /// Which entry.
    pub location: Location,
    /// What was wrong with it.
    pub kind: ErrorKind,
}

impl fmt::Display for RuleSetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Location::RuleSet => write!(f, "rule set: {}", self.kind),
            Location::Policy => write!(f, "policy: {}", self.kind),
            Location::Rule(n) => write!(f, "rule {n}: {}", self.kind),
        }
    }
}
