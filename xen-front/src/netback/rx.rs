//! Frames to clients: each is grant-copied into a page the client posted on its RX ring and
//! answered in the ring slot of the request it used. A client that posted nothing loses the
//! frame (counted): nothing waits for one client.

use grant_pool::{PAGE_SIZE, Private, Slot};

use crate::netif::{RxResponse, rsp, rxf};
use crate::platform::{EventChannels, Gfn, GnttabCopy, GnttabCopyPtr, GrantStatus, GrantTables};

use super::tx::FrameMeta;
use super::{COPY_BATCH, Netback, VifId};

/// Why a frame for a client was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxDrop {
    /// The vif is not connected (or the id is stale).
    NotConnected,
    /// The client has posted no RX buffer.
    NoBuffer,
    /// Empty, or longer than one page.
    BadLength,
    /// The frame has a blank checksum and the client wrote `feature-no-csum-offload`: the
    /// caller must complete the checksum first.
    ChecksumRequired,
    /// The copy into the client's page failed (bad grant, client gone); the request was
    /// answered with an error.
    CopyFailed,
}

/// A frame for a client: the first `len` bytes of a private slot.
#[derive(Debug)]
pub struct OutFrame<'a> {
    /// The destination.
    pub vif: VifId,
    /// The frame, at offset 0.
    pub slot: &'a Slot<Private>,
    /// Its length.
    pub len: usize,
    /// Checksum state carried from where it came from (`len` is ignored here).
    pub meta: FrameMeta,
}

/// One queued copy to a client.
#[derive(Clone, Copy, Debug, Default)]
struct Pending {
    frame: usize,
    vif: usize,
    id: u16,
    len: u16,
    flags: u16,
}

impl Netback {
    /// Sends one frame to a client (one copy hypercall; prefer
    /// [`transmit_many`](Self::transmit_many) for a pass's worth).
    pub fn transmit<X: EventChannels + GrantTables>(
        &mut self,
        xen: &X,
        vif: VifId,
        slot: &Slot<Private>,
        len: usize,
        meta: FrameMeta,
    ) -> Result<(), TxDrop> {
        let mut result = [Err(TxDrop::NotConnected)];
        self.transmit_many(xen, &[OutFrame { vif, slot, len, meta }], &mut result);
        result[0]
    }

