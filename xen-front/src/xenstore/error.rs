//! The one error type of the xenstore client: xenstored's errno answers and this client's own
//! refusals, in a single flat enum so callers can `match` on `Error::Again` directly.

use core::fmt;

/// Why a xenstore request did not succeed.
///
/// The first group mirrors xenstored's `XS_ERROR` answers (the errno *name* it sends, see
/// `xsd_errors[]` in `io/xs_wire.h`; `EQUOTA` is oxenstored's quota error). The second group
/// is produced by this client without asking xenstored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// `EINVAL`: malformed request (bad path, bad permission string, ...).
    Invalid,
    /// `EACCES`: the node's permissions forbid this.
    AccessDenied,
    /// `EEXIST`: the node already exists.
    Exists,
    /// `EISDIR`: the node is a directory.
    IsDirectory,
    /// `ENOENT`: no such node (or no such transaction).
    NotFound,
    /// `ENOMEM`: xenstored is out of memory.
    NoMemory,
    /// `ENOSPC`: a quota of C xenstored was hit (nodes, watches, transactions...).
    NoSpace,
    /// `EIO`: xenstored's storage failed.
    Io,
    /// `ENOTEMPTY`: the directory is not empty.
    NotEmpty,
    /// `ENOSYS`: the operation is not implemented by this xenstored.
    NotSupported,
    /// `EROFS`: read-only store.
    ReadOnly,
    /// `EBUSY`: xenstored is busy (e.g. live update); retry later.
    Busy,
    /// `EAGAIN`: the transaction conflicted with another; restart it from `TRANSACTION_START`.
    Again,
    /// `EISCONN`: the domain is already introduced.
    IsConnected,
    /// `E2BIG`: a value or path is too large for xenstored (also a quota answer).
    TooBig,
    /// `EPERM`: operation not permitted for this domain.
    PermissionDenied,
    /// `EQUOTA`: oxenstored's quota error.
    Quota,
    /// An `XS_ERROR` whose errno name this client does not know.
    Unknown,

    /// This client already has [`MAX_IN_FLIGHT`](super::MAX_IN_FLIGHT) requests outstanding
    /// ("busy"); poll, take replies, and submit again later.
    TooManyInFlight,
    /// No reply arrived before the request's deadline.
    Timeout,
    /// The client saw a fatal protocol violation (see [`Fault`](super::Fault)); nothing more
    /// will be sent or received on this ring.
    Broken,
    /// The client has no ring yet ([`Client::attach`](super::Client::attach) not called).
    NotAttached,
    /// The encoded request would exceed [`XENSTORE_PAYLOAD_MAX`](super::XENSTORE_PAYLOAD_MAX)
    /// (xenstored would drop the whole connection).
    RequestTooLarge,
    /// A path or token is empty or contains a NUL byte, or a transaction id is missing.
    InvalidArgument,
    /// The reply's type or payload does not fit the request (counted in
    /// [`XsStats::malformed_replies`](super::XsStats::malformed_replies)).
    MalformedReply,
}

/// errno names in `xsd_errors[]` order, then oxenstored's `EQUOTA`.
const ERRNO_NAMES: [(&str, Error); 17] = [
    ("EINVAL", Error::Invalid),
    ("EACCES", Error::AccessDenied),
    ("EEXIST", Error::Exists),
    ("EISDIR", Error::IsDirectory),
    ("ENOENT", Error::NotFound),
    ("ENOMEM", Error::NoMemory),
    ("ENOSPC", Error::NoSpace),
    ("EIO", Error::Io),
    ("ENOTEMPTY", Error::NotEmpty),
    ("ENOSYS", Error::NotSupported),
    ("EROFS", Error::ReadOnly),
    ("EBUSY", Error::Busy),
    ("EAGAIN", Error::Again),
    ("EISCONN", Error::IsConnected),
    ("E2BIG", Error::TooBig),
    ("EPERM", Error::PermissionDenied),
    ("EQUOTA", Error::Quota),
];

impl Error {
    /// Maps the payload of an `XS_ERROR` reply (`"EAGAIN\0"`; a missing NUL is tolerated) to
    /// its error; names this client does not know give [`Error::Unknown`].
    pub fn from_errno_name(payload: &[u8]) -> Error {
        let name = payload.strip_suffix(b"\0").unwrap_or(payload);
        ERRNO_NAMES.iter().find(|(n, _)| n.as_bytes() == name).map_or(Error::Unknown, |&(_, e)| e)
    }

    /// The errno name xenstored uses for this error, if it is one of xenstored's.
    pub fn errno_name(self) -> Option<&'static str> {
        ERRNO_NAMES.iter().find(|&&(_, e)| e == self).map(|&(n, _)| n)
    }

    /// True for the answers by which xenstored refuses to take on more for this domain
    /// (`ENOSPC`, `EQUOTA`, `E2BIG`): refuse the newcomer cleanly rather than retry.
    pub fn is_quota(self) -> bool {
        matches!(self, Error::NoSpace | Error::Quota | Error::TooBig)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = self.errno_name() {
            return write!(f, "xenstored: {name}");
        }
        let what = match self {
            Error::Unknown => "xenstored: unknown errno",
            Error::TooManyInFlight => "xenstore: too many requests in flight",
            Error::Timeout => "xenstore: request timed out",
            Error::Broken => "xenstore: ring broken by a protocol violation",
            Error::NotAttached => "xenstore: no ring attached",
            Error::RequestTooLarge => "xenstore: request payload over 4096 bytes",
            Error::InvalidArgument => "xenstore: invalid path, token or transaction",
            _ => "xenstore: malformed reply",
        };
        f.write_str(what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_errno_name_round_trips() {
        for (name, err) in ERRNO_NAMES {
            let mut payload = name.as_bytes().to_vec();
            payload.push(0);
            assert_eq!(Error::from_errno_name(&payload), err);
            assert_eq!(Error::from_errno_name(name.as_bytes()), err, "NUL is optional");
            assert_eq!(err.errno_name(), Some(name));
        }
        assert_eq!(Error::from_errno_name(b"EWHATEVER\0"), Error::Unknown);
        assert_eq!(Error::from_errno_name(b""), Error::Unknown);
        assert_eq!(Error::Timeout.errno_name(), None);
        assert!(Error::Quota.is_quota() && Error::NoSpace.is_quota() && !Error::Again.is_quota());
    }
}
