//! The byte transport every protocol here runs over.
//!
//! A vchan endpoint (in `xen-front`) implements [`ByteChannel`]; the host tests implement it
//! with in-memory pipes of small capacity (`testing::Pipe`, feature `test-utils`).

/// A non-blocking, reliable, ordered byte stream to one peer (a vchan endpoint).
///
/// Both calls return at once: they move what fits now and report how much that was.
pub trait ByteChannel {
    /// Copies up to `buf.len()` received bytes into `buf`; returns how many (0 = none ready).
    fn read(&mut self, buf: &mut [u8]) -> usize;
    /// Queues up to `buf.len()` bytes for the peer; returns how many were taken (may be fewer
    /// than offered, 0 when the ring is full).
    fn write(&mut self, buf: &[u8]) -> usize;
    /// Whether the peer is still connected. Bytes already received may still be read after it
    /// went away.
    fn is_open(&self) -> bool;
}

impl<T: ByteChannel + ?Sized> ByteChannel for &mut T {
    fn read(&mut self, buf: &mut [u8]) -> usize {
        (**self).read(buf)
    }
    fn write(&mut self, buf: &[u8]) -> usize {
        (**self).write(buf)
    }
    fn is_open(&self) -> bool {
        (**self).is_open()
    }
}
