//! IPv6 (RFC 8200): the fixed header, a bounded extension-header walk, and the fragment
//! header.

use crate::ip::IpProtocol;
use crate::{Error, Result, read_ipv6, read_u16, read_u32, write_u16, write_u32};
use core::net::Ipv6Addr;

mod field {
    use crate::field::Field;
    pub const VER_TC_FLOW: Field = 0..4;
    pub const LENGTH: Field = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;
}

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// The IPv6 minimum MTU (RFC 8200 §5), the bound on ICMPv6 error size (RFC 4443 §2.4(c)).
pub const MIN_MTU: usize = 1280;

/// The most extension headers [`walk_ext_headers`] follows before giving up. Real traffic
/// has at most a handful; the bound keeps a hostile chain from costing more than this.
pub const MAX_EXT_HEADERS: usize = 8;

/// A read/write wrapper around an IPv6 packet buffer.
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

    /// Wrap an IPv6 header quoted in an ICMPv6 error: only the fixed header must be present;
    /// [`Packet::payload`] returns what is present of the payload.
    pub fn new_quoted(buffer: T) -> Result<Packet<T>> {
        let p = Self::new_unchecked(buffer);
        if p.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error);
        }
        Ok(p)
    }

    /// `Err` if the buffer does not hold the fixed header and the payload length it
    /// announces. After `Ok`, no accessor or setter panics. Invalidated by
    /// [`Packet::set_payload_len`].
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < HEADER_LEN + usize::from(self.payload_len()) { Err(Error) } else { Ok(()) }
    }

    /// Return the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version (6 for a valid packet).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Traffic class.
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (read_u16(self.buffer.as_ref(), 0) >> 4) as u8
    }

    /// Flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::VER_TC_FLOW.start) & 0x000f_ffff
    }

    /// Payload length (extension headers included).
    #[inline]
    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// The next header of the fixed header (maybe an extension header).
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::NXT_HDR])
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        read_ipv6(self.buffer.as_ref(), field::SRC_ADDR.start)
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        read_ipv6(self.buffer.as_ref(), field::DST_ADDR.start)
    }

    fn payload_range(&self) -> core::ops::Range<usize> {
        let len = self.buffer.as_ref().len();
        let end = (HEADER_LEN + usize::from(self.payload_len())).min(len);
        HEADER_LEN.min(end)..end
    }

    /// The destination address for upper-layer pseudo-headers: the final destination of a
    /// routing header if there is one with segments left, else the destination address.
    pub fn pseudo_header_dst(&self) -> Ipv6Addr {
        match self.upper_layer() {
            Ok(UpperLayer { final_dst: Some(d), .. }) => d,
            _ => self.dst_addr(),
        }
    }

    /// Walk the extension headers (see [`walk_ext_headers`]).
    pub fn upper_layer(&self) -> Result<UpperLayer> {
        let r = self.payload_range();
        walk_ext_headers(self.next_header(), &self.buffer.as_ref()[r])
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload (extension headers included), up to the payload length; for a quoted
    /// packet, what is present of it.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let r = self.payload_range();
        &self.buffer.as_ref()[r]
    }

    /// The upper-layer data after the extension headers, with its protocol and fragment
    /// information. For a non-first fragment the data is not an upper-layer header.
    pub fn upper_layer_payload(&self) -> Result<(UpperLayer, &'a [u8])> {
        let p = self.payload();
        let u = walk_ext_headers(self.next_header(), p)?;
        Ok((u, p.get(u.offset..).ok_or(Error)?))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set version 6, traffic class and flow label together.
    #[inline]
    pub fn set_version_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let v = (6u32 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        write_u32(self.buffer.as_mut(), field::VER_TC_FLOW.start, v)
    }

    /// Set the payload length.
    #[inline]
    pub fn set_payload_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH.start, value)
    }

    /// Set the next header.
    #[inline]
    pub fn set_next_header(&mut self, value: IpProtocol) {
        self.buffer.as_mut()[field::NXT_HDR] = value.into()
    }

    /// Set the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = value
    }

    /// Set the source address.
    #[inline]
    pub fn set_src_addr(&mut self, value: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&value.octets())
    }

    /// Set the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, value: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&value.octets())
    }

    /// Decrement the hop limit; `false` (nothing changed) if it is 0 or 1.
    pub fn decrement_hop_limit(&mut self) -> bool {
        let h = self.hop_limit();
        if h <= 1 {
            return false;
        }
        self.set_hop_limit(h - 1);
        true
    }

    /// The payload, mutably.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let r = self.payload_range();
        &mut self.buffer.as_mut()[r]
    }
}

