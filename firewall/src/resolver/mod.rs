//! The `dsthost` resolver: a state machine without I/O that keeps the A and AAAA addresses
//! of the names client rule sets use.
//!
//! - The caller drives it: [`Resolver::poll`] writes the next due DNS query (a whole
//!   Ethernet/IPv4/UDP frame for the uplink) into the caller's buffer; [`Resolver::handle_reply`]
//!   consumes a UDP payload that arrived on the uplink for the resolver's port.
//! - Names are shared between clients: [`Resolver::register`] / [`Resolver::release`] count the
//!   rule sets naming each one, and a rule set maps its [`HostId`]s to [`NameSlot`]s
//!   ([`HostMap`]); [`ClientHosts`] is the [`HostResolutions`] view the matcher uses.
//! - Every query goes to one of the DNS servers (the first try to the primary, retries
//!   alternate), with a fresh 16-bit id from the caller's CSPRNG. A reply is accepted only if
//!   it comes from that server's address and port 53 to the resolver's port, carries the id,
//!   is a response (QR, opcode 0) and echoes the question (name case-insensitively, type,
//!   class IN). Anything else is counted and ignored, so a forged reply must guess the id
//!   and come from the right address.
//! - Addresses are kept for the smallest TTL of the records used, clamped to
//!   [`Timers::ttl_floor`]..=[`Timers::ttl_ceiling`] (a zero TTL cannot make us query in a
//!   loop, a huge one cannot pin a stale answer). A name is re-resolved when ¾ of that time
//!   has passed; the old addresses stay valid until they expire.
//! - **Fail closed**: a name whose lookup failed (timeouts on both servers, NXDOMAIN, no
//!   address, malformed replies) and has no unexpired addresses is [`Resolution::Failed`];
//!   the matcher then drops the flows such a rule decides ([`crate::rules::DropReason::HostFailed`]).
//!   A name that could not get a cache slot is reported failed too.
//! - A truncated (TC) reply is used as far as it goes and marks the list incomplete
//!   (no TCP fallback); the matcher treats incomplete lists conservatively.
//! - The source port is one random port per resolver (the caller reserves it in connection
//!   tracking); the per-query id is the remaining entropy (no per-query port randomisation).

use core::net::{IpAddr, Ipv4Addr};

use heapless::{String, Vec};
use netstack::builder;
use netstack::dns::{self, RecordData, Section};
use netstack::ethernet::EthernetAddress;

use crate::config::{MAX_ADDRS_PER_HOST, MAX_HOST_NAME_LEN, MAX_HOSTS_PER_CLIENT, RESOLVER_NAMES};
use crate::rules::{HostId, HostResolutions, Resolution, RuleSet};

#[cfg(test)]
mod tests;

const SEC: u64 = 1_000_000_000;

/// Timing of the resolver (nanoseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// Shortest time addresses are kept, whatever the TTL says.
    pub ttl_floor: u64,
    /// Longest time addresses are kept, whatever the TTL says.
    pub ttl_ceiling: u64,
    /// How long to wait for a reply before retrying.
    pub timeout: u64,
    /// Tries per query (alternating between the servers).
    pub tries: u8,
    /// After a failed lookup, when to try again.
    pub retry_after: u64,
}

impl Timers {
    /// Defaults: keep addresses 30 s to 1 h, 2 s per try, 4 tries, retry failures after 30 s.
    pub const DEFAULT: Timers =
        Timers { ttl_floor: 30 * SEC, ttl_ceiling: 3600 * SEC, timeout: 2 * SEC, tries: 4, retry_after: 30 * SEC };
}

/// Where a name lives in the resolver's cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NameSlot(u16);

/// A rule set's map from [`HostId`] to [`NameSlot`] (`None`: no slot could be had; the name
/// counts as failed).
pub type HostMap = Vec<Option<NameSlot>, MAX_HOSTS_PER_CLIENT>;

/// Why a reply was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplyRejected {
    /// Not a DNS response we can parse, or not QR / opcode 0.
    Malformed,
    /// No outstanding query has this id.
    UnknownId,
    /// The id matches but the reply did not come from that query's server, port 53.
    WrongSource,
    /// The question is not the one asked.
    WrongQuestion,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Queries sent (tries included).
    pub queries: u64,
    /// Replies accepted.
    pub replies: u64,
    /// Replies rejected: malformed.
    pub rejected_malformed: u64,
    /// Replies rejected: unknown id.
    pub rejected_id: u64,
    /// Replies rejected: wrong source address or port.
    pub rejected_source: u64,
    /// Replies rejected: wrong question.
    pub rejected_question: u64,
    /// Queries that got no reply in time.
    pub timeouts: u64,
    /// Lookups that ended with addresses.
    pub resolved: u64,
    /// Lookups that ended without addresses.
    pub failed: u64,
    /// Names refused for lack of a cache slot.
    pub no_slot: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Unresolved,
    Failed,
    Resolved,
}

