//! The domain's control plane in xenstore: who we are, `control/shutdown`, the counters dump
//! trigger, and our `data/portcullis/state`.
//!
//! A poll-driven state machine on top of the non-blocking xenstore client: it submits
//! requests, picks up their replies on later polls, and turns watch events (hints) into
//! re-reads. It never waits, so a slow xenstored delays only itself.

use xen_front::abi::ShutdownReason;
use xen_front::xenstore::{Client, Error as XsError, ReqId, Request, TxId};

/// Per-request timeout.
pub const REQUEST_TIMEOUT_NS: u64 = 10_000_000_000;

const TOKEN_SHUTDOWN: &str = "ctl-shutdown";
const TOKEN_DUMP: &str = "ctl-dump";
/// Where dom0 asks for a counters dump (under our home, writable by us).
pub const DUMP_KEY: &str = "data/portcullis/dump";
/// Where we say how far we got.
pub const STATE_KEY: &str = "data/portcullis/state";

/// What the control plane asks the appliance to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlAction {
    /// Identity known and watches registered: the appliance may report ready.
    Registered,
    /// `control/shutdown` asked for this and we acknowledged it: shut down now.
    Shutdown(ShutdownReason),
    /// dom0 wrote the dump key: print every counter.
    DumpCounters,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    ReadDomid,
    ReadName,
    Advertise,
    WatchShutdown,
    WatchDump,
    ReadShutdown,
    AckShutdown(ShutdownReason),
    ReadDump,
    ClearDump,
    WriteState,
}

const OPS_MAX: usize = 12;

/// The control-plane state machine.
pub struct Control {
    ops: [Option<(ReqId, Op)>; OPS_MAX],
    /// Our domid, once read.
    pub domid: Option<u16>,
    name: [u8; 64],
    name_len: usize,
    registered_steps: u8,
    registered_reported: bool,
    reread_shutdown: bool,
    reread_dump: bool,
    /// Control requests that failed (errors are logged; a failure never stops the rest).
    pub errors: u64,
    /// `control/shutdown` values we do not act on.
    pub ignored_requests: u64,
}

/// Boot steps that must complete before we report [`ControlAction::Registered`].
const REGISTRATION_STEPS: u8 = 4; // domid, name, watch shutdown, watch dump

impl Default for Control {
    fn default() -> Self {
        Self::new()
    }
}

impl Control {
    /// A control plane that has not started.
    pub const fn new() -> Self {
        Control {
            ops: [None; OPS_MAX],
            domid: None,
            name: [0; 64],
            name_len: 0,
            registered_steps: 0,
            registered_reported: false,
            reread_shutdown: false,
            reread_dump: false,
            errors: 0,
            ignored_requests: 0,
        }
    }

