//! The typed configuration read from QubesDB, and the events the appliance acts on.
//!
//! [`Config::on_db_event`] is fed every [`qubesdb::Event`](crate::qubesdb::Event) together
//! with the store; [`Config::next_event`] then yields what changed ([`ConfigEvent`]). Values
//! are parsed from the store when they are needed, so the store stays the one source of
//! truth; only what is needed to tell "changed" from "rewritten with the same value" is kept.
//!
//! Client rule sets are not kept here (each is large): on [`ConfigEvent::RulesCommitted`]
//! the appliance calls [`Config::commit_rules`] with that client's
//! [`ClientRules`], which parses the committed entries in place with `firewall::rules` or
//! fails the client closed ([`RulesFailure`], whose text goes to `/qubes-iptables-error`).

use core::fmt::{self, Write as _};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::str::FromStr;

use firewall::rules::{ClientRules, Family, RuleSetError};
use heapless::{String, Vec};

use crate::qubesdb::{Event as DbEvent, Store};

/// Where dom0 keeps the rule sets: `/qubes-firewall/<client-ip>/…`, committed by an empty
/// write to `/qubes-firewall/<client-ip>`.
pub const FIREWALL_PREFIX: &str = "/qubes-firewall/";
/// The key the firewall reports rule errors in.
pub const IPTABLES_ERROR_KEY: &str = "/qubes-iptables-error";

/// Most client addresses (both families) whose rule-update state is tracked at once: 128
/// clients with IPv4 and IPv6.
pub const TRACKED_ADDRESSES: usize = 256;
/// Commits queued between two drains of [`Config::next_event`]; more become
/// [`ConfigEvent::AllRulesCommitted`].
pub const COMMIT_QUEUE: usize = 32;

/// Our uplink: how we reach our own network VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uplink {
    /// `/qubes-ip`: our address.
    pub ip: Ipv4Addr,
    /// `/qubes-netmask` (`255.255.255.255` when absent, as Qubes' `setup-ip` assumes).
    pub netmask: Ipv4Addr,
    /// `/qubes-gateway`: the network VM's address.
    pub gateway: Ipv4Addr,
    /// `/qubes-mac`: our MAC, if given.
    pub mac: Option<[u8; 6]>,
    /// `/qubes-primary-dns`.
    pub primary_dns: Option<Ipv4Addr>,
    /// `/qubes-secondary-dns`.
    pub secondary_dns: Option<Ipv4Addr>,
}

/// What we are to our clients (the `/qubes-netvm-*` keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Downstream {
    /// `/qubes-netvm-gateway`: the address clients use as their gateway.
    pub gateway: Ipv4Addr,
    /// `/qubes-netvm-netmask` (`255.255.255.255` when absent).
    pub netmask: Ipv4Addr,
    /// `/qubes-netvm-primary-dns`: the virtual DNS address clients use.
    pub primary_dns: Option<Ipv4Addr>,
    /// `/qubes-netvm-secondary-dns`.
    pub secondary_dns: Option<Ipv4Addr>,
    /// `/qubes-netvm-gateway6`, with the `ipv6` feature.
    pub gateway6: Option<Ipv6Addr>,
}

/// `/mapped-ip/<ip>/…`: the address a client is shown as, when it differs from its real one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappedIp {
    /// `visible-ip`.
    pub visible_ip: Option<IpAddr>,
    /// `visible-gateway`.
    pub visible_gateway: Option<IpAddr>,
}

/// Bytes of `/qubes-random-seed` after base64 decoding (dom0 writes 64).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Seed {
    /// The decoded bytes; only the first `len` are meaningful.
    pub bytes: [u8; 64],
    /// How many.
    pub len: usize,
}

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Seed({} bytes)", self.len)
    }
}

/// Something the appliance must act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigEvent {
    /// The uplink addresses changed (or became complete, or incomplete): reconnect the
    /// uplink with these, or stop forwarding when `None` (see [`Config::missing`]).
    UplinkChanged(Option<Uplink>),
    /// The downstream addresses changed.
    DownstreamChanged(Option<Downstream>),
    /// `/connected-ips` or `/connected-ips6` changed: re-read [`Config::connected_ips`].
    ConnectedIpsChanged,
    /// Something under `/mapped-ip/` changed: re-read [`Config::mapped_ip`] of each client.
    MappedIpsChanged,
    /// dom0 committed (or withdrew) this client's rules: call [`Config::commit_rules`].
    RulesCommitted(IpAddr),
    /// After a full sync, or when commits came faster than they were drained: call
    /// [`Config::commit_rules`] for every client.
    AllRulesCommitted,
    /// `/qubes-random-seed` arrived: mix it into the entropy pool.
    Reseed(Seed),
}

