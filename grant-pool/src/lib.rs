//! The fixed pool of non-moving pages with fixed grant references, and the shared-memory
//! primitives every ring and protocol page is built on.
//!
//! - [`shared`]: [`SharedPage`], atomic-only access to a page another domain may write.
//! - [`grant`]: our grant table's v1 entries, written and ended in the order Xen requires.
//! - [`pool`]: [`GrantPool`] and the typed page states `Slot<Private>`, `Slot<Lent>`,
//!   [`SharedSlot`], quarantine.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

pub mod grant;
pub mod pool;
pub mod shared;

pub use grant::{Access, DomId, GrantEntries, GrantRef, StillInUse};
pub use pool::{GrantPool, Lent, PoolCounts, PoolError, PoolStats, Private, SharedSlot, Slot, TableFrames};
pub use shared::{PAGE_SIZE, PageCell, SharedPage};
