//! Messages out of a byte stream: a fixed header whose length function gives the message
//! length, as Linux KCM's parser does.
//!
//! [`FramedReader::poll`] copies the header out of the stream once, asks the protocol's
//! length function for the total length, then copies the body straight into the caller's
//! message buffer, behind the header. A message larger than the transport's ring streams
//! through over several polls; the reader never reads past the end of the current message,
//! so it needs no buffer of its own beyond the header. QubesDB (72-byte header) and qrexec
//! (8-byte header) are two length functions for the same reader.

use crate::channel::ByteChannel;

/// Why a stream cannot be framed. The stream is out of step with the peer after any of
/// these: the caller resets the channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError<E> {
    /// The protocol's length function refused the header.
    Header(E),
    /// The header announces a message longer than the reader's bound.
    TooLong {
        /// Total length the header announced (header included).
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The header announces fewer bytes than the header itself (a broken length function).
    TooShort {
        /// Total length the length function returned.
        len: usize,
    },
    /// The caller's message buffer cannot even hold the header.
    BufferTooSmall,
}

/// A protocol's length function: header → total message length (header included), or why
/// the header is unacceptable.
pub type LengthFn<const H: usize, E> = fn(&[u8; H]) -> Result<usize, E>;

/// Frames one stream. `H` is the protocol's fixed header length.
#[derive(Clone, Debug)]
pub struct FramedReader<const H: usize, E> {
    length: LengthFn<H, E>,
    max: usize,
    header: [u8; H],
    /// Bytes of the current message consumed from the stream so far (header included).
    got: usize,
    /// Total length of the current message, once its header is complete.
    total: Option<usize>,
}

impl<const H: usize, E: Copy> FramedReader<H, E> {
    /// A reader for messages of at most `max` bytes (header included), measured by `length`.
    #[must_use]
    pub const fn new(length: LengthFn<H, E>, max: usize) -> Self {
        Self { length, max, header: [0; H], got: 0, total: None }
    }

    /// Forgets any partial message (the channel was reset).
    pub fn reset(&mut self) {
        self.got = 0;
        self.total = None;
    }

    /// Whether part of a message has been consumed and the rest is still awaited.
    #[must_use]
    pub const fn in_message(&self) -> bool {
        self.got > 0
    }

