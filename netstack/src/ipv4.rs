//! IPv4 (RFC 791). Options are skipped (reachable as a slice), fragments are described, and
//! the total length is checked against the buffer (Ethernet padding beyond it is ignored).

use crate::checksum;
use crate::ip::IpProtocol;
use crate::{Error, Result, read_ipv4, read_u16, write_u16};
use core::net::Ipv4Addr;

mod field {
    use crate::field::Field;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
}

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = field::DST_ADDR.end;
/// Largest IPv4 header (IHL 15).
pub const MAX_HEADER_LEN: usize = 60;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A read/write wrapper around an IPv4 packet buffer.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wrap a buffer, checking its lengths with [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Wrap the copy of an IPv4 header quoted inside an ICMP error: the header must be
    /// whole (fixed part and options), but the payload may be truncated, so the total length
    /// is not checked against the buffer. [`Packet::payload`] then returns what is present.
    pub fn new_quoted(buffer: T) -> Result<Packet<T>> {
        let p = Self::new_unchecked(buffer);
        let len = p.buffer.as_ref().len();
        if len < HEADER_LEN || p.header_len() < HEADER_LEN || len < p.header_len() {
            return Err(Error);
        }
        Ok(p)
    }

    /// Check every length: the buffer holds the fixed header, the IHL is at least 5 words,
    /// the buffer holds the IHL, the total length covers the IHL, and the buffer holds the
    /// total length. After `Ok`, no accessor or setter panics. Invalidated by
    /// [`Packet::set_header_len`] and [`Packet::set_total_len`].
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        // In order: fixed header, IHL minimum, IHL within buffer, total length covers the
        // IHL, total length within buffer.
        let bad = len < HEADER_LEN
            || self.header_len() < HEADER_LEN
            || len < self.header_len()
            || usize::from(self.total_len()) < self.header_len()
            || len < usize::from(self.total_len());
        if bad { Err(Error) } else { Ok(()) }
    }

    /// Return the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version field (4 for a valid packet).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Differentiated services code point.
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// Explicit congestion notification.
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    /// Total length (header and payload).
    #[inline]
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT.start)
    }

    /// The three flag bits (reserved, DF, MF), as the top three bits of a `u8`'s low nibble
    /// would be in scapy: reserved = 4, DF = 2, MF = 1.
    #[inline]
    pub fn flags(&self) -> u8 {
        (read_u16(self.buffer.as_ref(), field::FLG_OFF.start) >> 13) as u8
    }

    /// Don't-fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF.start) & FLAG_DF != 0
    }

    /// More-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF.start) & FLAG_MF != 0
    }

    /// Fragment offset in 8-byte units, as on the wire.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLG_OFF.start) & OFFSET_MASK
    }

    /// Whether this packet is a fragment (MF set or a non-zero offset).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// Whether this is a fragment other than the first (its payload has no L4 header).
    #[inline]
    pub fn is_non_first_fragment(&self) -> bool {
        self.frag_offset() != 0
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload.
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// Header checksum.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), field::SRC_ADDR.start)
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), field::DST_ADDR.start)
    }

    /// Whether the header checksum is valid. Always `true` when fuzzing, so that the fuzzer
    /// gets past it.
    pub fn verify_checksum(&self) -> bool {
        if cfg!(fuzzing) {
            return true;
        }
        checksum::data(&self.buffer.as_ref()[..self.header_len()]) == 0xffff
    }

    /// The options (between the fixed header and the payload), skipped by everything else.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    fn payload_range(&self) -> core::ops::Range<usize> {
        // Clamped, so that a quoted (truncated) packet returns what is present.
        let len = self.buffer.as_ref().len();
        let end = usize::from(self.total_len()).min(len);
        let start = self.header_len().min(end);
        start..end
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload: from the end of the header to the total length (or to the end of the
    /// buffer for a quoted packet). Ethernet padding after the total length is excluded.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let r = self.payload_range();
        &self.buffer.as_ref()[r]
    }

    /// The header bytes, options included.
    #[inline]
    pub fn header(&self) -> &'a [u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the version.
    #[inline]
    pub fn set_version(&mut self, value: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (value << 4);
    }

    /// Set the header length in bytes (rounded down to words).
    #[inline]
    pub fn set_header_len(&mut self, value: usize) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((value / 4) as u8 & 0x0f);
    }

    /// Set DSCP.
    #[inline]
    pub fn set_dscp(&mut self, value: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0x03) | (value << 2);
    }

    /// Set ECN.
    #[inline]
    pub fn set_ecn(&mut self, value: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0xfc) | (value & 0x03);
    }

    /// Set the total length.
    #[inline]
    pub fn set_total_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH.start, value)
    }

    /// Set the identification.
    #[inline]
    pub fn set_ident(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT.start, value)
    }

    /// Set the flags and fragment offset (8-byte units) together.
    #[inline]
    pub fn set_fragment(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let mut v = offset & OFFSET_MASK;
        if dont_frag {
            v |= FLAG_DF;
        }
        if more_frags {
            v |= FLAG_MF;
        }
        write_u16(self.buffer.as_mut(), field::FLG_OFF.start, v)
    }

    /// Set the time to live.
    #[inline]
    pub fn set_ttl(&mut self, value: u8) {
        self.buffer.as_mut()[field::TTL] = value
    }

    /// Set the protocol.
    #[inline]
    pub fn set_next_header(&mut self, value: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = value.into()
    }

    /// Set the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value)
    }

    /// Set the source address (the checksum is not updated).
    #[inline]
    pub fn set_src_addr(&mut self, value: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&value.octets())
    }

    /// Set the destination address (the checksum is not updated).
    #[inline]
    pub fn set_dst_addr(&mut self, value: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&value.octets())
    }

    /// Compute and write the header checksum.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(&self.buffer.as_ref()[..self.header_len()]);
        self.set_checksum(c)
    }

    /// Decrement the TTL with an incremental checksum update (RFC 1624). Returns `false`,
    /// changing nothing, if the TTL is 0 or 1: the packet must not be forwarded and a
    /// time-exceeded error is due.
    pub fn decrement_ttl(&mut self) -> bool {
        let ttl = self.ttl();
        if ttl <= 1 {
            return false;
        }
        let d = self.buffer.as_ref();
        let old = read_u16(d, field::TTL);
        let new = old - 0x0100;
        let c = checksum::update16(self.checksum(), old, new);
        self.set_ttl(ttl - 1);
        self.set_checksum(c);
        true
    }

    /// The options, mutably.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let h = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..h]
    }

    /// The payload, mutably.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let r = self.payload_range();
        &mut self.buffer.as_mut()[r]
    }
}

