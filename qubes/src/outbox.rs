//! Bytes waiting to be written to a [`ByteChannel`] whose ring is full.
//!
//! Messages are queued whole or not at all, so a full ring never leaves half a message
//! behind: the state machines check [`Outbox::room`] before they take on work that needs an
//! answer, which turns a peer that does not read into back-pressure instead of lost replies.

use crate::channel::ByteChannel;

/// The outbox has no room for the whole message; nothing was queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutboxFull;

/// A fixed ring of `N` bytes in front of a [`ByteChannel`].
#[derive(Clone, Debug)]
pub struct Outbox<const N: usize> {
    buf: [u8; N],
    head: usize,
    len: usize,
}

impl<const N: usize> Default for Outbox<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Outbox<N> {
    /// An empty outbox.
    #[must_use]
    pub const fn new() -> Self {
        Self { buf: [0; N], head: 0, len: 0 }
    }

    /// Bytes that can still be queued.
    #[must_use]
    pub const fn room(&self) -> usize {
        N - self.len
    }

    /// Whether everything queued has been handed to the channel.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops everything queued (the channel is being reset).
    pub fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }

    /// Queues the concatenation of `parts` as one message, all or nothing.
    ///
    /// # Errors
    ///
    /// [`OutboxFull`] when the parts together do not fit; nothing is queued then.
    pub fn push(&mut self, parts: &[&[u8]]) -> Result<(), OutboxFull> {
        let total = parts.iter().try_fold(0usize, |acc, p| acc.checked_add(p.len())).ok_or(OutboxFull)?;
        if total > self.room() {
            return Err(OutboxFull);
        }
        for part in parts {
            for &b in *part {
                let at = (self.head + self.len) % N;
                self.buf[at] = b;
                self.len += 1;
            }
        }
        Ok(())
    }

    /// Hands as much as the channel takes to it. Returns whether the outbox is now empty.
    pub fn flush<C: ByteChannel + ?Sized>(&mut self, chan: &mut C) -> bool {
        while self.len > 0 {
            let end = (self.head + self.len).min(N);
            let chunk = &self.buf[self.head..end];
            // The channel is ours, but a count larger than offered must not corrupt the ring.
            let n = chan.write(chunk).min(chunk.len());
            if n == 0 {
                break;
            }
            self.head = (self.head + n) % N;
            self.len -= n;
        }
        if self.len == 0 {
            self.head = 0;
        }
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Pipe;

    #[test]
    fn all_or_nothing_and_flushes_in_order_across_a_small_ring() {
        let mut ob: Outbox<16> = Outbox::new();
        assert_eq!(ob.push(&[b"0123456789", b"ab"]), Ok(()));
        assert_eq!(ob.push(&[b"cdefg"]), Err(OutboxFull));
        assert_eq!(ob.room(), 4);
        let (mut a, mut b) = Pipe::pair(5);
        assert!(!ob.flush(&mut a));
        assert_eq!(ob.push(&[b"cdefg"]), Ok(()));
        let mut got = std::vec::Vec::new();
        let mut buf = [0u8; 3];
        for _ in 0..20 {
            ob.flush(&mut a);
            let n = b.read(&mut buf);
            got.extend_from_slice(&buf[..n]);
        }
        assert!(ob.is_empty());
        assert_eq!(got, b"0123456789abcdefg");
    }
}
