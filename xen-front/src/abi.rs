//! Xen ABI constants and structure layouts (Xen 4.17 public headers, interface 0x00040e00).
//!
//! Written by hand from `xen/include/public`: the published `xen-sys 0.0.0-pre2` gets two
//! things wrong (argument 5 in `r9`, `SCHEDOP_shutdown` reason by value), and its bindgen
//! output uses the legacy interface numbers, so nothing here is taken from it. The layout
//! tests at the bottom pin every offset to the values measured against the C headers.

/// Hypercall numbers usable by a 64-bit PVH guest.
pub mod hypercall_nr {
    /// `memory_op(cmd, arg)`.
    pub const MEMORY_OP: u32 = 12;
    /// `set_timer_op(abs_ns)`.
    pub const SET_TIMER_OP: u32 = 15;
    /// `xen_version(cmd, arg)`.
    pub const XEN_VERSION: u32 = 17;
    /// `console_io(cmd, count, buf)`.
    pub const CONSOLE_IO: u32 = 18;
    /// `grant_table_op(cmd, uop, count)`.
    pub const GRANT_TABLE_OP: u32 = 20;
    /// `vcpu_op(cmd, vcpu, arg)`.
    pub const VCPU_OP: u32 = 24;
    /// `sched_op(cmd, arg)`.
    pub const SCHED_OP: u32 = 29;
    /// `event_channel_op(cmd, arg)`.
    pub const EVENT_CHANNEL_OP: u32 = 32;
    /// `hvm_op(op, arg)`.
    pub const HVM_OP: u32 = 34;
}

/// `DOMID_SELF`.
pub const DOMID_SELF: u16 = 0x7ff0;

/// Xen error numbers (negated in hypercall return values).
pub mod errno {
    /// Operation not permitted.
    pub const EPERM: i64 = 1;
    /// No such entry.
    pub const ENOENT: i64 = 2;
    /// Try again.
    pub const EAGAIN: i64 = 11;
    /// Out of memory.
    pub const ENOMEM: i64 = 12;
    /// Bad address.
    pub const EFAULT: i64 = 14;
    /// Busy.
    pub const EBUSY: i64 = 16;
    /// Invalid argument.
    pub const EINVAL: i64 = 22;
    /// No space.
    pub const ENOSPC: i64 = 28;
    /// Not implemented.
    pub const ENOSYS: i64 = 38;
}

/// `xen_version` commands.
pub mod xenver {
    /// Returns `major << 16 | minor`.
    pub const VERSION: u64 = 0;
    /// Fills a 16-byte buffer with the extra version string.
    pub const EXTRAVERSION: u64 = 1;
    /// Fills a `xen_feature_info`.
    pub const GET_FEATURES: u64 = 6;
}

/// Bits of feature submap 0.
pub mod xenfeat {
    /// Guest physical addresses are translated by Xen (always true for PVH).
    pub const AUTO_TRANSLATED_PHYSMAP: u32 = 2;
    /// `HVM_PARAM_CALLBACK_IRQ` accepts the vector type.
    pub const HVM_CALLBACK_VECTOR: u32 = 8;
    /// pvclock is safe to use.
    pub const HVM_SAFE_PVCLOCK: u32 = 9;
}

/// `sched_op` commands.
pub mod schedop {
    /// Give up the CPU.
    pub const YIELD: u64 = 0;
    /// Shut the domain down (`arg` = pointer to `SchedShutdown`).
    pub const SHUTDOWN: u64 = 2;
}

/// `SCHEDOP_shutdown` reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ShutdownReason {
    /// Domain exited normally.
    Poweroff = 0,
    /// Restart the domain.
    Reboot = 1,
    /// Suspend (not supported by portcullis).
    Suspend = 2,
    /// Domain crashed.
    Crash = 3,
}

/// `struct sched_shutdown`: passed **by pointer** to `SCHEDOP_shutdown`.
#[repr(C)]
pub struct SchedShutdown {
    /// A `ShutdownReason` value.
    pub reason: u32,
}

/// `memory_op` commands.
pub mod xenmem {
    /// Map a Xen-owned frame (shared_info, grant table frames) at a guest frame.
    pub const ADD_TO_PHYSMAP: u64 = 7;
}

/// `XENMAPSPACE_*` for `xen_add_to_physmap`.
pub mod mapspace {
    /// The shared_info page.
    pub const SHARED_INFO: u32 = 0;
    /// A grant table frame (`idx` = frame number).
    pub const GRANT_TABLE: u32 = 1;
}

/// `struct xen_add_to_physmap` (24 bytes).
#[repr(C)]
pub struct AddToPhysmap {
    /// Domain (DOMID_SELF).
    pub domid: u16,
    /// Only for gmfn_range.
    pub size: u16,
    /// `XENMAPSPACE_*`.
    pub space: u32,
    /// Index within the space.
    pub idx: u64,
    /// Guest frame number to map it at.
    pub gpfn: u64,
}

