//! Things shared by IPv4 and IPv6: the protocol numbers and address classification.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

enum_with_unknown! {
    /// IP protocol numbers (IPv4 "protocol", IPv6 "next header").
    pub enum IpProtocol(u8) {
        /// IPv6 hop-by-hop options.
        HopByHop = 0,
        /// ICMP.
        Icmp = 1,
        /// IGMP.
        Igmp = 2,
        /// TCP.
        Tcp = 6,
        /// UDP.
        Udp = 17,
        /// IPv6 routing header.
        Ipv6Route = 43,
        /// IPv6 fragment header.
        Ipv6Frag = 44,
        /// Encapsulating security payload.
        Esp = 50,
        /// Authentication header.
        Ah = 51,
        /// ICMPv6.
        Icmpv6 = 58,
        /// IPv6 "no next header".
        Ipv6NoNxt = 59,
        /// IPv6 destination options.
        Ipv6Opts = 60,
    }
}

/// Whether an IPv4 address can be the source of a packet that a single host sent: not
/// unspecified, broadcast, multicast, loopback or class E. Used by the ICMP-error predicate.
pub fn ipv4_is_single_host(addr: Ipv4Addr) -> bool {
    !(addr.is_unspecified()
        || addr.is_broadcast()
        || addr.is_multicast()
        || addr.is_loopback()
        || addr.octets()[0] >= 240)
}

/// Whether an IPv6 address identifies a single node (not unspecified, not multicast).
pub fn ipv6_is_single_host(addr: Ipv6Addr) -> bool {
    !(addr.is_unspecified() || addr.is_multicast())
}

/// [`ipv4_is_single_host`] / [`ipv6_is_single_host`] for either family.
pub fn is_single_host(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => ipv4_is_single_host(a),
        IpAddr::V6(a) => ipv6_is_single_host(a),
    }
}

/// The solicited-node multicast address of an IPv6 address (RFC 4291 §2.7.1).
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15]])
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn protocol_roundtrip() {
        for v in 0..=255u8 {
            assert_eq!(u8::from(IpProtocol::from(v)), v);
        }
        assert_eq!(IpProtocol::from(6), IpProtocol::Tcp);
    }

    #[test]
    fn classes() {
        assert!(ipv4_is_single_host(Ipv4Addr::new(10, 137, 0, 1)));
        assert!(!ipv4_is_single_host(Ipv4Addr::BROADCAST));
        assert!(!ipv4_is_single_host(Ipv4Addr::new(224, 0, 0, 1)));
        assert!(!ipv4_is_single_host(Ipv4Addr::new(240, 0, 0, 1)));
        assert!(!ipv4_is_single_host(Ipv4Addr::UNSPECIFIED));
        assert!(!ipv6_is_single_host("ff02::1".parse().unwrap()));
        assert!(is_single_host("fe80::1".parse::<Ipv6Addr>().unwrap().into()));
        assert_eq!(
            solicited_node("fe80::216:3eff:fe5e:6c0a".parse().unwrap()),
            "ff02::1:ff5e:6c0a".parse::<Ipv6Addr>().unwrap()
        );
    }
}
