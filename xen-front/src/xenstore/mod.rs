//! A non-blocking xenstore client, driven by the appliance's poll loop.
//!
//! A slow or hostile xenstored never stalls anything else: [`Client::submit`] only queues,
//! [`Client::poll`] moves whatever bytes fit in the 1 KiB rings *now* and says whether the
//! peer needs an event-channel kick, and results are collected later by request id. The
//! client makes no hypercalls, so it runs unchanged on the host in tests.
//!
//! - [`wire`]: the `xsd_sockmsg` header, message types, request encoding, reply shapes.
//! - [`ring`]: byte streams over the shared page (free-running indices, barriers, and checks
//!   of the peer's indices).
//! - [`Client`]: request slots, the response stream reader, watch events, deadlines.
//! - [`TxnRetry`]: restart a transaction from `TRANSACTION_START` on `EAGAIN`.
//!
//! # Model
//!
//! - Up to [`MAX_IN_FLIGHT`] (16) requests are outstanding; the 17th gets
//!   [`Error::TooManyInFlight`]. Each holds a 4 KiB slot buffer for its request and then its
//!   reply, so results need no heap: [`Client::take_reply`] lends the payload.
//! - Messages larger than the ring (up to 16 + 4096 bytes) stream through it in pieces, in
//!   both directions. Replies are matched by `req_id`, never by type.
//! - Each request has a deadline; when it passes, the request completes with
//!   [`Error::Timeout`], and a reply arriving later is dropped and counted
//!   ([`XsStats::dropped_late`]).
//! - Watch events go into a queue of [`EVENT_QUEUE_LEN`]; when it overflows, the sticky
//!   [`Client::events_lost`] flag tells the consumer to re-read everything it watches (events
//!   are only hints anyway).
//! - Peer garbage is counted and skipped where the stream stays in step (unknown type,
//!   unknown or stale `req_id`, payload malformed for its request). Where it cannot (a length
//!   over 4096, impossible ring indices), the client becomes
//!   [`Broken`](ClientState::Broken): pending requests fail with [`Error::Broken`] and
//!   nothing more touches the ring. Nothing panics, nothing waits.
//!
//! # Example
//!
//! ```
//! use grant_pool::{PageCell, SharedPage};
//! use xen_front::xenstore::{Client, Request, TxId};
//!
//! const TIMEOUT_NS: u64 = 5_000_000_000;
//! static CLIENT: spin::Mutex<Client> = spin::Mutex::new(Client::new());
//!
//! // At boot: the xenstore page (HVM_PARAM_STORE_PFN); a test page here.
//! let page = SharedPage::from_static(Box::leak(Box::new(PageCell::new())));
//! let mut xs = CLIENT.lock();
//! xs.attach(page);
//!
//! let now = 0;
//! let id = xs.submit(now, TIMEOUT_NS, TxId::NONE, Request::Read("name")).unwrap();
//!
//! // In the poll loop (on the store event channel, and on a timer for deadlines):
//! let outcome = xs.poll(now);
//! if outcome.notify_peer {
//!     // evtchn_send(store_port)
//! }
//! match xs.take_reply(id) {
//!     None => { /* still in flight: poll again later */ }
//!     Some(Ok(reply)) => { let _name: &[u8] = reply.payload(); }
//!     Some(Err(_e)) => { /* xenstored's errno, Timeout, Broken, ... */ }
//! }
//! while let Some(event) = xs.pop_event() {
//!     let (_path, _token) = (event.path, event.token); // re-read what this token watches
//! }
//! if xs.take_events_lost() {
//!     // re-read everything watched
//! }
//! # assert!(xs.poll(now).notify_peer == false);
//! ```

mod client;
mod error;
mod path;
pub mod ring;
mod txn;
pub mod wire;

#[cfg(test)]
mod tests;

pub use client::{
    Client, ClientState, EVENT_PAYLOAD_MAX, EVENT_QUEUE_LEN, Fault, MAX_IN_FLIGHT, PollOutcome, Reply, ReqId,
    WatchEvent, XsStats,
};
pub use error::Error;
pub use path::PathBuf;
pub use ring::{RingFault, XENSTORE_RING_SIZE};
pub use txn::{TxnRetry, TxnStep};
pub use wire::{Access, DirEntries, MsgType, Perm, Request, TxId, XENSTORE_PAYLOAD_MAX};
