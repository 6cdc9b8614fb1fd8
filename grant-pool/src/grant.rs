//! Our own grant table's v1 entries: writing a grant and ending it, in the order Xen requires.
//!
//! Granting needs no hypercall: the granter writes the entry in its table frame (domid and
//! frame, write barrier, then the flags that make it valid). Ending access is a
//! compare-exchange of the flags to 0 that must fail while Xen has `GTF_reading`/`GTF_writing`
//! set (the grantee maps the page or is copying): a page still in use is never reused
//! (XSA-396).

use core::sync::atomic::Ordering;

use crate::shared::{SharedPage, write_barrier};

/// A domain id.
pub type DomId = u16;

/// A grant reference: an index into the granting domain's grant table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrantRef(pub u32);

/// Flags of a v1 grant entry (`GTF_*`), written by the granter and (reading/writing) by Xen.
pub mod gtf {
    /// Type field mask (bits 0-1).
    pub const TYPE_MASK: u16 = 3;
    /// Type: the entry grants nothing.
    pub const INVALID: u16 = 0;
    /// Type: the grantee may map or copy the frame.
    pub const PERMIT_ACCESS: u16 = 1;
    /// The grantee may only read.
    pub const READONLY: u16 = 1 << 2;
    /// Set by Xen while the grantee has the frame mapped or is copying from it.
    pub const READING: u16 = 1 << 3;
    /// Set by Xen while the grantee has the frame mapped writable or is copying into it.
    pub const WRITING: u16 = 1 << 4;
}

/// Layout of a v1 grant entry (`grant_entry_v1`, 8 bytes, 512 per frame).
pub mod grant_entry {
    /// Size of an entry.
    pub const SIZE: usize = 8;
    /// `flags: u16`.
    pub const FLAGS: usize = 0;
    /// `domid: u16`, the grantee.
    pub const DOMID: usize = 2;
    /// `frame: u32`, the granted GFN.
    pub const FRAME: usize = 4;
    /// Entries per 4 KiB frame.
    pub const PER_FRAME: u32 = 512;
}

/// First reference a guest may use: 0–7 belong to the toolstack (console, xenstore, …).
pub const FIRST_GUEST_REF: u32 = 8;

/// Where our grant table's entries are: the grant pool writes them directly.
pub trait GrantEntries {
    /// The frame holding entry `gref` and the entry's byte offset in it; `None` beyond the
    /// table.
    fn grant_entry(&self, gref: GrantRef) -> Option<(SharedPage, usize)>;
    /// Number of entries in the table.
    fn grant_entries(&self) -> u32;
}

/// What a grantee may do with a granted page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Map or copy from it only (our TX frames).
    ReadOnly,
    /// Also write it (pages the peer fills for us: RX buffers, ring pages).
    Writable,
}

/// The grant entry is still mapped or being copied by the grantee (`GTF_reading` or
/// `GTF_writing` is set): the page must not be reused yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StillInUse;

/// Writes entry `(page, off)` granting frame `gfn` to `grantee`.
pub(crate) fn write_grant(page: SharedPage, off: usize, grantee: DomId, gfn: u64, access: Access) {
    page.write_u16(off + grant_entry::DOMID, grantee);
    // A v1 entry holds a 32-bit frame; pool pages live far below 16 TiB.
    page.write_u32(off + grant_entry::FRAME, gfn as u32);
    // The frame and domid must be visible before the flags make the entry valid.
    write_barrier();
    let flags = gtf::PERMIT_ACCESS | if access == Access::ReadOnly { gtf::READONLY } else { 0 };
    page.write_u16(off + grant_entry::FLAGS, flags);
}

/// Ends a grant: compare-exchanges the flags to 0 unless Xen marks the entry in use.
pub(crate) fn end_grant(page: SharedPage, off: usize) -> Result<(), StillInUse> {
    let flags = page.atomic_u16(off + grant_entry::FLAGS);
    let mut seen = flags.load(Ordering::SeqCst);
    loop {
        if seen & (gtf::READING | gtf::WRITING) != 0 {
            return Err(StillInUse);
        }
        match flags.compare_exchange(seen, 0, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return Ok(()),
            // Xen set a bit between our load and the exchange: look again.
            Err(now) => seen = now,
        }
    }
}