    /// Sends frames to clients: copies batched up to [`COPY_BATCH`] per hypercall, each RX
    /// ring published once at the end and notified only if its frontend asked. `results[k]`
    /// (if present) says what became of `frames[k]`. The slots are only read, during the
    /// call: the caller keeps them.
    pub fn transmit_many<X: EventChannels + GrantTables>(
        &mut self,
        xen: &X,
        frames: &[OutFrame<'_>],
        results: &mut [Result<(), TxDrop>],
    ) {
        let mut start = 0;
        while start < frames.len() {
            let end = (start + COPY_BATCH).min(frames.len());
            self.transmit_chunk(xen, start, &frames[start..end], results);
            start = end;
        }
        for v in self.vifs.iter_mut() {
            if let Some(link) = v.link.as_mut()
                && core::mem::take(&mut v.rx_dirty)
                && link.rx.publish()
            {
                self.stats.notifies += 1;
                let _ = xen.send(link.port);
            }
        }
    }

    fn transmit_chunk<X: EventChannels + GrantTables>(
        &mut self,
        xen: &X,
        base: usize,
        frames: &[OutFrame<'_>],
        results: &mut [Result<(), TxDrop>],
    ) {
        const NO_COPY: GnttabCopy = GnttabCopy {
            source: GnttabCopyPtr { u: 0, domid: 0, offset: 0 },
            dest: GnttabCopyPtr { u: 0, domid: 0, offset: 0 },
            len: 0,
            flags: 0,
            status: 0,
        };
        let mut ops = [NO_COPY; COPY_BATCH];
        let mut pending = [Pending::default(); COPY_BATCH];
        let mut n = 0;
        for (k, f) in frames.iter().enumerate() {
            let r = self.reserve(f).map(|(vif, id, flags)| {
                let fe = self.vifs[vif].info.domid;
                let src = GnttabCopyPtr::local(Gfn(f.slot.gfn()), 0);
                let dst = GnttabCopyPtr::gref(fe, id.1, 0);
                ops[n] = GnttabCopy::new(src, false, dst, true, f.len as u16);
                pending[n] = Pending { frame: k, vif, id: id.0, len: f.len as u16, flags };
                self.vifs[vif].res.in_flight_copies += 1;
                n += 1;
            });
            if let Err(drop) = r {
                if drop == TxDrop::NoBuffer {
                    self.stats.tx_no_buffer += 1;
                } else {
                    self.stats.tx_other_drops += 1;
                }
                if let Some(slot) = results.get_mut(base + k) {
                    *slot = Err(drop);
                }
            }
        }
        if n > 0 {
            self.stats.copy_batches += 1;
            if xen.copy(&mut ops[..n]).is_err() {
                for op in &mut ops[..n] {
                    op.status = GrantStatus::GENERAL_ERROR.0;
                }
            }
        }
        for (op, p) in ops[..n].iter().zip(&pending[..n]) {
            let v = &mut self.vifs[p.vif];
            v.res.in_flight_copies -= 1;
            let ok = op.status().is_ok();
            let rsp = if ok {
                v.counters.tx_frames += 1;
                v.counters.tx_bytes += u64::from(p.len);
                self.stats.tx_frames += 1;
                RxResponse { id: p.id, offset: 0, flags: p.flags, status: p.len as i16 }
            } else {
                v.counters.rx_copy_errors += 1;
                self.stats.tx_other_drops += 1;
                if op.status() == GrantStatus::BAD_DOMAIN {
                    v.reread_front = true;
                }
                RxResponse { id: p.id, offset: 0, flags: 0, status: rsp::ERROR }
            };
            if let Some(link) = v.link.as_mut() {
                link.rx.push_response(&rsp);
                v.rx_dirty = true;
            }
            if let Some(slot) = results.get_mut(base + p.frame) {
                *slot = if ok { Ok(()) } else { Err(TxDrop::CopyFailed) };
            }
        }
    }

    /// Checks a frame and consumes one RX request of its vif: `(vif slot, (request id,
    /// grant), response flags)`.
    fn reserve(&mut self, f: &OutFrame<'_>) -> Result<(usize, (u16, crate::platform::GrantRef), u16), TxDrop> {
        let i = self.live(f.vif).ok_or(TxDrop::NotConnected)?;
        if f.len == 0 || f.len > PAGE_SIZE {
            return Err(TxDrop::BadLength);
        }
        let v = &mut self.vifs[i];
        if f.meta.csum_blank && !v.info.csum_offload {
            return Err(TxDrop::ChecksumRequired);
        }
        let link = v.link.as_mut().ok_or(TxDrop::NotConnected)?;
        match link.rx.poll_requests() {
            Ok(0) => {
                v.counters.no_rx_buffer += 1;
                return Err(TxDrop::NoBuffer);
            }
            Ok(_) => {}
            Err(fault) => {
                self.stats.ring_faults += 1;
                log::warn!("netback: vif {}/{}: RX ring fault {:?}; disconnecting", v.info.domid, v.info.devid, fault);
                v.fault = true;
                return Err(TxDrop::NotConnected);
            }
        }
        let (_, req) = link.rx.take_request().ok_or(TxDrop::NoBuffer)?;
        let mut flags = 0;
        if f.meta.csum_blank {
            flags |= rxf::CSUM_BLANK | rxf::DATA_VALIDATED;
        } else if f.meta.data_validated {
            flags |= rxf::DATA_VALIDATED;
        }
        Ok((i, (req.id, req.gref), flags))
    }
}
