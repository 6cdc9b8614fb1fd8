//! The xenbus side: discovering vifs under `backend/vif`, the backend half of the handshake,
//! and teardown. A poll-driven state machine over the non-blocking xenstore client: each vif
//! has at most one request in flight and walks its [`Phase`]s one reply at a time.

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::platform::{EventChannels, GrantTables};
use crate::xenbus::{XenbusState, parse_mac, parse_u32};
use crate::xenstore::{Client, DirEntries, Error, ReqId, Request, TxId};

use super::link::{ConnectError, Link, window_gfns};
use super::path::{PATH_MAX, backend_path, frontend_path};
use super::vif::{BKey, FKey, Op, Phase, Vif, WKey, WatchState};
use super::{
    CLOSE_GRACE_NS, FRONT_POLL_NS, FRONT_WATCH_MAX, MAX_VIFS, Netback, REMOVE_DELAY_NS, SWEEP_NS, XS_BUDGET,
    XS_TIMEOUT_NS,
};
use crate::xenstore::PathBuf;
use crate::xs_path;

const TOKEN_VIFS: &str = "nb-vifs";
const TOKEN_RELEASE: &str = "nb-release";
const TOKEN_FRONT: &str = "nb-fe/";
const VIFS_DIR: &str = "backend/vif";
/// `DOMID_FIRST_RESERVED`: no real domain has this id or a larger one.
const DOMID_FIRST_RESERVED: u32 = 0x7ff0;
/// Frontend domains listed per scan (more are picked up by the next event or scan).
const SCAN_MAX: usize = 2 * MAX_VIFS;
/// Longest xenstore value we look at; longer is garbage for every key we read.
const VALUE_MAX: usize = 128;
/// Wait after an unexpected xenstore failure before retrying that vif's step.
const RETRY_NS: u64 = 1_000_000_000;

/// Netback-wide xenstore requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum GlobalOp {
    WatchVifs,
    WatchRelease,
    ListFrontends,
    ListDevices(u16),
}

/// A walk over `backend/vif/*/*`.
#[derive(Debug)]
pub(super) struct Scan {
    pub(super) wanted: bool,
    running: bool,
    generation: u32,
    fes: [u16; SCAN_MAX],
    count: usize,
    next: usize,
}

impl Scan {
    pub(super) const IDLE: Scan =
        Scan { wanted: false, running: false, generation: 0, fes: [0; SCAN_MAX], count: 0, next: 0 };
}

/// A reply's outcome, copied out of the client's slot.
enum Value<'a> {
    Ok(&'a [u8]),
    Err(Error),
}

/// What the frontend's `state` read said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FrontState {
    State(XenbusState),
    /// The node (or its domain) is gone.
    Gone,
    /// Not a state: the frontend is broken.
    Garbage,
}

fn value_str(v: &[u8]) -> &str {
    core::str::from_utf8(v).unwrap_or("<binary>")
}

/// Parses the backend `ip` key: up to one IPv4 and one IPv6 address separated by spaces.
fn parse_ips(v: &[u8]) -> Option<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
    let s = core::str::from_utf8(v).ok()?;
    let (mut v4, mut v6) = (None, None);
    for token in s.split_ascii_whitespace() {
        if let Ok(a) = token.parse::<Ipv4Addr>() {
            v4.get_or_insert(a);
        } else if let Ok(a) = token.parse::<Ipv6Addr>() {
            v6.get_or_insert(a);
        } else {
            return None;
        }
    }
    Some((v4, v6))
}

fn front_token(index: usize) -> PathBuf<16> {
    xs_path!(16; "{TOKEN_FRONT}{index}")
}

impl Netback {
    // ----- watch events -----

    /// A watch event popped from the xenstore client. Returns false if the token is not
    /// ours (give it to its owner). Events are hints: this only marks what to re-read.
    pub fn on_watch_event(&mut self, path: &[u8], token: &[u8]) -> bool {
        if token == TOKEN_VIFS.as_bytes() {
            self.on_vifs_event(path);
        } else if token == TOKEN_RELEASE.as_bytes() {
            // Some domain died: every frontend we talk to may be gone.
            for v in self.vifs.iter_mut().filter(|v| v.in_use()) {
                v.reread_front = true;
            }
        } else if let Some(index) = token.strip_prefix(TOKEN_FRONT.as_bytes()) {
            if let Some(v) = parse_u32(index).and_then(|i| self.vifs.get_mut(i as usize)) {
                v.reread_front = true;
            }
        } else {
            return false;
        }
        true
    }

    /// The xenstore client lost watch events: re-read everything.
    pub fn on_events_lost(&mut self) {
        self.scan.wanted = true;
        for v in self.vifs.iter_mut().filter(|v| v.in_use()) {
            v.reread_front = true;
            v.reread_backend = true;
        }
    }

