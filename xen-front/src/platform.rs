//! The hypercall line: the operations the drivers above it need from Xen, as a trait.
//!
//! [`Xen`] implements it with real hypercalls; the simulated Xen in `tests/` implements it
//! for several domains in one process. Drivers are generic over it, so the same code runs
//! in both (no `cfg(test)` forks).

use crate::abi::{self, evtchnop};
use crate::hypercall::{self, XenResult};

/// An event-channel port number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port(pub u32);

/// A domain id.
pub type DomId = u16;

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

/// The real hypervisor, reached through the hypercall page.
#[derive(Clone, Copy, Debug, Default)]
pub struct Xen;

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
