//! portcullis on a client link, as Linux `sys-firewall` behaves on each vif: a /32
//! point-to-point link where our MAC is `fe:ff:ff:ff:ff:ff`, ARP requests for any address but
//! the client's own are answered with it (proxy ARP: the client reaches everything, the other
//! clients included, only through us), and (for testing only, `debug-echo=1`) the UDP echo
//! service answers on the gateway address. Everything else is the firewall's: it answers ICMP
//! echo to the gateway and rejects the rest addressed to us.
//!
//! Replies are written **in place** over the request, in the slot it arrived in.

use core::net::Ipv4Addr;

use netstack::ethernet::{self, EtherType, EthernetAddress};
use netstack::ip::IpProtocol;
use netstack::{arp, builder, ipv4};

use crate::echo;

/// Our MAC on every client link (what Linux netback gives every vif).
pub const LINK_MAC: EthernetAddress = EthernetAddress([0xfe, 0xff, 0xff, 0xff, 0xff, 0xff]);

/// What the link knows about its client (from the backend's xenstore keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLink {
    /// The client's address (`ip` key), if it has an IPv4 one.
    pub ip: Option<Ipv4Addr>,
}

/// Why a frame from a client stopped here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkDrop {
    /// Shorter than its headers say.
    Malformed,
    /// An ARP request for the client's own address (address conflict probes) or for 0.0.0.0.
    ArpForItself,
    /// An ARP message other than a request (replies, gratuitous announcements).
    ArpNotRequest,
}

/// What to do with a frame from a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkVerdict {
    /// Not the link's business: give it to the firewall.
    Firewall,
    /// A reply of `len` bytes now sits where the frame was: send it back to the client, with
    /// the checksum state the frame came with.
    Reply {
        /// Its length.
        len: usize,
    },
    /// Dropped, for this reason.
    Dropped(LinkDrop),
}

/// Counters of the client links (all clients).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// ARP requests answered (proxy ARP).
    pub arp_replies: u64,
    /// UDP datagrams echoed (debug).
    pub udp_echoes: u64,
    /// Frames dropped here, all reasons.
    pub dropped: u64,
}

/// Our side of the client links.
#[derive(Debug)]
pub struct Downlink {
    gateway: Option<Ipv4Addr>,
    debug_echo: bool,
    /// What happened.
    pub counters: LinkCounters,
}

impl Downlink {
    /// The links with the gateway address clients use (or none yet), the debug echo on or off.
    pub const fn new(gateway: Option<Ipv4Addr>, debug_echo: bool) -> Self {
        Downlink { gateway, debug_echo, counters: LinkCounters { arp_replies: 0, udp_echoes: 0, dropped: 0 } }
    }

    /// Sets the gateway address clients use (QubesDB's `/qubes-netvm-gateway`).
    pub fn set_gateway(&mut self, gateway: Option<Ipv4Addr>) {
        self.gateway = gateway;
    }

    /// The gateway address clients use.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.gateway
    }

    fn drop(&mut self, why: LinkDrop) -> LinkVerdict {
        self.counters.dropped += 1;
        LinkVerdict::Dropped(why)
    }

    /// Looks at a frame from a client (`frame` is exactly the frame; replies are never longer
    /// than their requests).
    pub fn handle(&mut self, client: &ClientLink, frame: &mut [u8]) -> LinkVerdict {
        let Ok(eth) = ethernet::Frame::new_checked(&*frame) else {
            return self.drop(LinkDrop::Malformed);
        };
        match eth.ethertype() {
            EtherType::Arp => self.handle_arp(client, frame),
            EtherType::Ipv4 => self.handle_ipv4(frame),
            _ => LinkVerdict::Firewall,
        }
    }

    fn handle_arp(&mut self, client: &ClientLink, frame: &mut [u8]) -> LinkVerdict {
        let repr = match arp::Packet::new_checked(&frame[ethernet::HEADER_LEN..]).and_then(|p| arp::Repr::parse(&p)) {
            Ok(r) => r,
            Err(_) => return self.drop(LinkDrop::Malformed),
        };
        if repr.operation != arp::Operation::Request || !repr.source_hardware_addr.is_unicast() {
            return self.drop(LinkDrop::ArpNotRequest);
        }
        let target = repr.target_protocol_addr;
        if Some(target) == client.ip || target.is_unspecified() {
            return self.drop(LinkDrop::ArpForItself);
        }
        match builder::arp_reply(frame, LINK_MAC, target, repr.source_hardware_addr, repr.source_protocol_addr) {
            Ok(len) => {
                self.counters.arp_replies += 1;
                LinkVerdict::Reply { len }
            }
            Err(_) => self.drop(LinkDrop::Malformed),
        }
    }

    fn handle_ipv4(&mut self, frame: &mut [u8]) -> LinkVerdict {
        let Some(gateway) = self.gateway.filter(|_| self.debug_echo) else { return LinkVerdict::Firewall };
        let Ok(ip) = ipv4::Packet::new_checked(&frame[ethernet::HEADER_LEN..]) else {
            return LinkVerdict::Firewall; // the firewall counts malformed packets
        };
        if ip.dst_addr() != gateway || ip.next_header() != IpProtocol::Udp || ip.is_fragment() || !ip.verify_checksum()
        {
            return LinkVerdict::Firewall;
        }
        match echo::udp_echo(frame, LINK_MAC) {
            echo::UdpEcho::Echoed(len) => {
                self.counters.udp_echoes += 1;
                LinkVerdict::Reply { len }
            }
            echo::UdpEcho::OtherPort | echo::UdpEcho::Truncated => LinkVerdict::Firewall,
        }
    }
}

#[cfg(test)]
mod tests;