    fn on_vifs_event(&mut self, path: &[u8]) {
        let rest = path.strip_prefix(VIFS_DIR.as_bytes()).and_then(|r| r.strip_prefix(b"/"));
        let mut parts = rest.unwrap_or_default().split(|&b| b == b'/');
        let fe = parts.next().and_then(parse_u32);
        let devid = parts.next().and_then(parse_u32);
        let key = parts.next();
        let (Some(fe), Some(devid)) = (fe, devid) else {
            // The directory itself or a whole frontend's subtree changed: list it again.
            self.scan.wanted = true;
            return;
        };
        if fe >= DOMID_FIRST_RESERVED {
            return;
        }
        let fe = fe as u16;
        match self.vifs.iter_mut().find(|v| v.is(fe, devid)) {
            // Our own writes fire too; only `online` (the toolstack's) and the directory
            // itself (created or removed) need a look.
            Some(v) => {
                if key.is_none() || key == Some(b"online") {
                    v.reread_backend = true;
                }
            }
            None => self.add_vif(fe, devid),
        }
    }

    fn add_vif(&mut self, fe: u16, devid: u32) {
        if self.refused.contains(&Some((fe, devid))) {
            return;
        }
        let Some(i) = self.vifs.iter().position(|v| !v.in_use() && !v.retired) else {
            self.stats.refused_capacity += 1;
            self.refused[self.refused_next] = Some((fe, devid));
            self.refused_next = (self.refused_next + 1) % self.refused.len();
            log::warn!("netback: vif {fe}/{devid} refused: all {MAX_VIFS} client slots are in use");
            return;
        };
        let v = &mut self.vifs[i];
        let generation = v.generation.wrapping_add(1);
        let reported_up = v.reported_up;
        *v = Vif::EMPTY;
        v.generation = generation;
        v.reported_up = reported_up;
        v.info.domid = fe;
        v.info.devid = devid;
        v.scan_seen = self.scan.generation;
        v.phase = Phase::Probe(BKey::FrontendId);
        log::info!("netback: vif {fe}/{devid}: new device");
    }

    // ----- the poll -----

    /// Runs the xenbus side: collects replies, acts on them (mapping and binding through
    /// `xen`), handles timers, and submits the next requests. Call it after the xenstore
    /// client's poll whenever replies or events arrived, and at least by
    /// [`next_deadline`](Self::next_deadline).
    pub fn poll<X: EventChannels + GrantTables>(&mut self, xs: &mut Client, xen: &X, now: u64) {
        self.collect_global(xs);
        for i in 0..MAX_VIFS {
            let Some((id, op)) = self.vifs[i].op else { continue };
            let mut buf = [0u8; VALUE_MAX];
            if xs.is_pending(id) {
                continue;
            }
            let outcome = match xs.take_reply(id) {
                None => Err(Error::Broken),
                Some(Ok(reply)) => {
                    let p = reply.payload();
                    if p.len() > VALUE_MAX {
                        Ok(None)
                    } else {
                        buf[..p.len()].copy_from_slice(p);
                        Ok(Some(p.len()))
                    }
                }
                Some(Err(e)) => Err(e),
            };
            self.vifs[i].op = None;
            self.xs_in_flight -= 1;
            let value = match outcome {
                Ok(Some(n)) => Value::Ok(&buf[..n]),
                // Longer than any value we accept: garbage, but a reply all the same.
                Ok(None) => Value::Ok(&[0xff]),
                Err(e) => Value::Err(e),
            };
            self.on_reply(i, op, value, xen, now);
        }
        self.timers(now);
        for i in 0..MAX_VIFS {
            if self.vifs[i].fault {
                self.vifs[i].fault = false;
                self.start_closing(i, xen, now);
            }
        }
        self.submit_global(xs, now);
        // Rotate the starting vif so the budget is shared fairly.
        for k in 0..MAX_VIFS {
            if self.xs_in_flight >= XS_BUDGET {
                break;
            }
            let i = (self.rr_control + k) % MAX_VIFS;
            self.drive(i, xs, now);
        }
        self.rr_control = (self.rr_control + 1) % MAX_VIFS;
    }

    /// When [`poll`](Self::poll) next has timed work (frontend polls, close grace, sweep).
    pub fn next_deadline(&self) -> Option<u64> {
        let mut d: Option<u64> = None;
        let mut at = |t: u64| d = Some(d.map_or(t, |d| d.min(t)));
        if self.vifs.iter().any(|v| v.connected()) {
            at(self.next_sweep);
        }
        for v in self.vifs.iter().filter(|v| v.in_use()) {
            if v.wants_front_state() && v.watch != WatchState::Active {
                at(v.next_front_poll);
            }
            if let Phase::Closing { deadline } = v.phase {
                at(deadline);
            }
            if v.retry_at > 0 {
                at(v.retry_at);
            }
        }
        d
    }

