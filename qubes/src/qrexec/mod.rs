//! qrexec: the agent dom0's `qrexec-daemon` talks to.
//!
//! - [`wire`]: the message format (8-byte header, payloads, byte-exact).
//! - [`cmdline`]: the `user:QUBESRPC service source` command line.
//! - [`agent`]: the control channel (vchan server, port 512) and the request table.
//! - [`data`]: one request's data connection and the services the firewall answers
//!   (`qubes.WaitForSession`, `qubes.SetDateTime`; everything else exits 1).
//! - [`time`]: the `date -Iseconds` text `qubes.SetDateTime` reads.

pub mod agent;
pub mod cmdline;
pub mod data;
pub mod time;
pub mod wire;

pub use agent::{Agent, AgentError, AgentEvent, RequestId};
pub use data::{DataError, DataEvent, Service};

#[cfg(test)]
mod tests;