/// Why a client's rules could not be put in force. Every variant except
/// [`RulesFailure::NotSynced`] and [`RulesFailure::UpdateInProgress`] leaves the client
/// failing closed (its traffic dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RulesFailure {
    /// The store is being refilled; the rules in force stay until
    /// [`ConfigEvent::AllRulesCommitted`].
    NotSynced,
    /// dom0 is in the middle of rewriting this client's rules; its commit will follow
    /// ([`ConfigEvent::RulesCommitted`]). The rules in force are left as they are.
    UpdateInProgress,
    /// No commit marker for this client: dom0 has not given it rules (or withdrew them).
    NotCommitted,
    /// Some of the client's entries did not fit the store: its rule set is incomplete.
    StoreFull,
    /// The rule set does not parse.
    Parse(RuleSetError),
}

impl fmt::Display for RulesFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotSynced => f.write_str("QubesDB not synchronised"),
            Self::UpdateInProgress => f.write_str("rule update in progress"),
            Self::NotCommitted => f.write_str("no rules committed"),
            Self::StoreFull => f.write_str("rules lost: QubesDB store full"),
            Self::Parse(e) => write!(f, "{e}"),
        }
    }
}

/// The `/qubes-iptables-error` text for a client: `<ip>: <reason>`, cut to fit QubesDB.
#[must_use]
pub fn iptables_error(client: IpAddr, failure: &RulesFailure) -> String<256> {
    let mut s = String::new();
    // A full string just stops: the message is cut, never lost.
    let _ = write!(s, "{client}: {failure}");
    s
}

/// The keys this configuration needs that are missing or invalid, for logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Missing {
    /// `/qubes-ip`.
    pub ip: bool,
    /// `/qubes-gateway`.
    pub gateway: bool,
    /// `/qubes-netvm-gateway`.
    pub netvm_gateway: bool,
    /// The full dump has not arrived yet (everything is awaited).
    pub sync: bool,
}

impl Missing {
    /// Whether nothing is missing.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        !(self.ip || self.gateway || self.netvm_gateway || self.sync)
    }

    /// The awaited keys' names.
    pub fn keys(&self) -> impl Iterator<Item = &'static str> {
        [
            (self.sync, "(full QubesDB sync)"),
            (self.ip, "/qubes-ip"),
            (self.gateway, "/qubes-gateway"),
            (self.netvm_gateway, "/qubes-netvm-gateway"),
        ]
        .into_iter()
        .filter_map(|(m, k)| m.then_some(k))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mark {
    /// A subtree RM or a rule write was seen and no commit yet.
    Updating,
    /// An entry of this client did not fit the store (until its next subtree RM).
    Lost,
}

#[derive(Clone, Copy, Debug, Default)]
struct Dirty {
    uplink: bool,
    downstream: bool,
    connected: bool,
    mapped: bool,
    all_rules: bool,
    seed: bool,
}

