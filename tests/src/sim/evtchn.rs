//! Event channels with the 2-level ABI: each domain's port table and its `shared_info` page,
//! where sends set bits the way Xen's `event_2l.c` does (pending bit; if it was clear and the
//! port is unmasked, the selector bit; if that was clear, `upcall_pending`).
//!
//! Errors are Xen's (`evtchn_*` in `common/event_channel.c`): an invalid or closed port is
//! `EINVAL`, an unknown domain `ESRCH`, a full table `ENOSPC`, a VIRQ bound twice `EEXIST`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use grant_pool::SharedPage;
use xen_front::abi::{shared_info as si, vcpu_info};
use xen_front::events::NR_PORTS;
use xen_front::hypercall::{XenError, XenResult};
use xen_front::platform::{DomId, Port};

use super::world::World;

/// `EINVAL`.
pub const EINVAL: XenError = XenError(22);
/// `ESRCH`: no such domain.
pub const ESRCH: XenError = XenError(3);
/// `ENOSPC`: the port table is full.
pub const ENOSPC: XenError = XenError(28);
/// `EEXIST`: the VIRQ is already bound.
pub const EEXIST: XenError = XenError(17);

/// xl's default `max_event_channels`: ports 1..=1023 are usable.
pub const DEFAULT_MAX_PORTS: u32 = 1023;
/// VIRQs a domain may bind (`NR_VIRQS`).
const NR_VIRQS: u32 = 24;

/// What a port is connected to (`ECS_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// Not allocated (`ECS_FREE`).
    Free,
    /// Allocated for `remote` to bind to (`ECS_UNBOUND`); sends are dropped.
    Unbound {
        /// The domain allowed to bind.
        remote: DomId,
    },
    /// Connected to `remote`'s `remote_port` (`ECS_INTERDOMAIN`).
    Interdomain {
        /// The peer domain.
        remote: DomId,
        /// The peer's port.
        remote_port: Port,
    },
    /// Bound to a virtual IRQ (`ECS_VIRQ`).
    Virq(u32),
}

/// A domain's event channels.
#[derive(Debug)]
pub(crate) struct EventChannelTable {
    pub(crate) shared_info: SharedPage,
    ports: Vec<Channel>,
    max_ports: u32,
    virqs: BTreeMap<u32, Port>,
}

impl EventChannelTable {
    pub(crate) fn new(shared_info: SharedPage, max_ports: u32) -> Self {
        let max_ports = max_ports.min(NR_PORTS - 1);
        EventChannelTable {
            shared_info,
            ports: vec![Channel::Free; max_ports as usize + 1],
            max_ports,
            virqs: BTreeMap::new(),
        }
    }

    pub(crate) fn channel(&self, port: Port) -> Option<Channel> {
        if port.0 == 0 || port.0 > self.max_ports {
            return None;
        }
        self.ports.get(port.0 as usize).copied()
    }

    fn set(&mut self, port: Port, c: Channel) {
        self.ports[port.0 as usize] = c;
    }

    fn alloc(&mut self, c: Channel) -> XenResult<Port> {
        let free = (1..=self.max_ports).find(|&p| self.ports[p as usize] == Channel::Free).ok_or(ENOSPC)?;
        self.ports[free as usize] = c;
        Ok(Port(free))
    }

    /// `evtchn_2l_set_pending`: pending bit; if newly set and unmasked, the selector bit; if
    /// newly set, `upcall_pending`.
    pub(crate) fn set_pending(&self, port: Port) {
        let page = self.shared_info;
        let (word, bit) = ((port.0 / 64) as usize, 1u64 << (port.0 % 64));
        let was = page.atomic_u64(si::EVTCHN_PENDING + word * 8).fetch_or(bit, Ordering::SeqCst);
        if was & bit != 0 {
            return; // already pending: nothing else happens
        }
        self.mark_selector(port);
    }

    fn mark_selector(&self, port: Port) {
        let page = self.shared_info;
        let (word, bit) = ((port.0 / 64) as usize, 1u64 << (port.0 % 64));
        if page.atomic_u64(si::EVTCHN_MASK + word * 8).load(Ordering::SeqCst) & bit != 0 {
            return;
        }
        let sel = page.atomic_u64(vcpu_info::PENDING_SEL).fetch_or(1 << word, Ordering::SeqCst);
        if sel & (1 << word) == 0 {
            page.atomic_u8(vcpu_info::UPCALL_PENDING).store(1, Ordering::SeqCst);
        }
    }

    /// Whether `port`'s pending bit is set in `shared_info`.
    pub(crate) fn is_pending(&self, port: Port) -> bool {
        let (word, bit) = ((port.0 / 64) as usize, 1u64 << (port.0 % 64));
        self.shared_info.read_u64(si::EVTCHN_PENDING + word * 8) & bit != 0
    }

    /// Clears `port`'s pending bit (what the guest's demux loop does).
    pub(crate) fn clear_pending(&self, port: Port) -> bool {
        let (word, bit) = ((port.0 / 64) as usize, 1u64 << (port.0 % 64));
        self.shared_info.atomic_u64(si::EVTCHN_PENDING + word * 8).fetch_and(!bit, Ordering::SeqCst) & bit != 0
    }

