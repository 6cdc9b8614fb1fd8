//! The data path: frames between the client netback and the uplink netfront, through the
//! firewall engine, in grant-pool slots.
//!
//! One pass ([`Datapath::pass`]):
//!
//! 1. **Uplink → clients.** Each frame `sys-net` wrote into one of our RX slots (revoked
//!    first: private again) is kept (a fresh slot is posted in its place) and goes through the
//!    [`pipeline`]. Frames for clients wait in the outbox.
//! 2. The outbox is flushed: frames for clients are grant-copied into pages they posted (one
//!    batch, [`Netback::transmit_many`]); a client without a posted buffer loses the frame
//!    (counted): nothing waits for one client.
//! 3. **Clients → uplink.** Frames clients sent are grant-copied from their pages into our
//!    slots ([`Netback::receive`], round-robin across clients), then through the pipeline;
//!    frames for the uplink are lent read-only to `sys-net` from the slot they are in. The
//!    netback takes no more frames than the uplink has free TX slots: a busy uplink leaves
//!    frames on the clients' own rings (back-pressure), never in a queue of ours.
//! 4. The outbox is flushed again; rings are notified once each.
//!
//! Every forwarded payload byte is copied exactly once (by a grant copy: into our slot from a
//! client, or from our slot to a client); [`DatapathCounters`] counts the bytes of forwarded
//! frames delivered and the bytes copied for them, so a test (and a user) can check the ratio.

pub mod pipeline;

use firewall::conntrack::ClientId;
use firewall::forward::{ChecksumState, Egress, Firewall};
use grant_pool::{GrantEntries, GrantPool, Private, Slot};
use xen_front::netback::{FrameMeta, MAX_VIFS, Netback, OutFrame, TxDrop, VifId, VifInfo};
use xen_front::netfront::{Netfront, RxVerdict};
use xen_front::netif::ChecksumOffload;
use xen_front::platform::{EventChannels, GrantTables};

use crate::downlink::{ClientLink, Downlink};
use crate::uplink::UplinkHost;
pub use pipeline::{Links, Pipeline, PipelineCounters, checksum_state, client_id, offload_flags};

/// Frames taken from the uplink per pass.
pub const UPLINK_BUDGET: usize = 64;
/// Frames taken from clients per pass (all clients together).
pub const CLIENT_BUDGET: usize = 64;
/// Frames waiting to leave within one pass, at most (a pass's frames, their replies and
/// fragments).
pub const OUTBOX: usize = 192;

/// A grant-pool slot as the pipeline's buffer.
pub struct PoolBuf(pub Slot<Private>);

impl AsRef<[u8]> for PoolBuf {
    fn as_ref(&self) -> &[u8] {
        self.0.bytes()
    }
}

impl AsMut<[u8]> for PoolBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        self.0.bytes_mut()
    }
}

/// A frame waiting to leave.
struct Outgoing {
    to: Egress,
    slot: Slot<Private>,
    len: u16,
    csum: ChecksumState,
    /// A forwarded frame (not a reply or a link answer).
    forwarded: bool,
    /// Bytes already copied for it (the grant copy in from a client).
    copied: u16,
}

/// Counters of the data path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatapathCounters {
    /// Bytes of forwarded frames that left (to the uplink or into a client's page).
    pub forwarded_bytes: u64,
    /// Bytes copied for those frames (grant copies in and out, and the pipeline's own).
    pub forwarded_copied_bytes: u64,
    /// Frames for clients dropped: the client posted no RX buffer.
    pub client_no_buffer: u64,
    /// Frames for clients dropped: the vif is gone.
    pub client_gone: u64,
    /// Frames for clients dropped: the copy into the client's page failed.
    pub client_copy_failed: u64,
    /// Frames for clients dropped: other reasons (length, checksum required).
    pub client_other: u64,
    /// Frames for the uplink refused at the ring (down, full).
    pub uplink_refused: u64,
    /// Frames dropped because the outbox was full.
    pub outbox_full: u64,
    /// Uplink frames not processed: no free slot to post in their place.
    pub uplink_no_slot: u64,
    /// Frames from a vif that has no firewall client (no IPv4 address).
    pub unknown_vif: u64,
}

/// The data path's state: the pipeline, which vif each firewall client is, the outbox.
pub struct Datapath {
    /// The per-frame pipeline.
    pub pipeline: Pipeline,
    vifs: [Option<VifId>; MAX_VIFS],
    links: [ClientLink; MAX_VIFS],
    outbox: heapless::Vec<Outgoing, OUTBOX>,
    /// What happened.
    pub counters: DatapathCounters,
}

impl Default for Datapath {
    fn default() -> Self {
        Self::new()
    }
}

/// What one pass works with.
pub struct PassIo<'a, X, E: GrantEntries, const P: usize, const N: usize, const B: usize, const C: usize> {
    /// The hypervisor.
    pub xen: &'a X,
    /// The grant pool.
    pub pool: &'a mut GrantPool<E, P>,
    /// The uplink.
    pub uplink: &'a mut Netfront,
    /// Our presence on the uplink.
    pub host: &'a mut UplinkHost,
    /// The clients.
    pub netback: &'a mut Netback,
    /// Our side of the client links.
    pub down: &'a mut Downlink,
    /// The firewall engine.
    pub fw: &'a mut Firewall<N, B, C>,
}

