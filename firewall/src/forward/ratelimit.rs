//! Rate limiting of the ICMP errors the firewall originates (after Linux `icmp_ratelimit` /
//! `icmp_msgs_per_sec`): a token bucket per destination of the error (the source of the
//! offending packet) in a fixed direct-mapped table, and one global bucket. A source that
//! lands on an occupied bucket takes it over with a full bucket; the global bucket bounds
//! what that can gain.

use core::net::Ipv4Addr;

use crate::config::ICMP_LIMIT_SOURCES;

const MS: u64 = 1_000_000;

/// Token-bucket parameters (nanoseconds per token, tokens of burst).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpLimits {
    /// One error per this interval to one destination (Linux `icmp_ratelimit`: 1 s).
    pub per_source_interval: u64,
    /// Burst per destination (Linux: 6).
    pub per_source_burst: u32,
    /// One error per this interval in total (Linux `icmp_msgs_per_sec` 1000: 1 ms).
    pub global_interval: u64,
    /// Global burst (Linux `icmp_msgs_burst`: 50).
    pub global_burst: u32,
}

impl IcmpLimits {
    /// Linux's defaults.
    pub const LINUX: IcmpLimits =
        IcmpLimits { per_source_interval: 1000 * MS, per_source_burst: 6, global_interval: MS, global_burst: 50 };
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Time credit (ns), at most interval × burst.
    credit: u64,
    last: u64,
}

impl Bucket {
    fn take(&mut self, now: u64, interval: u64, burst: u32) -> bool {
        let cap = interval.saturating_mul(u64::from(burst));
        self.credit = self.credit.saturating_add(now.saturating_sub(self.last)).min(cap);
        self.last = self.last.max(now);
        if self.credit >= interval {
            self.credit -= interval;
            true
        } else {
            false
        }
    }
}

/// The limiter. Its initial value is all zero bytes (`None` standing for the defaults), so
/// the engine's `static` stays in `.bss`.
pub(crate) struct IcmpLimiter {
    /// `None`: [`IcmpLimits::LINUX`].
    limits: Option<IcmpLimits>,
    /// `None`: not used yet, i.e. full for Linux's defaults ([`IcmpLimiter::INITIAL_GLOBAL`]).
    global: Option<Bucket>,
    sources: [(Option<Ipv4Addr>, Bucket); ICMP_LIMIT_SOURCES],
}

impl IcmpLimiter {
    /// The global bucket before its first use: full for Linux's defaults at time 0.
    const INITIAL_GLOBAL: Bucket =
        Bucket { credit: IcmpLimits::LINUX.global_interval * IcmpLimits::LINUX.global_burst as u64, last: 0 };

    pub(crate) const fn new() -> Self {
        Self { limits: None, global: None, sources: [(None, Bucket { credit: 0, last: 0 }); ICMP_LIMIT_SOURCES] }
    }

    pub(crate) fn set_limits(&mut self, limits: IcmpLimits) {
        self.limits = Some(limits);
    }

    pub(crate) const fn limits(&self) -> &IcmpLimits {
        match &self.limits {
            Some(l) => l,
            None => &IcmpLimits::LINUX,
        }
    }

    /// Whether an error to `dst` may be sent now. `per_source`: also charge `dst`'s bucket
    /// (Linux exempts "fragmentation needed" from it: path-MTU discovery must work).
    pub(crate) fn allow(&mut self, dst: Ipv4Addr, now: u64, per_source: bool) -> bool {
        let l = *self.limits();
        if per_source {
            let i = (dst.to_bits().wrapping_mul(0x9e37_79b9) >> 16) as usize % ICMP_LIMIT_SOURCES;
            let (who, b) = &mut self.sources[i];
            if *who != Some(dst) {
                *who = Some(dst);
                *b = Bucket { credit: l.per_source_interval.saturating_mul(u64::from(l.per_source_burst)), last: now };
            }
            if !b.take(now, l.per_source_interval, l.per_source_burst) {
                return false;
            }
        }
        self.global.get_or_insert(Self::INITIAL_GLOBAL).take(now, l.global_interval, l.global_burst)
    }
}
