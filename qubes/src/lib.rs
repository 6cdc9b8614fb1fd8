//! qubes: the Qubes OS side of portcullis — QubesDB client, configuration model, qrexec agent.
//!
//! Everything here sits above a byte stream ([`channel::ByteChannel`]): the vchan transport
//! lives in `xen-front`, so this crate runs and is tested on the host against in-memory pipes
//! ([`testing::Pipe`], with the `test-utils` feature or in this crate's tests).
//!
//! - [`framed`]: turns a stream into messages with a per-protocol length function (KCM style).
//! - [`qubesdb`]: the QubesDB wire format, a fixed-capacity store and the client state machine
//!   (vchan client to dom0 port 111).
//! - [`config`]: the typed configuration built from the store, and the events the appliance
//!   acts on (uplink changed, rules committed, reseed).
//! - [`qrexec`]: the qrexec wire format, the agent's control channel (vchan server on port
//!   512) and per-request data connections.
//!
//! No heap: every buffer and table has a capacity fixed at compile time. Every byte the peer
//! writes is validated before use; bad input is an error value, never a panic.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod channel;
pub mod config;
pub mod framed;
pub mod outbox;
pub mod qrexec;
pub mod qubesdb;
#[cfg(any(test, feature = "test-utils"))]
pub mod testing;
