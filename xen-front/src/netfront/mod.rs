//! The uplink netfront: our connection to the network VM's netback (`sys-net`).
//!
//! `sys-net` is the least trusted VM on the machine, so its backend is treated as hostile:
//! every response field is validated ([`data`]), a ring index that no correct backend can
//! produce stops the connection, and a backend that goes away (Closing, Closed, its
//! directory removed, its domain destroyed) is torn down and reconnected without a reboot —
//! also when `xl network-detach` + `xl network-attach` bring a new device id, or a new
//! `backend-id` ([`handshake`]).
//!
//! - **One frame, one slot**: no `feature-sg`, so Linux netback keeps every frame within one
//!   page (MTU 1500).
//! - RX buffers are pool slots lent writable while posted, reclaimed before the frame is
//!   looked at, and re-posted at once; TX frames are pool slots lent read-only while posted
//!   and reclaimed on their response. A slot the backend still maps at teardown is
//!   quarantined by the pool, never reused.
//! - Checksum offload: frames carry [`ChecksumOffload`] both ways; nothing recomputes full
//!   checksums here.
//!
//! # Driving it from the poll loop
//!
//! ```text
//! start(xs)                                   once, after xenstore is up
//! on each watch event: on_watch(path, token)  returns true if it was ours
//! each pass:
//!     poll_control(xs, xen, pool, now)        handshake / teardown; may report LinkUp/LinkDown
//!     receive(pool, budget, |slot, frame| …)  frames from sys-net, in private slots
//!     transmit(pool, slot, off, len, csum)    frames to sys-net (Err gives the slot back)
//!     reap_tx(pool)                           completed TX slots go home
//!     flush(xen)                              publish requests, one notify if asked
//! ```

mod data;
mod handshake;

pub use data::{RxFrame, RxVerdict};
pub use handshake::{NetfrontEvent, Phase};

use grant_pool::{GrantEntries, GrantPool, Lent, SharedSlot, Slot};

use crate::netif::{ChecksumOffload, RxRing, TxRing};
use crate::platform::{DomId, EventChannels, Port};
use crate::ring::FrontRing;
use crate::xenstore::{PathBuf, ReqId, TxnRetry};

/// RX buffers kept posted (Linux netback needs at least `XEN_NETIF_NR_SLOTS_MIN` + 1).
pub const RX_BUFFERS: usize = 128;
/// TX frames in flight at once.
pub const TX_SLOTS: usize = 128;
/// How long a closing backend gets to unmap our pages before we stop waiting.
pub const CLOSE_TIMEOUT_NS: u64 = 5_000_000_000;
/// Per-request xenstore timeout.
pub const XS_TIMEOUT_NS: u64 = 10_000_000_000;
/// Backend paths longer than this are refused.
pub const BACKEND_PATH_MAX: usize = 96;

/// What happened on the uplink, cumulatively.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetfrontCounters {
    /// Connections that reached Connected.
    pub connects: u64,
    /// Connections torn down.
    pub disconnects: u64,
    /// Frames received and handed up.
    pub rx_frames: u64,
    /// Bytes received and handed up.
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_frames: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// TX refused: not connected, ring or id table full (the caller drops and counts).
    pub tx_busy: u64,
    /// RX responses with an id not posted or not outstanding (duplicates).
    pub rx_bad_id: u64,
    /// RX responses with a negative status.
    pub rx_error_status: u64,
    /// RX responses with offset + length past the page, or length 0.
    pub rx_bad_length: u64,
    /// RX responses chained (`more_data`/`extra_info`) although we did not offer it.
    pub rx_unexpected_chain: u64,
    /// TX responses with an id not in flight (duplicates, garbage).
    pub tx_bad_id: u64,
    /// TX responses with an error status (the frame was not sent).
    pub tx_error_status: u64,
    /// TX responses with `NETIF_RSP_NULL` (we never send extra-info slots).
    pub tx_unexpected_null: u64,
    /// Ring indices no correct backend can produce: the connection was dropped.
    pub ring_faults: u64,
    /// RX slots that could not be posted because the pool was empty.
    pub rx_refill_starved: u64,
    /// Slots (and ring pages) quarantined because the backend still mapped them.
    pub quarantined: u64,
    /// Device entries or backend values that did not parse.
    pub bad_xenstore_values: u64,
    /// xenstore requests that failed (logged).
    pub xenstore_errors: u64,
    /// Notifications sent to the backend.
    pub notifies: u64,
}

/// The live shared state of one connection.
struct Connection {
    tx: FrontRing<TxRing>,
    rx: FrontRing<RxRing>,
    tx_page: Option<SharedSlot>,
    rx_page: Option<SharedSlot>,
    port: Port,
    /// TX slots in flight, by request id.
    tx_slots: [Option<Slot<Lent>>; TX_SLOTS],
    tx_free: [u16; TX_SLOTS],
    tx_free_len: usize,
    /// RX buffers posted, by request id.
    rx_slots: [Option<Slot<Lent>>; RX_BUFFERS],
    /// Skipping the rest of an (unexpected) multi-slot RX frame.
    rx_skip_chain: bool,
    /// A publish asked for a notification not yet sent.
    notify: bool,
}

