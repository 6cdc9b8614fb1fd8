//! Puts QubesDB's configuration in force: our uplink address, gateway and DNS servers, the
//! gateway address clients use, and each connected client's rule set.
//!
//! The QubesDB store stays the one source of truth: a client's rules are read from it when
//! dom0 commits them ([`QubesEvent::RulesCommitted`] and friends) and again when its vif comes
//! up ([`client_rules`]), so a client that connects before or after its commit gets the same
//! rules. What cannot be put in force fails closed: a client without committed rules, with
//! rules that do not parse or that did not fit the store has all its traffic dropped.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr};

use firewall::conntrack::ClientId;
use firewall::forward::{ConfigError, DownlinkConfig, Firewall};
use firewall::rules::RuleSetError;
use qubes::config::{Config, Downstream, RulesFailure, Uplink};
use qubes::qubesdb::store::Store;

use super::QubesEvent;
use crate::downlink::Downlink;
use crate::uplink::{UplinkAddress, UplinkHost};

/// What the configuration is applied to.
pub struct Targets<'a, const N: usize, const B: usize, const C: usize> {
    /// The firewall engine (rules, DNS servers, the clients' gateway).
    pub fw: &'a mut Firewall<N, B, C>,
    /// Our presence on the uplink (address, gateway).
    pub host: &'a mut UplinkHost,
    /// The client links (the gateway address answered there).
    pub down: &'a mut Downlink,
}

/// What became of a connected client's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientRules {
    /// The committed rules are in force; flows they forbid were removed.
    InForce {
        /// Numbered rules.
        rules: usize,
        /// Tracked flows removed.
        flows_removed: u32,
    },
    /// The committed rules do not parse: all the client's traffic is dropped.
    Invalid(RuleSetError),
    /// Nothing to put in force (no commit, rules lost to a full store): all the client's
    /// traffic is dropped.
    Blocked(RulesFailure),
    /// Not now (QubesDB not synchronised, an update in progress): the rules in force stay.
    Kept(RulesFailure),
}

impl fmt::Display for ClientRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InForce { rules, flows_removed } => {
                write!(f, "{rules} rules in force, {flows_removed} flows removed")
            }
            Self::Invalid(e) => write!(f, "rules do not parse ({e}): all its traffic is dropped"),
            Self::Blocked(why) => write!(f, "blocked ({why}): all its traffic is dropped"),
            Self::Kept(why) => write!(f, "rules in force kept ({why})"),
        }
    }
}

/// Puts client `id`'s (address `ip`) committed rules from the store in force in the engine,
/// or fails it closed.
pub fn client_rules<const E: usize, const SB: usize, const N: usize, const B: usize, const C: usize>(
    config: &Config,
    store: &Store<E, SB>,
    fw: &mut Firewall<N, B, C>,
    id: ClientId,
    ip: Ipv4Addr,
) -> ClientRules {
    let committed = config.with_committed_rules(store, IpAddr::V4(ip), |entries| fw.commit_rules(id, entries));
    match committed {
        Ok(Ok(flows_removed)) => {
            let rules = fw.rules(id).and_then(|r| r.active()).map_or(0, |s| s.rules().len());
            ClientRules::InForce { rules, flows_removed }
        }
        Ok(Err(ConfigError::Rules(e))) => ClientRules::Invalid(e),
        // Not a present client (cannot happen: looked up by the caller): nothing in force.
        Ok(Err(_)) => ClientRules::Blocked(RulesFailure::NotCommitted),
        Err(f @ (RulesFailure::NotSynced | RulesFailure::UpdateInProgress)) => ClientRules::Kept(f),
        Err(f) => {
            fw.block_client(id);
            ClientRules::Blocked(f)
        }
    }
}

/// What [`apply`] did, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Nothing to do for this event.
    Nothing,
    /// Our uplink address and gateway (`None`: incomplete, forwarding stops); the gateway is
    /// looked for again.
    Uplink(Option<UplinkAddress>),
    /// The gateway address clients use.
    ClientsGateway(Option<Ipv4Addr>),
    /// A connected client's rules.
    Client {
        /// Its address.
        ip: Ipv4Addr,
        /// What became of its rules.
        rules: ClientRules,
    },
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Nothing => Ok(()),
            Self::Uplink(Some(a)) => write!(
                f,
                "uplink: address {}/{} gateway {} from QubesDB; looking for the gateway",
                a.ip, a.prefix_len, a.gateway
            ),
            Self::Uplink(None) => f.write_str("uplink: no address from QubesDB; nothing is forwarded"),
            Self::ClientsGateway(Some(g)) => write!(f, "clients: gateway address {g} from QubesDB"),
            Self::ClientsGateway(None) => f.write_str("clients: no gateway address from QubesDB"),
            Self::Client { ip, rules } => write!(f, "firewall: client {ip}: {rules}"),
        }
    }
}

/// The uplink address QubesDB describes (prefix length from the netmask's leading ones).
#[must_use]
pub fn uplink_address(u: &Uplink) -> UplinkAddress {
    UplinkAddress { ip: u.ip, prefix_len: u.netmask.to_bits().leading_ones() as u8, gateway: u.gateway }
}

/// Acts on one event of the link (`now_ns` for the uplink's ARP timer). Events that only
/// inform (sessions, qrexec, ...) are [`Applied::Nothing`].
pub fn apply<const E: usize, const SB: usize, const N: usize, const B: usize, const C: usize>(
    ev: &QubesEvent,
    config: &Config,
    store: &Store<E, SB>,
    to: &mut Targets<'_, N, B, C>,
    now_ns: u64,
) -> Applied {
    match ev {
        QubesEvent::Uplink(u) => {
            let addr = u.as_ref().map(uplink_address);
            to.fw.set_dns_servers(u.and_then(|u| u.primary_dns), u.and_then(|u| u.secondary_dns));
            if to.host.set_address(addr, now_ns) { Applied::Uplink(addr) } else { Applied::Nothing }
        }
        QubesEvent::Downstream(d) => {
            let gateway = d.as_ref().map(|d: &Downstream| d.gateway);
            if gateway == to.down.gateway() {
                return Applied::Nothing;
            }
            to.down.set_gateway(gateway);
            to.fw.set_downlink(gateway.map(DownlinkConfig::qubes));
            Applied::ClientsGateway(gateway)
        }
        QubesEvent::RulesCommitted { client, .. }
        | QubesEvent::RulesFailed { client, .. }
        | QubesEvent::RulesWithdrawn(client) => {
            // IPv6 is not forwarded at all; an address not connected gets its rules when its
            // vif comes up.
            let IpAddr::V4(ip) = *client else { return Applied::Nothing };
            let Some(id) = to.fw.client_by_addr(ip) else { return Applied::Nothing };
            Applied::Client { ip, rules: client_rules(config, store, to.fw, id, ip) }
        }
        _ => Applied::Nothing,
    }
}

#[cfg(test)]
mod tests;
