//! qrexec messages: an 8-byte header (`struct msg_header { u32 type; u32 len; }`,
//! little-endian) and `len` bytes of payload (`libqrexec/qrexec.h`).

use core::fmt;

mod field {
    use core::ops::Range;
    pub const TYPE: Range<usize> = 0..4;
    pub const LEN: Range<usize> = 4..8;
}

/// Bytes in the header.
pub const HEADER_LEN: usize = field::LEN.end;
/// `MAX_DATA_CHUNK_V3`: the largest data payload a v3+ peer sends.
pub const MAX_DATA_CHUNK: usize = 65536;
/// Our protocol version (`QREXEC_PROTOCOL_VERSION`, R4.3).
pub const PROTOCOL_VERSION: u32 = 4;
/// The oldest peer version we talk to (R4.1: 64 KiB chunks).
pub const MIN_PROTOCOL_VERSION: u32 = 3;
/// The agent's control-channel vchan port (`VCHAN_BASE_PORT`); we are the server.
pub const VCHAN_PORT: u32 = 512;
/// Bytes of `struct exec_params` before the command line.
pub const EXEC_PARAMS_LEN: usize = 8;

/// A message type, with unknown values kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgType {
    /// `MSG_DATA_STDIN` (0x190).
    DataStdin,
    /// `MSG_DATA_STDOUT` (0x191).
    DataStdout,
    /// `MSG_DATA_STDERR` (0x192).
    DataStderr,
    /// `MSG_DATA_EXIT_CODE` (0x193).
    DataExitCode,
    /// `MSG_EXEC_CMDLINE` (0x200).
    ExecCmdline,
    /// `MSG_JUST_EXEC` (0x201).
    JustExec,
    /// `MSG_SERVICE_CONNECT` (0x202).
    ServiceConnect,
    /// `MSG_SERVICE_REFUSED` (0x203).
    ServiceRefused,
    /// `MSG_TRIGGER_SERVICE` (0x210).
    TriggerService,
    /// `MSG_CONNECTION_TERMINATED` (0x211).
    ConnectionTerminated,
    /// `MSG_TRIGGER_SERVICE3` (0x212).
    TriggerService3,
    /// `MSG_TRIGGER_SERVICE4` (0x213).
    TriggerService4,
    /// `MSG_HELLO` (0x300).
    Hello,
    /// Any other value.
    Unknown(u32),
}

impl From<u32> for MsgType {
    fn from(v: u32) -> Self {
        match v {
            0x190 => Self::DataStdin,
            0x191 => Self::DataStdout,
            0x192 => Self::DataStderr,
            0x193 => Self::DataExitCode,
            0x200 => Self::ExecCmdline,
            0x201 => Self::JustExec,
            0x202 => Self::ServiceConnect,
            0x203 => Self::ServiceRefused,
            0x210 => Self::TriggerService,
            0x211 => Self::ConnectionTerminated,
            0x212 => Self::TriggerService3,
            0x213 => Self::TriggerService4,
            0x300 => Self::Hello,
            other => Self::Unknown(other),
        }
    }
}

impl From<MsgType> for u32 {
    fn from(t: MsgType) -> u32 {
        match t {
            MsgType::DataStdin => 0x190,
            MsgType::DataStdout => 0x191,
            MsgType::DataStderr => 0x192,
            MsgType::DataExitCode => 0x193,
            MsgType::ExecCmdline => 0x200,
            MsgType::JustExec => 0x201,
            MsgType::ServiceConnect => 0x202,
            MsgType::ServiceRefused => 0x203,
            MsgType::TriggerService => 0x210,
            MsgType::ConnectionTerminated => 0x211,
            MsgType::TriggerService3 => 0x212,
            MsgType::TriggerService4 => 0x213,
            MsgType::Hello => 0x300,
            MsgType::Unknown(v) => v,
        }
    }
}

/// What is wrong with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// Fewer bytes than the header.
    Truncated,
    /// Fewer bytes than the header plus `len`.
    TruncatedPayload,
    /// A type value qrexec does not have.
    UnknownType(u32),
    /// A payload length this type cannot have.
    BadLength(MsgType, u32),
    /// The command line is not NUL-terminated, has a NUL inside, or is not UTF-8.
    BadCmdline,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("truncated header"),
            Self::TruncatedPayload => f.write_str("truncated payload"),
            Self::UnknownType(t) => write!(f, "unknown message type {t:#x}"),
            Self::BadLength(t, n) => write!(f, "bad length {n} for {t:?}"),
            Self::BadCmdline => f.write_str("malformed command line"),
        }
    }
}

