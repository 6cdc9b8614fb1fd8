//! Grant tables v1: each domain's entries live in its own table frames (the granter writes
//! them directly, as in Xen), and Xen's side of `map_grant_ref`, `unmap_grant_ref` and `copy`
//! checks them as `common/grant_table.c` does.
//!
//! - A reference past the table: `GNTST_bad_gntref`; an unknown or dying granter:
//!   `GNTST_bad_domain`.
//! - Pinning (`_set_status_v1`): unless already pinned, the entry must be
//!   `GTF_permit_access` for the mapper's domid, else `GNTST_general_error`; a write pin of a
//!   `GTF_readonly` entry is `GNTST_general_error`. `GTF_reading` (and `GTF_writing` for
//!   writable pins) is set with a compare-exchange and stays set while any map or copy holds
//!   the pin, so the granter's revoke by compare-exchange fails meanwhile.
//! - The entry's frame must be a page of the granter (`GNTST_bad_page`).
//! - Copies: `offset + len > 4096` on either side is `GNTST_bad_copy_arg`; a frame side must
//!   say `DOMID_SELF` (`GNTST_permission_denied`) and name one of our pages
//!   (`GNTST_bad_page`). Each op has its own status; a failure does not stop the batch.
//! - Maps must land on a free GFN of the mapper's foreign window (`GNTST_bad_virt_addr`
//!   outside it, `GNTST_general_error` on an occupied one, where real Xen would crash the
//!   domain); only `GNTMAP_host_map [| GNTMAP_readonly]` is accepted.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use grant_pool::{PAGE_SIZE, PageCell, SharedPage};
use xen_front::abi::DOMID_SELF;
use xen_front::platform::{
    DomId, ForeignMapping, Gfn, GnttabCopy, GnttabCopyPtr, GrantHandle, GrantRef, GrantStatus, gntcopy, grant_entry,
    gtf,
};

use super::world::World;

/// Frames in a new domain's table (Xen starts tables at one frame and grows them; the
/// simulator allocates them all at once).
pub const DEFAULT_GRANT_FRAMES: u32 = 4;
/// Xen's default `gnttab_max_frames`, reported by `query_size`.
pub const MAX_GRANT_FRAMES: u32 = 64;
/// Mappings a domain may hold at once (maptrack entries).
pub const MAX_MAPTRACK: usize = 1024;
/// Size of the foreign-mapping window of every simulated domain.
pub const WINDOW_FRAMES: u32 = 256;
/// First GFN of the foreign-mapping window (far above simulated RAM).
pub const WINDOW_START: Gfn = Gfn(0x10_0000);

/// How many maps and in-progress copies hold one entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Pin {
    readers: u32,
    writers: u32,
}

/// A domain's grant table: its v1 entries and the pins foreign domains hold on them.
#[derive(Debug)]
pub(crate) struct GrantTable {
    frames: Vec<SharedPage>,
    pins: BTreeMap<u32, Pin>,
}

/// One foreign mapping held by a domain (its maptrack entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mapping {
    pub(crate) granter: DomId,
    pub(crate) gref: GrantRef,
    pub(crate) frame: Gfn,
    pub(crate) at: Gfn,
    pub(crate) readonly: bool,
}

impl GrantTable {
    pub(crate) fn new(frames: u32) -> Self {
        let frames = (0..frames).map(|_| SharedPage::from_static(Box::leak(Box::new(PageCell::new())))).collect();
        GrantTable { frames, pins: BTreeMap::new() }
    }

    pub(crate) fn nr_frames(&self) -> u32 {
        self.frames.len() as u32
    }

    pub(crate) fn entries(&self) -> u32 {
        self.nr_frames() * grant_entry::PER_FRAME
    }

    /// The frame and byte offset of entry `gref`.
    pub(crate) fn entry(&self, gref: GrantRef) -> Option<(SharedPage, usize)> {
        let frame = self.frames.get((gref.0 / grant_entry::PER_FRAME) as usize)?;
        Some((*frame, (gref.0 % grant_entry::PER_FRAME) as usize * grant_entry::SIZE))
    }