#[derive(Clone, Copy, Debug)]
struct Query {
    qtype: dns::Type,
    id: u16,
    server: Ipv4Addr,
    deadline: u64,
    tries: u8,
    /// Sent at least once and waiting.
    waiting: bool,
    done: bool,
}

#[derive(Clone, Debug)]
struct Lookup {
    queries: [Query; 2],
    addrs: Vec<IpAddr, MAX_ADDRS_PER_HOST>,
    complete: bool,
    min_ttl: u32,
}

#[derive(Clone, Debug)]
struct Entry {
    refs: u16,
    name: String<MAX_HOST_NAME_LEN>,
    state: State,
    addrs: Vec<IpAddr, MAX_ADDRS_PER_HOST>,
    complete: bool,
    expires: u64,
    /// When the next lookup starts (refresh, or retry after a failure).
    next_lookup: u64,
    /// A lookup is under way, in `lookup` (a flag rather than an `Option`, whose `None`
    /// would be a nonzero niche value: a free entry is all zero bytes, so the engine's
    /// `static` stays in `.bss`).
    looking: bool,
    lookup: Lookup,
}

impl Entry {
    /// `complete` is only read in state `Resolved`, which sets it.
    const FREE: Entry = Entry {
        refs: 0,
        name: String::new(),
        state: State::Unresolved,
        addrs: Vec::new(),
        complete: false,
        expires: 0,
        next_lookup: 0,
        looking: false,
        lookup: Lookup::IDLE,
    };
}

impl Query {
    const IDLE: Query = Query {
        qtype: dns::Type::A,
        id: 0,
        server: Ipv4Addr::UNSPECIFIED,
        deadline: 0,
        tries: 0,
        waiting: false,
        done: false,
    };
}

impl Lookup {
    /// The unused lookup of an entry that is not looking anything up (never read).
    const IDLE: Lookup = Lookup { queries: [Query::IDLE; 2], addrs: Vec::new(), complete: false, min_ttl: 0 };
}

/// The resolver: [`RESOLVER_NAMES`] cached names.
pub struct Resolver {
    entries: [Entry; RESOLVER_NAMES],
    servers: [Option<Ipv4Addr>; 2],
    port: u16,
    /// `None`: [`Timers::DEFAULT`] (so that a new resolver is all zero bytes).
    timers: Option<Timers>,
    cursor: usize,
    stats: Stats,
}

impl Default for Resolver {
    fn default() -> Self {
        Self::new()
    }
}

impl Resolver {
    /// An empty resolver without servers, on port 0 (set one with [`Resolver::set_port`]).
    #[must_use]
    pub const fn new() -> Self {
        Self {
            entries: [const { Entry::FREE }; RESOLVER_NAMES],
            servers: [None, None],
            port: 0,
            timers: None,
            cursor: 0,
            stats: Stats {
                queries: 0,
                replies: 0,
                rejected_malformed: 0,
                rejected_id: 0,
                rejected_source: 0,
                rejected_question: 0,
                timeouts: 0,
                resolved: 0,
                failed: 0,
                no_slot: 0,
            },
        }
    }

    /// The DNS servers (primary, secondary). Changing them restarts every lookup.
    pub fn set_servers(&mut self, servers: [Option<Ipv4Addr>; 2]) {
        if self.servers != servers {
            self.servers = servers;
            for e in &mut self.entries {
                e.looking = false;
                e.next_lookup = 0;
            }
        }
    }

    /// The UDP source port of the queries (choose it at random and reserve it in
    /// connection tracking). Outstanding queries are abandoned and restarted.
    pub fn set_port(&mut self, port: u16) {
        self.port = port;
        for e in &mut self.entries {
            e.looking = false;
            e.next_lookup = 0;
        }
    }

    /// The source port.
    #[must_use]
    pub const fn port(&self) -> u16 {
        self.port
    }

    /// Replace the timers.
    pub fn set_timers(&mut self, timers: Timers) {
        self.timers = Some(timers);
    }

    /// The timers in force.
    #[must_use]
    pub const fn timers(&self) -> &Timers {
        match &self.timers {
            Some(t) => t,
            None => &Timers::DEFAULT,
        }
    }

