//! firewall: the portcullis firewall engine (Qubes rules; connection tracking and source NAT;
//! the forwarding pipeline; the `dsthost` resolver).
//!
//! `no_std`, no heap: capacities are the constants of [`config`].
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod conntrack;
pub mod forward;
pub mod resolver;
pub mod rules;
#[cfg(test)]
mod testutil;
