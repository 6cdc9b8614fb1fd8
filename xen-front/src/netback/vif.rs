//! One vif slot: where its xenbus handshake stands, what the toolstack and the frontend told
//! us, its link, its half-gathered TX frame, and its counters.

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::netif::TxRequest;
use crate::platform::DomId;
use crate::xenbus::XenbusState;
use crate::xenstore::ReqId;

use super::counters::{Resources, VifCounters};
use super::link::{FrontConf, Link};

/// Names a vif for the appliance: its slot and the slot's generation, so an id kept after
/// the vif went away never names its successor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VifId {
    /// Slot index, `0..MAX_VIFS`.
    pub index: u16,
    /// Bumped each time the slot is reused.
    pub generation: u32,
}

/// What the appliance needs to know about a client link (xenstore's word, validated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VifInfo {
    /// The client (frontend) domain.
    pub domid: DomId,
    /// The device number (`vif<domid>.<devid>`).
    pub devid: u32,
    /// The client's MAC (backend `mac` key, written by the toolstack).
    pub mac: [u8; 6],
    /// The client's IPv4 address from the backend `ip` key, if it holds one.
    pub ipv4: Option<Ipv4Addr>,
    /// The client's IPv6 address from the backend `ip` key, if it holds one.
    pub ipv6: Option<Ipv6Addr>,
    /// The client accepts frames with a blank L4 checksum (it did not write
    /// `feature-no-csum-offload = 1`).
    pub csum_offload: bool,
}

impl VifInfo {
    pub(super) const EMPTY: VifInfo =
        VifInfo { domid: 0, devid: 0, mac: [0; 6], ipv4: None, ipv6: None, csum_offload: true };
}

/// Backend-directory keys we read (written by the toolstack).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BKey {
    FrontendId,
    Frontend,
    Mac,
    Ip,
    Online,
}

/// Frontend-directory keys we read (written by the client: hostile).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FKey {
    State,
    RequestRxCopy,
    MultiQueue,
    TxRingRef,
    RxRingRef,
    EventChannel,
    NoCsumOffload,
}

/// Backend-directory keys we write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WKey {
    FeatureRxCopy,
    FeatureSg,
    HotplugStatus,
    State(XenbusState),
}

impl WKey {
    /// Bit in [`Vif::nodes`] for keys whose node we create (libxl creates `state`).
    pub(super) fn node_bit(self) -> u8 {
        match self {
            WKey::FeatureRxCopy => 1,
            WKey::FeatureSg => 2,
            WKey::HotplugStatus => 4,
            WKey::State(_) => 0,
        }
    }
}

/// One xenstore request of a vif.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Read(BKey),
    ReadFront(FKey),
    Write(WKey),
    WatchFront,
    UnwatchFront,
    Remove,
}

/// Where a vif's xenbus life stands (backend side of xen-abi.md §7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Slot unused.
    Free,
    /// Reading the toolstack's keys, in order.
    Probe(BKey),
    /// Writing our features, `hotplug-status`, then InitWait, in order.
    Advertise(WKey),
    /// InitWait: waiting for the frontend to publish its rings.
    WaitFront,
    /// Reading the frontend's connection keys, in order.
    ReadConf(FKey),
    /// Rings mapped, channel bound: writing Connected.
    Connecting,
    /// Exchanging frames.
    Connected,
    /// Resources released; writing Closing and waiting (bounded) for the frontend.
    Closing { deadline: u64 },
    /// Writing Closed; then removing the directory if `online` is 0, or waiting for the
    /// frontend to start over.
    Closed,
    /// Removing our backend directory (`online` = 0).
    Remove,
    /// Refused (quota, bad toolstack keys): Closed written, nothing held, waiting for removal.
    Refused,
    /// The directory is gone: dropping the frontend watch, then the slot is free.
    Release,
}

/// The frontend-state watch of a vif.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WatchState {
    None,
    Registering,
    Active,
    Removing,
}

/// Maximum slots of one TX frame we gather: `XEN_NETIF_NR_SLOTS_MIN` data slots, one more to
/// notice a chain that is too long, and [`MAX_EXTRAS`] extra-info slots.
pub(super) const MAX_FRAME_SLOTS: usize = crate::netif::NR_SLOTS_MIN + 1 + MAX_EXTRAS;
/// Extra-info slots accepted per frame.
pub(super) const MAX_EXTRAS: usize = 4;

/// A TX frame being gathered from the ring (its slots already consumed).
#[derive(Clone, Copy, Debug)]
pub(super) struct Gather {
    pub(super) slots: [TxRequest; MAX_FRAME_SLOTS],
    /// Bit i: slot i is an extra-info slot.
    pub(super) extra_mask: u32,
    pub(super) len: usize,
    pub(super) data_slots: usize,
    pub(super) extras: usize,
    pub(super) extras_pending: bool,
    pub(super) more_data: bool,
}

impl Gather {
    pub(super) const EMPTY: Gather = Gather {
        slots: [TxRequest { gref: crate::platform::GrantRef(0), offset: 0, flags: 0, id: 0, size: 0 }; MAX_FRAME_SLOTS],
        extra_mask: 0,
        len: 0,
        data_slots: 0,
        extras: 0,
        extras_pending: false,
        more_data: false,
    };