    fn timers(&mut self, now: u64) {
        let sweep = now >= self.next_sweep;
        if sweep {
            self.next_sweep = now.saturating_add(SWEEP_NS);
        }
        for v in self.vifs.iter_mut().filter(|v| v.in_use()) {
            if v.wants_front_state() && v.watch != WatchState::Active && now >= v.next_front_poll {
                v.reread_front = true;
                v.next_front_poll = now.saturating_add(FRONT_POLL_NS);
            }
            if sweep && v.phase == Phase::Connected {
                v.reread_front = true;
            }
            if let Phase::Closing { deadline } = v.phase
                && now >= deadline
                && v.op.is_none()
                && v.wrote
            {
                log::info!("netback: vif {}/{}: frontend did not close in time", v.info.domid, v.info.devid);
                v.phase = Phase::Closed;
                v.wrote = false;
            }
            if v.retry_at > 0 && now >= v.retry_at {
                v.retry_at = 0;
            }
        }
    }

    fn submit(&mut self, xs: &mut Client, now: u64, req: Request<'_>) -> Option<ReqId> {
        if self.xs_in_flight >= XS_BUDGET {
            return None;
        }
        match xs.submit(now, XS_TIMEOUT_NS, TxId::NONE, req) {
            Ok(id) => {
                self.xs_in_flight += 1;
                Some(id)
            }
            Err(Error::TooManyInFlight) => {
                self.stats.xs_busy += 1;
                None
            }
            Err(e) => {
                self.stats.xs_errors += 1;
                log::warn!("netback: xenstore request not submitted: {e}");
                None
            }
        }
    }

    // ----- global requests: watches and the scan -----

    fn collect_global(&mut self, xs: &mut Client) {
        for k in 0..self.global_ops.len() {
            let Some((id, op)) = self.global_ops[k] else { continue };
            if xs.is_pending(id) {
                continue;
            }
            let reply = match xs.take_reply(id) {
                None => Err(Error::Broken),
                Some(r) => r.map(|reply| reply.entries()),
            };
            self.global_ops[k] = None;
            self.xs_in_flight -= 1;
            match (op, reply) {
                (GlobalOp::WatchVifs, r) => self.watch_vifs = watch_result(r.map(drop), "backend/vif"),
                (GlobalOp::WatchRelease, r) => self.watch_release = watch_result(r.map(drop), "@releaseDomain"),
                (GlobalOp::ListFrontends, Ok(entries)) => {
                    let mut n = 0;
                    for e in entries {
                        match parse_u32(e) {
                            Some(fe) if fe < DOMID_FIRST_RESERVED && n < SCAN_MAX => {
                                self.scan.fes[n] = fe as u16;
                                n += 1;
                            }
                            _ => {}
                        }
                    }
                    self.scan.count = n;
                    self.scan.next = 0;
                }
                (GlobalOp::ListDevices(fe), Ok(entries)) => self.scanned_devices(fe, entries),
                (GlobalOp::ListFrontends, Err(e)) => {
                    // No `backend/vif` yet (no client ever attached): nothing to list.
                    if e != Error::NotFound {
                        self.stats.xs_errors += 1;
                        log::warn!("netback: listing backend/vif failed: {e}");
                    }
                    self.scan.count = 0;
                    self.scan.next = 0;
                }
                (GlobalOp::ListDevices(_), Err(_)) => {} // removed meanwhile
            }
            if matches!(op, GlobalOp::ListFrontends | GlobalOp::ListDevices(_)) && self.scan.next >= self.scan.count {
                self.finish_scan();
            }
        }
    }

    fn scanned_devices(&mut self, fe: u16, entries: DirEntries<'_>) {
        for e in entries {
            let Some(devid) = parse_u32(e) else { continue };
            match self.vifs.iter_mut().find(|v| v.is(fe, devid)) {
                Some(v) => v.scan_seen = self.scan.generation,
                None => self.add_vif(fe, devid),
            }
        }
    }

    fn finish_scan(&mut self) {
        if !self.scan.running {
            return;
        }
        self.scan.running = false;
        let generation = self.scan.generation;
        for v in self.vifs.iter_mut().filter(|v| v.in_use() && v.scan_seen != generation) {
            // Not listed: probably removed. Reading `online` will tell.
            v.reread_backend = true;
        }
    }