/// The uplink netfront. Large (two slot tables); keep it in a static.
pub struct Netfront {
    phase: Phase,
    devid: Option<u32>,
    backend: PathBuf<BACKEND_PATH_MAX>,
    backend_id: DomId,
    mac: [u8; 6],
    /// Watch registered on this backend's `state` (to unwatch on a change of backend).
    watched_backend: PathBuf<BACKEND_PATH_MAX>,
    ops: [Option<(ReqId, handshake::Op)>; handshake::OPS_MAX],
    txn: Option<TxnRetry>,
    txn_writes: u8,
    txn_failed: bool,
    relist: bool,
    reread_backend: bool,
    pending_device: handshake::PendingDevice,
    close_deadline: u64,
    next_backend_check: u64,
    fault: bool,
    conn: Option<Connection>,
    counters: NetfrontCounters,
}

impl Default for Netfront {
    fn default() -> Self {
        Self::new()
    }
}

impl Netfront {
    /// A netfront that has not started.
    pub const fn new() -> Self {
        Netfront {
            phase: Phase::Stopped,
            devid: None,
            backend: PathBuf::new(),
            backend_id: 0,
            mac: [0; 6],
            watched_backend: PathBuf::new(),
            ops: [None; handshake::OPS_MAX],
            txn: None,
            txn_writes: 0,
            txn_failed: false,
            relist: false,
            reread_backend: false,
            pending_device: handshake::PendingDevice::new(),
            close_deadline: 0,
            next_backend_check: 0,
            fault: false,
            conn: None,
            counters: NetfrontCounters {
                connects: 0,
                disconnects: 0,
                rx_frames: 0,
                rx_bytes: 0,
                tx_frames: 0,
                tx_bytes: 0,
                tx_busy: 0,
                rx_bad_id: 0,
                rx_error_status: 0,
                rx_bad_length: 0,
                rx_unexpected_chain: 0,
                tx_bad_id: 0,
                tx_error_status: 0,
                tx_unexpected_null: 0,
                ring_faults: 0,
                rx_refill_starved: 0,
                quarantined: 0,
                bad_xenstore_values: 0,
                xenstore_errors: 0,
                notifies: 0,
            },
        }
    }

    /// Where the handshake is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// True while frames flow (both ends Connected).
    pub fn is_up(&self) -> bool {
        self.phase == Phase::Connected && self.conn.is_some()
    }

    /// Our MAC address (from the device's `mac` key).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The device id in use, if any.
    pub fn devid(&self) -> Option<u32> {
        self.devid
    }

    /// The backend domain.
    pub fn backend_id(&self) -> DomId {
        self.backend_id
    }

    /// Cumulative counters.
    pub fn counters(&self) -> &NetfrontCounters {
        &self.counters
    }

    /// The event channel of the live connection (to tell which events are ours).
    pub fn port(&self) -> Option<Port> {
        self.conn.as_ref().map(|c| c.port)
    }

    /// RX buffers posted and TX frames in flight now.
    pub fn in_flight(&self) -> (usize, usize) {
        self.conn
            .as_ref()
            .map_or((0, 0), |c| (c.rx_slots.iter().filter(|s| s.is_some()).count(), TX_SLOTS - c.tx_free_len))
    }

    /// Publishes what `receive`/`transmit` queued and notifies the backend once if it asked.
    pub fn flush(&mut self, xen: &impl EventChannels) {
        let Some(c) = self.conn.as_mut() else { return };
        if c.tx.fault().is_none() && c.tx.publish() {
            c.notify = true;
        }
        if c.rx.fault().is_none() && c.rx.publish() {
            c.notify = true;
        }
        if c.notify {
            c.notify = false;
            self.counters.notifies += 1;
            let _ = xen.send(c.port);
        }
    }

    /// Releases everything the connection holds: closes the event channel, reclaims every
    /// slot and ring page (quarantining those the backend still maps).
    fn release<E: GrantEntries, const N: usize>(&mut self, xen: &impl EventChannels, pool: &mut GrantPool<E, N>) {
        let Some(mut c) = self.conn.take() else { return };
        let _ = xen.close(c.port);
        let mut quarantined = 0;
        for lent in c.tx_slots.iter_mut().chain(c.rx_slots.iter_mut()).filter_map(Option::take) {
            match pool.reclaim(lent) {
                Ok(slot) => pool.put_back(slot),
                Err(lent) => {
                    pool.quarantine(lent);
                    quarantined += 1;
                }
            }
        }
        for page in [c.tx_page.take(), c.rx_page.take()].into_iter().flatten() {
            match pool.unshare(page) {
                Ok(slot) => pool.put_back(slot),
                Err(page) => {
                    pool.quarantine_shared(page);
                    quarantined += 1;
                }
            }
        }
        if quarantined > 0 {
            log::warn!("uplink: {} pages still mapped by the backend: quarantined", quarantined);
        }
        self.counters.quarantined += quarantined;
        self.counters.disconnects += 1;
    }
}

/// Convenience for the appliance: a checksum state for frames we build ourselves (complete
/// checksums, nothing to vouch for).
pub const LOCAL_FRAME: ChecksumOffload = ChecksumOffload { blank: false, validated: false };
