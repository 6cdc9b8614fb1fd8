//! The backend's end of a shared ring, translated from `io/ring.h` (xen-abi.md §7.1). Every
//! index is a free-running `u32` and every subtraction wraps, so a frontend writing garbage
//! indices gets garbage answers, never a panic.

use std::sync::atomic::Ordering;

use grant_pool::SharedPage;
use grant_pool::shared::{full_barrier, read_barrier, write_barrier};

use super::wire::{RING_HEADER, RING_SIZE, sring};

/// A mapped ring page and the backend's private indices (`struct *_back_ring`).
#[derive(Debug)]
pub(crate) struct BackRing {
    pub(crate) page: SharedPage,
    entry: usize,
    /// Next request to consume.
    pub(crate) req_cons: u32,
    /// Next response slot to fill (published by [`BackRing::push_responses`]).
    pub(crate) rsp_prod_pvt: u32,
}

impl BackRing {
    /// `BACK_RING_ATTACH` as Linux netback does it: the private indices start from the
    /// shared `rsp_prod`, so a backend reconnecting to a ring in use carries on where it was.
    /// `Err` if the frontend claims more unconsumed requests than the ring holds (netback's
    /// `xenvif_map_frontend_data_rings` check).
    pub(crate) fn attach(page: SharedPage, entry: usize) -> Result<Self, ()> {
        let rsp_prod = page.atomic_u32(sring::RSP_PROD).load(Ordering::SeqCst);
        let ring = BackRing { page, entry, req_cons: rsp_prod, rsp_prod_pvt: rsp_prod };
        if ring.req_prod().wrapping_sub(rsp_prod) > RING_SIZE {
            return Err(());
        }
        Ok(ring)
    }

    /// The frontend's `req_prod`, followed by a read barrier (entries are read after it).
    pub(crate) fn req_prod(&self) -> u32 {
        let p = self.page.atomic_u32(sring::REQ_PROD).load(Ordering::SeqCst);
        read_barrier();
        p
    }

    /// `XEN_RING_NR_UNCONSUMED_REQUESTS`: requests we may consume, bounded by the responses
    /// we still owe (a hostile `req_prod` cannot make us read past the ring).
    pub(crate) fn unconsumed(&self) -> u32 {
        let req = self.req_prod().wrapping_sub(self.req_cons);
        let rsp = RING_SIZE.wrapping_sub(self.req_cons.wrapping_sub(self.rsp_prod_pvt));
        req.min(rsp)
    }

    /// Byte offset of ring index `idx`'s entry.
    pub(crate) fn slot(&self, idx: u32) -> usize {
        RING_HEADER + (idx % RING_SIZE) as usize * self.entry
    }

    /// `RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`: publishes `rsp_prod_pvt`; true if the
    /// frontend's `rsp_event` lies in the published range (it asked to be told).
    pub(crate) fn push_responses(&mut self) -> bool {
        let prod = self.page.atomic_u32(sring::RSP_PROD);
        let old = prod.load(Ordering::SeqCst);
        let new = self.rsp_prod_pvt;
        write_barrier();
        prod.store(new, Ordering::SeqCst);
        full_barrier();
        let event = self.page.atomic_u32(sring::RSP_EVENT).load(Ordering::SeqCst);
        new.wrapping_sub(event) < new.wrapping_sub(old)
    }

    /// Writes `rsp_prod` directly (hostile producers).
    pub(crate) fn force_rsp_prod(&mut self, value: u32) {
        self.rsp_prod_pvt = value;
        self.page.atomic_u32(sring::RSP_PROD).store(value, Ordering::SeqCst);
    }

    /// Sets `req_event`: "notify me when `req_prod` passes `value - 1`".
    pub(crate) fn set_req_event(&self, value: u32) {
        self.page.atomic_u32(sring::REQ_EVENT).store(value, Ordering::SeqCst);
        full_barrier();
    }

    /// `RING_FINAL_CHECK_FOR_REQUESTS`: any work left? If none, ask for an event on the next
    /// request and look once more (closes the race with a frontend pushing meanwhile).
    pub(crate) fn final_check_for_requests(&mut self) -> bool {
        if self.unconsumed() > 0 {
            return true;
        }
        self.set_req_event(self.req_cons.wrapping_add(1));
        self.unconsumed() > 0
    }
}