    fn submit_global(&mut self, xs: &mut Client, now: u64) {
        if !self.started {
            return;
        }
        let busy = |ops: &[Option<(ReqId, GlobalOp)>], op: GlobalOp| ops.iter().flatten().any(|(_, o)| *o == op);
        if self.watch_vifs == WatchState::None && !busy(&self.global_ops, GlobalOp::WatchVifs) {
            self.global(xs, now, Request::Watch { path: VIFS_DIR, token: TOKEN_VIFS }, GlobalOp::WatchVifs);
        }
        if self.watch_release == WatchState::None && !busy(&self.global_ops, GlobalOp::WatchRelease) {
            let req = Request::Watch { path: "@releaseDomain", token: TOKEN_RELEASE };
            self.global(xs, now, req, GlobalOp::WatchRelease);
        }
        let scanning = self
            .global_ops
            .iter()
            .flatten()
            .any(|(_, o)| matches!(o, GlobalOp::ListFrontends | GlobalOp::ListDevices(_)));
        if scanning {
            return;
        }
        if self.scan.running && self.scan.next < self.scan.count {
            let fe = self.scan.fes[self.scan.next];
            let p = xs_path!(PATH_MAX; "{VIFS_DIR}/{fe}");
            if self.global(xs, now, Request::Directory(p.as_str().unwrap_or("")), GlobalOp::ListDevices(fe)) {
                self.scan.next += 1;
            }
        } else if self.scan.running {
            self.finish_scan();
        } else if self.scan.wanted && self.global(xs, now, Request::Directory(VIFS_DIR), GlobalOp::ListFrontends) {
            self.scan.wanted = false;
            self.scan.running = true;
            self.scan.generation = self.scan.generation.wrapping_add(1);
            self.scan.count = 0;
            self.scan.next = 0;
        }
    }

    fn global(&mut self, xs: &mut Client, now: u64, req: Request<'_>, op: GlobalOp) -> bool {
        let Some(k) = self.global_ops.iter().position(Option::is_none) else { return false };
        match self.submit(xs, now, req) {
            Some(id) => {
                self.global_ops[k] = Some((id, op));
                match op {
                    GlobalOp::WatchVifs => self.watch_vifs = WatchState::Registering,
                    GlobalOp::WatchRelease => self.watch_release = WatchState::Registering,
                    _ => {}
                }
                true
            }
            None => false,
        }
    }

    // ----- per-vif requests -----

    /// Submits vif `i`'s next request, if it has one and none in flight.
    fn drive(&mut self, i: usize, xs: &mut Client, now: u64) {
        let v = &self.vifs[i];
        if !v.in_use() || v.op.is_some() || v.retry_at > 0 {
            return;
        }
        let Some(op) = self.next_op(i) else {
            if self.vifs[i].phase == Phase::Release && self.vifs[i].watch == WatchState::None {
                self.free(i);
            }
            return;
        };
        let v = &self.vifs[i];
        let (fe, devid) = (v.info.domid, v.info.devid);
        let token = front_token(i);
        let token = token.as_str().unwrap_or(TOKEN_FRONT);
        let path = match op {
            Op::Read(k) => backend_path(fe, devid, Some(bkey_name(k))),
            Op::ReadFront(k) => frontend_path(fe, devid, Some(fkey_name(k))),
            Op::Write(k) => backend_path(fe, devid, Some(wkey_name(k))),
            Op::WatchFront | Op::UnwatchFront => frontend_path(fe, devid, Some("state")),
            Op::Remove => backend_path(fe, devid, None),
        };
        // An overflowed path reads as empty, which xenstored refuses (never cut short).
        let path = path.as_str().unwrap_or("");
        let req = match op {
            Op::Read(_) | Op::ReadFront(_) => Request::Read(path),
            Op::Write(k) => Request::Write(path, wkey_value(k).as_bytes()),
            Op::WatchFront => Request::Watch { path, token },
            Op::UnwatchFront => Request::Unwatch { path, token },
            Op::Remove => Request::Rm(path),
        };
        let Some(id) = self.submit(xs, now, req) else { return };
        let v = &mut self.vifs[i];
        v.op = Some((id, op));
        match op {
            Op::Read(BKey::Online) if !matches!(v.phase, Phase::Probe(_)) => v.reread_backend = false,
            Op::ReadFront(FKey::State) => v.reread_front = false,
            Op::WatchFront => {
                v.watch = WatchState::Registering;
                v.res.watches += 1;
                self.front_watches += 1;
            }
            Op::UnwatchFront => v.watch = WatchState::Removing,
            _ => {}
        }
    }

    /// What vif `i` should ask xenstore next.
    fn next_op(&self, i: usize) -> Option<Op> {
        let v = &self.vifs[i];
        if v.reread_backend && !matches!(v.phase, Phase::Probe(_) | Phase::Remove | Phase::Release) {
            return Some(Op::Read(BKey::Online));
        }
        let want_watch = v.wants_front_state();
        if v.watch == WatchState::Active && (!want_watch || v.phase == Phase::Release) {
            return Some(Op::UnwatchFront);
        }
        let step = match v.phase {
            Phase::Free | Phase::Connected | Phase::WaitFront | Phase::Release => None,
            Phase::Probe(k) => Some(Op::Read(k)),
            Phase::Advertise(k) => Some(Op::Write(k)),
            Phase::ReadConf(k) => Some(Op::ReadFront(k)),
            Phase::Connecting => Some(Op::Write(WKey::State(XenbusState::Connected))),
            Phase::Closing { .. } => (!v.wrote).then_some(Op::Write(WKey::State(XenbusState::Closing))),
            Phase::Closed | Phase::Refused => (!v.wrote).then_some(Op::Write(WKey::State(XenbusState::Closed))),
            Phase::Remove => Some(Op::Remove),
        };
        if step.is_some() {
            return step;
        }
        if want_watch && v.watch == WatchState::None && self.front_watches < FRONT_WATCH_MAX && !v.watch_refused() {
            return Some(Op::WatchFront);
        }
        if v.reread_front && (want_watch || v.phase == Phase::Connected) {
            return Some(Op::ReadFront(FKey::State));
        }
        None
    }

