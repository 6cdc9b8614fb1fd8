//! The flow table: fixed-capacity storage, a keyed-hash index over both tuples of every flow,
//! per-client accounting, the eviction policy, flush, rule-driven removal and expiry.
//!
//! Layout: `N` entries (never-used ones above a high-water mark, removed ones on a free list)
//! and an open-addressing index of `B` buckets (linear probing, backward-shift deletion, so no
//! tombstones). Each flow has two index buckets: its original tuple (as the client sends) and
//! its reply tuple (as the remote answers the NAT'd packet). A bucket is one `u64`: the low 32
//! bits of the tuple's SipHash-1-3 (keyed with the appliance's secret: clients choose tuples, so
//! they must not be able to aim collisions) and the entry number plus one with the direction
//! bit (0 is an empty bucket).
//!
//! **An empty table is all zero bytes** ([`Conntrack::new`]): every "none" (empty bucket, list
//! end, free cache slot) is 0, entry references are stored plus one, and settings left at
//! their defaults are stored as "unset". The appliance keeps the engine in a `static`, which
//! the linker then puts in `.bss` instead of writing megabytes of initial values into the
//! image (`tests/zero_init.rs` checks it).
//!
//! **Eviction policy.** Flows that are cheap to lose are *evictable* ([`FlowState::evictable`]:
//! unreplied, or TCP in `TimeWait`/`Close`); they sit on two lists in the order they became
//! evictable (a global one and their client's). Replied and established flows are on no list
//! and are never evicted to make room: they leave only by expiry, close, flush or rule update.
//! A new flow of client `C` is admitted as follows:
//!
//! 1. `C` holds its quota: `C`'s oldest evictable flow is evicted (`evicted_quota`); if `C` has
//!    none, the new flow is refused (`refused_quota`). Other clients are never touched.
//! 2. The table is full: the oldest evictable flow of any client is evicted (`evicted_full`);
//!    if there is none, the new flow is refused (`refused_full`). An established flow of
//!    another client is never evicted.
//!
//! An expired flow found at the head of a list is reclaimed first and counted as `expired`;
//! when nothing is evictable, up to 256 slots are swept for expired flows before refusing
//! (the periodic [`Conntrack::expire`] sweep does the rest).

use core::net::Ipv4Addr;

use super::state::{Dir, FlowState};
use super::timeouts::Timeouts;
use super::tuple::Tuple;
use super::{ClientId, Refusal, Stats};
use crate::config::{CONNTRACK_CLIENT_QUOTA, MAX_CLIENTS};
use crate::rules::{Flow, IPPROTO_ICMP};

/// An empty index bucket (a used one holds an entry number plus one, so is never 0).
const EMPTY: u64 = 0;

/// Slots an admission examines for expired flows when nothing is evictable, before refusing.
const SWEEP_ON_FULL: usize = 256;

/// Entries of the flow cache in front of the keyed index (a power of two).
const FLOW_CACHE: usize = 1024;

/// One tracked flow: 64 bytes, aligned so that a flow is one cache line.
#[derive(Clone, Copy, Debug)]
#[repr(align(64))]
pub(crate) struct Entry {
    /// The tuple as the client sends it.
    pub(crate) orig: Tuple,
    /// Source address after NAT.
    pub(crate) nat_addr: Ipv4Addr,
    /// Source port (ICMP: identifier) after NAT.
    pub(crate) nat_port: u16,
    /// Deadline (ns) after which the flow is gone.
    pub(crate) expires: u64,
    /// The index tags (keyed hashes) of the original and reply tuples, kept so that removing
    /// the flow does not hash again.
    orig_tag: u32,
    reply_tag: u32,
    pub(crate) client: u16,
    pub(crate) state: FlowState,
    pub(crate) live: bool,
    evictable: bool,
    /// Global evictable list (or the free list, through `g_next`).
    g_prev: Link,
    g_next: Link,
    /// The client's evictable list.
    c_prev: Link,
    c_next: Link,
}

/// A reference to an entry from a list (a link, a list end, the free list): the entry number
/// plus one, 0 for none, so that an empty table is all zero bytes. Entry numbers are below
/// `N` < 2^31: the sum never overflows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Link(u32);

impl Link {
    const NONE: Link = Link(0);

    const fn to(idx: u32) -> Link {
        Link(idx + 1)
    }

    const fn get(self) -> Option<u32> {
        self.0.checked_sub(1)
    }
}

