//! The non-blocking xenstore client: a fixed table of request slots, a stream reader for the
//! response ring, a bounded watch-event queue, and counters for everything dropped.

use super::error::Error;
use super::ring::{RingFault, StoreRing, XENSTORE_RING_SIZE};
use super::wire::{
    self, AllegedHeader, DirEntries, HEADER_LEN, HeaderFault, MESSAGE_MAX, MsgType, Perm, PermIter, Request, TxId,
};
use grant_pool::SharedPage;

/// Requests outstanding at once. xenstored's default per-domain limit is 20; staying under it
/// keeps xenstored reading our ring instead of leaving it full.
pub const MAX_IN_FLIGHT: usize = 16;
/// Watch events held until the consumer pops them; more set the "events lost" flag.
pub const EVENT_QUEUE_LEN: usize = 32;
/// Largest watch event payload (`path\0token\0`) kept; a larger one counts as lost. Our watched
/// paths and tokens are short, so this trades 4 KiB per entry for 512 B.
pub const EVENT_PAYLOAD_MAX: usize = 512;
/// Timed-out request ids remembered to tell late replies from unknown ones.
const EXPIRED_REMEMBERED: usize = 16;
/// Response bytes read per `poll`, so a peer streaming without pause cannot keep us here.
const RX_BUDGET: usize = 8 * XENSTORE_RING_SIZE;

/// Names one submitted request until its reply is taken. Ids come from a counter and are not
/// reused until it wraps, so a reply for a forgotten request is recognised as stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReqId(u32);

impl ReqId {
    /// The `req_id` sent on the wire.
    pub fn raw(self) -> u32 {
        self.0
    }
}

/// Counters of everything the client dropped, refused or noticed. They only grow (until
/// [`Client::attach`]); the appliance reports them, nothing here logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XsStats {
    /// Requests accepted by [`Client::submit`].
    pub requests: u64,
    /// Replies matched to a request (including `XS_ERROR` and malformed ones).
    pub replies: u64,
    /// Watch events queued.
    pub events: u64,
    /// Submissions refused because [`MAX_IN_FLIGHT`] requests were outstanding.
    pub refused_busy: u64,
    /// Requests that reached their deadline.
    pub timeouts: u64,
    /// Replies for a request that had already timed out.
    pub dropped_late: u64,
    /// Replies whose `req_id` matches no outstanding request (including duplicates and
    /// replies to a request not yet fully written).
    pub dropped_unknown_id: u64,
    /// Messages with a type number the protocol does not have.
    pub dropped_unknown_type: u64,
    /// Replies whose type or payload did not fit the request (completed as
    /// [`Error::MalformedReply`]).
    pub malformed_replies: u64,
    /// Watch events whose payload is not `path\0token\0`.
    pub malformed_events: u64,
    /// Watch events dropped: queue full, too large, or malformed.
    pub events_lost: u64,
    /// Fatal protocol violations (the client is then [`Broken`](ClientState::Broken)).
    pub protocol_errors: u64,
}

/// A protocol violation after which the response stream cannot be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A message header claimed a payload over 4096 bytes.
    PayloadTooLong(u32),
    /// A peer-written ring index was impossible.
    Ring(RingFault),
}

/// What the client is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// No ring yet: see [`Client::attach`].
    Detached,
    /// Exchanging messages.
    Running,
    /// Stopped by a protocol violation: pending requests failed with [`Error::Broken`], new
    /// ones are refused, the ring is no longer touched.
    Broken(Fault),
}

/// What a [`Client::poll`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use = "the peer must be notified when `notify_peer` is set"]
pub struct PollOutcome {
    /// An index was published: send on the xenstore event channel.
    pub notify_peer: bool,
    /// At least one request completed: see [`Client::take_reply`].
    pub replies_ready: bool,
    /// At least one watch event was queued: see [`Client::pop_event`].
    pub events_ready: bool,
}

/// A successful reply, borrowed from the request's slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply<'a> {
    msg_type: MsgType,
    tx: TxId,
    payload: &'a [u8],
}

impl<'a> Reply<'a> {
    /// The reply's type (the request's type: errors never become a `Reply`).
    pub fn msg_type(&self) -> MsgType {
        self.msg_type
    }

