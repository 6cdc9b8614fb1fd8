//! Frames from clients: their TX requests gathered (extra-info slots, `more_data` chains),
//! validated, grant-copied in batches into private pool slots, and answered in order.

use grant_pool::{GrantEntries, GrantPool, PAGE_SIZE, Private, Slot};

use crate::netif::{ETH_HLEN, ExtraInfo, TxRequest, TxResponse, extra_type, rsp, txf};
use crate::platform::{EventChannels, Gfn, GnttabCopy, GnttabCopyPtr, GrantRef, GrantStatus, GrantTables};
use crate::ring::RingLayout;

use super::vif::{MAX_FRAME_SLOTS, Phase};
use super::{ABUSE_LIMIT, COPY_BATCH, MAX_VIFS, Netback, VifId};

/// Frames taken from one vif per [`Netback::receive`] call before the next vif's turn.
const VIF_BURST: usize = 32;

/// What the frontend said about a frame it sent (its TX flags), carried to where the frame
/// goes next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameMeta {
    /// Bytes of the frame (at the start of the slot).
    pub len: u16,
    /// The L4 checksum field holds only the pseudo-header sum (`NETTXF_csum_blank`).
    pub csum_blank: bool,
    /// The sender vouches for the data (`NETTXF_data_validated`).
    pub data_validated: bool,
}

/// One frame of a copy batch: where its copies are and how to answer its slots.
#[derive(Clone, Copy, Debug)]
pub(super) struct BatchFrame {
    vif: u16,
    first_copy: u8,
    copies: u8,
    slots: u8,
    ids: [u16; MAX_FRAME_SLOTS],
    /// Bit i: slot i is extra info (answered `NETIF_RSP_NULL`).
    null_mask: u32,
    malformed: bool,
    meta: FrameMeta,
}

impl BatchFrame {
    const EMPTY: BatchFrame = BatchFrame {
        vif: 0,
        first_copy: 0,
        copies: 0,
        slots: 0,
        ids: [0; MAX_FRAME_SLOTS],
        null_mask: 0,
        malformed: false,
        meta: FrameMeta { len: 0, csum_blank: false, data_validated: false },
    };
}

const NO_COPY: GnttabCopy = GnttabCopy {
    source: GnttabCopyPtr { u: 0, domid: 0, offset: 0 },
    dest: GnttabCopyPtr { u: 0, domid: 0, offset: 0 },
    len: 0,
    flags: 0,
    status: 0,
};

/// The copy batch of one `receive` call (kept in the netback, not on the stack).
#[derive(Debug)]
pub(super) struct Batch {
    copies: [GnttabCopy; COPY_BATCH],
    ncopies: usize,
    frames: [BatchFrame; COPY_BATCH],
    nframes: usize,
}

impl Batch {
    pub(super) const EMPTY: Batch =
        Batch { copies: [NO_COPY; COPY_BATCH], ncopies: 0, frames: [BatchFrame::EMPTY; COPY_BATCH], nframes: 0 };
}

enum Gathered {
    Frame,
    Empty,
    Fault,
}

/// Why a complete frame is refused (never reaches a pool slot).
fn malformed(slots: &[TxRequest], is_extra: impl Fn(usize) -> bool) -> Option<&'static str> {
    let first = slots[0];
    let mut follow = 0u32;
    let mut ids = [false; crate::netif::TxRing::SIZE as usize];
    for (i, s) in slots.iter().enumerate() {
        if is_extra(i) {
            let extra = ExtraInfo::from_tx_slot(s);
            match extra.kind {
                extra_type::MCAST_ADD | extra_type::MCAST_DEL | extra_type::HASH => {}
                extra_type::GSO => return Some("GSO extra (not offered)"),
                _ => return Some("unknown extra type"),
            }
            continue;
        }
        let Some(seen) = ids.get_mut(usize::from(s.id)) else { return Some("id beyond the ring") };
        if core::mem::replace(seen, true) {
            return Some("id used twice in one frame");
        }
        if i > 0 {
            follow += u32::from(s.size);
        }
    }
    let total = u32::from(first.size);
    let Some(first_len) = total.checked_sub(follow) else { return Some("slot sizes exceed the frame size") };
    if (first_len as usize) < ETH_HLEN {
        return Some("first slot shorter than an Ethernet header");
    }
    if total as usize > PAGE_SIZE {
        return Some("frame larger than a page");
    }
    for (i, s) in slots.iter().enumerate().filter(|(i, _)| !is_extra(*i)) {
        let len = if i == 0 { first_len } else { u32::from(s.size) };
        if u32::from(s.offset) + len > PAGE_SIZE as u32 {
            return Some("slot crosses its page");
        }
    }
    None
}

