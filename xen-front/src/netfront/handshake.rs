//! The frontend side of the xenbus handshake and of teardown (xen-abi.md §7.4), as a
//! poll-driven state machine on the non-blocking xenstore client.
//!
//! Watches: `device/vif` (devices appearing and disappearing: a re-attached vif has a new
//! device id) and the current backend's `state`. Both are hints: every event re-reads.

use grant_pool::{GrantEntries, GrantPool};

use super::{BACKEND_PATH_MAX, CLOSE_TIMEOUT_NS, Connection, Netfront, RX_BUFFERS, TX_SLOTS, XS_TIMEOUT_NS};
use crate::platform::EventChannels;
use crate::ring::FrontRing;
use crate::xenbus::{XenbusState, parse_mac, parse_u32};
use crate::xenstore::{Client, Error as XsError, PathBuf, Request, TxId, TxnRetry, TxnStep};
use crate::xs_path;

const TOKEN_DEVICES: &str = "nf-devices";
const TOKEN_BACKEND: &str = "nf-backend";
const DEVICES: &str = "device/vif";
/// How often a connected netfront re-reads its backend's state without being told.
const BACKEND_CHECK_NS: u64 = 2_000_000_000;

/// Where the handshake is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// [`Netfront::start`] not called yet.
    Stopped,
    /// No usable device: waiting for one to appear under `device/vif`.
    NoDevice,
    /// Reading the device's `backend`, `backend-id`, `mac`.
    ReadingDevice,
    /// Waiting for the backend to reach InitWait.
    WaitBackend,
    /// Checking the backend's `feature-rx-copy`.
    CheckingFeatures,
    /// The backend lacks something we need; waiting for the device to change.
    Unsupported,
    /// Writing ring refs and the event channel (one transaction).
    Publishing,
    /// We are Connected; waiting for the backend to connect.
    Connecting,
    /// Both Connected: frames flow.
    Connected,
    /// We wrote Closed; waiting for the backend to let go of our pages.
    Closing,
}

/// What the appliance should know about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetfrontEvent {
    /// The link came up (announce ourselves: gratuitous ARP).
    LinkUp,
    /// The link went down (the connection was torn down; a reconnect follows by itself).
    LinkDown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    ListDevices,
    ReadBackend,
    ReadBackendId,
    ReadMac,
    ReadBackendState,
    ReadFeatureRxCopy,
    ReadBackendOnline,
    Watch,
    Unwatch,
    WriteState(XenbusState),
    TxnWrite,
}

pub(super) const OPS_MAX: usize = 12;

/// The device being read, before it is accepted.
#[derive(Clone, Copy, Debug)]
pub(super) struct PendingDevice {
    devid: u32,
    backend: PathBuf<BACKEND_PATH_MAX>,
    backend_id: Option<u16>,
    mac: Option<[u8; 6]>,
    got: u8,
    bad: bool,
}

impl PendingDevice {
    pub(super) const fn new() -> Self {
        PendingDevice { devid: 0, backend: PathBuf::new(), backend_id: None, mac: None, got: 0, bad: false }
    }
}

impl Netfront {
    /// Starts discovery: watches `device/vif` (the watch fires at once, which lists it).
    pub fn start(&mut self, xs: &mut Client, now: u64) {
        if self.phase != Phase::Stopped {
            return;
        }
        self.phase = Phase::NoDevice;
        self.submit(xs, now, TxId::NONE, Request::Watch { path: DEVICES, token: TOKEN_DEVICES }, Op::Watch);
        self.relist = true;
    }

    /// Takes a watch event; `true` if it was one of ours.
    pub fn on_watch(&mut self, _path: &[u8], token: &[u8]) -> bool {
        if token == TOKEN_DEVICES.as_bytes() {
            self.relist = true;
            true
        } else if token == TOKEN_BACKEND.as_bytes() {
            self.reread_backend = true;
            true
        } else {
            false
        }
    }

    /// Watch events were lost: re-read everything.
    pub fn on_events_lost(&mut self) {
        self.relist = true;
        self.reread_backend = true;
    }

