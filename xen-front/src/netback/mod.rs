//! The netback: portcullis as the network backend (driver domain) of its client VMs.
//!
//! Every AppVM's netfront connects to us. Clients are untrusted: everything they write
//! (ring indices and slots, xenstore keys) is validated before use, bad input costs only the
//! client that sent it (an error response, a counter, at worst its disconnection), and no
//! client can hold resources that do not come back when it goes.
//!
//! - [`control`](self) (xenbus): discovers vifs under our `backend/vif`, runs the backend half of
//!   the handshake (xen-abi.md §7.4), and tears vifs down (frontend Closing/Closed, `online`
//!   = 0, directory removed, domain gone).
//! - `link`: the two ring pages mapped into a fixed window and the bound event channel.
//! - `tx`: frames from clients (their TX ring) gathered with batched `GNTTABOP_copy` into
//!   private pool slots.
//! - `rx`: frames to clients, copied into pages they posted on their RX ring.
//! - [`counters`]: per-vif resources and traffic, netback-wide statistics.
//!
//! # Sizes
//!
//! [`MAX_VIFS`] (128) slots in a fixed array: no heap, nothing grows. A [`Netback`] is about
//! 88 KiB (90,320 bytes on x86_64; a test keeps it under 96 KiB): 128 × ~630 B of vif state
//! (mostly the 23-slot TX gather buffer and the two ring handles) plus a 64-frame copy batch
//! (~6 KiB). Put it in a `static` (`Netback::new` is `const`); `receive` also uses ~3 KiB of
//! stack for the batch's pool slots.
//!
//! # Xenstore use
//!
//! Watches do not grow with the number of clients: `backend/vif` and `@releaseDomain`, plus
//! a frontend-`state` watch per vif only while it is handshaking or closing, and at most
//! [`FRONT_WATCH_MAX`] of those at once; a vif without one has its frontend state re-read
//! every [`FRONT_POLL_NS`]. Connected vifs hold no watch; their frontends are re-read every
//! [`SWEEP_NS`], on `@releaseDomain`, and when their copies fail. At most [`XS_BUDGET`]
//! requests of ours are in flight, leaving the rest of the client's slots to others.
//! Watch events are hints: each one only marks what to re-read.
//!
//! xenstored's node quota (1000 per domain by default) counts the ~15 nodes libxl puts in
//! each backend directory it gives us, so new vifs fail around the 60th: a quota answer
//! (`ENOSPC`/`EQUOTA`/`E2BIG`) refuses that vif with a log line and writes its state Closed.
//! To serve more clients raise the quota in dom0, for C xenstored
//! `xenstore-control quota set nodes 8192` (runtime) or `XENSTORED_ARGS="--entry-nb=8192
//! --watch-nb=256"` in `/etc/sysconfig/xencommons` (boot).
//!
//! # Driving it from the poll loop
//!
//! ```ignore
//! static NETBACK: spin::Mutex<Netback> = spin::Mutex::new(Netback::new(NETBACK_WINDOW));
//!
//! nb.start();                                        // once, after xenstore is attached
//! loop {
//!     // xenstore: route watch events by token, then let the netback run its handshakes.
//!     if xs.take_events_lost() { nb.on_events_lost(); /* and tell the other users */ }
//!     while let Some(ev) = xs.pop_event() {
//!         if !nb.on_watch_event(ev.path, ev.token) { /* someone else's token */ }
//!     }
//!     nb.poll(&mut xs, &xen, now);                   // replies, timers, next requests
//!     // event channels: for each pending port p, `nb.on_event(p)` (false: not ours).
//!     // client -> uplink:
//!     nb.receive(&xen, &mut pool, BUDGET, |pool, vif, slot, meta| {
//!         // parse/filter/NAT in `slot` (private); lend it to the uplink or pool.put_back(slot)
//!     });
//!     // uplink -> client: frames already revoked from the uplink and filtered:
//!     nb.transmit_many(&xen, &frames, &mut results);  // then re-lend the slots to the uplink
//!     while let Some(change) = nb.take_change() { /* LinkChange::Up(id) / Down(id) */ }
//!     // sleep until an event or nb.next_deadline()
//! }
//! ```
//!
//! `poll` must run whenever xenstore replies or events arrive and at least by
//! [`Netback::next_deadline`]. `receive` and `transmit_many` publish their responses once
//! per call and notify a ring only when its frontend asked (`rsp_event`).

mod control;
pub mod counters;
mod link;
mod path;
mod rx;
mod tx;
mod vif;