    /// The counters.
    #[must_use]
    pub const fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Take a reference to `name` (lower-cased; an existing entry is shared). `None` when
    /// the cache is full of names in use.
    pub fn register(&mut self, name: &str) -> Option<NameSlot> {
        if name.len() > MAX_HOST_NAME_LEN {
            self.stats.no_slot += 1;
            return None;
        }
        if let Some(i) = self.entries.iter().position(|e| e.refs > 0 && e.name.eq_ignore_ascii_case(name)) {
            self.entries[i].refs += 1;
            return Some(NameSlot(i as u16));
        }
        let Some(i) = self.entries.iter().position(|e| e.refs == 0) else {
            self.stats.no_slot += 1;
            return None;
        };
        let e = &mut self.entries[i];
        *e = Entry::FREE;
        for c in name.chars() {
            // Fits: checked length, and rule names are ASCII.
            let _ = e.name.push(c.to_ascii_lowercase());
        }
        e.refs = 1;
        Some(NameSlot(i as u16))
    }

    /// Drop a reference taken with [`Resolver::register`]; the entry is forgotten with
    /// the last one.
    pub fn release(&mut self, slot: NameSlot) {
        if let Some(e) = self.entries.get_mut(usize::from(slot.0)) {
            e.refs = e.refs.saturating_sub(1);
            if e.refs == 0 {
                *e = Entry::FREE;
            }
        }
    }

    /// Register every `dsthost` of `rules` into a [`HostMap`].
    pub fn register_rule_set(&mut self, rules: &RuleSet) -> HostMap {
        let mut map = HostMap::new();
        for (_, name) in rules.hosts() {
            let slot = self.register(name);
            // At most MAX_HOSTS_PER_CLIENT hosts per rule set: fits.
            let _ = map.push(slot);
        }
        map
    }

    /// Release every name of `map` and empty it.
    pub fn release_map(&mut self, map: &mut HostMap) {
        for slot in map.iter().flatten() {
            self.release(*slot);
        }
        map.clear();
    }

