//! The hypercall line: the operations the drivers above it need from Xen, as a trait.
//!
//! [`Xen`] implements it with real hypercalls; the simulated Xen in `tests/` implements it
//! for several domains in one process. Drivers are generic over it, so the same code runs
//! in both (no `cfg(test)` forks).

use crate::abi::{self, evtchnop};
use crate::hypercall::{self, XenResult};
use grant_pool::SharedPage;

/// An event-channel port number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port(pub u32);

pub use grant_pool::grant::{DomId, GrantEntries, GrantRef, grant_entry, gtf};

/// Event-channel operations.
pub trait EventChannels {
    /// Notifies the remote end of `port`.
    fn send(&self, port: Port) -> XenResult<()>;
    /// Allocates a port that domain `remote` may bind to.
    fn alloc_unbound(&self, remote: DomId) -> XenResult<Port>;
    /// Binds to `remote`'s unbound port `remote_port`.
    fn bind_interdomain(&self, remote: DomId, remote_port: Port) -> XenResult<Port>;
    /// Binds a virtual IRQ on vCPU 0.
    fn bind_virq(&self, virq: u32) -> XenResult<Port>;
    /// Closes a port (the remote end becomes unbound).
    fn close(&self, port: Port) -> XenResult<()>;
    /// Unmasks a port, re-delivering it if it is pending.
    fn unmask(&self, port: Port) -> XenResult<()>;
}

/// What one of our ports is connected to now (`EVTCHNOP_status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortState {
    /// Not allocated.
    Closed,
    /// Allocated for `remote` to bind, or left unbound when the peer closed its end or died.
    Unbound {
        /// The domain allowed to bind.
        remote: DomId,
    },
    /// Connected to `remote`.
    Interdomain {
        /// The peer domain.
        remote: DomId,
        /// The peer's port.
        remote_port: Port,
    },
    /// Anything else (VIRQ, PIRQ, IPI).
    Other,
}

/// `EVTCHNOP_status` on our own ports.
pub trait PortStatus {
    /// The state of our `port`.
    fn port_status(&self, port: Port) -> XenResult<PortState>;
}

/// The real hypervisor, reached through the hypercall page.
#[derive(Clone, Copy, Debug, Default)]
pub struct Xen;

impl PortStatus for Xen {
    fn port_status(&self, port: Port) -> XenResult<PortState> {
        let mut op = abi::EvtchnStatus { dom: abi::DOMID_SELF, port: port.0, ..Default::default() };
        hypercall::event_channel_op(evtchnop::STATUS, &mut op)?;
        Ok(match op.status {
            0 => PortState::Closed,
            1 => PortState::Unbound { remote: op.u_dom },
            2 => PortState::Interdomain { remote: op.u_dom, remote_port: Port(op.u_port) },
            _ => PortState::Other,
        })
    }
}

impl EventChannels for Xen {
    fn send(&self, port: Port) -> XenResult<()> {
        hypercall::event_channel_op(evtchnop::SEND, &mut abi::EvtchnPort { port: port.0 })
    }

    fn alloc_unbound(&self, remote: DomId) -> XenResult<Port> {
        let mut op = abi::EvtchnAllocUnbound { dom: abi::DOMID_SELF, remote_dom: remote, port: 0 };
        hypercall::event_channel_op(evtchnop::ALLOC_UNBOUND, &mut op)?;
        Ok(Port(op.port))
    }

    fn bind_interdomain(&self, remote: DomId, remote_port: Port) -> XenResult<Port> {
        let mut op = abi::EvtchnBindInterdomain { remote_dom: remote, remote_port: remote_port.0, local_port: 0 };
        hypercall::event_channel_op(evtchnop::BIND_INTERDOMAIN, &mut op)?;
        Ok(Port(op.local_port))
    }

    fn bind_virq(&self, virq: u32) -> XenResult<Port> {
        let mut op = abi::EvtchnBindVirq { virq, vcpu: 0, port: 0 };
        hypercall::event_channel_op(evtchnop::BIND_VIRQ, &mut op)?;
        Ok(Port(op.port))
    }

    fn close(&self, port: Port) -> XenResult<()> {
        hypercall::event_channel_op(evtchnop::CLOSE, &mut abi::EvtchnPort { port: port.0 })
    }

    fn unmask(&self, port: Port) -> XenResult<()> {
        hypercall::event_channel_op(evtchnop::UNMASK, &mut abi::EvtchnPort { port: port.0 })
    }
}

/// A guest frame number (guest-physical address >> 12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gfn(pub u64);