impl Netback {
    /// Takes frames clients sent (their TX rings), at most `budget` frames, vifs served
    /// round-robin. Each frame is grant-copied (batched, up to [`COPY_BATCH`] copies per
    /// hypercall) into a private slot of `pool`, its requests are answered, and `deliver`
    /// gets the slot (the frame at offset 0, `meta.len` bytes) to pass on or put back.
    /// Malformed requests are answered `NETIF_RSP_ERROR` and counted; a client that keeps
    /// sending them is disconnected. When the pool is empty the frames stay on their rings.
    /// Returns the number of frames taken (delivered or refused).
    pub fn receive<X, E, const N: usize>(
        &mut self,
        xen: &X,
        pool: &mut GrantPool<E, N>,
        budget: usize,
        mut deliver: impl FnMut(&mut GrantPool<E, N>, VifId, Slot<Private>, FrameMeta),
    ) -> usize
    where
        X: EventChannels + GrantTables,
        E: GrantEntries,
    {
        let mut slots: [Option<Slot<Private>>; COPY_BATCH] = [const { None }; COPY_BATCH];
        let mut processed = [false; MAX_VIFS];
        let mut done = 0;
        let start = self.rr_data;
        self.rr_data = (start + 1) % MAX_VIFS;
        'vifs: for k in 0..MAX_VIFS {
            let i = (start + k) % MAX_VIFS;
            if !self.vifs[i].connected() || !self.vifs[i].kicked {
                continue;
            }
            self.vifs[i].kicked = false;
            processed[i] = true;
            let mut burst = 0;
            loop {
                if done >= budget || burst >= VIF_BURST {
                    self.vifs[i].kicked = true;
                    break;
                }
                match self.gather_frame(i) {
                    Gathered::Frame => {}
                    Gathered::Empty | Gathered::Fault => break,
                }
                let need = self.vifs[i].gather.data_slots;
                if self.batch.nframes == COPY_BATCH || self.batch.ncopies + need > COPY_BATCH {
                    self.flush(xen, pool, &mut slots, &mut deliver);
                }
                if !self.queue_frame(i, pool, &mut slots) {
                    // No free slot: the frame waits in the gather buffer for the next pass.
                    self.stats.pool_exhausted += 1;
                    self.vifs[i].kicked = true;
                    break 'vifs;
                }
                burst += 1;
                done += 1;
            }
        }
        self.flush(xen, pool, &mut slots, &mut deliver);
        self.publish_tx(xen, &processed);
        done
    }

    /// Consumes requests of vif `i` until its gather buffer holds a whole frame.
    fn gather_frame(&mut self, i: usize) -> Gathered {
        let v = &mut self.vifs[i];
        let Some(link) = v.link.as_mut() else { return Gathered::Empty };
        loop {
            if v.gather.complete() {
                return Gathered::Frame;
            }
            match link.tx.take_request() {
                Some((_, req)) => v.gather.push(req),
                None => match link.tx.poll_requests() {
                    Ok(0) => return Gathered::Empty,
                    Ok(_) => {}
                    Err(fault) => {
                        self.stats.ring_faults += 1;
                        log::warn!(
                            "netback: vif {}/{}: TX ring fault {:?}; disconnecting",
                            v.info.domid,
                            v.info.devid,
                            fault
                        );
                        v.fault = true;
                        return Gathered::Fault;
                    }
                },
            }
        }
    }

    /// Validates the gathered frame of vif `i` and queues its copies (or its error
    /// answers). False if it needs a pool slot and none is free.
    fn queue_frame<E: GrantEntries, const N: usize>(
        &mut self,
        i: usize,
        pool: &mut GrantPool<E, N>,
        slots: &mut [Option<Slot<Private>>; COPY_BATCH],
    ) -> bool {
        let v = &mut self.vifs[i];
        let g = &v.gather;
        let n = g.len;
        let why = if g.over_limit() { Some("too many slots") } else { malformed(&g.slots[..n], |j| g.is_extra(j)) };
        let first = g.slots[0];
        let mut frame = BatchFrame {
            vif: i as u16,
            first_copy: self.batch.ncopies as u8,
            copies: 0,
            slots: n as u8,
            ids: [0; MAX_FRAME_SLOTS],
            null_mask: g.extra_mask,
            malformed: why.is_some(),
            meta: FrameMeta {
                len: first.size,
                csum_blank: first.flags & txf::CSUM_BLANK != 0,
                data_validated: first.flags & txf::DATA_VALIDATED != 0,
            },
        };
        for (j, s) in g.slots[..n].iter().enumerate() {
            frame.ids[j] = s.id;
        }
        let slot_index = self.batch.nframes;
        if let Some(why) = why {
            v.counters.malformed += 1;
            self.stats.malformed += 1;
            v.abuse += 1;
            if v.counters.malformed == 1 {
                log::warn!(
                    "netback: vif {}/{}: malformed frame ({why}); answered with errors",
                    v.info.domid,
                    v.info.devid
                );
            }
        } else {
            let Some(slot) = pool.take() else { return false };
            let fe = v.info.domid;
            let follow: u32 = (1..n).filter(|&j| !g.is_extra(j)).map(|j| u32::from(g.slots[j].size)).sum();
            let mut at = 0u16;
            for (j, s) in g.slots[..n].iter().enumerate().filter(|(j, _)| !g.is_extra(*j)) {
                let len = if j == 0 { (u32::from(s.size) - follow) as u16 } else { s.size };
                if len == 0 {
                    continue;
                }
                let src = GnttabCopyPtr::gref(fe, GrantRef(s.gref.0), s.offset);
                let dst = GnttabCopyPtr::local(Gfn(slot.gfn()), at);
                self.batch.copies[self.batch.ncopies] = GnttabCopy::new(src, true, dst, false, len);
                self.batch.ncopies += 1;
                frame.copies += 1;
                at += len;
            }
            v.res.in_flight_copies += u32::from(frame.copies);
            slots[slot_index] = Some(slot);
        }
        v.gather.clear();
        self.batch.frames[slot_index] = frame;
        self.batch.nframes += 1;
        true
    }

    /// Runs the batch's copies, answers every queued frame's slots in order, and delivers
    /// the good frames.
    fn flush<X, E, const N: usize>(
        &mut self,
        xen: &X,
        pool: &mut GrantPool<E, N>,
        slots: &mut [Option<Slot<Private>>; COPY_BATCH],
        deliver: &mut impl FnMut(&mut GrantPool<E, N>, VifId, Slot<Private>, FrameMeta),
    ) where
        X: EventChannels + GrantTables,
        E: GrantEntries,
    {
        let ncopies = self.batch.ncopies;
        if ncopies > 0 {
            self.stats.copy_batches += 1;
            if xen.copy(&mut self.batch.copies[..ncopies]).is_err() {
                for c in &mut self.batch.copies[..ncopies] {
                    c.status = GrantStatus::GENERAL_ERROR.0;
                }
            }
        }
        for (f, slot) in slots.iter_mut().enumerate().take(self.batch.nframes) {
            let frame = self.batch.frames[f];
            let copies = &self.batch.copies[usize::from(frame.first_copy)..][..usize::from(frame.copies)];
            let copied = copies.iter().all(|c| c.status().is_ok());
            let peer_gone = copies.iter().any(|c| c.status() == GrantStatus::BAD_DOMAIN);
            let ok = !frame.malformed && copied;
            let i = usize::from(frame.vif);
            let id = VifId { index: frame.vif, generation: self.vifs[i].generation };
            let v = &mut self.vifs[i];
            v.res.in_flight_copies -= u32::from(frame.copies);
            if let Some(link) = v.link.as_mut() {
                let status = if ok { rsp::OKAY } else { rsp::ERROR };
                for j in 0..usize::from(frame.slots) {
                    let status = if frame.null_mask & (1 << j) != 0 { rsp::NULL } else { status };
                    link.tx.push_response(&TxResponse { id: frame.ids[j], status });
                }
                v.tx_dirty = true;
            }
            match slot.take() {
                Some(slot) if ok => {
                    v.counters.rx_frames += 1;
                    v.counters.rx_bytes += u64::from(frame.meta.len);
                    self.stats.rx_frames += 1;
                    deliver(pool, id, slot, frame.meta);
                }
                Some(slot) => {
                    pool.put_back(slot);
                    v.counters.copy_errors += 1;
                    self.stats.copy_errors += 1;
                    v.abuse += 1;
                    if peer_gone {
                        v.reread_front = true; // its domain may be gone: the control side checks
                    }
                }
                None => {}
            }
            if v.abuse >= ABUSE_LIMIT && !v.fault && v.phase == Phase::Connected {
                v.fault = true;
                self.stats.abuse_disconnects += 1;
                log::warn!(
                    "netback: vif {}/{}: {} malformed frames or failed copies; disconnecting",
                    v.info.domid,
                    v.info.devid,
                    v.abuse
                );
            }
        }
        self.batch.nframes = 0;
        self.batch.ncopies = 0;
    }

    /// Publishes TX responses (notifying only frontends that asked) and re-arms `req_event`
    /// on rings that were drained.
    fn publish_tx<X: EventChannels>(&mut self, xen: &X, processed: &[bool; MAX_VIFS]) {
        for (i, v) in self.vifs.iter_mut().enumerate() {
            let Some(link) = v.link.as_mut() else { continue };
            if core::mem::take(&mut v.tx_dirty) && link.tx.publish() {
                self.stats.notifies += 1;
                let _ = xen.send(link.port);
            }
            if processed[i] && !v.kicked && !v.fault {
                match link.tx.final_check_for_requests() {
                    Ok(more) => v.kicked = more,
                    Err(_) => {
                        self.stats.ring_faults += 1;
                        v.fault = true;
                    }
                }
            }
        }
    }
}
