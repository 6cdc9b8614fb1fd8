//! A simulated netback: Linux `xen-netback` as a frontend sees it, written from `io/netif.h`,
//! `io/xenbus.h` and xen-abi.md §6–7 (not from our netfront), so our netfront can be tested
//! against an independent peer, honest or hostile.
//!
//! # Playing the backend
//!
//! [`SimNetback::attach`] is libxl's part of `xl network-attach`: it creates the frontend
//! directory `/local/domain/<fe>/device/vif/<devid>/` and the backend directory
//! `/local/domain/<be>/backend/vif/<fe>/<devid>/` with libxl's keys and permissions. The
//! backend runs in a [`SimDomain`] (dom0 or a created driver domain such as `sys-net`, which a
//! test may destroy at any point with [`Sim::destroy_domain`]). Nothing happens unless the test
//! calls [`SimNetback::step`]: one pass of the backend's xenbus driver and of its data path.
//!
//! - **xenbus** (Linux `xen-netback/xenbus.c`): the first step probes (writes `feature-sg`,
//!   `feature-rx-copy=1`, `feature-rx-flip=0` and any [`SimNetbackConfig::extra_features`],
//!   then `InitWait`). Each step reads the frontend's `state`; when it has changed the backend
//!   follows Linux's `frontend_changed` and `set_backend_state` walk: frontend Connected →
//!   connect (read `multi-queue-num-queues` (only 1 is accepted), `request-rx-copy` (must be
//!   non-zero), the `feature-*` keys, `tx-ring-ref`, `rx-ring-ref`, `event-channel`; map both
//!   rings into the backend's foreign window; bind the channel; write
//!   `hotplug-status=connected` as the vif script would; `Connected`). A failure there is
//!   `xenbus_dev_fatal`: an `error` node and `Closing`. Frontend Closing → unmap, unbind,
//!   `Closing`; Closed → `Closed`, and if the toolstack set `online=0` the device is
//!   unregistered and both directories are removed (the driver domain's `xl devd` and libxl's
//!   share of it). Frontend Initialising after Closed → `InitWait` again (reconnect). A garbage
//!   or missing frontend `state` reads as Unknown (Linux's `xenbus_read_driver_state`), which
//!   unregisters the device; a number out of range is fatal. If the toolstack removes the
//!   backend directory the device goes away: rings unmapped, channel closed.
//! - **TX** (Linux `netback.c` `xenvif_tx_build_gops`): requests are copied out of the ring
//!   once, extra-info slots gathered (type 0 or ≥ 6 is fatal; multicast add/del are answered
//!   `OKAY`), multi-slot chains counted as `xenvif_count_requests` does (first `size` minus
//!   the following sizes; a follow-on slot larger than what remains or more than 18 slots
//!   drops the packet with `ERROR` answers; 20 slots, a slot crossing its page, a first
//!   fragment crossing its page, or more requests than the ring holds is **fatal**: the
//!   interface is disabled and nothing more is answered, as Linux does), a first fragment
//!   under 14 bytes gets `ERROR`. Good packets are grant-copied slot by slot into the
//!   backend's own pages and recorded as [`SentFrame`]s. Each packet is answered by
//!   `make_tx_response`: the first slot's `{id, status}`, then `RSP_NULL` for each extra slot,
//!   then one response per follow-on slot.
//! - **RX** (Linux `rx.c`): injected frames ([`SimNetback::inject`]) are queued (dropped while
//!   not connected) and copied into posted requests with `GNTTABOP_copy`, up to 4096 bytes per
//!   slot from offset 0; frames over one page need the frontend's `feature-sg`. Each response
//!   goes in the ring index of the request it consumed; a failed copy leaves the `GNTST_*`
//!   code as the slot's status, as Linux's `xenvif_rx_copy_flush` does.
//! - **Events**: both rings share one event channel. With [`SimNetbackConfig::event_driven`]
//!   (the default, like Linux) the backend looks at the TX ring only when its port is pending
//!   or its last `RING_FINAL_CHECK_FOR_REQUESTS` found more, and waits for an event when
//!   frames are queued but too few RX requests are posted (having set `req_event`), so a
//!   frontend that forgets to notify stalls exactly as it would against Linux. Without
//!   `feature-rx-notify` the RX side polls (Linux's 30 ms drain timer). Responses are pushed
//!   once per pass and the frontend is notified only if its `rsp_event` asks for it.
//!
//! # Faults
//!
//! [`SimNetback::fault`] arms a [`Fault`]: lies in the next responses (unknown or duplicate
//! TX ids, bad statuses, RX offsets past the page), producer jumps, responses without requests,
//! RX floods, a backend that never connects or never consumes, one that goes Closing mid-way,
//! one that keeps TX grants mapped (so the frontend's revoke fails), and garbage xenstore
//! values. [`SimNetback::reattach`] and [`SimNetback::rewrite_backend_id`] play the toolstack
//! moving the device, [`Sim::destroy_domain`] kills the backend domain.