/// `hvm_op` commands.
pub mod hvmop {
    /// Set an HVM parameter.
    pub const SET_PARAM: u64 = 0;
    /// Get an HVM parameter.
    pub const GET_PARAM: u64 = 1;
}

/// HVM parameter indices.
pub mod hvm_param {
    /// Event delivery method.
    pub const CALLBACK_IRQ: u32 = 0;
    /// Xenstore ring page frame.
    pub const STORE_PFN: u32 = 1;
    /// Xenstore event channel (already bound).
    pub const STORE_EVTCHN: u32 = 2;
    /// PV console ring page frame.
    pub const CONSOLE_PFN: u32 = 17;
    /// PV console event channel (already bound).
    pub const CONSOLE_EVTCHN: u32 = 18;
    /// `CALLBACK_IRQ` value type: deliver through an IDT vector.
    pub const CALLBACK_TYPE_VECTOR: u64 = 2;
}

/// `struct xen_hvm_param` (16 bytes).
#[repr(C)]
pub struct HvmParam {
    /// DOMID_SELF.
    pub domid: u16,
    /// Padding.
    pub pad: u16,
    /// Parameter index.
    pub index: u32,
    /// Parameter value.
    pub value: u64,
}

/// `event_channel_op` commands.
pub mod evtchnop {
    /// Bind to a remote domain's unbound port.
    pub const BIND_INTERDOMAIN: u64 = 0;
    /// Bind a virtual IRQ.
    pub const BIND_VIRQ: u64 = 1;
    /// Close a port.
    pub const CLOSE: u64 = 3;
    /// Notify the remote end.
    pub const SEND: u64 = 4;
    /// What a port is connected to.
    pub const STATUS: u64 = 5;
    /// Allocate a port a remote domain may bind to.
    pub const ALLOC_UNBOUND: u64 = 6;
    /// Unmask a port (re-delivers it if pending).
    pub const UNMASK: u64 = 9;
}

/// Virtual IRQ numbers.
pub mod virq {
    /// The one-shot timer armed by `set_timer_op`.
    pub const TIMER: u32 = 0;
}

/// `struct evtchn_bind_interdomain` (12 bytes).
#[repr(C)]
pub struct EvtchnBindInterdomain {
    /// The remote domain.
    pub remote_dom: u16,
    /// Its unbound port.
    pub remote_port: u32,
    /// Out: our new port.
    pub local_port: u32,
}

/// `struct evtchn_bind_virq` (12 bytes).
#[repr(C)]
pub struct EvtchnBindVirq {
    /// The VIRQ.
    pub virq: u32,
    /// vCPU to deliver on.
    pub vcpu: u32,
    /// Out: the port.
    pub port: u32,
}

/// `struct evtchn_alloc_unbound` (8 bytes).
#[repr(C)]
pub struct EvtchnAllocUnbound {
    /// DOMID_SELF.
    pub dom: u16,
    /// The domain allowed to bind.
    pub remote_dom: u16,
    /// Out: the port.
    pub port: u32,
}

/// `struct evtchn_send` / `evtchn_close` / `evtchn_unmask` (4 bytes).
#[repr(C)]
pub struct EvtchnPort {
    /// The port.
    pub port: u32,
}

/// `struct evtchn_status` (24 bytes).
#[repr(C)]
#[derive(Default)]
pub struct EvtchnStatus {
    /// `DOMID_SELF`.
    pub dom: u16,
    /// The port asked about.
    pub port: u32,
    /// Out: `EVTCHNSTAT_*` (0 closed, 1 unbound, 2 interdomain, …).
    pub status: u32,
    /// Out: the vCPU notified.
    pub vcpu: u32,
    /// Out: `u.unbound.dom` / `u.interdomain.dom`.
    pub u_dom: u16,
    /// Out: `u.interdomain.port`.
    pub u_port: u32,
}

/// `grant_table_op` commands.
pub mod gnttabop {
    /// Map a foreign grant.
    pub const MAP_GRANT_REF: u64 = 0;
    /// Unmap a foreign grant.
    pub const UNMAP_GRANT_REF: u64 = 1;
    /// Batched copies.
    pub const COPY: u64 = 5;
    /// Current and maximum number of grant frames.
    pub const QUERY_SIZE: u64 = 6;
}

/// `struct gnttab_query_size` (16 bytes).
#[repr(C)]
pub struct GnttabQuerySize {
    /// DOMID_SELF.
    pub dom: u16,
    /// Out: current frames.
    pub nr_frames: u32,
    /// Out: maximum frames.
    pub max_nr_frames: u32,
    /// Out: `GNTST_*`.
    pub status: i16,
}

/// Number of grant references Xen and the toolstack reserve (0 = console, 1 = xenstore).
pub const GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;

