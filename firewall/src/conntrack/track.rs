//! The per-packet operations: client → outside ([`Conntrack::outbound`]), outside → client
//! ([`Conntrack::inbound`]), and rule updates ([`Conntrack::apply_rules`]).

use netstack::tcp::flags;

use super::nat::{snat, unsnat};
use super::state::{Dir, FlowState, TcpState};
use super::tuple::{L4, Parsed, Untrackable, parse, parse_packet};
use super::{ClientId, Conntrack, Refusal};
use crate::rules::{ClientRules, DropReason, Flow, HostResolutions, MatchContext, RuleSet, Verdict};

/// What to do with a client's packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outbound {
    /// The packet was translated in place: forward it to the uplink. `new`: it opened a flow
    /// (the rules accepted it).
    Forward {
        /// It opened a flow.
        new: bool,
    },
    /// The rules refused the new flow; [`DropReason::answer`] says how to answer.
    Drop(DropReason),
    /// The rules accepted it but there is no room ([`super::Stats`] counts it): drop it
    /// silently (the client retransmits).
    Refused(Refusal),
    /// Not trackable, or not a valid packet for the flow: drop it.
    Invalid(Invalid),
}

/// What to do with a packet from the outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// It belongs to a flow of `client` (a reply, or an ICMP error about the flow) and was
    /// translated in place: forward it to that client.
    Forward {
        /// The client the flow belongs to.
        client: ClientId,
    },
    /// No tracked flow: drop it (new connections towards clients are dropped, as Linux
    /// `sys-firewall` does), or hand it to the appliance's own stack if it is for it.
    NotTracked,
    /// Not trackable: drop it.
    Invalid(Invalid),
}

/// Why a packet is invalid for connection tracking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Invalid {
    /// See [`Untrackable`].
    Untrackable(Untrackable),
    /// No flow, and the packet cannot open one (TCP without a lone SYN, an echo reply from a
    /// client; Linux `ct state invalid`).
    NotNew,
    /// The flow belongs to another client (its address was reused without a flush).
    OtherClient,
    /// No NAT address is set (the uplink is not configured).
    NoNatAddress,
}

impl<const N: usize, const B: usize> Conntrack<N, B> {
    /// Track and translate an IPv4 packet (at the start of `packet`, link header removed)
    /// from `client`, whose source address the caller has already checked (anti-spoofing).
    ///
    /// A packet of a known flow updates its state and is translated. Otherwise, if it can
    /// open a flow (TCP SYN, UDP, ICMP echo request), `decide` gets its [`Flow`] (the
    /// client's rules); an accepted flow gets a NAT port ([`Conntrack::pick_port`], `rng`
    /// being the appliance's CSPRNG) and a table slot (the eviction policy of
    /// [`super::table`]). `csum_blank`: the L4 checksum field holds only the pseudo-header
    /// sum (Xen checksum offload); the rewrite keeps it so.
    pub fn outbound(
        &mut self,
        client: ClientId,
        packet: &mut [u8],
        csum_blank: bool,
        now: u64,
        rng: &mut impl FnMut() -> u32,
        decide: impl FnOnce(&Flow) -> Verdict,
    ) -> Outbound {
        let parsed = parse_packet(packet);
        self.outbound_parsed(client, packet, &parsed, csum_blank, now, rng, decide)
    }

