//! xenstored's side of a domain's xenstore ring page (`struct xenstore_domain_interface`,
//! `io/xs_wire.h`): it consumes the request stream and produces the response stream.

use grant_pool::SharedPage;
use grant_pool::shared::{full_barrier, read_barrier, write_barrier};

/// Bytes in each direction's ring.
pub const RING_SIZE: u32 = 1024;
/// Offsets in the page (xen-abi.md §4.2).
pub mod offsets {
    /// Guest-to-xenstored bytes.
    pub const REQ: usize = 0;
    /// xenstored-to-guest bytes.
    pub const RSP: usize = 1024;
    /// Written by xenstored.
    pub const REQ_CONS: usize = 2048;
    /// Written by the guest.
    pub const REQ_PROD: usize = 2052;
    /// Written by the guest.
    pub const RSP_CONS: usize = 2056;
    /// Written by xenstored.
    pub const RSP_PROD: usize = 2060;
}

/// The guest wrote impossible indices (more unconsumed bytes than the ring holds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadIndices;

/// Takes up to `max` request bytes; the consumer index is published at once.
pub(crate) fn take_requests(page: SharedPage, max: usize) -> Result<Vec<u8>, BadIndices> {
    let cons = page.read_u32(offsets::REQ_CONS);
    let prod = page.read_u32(offsets::REQ_PROD);
    let avail = prod.wrapping_sub(cons);
    if avail > RING_SIZE {
        return Err(BadIndices);
    }
    read_barrier();
    let n = (avail as usize).min(max);
    let bytes =
        (0..n).map(|i| page.read_u8(offsets::REQ + (cons.wrapping_add(i as u32) % RING_SIZE) as usize)).collect();
    full_barrier();
    page.write_u32(offsets::REQ_CONS, cons.wrapping_add(n as u32));
    Ok(bytes)
}

/// Writes as many of `bytes` as fit into the response ring; returns how many.
pub(crate) fn put_responses(page: SharedPage, bytes: &[u8]) -> Result<usize, BadIndices> {
    let cons = page.read_u32(offsets::RSP_CONS);
    let prod = page.read_u32(offsets::RSP_PROD);
    let used = prod.wrapping_sub(cons);
    if used > RING_SIZE {
        return Err(BadIndices);
    }
    full_barrier();
    let n = ((RING_SIZE - used) as usize).min(bytes.len());
    for (i, &b) in bytes[..n].iter().enumerate() {
        page.write_u8(offsets::RSP + (prod.wrapping_add(i as u32) % RING_SIZE) as usize, b);
    }
    write_barrier();
    page.write_u32(offsets::RSP_PROD, prod.wrapping_add(n as u32));
    Ok(n)
}