mod datapath;
mod ring;
pub mod wire;
mod xenbus;

use std::collections::{BTreeSet, VecDeque};

use grant_pool::SharedPage;
use xen_front::platform::{DomId, Gfn, GrantHandle, GrantRef, Port};

use super::{Sim, SimDomain, XsTool};
use ring::BackRing;

/// `enum xenbus_state` (`io/xenbus.h`), written as a decimal string to `<dir>/state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum XenbusState {
    /// 0: no state (or unreadable).
    Unknown,
    /// 1: the toolstack created the device.
    Initialising,
    /// 2: the backend is ready for the frontend's details.
    InitWait,
    /// 3: the frontend wrote its details (Linux netback ignores it).
    Initialised,
    /// 4: connected.
    Connected,
    /// 5: shutting down.
    Closing,
    /// 6: shut down.
    Closed,
    /// 7: reconfiguring.
    Reconfiguring,
    /// 8: reconfigured.
    Reconfigured,
}

impl XenbusState {
    /// The state numbered `n`, if any.
    pub fn from_number(n: u32) -> Option<Self> {
        use XenbusState::*;
        Some(match n {
            0 => Unknown,
            1 => Initialising,
            2 => InitWait,
            3 => Initialised,
            4 => Connected,
            5 => Closing,
            6 => Closed,
            7 => Reconfiguring,
            8 => Reconfigured,
            _ => return None,
        })
    }

    /// Its number.
    pub fn number(self) -> u32 {
        self as u32
    }
}

/// Parses a decimal xenstore value strictly (digits only, fits `u32`).
pub fn parse_decimal(value: &[u8]) -> Option<u32> {
    if value.is_empty() || value.len() > 10 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// How the simulated backend behaves when honest.
#[derive(Clone, Debug)]
pub struct SimNetbackConfig {
    /// Advertise `feature-sg=1` (accepting multi-slot TX is unconditional, as in Linux).
    pub feature_sg: bool,
    /// Advertise `feature-rx-copy=1` (Linux netfront refuses a backend without it).
    pub feature_rx_copy: bool,
    /// More `(key, value)` pairs written into the backend directory at probe time (e.g.
    /// `feature-gso-tcpv4`), to see that a frontend does not use what it cannot handle.
    pub extra_features: Vec<(String, String)>,
    /// Wake only on events and final checks, as Linux does (see the module docs); `false`
    /// polls both rings on every step.
    pub event_driven: bool,
    /// RX frames queued at most; further injections are dropped and counted.
    pub rx_queue_limit: usize,
}

impl Default for SimNetbackConfig {
    fn default() -> Self {
        SimNetbackConfig {
            feature_sg: true,
            feature_rx_copy: true,
            extra_features: Vec::new(),
            event_driven: true,
            rx_queue_limit: 1024,
        }
    }
}

/// The features a connected frontend wrote (Linux `read_xenbus_vif_flags`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrontendFeatures {
    /// `feature-rx-notify`: the frontend notifies when it posts RX requests.
    pub rx_notify: bool,
    /// `feature-sg`: RX frames may span several slots.
    pub sg: bool,
    /// `feature-gso-tcpv4`.
    pub gso_tcpv4: bool,
    /// `feature-gso-tcpv6`.
    pub gso_tcpv6: bool,
    /// `feature-no-csum-offload`: never send `csum_blank` RX frames.
    pub no_csum_offload: bool,
    /// `feature-ipv6-csum-offload`.
    pub ipv6_csum_offload: bool,
    /// `feature-multicast-control`.
    pub multicast_control: bool,
}

