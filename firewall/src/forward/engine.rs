//! [`Firewall`]: configuration, client table and the per-frame pipeline.

use core::net::{IpAddr, Ipv4Addr};

use heapless::Vec;
use netstack::builder::{self, Icmpv4Error};
use netstack::ethernet::{self, EtherType, EthernetAddress};
use netstack::icmpv4::{self, DstUnreachable, TimeExceeded};
use netstack::ip::IpProtocol;
use netstack::{ipv4, udp};

use super::fragment::{self, Inserted, Reassembly};
use super::ratelimit::{IcmpLimiter, IcmpLimits};
use super::{ChecksumState, Counters, Decision, DropCause, Egress, FragmentDrop, Ingress, is_unicast};
use crate::conntrack::tuple::{Parsed, Untrackable};
use crate::conntrack::{ClientId, Conntrack, Inbound, Outbound};
use crate::resolver::{ClientHosts, HostMap, Resolver};
use crate::rules::{ClientRules, DropAnswer, Family, MatchContext, RuleSetError};

const ETH: usize = ethernet::HEADER_LEN;

/// The uplink as QubesDB describes it (`/qubes-ip`, `/qubes-netmask`, `/qubes-gateway`) plus
/// the link details the appliance learns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UplinkConfig {
    /// Our address on the uplink (the NAT address).
    pub addr: Ipv4Addr,
    /// Its netmask (Qubes: 255.255.255.255).
    pub netmask: Ipv4Addr,
    /// The next hop (`sys-net`).
    pub gateway: Ipv4Addr,
    /// Our MAC on the uplink.
    pub mac: EthernetAddress,
    /// The gateway's MAC (from ARP; `fe:ff:ff:ff:ff:ff` when it does not answer).
    pub gateway_mac: EthernetAddress,
    /// The uplink MTU.
    pub mtu: u16,
}

/// Our side of every client link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DownlinkConfig {
    /// The address clients use as gateway (`/qubes-netvm-gateway`).
    pub gateway: Ipv4Addr,
    /// Our MAC on client links (`fe:ff:ff:ff:ff:ff`, as Linux netback).
    pub mac: EthernetAddress,
    /// The client links' MTU.
    pub mtu: u16,
}

impl DownlinkConfig {
    /// Qubes' defaults with the given gateway address: MAC `fe:ff:ff:ff:ff:ff`, MTU 1500.
    #[must_use]
    pub const fn qubes(gateway: Ipv4Addr) -> Self {
        Self { gateway, mac: EthernetAddress([0xfe, 0xff, 0xff, 0xff, 0xff, 0xff]), mtu: 1500 }
    }
}

/// One client (vif).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Its address (the vif's xenstore `ip`).
    pub addr: Ipv4Addr,
    /// Its MAC (the frontend's `mac`).
    pub mac: EthernetAddress,
}

/// How traffic from a client to portcullis itself is rejected (echo requests are answered,
/// other ICMP and UDP to port 68 are dropped silently either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LocalReject {
    /// ICMP host prohibited (type 3 code 10), as Linux `sys-firewall`'s input chain
    /// (`reject with icmp type host-prohibited`). The default.
    HostProhibited,
    /// ICMP port unreachable for TCP/UDP, protocol unreachable for other protocols, as a host
    /// with nothing listening.
    Unreachable,
}

/// A configuration change that was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The client id is beyond this engine's client capacity, or not configured.
    NoSuchClient,
    /// Another client already has this address.
    AddressInUse,
    /// The rule set did not parse (the client's traffic is dropped until a good commit).
    Rules(RuleSetError),
}

struct ClientSlot {
    present: bool,
    cfg: ClientConfig,
    rules: ClientRules,
    hosts: HostMap,
}

impl ClientSlot {
    const EMPTY: ClientSlot = ClientSlot {
        present: false,
        cfg: ClientConfig { addr: Ipv4Addr::UNSPECIFIED, mac: EthernetAddress::ZERO },
        rules: ClientRules::new(Family::V4),
        hosts: HostMap::new(),
    };
}

/// What is received: from where, how long, with which checksum state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rx {
    /// The interface.
    pub from: Ingress,
    /// Bytes of the frame at the start of the buffer.
    pub len: usize,
    /// Its checksum state.
    pub csum: ChecksumState,
}

