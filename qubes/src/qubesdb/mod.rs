//! QubesDB: dom0's key-value store for this VM, mirrored over a vchan (we are the client of
//! dom0's port 111).
//!
//! - [`wire`]: the message format (`struct qdb_hdr` + data).
//! - [`store`]: the fixed-capacity local copy.
//! - [`client`]: the state machine (full sync, then dom0's pushes, our own writes).

pub mod client;
pub mod store;
pub mod wire;

pub use client::{Client, Event};
pub use store::{DefaultStore, Store, StoreError};