    /// Our name in xenstore, once read.
    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..self.name_len]).unwrap_or("?")
    }

    fn submit(&mut self, xs: &mut Client, now: u64, req: Request<'_>, op: Op) {
        let Some(free) = self.ops.iter().position(Option::is_none) else {
            self.errors += 1;
            return;
        };
        match xs.submit(now, REQUEST_TIMEOUT_NS, TxId::NONE, req) {
            Ok(id) => self.ops[free] = Some((id, op)),
            Err(e) => {
                self.errors += 1;
                log::warn!("xenstore: {:?} not submitted: {:?}", op, e);
            }
        }
    }

    /// Starts registration: reads identity, advertises `feature-poweroff`, sets the watches.
    pub fn start(&mut self, xs: &mut Client, now: u64) {
        self.submit(xs, now, Request::Read("domid"), Op::ReadDomid);
        self.submit(xs, now, Request::Read("name"), Op::ReadName);
        self.submit(xs, now, Request::Write("control/feature-poweroff", b"1"), Op::Advertise);
        self.submit(xs, now, Request::Write("control/feature-reboot", b"1"), Op::Advertise);
        self.submit(xs, now, Request::Watch { path: "control/shutdown", token: TOKEN_SHUTDOWN }, Op::WatchShutdown);
        self.submit(xs, now, Request::Watch { path: DUMP_KEY, token: TOKEN_DUMP }, Op::WatchDump);
    }

    /// Writes `data/portcullis/state`.
    pub fn set_state(&mut self, xs: &mut Client, now: u64, state: &str) {
        self.submit(xs, now, Request::Write(STATE_KEY, state.as_bytes()), Op::WriteState);
    }

    fn in_flight(&self, op: Op) -> bool {
        self.ops.iter().flatten().any(|(_, o)| *o == op)
    }

    /// Handles replies and watch events; returns at most one action per call (call again
    /// until `None`). Watch events with other tokens are dropped: see
    /// [`poll_with`](Self::poll_with) to pass them on.
    pub fn poll(&mut self, xs: &mut Client, now: u64) -> Option<ControlAction> {
        self.poll_with(xs, now, |_, _| {})
    }

    /// Like [`poll`](Self::poll), handing watch events that are not ours to `others(path,
    /// token)` (the drivers' watches share the one event queue).
    pub fn poll_with(
        &mut self,
        xs: &mut Client,
        now: u64,
        mut others: impl FnMut(&[u8], &[u8]),
    ) -> Option<ControlAction> {
        // Watch events are hints: note which keys to re-read. Other tokens are not ours:
        // leave them for their owners.
        if xs.take_events_lost() {
            self.reread_shutdown = true;
            self.reread_dump = true;
        }
        while let Some(ev) = xs.pop_event() {
            match ev.token {
                t if t == TOKEN_SHUTDOWN.as_bytes() => self.reread_shutdown = true,
                t if t == TOKEN_DUMP.as_bytes() => self.reread_dump = true,
                t => others(ev.path, t),
            }
        }
        if self.reread_shutdown && !self.in_flight(Op::ReadShutdown) {
            self.reread_shutdown = false;
            self.submit(xs, now, Request::Read("control/shutdown"), Op::ReadShutdown);
        }
        if self.reread_dump && !self.in_flight(Op::ReadDump) {
            self.reread_dump = false;
            self.submit(xs, now, Request::Read(DUMP_KEY), Op::ReadDump);
        }

        for i in 0..OPS_MAX {
            let Some((id, op)) = self.ops[i] else { continue };
            let action = match xs.take_reply(id) {
                None => continue,
                Some(Ok(reply)) => {
                    // Keep at most 64 bytes: longer values are cut, so they never match a
                    // command (and a long `control/shutdown` is counted as unsupported rather
                    // than mistaken for the empty acknowledgement).
                    let mut buf = [0u8; 64];
                    let value = reply.payload();
                    let n = value.len().min(buf.len());
                    buf[..n].copy_from_slice(&value[..n]);
                    self.ops[i] = None;
                    self.on_reply(xs, now, op, &buf[..n])
                }
                Some(Err(e)) => {
                    self.ops[i] = None;
                    self.on_error(op, e)
                }
            };
            if action.is_some() {
                return action;
            }
        }
        if self.registered_steps >= REGISTRATION_STEPS && !self.registered_reported {
            self.registered_reported = true;
            return Some(ControlAction::Registered);
        }
        None
    }

    fn on_reply(&mut self, xs: &mut Client, now: u64, op: Op, value: &[u8]) -> Option<ControlAction> {
        match op {
            Op::ReadDomid => {
                self.domid = core::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
                if self.domid.is_none() {
                    self.errors += 1;
                }
                self.registered_steps += 1;
            }
            Op::ReadName => {
                let n = value.len().min(self.name.len());
                self.name[..n].copy_from_slice(&value[..n]);
                self.name_len = n;
                self.registered_steps += 1;
            }
            Op::WatchShutdown | Op::WatchDump => self.registered_steps += 1,
            Op::Advertise | Op::WriteState | Op::ClearDump => {}
            Op::ReadShutdown => {
                let reason = match value {
                    b"poweroff" | b"halt" => Some(ShutdownReason::Poweroff),
                    b"reboot" => Some(ShutdownReason::Reboot),
                    b"" => None, // our own acknowledgement, or nothing asked yet
                    _ => {
                        self.ignored_requests += 1;
                        log::warn!(
                            "control/shutdown: ignoring unsupported request {:?}",
                            core::str::from_utf8(value).unwrap_or("<binary>")
                        );
                        None
                    }
                };
                if let Some(r) = reason {
                    // Acknowledge first (the toolstack waits for the empty value), then act.
                    self.submit(xs, now, Request::Write("control/shutdown", b""), Op::AckShutdown(r));
                }
            }
            Op::AckShutdown(r) => return Some(ControlAction::Shutdown(r)),
            Op::ReadDump => {
                if !value.is_empty() {
                    self.submit(xs, now, Request::Write(DUMP_KEY, b""), Op::ClearDump);
                    return Some(ControlAction::DumpCounters);
                }
            }
        }
        None
    }

    fn on_error(&mut self, op: Op, e: XsError) -> Option<ControlAction> {
        match (op, e) {
            // Absent keys are normal before dom0 wrote them.
            (Op::ReadShutdown | Op::ReadDump, XsError::NotFound) => None,
            (Op::AckShutdown(r), _) => {
                // The acknowledgement failed; shut down anyway rather than ignore dom0.
                self.errors += 1;
                log::warn!("control/shutdown: acknowledgement failed: {:?}", e);
                Some(ControlAction::Shutdown(r))
            }
            _ => {
                self.errors += 1;
                log::warn!("xenstore: {:?} failed: {:?}", op, e);
                if matches!(op, Op::ReadDomid | Op::ReadName | Op::WatchShutdown | Op::WatchDump) {
                    // Registration continues without it; the appliance still reports ready.
                    self.registered_steps += 1;
                }
                None
            }
        }
    }
}