impl Entry {
    const FREE: Entry = Entry {
        orig: Tuple::ZERO,
        nat_addr: Ipv4Addr::UNSPECIFIED,
        nat_port: 0,
        expires: 0,
        orig_tag: 0,
        reply_tag: 0,
        client: 0,
        state: FlowState::Udp { replied: false },
        live: false,
        evictable: false,
        g_prev: Link::NONE,
        g_next: Link::NONE,
        c_prev: Link::NONE,
        c_next: Link::NONE,
    };

    /// The tuple of the remote's answers: from the remote to the NAT address and port.
    pub(crate) const fn reply(&self) -> Tuple {
        Tuple {
            proto: self.orig.proto,
            src: self.orig.dst,
            src_port: self.orig.dst_port,
            dst: self.nat_addr,
            dst_port: self.nat_port,
        }
    }

    #[inline]
    fn tuple(&self, dir: Dir) -> Tuple {
        match dir {
            Dir::Original => self.orig,
            Dir::Reply => self.reply(),
        }
    }

    /// What the rules see of this flow.
    pub(crate) fn flow(&self) -> Flow {
        // An ICMP flow is an echo request (type 8), the only ICMP that opens one.
        let icmp_type = if self.orig.proto == IPPROTO_ICMP { 8 } else { 0 };
        Flow::new(self.orig.dst.into(), self.orig.proto, self.orig.dst_port, icmp_type)
    }
}

/// An entry's list links, read out for unlinking it.
struct Links {
    g_prev: Link,
    g_next: Link,
    c_prev: Link,
    c_next: Link,
}

#[derive(Clone, Copy, Debug)]
struct ClientSlot {
    count: u32,
    head: Link,
    tail: Link,
}

const fn dir_bit(dir: Dir) -> u64 {
    match dir {
        Dir::Original => 0,
        Dir::Reply => 1,
    }
}

/// SipHash-1-3 keyed with `key` of a tuple's 13 bytes ([`Tuple::to_bytes`]): the same value
/// as `siphasher`'s `SipHasher13::hash` (a test compares them), written out for this one input
/// length so that it compiles to straight-line code (one message block, the last block with
/// the length, then the finalisation: five SipRounds).
///
/// Why SipHash and not a cheaper multiply-xorshift: clients choose their tuples (ports freely,
/// addresses within what the rules allow), and with an unkeyed or weakly keyed hash they could
/// aim many flows at one probe run of the index and make every lookup of every client slow.
/// SipHash is a PRF under its 128-bit key (the appliance's secret, from its CSPRNG), so the
/// bucket of a tuple cannot be predicted or learnt from timing better than by guessing; 1-3
/// (one compression round, three finalisation rounds) is the variant Rust's std and Linux's
/// `hsiphash` use for hash tables. The flow cache in front of it takes most lookups of
/// established flows anyway.
fn siphash13_tuple(key: (u64, u64), b: &[u8; 13]) -> u64 {
    #[inline(always)]
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let (k0, k1) = key;
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let m0 = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    // The last block: the 5 remaining bytes, and the input length (13) in the top byte.
    let m1 = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], 0, 0, 13]);
    for m in [m0, m1] {
        v[3] ^= m;
        round(&mut v);
        v[0] ^= m;
    }
    v[2] ^= 0xff;
    round(&mut v);
    round(&mut v);
    round(&mut v);
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// An index bucket: the hash tag, the entry number plus one (so never [`EMPTY`]) and the
/// direction bit.
const fn bucket(tag: u32, idx: u32, dir: Dir) -> u64 {
    ((tag as u64) << 32) | (((idx + 1) as u64) << 1) | dir_bit(dir)
}

