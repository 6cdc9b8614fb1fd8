//! ICMPv4 (RFC 792): echo, destination unreachable, time exceeded and parameter problem,
//! with access to the original header quoted in an error.

use crate::checksum;
use crate::ipv4;
use crate::{Error, Result, read_u16, write_u16};

enum_with_unknown! {
    /// ICMPv4 message type.
    pub enum Message(u8) {
        /// Echo reply.
        EchoReply = 0,
        /// Destination unreachable.
        DstUnreachable = 3,
        /// Source quench (deprecated).
        SourceQuench = 4,
        /// Redirect.
        Redirect = 5,
        /// Echo request.
        EchoRequest = 8,
        /// Router advertisement.
        RouterAdvert = 9,
        /// Router solicitation.
        RouterSolicit = 10,
        /// Time exceeded.
        TimeExceeded = 11,
        /// Parameter problem.
        ParamProblem = 12,
        /// Timestamp.
        Timestamp = 13,
        /// Timestamp reply.
        TimestampReply = 14,
        /// Information request (obsolete).
        InfoRequest = 15,
        /// Information reply (obsolete).
        InfoReply = 16,
        /// Address mask request (obsolete).
        AddressMaskRequest = 17,
        /// Address mask reply (obsolete).
        AddressMaskReply = 18,
    }
}

impl Message {
    /// Whether this type is an error message (RFC 1812 §4.3.2.7 counts these). Unknown types
    /// are counted as errors, so that the error predicate stays conservative.
    pub fn is_error(self) -> bool {
        !matches!(
            self,
            Message::EchoReply
                | Message::EchoRequest
                | Message::RouterAdvert
                | Message::RouterSolicit
                | Message::Timestamp
                | Message::TimestampReply
                | Message::InfoRequest
                | Message::InfoReply
                | Message::AddressMaskRequest
                | Message::AddressMaskReply
        )
    }
}

enum_with_unknown! {
    /// Codes of destination unreachable (RFC 792, RFC 1812 §5.2.7.1).
    pub enum DstUnreachable(u8) {
        /// Network unreachable.
        NetUnreachable = 0,
        /// Host unreachable.
        HostUnreachable = 1,
        /// Protocol unreachable.
        ProtoUnreachable = 2,
        /// Port unreachable.
        PortUnreachable = 3,
        /// Fragmentation needed and DF set (carries the next-hop MTU, RFC 1191).
        FragRequired = 4,
        /// Source route failed.
        SrcRouteFailed = 5,
        /// Destination network unknown.
        DstNetUnknown = 6,
        /// Destination host unknown.
        DstHostUnknown = 7,
        /// Source host isolated.
        SrcHostIsolated = 8,
        /// Network administratively prohibited.
        NetProhibited = 9,
        /// Host administratively prohibited.
        HostProhibited = 10,
        /// Network unreachable for TOS.
        NetUnreachToS = 11,
        /// Host unreachable for TOS.
        HostUnreachToS = 12,
        /// Communication administratively prohibited (a firewall's reject).
        CommProhibited = 13,
        /// Host precedence violation.
        HostPrecedViol = 14,
        /// Precedence cutoff in effect.
        PrecedCutoff = 15,
    }
}

enum_with_unknown! {
    /// Codes of time exceeded.
    pub enum TimeExceeded(u8) {
        /// TTL expired in transit.
        TtlExpired = 0,
        /// Fragment reassembly time exceeded.
        FragExpired = 1,
    }
}

mod field {
    use crate::field::Field;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQNO: Field = 6..8;
    pub const POINTER: usize = 4;
    pub const MTU: Field = 6..8;
    pub const REST: Field = 4..8;
}

/// Length of the ICMPv4 header (type, code, checksum and the 4 type-specific bytes).
pub const HEADER_LEN: usize = field::REST.end;

