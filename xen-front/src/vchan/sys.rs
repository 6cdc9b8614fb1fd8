//! What a vchan needs from below: event channels, grant maps and the state of its event
//! channel (the platform traits; the last for peer-death detection), and pages to share (the
//! grant pool).

use grant_pool::{GrantEntries, GrantPool, GrantRef, SharedPage, SharedSlot};

use crate::platform::{DomId, EventChannels, GrantTables, PortStatus};

/// Everything a vchan endpoint calls below it.
pub trait VchanPlatform: EventChannels + GrantTables + PortStatus {}

impl<T: EventChannels + GrantTables + PortStatus + ?Sized> VchanPlatform for T {}

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