/// The framing length function: total message length from the header. The reader's bound
/// limits it.
///
/// # Errors
///
/// Never for a header alone on 64-bit targets; kept fallible for 32-bit ones.
pub fn message_len(header: &[u8; HEADER_LEN]) -> Result<usize, WireError> {
    let t = MsgType::from(u32::from_le_bytes([header[0], header[1], header[2], header[3]]));
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    usize::try_from(len).ok().and_then(|n| n.checked_add(HEADER_LEN)).ok_or(WireError::BadLength(t, len))
}

/// A view of a qrexec message in a buffer.
#[derive(Clone, Copy, Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
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

    /// Checks that the buffer holds the header and `len` payload bytes; after `Ok`, no
    /// accessor panics.
    ///
    /// # Errors
    ///
    /// [`WireError::Truncated`], [`WireError::TruncatedPayload`].
    pub fn check_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if ((b.len() - HEADER_LEN) as u64) < u64::from(self.len()) {
            return Err(WireError::TruncatedPayload);
        }
        Ok(())
    }

    /// The type.
    #[must_use]
    pub fn msg_type(&self) -> MsgType {
        let b = &self.buffer.as_ref()[field::TYPE];
        MsgType::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The payload length field.
    #[must_use]
    pub fn len(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::LEN];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Whether the payload is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload.
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + self.len() as usize]
    }
}

/// A header for a message of `t` with `len` payload bytes.
#[must_use]
pub fn header(t: MsgType, len: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[field::TYPE].copy_from_slice(&u32::from(t).to_le_bytes());
    h[field::LEN].copy_from_slice(&len.to_le_bytes());
    h
}

/// `struct exec_params` + command line: where to connect the data channel and what to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecParams<'a> {
    /// Domain to connect the data vchan to.
    pub connect_domain: u32,
    /// Its vchan port.
    pub connect_port: u32,
    /// The command line, without its NUL.
    pub cmdline: &'a str,
}

