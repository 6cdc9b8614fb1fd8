//! The Xen platform layer of portcullis: hypercalls, start info, shared info and event
//! channels, time, the PV console, xenstore, grant tables, and (later) the split drivers.
//!
//! Everything that executes privileged instructions or touches Xen-shared memory lives here
//! (and in `grant-pool`), each `unsafe` block with its argument. Protocol logic above the
//! hypercall line is plain safe code that also runs on the host against the simulated Xen.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

pub mod abi;
pub mod arch;
pub mod console;
pub mod entropy;
pub mod events;
pub mod gnttab;
pub mod hypercall;
pub mod netback;
pub mod netfront;
pub mod netif;
pub mod platform;
pub mod ring;
pub mod start_info;
pub mod time;
pub mod vchan;
pub mod xenbus;
pub mod xenstore;
