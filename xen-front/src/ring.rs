//! Xen's shared request/response ring (`io/ring.h`) as a safe API over a [`SharedPage`].
//!
//! The page starts with four free-running `u32` indices (`req_prod`, `req_event`, `rsp_prod`,
//! `rsp_event`), padding to 64 bytes, then a power-of-two array of slots. Indices wrap; a
//! slot is `index & (size - 1)`.
//!
//! The peer may write anything at any time, so:
//! - the peer's producer index is read **once per batch** ([`FrontRing::poll_responses`],
//!   [`BackRing::poll_requests`]), validated, then followed by a read barrier;
//! - an index that claims more entries than can exist (more responses than requests
//!   outstanding, more requests than free slots) is a peer fault: the ring stops being
//!   trusted ([`RingFault`]) and the driver disconnects;
//! - every slot is **copied out** of shared memory ([`RingEntry::read_from`]) before it is
//!   looked at, and the copy is validated by the driver (ids, lengths, offsets are
//!   allegations);
//! - notifications are suppressed as `io/ring.h` says (`*_event`), with a full barrier
//!   between publishing our index and reading the peer's event index.

use core::marker::PhantomData;

use grant_pool::SharedPage;
use grant_pool::shared::{full_barrier, read_barrier, write_barrier};

/// Offsets of the shared ring header (`struct <name>_sring`).
pub mod sring {
    /// `req_prod`, written by the frontend.
    pub const REQ_PROD: usize = 0;
    /// `req_event`, written by the backend.
    pub const REQ_EVENT: usize = 4;
    /// `rsp_prod`, written by the backend.
    pub const RSP_PROD: usize = 8;
    /// `rsp_event`, written by the frontend.
    pub const RSP_EVENT: usize = 12;
    /// First slot.
    pub const RING: usize = 64;
}

/// A request or response as it sits in a ring slot.
pub trait RingEntry: Copy {
    /// Copies the entry out of shared memory (each field read once).
    fn read_from(page: SharedPage, off: usize) -> Self;
    /// Writes the entry into shared memory.
    fn write_to(&self, page: SharedPage, off: usize);
}

/// A ring's types and slot size (the larger of the request and response sizes).
pub trait RingLayout {
    /// Written by the frontend.
    type Request: RingEntry;
    /// Written by the backend.
    type Response: RingEntry;
    /// Bytes per slot.
    const SLOT: usize;
    /// Slots in a one-page ring: `__CONST_RING_SIZE`, the largest power of two that fits.
    const SIZE: u32 = prev_power_of_two(((grant_pool::PAGE_SIZE - sring::RING) / Self::SLOT) as u32);
}

const fn prev_power_of_two(n: u32) -> u32 {
    if n == 0 { 0 } else { 1 << (31 - n.leading_zeros()) }
}

/// The peer moved an index to a value no correct peer can produce. The ring is no longer
/// trusted; the driver must disconnect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingFault {
    /// The backend's `rsp_prod` claims more responses than requests are outstanding.
    ResponseOverflow {
        /// What the peer wrote.
        rsp_prod: u32,
        /// Our consumer index.
        rsp_cons: u32,
        /// Requests we published that have no response yet.
        outstanding: u32,
    },
    /// The frontend's `req_prod` claims more requests than the ring has room for.
    RequestOverflow {
        /// What the peer wrote.
        req_prod: u32,
        /// Our consumer index.
        req_cons: u32,
        /// Our private response producer.
        rsp_prod_pvt: u32,
    },
}

fn slot_offset<L: RingLayout>(index: u32) -> usize {
    sring::RING + (index & (L::SIZE - 1)) as usize * L::SLOT
}

/// The frontend's end: produces requests, consumes responses.
#[derive(Debug)]
pub struct FrontRing<L: RingLayout> {
    page: SharedPage,
    req_prod_pvt: u32,
    rsp_cons: u32,
    /// `rsp_prod` as read by the last [`poll_responses`](Self::poll_responses).
    rsp_seen: u32,
    fault: Option<RingFault>,
    _layout: PhantomData<L>,
}

impl<L: RingLayout> FrontRing<L> {
    /// Initialises the shared page (`SHARED_RING_INIT` + `FRONT_RING_INIT`); only the
    /// frontend does this, before granting the page.
    pub fn init(page: SharedPage) -> Self {
        page.fill(0, sring::RING, 0);
        page.write_u32(sring::REQ_EVENT, 1);
        page.write_u32(sring::RSP_EVENT, 1);
        write_barrier();
        FrontRing { page, req_prod_pvt: 0, rsp_cons: 0, rsp_seen: 0, fault: None, _layout: PhantomData }
    }

    /// The shared page.
    pub fn page(&self) -> SharedPage {
        self.page
    }

    /// Why the ring stopped being trusted, if it did.
    pub fn fault(&self) -> Option<RingFault> {
        self.fault
    }

