//! The netif wire format (`io/netif.h`): ring entries, flags and statuses, shared by the
//! netfront and the netback. Offsets as in xen-abi.md §7.2.
//!
//! Everything read from a ring is a copy ([`RingEntry::read_from`]); its fields are still the
//! peer's allegations and the drivers validate them.

use grant_pool::SharedPage;

use crate::platform::GrantRef;
use crate::ring::{RingEntry, RingLayout};

/// `NETTXF_*`: flags of a TX request (frontend → backend).
pub mod txf {
    /// The L4 checksum is blank (holds only the pseudo-header sum).
    pub const CSUM_BLANK: u16 = 1 << 0;
    /// The data is known good (no checksum check needed).
    pub const DATA_VALIDATED: u16 = 1 << 1;
    /// More slots of this frame follow.
    pub const MORE_DATA: u16 = 1 << 2;
    /// An extra-info slot follows this one.
    pub const EXTRA_INFO: u16 = 1 << 3;
}

/// `NETRXF_*`: flags of an RX response (backend → frontend). Note the checksum bits are
/// swapped relative to [`txf`].
pub mod rxf {
    /// The data is known good.
    pub const DATA_VALIDATED: u16 = 1 << 0;
    /// The L4 checksum is blank (pseudo-header sum only).
    pub const CSUM_BLANK: u16 = 1 << 1;
    /// More slots of this frame follow.
    pub const MORE_DATA: u16 = 1 << 2;
    /// An extra-info slot follows.
    pub const EXTRA_INFO: u16 = 1 << 3;
    /// GSO prefix (unused by us).
    pub const GSO_PREFIX: u16 = 1 << 4;
}

/// `NETIF_RSP_*` statuses.
pub mod rsp {
    /// The frame was dropped.
    pub const DROPPED: i16 = -2;
    /// The request was malformed or failed.
    pub const ERROR: i16 = -1;
    /// Done.
    pub const OKAY: i16 = 0;
    /// Response to an extra-info slot: carries nothing.
    pub const NULL: i16 = 1;
}

/// `XEN_NETIF_EXTRA_TYPE_*`.
pub mod extra_type {
    /// None.
    pub const NONE: u8 = 0;
    /// GSO parameters.
    pub const GSO: u8 = 1;
    /// Add a multicast filter.
    pub const MCAST_ADD: u8 = 2;
    /// Remove a multicast filter.
    pub const MCAST_DEL: u8 = 3;
    /// Hash value.
    pub const HASH: u8 = 4;
    /// First unknown type (Linux adds XDP = 5).
    pub const MAX: u8 = 6;
}

/// `XEN_NETIF_EXTRA_FLAG_MORE`: another extra-info slot follows.
pub const EXTRA_FLAG_MORE: u8 = 1 << 0;
/// `XEN_NETIF_NR_SLOTS_MIN`: slots a backend must accept for one frame.
pub const NR_SLOTS_MIN: usize = 18;
/// `XEN_NETIF_MAX_TX_SIZE`.
pub const MAX_TX_SIZE: usize = 0xffff;
/// `ETH_HLEN`: the first TX slot must hold at least the Ethernet header.
pub const ETH_HLEN: usize = 14;

/// Checksum-offload state a frame carries across the firewall (DESIGN.md "Checksum
/// offload"): never recompute a full checksum, carry what the sender said.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ChecksumOffload {
    /// The L4 checksum field holds only the pseudo-header sum (`csum_blank`).
    pub blank: bool,
    /// The sender vouches for the data (`data_validated`).
    pub validated: bool,
}

impl ChecksumOffload {
    /// From an RX response's `NETRXF_*` flags.
    pub fn from_rx_flags(flags: u16) -> Self {
        ChecksumOffload { blank: flags & rxf::CSUM_BLANK != 0, validated: flags & rxf::DATA_VALIDATED != 0 }
    }

    /// From a TX request's `NETTXF_*` flags.
    pub fn from_tx_flags(flags: u16) -> Self {
        ChecksumOffload { blank: flags & txf::CSUM_BLANK != 0, validated: flags & txf::DATA_VALIDATED != 0 }
    }