/// The handle Xen returns for a foreign mapping; needed to unmap it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrantHandle(pub u32);

/// A `GNTST_*` status of one grant-table operation (`grant_table.h`). Negative is an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GrantStatus(pub i16);

impl GrantStatus {
    /// `GNTST_okay`.
    pub const OKAY: GrantStatus = GrantStatus(0);
    /// `GNTST_general_error`.
    pub const GENERAL_ERROR: GrantStatus = GrantStatus(-1);
    /// `GNTST_bad_domain`: the domain id names no domain (or the wrong one).
    pub const BAD_DOMAIN: GrantStatus = GrantStatus(-2);
    /// `GNTST_bad_gntref`: the reference is outside the granter's table.
    pub const BAD_GNTREF: GrantStatus = GrantStatus(-3);
    /// `GNTST_bad_handle`: no mapping has this handle.
    pub const BAD_HANDLE: GrantStatus = GrantStatus(-4);
    /// `GNTST_bad_virt_addr`.
    pub const BAD_VIRT_ADDR: GrantStatus = GrantStatus(-5);
    /// `GNTST_bad_dev_addr`.
    pub const BAD_DEV_ADDR: GrantStatus = GrantStatus(-6);
    /// `GNTST_no_device_space`: out of maptrack entries.
    pub const NO_DEVICE_SPACE: GrantStatus = GrantStatus(-7);
    /// `GNTST_permission_denied`: the entry does not grant this access to this domain.
    pub const PERMISSION_DENIED: GrantStatus = GrantStatus(-8);
    /// `GNTST_bad_page`: the granted frame is not a page of the granter.
    pub const BAD_PAGE: GrantStatus = GrantStatus(-9);
    /// `GNTST_bad_copy_arg`: a copy crosses a page boundary (`offset + len > 4096`).
    pub const BAD_COPY_ARG: GrantStatus = GrantStatus(-10);
    /// `GNTST_address_too_big`.
    pub const ADDRESS_TOO_BIG: GrantStatus = GrantStatus(-11);
    /// `GNTST_eagain`: try again (paged-out frame).
    pub const EAGAIN: GrantStatus = GrantStatus(-12);
    /// `GNTST_no_space`.
    pub const NO_SPACE: GrantStatus = GrantStatus(-13);

    /// True for `GNTST_okay`.
    pub fn is_ok(self) -> bool {
        self == GrantStatus::OKAY
    }
}

/// `GNTCOPY_*` flags of [`GnttabCopy::flags`].
pub mod gntcopy {
    /// The source is a grant reference of `source.domid` (else a GFN of ours).
    pub const SOURCE_GREF: u16 = 1 << 0;
    /// The destination is a grant reference of `dest.domid` (else a GFN of ours).
    pub const DEST_GREF: u16 = 1 << 1;
}

/// `GNTMAP_*` flags of a map request.
pub mod gntmap {
    /// Map for the device (not used by HVM/PVH).
    pub const DEVICE_MAP: u32 = 1 << 0;
    /// Map at `host_addr` (the only mode for HVM/PVH).
    pub const HOST_MAP: u32 = 1 << 1;
    /// Map read-only.
    pub const READONLY: u32 = 1 << 2;
}

/// One side of a copy (`struct gnttab_copy_ptr`, 16 bytes): a grant reference or a GFN (both
/// in the 64-bit `u` field: `ref` is its low 32 bits), the domain, and the byte offset.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GnttabCopyPtr {
    /// `u.ref` (low 32 bits) or `u.gmfn`.
    pub u: u64,
    /// The granting domain for a gref side; `DOMID_SELF` for a GFN side.
    pub domid: u16,
    /// Byte offset in the page.
    pub offset: u16,
}

impl GnttabCopyPtr {
    /// A side given by `domid`'s grant reference `gref`.
    pub fn gref(domid: DomId, gref: GrantRef, offset: u16) -> Self {
        GnttabCopyPtr { u: u64::from(gref.0), domid, offset }
    }

    /// A side given by one of our own frames.
    pub fn local(gfn: Gfn, offset: u16) -> Self {
        GnttabCopyPtr { u: gfn.0, domid: abi::DOMID_SELF, offset }
    }
}

/// One `GNTTABOP_copy` operation (`struct gnttab_copy`, 40 bytes). `status` is written back.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GnttabCopy {
    /// Where the bytes come from.
    pub source: GnttabCopyPtr,
    /// Where they go.
    pub dest: GnttabCopyPtr,
    /// Byte count.
    pub len: u16,
    /// `GNTCOPY_*`.
    pub flags: u16,
    /// Out: `GNTST_*`.
    pub status: i16,
}