    /// Requests produced (published or not) that have no response consumed yet.
    pub fn outstanding(&self) -> u32 {
        self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// Slots free for new requests (`RING_FREE_REQUESTS`).
    pub fn free_requests(&self) -> u32 {
        L::SIZE - self.outstanding()
    }

    /// Writes a request into the next slot (not yet visible to the peer: see
    /// [`publish`](Self::publish)). `false` if the ring is full or faulted.
    pub fn push_request(&mut self, req: &L::Request) -> bool {
        if self.fault.is_some() || self.free_requests() == 0 {
            return false;
        }
        req.write_to(self.page, slot_offset::<L>(self.req_prod_pvt));
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        true
    }

    /// Publishes pushed requests (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`); `true` if the
    /// backend asked to be notified about them.
    pub fn publish(&mut self) -> bool {
        let old = self.page.read_u32(sring::REQ_PROD);
        let new = self.req_prod_pvt;
        if old == new {
            return false;
        }
        write_barrier();
        self.page.write_u32(sring::REQ_PROD, new);
        full_barrier();
        let event = self.page.read_u32(sring::REQ_EVENT);
        new.wrapping_sub(event) < new.wrapping_sub(old)
    }

    /// Reads the backend's `rsp_prod` once and validates it; returns how many responses
    /// [`take_response`](Self::take_response) will now yield.
    pub fn poll_responses(&mut self) -> Result<u32, RingFault> {
        if let Some(f) = self.fault {
            return Err(f);
        }
        let prod = self.page.read_u32(sring::RSP_PROD);
        let available = prod.wrapping_sub(self.rsp_cons);
        if available > self.outstanding() {
            let fault = RingFault::ResponseOverflow {
                rsp_prod: prod,
                rsp_cons: self.rsp_cons,
                outstanding: self.outstanding(),
            };
            self.fault = Some(fault);
            return Err(fault);
        }
        // The slots must be read after the index that covers them.
        read_barrier();
        self.rsp_seen = prod;
        Ok(available)
    }

    /// The next response covered by the last [`poll_responses`](Self::poll_responses),
    /// copied out of the ring.
    pub fn take_response(&mut self) -> Option<L::Response> {
        if self.fault.is_some() || self.rsp_cons == self.rsp_seen {
            return None;
        }
        let rsp = L::Response::read_from(self.page, slot_offset::<L>(self.rsp_cons));
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Some(rsp)
    }

    /// `RING_FINAL_CHECK_FOR_RESPONSES`: asks for an event on the next response, then checks
    /// once more so a response published meanwhile is not missed. `Ok(true)`: poll again.
    pub fn final_check_for_responses(&mut self) -> Result<bool, RingFault> {
        if self.poll_responses()? > 0 {
            return Ok(true);
        }
        self.page.write_u32(sring::RSP_EVENT, self.rsp_cons.wrapping_add(1));
        full_barrier();
        Ok(self.poll_responses()? > 0)
    }

    /// Asks for an event only once `n` more responses are ready (TX completions need not
    /// wake us for each one; Mini-OS asks at half the outstanding requests).
    pub fn set_response_event(&mut self, n: u32) {
        self.page.write_u32(sring::RSP_EVENT, self.rsp_cons.wrapping_add(n.max(1)));
        full_barrier();
    }
}

/// The backend's end: consumes requests, produces responses.
#[derive(Debug)]
pub struct BackRing<L: RingLayout> {
    page: SharedPage,
    rsp_prod_pvt: u32,
    req_cons: u32,
    /// `req_prod` as read by the last [`poll_requests`](Self::poll_requests).
    req_seen: u32,
    fault: Option<RingFault>,
    _layout: PhantomData<L>,
}

impl<L: RingLayout> BackRing<L> {
    /// Attaches to a page the frontend initialised (`BACK_RING_ATTACH` at 0; the shared
    /// indices are the frontend's business).
    pub fn attach(page: SharedPage) -> Self {
        BackRing { page, rsp_prod_pvt: 0, req_cons: 0, req_seen: 0, fault: None, _layout: PhantomData }
    }

    /// The shared page.
    pub fn page(&self) -> SharedPage {
        self.page
    }

    /// Why the ring stopped being trusted, if it did.
    pub fn fault(&self) -> Option<RingFault> {
        self.fault
    }

    /// Requests consumed that have no response yet.
    pub fn unanswered(&self) -> u32 {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt)
    }

