//! vchan: byte channels over shared pages between two domains, compatible with Xen's
//! `libxenvchan` and Qubes' `libvchan-xen` (QubesDB on port 111, qrexec on 512 and 513+).
//!
//! - [`layout`]: the shared control page (`struct vchan_interface`), ring orders and where
//!   the rings live (order 10 and 11 inside the control page, ≥ 12 in granted pages).
//! - [`ring`]: one direction as a byte ring; peer indices checked on every use.
//! - [`rendezvous`]: the xenstore paths and values (`data/vchan/<client>/<port>/…`).
//! - [`sys`]: what the endpoint needs below it ([`VchanPlatform`], [`SharePool`]).
//! - [`Endpoint`]: both roles, the non-blocking state machine, reads, writes, close.
//!
//! # Using an endpoint from the poll loop
//!
//! ```text
//! let mut io = Io { xen: &Xen, xs: &mut xenstore, pool: &mut pool, now_ns };
//! // setup, once
//! qubesdb.connect(&mut io, ClientParams { self_domid, server: 0, port: 111, window })?;
//! qrexec.listen(&mut io, ServerParams { self_domid, client: 0, port: 512, read_min: 4096, write_min: 4096 })?;
//! // every pass (and whenever `ep.port()` fired), after the protocol code read and wrote:
//! match ep.poll(&mut io) {
//!     State::Connected => { ep.read(..) / ep.with_readable(..) / ep.write(..) until they return 0 }
//!     State::PeerClosed => { drain reads, then ep.close(&mut io) }
//!     State::Closed => { ep.error() says why; connect/listen again }
//!     _ => {}   // Listening, Looking, Closing: keep polling
//! }
//! ```
//!
//! Reads and writes never notify by themselves: they note what the peer must hear, and the
//! next `poll` (or [`Endpoint::flush`]) sends at most one event, and only if the peer asked for
//! it in its notify byte (libxenvchan's `send_notify`). When a read finds nothing (or a write
//! finds no room) the endpoint asks the peer for an event in the peer's notify byte, then
//! looks again, so no wake-up is lost. Bytes left unread do not raise another event: a caller
//! that stops reading early must come back without one ([`Endpoint::data_ready`]).
//!
//! # Hostile peers
//!
//! Every value the peer controls is checked: xenstore values ([`rendezvous::parse_ring_ref`],
//! [`rendezvous::parse_event_channel`]), ring orders ([`layout::Orders::check`]), grant
//! references (mapped through Xen, which checks them), indices on every access
//! ([`ring::RingFault`]: the channel is closed), live flags. Peer death is noticed through
//! its live flag or the event channel's state ([`PortStatus`]). A server's page that the
//! client keeps mapped after close is quarantined, never reused.

pub mod endpoint;
pub mod layout;
pub mod rendezvous;
pub mod ring;
pub mod sys;

pub use crate::platform::{PortState, PortStatus};
pub use endpoint::{ClientParams, Endpoint, Error, Io, Options, ServerParams, State, VchanStats};
pub use ring::{RingFault, VolatileRead};
pub use sys::{SharePool, VchanPlatform};
