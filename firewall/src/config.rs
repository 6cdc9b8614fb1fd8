//! Fixed capacities of the firewall engine.
//!
//! The appliance has no heap: every table is sized here, at compile time. When a capacity is
//! exceeded the engine follows a written policy instead of growing (for rule sets: the rule
//! set is refused and that client's traffic is dropped, see [`crate::rules`]).

/// Longest rule string accepted, in bytes: QubesDB's `QDB_MAX_DATA`, the largest value dom0
/// can write into one key.
pub const MAX_RULE_LEN: usize = 3072;

/// Most numbered rules (`0000`, `0001`, …) in one client's rule set. A longer rule set is
/// refused as a whole ([`crate::rules::ErrorKind::TooManyRules`]), so the client's traffic is
/// dropped rather than evaluated against a truncated list.
pub const MAX_RULES_PER_CLIENT: usize = 256;

/// Most distinct `dsthost=` names in one client's rule set (rules naming the same host share
/// one entry and one resolution).
pub const MAX_HOSTS_PER_CLIENT: usize = 64;

/// Bytes available for the `dsthost=` names of one client's rule set, all names together.
pub const HOST_NAME_BYTES_PER_CLIENT: usize = 4096;

/// Longest DNS name accepted in `dsthost=` (RFC 1035: 253 characters in text form, without
/// the trailing dot).
pub const MAX_HOST_NAME_LEN: usize = 253;

/// Most addresses (A and AAAA together) kept for one resolved `dsthost` name. A resolver that
/// got more marks the resolution incomplete ([`crate::rules::Resolution::Resolved`]): an
/// `accept` rule then matches only the kept addresses, and a `drop` rule drops every flow that
/// reaches it without matching a kept address (it cannot tell that the flow is not one it would
/// have dropped), so truncation never lets traffic through that Linux would reject.
pub const MAX_ADDRS_PER_HOST: usize = 32;

/// Flows the connection-tracking table holds ([`crate::conntrack::DefaultConntrack`]), all
/// clients together. Linux's default `nf_conntrack_max` on a 1 GiB machine is 65,536 too.
pub const CONNTRACK_CAPACITY: usize = 65_536;

/// Buckets of the connection-tracking index: each flow is indexed twice (its original tuple
/// and its reply tuple), so this is 4× the capacity, keeping the load factor at or below ½.
/// A power of two.
pub const CONNTRACK_INDEX_BUCKETS: usize = 4 * CONNTRACK_CAPACITY;

/// Default number of flows one client may hold (a quarter of the table), changeable at run
/// time with [`crate::conntrack::Conntrack::set_client_quota`].
pub const CONNTRACK_CLIENT_QUOTA: u32 = 16_384;

/// Most clients (vifs) connection tracking tells apart: a [`crate::conntrack::ClientId`] is
/// below this.
pub const MAX_CLIENTS: usize = 256;

/// How many random source ports NAT tries when a client's own port is taken, before
/// refusing the flow ([`crate::conntrack::Refusal::NoFreePort`]). With the table at most
/// ¼ full for one remote endpoint the chance that all tries fail is below 2^-128.
pub const NAT_PORT_TRIES: u32 = 64;

/// Names the `dsthost` resolver caches, all clients together (clients naming the same host
/// share one entry). A name that finds no free entry fails closed.
pub const RESOLVER_NAMES: usize = 256;

/// Largest IPv4 datagram (header included) that fragment reassembly rebuilds: a whole
/// reassembled frame (14-byte Ethernet header + datagram) must fit one 4 KiB slot. Larger
/// datagrams are dropped and counted.
pub const MAX_REASSEMBLED: usize = 4096 - 14;

/// Datagrams being reassembled at once, all sources together (each holds a 4 KiB buffer).
pub const REASSEMBLY_SLOTS: usize = 16;

/// Datagrams one source address may have under reassembly at once.
pub const REASSEMBLY_PER_SOURCE: usize = 4;

/// Fragments one datagram may arrive in (at the minimum fragment size of 8 bytes of data a
/// 4 KiB datagram would need more, but such a flood of tiny fragments is refused).
pub const MAX_FRAGMENTS: usize = 64;

/// Per-source buckets of the ICMP error rate limiter (a fixed, direct-mapped table).
pub const ICMP_LIMIT_SOURCES: usize = 64;
