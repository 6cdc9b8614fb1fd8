//! The backend's data path: TX as Linux's `xenvif_tx_build_gops` and `make_tx_response`, RX
//! as `xenvif_rx_action`, both with grant copies into and out of the backend's own pages, and
//! the ring faults.

use grant_pool::PAGE_SIZE;
use xen_front::platform::{EventChannels, GnttabCopy, GnttabCopyPtr, GrantRef, GrantTables};

use super::wire::{
    ETH_HLEN, ExtraInfo, FATAL_SKB_SLOTS, LEGACY_SLOTS_MAX, RING_SIZE, RxRequest, RxResponse, TxRequest, extra, rsp,
    rxf, txf, write_tx_response, write_tx_status,
};
use super::{Connection, Held, Ring, SentFrame, SimDomainMaps, SimNetback};

/// Slots an RX frame of `len` bytes needs (one per started page).
fn rx_slots_for(len: usize) -> usize {
    len.div_ceil(PAGE_SIZE).max(1)
}

/// Takes one use of a counted fault.
fn take(count: &mut u32) -> bool {
    if *count == 0 {
        return false;
    }
    *count -= 1;
    true
}

impl SimNetback {
    /// One pass over both rings.
    pub(super) fn data_step(&mut self) {
        let Some(mut conn) = self.conn.take() else { return };
        if self.backend.take_pending(conn.port) {
            self.counters.events_received += 1;
            conn.tx_more = true;
            conn.rx_kick = true;
        }
        if !self.config.event_driven {
            conn.tx_more = true;
            conn.rx_kick = true;
        }
        if !conn.features.rx_notify {
            conn.rx_kick = true; // Linux polls RX with its drain timer
        }
        if !self.faults.never_consume {
            if conn.tx_more {
                self.tx_action(&mut conn);
            }
            if !self.disabled {
                self.rx_action(&mut conn);
            }
        }
        self.conn = Some(conn);
    }

    /// Notifies the frontend.
    fn notify(&mut self, conn: &Connection) {
        if self.backend.send(conn.port).is_ok() {
            self.counters.notifications_sent += 1;
        }
    }

    /// Publishes `ring`'s responses and notifies if the frontend's event index asks for it.
    fn push(&mut self, conn: &mut Connection, ring: Ring) {
        let notify = match ring {
            Ring::Tx => conn.tx.push_responses(),
            Ring::Rx => conn.rx.push_responses(),
        };
        if notify {
            self.notify(conn);
        }
    }

    /// `xenvif_fatal_tx_err`: the interface is disabled; nothing more is consumed or
    /// answered (the xenbus state stays Connected).
    fn fatal_tx(&mut self, reason: String) {
        self.disabled = true;
        self.counters.fatal_errors += 1;
        self.fatal_reason = Some(reason);
    }

    /// An id the frontend has not used so far.
    fn unposted_id(&self) -> u16 {
        (0..=u16::MAX).rev().find(|i| !self.tx_ids_seen.contains(i)).unwrap_or(u16::MAX)
    }

    /// `make_tx_response`: `{id, status}` for a data slot, then `RSP_NULL` for each of its
    /// `extra_count` extra-info slots (their `id` untouched), with the armed TX faults.
    fn tx_response(&mut self, conn: &mut Connection, id: u16, extra_count: u32, status: i16) {
        let (mut id, mut status) = (id, status);
        if take(&mut self.faults.tx_unknown_id) {
            id = self.unposted_id();
            self.counters.faults_applied += 1;
        }
        if let Some((s, n)) = self.faults.tx_status.as_mut()
            && take(n)
        {
            status = *s;
            self.counters.faults_applied += 1;
        }
        let ring = &mut conn.tx;
        let i = ring.rsp_prod_pvt;
        write_tx_response(ring.page, ring.slot(i), id, status);
        for k in 1..=extra_count {
            write_tx_status(ring.page, ring.slot(i.wrapping_add(k)), rsp::NULL);
        }
        self.counters.tx_rsp_null += u64::from(extra_count);
        ring.rsp_prod_pvt = i.wrapping_add(1 + extra_count);
        if take(&mut self.faults.tx_duplicate) {
            let j = ring.rsp_prod_pvt;
            write_tx_response(ring.page, ring.slot(j), id, status);
            ring.rsp_prod_pvt = j.wrapping_add(1);
            self.counters.faults_applied += 1;
        }
    }