/// The fragment extension header (RFC 8200 §4.5).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct FragmentRepr {
    /// The header after the fragment header.
    pub next_header: IpProtocol,
    /// Fragment offset in 8-byte units.
    pub offset: u16,
    /// More-fragments flag.
    pub more_frags: bool,
    /// Identification.
    pub ident: u32,
}

/// Length of the fragment header.
pub const FRAGMENT_HEADER_LEN: usize = 8;

impl FragmentRepr {
    /// Parse a fragment header from the start of `data`.
    pub fn parse(data: &[u8]) -> Result<FragmentRepr> {
        if data.len() < FRAGMENT_HEADER_LEN {
            return Err(Error);
        }
        let off = read_u16(data, 2);
        Ok(FragmentRepr {
            next_header: IpProtocol::from(data[0]),
            offset: off >> 3,
            more_frags: off & 1 != 0,
            ident: read_u32(data, 4),
        })
    }

    /// Length when emitted.
    pub const fn buffer_len(&self) -> usize {
        FRAGMENT_HEADER_LEN
    }

    /// Write the header at the start of `data`; `Err` if it does not fit.
    pub fn emit(&self, data: &mut [u8]) -> Result<()> {
        let d = data.get_mut(..FRAGMENT_HEADER_LEN).ok_or(Error)?;
        d[0] = self.next_header.into();
        d[1] = 0;
        write_u16(d, 2, (self.offset << 3) | u16::from(self.more_frags));
        write_u32(d, 4, self.ident);
        Ok(())
    }
}

/// What follows the extension headers of an IPv6 packet.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct UpperLayer {
    /// The protocol of the data after the last extension header (ESP and "no next header"
    /// end the walk as well).
    pub protocol: IpProtocol,
    /// Offset of that data from the start of the IPv6 payload.
    pub offset: usize,
    /// The fragment header, if there is one.
    pub fragment: Option<FragmentRepr>,
    /// How many extension headers were skipped.
    pub ext_headers: usize,
    /// The final destination named by a routing header with segments left (types 0 and 2:
    /// the last address; type 4, SRH: segment 0). Upper-layer checksums use it in the
    /// pseudo-header instead of the destination address (RFC 8200 §8.1).
    pub final_dst: Option<Ipv6Addr>,
}

impl UpperLayer {
    /// Whether this is a fragment other than the first (no upper-layer header follows).
    pub fn is_non_first_fragment(&self) -> bool {
        matches!(self.fragment, Some(f) if f.offset != 0)
    }
}

