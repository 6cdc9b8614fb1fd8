//! Retrying a whole transaction on `EAGAIN`, for poll-driven callers.
//!
//! xenstored detects conflicts only at `TRANSACTION_END`; the answer is then `EAGAIN` and the
//! caller must start again from `TRANSACTION_START`, re-reading its inputs (xen-abi.md §4.3).
//! [`TxnRetry`] owns the START/END requests and the attempt count; the caller owns the body.

use super::client::{Client, ReqId};
use super::error::Error;
use super::wire::{Request, TxId};

/// What the caller should do after [`TxnRetry::poll`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnStep {
    /// Waiting for xenstored (or for a free request slot); poll again later.
    Pending,
    /// A new attempt is open: throw away anything from an earlier attempt, run the body from
    /// scratch with this id (re-read, then write), then call [`TxnRetry::commit`] or
    /// [`TxnRetry::abort`]. Returned once per attempt.
    Begin(TxId),
    /// The body is running (the caller's turn); returned until it commits or aborts.
    Open(TxId),
    /// Committed.
    Committed,
    /// Aborted at the caller's request.
    Aborted,
    /// Gave up: the error of START or END, [`Error::Again`] once the attempts are used up.
    /// After [`Error::Timeout`] on END the outcome is unknown: re-read before relying on it.
    Failed(Error),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Starting(ReqId),
    Open(TxId),
    Ending { id: ReqId, commit: bool },
    Finished(TxnStep),
}

/// A transaction that restarts itself on `EAGAIN`, at most `max_attempts` times in all.
///
/// ```
/// # use xen_front::xenstore::{Client, Request, TxnRetry, TxnStep};
/// # fn body_done() -> bool { true }
/// # fn example(client: &mut Client, now: u64) {
/// const TIMEOUT_NS: u64 = 5_000_000_000;
/// let mut txn = TxnRetry::new(5, TIMEOUT_NS); // kept in the caller's state between polls
/// // In the poll loop, after `client.poll(now)`:
/// match txn.poll(client, now) {
///     TxnStep::Begin(tx) => {
///         // (Re)start the body: submit its reads/writes with `tx`.
///         let _ = client.submit(now, TIMEOUT_NS, tx, Request::Write("data/x", b"1"));
///     }
///     TxnStep::Open(_) if body_done() => {
///         let _ = txn.commit(client, now);
///     }
///     TxnStep::Committed => { /* done */ }
///     TxnStep::Failed(_e) => { /* give up, log, maybe retry much later */ }
///     _ => {}
/// }
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnRetry {
    state: State,
    attempts: u8,
    max_attempts: u8,
    timeout_ns: u64,
}

impl TxnRetry {
    /// A transaction not yet started; its START and END requests get `timeout_ns` each.
    pub const fn new(max_attempts: u8, timeout_ns: u64) -> TxnRetry {
        TxnRetry { state: State::Idle, attempts: 0, max_attempts, timeout_ns }
    }

    /// Attempts started so far.
    pub fn attempts(&self) -> u8 {
        self.attempts
    }

    /// The open transaction's id, while the body may run.
    pub fn tx(&self) -> Option<TxId> {
        match self.state {
            State::Open(tx) => Some(tx),
            _ => None,
        }
    }

    /// Advances the transaction: starts it, collects START/END replies, restarts on `EAGAIN`.
    pub fn poll(&mut self, client: &mut Client, now_ns: u64) -> TxnStep {
        match self.state {
            State::Idle => self.start(client, now_ns),
            State::Starting(id) => {
                // Copy out what we need so the reply's borrow of `client` ends here.
                let reply = client.take_reply(id).map(|r| r.map(|reply| reply.tx_started()));
                match reply {
                    None if client.is_pending(id) => TxnStep::Pending,
                    None => self.finish(TxnStep::Failed(Error::Broken)),
                    Some(Ok(Some(tx))) => {
                        self.state = State::Open(tx);
                        TxnStep::Begin(tx)
                    }
                    Some(Ok(None)) => self.finish(TxnStep::Failed(Error::MalformedReply)),
                    Some(Err(Error::Again)) => self.retry(client, now_ns),
                    Some(Err(e)) => self.finish(TxnStep::Failed(e)),
                }
            }
            State::Open(tx) => TxnStep::Open(tx),
            State::Ending { id, commit } => {
                let reply = client.take_reply(id).map(|r| r.map(|_| ()));
                match (reply, commit) {
                    (None, _) if client.is_pending(id) => TxnStep::Pending,
                    (None, _) => self.finish(TxnStep::Failed(Error::Broken)),
                    // An abort ends the transaction whatever xenstored says about it.
                    (Some(_), false) => self.finish(TxnStep::Aborted),
                    (Some(Ok(())), true) => self.finish(TxnStep::Committed),
                    (Some(Err(Error::Again)), true) => self.retry(client, now_ns),
                    (Some(Err(e)), true) => self.finish(TxnStep::Failed(e)),
                }
            }
            State::Finished(step) => step,
        }
    }

    /// Ends the open transaction with a commit; the outcome comes from later polls.
    /// On `Err` (e.g. [`Error::TooManyInFlight`]) the transaction stays open: try again.
    pub fn commit(&mut self, client: &mut Client, now_ns: u64) -> Result<(), Error> {
        self.end(client, now_ns, true)
    }

    /// Ends the open transaction with an abort (e.g. a body request failed).
    pub fn abort(&mut self, client: &mut Client, now_ns: u64) -> Result<(), Error> {
        self.end(client, now_ns, false)
    }

    fn end(&mut self, client: &mut Client, now_ns: u64, commit: bool) -> Result<(), Error> {
        let State::Open(tx) = self.state else {
            return Err(Error::InvalidArgument);
        };
        let id = client.submit(now_ns, self.timeout_ns, tx, Request::TransactionEnd { commit })?;
        self.state = State::Ending { id, commit };
        Ok(())
    }

    fn start(&mut self, client: &mut Client, now_ns: u64) -> TxnStep {
        match client.submit(now_ns, self.timeout_ns, TxId::NONE, Request::TransactionStart) {
            Ok(id) => {
                self.attempts = self.attempts.saturating_add(1);
                self.state = State::Starting(id);
                TxnStep::Pending
            }
            Err(Error::TooManyInFlight) => TxnStep::Pending, // a slot frees up later
            Err(e) => self.finish(TxnStep::Failed(e)),
        }
    }

    fn retry(&mut self, client: &mut Client, now_ns: u64) -> TxnStep {
        if self.attempts >= self.max_attempts {
            return self.finish(TxnStep::Failed(Error::Again));
        }
        self.state = State::Idle;
        self.start(client, now_ns)
    }

    fn finish(&mut self, step: TxnStep) -> TxnStep {
        self.state = State::Finished(step);
        step
    }
}