    fn submit(&mut self, xs: &mut Client, now: u64, tx: TxId, req: Request<'_>, op: Op) -> bool {
        let Some(free) = self.ops.iter().position(Option::is_none) else {
            self.counters.xenstore_errors += 1;
            return false;
        };
        match xs.submit(now, XS_TIMEOUT_NS, tx, req) {
            Ok(id) => {
                self.ops[free] = Some((id, op));
                true
            }
            Err(e) => {
                self.counters.xenstore_errors += 1;
                log::warn!("uplink: xenstore {:?} not submitted: {}", op, e);
                false
            }
        }
    }

    fn op_in_flight(&self, op: Op) -> bool {
        self.ops.iter().flatten().any(|(_, o)| *o == op)
    }

    fn device_path<const M: usize>(&self, key: &str) -> PathBuf<M> {
        xs_path!(M; "{}/{}/{}", DEVICES, self.devid.unwrap_or(u32::MAX), key)
    }

    fn write_state(&mut self, xs: &mut Client, now: u64, state: XenbusState) {
        let path: PathBuf<64> = self.device_path("state");
        if let Some(p) = path.as_str() {
            self.submit(xs, now, TxId::NONE, Request::Write(p, state.as_str().as_bytes()), Op::WriteState(state));
        }
    }

    fn read_backend_key(&mut self, xs: &mut Client, now: u64, key: &str, op: Op) {
        let path = xs_path!(128; "{}/{}", self.backend.as_str().unwrap_or(""), key);
        if let Some(p) = path.as_str() {
            self.submit(xs, now, TxId::NONE, Request::Read(p), op);
        }
    }

    /// Advances the handshake or teardown: handles xenstore replies and watch hints, and
    /// the close timeout. Returns an event for the appliance, at most one per call.
    pub fn poll_control<E: GrantEntries, const N: usize>(
        &mut self,
        xs: &mut Client,
        xen: &impl EventChannels,
        pool: &mut GrantPool<E, N>,
        now: u64,
    ) -> Option<NetfrontEvent> {
        if self.phase == Phase::Stopped {
            return None;
        }
        let mut event = None;
        // A ring the backend corrupted: stop using it and go through a normal close.
        if self.fault {
            self.fault = false;
            if matches!(self.phase, Phase::Connecting | Phase::Connected) {
                event = self.begin_close(xs, now);
            }
        }
        for i in 0..OPS_MAX {
            let Some((id, op)) = self.ops[i] else { continue };
            let mut value = [0u8; 256];
            let mut listing = None;
            if xs.is_pending(id) {
                continue;
            }
            let result = match xs.take_reply(id) {
                None => Err(XsError::Broken),
                Some(Ok(reply)) if op == Op::ListDevices => {
                    // Directory payloads can be long: note whether ours is there and the
                    // lowest id, nothing else.
                    let (mut present, mut lowest, mut bad) = (false, None::<u32>, 0);
                    for name in reply.entries() {
                        match parse_u32(name) {
                            Some(n) => {
                                present |= Some(n) == self.devid;
                                lowest = Some(lowest.map_or(n, |l| l.min(n)));
                            }
                            None => bad += 1,
                        }
                    }
                    self.counters.bad_xenstore_values += bad;
                    listing = Some((present, lowest));
                    Ok(0)
                }
                Some(Ok(reply)) => reply.copy_to(&mut value).ok_or(XsError::TooBig),
                Some(Err(e)) => Err(e),
            };
            self.ops[i] = None;
            let e = match (op, listing, result) {
                (Op::ListDevices, Some((present, lowest)), _) => self.on_devices(xs, xen, pool, now, present, lowest),
                // No `device/vif` at all: no device.
                (Op::ListDevices, None, Err(XsError::NotFound)) => self.on_devices(xs, xen, pool, now, false, None),
                (Op::ListDevices, None, Err(e)) => {
                    self.counters.xenstore_errors += 1;
                    log::warn!("uplink: listing {}: {}", DEVICES, e);
                    None
                }
                (op, _, result) => self.on_reply(xs, xen, pool, now, op, result.map(|n| &value[..n])),
            };
            if e.is_some() {
                event = e;
            }
        }
        // Watches are hints and a dead backend domain may leave nothing to fire them: re-read
        // the backend's state now and then while connected.
        if now >= self.next_backend_check {
            self.next_backend_check = now + BACKEND_CHECK_NS;
            if matches!(self.phase, Phase::Connecting | Phase::Connected) {
                self.reread_backend = true;
            }
        }
        if self.relist && !self.op_in_flight(Op::ListDevices) {
            self.relist = false;
            self.submit(xs, now, TxId::NONE, Request::Directory(DEVICES), Op::ListDevices);
        }
        if self.reread_backend
            && !self.op_in_flight(Op::ReadBackendState)
            && matches!(self.phase, Phase::WaitBackend | Phase::Connecting | Phase::Connected | Phase::Closing)
        {
            self.reread_backend = false;
            self.read_backend_key(xs, now, "state", Op::ReadBackendState);
        }
        if self.phase == Phase::Publishing
            && let Some(e) = self.poll_txn(xs, xen, pool, now)
        {
            event = Some(e);
        }
        if self.phase == Phase::Closing && now >= self.close_deadline {
            log::warn!("uplink: backend did not close within {} s; releasing anyway", CLOSE_TIMEOUT_NS / 1_000_000_000);
            self.finish_close(xen, pool);
        }
        event
    }

