//! netstack: wire formats, Internet checksums and packet builders for portcullis.
//!
//! Everything the firewall reads from or writes to a network goes through this crate. It is
//! the first code that touches bytes a hostile VM chose, so it is written to three rules:
//!
//! * no `unsafe`, no allocation, `no_std`;
//! * no panic is reachable from any input bytes;
//! * every format is checked byte for byte against an independent implementation (scapy),
//!   see `tests/corpus.rs` and `tests/builders.rs`.
//!
//! # Layout
//!
//! The wire layer follows smoltcp's two sub-layers. Each protocol module has
//!
//! * a zero-copy `Packet<T: AsRef<[u8]>>` (`Frame` for Ethernet) with `new_unchecked`,
//!   `new_checked` and `check_len`, typed getters, and setters when `T: AsMut<[u8]>`;
//! * a small `Repr` with `parse`, `buffer_len` and `emit`.
//!
//! **The length contract:** once `check_len()` returned `Ok(())` (which `new_checked` does),
//! no accessor or setter of that packet panics. When parsing untrusted input, always use
//! `new_checked`. When emitting into a fresh buffer, use `new_unchecked` after making sure
//! the buffer is at least `Repr::buffer_len()` long (`emit` documents its own preconditions;
//! the [`builder`] functions check everything and return [`Error`] instead).
//!
//! Enumerations (`EtherType`, `IpProtocol`, ICMP types, ...) keep unknown values in an
//! `Unknown(raw)` arm, so a packet round-trips unchanged.
//!
//! Beyond the formats: [`checksum`] (fast Internet checksum, pseudo-headers, RFC 1624
//! incremental updates, the partial-checksum case of offload), [`nat`] (in-place address and
//! port rewriting with checksum fix-up) and [`builder`] (ARP, ICMP errors, echo replies, NDP,
//! DNS queries, and the "may an ICMP error be sent" predicate).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[macro_use]
mod macros;

pub mod arp;
pub mod builder;
pub mod checksum;
pub mod dns;
pub mod ethernet;
pub mod icmpv4;
pub mod icmpv6;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod nat;
pub mod tcp;
pub mod udp;

pub use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
pub use ethernet::EthernetAddress;
pub use ip::IpProtocol;

/// The error type of the whole crate: the input is malformed, is not supported, or an
/// output does not fit the buffer given. It deliberately carries no payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Error;

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("netstack::Error")
    }
}

impl core::error::Error for Error {}

/// The result type of the whole crate.
pub type Result<T> = core::result::Result<T, Error>;

/// Byte ranges of header fields, used by the private `field` modules.
pub(crate) mod field {
    /// A field of fixed position.
    pub type Field = core::ops::Range<usize>;
    /// Everything from a position on.
    pub type Rest = core::ops::RangeFrom<usize>;
}

/// Read a big-endian `u16` at `at`. Callers guarantee `at + 2 <= data.len()`.
#[inline]
pub(crate) fn read_u16(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([data[at], data[at + 1]])
}

/// Read a big-endian `u32` at `at`. Callers guarantee `at + 4 <= data.len()`.
#[inline]
pub(crate) fn read_u32(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

/// Write a big-endian `u16` at `at`. Callers guarantee `at + 2 <= data.len()`.
#[inline]
pub(crate) fn write_u16(data: &mut [u8], at: usize, value: u16) {
    data[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

/// Write a big-endian `u32` at `at`. Callers guarantee `at + 4 <= data.len()`.
#[inline]
pub(crate) fn write_u32(data: &mut [u8], at: usize, value: u32) {
    data[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

#[inline]
pub(crate) fn read_ipv4(data: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(data[at], data[at + 1], data[at + 2], data[at + 3])
}

#[inline]
pub(crate) fn read_ipv6(data: &[u8], at: usize) -> Ipv6Addr {
    let mut b = [0u8; 16];
    b.copy_from_slice(&data[at..at + 16]);
    Ipv6Addr::from(b)
}