/// The firewall engine: `N` tracked flows (index of `B` buckets, see [`Conntrack`]) and `C`
/// clients (ids below `C`). Build it once (`const fn new`, e.g. in a `static`), then
/// [`Firewall::rekey`] it from the CSPRNG and configure it.
pub struct Firewall<const N: usize, const B: usize, const C: usize> {
    conntrack: Conntrack<N, B>,
    uplink: Option<UplinkConfig>,
    /// `None`: [`Firewall::DEFAULT_DOWNLINK`] (kept as `None` so that a new engine is all
    /// zero bytes: its `static` lands in `.bss`, not in the image).
    downlink: Option<DownlinkConfig>,
    dns: [IpAddr; 2],
    dns_len: usize,
    clients: [ClientSlot; C],
    /// (address, client index), sorted by address.
    by_addr: Vec<(u32, u16), C>,
    local_reject: LocalReject,
    limiter: IcmpLimiter,
    reassembly: Reassembly,
    resolver: Resolver,
    counters: Counters,
}

impl<const N: usize, const B: usize, const C: usize> Default for Firewall<N, B, C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize, const B: usize, const C: usize> Firewall<N, B, C> {
    /// Our side of the client links until [`Firewall::set_downlink`]: Qubes' defaults with
    /// gateway 0.0.0.0.
    pub const DEFAULT_DOWNLINK: DownlinkConfig = DownlinkConfig::qubes(Ipv4Addr::UNSPECIFIED);

