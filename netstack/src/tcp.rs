//! TCP headers (RFC 9293): ports, sequence numbers, flags, data offset and options.

use crate::checksum;
use crate::ip::IpProtocol;
use crate::{Error, Result, read_u16, read_u32, write_u16, write_u32};
use core::net::IpAddr;

mod field {
    use crate::field::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    pub const FLAGS: Field = 12..14;
    pub const WIN_SIZE: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
}

/// Length of a TCP header without options.
pub const HEADER_LEN: usize = field::URGENT.end;
/// Largest TCP header (data offset 15).
pub const MAX_HEADER_LEN: usize = 60;
/// Byte offset of the checksum field within the header.
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM.start;

/// TCP flag bits, as in the low 9 bits of bytes 12..14.
pub mod flags {
    /// FIN.
    pub const FIN: u16 = 0x001;
    /// SYN.
    pub const SYN: u16 = 0x002;
    /// RST.
    pub const RST: u16 = 0x004;
    /// PSH.
    pub const PSH: u16 = 0x008;
    /// ACK.
    pub const ACK: u16 = 0x010;
    /// URG.
    pub const URG: u16 = 0x020;
    /// ECE.
    pub const ECE: u16 = 0x040;
    /// CWR.
    pub const CWR: u16 = 0x080;
    /// NS (historic, RFC 3540).
    pub const NS: u16 = 0x100;
    /// All nine.
    pub const ALL: u16 = 0x1ff;
}

/// A read/write wrapper around a TCP segment buffer.
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

    /// `Err` if the buffer is shorter than the fixed header, the data offset is below 5
    /// words, or the buffer is shorter than the data offset. Invalidated by
    /// [`Packet::set_header_len`].
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || self.header_len() < HEADER_LEN || len < self.header_len() { Err(Error) } else { Ok(()) }
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

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ_NUM.start)
    }

    /// Acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::ACK_NUM.start)
    }

    /// Header length in bytes (data offset × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::FLAGS.start] >> 4) * 4
    }

    /// The nine flag bits (see [`flags`]).
    #[inline]
    pub fn flags(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLAGS.start) & flags::ALL
    }

    /// The three reserved bits between data offset and flags.
    #[inline]
    pub fn reserved(&self) -> u8 {
        (self.buffer.as_ref()[field::FLAGS.start] >> 1) & 0x07
    }

    /// SYN set.
    #[inline]
    pub fn syn(&self) -> bool {
        self.flags() & flags::SYN != 0
    }

    /// ACK set.
    #[inline]
    pub fn ack(&self) -> bool {
        self.flags() & flags::ACK != 0
    }

    /// FIN set.
    #[inline]
    pub fn fin(&self) -> bool {
        self.flags() & flags::FIN != 0
    }

    /// RST set.
    #[inline]
    pub fn rst(&self) -> bool {
        self.flags() & flags::RST != 0
    }

    /// Window size.
    #[inline]
    pub fn window_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WIN_SIZE.start)
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Urgent pointer.
    #[inline]
    pub fn urgent_at(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::URGENT.start)
    }

    /// Length of the options area (header length − 20).
    #[inline]
    pub fn options_len(&self) -> usize {
        self.header_len().saturating_sub(HEADER_LEN)
    }

    /// The options area.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// Iterate the parsed options.
    pub fn option_iter(&self) -> OptionIter<'_> {
        OptionIter::new(self.options())
    }

    /// Verify the checksum with the pseudo-header of `src`/`dst` over the whole buffer
    /// (the caller passes exactly the IP payload). Always `true` when fuzzing.
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        if cfg!(fuzzing) {
            return true;
        }
        let d = self.buffer.as_ref();
        let ph = checksum::pseudo_header(src, dst, IpProtocol::Tcp.into(), d.len() as u32);
        checksum::add(ph, checksum::data(d)) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload (after the options).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[self.header_len()..]
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

    /// Set the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::SEQ_NUM.start, value)
    }

    /// Set the acknowledgment number.
    #[inline]
    pub fn set_ack_number(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::ACK_NUM.start, value)
    }

    /// Set the header length in bytes (rounded down to words); reserved bits are cleared.
    #[inline]
    pub fn set_header_len(&mut self, value: usize) {
        let b = &mut self.buffer.as_mut()[field::FLAGS.start];
        *b = (((value / 4) as u8) << 4) | (*b & 0x01);
    }

    /// Set the nine flag bits.
    #[inline]
    pub fn set_flags(&mut self, value: u16) {
        let d = self.buffer.as_mut();
        let old = read_u16(d, field::FLAGS.start);
        write_u16(d, field::FLAGS.start, (old & !flags::ALL) | (value & flags::ALL))
    }

    /// Set the window size.
    #[inline]
    pub fn set_window_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::WIN_SIZE.start, value)
    }

    /// Set the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value)
    }

    /// Set the urgent pointer.
    #[inline]
    pub fn set_urgent_at(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::URGENT.start, value)
    }

    /// The options area, mutably.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let h = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..h]
    }

    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let h = self.header_len();
        &mut self.buffer.as_mut()[h..]
    }

    /// Compute and write the checksum over the whole buffer.
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) {
        self.set_checksum(0);
        let d = self.buffer.as_ref();
        let ph = checksum::pseudo_header(src, dst, IpProtocol::Tcp.into(), d.len() as u32);
        let c = !checksum::add(ph, checksum::data(d));
        self.set_checksum(c)
    }
}