    /// `_set_status_v1`: pins `gref` for `grantee`, returning the granted frame.
    fn pin(&mut self, gref: GrantRef, grantee: DomId, write: bool) -> Result<Gfn, GrantStatus> {
        let (page, off) = self.entry(gref).ok_or(GrantStatus::BAD_GNTREF)?;
        let pin = self.pins.get(&gref.0).copied().unwrap_or_default();
        let pinned = pin.readers + pin.writers > 0;
        let flags = page.atomic_u16(off + grant_entry::FLAGS);
        let mut seen = flags.load(Ordering::SeqCst);
        loop {
            let domid = page.read_u16(off + grant_entry::DOMID);
            if !pinned && (seen & gtf::TYPE_MASK != gtf::PERMIT_ACCESS || domid != grantee) {
                return Err(GrantStatus::GENERAL_ERROR);
            }
            let mut new = seen | gtf::READING;
            if write {
                if seen & gtf::READONLY != 0 {
                    return Err(GrantStatus::GENERAL_ERROR);
                }
                new |= gtf::WRITING;
            }
            match flags.compare_exchange(seen, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break,
                Err(now) => seen = now, // the granter changed it meanwhile: check again
            }
        }
        let entry = self.pins.entry(gref.0).or_default();
        if write {
            entry.writers += 1;
        } else {
            entry.readers += 1;
        }
        Ok(Gfn(u64::from(page.read_u32(off + grant_entry::FRAME))))
    }

    /// Drops one pin; clears `GTF_writing`/`GTF_reading` when the last writer/holder goes.
    fn unpin(&mut self, gref: GrantRef, write: bool) {
        let Some((page, off)) = self.entry(gref) else { return };
        let Some(pin) = self.pins.get_mut(&gref.0) else { return };
        if write {
            pin.writers = pin.writers.saturating_sub(1);
        } else {
            pin.readers = pin.readers.saturating_sub(1);
        }
        let mut clear = 0;
        if pin.writers == 0 {
            clear |= gtf::WRITING;
        }
        if pin.writers + pin.readers == 0 {
            clear |= gtf::READING;
            self.pins.remove(&gref.0);
        }
        page.atomic_u16(off + grant_entry::FLAGS).fetch_and(!clear, Ordering::SeqCst);
    }

    /// Pins held on `gref` (maps and copies in progress).
    pub(crate) fn pin_count(&self, gref: GrantRef) -> u32 {
        self.pins.get(&gref.0).map_or(0, |p| p.readers + p.writers)
    }
}

/// A resolved side of a copy, pinned if it is a grant.
struct CopySide {
    page: SharedPage,
    pinned: Option<(DomId, GrantRef, bool)>,
}

impl World {
    /// `GNTTABOP_map_grant_ref` by `mapper` of `granter`'s `gref` at window GFN `at`.
    pub(crate) fn grant_map(
        &mut self,
        mapper: DomId,
        at: Gfn,
        granter: DomId,
        gref: GrantRef,
        readonly: bool,
    ) -> Result<ForeignMapping, GrantStatus> {
        let me = self.live(mapper).ok_or(GrantStatus::BAD_DOMAIN)?;
        if at.0 < WINDOW_START.0 || at.0 >= WINDOW_START.0 + u64::from(WINDOW_FRAMES) {
            return Err(GrantStatus::BAD_VIRT_ADDR);
        }
        if me.memory.window.contains_key(&at) {
            return Err(GrantStatus::GENERAL_ERROR);
        }
        if me.maptrack.len() >= MAX_MAPTRACK {
            return Err(GrantStatus::NO_DEVICE_SPACE);
        }
        let granter_dom = if granter == DOMID_SELF { mapper } else { granter };
        let owner = self.live_mut(granter_dom).ok_or(GrantStatus::BAD_DOMAIN)?;
        let frame = owner.grants.pin(gref, mapper, !readonly)?;
        let Some(page) = owner.memory.page_mut(frame) else {
            owner.grants.unpin(gref, !readonly);
            return Err(GrantStatus::BAD_PAGE);
        };
        page.foreign_maps += 1;
        let shared = page.page;
        let handle = GrantHandle(self.next_handle);
        self.next_handle += 1;
        let me = self.live_mut(mapper).expect("checked above");
        me.memory.window.insert(at, shared);
        me.maptrack.insert(handle, Mapping { granter: granter_dom, gref, frame, at, readonly });
        Ok(ForeignMapping { page: shared, handle })
    }