/// The configuration model.
#[derive(Clone, Debug)]
pub struct Config {
    synced: bool,
    uplink: Option<Uplink>,
    downstream: Option<Downstream>,
    seed: Option<Seed>,
    dirty: Dirty,
    commits: Vec<IpAddr, COMMIT_QUEUE>,
    marks: Vec<(IpAddr, Mark), TRACKED_ADDRESSES>,
    /// More addresses than [`TRACKED_ADDRESSES`] were marked: until the next full sync,
    /// every commit is treated as lost (fail closed).
    marks_overflowed: bool,
    /// Values that did not parse (`/qubes-ip = "garbage"`, a bad seed): counted and treated
    /// as missing.
    pub invalid_values: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

fn ipv4<const E: usize, const B: usize>(db: &Store<E, B>, key: &str, invalid: &mut u64) -> Option<Ipv4Addr> {
    let v = db.get(key)?;
    let parsed = core::str::from_utf8(v).ok().and_then(|s| Ipv4Addr::from_str(s).ok());
    if parsed.is_none() {
        *invalid += 1;
    }
    parsed
}

fn ipv6<const E: usize, const B: usize>(db: &Store<E, B>, key: &str, invalid: &mut u64) -> Option<Ipv6Addr> {
    let v = db.get(key)?;
    let parsed = core::str::from_utf8(v).ok().and_then(|s| Ipv6Addr::from_str(s).ok());
    if parsed.is_none() {
        *invalid += 1;
    }
    parsed
}

fn parse_mac(v: &[u8]) -> Option<[u8; 6]> {
    let s = core::str::from_utf8(v).ok()?;
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Decodes standard base64 (with `=` padding, no whitespace) into at most 64 bytes.
fn base64_64(v: &[u8]) -> Option<Seed> {
    if v.is_empty() || !v.len().is_multiple_of(4) {
        return None;
    }
    let mut seed = Seed { bytes: [0; 64], len: 0 };
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let chunks = v.len() / 4;
    for (i, q) in v.chunks(4).enumerate() {
        let pad = if i + 1 == chunks { q.iter().rev().take_while(|&&c| c == b'=').count() } else { 0 };
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = (n << 6) | u32::from(val(c)?);
        }
        n <<= 6 * pad as u32;
        let out = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        for &b in &out[..3 - pad] {
            *seed.bytes.get_mut(seed.len)? = b;
            seed.len += 1;
        }
    }
    Some(seed)
}

/// The client address of a `/qubes-firewall/<ip>` marker or `/qubes-firewall/<ip>/…` entry
/// (`rest` is what follows the address). The address must be in dom0's canonical text form.
fn firewall_client(path: &str) -> Option<(IpAddr, &str)> {
    let tail = path.strip_prefix(FIREWALL_PREFIX)?;
    let (ip_text, rest) = match tail.find('/') {
        Some(i) => (&tail[..i], &tail[i..]),
        None => (tail, ""),
    };
    let ip = IpAddr::from_str(ip_text).ok()?;
    let mut canon: String<48> = String::new();
    write!(canon, "{ip}").ok()?;
    (canon.as_str() == ip_text).then_some((ip, rest))
}

fn firewall_path(client: IpAddr) -> String<64> {
    let mut p = String::new();
    // 16 + 39 + 1 bytes at most: fits.
    let _ = write!(p, "{FIREWALL_PREFIX}{client}/");
    p
}

impl Config {
    /// Nothing known yet.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            synced: false,
            uplink: None,
            downstream: None,
            seed: None,
            dirty: Dirty {
                uplink: false,
                downstream: false,
                connected: false,
                mapped: false,
                all_rules: false,
                seed: false,
            },
            commits: Vec::new(),
            marks: Vec::new(),
            marks_overflowed: false,
            invalid_values: 0,
        }
    }

    /// The uplink configuration, when complete.
    #[must_use]
    pub const fn uplink(&self) -> Option<&Uplink> {
        self.uplink.as_ref()
    }

    /// The downstream configuration, when complete.
    #[must_use]
    pub const fn downstream(&self) -> Option<&Downstream> {
        self.downstream.as_ref()
    }

    /// Which required keys are awaited.
    #[must_use]
    pub fn missing<const E: usize, const B: usize>(&self, db: &Store<E, B>) -> Missing {
        let mut ignore = 0;
        Missing {
            sync: !self.synced,
            ip: ipv4(db, "/qubes-ip", &mut ignore).is_none(),
            gateway: ipv4(db, "/qubes-gateway", &mut ignore).is_none(),
            netvm_gateway: ipv4(db, "/qubes-netvm-gateway", &mut ignore).is_none(),
        }
    }

    /// Addresses of all our clients (`/connected-ips` and `/connected-ips6`, space
    /// separated). Tokens that are not addresses are skipped (and so not allowed).
    pub fn connected_ips<'s, const E: usize, const B: usize>(
        &self,
        db: &'s Store<E, B>,
    ) -> impl Iterator<Item = IpAddr> + 's {
        ["/connected-ips", "/connected-ips6"]
            .into_iter()
            .filter_map(|k| db.get(k))
            .flat_map(|v| v.split(|&b| b == b' '))
            .filter_map(|t| core::str::from_utf8(t).ok().and_then(|s| IpAddr::from_str(s).ok()))
    }

    /// `/mapped-ip/<client>/visible-ip` and `visible-gateway`, if any is set.
    #[must_use]
    pub fn mapped_ip<const E: usize, const B: usize>(&self, db: &Store<E, B>, client: IpAddr) -> Option<MappedIp> {
        let read = |leaf: &str| {
            let mut key: String<64> = String::new();
            write!(key, "/mapped-ip/{client}/{leaf}").ok()?;
            core::str::from_utf8(db.get(&key)?).ok().and_then(|s| IpAddr::from_str(s).ok())
        };
        let m = MappedIp { visible_ip: read("visible-ip"), visible_gateway: read("visible-gateway") };
        (m.visible_ip.is_some() || m.visible_gateway.is_some()).then_some(m)
    }

    fn read_uplink<const E: usize, const B: usize>(&mut self, db: &Store<E, B>) -> Option<Uplink> {
        let inv = &mut self.invalid_values;
        let ip = ipv4(db, "/qubes-ip", inv);
        let gateway = ipv4(db, "/qubes-gateway", inv);
        let netmask = ipv4(db, "/qubes-netmask", inv).unwrap_or(Ipv4Addr::BROADCAST);
        let mac = db.get("/qubes-mac").and_then(|v| {
            let m = parse_mac(v);
            if m.is_none() {
                *inv += 1;
            }
            m
        });
        let primary_dns = ipv4(db, "/qubes-primary-dns", inv);
        let secondary_dns = ipv4(db, "/qubes-secondary-dns", inv);
        Some(Uplink { ip: ip?, netmask, gateway: gateway?, mac, primary_dns, secondary_dns })
    }

    fn read_downstream<const E: usize, const B: usize>(&mut self, db: &Store<E, B>) -> Option<Downstream> {
        let inv = &mut self.invalid_values;
        let gateway = ipv4(db, "/qubes-netvm-gateway", inv);
        let netmask = ipv4(db, "/qubes-netvm-netmask", inv).unwrap_or(Ipv4Addr::BROADCAST);
        let primary_dns = ipv4(db, "/qubes-netvm-primary-dns", inv);
        let secondary_dns = ipv4(db, "/qubes-netvm-secondary-dns", inv);
        let gateway6 = ipv6(db, "/qubes-netvm-gateway6", inv);
        Some(Downstream { gateway: gateway?, netmask, primary_dns, secondary_dns, gateway6 })
    }

    fn refresh<const E: usize, const B: usize>(&mut self, db: &Store<E, B>) {
        let up = self.read_uplink(db);
        if up != self.uplink {
            self.uplink = up;
            self.dirty.uplink = true;
        }
        let down = self.read_downstream(db);
        if down != self.downstream {
            self.downstream = down;
            self.dirty.downstream = true;
        }
    }

    fn read_seed<const E: usize, const B: usize>(&mut self, db: &Store<E, B>) {
        if let Some(v) = db.get("/qubes-random-seed") {
            match base64_64(v) {
                Some(s) => {
                    self.seed = Some(s);
                    self.dirty.seed = true;
                }
                None => self.invalid_values += 1,
            }
        }
    }

    fn mark(&mut self, ip: IpAddr, mark: Option<Mark>) {
        let at = self.marks.iter().position(|(a, _)| *a == ip);
        match (at, mark) {
            (Some(i), Some(m)) => self.marks[i].1 = m,
            (Some(i), None) => {
                self.marks.swap_remove(i);
            }
            (None, Some(m)) => {
                if self.marks.push((ip, m)).is_err() {
                    self.marks_overflowed = true;
                }
            }
            (None, None) => {}
        }
    }

    fn mark_of(&self, ip: IpAddr) -> Option<Mark> {
        self.marks.iter().find(|(a, _)| *a == ip).map(|(_, m)| *m)
    }

    fn commit(&mut self, ip: IpAddr) {
        if !self.commits.contains(&ip) && self.commits.push(ip).is_err() {
            self.dirty.all_rules = true;
        }
    }

    /// Takes note of one QubesDB client event; `db` is the store after it.
    pub fn on_db_event<const E: usize, const B: usize>(&mut self, db: &Store<E, B>, event: &DbEvent) {
        let (path, kind) = match event {
            DbEvent::SyncStarted => {
                self.synced = false;
                self.marks.clear();
                self.marks_overflowed = false;
                self.commits.clear();
                return;
            }
            DbEvent::Synced => {
                self.synced = true;
                self.refresh(db);
                self.read_seed(db);
                self.dirty.connected = true;
                self.dirty.mapped = true;
                self.dirty.all_rules = true;
                self.commits.clear();
                return;
            }
            DbEvent::WriteRefused(_) => return,
            DbEvent::Written(p) => (p.as_str(), Kind::Written),
            DbEvent::Removed(p) => (p.as_str(), Kind::Removed),
            DbEvent::RemovedSubtree(p) => (p.as_str(), Kind::RemovedSubtree),
            DbEvent::StoreFull(p) => (p.as_str(), Kind::Lost),
        };
        if let Some((ip, rest)) = firewall_client(path) {
            match (kind, rest) {
                // A client's entries lost to a full store: fail it closed until dom0
                // rewrites its whole rule set.
                (Kind::Lost, _) => {
                    self.mark(ip, Some(Mark::Lost));
                    if rest.is_empty() && self.synced {
                        self.commit(ip);
                    }
                }
                (Kind::RemovedSubtree, "/") => self.mark(ip, Some(Mark::Updating)),
                // The commit marker: written (commit) or removed (rules withdrawn).
                (Kind::Written | Kind::Removed, "") => {
                    if self.mark_of(ip) == Some(Mark::Updating) {
                        self.mark(ip, None);
                    }
                    if self.synced {
                        self.commit(ip);
                    }
                }
                (_, _) => {
                    if self.synced && self.mark_of(ip).is_none() {
                        self.mark(ip, Some(Mark::Updating));
                    }
                }
            }
            return;
        }
        if !self.synced {
            return;
        }
        match path {
            "/connected-ips" | "/connected-ips6" => self.dirty.connected = true,
            "/qubes-random-seed" if kind == Kind::Written => self.read_seed(db),
            p if p.starts_with("/mapped-ip/") => self.dirty.mapped = true,
            p if p.starts_with("/qubes-") => self.refresh(db),
            _ => {}
        }
    }

    /// The next thing to act on, if any.
    pub fn next_event(&mut self) -> Option<ConfigEvent> {
        let d = &mut self.dirty;
        if core::mem::take(&mut d.uplink) {
            return Some(ConfigEvent::UplinkChanged(self.uplink));
        }
        if core::mem::take(&mut d.downstream) {
            return Some(ConfigEvent::DownstreamChanged(self.downstream));
        }
        if core::mem::take(&mut d.seed)
            && let Some(s) = self.seed.take()
        {
            return Some(ConfigEvent::Reseed(s));
        }
        if core::mem::take(&mut d.connected) {
            return Some(ConfigEvent::ConnectedIpsChanged);
        }
        if core::mem::take(&mut d.mapped) {
            return Some(ConfigEvent::MappedIpsChanged);
        }
        if core::mem::take(&mut d.all_rules) {
            self.commits.clear();
            return Some(ConfigEvent::AllRulesCommitted);
        }
        if self.commits.is_empty() {
            return None;
        }
        Some(ConfigEvent::RulesCommitted(self.commits.remove(0)))
    }

    /// Puts `client`'s committed rules in force in `rules` (parsed with `firewall::rules`),
    /// or fails it closed.
    ///
    /// # Errors
    ///
    /// See [`RulesFailure`]: `NotSynced` and `UpdateInProgress` leave `rules` as it was;
    /// the others leave it dropping everything, and their text (see [`iptables_error`]) is
    /// what the appliance writes to `/qubes-iptables-error`.
    pub fn commit_rules<const E: usize, const B: usize>(
        &self,
        db: &Store<E, B>,
        client: IpAddr,
        rules: &mut ClientRules,
    ) -> Result<(), RulesFailure> {
        let family = Family::of(&client);
        match self.with_committed_rules(db, client, |entries| rules.commit(family, entries)) {
            Ok(parsed) => parsed.map_err(RulesFailure::Parse),
            Err(f @ (RulesFailure::NotSynced | RulesFailure::UpdateInProgress)) => Err(f),
            Err(f) => {
                rules.clear();
                Err(f)
            }
        }
    }

    /// Calls `commit` with `client`'s committed entries (name relative to
    /// `/qubes-firewall/<ip>/`, value), in key order, for an enforcer that parses them itself
    /// (the firewall engine's `commit_rules`); returns what it returned.
    ///
    /// # Errors
    ///
    /// When there is nothing to commit: [`RulesFailure::NotSynced`] or
    /// [`RulesFailure::UpdateInProgress`] (keep the rules in force), [`RulesFailure::StoreFull`]
    /// or [`RulesFailure::NotCommitted`] (fail the client closed). `commit` is not called.
    pub fn with_committed_rules<const E: usize, const B: usize, R>(
        &self,
        db: &Store<E, B>,
        client: IpAddr,
        commit: impl for<'a> FnOnce(&mut dyn Iterator<Item = (&'a [u8], &'a [u8])>) -> R,
    ) -> Result<R, RulesFailure> {
        if !self.synced {
            return Err(RulesFailure::NotSynced);
        }
        match self.mark_of(client) {
            Some(Mark::Lost) => return Err(RulesFailure::StoreFull),
            Some(Mark::Updating) => return Err(RulesFailure::UpdateInProgress),
            None if self.marks_overflowed => return Err(RulesFailure::StoreFull),
            None => {}
        }
        let prefix = firewall_path(client);
        let marker = &prefix[..prefix.len() - 1];
        if db.get(marker).is_none() {
            return Err(RulesFailure::NotCommitted);
        }
        let mut entries = db.prefixed(&prefix).map(|(k, v)| (&k.as_bytes()[prefix.len()..], v));
        Ok(commit(&mut entries))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Written,
    Removed,
    RemovedSubtree,
    Lost,
}

#[cfg(test)]
mod tests;
