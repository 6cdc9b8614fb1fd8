//! One request's data connection: we are the vchan client of dom0's `qrexec-client` at the
//! port the request named. HELLO exchange, then the service runs: its output goes out as
//! MSG_DATA_STDOUT/STDERR (an empty STDOUT is EOF) and MSG_DATA_EXIT_CODE.

use super::cmdline::{self, CommandKind};
use super::time::parse_iso8601;
use super::wire::{self, HEADER_LEN, MAX_DATA_CHUNK, MIN_PROTOCOL_VERSION, MsgType, Packet, Repr, WireError};
use crate::channel::ByteChannel;
use crate::framed::{FrameError, FramedReader};
use crate::outbox::Outbox;

/// Longest `qubes.SetDateTime` input kept (a `date -Iseconds` line is 25 bytes).
pub const MAX_TIME_LINE: usize = 64;
/// Bytes of each received data message kept (longer ones are truncated, then refused).
pub const DATA_MSG_BYTES: usize = HEADER_LEN + MAX_TIME_LINE;
/// What the answer to an unsupported service says on stderr.
pub const REFUSAL: &[u8] = b"portcullis: service not supported\n";

/// The services the firewall answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// `qubes.WaitForSession`: the firewall is always ready; exit 0.
    WaitForSession,
    /// `qubes.SetDateTime`: read the time from stdin, report it, exit 0.
    SetDateTime,
    /// Anything else (other services, shell commands, unparsable command lines): a line on
    /// stderr, exit 1.
    Refused,
}

impl Service {
    /// The service a command line asks for.
    #[must_use]
    pub fn from_cmdline(cmdline: &str) -> Service {
        match cmdline::parse(cmdline).map(|c| c.kind) {
            Ok(CommandKind::Rpc { service: "qubes.WaitForSession", .. }) => Service::WaitForSession,
            Ok(CommandKind::Rpc { service: "qubes.SetDateTime", .. }) => Service::SetDateTime,
            _ => Service::Refused,
        }
    }
}

/// What a data connection reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataEvent {
    /// dom0 gave the wall-clock time (`qubes.SetDateTime`): seconds since the Unix epoch.
    SetWallClock(i64),
    /// The service finished and everything was handed to the channel: close it.
    Finished {
        /// The exit code sent.
        exit_code: i32,
    },
}

/// Why a data connection was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataError {
    /// The stream could not be framed.
    Frame(FrameError<WireError>),
    /// A message failed validation.
    Wire(WireError),
    /// The first message was not HELLO.
    NoHello(MsgType),
    /// The peer's protocol version is below [`MIN_PROTOCOL_VERSION`].
    Version(u32),
    /// A valid message that has no place on a data channel now.
    Unexpected(MsgType),
    /// dom0 closed the channel before the service finished.
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Start,
    AwaitHello,
    ReadStdin,
    Finishing(i32),
    Done,
}

/// A data connection's state machine.
#[derive(Clone, Debug)]
pub struct DataConnection {
    service: Service,
    state: State,
    reader: FramedReader<HEADER_LEN, WireError>,
    msg: [u8; DATA_MSG_BYTES],
    outbox: Outbox<256>,
    line: heapless::Vec<u8, MAX_TIME_LINE>,
}

impl DataConnection {
    /// A connection that will run `service` once the channel is open.
    #[must_use]
    pub const fn new(service: Service) -> Self {
        Self {
            service,
            state: State::Start,
            reader: FramedReader::new(wire::message_len, HEADER_LEN + MAX_DATA_CHUNK),
            msg: [0; DATA_MSG_BYTES],
            outbox: Outbox::new(),
            line: heapless::Vec::new(),
        }
    }

    /// The service this connection runs.
    #[must_use]
    pub const fn service(&self) -> Service {
        self.service
    }