/// A frame the frontend transmitted, as the backend gathered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentFrame {
    /// The packet's bytes (all data slots, in order).
    pub bytes: Vec<u8>,
    /// The first slot's `NETTXF_*` flags.
    pub flags: u16,
    /// Data slots used (extra-info slots not counted).
    pub slots: usize,
    /// `(gso.size, gso.type)` if a GSO extra-info slot came with it.
    pub gso: Option<(u16, u8)>,
}

/// Which ring a ring fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ring {
    /// The transmit ring (frontend → backend).
    Tx,
    /// The receive ring (backend → frontend).
    Rx,
}

/// Hostile behaviours. Counted ones apply to the next `count` responses (of data slots, not
/// `RSP_NULL` ones; for RX, to the first slot of each frame); immediate ones act when
/// [`SimNetback::fault`] is called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// TX responses carry an id the frontend never posted (so far).
    TxUnknownId {
        /// Responses affected.
        count: u32,
    },
    /// Each TX response is written twice (the copy takes a ring slot no request asked for).
    TxDuplicate {
        /// Responses affected.
        count: u32,
    },
    /// TX responses carry `status` instead of the real one.
    TxStatus {
        /// The status written.
        status: i16,
        /// Responses affected.
        count: u32,
    },
    /// RX responses claim `offset` with `offset + status > 4096` (the data is at offset 0).
    RxBadOffset {
        /// Frames affected.
        count: u32,
    },
    /// RX responses carry `status` (e.g. negative, or more than a page) instead of the length.
    RxStatus {
        /// The status written.
        status: i16,
        /// Frames affected.
        count: u32,
    },
    /// RX responses carry an id the request did not have.
    RxUnknownId {
        /// Frames affected.
        count: u32,
    },
    /// Immediate: `rsp_prod` jumps `by` past the responses written (more than the ring size
    /// makes `RING_RESPONSE_PROD_OVERFLOW` true), and the frontend is notified.
    ProducerJump {
        /// The ring.
        ring: Ring,
        /// How far.
        by: u32,
    },
    /// Immediate: `count` responses no request asked for (TX: `{id 0xdead, OKAY}`; RX:
    /// `{id 0xdead, offset 0, status 64}`), pushed and notified. Later honest responses
    /// follow them, so the ring stays out of step, as with a real buggy backend.
    UnsolicitedResponses {
        /// The ring.
        ring: Ring,
        /// How many.
        count: u32,
    },
    /// Until cleared: every posted RX request is filled with `frame` on every step, events
    /// or not. Refused if `frame` is empty or over one page.
    RxFlood {
        /// The frame (at most one page).
        frame: Vec<u8>,
        /// Its `NETRXF_*` flags.
        flags: u16,
    },
    /// Until cleared: never leave InitWait (never maps, never answers).
    StayInInitWait,
    /// Until cleared: connected, but never consumes a request.
    NeverConsume,
    /// Immediate: unmap, unbind and go Closing mid-transfer (what `xenbus_dev_fatal` does).
    GoClosing,
    /// The next `count` TX packets' first grants are also mapped (read-only) and kept mapped
    /// until [`SimNetback::release_held_mappings`], so the frontend's revoke fails.
    HoldTxMappings {
        /// Packets affected.
        count: u32,
    },
    /// Immediate: the backend writes `value` to `<backend dir>/<key>` (garbage `state`,
    /// huge feature values, ...).
    WriteBackendKey {
        /// Key relative to the backend directory.
        key: String,
        /// Raw value.
        value: Vec<u8>,
    },
}

