//! DNS messages (RFC 1035): header, questions, A/AAAA (and CNAME) answers, and name
//! decompression that cannot loop. Enough for a resolver of `dsthost` rules.
//!
//! **Decompression bound.** A compression pointer must point strictly before the start of
//! the label run it is found in, so every jump goes backwards and the walk ends; on top of
//! that at most [`MAX_POINTERS`] jumps are followed and a name may not exceed 255 bytes.

use crate::{Error, Result, read_ipv4, read_ipv6, read_u16, read_u32, write_u16};
use core::net::{Ipv4Addr, Ipv6Addr};

enum_with_unknown! {
    /// Resource record type.
    pub enum Type(u16) {
        /// IPv4 address.
        A = 1,
        /// Name server.
        Ns = 2,
        /// Canonical name.
        Cname = 5,
        /// Start of authority.
        Soa = 6,
        /// Pointer.
        Ptr = 12,
        /// Mail exchange.
        Mx = 15,
        /// Text.
        Txt = 16,
        /// IPv6 address.
        Aaaa = 28,
        /// Service.
        Srv = 33,
        /// EDNS(0) pseudo-record.
        Opt = 41,
        /// Any (query only).
        Any = 255,
    }
}

enum_with_unknown! {
    /// Response code.
    pub enum Rcode(u8) {
        /// No error.
        NoError = 0,
        /// Format error.
        FormErr = 1,
        /// Server failure.
        ServFail = 2,
        /// Non-existent domain.
        NxDomain = 3,
        /// Not implemented.
        NotImp = 4,
        /// Refused.
        Refused = 5,
    }
}

/// The IN class.
pub const CLASS_IN: u16 = 1;
/// Most compression pointers followed in one name.
pub const MAX_POINTERS: usize = 32;
/// Longest encoded name (RFC 1035 §2.3.4).
pub const MAX_NAME_LEN: usize = 255;

/// Header flag bits (bytes 2..4).
pub mod flags {
    /// Response.
    pub const QR: u16 = 0x8000;
    /// Authoritative answer.
    pub const AA: u16 = 0x0400;
    /// Truncated.
    pub const TC: u16 = 0x0200;
    /// Recursion desired.
    pub const RD: u16 = 0x0100;
    /// Recursion available.
    pub const RA: u16 = 0x0080;
    /// Reserved (Z).
    pub const Z: u16 = 0x0040;
    /// Authentic data.
    pub const AD: u16 = 0x0020;
    /// Checking disabled.
    pub const CD: u16 = 0x0010;
}

mod field {
    use crate::field::Field;
    pub const ID: Field = 0..2;
    pub const FLAGS: Field = 2..4;
    pub const QDCOUNT: Field = 4..6;
    pub const ANCOUNT: Field = 6..8;
    pub const NSCOUNT: Field = 8..10;
    pub const ARCOUNT: Field = 10..12;
}

/// Length of the DNS header.
pub const HEADER_LEN: usize = field::ARCOUNT.end;