impl Datapath {
    /// An idle data path (`const`: put it in a static).
    pub const fn new() -> Self {
        Datapath {
            pipeline: Pipeline::new(),
            vifs: [None; MAX_VIFS],
            links: [ClientLink { ip: None }; MAX_VIFS],
            outbox: heapless::Vec::new(),
            counters: DatapathCounters {
                forwarded_bytes: 0,
                forwarded_copied_bytes: 0,
                client_no_buffer: 0,
                client_gone: 0,
                client_copy_failed: 0,
                client_other: 0,
                uplink_refused: 0,
                outbox_full: 0,
                uplink_no_slot: 0,
                unknown_vif: 0,
            },
        }
    }

    /// A client link came up: remember it (and which firewall client it is). Returns its
    /// firewall id; the caller adds it to the engine and commits its rules.
    pub fn link_up(&mut self, vif: VifId, info: &VifInfo) -> Option<ClientId> {
        let id = client_id(vif.index)?;
        let i = usize::from(vif.index);
        self.vifs[i] = Some(vif);
        self.links[i] = ClientLink { ip: info.ipv4 };
        Some(id)
    }

    /// A client link went down: forget it. Returns the firewall id it had.
    pub fn link_down(&mut self, vif: VifId) -> Option<ClientId> {
        let i = usize::from(vif.index);
        if self.vifs.get(i).copied().flatten() != Some(vif) {
            return None;
        }
        self.vifs[i] = None;
        self.links[i] = ClientLink { ip: None };
        client_id(vif.index)
    }

    /// One pass of the data path (see the [module docs](self)). Returns true if there may be
    /// more to do at once (a budget was used up).
    pub fn pass<X, E, const P: usize, const N: usize, const B: usize, const C: usize>(
        &mut self,
        io: PassIo<'_, X, E, P, N, B, C>,
        now: u64,
        rng: &mut impl FnMut() -> u32,
    ) -> bool
    where
        X: EventChannels + GrantTables,
        E: GrantEntries,
    {
        let PassIo { xen, pool, uplink, host, netback, down, fw } = io;
        let up = uplink.is_up();

        // 1. Uplink -> clients.
        let from_uplink = {
            let Datapath { pipeline, vifs, outbox, counters, .. } = self;
            uplink.receive(pool, UPLINK_BUDGET, |pool, slot, frame| {
                let Some(fresh) = pool.take() else {
                    counters.uplink_no_slot += 1;
                    return RxVerdict::Recycle;
                };
                let kept = core::mem::replace(slot, fresh);
                // sys-net's netback copied it in: no copy of ours so far.
                let mut links = XenLinks { pool, outbox, vifs, counters, uplink_up: up, ingress_copied: 0 };
                let (offset, len) = (usize::from(frame.offset), usize::from(frame.len));
                pipeline.uplink_frame(fw, host, &mut links, PoolBuf(kept), offset, len, frame.csum, now, rng);
                RxVerdict::Recycle
            })
        };
        self.flush(xen, pool, uplink, netback);

        // 2. Clients -> uplink, no more than the uplink can take now.
        let (_, tx_in_flight) = uplink.in_flight();
        let room = xen_front::netfront::TX_SLOTS.saturating_sub(tx_in_flight).saturating_sub(self.outbox.len());
        let budget = CLIENT_BUDGET.min(room);
        let from_clients = if budget == 0 {
            0
        } else {
            let Datapath { pipeline, vifs, links: client_links, outbox, counters } = self;
            netback.receive(xen, pool, budget, |pool, vif, slot, meta: FrameMeta| {
                let i = usize::from(vif.index);
                let Some(id) = client_id(vif.index).filter(|_| vifs.get(i).copied().flatten() == Some(vif)) else {
                    counters.unknown_vif += 1;
                    pool.put_back(slot);
                    return;
                };
                let client = client_links[i];
                let csum = checksum_state(ChecksumOffload { blank: meta.csum_blank, validated: meta.data_validated });
                // The netback's grant copy brought it into our slot.
                let mut links = XenLinks { pool, outbox, vifs, counters, uplink_up: up, ingress_copied: meta.len };
                pipeline.client_frame(
                    fw,
                    down,
                    &mut links,
                    id,
                    &client,
                    PoolBuf(slot),
                    usize::from(meta.len),
                    csum,
                    now,
                    rng,
                );
            })
        };
        self.flush(xen, pool, uplink, netback);
        uplink.reap_tx(pool);
        uplink.flush(xen);
        from_uplink >= UPLINK_BUDGET || from_clients >= budget.max(1)
    }

