//! One direction of a vchan: a byte ring of `2^order` bytes over one or more shared pages,
//! with free-running `u32` indices in the control page.
//!
//! Each side writes only its own index (the reader `cons`, the writer `prod`) and keeps a
//! private copy of it, never reading it back. The peer's index is an allegation: it is checked
//! on every read against the ring size and against the last value accepted (an index that
//! moves backwards or claims more than the ring holds is a [`RingFault`]).

use grant_pool::shared::{full_barrier, read_barrier, write_barrier};
use grant_pool::{PAGE_SIZE, SharedPage};

use super::layout::MAX_RING_PAGES;

/// A peer-written index that cannot be right. The channel is closed after one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingFault {
    /// The peer's index claims more than the ring holds.
    Overrun {
        /// `prod - cons` as the peer's index makes it.
        claimed: u32,
        /// The ring size.
        size: u32,
    },
    /// The peer's index moved backwards.
    Backwards {
        /// The value accepted before.
        before: u32,
        /// The value now.
        now: u32,
    },
}

/// Where a ring's bytes are.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Storage {
    /// Inside the control page at an offset.
    InPage { page: SharedPage, offset: usize },
    /// In whole pages (`2^(order-12)` of them, from the first).
    Pages { pages: [Option<SharedPage>; MAX_RING_PAGES] },
}

/// The bytes of a ring (no indices).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RingBytes {
    storage: Storage,
    size: u32,
}

impl RingBytes {
    pub(crate) fn new(storage: Storage, order: u8) -> Self {
        RingBytes { storage, size: 1 << order }
    }

    pub(crate) fn size(&self) -> u32 {
        self.size
    }

    /// Runs `f(page, offset_in_page, range_in_buffer)` over the contiguous pieces of the
    /// `len` ring bytes starting at free-running index `idx` (wrapping at the ring's end).
    fn pieces(&self, idx: u32, len: usize, mut f: impl FnMut(SharedPage, usize, core::ops::Range<usize>)) {
        let size = self.size as usize;
        let mut pos = (idx & (self.size - 1)) as usize;
        let mut done = 0;
        while done < len {
            let (page, off, room) = match self.storage {
                Storage::InPage { page, offset } => (page, offset + pos, size - pos),
                Storage::Pages { pages } => {
                    // pos < size = (pages set up) * 4096.
                    let page = pages[pos / PAGE_SIZE].expect("ring pages are set up to the ring size");
                    (page, pos % PAGE_SIZE, PAGE_SIZE - pos % PAGE_SIZE)
                }
            };
            let n = room.min(len - done);
            f(page, off, done..done + n);
            done += n;
            pos = (pos + n) % size;
        }
    }

    pub(crate) fn copy_out(&self, idx: u32, dst: &mut [u8]) {
        self.pieces(idx, dst.len(), |page, off, r| page.copy_out(off, &mut dst[r]));
    }

    pub(crate) fn copy_in(&self, idx: u32, src: &[u8]) {
        self.pieces(idx, src.len(), |page, off, r| page.copy_in(off, &src[r]));
    }
}

/// The ring we read: the peer produces, we consume.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadRing {
    ctrl: SharedPage,
    cons_off: usize,
    prod_off: usize,
    bytes: RingBytes,
    /// Our consumer index (private copy; the page's copy is only written).
    cons: u32,
    /// The peer's producer index, as last accepted.
    prod_seen: u32,
}

impl ReadRing {
    /// A ring whose indices start at `cons` (ours) and `prod` (the peer's, checked).
    pub(crate) fn new(ctrl: SharedPage, cons_off: usize, prod_off: usize, bytes: RingBytes) -> Result<Self, RingFault> {
        let cons = ctrl.read_u32(cons_off);
        let mut ring = ReadRing { ctrl, cons_off, prod_off, bytes, cons, prod_seen: cons };
        ring.ready()?;
        Ok(ring)
    }

