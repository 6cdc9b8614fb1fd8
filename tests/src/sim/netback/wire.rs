//! The netif wire structures and constants (`io/netif.h`, xen-abi.md §7.1–7.2), translated
//! from the header for the simulated backend. Entries are copied out of the shared page once
//! (`RING_COPY_REQUEST`) and parsed from that private copy, so a frontend that rewrites the
//! ring meanwhile cannot make two reads disagree.

use grant_pool::SharedPage;

/// Bytes of the shared-ring header before the entries.
pub const RING_HEADER: usize = 64;
/// Entries in a netif TX or RX ring (`__CONST_RING_SIZE` for 4 KiB pages).
pub const RING_SIZE: u32 = 256;
/// Size of a TX ring entry (the request; the 4-byte response shares the slot).
pub const TX_ENTRY: usize = 12;
/// Size of an RX ring entry.
pub const RX_ENTRY: usize = 8;
/// Offsets of the shared-ring header fields.
pub mod sring {
    /// `req_prod`, written by the frontend.
    pub const REQ_PROD: usize = 0;
    /// `req_event`, written by the backend.
    pub const REQ_EVENT: usize = 4;
    /// `rsp_prod`, written by the backend.
    pub const RSP_PROD: usize = 8;
    /// `rsp_event`, written by the frontend.
    pub const RSP_EVENT: usize = 12;
}

/// `NETTXF_*`: flags of a TX request.
pub mod txf {
    /// The L4 checksum field holds only the pseudo-header sum.
    pub const CSUM_BLANK: u16 = 1 << 0;
    /// The checksum was verified (or will be filled in).
    pub const DATA_VALIDATED: u16 = 1 << 1;
    /// More slots of this packet follow.
    pub const MORE_DATA: u16 = 1 << 2;
    /// An extra-info slot follows this one.
    pub const EXTRA_INFO: u16 = 1 << 3;
}

/// `NETRXF_*`: flags of an RX response. Note the checksum bits are swapped against TX.
pub mod rxf {
    /// The checksum was verified.
    pub const DATA_VALIDATED: u16 = 1 << 0;
    /// The L4 checksum field holds only the pseudo-header sum.
    pub const CSUM_BLANK: u16 = 1 << 1;
    /// More slots of this packet follow.
    pub const MORE_DATA: u16 = 1 << 2;
    /// An extra-info slot follows this one.
    pub const EXTRA_INFO: u16 = 1 << 3;
    /// A GSO prefix slot (old protocol).
    pub const GSO_PREFIX: u16 = 1 << 4;
}

/// `NETIF_RSP_*`: response statuses (a positive RX status is a byte count).
pub mod rsp {
    /// The packet was dropped.
    pub const DROPPED: i16 = -2;
    /// The request was malformed or its copy failed.
    pub const ERROR: i16 = -1;
    /// Done.
    pub const OKAY: i16 = 0;
    /// The answer to an extra-info slot: skip it.
    pub const NULL: i16 = 1;
}

/// `XEN_NETIF_EXTRA_*`: extra-info slots.
pub mod extra {
    /// Size of an extra-info slot.
    pub const SIZE: usize = 8;
    /// `XEN_NETIF_EXTRA_TYPE_GSO`.
    pub const TYPE_GSO: u8 = 1;
    /// `XEN_NETIF_EXTRA_TYPE_MCAST_ADD`.
    pub const TYPE_MCAST_ADD: u8 = 2;
    /// `XEN_NETIF_EXTRA_TYPE_MCAST_DEL`.
    pub const TYPE_MCAST_DEL: u8 = 3;
    /// `XEN_NETIF_EXTRA_TYPE_MAX` as Linux defines it (it adds `XDP = 5`); a type of 0 or
    /// at least this is fatal in Linux netback.
    pub const TYPE_MAX: u8 = 6;
    /// `XEN_NETIF_EXTRA_FLAG_MORE`: another extra-info slot follows.
    pub const FLAG_MORE: u8 = 1 << 0;
    /// `XEN_NETIF_GSO_TYPE_TCPV4`.
    pub const GSO_TCPV4: u8 = 1;
    /// `XEN_NETIF_GSO_TYPE_TCPV6`.
    pub const GSO_TCPV6: u8 = 2;
}