    /// The transaction id xenstored echoed.
    pub fn tx(&self) -> TxId {
        self.tx
    }

    /// The raw payload; for a READ this is the value (no trailing NUL).
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// Copies the payload into `dst`; `None` if it does not fit.
    pub fn copy_to(&self, dst: &mut [u8]) -> Option<usize> {
        let dst = dst.get_mut(..self.payload.len())?;
        dst.copy_from_slice(self.payload);
        Some(self.payload.len())
    }

    /// The child names of a DIRECTORY reply (empty for other types' NUL-free payloads).
    pub fn entries(&self) -> DirEntries<'a> {
        DirEntries::new(self.payload)
    }

    /// The permissions of a GET_PERMS reply (validated on receipt; owner first).
    pub fn perms(&self) -> impl Iterator<Item = Perm> + 'a {
        PermIter::new(self.payload).flatten()
    }

    /// The id in a TRANSACTION_START reply.
    pub fn tx_started(&self) -> Option<TxId> {
        wire::parse_tx_start(self.payload)
    }

    /// The path in a GET_DOMAIN_PATH reply, without its NUL.
    pub fn domain_path(&self) -> Option<&'a [u8]> {
        wire::parse_domain_path(self.payload)
    }
}

/// One watch event, borrowed from the event queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchEvent<'a> {
    /// The path that changed (relative if the watch was registered relative).
    pub path: &'a [u8],
    /// The token the watch was registered with.
    pub token: &'a [u8],
}

/// Result of a request that has finished, minus the payload (which stays in the slot buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ReplyMeta {
    msg_type: MsgType,
    tx_id: u32,
    len: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Free,
    /// Submitted; the request may still be partly unsent.
    Waiting,
    /// The reply body is arriving into `buf`.
    Receiving,
    /// Finished; waiting for `take_reply`.
    Done(Result<ReplyMeta, Error>),
    /// Nobody wants the result, but request bytes are still being written: the slot (and its
    /// buffer) stays busy until the stream is past them.
    Abandoned,
}

struct Slot {
    phase: Phase,
    req_id: u32,
    req_type: MsgType,
    /// Submission order, to send in FIFO order.
    seq: u64,
    deadline_ns: u64,
    /// The encoded request is `buf[..req_len]`; `buf[..req_sent]` is already in the ring.
    req_len: usize,
    req_sent: usize,
    /// Free the slot on completion instead of keeping the result.
    discard: bool,
    /// Request bytes, then (once they are all sent) the reply payload.
    buf: [u8; MESSAGE_MAX],
}

impl Slot {
    const EMPTY: Slot = Slot {
        phase: Phase::Free,
        req_id: 0,
        req_type: MsgType::Read,
        seq: 0,
        deadline_ns: 0,
        req_len: 0,
        req_sent: 0,
        discard: false,
        buf: [0; MESSAGE_MAX],
    };

    fn unsent(&self) -> bool {
        self.req_sent < self.req_len
    }

    /// Releases the slot, or parks it as `Abandoned` while its bytes still stream out.
    fn release(&mut self) {
        if self.unsent() {
            self.phase = Phase::Abandoned;
        } else {
            self.phase = Phase::Free;
            self.req_len = 0;
            self.req_sent = 0;
            self.discard = false;
        }
    }
}

struct EventSlot {
    len: usize,
    buf: [u8; EVENT_PAYLOAD_MAX],
}

impl EventSlot {
    const EMPTY: EventSlot = EventSlot { len: 0, buf: [0; EVENT_PAYLOAD_MAX] };
}

/// Where the body of the message being read goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RxTarget {
    Slot { index: usize, msg_type: MsgType, tx_id: u32 },
    Event(usize),
    Discard,
}

/// Progress through the current incoming message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rx {
    Header { got: usize, bytes: [u8; HEADER_LEN] },
    Body { len: usize, got: usize, to: RxTarget },
}

impl Rx {
    const START: Rx = Rx::Header { got: 0, bytes: [0; HEADER_LEN] };
}

