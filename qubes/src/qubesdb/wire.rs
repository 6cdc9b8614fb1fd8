//! The QubesDB message (`struct qdb_hdr` + data), as sent over the vchan.
//!
//! Layout (not packed, little-endian, `qubesdb.h`): `type u8 @0`, `path[64] @1` (NUL
//! terminated), 3 bytes of padding, `data_len u32 @68`, then `data_len` bytes of data.

use core::fmt;

mod field {
    use core::ops::Range;
    pub const TYPE: usize = 0;
    pub const PATH: Range<usize> = 1..65;
    pub const PADDING: Range<usize> = 65..68;
    pub const DATA_LEN: Range<usize> = 68..72;
}

/// Bytes in the fixed header.
pub const HEADER_LEN: usize = field::DATA_LEN.end;
/// Size of the path field (`QDB_MAX_PATH`); a path is at most 63 bytes plus its NUL.
pub const PATH_FIELD_LEN: usize = 64;
/// Longest path, in bytes (without the NUL).
pub const MAX_PATH_LEN: usize = PATH_FIELD_LEN - 1;
/// `QDB_MAX_DATA`: the daemon rejects `data_len >= QDB_MAX_DATA`, so values are at most
/// 3071 bytes.
pub const QDB_MAX_DATA: usize = 3072;
/// Longest value, in bytes.
pub const MAX_DATA_LEN: usize = QDB_MAX_DATA - 1;
/// Longest message on the wire.
pub const MAX_MESSAGE_LEN: usize = HEADER_LEN + MAX_DATA_LEN;
/// QubesDB's vchan port (`QUBESDB_VCHAN_PORT`); dom0 is the server.
pub const VCHAN_PORT: u32 = 111;

/// A message type (`enum qdb_msg`), with unknown values kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgType {
    /// `QDB_CMD_READ` (0), local socket only.
    Read,
    /// `QDB_CMD_WRITE` (1).
    Write,
    /// `QDB_CMD_MULTIREAD` (2).
    Multiread,
    /// `QDB_CMD_LIST` (3), local socket only.
    List,
    /// `QDB_CMD_RM` (4); a path ending in `/` removes a subtree.
    Rm,
    /// `QDB_CMD_WATCH` (5), local socket only.
    Watch,
    /// `QDB_CMD_UNWATCH` (6), local socket only.
    Unwatch,
    /// `QDB_RESP_OK` (7).
    RespOk,
    /// `QDB_RESP_ERROR_NOENT` (8).
    RespErrorNoent,
    /// `QDB_RESP_ERROR` (9).
    RespError,
    /// `QDB_RESP_READ` (10).
    RespRead,
    /// `QDB_RESP_MULTIREAD` (11).
    RespMultiread,
    /// `QDB_RESP_LIST` (12).
    RespList,
    /// `QDB_RESP_WATCH` (13).
    RespWatch,
    /// Any other value.
    Unknown(u8),
}

impl From<u8> for MsgType {
    fn from(v: u8) -> Self {
        match v {
            0 => Self::Read,
            1 => Self::Write,
            2 => Self::Multiread,
            3 => Self::List,
            4 => Self::Rm,
            5 => Self::Watch,
            6 => Self::Unwatch,
            7 => Self::RespOk,
            8 => Self::RespErrorNoent,
            9 => Self::RespError,
            10 => Self::RespRead,
            11 => Self::RespMultiread,
            12 => Self::RespList,
            13 => Self::RespWatch,
            other => Self::Unknown(other),
        }
    }
}

impl From<MsgType> for u8 {
    fn from(t: MsgType) -> u8 {
        match t {
            MsgType::Read => 0,
            MsgType::Write => 1,
            MsgType::Multiread => 2,
            MsgType::List => 3,
            MsgType::Rm => 4,
            MsgType::Watch => 5,
            MsgType::Unwatch => 6,
            MsgType::RespOk => 7,
            MsgType::RespErrorNoent => 8,
            MsgType::RespError => 9,
            MsgType::RespRead => 10,
            MsgType::RespMultiread => 11,
            MsgType::RespList => 12,
            MsgType::RespWatch => 13,
            MsgType::Unknown(v) => v,
        }
    }
}

impl MsgType {
    /// Whether the daemon accepts this type on the vchan (`verify_hdr`): the local-socket
    /// commands and responses never travel between domains.
    #[must_use]
    pub const fn allowed_on_vchan(self) -> bool {
        matches!(self, Self::Write | Self::Multiread | Self::Rm | Self::RespOk | Self::RespError | Self::RespMultiread)
    }
}

