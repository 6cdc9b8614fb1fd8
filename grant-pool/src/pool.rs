//! The pool: a fixed set of non-moving 4 KiB pages, each with a grant reference chosen once,
//! and the typed states a page goes through.
//!
//! ```text
//! take() ─► Slot<Private> ──lend(domid, access)──► Slot<Lent> ──reclaim()──► Slot<Private> ─► put_back()
//!                │                                     └─(peer still maps it)─► quarantine() ─► retry_quarantined()
//!                └──share(domid)──► SharedSlot ──unshare()──► Slot<Private>
//! ```
//!
//! Only [`Slot<Private>`] yields `&[u8]`/`&mut [u8]`: nobody else can touch its page, because
//! its grant entry is invalid and the handle is unique (not `Clone`). A [`Slot<Lent>`] yields
//! only its grant reference; reading it does not compile:
//!
//! ```compile_fail
//! use grant_pool::{Access, GrantPool, PageCell, TableFrames};
//! let table = TableFrames::new(Box::leak(Box::new([const { PageCell::new() }; 1])));
//! let pages = Box::leak(Box::new([const { PageCell::new() }; 4]));
//! let mut pool = GrantPool::from_static(table, 8, pages, |addr| addr as u64 >> 12).unwrap();
//! let slot = pool.take().unwrap();
//! let lent = pool.lend(slot, 0, Access::ReadOnly);
//! let _peek = lent.bytes(); // a lent page may be written by the peer at any time
//! ```
//!
//! A [`SharedSlot`] is granted for a connection's lifetime (ring pages, vchan rings) and used
//! by both sides at once: it yields only a [`SharedPage`] view (atomic accesses).
//!
//! The pool counts pages in each state ([`PoolCounts`]); `free + private + lent + shared +
//! quarantined == capacity` always holds, and the soak tests check that every page comes home.

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU16, Ordering};

use crate::grant::{Access, DomId, GrantEntries, GrantRef, StillInUse, end_grant, write_grant};
use crate::shared::{PAGE_SIZE, PageCell, SharedPage};

/// Marker: the page is ours alone.
#[derive(Debug)]
pub enum Private {}
/// Marker: the page is granted to a peer; we may not touch it.
#[derive(Debug)]
pub enum Lent {}

/// One pool page in the state `S`. Not `Clone`: the handle is the ownership.
#[derive(Debug)]
pub struct Slot<S> {
    index: u16,
    pool: u16,
    page: NonNull<u8>,
    gfn: u64,
    gref: GrantRef,
    grantee: DomId,
    access: Access,
    _state: PhantomData<S>,
}

// Safety: a slot handle owns its page exclusively (like a `Box`): moving it to another
// thread moves that ownership, and `&Slot` only yields `&[u8]`.
unsafe impl<S> Send for Slot<S> {}
// Safety: as above; shared references only read.
unsafe impl<S> Sync for Slot<S> {}

impl<S> Slot<S> {
    /// The slot's index in its pool (stable for the pool's lifetime).
    pub fn index(&self) -> u16 {
        self.index
    }
}

impl Slot<Private> {
    /// The page's bytes.
    pub fn bytes(&self) -> &[u8; PAGE_SIZE] {
        // Safety: the page is a pool page that lives for the program; its grant entry is
        // invalid (never granted, or ended by a successful reclaim), so no other domain can
        // map or copy into it, and this handle is the only one for the page.
        unsafe { self.page.cast::<[u8; PAGE_SIZE]>().as_ref() }
    }

    /// The page's bytes, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8; PAGE_SIZE] {
        // Safety: as in `bytes`, and `&mut self` makes this borrow unique.
        unsafe { self.page.cast::<[u8; PAGE_SIZE]>().as_mut() }
    }

    /// The page's guest frame number: names it as the local side of a `GNTTABOP_copy`
    /// (Xen writes it during the hypercall, while the caller holds `&mut` on this slot).
    pub fn gfn(&self) -> u64 {
        self.gfn
    }
}

impl Slot<Lent> {
    /// The grant reference the peer uses for this page.
    pub fn gref(&self) -> GrantRef {
        self.gref
    }

    /// The domain it is granted to.
    pub fn grantee(&self) -> DomId {
        self.grantee
    }

    /// What the peer may do with it.
    pub fn access(&self) -> Access {
        self.access
    }
}