    /// Every slot of the frame is here (or it already broke a limit).
    pub(super) fn complete(&self) -> bool {
        self.len > 0 && ((!self.extras_pending && !self.more_data) || self.over_limit())
    }

    pub(super) fn over_limit(&self) -> bool {
        self.data_slots > crate::netif::NR_SLOTS_MIN || self.extras > MAX_EXTRAS
    }

    /// Appends the next consumed request.
    pub(super) fn push(&mut self, req: TxRequest) {
        let i = self.len;
        self.slots[i] = req;
        self.len += 1;
        if i == 0 {
            self.data_slots = 1;
            self.extras_pending = req.flags & crate::netif::txf::EXTRA_INFO != 0;
            self.more_data = req.flags & crate::netif::txf::MORE_DATA != 0;
        } else if self.extras_pending {
            self.extra_mask |= 1 << i;
            self.extras += 1;
            self.extras_pending = crate::netif::ExtraInfo::from_tx_slot(&req).has_more();
        } else {
            self.data_slots += 1;
            self.more_data = req.flags & crate::netif::txf::MORE_DATA != 0;
        }
    }

    pub(super) fn is_extra(&self, i: usize) -> bool {
        self.extra_mask & (1 << i) != 0
    }

    pub(super) fn clear(&mut self) {
        self.len = 0;
        self.extra_mask = 0;
        self.data_slots = 0;
        self.extras = 0;
        self.extras_pending = false;
        self.more_data = false;
    }
}

/// One vif slot.
#[derive(Debug)]
pub(super) struct Vif {
    pub(super) generation: u32,
    pub(super) phase: Phase,
    /// Our xenstore request in flight.
    pub(super) op: Option<(ReqId, Op)>,
    /// Whether the write of the current phase (Closing/Closed/Refused) was done.
    pub(super) wrote: bool,
    /// Re-read `online` (and so notice the directory going away).
    pub(super) reread_backend: bool,
    /// Re-read the frontend's `state`.
    pub(super) reread_front: bool,
    pub(super) next_front_poll: u64,
    pub(super) retry_at: u64,
    pub(super) watch: WatchState,
    pub(super) online: bool,
    pub(super) info: VifInfo,
    pub(super) conf: FrontConf,
    pub(super) link: Option<Link>,
    /// Ever reached Connected in this connection (for the disconnect counter and log).
    pub(super) was_connected: bool,
    /// The data path saw a fault: close from the next control poll.
    pub(super) fault: bool,
    /// The frontend notified us, or work is left on its TX ring.
    pub(super) kicked: bool,
    pub(super) gather: Gather,
    pub(super) abuse: u32,
    /// Nodes we created in the backend directory (bits of [`WKey::node_bit`]).
    pub(super) nodes: u8,
    pub(super) res: Resources,
    pub(super) counters: VifCounters,
    pub(super) scan_seen: u32,
    /// The window GFNs of this slot may still hold a mapping: never use the slot again.
    pub(super) retired: bool,
    /// The id we told the appliance is up (until we tell it is down).
    pub(super) reported_up: Option<VifId>,
    /// The TX / RX ring has responses to publish.
    pub(super) tx_dirty: bool,
    pub(super) rx_dirty: bool,
}

impl Vif {
    pub(super) const EMPTY: Vif = Vif {
        generation: 0,
        phase: Phase::Free,
        op: None,
        wrote: false,
        reread_backend: false,
        reread_front: false,
        next_front_poll: 0,
        retry_at: 0,
        watch: WatchState::None,
        online: false,
        info: VifInfo::EMPTY,
        conf: FrontConf { tx_ref: 0, rx_ref: 0, evtchn: 0, no_csum_offload: false },
        link: None,
        was_connected: false,
        fault: false,
        kicked: false,
        gather: Gather::EMPTY,
        abuse: 0,
        nodes: 0,
        res: Resources { mapped_pages: 0, event_channels: 0, in_flight_copies: 0, watches: 0, xs_nodes: 0 },
        counters: VifCounters {
            rx_frames: 0,
            rx_bytes: 0,
            tx_frames: 0,
            tx_bytes: 0,
            malformed: 0,
            copy_errors: 0,
            no_rx_buffer: 0,
            rx_copy_errors: 0,
        },
        scan_seen: 0,
        retired: false,
        reported_up: None,
        tx_dirty: false,
        rx_dirty: false,
    };

    pub(super) fn in_use(&self) -> bool {
        self.phase != Phase::Free
    }

    pub(super) fn is(&self, fe: DomId, devid: u32) -> bool {
        self.in_use() && self.info.domid == fe && self.info.devid == devid
    }

    /// Phases in which the frontend's state matters to us.
    pub(super) fn wants_front_state(&self) -> bool {
        matches!(self.phase, Phase::WaitFront | Phase::Closing { .. }) || (self.phase == Phase::Closed && self.online)
    }

    pub(super) fn connected(&self) -> bool {
        self.phase == Phase::Connected && self.link.is_some() && !self.fault
    }
}
