//! UDP (RFC 768), with the zero-checksum rules of IPv4 and IPv6.

use crate::checksum;
use crate::ip::IpProtocol;
use crate::{Error, Result, read_u16, write_u16};
use core::net::IpAddr;

mod field {
    use crate::field::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;
/// Byte offset of the checksum field within the header.
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM.start;

/// A read/write wrapper around a UDP datagram buffer.
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

    /// `Err` if the buffer is shorter than the header, the length field is smaller than the
    /// header, or the buffer is shorter than the length field. Bytes after the length field
    /// are ignored. Invalidated by [`Packet::set_len`].
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error);
        }
        let field_len = usize::from(self.len());
        if field_len < HEADER_LEN || len < field_len { Err(Error) } else { Ok(()) }
    }

    /// Return the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT.start)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT.start)
    }

    /// Length field (header and payload).
    #[inline]
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Whether the payload is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    fn datagram_end(&self) -> usize {
        usize::from(self.len()).min(self.buffer.as_ref().len())
    }

    /// Verify the checksum with the pseudo-header of `src`/`dst`. Over IPv4 a zero field
    /// means "no checksum" and verifies; over IPv6 a zero field is invalid (RFC 8200 §8.1).
    /// Always `true` when fuzzing.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        if cfg!(fuzzing) {
            return true;
        }
        if self.checksum() == 0 {
            return src.is_ipv4();
        }
        let end = self.datagram_end();
        let ph = checksum::pseudo_header(src, dst, IpProtocol::Udp.into(), end as u32);
        checksum::add(ph, checksum::data(&self.buffer.as_ref()[..end])) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload, up to the length field.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let end = self.datagram_end();
        &self.buffer.as_ref()[HEADER_LEN.min(end)..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the source port.
    #[inline]
    pub fn set_src_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT.start, value)
    }

    /// Set the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT.start, value)
    }

    /// Set the length field.
    #[inline]
    pub fn set_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH.start, value)
    }

    /// Set the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value)
    }

    /// Compute and write the checksum; a computed 0 is written as `0xffff`.
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) {
        self.set_checksum(0);
        let end = self.datagram_end();
        let ph = checksum::pseudo_header(src, dst, IpProtocol::Udp.into(), end as u32);
        let c = !checksum::add(ph, checksum::data(&self.buffer.as_ref()[..end]));
        self.set_checksum(checksum::udp_final(c))
    }

    /// The payload, mutably.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.datagram_end();
        &mut self.buffer.as_mut()[HEADER_LEN.min(end)..end]
    }
}

/// A high-level representation of a UDP header.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Repr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

impl Repr {
    /// Parse a datagram: lengths and checksum (per [`Packet::verify_checksum`]) checked.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>, src: IpAddr, dst: IpAddr) -> Result<Repr> {
        packet.check_len()?;
        if !packet.verify_checksum(src, dst) {
            return Err(Error);
        }
        Ok(Repr { src_port: packet.src_port(), dst_port: packet.dst_port() })
    }

    /// Header length.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Length of the datagram with `payload_len` bytes of payload.
    pub const fn buffer_len(&self, payload_len: usize) -> usize {
        HEADER_LEN + payload_len
    }

    /// Write header and payload into the start of `buffer` and fill the checksum. Returns
    /// the datagram length; `Err` if it does not fit the buffer or 16 bits.
    pub fn emit(&self, buffer: &mut [u8], src: IpAddr, dst: IpAddr, payload: &[u8]) -> Result<usize> {
        let len = self.buffer_len(payload.len());
        let field_len = u16::try_from(len).map_err(|_| Error)?;
        let buf = buffer.get_mut(..len).ok_or(Error)?;
        buf[HEADER_LEN..].copy_from_slice(payload);
        let mut p = Packet::new_unchecked(buf);
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_len(field_len);
        p.fill_checksum(src, dst);
        Ok(len)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};

    const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1));
    const DST: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 2));

    static PACKET_BYTES: [u8; 12] = [0xbf, 0x00, 0x00, 0x35, 0x00, 0x0c, 0x12, 0x4d, 0xaa, 0x00, 0x00, 0xff];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(p.src_port(), 48896);
        assert_eq!(p.dst_port(), 53);
        assert_eq!(p.len(), 12);
        assert_eq!(p.checksum(), 0x124d);
        assert_eq!(p.payload(), &[0xaa, 0x00, 0x00, 0xff]);
        assert!(p.verify_checksum(SRC, DST));
    }

    #[test]
    fn construct() {
        let mut out = vec![0xa5; 12];
        let mut p = Packet::new_unchecked(&mut out);
        p.set_src_port(48896);
        p.set_dst_port(53);
        p.set_len(12);
        p.payload_mut().copy_from_slice(&[0xaa, 0x00, 0x00, 0xff]);
        p.fill_checksum(SRC, DST);
        assert_eq!(&out[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn parse_emit() {
        let r = Repr::parse(&Packet::new_checked(&PACKET_BYTES[..]).unwrap(), SRC, DST).unwrap();
        assert_eq!(r, Repr { src_port: 48896, dst_port: 53 });
        let mut out = vec![0xa5; 14];
        assert_eq!(r.emit(&mut out, SRC, DST, &[0xaa, 0x00, 0x00, 0xff]).unwrap(), 12);
        assert_eq!(&out[..12], &PACKET_BYTES[..]);
        assert_eq!(&out[12..], &[0xa5, 0xa5]);
        assert!(r.emit(&mut out[..11], SRC, DST, &[0; 4]).is_err());
    }

    #[test]
    fn zero_checksum_rules() {
        let mut b = PACKET_BYTES;
        b[6] = 0;
        b[7] = 0;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum(SRC, DST));
        let s6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert!(!p.verify_checksum(s6, s6));
        // A datagram whose checksum computes to 0 is sent as 0xffff. Find a payload word
        // that makes the sum 0xffff.
        let mut b = [0u8; 10];
        b[0..2].copy_from_slice(&1u16.to_be_bytes());
        b[2..4].copy_from_slice(&2u16.to_be_bytes());
        b[4..6].copy_from_slice(&10u16.to_be_bytes());
        let ph = checksum::pseudo_header(SRC, DST, 17, 10);
        let s = checksum::add(ph, checksum::data(&b));
        b[8..10].copy_from_slice(&(!s).to_be_bytes());
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.fill_checksum(SRC, DST);
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum(SRC, DST));
    }

    #[test]
    fn lengths() {
        for n in 0..12 {
            assert!(Packet::new_checked(&PACKET_BYTES[..n]).is_err());
        }
        let mut b = PACKET_BYTES;
        b[5] = 7;
        assert!(Packet::new_checked(&b[..]).is_err());
        // Trailing bytes after the length are not payload.
        let mut long = PACKET_BYTES.to_vec();
        long.extend_from_slice(&[1, 2]);
        assert_eq!(Packet::new_checked(&long[..]).unwrap().payload().len(), 4);
    }
}
