//! ICMPv6 (RFC 4443) and Neighbor Discovery (RFC 4861): echo, errors, neighbor
//! solicitation/advertisement with link-layer address options.

use crate::checksum;
use crate::ethernet::EthernetAddress;
use crate::ip::IpProtocol;
use crate::ipv6;
use crate::{Error, Result, read_ipv6, read_u16, read_u32, write_u16, write_u32};
use core::net::Ipv6Addr;

enum_with_unknown! {
    /// ICMPv6 message type.
    pub enum Message(u8) {
        /// Destination unreachable.
        DstUnreachable = 1,
        /// Packet too big.
        PktTooBig = 2,
        /// Time exceeded.
        TimeExceeded = 3,
        /// Parameter problem.
        ParamProblem = 4,
        /// Echo request.
        EchoRequest = 128,
        /// Echo reply.
        EchoReply = 129,
        /// Multicast listener query.
        MldQuery = 130,
        /// Multicast listener report.
        MldReport = 131,
        /// Multicast listener done.
        MldDone = 132,
        /// Router solicitation.
        RouterSolicit = 133,
        /// Router advertisement.
        RouterAdvert = 134,
        /// Neighbor solicitation.
        NeighborSolicit = 135,
        /// Neighbor advertisement.
        NeighborAdvert = 136,
        /// Redirect.
        Redirect = 137,
        /// Multicast listener report v2.
        MldV2Report = 143,
    }
}

impl Message {
    /// Whether this is an error message (types 0–127, RFC 4443 §2.1).
    pub fn is_error(self) -> bool {
        u8::from(self) < 128
    }
}

enum_with_unknown! {
    /// Codes of destination unreachable.
    pub enum DstUnreachable(u8) {
        /// No route to destination.
        NoRoute = 0,
        /// Communication with destination administratively prohibited.
        AdminProhibit = 1,
        /// Beyond scope of source address.
        BeyondScope = 2,
        /// Address unreachable.
        AddrUnreachable = 3,
        /// Port unreachable.
        PortUnreachable = 4,
        /// Source address failed ingress/egress policy.
        FailedPolicy = 5,
        /// Reject route to destination.
        RejectRoute = 6,
    }
}

/// Neighbor advertisement flags (in the first byte after the checksum).
pub mod na_flags {
    /// Router.
    pub const ROUTER: u8 = 0x80;
    /// Solicited.
    pub const SOLICITED: u8 = 0x40;
    /// Override.
    pub const OVERRIDE: u8 = 0x20;
}

mod field {
    use crate::field::Field;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQNO: Field = 6..8;
    pub const MTU: Field = 4..8;
    pub const POINTER: Field = 4..8;
    pub const NA_FLAGS: usize = 4;
    pub const REST: Field = 4..8;
    pub const TARGET: Field = 8..24;
}

/// Length of the ICMPv6 header (type, code, checksum, 4 type-specific bytes).
pub const HEADER_LEN: usize = field::REST.end;
/// Length of a neighbor solicitation/advertisement before its options.
pub const NDP_HEADER_LEN: usize = field::TARGET.end;

