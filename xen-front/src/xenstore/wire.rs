//! The xenstore wire format: the 16-byte `xsd_sockmsg` header, message types, request
//! encoding and the payload shapes of each reply (`io/xs_wire.h`, `docs/misc/xenstore.txt`).
//!
//! Everything the peer wrote is an *allegation* until checked: [`AllegedHeader`] becomes a
//! [`Header`] only through [`AllegedHeader::validate`], and reply payloads are checked against
//! the request type by [`reply_fits`] before a caller sees them.

use super::error::Error;

/// Bytes in a message header (`struct xsd_sockmsg`).
pub const HEADER_LEN: usize = 16;
/// Largest payload in either direction; exceeding it makes xenstored drop the connection.
pub const XENSTORE_PAYLOAD_MAX: usize = 4096;
/// Largest whole message, header included.
pub const MESSAGE_MAX: usize = HEADER_LEN + XENSTORE_PAYLOAD_MAX;

/// xenstore message types (`enum xsd_sockmsg_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MsgType {
    /// `XS_CONTROL` (was `XS_DEBUG`).
    Control = 0,
    /// `XS_DIRECTORY`: list children.
    Directory = 1,
    /// `XS_READ`: read a value.
    Read = 2,
    /// `XS_GET_PERMS`: read a node's permissions.
    GetPerms = 3,
    /// `XS_WATCH`: register a watch.
    Watch = 4,
    /// `XS_UNWATCH`: remove a watch.
    Unwatch = 5,
    /// `XS_TRANSACTION_START`.
    TransactionStart = 6,
    /// `XS_TRANSACTION_END`.
    TransactionEnd = 7,
    /// `XS_INTRODUCE` (dom0 only).
    Introduce = 8,
    /// `XS_RELEASE` (dom0 only).
    Release = 9,
    /// `XS_GET_DOMAIN_PATH`.
    GetDomainPath = 10,
    /// `XS_WRITE`.
    Write = 11,
    /// `XS_MKDIR`.
    Mkdir = 12,
    /// `XS_RM` (recursive).
    Rm = 13,
    /// `XS_SET_PERMS`.
    SetPerms = 14,
    /// `XS_WATCH_EVENT` (xenstored to guest only).
    WatchEvent = 15,
    /// `XS_ERROR` (xenstored to guest only).
    Error = 16,
    /// `XS_IS_DOMAIN_INTRODUCED`.
    IsDomainIntroduced = 17,
    /// `XS_RESUME`.
    Resume = 18,
    /// `XS_SET_TARGET`.
    SetTarget = 19,
    // 20 was XS_RESTRICT, removed from the protocol.
    /// `XS_RESET_WATCHES`.
    ResetWatches = 21,
    /// `XS_DIRECTORY_PART`.
    DirectoryPart = 22,
    /// `XS_GET_FEATURE` (newer xenstored only).
    GetFeature = 23,
    /// `XS_SET_FEATURE` (newer xenstored only).
    SetFeature = 24,
    /// `XS_GET_QUOTA` (newer xenstored only).
    GetQuota = 25,
    /// `XS_SET_QUOTA` (newer xenstored only).
    SetQuota = 26,
}

impl MsgType {
    /// The type with wire number `raw`, if there is one.
    pub const fn from_raw(raw: u32) -> Option<MsgType> {
        use MsgType::*;
        Some(match raw {
            0 => Control,
            1 => Directory,
            2 => Read,
            3 => GetPerms,
            4 => Watch,
            5 => Unwatch,
            6 => TransactionStart,
            7 => TransactionEnd,
            8 => Introduce,
            9 => Release,
            10 => GetDomainPath,
            11 => Write,
            12 => Mkdir,
            13 => Rm,
            14 => SetPerms,
            15 => WatchEvent,
            16 => Error,
            17 => IsDomainIntroduced,
            18 => Resume,
            19 => SetTarget,
            21 => ResetWatches,
            22 => DirectoryPart,
            23 => GetFeature,
            24 => SetFeature,
            25 => GetQuota,
            26 => SetQuota,
            _ => return None,
        })
    }

    /// The wire number.
    pub const fn raw(self) -> u32 {
        self as u32
    }
}

/// A transaction id; [`TxId::NONE`] (0) means "outside any transaction".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TxId(pub u32);

impl TxId {
    /// Not in a transaction.
    pub const NONE: TxId = TxId(0);
}

/// A validated message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Message type.
    pub msg_type: MsgType,
    /// Request id, echoed by xenstored in the reply (0 in watch events).
    pub req_id: u32,
    /// Transaction id (0 = none).
    pub tx_id: u32,
    /// Payload bytes that follow; at most [`XENSTORE_PAYLOAD_MAX`].
    pub len: u32,
}