/// One TCP option.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum TcpOption<'a> {
    /// End of option list (kind 0); the iterator stops after it.
    EndOfList,
    /// No-operation (kind 1).
    NoOperation,
    /// Maximum segment size (kind 2).
    MaxSegmentSize(u16),
    /// Window scale (kind 3).
    WindowScale(u8),
    /// SACK permitted (kind 4).
    SackPermitted,
    /// SACK blocks (kind 5): the raw left/right edges.
    Sack(&'a [u8]),
    /// Timestamps (kind 8).
    Timestamps {
        /// TSval.
        tsval: u32,
        /// TSecr.
        tsecr: u32,
    },
    /// Any other option, or a known kind with an unexpected length.
    Unknown {
        /// Option kind.
        kind: u8,
        /// Option data (after kind and length).
        data: &'a [u8],
    },
}

/// An iterator over TCP options. A malformed option (length below 2 or past the end)
/// yields one `Err` and ends the iteration; so does nothing else.
#[derive(Debug, Clone)]
pub struct OptionIter<'a> {
    data: &'a [u8],
    done: bool,
}

impl<'a> OptionIter<'a> {
    /// Iterate the options in `data` (a TCP options area).
    pub fn new(data: &'a [u8]) -> OptionIter<'a> {
        OptionIter { data, done: false }
    }
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = Result<TcpOption<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let (&kind, rest) = self.data.split_first()?;
        match kind {
            0 => {
                self.done = true;
                return Some(Ok(TcpOption::EndOfList));
            }
            1 => {
                self.data = rest;
                return Some(Ok(TcpOption::NoOperation));
            }
            _ => {}
        }
        let len = match rest.first() {
            Some(&l) if l >= 2 && usize::from(l) <= self.data.len() => usize::from(l),
            _ => {
                self.done = true;
                return Some(Err(Error));
            }
        };
        let data = &self.data[2..len];
        self.data = &self.data[len..];
        Some(Ok(match (kind, data.len()) {
            (2, 2) => TcpOption::MaxSegmentSize(read_u16(data, 0)),
            (3, 1) => TcpOption::WindowScale(data[0]),
            (4, 0) => TcpOption::SackPermitted,
            (5, n) if n % 8 == 0 => TcpOption::Sack(data),
            (8, 8) => TcpOption::Timestamps { tsval: read_u32(data, 0), tsecr: read_u32(data, 4) },
            _ => TcpOption::Unknown { kind, data },
        }))
    }
}

/// A high-level representation of a TCP segment.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Repr<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq_number: u32,
    /// Acknowledgment number.
    pub ack_number: u32,
    /// Flags (see [`flags`]).
    pub flags: u16,
    /// Window size.
    pub window_len: u16,
    /// Urgent pointer.
    pub urgent_at: u16,
    /// Raw options area (a multiple of 4, at most 40 bytes).
    pub options: &'a [u8],
    /// Payload.
    pub payload: &'a [u8],
}