/// What the simulated backend saw and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimNetbackCounters {
    /// Successful connects (rings mapped, channel bound).
    pub connects: u64,
    /// Disconnects (rings unmapped, channel closed).
    pub disconnects: u64,
    /// `xenbus_dev_fatal`s and fatal TX errors (see [`SimNetback::fatal_reason`]).
    pub fatal_errors: u64,
    /// Events taken from the backend's port.
    pub events_received: u64,
    /// Notifications sent to the frontend.
    pub notifications_sent: u64,
    /// TX packets delivered to [`SimNetback::sent_frames`].
    pub tx_frames: u64,
    /// TX request slots consumed (data and extra-info).
    pub tx_slots: u64,
    /// TX packets refused (short first fragment, too many slots, slot larger than the rest)
    /// and answered with `ERROR`.
    pub tx_malformed: u64,
    /// TX packets dropped because a grant copy failed.
    pub tx_copy_errors: u64,
    /// `RSP_NULL` responses written for extra-info slots.
    pub tx_rsp_null: u64,
    /// Multicast add/del requests answered.
    pub tx_mcast: u64,
    /// Grant copies done for TX (one per data slot).
    pub tx_copies: u64,
    /// RX frames delivered (including flood frames).
    pub rx_frames: u64,
    /// RX slots filled.
    pub rx_slots: u64,
    /// Grant copies done for RX (one per slot).
    pub rx_copies: u64,
    /// RX slots whose copy failed (status = the `GNTST_*` code).
    pub rx_copy_errors: u64,
    /// Injected frames dropped: not connected, queue full, empty, too big, or over a page
    /// without the frontend's `feature-sg`.
    pub rx_dropped: u64,
    /// Faults applied (each counted response or frame, and each immediate fault).
    pub faults_applied: u64,
}

/// A live connection: mapped rings and the bound channel.
#[derive(Debug)]
pub(crate) struct Connection {
    tx: BackRing,
    rx: BackRing,
    tx_map: (Gfn, GrantHandle),
    rx_map: (Gfn, GrantHandle),
    port: Port,
    features: FrontendFeatures,
    /// The last final check found TX requests (process them without an event).
    tx_more: bool,
    /// RX work may be possible (a frame was queued or an event came).
    rx_kick: bool,
}

/// Counted and persistent faults.
#[derive(Debug, Default)]
struct Faults {
    tx_unknown_id: u32,
    tx_duplicate: u32,
    tx_status: Option<(i16, u32)>,
    rx_bad_offset: u32,
    rx_status: Option<(i16, u32)>,
    rx_unknown_id: u32,
    hold_tx: u32,
    flood: Option<(Vec<u8>, u16)>,
    stay_in_init_wait: bool,
    never_consume: bool,
}

/// A foreign mapping kept by [`Fault::HoldTxMappings`].
#[derive(Clone, Copy, Debug)]
struct Held {
    at: Gfn,
    handle: GrantHandle,
}

/// The simulated netback for one vif. See the [module docs](self).
#[derive(Debug)]
pub struct SimNetback {
    sim: Sim,
    backend: SimDomain,
    frontend: DomId,
    devid: u32,
    mac: [u8; 6],
    config: SimNetbackConfig,
    /// The backend's own xenstore connection.
    xs: XsTool,
    /// dom0's toolstack connection.
    toolstack: XsTool,
    fe_path: String,
    be_path: String,
    state: XenbusState,
    probed: bool,
    /// The frontend `state` value last acted on (`None` inside: absent or unreadable).
    last_fe_state: Option<Option<Vec<u8>>>,
    conn: Option<Connection>,
    /// A fatal TX error disabled the interface (Linux `xenvif_fatal_tx_err`).
    disabled: bool,
    /// The device was unregistered or its directory removed: nothing more happens.
    removed: bool,
    /// The backend domain is gone.
    dead: bool,
    fatal_reason: Option<String>,
    /// Bounce pages of the backend (one per slot of a packet).
    scratch: Vec<(Gfn, SharedPage)>,
    rx_queue: VecDeque<(Vec<u8>, u16)>,
    sent: Vec<SentFrame>,
    /// Every TX id the frontend used (to make up ids it never posted).
    tx_ids_seen: BTreeSet<u16>,
    faults: Faults,
    held: Vec<Held>,
    counters: SimNetbackCounters,
}