/// A read/write wrapper around an ICMPv4 message buffer.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wrap a buffer, checking its length with [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Err` if the buffer is shorter than the 8-byte header. After `Ok`, no accessor panics.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN { Err(Error) } else { Ok(()) }
    }

    /// Return the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type.
    #[inline]
    pub fn msg_type(&self) -> Message {
        Message::from(self.buffer.as_ref()[field::TYPE])
    }

    /// Message code.
    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Echo identifier (meaningful for echo request/reply).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_IDENT.start)
    }

    /// Echo sequence number (meaningful for echo request/reply).
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_SEQNO.start)
    }

    /// Next-hop MTU (meaningful for "fragmentation needed", RFC 1191).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::MTU.start)
    }

    /// Pointer (meaningful for parameter problem).
    #[inline]
    pub fn pointer(&self) -> u8 {
        self.buffer.as_ref()[field::POINTER]
    }

    /// The four type-specific header bytes, raw.
    #[inline]
    pub fn rest_of_header(&self) -> [u8; 4] {
        let d = self.buffer.as_ref();
        [d[4], d[5], d[6], d[7]]
    }

    /// Whether the checksum (over the whole buffer) is valid. Always `true` when fuzzing.
    pub fn verify_checksum(&self) -> bool {
        if cfg!(fuzzing) {
            return true;
        }
        checksum::data(self.buffer.as_ref()) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// Everything after the 8-byte header (echo data, or the quoted original packet).
    #[inline]
    pub fn data(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// The original IPv4 packet quoted by an error message (its header must be whole; the
    /// payload is what was quoted, usually 8 bytes). `Err` for non-error messages or a
    /// malformed quote.
    pub fn quoted_packet(&self) -> Result<ipv4::Packet<&'a [u8]>> {
        if !self.msg_type().is_error() {
            return Err(Error);
        }
        ipv4::Packet::new_quoted(self.data())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the message type.
    #[inline]
    pub fn set_msg_type(&mut self, value: Message) {
        self.buffer.as_mut()[field::TYPE] = value.into()
    }

    /// Set the message code.
    #[inline]
    pub fn set_msg_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value
    }

    /// Set the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value)
    }

    /// Set the echo identifier.
    #[inline]
    pub fn set_echo_ident(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_IDENT.start, value)
    }

    /// Set the echo sequence number.
    #[inline]
    pub fn set_echo_seq_no(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_SEQNO.start, value)
    }

    /// Set the four type-specific bytes.
    #[inline]
    pub fn set_rest_of_header(&mut self, value: [u8; 4]) {
        self.buffer.as_mut()[field::REST].copy_from_slice(&value)
    }

    /// Compute and write the checksum over the whole buffer.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c)
    }

    /// The data after the header, mutably.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// A high-level representation of the ICMPv4 messages the firewall handles.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Repr<'a> {
    /// Echo request.
    EchoRequest {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Data.
        data: &'a [u8],
    },
    /// Echo reply.
    EchoReply {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Data.
        data: &'a [u8],
    },
    /// Destination unreachable.
    DstUnreachable {
        /// Reason.
        reason: DstUnreachable,
        /// Next-hop MTU (only meaningful with `FragRequired`, else 0).
        next_hop_mtu: u16,
        /// The quoted original packet (IP header and the start of its payload).
        quoted: &'a [u8],
    },
    /// Time exceeded.
    TimeExceeded {
        /// Reason.
        reason: TimeExceeded,
        /// The quoted original packet.
        quoted: &'a [u8],
    },
    /// Parameter problem.
    ParamProblem {
        /// Code.
        code: u8,
        /// Pointer to the offending octet.
        pointer: u8,
        /// The quoted original packet.
        quoted: &'a [u8],
    },
}

