//! Packet builders shared by the crate's unit tests (conntrack, forwarding).

use core::net::Ipv4Addr;
use std::vec;
use std::vec::Vec;

use netstack::ip::IpProtocol;
use netstack::{ipv4, tcp, udp};

/// The IPv4 header fields a test varies.
pub(crate) struct Ip {
    pub(crate) src: Ipv4Addr,
    pub(crate) dst: Ipv4Addr,
    pub(crate) proto: IpProtocol,
    pub(crate) ttl: u8,
    pub(crate) df: bool,
    pub(crate) ident: u16,
}

impl Ip {
    /// TTL 64, DF set, ident 7.
    pub(crate) fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: IpProtocol) -> Self {
        Self { src, dst, proto, ttl: 64, df: true, ident: 7 }
    }
}

/// An IPv4 packet (20-byte header, checksum filled) carrying `l4`.
pub(crate) fn ip_packet(h: &Ip, l4: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 20 + l4.len()];
    ipv4::Repr {
        src_addr: h.src,
        dst_addr: h.dst,
        next_header: h.proto,
        payload_len: l4.len(),
        ttl: h.ttl,
        ident: h.ident,
        dont_frag: h.df,
        more_frags: false,
        frag_offset: 0,
        tos: 0,
    }
    .emit(&mut ipv4::Packet::new_unchecked(&mut b[..]))
    .unwrap();
    b[20..].copy_from_slice(l4);
    b
}

/// A TCP segment (no options, checksum filled for `src` → `dst`).
pub(crate) fn tcp_seg(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16, f: u16, payload: &[u8]) -> Vec<u8> {
    let mut seg = vec![0u8; 20 + payload.len()];
    tcp::Repr {
        src_port: sp,
        dst_port: dp,
        seq_number: 1000,
        ack_number: 2000,
        flags: f,
        window_len: 500,
        urgent_at: 0,
        options: &[],
        payload,
    }
    .emit(&mut seg, src.into(), dst.into())
    .unwrap();
    seg
}

/// A UDP datagram (checksum filled for `src` → `dst`).
pub(crate) fn udp_dgram(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16, payload: &[u8]) -> Vec<u8> {
    let mut dg = vec![0u8; 8 + payload.len()];
    udp::Repr { src_port: sp, dst_port: dp }.emit(&mut dg, src.into(), dst.into(), payload).unwrap();
    dg
}
