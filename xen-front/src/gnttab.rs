//! Our own grant table: frames placed in our memory with `XENMAPSPACE_grant_table` (the PVH
//! way; `GNTTABOP_setup_table` is the PV interface), and the v1 entries in them.

use grant_pool::{PageCell, SharedPage};

use crate::abi::{self, GNTTAB_NR_RESERVED_ENTRIES, gnttabop, mapspace};
use crate::hypercall::{self, XenError, XenResult};

/// Entries per 4 KiB frame (8-byte v1 entries).
pub const ENTRIES_PER_FRAME: u32 = 512;

/// `GNTTABOP_query_size`: `(current frames, maximum frames)`.
pub fn query_size() -> XenResult<(u32, u32)> {
    let mut q = [abi::GnttabQuerySize { dom: abi::DOMID_SELF, nr_frames: 0, max_nr_frames: 0, status: 0 }];
    hypercall::grant_table_op(gnttabop::QUERY_SIZE, &mut q)?;
    if q[0].status != 0 {
        return Err(XenError(i64::from(-q[0].status)));
    }
    Ok((q[0].nr_frames, q[0].max_nr_frames))
}

/// The mapped frames of our grant table.
pub struct GrantTableFrames {
    frames: &'static [PageCell],
    /// Frames Xen allows us (from `query_size`).
    pub max_frames: u32,
}

impl GrantTableFrames {
    /// Maps as many of `frames` as Xen allows, highest index first so the table grows once.
    pub fn map(frames: &'static [PageCell]) -> XenResult<Self> {
        let (_, max) = query_size()?;
        let n = (frames.len() as u32).min(max) as usize;
        for i in (0..n).rev() {
            let gpfn = frames[i].addr() as u64 >> 12;
            hypercall::add_to_physmap(mapspace::GRANT_TABLE, i as u64, gpfn)?;
        }
        Ok(GrantTableFrames { frames: &frames[..n], max_frames: max })
    }

    /// Number of entries mapped.
    pub fn entries(&self) -> u32 {
        self.frames.len() as u32 * ENTRIES_PER_FRAME
    }

    /// First reference we may use (0–7 belong to the toolstack: console, xenstore, …).
    pub fn first_free_ref(&self) -> u32 {
        GNTTAB_NR_RESERVED_ENTRIES
    }

    /// The frame holding entry `gref`, and the entry's byte offset in it.
    pub fn entry(&self, gref: u32) -> Option<(SharedPage, usize)> {
        let frame = self.frames.get((gref / ENTRIES_PER_FRAME) as usize)?;
        Some((SharedPage::from_static(frame), (gref % ENTRIES_PER_FRAME) as usize * 8))
    }
}