    fn free(&mut self, i: usize) {
        let v = &mut self.vifs[i];
        log::info!("netback: vif {}/{}: released", v.info.domid, v.info.devid);
        v.phase = Phase::Free;
        v.res.xs_nodes = 0;
        v.nodes = 0;
        // Room again: vifs refused for capacity get another chance.
        if self.refused.iter().any(Option::is_some) {
            self.refused = [None; 16];
            self.scan.wanted = true;
        }
    }

    // ----- replies -----

    fn on_reply<X: EventChannels + GrantTables>(&mut self, i: usize, op: Op, value: Value<'_>, xen: &X, now: u64) {
        let phase = self.vifs[i].phase;
        match (op, value) {
            (Op::WatchFront, value) => {
                let v = &mut self.vifs[i];
                match value {
                    Value::Ok(_) => v.watch = WatchState::Active,
                    Value::Err(e) => {
                        v.watch = WatchState::None;
                        v.res.watches -= 1;
                        self.front_watches -= 1;
                        // No watch: the frontend is polled instead.
                        v.reread_front = true;
                        v.retry_at = now.saturating_add(RETRY_NS).max(1);
                        log::warn!(
                            "netback: vif {}/{}: frontend watch refused ({e}); polling",
                            v.info.domid,
                            v.info.devid
                        );
                    }
                }
            }
            (Op::UnwatchFront, _) => {
                let v = &mut self.vifs[i];
                v.watch = WatchState::None;
                v.res.watches -= 1;
                self.front_watches -= 1;
            }
            (Op::Read(BKey::Online), value) if !matches!(phase, Phase::Probe(_)) => match value {
                Value::Ok(b"1") => self.vifs[i].online = true,
                Value::Ok(_) => {
                    self.vifs[i].online = false;
                    self.start_removal(i, xen, now);
                }
                Value::Err(Error::NotFound) => self.gone(i, xen),
                Value::Err(e) => self.xs_failed(i, op, e, now),
            },
            (Op::Read(k), value) => self.on_probe(i, k, value, now),
            (Op::Write(k), Value::Ok(_)) => self.on_written(i, k, xen, now),
            (Op::Write(k), Value::Err(e)) => {
                if e.is_quota() {
                    self.refuse_quota(i, xen, e);
                } else if matches!(e, Error::AccessDenied | Error::NotFound) {
                    // Our directory was removed under us: writes land on parents we may not
                    // write. Nothing to write back.
                    self.gone(i, xen);
                } else if matches!(k, WKey::State(XenbusState::Closed)) && matches!(phase, Phase::Refused) {
                    self.vifs[i].wrote = true; // best effort
                } else {
                    self.xs_failed(i, op, e, now);
                }
            }
            (Op::ReadFront(FKey::State), value) => {
                let st = match value {
                    Value::Ok(v) => XenbusState::parse(v).map_or(FrontState::Garbage, FrontState::State),
                    // A removed domain home reads as EACCES (its parent is dom0's).
                    Value::Err(Error::NotFound | Error::AccessDenied) => FrontState::Gone,
                    Value::Err(e) => {
                        self.xs_failed(i, op, e, now);
                        return;
                    }
                };
                self.on_front_state(i, st, xen, now);
            }
            (Op::ReadFront(k), value) => self.on_front_conf(i, k, value, xen, now),
            (Op::Remove, value) => {
                if let Value::Err(e) = value
                    && e != Error::NotFound
                {
                    self.stats.xs_errors += 1;
                    let v = &self.vifs[i];
                    log::warn!(
                        "netback: vif {}/{}: removing the backend directory failed: {e}",
                        v.info.domid,
                        v.info.devid
                    );
                }
                let v = &mut self.vifs[i];
                v.nodes = 0;
                v.res.xs_nodes = 0;
                v.phase = Phase::Release;
            }
        }
    }

    fn xs_failed(&mut self, i: usize, op: Op, e: Error, now: u64) {
        self.stats.xs_errors += 1;
        let v = &mut self.vifs[i];
        log::warn!("netback: vif {}/{}: {:?} failed: {e}; retrying", v.info.domid, v.info.devid, op);
        v.retry_at = now.saturating_add(RETRY_NS).max(1);
        match op {
            Op::Read(BKey::Online) => v.reread_backend = true,
            Op::ReadFront(FKey::State) => v.reread_front = true,
            _ => {}
        }
    }