    /// Reads the frontend's `req_prod` once and validates it (`RING_REQUEST_PROD_OVERFLOW`);
    /// returns how many requests [`take_request`](Self::take_request) will now yield.
    pub fn poll_requests(&mut self) -> Result<u32, RingFault> {
        if let Some(f) = self.fault {
            return Err(f);
        }
        let prod = self.page.read_u32(sring::REQ_PROD);
        if prod.wrapping_sub(self.rsp_prod_pvt) > L::SIZE {
            let fault =
                RingFault::RequestOverflow { req_prod: prod, req_cons: self.req_cons, rsp_prod_pvt: self.rsp_prod_pvt };
            self.fault = Some(fault);
            return Err(fault);
        }
        read_barrier();
        self.req_seen = prod;
        Ok(prod.wrapping_sub(self.req_cons))
    }

    /// The next request covered by the last [`poll_requests`](Self::poll_requests), copied
    /// out of the ring, with its ring index (a response to it goes into the same slot when
    /// responses are produced in request order, as netif RX requires).
    pub fn take_request(&mut self) -> Option<(u32, L::Request)> {
        if self.fault.is_some() || self.req_cons == self.req_seen {
            return None;
        }
        let index = self.req_cons;
        let req = L::Request::read_from(self.page, slot_offset::<L>(index));
        self.req_cons = self.req_cons.wrapping_add(1);
        Some((index, req))
    }

    /// Writes a response into the next response slot (not yet visible: see
    /// [`publish`](Self::publish)). `false` if every consumed request is answered already.
    pub fn push_response(&mut self, rsp: &L::Response) -> bool {
        if self.fault.is_some() || self.unanswered() == 0 {
            return false;
        }
        rsp.write_to(self.page, slot_offset::<L>(self.rsp_prod_pvt));
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        true
    }

    /// Publishes pushed responses (`RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`); `true` if the
    /// frontend asked to be notified.
    pub fn publish(&mut self) -> bool {
        let old = self.page.read_u32(sring::RSP_PROD);
        let new = self.rsp_prod_pvt;
        if old == new {
            return false;
        }
        write_barrier();
        self.page.write_u32(sring::RSP_PROD, new);
        full_barrier();
        let event = self.page.read_u32(sring::RSP_EVENT);
        new.wrapping_sub(event) < new.wrapping_sub(old)
    }

