//! Counters: resources each client holds (they must return to zero when it goes) and what
//! the netback dropped, refused or noticed. Nothing here logs; the appliance reports them.

/// Resources held on behalf of one client (or, summed, of all of them plus our own watches).
/// Every field returns to zero when the client's vif is torn down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// Foreign ring pages mapped into our window (0–2 per client).
    pub mapped_pages: u32,
    /// Interdomain event channels bound (0–1 per client).
    pub event_channels: u32,
    /// `GNTTABOP_copy` operations queued and not yet completed (0 between calls).
    pub in_flight_copies: u32,
    /// Xenstore watches registered (a frontend-state watch while handshaking or closing).
    pub watches: u32,
    /// Xenstore nodes we created in the client's backend directory.
    pub xs_nodes: u32,
}

impl Resources {
    /// Adds `other` field by field.
    pub fn add(&mut self, other: &Resources) {
        self.mapped_pages += other.mapped_pages;
        self.event_channels += other.event_channels;
        self.in_flight_copies += other.in_flight_copies;
        self.watches += other.watches;
        self.xs_nodes += other.xs_nodes;
    }

    /// True when nothing is held.
    pub fn is_zero(&self) -> bool {
        *self == Resources::default()
    }
}

/// Traffic and fault counters of one vif (reset when its slot is reused).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VifCounters {
    /// Frames received from the client and delivered.
    pub rx_frames: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// Frames sent to the client.
    pub tx_frames: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// TX requests (frames) refused as malformed: bad offset/size, too many slots, bad extra.
    pub malformed: u64,
    /// Frames whose grant copy from the client failed (bad grant, vanished domain).
    pub copy_errors: u64,
    /// Frames for the client dropped because it had posted no RX buffer.
    pub no_rx_buffer: u64,
    /// Frames for the client whose copy into its page failed.
    pub rx_copy_errors: u64,
}

/// Netback-wide counters (cumulative).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetbackStats {
    /// Vifs that reached Connected.
    pub connects: u64,
    /// Connected vifs torn down (any reason).
    pub disconnects: u64,
    /// Vifs refused because [`MAX_VIFS`](super::MAX_VIFS) were in use.
    pub refused_capacity: u64,
    /// Vifs refused because xenstored's quota (`ENOSPC`/`EQUOTA`/`E2BIG`) was hit.
    pub refused_quota: u64,
    /// Vifs refused for bad or missing xenstore values (toolstack's or frontend's).
    pub refused_config: u64,
    /// Vifs whose rings or event channel could not be mapped or bound.
    pub refused_map: u64,
    /// Vifs disconnected for a ring index no correct frontend writes.
    pub ring_faults: u64,
    /// Vifs disconnected for repeated malformed requests.
    pub abuse_disconnects: u64,
    /// Malformed TX frames (all vifs).
    pub malformed: u64,
    /// Failed TX copies (all vifs).
    pub copy_errors: u64,
    /// Frames delivered from clients.
    pub rx_frames: u64,
    /// Frames sent to clients.
    pub tx_frames: u64,
    /// Frames for clients dropped: no RX buffer posted.
    pub tx_no_buffer: u64,
    /// Frames for clients dropped: other reasons (not connected, too long, copy failed,
    /// checksum offload refused by the client).
    pub tx_other_drops: u64,
    /// TX frames left on a ring because the pool had no free slot (retried next pass).
    pub pool_exhausted: u64,
    /// `GNTTABOP_copy` hypercalls made.
    pub copy_batches: u64,
    /// Event-channel notifications sent.
    pub notifies: u64,
    /// Xenstore requests that failed unexpectedly (logged).
    pub xs_errors: u64,
    /// Xenstore submissions postponed because the client was busy.
    pub xs_busy: u64,
}
