//! The forwarding engine: what happens to one received Ethernet frame.
//!
//! [`Firewall::process`] takes a frame the caller copied into a private slot (never a page a
//! peer can still write), the interface it came from ([`Ingress`]), its checksum state
//! ([`ChecksumState`]) and the time, and decides in place ([`Decision`]):
//!
//! - **Client → outside**: anti-spoofing (the source must be the client's address), fragment
//!   reassembly, TTL (ICMP time exceeded at TTL ≤ 1), MTU (ICMP fragmentation needed when DF
//!   is set, else [`Decision::Fragment`]), the client's rules on a new flow, connection
//!   tracking, source NAT with incremental checksums, TTL decrement, Ethernet header for the
//!   uplink gateway. A `drop` rule is answered with ICMP admin-prohibited (type 3 code 13: Linux
//!   `qubes-firewall` uses `reject with icmp type admin-prohibited`, qubes-protocols.md §5.3).
//! - **Client → portcullis** (the gateway address, or the uplink address): echo requests are
//!   answered; other ICMP and UDP to port 68 are dropped silently; everything else is rejected
//!   ([`LocalReject`]: host-prohibited as Linux `sys-firewall`'s input chain, or port/protocol
//!   unreachable).
//! - **Client → client** and **outside → client** new connections are dropped (Linux
//!   `oifgroup 2 drop`); only replies of tracked flows and ICMP errors about them reach a
//!   client, translated back.
//! - **Uplink**: a source that is a client's address is dropped (anti-spoofing the other way);
//!   DNS replies for the `dsthost` resolver are consumed ([`Decision::Consumed`]).
//! - IPv6 is dropped and counted (not supported yet); other EtherTypes (ARP is the caller's)
//!   are dropped and counted.
//!
//! ICMP errors are never sent about ICMP errors, broadcasts/multicasts or non-first
//! fragments (netstack's `may_send_icmpv4_error`), and are rate-limited ([`IcmpLimits`]).
//!
//! **Checksum offload.** A frame whose TCP/UDP checksum holds only the pseudo-header sum
//! (Linux netfront's `csum_blank`) is [`ChecksumState::PartialPseudoHeader`]: NAT updates the
//! partial sum (addresses only) and never computes a full checksum, and the forwarded frame
//! keeps that state ([`Decision::Forward::csum`]) so the caller sets the flag again. Other
//! frames are [`ChecksumState::Complete`] and get RFC 1624 incremental updates. Fragments and
//! non-TCP/UDP packets claiming a partial checksum are dropped ([`DropCause::BadChecksumState`]).
//!
//! The caller owns every buffer (4 KiB slots); the engine never allocates.

mod engine;
pub mod fragment;
mod ratelimit;

#[cfg(test)]
mod tests;

use core::net::Ipv4Addr;

pub use engine::{ClientConfig, ConfigError, DownlinkConfig, Firewall, LocalReject, Rx, UplinkConfig};
pub use fragment::{FragmentDrop, fragment, fragment_count};
pub use ratelimit::IcmpLimits;

use crate::config::{CONNTRACK_CAPACITY, CONNTRACK_INDEX_BUCKETS, MAX_CLIENTS};
use crate::conntrack::{ClientId, Invalid, Refusal, Untrackable};
use crate::rules::DropReason;

/// The appliance's engine: [`CONNTRACK_CAPACITY`] flows, [`MAX_CLIENTS`] clients.
pub type DefaultFirewall = Firewall<CONNTRACK_CAPACITY, CONNTRACK_INDEX_BUCKETS, MAX_CLIENTS>;

/// Where a frame came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ingress {
    /// A client's vif (our netback).
    Client(ClientId),
    /// The uplink (our netfront to `sys-net`).
    Uplink,
}

/// Where a frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Egress {
    /// A client's vif.
    Client(ClientId),
    /// The uplink.
    Uplink,
}

/// The state of a frame's TCP/UDP checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChecksumState {
    /// Every checksum is whole (or, for UDP, absent).
    Complete,
    /// The TCP/UDP checksum field holds only the pseudo-header sum, to be completed by the
    /// receiver (Xen `csum_blank`): only for whole TCP/UDP packets.
    PartialPseudoHeader,
}