    /// A new listing of `device/vif`: whether our device is in it, and the lowest id.
    fn on_devices<E: GrantEntries, const N: usize>(
        &mut self,
        xs: &mut Client,
        xen: &impl EventChannels,
        pool: &mut GrantPool<E, N>,
        now: u64,
        present: bool,
        lowest: Option<u32>,
    ) -> Option<NetfrontEvent> {
        let mut event = None;
        match self.devid {
            // Ours is there; a device we found unusable is read again (its keys changed).
            Some(d) if present => {
                if self.phase == Phase::Unsupported {
                    self.read_device(xs, now, d);
                }
                return None;
            }
            Some(d) => {
                log::info!("uplink: device {} removed", d);
                event = self.drop_device(xs, xen, pool, now);
            }
            None => {}
        }
        if let Some(l) = lowest {
            self.read_device(xs, now, l);
        }
        event
    }

    /// Forgets the current device, tearing down any connection now.
    fn drop_device<E: GrantEntries, const N: usize>(
        &mut self,
        xs: &mut Client,
        xen: &impl EventChannels,
        pool: &mut GrantPool<E, N>,
        now: u64,
    ) -> Option<NetfrontEvent> {
        let was_up = self.phase == Phase::Connected;
        self.release(xen, pool);
        self.txn = None;
        self.unwatch_backend(xs, now);
        self.devid = None;
        self.phase = Phase::NoDevice;
        was_up.then_some(NetfrontEvent::LinkDown)
    }

    fn unwatch_backend(&mut self, xs: &mut Client, now: u64) {
        if self.watched_backend.is_empty() {
            return;
        }
        let path = xs_path!(128; "{}/state", self.watched_backend.as_str().unwrap_or(""));
        self.watched_backend.clear();
        if let Some(p) = path.as_str() {
            self.submit(xs, now, TxId::NONE, Request::Unwatch { path: p, token: TOKEN_BACKEND }, Op::Unwatch);
        }
    }

    fn read_device(&mut self, xs: &mut Client, now: u64, devid: u32) {
        self.devid = Some(devid);
        self.phase = Phase::ReadingDevice;
        self.pending_device = PendingDevice { devid, ..PendingDevice::new() };
        for (key, op) in [("backend", Op::ReadBackend), ("backend-id", Op::ReadBackendId), ("mac", Op::ReadMac)] {
            let path: PathBuf<64> = self.device_path(key);
            if let Some(p) = path.as_str() {
                self.submit(xs, now, TxId::NONE, Request::Read(p), op);
            }
        }
    }

