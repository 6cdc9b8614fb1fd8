//! The QubesDB client state machine (the VM side of dom0's `qubesdb-daemon`).
//!
//! At connect it asks for a full dump (MULTIREAD of `""`), stores the entries dom0 sends
//! (in reverse order) up to the empty terminator, then applies dom0's WRITE and RM pushes,
//! answering each with RESP_OK. It can also write keys itself (`/qubes-iptables-error`).
//!
//! Driven by [`Client::poll`] from the appliance's loop: each call moves at most one
//! received message and reports at most one [`Event`]. Any error means the stream can no
//! longer be trusted: the client has already reset itself and will start a new full sync as
//! soon as it is polled with an open channel; the caller reconnects the vchan (dom0 also
//! drops a connection that asks for a second dump).

use core::fmt;

use heapless::String;

use super::store::{Store, StoreError};
use super::wire::{HEADER_LEN, MAX_DATA_LEN, MAX_MESSAGE_LEN, MAX_PATH_LEN, MsgType, Packet, Repr, WireError};
use crate::channel::ByteChannel;
use crate::framed::{FrameError, FramedReader};
use crate::outbox::Outbox;

/// A path copied out of a message, for events.
pub type Path = String<MAX_PATH_LEN>;

/// Bytes of replies and own writes that may wait for a full ring (two largest writes plus
/// acknowledgements).
pub const OUTBOX_BYTES: usize = 8192;

/// What happened, for the configuration model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A new full sync has started: the store was emptied and is being refilled.
    SyncStarted,
    /// The dump is complete: the store now mirrors dom0's database.
    Synced,
    /// dom0 set this key (during the dump or afterwards).
    Written(Path),
    /// dom0 removed this key.
    Removed(Path),
    /// dom0 removed every key under this path (it ends with `/`).
    RemovedSubtree(Path),
    /// dom0 set this key but the store is full: the key is absent from the store (its old
    /// value was removed too). Whatever depends on it must fail closed.
    StoreFull(Path),
    /// dom0 refused one of our own writes (answered RESP_ERROR).
    WriteRefused(Path),
}

/// Why the client reset itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The stream could not be framed (bad length).
    Frame(FrameError<WireError>),
    /// A message failed validation.
    Wire(WireError),
    /// A valid message that makes no sense now: a second dump, a MULTIREAD request from dom0,
    /// a response to a write we did not make.
    Unexpected(MsgType),
    /// The peer closed the channel.
    Closed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Frame(FrameError::Header(e)) | Self::Wire(e) => write!(f, "qubesdb: {e}"),
            Self::Frame(e) => write!(f, "qubesdb: framing: {e:?}"),
            Self::Unexpected(t) => write!(f, "qubesdb: unexpected {t:?}"),
            Self::Closed => f.write_str("qubesdb: channel closed"),
        }
    }
}

/// Why an own write was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// Not connected (or the dump is still running): write after [`Event::Synced`].
    NotSynced,
    /// The path is not a key or the value is too long or contains NUL.
    Invalid,
    /// The outbox is full (dom0 is not reading); try again later.
    Busy,
    /// Sent to dom0, but the local copy could not be stored.
    StoreFull,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Disconnected,
    Syncing,
    Synced,
}

/// Counters of what the client saw (Hubris style: read by a dump, never reset).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages received and accepted.
    pub messages: u64,
    /// Full syncs started.
    pub syncs: u64,
    /// Resets after an error.
    pub errors: u64,
    /// Writes that did not fit the store.
    pub store_full: u64,
    /// RMs of keys we did not have (a de-sync, or a key lost to a full store).
    pub rm_missing: u64,
}