impl GnttabCopy {
    /// A copy of `len` bytes from `source` to `dest`; the flags follow from the sides' kinds.
    pub fn new(source: GnttabCopyPtr, source_is_gref: bool, dest: GnttabCopyPtr, dest_is_gref: bool, len: u16) -> Self {
        let mut flags = 0;
        if source_is_gref {
            flags |= gntcopy::SOURCE_GREF;
        }
        if dest_is_gref {
            flags |= gntcopy::DEST_GREF;
        }
        GnttabCopy { source, dest, len, flags, status: GrantStatus::GENERAL_ERROR.0 }
    }

    /// The outcome Xen wrote back.
    pub fn status(&self) -> GrantStatus {
        GrantStatus(self.status)
    }
}

/// `struct gnttab_map_grant_ref` (32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabMapGrantRef {
    /// Guest-physical address to map at (GFN << 12).
    pub host_addr: u64,
    /// `GNTMAP_host_map [| GNTMAP_readonly]`.
    pub flags: u32,
    /// The granter's reference.
    pub gref: u32,
    /// The granter.
    pub dom: u16,
    /// Out: `GNTST_*`.
    pub status: i16,
    /// Out: handle for the unmap.
    pub handle: u32,
    /// Out: unused for HVM/PVH.
    pub dev_bus_addr: u64,
}

/// `struct gnttab_unmap_grant_ref` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabUnmapGrantRef {
    /// The address given to the map.
    pub host_addr: u64,
    /// 0 for HVM/PVH.
    pub dev_bus_addr: u64,
    /// The map's handle.
    pub handle: u32,
    /// Out: `GNTST_*`.
    pub status: i16,
}

/// A foreign page mapped into our foreign-mapping window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForeignMapping {
    /// The mapped page (the granter's bytes; atomic access only).
    pub page: SharedPage,
    /// Needed to unmap it.
    pub handle: GrantHandle,
}

/// Grant-table operations on other domains' grants (`grant_table_op`), plus the address
/// translation drivers need to name their own pages in grant entries and copies.
pub trait GrantTables {
    /// The GFN of one of our pages (what a grant entry's `frame` and a local copy side hold).
    fn gfn_of(&self, page: SharedPage) -> Gfn;
    /// The foreign-mapping window: first GFN and number of frames. Maps must land in it.
    fn foreign_window(&self) -> (Gfn, u32);
    /// `GNTTABOP_copy`: runs the batch; each op's `status` says how it went. `Err` only if the
    /// batch itself was refused (then no status is meaningful).
    fn copy(&self, ops: &mut [GnttabCopy]) -> XenResult<()>;
    /// `GNTTABOP_map_grant_ref` of `dom`'s `gref` at `at` (inside [`foreign_window`](Self::foreign_window)).
    fn map_grant_ref(&self, at: Gfn, dom: DomId, gref: GrantRef, readonly: bool)
    -> Result<ForeignMapping, GrantStatus>;
    /// `GNTTABOP_unmap_grant_ref` of the mapping `handle` at `at`.
    fn unmap_grant_ref(&self, at: Gfn, handle: GrantHandle) -> Result<(), GrantStatus>;
    /// `GNTTABOP_query_size`: `(current frames, maximum frames)` of our table.
    fn query_size(&self) -> XenResult<(u32, u32)>;
}

/// The foreign-mapping window the appliance uses under real Xen: `[4 GiB, 5 GiB)`, above RAM,
/// as Solo5 and mirage-xen do (xen-abi.md §6.3). The page tables must cover it.
pub const XEN_FOREIGN_WINDOW: (Gfn, u32) = (Gfn(0x10_0000), 0x4_0000);

impl GrantTables for Xen {
    fn gfn_of(&self, page: SharedPage) -> Gfn {
        // Memory is identity-mapped: the address is the guest-physical address.
        Gfn(page.addr() as u64 >> 12)
    }

    fn foreign_window(&self) -> (Gfn, u32) {
        XEN_FOREIGN_WINDOW
    }

    fn copy(&self, ops: &mut [GnttabCopy]) -> XenResult<()> {
        hypercall::grant_table_op(abi::gnttabop::COPY, ops)
    }