impl Header {
    /// The 16 little-endian bytes of this header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0; HEADER_LEN];
        let fields = [self.msg_type.raw(), self.req_id, self.tx_id, self.len];
        for (chunk, v) in out.chunks_exact_mut(4).zip(fields) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        out
    }
}

/// A header exactly as the peer wrote it; nothing in it is trusted yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllegedHeader {
    /// Claimed message type number.
    pub raw_type: u32,
    /// Claimed request id.
    pub req_id: u32,
    /// Claimed transaction id.
    pub tx_id: u32,
    /// Claimed payload length.
    pub len: u32,
}

/// Why an [`AllegedHeader`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderFault {
    /// `len` is over [`XENSTORE_PAYLOAD_MAX`]: the stream cannot be trusted any more.
    PayloadTooLong(u32),
    /// A type number this protocol does not have; `len` (already checked) says how many
    /// payload bytes to skip to stay in step.
    UnknownType {
        /// The type number.
        raw_type: u32,
        /// Payload bytes to skip.
        len: u32,
    },
}

impl AllegedHeader {
    /// Splits 16 little-endian bytes into the four fields.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> AllegedHeader {
        let field = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        AllegedHeader { raw_type: field(0), req_id: field(4), tx_id: field(8), len: field(12) }
    }

    /// Checks the length first (a bad length breaks framing), then the type.
    pub fn validate(self) -> Result<Header, HeaderFault> {
        if self.len as usize > XENSTORE_PAYLOAD_MAX {
            return Err(HeaderFault::PayloadTooLong(self.len));
        }
        let msg_type = MsgType::from_raw(self.raw_type)
            .ok_or(HeaderFault::UnknownType { raw_type: self.raw_type, len: self.len })?;
        Ok(Header { msg_type, req_id: self.req_id, tx_id: self.tx_id, len: self.len })
    }
}

/// What a domain may do with a node (the letter of a permission string).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `n`: nothing.
    None,
    /// `r`: read.
    Read,
    /// `w`: write.
    Write,
    /// `b`: read and write.
    Both,
}

/// One entry of a node's permission list, e.g. `r5`. The first entry names the owner, and its
/// access is the default for domains not listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    /// Access granted.
    pub access: Access,
    /// Domain it applies to.
    pub domid: u16,
}

impl Perm {
    /// Parses one permission string without its NUL (`b"r5"`).
    pub fn parse(s: &[u8]) -> Option<Perm> {
        let (&letter, digits) = s.split_first()?;
        let access = match letter {
            b'n' => Access::None,
            b'r' => Access::Read,
            b'w' => Access::Write,
            b'b' => Access::Both,
            _ => return None,
        };
        let domid = parse_decimal(digits)?;
        Some(Perm { access, domid: u16::try_from(domid).ok()? })
    }

    fn letter(self) -> u8 {
        match self.access {
            Access::None => b'n',
            Access::Read => b'r',
            Access::Write => b'w',
            Access::Both => b'b',
        }
    }
}

