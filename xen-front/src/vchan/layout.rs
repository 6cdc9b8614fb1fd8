//! The shared control page (`struct vchan_interface`, `xen/include/public/io/libxenvchan.h`)
//! and the ring geometry both libxenvchan and Qubes' libvchan-xen use.
//!
//! ```text
//! off  size  field
//!   0     4  left.cons     left ring: client writes, server reads
//!   4     4  left.prod
//!   8     4  right.cons    right ring: server writes, client reads
//!  12     4  right.prod
//!  16     2  left_order    ring size = 1 << order
//!  18     2  right_order
//!  20     1  cli_live      0 exited, 1 connected, 2 not yet connected
//!  21     1  srv_live
//!  22     1  cli_notify    bits the client must notify on (the server's requests)
//!  23     1  srv_notify    bits the server must notify on (the client's requests)
//!  24   4*n  grants[]      left ring pages first, then right ring pages
//! ```
//!
//! Order 10 puts a ring inside the control page at offset 1024, order 11 at offset 2048;
//! orders ≥ 12 use `2^(order-12)` separately granted pages.

use grant_pool::PAGE_SIZE;

/// Byte offsets in the control page.
pub mod off {
    /// `left.cons` (written by the server).
    pub const LEFT_CONS: usize = 0;
    /// `left.prod` (written by the client).
    pub const LEFT_PROD: usize = 4;
    /// `right.cons` (written by the client).
    pub const RIGHT_CONS: usize = 8;
    /// `right.prod` (written by the server).
    pub const RIGHT_PROD: usize = 12;
    /// `left_order` (u16).
    pub const LEFT_ORDER: usize = 16;
    /// `right_order` (u16).
    pub const RIGHT_ORDER: usize = 18;
    /// `cli_live` (u8).
    pub const CLI_LIVE: usize = 20;
    /// `srv_live` (u8).
    pub const SRV_LIVE: usize = 21;
    /// `cli_notify` (u8): the server's requests, acted on by the client.
    pub const CLI_NOTIFY: usize = 22;
    /// `srv_notify` (u8): the client's requests, acted on by the server.
    pub const SRV_NOTIFY: usize = 23;
    /// `grants[0]` (u32 each).
    pub const GRANTS: usize = 24;
}

/// `VCHAN_NOTIFY_WRITE`: "notify me when you write".
pub const NOTIFY_WRITE: u8 = 0x1;
/// `VCHAN_NOTIFY_READ`: "notify me when you consume".
pub const NOTIFY_READ: u8 = 0x2;

/// Values of `cli_live` / `srv_live`.
pub mod live {
    /// The side exited (or never came).
    pub const EXITED: u8 = 0;
    /// The side is connected.
    pub const CONNECTED: u8 = 1;
    /// The side has not connected yet (the server's initial `cli_live`).
    pub const WAITING: u8 = 2;
}

/// Order of a 1 KiB ring inside the control page.
pub const SMALL_ORDER: u8 = 10;
/// Order of a 2 KiB ring inside the control page.
pub const LARGE_ORDER: u8 = 11;
/// First order that uses separate pages.
pub const PAGE_ORDER: u8 = 12;
/// Largest order libxenvchan accepts (`MAX_RING_SHIFT`).
pub const XEN_MAX_ORDER: u8 = 20;
/// Largest order this implementation supports (16 pages per ring, 64 KiB: qrexec's data
/// rings). Larger orders, valid for libxenvchan, are refused with
/// [`OrderError::Unsupported`]: their page arrays would not be small fixed-size tables.
pub const MAX_ORDER: u8 = 16;
/// Pages of one ring at [`MAX_ORDER`].
pub const MAX_RING_PAGES: usize = 1 << (MAX_ORDER - PAGE_ORDER);
/// Pages of one endpoint at most: the control page and two rings.
pub const MAX_PAGES: usize = 1 + 2 * MAX_RING_PAGES;

/// Where a ring's bytes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Inside the control page, at this byte offset.
    InPage(usize),
    /// In this many separately granted pages.
    Pages(usize),
}

/// The placement of a ring of `order`; `None` outside `10..=MAX_ORDER`.
pub fn placement(order: u8) -> Option<Placement> {
    match order {
        SMALL_ORDER => Some(Placement::InPage(1024)),
        LARGE_ORDER => Some(Placement::InPage(2048)),
        PAGE_ORDER..=MAX_ORDER => Some(Placement::Pages(1 << (order - PAGE_ORDER))),
        _ => None,
    }
}

/// Why a pair of ring orders is unacceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderError {
    /// Outside libxenvchan's `10..=20`, or both rings in the page at the same offset.
    Invalid {
        /// The left order as read.
        left: u16,
        /// The right order as read.
        right: u16,
    },
    /// Valid for libxenvchan but above [`MAX_ORDER`].
    Unsupported {
        /// The larger order.
        order: u16,
    },
    /// A requested ring size above `1 << MAX_ORDER`.
    TooLarge(usize),
}

