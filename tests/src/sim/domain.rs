//! [`SimDomain`]: one simulated domain as its drivers see it. It implements the hypercall-line
//! traits ([`EventChannels`], [`GrantTables`], [`GrantEntries`]) for that domain, and gives a
//! test the pages Xen would hand the guest at boot.

use std::sync::{Arc, Mutex, MutexGuard};

use grant_pool::SharedPage;
use xen_front::hypercall::{XenError, XenResult};
use xen_front::platform::{
    DomId, EventChannels, ForeignMapping, Gfn, GnttabCopy, GrantEntries, GrantHandle, GrantRef, GrantStatus,
    GrantTables, Port,
};

use super::evtchn::Channel;
use super::gnttab::{MAX_GRANT_FRAMES, WINDOW_FRAMES, WINDOW_START};
use super::world::World;

/// One simulated domain. Cheap to clone; every clone acts as the same domain.
#[derive(Clone, Debug)]
pub struct SimDomain {
    pub(crate) world: Arc<Mutex<World>>,
    pub(crate) domid: DomId,
    pub(crate) shared_info: SharedPage,
    pub(crate) store: Option<(SharedPage, Port)>,
}

impl SimDomain {
    pub(crate) fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The domain id.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// The `shared_info` page (for [`xen_front::events::PendingEvents`]).
    pub fn shared_info(&self) -> SharedPage {
        self.shared_info
    }

    /// The xenstore ring page (`HVM_PARAM_STORE_PFN`); `None` for dom0, whose tools use
    /// [`Sim::xs_tool`](super::Sim::xs_tool).
    pub fn store_page(&self) -> Option<SharedPage> {
        self.store.map(|(p, _)| p)
    }

    /// The already-bound xenstore event channel (`HVM_PARAM_STORE_EVTCHN`).
    pub fn store_port(&self) -> Option<Port> {
        self.store.map(|(_, p)| p)
    }

    /// A new zeroed RAM page of this domain and its GFN.
    pub fn alloc_page(&self) -> (Gfn, SharedPage) {
        self.lock().domains.get_mut(&self.domid).expect("domain exists").memory.alloc()
    }

    /// Is `port` pending in `shared_info`?
    pub fn is_pending(&self, port: Port) -> bool {
        self.lock().domains.get(&self.domid).is_some_and(|d| d.events.is_pending(port))
    }

    /// Clears `port`'s pending bit, returning whether it was set (a test's demux loop).
    pub fn take_pending(&self, port: Port) -> bool {
        self.lock().domains.get(&self.domid).is_some_and(|d| d.events.clear_pending(port))
    }

    /// What `port` is connected to (`EVTCHNOP_status`).
    pub fn channel(&self, port: Port) -> Option<Channel> {
        self.lock().domains.get(&self.domid).and_then(|d| d.events.channel(port))
    }

    /// Grants `page` to `grantee` in entry `gref` the way a guest does (domid, frame, barrier,
    /// then flags). Returns `false` if the reference is beyond the table.
    pub fn grant(&self, gref: GrantRef, grantee: DomId, gfn: Gfn, readonly: bool) -> bool {
        let Some((page, off)) = self.grant_entry(gref) else { return false };
        page.write_u16(off + 2, grantee);
        page.write_u32(off + 4, gfn.0 as u32);
        grant_pool::shared::write_barrier();
        let flags =
            xen_front::platform::gtf::PERMIT_ACCESS | if readonly { xen_front::platform::gtf::READONLY } else { 0 };
        page.write_u16(off, flags);
        true
    }

    /// Revokes `gref` as a guest must (xen-abi.md §6.2): compare-exchange the flags to 0
    /// unless `GTF_reading|GTF_writing` are set. `false` means "still in use: do not reuse".
    pub fn revoke(&self, gref: GrantRef) -> bool {
        use std::sync::atomic::Ordering;
        use xen_front::platform::gtf;
        let Some((page, off)) = self.grant_entry(gref) else { return false };
        let flags = page.atomic_u16(off);
        loop {
            let f = flags.load(Ordering::SeqCst);
            if f & (gtf::READING | gtf::WRITING) != 0 {
                return false;
            }
            if flags.compare_exchange(f, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                return true;
            }
        }
    }

    /// Foreign maps and copies holding our entry `gref` right now.
    pub fn grant_pins(&self, gref: GrantRef) -> u32 {
        self.lock().domains.get(&self.domid).map_or(0, |d| d.grants.pin_count(gref))
    }
}

impl EventChannels for SimDomain {
    fn send(&self, port: Port) -> XenResult<()> {
        self.lock().evtchn_send(self.domid, port)
    }

    fn alloc_unbound(&self, remote: DomId) -> XenResult<Port> {
        self.lock().evtchn_alloc_unbound(self.domid, remote)
    }

    fn bind_interdomain(&self, remote: DomId, remote_port: Port) -> XenResult<Port> {
        self.lock().evtchn_bind_interdomain(self.domid, remote, remote_port)
    }

    fn bind_virq(&self, virq: u32) -> XenResult<Port> {
        self.lock().evtchn_bind_virq(self.domid, virq)
    }

    fn close(&self, port: Port) -> XenResult<()> {
        self.lock().evtchn_close(self.domid, port)
    }

    fn unmask(&self, port: Port) -> XenResult<()> {
        self.lock().evtchn_unmask(self.domid, port)
    }
}

impl GrantEntries for SimDomain {
    fn grant_entry(&self, gref: GrantRef) -> Option<(SharedPage, usize)> {
        self.lock().domains.get(&self.domid)?.grants.entry(gref)
    }

    fn grant_entries(&self) -> u32 {
        self.lock().domains.get(&self.domid).map_or(0, |d| d.grants.entries())
    }
}

impl GrantTables for SimDomain {
    fn gfn_of(&self, page: SharedPage) -> Gfn {
        self.lock()
            .domains
            .get(&self.domid)
            .and_then(|d| d.memory.gfn_of(page))
            .expect("gfn_of: not a page of this domain")
    }

    fn foreign_window(&self) -> (Gfn, u32) {
        (WINDOW_START, WINDOW_FRAMES)
    }

    fn copy(&self, ops: &mut [GnttabCopy]) -> XenResult<()> {
        let mut world = self.lock();
        if world.live(self.domid).is_none() {
            return Err(XenError(3)); // ESRCH: a dead domain makes no hypercalls
        }
        world.grant_copy(self.domid, ops);
        Ok(())
    }

    fn map_grant_ref(
        &self,
        at: Gfn,
        dom: DomId,
        gref: GrantRef,
        readonly: bool,
    ) -> Result<ForeignMapping, GrantStatus> {
        self.lock().grant_map(self.domid, at, dom, gref, readonly)
    }

    fn unmap_grant_ref(&self, at: Gfn, handle: GrantHandle) -> Result<(), GrantStatus> {
        self.lock().grant_unmap(self.domid, at, handle)
    }

    fn query_size(&self) -> XenResult<(u32, u32)> {
        let world = self.lock();
        let d = world.live(self.domid).ok_or(XenError(3))?;
        Ok((d.grants.nr_frames(), MAX_GRANT_FRAMES))
    }
}