impl SimNetback {
    /// The backend's own xenbus state (what it last wrote, or would have written).
    pub fn state(&self) -> XenbusState {
        self.state
    }

    /// The backend domain.
    pub fn backend(&self) -> &SimDomain {
        &self.backend
    }

    /// The frontend domain id.
    pub fn frontend(&self) -> DomId {
        self.frontend
    }

    /// The device id (`handle`).
    pub fn devid(&self) -> u32 {
        self.devid
    }

    /// `/local/domain/<fe>/device/vif/<devid>`.
    pub fn frontend_path(&self) -> &str {
        &self.fe_path
    }

    /// `/local/domain/<be>/backend/vif/<fe>/<devid>`.
    pub fn backend_path(&self) -> &str {
        &self.be_path
    }

    /// Whether the rings are mapped and the channel bound.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// The backend's end of the event channel while connected.
    pub fn port(&self) -> Option<Port> {
        self.conn.as_ref().map(|c| c.port)
    }

    /// What the connected frontend advertised.
    pub fn frontend_features(&self) -> Option<FrontendFeatures> {
        self.conn.as_ref().map(|c| c.features)
    }

    /// Whether a fatal TX error disabled the interface (nothing more is answered).
    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// Whether the device is gone (unregistered, its directory removed, or the backend dead).
    pub fn is_removed(&self) -> bool {
        self.removed || self.dead
    }

    /// The message of the last fatal error (`xenbus_dev_fatal` or fatal TX error).
    pub fn fatal_reason(&self) -> Option<&str> {
        self.fatal_reason.as_deref()
    }

    /// The counters.
    pub fn counters(&self) -> &SimNetbackCounters {
        &self.counters
    }

    /// Takes the frames the frontend transmitted so far.
    pub fn sent_frames(&mut self) -> Vec<SentFrame> {
        std::mem::take(&mut self.sent)
    }

    /// Frames injected and not yet delivered.
    pub fn rx_queued(&self) -> usize {
        self.rx_queue.len()
    }

    /// RX requests the frontend has posted and the backend not consumed (bounded by the
    /// ring size whatever `req_prod` says).
    pub fn rx_posted(&self) -> usize {
        self.conn.as_ref().map_or(0, |c| c.rx.unconsumed() as usize)
    }

    /// TX requests published and not yet consumed.
    pub fn tx_pending(&self) -> usize {
        self.conn.as_ref().map_or(0, |c| c.tx.unconsumed() as usize)
    }

    /// Foreign mappings kept by [`Fault::HoldTxMappings`].
    pub fn held_mappings(&self) -> usize {
        self.held.len()
    }

    /// Queues `frame` for the frontend with `NETRXF_*` flags `rx_flags` on its first slot
    /// (`more_data` is added where needed; other bits pass as given, hostile or not).
    /// `false` if it was dropped (not connected, queue full, empty or over 64 KiB).
    pub fn inject(&mut self, frame: &[u8], rx_flags: u16) -> bool {
        let max = wire::LEGACY_SLOTS_MAX * grant_pool::PAGE_SIZE;
        let ok = self.conn.is_some()
            && !self.disabled
            && !frame.is_empty()
            && frame.len() <= max.min(0xffff)
            && self.rx_queue.len() < self.config.rx_queue_limit;
        if !ok {
            self.counters.rx_dropped += 1;
            return false;
        }
        self.rx_queue.push_back((frame.to_vec(), rx_flags));
        if let Some(c) = self.conn.as_mut() {
            c.rx_kick = true; // Linux's start_xmit wakes the RX thread
        }
        true
    }