    /// [`Conntrack::outbound`] for a packet the caller parsed already (the forwarding engine
    /// has checked the IPv4 header, so the packet is parsed once).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(crate) fn outbound_parsed(
        &mut self,
        client: ClientId,
        packet: &mut [u8],
        parsed: &Result<Parsed, Untrackable>,
        csum_blank: bool,
        now: u64,
        rng: &mut impl FnMut() -> u32,
        decide: impl FnOnce(&Flow) -> Verdict,
    ) -> Outbound {
        let p = match parsed {
            Ok(p) => p,
            Err(e) => return Outbound::Invalid(Invalid::Untrackable(*e)),
        };
        let (t, l4) = (&p.tuple, p.l4);
        let tcp_flags = match l4 {
            L4::Tcp { flags } => flags,
            L4::Udp | L4::EchoRequest => 0,
            // Echo replies and errors from clients are not tracked (yet): no flow to answer.
            L4::EchoReply | L4::IcmpError => return Outbound::Invalid(Invalid::NotNew),
        };
        let mut orig_tag = None;
        if let Some(idx) = self.lookup_tagged(t, Dir::Original, now, &mut orig_tag) {
            let e = &self.entries[idx as usize];
            if e.client != client.get() {
                return Outbound::Invalid(Invalid::OtherClient);
            }
            let (state, nat_addr, nat_port) = (e.state.next(Dir::Original, tcp_flags), e.nat_addr, e.nat_port);
            self.set_state(idx, state, now);
            return match snat(packet, p, nat_addr, nat_port, csum_blank) {
                Ok(()) => Outbound::Forward { new: false },
                Err(_) => Outbound::Invalid(Invalid::Untrackable(Untrackable::Malformed)),
            };
        }
        self.outbound_new(client, packet, p, orig_tag, csum_blank, now, rng, decide)
    }

    /// The rest of [`Conntrack::outbound_parsed`] for a packet of no known flow (`orig_tag`:
    /// its tuple's index tag, if the lookup computed it): open a flow if it can and the rules
    /// accept it. Kept out of line, so that the established-flow path stays small.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn outbound_new(
        &mut self,
        client: ClientId,
        packet: &mut [u8],
        p: &Parsed,
        orig_tag: Option<u32>,
        csum_blank: bool,
        now: u64,
        rng: &mut impl FnMut() -> u32,
        decide: impl FnOnce(&Flow) -> Verdict,
    ) -> Outbound {
        let (t, l4) = (&p.tuple, p.l4);
        let state = match l4 {
            L4::Tcp { flags: f } if f & (flags::SYN | flags::ACK | flags::RST | flags::FIN) == flags::SYN => {
                FlowState::Tcp(TcpState::SynSent)
            }
            L4::Udp => FlowState::Udp { replied: false },
            L4::EchoRequest => FlowState::Icmp { replied: false },
            _ => return Outbound::Invalid(Invalid::NotNew),
        };
        let Some(nat) = self.nat_addr else {
            return Outbound::Invalid(Invalid::NoNatAddress);
        };
        let icmp_type = if matches!(l4, L4::EchoRequest) { 8 } else { 0 };
        if let Verdict::Drop(why) = decide(&Flow::new(t.dst.into(), t.proto, t.dst_port, icmp_type)) {
            return Outbound::Drop(why);
        }
        // Port first: eviction only frees ports, so the choice stays valid.
        let Some((port, reply_tag)) = self.pick_port(t, nat, now, rng) else {
            self.stats.refused_no_port += 1;
            return Outbound::Refused(Refusal::NoFreePort);
        };
        if let Err(r) = self.admit(client, now) {
            return Outbound::Refused(r);
        }
        let idx = self.insert(client, *t, nat, port, (orig_tag, reply_tag), state, now);
        match snat(packet, p, nat, port, csum_blank) {
            Ok(()) => Outbound::Forward { new: true },
            Err(_) => {
                self.remove(idx);
                Outbound::Invalid(Invalid::Untrackable(Untrackable::Malformed))
            }
        }
    }

    /// Track and translate an IPv4 packet from the outside (link header removed): a reply of
    /// a tracked flow gets its destination translated back to the client; an ICMP error
    /// quoting a packet of a tracked flow is translated too (outer destination, quoted
    /// source address and port, all checksums). `csum_blank` as for [`Conntrack::outbound`].
    pub fn inbound(&mut self, packet: &mut [u8], csum_blank: bool, now: u64) -> Inbound {
        let parsed = parse_packet(packet);
        self.inbound_parsed(packet, &parsed, csum_blank, now)
    }

    /// [`Conntrack::inbound`] for a packet the caller parsed already.
    pub(crate) fn inbound_parsed(
        &mut self,
        packet: &mut [u8],
        parsed: &Result<Parsed, Untrackable>,
        csum_blank: bool,
        now: u64,
    ) -> Inbound {
        let p = match parsed {
            Ok(p) => p,
            Err(e) => return Inbound::Invalid(Invalid::Untrackable(*e)),
        };
        let (t, l4) = (&p.tuple, p.l4);
        let tcp_flags = match l4 {
            L4::Tcp { flags } => flags,
            L4::Udp | L4::EchoReply => 0,
            L4::IcmpError => return self.translate_icmp_error(packet, now),
            // An echo request from the outside opens nothing.
            L4::EchoRequest => return Inbound::NotTracked,
        };
        let Some(idx) = self.lookup(t, Dir::Reply, now) else {
            return Inbound::NotTracked;
        };
        let e = &self.entries[idx as usize];
        let (state, addr, port, owner) = (e.state.next(Dir::Reply, tcp_flags), e.orig.src, e.orig.src_port, e.client);
        self.set_state(idx, state, now);
        match unsnat(packet, p, addr, port, csum_blank) {
            Ok(()) => Inbound::Forward { client: ClientId(owner) },
            Err(_) => Inbound::Invalid(Invalid::Untrackable(Untrackable::Malformed)),
        }
    }

    /// Remove the flows of `client` that `allowed` no longer accepts. Returns how many.
    pub fn retain_flows(&mut self, client: ClientId, allowed: impl FnMut(&Flow) -> bool) -> u32 {
        let n = self.retain_client(client, allowed);
        self.stats.rules_removed += u64::from(n);
        n
    }

    /// The rule-update hook: after `client`'s rules were replaced, remove its flows (all
    /// states) that the new rules would not accept as new flows, as Linux `qubes-firewall`
    /// deletes the conntrack entries the new rules block. A client whose rules are not
    /// committed or invalid loses every flow. Returns how many were removed. O(`N`).
    pub fn apply_rules<R: HostResolutions + ?Sized>(
        &mut self,
        client: ClientId,
        rules: &ClientRules,
        ctx: &MatchContext<'_, R>,
    ) -> u32 {
        self.retain_flows(client, |f| rules.evaluate(f, ctx).is_accept())
    }

    /// [`Conntrack::apply_rules`] for an active [`RuleSet`].
    pub fn apply_rule_set<R: HostResolutions + ?Sized>(
        &mut self,
        client: ClientId,
        rules: &RuleSet,
        ctx: &MatchContext<'_, R>,
    ) -> u32 {
        self.retain_flows(client, |f| rules.evaluate(f, ctx).is_accept())
    }
}

impl<const N: usize, const B: usize> Conntrack<N, B> {
    /// Whether the IPv4 packet at the start of `packet` (from the outside) is a reply of a
    /// live tracked flow, without changing anything.
    pub(crate) fn is_tracked_reply(&self, packet: &[u8]) -> bool {
        match parse(packet) {
            Ok((t, L4::Tcp { .. } | L4::Udp | L4::EchoReply)) => self.find(&t, Dir::Reply).is_some(),
            _ => false,
        }
    }
}