    /// Reads what the transport has, up to the end of the current message, into `msg`.
    ///
    /// Returns `Ok(Some(len))` when a message is complete: its first `min(len, msg.len())`
    /// bytes (header included) are in `msg`. A message longer than `msg` but within the
    /// bound is delivered truncated to `msg.len()` (the rest is consumed and dropped), so
    /// `len > msg.len()` tells the caller it only has the beginning. `Ok(None)`: not complete
    /// yet; call again with the same `msg` (the bytes read so far are kept there).
    ///
    /// # Errors
    ///
    /// See [`FrameError`]; the stream cannot be resynchronised after one.
    pub fn poll<C: ByteChannel + ?Sized>(
        &mut self,
        chan: &mut C,
        msg: &mut [u8],
    ) -> Result<Option<usize>, FrameError<E>> {
        if msg.len() < H {
            return Err(FrameError::BufferTooSmall);
        }
        let total = match self.total {
            Some(t) => t,
            None => {
                while self.got < H {
                    let n = chan.read(&mut self.header[self.got..]).min(H - self.got);
                    if n == 0 {
                        return Ok(None);
                    }
                    self.got += n;
                }
                let total = (self.length)(&self.header).map_err(|e| {
                    self.reset();
                    FrameError::Header(e)
                })?;
                if total > self.max {
                    self.reset();
                    return Err(FrameError::TooLong { len: total, max: self.max });
                }
                if total < H {
                    self.reset();
                    return Err(FrameError::TooShort { len: total });
                }
                msg[..H].copy_from_slice(&self.header);
                self.total = Some(total);
                total
            }
        };
        while self.got < total {
            let n = if self.got < msg.len() {
                let end = total.min(msg.len());
                chan.read(&mut msg[self.got..end]).min(end - self.got)
            } else {
                // Past what the caller can hold: consume and drop.
                let mut sink = [0u8; 64];
                let want = (total - self.got).min(sink.len());
                chan.read(&mut sink[..want]).min(want)
            };
            if n == 0 {
                return Ok(None);
            }
            self.got += n;
        }
        self.reset();
        Ok(Some(total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Pipe;

    // A toy protocol: 3-byte header, tag 0xAA then a big-endian u16 body length.
    fn toy_len(h: &[u8; 3]) -> Result<usize, u8> {
        if h[0] != 0xAA {
            return Err(h[0]);
        }
        Ok(3 + usize::from(u16::from_be_bytes([h[1], h[2]])))
    }

    fn toy(body: &[u8]) -> std::vec::Vec<u8> {
        let mut v = std::vec![0xAA];
        v.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn message_larger_than_the_ring_streams_through() {
        let (mut tx, mut rx) = Pipe::pair(1024);
        let body: std::vec::Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        let wire = toy(&body);
        let mut r: FramedReader<3, u8> = FramedReader::new(toy_len, 4000);
        let mut msg = [0u8; 4000];
        let mut sent = 0;
        let mut polls = 0;
        let len = loop {
            sent += tx.write(&wire[sent..]);
            polls += 1;
            if let Some(len) = r.poll(&mut rx, &mut msg).unwrap() {
                break len;
            }
            assert!(polls < 10);
        };
        assert!(polls >= 3, "a 3003-byte message cannot pass a 1 KiB ring in fewer than 3 polls");
        assert_eq!(len, wire.len());
        assert_eq!(&msg[..len], &wire[..]);
    }

    #[test]
    fn never_reads_past_the_message_end() {
        let (mut tx, mut rx) = Pipe::pair(2048);
        tx.write_all(&toy(b"one"));
        tx.write_all(&toy(b"second"));
        let mut r: FramedReader<3, u8> = FramedReader::new(toy_len, 100);
        let mut msg = [0u8; 100];
        assert_eq!(r.poll(&mut rx, &mut msg), Ok(Some(6)));
        assert_eq!(&msg[3..6], b"one");
        assert_eq!(r.poll(&mut rx, &mut msg), Ok(Some(9)));
        assert_eq!(&msg[3..9], b"second");
        assert_eq!(r.poll(&mut rx, &mut msg), Ok(None));
    }

    #[test]
    fn header_split_across_polls() {
        let (mut tx, mut rx) = Pipe::pair(64);
        let wire = toy(b"xy");
        let mut r: FramedReader<3, u8> = FramedReader::new(toy_len, 100);
        let mut msg = [0u8; 100];
        for (i, b) in wire.iter().enumerate() {
            tx.write_all(&[*b]);
            let got = r.poll(&mut rx, &mut msg).unwrap();
            assert_eq!(got.is_some(), i == wire.len() - 1);
        }
        assert_eq!(&msg[..5], &wire[..]);
    }

    #[test]
    fn errors_are_specific_and_reset_the_reader() {
        let (mut tx, mut rx) = Pipe::pair(64);
        let mut r: FramedReader<3, u8> = FramedReader::new(toy_len, 10);
        let mut msg = [0u8; 16];
        tx.write_all(&[0x55, 0, 0]);
        assert_eq!(r.poll(&mut rx, &mut msg), Err(FrameError::Header(0x55)));
        assert!(!r.in_message());
        tx.write_all(&[0xAA, 0, 8]);
        assert_eq!(r.poll(&mut rx, &mut msg), Err(FrameError::TooLong { len: 11, max: 10 }));
        assert_eq!(r.poll(&mut rx, &mut [0u8; 2]), Err(FrameError::BufferTooSmall));
        let mut bad: FramedReader<3, u8> = FramedReader::new(|_| Ok(1), 10);
        tx.write_all(&[1, 2, 3]);
        assert_eq!(bad.poll(&mut rx, &mut msg), Err(FrameError::TooShort { len: 1 }));
    }

    #[test]
    fn longer_than_the_buffer_within_the_bound_is_truncated_and_the_stream_stays_in_step() {
        let (mut tx, mut rx) = Pipe::pair(512);
        let mut r: FramedReader<3, u8> = FramedReader::new(toy_len, 1000);
        let mut msg = [0u8; 8];
        tx.write_all(&toy(&[7u8; 200]));
        tx.write_all(&toy(b"ok"));
        assert_eq!(r.poll(&mut rx, &mut msg), Ok(Some(203)));
        assert_eq!(&msg[3..8], &[7u8; 5]);
        assert_eq!(r.poll(&mut rx, &mut msg), Ok(Some(5)));
        assert_eq!(&msg[3..5], b"ok");
    }
}