impl<'a> Repr<'a> {
    /// Parse a segment (the whole IP payload): lengths and checksum checked.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&'a T>, src: IpAddr, dst: IpAddr) -> Result<Repr<'a>> {
        packet.check_len()?;
        if !packet.verify_checksum(src, dst) {
            return Err(Error);
        }
        let d: &'a [u8] = packet.buffer.as_ref();
        Ok(Repr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            seq_number: packet.seq_number(),
            ack_number: packet.ack_number(),
            flags: packet.flags(),
            window_len: packet.window_len(),
            urgent_at: packet.urgent_at(),
            options: &d[HEADER_LEN..packet.header_len()],
            payload: packet.payload(),
        })
    }

    /// Header length (options included).
    pub const fn header_len(&self) -> usize {
        HEADER_LEN + self.options.len()
    }

    /// Segment length.
    pub const fn buffer_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Write the segment into the start of `buffer` and fill the checksum. Returns its
    /// length; `Err` if it does not fit or the options are not a multiple of 4 up to 40.
    pub fn emit(&self, buffer: &mut [u8], src: IpAddr, dst: IpAddr) -> Result<usize> {
        if !self.options.len().is_multiple_of(4) || self.options.len() > MAX_HEADER_LEN - HEADER_LEN {
            return Err(Error);
        }
        let len = self.buffer_len();
        let buf = buffer.get_mut(..len).ok_or(Error)?;
        buf[12] = 0;
        let mut p = Packet::new_unchecked(buf);
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_seq_number(self.seq_number);
        p.set_ack_number(self.ack_number);
        p.set_header_len(self.header_len());
        p.set_flags(self.flags);
        p.set_window_len(self.window_len);
        p.set_urgent_at(self.urgent_at);
        p.options_mut().copy_from_slice(self.options);
        p.payload_mut().copy_from_slice(self.payload);
        p.fill_checksum(src, dst);
        Ok(len)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use core::net::Ipv4Addr;

    const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1));
    const DST: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 2));

    // SYN+ACK with MSS 1460, NOP, WS 7, SACK-permitted, TS, 4 payload bytes.
    static OPTIONS: [u8; 20] = [
        0x02, 0x04, 0x05, 0xb4, 0x01, 0x03, 0x03, 0x07, 0x04, 0x02, 0x08, 0x0a, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
        0x00, 0x02,
    ];

    fn bytes() -> Vec<u8> {
        let mut b = vec![
            0xbf, 0x00, 0x00, 0x50, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xa0, 0x12, 0x01, 0x23, 0x00, 0x00,
            0x00, 0x00,
        ];
        b.extend_from_slice(&OPTIONS);
        b.extend_from_slice(&[0xaa, 0x00, 0x00, 0xff]);
        let ph = checksum::pseudo_header(SRC, DST, 6, b.len() as u32);
        let c = !checksum::add(ph, checksum::data(&b));
        b[16..18].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn deconstruct() {
        let b = bytes();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.src_port(), 48896);
        assert_eq!(p.dst_port(), 80);
        assert_eq!(p.seq_number(), 0x01234567);
        assert_eq!(p.ack_number(), 0x89abcdef);
        assert_eq!(p.header_len(), 40);
        assert_eq!(p.options_len(), 20);
        assert_eq!(p.flags(), flags::SYN | flags::ACK);
        assert!(p.syn() && p.ack() && !p.fin() && !p.rst());
        assert_eq!(p.window_len(), 0x0123);
        assert_eq!(p.urgent_at(), 0);
        assert_eq!(p.payload(), &[0xaa, 0x00, 0x00, 0xff]);
        assert!(p.verify_checksum(SRC, DST));
        let opts: Vec<_> = p.option_iter().collect::<Result<_>>().unwrap();
        assert_eq!(
            opts,
            vec![
                TcpOption::MaxSegmentSize(1460),
                TcpOption::NoOperation,
                TcpOption::WindowScale(7),
                TcpOption::SackPermitted,
                TcpOption::Timestamps { tsval: 1, tsecr: 2 },
            ]
        );
    }

    #[test]
    fn construct() {
        let want = bytes();
        let mut out = vec![0xa5; want.len()];
        let mut p = Packet::new_unchecked(&mut out);
        p.set_src_port(48896);
        p.set_dst_port(80);
        p.set_seq_number(0x01234567);
        p.set_ack_number(0x89abcdef);
        p.set_header_len(40);
        p.set_flags(flags::SYN | flags::ACK);
        p.set_window_len(0x0123);
        p.set_urgent_at(0);
        p.options_mut().copy_from_slice(&OPTIONS);
        p.payload_mut().copy_from_slice(&[0xaa, 0x00, 0x00, 0xff]);
        p.fill_checksum(SRC, DST);
        assert_eq!(out, want);
    }

    #[test]
    fn parse_emit() {
        let b = bytes();
        let r = Repr::parse(&Packet::new_checked(&b[..]).unwrap(), SRC, DST).unwrap();
        assert_eq!(r.options, &OPTIONS[..]);
        let mut out = vec![0xa5; b.len() + 3];
        assert_eq!(r.emit(&mut out, SRC, DST).unwrap(), b.len());
        assert_eq!(&out[..b.len()], &b[..]);
        assert!(r.emit(&mut out[..b.len() - 1], SRC, DST).is_err());
        let bad = Repr { options: &OPTIONS[..3], ..r };
        assert!(bad.emit(&mut out, SRC, DST).is_err());
    }

    #[test]
    fn lengths_and_bad_options() {
        let b = bytes();
        for n in 0..40 {
            assert!(Packet::new_checked(&b[..n]).is_err(), "{n}");
        }
        let mut small = b.clone();
        small[12] = 0x40;
        assert!(Packet::new_checked(&small[..]).is_err());
        let bad: Vec<_> = OptionIter::new(&[2, 4, 5]).collect();
        assert_eq!(bad, vec![Err(Error)]);
        let bad: Vec<_> = OptionIter::new(&[1, 9, 0]).collect();
        assert_eq!(bad, vec![Ok(TcpOption::NoOperation), Err(Error)]);
        let odd: Vec<_> = OptionIter::new(&[2, 3, 5, 0, 7]).collect();
        assert_eq!(odd, vec![Ok(TcpOption::Unknown { kind: 2, data: &[5] }), Ok(TcpOption::EndOfList)]);
    }
}
