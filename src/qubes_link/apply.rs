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
use qubes::config::{Config, Downstream, Missing, RulesFailure, Uplink};
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
    /// Our uplink address and gateway; the gateway is looked for again.
    Uplink(UplinkAddress),
    /// The gateway address clients use.
    ClientsGateway(Ipv4Addr),
    /// Keys QubesDB must still give (after the sync, or when one went away): without an uplink
    /// address nothing is forwarded; without the clients' gateway address nothing answers as
    /// the gateway.
    Waiting(Missing),
    /// After a full sync every connected client's rules were read again from the store (a
    /// client dom0 no longer gives rules to is blocked; those with rules get their own
    /// [`Applied::Client`] line from the commits that follow).
    Resynced {
        /// Clients whose rules are in force.
        in_force: usize,
        /// Clients blocked (no rules, lost or unparsable rules).
        blocked: usize,
        /// Required keys still missing.
        missing: Missing,
    },
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
            Self::Uplink(a) => write!(
                f,
                "uplink: address {}/{} gateway {} from QubesDB; looking for the gateway",
                a.ip, a.prefix_len, a.gateway
            ),
            Self::ClientsGateway(g) => write!(f, "clients: gateway address {g} from QubesDB"),
            Self::Waiting(m) => waiting(f, m),
            Self::Resynced { in_force, blocked, missing } => {
                write!(
                    f,
                    "firewall: QubesDB synced: connected clients' rules read again, {in_force} in force, {blocked} blocked"
                )?;
                if missing.is_empty() {
                    return Ok(());
                }
                f.write_str("; ")?;
                waiting(f, missing)
            }
            Self::Client { ip, rules } => write!(f, "firewall: client {ip}: {rules}"),
        }
    }
}

fn waiting(f: &mut fmt::Formatter<'_>, m: &Missing) -> fmt::Result {
    f.write_str("config: waiting for QubesDB")?;
    for key in m.keys() {
        write!(f, " {key}")?;
    }
    if m.ip || m.gateway { f.write_str(" (nothing is forwarded meanwhile)") } else { Ok(()) }
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
            match (to.host.set_address(addr, now_ns), addr) {
                (false, _) => Applied::Nothing,
                (true, Some(a)) => Applied::Uplink(a),
                (true, None) => Applied::Waiting(config.missing(store)),
            }
        }
        QubesEvent::Downstream(d) => {
            let gateway = d.as_ref().map(|d: &Downstream| d.gateway);
            if gateway == to.down.gateway() {
                return Applied::Nothing;
            }
            to.down.set_gateway(gateway);
            to.fw.set_downlink(gateway.map(DownlinkConfig::qubes));
            gateway.map_or_else(|| Applied::Waiting(config.missing(store)), Applied::ClientsGateway)
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
        QubesEvent::DbSynced { .. } => {
            let (mut in_force, mut blocked) = (0, 0);
            for id in (0..C).filter_map(|i| ClientId::new(i as u16)) {
                let Some(ip) = to.fw.client(id).map(|c| c.addr) else { continue };
                match client_rules(config, store, to.fw, id, ip) {
                    ClientRules::InForce { .. } => in_force += 1,
                    ClientRules::Invalid(_) | ClientRules::Blocked(_) => blocked += 1,
                    ClientRules::Kept(_) => {}
                }
            }
            Applied::Resynced { in_force, blocked, missing: config.missing(store) }
        }
        _ => Applied::Nothing,
    }
}

#[cfg(test)]
mod tests;