/// One xenstore operation with its arguments, borrowed from the caller.
///
/// Paths without a leading `/` are relative to the domain's home, `/local/domain/<self>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// Read a node's value.
    Read(&'a str),
    /// Write a value (creating the node and its parents).
    Write(&'a str, &'a [u8]),
    /// List a node's children.
    Directory(&'a str),
    /// Remove a node and its children.
    Rm(&'a str),
    /// Create a node with an empty value (no error if it exists).
    Mkdir(&'a str),
    /// Read a node's permissions.
    GetPerms(&'a str),
    /// Replace a node's permissions; the first entry is the owner and default.
    SetPerms(&'a str, &'a [Perm]),
    /// Register a watch; it fires once at once, then on every change under `path`.
    Watch {
        /// Path watched (itself and children).
        path: &'a str,
        /// Token echoed in each event, to tell watches apart.
        token: &'a str,
    },
    /// Remove a watch registered with the same path and token.
    Unwatch {
        /// Path watched.
        path: &'a str,
        /// Token it was registered with.
        token: &'a str,
    },
    /// Start a transaction (sent with tx id 0 whatever the caller passes).
    TransactionStart,
    /// End the transaction the request carries: commit (`T`) or abort (`F`).
    TransactionEnd {
        /// True to commit, false to abort.
        commit: bool,
    },
    /// Ask for `/local/domain/<domid>`.
    GetDomainPath(u16),
}

impl Request<'_> {
    /// The message type of this request.
    pub fn msg_type(&self) -> MsgType {
        match self {
            Request::Read(_) => MsgType::Read,
            Request::Write(..) => MsgType::Write,
            Request::Directory(_) => MsgType::Directory,
            Request::Rm(_) => MsgType::Rm,
            Request::Mkdir(_) => MsgType::Mkdir,
            Request::GetPerms(_) => MsgType::GetPerms,
            Request::SetPerms(..) => MsgType::SetPerms,
            Request::Watch { .. } => MsgType::Watch,
            Request::Unwatch { .. } => MsgType::Unwatch,
            Request::TransactionStart => MsgType::TransactionStart,
            Request::TransactionEnd { .. } => MsgType::TransactionEnd,
            Request::GetDomainPath(_) => MsgType::GetDomainPath,
        }
    }

    /// Encodes header and payload into `out` and returns the message length.
    ///
    /// Errors: [`Error::InvalidArgument`] for an empty or NUL-containing path or token, or an
    /// END without a transaction; [`Error::RequestTooLarge`] past [`XENSTORE_PAYLOAD_MAX`].
    pub fn encode(&self, req_id: u32, tx: TxId, out: &mut [u8; MESSAGE_MAX]) -> Result<usize, Error> {
        let mut w = PayloadWriter { buf: out, len: HEADER_LEN };
        let mut tx_id = tx.0;
        match *self {
            Request::Read(p) | Request::Directory(p) | Request::Rm(p) | Request::Mkdir(p) | Request::GetPerms(p) => {
                w.name(p)?
            }
            Request::Write(p, value) => {
                w.name(p)?;
                w.bytes(value)?; // the value carries no NUL
            }
            Request::SetPerms(p, perms) => {
                w.name(p)?;
                for perm in perms {
                    w.bytes(&[perm.letter()])?;
                    w.decimal(perm.domid.into())?;
                    w.bytes(b"\0")?;
                }
            }
            Request::Watch { path, token } | Request::Unwatch { path, token } => {
                w.name(path)?;
                w.name(token)?;
            }
            Request::TransactionStart => {
                tx_id = 0; // xenstored insists; nested transactions do not exist
                w.bytes(b"\0")?;
            }
            Request::TransactionEnd { commit } => {
                if tx == TxId::NONE {
                    return Err(Error::InvalidArgument);
                }
                w.bytes(if commit { b"T\0" } else { b"F\0" })?;
            }
            Request::GetDomainPath(domid) => {
                w.decimal(domid.into())?;
                w.bytes(b"\0")?;
            }
        }
        let len = w.len;
        let header = Header { msg_type: self.msg_type(), req_id, tx_id, len: (len - HEADER_LEN) as u32 };
        out[..HEADER_LEN].copy_from_slice(&header.encode());
        Ok(len)
    }
}

/// Appends payload pieces after the header, refusing to pass the payload limit.
struct PayloadWriter<'a> {
    buf: &'a mut [u8; MESSAGE_MAX],
    len: usize,
}

impl PayloadWriter<'_> {
    fn bytes(&mut self, b: &[u8]) -> Result<(), Error> {
        let end = self.len.checked_add(b.len()).filter(|&e| e <= MESSAGE_MAX).ok_or(Error::RequestTooLarge)?;
        self.buf[self.len..end].copy_from_slice(b);
        self.len = end;
        Ok(())
    }

    /// A path or token followed by its NUL; an inner NUL would shift every later field.
    fn name(&mut self, s: &str) -> Result<(), Error> {
        if s.is_empty() || s.as_bytes().contains(&0) {
            return Err(Error::InvalidArgument);
        }
        self.bytes(s.as_bytes())?;
        self.bytes(b"\0")
    }

    fn decimal(&mut self, mut v: u32) -> Result<(), Error> {
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.bytes(&digits[i..])
    }
}

/// Parses a non-empty ASCII decimal number that fits a `u32`.
fn parse_decimal(s: &[u8]) -> Option<u32> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u32, |acc, &c| {
        let d = c.checked_sub(b'0').filter(|&d| d <= 9)?;
        acc.checked_mul(10)?.checked_add(d.into())
    })
}

/// `payload` without its single trailing NUL, if it has one.
fn strip_nul(payload: &[u8]) -> Option<&[u8]> {
    payload.strip_suffix(b"\0")
}

/// True if `payload` is a list of NUL-terminated strings (possibly empty).
fn is_nul_list(payload: &[u8]) -> bool {
    payload.is_empty() || payload.ends_with(b"\0")
}