    /// Bytes published by the peer and not consumed yet.
    pub(crate) fn ready(&mut self) -> Result<u32, RingFault> {
        let prod = self.ctrl.read_u32(self.prod_off);
        let claimed = prod.wrapping_sub(self.cons);
        if claimed > self.bytes.size {
            return Err(RingFault::Overrun { claimed, size: self.bytes.size });
        }
        if claimed < self.prod_seen.wrapping_sub(self.cons) {
            return Err(RingFault::Backwards { before: self.prod_seen, now: prod });
        }
        self.prod_seen = prod;
        // The bytes are read after the index that publishes them.
        read_barrier();
        Ok(claimed)
    }

    /// A view of `len` ready bytes (`len` from [`ready`](Self::ready)).
    pub(crate) fn view(&self, len: u32) -> VolatileRead<'_> {
        VolatileRead { bytes: &self.bytes, start: self.cons, len: len as usize }
    }

    /// Gives `n` bytes back to the peer.
    pub(crate) fn consume(&mut self, n: u32) {
        // Our reads of the bytes complete before the peer may overwrite them.
        full_barrier();
        self.cons = self.cons.wrapping_add(n);
        self.ctrl.write_u32(self.cons_off, self.cons);
    }

    pub(crate) fn size(&self) -> u32 {
        self.bytes.size()
    }
}

/// The ring we write: we produce, the peer consumes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WriteRing {
    ctrl: SharedPage,
    cons_off: usize,
    prod_off: usize,
    bytes: RingBytes,
    /// Our producer index (private copy).
    prod: u32,
    /// The peer's consumer index, as last accepted.
    cons_seen: u32,
}

impl WriteRing {
    /// A ring whose indices start at `prod` (ours) and `cons` (the peer's, checked).
    pub(crate) fn new(ctrl: SharedPage, cons_off: usize, prod_off: usize, bytes: RingBytes) -> Result<Self, RingFault> {
        let prod = ctrl.read_u32(prod_off);
        let mut ring = WriteRing { ctrl, cons_off, prod_off, bytes, prod, cons_seen: prod };
        // The starting consumer index must be within a ring of our producer.
        let cons = ctrl.read_u32(cons_off);
        let used = prod.wrapping_sub(cons);
        if used > bytes.size {
            return Err(RingFault::Overrun { claimed: used, size: bytes.size });
        }
        ring.cons_seen = cons;
        ring.space()?;
        Ok(ring)
    }

    /// Free bytes we may write now.
    pub(crate) fn space(&mut self) -> Result<u32, RingFault> {
        let cons = self.ctrl.read_u32(self.cons_off);
        let used = self.prod.wrapping_sub(cons);
        if used > self.bytes.size {
            return Err(RingFault::Overrun { claimed: used, size: self.bytes.size });
        }
        if used > self.prod.wrapping_sub(self.cons_seen) {
            return Err(RingFault::Backwards { before: self.cons_seen, now: cons });
        }
        self.cons_seen = cons;
        // The peer's reads of the freed bytes complete before our writes into them.
        full_barrier();
        Ok(self.bytes.size - used)
    }

    /// Copies `src` (at most [`space`](Self::space) bytes) behind the producer index and
    /// publishes it.
    pub(crate) fn produce(&mut self, src: &[u8]) {
        self.bytes.copy_in(self.prod, src);
        write_barrier();
        self.prod = self.prod.wrapping_add(src.len() as u32);
        self.ctrl.write_u32(self.prod_off, self.prod);
    }

    pub(crate) fn size(&self) -> u32 {
        self.bytes.size()
    }
}

/// Ready bytes of the read ring, in place, lent to the caller of
/// [`Endpoint::with_readable`](super::Endpoint::with_readable).
///
/// The bytes are in shared memory: a hostile peer may change them while the view exists, so
/// copy each byte out once and look only at the copy. They may lie in two pieces (across the
/// ring's end) and across pages; [`copy_to`](Self::copy_to) hides that.
#[derive(Clone, Copy, Debug)]
pub struct VolatileRead<'a> {
    bytes: &'a RingBytes,
    start: u32,
    len: usize,
}

