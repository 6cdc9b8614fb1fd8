//! The qrexec agent's control channel (we are the vchan server on port 512, dom0's
//! `qrexec-daemon` the client) and the table of running requests.
//!
//! On a fresh channel the agent sends MSG_HELLO, then expects dom0's HELLO (version ≥ 3; the
//! lower of the two versions is used). Each MSG_EXEC_CMDLINE / MSG_JUST_EXEC becomes a
//! request: the agent asks the appliance to open a data vchan to dom0's port
//! ([`AgentEvent::OpenData`]), runs the service on it ([`Agent::poll_data`]), and when it is
//! over sends MSG_CONNECTION_TERMINATED so dom0 frees the port.

use super::data::{DataConnection, DataError, DataEvent, Service};
use super::wire::{self, HEADER_LEN, MIN_PROTOCOL_VERSION, MsgType, PROTOCOL_VERSION, Packet, Repr, WireError};
use crate::channel::ByteChannel;
use crate::framed::{FrameError, FramedReader};
use crate::outbox::Outbox;

/// Requests served at once; a request beyond these is refused at once (its port released).
pub const MAX_REQUESTS: usize = 4;
/// Longest control message kept: the exec parameters and a 256-byte command line. A longer
/// command line (up to the protocol's 64 KiB) is truncated, so it names no service the
/// firewall answers, and the request is refused.
pub const CONTROL_MSG_BYTES: usize = HEADER_LEN + wire::EXEC_PARAMS_LEN + 256;
const TERMINATED_LEN: usize = HEADER_LEN + wire::EXEC_PARAMS_LEN;

/// Which request a data connection belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestId(pub u8);

/// What the appliance must do for the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentEvent {
    /// The handshake is done; this is the protocol version in use.
    Connected {
        /// `min(ours, dom0's)`.
        version: u32,
    },
    /// Open a data vchan (as client) to `domain`'s `port`, then drive it with
    /// [`Agent::poll_data`] (or report [`Agent::data_failed`]).
    OpenData {
        /// The request.
        id: RequestId,
        /// The domain to connect to (dom0).
        domain: u32,
        /// Its vchan port.
        port: u32,
    },
}

/// Why the control channel must be reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentError {
    /// The stream could not be framed.
    Frame(FrameError<WireError>),
    /// A message failed validation.
    Wire(WireError),
    /// The first message was not HELLO.
    NoHello(MsgType),
    /// dom0's protocol version is below [`MIN_PROTOCOL_VERSION`].
    Version(u32),
    /// A valid message that has no place on the control channel (a second HELLO, data).
    Unexpected(MsgType),
    /// dom0 closed the channel.
    Closed,
}

/// Counters (read by a dump).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests accepted.
    pub requests: u64,
    /// Requests refused because [`MAX_REQUESTS`] were running.
    pub busy: u64,
    /// Known messages ignored (service triggers and refusals: the firewall makes no calls).
    pub ignored: u64,
    /// Data connections dropped on error.
    pub data_errors: u64,
    /// Control-channel resets.
    pub resets: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    AwaitHello,
    Ready(u32),
}

#[derive(Clone, Debug)]
struct Request {
    domain: u32,
    port: u32,
    conn: DataConnection,
}

/// The qrexec agent.
#[derive(Clone, Debug)]
pub struct Agent {
    state: State,
    reader: FramedReader<HEADER_LEN, WireError>,
    msg: [u8; CONTROL_MSG_BYTES],
    outbox: Outbox<512>,
    requests: [Option<Request>; MAX_REQUESTS],
    /// What the agent saw.
    pub counters: Counters,
}

impl Default for Agent {
    fn default() -> Self {
        Self::new()
    }
}

