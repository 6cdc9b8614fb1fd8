//! Host integration tests and the simulated Xen ([`sim`]).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod sim;