    fn on_reply<E: GrantEntries, const N: usize>(
        &mut self,
        xs: &mut Client,
        xen: &impl EventChannels,
        pool: &mut GrantPool<E, N>,
        now: u64,
        op: Op,
        result: Result<&[u8], XsError>,
    ) -> Option<NetfrontEvent> {
        match op {
            Op::ReadBackend | Op::ReadBackendId | Op::ReadMac => {
                if self.phase != Phase::ReadingDevice {
                    return None; // stale: the device changed meanwhile
                }
                let d = &mut self.pending_device;
                d.got += 1;
                match (op, result) {
                    (Op::ReadBackend, Ok(v)) => {
                        let ok = !v.is_empty()
                            && v.len() < BACKEND_PATH_MAX
                            && v.iter().all(|b| b.is_ascii_graphic())
                            && v.starts_with(b"/");
                        match core::str::from_utf8(v) {
                            Ok(s) if ok => d.backend = PathBuf::copy_of(s),
                            _ => d.bad = true,
                        }
                    }
                    (Op::ReadBackendId, Ok(v)) => match parse_u32(v) {
                        // DOMID_FIRST_RESERVED = 0x7ff0: nothing above names a real domain.
                        Some(id) if id < 0x7ff0 => d.backend_id = Some(id as u16),
                        _ => d.bad = true,
                    },
                    (Op::ReadMac, Ok(v)) => match parse_mac(v) {
                        Some(m) => d.mac = Some(m),
                        None => d.bad = true,
                    },
                    _ => d.bad = true,
                }
                if d.got == 3 {
                    return self.accept_device(xs, now);
                }
                None
            }
            Op::ReadBackendState => {
                let exists = result.is_ok();
                let state = match result {
                    Ok(v) => XenbusState::parse(v),
                    // Gone: the backend directory was removed (detach, backend domain died).
                    // xenstored answers EACCES rather than ENOENT when the parent went too.
                    Err(XsError::NotFound | XsError::AccessDenied) => Some(XenbusState::Closed),
                    Err(e) => {
                        // Retried by the periodic re-check, not at once (no request storm).
                        self.counters.xenstore_errors += 1;
                        log::warn!("uplink: reading backend state: {}", e);
                        return None;
                    }
                };
                let Some(state) = state else {
                    self.counters.bad_xenstore_values += 1;
                    log::warn!("uplink: backend state is not a xenbus state; treating the backend as closing");
                    // Closing, not Closed: it may still map our pages, so they are released
                    // only once it says Closed (or disappears, or the close times out).
                    return self.on_backend_state(xs, xen, pool, now, XenbusState::Closing, false);
                };
                self.on_backend_state(xs, xen, pool, now, state, exists)
            }
            Op::ReadFeatureRxCopy => {
                if self.phase != Phase::CheckingFeatures {
                    return None;
                }
                match result.ok().and_then(parse_u32) {
                    Some(1) => self.connect(pool, xen),
                    _ => {
                        log::error!("uplink: backend lacks feature-rx-copy; cannot connect");
                        self.phase = Phase::Unsupported;
                    }
                }
                None
            }
            Op::ReadBackendOnline => {
                // After a close: reconnect only if the toolstack still wants the device.
                if self.phase != Phase::WaitBackend {
                    return None;
                }
                if result.ok().and_then(parse_u32) == Some(1) {
                    self.write_state(xs, now, XenbusState::Initialising);
                }
                None
            }
            Op::TxnWrite => {
                if result.is_err() {
                    self.counters.xenstore_errors += 1;
                    self.txn_failed = true; // the body failed: abort
                } else {
                    self.txn_writes = self.txn_writes.saturating_add(1);
                }
                None
            }
            Op::ListDevices => None, // handled in poll_control
            Op::Watch | Op::Unwatch | Op::WriteState(_) => {
                if let Err(e) = result {
                    self.counters.xenstore_errors += 1;
                    log::warn!("uplink: xenstore {:?}: {}", op, e);
                }
                None
            }
        }
    }