/// A validated qrexec message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repr<'a> {
    /// `MSG_HELLO` with `peer_info.version`.
    Hello {
        /// The sender's protocol version.
        version: u32,
    },
    /// `MSG_EXEC_CMDLINE`.
    ExecCmdline(ExecParams<'a>),
    /// `MSG_JUST_EXEC`.
    JustExec(ExecParams<'a>),
    /// `MSG_SERVICE_CONNECT`.
    ServiceConnect(ExecParams<'a>),
    /// `MSG_CONNECTION_TERMINATED` (the `exec_params` without a command line).
    ConnectionTerminated {
        /// The data connection's domain.
        connect_domain: u32,
        /// Its port.
        connect_port: u32,
    },
    /// `MSG_DATA_STDIN` (empty = EOF).
    Stdin(&'a [u8]),
    /// `MSG_DATA_STDOUT` (empty = EOF).
    Stdout(&'a [u8]),
    /// `MSG_DATA_STDERR` (empty = EOF).
    Stderr(&'a [u8]),
    /// `MSG_DATA_EXIT_CODE`.
    ExitCode(i32),
    /// A known type this agent does not act on (service triggers and refusals, which only
    /// follow calls the firewall never makes).
    Other(MsgType),
}

fn exec_params(p: &[u8]) -> Result<ExecParams<'_>, WireError> {
    let (fixed, cmd) = p.split_at(EXEC_PARAMS_LEN);
    let (last, text) = cmd.split_last().ok_or(WireError::BadCmdline)?;
    if *last != 0 || text.contains(&0) {
        return Err(WireError::BadCmdline);
    }
    Ok(ExecParams {
        connect_domain: u32::from_le_bytes([fixed[0], fixed[1], fixed[2], fixed[3]]),
        connect_port: u32::from_le_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
        cmdline: core::str::from_utf8(text).map_err(|_| WireError::BadCmdline)?,
    })
}

fn le32(p: &[u8]) -> u32 {
    u32::from_le_bytes([p[0], p[1], p[2], p[3]])
}

impl<'a> Repr<'a> {
    /// Parses and validates a message.
    ///
    /// # Errors
    ///
    /// See [`WireError`].
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&'a T>) -> Result<Repr<'a>, WireError> {
        packet.check_len()?;
        let buf: &'a [u8] = packet.buffer.as_ref();
        let t = packet.msg_type();
        let n = packet.len();
        let p = &buf[HEADER_LEN..HEADER_LEN + n as usize];
        let need = |ok: bool| if ok { Ok(()) } else { Err(WireError::BadLength(t, n)) };
        Ok(match t {
            MsgType::Hello => {
                need(p.len() == 4)?;
                Repr::Hello { version: le32(p) }
            }
            MsgType::ExecCmdline | MsgType::JustExec | MsgType::ServiceConnect => {
                need(p.len() > EXEC_PARAMS_LEN)?;
                let e = exec_params(p)?;
                match t {
                    MsgType::ExecCmdline => Repr::ExecCmdline(e),
                    MsgType::JustExec => Repr::JustExec(e),
                    _ => Repr::ServiceConnect(e),
                }
            }
            MsgType::ConnectionTerminated => {
                need(p.len() == EXEC_PARAMS_LEN)?;
                Repr::ConnectionTerminated { connect_domain: le32(p), connect_port: le32(&p[4..]) }
            }
            MsgType::DataStdin => Repr::Stdin(p),
            MsgType::DataStdout => Repr::Stdout(p),
            MsgType::DataStderr => Repr::Stderr(p),
            MsgType::DataExitCode => {
                need(p.len() == 4)?;
                Repr::ExitCode(le32(p) as i32)
            }
            MsgType::ServiceRefused | MsgType::TriggerService | MsgType::TriggerService3 | MsgType::TriggerService4 => {
                Repr::Other(t)
            }
            MsgType::Unknown(v) => return Err(WireError::UnknownType(v)),
        })
    }

    fn parts(&self) -> (MsgType, [u8; 8], usize, &'a [u8]) {
        let mut fixed = [0u8; 8];
        let (t, flen, tail): (MsgType, usize, &'a [u8]) = match *self {
            Repr::Hello { version } => {
                fixed[..4].copy_from_slice(&version.to_le_bytes());
                (MsgType::Hello, 4, &[])
            }
            Repr::ExecCmdline(e) | Repr::JustExec(e) | Repr::ServiceConnect(e) => {
                fixed[..4].copy_from_slice(&e.connect_domain.to_le_bytes());
                fixed[4..].copy_from_slice(&e.connect_port.to_le_bytes());
                let t = match self {
                    Repr::ExecCmdline(_) => MsgType::ExecCmdline,
                    Repr::JustExec(_) => MsgType::JustExec,
                    _ => MsgType::ServiceConnect,
                };
                (t, 8, e.cmdline.as_bytes())
            }
            Repr::ConnectionTerminated { connect_domain, connect_port } => {
                fixed[..4].copy_from_slice(&connect_domain.to_le_bytes());
                fixed[4..].copy_from_slice(&connect_port.to_le_bytes());
                (MsgType::ConnectionTerminated, 8, &[])
            }
            Repr::Stdin(d) => (MsgType::DataStdin, 0, d),
            Repr::Stdout(d) => (MsgType::DataStdout, 0, d),
            Repr::Stderr(d) => (MsgType::DataStderr, 0, d),
            Repr::ExitCode(c) => {
                fixed[..4].copy_from_slice(&c.to_le_bytes());
                (MsgType::DataExitCode, 4, &[])
            }
            Repr::Other(t) => (t, 0, &[]),
        };
        (t, fixed, flen, tail)
    }

    fn has_nul(&self) -> bool {
        matches!(self, Repr::ExecCmdline(_) | Repr::JustExec(_) | Repr::ServiceConnect(_))
    }

    /// Bytes [`Repr::emit`] writes.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        let (_, _, flen, tail) = self.parts();
        HEADER_LEN + flen + tail.len() + usize::from(self.has_nul())
    }

    /// Writes the message into `buf` (at least [`Repr::buffer_len`] bytes); returns the
    /// length written.
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        let (t, fixed, flen, tail) = self.parts();
        let total = self.buffer_len();
        buf[..HEADER_LEN].copy_from_slice(&header(t, (total - HEADER_LEN) as u32));
        buf[HEADER_LEN..HEADER_LEN + flen].copy_from_slice(&fixed[..flen]);
        let at = HEADER_LEN + flen;
        buf[at..at + tail.len()].copy_from_slice(tail);
        if self.has_nul() {
            buf[at + tail.len()] = 0;
        }
        total
    }
}

#[cfg(test)]
mod tests;