/// What is wrong with a message. Any of these puts the stream out of trust: the client
/// resets the channel and re-syncs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// Fewer bytes than the fixed header.
    Truncated,
    /// Fewer bytes than the header plus `data_len`.
    TruncatedData,
    /// `data_len` at or above `QDB_MAX_DATA`.
    DataTooLong(u32),
    /// A type that is not allowed on the vchan (local-only commands, unknown values).
    TypeNotAllowed(u8),
    /// The path field has no NUL terminator.
    PathNotTerminated,
    /// A path byte outside `[A-Za-z0-9_/.:@-]`, at this offset.
    PathBadChar(u8),
    /// A path starting with `-`.
    PathLeadingDash,
    /// A path where the message type needs a key: empty, not starting with `/`, or (for
    /// WRITE) ending with `/`.
    PathNotAKey,
    /// A NUL byte in the value, at this offset.
    DataHasNul(u16),
    /// Data on a message type that carries none (RM, RESP_OK, RESP_ERROR, MULTIREAD).
    UnexpectedData,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("truncated header"),
            Self::TruncatedData => f.write_str("truncated data"),
            Self::DataTooLong(n) => write!(f, "data_len {n} too long"),
            Self::TypeNotAllowed(t) => write!(f, "message type {t} not allowed on vchan"),
            Self::PathNotTerminated => f.write_str("path not NUL-terminated"),
            Self::PathBadChar(o) => write!(f, "bad path character at offset {o}"),
            Self::PathLeadingDash => f.write_str("path starts with '-'"),
            Self::PathNotAKey => f.write_str("path is not a key"),
            Self::DataHasNul(o) => write!(f, "NUL in data at offset {o}"),
            Self::UnexpectedData => f.write_str("data on a message that carries none"),
        }
    }
}

/// The framing length function for [`crate::framed::FramedReader`]: total message length
/// from the header.
///
/// # Errors
///
/// [`WireError::DataTooLong`] when `data_len >= QDB_MAX_DATA`.
pub fn message_len(header: &[u8; HEADER_LEN]) -> Result<usize, WireError> {
    let n = u32::from_le_bytes([header[68], header[69], header[70], header[71]]);
    if n as usize >= QDB_MAX_DATA {
        return Err(WireError::DataTooLong(n));
    }
    Ok(HEADER_LEN + n as usize)
}

/// A view of a QubesDB message in a buffer.
#[derive(Clone, Copy, Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short buffer. For
    /// emitting into a buffer of [`Repr::buffer_len`] bytes.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after [`Packet::check_len`].
    ///
    /// # Errors
    ///
    /// See [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the buffer holds the header, a valid `data_len` and that many data bytes.
    /// After `Ok`, no accessor panics.
    ///
    /// # Errors
    ///
    /// [`WireError::Truncated`], [`WireError::DataTooLong`], [`WireError::TruncatedData`].
    pub fn check_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let n = self.data_len();
        if n as usize >= QDB_MAX_DATA {
            return Err(WireError::DataTooLong(n));
        }
        if b.len() < HEADER_LEN + n as usize {
            return Err(WireError::TruncatedData);
        }
        Ok(())
    }

    /// The buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Raw message type.
    #[must_use]
    pub fn msg_type(&self) -> MsgType {
        MsgType::from(self.buffer.as_ref()[field::TYPE])
    }

    /// The whole 64-byte path field.
    #[must_use]
    pub fn path_field(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PATH]
    }

    /// `data_len`.
    #[must_use]
    pub fn data_len(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::DATA_LEN];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The data (`data_len` bytes after the header).
    #[must_use]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + self.data_len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the message type.
    pub fn set_msg_type(&mut self, t: MsgType) {
        self.buffer.as_mut()[field::TYPE] = t.into();
    }

    /// Writes `path` NUL-padded into the path field (at most 63 bytes are kept).
    pub fn set_path(&mut self, path: &[u8]) {
        let f = &mut self.buffer.as_mut()[field::PATH];
        f.fill(0);
        let n = path.len().min(MAX_PATH_LEN);
        f[..n].copy_from_slice(&path[..n]);
    }

    /// Zeroes the padding after the path.
    pub fn clear_padding(&mut self) {
        self.buffer.as_mut()[field::PADDING].fill(0);
    }

    /// Sets `data_len`.
    pub fn set_data_len(&mut self, n: u32) {
        self.buffer.as_mut()[field::DATA_LEN].copy_from_slice(&n.to_le_bytes());
    }

    /// The data area (`data_len` bytes after the header).
    pub fn data_mut(&mut self) -> &mut [u8] {
        let n = self.data_len() as usize;
        &mut self.buffer.as_mut()[HEADER_LEN..HEADER_LEN + n]
    }
}