/// Does a reply of type `reply` with `payload` fit a request of type `request`?
/// (`XS_ERROR` replies are handled before this is asked.)
pub fn reply_fits(request: MsgType, reply: MsgType, payload: &[u8]) -> bool {
    if reply != request {
        return false;
    }
    match request {
        MsgType::Read => true, // any bytes, no NUL terminator
        MsgType::Directory => is_nul_list(payload),
        MsgType::GetPerms => !payload.is_empty() && is_nul_list(payload) && PermIter::new(payload).all(|p| p.is_some()),
        MsgType::TransactionStart => parse_tx_start(payload).is_some(),
        MsgType::GetDomainPath => strip_nul(payload).is_some_and(|p| !p.contains(&0)),
        MsgType::Write
        | MsgType::Mkdir
        | MsgType::Rm
        | MsgType::SetPerms
        | MsgType::Watch
        | MsgType::Unwatch
        | MsgType::TransactionEnd => payload == b"OK\0",
        _ => true, // operations this client does not send: nothing to check
    }
}

/// The transaction id in a `TRANSACTION_START` reply (`"<decimal>\0"`); 0 is refused as it
/// means "no transaction".
pub fn parse_tx_start(payload: &[u8]) -> Option<TxId> {
    let id = parse_decimal(strip_nul(payload)?)?;
    (id != 0).then_some(TxId(id))
}

/// The path in a `GET_DOMAIN_PATH` reply, without its NUL.
pub fn parse_domain_path(payload: &[u8]) -> Option<&[u8]> {
    strip_nul(payload)
}

/// Splits a watch event payload `path\0token\0` into path and token.
pub fn parse_watch_event(payload: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut parts = payload.split(|&b| b == 0);
    let path = parts.next().filter(|p| !p.is_empty())?;
    let token = parts.next()?;
    // `split` yields a final empty piece after the token's NUL; its absence means no NUL.
    parts.next()?;
    Some((path, token))
}

/// Iterator over the names in a `DIRECTORY` reply (`child\0child\0`, or empty).
#[derive(Clone, Debug)]
pub struct DirEntries<'a> {
    rest: &'a [u8],
}

impl<'a> DirEntries<'a> {
    /// Entries of a directory reply payload.
    pub fn new(payload: &'a [u8]) -> Self {
        DirEntries { rest: payload }
    }
}

impl<'a> Iterator for DirEntries<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let end = self.rest.iter().position(|&b| b == 0).unwrap_or(self.rest.len());
        let name = &self.rest[..end];
        self.rest = self.rest.get(end + 1..).unwrap_or(&[]);
        Some(name)
    }
}

/// Iterator over a `GET_PERMS` reply; `None` items are malformed entries.
#[derive(Clone, Debug)]
pub struct PermIter<'a> {
    names: DirEntries<'a>,
}

impl<'a> PermIter<'a> {
    /// Entries of a permissions reply payload.
    pub fn new(payload: &'a [u8]) -> Self {
        PermIter { names: DirEntries::new(payload) }
    }
}