impl VolatileRead<'_> {
    /// Bytes in the view.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is ready.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies view bytes from `offset` into `dst`, as many as both have; returns how many.
    pub fn copy_to(&self, offset: usize, dst: &mut [u8]) -> usize {
        let n = dst.len().min(self.len.saturating_sub(offset));
        self.bytes.copy_out(self.start.wrapping_add(offset as u32), &mut dst[..n]);
        n
    }

    /// The byte at `offset`, if the view has it.
    pub fn byte(&self, offset: usize) -> Option<u8> {
        let mut b = [0u8];
        (self.copy_to(offset, &mut b) == 1).then_some(b[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grant_pool::PageCell;

    fn page() -> SharedPage {
        SharedPage::from_static(Box::leak(Box::new(PageCell::new())))
    }

    fn paged(order: u8) -> RingBytes {
        let mut pages = [None; MAX_RING_PAGES];
        let count = 1 << (order - 12);
        for p in pages.iter_mut().take(count) {
            *p = Some(page());
        }
        RingBytes::new(Storage::Pages { pages }, order)
    }

    #[test]
    fn copies_wrap_and_cross_pages() {
        let bytes = paged(13);
        let data: std::vec::Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        // Start 100 bytes before the end: wraps, and the first piece crosses nothing, the second
        // crosses the page boundary at 4096.
        let start = 8192 - 100 + 8192 * 3;
        bytes.copy_in(start, &data);
        let mut out = std::vec![0u8; 5000];
        bytes.copy_out(start, &mut out);
        assert_eq!(out, data);
        let ctrl = page();
        let in_page = RingBytes::new(Storage::InPage { page: ctrl, offset: 1024 }, 10);
        in_page.copy_in(
            1000,
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25],
        );
        assert_eq!(ctrl.read_u8(1024 + 1000), 1);
        assert_eq!(ctrl.read_u8(1024), 25);
        assert_eq!(ctrl.read_u8(1023), 0, "nothing written before the ring");
        assert_eq!(ctrl.read_u8(2048), 0, "nothing written past the ring");
    }

    #[test]
    fn peer_indices_are_checked() {
        let ctrl = page();
        let mut rd =
            ReadRing::new(ctrl, 0, 4, RingBytes::new(Storage::InPage { page: ctrl, offset: 1024 }, 10)).unwrap();
        ctrl.write_u32(4, 1024);
        assert_eq!(rd.ready(), Ok(1024));
        ctrl.write_u32(4, 1025);
        assert_eq!(rd.ready(), Err(RingFault::Overrun { claimed: 1025, size: 1024 }));
        ctrl.write_u32(4, 1000);
        assert_eq!(rd.ready(), Err(RingFault::Backwards { before: 1024, now: 1000 }));
        rd.consume(1024);
        assert_eq!(ctrl.read_u32(0), 1024);
        ctrl.write_u32(4, 1024 + 5);
        assert_eq!(rd.ready(), Ok(5));

        let mut wr =
            WriteRing::new(ctrl, 8, 12, RingBytes::new(Storage::InPage { page: ctrl, offset: 2048 }, 11)).unwrap();
        assert_eq!(wr.space(), Ok(2048));
        wr.produce(&[7; 100]);
        assert_eq!(ctrl.read_u32(12), 100);
        assert_eq!(wr.space(), Ok(1948));
        ctrl.write_u32(8, 60);
        assert_eq!(wr.space(), Ok(2008));
        ctrl.write_u32(8, 50);
        assert_eq!(wr.space(), Err(RingFault::Backwards { before: 60, now: 50 }));
        ctrl.write_u32(8, 101);
        assert!(matches!(wr.space(), Err(RingFault::Overrun { .. })), "consumer past the producer");
    }

    #[test]
    fn indices_wrap_around_u32() {
        let ctrl = page();
        ctrl.write_u32(0, u32::MAX - 10);
        ctrl.write_u32(4, u32::MAX - 10);
        let mut rd =
            ReadRing::new(ctrl, 0, 4, RingBytes::new(Storage::InPage { page: ctrl, offset: 1024 }, 10)).unwrap();
        ctrl.write_u32(4, 20);
        assert_eq!(rd.ready(), Ok(31));
        rd.consume(31);
        assert_eq!(ctrl.read_u32(0), 20);
    }
}