    /// `GNTTABOP_unmap_grant_ref` by `mapper`.
    pub(crate) fn grant_unmap(&mut self, mapper: DomId, at: Gfn, handle: GrantHandle) -> Result<(), GrantStatus> {
        let me = self.domains.get_mut(&mapper).ok_or(GrantStatus::BAD_DOMAIN)?;
        let mapping = *me.maptrack.get(&handle).ok_or(GrantStatus::BAD_HANDLE)?;
        if mapping.at != at {
            return Err(GrantStatus::GENERAL_ERROR);
        }
        me.maptrack.remove(&handle);
        me.memory.window.remove(&at);
        self.release_mapping(mapping);
        Ok(())
    }

    /// Undoes a mapping's pin and page reference; reaps the granter if it was a zombie
    /// waiting for this.
    pub(crate) fn release_mapping(&mut self, mapping: Mapping) {
        if let Some(owner) = self.domains.get_mut(&mapping.granter) {
            owner.grants.unpin(mapping.gref, !mapping.readonly);
            if let Some(page) = owner.memory.page_mut(mapping.frame) {
                page.foreign_maps = page.foreign_maps.saturating_sub(1);
            }
        }
        self.reap(mapping.granter);
    }

    fn copy_side(
        &mut self,
        me: DomId,
        side: GnttabCopyPtr,
        is_gref: bool,
        write: bool,
    ) -> Result<CopySide, GrantStatus> {
        if !is_gref {
            if side.domid != DOMID_SELF {
                return Err(GrantStatus::PERMISSION_DENIED);
            }
            let page = self.live(me).and_then(|d| d.memory.page(Gfn(side.u))).ok_or(GrantStatus::BAD_PAGE)?;
            return Ok(CopySide { page, pinned: None });
        }
        let granter = if side.domid == DOMID_SELF { me } else { side.domid };
        let gref = GrantRef(side.u as u32);
        let owner = self.live_mut(granter).ok_or(GrantStatus::BAD_DOMAIN)?;
        let frame = owner.grants.pin(gref, me, write)?;
        match owner.memory.page(frame) {
            Some(page) => Ok(CopySide { page, pinned: Some((granter, gref, write)) }),
            None => {
                owner.grants.unpin(gref, write);
                Err(GrantStatus::BAD_PAGE)
            }
        }
    }

    fn unpin_side(&mut self, side: &CopySide) {
        if let Some((granter, gref, write)) = side.pinned
            && let Some(owner) = self.domains.get_mut(&granter)
        {
            owner.grants.unpin(gref, write);
        }
    }

    fn copy_one(&mut self, me: DomId, op: &GnttabCopy) -> GrantStatus {
        let len = usize::from(op.len);
        if usize::from(op.source.offset) + len > PAGE_SIZE || usize::from(op.dest.offset) + len > PAGE_SIZE {
            return GrantStatus::BAD_COPY_ARG;
        }
        let src = match self.copy_side(me, op.source, op.flags & gntcopy::SOURCE_GREF != 0, false) {
            Ok(s) => s,
            Err(e) => return e,
        };
        let dst = match self.copy_side(me, op.dest, op.flags & gntcopy::DEST_GREF != 0, true) {
            Ok(d) => d,
            Err(e) => {
                self.unpin_side(&src);
                return e;
            }
        };
        let mut bytes = vec![0u8; len];
        src.page.copy_out(usize::from(op.source.offset), &mut bytes);
        dst.page.copy_in(usize::from(op.dest.offset), &bytes);
        self.unpin_side(&src);
        self.unpin_side(&dst);
        GrantStatus::OKAY
    }

    /// `GNTTABOP_copy` by `me`: every op gets its own status.
    pub(crate) fn grant_copy(&mut self, me: DomId, ops: &mut [GnttabCopy]) {
        for op in ops.iter_mut() {
            op.status = self.copy_one(me, op).0;
        }
    }
}