/// Walk the extension headers of an IPv6 payload, starting from the fixed header's next
/// header. Hop-by-hop, routing, destination options, AH and fragment headers are skipped;
/// at most [`MAX_EXT_HEADERS`] are followed. `Err` if a header is truncated, hop-by-hop is
/// not first, there is more than one fragment header, or the chain is too long. The walk
/// stops at a non-first fragment, since what follows is not a header.
pub fn walk_ext_headers(first: IpProtocol, payload: &[u8]) -> Result<UpperLayer> {
    let mut nh = first;
    let mut off = 0usize;
    let mut fragment = None;
    let mut final_dst = None;
    for count in 0..=MAX_EXT_HEADERS {
        let hdr_len = match nh {
            IpProtocol::HopByHop if count != 0 => return Err(Error),
            IpProtocol::HopByHop | IpProtocol::Ipv6Route | IpProtocol::Ipv6Opts => {
                let l = payload.get(off + 1).ok_or(Error)?;
                (usize::from(*l) + 1) * 8
            }
            IpProtocol::Ah => {
                let l = payload.get(off + 1).ok_or(Error)?;
                (usize::from(*l) + 2) * 4
            }
            IpProtocol::Ipv6Frag => {
                if fragment.is_some() {
                    return Err(Error);
                }
                let f = FragmentRepr::parse(payload.get(off..).ok_or(Error)?)?;
                fragment = Some(f);
                off += FRAGMENT_HEADER_LEN;
                nh = f.next_header;
                if f.offset != 0 {
                    return Ok(UpperLayer { protocol: nh, offset: off, fragment, ext_headers: count + 1, final_dst });
                }
                continue;
            }
            _ => return Ok(UpperLayer { protocol: nh, offset: off, fragment, ext_headers: count, final_dst }),
        };
        if off + hdr_len > payload.len() {
            return Err(Error);
        }
        if nh == IpProtocol::Ipv6Route {
            let h = &payload[off..off + hdr_len];
            // h[2] = routing type, h[3] = segments left; addresses from byte 8.
            let n = (hdr_len - 8) / 16;
            let pick = match h[2] {
                0 | 2 if n > 0 => Some(n - 1),
                4 if n > 0 => Some(0),
                _ => None,
            };
            if let (Some(i), true) = (pick, h[3] > 0) {
                final_dst = Some(read_ipv6(h, 8 + 16 * i));
            }
        }
        nh = IpProtocol::from(payload[off]);
        off += hdr_len;
    }
    Err(Error)
}

/// A high-level representation of a fixed IPv6 header.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// Next header of the fixed header.
    pub next_header: IpProtocol,
    /// Payload length.
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
}

