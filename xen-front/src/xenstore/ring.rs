//! Byte-stream I/O over `struct xenstore_domain_interface` (xen-abi.md §4.2).
//!
//! Two 1 KiB rings in one shared page, each a byte stream with free-running `u32` indices;
//! byte `x` lives at `ring[x & 1023]`. We own `req_prod` and `rsp_cons` and keep our own
//! copies of them (the page's values are only ever written, so the peer cannot move our
//! indices); the peer's `req_cons` and `rsp_prod` are allegations checked on every read.
//!
//! Nothing here waits or notifies: `write_req`/`read_rsp` move what fits now, and the
//! `publish_*` calls say whether the peer must be signalled.

use grant_pool::SharedPage;
use grant_pool::shared::{full_barrier, read_barrier, write_barrier};

/// Bytes in each of the request and response rings.
pub const XENSTORE_RING_SIZE: usize = 1024;

const RING_MASK: u32 = XENSTORE_RING_SIZE as u32 - 1;

/// Byte offsets in the shared page.
mod field {
    pub const REQ: usize = 0;
    pub const RSP: usize = 1024;
    pub const REQ_CONS: usize = 2048;
    pub const REQ_PROD: usize = 2052;
    pub const RSP_CONS: usize = 2056;
    pub const RSP_PROD: usize = 2060;
}

/// Offsets of the index fields, for peers and tests that play xenstored.
pub mod offsets {
    /// Request ring data.
    pub const REQ: usize = super::field::REQ;
    /// Response ring data.
    pub const RSP: usize = super::field::RSP;
    /// `req_cons` (written by xenstored).
    pub const REQ_CONS: usize = super::field::REQ_CONS;
    /// `req_prod` (written by the guest).
    pub const REQ_PROD: usize = super::field::REQ_PROD;
    /// `rsp_cons` (written by the guest).
    pub const RSP_CONS: usize = super::field::RSP_CONS;
    /// `rsp_prod` (written by xenstored).
    pub const RSP_PROD: usize = super::field::RSP_PROD;
}

/// A peer-written index that cannot be right: the rings can no longer be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingFault {
    /// `rsp_prod - rsp_cons > 1024`: the peer claims more bytes than the ring holds (or moved
    /// `rsp_prod` backwards past our consumer).
    RspProdJump {
        /// `rsp_prod` as read.
        prod: u32,
        /// Our `rsp_cons`.
        cons: u32,
    },
    /// `req_cons` moved backwards or past our `req_prod` (or was more than a ring behind it
    /// when we attached).
    ReqConsOutOfRange {
        /// `req_cons` as read.
        cons: u32,
        /// The previous `req_cons` we accepted.
        last: u32,
        /// Our published `req_prod`.
        prod: u32,
    },
}

/// Our side of the two rings in a xenstore page.
#[derive(Debug)]
pub struct StoreRing {
    page: SharedPage,
    /// Next request byte we will write (may be ahead of what is published).
    req_prod: u32,
    /// `req_prod` as last stored in the page.
    req_prod_published: u32,
    /// Last `req_cons` accepted from the peer.
    req_cons_seen: u32,
    /// Next response byte we will read.
    rsp_cons: u32,
    /// `rsp_cons` as last stored in the page.
    rsp_cons_published: u32,
    /// Last `rsp_prod` accepted from the peer.
    rsp_prod_seen: u32,
}

impl StoreRing {
    /// Takes over the rings in `page` at whatever indices they hold ("guests must not assume
    /// that producer or consumer pointers start at zero").
    pub fn new(page: SharedPage) -> StoreRing {
        let req_prod = page.read_u32(field::REQ_PROD);
        let rsp_cons = page.read_u32(field::RSP_CONS);
        StoreRing {
            page,
            req_prod,
            req_prod_published: req_prod,
            req_cons_seen: page.read_u32(field::REQ_CONS),
            rsp_cons,
            rsp_cons_published: rsp_cons,
            rsp_prod_seen: rsp_cons,
        }
    }

