//! portcullis's own presence on the uplink: its address, ARP, the gateway's MAC, and (for
//! testing only) an ICMP echo responder and a UDP echo service.
//!
//! Everything else addressed to the uplink address (replies of NATed flows among them) is the
//! firewall's: [`HostVerdict::NotForUs`]. Replies are written **in place** into
//! the received frame's slot, so the netfront can send that slot straight back.

use core::net::Ipv4Addr;

use netstack::ethernet::{self, EtherType, EthernetAddress};
use netstack::ip::IpProtocol;
use netstack::{arp, builder, ipv4};
use xen_front::netif::ChecksumOffload;

use crate::echo;

pub use crate::echo::UDP_ECHO_PORT;
/// The gateway MAC used when ARP gets no answer (Qubes' convention for its virtual links).
pub const GATEWAY_MAC_FALLBACK: EthernetAddress = EthernetAddress([0xfe, 0xff, 0xff, 0xff, 0xff, 0xff]);
/// ARP requests for the gateway before falling back.
pub const GATEWAY_ARP_ATTEMPTS: u32 = 5;
/// Interval between them.
pub const GATEWAY_ARP_INTERVAL_NS: u64 = 1_000_000_000;
/// Interval of the re-tries after the fallback.
pub const GATEWAY_ARP_SLOW_INTERVAL_NS: u64 = 30_000_000_000;

/// The uplink's addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UplinkAddress {
    /// Our address.
    pub ip: Ipv4Addr,
    /// The netmask's prefix length.
    pub prefix_len: u8,
    /// The gateway (sys-net).
    pub gateway: Ipv4Addr,
}

/// Why a frame from the uplink stopped here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostDrop {
    /// Not IPv4 or ARP (IPv6 is its own issue).
    UnsupportedEtherType,
    /// Shorter than its headers say, or its checksum is wrong.
    Malformed,
    /// ARP not asking for us and not from the gateway.
    ArpNotForUs,
    /// No address configured yet.
    NoAddress,
}

/// What to do with a frame from the uplink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostVerdict {
    /// Addressed elsewhere: the forwarding path's business.
    NotForUs,
    /// Consumed (an ARP reply we learned from, …).
    Consumed,
    /// Dropped, for this reason.
    Dropped(HostDrop),
    /// A reply of `len` bytes now sits where the frame was: send it.
    Reply {
        /// Its length.
        len: usize,
        /// Its checksum state.
        csum: ChecksumOffload,
    },
}

/// Counters of the uplink host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostCounters {
    /// ARP requests for our address answered.
    pub arp_replies: u64,
    /// ARP requests sent for the gateway.
    pub arp_requests: u64,
    /// Times the gateway's MAC was learned (or changed).
    pub gateway_learned: u64,
    /// ICMP echo requests answered (debug).
    pub echo_replies: u64,
    /// UDP datagrams echoed (debug).
    pub udp_echoes: u64,
    /// Frames dropped, all reasons.
    pub dropped: u64,
    /// Of which: malformed.
    pub malformed: u64,
    /// Of which: not IPv4/ARP.
    pub unsupported: u64,
}

/// portcullis on the uplink.
#[derive(Debug)]
pub struct UplinkHost {
    addr: Option<UplinkAddress>,
    mac: EthernetAddress,
    gateway_mac: Option<EthernetAddress>,
    arp_attempts: u32,
    next_arp_ns: u64,
    debug_echo: bool,
    /// What happened.
    pub counters: HostCounters,
}

impl UplinkHost {
    /// A host with an address (or none yet), the debug echo services on or off.
    pub const fn new(addr: Option<UplinkAddress>, debug_echo: bool) -> Self {
        UplinkHost {
            addr,
            mac: EthernetAddress::ZERO,
            gateway_mac: None,
            arp_attempts: 0,
            next_arp_ns: 0,
            debug_echo,
            counters: HostCounters {
                arp_replies: 0,
                arp_requests: 0,
                gateway_learned: 0,
                echo_replies: 0,
                udp_echoes: 0,
                dropped: 0,
                malformed: 0,
                unsupported: 0,
            },
        }
    }

    /// Our address.
    pub fn address(&self) -> Option<UplinkAddress> {
        self.addr
    }

    /// The gateway's MAC: learned, else the fallback once ARP gave up, else `None`.
    pub fn gateway_mac(&self) -> Option<EthernetAddress> {
        self.gateway_mac.or((self.arp_attempts >= GATEWAY_ARP_ATTEMPTS).then_some(GATEWAY_MAC_FALLBACK))
    }

    /// The link came up with MAC `mac`: writes a gratuitous ARP into `buf` (returns its
    /// length) and starts looking for the gateway.
    pub fn on_link_up(&mut self, mac: [u8; 6], now_ns: u64, buf: &mut [u8]) -> Option<usize> {
        self.mac = EthernetAddress(mac);
        self.arp_attempts = 0;
        self.next_arp_ns = now_ns;
        let addr = self.addr?;
        builder::gratuitous_arp(buf, self.mac, addr.ip).ok()
    }

    /// Our addresses changed (QubesDB): a new gateway (or a new address of ours) is looked for
    /// again from scratch, so the engine sees no uplink until ARP answers (or falls back) —
    /// the layer-3 reconnect Qubes expects after the network VM changed. Returns whether
    /// anything changed.
    pub fn set_address(&mut self, addr: Option<UplinkAddress>, now_ns: u64) -> bool {
        if addr == self.addr {
            return false;
        }
        self.addr = addr;
        self.gateway_mac = None;
        self.arp_attempts = 0;
        self.next_arp_ns = now_ns;
        true
    }