/// A xenstore client driven by the caller's poll loop. See the [module docs](super).
pub struct Client {
    ring: Option<StoreRing>,
    fault: Option<Fault>,
    slots: [Slot; MAX_IN_FLIGHT],
    next_req_id: u32,
    next_seq: u64,
    rx: Rx,
    events: [EventSlot; EVENT_QUEUE_LEN],
    events_head: usize,
    events_len: usize,
    events_lost: bool,
    expired: [u32; EXPIRED_REMEMBERED],
    expired_next: usize,
    stats: XsStats,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// A detached client. `const` so it can sit in a `static` (it is about 80 KiB, too big
    /// to move around on a small stack).
    pub const fn new() -> Client {
        Client {
            ring: None,
            fault: None,
            slots: [Slot::EMPTY; MAX_IN_FLIGHT],
            next_req_id: 1,
            next_seq: 0,
            rx: Rx::START,
            events: [EventSlot::EMPTY; EVENT_QUEUE_LEN],
            events_head: 0,
            events_len: 0,
            events_lost: false,
            expired: [0; EXPIRED_REMEMBERED],
            expired_next: 0,
            stats: XsStats {
                requests: 0,
                replies: 0,
                events: 0,
                refused_busy: 0,
                timeouts: 0,
                dropped_late: 0,
                dropped_unknown_id: 0,
                dropped_unknown_type: 0,
                malformed_replies: 0,
                malformed_events: 0,
                events_lost: 0,
                protocol_errors: 0,
            },
        }
    }

    /// Starts using the xenstore page `page` at its current indices. Requests of a previous
    /// ring complete with [`Error::Broken`]; queued events, counters and the "events lost"
    /// flag are cleared.
    pub fn attach(&mut self, page: SharedPage) {
        // Also stops writing old bytes: they would be garbage on the new ring.
        self.fail_pending(Error::Broken);
        self.ring = Some(StoreRing::new(page));
        self.fault = None;
        self.rx = Rx::START;
        self.events_head = 0;
        self.events_len = 0;
        self.events_lost = false;
        self.stats = XsStats::default();
    }

    /// Detached, running, or broken (and why).
    pub fn state(&self) -> ClientState {
        match (self.fault, &self.ring) {
            (Some(fault), _) => ClientState::Broken(fault),
            (None, None) => ClientState::Detached,
            (None, Some(_)) => ClientState::Running,
        }
    }

    /// The counters.
    pub fn stats(&self) -> &XsStats {
        &self.stats
    }

    /// Slots in use: submitted requests not yet taken, plus abandoned ones still being written.
    pub fn in_flight(&self) -> usize {
        self.slots.iter().filter(|s| s.phase != Phase::Free).count()
    }

    /// Queues `request` (in transaction `tx`, or [`TxId::NONE`]) with a deadline of
    /// `now_ns + timeout_ns`. Nothing is written until the next [`poll`](Self::poll).
    ///
    /// Never blocks: with [`MAX_IN_FLIGHT`] slots in use it returns
    /// [`Error::TooManyInFlight`]. Every accepted request ends in a result for
    /// [`take_reply`](Self::take_reply) (or is dropped after [`discard`](Self::discard)), so
    /// the slot comes back only when the caller takes or discards it.
    pub fn submit(&mut self, now_ns: u64, timeout_ns: u64, tx: TxId, request: Request<'_>) -> Result<ReqId, Error> {
        match self.state() {
            ClientState::Broken(_) => return Err(Error::Broken),
            ClientState::Detached => return Err(Error::NotAttached),
            ClientState::Running => {}
        }
        let Some(index) = self.slots.iter().position(|s| s.phase == Phase::Free) else {
            self.stats.refused_busy += 1;
            return Err(Error::TooManyInFlight);
        };
        let req_id = self.allocate_req_id();
        let slot = &mut self.slots[index];
        let len = request.encode(req_id, tx, &mut slot.buf)?;
        slot.phase = Phase::Waiting;
        slot.req_id = req_id;
        slot.req_type = request.msg_type();
        slot.seq = self.next_seq;
        slot.deadline_ns = now_ns.saturating_add(timeout_ns);
        slot.req_len = len;
        slot.req_sent = 0;
        slot.discard = false;
        self.next_seq += 1;
        self.stats.requests += 1;
        Ok(ReqId(req_id))
    }