    /// Free bytes in the request ring, after checking the peer's `req_cons`.
    pub fn req_space(&mut self) -> Result<usize, RingFault> {
        let cons = self.page.read_u32(field::REQ_CONS);
        let last = self.req_cons_seen;
        // `cons` must lie in [last, published prod]: consumers only move forward and never
        // past what we have published. Wrapping distances from `last` make that one compare.
        if cons.wrapping_sub(last) > self.req_prod_published.wrapping_sub(last) {
            return Err(RingFault::ReqConsOutOfRange { cons, last, prod: self.req_prod_published });
        }
        // We never write more than fits, so this stays ≤ 1024 once running; only indices
        // found in the page at attach time can break it.
        let used = self.req_prod.wrapping_sub(cons) as usize;
        if used > XENSTORE_RING_SIZE {
            return Err(RingFault::ReqConsOutOfRange { cons, last, prod: self.req_prod_published });
        }
        self.req_cons_seen = cons;
        Ok(XENSTORE_RING_SIZE - used)
    }

    /// Copies as much of `src` as fits into the request ring; returns the bytes taken.
    /// They become visible to the peer at the next [`publish_req`](Self::publish_req).
    pub fn write_req(&mut self, src: &[u8]) -> Result<usize, RingFault> {
        let n = src.len().min(self.req_space()?);
        let mut done = 0;
        while done < n {
            let off = (self.req_prod & RING_MASK) as usize;
            let chunk = (n - done).min(XENSTORE_RING_SIZE - off);
            self.page.copy_in(field::REQ + off, &src[done..done + chunk]);
            self.req_prod = self.req_prod.wrapping_add(chunk as u32);
            done += chunk;
        }
        Ok(n)
    }

    /// Makes written request bytes visible; true if `req_prod` moved (notify the peer).
    pub fn publish_req(&mut self) -> bool {
        if self.req_prod == self.req_prod_published {
            return false;
        }
        write_barrier(); // the bytes before the index that covers them
        self.page.write_u32(field::REQ_PROD, self.req_prod);
        self.req_prod_published = self.req_prod;
        true
    }

    /// Response bytes ready to read, after checking the peer's `rsp_prod`.
    pub fn rsp_available(&mut self) -> Result<usize, RingFault> {
        let prod = self.page.read_u32(field::RSP_PROD);
        let avail = prod.wrapping_sub(self.rsp_cons);
        if avail as usize > XENSTORE_RING_SIZE {
            return Err(RingFault::RspProdJump { prod, cons: self.rsp_cons });
        }
        read_barrier(); // the index before the bytes it covers
        self.rsp_prod_seen = prod;
        Ok(avail as usize)
    }

    /// Copies up to `dst.len()` bytes of what [`rsp_available`](Self::rsp_available) last
    /// reported; returns the bytes copied.
    pub fn read_rsp(&mut self, dst: &mut [u8]) -> usize {
        let n = dst.len().min(self.rsp_prod_seen.wrapping_sub(self.rsp_cons) as usize);
        let mut done = 0;
        while done < n {
            let off = (self.rsp_cons & RING_MASK) as usize;
            let chunk = (n - done).min(XENSTORE_RING_SIZE - off);
            self.page.copy_out(field::RSP + off, &mut dst[done..done + chunk]);
            self.rsp_cons = self.rsp_cons.wrapping_add(chunk as u32);
            done += chunk;
        }
        n
    }

    /// Drops up to `n` available response bytes unread; returns the bytes dropped.
    pub fn skip_rsp(&mut self, n: usize) -> usize {
        let n = n.min(self.rsp_prod_seen.wrapping_sub(self.rsp_cons) as usize);
        self.rsp_cons = self.rsp_cons.wrapping_add(n as u32);
        n
    }