/// What to do with a processed frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send `buf[..len]` (rewritten in place, Ethernet header included) to `to`, with the
    /// checksum state `csum` (set `csum_blank` for [`ChecksumState::PartialPseudoHeader`]).
    Forward {
        /// Destination interface.
        to: Egress,
        /// Frame length.
        len: usize,
        /// Checksum state of the frame as forwarded.
        csum: ChecksumState,
    },
    /// `buf[..len]` (rewritten in place) is larger than `to`'s MTU and may be fragmented:
    /// send `count` frames written by [`fragment`]`(&buf[..len], mtu, i, out)` for `i` in
    /// `0..count`, each into a slot of its own. Checksums are complete.
    Fragment {
        /// Destination interface.
        to: Egress,
        /// Frame length (the whole datagram).
        len: usize,
        /// The MTU to cut for.
        mtu: u16,
        /// Number of fragments.
        count: usize,
    },
    /// Send `reply[..len]` to `to` (an ICMP echo reply or error); the received frame is
    /// dropped, for `dropped` if it is an error.
    Reply {
        /// Destination interface.
        to: Egress,
        /// Reply frame length.
        len: usize,
        /// Why the received frame was refused (`None` for an echo reply).
        dropped: Option<DropCause>,
    },
    /// A fragment was stored for reassembly; the slot is free again.
    Held,
    /// The frame was for the appliance itself and was consumed (a resolver reply).
    Consumed,
    /// Drop the frame (no answer).
    Drop(DropCause),
}

/// Why a frame was dropped. Every cause has its own counter ([`Counters::dropped`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropCause {
    /// Not a valid Ethernet/IPv4 frame (lengths, version, header checksum, L4 header).
    Malformed,
    /// An EtherType other than IPv4 and IPv6 (ARP is handled by the caller).
    NotIpv4,
    /// IPv6 (not forwarded yet).
    Ipv6,
    /// From a client id that is not configured.
    UnknownClient,
    /// From a client, with a source address that is not the client's.
    Spoofed,
    /// From the uplink, with a client's address as source.
    SpoofedFromUplink,
    /// To a broadcast, multicast or otherwise non-unicast address.
    NotUnicast,
    /// From a client to another client (Linux drops forwarding to a vif).
    ClientToClient,
    /// To portcullis itself, dropped silently (ICMP other than echo, UDP to port 68).
    LocalIgnored,
    /// To portcullis itself, rejected ([`LocalReject`]).
    LocalRejected,
    /// From the uplink, not part of a tracked flow (new connections towards clients included).
    NotTracked,
    /// From the uplink, to an address that is neither ours nor a client's.
    NotForUs,
    /// TTL ≤ 1.
    TtlExpired,
    /// Larger than the egress MTU with DF set.
    TooBig,
    /// Larger than the egress MTU, without DF, but cannot be fragmented (IP options).
    CannotFragment,
    /// The uplink is not configured.
    NoUplink,
    /// A partial checksum claimed for a fragment or a non-TCP/UDP packet.
    BadChecksumState,
    /// A DNS reply for the resolver that it did not accept.
    DnsReplyRejected,
    /// The client's rules refused the new flow.
    Rules(DropReason),
    /// Connection tracking found the packet invalid.
    Invalid(Invalid),
    /// Connection tracking had no room for the new flow.
    Refused(Refusal),
    /// Fragment reassembly dropped it.
    Fragment(FragmentDrop),
}

impl DropCause {
    /// Number of distinct counters.
    pub const COUNT: usize = 43;

    /// Short names of the counters, by index (for logs and counter dumps).
    pub const NAMES: [&'static str; DropCause::COUNT] = [
        "malformed",
        "not_ipv4",
        "ipv6",
        "unknown_client",
        "spoofed",
        "spoofed_from_uplink",
        "not_unicast",
        "client_to_client",
        "local_ignored",
        "local_rejected",
        "not_tracked",
        "not_for_us",
        "ttl_expired",
        "too_big",
        "cannot_fragment",
        "no_uplink",
        "bad_checksum_state",
        "dns_reply_rejected",
        "rule_drop",
        "policy_drop",
        "no_rules",
        "invalid_rules",
        "host_unresolved",
        "host_failed",
        "host_incomplete",
        "wrong_family",
        "untrackable_malformed",
        "untrackable_fragment",
        "untrackable_unsupported",
        "not_new",
        "other_client",
        "no_nat_address",
        "conntrack_quota_full",
        "conntrack_table_full",
        "no_free_port",
        "frag_overlap",
        "frag_duplicate",
        "frag_too_big",
        "frag_table_full",
        "frag_source_quota",
        "frag_invalid",
        "frag_too_many",
        "frag_timeout",
    ];