/// Checks a path as `verify_path` does: at most 63 bytes, `[A-Za-z0-9_/.:@-]`, not starting
/// with `-`. The empty path is allowed here (MULTIREAD of everything, the dump terminator).
///
/// # Errors
///
/// [`WireError::PathBadChar`] (with the offset), [`WireError::PathLeadingDash`],
/// [`WireError::PathNotTerminated`] when too long.
pub fn check_path(path: &[u8]) -> Result<&str, WireError> {
    if path.len() > MAX_PATH_LEN {
        return Err(WireError::PathNotTerminated);
    }
    if path.first() == Some(&b'-') {
        return Err(WireError::PathLeadingDash);
    }
    for (i, &c) in path.iter().enumerate() {
        if !(c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'/' | b'.' | b':' | b'@')) {
            return Err(WireError::PathBadChar(i as u8));
        }
    }
    // Checked ASCII above, so this cannot fail; still no unwrap on peer bytes.
    core::str::from_utf8(path).map_err(|_| WireError::PathBadChar(0))
}

/// Whether `path` names a key as `qubesdb_insert` wants it: starts with `/`, does not end
/// with `/`.
#[must_use]
pub fn is_key(path: &str) -> bool {
    path.starts_with('/') && !path.ends_with('/')
}

/// A validated QubesDB message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr<'a> {
    /// The type; after [`Repr::parse`] always one of [`MsgType::allowed_on_vchan`].
    pub msg_type: MsgType,
    /// The path (charset-checked, at most 63 bytes, may be empty).
    pub path: &'a str,
    /// The data (no NUL bytes, at most [`MAX_DATA_LEN`] bytes).
    pub data: &'a [u8],
}

impl<'a> Repr<'a> {
    /// Parses and validates a message received from the peer: type allowed on the vchan,
    /// NUL-terminated path of valid characters, no NUL in the data, a key path for WRITE,
    /// a `/`-rooted path for RM, no data where the type carries none.
    ///
    /// # Errors
    ///
    /// The first problem found ([`WireError`]).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&'a T>) -> Result<Repr<'a>, WireError> {
        packet.check_len()?;
        let buf: &'a [u8] = packet.buffer.as_ref();
        let t = MsgType::from(buf[field::TYPE]);
        if !t.allowed_on_vchan() {
            return Err(WireError::TypeNotAllowed(t.into()));
        }
        let field = &buf[field::PATH];
        let end = field.iter().position(|&b| b == 0).ok_or(WireError::PathNotTerminated)?;
        let path = check_path(&field[..end])?;
        let n = u32::from_le_bytes([buf[68], buf[69], buf[70], buf[71]]) as usize;
        let data = &buf[HEADER_LEN..HEADER_LEN + n];
        if let Some(i) = data.iter().position(|&b| b == 0) {
            return Err(WireError::DataHasNul(i as u16));
        }
        match t {
            MsgType::Write if !is_key(path) => return Err(WireError::PathNotAKey),
            MsgType::Rm if !path.starts_with('/') => return Err(WireError::PathNotAKey),
            MsgType::Rm | MsgType::RespOk | MsgType::RespError | MsgType::Multiread if !data.is_empty() => {
                return Err(WireError::UnexpectedData);
            }
            // A dump entry is a key, or empty with no data (the terminator).
            MsgType::RespMultiread if !(is_key(path) || (path.is_empty() && data.is_empty())) => {
                return Err(WireError::PathNotAKey);
            }
            _ => {}
        }
        Ok(Repr { msg_type: t, path, data })
    }

    /// Bytes [`Repr::emit`] writes.
    #[must_use]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.data.len()
    }

    /// Writes the message into `packet` (a buffer of at least [`Repr::buffer_len`] bytes;
    /// the caller builds the `Repr` from valid parts: path ≤ 63 bytes, data ≤ 3071 bytes).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_msg_type(self.msg_type);
        packet.set_path(self.path.as_bytes());
        packet.clear_padding();
        packet.set_data_len(self.data.len() as u32);
        packet.data_mut().copy_from_slice(self.data);
    }

    /// The header alone, for sending the header and the data as two parts without copying
    /// the data.
    #[must_use]
    pub fn header(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[field::TYPE] = self.msg_type.into();
        let n = self.path.len().min(MAX_PATH_LEN);
        h[field::PATH][..n].copy_from_slice(&self.path.as_bytes()[..n]);
        h[field::DATA_LEN].copy_from_slice(&(self.data.len() as u32).to_le_bytes());
        h
    }
}

#[cfg(test)]
mod tests;
