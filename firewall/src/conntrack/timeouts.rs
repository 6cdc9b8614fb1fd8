//! How long a flow lives without traffic, per protocol and state (Linux's defaults).

use super::state::{FlowState, TcpState};

const SEC: u64 = 1_000_000_000;

/// Idle timeouts in nanoseconds. A flow's deadline is pushed to `now + timeout(state)` by
/// every packet that belongs to it; [`Timeouts::LINUX`] has Linux's `nf_conntrack` defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP, SYN seen from the client only (Linux `tcp_timeout_syn_sent`, 120 s).
    pub tcp_syn_sent: u64,
    /// TCP, SYN-ACK seen (`tcp_timeout_syn_recv`, 60 s).
    pub tcp_syn_recv: u64,
    /// TCP, handshake complete (`tcp_timeout_established`, 5 days).
    pub tcp_established: u64,
    /// TCP, one side sent FIN (`tcp_timeout_fin_wait`, 120 s).
    pub tcp_fin_wait: u64,
    /// TCP, the FIN was acknowledged, the other side still open (`tcp_timeout_close_wait`, 60 s).
    pub tcp_close_wait: u64,
    /// TCP, both sides sent FIN (`tcp_timeout_last_ack`, 30 s).
    pub tcp_last_ack: u64,
    /// TCP, closed both ways (`tcp_timeout_time_wait`, 120 s).
    pub tcp_time_wait: u64,
    /// TCP, reset (`tcp_timeout_close`, 10 s).
    pub tcp_close: u64,
    /// UDP with no reply yet (`udp_timeout`, 30 s).
    pub udp_unreplied: u64,
    /// UDP once a reply was seen (`udp_timeout_stream`, 120 s).
    pub udp_replied: u64,
    /// ICMP echo identifiers (`icmp_timeout`, 30 s).
    pub icmp: u64,
}

impl Timeouts {
    /// Linux's defaults.
    pub const LINUX: Timeouts = Timeouts {
        tcp_syn_sent: 120 * SEC,
        tcp_syn_recv: 60 * SEC,
        tcp_established: 5 * 24 * 3600 * SEC,
        tcp_fin_wait: 120 * SEC,
        tcp_close_wait: 60 * SEC,
        tcp_last_ack: 30 * SEC,
        tcp_time_wait: 120 * SEC,
        tcp_close: 10 * SEC,
        udp_unreplied: 30 * SEC,
        udp_replied: 120 * SEC,
        icmp: 30 * SEC,
    };

    /// The idle timeout of a flow in `state`.
    #[must_use]
    #[inline(always)]
    pub const fn of(&self, state: FlowState) -> u64 {
        match state {
            FlowState::Tcp(s) => match s {
                TcpState::SynSent => self.tcp_syn_sent,
                TcpState::SynRecv => self.tcp_syn_recv,
                TcpState::Established => self.tcp_established,
                TcpState::FinWait { .. } => self.tcp_fin_wait,
                TcpState::CloseWait { .. } => self.tcp_close_wait,
                TcpState::LastAck { .. } => self.tcp_last_ack,
                TcpState::TimeWait => self.tcp_time_wait,
                TcpState::Close => self.tcp_close,
            },
            FlowState::Udp { replied: false } => self.udp_unreplied,
            FlowState::Udp { replied: true } => self.udp_replied,
            FlowState::Icmp { .. } => self.icmp,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Self::LINUX
    }
}