    fn accept_device(&mut self, xs: &mut Client, now: u64) -> Option<NetfrontEvent> {
        let d = self.pending_device;
        let (Some(backend_id), Some(mac), false) = (d.backend_id, d.mac, d.bad) else {
            self.counters.bad_xenstore_values += 1;
            log::warn!("uplink: device {} has unusable backend/backend-id/mac; waiting for a change", d.devid);
            self.phase = Phase::Unsupported;
            return None;
        };
        self.backend = d.backend;
        self.backend_id = backend_id;
        self.mac = mac;
        log::info!(
            "uplink: device {} backend {:?} (domain {}) mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            d.devid,
            self.backend,
            backend_id,
            mac[0],
            mac[1],
            mac[2],
            mac[3],
            mac[4],
            mac[5]
        );
        if self.watched_backend.as_str() != self.backend.as_str() {
            self.unwatch_backend(xs, now);
            let path = xs_path!(128; "{}/state", self.backend.as_str().unwrap_or(""));
            if let Some(p) = path.as_str() {
                self.submit(xs, now, TxId::NONE, Request::Watch { path: p, token: TOKEN_BACKEND }, Op::Watch);
                self.watched_backend = self.backend;
            }
        }
        self.phase = Phase::WaitBackend;
        self.reread_backend = true;
        None
    }

    fn on_backend_state<E: GrantEntries, const N: usize>(
        &mut self,
        xs: &mut Client,
        xen: &impl EventChannels,
        pool: &mut GrantPool<E, N>,
        now: u64,
        state: XenbusState,
        exists: bool,
    ) -> Option<NetfrontEvent> {
        use XenbusState as S;
        match (self.phase, state) {
            (Phase::WaitBackend, S::InitWait) => {
                self.phase = Phase::CheckingFeatures;
                self.read_backend_key(xs, now, "feature-rx-copy", Op::ReadFeatureRxCopy);
                None
            }
            // A backend left Closed by an earlier connection: ask it to start over (Linux
            // netback goes Closed → InitWait when its frontend writes Initialising), but
            // only while the toolstack still wants the device online.
            (Phase::WaitBackend, S::Closed) if exists => {
                self.read_backend_key(xs, now, "online", Op::ReadBackendOnline);
                None
            }
            // A backend still connected to an earlier incarnation of us: reset it.
            (Phase::WaitBackend, S::Connected | S::Initialised | S::Closing) => {
                self.write_state(xs, now, XenbusState::Closed);
                None
            }
            (Phase::Connecting, S::Connected) => {
                self.phase = Phase::Connected;
                self.counters.connects += 1;
                log::info!("uplink: connected to domain {}", self.backend_id);
                Some(NetfrontEvent::LinkUp)
            }
            (Phase::Connecting | Phase::Connected, S::Closing | S::Closed | S::Unknown) => self.begin_close(xs, now),
            (Phase::Closing, S::Closed | S::Unknown) => {
                self.finish_close(xen, pool);
                None
            }
            _ => None,
        }
    }

    /// The backend is going away: stop I/O and tell it we are Closed, so it unmaps our
    /// pages (Linux's `xenbus_frontend_closed`).
    fn begin_close(&mut self, xs: &mut Client, now: u64) -> Option<NetfrontEvent> {
        let was_up = self.phase == Phase::Connected;
        self.phase = Phase::Closing;
        self.close_deadline = now + CLOSE_TIMEOUT_NS;
        self.write_state(xs, now, XenbusState::Closed);
        self.reread_backend = true;
        log::info!("uplink: backend closing; disconnecting");
        was_up.then_some(NetfrontEvent::LinkDown)
    }

    /// The backend let go (or the timeout passed): release everything and wait for the
    /// backend (or a new device) to come back.
    fn finish_close<E: GrantEntries, const N: usize>(&mut self, xen: &impl EventChannels, pool: &mut GrantPool<E, N>) {
        self.release(xen, pool);
        self.txn = None;
        self.phase = Phase::WaitBackend;
        self.reread_backend = true;
        self.relist = true;
    }

