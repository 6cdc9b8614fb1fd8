#!/usr/bin/env python3
"""Regenerate netstack's independent test corpus with scapy.

For every frame this writes, under corpus/:
  NAME.bin   the raw Ethernet frame, built by scapy (also a fuzz seed);
  NAME.json  scapy's own dissection of those raw bytes: the layer list, each layer's
             fields as scapy decodes them, and scapy's verdict on each checksum.
and under seeds/LAYER/ the bytes of each layer (fuzz seeds for per-protocol targets).

Run:  python3 netstack/tests/data/gen_corpus.py   (needs scapy: apt-get install python3-scapy)
The output is deterministic; commit it. tests/corpus.rs compares netstack's parse with it.
"""
import json
import os
import shutil
import sys

from scapy.all import (ARP, DNS, DNSQR, DNSRR, ICMP, IP, TCP, UDP, Ether, IPOption_NOP,
                       IPOption_RR, IPOption_Router_Alert, IPv6, IPv6ExtHdrDestOpt,
                       IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, Raw,
                       conf, fragment)
from scapy.layers.inet6 import (ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6EchoRequest,
                                ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptDstLLAddr,
                                ICMPv6NDOptSrcLLAddr, ICMPv6PacketTooBig,
                                ICMPv6ParamProblem, ICMPv6TimeExceeded, fragment6)
from scapy.packet import Packet

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")
SEEDS = os.path.join(HERE, "seeds")

M1 = "00:16:3e:5e:6c:00"  # Qubes-style MACs
M2 = "00:16:3e:5e:6c:0a"
E = lambda **kw: Ether(src=M2, dst=M1, **kw)
V4A, V4B = "10.137.0.17", "93.184.216.34"
V6A, V6B = "fd09:24ef:4179::a89:11", "2001:db8::1"


