//! The uplink data path: RX buffers lent writable and re-posted, TX frames lent read-only
//! until their response. Every response is copied out of the ring and validated before it
//! touches a slot: id in range and outstanding, status, offset + length within the page.

use grant_pool::{Access, GrantEntries, GrantPool, PAGE_SIZE, Private, Slot};

use super::{Connection, Netfront, RX_BUFFERS, TX_SLOTS};
use crate::netif::{ChecksumOffload, RxRequest, TxRequest, rsp, rxf};

/// A received frame, in the private slot the closure of [`Netfront::receive`] gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxFrame {
    /// Where the frame starts in the slot.
    pub offset: u16,
    /// Its length.
    pub len: u16,
    /// What the backend said about its checksum.
    pub csum: ChecksumOffload,
}

/// What [`Netfront::receive`]'s closure decides for the slot it was lent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxVerdict {
    /// Done with it: post it again as an RX buffer.
    Recycle,
    /// The slot now holds a reply at `offset..offset + len` (written in place): send it to
    /// the backend. A fresh buffer takes its RX id.
    Transmit {
        /// Where the reply starts.
        offset: u16,
        /// Its length.
        len: u16,
        /// Its checksum state.
        csum: ChecksumOffload,
    },
}

impl RxFrame {
    /// The frame's byte range in the slot.
    pub fn range(&self) -> core::ops::Range<usize> {
        usize::from(self.offset)..usize::from(self.offset) + usize::from(self.len)
    }
}

impl Netfront {
    /// Posts an RX buffer for every empty RX id (pool permitting).
    pub(super) fn refill_rx<E: GrantEntries, const N: usize>(&mut self, pool: &mut GrantPool<E, N>) {
        let backend = self.backend_id;
        let Some(c) = self.conn.as_mut() else { return };
        // Every id posted (the usual case on each pass): nothing to scan for.
        if c.rx.outstanding() as usize >= RX_BUFFERS {
            return;
        }
        for id in 0..RX_BUFFERS {
            if c.rx_slots[id].is_some() {
                continue;
            }
            let Some(slot) = pool.take() else {
                self.counters.rx_refill_starved += 1;
                return;
            };
            let lent = pool.lend(slot, backend, Access::Writable);
            let req = RxRequest { id: id as u16, gref: lent.gref() };
            if !c.rx.push_request(&req) {
                // Cannot happen with RX_BUFFERS <= ring size, unless the ring faulted.
                match pool.reclaim(lent) {
                    Ok(s) => pool.put_back(s),
                    Err(l) => pool.quarantine(l),
                }
                return;
            }
            c.rx_slots[id] = Some(lent);
        }
    }

    /// Hands up to `budget` received frames to `deliver`, each in a private slot (the frame
    /// at [`RxFrame::range`]); the slot is re-posted when `deliver` returns. `deliver` also
    /// gets the pool: to keep the frame, it swaps a fresh slot from the pool into `slot`
    /// (that one is posted instead). Returns how many
    /// were delivered. A ring fault stops the connection (handled by the next
    /// [`poll_control`](Self::poll_control)).
    pub fn receive<E: GrantEntries, const N: usize>(
        &mut self,
        pool: &mut GrantPool<E, N>,
        budget: usize,
        mut deliver: impl FnMut(&mut GrantPool<E, N>, &mut Slot<Private>, RxFrame) -> RxVerdict,
    ) -> usize {
        if !self.is_up() || self.fault {
            return 0;
        }
        let backend = self.backend_id;
        let mut delivered = 0;
        loop {
            let Some(c) = self.conn.as_mut() else { return delivered };
            let available = match c.rx.poll_responses() {
                Ok(n) => n,
                Err(fault) => {
                    log::error!("uplink: RX ring fault {:?}; disconnecting", fault);
                    self.counters.ring_faults += 1;
                    self.fault = true;
                    return delivered;
                }
            };
            if available == 0 {
                match c.rx.final_check_for_responses() {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(_) => {
                        self.counters.ring_faults += 1;
                        self.fault = true;
                        return delivered;
                    }
                }
            }
            while delivered < budget {
                let Some(r) = c.rx.take_response() else { break };
                let id = usize::from(r.id);
                let Some(lent) = c.rx_slots.get_mut(id).and_then(Option::take) else {
                    // Not ours, or answered twice: nothing to reclaim.
                    self.counters.rx_bad_id += 1;
                    continue;
                };
                let mut slot = match pool.reclaim(lent) {
                    Ok(s) => s,
                    Err(lent) => {
                        // A copying backend never maps RX pages; this one does.
                        pool.quarantine(lent);
                        self.counters.quarantined += 1;
                        continue;
                    }
                };
                let chained = r.flags & (rxf::MORE_DATA | rxf::EXTRA_INFO) != 0;
                let skipping = c.rx_skip_chain;
                c.rx_skip_chain = r.flags & rxf::MORE_DATA != 0;
                let len = usize::from(r.status.max(0) as u16);
                if skipping || chained {
                    self.counters.rx_unexpected_chain += 1;
                } else if r.status < 0 {
                    self.counters.rx_error_status += 1;
                } else if len == 0 || usize::from(r.offset) + len > PAGE_SIZE {
                    self.counters.rx_bad_length += 1;
                } else {
                    let frame =
                        RxFrame { offset: r.offset, len: len as u16, csum: ChecksumOffload::from_rx_flags(r.flags) };
                    self.counters.rx_frames += 1;
                    self.counters.rx_bytes += len as u64;
                    delivered += 1;
                    if let RxVerdict::Transmit { offset, len, csum } = deliver(pool, &mut slot, frame) {
                        match push_tx(c, &mut self.counters, pool, backend, slot, offset, len, csum) {
                            Ok(()) => continue, // refill_rx gives this id a new buffer
                            Err(back) => slot = back,
                        }
                    }
                }
                // Re-post under the same id.
                let lent = pool.lend(slot, backend, Access::Writable);
                let req = RxRequest { id: id as u16, gref: lent.gref() };
                if c.rx.push_request(&req) {
                    c.rx_slots[id] = Some(lent);
                } else {
                    match pool.reclaim(lent) {
                        Ok(s) => pool.put_back(s),
                        Err(l) => pool.quarantine(l),
                    }
                }
            }
            if delivered >= budget {
                break;
            }
        }
        // Ids whose buffers were lost (bad responses, empty pool earlier) get new ones.
        self.refill_rx(pool);
        delivered
    }