    /// `RING_FINAL_CHECK_FOR_REQUESTS`: asks for an event on the next request, then checks
    /// once more. `Ok(true)`: poll again.
    pub fn final_check_for_requests(&mut self) -> Result<bool, RingFault> {
        if self.poll_requests()? > 0 {
            return Ok(true);
        }
        self.page.write_u32(sring::REQ_EVENT, self.req_cons.wrapping_add(1));
        full_barrier();
        Ok(self.poll_requests()? > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grant_pool::PageCell;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Word(u32);

    impl RingEntry for Word {
        fn read_from(page: SharedPage, off: usize) -> Self {
            Word(page.read_u32(off))
        }
        fn write_to(&self, page: SharedPage, off: usize) {
            page.write_u32(off, self.0)
        }
    }

    struct Tx;
    impl RingLayout for Tx {
        type Request = Word;
        type Response = Word;
        const SLOT: usize = 12;
    }
    struct Rx;
    impl RingLayout for Rx {
        type Request = Word;
        type Response = Word;
        const SLOT: usize = 8;
    }

    fn page() -> SharedPage {
        SharedPage::from_static(Box::leak(Box::new(PageCell::new())))
    }

    #[test]
    fn netif_rings_have_256_slots() {
        assert_eq!(Tx::SIZE, 256);
        assert_eq!(Rx::SIZE, 256);
        assert_eq!(prev_power_of_two(1), 1);
        assert_eq!(prev_power_of_two(335), 256);
    }

    #[test]
    fn init_writes_the_header_as_shared_ring_init() {
        let p = page();
        p.fill(0, 4096, 0xff);
        let _f = FrontRing::<Tx>::init(p);
        assert_eq!(
            [p.read_u32(0), p.read_u32(4), p.read_u32(8), p.read_u32(12), p.read_u32(16), p.read_u32(60)],
            [0, 1, 0, 1, 0, 0]
        );
    }

    #[test]
    fn requests_and_responses_flow_and_wrap() {
        let p = page();
        let mut f = FrontRing::<Tx>::init(p);
        let mut b = BackRing::<Tx>::attach(p);
        for round in 0..5u32 {
            for i in 0..200 {
                assert!(f.push_request(&Word(round * 1000 + i)));
            }
            f.publish();
            assert_eq!(b.poll_requests(), Ok(200));
            for i in 0..200 {
                let (_, w) = b.take_request().unwrap();
                assert_eq!(w.0, round * 1000 + i);
                assert!(b.push_response(&Word(w.0 + 1)));
            }
            assert!(b.take_request().is_none());
            b.publish();
            assert_eq!(f.poll_responses(), Ok(200));
            for i in 0..200 {
                assert_eq!(f.take_response(), Some(Word(round * 1000 + i + 1)));
            }
            assert_eq!(f.take_response(), None);
            assert_eq!(f.outstanding(), 0);
        }
    }

    #[test]
    fn a_full_ring_refuses_more_requests() {
        let mut f = FrontRing::<Tx>::init(page());
        for i in 0..256 {
            assert!(f.push_request(&Word(i)));
        }
        assert!(!f.push_request(&Word(999)));
        assert_eq!(f.free_requests(), 0);
    }

    #[test]
    fn notification_follows_the_event_index() {
        let p = page();
        let mut f = FrontRing::<Tx>::init(p);
        let mut b = BackRing::<Tx>::attach(p);
        f.push_request(&Word(1));
        assert!(f.publish(), "req_event = 1 asks for the first request");
        assert!(!f.publish(), "nothing new: no notification");
        f.push_request(&Word(2));
        assert!(!f.publish(), "the backend did not re-arm req_event");
        assert_eq!(b.poll_requests(), Ok(2));
        b.take_request();
        b.take_request();
        assert_eq!(b.final_check_for_requests(), Ok(false));
        assert_eq!(p.read_u32(sring::REQ_EVENT), 3);
        f.push_request(&Word(3));
        assert!(f.publish(), "re-armed: notify");
        // Responses: the frontend asks for the next one only.
        b.poll_requests().unwrap();
        b.take_request();
        for _ in 0..3 {
            b.push_response(&Word(0));
        }
        assert!(b.publish(), "rsp_event = 1");
        assert_eq!(f.poll_responses(), Ok(3));
        while f.take_response().is_some() {}
        assert_eq!(f.final_check_for_responses(), Ok(false));
        assert_eq!(p.read_u32(sring::RSP_EVENT), 4);
    }

    #[test]
    fn final_check_sees_a_request_published_before_rearming() {
        let p = page();
        let mut f = FrontRing::<Rx>::init(p);
        let mut b = BackRing::<Rx>::attach(p);
        f.push_request(&Word(1));
        f.publish();
        assert_eq!(b.final_check_for_requests(), Ok(true));
    }

    #[test]
    fn responses_without_requests_are_a_fault_and_stick() {
        let p = page();
        let mut f = FrontRing::<Tx>::init(p);
        f.push_request(&Word(1));
        f.publish();
        p.write_u32(sring::RSP_PROD, 2);
        let fault = f.poll_responses().unwrap_err();
        assert_eq!(fault, RingFault::ResponseOverflow { rsp_prod: 2, rsp_cons: 0, outstanding: 1 });
        // Even a sane index afterwards is not trusted.
        p.write_u32(sring::RSP_PROD, 1);
        assert_eq!(f.poll_responses(), Err(fault));
        assert_eq!(f.take_response(), None);
        assert!(!f.push_request(&Word(2)));
    }

    #[test]
    fn a_response_index_jumping_backwards_is_a_fault() {
        let p = page();
        let mut f = FrontRing::<Tx>::init(p);
        f.push_request(&Word(1));
        f.publish();
        p.write_u32(sring::RSP_PROD, u32::MAX); // "minus one"
        assert!(f.poll_responses().is_err());
    }

    #[test]
    fn requests_beyond_the_ring_are_a_fault() {
        let p = page();
        let mut b = BackRing::<Rx>::attach(p);
        p.write_u32(sring::REQ_PROD, 256);
        assert_eq!(b.poll_requests(), Ok(256));
        p.write_u32(sring::REQ_PROD, 257);
        assert_eq!(b.poll_requests(), Err(RingFault::RequestOverflow { req_prod: 257, req_cons: 0, rsp_prod_pvt: 0 }));
        assert!(b.take_request().is_none());
        assert!(!b.push_response(&Word(0)));
    }

    #[test]
    fn indices_near_wraparound_work() {
        let p = page();
        let mut b = BackRing::<Rx>::attach(p);
        // A frontend may start anywhere only by running a long time; emulate with a backend
        // that consumed 2^32 - 3 requests.
        b.req_cons = u32::MAX - 2;
        b.rsp_prod_pvt = u32::MAX - 2;
        p.write_u32(sring::REQ_PROD, 3); // six requests across the wrap
        assert_eq!(b.poll_requests(), Ok(6));
        for _ in 0..6 {
            let (_, _) = b.take_request().unwrap();
            assert!(b.push_response(&Word(7)));
        }
        assert!(!b.push_response(&Word(7)), "one response per request");
    }

    #[test]
    fn the_peer_changing_a_slot_after_the_copy_does_not_change_the_copy() {
        let p = page();
        let mut f = FrontRing::<Rx>::init(p);
        let mut b = BackRing::<Rx>::attach(p);
        f.push_request(&Word(10));
        f.publish();
        b.poll_requests().unwrap();
        let (_, copy) = b.take_request().unwrap();
        p.write_u32(sring::RING, 99);
        assert_eq!(copy, Word(10));
    }
}