    /// As `NETTXF_*` flags.
    pub fn tx_flags(self) -> u16 {
        (if self.blank { txf::CSUM_BLANK } else { 0 }) | (if self.validated { txf::DATA_VALIDATED } else { 0 })
    }

    /// As `NETRXF_*` flags.
    pub fn rx_flags(self) -> u16 {
        (if self.blank { rxf::CSUM_BLANK } else { 0 }) | (if self.validated { rxf::DATA_VALIDATED } else { 0 })
    }
}

/// `netif_tx_request` (12 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxRequest {
    /// The frontend's grant of the page.
    pub gref: GrantRef,
    /// Where the data starts in the page.
    pub offset: u16,
    /// `NETTXF_*`.
    pub flags: u16,
    /// Echoed in the response.
    pub id: u16,
    /// First slot: the whole frame's length; others: this slot's length.
    pub size: u16,
}

impl RingEntry for TxRequest {
    fn read_from(page: SharedPage, off: usize) -> Self {
        TxRequest {
            gref: GrantRef(page.read_u32(off)),
            offset: page.read_u16(off + 4),
            flags: page.read_u16(off + 6),
            id: page.read_u16(off + 8),
            size: page.read_u16(off + 10),
        }
    }

    fn write_to(&self, page: SharedPage, off: usize) {
        page.write_u32(off, self.gref.0);
        page.write_u16(off + 4, self.offset);
        page.write_u16(off + 6, self.flags);
        page.write_u16(off + 8, self.id);
        page.write_u16(off + 10, self.size);
    }
}

/// `netif_extra_info` (8 bytes), which overlays a TX request slot (or an RX response slot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtraInfo {
    /// `XEN_NETIF_EXTRA_TYPE_*`.
    pub kind: u8,
    /// `XEN_NETIF_EXTRA_FLAG_*`.
    pub flags: u8,
    /// The type-specific union.
    pub data: [u8; 6],
}

impl ExtraInfo {
    /// The extra-info view of a TX slot's bytes.
    pub fn from_tx_slot(req: &TxRequest) -> Self {
        let g = req.gref.0.to_le_bytes();
        let o = req.offset.to_le_bytes();
        let f = req.flags.to_le_bytes();
        ExtraInfo { kind: g[0], flags: g[1], data: [g[2], g[3], o[0], o[1], f[0], f[1]] }
    }

    /// The TX slot whose bytes are this extra info (what a frontend writes).
    pub fn to_tx_slot(&self) -> TxRequest {
        let d = self.data;
        TxRequest {
            gref: GrantRef(u32::from_le_bytes([self.kind, self.flags, d[0], d[1]])),
            offset: u16::from_le_bytes([d[2], d[3]]),
            flags: u16::from_le_bytes([d[4], d[5]]),
            id: 0,
            size: 0,
        }
    }

    /// More extra-info slots follow.
    pub fn has_more(&self) -> bool {
        self.flags & EXTRA_FLAG_MORE != 0
    }
}

/// `netif_tx_response` (4 bytes in a 12-byte slot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxResponse {
    /// The request's id.
    pub id: u16,
    /// `NETIF_RSP_*`.
    pub status: i16,
}

impl RingEntry for TxResponse {
    fn read_from(page: SharedPage, off: usize) -> Self {
        TxResponse { id: page.read_u16(off), status: page.read_u16(off + 2) as i16 }
    }

    fn write_to(&self, page: SharedPage, off: usize) {
        page.write_u16(off, self.id);
        page.write_u16(off + 2, self.status as u16);
    }
}

/// `netif_rx_request` (8 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxRequest {
    /// Echoed in the response.
    pub id: u16,
    /// The frontend's writable grant of an empty page.
    pub gref: GrantRef,
}

impl RingEntry for RxRequest {
    fn read_from(page: SharedPage, off: usize) -> Self {
        RxRequest { id: page.read_u16(off), gref: GrantRef(page.read_u32(off + 4)) }
    }

    fn write_to(&self, page: SharedPage, off: usize) {
        page.write_u16(off, self.id);
        page.write_u16(off + 2, 0);
        page.write_u32(off + 4, self.gref.0);
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
    /// Bytes in this slot (> 0) or a `NETIF_RSP_*` error (< 0).
    pub status: i16,
}

impl RingEntry for RxResponse {
    fn read_from(page: SharedPage, off: usize) -> Self {
        RxResponse {
            id: page.read_u16(off),
            offset: page.read_u16(off + 2),
            flags: page.read_u16(off + 4),
            status: page.read_u16(off + 6) as i16,
        }
    }