    /// One pass of the backend: the xenbus driver, then (when connected and enabled) the TX
    /// and RX rings.
    pub fn step(&mut self) {
        if self.removed || self.dead {
            return;
        }
        if !self.sim.exists(self.backend.domid()) || self.sim.is_zombie(self.backend.domid()) {
            // Xen already closed its channels and released its mappings.
            self.dead = true;
            self.conn = None;
            self.held.clear();
            return;
        }
        self.xenbus_step();
        if !self.removed && !self.disabled {
            self.data_step();
        }
    }

    /// Arms or performs `fault` (see [`Fault`]). `false` if it needs a connection and there is
    /// none, or the backend is gone.
    pub fn fault(&mut self, fault: Fault) -> bool {
        if self.removed || self.dead {
            return false;
        }
        let f = &mut self.faults;
        match fault {
            Fault::TxUnknownId { count } => f.tx_unknown_id = count,
            Fault::TxDuplicate { count } => f.tx_duplicate = count,
            Fault::TxStatus { status, count } => f.tx_status = Some((status, count)),
            Fault::RxBadOffset { count } => f.rx_bad_offset = count,
            Fault::RxStatus { status, count } => f.rx_status = Some((status, count)),
            Fault::RxUnknownId { count } => f.rx_unknown_id = count,
            Fault::RxFlood { frame, flags } => {
                // An empty frame would fill nothing and never end; over a page is not a flood.
                if frame.is_empty() || frame.len() > grant_pool::PAGE_SIZE {
                    return false;
                }
                f.flood = Some((frame, flags));
            }
            Fault::StayInInitWait => f.stay_in_init_wait = true,
            Fault::NeverConsume => f.never_consume = true,
            Fault::HoldTxMappings { count } => f.hold_tx = count,
            Fault::ProducerJump { ring, by } => return self.producer_jump(ring, by),
            Fault::UnsolicitedResponses { ring, count } => return self.unsolicited(ring, count),
            Fault::GoClosing => {
                self.counters.faults_applied += 1;
                if self.conn.is_some() {
                    self.disconnect();
                }
                self.switch_state(XenbusState::Closing);
            }
            Fault::WriteBackendKey { key, value } => {
                self.counters.faults_applied += 1;
                return self.xs.write(&format!("{}/{key}", self.be_path), &value).is_ok();
            }
        }
        true
    }

    /// Disarms every counted and persistent fault (held mappings stay held).
    pub fn clear_faults(&mut self) {
        self.faults = Faults::default();
    }

    /// Unmaps what [`Fault::HoldTxMappings`] kept; returns how many unmaps succeeded.
    pub fn release_held_mappings(&mut self) -> usize {
        let held = std::mem::take(&mut self.held);
        if self.dead {
            return 0;
        }
        held.into_iter()
            .filter(|h| xen_front::platform::GrantTables::unmap_grant_ref(&self.backend, h.at, h.handle).is_ok())
            .count()
    }
}

/// Simulator helpers about a domain's foreign mappings, for the backend and for tests.
pub trait SimDomainMaps {
    /// The first GFN of the foreign window with nothing mapped at it.
    fn free_window_gfn(&self) -> Option<Gfn>;
    /// The foreign grants this domain has mapped (its maptrack): `(granter, gref)` each.
    fn foreign_mappings(&self) -> Vec<(DomId, GrantRef)>;
}

impl SimDomainMaps for SimDomain {
    fn free_window_gfn(&self) -> Option<Gfn> {
        use super::gnttab::{WINDOW_FRAMES, WINDOW_START};
        let world = self.lock();
        let d = world.domains.get(&self.domid)?;
        (0..u64::from(WINDOW_FRAMES)).map(|i| Gfn(WINDOW_START.0 + i)).find(|g| !d.memory.window.contains_key(g))
    }

    fn foreign_mappings(&self) -> Vec<(DomId, GrantRef)> {
        let world = self.lock();
        world
            .domains
            .get(&self.domid)
            .map_or(Vec::new(), |d| d.maptrack.values().map(|m| (m.granter, m.gref)).collect())
    }
}