    /// What is known of `slot`'s name.
    #[must_use]
    pub fn resolution(&self, slot: NameSlot) -> Resolution<'_> {
        let Some(e) = self.entries.get(usize::from(slot.0)).filter(|e| e.refs > 0) else {
            return Resolution::Failed;
        };
        match e.state {
            State::Unresolved => Resolution::Unresolved,
            State::Failed => Resolution::Failed,
            State::Resolved => Resolution::Resolved { addrs: &e.addrs, complete: e.complete },
        }
    }

    /// Expire addresses and start lookups that are due (called by [`Resolver::poll`]).
    fn tick(&mut self, now: u64) {
        for e in self.entries.iter_mut().filter(|e| e.refs > 0) {
            if e.state == State::Resolved && now >= e.expires {
                // Fail closed: nothing valid any more, and the refresh has not succeeded.
                e.state = if e.looking { State::Unresolved } else { State::Failed };
                e.addrs.clear();
            }
            if !e.looking && now >= e.next_lookup {
                let q = |qtype| Query {
                    qtype,
                    id: 0,
                    server: Ipv4Addr::UNSPECIFIED,
                    deadline: 0,
                    tries: 0,
                    waiting: false,
                    done: false,
                };
                e.lookup = Lookup {
                    queries: [q(dns::Type::A), q(dns::Type::Aaaa)],
                    addrs: Vec::new(),
                    complete: true,
                    min_ttl: u32::MAX,
                };
                e.looking = true;
            }
        }
    }

    /// The next DNS query to send, written as a whole frame into `out` (from `src_mac` and
    /// `src` to `dst_mac`, the uplink gateway); returns its length. Call it until it returns
    /// `None` (nothing due, no server, no port, or `out` too small — the query is then
    /// retried on a later call). `rng` is the appliance's CSPRNG (query ids).
    pub fn poll(
        &mut self,
        now: u64,
        out: &mut [u8],
        src_mac: EthernetAddress,
        dst_mac: EthernetAddress,
        src: Ipv4Addr,
        rng: &mut impl FnMut() -> u32,
    ) -> Option<usize> {
        let servers = self.servers;
        if self.port == 0 || servers.iter().all(Option::is_none) {
            return None;
        }
        self.tick(now);
        let timers = *self.timers();
        for k in 0..RESOLVER_NAMES {
            let i = (self.cursor + k) % RESOLVER_NAMES;
            let e = &mut self.entries[i];
            if e.refs == 0 {
                continue;
            }
            if !e.looking {
                continue;
            }
            let l = &mut e.lookup;
            for q in &mut l.queries {
                if q.done || (q.waiting && now < q.deadline) {
                    continue;
                }
                if q.waiting {
                    self.stats.timeouts += 1;
                    q.waiting = false;
                }
                if q.tries >= timers.tries {
                    q.done = true;
                    continue;
                }
                // Tries alternate between the servers, primary first; a missing one is skipped.
                let pick = usize::from(q.tries) % 2;
                let Some(server) = servers[pick].or(servers[1 - pick]) else { continue };
                let id = rng() as u16;
                let n = builder::dns_query_ipv4(out, src_mac, dst_mac, (src, self.port), server, id, &e.name, q.qtype)
                    .ok()?;
                q.id = id;
                q.server = server;
                q.tries += 1;
                q.waiting = true;
                q.deadline = now.saturating_add(timers.timeout);
                self.stats.queries += 1;
                self.cursor = i;
                return Some(n);
            }
            if l.queries.iter().all(|q| q.done) {
                Self::finish(e, now, &timers, &mut self.stats);
            }
        }
        None
    }

    /// The earliest time something is due (a retry, a refresh, an expiry), if any.
    #[must_use]
    pub fn next_deadline(&self) -> Option<u64> {
        let mut best: Option<u64> = None;
        let mut note = |t: u64| best = Some(best.map_or(t, |b| b.min(t)));
        for e in self.entries.iter().filter(|e| e.refs > 0) {
            if e.looking {
                for q in e.lookup.queries.iter().filter(|q| !q.done) {
                    note(if q.waiting { q.deadline } else { 0 });
                }
            } else {
                note(e.next_lookup);
            }
            if e.state == State::Resolved {
                note(e.expires);
            }
        }
        best
    }

    /// A lookup has ended: install its addresses or record the failure.
    fn finish(e: &mut Entry, now: u64, timers: &Timers, stats: &mut Stats) {
        if !e.looking {
            return;
        }
        e.looking = false;
        let l = core::mem::replace(&mut e.lookup, Lookup::IDLE);
        if l.addrs.is_empty() {
            stats.failed += 1;
            if e.state != State::Resolved {
                e.state = State::Failed;
            }
            // Keep any unexpired addresses; try again later, before they expire if possible.
            let retry = now.saturating_add(timers.retry_after);
            e.next_lookup = if e.state == State::Resolved { retry.min(e.expires) } else { retry };
        } else {
            stats.resolved += 1;
            let ttl = (u64::from(l.min_ttl) * SEC).clamp(timers.ttl_floor, timers.ttl_ceiling);
            e.addrs = l.addrs;
            e.complete = l.complete;
            e.state = State::Resolved;
            e.expires = now.saturating_add(ttl);
            e.next_lookup = now.saturating_add(ttl / 4 * 3);
        }
    }

    /// Consume a UDP payload that arrived on the uplink from `src`:`src_port` to the
    /// resolver's port. On `Err` nothing changed.
    ///
    /// # Errors
    ///
    /// [`ReplyRejected`] says why the reply was ignored (also counted).
    pub fn handle_reply(&mut self, src: Ipv4Addr, src_port: u16, msg: &[u8], now: u64) -> Result<(), ReplyRejected> {
        let r = self.accept_reply(src, src_port, msg, now);
        match r {
            Ok(()) => self.stats.replies += 1,
            Err(ReplyRejected::Malformed) => self.stats.rejected_malformed += 1,
            Err(ReplyRejected::UnknownId) => self.stats.rejected_id += 1,
            Err(ReplyRejected::WrongSource) => self.stats.rejected_source += 1,
            Err(ReplyRejected::WrongQuestion) => self.stats.rejected_question += 1,
        }
        r
    }

    fn accept_reply(&mut self, src: Ipv4Addr, src_port: u16, msg: &[u8], now: u64) -> Result<(), ReplyRejected> {
        let p = dns::Packet::new_checked(msg).map_err(|_| ReplyRejected::Malformed)?;
        if !p.is_response() || p.opcode() != 0 {
            return Err(ReplyRejected::Malformed);
        }
        let id = p.id();
        let mut found = None;
        let mut wrong_source = false;
        for (i, e) in self.entries.iter().enumerate().filter(|(_, e)| e.refs > 0) {
            if !e.looking {
                continue;
            }
            let l = &e.lookup;
            for (j, q) in l.queries.iter().enumerate() {
                if q.waiting && !q.done && q.id == id {
                    if q.server == src && src_port == 53 {
                        found = Some((i, j));
                    } else {
                        wrong_source = true;
                    }
                }
            }
        }
        let Some((i, j)) = found else {
            return Err(if wrong_source { ReplyRejected::WrongSource } else { ReplyRejected::UnknownId });
        };
        let e = &self.entries[i];
        if !e.looking {
            return Err(ReplyRejected::UnknownId);
        }
        let l = &e.lookup;
        let qtype = l.queries[j].qtype;
        // The question must be ours, exactly one.
        if p.question_count() != 1 {
            return Err(ReplyRejected::WrongQuestion);
        }
        match p.questions().next() {
            Some(Ok(q)) if q.qtype == qtype && q.qclass == dns::CLASS_IN && q.name.eq_dotted(&e.name) => {}
            Some(Ok(_)) => return Err(ReplyRejected::WrongQuestion),
            _ => return Err(ReplyRejected::Malformed),
        }
        let truncated = p.flags() & dns::flags::TC != 0;
        // The names the answer may legitimately speak of: ours and its CNAME chain.
        let mut chain: Vec<String<MAX_HOST_NAME_LEN>, 8> = Vec::new();
        let _ = chain.push(e.name.clone());
        let mut grew = true;
        while grew {
            grew = false;
            for rec in p.answers() {
                let Ok(rec) = rec else { break };
                let RecordData::Cname(target) = rec.data else { continue };
                if rec.rclass == dns::CLASS_IN && owner_in(&rec.name, &chain) && !owner_in(&target, &chain) {
                    let mut buf = [0u8; dns::MAX_NAME_LEN];
                    if let Ok(n) = target.write_dotted(&mut buf)
                        && let Ok(s) = core::str::from_utf8(&buf[..n])
                    {
                        let mut t = String::new();
                        if t.push_str(s).is_ok() && chain.push(t).is_ok() {
                            grew = true;
                        }
                    }
                }
            }
        }
        let mut addrs: Vec<IpAddr, MAX_ADDRS_PER_HOST> = Vec::new();
        let mut complete = !truncated;
        let mut min_ttl = u32::MAX;
        let mut malformed = false;
        for rec in p.records() {
            let Ok((section, rec)) = rec else {
                malformed = true;
                break;
            };
            if section != Section::Answer || rec.rclass != dns::CLASS_IN || !owner_in(&rec.name, &chain) {
                continue;
            }
            let addr: IpAddr = match (rec.data, qtype) {
                (RecordData::A(a), dns::Type::A) => a.into(),
                (RecordData::Aaaa(a), dns::Type::Aaaa) => a.into(),
                (RecordData::Cname(_), _) => {
                    min_ttl = min_ttl.min(rec.ttl);
                    continue;
                }
                _ => continue,
            };
            min_ttl = min_ttl.min(rec.ttl);
            if !addrs.contains(&addr) && addrs.push(addr).is_err() {
                complete = false;
            }
        }
        if malformed {
            // A reply cut short: use what parsed only if the server said it was truncated.
            if !truncated {
                return Err(ReplyRejected::Malformed);
            }
            complete = false;
        }
        let timers = *self.timers();
        let e = &mut self.entries[i];
        if !e.looking {
            return Err(ReplyRejected::UnknownId);
        }
        let l = &mut e.lookup;
        let q = &mut l.queries[j];
        q.waiting = false;
        q.done = true;
        for a in addrs {
            if !l.addrs.contains(&a) && l.addrs.push(a).is_err() {
                l.complete = false;
            }
        }
        l.complete &= complete;
        l.min_ttl = l.min_ttl.min(min_ttl);
        if l.queries.iter().all(|q| q.done) {
            Self::finish(e, now, &timers, &mut self.stats);
        }
        Ok(())
    }
}

fn owner_in(name: &dns::Name<'_>, chain: &[String<MAX_HOST_NAME_LEN>]) -> bool {
    chain.iter().any(|c| name.eq_dotted(c))
}

/// One rule set's view of the resolver, for the matcher ([`crate::rules::MatchContext::hosts`]).
pub struct ClientHosts<'a> {
    /// The resolver.
    pub resolver: &'a Resolver,
    /// The rule set's map.
    pub map: &'a [Option<NameSlot>],
}

impl HostResolutions for ClientHosts<'_> {
    fn resolution(&self, id: HostId) -> Resolution<'_> {
        match self.map.get(id.index()) {
            Some(Some(slot)) => self.resolver.resolution(*slot),
            // No slot could be had: fail closed.
            Some(None) => Resolution::Failed,
            None => Resolution::Unresolved,
        }
    }
}