/// Connection tracking and source NAT for up to `N` flows, indexed by `B` buckets (a power of
/// two ≥ 4·`N`, so that the index is at most half full and probe runs stay short). [`super::DefaultConntrack`] is the appliance's size.
///
/// Build it once (`const fn new`, e.g. in a `static`), key it with [`Conntrack::rekey`] from
/// the CSPRNG and give it the uplink address with [`Conntrack::set_nat_address`]. The packet
/// operations are in [`super::track`]; time is only what callers pass as `now` (ns, monotonic).
pub struct Conntrack<const N: usize, const B: usize> {
    pub(crate) entries: [Entry; N],
    index: [u64; B],
    key: (u64, u64),
    /// Removed entries, through `g_next` (taken before the never-used ones).
    free_head: Link,
    /// Entries at or above this number were never used (the free list's tail, implicitly).
    unused: u32,
    len: u32,
    head: Link,
    tail: Link,
    clients: [ClientSlot; MAX_CLIENTS],
    /// The per-client quota; 0 (never set) is the default, [`CONNTRACK_CLIENT_QUOTA`] capped at `N`.
    quota: u32,
    /// `None`: [`Timeouts::LINUX`].
    timeouts: Option<Timeouts>,
    pub(crate) nat_addr: Option<Ipv4Addr>,
    pub(crate) reserved_ports: Option<(u16, u16)>,
    cursor: usize,
    /// Direct-mapped cache of recent lookups (entry number plus one and direction bit, or 0),
    /// indexed by an unkeyed hash of the tuple: a hit skips the SipHash of the index. A hit
    /// is only taken when the cached entry is live and has exactly this tuple, so a stale or
    /// colliding slot only costs a miss (a client that aims collisions at it gets the keyed
    /// path, never a wrong flow).
    cache: [u32; FLOW_CACHE],
    pub(crate) stats: Stats,
}

impl<const N: usize, const B: usize> Default for Conntrack<N, B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize, const B: usize> Conntrack<N, B> {
    /// An empty table with Linux's timeouts, the default client quota (capped at `N`), an
    /// all-zero hash key (call [`Conntrack::rekey`] before use) and no NAT address. Its value
    /// is all zero bytes (see the module docs).
    #[must_use]
    pub const fn new() -> Self {
        const { assert!(N > 0 && N < (1 << 31) && B.is_power_of_two() && B >= 4 * N && B <= (1 << 32)) };
        Self {
            entries: [Entry::FREE; N],
            index: [EMPTY; B],
            key: (0, 0),
            free_head: Link::NONE,
            unused: 0,
            len: 0,
            head: Link::NONE,
            tail: Link::NONE,
            clients: [ClientSlot { count: 0, head: Link::NONE, tail: Link::NONE }; MAX_CLIENTS],
            quota: 0,
            timeouts: None,
            nat_addr: None,
            reserved_ports: None,
            cursor: 0,
            cache: [0; FLOW_CACHE],
            stats: Stats::ZERO,
        }
    }

    /// Forget every flow and use a new SipHash key (from the appliance's CSPRNG).
    pub fn rekey(&mut self, key: [u8; 16]) {
        self.clear();
        let (a, b) = key.split_at(8);
        let mut k0 = [0u8; 8];
        let mut k1 = [0u8; 8];
        k0.copy_from_slice(a);
        k1.copy_from_slice(b);
        self.key = (u64::from_le_bytes(k0), u64::from_le_bytes(k1));
    }

    /// Forget every flow (counters are kept).
    pub fn clear(&mut self) {
        for i in 0..N {
            if self.entries[i].live {
                self.remove(i as u32);
            }
        }
    }

    /// Set the address client flows are translated to (the uplink's). A change forgets every
    /// flow: their translations would be wrong.
    pub fn set_nat_address(&mut self, addr: Option<Ipv4Addr>) {
        if self.nat_addr != addr {
            self.clear();
            self.nat_addr = addr;
        }
    }

    /// Keep NAT from ever choosing a TCP/UDP source port in `lo..=hi` (the ports the appliance's
    /// own sockets on the uplink address use, e.g. the resolver's), even to preserve a
    /// client's port.
    pub fn reserve_local_ports(&mut self, range: Option<(u16, u16)>) {
        self.reserved_ports = range;
    }