    /// Queues the frame at `slot[offset..offset + len]` for the backend. The slot is lent
    /// read-only until its response. `Err` gives the slot back (not connected, or no room):
    /// the caller drops the frame and counts it.
    pub fn transmit<E: GrantEntries, const N: usize>(
        &mut self,
        pool: &mut GrantPool<E, N>,
        slot: Slot<Private>,
        offset: u16,
        len: u16,
        csum: ChecksumOffload,
    ) -> Result<(), Slot<Private>> {
        let up = self.is_up();
        let backend = self.backend_id;
        let Some(c) = self.conn.as_mut().filter(|_| up) else {
            self.counters.tx_busy += 1;
            return Err(slot);
        };
        push_tx(c, &mut self.counters, pool, backend, slot, offset, len, csum)
    }

    /// Collects TX responses: each completed slot is reclaimed and returned to the pool.
    pub fn reap_tx<E: GrantEntries, const N: usize>(&mut self, pool: &mut GrantPool<E, N>) {
        // A faulted ring is not read again (the fault was counted once); the close reclaims.
        if self.fault || self.conn.as_ref().is_some_and(|c| c.tx.fault().is_some()) {
            return;
        }
        loop {
            let Some(c) = self.conn.as_mut() else { return };
            match c.tx.poll_responses() {
                Ok(_) => {}
                Err(fault) => {
                    log::error!("uplink: TX ring fault {:?}; disconnecting", fault);
                    self.counters.ring_faults += 1;
                    self.fault = true;
                    return;
                }
            }
            while let Some(r) = c.tx.take_response() {
                if r.status == rsp::NULL {
                    self.counters.tx_unexpected_null += 1;
                    continue;
                }
                let id = usize::from(r.id);
                let Some(lent) = c.tx_slots.get_mut(id).and_then(Option::take) else {
                    self.counters.tx_bad_id += 1;
                    continue;
                };
                if r.status != rsp::OKAY {
                    self.counters.tx_error_status += 1;
                }
                match pool.reclaim(lent) {
                    Ok(s) => pool.put_back(s),
                    Err(lent) => {
                        // The backend kept our TX page mapped: never reuse it until it lets go.
                        pool.quarantine(lent);
                        self.counters.quarantined += 1;
                    }
                }
                c.tx_free[c.tx_free_len] = id as u16;
                c.tx_free_len += 1;
            }
            // Ask for an event when half of what is in flight has completed.
            let in_flight = (TX_SLOTS - c.tx_free_len) as u32;
            if in_flight == 0 {
                match c.tx.final_check_for_responses() {
                    Ok(true) => continue,
                    Ok(false) => return,
                    Err(_) => {
                        self.counters.ring_faults += 1;
                        self.fault = true;
                        return;
                    }
                }
            }
            c.tx.set_response_event(in_flight.div_ceil(2));
            match c.tx.poll_responses() {
                Ok(n) if n > 0 => continue,
                Ok(_) => return,
                Err(_) => {
                    self.counters.ring_faults += 1;
                    self.fault = true;
                    return;
                }
            }
        }
    }
}

/// Lends `slot` read-only and posts it as one TX request.
#[allow(clippy::too_many_arguments)]
fn push_tx<E: GrantEntries, const N: usize>(
    c: &mut Connection,
    counters: &mut super::NetfrontCounters,
    pool: &mut GrantPool<E, N>,
    backend: crate::platform::DomId,
    slot: Slot<Private>,
    offset: u16,
    len: u16,
    csum: ChecksumOffload,
) -> Result<(), Slot<Private>> {
    if c.tx_free_len == 0 || c.tx.free_requests() == 0 || len == 0 || usize::from(offset) + usize::from(len) > PAGE_SIZE
    {
        counters.tx_busy += 1;
        return Err(slot);
    }
    c.tx_free_len -= 1;
    let id = c.tx_free[c.tx_free_len];
    let lent = pool.lend(slot, backend, Access::ReadOnly);
    let req = TxRequest { gref: lent.gref(), offset, flags: csum.tx_flags(), id, size: len };
    if !c.tx.push_request(&req) {
        // Only a faulted ring refuses here (room was checked).
        c.tx_free_len += 1;
        counters.tx_busy += 1;
        return match pool.reclaim(lent) {
            Ok(s) => Err(s),
            Err(l) => {
                pool.quarantine(l);
                Ok(())
            }
        };
    }
    c.tx_slots[usize::from(id)] = Some(lent);
    counters.tx_frames += 1;
    counters.tx_bytes += u64::from(len);
    Ok(())
}