#[cfg(test)]
mod tests;

use crate::platform::{Gfn, Port};

pub use counters::{NetbackStats, Resources, VifCounters};
pub use rx::{OutFrame, TxDrop};
pub use tx::FrameMeta;
pub use vif::{VifId, VifInfo};

use vif::{Vif, WatchState};

/// Vif slots: clients served at once. The next one is refused with a log line.
pub const MAX_VIFS: usize = 128;
/// Window frames the netback maps into: two ring pages per vif slot.
pub const WINDOW_FRAMES: u32 = 2 * MAX_VIFS as u32;
/// Our xenstore requests in flight at most (the client has 16 slots for everyone).
pub const XS_BUDGET: usize = 8;
/// Frontend-state watches held at once (handshaking and closing vifs).
pub const FRONT_WATCH_MAX: u32 = 32;
/// How often a handshaking vif without a watch re-reads its frontend's state.
pub const FRONT_POLL_NS: u64 = 200_000_000;
/// How often connected vifs re-read their frontend's state (a frontend may close without
/// the toolstack noticing; Linux netfront waits 5 s for the backend to follow its close).
pub const SWEEP_NS: u64 = 1_000_000_000;
/// How long we wait in Closing for the frontend before going Closed anyway (libxl gives the
/// whole removal 10 s).
pub const CLOSE_GRACE_NS: u64 = 2_000_000_000;
/// How long a vif stays Closed before its directory is removed (after `online` = 0), so the
/// toolstack sees the Closed state it waits for (libxl gives the whole removal 10 s).
pub const REMOVE_DELAY_NS: u64 = 1_000_000_000;
/// Per-request xenstore timeout.
pub const XS_TIMEOUT_NS: u64 = 10_000_000_000;
/// Malformed frames or failed copies after which a client is disconnected.
pub const ABUSE_LIMIT: u32 = 16;
/// Copies per `GNTTABOP_copy` hypercall (and frames per batch).
pub const COPY_BATCH: usize = 64;
/// Our MAC on every client link (what Linux netback gives every vif).
pub const BACKEND_MAC: [u8; 6] = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff];

/// A client link came up or went down (see [`Netback::take_change`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkChange {
    /// Connected: its [`VifInfo`] is valid; frames may flow.
    Up(VifId),
    /// Gone: forget everything keyed by this id.
    Down(VifId),
}

/// The netback. See the [module docs](self).
pub struct Netback {
    vifs: [Vif; MAX_VIFS],
    window: Gfn,
    started: bool,
    watch_vifs: WatchState,
    watch_release: WatchState,
    global_ops: [Option<(crate::xenstore::ReqId, control::GlobalOp)>; 3],
    scan: control::Scan,
    xs_in_flight: usize,
    front_watches: u32,
    refused: [Option<(u16, u32)>; 16],
    refused_next: usize,
    rr_control: usize,
    rr_data: usize,
    next_sweep: u64,
    stats: NetbackStats,
    batch: tx::Batch,
}

impl Netback {
    /// A netback that maps client rings at `window .. window + WINDOW_FRAMES` (a part of the
    /// platform's foreign window that nothing else maps into).
    pub const fn new(window: Gfn) -> Netback {
        Netback {
            vifs: [const { Vif::EMPTY }; MAX_VIFS],
            window,
            started: false,
            watch_vifs: WatchState::None,
            watch_release: WatchState::None,
            global_ops: [None; 3],
            scan: control::Scan::IDLE,
            xs_in_flight: 0,
            front_watches: 0,
            refused: [None; 16],
            refused_next: 0,
            rr_control: 0,
            rr_data: 0,
            next_sweep: 0,
            stats: NetbackStats {
                connects: 0,
                disconnects: 0,
                refused_capacity: 0,
                refused_quota: 0,
                refused_config: 0,
                refused_map: 0,
                ring_faults: 0,
                abuse_disconnects: 0,
                malformed: 0,
                copy_errors: 0,
                rx_frames: 0,
                tx_frames: 0,
                tx_no_buffer: 0,
                tx_other_drops: 0,
                pool_exhausted: 0,
                copy_batches: 0,
                notifies: 0,
                xs_errors: 0,
                xs_busy: 0,
            },
            batch: tx::Batch::EMPTY,
        }
    }

    /// Starts serving: the next [`poll`](Self::poll) registers the watches and lists
    /// `backend/vif`.
    pub fn start(&mut self) {
        self.started = true;
        self.scan.wanted = true;
    }