    /// The short name of counter `index` (`"?"` past the end).
    #[must_use]
    pub const fn name_of(index: usize) -> &'static str {
        if index < Self::COUNT { Self::NAMES[index] } else { "?" }
    }

    /// This cause's counter index, below [`DropCause::COUNT`].
    #[must_use]
    pub const fn index(&self) -> usize {
        match self {
            DropCause::Malformed => 0,
            DropCause::NotIpv4 => 1,
            DropCause::Ipv6 => 2,
            DropCause::UnknownClient => 3,
            DropCause::Spoofed => 4,
            DropCause::SpoofedFromUplink => 5,
            DropCause::NotUnicast => 6,
            DropCause::ClientToClient => 7,
            DropCause::LocalIgnored => 8,
            DropCause::LocalRejected => 9,
            DropCause::NotTracked => 10,
            DropCause::NotForUs => 11,
            DropCause::TtlExpired => 12,
            DropCause::TooBig => 13,
            DropCause::CannotFragment => 14,
            DropCause::NoUplink => 15,
            DropCause::BadChecksumState => 16,
            DropCause::DnsReplyRejected => 17,
            DropCause::Rules(r) => {
                18 + match r {
                    DropReason::Rule(_) => 0,
                    DropReason::Policy => 1,
                    DropReason::NoRules => 2,
                    DropReason::InvalidRules => 3,
                    DropReason::HostUnresolved { .. } => 4,
                    DropReason::HostFailed { .. } => 5,
                    DropReason::HostIncomplete { .. } => 6,
                    DropReason::WrongFamily => 7,
                }
            }
            DropCause::Invalid(i) => {
                26 + match i {
                    Invalid::Untrackable(Untrackable::Malformed) => 0,
                    Invalid::Untrackable(Untrackable::Fragment) => 1,
                    Invalid::Untrackable(Untrackable::Unsupported) => 2,
                    Invalid::NotNew => 3,
                    Invalid::OtherClient => 4,
                    Invalid::NoNatAddress => 5,
                }
            }
            DropCause::Refused(r) => {
                32 + match r {
                    Refusal::QuotaFull => 0,
                    Refusal::TableFull => 1,
                    Refusal::NoFreePort => 2,
                }
            }
            DropCause::Fragment(f) => {
                35 + match f {
                    FragmentDrop::Overlap => 0,
                    FragmentDrop::Duplicate => 1,
                    FragmentDrop::TooBig => 2,
                    FragmentDrop::TableFull => 3,
                    FragmentDrop::SourceQuota => 4,
                    FragmentDrop::Invalid => 5,
                    FragmentDrop::TooMany => 6,
                    FragmentDrop::Timeout => 7,
                }
            }
        }
    }
}

/// Counters: one per decision and per drop cause (monotonic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counters {
    /// Frames forwarded to the uplink.
    pub forwarded_to_uplink: u64,
    /// Frames forwarded to clients.
    pub forwarded_to_clients: u64,
    /// Datagrams handed back for fragmenting ([`Decision::Fragment`]).
    pub fragmented: u64,
    /// Echo replies sent.
    pub echo_replies: u64,
    /// ICMP errors sent.
    pub icmp_errors: u64,
    /// ICMP errors not sent: rate-limited.
    pub icmp_rate_limited: u64,
    /// ICMP errors not sent: not allowed about that packet (an ICMP error, a broadcast, …).
    pub icmp_not_allowed: u64,
    /// Fragments held for reassembly.
    pub held: u64,
    /// Datagrams reassembled.
    pub reassembled: u64,
    /// Frames consumed by the appliance (resolver replies).
    pub consumed: u64,
    /// Drops (frames dropped, answered with an ICMP error or not), by [`DropCause::index`].
    pub drops: [u64; DropCause::COUNT],
}

impl Counters {
    const ZERO: Counters = Counters {
        forwarded_to_uplink: 0,
        forwarded_to_clients: 0,
        fragmented: 0,
        echo_replies: 0,
        icmp_errors: 0,
        icmp_rate_limited: 0,
        icmp_not_allowed: 0,
        held: 0,
        reassembled: 0,
        consumed: 0,
        drops: [0; DropCause::COUNT],
    };

    /// Frames dropped for `cause`.
    #[must_use]
    pub const fn dropped(&self, cause: DropCause) -> u64 {
        self.drops[cause.index()]
    }

    /// Frames dropped, all causes.
    #[must_use]
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().sum()
    }

    #[inline(always)]
    fn count(&mut self, d: &Decision) {
        match d {
            Decision::Forward { to: Egress::Uplink, .. } => self.forwarded_to_uplink += 1,
            Decision::Forward { to: Egress::Client(_), .. } => self.forwarded_to_clients += 1,
            Decision::Fragment { .. } => self.fragmented += 1,
            Decision::Reply { dropped: None, .. } => self.echo_replies += 1,
            Decision::Reply { dropped: Some(c), .. } => {
                self.icmp_errors += 1;
                self.drops[c.index()] += 1;
            }
            Decision::Held => self.held += 1,
            Decision::Consumed => self.consumed += 1,
            Decision::Drop(c) => self.drops[c.index()] += 1,
        }
    }
}

/// Whether `dst` can be forwarded to: a single host, and not the directed broadcast of the
/// uplink's subnet.
fn is_unicast(dst: Ipv4Addr, uplink: Option<&UplinkConfig>) -> bool {
    if !netstack::ip::ipv4_is_single_host(dst) || dst.octets()[0] == 0 {
        return false;
    }
    match uplink {
        Some(u) if u.netmask != Ipv4Addr::BROADCAST => {
            let m = u.netmask.to_bits();
            dst.to_bits() != (u.addr.to_bits() & m) | !m
        }
        _ => true,
    }
}