    /// True while `id` has neither completed nor been discarded.
    pub fn is_pending(&self, id: ReqId) -> bool {
        self.slots.iter().any(|s| s.req_id == id.0 && matches!(s.phase, Phase::Waiting | Phase::Receiving))
    }

    /// The result of request `id` once it has completed, exactly once; `None` while it is
    /// pending and for ids that are unknown or already taken. The payload is borrowed from
    /// the request's slot, which is free for reuse once the borrow ends.
    pub fn take_reply(&mut self, id: ReqId) -> Option<Result<Reply<'_>, Error>> {
        let index = self.slots.iter().position(|s| s.req_id == id.0 && matches!(s.phase, Phase::Done(_)))?;
        let slot = &mut self.slots[index];
        let Phase::Done(result) = slot.phase else {
            return None;
        };
        slot.release();
        let slot = &self.slots[index];
        Some(result.map(|meta| Reply { msg_type: meta.msg_type, tx: TxId(meta.tx_id), payload: &slot.buf[..meta.len] }))
    }

    /// Gives up interest in request `id`: its result will be dropped when it comes (for
    /// fire-and-forget writes, or aborting a transaction without waiting). Returns false for
    /// unknown ids.
    pub fn discard(&mut self, id: ReqId) -> bool {
        let Some(slot) =
            self.slots.iter_mut().find(|s| s.req_id == id.0 && !matches!(s.phase, Phase::Free | Phase::Abandoned))
        else {
            return false;
        };
        match slot.phase {
            Phase::Done(_) => slot.release(),
            _ => slot.discard = true,
        }
        true
    }

    /// The oldest queued watch event, removed from the queue.
    pub fn pop_event(&mut self) -> Option<WatchEvent<'_>> {
        if self.events_len == 0 {
            return None;
        }
        let index = self.events_head;
        self.events_head = (index + 1) % EVENT_QUEUE_LEN;
        self.events_len -= 1;
        let event = &self.events[index];
        // Checked on receipt; an unparsable entry is never queued.
        let (path, token) = wire::parse_watch_event(&event.buf[..event.len]).unwrap_or((&[], &[]));
        Some(WatchEvent { path, token })
    }

    /// Whether watch events were lost since the last [`take_events_lost`](Self::take_events_lost)
    /// (sticky). The consumer should then re-read everything it watches.
    pub fn events_lost(&self) -> bool {
        self.events_lost
    }

    /// Returns and clears the "events lost" flag.
    pub fn take_events_lost(&mut self) -> bool {
        core::mem::take(&mut self.events_lost)
    }

    /// Does all the I/O that is possible now: reads replies and watch events, expires
    /// requests whose deadline is `now_ns` or earlier, and writes queued requests. Call it
    /// from the poll loop whenever the xenstore event channel fires, after submitting, and
    /// periodically (deadlines only fire here). Send on the event channel if the outcome's
    /// `notify_peer` is set.
    pub fn poll(&mut self, now_ns: u64) -> PollOutcome {
        let mut outcome = PollOutcome::default();
        if self.fault.is_some() {
            return outcome;
        }
        let Some(mut ring) = self.ring.take() else {
            return outcome;
        };
        let result = self.receive(&mut ring, &mut outcome);
        // Space we consumed goes back even if a later header turned out to be fatal.
        outcome.notify_peer |= ring.publish_rsp();
        let result = result.and_then(|()| {
            self.expire(now_ns, &mut outcome);
            self.send(&mut ring, &mut outcome)
        });
        self.ring = Some(ring);
        if let Err(fault) = result {
            self.break_with(fault, &mut outcome);
        }
        outcome
    }

    fn allocate_req_id(&mut self) -> u32 {
        loop {
            let id = self.next_req_id;
            self.next_req_id = id.wrapping_add(1);
            // 0 is the id of watch events; an id still in a slot would be ambiguous.
            if id != 0 && !self.slots.iter().any(|s| s.phase != Phase::Free && s.req_id == id) {
                return id;
            }
        }
    }

    fn receive(&mut self, ring: &mut StoreRing, outcome: &mut PollOutcome) -> Result<(), Fault> {
        let mut budget = RX_BUDGET;
        while budget > 0 {
            let available = ring.rsp_available().map_err(Fault::Ring)?.min(budget);
            if available == 0 {
                break;
            }
            budget -= self.receive_some(ring, available, outcome)?;
        }
        Ok(())
    }

    /// Advances the current message by up to `available` bytes; returns the bytes used.
    fn receive_some(
        &mut self,
        ring: &mut StoreRing,
        available: usize,
        outcome: &mut PollOutcome,
    ) -> Result<usize, Fault> {
        match self.rx {
            Rx::Header { got, mut bytes } => {
                let n = ring.read_rsp(&mut bytes[got..(got + available).min(HEADER_LEN)]);
                self.rx = Rx::Header { got: got + n, bytes };
                if got + n == HEADER_LEN {
                    self.start_body(AllegedHeader::parse(&bytes), outcome)?;
                }
                Ok(n)
            }
            Rx::Body { len, got, to } => {
                let want = (len - got).min(available);
                let n = match to {
                    RxTarget::Slot { index, .. } => ring.read_rsp(&mut self.slots[index].buf[got..got + want]),
                    RxTarget::Event(index) => ring.read_rsp(&mut self.events[index].buf[got..got + want]),
                    RxTarget::Discard => ring.skip_rsp(want),
                };
                self.rx = Rx::Body { len, got: got + n, to };
                if got + n == len {
                    self.finish_body(len, to, outcome);
                }
                Ok(n)
            }
        }
    }

    /// Decides where the body of a just-read header goes.
    fn start_body(&mut self, alleged: AllegedHeader, outcome: &mut PollOutcome) -> Result<(), Fault> {
        let to = match alleged.validate() {
            Err(HeaderFault::PayloadTooLong(len)) => return Err(Fault::PayloadTooLong(len)),
            Err(HeaderFault::UnknownType { .. }) => {
                self.stats.dropped_unknown_type += 1;
                RxTarget::Discard
            }
            // Watch events carry req_id 0; we route by type and do not insist on the id.
            Ok(header) if header.msg_type == MsgType::WatchEvent => {
                if header.len as usize > EVENT_PAYLOAD_MAX || self.events_len == EVENT_QUEUE_LEN {
                    self.lose_event();
                    RxTarget::Discard
                } else {
                    RxTarget::Event((self.events_head + self.events_len) % EVENT_QUEUE_LEN)
                }
            }
            Ok(header) => self.match_reply(header.req_id, header.msg_type, header.tx_id),
        };
        let len = alleged.len as usize; // ≤ 4096: checked by `validate`
        self.rx = Rx::Body { len, got: 0, to };
        if len == 0 {
            self.finish_body(0, to, outcome);
        }
        Ok(())
    }

    fn match_reply(&mut self, req_id: u32, msg_type: MsgType, tx_id: u32) -> RxTarget {
        // Only a request fully written can be answered; anything else is not ours to accept.
        let waiting = self.slots.iter().position(|s| s.phase == Phase::Waiting && s.req_id == req_id && !s.unsent());
        if let Some(index) = waiting {
            self.slots[index].phase = Phase::Receiving;
            return RxTarget::Slot { index, msg_type, tx_id };
        }
        if req_id != 0 && self.expired.contains(&req_id) {
            self.stats.dropped_late += 1;
        } else {
            self.stats.dropped_unknown_id += 1;
        }
        RxTarget::Discard
    }

    fn finish_body(&mut self, len: usize, to: RxTarget, outcome: &mut PollOutcome) {
        self.rx = Rx::START;
        match to {
            RxTarget::Slot { index, msg_type, tx_id } => {
                let slot = &self.slots[index];
                let payload = &slot.buf[..len];
                let result = if msg_type == MsgType::Error {
                    Err(Error::from_errno_name(payload))
                } else if wire::reply_fits(slot.req_type, msg_type, payload) {
                    Ok(ReplyMeta { msg_type, tx_id, len })
                } else {
                    self.stats.malformed_replies += 1;
                    Err(Error::MalformedReply)
                };
                self.stats.replies += 1;
                self.complete(index, result, outcome);
            }
            RxTarget::Event(index) => {
                let event = &mut self.events[index];
                if wire::parse_watch_event(&event.buf[..len]).is_some() {
                    event.len = len;
                    self.events_len += 1;
                    self.stats.events += 1;
                    outcome.events_ready = true;
                } else {
                    self.stats.malformed_events += 1;
                    self.lose_event();
                }
            }
            RxTarget::Discard => {}
        }
    }

    fn lose_event(&mut self) {
        self.stats.events_lost += 1;
        self.events_lost = true;
    }

    fn complete(&mut self, index: usize, result: Result<ReplyMeta, Error>, outcome: &mut PollOutcome) {
        let slot = &mut self.slots[index];
        if result == Err(Error::Timeout) {
            self.stats.timeouts += 1;
            self.expired[self.expired_next] = slot.req_id;
            self.expired_next = (self.expired_next + 1) % EXPIRED_REMEMBERED;
        }
        if slot.discard {
            slot.release();
        } else {
            slot.phase = Phase::Done(result);
            outcome.replies_ready = true;
        }
    }

    fn expire(&mut self, now_ns: u64, outcome: &mut PollOutcome) {
        for index in 0..MAX_IN_FLIGHT {
            let slot = &mut self.slots[index];
            if !matches!(slot.phase, Phase::Waiting | Phase::Receiving) || now_ns < slot.deadline_ns {
                continue;
            }
            if slot.req_sent == 0 {
                slot.req_len = 0; // not started: just never send it
            }
            if slot.phase == Phase::Receiving {
                // The rest of its body is still coming: keep the stream in step, drop it.
                if let Rx::Body { len, got, to: RxTarget::Slot { .. } } = self.rx {
                    self.rx = Rx::Body { len, got, to: RxTarget::Discard };
                }
            }
            self.complete(index, Err(Error::Timeout), outcome);
        }
    }

    /// The request to write next: the one partly written, else the oldest unstarted.
    fn next_to_send(&self) -> Option<usize> {
        let slots = self.slots.iter().enumerate().filter(|(_, s)| s.unsent());
        let mut best: Option<(usize, &Slot)> = None;
        for (index, slot) in slots {
            if slot.req_sent > 0 {
                return Some(index);
            }
            if best.is_none_or(|(_, b)| slot.seq < b.seq) {
                best = Some((index, slot));
            }
        }
        best.map(|(index, _)| index)
    }

    fn send(&mut self, ring: &mut StoreRing, outcome: &mut PollOutcome) -> Result<(), Fault> {
        // Check the peer's consumer index every poll, not only when we have bytes to send.
        ring.req_space().map_err(Fault::Ring)?;
        while let Some(index) = self.next_to_send() {
            let slot = &mut self.slots[index];
            let n = ring.write_req(&slot.buf[slot.req_sent..slot.req_len]).map_err(Fault::Ring)?;
            slot.req_sent += n;
            if slot.unsent() {
                break; // ring full: the rest goes when xenstored has consumed some
            }
            if slot.phase == Phase::Abandoned {
                slot.release();
            }
        }
        outcome.notify_peer |= ring.publish_req();
        Ok(())
    }

    fn fail_pending(&mut self, error: Error) {
        let mut ignored = PollOutcome::default();
        for index in 0..MAX_IN_FLIGHT {
            let slot = &mut self.slots[index];
            slot.req_len = slot.req_sent; // stop writing
            match slot.phase {
                Phase::Waiting | Phase::Receiving => self.complete(index, Err(error), &mut ignored),
                Phase::Abandoned => slot.release(),
                Phase::Free | Phase::Done(_) => {}
            }
        }
    }

    fn break_with(&mut self, fault: Fault, outcome: &mut PollOutcome) {
        self.fault = Some(fault);
        self.stats.protocol_errors += 1;
        self.rx = Rx::START;
        self.fail_pending(Error::Broken);
        outcome.replies_ready = true;
    }
}

#[cfg(test)]
impl Client {
    /// True if no request is still waiting (all have a result or are free/abandoned).
    pub(super) fn slots_all_settled(&self) -> bool {
        self.slots.iter().all(|s| !matches!(s.phase, Phase::Waiting | Phase::Receiving))
    }
}