    fn on_probe(&mut self, i: usize, k: BKey, value: Value<'_>, now: u64) {
        let v = &mut self.vifs[i];
        let (fe, devid) = (v.info.domid, v.info.devid);
        let bytes = match value {
            Value::Ok(b) => b,
            Value::Err(Error::NotFound) if k == BKey::Ip => b"",
            Value::Err(Error::NotFound) => {
                // Removed already, or not fully written: forget it; an event brings it back.
                v.phase = Phase::Release;
                return;
            }
            Value::Err(e) => return self.xs_failed(i, Op::Read(k), e, now),
        };
        let ok = match k {
            BKey::FrontendId => parse_u32(bytes) == Some(u32::from(fe)),
            BKey::Frontend => frontend_path(fe, devid, None).as_str().is_some_and(|p| bytes == p.as_bytes()),
            BKey::Mac => parse_mac(bytes).map(|m| v.info.mac = m).is_some(),
            BKey::Ip => parse_ips(bytes).map(|(a, b)| (v.info.ipv4, v.info.ipv6) = (a, b)).is_some(),
            BKey::Online => match bytes {
                b"1" => {
                    v.online = true;
                    true
                }
                b"0" => {
                    v.online = false;
                    true
                }
                _ => false,
            },
        };
        if !ok {
            self.stats.refused_config += 1;
            log::warn!(
                "netback: vif {fe}/{devid} refused: backend key {} is invalid ({:?})",
                bkey_name(k),
                value_str(bytes)
            );
            v.phase = Phase::Refused;
            v.wrote = false;
            return;
        }
        v.phase = match k {
            BKey::FrontendId => Phase::Probe(BKey::Frontend),
            BKey::Frontend => Phase::Probe(BKey::Mac),
            BKey::Mac => Phase::Probe(BKey::Ip),
            BKey::Ip => Phase::Probe(BKey::Online),
            // Being removed before it started: nothing of ours to undo.
            BKey::Online if !v.online => Phase::Remove,
            BKey::Online => Phase::Advertise(WKey::FeatureRxCopy),
        };
    }

    fn on_written<X: EventChannels + GrantTables>(&mut self, i: usize, k: WKey, xen: &X, now: u64) {
        let v = &mut self.vifs[i];
        let bit = k.node_bit();
        if bit != 0 && v.nodes & bit == 0 {
            v.nodes |= bit;
            v.res.xs_nodes += 1;
        }
        match v.phase {
            Phase::Advertise(WKey::FeatureRxCopy) => v.phase = Phase::Advertise(WKey::FeatureSg),
            Phase::Advertise(WKey::FeatureSg) => v.phase = Phase::Advertise(WKey::HotplugStatus),
            Phase::Advertise(WKey::HotplugStatus) => v.phase = Phase::Advertise(WKey::State(XenbusState::InitWait)),
            Phase::Advertise(WKey::State(_)) => {
                v.phase = Phase::WaitFront;
                v.next_front_poll = now;
                v.reread_front = true;
            }
            Phase::Connecting => {
                v.phase = Phase::Connected;
                v.was_connected = true;
                v.reread_front = false;
                self.stats.connects += 1;
                let _ = xen;
                log::info!("netback: vif {}/{}: connected", v.info.domid, v.info.devid);
            }
            Phase::Closing { .. } => {
                v.wrote = true;
                v.next_front_poll = now;
                v.reread_front = true;
            }
            Phase::Closed => {
                v.wrote = true;
                if !v.online {
                    v.phase = Phase::Remove;
                    // libxl reads `state` = Closed when its watch fires, then waits for the
                    // directory to go: removing it at once can beat that read (libxl then
                    // logs "unable to remove device" and waits out its timeout).
                    v.retry_at = now.saturating_add(REMOVE_DELAY_NS);
                } else {
                    v.next_front_poll = now;
                    v.reread_front = true;
                }
            }
            Phase::Refused => v.wrote = true,
            _ => {}
        }
    }