impl<'a> Repr<'a> {
    /// Parse a message: length and checksum checked; for errors, the quote must hold a
    /// whole IPv4 header. Other message types are `Err` (use the packet layer).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&'a T>) -> Result<Repr<'a>> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(Error);
        }
        let data = packet.data();
        let quoted = || -> Result<&'a [u8]> {
            ipv4::Packet::new_quoted(data)?;
            Ok(data)
        };
        match (packet.msg_type(), packet.msg_code()) {
            (Message::EchoRequest, 0) => {
                Ok(Repr::EchoRequest { ident: packet.echo_ident(), seq_no: packet.echo_seq_no(), data })
            }
            (Message::EchoReply, 0) => {
                Ok(Repr::EchoReply { ident: packet.echo_ident(), seq_no: packet.echo_seq_no(), data })
            }
            (Message::DstUnreachable, code) => Ok(Repr::DstUnreachable {
                reason: DstUnreachable::from(code),
                next_hop_mtu: packet.next_hop_mtu(),
                quoted: quoted()?,
            }),
            (Message::TimeExceeded, code) => {
                Ok(Repr::TimeExceeded { reason: TimeExceeded::from(code), quoted: quoted()? })
            }
            (Message::ParamProblem, code) => {
                Ok(Repr::ParamProblem { code, pointer: packet.pointer(), quoted: quoted()? })
            }
            _ => Err(Error),
        }
    }

    /// Length of the message.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Repr::EchoRequest { data, .. } | Repr::EchoReply { data, .. } => data.len(),
                Repr::DstUnreachable { quoted, .. }
                | Repr::TimeExceeded { quoted, .. }
                | Repr::ParamProblem { quoted, .. } => quoted.len(),
            }
    }

    /// Write the message into the start of `buffer` with its checksum; returns its length,
    /// or `Err` if it does not fit.
    pub fn emit(&self, buffer: &mut [u8]) -> Result<usize> {
        let len = self.buffer_len();
        let buf = buffer.get_mut(..len).ok_or(Error)?;
        let mut p = Packet::new_unchecked(buf);
        let (ty, code, rest, data): (Message, u8, [u8; 4], &[u8]) = match *self {
            Repr::EchoRequest { ident, seq_no, data } => (Message::EchoRequest, 0, echo_rest(ident, seq_no), data),
            Repr::EchoReply { ident, seq_no, data } => (Message::EchoReply, 0, echo_rest(ident, seq_no), data),
            Repr::DstUnreachable { reason, next_hop_mtu, quoted } => {
                let m = next_hop_mtu.to_be_bytes();
                (Message::DstUnreachable, reason.into(), [0, 0, m[0], m[1]], quoted)
            }
            Repr::TimeExceeded { reason, quoted } => (Message::TimeExceeded, reason.into(), [0; 4], quoted),
            Repr::ParamProblem { code, pointer, quoted } => (Message::ParamProblem, code, [pointer, 0, 0, 0], quoted),
        };
        p.set_msg_type(ty);
        p.set_msg_code(code);
        p.set_rest_of_header(rest);
        p.data_mut().copy_from_slice(data);
        p.fill_checksum();
        Ok(len)
    }
}

fn echo_rest(ident: u16, seq_no: u16) -> [u8; 4] {
    let i = ident.to_be_bytes();
    let s = seq_no.to_be_bytes();
    [i[0], i[1], s[0], s[1]]
}

#[cfg(test)]
mod test {
    use super::*;

    static ECHO_BYTES: [u8; 12] = [0x08, 0x00, 0x8e, 0xfe, 0x12, 0x34, 0xab, 0xcd, 0xaa, 0x00, 0x00, 0xff];
    static ECHO_DATA: [u8; 4] = [0xaa, 0x00, 0x00, 0xff];

    #[test]
    fn echo_deconstruct() {
        let p = Packet::new_checked(&ECHO_BYTES[..]).unwrap();
        assert_eq!(p.msg_type(), Message::EchoRequest);
        assert_eq!(p.msg_code(), 0);
        assert_eq!(p.checksum(), 0x8efe);
        assert_eq!(p.echo_ident(), 0x1234);
        assert_eq!(p.echo_seq_no(), 0xabcd);
        assert_eq!(p.data(), &ECHO_DATA[..]);
        assert!(p.verify_checksum());
        assert!(p.quoted_packet().is_err());
    }