    /// Netback-wide counters.
    pub fn stats(&self) -> &NetbackStats {
        &self.stats
    }

    /// Resources held now: every vif's plus our own watches. All zero but the two global
    /// watches once every client is gone.
    pub fn resources(&self) -> Resources {
        let mut r = Resources::default();
        for v in &self.vifs {
            r.add(&v.res);
        }
        r.watches +=
            u32::from(self.watch_vifs == WatchState::Active) + u32::from(self.watch_release == WatchState::Active);
        r
    }

    /// Vif slots in use (any phase).
    pub fn vifs_in_use(&self) -> usize {
        self.vifs.iter().filter(|v| v.in_use()).count()
    }

    /// Connected vifs.
    pub fn connected(&self) -> impl Iterator<Item = (VifId, &VifInfo)> + '_ {
        self.vifs.iter().enumerate().filter(|(_, v)| v.connected()).map(|(i, v)| (self.id_of(i), &v.info))
    }

    /// The link facts of a connected vif; `None` once it is gone (or for a stale id).
    pub fn info(&self, vif: VifId) -> Option<&VifInfo> {
        self.live(vif).map(|i| &self.vifs[i].info)
    }

    /// The connected vif of `domid`'s device `devid`.
    pub fn find(&self, domid: u16, devid: u32) -> Option<VifId> {
        self.vifs.iter().position(|v| v.connected() && v.is(domid, devid)).map(|i| self.id_of(i))
    }

    /// Traffic counters of a vif (any phase; `None` for a stale id).
    pub fn counters(&self, vif: VifId) -> Option<&VifCounters> {
        let v = self.vifs.get(usize::from(vif.index))?;
        (v.in_use() && v.generation == vif.generation).then_some(&v.counters)
    }

    /// Resources held for `domid`'s device `devid` (zero when it has no slot).
    pub fn vif_resources(&self, domid: u16, devid: u32) -> Resources {
        self.vifs.iter().find(|v| v.is(domid, devid)).map_or_else(Resources::default, |v| v.res)
    }

    /// The event-channel port of a connected vif (`None` once it is gone).
    pub fn port(&self, vif: VifId) -> Option<Port> {
        self.live(vif).and_then(|i| self.vifs[i].link.as_ref().map(|l| l.port))
    }

    /// The event-channel ports of connected vifs (to unmask or to demultiplex).
    pub fn ports(&self) -> impl Iterator<Item = Port> + '_ {
        self.vifs.iter().filter_map(|v| v.link.as_ref().map(|l| l.port))
    }

    /// An event arrived on `port`: if it is a client's, its TX ring is looked at by the next
    /// [`receive`](Self::receive). Returns false for ports that are not ours.
    pub fn on_event(&mut self, port: Port) -> bool {
        match self.vifs.iter_mut().find(|v| v.link.as_ref().is_some_and(|l| l.port == port)) {
            Some(v) => {
                v.kicked = true;
                true
            }
            None => false,
        }
    }

    /// Marks each connected vif whose port `fired` (e.g. `PendingEvents::take`): its TX ring
    /// is looked at by the next [`receive`](Self::receive).
    pub fn take_events(&mut self, mut fired: impl FnMut(Port) -> bool) {
        for v in &mut self.vifs {
            if v.link.as_ref().is_some_and(|l| fired(l.port)) {
                v.kicked = true;
            }
        }
    }

    /// The next link change for the appliance: `Down` for every `Up` it was told, once the
    /// vif is gone or disconnected; `Up` when a vif connects.
    pub fn take_change(&mut self) -> Option<LinkChange> {
        for i in 0..MAX_VIFS {
            let id = self.id_of(i);
            let connected = self.vifs[i].connected();
            let v = &mut self.vifs[i];
            match v.reported_up {
                Some(old) if !connected || old != id => {
                    v.reported_up = None;
                    return Some(LinkChange::Down(old));
                }
                None if connected => {
                    v.reported_up = Some(id);
                    return Some(LinkChange::Up(id));
                }
                _ => {}
            }
        }
        None
    }

    fn id_of(&self, index: usize) -> VifId {
        VifId { index: index as u16, generation: self.vifs[index].generation }
    }

    /// The slot of a connected vif named by a current id.
    fn live(&self, vif: VifId) -> Option<usize> {
        let i = usize::from(vif.index);
        let v = self.vifs.get(i)?;
        (v.generation == vif.generation && v.connected()).then_some(i)
    }
}