impl Repr {
    /// Parse the fixed header (lengths and version checked).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr> {
        packet.check_len()?;
        if packet.version() != 6 {
            return Err(Error);
        }
        Ok(Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
        })
    }

    /// Header length.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write the fixed header (traffic class and flow label 0). `Err` if the buffer is
    /// shorter than [`HEADER_LEN`] or the payload length does not fit 16 bits.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) -> Result<()> {
        let len = u16::try_from(self.payload_len).map_err(|_| Error)?;
        if packet.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error);
        }
        packet.set_version_tc_flow(0, 0);
        packet.set_payload_len(len);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    // Hop-by-hop (8 bytes, PadN) -> fragment (offset 0, M) -> UDP, 4 payload bytes.
    static PACKET_BYTES: [u8; 60] = [
        0x60, 0x12, 0x34, 0x56, 0x00, 0x14, 0x00, 0x40, // ver/tc/flow, len 20, HBH, hlim 64
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // src fe80::1
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // dst fe80::2
        0x2c, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, // HBH: next frag, PadN(4)
        0x11, 0x00, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef, // frag: next UDP, off 0, M, id
        0x01, 0x02, 0x03, 0x04, // payload
    ];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0x01);
        assert_eq!(p.flow_label(), 0x23456);
        assert_eq!(p.payload_len(), 20);
        assert_eq!(p.next_header(), IpProtocol::HopByHop);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), "fe80::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "fe80::2".parse::<Ipv6Addr>().unwrap());
        let (u, data) = p.upper_layer_payload().unwrap();
        assert_eq!(u.protocol, IpProtocol::Udp);
        assert_eq!(u.offset, 16);
        assert_eq!(u.ext_headers, 2);
        assert_eq!(
            u.fragment,
            Some(FragmentRepr { next_header: IpProtocol::Udp, offset: 0, more_frags: true, ident: 0xdeadbeef })
        );
        assert!(!u.is_non_first_fragment());
        assert_eq!(data, &[1, 2, 3, 4]);
    }

    #[test]
    fn construct() {
        let mut out = vec![0xa5; 60];
        let mut p = Packet::new_unchecked(&mut out);
        p.set_version_tc_flow(0x01, 0x23456);
        p.set_payload_len(20);
        p.set_next_header(IpProtocol::HopByHop);
        p.set_hop_limit(64);
        p.set_src_addr("fe80::1".parse().unwrap());
        p.set_dst_addr("fe80::2".parse().unwrap());
        let pl = p.payload_mut();
        pl[..8].copy_from_slice(&[0x2c, 0x00, 0x01, 0x04, 0, 0, 0, 0]);
        FragmentRepr { next_header: IpProtocol::Udp, offset: 0, more_frags: true, ident: 0xdeadbeef }
            .emit(&mut pl[8..])
            .unwrap();
        pl[16..].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(&out[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn parse_emit() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        let r = Repr::parse(&p).unwrap();
        assert_eq!(r.payload_len, 20);
        let mut out = vec![0xa5; 40];
        r.emit(&mut Packet::new_unchecked(&mut out)).unwrap();
        assert_eq!(&out[..4], &[0x60, 0, 0, 0]);
        assert_eq!(&out[4..], &PACKET_BYTES[4..40]);
    }

    #[test]
    fn walk_errors() {
        // Truncated packet.
        assert!(Packet::new_checked(&PACKET_BYTES[..59]).is_err());
        // HBH not first.
        assert!(walk_ext_headers(IpProtocol::Ipv6Opts, &[0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0]).is_err());
        // Truncated option header.
        assert!(walk_ext_headers(IpProtocol::Ipv6Opts, &[6, 1, 0, 0, 0, 0, 0, 0]).is_err());
        // Endless chain of destination options is cut at the bound.
        let chain = [60u8, 0, 0, 0, 0, 0, 0, 0].repeat(MAX_EXT_HEADERS + 2);
        assert!(walk_ext_headers(IpProtocol::Ipv6Opts, &chain).is_err());
        let ok = [60u8, 0, 0, 0, 0, 0, 0, 0].repeat(MAX_EXT_HEADERS - 1);
        let mut ok = ok.clone();
        ok.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0]);
        let u = walk_ext_headers(IpProtocol::Ipv6Opts, &ok).unwrap();
        assert_eq!(u.protocol, IpProtocol::Tcp);
        assert_eq!(u.ext_headers, MAX_EXT_HEADERS);
        // Two fragment headers.
        assert!(walk_ext_headers(IpProtocol::Ipv6Frag, &[44, 0, 0, 1, 0, 0, 0, 1, 6, 0, 0, 0, 0, 0, 0, 1]).is_err());
        // A non-first fragment stops the walk.
        let u = walk_ext_headers(IpProtocol::Ipv6Frag, &[6, 0, 0, 8, 0, 0, 0, 1, 0xff]).unwrap();
        assert!(u.is_non_first_fragment());
        assert_eq!(u.offset, 8);
        // AH uses 4-byte units.
        let u = walk_ext_headers(IpProtocol::Ah, &[17, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!((u.protocol, u.offset), (IpProtocol::Udp, 12));
        // Routing header type 0, one segment left: the final destination is the last address.
        let mut rh = vec![17u8, 2, 0, 1, 0, 0, 0, 0];
        rh.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        let u = walk_ext_headers(IpProtocol::Ipv6Route, &rh).unwrap();
        assert_eq!(u.final_dst, Some("2001:db8::2".parse().unwrap()));
        rh[3] = 0;
        assert_eq!(walk_ext_headers(IpProtocol::Ipv6Route, &rh).unwrap().final_dst, None);
    }

    #[test]
    fn quoted() {
        let q = Packet::new_quoted(&PACKET_BYTES[..44]).unwrap();
        assert_eq!(q.payload(), &PACKET_BYTES[40..44]);
        assert!(Packet::new_quoted(&PACKET_BYTES[..39]).is_err());
    }
}