impl Iterator for PermIter<'_> {
    type Item = Option<Perm>;

    fn next(&mut self) -> Option<Option<Perm>> {
        self.names.next().map(Perm::parse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(req: Request<'_>, tx: u32) -> Result<Vec<u8>, Error> {
        let mut buf = [0xa5; MESSAGE_MAX];
        let n = req.encode(7, TxId(tx), &mut buf)?;
        Ok(buf[..n].to_vec())
    }

    fn header(bytes: &[u8]) -> Header {
        AllegedHeader::parse(bytes[..16].try_into().unwrap()).validate().unwrap()
    }

    #[test]
    fn header_bytes_are_little_endian() {
        let h = Header { msg_type: MsgType::Write, req_id: 0x0102_0304, tx_id: 5, len: 6 };
        let b = h.encode();
        assert_eq!(b, [11, 0, 0, 0, 4, 3, 2, 1, 5, 0, 0, 0, 6, 0, 0, 0]);
        assert_eq!(AllegedHeader::parse(&b).validate(), Ok(h));
    }

    #[test]
    fn header_validation_checks_length_before_type() {
        let mut a = AllegedHeader { raw_type: 99, req_id: 1, tx_id: 0, len: 5000 };
        assert_eq!(a.validate(), Err(HeaderFault::PayloadTooLong(5000)));
        a.len = 3;
        assert_eq!(a.validate(), Err(HeaderFault::UnknownType { raw_type: 99, len: 3 }));
        a.raw_type = 20; // XS_RESTRICT was removed
        assert!(a.validate().is_err());
        for raw in (0..=26).filter(|&r| r != 20) {
            assert_eq!(MsgType::from_raw(raw).map(MsgType::raw), Some(raw));
        }
    }

    #[test]
    fn requests_encode_byte_exact() {
        let w = encode(Request::Write("a/b", b"xy"), 3).unwrap();
        assert_eq!(header(&w), Header { msg_type: MsgType::Write, req_id: 7, tx_id: 3, len: 6 });
        assert_eq!(&w[16..], b"a/b\0xy");
        let perms = [Perm { access: Access::None, domid: 0 }, Perm { access: Access::Read, domid: 12 }];
        assert_eq!(&encode(Request::SetPerms("p", &perms), 0).unwrap()[16..], b"p\0n0\0r12\0");
        assert_eq!(&encode(Request::Watch { path: "p", token: "t" }, 0).unwrap()[16..], b"p\0t\0");
        let start = encode(Request::TransactionStart, 9).unwrap();
        assert_eq!((header(&start).tx_id, &start[16..]), (0, &b"\0"[..]));
        assert_eq!(&encode(Request::TransactionEnd { commit: false }, 9).unwrap()[16..], b"F\0");
        assert_eq!(&encode(Request::GetDomainPath(0), 0).unwrap()[16..], b"0\0");
        assert_eq!(&encode(Request::GetDomainPath(65535), 0).unwrap()[16..], b"65535\0");
        assert_eq!(&encode(Request::Read("/x"), 0).unwrap()[16..], b"/x\0");
    }

    #[test]
    fn bad_requests_are_refused() {
        assert_eq!(encode(Request::Read(""), 0), Err(Error::InvalidArgument));
        assert_eq!(encode(Request::Read("a\0b"), 0), Err(Error::InvalidArgument));
        assert_eq!(encode(Request::TransactionEnd { commit: true }, 0), Err(Error::InvalidArgument));
        let big = [b'v'; XENSTORE_PAYLOAD_MAX - 2];
        assert_eq!(encode(Request::Write("p", &big), 0).unwrap().len(), MESSAGE_MAX);
        let bigger = [b'v'; XENSTORE_PAYLOAD_MAX - 1];
        assert_eq!(encode(Request::Write("p", &bigger), 0), Err(Error::RequestTooLarge));
    }

    #[test]
    fn reply_shapes() {
        use MsgType::*;
        assert!(reply_fits(Write, Write, b"OK\0"));
        assert!(!reply_fits(Write, Write, b"OK"));
        assert!(!reply_fits(Write, Read, b"OK\0"));
        assert!(reply_fits(Read, Read, b""));
        assert!(reply_fits(Directory, Directory, b""));
        assert!(reply_fits(Directory, Directory, b"a\0b\0"));
        assert!(!reply_fits(Directory, Directory, b"a\0b"));
        assert!(reply_fits(GetPerms, GetPerms, b"n0\0r5\0"));
        assert!(!reply_fits(GetPerms, GetPerms, b"x0\0"));
        assert!(!reply_fits(GetPerms, GetPerms, b"r70000\0"));
        assert!(reply_fits(TransactionStart, TransactionStart, b"42\0"));
        assert!(!reply_fits(TransactionStart, TransactionStart, b"0\0"));
        assert!(!reply_fits(TransactionStart, TransactionStart, b"4x\0"));
        assert!(!reply_fits(TransactionStart, TransactionStart, b"99999999999\0"));
        assert!(reply_fits(GetDomainPath, GetDomainPath, b"/local/domain/3\0"));
        assert!(!reply_fits(GetDomainPath, GetDomainPath, b"/local/domain/3"));
    }

    #[test]
    fn payload_parsers() {
        assert_eq!(parse_tx_start(b"42\0"), Some(TxId(42)));
        assert_eq!(parse_domain_path(b"/local/domain/3\0"), Some(&b"/local/domain/3"[..]));
        assert_eq!(parse_watch_event(b"a/b\0tok\0"), Some((&b"a/b"[..], &b"tok"[..])));
        assert_eq!(parse_watch_event(b"a/b\0\0"), Some((&b"a/b"[..], &b""[..])));
        assert_eq!(parse_watch_event(b"a/b\0tok"), None);
        assert_eq!(parse_watch_event(b"a/b"), None);
        assert_eq!(parse_watch_event(b"\0tok\0"), None);
        let names: Vec<&[u8]> = DirEntries::new(b"vif\0vbd\0").collect();
        assert_eq!(names, [&b"vif"[..], &b"vbd"[..]]);
        assert_eq!(DirEntries::new(b"").count(), 0);
        let perms: Vec<_> = PermIter::new(b"b0\0w7\0").collect();
        assert_eq!(
            perms,
            [Some(Perm { access: Access::Both, domid: 0 }), Some(Perm { access: Access::Write, domid: 7 })]
        );
    }
}