    /// An unconfigured engine: no uplink, no clients, gateway 0.0.0.0, all-zero hash key. Its
    /// value is all zero bytes (`tests/zero_init.rs`), so a `static` of it costs nothing in
    /// the image.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            conntrack: Conntrack::new(),
            uplink: None,
            downlink: None,
            dns: [IpAddr::V4(Ipv4Addr::UNSPECIFIED); 2],
            dns_len: 0,
            clients: [const { ClientSlot::EMPTY }; C],
            by_addr: Vec::new(),
            local_reject: LocalReject::HostProhibited,
            limiter: IcmpLimiter::new(),
            reassembly: Reassembly::new(),
            resolver: Resolver::new(),
            counters: Counters::ZERO,
        }
    }

    // ----- configuration -----

    /// Key the connection-tracking hash (forgets every flow) from the CSPRNG.
    pub fn rekey(&mut self, key: [u8; 16]) {
        self.conntrack.rekey(key);
    }

    /// Set or clear the uplink. A new uplink address forgets every flow (their translations
    /// would be wrong) and every fragment under reassembly.
    pub fn set_uplink(&mut self, uplink: Option<UplinkConfig>) {
        if self.uplink.map(|u| u.addr) != uplink.map(|u| u.addr) {
            self.reassembly.clear();
        }
        self.conntrack.set_nat_address(uplink.map(|u| u.addr));
        self.uplink = uplink;
    }

    /// The uplink.
    #[must_use]
    pub const fn uplink(&self) -> Option<&UplinkConfig> {
        self.uplink.as_ref()
    }

    /// Set our side of the client links; `None` goes back to [`Firewall::DEFAULT_DOWNLINK`]
    /// (no gateway address: nothing is answered as the gateway).
    pub fn set_downlink(&mut self, downlink: Option<DownlinkConfig>) {
        self.downlink = downlink;
    }

    /// Our side of the client links in force.
    #[must_use]
    pub const fn downlink(&self) -> DownlinkConfig {
        match self.downlink {
            Some(d) => d,
            None => Self::DEFAULT_DOWNLINK,
        }
    }

    /// The DNS servers (`/qubes-primary-dns`, `/qubes-secondary-dns`): what
    /// `specialtarget=dns` matches, and where the resolver asks.
    pub fn set_dns_servers(&mut self, primary: Option<Ipv4Addr>, secondary: Option<Ipv4Addr>) {
        self.dns_len = 0;
        for a in [primary, secondary].into_iter().flatten() {
            self.dns[self.dns_len] = IpAddr::V4(a);
            self.dns_len += 1;
        }
        self.resolver.set_servers([primary, secondary]);
    }

    /// How traffic to portcullis itself is rejected.
    pub fn set_local_reject(&mut self, how: LocalReject) {
        self.local_reject = how;
    }

    /// Replace the ICMP error rate limits.
    pub fn set_icmp_limits(&mut self, limits: IcmpLimits) {
        self.limiter.set_limits(limits);
    }

    /// The ICMP error rate limits.
    #[must_use]
    pub const fn icmp_limits(&self) -> &IcmpLimits {
        self.limiter.limits()
    }

    /// The resolver's UDP source port (choose it at random): reserved from NAT.
    pub fn set_resolver_port(&mut self, port: u16) {
        self.resolver.set_port(port);
        self.conntrack.reserve_local_ports(if port == 0 { None } else { Some((port, port)) });
    }

    /// Add (or replace) client `id`. It starts without committed rules, so its traffic is
    /// dropped until [`Firewall::commit_rules`]; any flows left under its id are flushed
    /// (disposable VMs reuse addresses).
    ///
    /// # Errors
    ///
    /// [`ConfigError::NoSuchClient`] if `id` ≥ `C`, [`ConfigError::AddressInUse`] if another
    /// client has `cfg.addr`.
    pub fn add_client(&mut self, id: ClientId, cfg: ClientConfig) -> Result<(), ConfigError> {
        let i = usize::from(id.get());
        if i >= C {
            return Err(ConfigError::NoSuchClient);
        }
        if self.client_index(cfg.addr).is_some_and(|j| j != i) {
            return Err(ConfigError::AddressInUse);
        }
        if self.clients[i].present {
            self.remove_client(id);
        }
        self.conntrack.flush_client(id);
        let key = cfg.addr.to_bits();
        let at = self.by_addr.partition_point(|&(a, _)| a < key);
        // Capacity C and at most C clients: fits.
        let _ = self.by_addr.insert(at, (key, i as u16));
        let s = &mut self.clients[i];
        s.present = true;
        s.cfg = cfg;
        s.rules.clear();
        Ok(())
    }

    /// Remove client `id`: its flows are flushed, its rules and resolver names released.
    /// Returns whether it was present.
    pub fn remove_client(&mut self, id: ClientId) -> bool {
        let i = usize::from(id.get());
        let Some(s) = self.clients.get_mut(i).filter(|s| s.present) else { return false };
        s.present = false;
        s.rules.clear();
        self.resolver.release_map(&mut s.hosts);
        let key = s.cfg.addr.to_bits();
        if let Ok(at) = self.by_addr.binary_search_by_key(&key, |&(a, _)| a) {
            self.by_addr.remove(at);
        }
        self.conntrack.flush_client(id);
        true
    }

    /// The configuration of client `id`, if present.
    #[must_use]
    pub fn client(&self, id: ClientId) -> Option<&ClientConfig> {
        self.clients.get(usize::from(id.get())).filter(|s| s.present).map(|s| &s.cfg)
    }

    /// The client with address `addr`.
    #[must_use]
    pub fn client_by_addr(&self, addr: Ipv4Addr) -> Option<ClientId> {
        self.client_index(addr).and_then(|i| ClientId::new(i as u16))
    }

    fn client_index(&self, addr: Ipv4Addr) -> Option<usize> {
        let key = addr.to_bits();
        self.by_addr.binary_search_by_key(&key, |&(a, _)| a).ok().map(|at| usize::from(self.by_addr[at].1))
    }

    /// Client `id`'s rules.
    #[must_use]
    pub fn rules(&self, id: ClientId) -> Option<&ClientRules> {
        self.clients.get(usize::from(id.get())).filter(|s| s.present).map(|s| &s.rules)
    }

    /// Replace client `id`'s (IPv4) rule set with a commit from QubesDB (the entries under
    /// `/qubes-firewall/<ip>/`), register its `dsthost` names with the resolver, and remove the
    /// client's tracked flows the new rules would not accept (Linux `qubes-firewall` deletes
    /// them from conntrack). Returns how many flows were removed.
    ///
    /// # Errors
    ///
    /// [`ConfigError::NoSuchClient`], or [`ConfigError::Rules`] if the rule set does not parse:
    /// the client's traffic is then dropped (and all its flows removed) until a good commit.
    pub fn commit_rules<'e, I>(&mut self, id: ClientId, entries: I) -> Result<u32, ConfigError>
    where
        I: IntoIterator<Item = (&'e [u8], &'e [u8])>,
    {
        let Some(s) = self.clients.get_mut(usize::from(id.get())).filter(|s| s.present) else {
            return Err(ConfigError::NoSuchClient);
        };
        let parsed = s.rules.commit(Family::V4, entries);
        // New names first, so names kept across the commit keep their addresses.
        let mut map = match s.rules.active() {
            Some(set) => self.resolver.register_rule_set(set),
            None => HostMap::new(),
        };
        core::mem::swap(&mut s.hosts, &mut map);
        self.resolver.release_map(&mut map);
        let hosts = ClientHosts { resolver: &self.resolver, map: &s.hosts };
        let ctx = MatchContext { dns_servers: &self.dns[..self.dns_len], hosts: &hosts };
        let removed = self.conntrack.apply_rules(id, &s.rules, &ctx);
        parsed.map(|()| removed).map_err(ConfigError::Rules)
    }

    /// Drop all of client `id`'s traffic until its next good [`Firewall::commit_rules`] (fail
    /// closed: dom0 withdrew its rules, or they were lost): its rules and resolver names are
    /// released and its tracked flows removed. Returns how many flows were removed, or `None`
    /// if `id` is not a present client.
    pub fn block_client(&mut self, id: ClientId) -> Option<u32> {
        let s = self.clients.get_mut(usize::from(id.get())).filter(|s| s.present)?;
        s.rules.clear();
        self.resolver.release_map(&mut s.hosts);
        let before = self.conntrack.client_len(id);
        self.conntrack.flush_client(id);
        Some(before.saturating_sub(self.conntrack.client_len(id)) as u32)
    }

    /// Connection tracking (read-only: counters, sizes).
    #[must_use]
    pub const fn conntrack(&self) -> &Conntrack<N, B> {
        &self.conntrack
    }

    /// Connection tracking, for tuning (timeouts, quota).
    pub fn conntrack_mut(&mut self) -> &mut Conntrack<N, B> {
        &mut self.conntrack
    }

    /// The resolver (read-only).
    #[must_use]
    pub const fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// The resolver, for tuning its timers.
    pub fn resolver_mut(&mut self) -> &mut Resolver {
        &mut self.resolver
    }

    /// The counters.
    #[must_use]
    pub const fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Datagrams under reassembly.
    #[must_use]
    pub fn fragments_pending(&self) -> usize {
        self.reassembly.len()
    }

    // ----- timers -----

    /// Expire flows (examining at most `budget` table slots) and timed-out reassemblies.
    pub fn expire(&mut self, now: u64, budget: usize) {
        self.conntrack.expire(now, budget);
        let n = self.reassembly.expire(now);
        self.counters.drops[DropCause::Fragment(FragmentDrop::Timeout).index()] += u64::from(n);
    }

    /// The next DNS query of the resolver as a frame for the uplink, written into `out`;
    /// call until `None`. See [`Resolver::poll`].
    pub fn poll_resolver(&mut self, now: u64, out: &mut [u8], rng: &mut impl FnMut() -> u32) -> Option<usize> {
        let up = self.uplink?;
        self.resolver.poll(now, out, up.mac, up.gateway_mac, up.addr, rng)
    }

    // ----- the pipeline -----

    /// Process the frame `buf[..rx.len]` (a private copy; `buf` is the whole slot, which
    /// reassembly may fill up to [`crate::config::MAX_REASSEMBLED`] + 14 bytes) received at
    /// `now` (ns, monotonic). `reply` receives an answer frame when the decision is
    /// [`Decision::Reply`] (give a 4 KiB slot). `rng` is the CSPRNG (NAT ports).
    pub fn process(
        &mut self,
        rx: Rx,
        buf: &mut [u8],
        reply: &mut [u8],
        now: u64,
        rng: &mut impl FnMut() -> u32,
    ) -> Decision {
        let d = self.decide(rx, buf, reply, now, rng);
        self.counters.count(&d);
        d
    }

    fn decide(
        &mut self,
        rx: Rx,
        buf: &mut [u8],
        reply: &mut [u8],
        now: u64,
        rng: &mut impl FnMut() -> u32,
    ) -> Decision {
        let len = rx.len.min(buf.len());
        // The frame's length, not the slot's: a runt in a whole slot is malformed too.
        let Some(hdr) = buf[..len].get(..ETH) else { return Decision::Drop(DropCause::Malformed) };
        match EtherType::from(u16::from_be_bytes([hdr[12], hdr[13]])) {
            EtherType::Ipv4 => {}
            EtherType::Ipv6 => return Decision::Drop(DropCause::Ipv6),
            _ => return Decision::Drop(DropCause::NotIpv4),
        }
        let link_dst = EthernetAddress([hdr[0], hdr[1], hdr[2], hdr[3], hdr[4], hdr[5]]);
        let Some(meta) = Meta::parse(&buf[ETH..len]) else { return Decision::Drop(DropCause::Malformed) };
        if rx.csum == ChecksumState::PartialPseudoHeader
            && (meta.fragment || !matches!(meta.proto, IpProtocol::Tcp | IpProtocol::Udp))
        {
            return Decision::Drop(DropCause::BadChecksumState);
        }
        match rx.from {
            Ingress::Client(id) => self.client_frame(id, meta, link_dst, rx.csum, buf, reply, now, rng),
            Ingress::Uplink => self.uplink_frame(meta, link_dst, rx.csum, buf, reply, now),
        }
    }

    /// Store a fragment; when it completes its datagram, rebuild it after the Ethernet header.
    fn reassemble(&mut self, meta: Meta, buf: &mut [u8], now: u64) -> Result<Meta, Decision> {
        let end = ETH + meta.total;
        match self.reassembly.insert(&buf[ETH..end], now) {
            Err(why) => Err(Decision::Drop(DropCause::Fragment(why))),
            Ok(Inserted::Held) => Err(Decision::Held),
            Ok(Inserted::Complete(slot)) => {
                let Some(n) = self.reassembly.take(slot, &mut buf[ETH..]) else {
                    return Err(Decision::Drop(DropCause::Fragment(FragmentDrop::TooBig)));
                };
                self.counters.reassembled += 1;
                Meta::parse(&buf[ETH..ETH + n]).ok_or(Decision::Drop(DropCause::Malformed))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn client_frame(
        &mut self,
        id: ClientId,
        mut meta: Meta,
        link_dst: EthernetAddress,
        mut csum: ChecksumState,
        buf: &mut [u8],
        reply: &mut [u8],
        now: u64,
        rng: &mut impl FnMut() -> u32,
    ) -> Decision {
        let ci = usize::from(id.get());
        let Some(client) = self.clients.get(ci).filter(|s| s.present) else {
            return Decision::Drop(DropCause::UnknownClient);
        };
        if meta.src != client.cfg.addr {
            return Decision::Drop(DropCause::Spoofed);
        }
        let dst = meta.dst;
        let local = dst == self.downlink().gateway || self.uplink.is_some_and(|u| u.addr == dst);
        if !local {
            if !is_unicast(dst, self.uplink.as_ref()) {
                return Decision::Drop(DropCause::NotUnicast);
            }
            if self.client_index(dst).is_some() {
                return Decision::Drop(DropCause::ClientToClient);
            }
        }
        if meta.fragment {
            meta = match self.reassemble(meta, buf, now) {
                Ok(m) => m,
                Err(d) => return d,
            };
            csum = ChecksumState::Complete;
        }
        let end = ETH + meta.total;
        let to = Egress::Client(id);
        if local {
            return self.local(id, meta, link_dst, buf, reply, now);
        }
        // Borrowed, not copied: the fields are read where needed.
        let Some(up) = self.uplink.as_ref() else { return Decision::Drop(DropCause::NoUplink) };
        if meta.ttl <= 1 {
            let kind = Icmpv4Error::TimeExceeded(TimeExceeded::TtlExpired);
            return self.icmp_error(to, kind, &buf[ETH..end], link_dst, DropCause::TtlExpired, reply, now);
        }
        let too_big = meta.total > usize::from(up.mtu);
        if too_big && meta.dont_frag {
            let kind = Icmpv4Error::FragRequired { mtu: up.mtu };
            return self.icmp_error(to, kind, &buf[ETH..end], link_dst, DropCause::TooBig, reply, now);
        }
        if too_big && fragment::fragment_count(meta.total, meta.header_len, up.mtu).is_none() {
            return Decision::Drop(DropCause::CannotFragment);
        }
        let blank = csum == ChecksumState::PartialPseudoHeader;
        let parsed = meta.conntrack_view(&buf[ETH..end]);
        let (s, resolver, dns) = (&self.clients[ci], &self.resolver, &self.dns[..self.dns_len]);
        // The rules' context is built only for a new flow (the closure), not per packet.
        let decide = |f: &_| {
            let hosts = ClientHosts { resolver, map: &s.hosts };
            s.rules.evaluate(f, &MatchContext { dns_servers: dns, hosts: &hosts })
        };
        let out = self.conntrack.outbound_parsed(id, &mut buf[ETH..end], &parsed, blank, now, rng, decide);
        match out {
            Outbound::Forward { .. } => {
                decrement_ttl(&mut buf[ETH..end]);
                set_macs(buf, up.mac, up.gateway_mac);
                Self::emit(Egress::Uplink, buf, end, csum, up.mtu)
            }
            Outbound::Drop(why) => {
                let cause = DropCause::Rules(why);
                if why.answer() == DropAnswer::AdminProhibited {
                    let kind = Icmpv4Error::AdminProhibited;
                    self.icmp_error(to, kind, &buf[ETH..end], link_dst, cause, reply, now)
                } else {
                    Decision::Drop(cause)
                }
            }
            Outbound::Refused(r) => Decision::Drop(DropCause::Refused(r)),
            Outbound::Invalid(i) => Decision::Drop(DropCause::Invalid(i)),
        }
    }

    /// A frame ready for `to` (Ethernet header set): forward it, or hand it back for
    /// fragmenting if it is larger than `mtu` (the callers checked it may be fragmented).
    #[inline(always)]
    fn emit(to: Egress, buf: &mut [u8], end: usize, csum: ChecksumState, mtu: u16) -> Decision {
        if end - ETH <= usize::from(mtu) {
            return Decision::Forward { to, len: end, csum };
        }
        Self::emit_oversize(to, buf, end, csum, mtu)
    }

    /// [`Firewall::emit`] for a datagram larger than `mtu`: fragmenting is the exception.
    #[cold]
    #[inline(never)]
    fn emit_oversize(to: Egress, buf: &mut [u8], end: usize, csum: ChecksumState, mtu: u16) -> Decision {
        let ip_len = end - ETH;
        if csum == ChecksumState::PartialPseudoHeader {
            fragment::complete_checksum(&mut buf[ETH..end]);
        }
        match fragment::fragment_count(ip_len, ipv4::Packet::new_unchecked(&buf[ETH..end]).header_len(), mtu) {
            Some(count) => Decision::Fragment { to, len: end, mtu, count },
            None => Decision::Drop(DropCause::CannotFragment),
        }
    }

    /// Traffic from client `id` to portcullis itself.
    fn local(
        &mut self,
        id: ClientId,
        meta: Meta,
        link_dst: EthernetAddress,
        buf: &[u8],
        reply: &mut [u8],
        now: u64,
    ) -> Decision {
        let ip = &buf[ETH..ETH + meta.total];
        let l4 = &ip[meta.header_len..];
        let to = Egress::Client(id);
        let kind = match meta.proto {
            IpProtocol::Icmp => {
                if l4.first().map(|&t| icmpv4::Message::from(t)) == Some(icmpv4::Message::EchoRequest) {
                    let mac = self.clients[usize::from(id.get())].cfg.mac;
                    return match builder::icmpv4_echo_reply(reply, self.downlink().mac, mac, ip) {
                        Ok(len) => Decision::Reply { to, len, dropped: None },
                        Err(_) => Decision::Drop(DropCause::Malformed),
                    };
                }
                return Decision::Drop(DropCause::LocalIgnored);
            }
            IpProtocol::Udp if l4.get(2..4) == Some(&68u16.to_be_bytes()[..]) => {
                return Decision::Drop(DropCause::LocalIgnored);
            }
            IpProtocol::Tcp | IpProtocol::Udp if self.local_reject == LocalReject::Unreachable => {
                Icmpv4Error::DstUnreachable(DstUnreachable::PortUnreachable)
            }
            _ if self.local_reject == LocalReject::Unreachable => {
                Icmpv4Error::DstUnreachable(DstUnreachable::ProtoUnreachable)
            }
            _ => Icmpv4Error::DstUnreachable(DstUnreachable::HostProhibited),
        };
        self.icmp_error(to, kind, ip, link_dst, DropCause::LocalRejected, reply, now)
    }

    #[allow(clippy::too_many_arguments)]
    fn uplink_frame(
        &mut self,
        mut meta: Meta,
        link_dst: EthernetAddress,
        mut csum: ChecksumState,
        buf: &mut [u8],
        reply: &mut [u8],
        now: u64,
    ) -> Decision {
        let Some(up) = self.uplink else { return Decision::Drop(DropCause::NoUplink) };
        if self.client_index(meta.src).is_some() {
            return Decision::Drop(DropCause::SpoofedFromUplink);
        }
        if meta.dst != up.addr {
            return Decision::Drop(if self.client_index(meta.dst).is_some() {
                DropCause::NotTracked
            } else {
                DropCause::NotForUs
            });
        }
        if meta.fragment {
            meta = match self.reassemble(meta, buf, now) {
                Ok(m) => m,
                Err(d) => return d,
            };
            csum = ChecksumState::Complete;
        }
        let end = ETH + meta.total;
        if meta.proto == IpProtocol::Udp
            && let Some(d) = self.resolver_reply(meta, csum, &buf[ETH..end], now)
        {
            return d;
        }
        if meta.ttl <= 1 {
            // We are the destination as far as the outside knows (NAT): no time-exceeded.
            return Decision::Drop(DropCause::TtlExpired);
        }
        let mtu = self.downlink().mtu;
        let too_big = meta.total > usize::from(mtu);
        if too_big && (meta.dont_frag || fragment::fragment_count(meta.total, meta.header_len, mtu).is_none()) {
            if !self.conntrack.is_tracked_reply(&buf[ETH..end]) {
                return Decision::Drop(DropCause::NotTracked);
            }
            if !meta.dont_frag {
                return Decision::Drop(DropCause::CannotFragment);
            }
            let kind = Icmpv4Error::FragRequired { mtu };
            return self.icmp_error(Egress::Uplink, kind, &buf[ETH..end], link_dst, DropCause::TooBig, reply, now);
        }
        let blank = csum == ChecksumState::PartialPseudoHeader;
        let parsed = meta.conntrack_view(&buf[ETH..end]);
        match self.conntrack.inbound_parsed(&mut buf[ETH..end], &parsed, blank, now) {
            Inbound::Forward { client } => {
                let Some(s) = self.clients.get(usize::from(client.get())).filter(|s| s.present) else {
                    return Decision::Drop(DropCause::UnknownClient);
                };
                let mac = s.cfg.mac;
                decrement_ttl(&mut buf[ETH..end]);
                set_macs(buf, self.downlink().mac, mac);
                Self::emit(Egress::Client(client), buf, end, csum, mtu)
            }
            Inbound::NotTracked => Decision::Drop(DropCause::NotTracked),
            Inbound::Invalid(i) => Decision::Drop(DropCause::Invalid(i)),
        }
    }

    /// A UDP packet to our uplink address: the resolver's if it is for its port from port 53.
    fn resolver_reply(&mut self, meta: Meta, csum: ChecksumState, ip: &[u8], now: u64) -> Option<Decision> {
        let port = self.resolver.port();
        let l4 = &ip[meta.header_len..];
        let u = udp::Packet::new_checked(l4).ok()?;
        if port == 0 || u.dst_port() != port {
            return None;
        }
        let valid = csum == ChecksumState::PartialPseudoHeader || u.verify_checksum(meta.src.into(), meta.dst.into());
        if !valid {
            return Some(Decision::Drop(DropCause::Malformed));
        }
        Some(match self.resolver.handle_reply(meta.src, u.src_port(), u.payload(), now) {
            Ok(()) => Decision::Consumed,
            Err(_) => Decision::Drop(DropCause::DnsReplyRejected),
        })
    }

    /// Answer `original` (an IPv4 packet that arrived in a frame to `link_dst`) with an ICMP
    /// error towards `to`, if allowed and within the rate limits; the frame is dropped for
    /// `cause` either way.
    #[allow(clippy::too_many_arguments)]
    fn icmp_error(
        &mut self,
        to: Egress,
        kind: Icmpv4Error,
        original: &[u8],
        link_dst: EthernetAddress,
        cause: DropCause,
        reply: &mut [u8],
        now: u64,
    ) -> Decision {
        if !builder::may_send_icmpv4_error(original, link_dst) {
            self.counters.icmp_not_allowed += 1;
            return Decision::Drop(cause);
        }
        let dst = ipv4::Packet::new_unchecked(original).src_addr();
        let per_source = !matches!(kind, Icmpv4Error::FragRequired { .. });
        if !self.limiter.allow(dst, now, per_source) {
            self.counters.icmp_rate_limited += 1;
            return Decision::Drop(cause);
        }
        let (src_mac, dst_mac, ours) = match to {
            Egress::Client(id) => {
                (self.downlink().mac, self.clients[usize::from(id.get())].cfg.mac, self.downlink().gateway)
            }
            Egress::Uplink => match self.uplink {
                Some(u) => (u.mac, u.gateway_mac, u.addr),
                None => return Decision::Drop(cause),
            },
        };
        match builder::icmpv4_error(reply, src_mac, dst_mac, ours, kind, original) {
            Ok(len) => Decision::Reply { to, len, dropped: Some(cause) },
            Err(_) => Decision::Drop(cause),
        }
    }
}

/// Decrement the TTL of the IPv4 header at the start of `ip` (checked; the callers dropped
/// TTL ≤ 1, which is left alone), with the header checksum updated (RFC 1624): netstack's
/// `Packet::decrement_ttl`, small enough to inline into the per-packet path.
#[inline(always)]
fn decrement_ttl(ip: &mut [u8]) {
    const TTL: usize = 8;
    const CHECKSUM: usize = 10;
    if ip[TTL] <= 1 {
        return;
    }
    let old = u16::from_be_bytes([ip[TTL], ip[TTL + 1]]);
    let new = old - 0x0100;
    let c = netstack::checksum::update16(u16::from_be_bytes([ip[CHECKSUM], ip[CHECKSUM + 1]]), old, new);
    ip[TTL] = (new >> 8) as u8;
    ip[CHECKSUM..CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
}

#[inline(always)]
fn set_macs(buf: &mut [u8], src: EthernetAddress, dst: EthernetAddress) {
    buf[0..6].copy_from_slice(dst.as_bytes());
    buf[6..12].copy_from_slice(src.as_bytes());
}

/// Offsets and bits of the IPv4 fixed header that [`Meta::parse`] reads directly.
const FLAGS_OFFSET: usize = 6;
const PROTOCOL: usize = 9;
const DONT_FRAG: u16 = 0x4000;
const MORE_FRAGS: u16 = 0x2000;
const OFFSET: u16 = 0x1fff;

/// The IPv4 header facts the pipeline needs, read once.
#[derive(Clone, Copy, Debug)]
struct Meta {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: IpProtocol,
    ttl: u8,
    total: usize,
    header_len: usize,
    dont_frag: bool,
    fragment: bool,
}

impl Meta {
    /// Check lengths, version and header checksum (trailing Ethernet padding is allowed).
    // Always inlined: returned through memory, the struct would be stored field by field and
    // reloaded whole (a store-forwarding stall on every packet).
    #[inline(always)]
    fn parse(ip: &[u8]) -> Option<Meta> {
        let p = ipv4::Packet::new_checked(ip).ok()?;
        if p.version() != 4 || !header_checksum_ok(&ip[..p.header_len()]) {
            return None;
        }
        // Protocol and flags read from the checked fixed header here rather than through
        // `next_header`/`is_fragment`, which are not inlined into this (large) caller: a call
        // and its spills on every packet.
        let flags_offset = u16::from_be_bytes([ip[FLAGS_OFFSET], ip[FLAGS_OFFSET + 1]]);
        Some(Meta {
            src: p.src_addr(),
            dst: p.dst_addr(),
            proto: IpProtocol::from(ip[PROTOCOL]),
            ttl: p.ttl(),
            total: usize::from(p.total_len()),
            header_len: p.header_len(),
            dont_frag: flags_offset & DONT_FRAG != 0,
            // More fragments, or a non-zero offset.
            fragment: flags_offset & (MORE_FRAGS | OFFSET) != 0,
        })
    }

    /// What connection tracking needs of the datagram `ip` (this header's, ending at its total
    /// length), from the header checked here: only the L4 header is parsed.
    #[inline]
    fn conntrack_view(&self, ip: &[u8]) -> Result<Parsed, Untrackable> {
        Parsed::from_checked_header(self.src, self.dst, self.proto, self.header_len, self.fragment, ip)
    }
}

/// Whether an IPv4 header (`header`: its `header_len` bytes, a multiple of 4) verifies: the
/// one's-complement sum of its 16-bit words, checksum included, is `0xffff`. Specialised for
/// headers ([`netstack::checksum::data`] is general): 32-bit words summed in a `u64` (2^16 ≡
/// 1 mod 2^16 − 1, so the folded sum is the same) and folded. Skipped under `cfg(fuzzing)`,
/// as netstack's `verify_checksum` is.
#[inline]
pub(super) fn header_checksum_ok(header: &[u8]) -> bool {
    if cfg!(fuzzing) {
        return true;
    }
    let sum = |words: &[u8]| -> u64 {
        words.chunks_exact(4).map(|w| u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]))).sum()
    };
    // The usual header without options as a fixed-size array: five words, no loop.
    let mut acc = match header.first_chunk::<20>() {
        Some(fixed) if header.len() == 20 => sum(fixed),
        _ => sum(header),
    };
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc == 0xffff
}