    #[test]
    fn echo_construct() {
        let mut out = vec![0xa5; 12];
        let mut p = Packet::new_unchecked(&mut out);
        p.set_msg_type(Message::EchoRequest);
        p.set_msg_code(0);
        p.set_echo_ident(0x1234);
        p.set_echo_seq_no(0xabcd);
        p.data_mut().copy_from_slice(&ECHO_DATA);
        p.fill_checksum();
        assert_eq!(&out[..], &ECHO_BYTES[..]);
    }

    #[test]
    fn echo_parse_emit() {
        let r = Repr::parse(&Packet::new_checked(&ECHO_BYTES[..]).unwrap()).unwrap();
        assert_eq!(r, Repr::EchoRequest { ident: 0x1234, seq_no: 0xabcd, data: &ECHO_DATA });
        let mut out = vec![0xa5; 13];
        assert_eq!(r.emit(&mut out).unwrap(), 12);
        assert_eq!(&out[..12], &ECHO_BYTES[..]);
        assert_eq!(out[12], 0xa5);
        assert!(r.emit(&mut out[..11]).is_err());
    }

    fn quoted_udp() -> [u8; 28] {
        let mut q = [
            0x45, 0x00, 0x00, 0x30, 0x00, 0x01, 0x40, 0x00, 0x01, 0x11, 0x00, 0x00, 0x0a, 0x89, 0x00, 0x05, 0x08, 0x08,
            0x08, 0x08, 0xc0, 0x00, 0x00, 0x35, 0x00, 0x1c, 0x12, 0x34,
        ];
        let c = checksum::checksum(&q[..20]);
        q[10..12].copy_from_slice(&c.to_be_bytes());
        q
    }

    #[test]
    fn error_roundtrip() {
        let q = quoted_udp();
        let r = Repr::DstUnreachable { reason: DstUnreachable::FragRequired, next_hop_mtu: 1400, quoted: &q };
        let mut out = vec![0xa5; 36];
        assert_eq!(r.emit(&mut out).unwrap(), 36);
        assert_eq!(&out[..2], &[3, 4]);
        assert_eq!(&out[4..8], &[0, 0, 0x05, 0x78]);
        let p = Packet::new_checked(&out[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(Repr::parse(&p).unwrap(), r);
        let inner = p.quoted_packet().unwrap();
        assert_eq!(inner.src_addr(), core::net::Ipv4Addr::new(10, 137, 0, 5));
        assert_eq!(inner.payload(), &q[20..]);

        let t = Repr::TimeExceeded { reason: TimeExceeded::TtlExpired, quoted: &q };
        t.emit(&mut out).unwrap();
        assert_eq!(Repr::parse(&Packet::new_checked(&out[..]).unwrap()).unwrap(), t);
        let pp = Repr::ParamProblem { code: 0, pointer: 9, quoted: &q };
        pp.emit(&mut out).unwrap();
        assert_eq!(&out[..5], &[12, 0, out[2], out[3], 9]);
        assert_eq!(Repr::parse(&Packet::new_checked(&out[..]).unwrap()).unwrap(), pp);
    }

    #[test]
    fn errors_need_whole_quote() {
        let q = quoted_udp();
        let r = Repr::DstUnreachable { reason: DstUnreachable::CommProhibited, next_hop_mtu: 0, quoted: &q[..19] };
        let mut out = vec![0; 27];
        r.emit(&mut out).unwrap();
        assert!(Repr::parse(&Packet::new_checked(&out[..]).unwrap()).is_err());
        assert!(Packet::new_checked(&ECHO_BYTES[..7]).is_err());
    }

    #[test]
    fn unknown_codes_roundtrip() {
        assert_eq!(u8::from(DstUnreachable::from(99)), 99);
        assert_eq!(DstUnreachable::from(13), DstUnreachable::CommProhibited);
        assert!(Message::from(42).is_error());
        assert!(!Message::EchoReply.is_error());
    }
}