    /// `xenvif_tx_err`: `ERROR` for the first slot (`RSP_NULL` for its extras) and for every
    /// follow-on slot consumed.
    fn tx_err(&mut self, conn: &mut Connection, first_id: u16, extra_count: u32, follow: &[TxRequest]) {
        self.counters.tx_malformed += 1;
        self.tx_response(conn, first_id, extra_count, rsp::ERROR);
        for t in follow {
            self.tx_response(conn, t.id, 0, rsp::ERROR);
        }
    }

    /// Consumes and answers TX requests until none are left or a fatal error.
    fn tx_action(&mut self, conn: &mut Connection) {
        let mut answered = false;
        let fe = self.frontend;
        'packets: loop {
            let prod = conn.tx.req_prod();
            if prod.wrapping_sub(conn.tx.req_cons) > RING_SIZE {
                self.fatal_tx(format!("impossible number of requests: req_prod {prod}, req_cons {}", conn.tx.req_cons));
                break;
            }
            let mut work = conn.tx.unconsumed();
            if work == 0 {
                break;
            }
            let page = conn.tx.page;
            let mut first = TxRequest::read(page, conn.tx.slot(conn.tx.req_cons));
            conn.tx.req_cons = conn.tx.req_cons.wrapping_add(1);
            work -= 1;
            self.counters.tx_slots += 1;
            self.tx_ids_seen.insert(first.id);

            // xenvif_get_extras
            let mut extras: [Option<ExtraInfo>; extra::TYPE_MAX as usize] = [None; extra::TYPE_MAX as usize];
            let mut extra_count = 0u32;
            if first.flags & txf::EXTRA_INFO != 0 {
                loop {
                    if work == 0 {
                        self.fatal_tx("missing extra info".into());
                        break 'packets;
                    }
                    let e = ExtraInfo::read(page, conn.tx.slot(conn.tx.req_cons));
                    conn.tx.req_cons = conn.tx.req_cons.wrapping_add(1);
                    work -= 1;
                    extra_count += 1;
                    self.counters.tx_slots += 1;
                    if e.kind == 0 || e.kind >= extra::TYPE_MAX {
                        self.fatal_tx(format!("invalid extra type: {}", e.kind));
                        break 'packets;
                    }
                    extras[e.kind as usize] = Some(e);
                    if e.flags & extra::FLAG_MORE == 0 {
                        break;
                    }
                }
            }
            if extras[extra::TYPE_MCAST_ADD as usize].is_some() || extras[extra::TYPE_MCAST_DEL as usize].is_some() {
                self.counters.tx_mcast += 1;
                self.tx_response(conn, first.id, extra_count, rsp::OKAY);
                answered = true;
                continue;
            }

            // xenvif_count_requests: follow-on slots, and the first fragment's real size.
            let mut follow: Vec<TxRequest> = Vec::new();
            let mut drop = false;
            if first.flags & txf::MORE_DATA != 0 {
                loop {
                    let slots = follow.len();
                    if slots as u32 >= work {
                        self.fatal_tx(format!("asked for {} slots but exceeds this limit", slots + 1));
                        break 'packets;
                    }
                    if slots >= FATAL_SKB_SLOTS {
                        self.fatal_tx(format!("malicious frontend using {slots} slots"));
                        break 'packets;
                    }
                    if slots >= LEGACY_SLOTS_MAX {
                        drop = true;
                    }
                    let txp = TxRequest::read(page, conn.tx.slot(conn.tx.req_cons.wrapping_add(slots as u32)));
                    if txp.size > first.size {
                        drop = true; // a frame over 64 KiB overflowed `size`: drop, not fatal
                    }
                    first.size = first.size.wrapping_sub(txp.size);
                    follow.push(txp);
                    if usize::from(txp.offset) + usize::from(txp.size) > PAGE_SIZE {
                        self.fatal_tx(format!("cross page boundary: offset {}, size {}", txp.offset, txp.size));
                        break 'packets;
                    }
                    if txp.flags & txf::MORE_DATA == 0 {
                        break;
                    }
                }
            }
            conn.tx.req_cons = conn.tx.req_cons.wrapping_add(follow.len() as u32);
            self.counters.tx_slots += follow.len() as u64;
            self.tx_ids_seen.extend(follow.iter().map(|t| t.id));
            answered = true;
            if drop || first.size < ETH_HLEN {
                self.tx_err(conn, first.id, extra_count, &follow);
                continue;
            }
            if usize::from(first.offset) + usize::from(first.size) > PAGE_SIZE {
                self.fatal_tx(format!("cross page boundary: offset {}, size {}", first.offset, first.size));
                break;
            }
            let gso = extras[extra::TYPE_GSO as usize].map(|e| e.gso());
            if let Some((size, kind)) = gso {
                if size == 0 {
                    self.fatal_tx("GSO size must not be zero".into());
                    break;
                }
                if kind != extra::GSO_TCPV4 && kind != extra::GSO_TCPV6 {
                    self.fatal_tx(format!("bad GSO type {kind}"));
                    break;
                }
            }

            // Copy every data slot into a bounce page of ours, in one batch.
            let slots = std::iter::once((first.gref, first.offset, first.size))
                .chain(follow.iter().map(|t| (t.gref, t.offset, t.size)));
            let mut ops: Vec<GnttabCopy> = slots
                .zip(&self.scratch)
                .map(|((gref, off, len), &(gfn, _))| {
                    GnttabCopy::new(
                        GnttabCopyPtr::gref(fe, GrantRef(gref), off),
                        true,
                        GnttabCopyPtr::local(gfn, 0),
                        false,
                        len,
                    )
                })
                .collect();
            let batch_ok = self.backend.copy(&mut ops).is_ok();
            self.counters.tx_copies += ops.len() as u64;
            let statuses: Vec<i16> =
                ops.iter().map(|op| if batch_ok && op.status().is_ok() { rsp::OKAY } else { rsp::ERROR }).collect();
            if statuses.iter().all(|&s| s == rsp::OKAY) {
                let mut bytes = Vec::new();
                for (op, (_, scratch)) in ops.iter().zip(&self.scratch) {
                    let mut chunk = vec![0u8; usize::from(op.len)];
                    scratch.copy_out(0, &mut chunk);
                    bytes.extend_from_slice(&chunk);
                }
                self.sent.push(SentFrame { bytes, flags: first.flags, slots: ops.len(), gso });
                self.counters.tx_frames += 1;
            } else {
                self.counters.tx_copy_errors += 1;
            }
            if take(&mut self.faults.hold_tx) {
                self.hold(first.gref);
            }
            self.tx_response(conn, first.id, extra_count, statuses[0]);
            for (t, &s) in follow.iter().zip(&statuses[1..]) {
                self.tx_response(conn, t.id, 0, s);
            }
        }
        if answered {
            self.push(conn, Ring::Tx);
        }
        conn.tx_more = !self.disabled && conn.tx.final_check_for_requests();
    }

    /// [`Fault::HoldTxMappings`](super::Fault::HoldTxMappings): maps the frontend's TX grant
    /// and keeps it.
    fn hold(&mut self, gref: u32) {
        let Some(at) = self.backend.free_window_gfn() else { return };
        if let Ok(m) = self.backend.map_grant_ref(at, self.frontend, GrantRef(gref), true) {
            self.held.push(Held { at, handle: m.handle });
            self.counters.faults_applied += 1;
        }
    }

    /// `xenvif_rx_ring_slots_available`: enough posted requests? If not, ask for an event
    /// when more arrive (`req_event = req_prod + 1`) and look again.
    fn rx_slots_available(conn: &mut Connection, needed: usize) -> bool {
        for _ in 0..4 {
            let prod = conn.rx.req_prod();
            if conn.rx.unconsumed() as usize >= needed {
                return true;
            }
            conn.rx.set_req_event(prod.wrapping_add(1));
            if conn.rx.req_prod() == prod {
                return false;
            }
        }
        false
    }

    /// Delivers queued frames (and the flood) into posted RX requests.
    fn rx_action(&mut self, conn: &mut Connection) {
        let mut answered = false;
        if let Some((frame, flags)) = self.faults.flood.clone() {
            let needed = rx_slots_for(frame.len());
            while conn.rx.unconsumed() as usize >= needed {
                self.rx_deliver(conn, &frame, flags);
                self.counters.faults_applied += 1;
                answered = true;
            }
        }
        if conn.rx_kick {
            while let Some((frame, flags)) = self.rx_queue.pop_front() {
                let needed = rx_slots_for(frame.len());
                if needed > 1 && !conn.features.sg {
                    self.counters.rx_dropped += 1;
                    continue;
                }
                if !Self::rx_slots_available(conn, needed) {
                    self.rx_queue.push_front((frame, flags));
                    break;
                }
                self.rx_deliver(conn, &frame, flags);
                answered = true;
            }
            conn.rx_kick = false; // until an event or an injection
        }
        if answered {
            self.push(conn, Ring::Rx);
        }
    }

    /// Copies `frame` into the next posted requests (one page each, from offset 0) and writes
    /// each response in its request's ring index.
    fn rx_deliver(&mut self, conn: &mut Connection, frame: &[u8], rx_flags: u16) {
        let page = conn.rx.page;
        let chunks: Vec<&[u8]> = frame.chunks(PAGE_SIZE).collect();
        let mut ops = Vec::with_capacity(chunks.len());
        let mut reqs = Vec::with_capacity(chunks.len());
        for (i, (chunk, &(gfn, scratch))) in chunks.iter().zip(&self.scratch).enumerate() {
            let req = RxRequest::read(page, conn.rx.slot(conn.rx.req_cons.wrapping_add(i as u32)));
            scratch.copy_in(0, chunk);
            let dest = GnttabCopyPtr::gref(self.frontend, GrantRef(req.gref), 0);
            ops.push(GnttabCopy::new(GnttabCopyPtr::local(gfn, 0), false, dest, true, chunk.len() as u16));
            reqs.push(req);
        }
        let batch_ok = self.backend.copy(&mut ops).is_ok();
        self.counters.rx_copies += ops.len() as u64;
        let n = ops.len();
        for (i, (op, req)) in ops.iter().zip(&reqs).enumerate() {
            let mut status = if batch_ok && op.status().is_ok() {
                op.len as i16
            } else {
                self.counters.rx_copy_errors += 1;
                if batch_ok { op.status } else { rsp::ERROR }
            };
            let mut flags = if i == 0 { rx_flags } else { 0 };
            if i + 1 < n {
                flags |= rxf::MORE_DATA;
            }
            let (mut id, mut offset) = (req.id, 0u16);
            if i == 0 {
                if take(&mut self.faults.rx_unknown_id) {
                    id = req.id.wrapping_add(0x5a5a);
                    self.counters.faults_applied += 1;
                }
                if let Some((s, count)) = self.faults.rx_status.as_mut()
                    && take(count)
                {
                    status = *s;
                    self.counters.faults_applied += 1;
                }
                if take(&mut self.faults.rx_bad_offset) {
                    offset = if status > 0 { (PAGE_SIZE - (status as usize).div_ceil(2)) as u16 } else { 4095 };
                    self.counters.faults_applied += 1;
                }
            }
            let idx = conn.rx.req_cons.wrapping_add(i as u32);
            RxResponse { id, offset, flags, status }.write(page, conn.rx.slot(idx));
        }
        conn.rx.req_cons = conn.rx.req_cons.wrapping_add(n as u32);
        // Linux sets rsp_prod_pvt = req_cons; never backwards past hostile extra responses.
        if (conn.rx.req_cons.wrapping_sub(conn.rx.rsp_prod_pvt) as i32) > 0 {
            conn.rx.rsp_prod_pvt = conn.rx.req_cons;
        }
        self.counters.rx_frames += 1;
        self.counters.rx_slots += n as u64;
    }

    /// [`Fault::ProducerJump`](super::Fault::ProducerJump).
    pub(super) fn producer_jump(&mut self, ring: Ring, by: u32) -> bool {
        let Some(mut conn) = self.conn.take() else { return false };
        let r = match ring {
            Ring::Tx => &mut conn.tx,
            Ring::Rx => &mut conn.rx,
        };
        r.force_rsp_prod(r.rsp_prod_pvt.wrapping_add(by));
        self.notify(&conn);
        self.counters.faults_applied += 1;
        self.conn = Some(conn);
        true
    }

    /// [`Fault::UnsolicitedResponses`](super::Fault::UnsolicitedResponses).
    pub(super) fn unsolicited(&mut self, ring: Ring, count: u32) -> bool {
        let Some(mut conn) = self.conn.take() else { return false };
        for _ in 0..count {
            match ring {
                Ring::Tx => {
                    let r = &mut conn.tx;
                    write_tx_response(r.page, r.slot(r.rsp_prod_pvt), 0xdead, rsp::OKAY);
                    r.rsp_prod_pvt = r.rsp_prod_pvt.wrapping_add(1);
                }
                Ring::Rx => {
                    let r = &mut conn.rx;
                    RxResponse { id: 0xdead, offset: 0, flags: 0, status: 64 }.write(r.page, r.slot(r.rsp_prod_pvt));
                    r.rsp_prod_pvt = r.rsp_prod_pvt.wrapping_add(1);
                }
            }
        }
        match ring {
            Ring::Tx => conn.tx.push_responses(),
            Ring::Rx => conn.rx.push_responses(),
        };
        self.notify(&conn);
        self.counters.faults_applied += 1;
        self.conn = Some(conn);
        true
    }
}