/// The two ring orders of a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Orders {
    /// Left ring (client → server).
    pub left: u8,
    /// Right ring (server → client).
    pub right: u8,
}

impl Orders {
    /// Checks the orders a server wrote (an allegation, for the client), as
    /// `libxenvchan_client_init` does, then against [`MAX_ORDER`].
    pub fn check(left: u16, right: u16) -> Result<Orders, OrderError> {
        let valid = |o: u16| (u16::from(SMALL_ORDER)..=u16::from(XEN_MAX_ORDER)).contains(&o);
        if !valid(left) || !valid(right) || (left == right && left < u16::from(PAGE_ORDER)) {
            return Err(OrderError::Invalid { left, right });
        }
        let max = left.max(right);
        if max > u16::from(MAX_ORDER) {
            return Err(OrderError::Unsupported { order: max });
        }
        // Both are ≤ MAX_ORDER < 256 now.
        Ok(Orders { left: left as u8, right: right as u8 })
    }

    /// The orders a server picks for at least `read_min` bytes of left ring (what it reads)
    /// and `write_min` bytes of right ring, by `libxenvchan_server_init`'s rule: in-page rings
    /// when they fit (only one of each size), else whole pages.
    pub fn for_sizes(read_min: usize, write_min: usize) -> Result<Orders, OrderError> {
        fn page_order(n: usize) -> Result<u8, OrderError> {
            let mut order = PAGE_ORDER;
            while (1usize << order) < n {
                order += 1;
                if order > MAX_ORDER {
                    return Err(OrderError::TooLarge(n));
                }
            }
            Ok(order)
        }
        let (mut left, mut right) = (page_order(read_min)?, page_order(write_min)?);
        let (small, large) = (1usize << SMALL_ORDER, 1usize << LARGE_ORDER);
        if read_min <= small && write_min <= large {
            (left, right) = (SMALL_ORDER, LARGE_ORDER);
        } else if read_min <= large && write_min <= small {
            (left, right) = (LARGE_ORDER, SMALL_ORDER);
        } else if read_min <= large {
            left = LARGE_ORDER;
        } else if write_min <= large {
            right = LARGE_ORDER;
        }
        Ok(Orders { left, right })
    }

    /// Separate pages of the left and right rings (0 for in-page rings).
    pub fn pages(self) -> (usize, usize) {
        let n = |o: u8| match placement(o) {
            Some(Placement::Pages(n)) => n,
            _ => 0,
        };
        (n(self.left), n(self.right))
    }
}

/// Byte offset of `grants[i]`.
pub const fn grant_offset(i: usize) -> usize {
    off::GRANTS + 4 * i
}

// The grant array of the largest channel ends before the first in-page ring.
const _: () = assert!(grant_offset(2 * MAX_RING_PAGES) <= 1024 && 2048 + 2048 == PAGE_SIZE);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_order_choice_follows_libxenvchan() {
        let o = |r, w| Orders::for_sizes(r, w).map(|o| (o.left, o.right));
        assert_eq!(o(1024, 2048), Ok((10, 11)));
        assert_eq!(o(100, 100), Ok((10, 11)));
        assert_eq!(o(2048, 1024), Ok((11, 10)));
        assert_eq!(o(2048, 4096), Ok((11, 12)));
        assert_eq!(o(4096, 2048), Ok((12, 11)));
        assert_eq!(o(4096, 4096), Ok((12, 12)));
        assert_eq!(o(65536, 65536), Ok((16, 16)));
        assert_eq!(o(5000, 65536), Ok((13, 16)));
        assert_eq!(o(65537, 10), Err(OrderError::TooLarge(65537)));
    }

    #[test]
    fn client_checks_the_alleged_orders() {
        assert_eq!(Orders::check(10, 11), Ok(Orders { left: 10, right: 11 }));
        assert_eq!(Orders::check(12, 12), Ok(Orders { left: 12, right: 12 }));
        assert_eq!(Orders::check(10, 10), Err(OrderError::Invalid { left: 10, right: 10 }));
        assert_eq!(Orders::check(11, 11), Err(OrderError::Invalid { left: 11, right: 11 }));
        assert_eq!(Orders::check(9, 12), Err(OrderError::Invalid { left: 9, right: 12 }));
        assert_eq!(Orders::check(12, 21), Err(OrderError::Invalid { left: 12, right: 21 }));
        assert_eq!(Orders::check(0xffff, 12), Err(OrderError::Invalid { left: 0xffff, right: 12 }));
        assert_eq!(Orders::check(17, 12), Err(OrderError::Unsupported { order: 17 }));
    }

    #[test]
    fn placements_and_page_counts() {
        assert_eq!(placement(10), Some(Placement::InPage(1024)));
        assert_eq!(placement(11), Some(Placement::InPage(2048)));
        assert_eq!(placement(12), Some(Placement::Pages(1)));
        assert_eq!(placement(16), Some(Placement::Pages(16)));
        assert_eq!(placement(17), None);
        assert_eq!(Orders { left: 10, right: 16 }.pages(), (0, 16));
    }
}