impl Agent {
    /// An agent waiting for dom0 to connect.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            state: State::Idle,
            reader: FramedReader::new(wire::message_len, HEADER_LEN + wire::MAX_DATA_CHUNK),
            msg: [0; CONTROL_MSG_BYTES],
            outbox: Outbox::new(),
            requests: [const { None }; MAX_REQUESTS],
            counters: Counters { requests: 0, busy: 0, ignored: 0, data_errors: 0, resets: 0 },
        }
    }

    /// The negotiated version, once connected.
    #[must_use]
    pub const fn version(&self) -> Option<u32> {
        match self.state {
            State::Ready(v) => Some(v),
            _ => None,
        }
    }

    /// Forgets the control channel and every request (dom0's daemon is gone with it). Call
    /// before listening again.
    pub fn reset(&mut self) {
        self.state = State::Idle;
        self.reader.reset();
        self.outbox.clear();
        self.requests = [const { None }; MAX_REQUESTS];
    }

    fn fail(&mut self, e: AgentError) -> AgentError {
        self.counters.resets += 1;
        self.reset();
        e
    }

    fn terminated(&mut self, domain: u32, port: u32) {
        let mut b = [0u8; TERMINATED_LEN];
        Repr::ConnectionTerminated { connect_domain: domain, connect_port: port }.emit(&mut b);
        // Room for one per request slot is kept free before a request is accepted.
        let _ = self.outbox.push(&[&b]);
    }

    /// Makes progress on the control channel: handshake, new requests, queued messages.
    ///
    /// # Errors
    ///
    /// See [`AgentError`]. The agent has reset itself; the caller closes the channel and
    /// listens again.
    pub fn poll_control<C: ByteChannel + ?Sized>(&mut self, chan: &mut C) -> Result<Option<AgentEvent>, AgentError> {
        if self.state == State::Idle {
            if !chan.is_open() {
                return Ok(None);
            }
            let mut b = [0u8; 12];
            Repr::Hello { version: PROTOCOL_VERSION }.emit(&mut b);
            let _ = self.outbox.push(&[&b]);
            self.state = State::AwaitHello;
        }
        self.outbox.flush(chan);
        // Keep room for a CONNECTION_TERMINATED per request that could finish.
        if self.outbox.room() < TERMINATED_LEN * (MAX_REQUESTS + 1) {
            return Ok(None);
        }
        let len = match self.reader.poll(chan, &mut self.msg) {
            Ok(Some(len)) => len,
            Ok(None) => return if chan.is_open() { Ok(None) } else { Err(self.fail(AgentError::Closed)) },
            Err(e) => return Err(self.fail(AgentError::Frame(e))),
        };
        let kept = len.min(self.msg.len());
        let msg = self.msg;
        let packet = Packet::new_unchecked(&msg[..kept]);
        let t = packet.msg_type();
        if len > kept {
            // Only a command line may be this long; it names no service we answer.
            return match (self.state, t) {
                (State::Ready(_), MsgType::ExecCmdline | MsgType::JustExec) => {
                    let p = &msg[HEADER_LEN..];
                    let domain = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
                    let port = u32::from_le_bytes([p[4], p[5], p[6], p[7]]);
                    Ok(self.accept(domain, port, Service::Refused))
                }
                _ => Err(self.fail(AgentError::Unexpected(t))),
            };
        }
        let repr = match Repr::parse(&packet) {
            Ok(r) => r,
            Err(e) => return Err(self.fail(AgentError::Wire(e))),
        };
        match (self.state, repr) {
            (State::AwaitHello, Repr::Hello { version }) => {
                if version < MIN_PROTOCOL_VERSION {
                    return Err(self.fail(AgentError::Version(version)));
                }
                let v = version.min(PROTOCOL_VERSION);
                self.state = State::Ready(v);
                self.outbox.flush(chan);
                Ok(Some(AgentEvent::Connected { version: v }))
            }
            (State::AwaitHello, _) => Err(self.fail(AgentError::NoHello(t))),
            (State::Ready(_), Repr::ExecCmdline(e) | Repr::JustExec(e)) => {
                Ok(self.accept(e.connect_domain, e.connect_port, Service::from_cmdline(e.cmdline)))
            }
            (State::Ready(_), Repr::ServiceConnect(_) | Repr::Other(_)) => {
                self.counters.ignored += 1;
                Ok(None)
            }
            (_, _) => Err(self.fail(AgentError::Unexpected(t))),
        }
    }

    fn accept(&mut self, domain: u32, port: u32, service: Service) -> Option<AgentEvent> {
        let Some(i) = self.requests.iter().position(Option::is_none) else {
            self.counters.busy += 1;
            self.terminated(domain, port);
            return None;
        };
        self.counters.requests += 1;
        self.requests[i] = Some(Request { domain, port, conn: DataConnection::new(service) });
        Some(AgentEvent::OpenData { id: RequestId(i as u8), domain, port })
    }

    fn end(&mut self, id: RequestId) {
        if let Some(r) = self.requests.get_mut(usize::from(id.0)).and_then(Option::take) {
            self.terminated(r.domain, r.port);
        }
    }

    /// Makes progress on request `id`'s data channel. After `Finished` or an error the
    /// request is over (MSG_CONNECTION_TERMINATED is queued): close the channel.
    ///
    /// # Errors
    ///
    /// See [`DataError`]; only this request is dropped. `Ok(None)` for an `id` that is not
    /// running.
    pub fn poll_data<C: ByteChannel + ?Sized>(
        &mut self,
        id: RequestId,
        chan: &mut C,
    ) -> Result<Option<DataEvent>, DataError> {
        let Some(req) = self.requests.get_mut(usize::from(id.0)).and_then(Option::as_mut) else {
            return Ok(None);
        };
        match req.conn.poll(chan) {
            Ok(Some(DataEvent::Finished { exit_code })) => {
                self.end(id);
                Ok(Some(DataEvent::Finished { exit_code }))
            }
            Ok(other) => Ok(other),
            Err(e) => {
                self.counters.data_errors += 1;
                self.end(id);
                Err(e)
            }
        }
    }

    /// The appliance could not open request `id`'s data channel: drop the request.
    pub fn data_failed(&mut self, id: RequestId) {
        self.counters.data_errors += 1;
        self.end(id);
    }

    /// Whether request `id` is running.
    #[must_use]
    pub fn is_running(&self, id: RequestId) -> bool {
        self.requests.get(usize::from(id.0)).is_some_and(Option::is_some)
    }
}