/// A read/write wrapper around an ICMPv6 message buffer.
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

    /// `Err` if the buffer is shorter than the 8-byte header, or, for a neighbor
    /// solicitation or advertisement, shorter than its 24-byte fixed part.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        let need = match self.buffer.as_ref().first().map(|&t| Message::from(t)) {
            Some(Message::NeighborSolicit | Message::NeighborAdvert) => NDP_HEADER_LEN,
            _ => HEADER_LEN,
        };
        if len < need { Err(Error) } else { Ok(()) }
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

    /// Echo identifier.
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_IDENT.start)
    }

    /// Echo sequence number.
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_SEQNO.start)
    }

    /// MTU of a packet-too-big message.
    #[inline]
    pub fn mtu(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::MTU.start)
    }

    /// Pointer of a parameter-problem message.
    #[inline]
    pub fn pointer(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::POINTER.start)
    }

    /// Neighbor advertisement flags (see [`na_flags`]).
    #[inline]
    pub fn na_flags(&self) -> u8 {
        self.buffer.as_ref()[field::NA_FLAGS] & 0xe0
    }

    /// Target address of a neighbor solicitation/advertisement; `None` if the message is
    /// too short to have one.
    pub fn target_addr(&self) -> Option<Ipv6Addr> {
        let d = self.buffer.as_ref();
        (d.len() >= field::TARGET.end).then(|| read_ipv6(d, field::TARGET.start))
    }

    /// NDP options of a neighbor solicitation/advertisement (empty for other types).
    pub fn ndp_options(&self) -> NdpOptionIter<'_> {
        let d = self.buffer.as_ref();
        let opts = match self.msg_type() {
            Message::NeighborSolicit | Message::NeighborAdvert => d.get(NDP_HEADER_LEN..).unwrap_or(&[]),
            _ => &[],
        };
        NdpOptionIter::new(opts)
    }

    /// Verify the checksum with the IPv6 pseudo-header. Always `true` when fuzzing.
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        if cfg!(fuzzing) {
            return true;
        }
        let d = self.buffer.as_ref();
        let ph = checksum::pseudo_header_v6(src, dst, IpProtocol::Icmpv6.into(), d.len() as u32);
        checksum::add(ph, checksum::data(d)) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// Everything after the 8-byte header.
    #[inline]
    pub fn data(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// The original packet quoted by an error message (fixed header whole, payload as
    /// quoted). `Err` for informational messages or a short quote.
    pub fn quoted_packet(&self) -> Result<ipv6::Packet<&'a [u8]>> {
        if !self.msg_type().is_error() {
            return Err(Error);
        }
        ipv6::Packet::new_quoted(self.data())
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

    /// Set the four type-specific bytes as a `u32` (MTU, pointer, or NA flags << 24).
    #[inline]
    pub fn set_rest_of_header(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::REST.start, value)
    }

    /// Set the target address (the buffer must be at least 24 bytes).
    #[inline]
    pub fn set_target_addr(&mut self, value: Ipv6Addr) {
        self.buffer.as_mut()[field::TARGET].copy_from_slice(&value.octets())
    }

    /// The data after the 8-byte header, mutably.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }

    /// Compute and write the checksum with the IPv6 pseudo-header.
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let d = self.buffer.as_ref();
        let ph = checksum::pseudo_header_v6(src, dst, IpProtocol::Icmpv6.into(), d.len() as u32);
        let c = !checksum::add(ph, checksum::data(d));
        self.set_checksum(c)
    }
}

/// One NDP option (RFC 4861 §4.6).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum NdpOption<'a> {
    /// Source link-layer address (type 1), Ethernet.
    SourceLinkLayerAddr(EthernetAddress),
    /// Target link-layer address (type 2), Ethernet.
    TargetLinkLayerAddr(EthernetAddress),
    /// MTU (type 5).
    Mtu(u32),
    /// Any other option (or a link-layer address that is not 6 bytes).
    Unknown {
        /// Option type.
        kind: u8,
        /// Option data after type and length.
        data: &'a [u8],
    },
}

/// An iterator over NDP options. An option of length 0 or past the end yields one `Err`
/// and ends the iteration (RFC 4861 §4.6: such a packet must be discarded).
#[derive(Debug, Clone)]
pub struct NdpOptionIter<'a> {
    data: &'a [u8],
}

impl<'a> NdpOptionIter<'a> {
    /// Iterate the options in `data`.
    pub fn new(data: &'a [u8]) -> NdpOptionIter<'a> {
        NdpOptionIter { data }
    }
}

impl<'a> Iterator for NdpOptionIter<'a> {
    type Item = Result<NdpOption<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.data.is_empty() {
            return None;
        }
        let len = match self.data.get(1) {
            Some(&l) if l != 0 && usize::from(l) * 8 <= self.data.len() => usize::from(l) * 8,
            _ => {
                self.data = &[];
                return Some(Err(Error));
            }
        };
        let kind = self.data[0];
        let body = &self.data[2..len];
        self.data = &self.data[len..];
        Some(Ok(match (kind, len) {
            (1, 8) => NdpOption::SourceLinkLayerAddr(EthernetAddress::from_bytes(&body[..6]).ok()?),
            (2, 8) => NdpOption::TargetLinkLayerAddr(EthernetAddress::from_bytes(&body[..6]).ok()?),
            (5, 8) => NdpOption::Mtu(read_u32(body, 2)),
            _ => NdpOption::Unknown { kind, data: body },
        }))
    }
}