/// A page granted writable to a peer for a connection's lifetime; both sides use it.
#[derive(Debug)]
pub struct SharedSlot {
    slot: Slot<Lent>,
}

impl SharedSlot {
    /// The page, for atomic access only.
    pub fn page(&self) -> SharedPage {
        // Safety: a pool page lives for the program; SharedPage only performs atomic accesses.
        unsafe { SharedPage::from_addr(self.slot.page.as_ptr() as usize) }
    }

    /// The grant reference the peer maps.
    pub fn gref(&self) -> GrantRef {
        self.slot.gref
    }

    /// The peer.
    pub fn grantee(&self) -> DomId {
        self.slot.grantee
    }

    /// The slot's index in its pool.
    pub fn index(&self) -> u16 {
        self.slot.index
    }
}

/// Pages in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolCounts {
    /// Pages in the pool.
    pub capacity: u32,
    /// In the free list.
    pub free: u32,
    /// Held by a driver as `Slot<Private>`.
    pub private: u32,
    /// Lent to a peer (`Slot<Lent>`).
    pub lent: u32,
    /// Shared for a connection (`SharedSlot`).
    pub shared: u32,
    /// Reclaim failed (the peer still maps them); retried, never reused meanwhile.
    pub quarantined: u32,
}

impl PoolCounts {
    /// Every page accounted for exactly once.
    pub fn balanced(&self) -> bool {
        self.free + self.private + self.lent + self.shared + self.quarantined == self.capacity
    }
}

/// Cumulative events, for the counters registry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Successful `lend`s and `share`s.
    pub grants: u64,
    /// Successful `reclaim`s and `unshare`s.
    pub reclaims: u64,
    /// Reclaims refused because the peer still had the page mapped.
    pub reclaims_busy: u64,
    /// Pages that went into quarantine.
    pub quarantined: u64,
    /// Pages that left quarantine for the free list.
    pub released: u64,
    /// `take`s refused because no page was free.
    pub exhausted: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    Private,
    Lent,
    Shared,
    Quarantined,
}

#[derive(Clone, Copy, Debug)]
struct PageMeta {
    addr: usize,
    gfn: u64,
    state: State,
}

/// Why a pool could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolError {
    /// The grant table has fewer entries than `first_ref + capacity`.
    TableTooSmall {
        /// Entries needed.
        needed: u32,
        /// Entries the table has.
        entries: u32,
    },
    /// A page address is zero or not 4096-aligned.
    BadPage(usize),
    /// More than 65,535 pages.
    TooLarge,
    /// `first_ref` is below the toolstack's reserved entries.
    ReservedRef(u32),
}

static NEXT_POOL_ID: AtomicU16 = AtomicU16::new(1);

/// The grant pool of `N` pages, granting through the table `E`.
pub struct GrantPool<E: GrantEntries, const N: usize> {
    entries: E,
    id: u16,
    first_ref: u32,
    pages: [PageMeta; N],
    free: [u16; N],
    free_len: usize,
    counts: PoolCounts,
    stats: PoolStats,
}

impl<E: GrantEntries, const N: usize> GrantPool<E, N> {
    /// A pool over pages we own for the program's lifetime (the appliance's `.bss`).
    /// `gfn_of` turns a page's address into its guest frame number. Page `i` gets grant
    /// reference `first_ref + i` for good.
    pub fn from_static(
        entries: E,
        first_ref: u32,
        pages: &'static mut [PageCell; N],
        gfn_of: impl Fn(usize) -> u64,
    ) -> Result<Self, PoolError> {
        // Safety: `&'static mut` hands us exclusive use of the pages for the program's
        // lifetime; we never give it back.
        unsafe { Self::from_pages(entries, first_ref, |i| (pages[i].addr(), gfn_of(pages[i].addr()))) }
    }