    /// Replace the timeouts (applies to each flow from its next packet on).
    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.timeouts = Some(timeouts);
    }

    /// The timeouts in force.
    #[must_use]
    pub const fn timeouts(&self) -> &Timeouts {
        match &self.timeouts {
            Some(t) => t,
            None => &Timeouts::LINUX,
        }
    }

    /// How many flows one client may hold (clamped to 1..=`N`).
    pub fn set_client_quota(&mut self, quota: u32) {
        self.quota = quota.clamp(1, N as u32);
    }

    /// The per-client quota.
    #[must_use]
    pub const fn client_quota(&self) -> u32 {
        match self.quota {
            0 if (CONNTRACK_CLIENT_QUOTA as usize) < N => CONNTRACK_CLIENT_QUOTA,
            0 => N as u32,
            q => q,
        }
    }

    /// Flows tracked.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether no flow is tracked.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The capacity `N`.
    #[must_use]
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Flows tracked for `client`.
    #[must_use]
    pub const fn client_len(&self, client: ClientId) -> usize {
        self.clients[client.index()].count as usize
    }

    /// The counters.
    #[must_use]
    pub const fn stats(&self) -> &Stats {
        &self.stats
    }

    // ----- index -----

    pub(crate) fn hash(&self, t: &Tuple) -> u32 {
        siphash13_tuple(self.key, &t.to_bytes()) as u32
    }

    /// The live, unexpired-or-not entry whose `dir` tuple is `t`.
    pub(crate) fn find(&self, t: &Tuple, dir: Dir) -> Option<u32> {
        self.find_tagged(t, self.hash(t), dir)
    }

    /// [`Conntrack::find`] with `t`'s tag computed already.
    fn find_tagged(&self, t: &Tuple, tag: u32, dir: Dir) -> Option<u32> {
        let mask = B - 1;
        let mut b = tag as usize & mask;
        loop {
            let v = self.index[b];
            if v == EMPTY {
                return None;
            }
            if (v >> 32) as u32 == tag && v & 1 == dir_bit(dir) {
                let idx = ((v as u32) >> 1) - 1;
                if self.entries[idx as usize].tuple(dir) == *t {
                    return Some(idx);
                }
            }
            b = (b + 1) & mask;
        }
    }

    fn index_insert(&mut self, tag: u32, idx: u32, dir: Dir) {
        let mask = B - 1;
        let mut b = tag as usize & mask;
        while self.index[b] != EMPTY {
            b = (b + 1) & mask;
        }
        self.index[b] = bucket(tag, idx, dir);
    }

    fn index_remove(&mut self, tag: u32, idx: u32, dir: Dir) {
        let want = bucket(tag, idx, dir);
        let mask = B - 1;
        let mut b = tag as usize & mask;
        while self.index[b] != want {
            debug_assert!(self.index[b] != EMPTY, "indexed flow missing");
            if self.index[b] == EMPTY {
                return;
            }
            b = (b + 1) & mask;
        }
        // Backward-shift deletion: pull later members of the probe run into the hole unless
        // their home bucket lies cyclically in (hole, j].
        let mut hole = b;
        let mut j = b;
        loop {
            j = (j + 1) & mask;
            let v = self.index[j];
            if v == EMPTY {
                break;
            }
            let home = (v >> 32) as usize & mask;
            let stays = if hole <= j { hole < home && home <= j } else { hole < home || home <= j };
            if !stays {
                self.index[hole] = v;
                hole = j;
            }
        }
        self.index[hole] = EMPTY;
    }

    // ----- evictable lists -----

    #[inline(never)]
    fn link(&mut self, idx: u32) {
        let c = usize::from(self.entries[idx as usize].client);
        let (gt, ct) = (self.tail, self.clients[c].tail);
        let e = &mut self.entries[idx as usize];
        e.evictable = true;
        e.g_prev = gt;
        e.g_next = Link::NONE;
        e.c_prev = ct;
        e.c_next = Link::NONE;
        match gt.get() {
            None => self.head = Link::to(idx),
            Some(t) => self.entries[t as usize].g_next = Link::to(idx),
        }
        self.tail = Link::to(idx);
        match ct.get() {
            None => self.clients[c].head = Link::to(idx),
            Some(t) => self.entries[t as usize].c_next = Link::to(idx),
        }
        self.clients[c].tail = Link::to(idx);
    }

    #[inline(never)]
    fn unlink(&mut self, idx: u32) {
        let e = &self.entries[idx as usize];
        if !e.evictable {
            return;
        }
        // The links only (not a copy of the whole entry).
        let (c, g_prev, g_next, c_prev, c_next) = (usize::from(e.client), e.g_prev, e.g_next, e.c_prev, e.c_next);
        let e = Links { g_prev, g_next, c_prev, c_next };
        match e.g_prev.get() {
            None => self.head = e.g_next,
            Some(p) => self.entries[p as usize].g_next = e.g_next,
        }
        match e.g_next.get() {
            None => self.tail = e.g_prev,
            Some(n) => self.entries[n as usize].g_prev = e.g_prev,
        }
        match e.c_prev.get() {
            None => self.clients[c].head = e.c_next,
            Some(p) => self.entries[p as usize].c_next = e.c_next,
        }
        match e.c_next.get() {
            None => self.clients[c].tail = e.c_prev,
            Some(n) => self.entries[n as usize].c_prev = e.c_prev,
        }
        let e = &mut self.entries[idx as usize];
        e.evictable = false;
        e.g_prev = Link::NONE;
        e.g_next = Link::NONE;
        e.c_prev = Link::NONE;
        e.c_next = Link::NONE;
    }

    /// Set a flow's state and deadline, moving it on or off the evictable lists.
    #[inline(always)]
    pub(crate) fn set_state(&mut self, idx: u32, state: FlowState, now: u64) {
        let was = self.entries[idx as usize].evictable;
        let is = state.evictable();
        let expires = now.saturating_add(self.timeouts().of(state));
        let e = &mut self.entries[idx as usize];
        e.state = state;
        e.expires = expires;
        if was && !is {
            self.unlink(idx);
        } else if !was && is {
            self.link(idx);
        }
    }

    // ----- allocation and removal -----

    /// Remove a live flow.
    pub(crate) fn remove(&mut self, idx: u32) {
        let e = &self.entries[idx as usize];
        debug_assert!(e.live);
        let (orig_tag, reply_tag, client) = (e.orig_tag, e.reply_tag, e.client);
        self.index_remove(orig_tag, idx, Dir::Original);
        self.index_remove(reply_tag, idx, Dir::Reply);
        self.unlink(idx);
        self.clients[usize::from(client)].count -= 1;
        self.len -= 1;
        let f = &mut self.entries[idx as usize];
        *f = Entry::FREE;
        f.g_next = self.free_head;
        self.free_head = Link::to(idx);
    }

    /// Remove `idx` to make room: counted as expired if it is, else with `evicted`.
    fn reclaim(&mut self, idx: u32, now: u64, quota: bool) {
        if self.entries[idx as usize].expires <= now {
            self.stats.expired += 1;
        } else if quota {
            self.stats.evicted_quota += 1;
        } else {
            self.stats.evicted_full += 1;
        }
        self.remove(idx);
    }

    /// Make room for a new flow of `client` (the eviction policy in the module docs).
    pub(crate) fn admit(&mut self, client: ClientId, now: u64) -> Result<(), Refusal> {
        let c = client.index();
        let quota = self.client_quota();
        if self.clients[c].count >= quota && self.clients[c].head == Link::NONE {
            self.expire(now, SWEEP_ON_FULL);
        }
        if self.clients[c].count >= quota {
            match self.clients[c].head.get() {
                None => {
                    self.stats.refused_quota += 1;
                    return Err(Refusal::QuotaFull);
                }
                Some(h) => self.reclaim(h, now, true),
            }
        }
        if self.len as usize >= N && self.head == Link::NONE {
            self.expire(now, SWEEP_ON_FULL);
        }
        if self.len as usize >= N {
            match self.head.get() {
                None => {
                    self.stats.refused_full += 1;
                    return Err(Refusal::TableFull);
                }
                Some(h) => self.reclaim(h, now, false),
            }
        }
        Ok(())
    }

    /// Insert a flow after [`Conntrack::admit`] succeeded and its reply tuple was checked
    /// free. `tags`: the tags of the original and reply tuples, if they were computed already
    /// (by the lookups that found them absent).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn insert(
        &mut self,
        client: ClientId,
        orig: Tuple,
        nat_addr: Ipv4Addr,
        nat_port: u16,
        tags: (Option<u32>, Option<u32>),
        state: FlowState,
        now: u64,
    ) -> u32 {
        // Removed entries first, then never-used ones: the order a free list threaded
        // through every entry at start would give.
        let idx = match self.free_head.get() {
            Some(i) => {
                self.free_head = self.entries[i as usize].g_next;
                i
            }
            None => {
                debug_assert!((self.unused as usize) < N, "insert without room");
                self.unused += 1;
                self.unused - 1
            }
        };
        self.entries[idx as usize] =
            Entry { orig, nat_addr, nat_port, expires: 0, client: client.get(), state, live: true, ..Entry::FREE };
        let reply = self.entries[idx as usize].reply();
        let orig_tag = tags.0.unwrap_or_else(|| self.hash(&orig));
        let reply_tag = tags.1.unwrap_or_else(|| self.hash(&reply));
        debug_assert!(orig_tag == self.hash(&orig) && reply_tag == self.hash(&reply), "stale tag");
        let e = &mut self.entries[idx as usize];
        (e.orig_tag, e.reply_tag) = (orig_tag, reply_tag);
        self.index_insert(orig_tag, idx, Dir::Original);
        self.index_insert(reply_tag, idx, Dir::Reply);
        self.clients[client.index()].count += 1;
        self.len += 1;
        self.stats.created += 1;
        // Force the list placement of the initial state.
        self.entries[idx as usize].evictable = false;
        self.set_state(idx, state, now);
        idx
    }

    /// The flow cache slot of `t` in direction `dir` (unkeyed: a hit is verified against the
    /// entry).
    #[inline]
    pub(super) fn cache_slot(t: &Tuple, dir: Dir) -> usize {
        let ports = (u32::from(t.src_port) << 16) | u32::from(t.dst_port);
        let x = t.src.to_bits() ^ t.dst.to_bits().rotate_left(16) ^ ports ^ u32::from(t.proto) ^ dir_bit(dir) as u32;
        (x.wrapping_mul(0x9e37_79b1) >> 16) as usize & (FLOW_CACHE - 1)
    }

    /// [`Conntrack::find`] through the flow cache; `tag` receives `t`'s tag if it was computed
    /// (always when the result is `None`).
    #[inline(always)]
    fn find_cached(&mut self, t: &Tuple, dir: Dir, tag: &mut Option<u32>) -> Option<u32> {
        let slot = Self::cache_slot(t, dir);
        let v = self.cache[slot];
        if v != 0 && u64::from(v & 1) == dir_bit(dir) {
            let idx = (v >> 1) - 1;
            let e = &self.entries[idx as usize];
            if e.live && e.tuple(dir) == *t {
                return Some(idx);
            }
        }
        self.find_uncached(t, dir, slot, tag)
    }

    /// A flow cache miss: the keyed index, and the cache slot `slot` filled on a hit. Out of
    /// line: the cached path is the per-packet one.
    #[inline(never)]
    fn find_uncached(&mut self, t: &Tuple, dir: Dir, slot: usize, tag: &mut Option<u32>) -> Option<u32> {
        let h = self.hash(t);
        *tag = Some(h);
        let idx = self.find_tagged(t, h, dir)?;
        self.cache[slot] = ((idx + 1) << 1) | dir_bit(dir) as u32;
        Some(idx)
    }

    /// Find the live flow whose `dir` tuple is `t`; an expired one is removed on the way.
    pub(crate) fn lookup(&mut self, t: &Tuple, dir: Dir, now: u64) -> Option<u32> {
        self.lookup_tagged(t, dir, now, &mut None)
    }

    /// [`Conntrack::lookup`]; `tag` receives `t`'s tag if it was computed.
    #[inline(always)]
    pub(crate) fn lookup_tagged(&mut self, t: &Tuple, dir: Dir, now: u64, tag: &mut Option<u32>) -> Option<u32> {
        let idx = self.find_cached(t, dir, tag)?;
        if self.entries[idx as usize].expires <= now {
            self.remove_expired(idx);
            return None;
        }
        Some(idx)
    }

    /// Remove a flow whose deadline passed (found by a lookup).
    #[cold]
    #[inline(never)]
    fn remove_expired(&mut self, idx: u32) {
        self.stats.expired += 1;
        self.remove(idx);
    }

    // ----- bulk operations -----

    /// Forget every flow of `client` (its vif went away or came up: disposable VMs reuse
    /// addresses). Returns how many. Walks the whole table (O(`N`)).
    pub fn flush_client(&mut self, client: ClientId) -> u32 {
        let n = self.retain_client(client, |_| false);
        self.stats.flushed += u64::from(n);
        n
    }

    /// Remove the flows of `client` for which `keep` is false. Returns how many. O(`N`).
    pub(crate) fn retain_client(&mut self, client: ClientId, mut keep: impl FnMut(&Flow) -> bool) -> u32 {
        let mut n = 0;
        if self.clients[client.index()].count == 0 {
            return 0;
        }
        for i in 0..N {
            let e = &self.entries[i];
            if e.live && e.client == client.get() && !keep(&e.flow()) {
                self.remove(i as u32);
                n += 1;
            }
        }
        n
    }

    /// Remove expired flows, examining at most `budget` slots from where the previous call
    /// stopped (call it from a timer; `budget` = `N` sweeps everything). Returns how many
    /// were removed.
    pub fn expire(&mut self, now: u64, budget: usize) -> u32 {
        let mut n = 0;
        for _ in 0..budget.min(N) {
            let i = self.cursor;
            self.cursor = if i + 1 == N { 0 } else { i + 1 };
            let e = &self.entries[i];
            if e.live && e.expires <= now {
                self.remove(i as u32);
                self.stats.expired += 1;
                n += 1;
            }
        }
        n
    }
}