    fn on_front_conf<X: EventChannels + GrantTables>(
        &mut self,
        i: usize,
        k: FKey,
        value: Value<'_>,
        xen: &X,
        now: u64,
    ) {
        let v = &mut self.vifs[i];
        if v.phase != Phase::ReadConf(k) {
            return;
        }
        let bytes = match value {
            Value::Ok(b) => Some(b),
            Value::Err(Error::NotFound) => None,
            Value::Err(e) => return self.xs_failed(i, Op::ReadFront(k), e, now),
        };
        let ok = match (k, bytes) {
            (FKey::RequestRxCopy, Some(b)) => parse_u32(b) == Some(1),
            (FKey::MultiQueue, None) => true,
            (FKey::MultiQueue, Some(b)) => parse_u32(b) == Some(1),
            (FKey::TxRingRef, Some(b)) => parse_u32(b).map(|r| v.conf.tx_ref = r).is_some(),
            (FKey::RxRingRef, Some(b)) => parse_u32(b).map(|r| v.conf.rx_ref = r).is_some(),
            (FKey::EventChannel, Some(b)) => parse_u32(b).map(|p| v.conf.evtchn = p).is_some(),
            (FKey::NoCsumOffload, None) => {
                v.conf.no_csum_offload = false;
                true
            }
            (FKey::NoCsumOffload, Some(b)) => match parse_u32(b) {
                Some(n @ (0 | 1)) => {
                    v.conf.no_csum_offload = n == 1;
                    true
                }
                _ => false,
            },
            _ => false,
        };
        if !ok {
            self.stats.refused_config += 1;
            log::warn!(
                "netback: vif {}/{}: frontend key {} is missing or invalid ({:?}); closing",
                v.info.domid,
                v.info.devid,
                fkey_name(k),
                bytes.map_or("<absent>", value_str)
            );
            return self.start_closing(i, xen, now);
        }
        let next = match k {
            FKey::RequestRxCopy => FKey::MultiQueue,
            FKey::MultiQueue => FKey::TxRingRef,
            FKey::TxRingRef => FKey::RxRingRef,
            FKey::RxRingRef => FKey::EventChannel,
            FKey::EventChannel => FKey::NoCsumOffload,
            FKey::NoCsumOffload | FKey::State => return self.connect(i, xen, now),
        };
        v.phase = Phase::ReadConf(next);
    }

    fn connect<X: EventChannels + GrantTables>(&mut self, i: usize, xen: &X, now: u64) {
        let gfns = window_gfns(self.window, i);
        let v = &mut self.vifs[i];
        match Link::connect(xen, gfns, v.info.domid, &v.conf, &mut v.res) {
            Ok(link) => {
                v.info.csum_offload = !v.conf.no_csum_offload;
                v.link = Some(link);
                v.kicked = true;
                v.abuse = 0;
                v.gather.clear();
                v.phase = Phase::Connecting;
            }
            Err(e) => {
                self.stats.refused_map += 1;
                let what = match e {
                    ConnectError::MapTx(_) => "mapping its TX ring",
                    ConnectError::MapRx(_) => "mapping its RX ring",
                    ConnectError::Bind(_) => "binding its event channel",
                };
                log::warn!("netback: vif {}/{}: {what} failed ({:?}); closing", v.info.domid, v.info.devid, e);
                self.start_closing(i, xen, now);
            }
        }
    }

    fn on_front_state<X: EventChannels + GrantTables>(&mut self, i: usize, st: FrontState, xen: &X, now: u64) {
        use XenbusState as S;
        let v = &mut self.vifs[i];
        let closing_or_worse = matches!(st, FrontState::Gone | FrontState::Garbage)
            || matches!(
                st,
                FrontState::State(S::Closing | S::Closed | S::Unknown | S::Reconfiguring | S::Reconfigured)
            );
        if st == FrontState::Garbage {
            log::warn!("netback: vif {}/{}: frontend state is garbage", v.info.domid, v.info.devid);
        }
        match v.phase {
            Phase::WaitFront => match st {
                FrontState::State(S::Initialised | S::Connected) => v.phase = Phase::ReadConf(FKey::RequestRxCopy),
                FrontState::State(S::Initialising | S::InitWait) => {}
                FrontState::State(S::Closing) => self.start_closing(i, xen, now),
                _ => {
                    v.phase = Phase::Closed;
                    v.wrote = false;
                }
            },
            Phase::ReadConf(_) | Phase::Connecting | Phase::Connected => {
                let reset = matches!(st, FrontState::State(S::Initialising | S::InitWait));
                if closing_or_worse || reset {
                    self.start_closing(i, xen, now);
                }
            }
            Phase::Closing { .. } if st != FrontState::State(S::Closing) && st != FrontState::State(S::Connected) => {
                v.phase = Phase::Closed;
                v.wrote = false;
            }
            Phase::Closed if v.wrote && v.online && st == FrontState::State(S::Initialising) => {
                log::info!("netback: vif {}/{}: frontend starts over", v.info.domid, v.info.devid);
                v.phase = Phase::Advertise(WKey::State(S::InitWait));
            }
            _ => {}
        }
    }

    // ----- teardown -----

    /// Releases the data link (unmap, close); counts a disconnection if it was up.
    fn release_link<X: EventChannels + GrantTables>(&mut self, i: usize, xen: &X) {
        let v = &mut self.vifs[i];
        if let Some(link) = v.link.take()
            && !link.release(xen, &mut v.res)
        {
            v.retired = true;
        }
        v.kicked = false;
        v.gather.clear();
        v.tx_dirty = false;
        v.rx_dirty = false;
        if core::mem::take(&mut v.was_connected) {
            self.stats.disconnects += 1;
            log::info!("netback: vif {}/{}: disconnected", v.info.domid, v.info.devid);
        }
    }