/// A high-level representation of the ICMPv6 messages the firewall handles.
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
        /// The quoted original packet.
        quoted: &'a [u8],
    },
    /// Packet too big.
    PktTooBig {
        /// MTU of the next hop.
        mtu: u32,
        /// The quoted original packet.
        quoted: &'a [u8],
    },
    /// Time exceeded (code 0: hop limit, 1: reassembly).
    TimeExceeded {
        /// Code.
        code: u8,
        /// The quoted original packet.
        quoted: &'a [u8],
    },
    /// Parameter problem.
    ParamProblem {
        /// Code.
        code: u8,
        /// Offset of the offending octet.
        pointer: u32,
        /// The quoted original packet.
        quoted: &'a [u8],
    },
    /// Neighbor solicitation.
    NeighborSolicit {
        /// Target address.
        target_addr: Ipv6Addr,
        /// Source link-layer address option, if present.
        lladdr: Option<EthernetAddress>,
    },
    /// Neighbor advertisement.
    NeighborAdvert {
        /// Flags (see [`na_flags`]).
        flags: u8,
        /// Target address.
        target_addr: Ipv6Addr,
        /// Target link-layer address option, if present.
        lladdr: Option<EthernetAddress>,
    },
}

impl<'a> Repr<'a> {
    /// Parse a message: length and checksum (with `src`/`dst`) checked; NDP messages must
    /// have code 0 and well-formed options. Other types are `Err`.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&'a T>, src: Ipv6Addr, dst: Ipv6Addr) -> Result<Repr<'a>> {
        packet.check_len()?;
        if !packet.verify_checksum(src, dst) {
            return Err(Error);
        }
        let data = packet.data();
        let quoted = || -> Result<&'a [u8]> {
            ipv6::Packet::new_quoted(data)?;
            Ok(data)
        };
        let lladdr = |want_source: bool| -> Result<Option<EthernetAddress>> {
            let mut found = None;
            for opt in packet.ndp_options() {
                match (opt?, want_source) {
                    (NdpOption::SourceLinkLayerAddr(a), true) | (NdpOption::TargetLinkLayerAddr(a), false) => {
                        found = Some(a)
                    }
                    _ => {}
                }
            }
            Ok(found)
        };
        match (packet.msg_type(), packet.msg_code()) {
            (Message::EchoRequest, 0) => {
                Ok(Repr::EchoRequest { ident: packet.echo_ident(), seq_no: packet.echo_seq_no(), data })
            }
            (Message::EchoReply, 0) => {
                Ok(Repr::EchoReply { ident: packet.echo_ident(), seq_no: packet.echo_seq_no(), data })
            }
            (Message::DstUnreachable, code) => {
                Ok(Repr::DstUnreachable { reason: DstUnreachable::from(code), quoted: quoted()? })
            }
            (Message::PktTooBig, 0) => Ok(Repr::PktTooBig { mtu: packet.mtu(), quoted: quoted()? }),
            (Message::TimeExceeded, code) => Ok(Repr::TimeExceeded { code, quoted: quoted()? }),
            (Message::ParamProblem, code) => {
                Ok(Repr::ParamProblem { code, pointer: packet.pointer(), quoted: quoted()? })
            }
            (Message::NeighborSolicit, 0) => {
                Ok(Repr::NeighborSolicit { target_addr: packet.target_addr().ok_or(Error)?, lladdr: lladdr(true)? })
            }
            (Message::NeighborAdvert, 0) => Ok(Repr::NeighborAdvert {
                flags: packet.na_flags(),
                target_addr: packet.target_addr().ok_or(Error)?,
                lladdr: lladdr(false)?,
            }),
            _ => Err(Error),
        }
    }

    /// Length of the message.
    pub const fn buffer_len(&self) -> usize {
        match self {
            Repr::EchoRequest { data, .. } | Repr::EchoReply { data, .. } => HEADER_LEN + data.len(),
            Repr::DstUnreachable { quoted, .. }
            | Repr::PktTooBig { quoted, .. }
            | Repr::TimeExceeded { quoted, .. }
            | Repr::ParamProblem { quoted, .. } => HEADER_LEN + quoted.len(),
            Repr::NeighborSolicit { lladdr, .. } | Repr::NeighborAdvert { lladdr, .. } => {
                NDP_HEADER_LEN + if lladdr.is_some() { 8 } else { 0 }
            }
        }
    }

    /// Write the message into the start of `buffer` with its checksum (pseudo-header of
    /// `src`/`dst`); returns its length, or `Err` if it does not fit.
    pub fn emit(&self, buffer: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) -> Result<usize> {
        let len = self.buffer_len();
        let buf = buffer.get_mut(..len).ok_or(Error)?;
        let mut p = Packet::new_unchecked(buf);
        let echo = |i: u16, s: u16| (u32::from(i) << 16) | u32::from(s);
        let (ty, code, rest) = match *self {
            Repr::EchoRequest { ident, seq_no, data } => {
                p.data_mut().copy_from_slice(data);
                (Message::EchoRequest, 0, echo(ident, seq_no))
            }
            Repr::EchoReply { ident, seq_no, data } => {
                p.data_mut().copy_from_slice(data);
                (Message::EchoReply, 0, echo(ident, seq_no))
            }
            Repr::DstUnreachable { reason, quoted } => {
                p.data_mut().copy_from_slice(quoted);
                (Message::DstUnreachable, reason.into(), 0)
            }
            Repr::PktTooBig { mtu, quoted } => {
                p.data_mut().copy_from_slice(quoted);
                (Message::PktTooBig, 0, mtu)
            }
            Repr::TimeExceeded { code, quoted } => {
                p.data_mut().copy_from_slice(quoted);
                (Message::TimeExceeded, code, 0)
            }
            Repr::ParamProblem { code, pointer, quoted } => {
                p.data_mut().copy_from_slice(quoted);
                (Message::ParamProblem, code, pointer)
            }
            Repr::NeighborSolicit { target_addr, lladdr } => {
                p.set_target_addr(target_addr);
                emit_lladdr(&mut p, 1, lladdr);
                (Message::NeighborSolicit, 0, 0)
            }
            Repr::NeighborAdvert { flags, target_addr, lladdr } => {
                p.set_target_addr(target_addr);
                emit_lladdr(&mut p, 2, lladdr);
                (Message::NeighborAdvert, 0, u32::from(flags & 0xe0) << 24)
            }
        };
        p.set_msg_type(ty);
        p.set_msg_code(code);
        p.set_rest_of_header(rest);
        p.fill_checksum(src, dst);
        Ok(len)
    }
}

