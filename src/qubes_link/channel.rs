//! A vchan [`Endpoint`] seen as the byte stream the Qubes protocols run over.

use qubes::channel::ByteChannel;
use xen_front::vchan::{Endpoint, SharePool, State};

/// Borrows an endpoint as a [`ByteChannel`] for one protocol call.
///
/// Reads and writes only move bytes; the peer hears of them at the endpoint's next
/// `poll`/`flush`. The channel is open while the endpoint is connected: once the peer has
/// closed, what it sent can still be read, and writes take nothing.
pub struct VchanChannel<'e, S: SharePool>(pub &'e mut Endpoint<S>);

impl<S: SharePool> ByteChannel for VchanChannel<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> usize {
        self.0.read(buf)
    }

    fn write(&mut self, buf: &[u8]) -> usize {
        self.0.write(buf)
    }

    fn is_open(&self) -> bool {
        self.0.state() == State::Connected
    }
}