/// The QubesDB client.
pub struct Client {
    reader: FramedReader<HEADER_LEN, WireError>,
    msg: [u8; MAX_MESSAGE_LEN],
    outbox: Outbox<OUTBOX_BYTES>,
    state: State,
    own_writes: u32,
    /// What the client saw.
    pub counters: Counters,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// A client that will sync on its first poll with an open channel.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            reader: FramedReader::new(super::wire::message_len, MAX_MESSAGE_LEN),
            msg: [0; MAX_MESSAGE_LEN],
            outbox: Outbox::new(),
            state: State::Disconnected,
            own_writes: 0,
            counters: Counters { messages: 0, syncs: 0, errors: 0, store_full: 0, rm_missing: 0 },
        }
    }

    /// Whether the full dump has been received (the store mirrors dom0).
    #[must_use]
    pub fn is_synced(&self) -> bool {
        self.state == State::Synced
    }

    /// Forgets the connection: the next poll with an open channel starts a new full sync.
    /// Call after replacing the channel.
    pub fn reset(&mut self) {
        self.reader.reset();
        self.outbox.clear();
        self.state = State::Disconnected;
        self.own_writes = 0;
    }

    fn fail(&mut self, e: Error) -> Error {
        self.counters.errors += 1;
        self.reset();
        e
    }

    /// Writes a key of our own to dom0 (and to the local store).
    ///
    /// # Errors
    ///
    /// See [`WriteError`]; nothing is sent unless the result is `Ok` or
    /// [`WriteError::StoreFull`].
    pub fn write<const E: usize, const B: usize>(
        &mut self,
        store: &mut Store<E, B>,
        path: &str,
        value: &[u8],
    ) -> Result<(), WriteError> {
        if self.state != State::Synced {
            return Err(WriteError::NotSynced);
        }
        let valid = super::wire::check_path(path.as_bytes()).is_ok()
            && super::wire::is_key(path)
            && value.len() <= MAX_DATA_LEN
            && !value.contains(&0);
        if !valid {
            return Err(WriteError::Invalid);
        }
        let repr = Repr { msg_type: MsgType::Write, path, data: value };
        self.outbox.push(&[&repr.header(), value]).map_err(|_| WriteError::Busy)?;
        self.own_writes += 1;
        store.insert(path, value).map_err(|_| WriteError::StoreFull)
    }

    fn ack(&mut self, t: MsgType, path: &str) {
        let r = Repr { msg_type: t, path, data: &[] };
        // Room was checked before the message was read.
        let _ = self.outbox.push(&[&r.header()]);
    }

    /// Makes progress: starts a sync on a fresh channel, sends what is queued, and handles
    /// at most one received message.
    ///
    /// # Errors
    ///
    /// See [`Error`]. The client has reset itself; the caller reconnects the channel.
    pub fn poll<C: ByteChannel + ?Sized, const E: usize, const B: usize>(
        &mut self,
        chan: &mut C,
        store: &mut Store<E, B>,
    ) -> Result<Option<Event>, Error> {
        if self.state == State::Disconnected {
            if !chan.is_open() {
                return Ok(None);
            }
            store.clear();
            let req = Repr { msg_type: MsgType::Multiread, path: "", data: &[] };
            let _ = self.outbox.push(&[&req.header()]);
            self.state = State::Syncing;
            self.counters.syncs += 1;
            self.outbox.flush(chan);
            return Ok(Some(Event::SyncStarted));
        }
        self.outbox.flush(chan);
        // Every message may need a 72-byte answer: read only when it can be queued, so a
        // peer that does not read its replies stops being served instead of losing them.
        if self.outbox.room() < HEADER_LEN {
            return Ok(None);
        }
        let len = match self.reader.poll(chan, &mut self.msg) {
            Ok(Some(len)) => len,
            Ok(None) => {
                if !chan.is_open() {
                    return Err(self.fail(Error::Closed));
                }
                return Ok(None);
            }
            Err(e) => return Err(self.fail(Error::Frame(e))),
        };
        let event = self.handle(len, store);
        self.outbox.flush(chan);
        event
    }

    fn handle<const E: usize, const B: usize>(
        &mut self,
        len: usize,
        store: &mut Store<E, B>,
    ) -> Result<Option<Event>, Error> {
        // `len <= MAX_MESSAGE_LEN == self.msg.len()` (the reader's bound), never truncated.
        let msg = self.msg;
        let repr = match Packet::new_checked(&msg[..len]).and_then(|p| Repr::parse(&p)) {
            Ok(r) => r,
            Err(e) => return Err(self.fail(Error::Wire(e))),
        };
        let path = || Path::try_from(repr.path).unwrap_or_default();
        let event = match (repr.msg_type, self.state) {
            (MsgType::RespMultiread, State::Syncing) if repr.path.is_empty() => {
                self.state = State::Synced;
                Some(Event::Synced)
            }
            (MsgType::RespMultiread, State::Syncing) | (MsgType::Write, _) => {
                let answer = match store.insert(repr.path, repr.data) {
                    Ok(()) => Event::Written(path()),
                    Err(StoreError::Full | StoreError::Invalid) => {
                        self.counters.store_full += 1;
                        Event::StoreFull(path())
                    }
                };
                if repr.msg_type == MsgType::Write {
                    let t = if matches!(answer, Event::Written(_)) { MsgType::RespOk } else { MsgType::RespError };
                    self.ack(t, repr.path);
                }
                Some(answer)
            }
            (MsgType::Rm, _) => {
                let event = if repr.path.ends_with('/') {
                    store.remove_prefix(repr.path);
                    Event::RemovedSubtree(path())
                } else {
                    if !store.remove(repr.path) {
                        self.counters.rm_missing += 1;
                    }
                    Event::Removed(path())
                };
                // dom0's VM daemon treats a missing key as a fatal de-sync; a key we lost
                // to a full store is missing legitimately, so acknowledge and count.
                self.ack(MsgType::RespOk, repr.path);
                Some(event)
            }
            (MsgType::RespOk | MsgType::RespError, _) if self.own_writes > 0 => {
                self.own_writes -= 1;
                if repr.msg_type == MsgType::RespError { Some(Event::WriteRefused(path())) } else { None }
            }
            (t, _) => return Err(self.fail(Error::Unexpected(t))),
        };
        self.counters.messages += 1;
        Ok(event)
    }
}

#[cfg(test)]
mod tests;
