//! The state of the whole simulated machine, behind one lock: every domain's memory, grant
//! table, event channels and foreign mappings, and xenstored.

use std::collections::BTreeMap;

use xen_front::platform::{DomId, GrantHandle};

use super::evtchn::EventChannelTable;
use super::gnttab::{GrantTable, Mapping};
use super::memory::Memory;
use super::xenstored::Xenstored;

/// One domain's resources.
#[derive(Debug)]
pub(crate) struct DomainState {
    /// Destroyed, but some of its pages are still mapped elsewhere (a zombie).
    pub(crate) dying: bool,
    pub(crate) memory: Memory,
    pub(crate) grants: GrantTable,
    pub(crate) events: EventChannelTable,
    /// Foreign pages this domain has mapped, by handle.
    pub(crate) maptrack: BTreeMap<GrantHandle, Mapping>,
}

/// Everything the simulated hypervisor and xenstored know.
#[derive(Debug)]
pub(crate) struct World {
    pub(crate) domains: BTreeMap<DomId, DomainState>,
    pub(crate) next_handle: u32,
    pub(crate) xenstored: Xenstored,
}

impl World {
    pub(crate) fn new() -> Self {
        World { domains: BTreeMap::new(), next_handle: 1, xenstored: Xenstored::new() }
    }

    /// A domain that exists and is not being destroyed.
    pub(crate) fn live(&self, dom: DomId) -> Option<&DomainState> {
        self.domains.get(&dom).filter(|d| !d.dying)
    }

    pub(crate) fn live_mut(&mut self, dom: DomId) -> Option<&mut DomainState> {
        self.domains.get_mut(&dom).filter(|d| !d.dying)
    }

    /// Destroys `dom` as Xen does: its event channels close (peers' ends become unbound), its
    /// own foreign mappings are released, xenstored forgets it and fires `@releaseDomain`.
    /// Its memory stays until no other domain maps any of it.
    pub(crate) fn destroy(&mut self, dom: DomId) {
        if self.live(dom).is_none() {
            return;
        }
        self.evtchn_close_all(dom);
        let d = self.domains.get_mut(&dom).expect("live");
        d.dying = true;
        let mappings: Vec<Mapping> = std::mem::take(&mut d.maptrack).into_values().collect();
        d.memory.window.clear();
        for m in mappings {
            self.release_mapping(m);
        }
        self.xenstored_domain_gone(dom);
        self.reap(dom);
    }

    /// Removes a dying domain once nothing maps its pages any more.
    pub(crate) fn reap(&mut self, dom: DomId) {
        if self.domains.get(&dom).is_some_and(|d| d.dying && d.memory.foreign_maps() == 0) {
            self.domains.remove(&dom);
        }
    }
}