/// A read/write wrapper around a DNS message buffer.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wrap a buffer, checking that the header is present.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Err` if the buffer is shorter than the header. Sections are checked as they are
    /// iterated.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN { Err(Error) } else { Ok(()) }
    }

    /// Return the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Transaction ID.
    #[inline]
    pub fn id(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ID.start)
    }

    /// The raw flags word (see [`flags`], opcode and rcode included).
    #[inline]
    pub fn flags(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLAGS.start)
    }

    /// Whether this is a response.
    #[inline]
    pub fn is_response(&self) -> bool {
        self.flags() & flags::QR != 0
    }

    /// Opcode.
    #[inline]
    pub fn opcode(&self) -> u8 {
        ((self.flags() >> 11) & 0x0f) as u8
    }

    /// Response code.
    #[inline]
    pub fn rcode(&self) -> Rcode {
        Rcode::from((self.flags() & 0x0f) as u8)
    }

    /// Question count.
    #[inline]
    pub fn question_count(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::QDCOUNT.start)
    }

    /// Answer count.
    #[inline]
    pub fn answer_count(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ANCOUNT.start)
    }

    /// Authority count.
    #[inline]
    pub fn authority_count(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::NSCOUNT.start)
    }

    /// Additional count.
    #[inline]
    pub fn additional_count(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ARCOUNT.start)
    }

    /// Iterate the questions.
    pub fn questions(&self) -> QuestionIter<'_> {
        QuestionIter { msg: self.buffer.as_ref(), pos: HEADER_LEN, remaining: self.question_count() }
    }

    /// Iterate all resource records (answer, authority, additional), each with its
    /// section. The questions are skipped first; an error there is yielded once.
    pub fn records(&self) -> RecordIter<'_> {
        let mut q = self.questions();
        let mut failed = false;
        for r in &mut q {
            if r.is_err() {
                failed = true;
                break;
            }
        }
        RecordIter {
            msg: self.buffer.as_ref(),
            pos: q.pos,
            counts: [self.answer_count(), self.authority_count(), self.additional_count()],
            section: 0,
            failed,
        }
    }

    /// Iterate only the answer records.
    pub fn answers(&self) -> impl Iterator<Item = Result<Record<'_>>> {
        self.records().take_while(|r| !matches!(r, Ok((s, _)) if *s != Section::Answer)).map(|r| r.map(|(_, rec)| rec))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the transaction ID.
    #[inline]
    pub fn set_id(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ID.start, value)
    }

    /// Set the raw flags word.
    #[inline]
    pub fn set_flags(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::FLAGS.start, value)
    }

    /// Set the four section counts.
    pub fn set_counts(&mut self, qd: u16, an: u16, ns: u16, ar: u16) {
        let d = self.buffer.as_mut();
        write_u16(d, field::QDCOUNT.start, qd);
        write_u16(d, field::ANCOUNT.start, an);
        write_u16(d, field::NSCOUNT.start, ns);
        write_u16(d, field::ARCOUNT.start, ar);
    }
}

/// A (possibly compressed) domain name inside a message; validated when parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Name<'a> {
    msg: &'a [u8],
    start: usize,
}

/// Walk a name at `pos`: validate it, return where the name ends in the original run.
fn walk_name(msg: &[u8], pos: usize, mut visit: impl FnMut(&[u8])) -> Result<usize> {
    let mut at = pos;
    let mut run_start = pos;
    let mut end = None;
    let mut jumps = 0;
    let mut total = 0usize;
    loop {
        let b = *msg.get(at).ok_or(Error)?;
        match b & 0xc0 {
            0xc0 => {
                let lo = *msg.get(at + 1).ok_or(Error)?;
                let ptr = (usize::from(b & 0x3f) << 8) | usize::from(lo);
                if end.is_none() {
                    end = Some(at + 2);
                }
                jumps += 1;
                if ptr >= run_start || jumps > MAX_POINTERS {
                    return Err(Error);
                }
                at = ptr;
                run_start = ptr;
            }
            0x00 => {
                let len = usize::from(b);
                total += len + 1;
                if total > MAX_NAME_LEN {
                    return Err(Error);
                }
                if len == 0 {
                    return Ok(end.unwrap_or(at + 1));
                }
                let label = msg.get(at + 1..at + 1 + len).ok_or(Error)?;
                visit(label);
                at += 1 + len;
            }
            _ => return Err(Error),
        }
    }
}

impl<'a> Name<'a> {
    /// Parse the name at `pos` of `msg`; returns it and the offset after it.
    pub fn parse(msg: &'a [u8], pos: usize) -> Result<(Name<'a>, usize)> {
        let end = walk_name(msg, pos, |_| {})?;
        Ok((Name { msg, start: pos }, end))
    }

    /// Call `f` on each label in order (the root is not included).
    pub fn for_each_label(&self, f: impl FnMut(&[u8])) {
        let _ = walk_name(self.msg, self.start, f);
    }

    /// Write the name as dotted text without the final dot (the root is empty). Label
    /// bytes are copied as they are. `Err` if `out` is too small.
    pub fn write_dotted(&self, out: &mut [u8]) -> Result<usize> {
        let mut n = 0usize;
        let mut ok = true;
        self.for_each_label(|label| {
            let need = label.len() + usize::from(n != 0);
            if n + need > out.len() {
                ok = false;
                return;
            }
            if n != 0 {
                out[n] = b'.';
                n += 1;
            }
            out[n..n + label.len()].copy_from_slice(label);
            n += label.len();
        });
        if ok { Ok(n) } else { Err(Error) }
    }

