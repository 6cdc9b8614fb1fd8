//! In-memory transports for tests: a pair of connected [`ByteChannel`] ends whose rings are
//! small (as small as the real 1 KiB/2 KiB in-page vchan rings, or smaller), so messages
//! larger than the ring must stream through.
//!
//! No heap: each direction is a fixed 64 KiB array of which only `capacity` bytes are used.

use core::cell::RefCell;

use crate::channel::ByteChannel;

const MAX_RING: usize = 65536;

/// One direction of a pipe.
struct Ring {
    buf: [u8; MAX_RING],
    cap: usize,
    head: usize,
    len: usize,
}

impl Ring {
    fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.cap - self.len);
        for &b in &data[..n] {
            self.buf[(self.head + self.len) % self.cap] = b;
            self.len += 1;
        }
        n
    }
    fn pop(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len);
        for o in &mut out[..n] {
            *o = self.buf[self.head];
            self.head = (self.head + 1) % self.cap;
            self.len -= 1;
        }
        n
    }
}

/// State shared by the two ends of a pipe.
pub struct Shared {
    ab: RefCell<Ring>,
    ba: RefCell<Ring>,
    a_open: core::cell::Cell<bool>,
    b_open: core::cell::Cell<bool>,
}

/// One end of an in-memory duplex pipe.
pub struct Pipe {
    shared: std::rc::Rc<Shared>,
    is_a: bool,
}

extern crate std;

impl Pipe {
    /// Two connected ends; each direction holds at most `capacity` bytes (1..=65536).
    ///
    /// # Panics
    ///
    /// When `capacity` is 0 or above 65536 (a test bug).
    #[must_use]
    pub fn pair(capacity: usize) -> (Pipe, Pipe) {
        assert!(capacity > 0 && capacity <= MAX_RING);
        let ring = || RefCell::new(Ring { buf: [0; MAX_RING], cap: capacity, head: 0, len: 0 });
        let shared = std::rc::Rc::new(Shared {
            ab: ring(),
            ba: ring(),
            a_open: core::cell::Cell::new(true),
            b_open: core::cell::Cell::new(true),
        });
        (Pipe { shared: shared.clone(), is_a: true }, Pipe { shared, is_a: false })
    }

    /// Closes this end: the other end's [`ByteChannel::is_open`] turns false.
    pub fn close(&mut self) {
        if self.is_a { self.shared.a_open.set(false) } else { self.shared.b_open.set(false) }
    }

    /// Bytes written by this end that the other end has not read yet.
    #[must_use]
    pub fn unread(&self) -> usize {
        if self.is_a { self.shared.ab.borrow().len } else { self.shared.ba.borrow().len }
    }

    /// Writes all of `data`, panicking if it does not fit (test helper).
    ///
    /// # Panics
    ///
    /// When the ring has no room for all of `data`.
    pub fn write_all(&mut self, data: &[u8]) {
        assert_eq!(self.write(data), data.len(), "test pipe full");
    }

    /// Reads everything available (test helper).
    #[must_use]
    pub fn read_all(&mut self) -> std::vec::Vec<u8> {
        let mut out = std::vec::Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = self.read(&mut buf);
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }
}

impl ByteChannel for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> usize {
        if self.is_a { self.shared.ba.borrow_mut().pop(buf) } else { self.shared.ab.borrow_mut().pop(buf) }
    }
    fn write(&mut self, buf: &[u8]) -> usize {
        if !self.is_open() {
            return 0;
        }
        if self.is_a { self.shared.ab.borrow_mut().push(buf) } else { self.shared.ba.borrow_mut().push(buf) }
    }
    fn is_open(&self) -> bool {
        self.shared.a_open.get() && self.shared.b_open.get()
    }
}
