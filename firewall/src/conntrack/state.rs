//! Per-flow state: the TCP state machine (after Linux `nf_conntrack_proto_tcp`, without
//! sequence-window checks) and the replied bit of UDP and ICMP.

use netstack::tcp::flags;

/// Which way a packet goes relative to the flow: `Original` is the client's direction (the
/// one that opened the flow), `Reply` the remote's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    /// Client → outside.
    Original,
    /// Outside → client.
    Reply,
}

/// TCP connection states (Linux's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcpState {
    /// SYN from the client seen.
    SynSent,
    /// SYN-ACK (or a crossing SYN) from the remote seen.
    SynRecv,
    /// The client acknowledged the SYN-ACK.
    Established,
    /// `closer` sent FIN; the other side has not acknowledged it yet.
    FinWait {
        /// Who sent the first FIN.
        closer: Dir,
    },
    /// The other side acknowledged `closer`'s FIN but is still open.
    CloseWait {
        /// Who sent the first FIN.
        closer: Dir,
    },
    /// Both sides sent FIN; waiting for the last ACK from `closer`.
    LastAck {
        /// Who sent the first FIN.
        closer: Dir,
    },
    /// Closed both ways.
    TimeWait,
    /// Reset.
    Close,
}

impl TcpState {
    /// The state after a packet with TCP `f`lags going `dir`. A SYN from the client in
    /// `TimeWait` or `Close` reopens the flow (port reuse), as Linux allows.
    #[must_use]
    #[inline(always)]
    pub const fn next(self, dir: Dir, f: u16) -> TcpState {
        let syn = f & flags::SYN != 0;
        let ack = f & flags::ACK != 0;
        let fin = f & flags::FIN != 0;
        if f & flags::RST != 0 {
            return TcpState::Close;
        }
        let orig = matches!(dir, Dir::Original);
        match self {
            TcpState::SynSent => {
                if !orig && syn {
                    TcpState::SynRecv
                } else {
                    self
                }
            }
            TcpState::SynRecv => {
                if fin {
                    TcpState::FinWait { closer: dir }
                } else if orig && ack && !syn {
                    TcpState::Established
                } else {
                    self
                }
            }
            TcpState::Established => {
                if fin {
                    TcpState::FinWait { closer: dir }
                } else {
                    self
                }
            }
            TcpState::FinWait { closer } => {
                if same(dir, closer) {
                    self
                } else if fin {
                    TcpState::LastAck { closer }
                } else if ack {
                    TcpState::CloseWait { closer }
                } else {
                    self
                }
            }
            TcpState::CloseWait { closer } => {
                if !same(dir, closer) && fin {
                    TcpState::LastAck { closer }
                } else {
                    self
                }
            }
            TcpState::LastAck { closer } => {
                if same(dir, closer) && ack && !fin {
                    TcpState::TimeWait
                } else {
                    self
                }
            }
            TcpState::TimeWait | TcpState::Close => {
                if orig && syn && !ack {
                    TcpState::SynSent
                } else {
                    self
                }
            }
        }
    }
}

const fn same(a: Dir, b: Dir) -> bool {
    matches!((a, b), (Dir::Original, Dir::Original) | (Dir::Reply, Dir::Reply))
}

/// The state of a tracked flow.
///
/// The explicit tags make a free table entry (`Udp { replied: false }`) all zero bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FlowState {
    /// A TCP connection.
    Tcp(TcpState) = 2,
    /// A UDP flow; `replied` once the remote answered.
    Udp {
        /// A reply was seen.
        replied: bool,
    } = 0,
    /// An ICMP echo identifier; `replied` once an echo reply came back.
    Icmp {
        /// A reply was seen.
        replied: bool,
    } = 1,
}

impl FlowState {
    /// The state after a packet going `dir` (`tcp_flags` is ignored for UDP and ICMP).
    #[must_use]
    #[inline(always)]
    pub const fn next(self, dir: Dir, tcp_flags: u16) -> FlowState {
        let reply = matches!(dir, Dir::Reply);
        match self {
            FlowState::Tcp(s) => FlowState::Tcp(s.next(dir, tcp_flags)),
            FlowState::Udp { replied } => FlowState::Udp { replied: replied || reply },
            FlowState::Icmp { replied } => FlowState::Icmp { replied: replied || reply },
        }
    }

    /// Whether the flow may be evicted to make room for a new one: it never got an answer
    /// (TCP before the handshake completed, UDP and ICMP before a reply), or it is a TCP
    /// connection that is over (`TimeWait`, `Close`). Evictable flows are cheap to lose: the
    /// client retransmits or has already finished.
    #[must_use]
    #[inline(always)]
    pub const fn evictable(self) -> bool {
        match self {
            FlowState::Tcp(s) => {
                matches!(s, TcpState::SynSent | TcpState::SynRecv | TcpState::TimeWait | TcpState::Close)
            }
            FlowState::Udp { replied } | FlowState::Icmp { replied } => !replied,
        }
    }
}