    /// Sends what the pass queued: uplink frames lent to `sys-net`, client frames copied in
    /// one batch; every slot not lent goes back to the pool.
    fn flush<X, E, const P: usize>(
        &mut self,
        xen: &X,
        pool: &mut GrantPool<E, P>,
        uplink: &mut Netfront,
        netback: &mut Netback,
    ) where
        X: EventChannels + GrantTables,
        E: GrantEntries,
    {
        if self.outbox.is_empty() {
            return;
        }
        let mut to_clients: heapless::Vec<Outgoing, OUTBOX> = heapless::Vec::new();
        for o in core::mem::take(&mut self.outbox) {
            match o.to {
                Egress::Uplink => {
                    let flags = offload_flags(o.csum);
                    match uplink.transmit(pool, o.slot, 0, o.len, flags) {
                        Ok(()) => {
                            if o.forwarded {
                                self.counters.forwarded_bytes += u64::from(o.len);
                                self.counters.forwarded_copied_bytes += u64::from(o.copied);
                            }
                        }
                        Err(slot) => {
                            self.counters.uplink_refused += 1;
                            pool.put_back(slot);
                        }
                    }
                }
                Egress::Client(_) => {
                    // Cannot fail: both vectors have the same capacity.
                    let _ = to_clients.push(o);
                }
            }
        }
        if to_clients.is_empty() {
            return;
        }
        let mut results = [Ok(()); OUTBOX];
        {
            let mut frames: heapless::Vec<OutFrame<'_>, OUTBOX> = heapless::Vec::new();
            for o in &to_clients {
                let Egress::Client(id) = o.to else { continue };
                // An id without a vif (gone since) gets an id no vif has: the netback drops it.
                let vif = self
                    .vifs
                    .get(usize::from(id.get()))
                    .copied()
                    .flatten()
                    .unwrap_or(VifId { index: u16::MAX, generation: 0 });
                let flags = offload_flags(o.csum);
                let meta = FrameMeta { len: o.len, csum_blank: flags.blank, data_validated: flags.validated };
                let _ = frames.push(OutFrame { vif, slot: &o.slot, len: usize::from(o.len), meta });
            }
            netback.transmit_many(xen, &frames, &mut results);
        }
        for (o, r) in to_clients.into_iter().zip(results) {
            match r {
                Ok(()) if o.forwarded => {
                    self.counters.forwarded_bytes += u64::from(o.len);
                    self.counters.forwarded_copied_bytes += u64::from(o.len) + u64::from(o.copied);
                }
                Ok(()) => {}
                Err(TxDrop::NoBuffer) => self.counters.client_no_buffer += 1,
                Err(TxDrop::NotConnected) => self.counters.client_gone += 1,
                Err(TxDrop::CopyFailed) => self.counters.client_copy_failed += 1,
                Err(TxDrop::BadLength | TxDrop::ChecksumRequired) => self.counters.client_other += 1,
            }
            pool.put_back(o.slot);
        }
    }

    /// Frames waiting to leave (zero between passes).
    pub fn queued(&self) -> usize {
        self.outbox.len()
    }
}

/// [`Links`] over the grant pool and the outbox.
struct XenLinks<'a, E: GrantEntries, const P: usize> {
    pool: &'a mut GrantPool<E, P>,
    outbox: &'a mut heapless::Vec<Outgoing, OUTBOX>,
    vifs: &'a [Option<VifId>; MAX_VIFS],
    counters: &'a mut DatapathCounters,
    uplink_up: bool,
    /// Bytes we grant-copied to get the frame being processed (a client's), 0 for the uplink's.
    ingress_copied: u16,
}

impl<E: GrantEntries, const P: usize> XenLinks<'_, E, P> {
    fn queue(
        &mut self,
        to: Egress,
        buf: PoolBuf,
        len: usize,
        csum: ChecksumState,
        forwarded: bool,
    ) -> Result<(), PoolBuf> {
        let Ok(len16) = u16::try_from(len) else { return Err(buf) };
        let copied = if forwarded { self.ingress_copied } else { 0 };
        let o = Outgoing { to, slot: buf.0, len: len16, csum, forwarded, copied };
        self.outbox.push(o).map_err(|o| {
            self.counters.outbox_full += 1;
            PoolBuf(o.slot)
        })
    }
}

impl<E: GrantEntries, const P: usize> Links for XenLinks<'_, E, P> {
    type Buf = PoolBuf;

    fn take(&mut self) -> Option<PoolBuf> {
        self.pool.take().map(PoolBuf)
    }

    fn put_back(&mut self, buf: PoolBuf) {
        self.pool.put_back(buf.0);
    }

    fn to_uplink(&mut self, buf: PoolBuf, len: usize, csum: ChecksumState, forwarded: bool) -> Result<(), PoolBuf> {
        if !self.uplink_up {
            return Err(buf);
        }
        self.queue(Egress::Uplink, buf, len, csum, forwarded)
    }

    fn to_client(
        &mut self,
        to: ClientId,
        buf: PoolBuf,
        len: usize,
        csum: ChecksumState,
        forwarded: bool,
    ) -> Result<(), PoolBuf> {
        if self.vifs.get(usize::from(to.get())).copied().flatten().is_none() {
            return Err(buf);
        }
        self.queue(Egress::Client(to), buf, len, csum, forwarded)
    }
}

#[cfg(test)]
mod tests;