/// `shared_info` offsets (x86_64).
pub mod shared_info {
    /// `vcpu_info[0]` starts the page; each is 64 bytes.
    pub const VCPU_INFO_SIZE: usize = 64;
    /// `evtchn_pending[64]` (u64 words).
    pub const EVTCHN_PENDING: usize = 2048;
    /// `evtchn_mask[64]` (u64 words).
    pub const EVTCHN_MASK: usize = 2560;
    /// Wall-clock version (seqlock).
    pub const WC_VERSION: usize = 3072;
    /// Wall-clock seconds (low 32 bits).
    pub const WC_SEC: usize = 3076;
    /// Wall-clock nanoseconds.
    pub const WC_NSEC: usize = 3080;
    /// Wall-clock seconds (high 32 bits).
    pub const WC_SEC_HI: usize = 3084;
}

/// `vcpu_info` offsets.
pub mod vcpu_info {
    /// `evtchn_upcall_pending` (u8).
    pub const UPCALL_PENDING: usize = 0;
    /// `evtchn_upcall_mask` (u8, meaningless for HVM).
    pub const UPCALL_MASK: usize = 1;
    /// `evtchn_pending_sel` (u64).
    pub const PENDING_SEL: usize = 8;
    /// `vcpu_time_info` (32 bytes).
    pub const TIME: usize = 32;
}

/// `vcpu_time_info` offsets (relative to the structure).
pub mod vcpu_time {
    /// Seqlock version (odd while Xen updates).
    pub const VERSION: usize = 0;
    /// TSC at the last update.
    pub const TSC_TIMESTAMP: usize = 8;
    /// System time (ns since boot) at the last update.
    pub const SYSTEM_TIME: usize = 16;
    /// TSC to ns multiplier (32.32 fixed point).
    pub const TSC_TO_SYSTEM_MUL: usize = 24;
    /// Shift applied to the TSC delta first (i8).
    pub const TSC_SHIFT: usize = 28;
}

/// `struct xencons_interface` offsets.
pub mod console {
    /// Input ring (1024 bytes).
    pub const IN: usize = 0;
    /// Input ring size.
    pub const IN_SIZE: u32 = 1024;
    /// Output ring (2048 bytes).
    pub const OUT: usize = 1024;
    /// Output ring size.
    pub const OUT_SIZE: u32 = 2048;
    /// Input consumer (guest writes).
    pub const IN_CONS: usize = 3072;
    /// Input producer.
    pub const IN_PROD: usize = 3076;
    /// Output consumer (xenconsoled writes).
    pub const OUT_CONS: usize = 3080;
    /// Output producer (guest writes).
    pub const OUT_PROD: usize = 3084;
}

/// `hvm_start_info` magic.
pub const HVM_START_MAGIC: u32 = 0x336e_c578;

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn struct_layouts_match_the_c_headers() {
        assert_eq!(size_of::<AddToPhysmap>(), 24);
        assert_eq!(offset_of!(AddToPhysmap, space), 4);
        assert_eq!(offset_of!(AddToPhysmap, idx), 8);
        assert_eq!(offset_of!(AddToPhysmap, gpfn), 16);
        assert_eq!(size_of::<HvmParam>(), 16);
        assert_eq!(offset_of!(HvmParam, index), 4);
        assert_eq!(offset_of!(HvmParam, value), 8);
        assert_eq!(size_of::<EvtchnBindInterdomain>(), 12);
        assert_eq!(offset_of!(EvtchnBindInterdomain, remote_port), 4);
        assert_eq!(offset_of!(EvtchnBindInterdomain, local_port), 8);
        assert_eq!(size_of::<EvtchnBindVirq>(), 12);
        assert_eq!(size_of::<EvtchnAllocUnbound>(), 8);
        assert_eq!(offset_of!(EvtchnAllocUnbound, port), 4);
        assert_eq!(size_of::<GnttabQuerySize>(), 16);
        assert_eq!(offset_of!(GnttabQuerySize, nr_frames), 4);
        assert_eq!(offset_of!(GnttabQuerySize, max_nr_frames), 8);
        assert_eq!(offset_of!(GnttabQuerySize, status), 12);
        assert_eq!(size_of::<SchedShutdown>(), 4);
    }

    #[test]
    fn numbers_are_the_modern_interface_not_the_compat_ones() {
        // The legacy (interface version 0) numbers 6/16 do not exist for PVH guests.
        assert_eq!(hypercall_nr::SCHED_OP, 29);
        assert_eq!(hypercall_nr::EVENT_CHANNEL_OP, 32);
        assert_eq!(schedop::SHUTDOWN, 2);
        assert_eq!(ShutdownReason::Crash as u32, 3);
        assert_eq!(hvm_param::CALLBACK_TYPE_VECTOR << 56 | 0xf0, 0x0200_0000_0000_00f0);
    }
}