    fn map_grant_ref(
        &self,
        at: Gfn,
        dom: DomId,
        gref: GrantRef,
        readonly: bool,
    ) -> Result<ForeignMapping, GrantStatus> {
        let (start, frames) = XEN_FOREIGN_WINDOW;
        if at.0 < start.0 || at.0 >= start.0 + u64::from(frames) {
            return Err(GrantStatus::BAD_VIRT_ADDR);
        }
        let flags = gntmap::HOST_MAP | if readonly { gntmap::READONLY } else { 0 };
        let mut op = [GnttabMapGrantRef { host_addr: at.0 << 12, flags, gref: gref.0, dom, ..Default::default() }];
        hypercall::grant_table_op(abi::gnttabop::MAP_GRANT_REF, &mut op).map_err(|_| GrantStatus::GENERAL_ERROR)?;
        if op[0].status != 0 {
            return Err(GrantStatus(op[0].status));
        }
        // Safety: Xen just put the granted frame at this window GFN, which the boot page
        // tables identity-map (XEN_FOREIGN_WINDOW), and it stays there until our unmap.
        let page = unsafe { SharedPage::from_addr((at.0 << 12) as usize) };
        Ok(ForeignMapping { page, handle: GrantHandle(op[0].handle) })
    }

    fn unmap_grant_ref(&self, at: Gfn, handle: GrantHandle) -> Result<(), GrantStatus> {
        let mut op = [GnttabUnmapGrantRef { host_addr: at.0 << 12, handle: handle.0, ..Default::default() }];
        hypercall::grant_table_op(abi::gnttabop::UNMAP_GRANT_REF, &mut op).map_err(|_| GrantStatus::GENERAL_ERROR)?;
        if op[0].status != 0 {
            return Err(GrantStatus(op[0].status));
        }
        Ok(())
    }

    fn query_size(&self) -> XenResult<(u32, u32)> {
        crate::gnttab::query_size()
    }
}

impl GrantEntries for crate::gnttab::GrantTableFrames {
    fn grant_entry(&self, gref: GrantRef) -> Option<(SharedPage, usize)> {
        self.entry(gref.0)
    }

    fn grant_entries(&self) -> u32 {
        self.entries()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn grant_op_layouts_match_the_c_headers() {
        assert_eq!(size_of::<abi::EvtchnStatus>(), 24);
        assert_eq!(offset_of!(abi::EvtchnStatus, port), 4);
        assert_eq!(offset_of!(abi::EvtchnStatus, status), 8);
        assert_eq!(offset_of!(abi::EvtchnStatus, vcpu), 12);
        assert_eq!(offset_of!(abi::EvtchnStatus, u_dom), 16);
        assert_eq!(offset_of!(abi::EvtchnStatus, u_port), 20);
        assert_eq!(size_of::<GnttabCopyPtr>(), 16);
        assert_eq!(offset_of!(GnttabCopyPtr, domid), 8);
        assert_eq!(offset_of!(GnttabCopyPtr, offset), 10);
        assert_eq!(size_of::<GnttabCopy>(), 40);
        assert_eq!(offset_of!(GnttabCopy, dest), 16);
        assert_eq!(offset_of!(GnttabCopy, len), 32);
        assert_eq!(offset_of!(GnttabCopy, flags), 34);
        assert_eq!(offset_of!(GnttabCopy, status), 36);
        assert_eq!(size_of::<GnttabMapGrantRef>(), 32);
        assert_eq!(offset_of!(GnttabMapGrantRef, flags), 8);
        assert_eq!(offset_of!(GnttabMapGrantRef, gref), 12);
        assert_eq!(offset_of!(GnttabMapGrantRef, dom), 16);
        assert_eq!(offset_of!(GnttabMapGrantRef, status), 18);
        assert_eq!(offset_of!(GnttabMapGrantRef, handle), 20);
        assert_eq!(offset_of!(GnttabMapGrantRef, dev_bus_addr), 24);
        assert_eq!(size_of::<GnttabUnmapGrantRef>(), 24);
        assert_eq!(offset_of!(GnttabUnmapGrantRef, dev_bus_addr), 8);
        assert_eq!(offset_of!(GnttabUnmapGrantRef, handle), 16);
        assert_eq!(offset_of!(GnttabUnmapGrantRef, status), 20);
    }

    #[test]
    fn copy_flags_follow_the_sides() {
        let op =
            GnttabCopy::new(GnttabCopyPtr::gref(3, GrantRef(9), 0), true, GnttabCopyPtr::local(Gfn(7), 0), false, 1);
        assert_eq!(op.flags, gntcopy::SOURCE_GREF);
        assert_eq!(op.source.u, 9);
        assert_eq!(op.dest.domid, abi::DOMID_SELF);
    }
}