def frames():
    f = {}
    # Ethernet / ARP
    f["arp_request"] = Ether(src=M2, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=M2, psrc=V4A, pdst="10.137.0.1")
    f["arp_reply"] = Ether(src=M1, dst=M2) / ARP(op=2, hwsrc=M1, psrc="10.137.0.1", hwdst=M2, pdst=V4A)
    f["arp_gratuitous"] = Ether(src=M1, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=M1, psrc="10.137.0.1", hwdst="00:00:00:00:00:00", pdst="10.137.0.1")
    f["arp_unknown_op"] = Ether(src=M1, dst=M2) / ARP(op=9, hwsrc=M1, psrc="10.137.0.1", hwdst=M2, pdst=V4A)
    f["ether_unknown_type"] = Ether(src=M1, dst=M2, type=0x88b5) / Raw(b"\x01\x02\x03\x04" * 12)
    # IPv4 + TCP
    f["tcp_syn_options"] = E() / IP(src=V4A, dst=V4B, id=0x1234, flags="DF", ttl=64) / TCP(
        sport=40000, dport=443, seq=1000, flags="S", window=64240,
        options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (123456, 0)), ("NOP", None), ("WScale", 7)])
    f["tcp_data_ack"] = E() / IP(src=V4B, dst=V4A, tos=0x28) / TCP(sport=443, dport=40000, seq=5, ack=1001, flags="PA", window=501) / Raw(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
    f["tcp_all_flags_sack"] = E() / IP(src=V4A, dst=V4B) / TCP(sport=1, dport=2, flags=0x1ff, urgptr=7, options=[("NOP", None), ("NOP", None), ("SAck", (100, 200, 300, 400)), ("EOL", None)])
    f["tcp_bad_checksum"] = E() / IP(src=V4A, dst=V4B) / TCP(sport=1234, dport=80, flags="R", chksum=0xdead)
    f["ipv4_options_rr_tcp"] = E() / IP(src=V4A, dst=V4B, options=[IPOption_RR(routers=["1.2.3.4", "5.6.7.8"])]) / TCP(sport=5, dport=6, flags="A")
    f["ipv4_options_ra_nop_udp"] = E() / IP(src=V4A, dst="224.0.0.22", ttl=1, options=[IPOption_Router_Alert(), IPOption_NOP(), IPOption_NOP(), IPOption_NOP(), IPOption_NOP()]) / UDP(sport=9, dport=9) / Raw(b"x")
    f["ipv4_bad_header_checksum"] = E() / IP(src=V4A, dst=V4B, chksum=0x1111) / UDP(sport=7, dport=7)
    f["ipv4_ethernet_padding"] = E() / IP(src=V4A, dst=V4B) / UDP(sport=5000, dport=6000) / Raw(b"hi")  # padded to 60
    f["ipv4_unknown_proto"] = E() / IP(src=V4A, dst=V4B, proto=253) / Raw(b"\xab" * 10)
    # IPv4 fragments (UDP datagram of 1000 bytes in 3 pieces)
    big = IP(src=V4A, dst=V4B, id=4242) / UDP(sport=3333, dport=4444) / Raw(bytes(range(256)) * 4)
    for i, p in enumerate(fragment(big, fragsize=400)):
        f["ipv4_fragment_%d" % i] = E() / p
    # UDP
    f["udp_zero_checksum"] = E() / IP(src=V4A, dst=V4B) / UDP(sport=1111, dport=2222, chksum=0) / Raw(b"no checksum here")
    f["udp_checksum_ffff"] = find_udp_ffff()
    f["udp_bad_checksum"] = E() / IP(src=V4A, dst=V4B) / UDP(sport=1111, dport=2222, chksum=0x1234) / Raw(b"bad")
    f["udp_empty"] = E() / IP(src=V4A, dst=V4B) / UDP(sport=1, dport=2)
    # ICMPv4
    f["icmp_echo_request"] = E() / IP(src=V4A, dst="10.137.0.1") / ICMP(type=8, id=0x77, seq=3) / Raw(b"abcdefghijklmnopqrstuvwabcdefghi")
    f["icmp_echo_reply"] = E() / IP(src="10.137.0.1", dst=V4A) / ICMP(type=0, id=0x77, seq=3) / Raw(b"abcdefghijklmnopqrstuvwabcdefghi")
    inner_udp = IP(src=V4A, dst=V4B, ttl=1) / UDP(sport=33434, dport=33435) / Raw(b"traceroute payload")
    f["icmp_time_exceeded"] = E() / IP(src="10.0.0.254", dst=V4A) / ICMP(type=11, code=0) / IP(bytes(inner_udp)[:28])
    inner_tcp = IP(src=V4A, dst=V4B, flags="DF") / TCP(sport=40000, dport=443, seq=99, flags="S")
    f["icmp_admin_prohibited"] = E() / IP(src="10.137.0.1", dst=V4A) / ICMP(type=3, code=13) / IP(bytes(inner_tcp)[:28])
    f["icmp_frag_needed"] = E() / IP(src="10.137.0.1", dst=V4A) / ICMP(type=3, code=4, nexthopmtu=1400) / IP(bytes(inner_tcp)[:28])
    f["icmp_port_unreachable"] = E() / IP(src=V4B, dst=V4A) / ICMP(type=3, code=3) / IP(bytes(inner_udp)[:28])
    f["icmp_param_problem"] = E() / IP(src=V4B, dst=V4A) / ICMP(type=12, code=0, ptr=20) / IP(bytes(IP(src=V4A, dst=V4B, options=[IPOption_NOP()] * 4) / UDP(sport=1, dport=2))[:32])
    inner_icmp = IP(src=V4A, dst=V4B) / ICMP(type=8, id=1, seq=1)
    f["icmp_unreach_quoting_echo"] = E() / IP(src=V4B, dst=V4A) / ICMP(type=3, code=1) / IP(bytes(inner_icmp)[:28])
    # IPv6
    f["ipv6_udp"] = E() / IPv6(src=V6A, dst=V6B, tc=0x12, fl=0xabcde, hlim=64) / UDP(sport=5353, dport=5353) / Raw(b"v6 payload")
    f["ipv6_tcp_syn"] = E() / IPv6(src=V6A, dst=V6B) / TCP(sport=40001, dport=80, flags="S", options=[("MSS", 1440), ("NOP", None), ("WScale", 8)])
    f["ipv6_udp_zero_checksum"] = E() / IPv6(src=V6A, dst=V6B) / UDP(sport=1, dport=2, chksum=0) / Raw(b"invalid over v6")
    f["ipv6_hbh_dest_routing_udp"] = E() / IPv6(src=V6A, dst=V6B) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting(addresses=["2001:db8::2"]) / UDP(sport=7, dport=7) / Raw(b"ext")
    big6 = IPv6(src=V6A, dst=V6B) / IPv6ExtHdrFragment(id=0xabcdef) / UDP(sport=1, dport=2) / Raw(bytes(range(256)) * 6)
    for i, p in enumerate(fragment6(big6, 600)):
        f["ipv6_fragment_%d" % i] = E() / p
    # ICMPv6
    f["icmpv6_echo_request"] = E() / IPv6(src=V6A, dst=V6B) / ICMPv6EchoRequest(id=0x1234, seq=9, data=b"ping6 data")
    f["icmpv6_echo_reply"] = E() / IPv6(src=V6B, dst=V6A) / ICMPv6EchoReply(id=0x1234, seq=9, data=b"ping6 data")
    orig6 = bytes(IPv6(src=V6A, dst=V6B) / UDP(sport=1000, dport=2000) / Raw(b"Q" * 40))
    f["icmpv6_dest_unreach_admin"] = E() / IPv6(src="fd09:24ef:4179::a89:1", dst=V6A) / ICMPv6DestUnreach(code=1) / IPv6(orig6)
    f["icmpv6_packet_too_big"] = E() / IPv6(src="fd09:24ef:4179::a89:1", dst=V6A) / ICMPv6PacketTooBig(mtu=1280) / IPv6(orig6)
    f["icmpv6_time_exceeded"] = E() / IPv6(src="2001:db8::fe", dst=V6A) / ICMPv6TimeExceeded(code=0) / IPv6(orig6)
    f["icmpv6_param_problem"] = E() / IPv6(src="2001:db8::fe", dst=V6A) / ICMPv6ParamProblem(code=1, ptr=40) / IPv6(orig6)
    f["ndp_ns"] = Ether(src=M2, dst="33:33:ff:89:00:01") / IPv6(src="fe80::216:3eff:fe5e:6c0a", dst="ff02::1:ff89:1", hlim=255) / ICMPv6ND_NS(tgt="fd09:24ef:4179::a89:1") / ICMPv6NDOptSrcLLAddr(lladdr=M2)
    f["ndp_ns_dad"] = Ether(src=M2, dst="33:33:ff:89:00:11") / IPv6(src="::", dst="ff02::1:ff89:11", hlim=255) / ICMPv6ND_NS(tgt=V6A)
    f["ndp_na"] = E() / IPv6(src="fd09:24ef:4179::a89:1", dst="fe80::216:3eff:fe5e:6c0a", hlim=255) / ICMPv6ND_NA(R=1, S=1, O=0, tgt="fd09:24ef:4179::a89:1") / ICMPv6NDOptDstLLAddr(lladdr=M1)
    # DNS
    f["dns_query_a"] = E() / IP(src=V4A, dst="10.139.1.1") / UDP(sport=53001, dport=53) / DNS(id=0x1234, rd=1, qd=DNSQR(qname="www.example.com", qtype="A"))
    f["dns_query_aaaa"] = E() / IP(src=V4A, dst="10.139.1.1") / UDP(sport=53002, dport=53) / DNS(id=0x2345, rd=1, qd=DNSQR(qname="ipv6.example.org", qtype="AAAA"))
    f["dns_response_compressed"] = E() / IP(src="10.139.1.1", dst=V4A) / UDP(sport=53, dport=53001) / DNS(
        id=0x1234, qr=1, rd=1, ra=1, qd=DNSQR(qname="www.example.com", qtype="A"),
        an=[DNSRR(rrname="www.example.com", type="CNAME", ttl=300, rdata="example.com"),
            DNSRR(rrname="example.com", type="A", ttl=60, rdata="93.184.216.34"),
            DNSRR(rrname="example.com", type="A", ttl=60, rdata="93.184.216.35")]).compress()
    f["dns_response_aaaa"] = E() / IPv6(src=V6B, dst=V6A) / UDP(sport=53, dport=53002) / DNS(
        id=0x2345, qr=1, rd=1, ra=1, qd=DNSQR(qname="ipv6.example.org", qtype="AAAA"),
        an=[DNSRR(rrname="ipv6.example.org", type="AAAA", ttl=3600, rdata="2001:db8::abcd")]).compress()
    f["dns_nxdomain"] = E() / IP(src="10.139.1.1", dst=V4A) / UDP(sport=53, dport=53003) / DNS(id=7, qr=1, rd=1, ra=1, rcode=3, qd=DNSQR(qname="nope.invalid", qtype="A"))
    return f


def find_udp_ffff():
    """A UDP datagram whose computed checksum is 0, so it is sent as 0xffff."""
    for i in range(65536):
        p = E() / IP(src=V4A, dst=V4B) / UDP(sport=1, dport=2) / Raw(i.to_bytes(2, "big"))
        q = Ether(bytes(p))
        if q[UDP].chksum == 0xffff:
            return p
    raise SystemExit("no 0xffff UDP found")


def conv(v):
    if isinstance(v, Packet):
        return layer_fields(v)
    if isinstance(v, bytes):
        return {"hex": v.hex()}
    if isinstance(v, (list, tuple)):
        return [conv(x) for x in v]
    if isinstance(v, bool) or v is None or isinstance(v, (int, float, str)):
        return v
    try:
        return int(v)  # FlagValue, enums
    except Exception:
        return str(v)


def layer_fields(layer):
    out = {}
    for fd in layer.fields_desc:
        if fd.name in layer.fields:
            out[fd.name] = conv(layer.getfieldval(fd.name))
    return out


def layer_at(pkt, k):
    l = pkt
    for _ in range(k):
        l = l.payload
    return l


def dissect(raw):
    pkt = Ether(raw)
    layers = []
    k = 0
    l = pkt
    while l and not isinstance(l, conf.raw_layer.__class__) and l.__class__.__name__ != "NoPayload":
        name = l.__class__.__name__
        entry = {"layer": name, "fields": layer_fields(l)}
        ck = "chksum" if "chksum" in l.fields else ("cksum" if "cksum" in l.fields else None)
        quoted = name.endswith("error") or name.endswith("error6") or inside_error(pkt, k)
        if ck and not quoted:
            p2 = Ether(raw)
            setattr(layer_at(p2, k), ck, None)
            expected = getattr(layer_at(Ether(bytes(p2)), k), ck)
            actual = l.fields[ck]
            valid = expected == actual
            if name == "UDP" and actual == 0 and pkt.haslayer(IP) and not pkt.haslayer(IPv6):
                valid = True  # RFC 768: no checksum
            if name == "UDP" and actual == 0 and pkt.haslayer(IPv6):
                valid = False  # RFC 8200 8.1
            entry["checksum_valid"] = valid
        layers.append(entry)
        l = l.payload
        k += 1
    return {"length": len(raw), "layers": layers}


def inside_error(pkt, k):
    """Whether layer k sits inside an ICMP/ICMPv6 error (a quoted packet)."""
    l = pkt
    for i in range(k):
        n = l.__class__.__name__
        if n in ("ICMP",) and l.type in (3, 4, 5, 11, 12):
            return True
        if n.startswith("ICMPv6") and getattr(l, "type", 200) < 128:
            return True
        l = l.payload
    return False


SEED_LAYERS = {"arp": ARP, "ipv4": IP, "ipv6": IPv6, "icmpv4": ICMP, "udp": UDP, "tcp": TCP, "dns": DNS}


def main():
    for d in (OUT, SEEDS):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    for name, pkt in sorted(frames().items()):
        raw = bytes(pkt)
        if len(raw) < 60:
            raw = raw + b"\x00" * (60 - len(raw))  # Ethernet minimum, as on the wire
        with open(os.path.join(OUT, name + ".bin"), "wb") as fh:
            fh.write(raw)
        with open(os.path.join(OUT, name + ".json"), "w") as fh:
            json.dump(dissect(raw), fh, indent=1, sort_keys=True)
            fh.write("\n")
        parsed = Ether(raw)
        for seed, cls in SEED_LAYERS.items():
            if parsed.haslayer(cls):
                os.makedirs(os.path.join(SEEDS, seed), exist_ok=True)
                with open(os.path.join(SEEDS, seed, name + ".bin"), "wb") as fh:
                    fh.write(bytes(parsed[cls]))
        for l in parsed.iterpayloads():
            if l.__class__.__name__.startswith("ICMPv6"):
                os.makedirs(os.path.join(SEEDS, "icmpv6"), exist_ok=True)
                with open(os.path.join(SEEDS, "icmpv6", name + ".bin"), "wb") as fh:
                    fh.write(bytes(l))
                break
    print("wrote %d frames to %s" % (len(os.listdir(OUT)) // 2, OUT))


if __name__ == "__main__":
    main()