/// A high-level representation of an IPv4 header without options.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Protocol of the payload.
    pub next_header: IpProtocol,
    /// Payload length.
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// Identification.
    pub ident: u16,
    /// Don't-fragment flag.
    pub dont_frag: bool,
    /// More-fragments flag.
    pub more_frags: bool,
    /// Fragment offset in 8-byte units.
    pub frag_offset: u16,
    /// DSCP and ECN (the old TOS byte).
    pub tos: u8,
}

impl Repr {
    /// Parse a packet: lengths, version 4 and the header checksum are checked. Options are
    /// skipped.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr> {
        packet.check_len()?;
        if packet.version() != 4 || !packet.verify_checksum() {
            return Err(Error);
        }
        Ok(Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.total_len()) - packet.header_len(),
            ttl: packet.ttl(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
            more_frags: packet.more_frags(),
            frag_offset: packet.frag_offset(),
            tos: packet.buffer.as_ref()[field::DSCP_ECN],
        })
    }

    /// Header length when emitted (no options).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write the header, checksum included. The buffer must be at least
    /// [`HEADER_LEN`] long; `payload_len + 20` must fit a `u16` (else `Err`).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) -> Result<()> {
        let total = u16::try_from(self.payload_len + HEADER_LEN).map_err(|_| Error)?;
        if packet.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error);
        }
        packet.set_version(4);
        packet.set_header_len(HEADER_LEN);
        packet.buffer.as_mut()[field::DSCP_ECN] = self.tos;
        packet.set_total_len(total);
        packet.set_ident(self.ident);
        packet.set_fragment(self.dont_frag, self.more_frags, self.frag_offset);
        packet.set_ttl(self.ttl);
        packet.set_next_header(self.next_header);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    // A UDP packet with a 4-byte option (NOP NOP NOP EOL), DF set, two payload bytes and two
    // bytes of Ethernet padding after it.
    static PACKET_BYTES: [u8; 28] = [
        0x46, 0x21, 0x00, 0x1a, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0x0a, 0x89, 0x00, 0x05, 0xc0, 0xa8,
        0x01, 0x02, 0x01, 0x01, 0x01, 0x00, 0xaa, 0xbb, 0x00, 0x00,
    ];

    fn bytes() -> [u8; 28] {
        let mut b = PACKET_BYTES;
        let c = checksum::checksum(&b[..24]);
        b[10..12].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn deconstruct() {
        let b = bytes();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.dscp(), 8);
        assert_eq!(p.ecn(), 1);
        assert_eq!(p.total_len(), 26);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.flags(), 2);
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.next_header(), IpProtocol::Udp);
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 137, 0, 5));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(192, 168, 1, 2));
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(p.payload(), &[0xaa, 0xbb]);
        assert!(p.verify_checksum());
    }

    #[test]
    fn construct() {
        let mut out = vec![0xa5; 28];
        let mut p = Packet::new_unchecked(&mut out);
        p.set_version(4);
        p.set_header_len(24);
        p.set_dscp(8);
        p.set_ecn(1);
        p.set_total_len(26);
        p.set_ident(0x1234);
        p.set_fragment(true, false, 0);
        p.set_ttl(64);
        p.set_next_header(IpProtocol::Udp);
        p.set_src_addr(Ipv4Addr::new(10, 137, 0, 5));
        p.set_dst_addr(Ipv4Addr::new(192, 168, 1, 2));
        p.options_mut().copy_from_slice(&[1, 1, 1, 0]);
        p.payload_mut().copy_from_slice(&[0xaa, 0xbb]);
        p.fill_checksum();
        out[26] = 0;
        out[27] = 0;
        assert_eq!(&out[..], &bytes()[..]);
    }

    #[test]
    fn parse_emit() {
        let b = bytes();
        let r = Repr::parse(&Packet::new_checked(&b[..]).unwrap()).unwrap();
        assert_eq!(r.payload_len, 2);
        assert_eq!(r.tos, 0x21);
        let mut out = vec![0xa5; 20];
        r.emit(&mut Packet::new_unchecked(&mut out)).unwrap();
        let p = Packet::new_unchecked(&out[..]);
        assert!(p.verify_checksum());
        assert_eq!(p.total_len(), 22);
        assert_eq!(&out[1..10], &[0x21, 0x00, 0x16, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11]);
        assert_eq!(&out[12..20], &b[12..20]);
    }

    #[test]
    fn bad_checksum_rejected() {
        let mut b = bytes();
        b[11] ^= 1;
        assert!(Repr::parse(&Packet::new_checked(&b[..]).unwrap()).is_err());
    }

    #[test]
    fn lengths() {
        let b = bytes();
        for n in 0..26 {
            assert!(Packet::new_checked(&b[..n]).is_err(), "{n}");
        }
        let mut short_ihl = b;
        short_ihl[0] = 0x44;
        assert!(Packet::new_checked(&short_ihl[..]).is_err());
        let mut total_lt_ihl = b;
        total_lt_ihl[3] = 20;
        assert!(Packet::new_checked(&total_lt_ihl[..]).is_err());
        let mut big_ihl = b;
        big_ihl[0] = 0x4f;
        assert!(Packet::new_checked(&big_ihl[..]).is_err());
        // A quoted header may be truncated.
        let q = Packet::new_quoted(&b[..25]).unwrap();
        assert_eq!(q.payload(), &[0xaa]);
        assert!(Packet::new_quoted(&b[..23]).is_err());
    }

    #[test]
    fn fragments_and_ttl() {
        let mut b = bytes();
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_fragment(false, true, 185);
        p.fill_checksum();
        assert!(p.is_fragment() && p.is_non_first_fragment());
        assert_eq!(p.frag_offset(), 185);
        assert!(p.decrement_ttl());
        assert_eq!(p.ttl(), 63);
        assert!(p.verify_checksum());
        p.set_ttl(1);
        assert!(!p.decrement_ttl());
    }
}