    /// Backend in InitWait with rx-copy: share the rings, allocate the event channel, and
    /// publish them in one transaction.
    fn connect<E: GrantEntries, const N: usize>(&mut self, pool: &mut GrantPool<E, N>, xen: &impl EventChannels) {
        self.release(xen, pool); // nothing should be left; be sure
        let (Some(tx_slot), Some(rx_slot)) = (pool.take(), pool.take()) else {
            log::error!("uplink: grant pool exhausted; cannot allocate rings");
            self.phase = Phase::WaitBackend;
            return;
        };
        let tx_page = pool.share(tx_slot, self.backend_id);
        let rx_page = pool.share(rx_slot, self.backend_id);
        let port = match xen.alloc_unbound(self.backend_id) {
            Ok(p) => p,
            Err(e) => {
                log::error!("uplink: cannot allocate an event channel for domain {}: {}", self.backend_id, e);
                for page in [tx_page, rx_page] {
                    match pool.unshare(page) {
                        Ok(s) => pool.put_back(s),
                        Err(p) => pool.quarantine_shared(p),
                    }
                }
                self.phase = Phase::WaitBackend;
                return;
            }
        };
        let tx = FrontRing::init(tx_page.page());
        let rx = FrontRing::init(rx_page.page());
        self.conn = Some(Connection {
            tx,
            rx,
            tx_page: Some(tx_page),
            rx_page: Some(rx_page),
            port,
            tx_slots: [const { None }; TX_SLOTS],
            tx_free: core::array::from_fn(|i| (TX_SLOTS - 1 - i) as u16),
            tx_free_len: TX_SLOTS,
            rx_slots: [const { None }; RX_BUFFERS],
            rx_skip_chain: false,
            notify: false,
        });
        self.txn = Some(TxnRetry::new(5, XS_TIMEOUT_NS));
        self.txn_writes = 0;
        self.phase = Phase::Publishing;
    }

    fn poll_txn<E: GrantEntries, const N: usize>(
        &mut self,
        xs: &mut Client,
        xen: &impl EventChannels,
        pool: &mut GrantPool<E, N>,
        now: u64,
    ) -> Option<NetfrontEvent> {
        let mut txn = self.txn?;
        let step = txn.poll(xs, now);
        self.txn = Some(txn);
        const KEYS: u8 = 5;
        match step {
            TxnStep::Begin(tx) => {
                self.txn_writes = 0;
                self.txn_failed = false;
                let c = self.conn.as_ref()?;
                let (tx_ref, rx_ref, port) = (
                    c.tx_page.as_ref().map_or(0, |p| p.gref().0),
                    c.rx_page.as_ref().map_or(0, |p| p.gref().0),
                    c.port.0,
                );
                let values: [(&str, u32); 5] = [
                    ("tx-ring-ref", tx_ref),
                    ("rx-ring-ref", rx_ref),
                    ("event-channel", port),
                    ("request-rx-copy", 1),
                    ("feature-rx-notify", 1),
                ];
                for (key, value) in values {
                    let path: PathBuf<64> = self.device_path(key);
                    let value = xs_path!(12; "{}", value);
                    if let (Some(p), Some(v)) = (path.as_str(), value.as_str()) {
                        self.submit(xs, now, tx, Request::Write(p, v.as_bytes()), Op::TxnWrite);
                    }
                }
                None
            }
            TxnStep::Open(_) => {
                if self.txn_failed {
                    if let Some(t) = self.txn.as_mut() {
                        let _ = t.abort(xs, now);
                    }
                } else if self.txn_writes >= KEYS
                    && let Some(t) = self.txn.as_mut()
                {
                    let _ = t.commit(xs, now);
                }
                None
            }
            TxnStep::Committed => {
                self.txn = None;
                self.write_state(xs, now, XenbusState::Connected);
                self.phase = Phase::Connecting;
                self.reread_backend = true;
                self.refill_rx(pool);
                self.flush(xen);
                None
            }
            TxnStep::Aborted | TxnStep::Failed(_) => {
                log::error!(
                    "uplink: publishing ring details failed ({:?}); will retry on the next backend change",
                    step
                );
                self.txn = None;
                self.release(xen, pool);
                self.phase = Phase::WaitBackend;
                None
            }
            TxnStep::Pending => None,
        }
    }
}