    /// Compare with a dotted name, ASCII case-insensitively (a final dot is allowed).
    pub fn eq_dotted(&self, dotted: &str) -> bool {
        let d = dotted.strip_suffix('.').unwrap_or(dotted).as_bytes();
        let mut rest = d;
        let mut ok = true;
        let mut first = true;
        self.for_each_label(|label| {
            if !ok {
                return;
            }
            if !first {
                match rest.split_first() {
                    Some((b'.', r)) => rest = r,
                    _ => {
                        ok = false;
                        return;
                    }
                }
            }
            first = false;
            if rest.len() < label.len() || !rest[..label.len()].eq_ignore_ascii_case(label) {
                ok = false;
                return;
            }
            rest = &rest[label.len()..];
        });
        ok && rest.is_empty()
    }
}

/// A question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Question<'a> {
    /// Name asked about.
    pub name: Name<'a>,
    /// Type asked for.
    pub qtype: Type,
    /// Class (1 = IN).
    pub qclass: u16,
}

/// Iterator over questions; stops after the first error.
#[derive(Debug, Clone)]
pub struct QuestionIter<'a> {
    msg: &'a [u8],
    pos: usize,
    remaining: u16,
}

impl<'a> Iterator for QuestionIter<'a> {
    type Item = Result<Question<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let r = (|| {
            let (name, at) = Name::parse(self.msg, self.pos)?;
            let tail = self.msg.get(at..at + 4).ok_or(Error)?;
            self.pos = at + 4;
            Ok(Question { name, qtype: Type::from(read_u16(tail, 0)), qclass: read_u16(tail, 2) })
        })();
        if r.is_err() {
            self.remaining = 0;
        }
        Some(r)
    }
}

/// The data of a resource record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordData<'a> {
    /// An A record.
    A(Ipv4Addr),
    /// An AAAA record.
    Aaaa(Ipv6Addr),
    /// A CNAME record.
    Cname(Name<'a>),
    /// Anything else, raw.
    Other(&'a [u8]),
}

/// A resource record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Owner name.
    pub name: Name<'a>,
    /// Type.
    pub rtype: Type,
    /// Class.
    pub rclass: u16,
    /// Time to live.
    pub ttl: u32,
    /// Data (A/AAAA/CNAME decoded; A and AAAA of the wrong length are an error).
    pub data: RecordData<'a>,
}

/// Which section a record is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Answer.
    Answer,
    /// Authority.
    Authority,
    /// Additional.
    Additional,
}

/// Iterator over resource records; stops after the first error.
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    msg: &'a [u8],
    pos: usize,
    counts: [u16; 3],
    section: usize,
    failed: bool,
}

impl<'a> RecordIter<'a> {
    fn parse_one(&mut self) -> Result<Record<'a>> {
        let (name, at) = Name::parse(self.msg, self.pos)?;
        let fixed = self.msg.get(at..at + 10).ok_or(Error)?;
        let rtype = Type::from(read_u16(fixed, 0));
        let rclass = read_u16(fixed, 2);
        let ttl = read_u32(fixed, 4);
        let rdlen = usize::from(read_u16(fixed, 8));
        let rdata = self.msg.get(at + 10..at + 10 + rdlen).ok_or(Error)?;
        let data = match rtype {
            Type::A if rdlen == 4 => RecordData::A(read_ipv4(rdata, 0)),
            Type::Aaaa if rdlen == 16 => RecordData::Aaaa(read_ipv6(rdata, 0)),
            Type::A | Type::Aaaa => return Err(Error),
            Type::Cname => {
                let (n, end) = Name::parse(self.msg, at + 10)?;
                if end != at + 10 + rdlen {
                    return Err(Error);
                }
                RecordData::Cname(n)
            }
            _ => RecordData::Other(rdata),
        };
        self.pos = at + 10 + rdlen;
        Ok(Record { name, rtype, rclass, ttl, data })
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<(Section, Record<'a>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            self.failed = false;
            self.counts = [0; 3];
            return Some(Err(Error));
        }
        while self.section < 3 && self.counts[self.section] == 0 {
            self.section += 1;
        }
        let section = match self.section {
            0 => Section::Answer,
            1 => Section::Authority,
            2 => Section::Additional,
            _ => return None,
        };
        self.counts[self.section] -= 1;
        match self.parse_one() {
            Ok(r) => Some(Ok((section, r))),
            Err(e) => {
                self.counts = [0; 3];
                Some(Err(e))
            }
        }
    }
}