    fn write_to(&self, page: SharedPage, off: usize) {
        page.write_u16(off, self.id);
        page.write_u16(off + 2, self.offset);
        page.write_u16(off + 4, self.flags);
        page.write_u16(off + 6, self.status as u16);
    }
}

/// The TX ring: 12-byte slots, 256 of them.
#[derive(Debug)]
pub enum TxRing {}

impl RingLayout for TxRing {
    type Request = TxRequest;
    type Response = TxResponse;
    const SLOT: usize = 12;
}

/// The RX ring: 8-byte slots, 256 of them.
#[derive(Debug)]
pub enum RxRing {}

impl RingLayout for RxRing {
    type Request = RxRequest;
    type Response = RxResponse;
    const SLOT: usize = 8;
}

#[cfg(test)]
mod tests {
    use super::*;
    use grant_pool::PageCell;

    fn page() -> SharedPage {
        SharedPage::from_static(Box::leak(Box::new(PageCell::new())))
    }

    #[test]
    fn tx_request_bytes_match_netif_h() {
        let p = page();
        TxRequest { gref: GrantRef(0x0403_0201), offset: 0x0605, flags: 0x0807, id: 0x0a09, size: 0x0c0b }
            .write_to(p, 64);
        let mut b = [0u8; 12];
        p.copy_out(64, &mut b);
        assert_eq!(b, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(TxRequest::read_from(p, 64).size, 0x0c0b);
    }

    #[test]
    fn responses_and_rx_requests_bytes_match_netif_h() {
        let p = page();
        TxResponse { id: 0x0201, status: -1 }.write_to(p, 0);
        RxRequest { id: 0x0201, gref: GrantRef(0x0807_0605) }.write_to(p, 8);
        RxResponse { id: 0x0201, offset: 0x0403, flags: 0x0605, status: -2 }.write_to(p, 16);
        let mut b = [0u8; 24];
        p.copy_out(0, &mut b);
        assert_eq!(&b[..4], &[1, 2, 0xff, 0xff]);
        assert_eq!(&b[8..16], &[1, 2, 0, 0, 5, 6, 7, 8]);
        assert_eq!(&b[16..24], &[1, 2, 3, 4, 5, 6, 0xfe, 0xff]);
        assert_eq!(RxResponse::read_from(p, 16).status, rsp::DROPPED);
    }

    #[test]
    fn extra_info_overlays_a_tx_slot() {
        let p = page();
        p.copy_in(0, &[extra_type::GSO, EXTRA_FLAG_MORE, 0xa8, 0x05, 1, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd]);
        let slot = TxRequest::read_from(p, 0);
        let extra = ExtraInfo::from_tx_slot(&slot);
        assert_eq!(extra, ExtraInfo { kind: 1, flags: 1, data: [0xa8, 0x05, 1, 0, 0, 0] });
        assert!(extra.has_more());
        let back = extra.to_tx_slot();
        assert_eq!((back.gref, back.offset, back.flags), (slot.gref, slot.offset, slot.flags));
    }

    #[test]
    fn checksum_flags_swap_between_directions() {
        let blank = ChecksumOffload { blank: true, validated: false };
        assert_eq!(blank.tx_flags(), txf::CSUM_BLANK);
        assert_eq!(blank.rx_flags(), rxf::CSUM_BLANK);
        assert_eq!(ChecksumOffload::from_rx_flags(rxf::CSUM_BLANK), blank);
        assert_eq!(ChecksumOffload::from_rx_flags(txf::CSUM_BLANK), ChecksumOffload { blank: false, validated: true });
        let both = ChecksumOffload { blank: true, validated: true };
        assert_eq!(ChecksumOffload::from_tx_flags(both.tx_flags()), both);
    }

    #[test]
    fn both_rings_have_256_slots() {
        assert_eq!(TxRing::SIZE, 256);
        assert_eq!(RxRing::SIZE, 256);
    }
}
