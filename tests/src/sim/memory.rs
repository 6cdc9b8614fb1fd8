//! A domain's memory: 4 KiB pages named by GFN, leaked from the heap as [`PageCell`]s so
//! drivers see them as [`SharedPage`]s exactly like real shared pages.
//!
//! Each page counts the foreign mappings of it. A destroyed domain whose pages are still
//! mapped elsewhere stays a zombie until the last one is unmapped, as in Xen.

use std::collections::BTreeMap;

use grant_pool::{PageCell, SharedPage};
use xen_front::platform::Gfn;

/// First GFN handed out for RAM; low GFNs stay unused so 0 is never a valid frame.
const FIRST_RAM_GFN: u64 = 0x100;

/// One page of guest memory.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Page {
    pub(crate) page: SharedPage,
    /// Foreign mappings of this page (by other domains).
    pub(crate) foreign_maps: u32,
}

/// A domain's RAM pages and the foreign pages mapped into its window.
#[derive(Debug, Default)]
pub(crate) struct Memory {
    ram: BTreeMap<Gfn, Page>,
    next_gfn: u64,
    /// Window GFN -> the foreign page mapped there.
    pub(crate) window: BTreeMap<Gfn, SharedPage>,
}

impl Memory {
    pub(crate) fn new() -> Self {
        Memory { ram: BTreeMap::new(), next_gfn: FIRST_RAM_GFN, window: BTreeMap::new() }
    }

    /// Adds a zeroed page and returns its GFN and view. Pages are leaked: a view may outlive
    /// the domain (a zombie's page stays valid for whoever still maps it).
    pub(crate) fn alloc(&mut self) -> (Gfn, SharedPage) {
        let gfn = Gfn(self.next_gfn);
        self.next_gfn += 1;
        let page = SharedPage::from_static(Box::leak(Box::new(PageCell::new())));
        self.ram.insert(gfn, Page { page, foreign_maps: 0 });
        (gfn, page)
    }

    /// Adds `page` (memory the caller leaked for good, e.g. a grant pool's array) as a RAM
    /// page of this domain and returns its GFN.
    pub(crate) fn adopt(&mut self, page: SharedPage) -> Gfn {
        let gfn = Gfn(self.next_gfn);
        self.next_gfn += 1;
        self.ram.insert(gfn, Page { page, foreign_maps: 0 });
        gfn
    }

    pub(crate) fn page(&self, gfn: Gfn) -> Option<SharedPage> {
        self.ram.get(&gfn).map(|p| p.page)
    }

    pub(crate) fn page_mut(&mut self, gfn: Gfn) -> Option<&mut Page> {
        self.ram.get_mut(&gfn)
    }

    /// The GFN of one of this domain's pages (RAM or window).
    pub(crate) fn gfn_of(&self, page: SharedPage) -> Option<Gfn> {
        self.ram
            .iter()
            .find(|(_, p)| p.page == page)
            .map(|(g, _)| *g)
            .or_else(|| self.window.iter().find(|(_, p)| **p == page).map(|(g, _)| *g))
    }

    /// Foreign mappings of all our pages.
    pub(crate) fn foreign_maps(&self) -> u32 {
        self.ram.values().map(|p| p.foreign_maps).sum()
    }
}
