//! Connection tracking and source NAT (Linux `nf_conntrack` + `masquerade` semantics), in
//! fixed memory.
//!
//! - [`tuple`]: flow tuples parsed from IPv4 packets;
//! - [`state`]: the TCP state machine and the replied bit of UDP/ICMP;
//! - [`timeouts`]: idle timeouts per state (Linux's defaults, configurable);
//! - [`table`]: [`Conntrack`], the fixed-capacity flow table with its keyed-hash index,
//!   per-client quota, **eviction policy** (documented there), flush and expiry;
//! - `nat`: port choice (keep the client's port when free, else random) and in-place
//!   rewriting with incremental checksums (netstack's `nat`), `csum_blank` included;
//! - `track`: the per-packet operations [`Conntrack::outbound`] / [`Conntrack::inbound`] and
//!   the rule-update hook [`Conntrack::apply_rules`];
//! - `icmp_error`: translation of ICMP errors about tracked flows.
//!
//! Seams left for the rest of the engine: fragments are refused ([`Untrackable::Fragment`]) and
//! must be reassembled before tracking; anti-spoofing and the choice between forwarding,
//! local delivery and ICMP answers are the caller's; other protocols than TCP, UDP and ICMP
//! echo are [`Untrackable::Unsupported`].

mod icmp_error;
mod nat;
pub mod state;
pub mod table;
pub mod timeouts;
mod track;
pub mod tuple;

#[cfg(test)]
mod tests;

pub use state::{Dir, FlowState, TcpState};
pub use table::Conntrack;
pub use timeouts::Timeouts;
pub use track::{Inbound, Invalid, Outbound};
pub use tuple::{L4, Tuple, Untrackable, parse};

use crate::config::{CONNTRACK_CAPACITY, CONNTRACK_INDEX_BUCKETS, MAX_CLIENTS};

/// The appliance's table: [`CONNTRACK_CAPACITY`] flows.
pub type DefaultConntrack = Conntrack<CONNTRACK_CAPACITY, CONNTRACK_INDEX_BUCKETS>;

/// A client (vif) as connection tracking knows it: a small number below [`MAX_CLIENTS`] that
/// the appliance assigns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub(crate) u16);

impl ClientId {
    /// `None` if `n` ≥ [`MAX_CLIENTS`].
    #[must_use]
    pub const fn new(n: u16) -> Option<Self> {
        if (n as usize) < MAX_CLIENTS { Some(Self(n)) } else { None }
    }

    /// The number.
    #[must_use]
    pub const fn get(self) -> u16 {
        self.0
    }

    pub(crate) const fn index(self) -> usize {
        self.0 as usize
    }
}

/// Why an accepted new flow was not admitted (the packet is dropped silently).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The client holds its quota of flows, none of them evictable.
    QuotaFull,
    /// The table is full, no flow evictable.
    TableFull,
    /// No free NAT port was found.
    NoFreePort,
}

/// Counters (monotonic; never reset by [`Conntrack::clear`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Flows created.
    pub created: u64,
    /// Flows removed because their deadline passed.
    pub expired: u64,
    /// Evictable flows removed because their client was at its quota.
    pub evicted_quota: u64,
    /// Evictable flows removed because the table was full.
    pub evicted_full: u64,
    /// New flows refused: client at quota, nothing evictable.
    pub refused_quota: u64,
    /// New flows refused: table full, nothing evictable.
    pub refused_full: u64,
    /// New flows refused: no free NAT port.
    pub refused_no_port: u64,
    /// Flows removed by [`Conntrack::flush_client`].
    pub flushed: u64,
    /// Flows removed by a rule update ([`Conntrack::apply_rules`]).
    pub rules_removed: u64,
    /// ICMP errors translated.
    pub icmp_errors_translated: u64,
}

impl Stats {
    const ZERO: Stats = Stats {
        created: 0,
        expired: 0,
        evicted_quota: 0,
        evicted_full: 0,
        refused_quota: 0,
        refused_full: 0,
        refused_no_port: 0,
        flushed: 0,
        rules_removed: 0,
        icmp_errors_translated: 0,
    };
}