    /// When to call [`poll`](Self::poll) next (an ARP retry), if ever.
    pub fn next_deadline(&self) -> Option<u64> {
        (self.addr.is_some() && self.gateway_mac.is_none()).then_some(self.next_arp_ns)
    }

    /// Timers: an ARP request for the gateway, if one is due, written into `buf`.
    pub fn poll(&mut self, now_ns: u64, buf: &mut [u8]) -> Option<usize> {
        let addr = self.addr?;
        if self.gateway_mac.is_some() || now_ns < self.next_arp_ns || self.mac == EthernetAddress::ZERO {
            return None;
        }
        self.arp_attempts = self.arp_attempts.saturating_add(1);
        self.next_arp_ns = now_ns
            + if self.arp_attempts < GATEWAY_ARP_ATTEMPTS {
                GATEWAY_ARP_INTERVAL_NS
            } else {
                if self.arp_attempts == GATEWAY_ARP_ATTEMPTS {
                    log::warn!("uplink: gateway {} does not answer ARP; using fe:ff:ff:ff:ff:ff", addr.gateway);
                }
                GATEWAY_ARP_SLOW_INTERVAL_NS
            };
        self.counters.arp_requests += 1;
        builder::arp_request(buf, self.mac, addr.ip, addr.gateway).ok()
    }

    fn drop(&mut self, why: HostDrop) -> HostVerdict {
        self.counters.dropped += 1;
        match why {
            HostDrop::Malformed => self.counters.malformed += 1,
            HostDrop::UnsupportedEtherType => self.counters.unsupported += 1,
            _ => {}
        }
        HostVerdict::Dropped(why)
    }

    /// Looks at a frame from the uplink (`frame` is exactly the frame; the slot's room
    /// after it is not needed: replies are never longer than their requests).
    pub fn handle(&mut self, frame: &mut [u8], csum: ChecksumOffload) -> HostVerdict {
        let Ok(eth) = ethernet::Frame::new_checked(&*frame) else {
            return self.drop(HostDrop::Malformed);
        };
        match eth.ethertype() {
            EtherType::Arp => self.handle_arp(frame),
            EtherType::Ipv4 => self.handle_ipv4(frame, csum),
            _ => self.drop(HostDrop::UnsupportedEtherType),
        }
    }

    fn handle_arp(&mut self, frame: &mut [u8]) -> HostVerdict {
        let Some(addr) = self.addr else { return self.drop(HostDrop::NoAddress) };
        let repr = match arp::Packet::new_checked(&frame[ethernet::HEADER_LEN..]).and_then(|p| arp::Repr::parse(&p)) {
            Ok(r) => r,
            Err(_) => return self.drop(HostDrop::Malformed),
        };
        let from_gateway = repr.source_protocol_addr == addr.gateway && repr.source_hardware_addr.is_unicast();
        if from_gateway && self.gateway_mac != Some(repr.source_hardware_addr) {
            self.gateway_mac = Some(repr.source_hardware_addr);
            self.counters.gateway_learned += 1;
            log::info!("uplink: gateway {} is at {:02x?}", addr.gateway, repr.source_hardware_addr.0);
        }
        if repr.operation == arp::Operation::Request
            && repr.target_protocol_addr == addr.ip
            && repr.source_hardware_addr.is_unicast()
            && let Ok(len) =
                builder::arp_reply(frame, self.mac, addr.ip, repr.source_hardware_addr, repr.source_protocol_addr)
        {
            self.counters.arp_replies += 1;
            return HostVerdict::Reply { len, csum: ChecksumOffload::default() };
        }
        if from_gateway { HostVerdict::Consumed } else { self.drop(HostDrop::ArpNotForUs) }
    }

    fn handle_ipv4(&mut self, frame: &mut [u8], csum: ChecksumOffload) -> HostVerdict {
        let Some(addr) = self.addr else { return self.drop(HostDrop::NoAddress) };
        let ip = match ipv4::Packet::new_checked(&frame[ethernet::HEADER_LEN..]) {
            Ok(p) => p,
            Err(_) => return self.drop(HostDrop::Malformed),
        };
        // Everything but the debug services is the firewall's: replies to NATed flows come
        // to our address, and the firewall drops (and counts) the rest.
        if ip.dst_addr() != addr.ip || !self.debug_echo || ip.is_fragment() {
            return HostVerdict::NotForUs;
        }
        if !ip.verify_checksum() {
            return self.drop(HostDrop::Malformed);
        }
        if !ethernet::Frame::new_unchecked(&*frame).src_addr().is_unicast() {
            return HostVerdict::NotForUs;
        }
        match ip.next_header() {
            IpProtocol::Icmp => match echo::icmp_echo(frame, self.mac) {
                Some(len) => {
                    self.counters.echo_replies += 1;
                    HostVerdict::Reply { len, csum: ChecksumOffload::default() }
                }
                None => HostVerdict::NotForUs,
            },
            IpProtocol::Udp => match echo::udp_echo(frame, self.mac) {
                echo::UdpEcho::Echoed(len) => {
                    self.counters.udp_echoes += 1;
                    HostVerdict::Reply { len, csum }
                }
                echo::UdpEcho::OtherPort => HostVerdict::NotForUs,
                echo::UdpEcho::Truncated => self.drop(HostDrop::Malformed),
            },
            _ => HostVerdict::NotForUs,
        }
    }
}

#[cfg(test)]
mod tests;