fn emit_lladdr(p: &mut Packet<&mut [u8]>, kind: u8, lladdr: Option<EthernetAddress>) {
    if let Some(a) = lladdr {
        let o = &mut p.data_mut()[16..24];
        o[0] = kind;
        o[1] = 1;
        o[2..].copy_from_slice(&a.0);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn src() -> Ipv6Addr {
        "fe80::1".parse().unwrap()
    }
    fn dst() -> Ipv6Addr {
        "fe80::2".parse().unwrap()
    }

    // Neighbor advertisement, flags S|O, target fe80::1, target LL 00:16:3e:00:00:01.
    fn na_bytes() -> Vec<u8> {
        let mut b = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
        b.extend_from_slice(&src().octets());
        b.extend_from_slice(&[2, 1, 0x00, 0x16, 0x3e, 0x00, 0x00, 0x01]);
        let ph = checksum::pseudo_header_v6(src(), dst(), 58, b.len() as u32);
        let c = !checksum::add(ph, checksum::data(&b));
        b[2..4].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn na_deconstruct() {
        let b = na_bytes();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.msg_type(), Message::NeighborAdvert);
        assert_eq!(p.na_flags(), na_flags::SOLICITED | na_flags::OVERRIDE);
        assert_eq!(p.target_addr(), Some(src()));
        assert!(p.verify_checksum(src(), dst()));
        let opts: Vec<_> = p.ndp_options().collect();
        assert_eq!(opts, vec![Ok(NdpOption::TargetLinkLayerAddr(EthernetAddress([0, 0x16, 0x3e, 0, 0, 1])))]);
    }

    #[test]
    fn na_construct_and_parse() {
        let want = na_bytes();
        let mut out = vec![0xa5; want.len()];
        let mut p = Packet::new_unchecked(&mut out[..]);
        p.set_msg_type(Message::NeighborAdvert);
        p.set_msg_code(0);
        p.set_rest_of_header(0x6000_0000);
        p.set_target_addr(src());
        p.data_mut()[16..].copy_from_slice(&[2, 1, 0x00, 0x16, 0x3e, 0x00, 0x00, 0x01]);
        p.fill_checksum(src(), dst());
        assert_eq!(out, want);

        let r = Repr::parse(&Packet::new_checked(&want[..]).unwrap(), src(), dst()).unwrap();
        assert_eq!(
            r,
            Repr::NeighborAdvert {
                flags: 0x60,
                target_addr: src(),
                lladdr: Some(EthernetAddress([0, 0x16, 0x3e, 0, 0, 1]))
            }
        );
        let mut out = vec![0xa5; 40];
        assert_eq!(r.emit(&mut out, src(), dst()).unwrap(), 32);
        assert_eq!(&out[..32], &want[..]);
        assert_eq!(&out[32..], &[0xa5; 8]);
    }

    #[test]
    fn echo_and_errors_roundtrip() {
        let data = [1u8, 2, 3, 4, 5];
        let mut out = vec![0xa5; 100];
        for r in [
            Repr::EchoRequest { ident: 7, seq_no: 9, data: &data },
            Repr::EchoReply { ident: 7, seq_no: 9, data: &data },
            Repr::NeighborSolicit { target_addr: dst(), lladdr: Some(EthernetAddress([2, 0, 0, 0, 0, 1])) },
            Repr::NeighborSolicit { target_addr: dst(), lladdr: None },
        ] {
            let n = r.emit(&mut out, src(), dst()).unwrap();
            assert_eq!(Repr::parse(&Packet::new_checked(&out[..n]).unwrap(), src(), dst()).unwrap(), r);
        }
        let mut quote = vec![0x60, 0, 0, 0, 0, 4, 17, 64];
        quote.extend_from_slice(&dst().octets());
        quote.extend_from_slice(&src().octets());
        quote.extend_from_slice(&[0, 53, 0, 53]);
        for r in [
            Repr::DstUnreachable { reason: DstUnreachable::AdminProhibit, quoted: &quote },
            Repr::PktTooBig { mtu: 1280, quoted: &quote },
            Repr::TimeExceeded { code: 0, quoted: &quote },
            Repr::ParamProblem { code: 1, pointer: 6, quoted: &quote },
        ] {
            let n = r.emit(&mut out, src(), dst()).unwrap();
            let p = Packet::new_checked(&out[..n]).unwrap();
            assert_eq!(Repr::parse(&p, src(), dst()).unwrap(), r);
            assert_eq!(p.quoted_packet().unwrap().dst_addr(), src());
        }
        // Bad checksum.
        let n = Repr::EchoRequest { ident: 1, seq_no: 1, data: &[] }.emit(&mut out, src(), dst()).unwrap();
        assert!(Repr::parse(&Packet::new_checked(&out[..n]).unwrap(), dst(), dst()).is_err());
    }

    #[test]
    fn bad_options_and_lengths() {
        let mut b = na_bytes();
        b[25] = 0; // option length 0
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.ndp_options().collect::<Vec<_>>(), vec![Err(Error)]);
        assert!(Packet::new_checked(&b[..23]).is_err());
        let echo = [128u8, 0, 0, 0, 0, 0, 0, 0];
        let p = Packet::new_checked(&echo[..]).unwrap();
        assert_eq!(p.target_addr(), None);
        assert_eq!(p.ndp_options().count(), 0);
        assert!(Packet::new_checked(&echo[..7]).is_err());
    }
}