/// A high-level representation of the DNS header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Transaction ID.
    pub id: u16,
    /// Flags word (opcode and rcode included).
    pub flags: u16,
    /// Section counts: questions, answers, authority, additional.
    pub counts: [u16; 4],
}

impl Repr {
    /// Parse the header.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr> {
        packet.check_len()?;
        Ok(Repr {
            id: packet.id(),
            flags: packet.flags(),
            counts: [
                packet.question_count(),
                packet.answer_count(),
                packet.authority_count(),
                packet.additional_count(),
            ],
        })
    }

    /// Header length.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write the header; `Err` if the buffer is shorter than [`HEADER_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) -> Result<()> {
        packet.check_len()?;
        packet.set_id(self.id);
        packet.set_flags(self.flags);
        let [qd, an, ns, ar] = self.counts;
        packet.set_counts(qd, an, ns, ar);
        Ok(())
    }
}

/// Encode a dotted name (a final dot is allowed) into `out`; returns the encoded length.
/// `Err` on an empty or over-long (> 63) label, a name over 255 bytes, or no room.
pub fn emit_name(out: &mut [u8], dotted: &str) -> Result<usize> {
    let d = dotted.strip_suffix('.').unwrap_or(dotted);
    let mut n = 0usize;
    if !d.is_empty() {
        for label in d.split('.') {
            let l = label.len();
            if l == 0 || l > 63 {
                return Err(Error);
            }
            let dst = out.get_mut(n..n + 1 + l).ok_or(Error)?;
            dst[0] = l as u8;
            dst[1..].copy_from_slice(label.as_bytes());
            n += 1 + l;
        }
    }
    *out.get_mut(n).ok_or(Error)? = 0;
    n += 1;
    if n > MAX_NAME_LEN { Err(Error) } else { Ok(n) }
}

/// Write a one-question query (class IN, RD set) into `out`; returns the message length.
/// On `Err` the contents of `out` are unspecified.
pub fn emit_query(out: &mut [u8], id: u16, name: &str, qtype: Type) -> Result<usize> {
    let (hdr, rest) = out.split_at_mut_checked(HEADER_LEN).ok_or(Error)?;
    Repr { id, flags: flags::RD, counts: [1, 0, 0, 0] }.emit(&mut Packet::new_unchecked(hdr))?;
    let n = emit_name(rest, name)?;
    let tail = rest.get_mut(n..n + 4).ok_or(Error)?;
    write_u16(tail, 0, qtype.into());
    write_u16(tail, 2, CLASS_IN);
    Ok(HEADER_LEN + n + 4)
}

#[cfg(test)]
mod test {
    use super::*;

