//! The fixed pool of non-moving pages with fixed grant references, and the shared-memory
//! primitives every ring and protocol page is built on.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

pub mod shared;

pub use shared::{PAGE_SIZE, PageCell, SharedPage};