    fn finish(&mut self, stderr: &[u8], exit_code: i32) {
        // 256 bytes hold the largest answer (stderr line, STDOUT EOF, exit code).
        if !stderr.is_empty() {
            let _ = self.outbox.push(&[&wire::header(MsgType::DataStderr, stderr.len() as u32), stderr]);
        }
        let _ = self.outbox.push(&[&wire::header(MsgType::DataStdout, 0)]);
        let _ = self.outbox.push(&[&wire::header(MsgType::DataExitCode, 4), &exit_code.to_le_bytes()]);
        self.state = State::Finishing(exit_code);
    }

    fn start_service(&mut self) {
        match self.service {
            Service::WaitForSession => self.finish(b"", 0),
            Service::SetDateTime => self.state = State::ReadStdin,
            Service::Refused => self.finish(REFUSAL, 1),
        }
    }

    /// Makes progress on the channel.
    ///
    /// # Errors
    ///
    /// See [`DataError`]; the connection is finished then (drop it and close the channel).
    pub fn poll<C: ByteChannel + ?Sized>(&mut self, chan: &mut C) -> Result<Option<DataEvent>, DataError> {
        if self.state == State::Start {
            if !chan.is_open() {
                return Ok(None);
            }
            let hello = Repr::Hello { version: wire::PROTOCOL_VERSION };
            let mut b = [0u8; 12];
            hello.emit(&mut b);
            let _ = self.outbox.push(&[&b]);
            self.state = State::AwaitHello;
        }
        let flushed = self.outbox.flush(chan);
        match self.state {
            State::Finishing(code) if flushed => {
                self.state = State::Done;
                return Ok(Some(DataEvent::Finished { exit_code: code }));
            }
            State::Finishing(_) | State::Done => {
                return if chan.is_open() || self.state == State::Done { Ok(None) } else { Err(DataError::Closed) };
            }
            _ => {}
        }
        let len = match self.reader.poll(chan, &mut self.msg) {
            Ok(Some(len)) => len,
            Ok(None) => return if chan.is_open() { Ok(None) } else { Err(DataError::Closed) },
            Err(e) => return Err(DataError::Frame(e)),
        };
        let kept = len.min(self.msg.len());
        let msg = self.msg;
        let packet = Packet::new_unchecked(&msg[..kept]);
        if len > kept {
            // Longer than anything this agent reads: only stdin may be, and a time line
            // that long is not a time.
            return match (self.state, packet.msg_type()) {
                (State::ReadStdin, MsgType::DataStdin) => {
                    self.finish(b"portcullis: bad time\n", 1);
                    self.poll(chan)
                }
                (_, t) => Err(DataError::Unexpected(t)),
            };
        }
        let repr = Repr::parse(&packet).map_err(DataError::Wire)?;
        match (self.state, repr) {
            (State::AwaitHello, Repr::Hello { version }) => {
                if version < MIN_PROTOCOL_VERSION {
                    return Err(DataError::Version(version));
                }
                self.start_service();
                self.poll(chan)
            }
            (State::AwaitHello, _) => Err(DataError::NoHello(packet.msg_type())),
            (State::ReadStdin, Repr::Stdin(data)) => {
                let eof = data.is_empty();
                let end = data.iter().position(|&b| b == b'\n');
                let part = &data[..end.unwrap_or(data.len())];
                let fits = self.line.extend_from_slice(part).is_ok();
                if !fits {
                    self.finish(b"portcullis: bad time\n", 1);
                    return self.poll(chan);
                }
                if !(eof || end.is_some()) {
                    return Ok(None);
                }
                match parse_iso8601(&self.line) {
                    Ok(t) => {
                        self.finish(b"", 0);
                        Ok(Some(DataEvent::SetWallClock(t)))
                    }
                    Err(_) => {
                        self.finish(b"portcullis: bad time\n", 1);
                        self.poll(chan)
                    }
                }
            }
            // dom0 may send stdin the service does not read; it is dropped.
            (_, Repr::Stdin(_)) => Ok(None),
            (_, _) => Err(DataError::Unexpected(packet.msg_type())),
        }
    }
}