/// `ETH_HLEN`: the smallest first fragment Linux netback accepts.
pub const ETH_HLEN: u16 = 14;
/// `XEN_NETBK_LEGACY_SLOTS_MAX`: packets with more slots are dropped (answered with errors).
pub const LEGACY_SLOTS_MAX: usize = 18;
/// Linux netback's default `fatal_skb_slots`: a packet this long disables the interface.
pub const FATAL_SKB_SLOTS: usize = 20;

/// `netif_tx_request` (12 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxRequest {
    /// Grant reference of the page holding the data.
    pub gref: u32,
    /// Where the data starts in that page.
    pub offset: u16,
    /// `NETTXF_*`.
    pub flags: u16,
    /// Echoed in the response.
    pub id: u16,
    /// First slot: the whole packet's length; others: this slot's length.
    pub size: u16,
}

impl TxRequest {
    /// Copies the request out of `page` at byte `off`, once.
    pub fn read(page: SharedPage, off: usize) -> Self {
        let mut b = [0u8; TX_ENTRY];
        page.copy_out(off, &mut b);
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        TxRequest {
            gref: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            offset: u16_at(4),
            flags: u16_at(6),
            id: u16_at(8),
            size: u16_at(10),
        }
    }
}

/// `netif_extra_info` (8 bytes, overlays a TX request slot or an RX response slot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtraInfo {
    /// `XEN_NETIF_EXTRA_TYPE_*`.
    pub kind: u8,
    /// `XEN_NETIF_EXTRA_FLAG_*`.
    pub flags: u8,
    /// The 6-byte union (`gso`, `mcast`, `hash`).
    pub data: [u8; 6],
}

impl ExtraInfo {
    /// Copies the extra-info slot out of `page` at byte `off`, once.
    pub fn read(page: SharedPage, off: usize) -> Self {
        let mut b = [0u8; extra::SIZE];
        page.copy_out(off, &mut b);
        ExtraInfo { kind: b[0], flags: b[1], data: [b[2], b[3], b[4], b[5], b[6], b[7]] }
    }

    /// For a GSO slot: `(gso.size, gso.type)`.
    pub fn gso(&self) -> (u16, u8) {
        (u16::from_le_bytes([self.data[0], self.data[1]]), self.data[2])
    }
}

/// Writes a `netif_tx_response` (`id` @0, `status` @2) at byte `off`.
pub fn write_tx_response(page: SharedPage, off: usize, id: u16, status: i16) {
    page.write_u16(off, id);
    page.write_u16(off + 2, status as u16);
}

/// Writes only the `status` of a TX response slot, as Linux's `make_tx_response` does for the
/// `RSP_NULL` answers to extra-info slots (their `id` is left as it was).
pub fn write_tx_status(page: SharedPage, off: usize, status: i16) {
    page.write_u16(off + 2, status as u16);
}

/// `netif_rx_request` (8 bytes): `id` @0, `gref` @4.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxRequest {
    /// Echoed in the response.
    pub id: u16,
    /// Grant reference of the (writable) page to fill.
    pub gref: u32,
}

impl RxRequest {
    /// Copies the request out of `page` at byte `off`, once.
    pub fn read(page: SharedPage, off: usize) -> Self {
        let mut b = [0u8; RX_ENTRY];
        page.copy_out(off, &mut b);
        RxRequest { id: u16::from_le_bytes([b[0], b[1]]), gref: u32::from_le_bytes([b[4], b[5], b[6], b[7]]) }
    }
}

/// `netif_rx_response` (8 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxResponse {
    /// The request's id.
    pub id: u16,
    /// Where the data starts in the page.
    pub offset: u16,
    /// `NETRXF_*`.
    pub flags: u16,
    /// Bytes in this slot (> 0) or a negative error.
    pub status: i16,
}

impl RxResponse {
    /// Writes the response at byte `off`.
    pub fn write(&self, page: SharedPage, off: usize) {
        let mut b = [0u8; RX_ENTRY];
        b[0..2].copy_from_slice(&self.id.to_le_bytes());
        b[2..4].copy_from_slice(&self.offset.to_le_bytes());
        b[4..6].copy_from_slice(&self.flags.to_le_bytes());
        b[6..8].copy_from_slice(&self.status.to_le_bytes());
        page.copy_in(off, &b);
    }
}