    /// Hands consumed response space back; true if `rsp_cons` moved (notify the peer, which
    /// may be waiting for room).
    pub fn publish_rsp(&mut self) -> bool {
        if self.rsp_cons == self.rsp_cons_published {
            return false;
        }
        full_barrier(); // finish reading the bytes before the peer may overwrite them
        self.page.write_u32(field::RSP_CONS, self.rsp_cons);
        self.rsp_cons_published = self.rsp_cons;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grant_pool::PageCell;

    fn page_at(start: u32) -> SharedPage {
        let page = SharedPage::from_static(Box::leak(Box::new(PageCell::new())));
        for off in [field::REQ_CONS, field::REQ_PROD, field::RSP_CONS, field::RSP_PROD] {
            page.write_u32(off, start);
        }
        page
    }

    #[test]
    fn request_bytes_wrap_and_wait_for_space() {
        let page = page_at(u32::MAX - 10); // indices wrap around u32 as well as the ring
        let mut ring = StoreRing::new(page);
        let data: Vec<u8> = (0..1500u32).map(|i| i as u8).collect();
        assert_eq!(ring.write_req(&data), Ok(1024));
        assert_eq!(ring.write_req(&data[1024..]), Ok(0), "full ring takes nothing");
        assert!(ring.publish_req());
        assert!(!ring.publish_req(), "nothing new to publish");
        assert_eq!(page.read_u32(field::REQ_PROD), (u32::MAX - 10).wrapping_add(1024));
        // The byte at stream index x is at ring[x & 1023].
        let first = ((u32::MAX - 10) & RING_MASK) as usize;
        assert_eq!(page.read_u8(field::REQ + first), 0);
        assert_eq!(page.read_u8(field::REQ + ((first + 11) & 1023)), 11);
        // Peer consumes 600: that much room again.
        page.write_u32(field::REQ_CONS, (u32::MAX - 10).wrapping_add(600));
        assert_eq!(ring.write_req(&data[1024..]), Ok(476));
    }

    #[test]
    fn response_bytes_wrap() {
        let page = page_at(1000);
        let mut ring = StoreRing::new(page);
        for i in 0..100u32 {
            page.write_u8(field::RSP + ((1000 + i) & RING_MASK) as usize, i as u8);
        }
        page.write_u32(field::RSP_PROD, 1100);
        assert_eq!(ring.rsp_available(), Ok(100));
        let mut out = [0u8; 60];
        assert_eq!(ring.read_rsp(&mut out), 60);
        assert_eq!(out[59], 59);
        assert_eq!(ring.skip_rsp(1000), 40);
        assert_eq!(ring.read_rsp(&mut out), 0);
        assert!(ring.publish_rsp());
        assert_eq!(page.read_u32(field::RSP_CONS), 1100);
    }

    #[test]
    fn peer_indices_out_of_range_are_faults() {
        let page = page_at(5000);
        let mut ring = StoreRing::new(page);
        page.write_u32(field::RSP_PROD, 5000 + 2000);
        assert_eq!(ring.rsp_available(), Err(RingFault::RspProdJump { prod: 7000, cons: 5000 }));
        page.write_u32(field::RSP_PROD, 4999); // backwards: a wrapped, huge distance
        assert!(ring.rsp_available().is_err());

        ring.write_req(b"hello").unwrap();
        ring.publish_req();
        page.write_u32(field::REQ_CONS, 5003);
        assert_eq!(ring.req_space(), Ok(1022));
        page.write_u32(field::REQ_CONS, 5001); // backwards
        assert!(matches!(ring.req_space(), Err(RingFault::ReqConsOutOfRange { cons: 5001, .. })));
        page.write_u32(field::REQ_CONS, 5006); // past what we published
        assert!(ring.req_space().is_err());

        // Garbage left in the page before we attached: a fault, not an underflow.
        let page = page_at(100);
        page.write_u32(field::REQ_PROD, 3000);
        let mut ring = StoreRing::new(page);
        assert!(ring.req_space().is_err());
        assert!(ring.write_req(b"x").is_err());
    }
}
