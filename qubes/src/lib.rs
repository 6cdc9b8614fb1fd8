//! qubes: the Qubes OS side of portcullis — QubesDB client, configuration model, qrexec agent.
//!
//! Everything here sits above a byte stream ([`channel::ByteChannel`]): the vchan transport
//! lives in `xen-front`, so this crate runs and is tested on the host against in-memory pipes
//! (`testing::Pipe`, with the `test-utils` feature or in this crate's tests).
//!
//! - [`framed`]: turns a stream into messages with a per-protocol length function (KCM style).
//! - [`qubesdb`]: the QubesDB wire format, a fixed-capacity store and the client state machine
//!   (vchan client to dom0 port 111).
//! - [`config`]: the typed configuration built from the store, and the events the appliance
//!   acts on (uplink changed, rules committed, reseed).
//! - [`qrexec`]: the qrexec wire format, the agent's control channel (vchan server on port
//!   512) and per-request data connections.
//!
//! # Driving it from the poll loop
//!
//! ```text
//! // QubesDB (vchan client of dom0:111); `store` is a static `DefaultStore` (~800 KiB).
//! match db.poll(&mut qdb_chan, &mut store) {
//!     Ok(Some(ev)) => config.on_db_event(&store, &ev),
//!     Ok(None) => {}
//!     Err(e) => { log e; reconnect qdb_chan }          // db has reset itself; it re-syncs
//! }
//! while let Some(ev) = config.next_event() {
//!     match ev {
//!         UplinkChanged(u) => reconnect the uplink,
//!         RulesCommitted(ip) => match config.commit_rules(&store, ip, &mut rules_of[ip]) {
//!             Err(f @ (Parse(_) | StoreFull | NotCommitted)) =>
//!                 db.write(&mut store, IPTABLES_ERROR_KEY, iptables_error(ip, &f).as_bytes()),
//!             _ => {}
//!         },
//!         AllRulesCommitted => the same for every client, Reseed(s) => mix s into the CSPRNG, ..
//!     }
//! }
//! // qrexec (vchan server on port 512).
//! match agent.poll_control(&mut ctrl_chan) {
//!     Ok(Some(OpenData { id, domain, port })) => open a vchan client to (domain, port) for id,
//!     Err(_) => { close ctrl_chan; listen again }      // agent has reset itself
//!     _ => {}
//! }
//! for each open data channel (id, chan): match agent.poll_data(id, &mut chan) {
//!     Ok(Some(SetWallClock(t))) => set the wall clock, Ok(Some(Finished { .. })) | Err(_) => close chan,
//!     _ => {}
//! }
//! ```
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