    /// Every port in use, with its channel.
    pub(crate) fn open_ports(&self) -> Vec<(Port, Channel)> {
        (1..=self.max_ports)
            .map(Port)
            .filter_map(|p| self.channel(p).filter(|c| *c != Channel::Free).map(|c| (p, c)))
            .collect()
    }
}

impl World {
    fn events(&self, dom: DomId) -> XenResult<&EventChannelTable> {
        self.live(dom).map(|d| &d.events).ok_or(ESRCH)
    }

    fn events_mut(&mut self, dom: DomId) -> XenResult<&mut EventChannelTable> {
        self.live_mut(dom).map(|d| &mut d.events).ok_or(ESRCH)
    }

    /// `EVTCHNOP_alloc_unbound` by `dom` for `remote`.
    pub(crate) fn evtchn_alloc_unbound(&mut self, dom: DomId, remote: DomId) -> XenResult<Port> {
        self.events_mut(dom)?.alloc(Channel::Unbound { remote })
    }

    /// `EVTCHNOP_bind_interdomain` by `dom` to `remote`'s unbound `remote_port`. The new local
    /// port is set pending, in case the peer signalled before we bound.
    pub(crate) fn evtchn_bind_interdomain(&mut self, dom: DomId, remote: DomId, remote_port: Port) -> XenResult<Port> {
        self.events(dom)?;
        let peer = self.events(remote)?;
        match peer.channel(remote_port) {
            Some(Channel::Unbound { remote: allowed }) if allowed == dom => {}
            _ => return Err(EINVAL),
        }
        let local = self.events_mut(dom)?.alloc(Channel::Interdomain { remote, remote_port })?;
        self.events_mut(remote)?.set(remote_port, Channel::Interdomain { remote: dom, remote_port: local });
        self.events(dom)?.set_pending(local);
        Ok(local)
    }

    /// `EVTCHNOP_send` on `dom`'s `port`: sets the peer's port pending. Sends on an unbound
    /// port are dropped (the peer has not bound yet, or closed its end).
    pub(crate) fn evtchn_send(&mut self, dom: DomId, port: Port) -> XenResult<()> {
        match self.events(dom)?.channel(port) {
            Some(Channel::Interdomain { remote, remote_port }) => {
                if let Ok(peer) = self.events(remote) {
                    peer.set_pending(remote_port);
                }
                self.xenstored_notified(remote, remote_port);
                Ok(())
            }
            Some(Channel::Unbound { .. }) => Ok(()),
            // Sending on a VIRQ or a free port is refused.
            _ => Err(EINVAL),
        }
    }

    /// `EVTCHNOP_close`: frees `port`; an interdomain peer's end becomes unbound (bindable by
    /// us again), as in `evtchn_close`.
    pub(crate) fn evtchn_close(&mut self, dom: DomId, port: Port) -> XenResult<()> {
        let channel = self.events(dom)?.channel(port).filter(|c| *c != Channel::Free).ok_or(EINVAL)?;
        self.events_mut(dom)?.set(port, Channel::Free);
        match channel {
            Channel::Interdomain { remote, remote_port } => {
                if let Ok(peer) = self.events_mut(remote) {
                    peer.set(remote_port, Channel::Unbound { remote: dom });
                }
            }
            Channel::Virq(v) => {
                self.events_mut(dom)?.virqs.remove(&v);
            }
            _ => {}
        }
        Ok(())
    }

    /// `EVTCHNOP_unmask`: clears the mask bit and re-delivers the port if it is pending.
    pub(crate) fn evtchn_unmask(&mut self, dom: DomId, port: Port) -> XenResult<()> {
        let events = self.events(dom)?;
        events.channel(port).ok_or(EINVAL)?;
        let (word, bit) = ((port.0 / 64) as usize, 1u64 << (port.0 % 64));
        events.shared_info.atomic_u64(si::EVTCHN_MASK + word * 8).fetch_and(!bit, Ordering::SeqCst);
        if events.is_pending(port) {
            events.mark_selector(port);
        }
        Ok(())
    }

    /// `EVTCHNOP_bind_virq` on vCPU 0.
    pub(crate) fn evtchn_bind_virq(&mut self, dom: DomId, virq: u32) -> XenResult<Port> {
        let events = self.events_mut(dom)?;
        if virq >= NR_VIRQS {
            return Err(EINVAL);
        }
        if events.virqs.contains_key(&virq) {
            return Err(EEXIST);
        }
        let port = events.alloc(Channel::Virq(virq))?;
        events.virqs.insert(virq, port);
        Ok(port)
    }

    /// Raises `virq` in `dom` (e.g. the timer); nothing happens if it is not bound.
    pub(crate) fn raise_virq(&mut self, dom: DomId, virq: u32) {
        if let Ok(events) = self.events(dom)
            && let Some(&port) = events.virqs.get(&virq)
        {
            events.set_pending(port);
        }
    }

    /// Closes every port of `dom` (domain destruction).
    pub(crate) fn evtchn_close_all(&mut self, dom: DomId) {
        let Ok(events) = self.events(dom) else { return };
        for (port, _) in events.open_ports() {
            let _ = self.evtchn_close(dom, port);
        }
    }
}