    // Response for www.example.com A: CNAME to example.com (compressed), then an A and an
    // AAAA for example.com via pointers.
    fn response() -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 3, 0, 0, 0, 0];
        m.extend_from_slice(b"\x03www\x07example\x03com\x00\x00\x01\x00\x01"); // q @12
        m.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0x0e, 0x10, 0, 2, 0xc0, 16]); // CNAME
        m.extend_from_slice(&[0xc0, 16, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 93, 184, 216, 34]);
        m.extend_from_slice(&[0xc0, 16, 0, 28, 0, 1, 0, 0, 0, 60, 0, 16]);
        m.extend_from_slice(&[0x26, 0x06, 0x28, 0, 0x02, 0x20, 0, 1, 0x2, 0x48, 0x18, 0x93, 0x25, 0xc8, 0x19, 0x46]);
        m
    }

    fn dotted(n: &Name<'_>) -> String {
        let mut b = [0u8; 300];
        let l = n.write_dotted(&mut b).unwrap();
        String::from_utf8(b[..l].to_vec()).unwrap()
    }

    #[test]
    fn parse_response() {
        let m = response();
        let p = Packet::new_checked(&m[..]).unwrap();
        assert_eq!(p.id(), 0x1234);
        assert!(p.is_response());
        assert_eq!(p.rcode(), Rcode::NoError);
        assert_eq!(p.flags() & flags::RA, flags::RA);
        let qs: Vec<_> = p.questions().collect::<Result<_>>().unwrap();
        assert_eq!(qs.len(), 1);
        assert_eq!(dotted(&qs[0].name), "www.example.com");
        assert!(qs[0].name.eq_dotted("WWW.Example.com."));
        assert!(!qs[0].name.eq_dotted("www.example.co"));
        assert!(!qs[0].name.eq_dotted("www.example.comx"));
        assert_eq!(qs[0].qtype, Type::A);
        let rs: Vec<_> = p.answers().collect::<Result<_>>().unwrap();
        assert_eq!(rs.len(), 3);
        match rs[0].data {
            RecordData::Cname(n) => assert_eq!(dotted(&n), "example.com"),
            _ => panic!(),
        }
        assert_eq!(rs[0].ttl, 3600);
        assert_eq!(dotted(&rs[1].name), "example.com");
        assert_eq!(rs[1].data, RecordData::A(Ipv4Addr::new(93, 184, 216, 34)));
        assert_eq!(rs[2].data, RecordData::Aaaa("2606:2800:220:1:248:1893:25c8:1946".parse().unwrap()));
    }

    #[test]
    fn loops_and_forward_pointers_rejected() {
        let mut m = vec![0, 0, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]); // pointer to itself
        let p = Packet::new_checked(&m[..]).unwrap();
        assert_eq!(p.questions().collect::<Vec<_>>(), vec![Err(Error)]);
        let mut m = vec![0, 0, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[1, b'a', 0xc0, 12, 0, 1, 0, 1]); // pointer back into own run
        let p = Packet::new_checked(&m[..]).unwrap();
        assert_eq!(p.questions().collect::<Vec<_>>(), vec![Err(Error)]);
        let mut m = vec![0, 0, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[0xc0, 14, 0, 0, 1, 0, 1]); // forward pointer
        let p = Packet::new_checked(&m[..]).unwrap();
        assert_eq!(p.questions().collect::<Vec<_>>(), vec![Err(Error)]);
        // Reserved label types.
        let mut m = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 1, 0, 1];
        assert!(Packet::new_checked(&m[..]).unwrap().questions().next().unwrap().is_err());
        // A record with the wrong length, and a truncated record.
        m = response();
        m[12 + 21 + 14 + 11] = 5;
        let p = Packet::new_checked(&m[..]).unwrap();
        let rs: Vec<_> = p.answers().collect();
        assert!(rs[1].is_err() && rs.len() == 2);
        let m = response();
        let p = Packet::new_checked(&m[..m.len() - 1]).unwrap();
        assert!(p.answers().last().unwrap().is_err());
    }

    #[test]
    fn long_names_rejected() {
        let mut m = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for _ in 0..5 {
            m.push(63);
            m.extend_from_slice(&[b'a'; 63]);
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert!(Packet::new_checked(&m[..]).unwrap().questions().next().unwrap().is_err());
    }

    #[test]
    fn query_roundtrip() {
        let mut out = vec![0xa5; 40];
        let n = emit_query(&mut out, 0xbeef, "www.example.com", Type::Aaaa).unwrap();
        let want = b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x03com\x00\x00\x1c\x00\x01";
        assert_eq!(&out[..n], &want[..]);
        assert_eq!(out[n], 0xa5);
        let r = Repr::parse(&Packet::new_checked(&out[..n]).unwrap()).unwrap();
        assert_eq!(r, Repr { id: 0xbeef, flags: flags::RD, counts: [1, 0, 0, 0] });
        assert!(emit_query(&mut out[..n - 1], 1, "www.example.com", Type::A).is_err());
        assert!(emit_query(&mut out, 1, "a..b", Type::A).is_err());
        assert!(emit_query(&mut out, 1, &"a".repeat(64), Type::A).is_err());
        let mut big = [0u8; 600];
        assert!(emit_query(&mut big, 1, &vec!["a".repeat(60); 5].join("."), Type::A).is_err());
        assert_eq!(emit_name(&mut big, ".").unwrap(), 1);
    }
}