    /// Frontend closing, broken, or refused: stop, release, say Closing, wait a little.
    fn start_closing<X: EventChannels + GrantTables>(&mut self, i: usize, xen: &X, now: u64) {
        self.release_link(i, xen);
        let v = &mut self.vifs[i];
        if matches!(v.phase, Phase::Closing { .. } | Phase::Closed | Phase::Remove | Phase::Release | Phase::Free) {
            return;
        }
        v.phase = Phase::Closing { deadline: now.saturating_add(CLOSE_GRACE_NS) };
        v.wrote = false;
        v.next_front_poll = now;
    }

    /// The toolstack set `online` = 0: close (if not yet) and then remove the directory.
    fn start_removal<X: EventChannels + GrantTables>(&mut self, i: usize, xen: &X, now: u64) {
        match self.vifs[i].phase {
            Phase::Closed if self.vifs[i].wrote => {
                self.vifs[i].phase = Phase::Remove;
                self.vifs[i].retry_at = now.saturating_add(REMOVE_DELAY_NS);
            }
            Phase::Refused => self.vifs[i].phase = Phase::Remove,
            Phase::Closing { .. } | Phase::Closed | Phase::Remove | Phase::Release | Phase::Free => {}
            Phase::Probe(_) => self.vifs[i].phase = Phase::Remove,
            _ => self.start_closing(i, xen, now),
        }
    }

    /// The backend directory is gone: release everything, no more writes.
    fn gone<X: EventChannels + GrantTables>(&mut self, i: usize, xen: &X) {
        self.release_link(i, xen);
        let v = &mut self.vifs[i];
        v.nodes = 0;
        v.res.xs_nodes = 0;
        v.phase = Phase::Release;
    }

    fn refuse_quota<X: EventChannels + GrantTables>(&mut self, i: usize, xen: &X, e: Error) {
        self.release_link(i, xen);
        self.stats.refused_quota += 1;
        let v = &mut self.vifs[i];
        log::warn!(
            "netback: vif {}/{} refused: xenstored quota reached ({e}); raise dom0's xenstored node quota \
             (xenstore-control quota set nodes N) to serve more clients",
            v.info.domid,
            v.info.devid
        );
        v.phase = Phase::Refused;
        v.wrote = false;
    }
}

impl Vif {
    /// A watch was refused lately: poll instead until the retry time passes.
    fn watch_refused(&self) -> bool {
        self.retry_at > 0
    }
}

fn watch_result(r: Result<(), Error>, what: &str) -> WatchState {
    match r {
        Ok(()) => WatchState::Active,
        Err(e) => {
            log::warn!("netback: watch on {what} failed: {e}; retrying");
            WatchState::None
        }
    }
}

fn bkey_name(k: BKey) -> &'static str {
    match k {
        BKey::FrontendId => "frontend-id",
        BKey::Frontend => "frontend",
        BKey::Mac => "mac",
        BKey::Ip => "ip",
        BKey::Online => "online",
    }
}

fn fkey_name(k: FKey) -> &'static str {
    match k {
        FKey::State => "state",
        FKey::RequestRxCopy => "request-rx-copy",
        FKey::MultiQueue => "multi-queue-num-queues",
        FKey::TxRingRef => "tx-ring-ref",
        FKey::RxRingRef => "rx-ring-ref",
        FKey::EventChannel => "event-channel",
        FKey::NoCsumOffload => "feature-no-csum-offload",
    }
}

fn wkey_name(k: WKey) -> &'static str {
    match k {
        WKey::FeatureRxCopy => "feature-rx-copy",
        WKey::FeatureSg => "feature-sg",
        WKey::HotplugStatus => "hotplug-status",
        WKey::State(_) => "state",
    }
}

fn wkey_value(k: WKey) -> &'static str {
    match k {
        WKey::FeatureRxCopy | WKey::FeatureSg => "1",
        WKey::HotplugStatus => "connected",
        WKey::State(s) => s.as_str(),
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn ip_key_holds_up_to_one_address_of_each_family() {
        assert_eq!(parse_ips(b"10.137.0.5"), Some((Some(Ipv4Addr::new(10, 137, 0, 5)), None)));
        let (a, b) = parse_ips(b"10.137.0.5 fd09:24ef:4179::a89:5").unwrap();
        assert_eq!(a, Some(Ipv4Addr::new(10, 137, 0, 5)));
        assert_eq!(b, Some("fd09:24ef:4179::a89:5".parse().unwrap()));
        assert_eq!(parse_ips(b""), Some((None, None)));
        assert_eq!(parse_ips(b"10.137.0.5 garbage"), None);
        assert_eq!(parse_ips(b"\xff"), None);
    }

    #[test]
    fn front_tokens() {
        assert_eq!(front_token(127).as_str(), Some("nb-fe/127"));
    }
}
