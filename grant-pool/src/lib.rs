//! grant-pool
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]
