//! What a vchan needs from below: event channels and grant maps (the platform traits), the
//! state of its event channel (`EVTCHNOP_status`, for peer-death detection), and pages to
//! share (the grant pool).

use grant_pool::{GrantEntries, GrantPool, GrantRef, SharedPage, SharedSlot};

use crate::abi;
use crate::hypercall::{self, XenResult};
use crate::platform::{DomId, EventChannels, GrantTables, Port, Xen};

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

/// Everything a vchan endpoint calls below it.
pub trait VchanPlatform: EventChannels + GrantTables + PortStatus {}

impl<T: EventChannels + GrantTables + PortStatus + ?Sized> VchanPlatform for T {}

/// `EVTCHNOP_status`.
const EVTCHNOP_STATUS: u64 = 5;

/// `struct evtchn_status` (24 bytes).
#[repr(C)]
#[derive(Default)]
struct EvtchnStatus {
    dom: u16,
    port: u32,
    status: u32,
    vcpu: u32,
    /// `u.unbound.dom` / `u.interdomain.dom` (low 16 bits), then `u.interdomain.port`.
    u_dom: u16,
    u_port: u32,
}

impl PortStatus for Xen {
    fn port_status(&self, port: Port) -> XenResult<PortState> {
        let mut op = EvtchnStatus { dom: abi::DOMID_SELF, port: port.0, ..Default::default() };
        hypercall::event_channel_op(EVTCHNOP_STATUS, &mut op)?;
        Ok(match op.status {
            0 => PortState::Closed,
            1 => PortState::Unbound { remote: op.u_dom },
            2 => PortState::Interdomain { remote: op.u_dom, remote_port: Port(op.u_port) },
            _ => PortState::Other,
        })
    }
}

/// Pages shared writable with a peer for a connection's lifetime (the server's control page
/// and ring pages).
pub trait SharePool {
    /// A page shared with a peer; not `Clone`: the handle is the ownership.
    type Shared;
    /// A zeroed page granted writable to `peer`; `None` when none is free.
    fn share(&mut self, peer: DomId) -> Option<Self::Shared>;
    /// The page, for atomic access.
    fn page(shared: &Self::Shared) -> SharedPage;
    /// Its grant reference.
    fn gref(shared: &Self::Shared) -> GrantRef;
    /// Ends the grant and frees the page; `Err` gives it back while the peer still maps it.
    fn unshare(&mut self, shared: Self::Shared) -> Result<(), Self::Shared>;
    /// Keeps a page the peer would not let go of out of circulation.
    fn quarantine(&mut self, shared: Self::Shared);
}

impl<E: GrantEntries, const N: usize> SharePool for GrantPool<E, N> {
    type Shared = SharedSlot;

    fn share(&mut self, peer: DomId) -> Option<SharedSlot> {
        let slot = self.take()?;
        Some(GrantPool::share(self, slot, peer))
    }

    fn page(shared: &SharedSlot) -> SharedPage {
        shared.page()
    }

    fn gref(shared: &SharedSlot) -> GrantRef {
        shared.gref()
    }

    fn unshare(&mut self, shared: SharedSlot) -> Result<(), SharedSlot> {
        let slot = GrantPool::unshare(self, shared)?;
        self.put_back(slot);
        Ok(())
    }

    fn quarantine(&mut self, shared: SharedSlot) {
        self.quarantine_shared(shared);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn evtchn_status_layout_matches_the_c_header() {
        assert_eq!(size_of::<EvtchnStatus>(), 24);
        assert_eq!(offset_of!(EvtchnStatus, port), 4);
        assert_eq!(offset_of!(EvtchnStatus, status), 8);
        assert_eq!(offset_of!(EvtchnStatus, vcpu), 12);
        assert_eq!(offset_of!(EvtchnStatus, u_dom), 16);
        assert_eq!(offset_of!(EvtchnStatus, u_port), 20);
    }
}
