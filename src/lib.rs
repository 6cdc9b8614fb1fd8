//! The portcullis appliance, minus its boot glue: options, capacities and the memory budget,
//! the counters registry and the control plane. Everything here runs on the host in tests;
//! `main.rs` wires it to the real Xen.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod control;
pub mod counters;
pub mod datapath;
pub mod downlink;
pub mod echo;
pub mod options;
pub mod qubes_link;
pub mod static_config;
pub mod uplink;
pub mod vchan_test;

/// The version string logged at boot.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