    /// A pool over pages given by address and GFN (the simulated Xen's domain memory).
    ///
    /// # Safety
    /// Each address must be a distinct, 4096-aligned page that stays mapped for the program's
    /// lifetime and that nothing but this pool (and Xen, through the grants the pool writes
    /// and the copies its users request) reads or writes from now on.
    pub unsafe fn from_pages(
        entries: E,
        first_ref: u32,
        page: impl Fn(usize) -> (usize, u64),
    ) -> Result<Self, PoolError> {
        if N > usize::from(u16::MAX) {
            return Err(PoolError::TooLarge);
        }
        if first_ref < crate::grant::FIRST_GUEST_REF {
            return Err(PoolError::ReservedRef(first_ref));
        }
        let needed = first_ref + N as u32;
        if entries.grant_entries() < needed {
            return Err(PoolError::TableTooSmall { needed, entries: entries.grant_entries() });
        }
        let pages: [PageMeta; N] = core::array::from_fn(|i| {
            let (addr, gfn) = page(i);
            PageMeta { addr, gfn, state: State::Free }
        });
        if let Some(bad) = pages.iter().find(|p| p.addr == 0 || !p.addr.is_multiple_of(PAGE_SIZE)) {
            return Err(PoolError::BadPage(bad.addr));
        }
        // Hand out low indices first (free is a stack).
        let free: [u16; N] = core::array::from_fn(|i| (N - 1 - i) as u16);
        let id = NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed);
        let counts = PoolCounts { capacity: N as u32, free: N as u32, ..PoolCounts::default() };
        let pool = GrantPool { entries, id, first_ref, pages, free, free_len: N, counts, stats: PoolStats::default() };
        // Start from invalid entries: whatever the table held before grants nothing of ours.
        for i in 0..N {
            let (page, off) = pool.entry(i as u16);
            page.write_u16(off, 0);
        }
        Ok(pool)
    }

    /// Pages in each state now.
    pub fn counts(&self) -> PoolCounts {
        self.counts
    }

    /// Cumulative events.
    pub fn stats(&self) -> PoolStats {
        self.stats
    }

    /// The grant reference of slot `index` (fixed for the pool's lifetime).
    pub fn gref_of(&self, index: u16) -> GrantRef {
        GrantRef(self.first_ref + u32::from(index))
    }

    /// The grant table (for tests and diagnostics).
    pub fn entries(&self) -> &E {
        &self.entries
    }

    fn entry(&self, index: u16) -> (SharedPage, usize) {
        // Checked at construction: every reference of the pool is inside the table.
        self.entries.grant_entry(self.gref_of(index)).expect("pool refs are inside the table")
    }

    fn check<S>(&self, slot: &Slot<S>, state: State) {
        // A handle from another pool or in the wrong state is a bug in our code, not peer
        // input: stop before corrupting the accounting.
        assert!(slot.pool == self.id && usize::from(slot.index) < N, "slot of another pool");
        assert_eq!(self.pages[usize::from(slot.index)].state, state, "slot state out of step");
    }

    fn set_state(&mut self, index: u16, from: State, to: State) {
        let c = &mut self.counts;
        for (s, delta) in [(from, -1i32), (to, 1)] {
            let n = match s {
                State::Free => &mut c.free,
                State::Private => &mut c.private,
                State::Lent => &mut c.lent,
                State::Shared => &mut c.shared,
                State::Quarantined => &mut c.quarantined,
            };
            *n = n.wrapping_add_signed(delta);
        }
        self.pages[usize::from(index)].state = to;
    }

    fn handle<S>(&self, index: u16, grantee: DomId, access: Access) -> Slot<S> {
        let meta = &self.pages[usize::from(index)];
        Slot {
            index,
            pool: self.id,
            // Checked non-zero at construction.
            page: NonNull::new(meta.addr as *mut u8).expect("pool pages are non-null"),
            gfn: meta.gfn,
            gref: self.gref_of(index),
            grantee,
            access,
            _state: PhantomData,
        }
    }

    /// A free page, now private to the caller; `None` when every page is in use (counted).
    pub fn take(&mut self) -> Option<Slot<Private>> {
        if self.free_len == 0 {
            self.stats.exhausted += 1;
            return None;
        }
        self.free_len -= 1;
        let index = self.free[self.free_len];
        self.set_state(index, State::Free, State::Private);
        Some(self.handle(index, 0, Access::Writable))
    }

    /// Returns a private page to the free list.
    pub fn put_back(&mut self, slot: Slot<Private>) {
        self.check(&slot, State::Private);
        self.release(slot.index, State::Private);
    }

    fn release(&mut self, index: u16, from: State) {
        self.set_state(index, from, State::Free);
        self.free[self.free_len] = index;
        self.free_len += 1;
    }

    /// Grants the page to `grantee`: from now on only the peer may touch it.
    pub fn lend(&mut self, slot: Slot<Private>, grantee: DomId, access: Access) -> Slot<Lent> {
        self.check(&slot, State::Private);
        let (page, off) = self.entry(slot.index);
        write_grant(page, off, grantee, slot.gfn, access);
        self.set_state(slot.index, State::Private, State::Lent);
        self.stats.grants += 1;
        self.handle(slot.index, grantee, access)
    }

    /// Ends the grant; `Err` gives the slot back, still lent, while the peer maps the page
    /// or copies from or into it. Retry later or [`quarantine`](Self::quarantine) it.
    pub fn reclaim(&mut self, slot: Slot<Lent>) -> Result<Slot<Private>, Slot<Lent>> {
        self.check(&slot, State::Lent);
        let (page, off) = self.entry(slot.index);
        match end_grant(page, off) {
            Ok(()) => {
                self.set_state(slot.index, State::Lent, State::Private);
                self.stats.reclaims += 1;
                Ok(self.handle(slot.index, 0, Access::Writable))
            }
            Err(StillInUse) => {
                self.stats.reclaims_busy += 1;
                Err(slot)
            }
        }
    }

    /// Keeps a lent slot that could not be reclaimed (its peer went away still mapping it):
    /// the pool retries it in [`retry_quarantined`](Self::retry_quarantined) and never
    /// hands it out meanwhile.
    pub fn quarantine(&mut self, slot: Slot<Lent>) {
        self.check(&slot, State::Lent);
        self.set_state(slot.index, State::Lent, State::Quarantined);
        self.stats.quarantined += 1;
    }

    /// Like [`quarantine`](Self::quarantine) for a shared page.
    pub fn quarantine_shared(&mut self, shared: SharedSlot) {
        self.check(&shared.slot, State::Shared);
        self.set_state(shared.slot.index, State::Shared, State::Quarantined);
        self.stats.quarantined += 1;
    }

    /// Tries to end the grant of every quarantined page; those that succeed go back to the
    /// free list. Returns how many did.
    pub fn retry_quarantined(&mut self) -> u32 {
        if self.counts.quarantined == 0 {
            return 0;
        }
        let mut released = 0;
        for i in 0..N as u16 {
            if self.pages[usize::from(i)].state != State::Quarantined {
                continue;
            }
            let (page, off) = self.entry(i);
            if end_grant(page, off).is_ok() {
                self.release(i, State::Quarantined);
                self.stats.released += 1;
                released += 1;
            }
        }
        released
    }

    /// Zeroes the page and grants it writable to `grantee` for a connection's lifetime.
    pub fn share(&mut self, mut slot: Slot<Private>, grantee: DomId) -> SharedSlot {
        // The peer must not see what the page held before (another connection's bytes).
        slot.bytes_mut().fill(0);
        let lent = self.lend(slot, grantee, Access::Writable);
        self.set_state(lent.index, State::Lent, State::Shared);
        SharedSlot { slot: lent }
    }

    /// Ends a shared page's grant; `Err` gives it back while the peer still maps it.
    pub fn unshare(&mut self, shared: SharedSlot) -> Result<Slot<Private>, SharedSlot> {
        self.check(&shared.slot, State::Shared);
        let (page, off) = self.entry(shared.slot.index);
        match end_grant(page, off) {
            Ok(()) => {
                self.set_state(shared.slot.index, State::Shared, State::Private);
                self.stats.reclaims += 1;
                Ok(self.handle(shared.slot.index, 0, Access::Writable))
            }
            Err(StillInUse) => {
                self.stats.reclaims_busy += 1;
                Err(shared)
            }
        }
    }
}

/// A grant table held in pages we own (the appliance's mapped table frames, or a test's).
#[derive(Clone, Copy, Debug)]
pub struct TableFrames {
    frames: &'static [PageCell],
}

impl TableFrames {
    /// The table made of `frames` (512 entries each).
    pub fn new(frames: &'static [PageCell]) -> Self {
        TableFrames { frames }
    }
}

impl GrantEntries for TableFrames {
    fn grant_entry(&self, gref: GrantRef) -> Option<(SharedPage, usize)> {
        let per = crate::grant::grant_entry::PER_FRAME;
        let frame = self.frames.get((gref.0 / per) as usize)?;
        Some((SharedPage::from_static(frame), (gref.0 % per) as usize * crate::grant::grant_entry::SIZE))
    }

    fn grant_entries(&self) -> u32 {
        self.frames.len() as u32 * crate::grant::grant_entry::PER_FRAME
    }
}
