#!/usr/bin/env python3
"""Writes the seed inputs of the firewall fuzz targets (seeds/<target>/*.bin): valid rule
commits, and frame sequences through the engine of src/lib.rs (client 1 accepts everything,
client 2 is under a policy-drop rule set). Run from firewall/fuzz: ./make-seeds.py"""
import os
import struct

UPLINK, GATEWAY = "10.137.0.6", "10.137.0.6"
CLIENT1, CLIENT2 = "10.137.0.17", "10.137.0.18"
DNS1, REMOTE = "10.139.1.1", "93.184.216.34"
UP_MAC, NET_MAC = bytes.fromhex("00163e5e6c00"), bytes.fromhex("00163e5e6c01")
FE = bytes.fromhex("feffffffffff")
C1_MAC, C2_MAC = bytes.fromhex("00163e5e6c11"), bytes.fromhex("00163e5e6c12")


def ip4(a):
    return bytes(int(x) for x in a.split("."))


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def ipv4(src, dst, proto, l4, ttl=64, df=True, ident=7, mf=False, off=0, total=None):
    flags = (0x4000 if df else 0) | (0x2000 if mf else 0) | (off // 8)
    total = 20 + len(l4) if total is None else total
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident, flags, ttl, proto, 0, ip4(src), ip4(dst))
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + l4


def pseudo(src, dst, proto, n):
    return ip4(src) + ip4(dst) + struct.pack("!BBH", 0, proto, n)


def udp(src, sp, dst, dp, payload):
    h = struct.pack("!HHHH", sp, dp, 8 + len(payload), 0)
    c = csum(pseudo(src, dst, 17, 8 + len(payload)) + h + payload) or 0xFFFF
    return h[:6] + struct.pack("!H", c) + payload


def tcp(src, sp, dst, dp, flags, seq=1000, ack=0, payload=b""):
    h = struct.pack("!HHIIBBHHH", sp, dp, seq, ack, 5 << 4, flags, 500, 0, 0)
    c = csum(pseudo(src, dst, 6, 20 + len(payload)) + h + payload)
    return h[:16] + struct.pack("!H", c) + h[18:] + payload


def icmp(ty, code, rest, data):
    h = struct.pack("!BBH", ty, code, 0) + rest + data
    return h[:2] + struct.pack("!H", csum(h)) + h[4:]


def eth(dst, src, payload, ty=0x0800):
    return dst + src + struct.pack("!H", ty) + payload


def chunk(op, frame, step=1):
    return bytes([op, step]) + struct.pack("!H", len(frame)) + frame


def c1(ip):
    return eth(FE, C1_MAC, ip)


def c2(ip):
    return eth(FE, C2_MAC, ip)


def up(ip):
    return eth(UP_MAC, NET_MAC, ip)


def dns_query(name, ident=0x1234):
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", 1, 1)


def write(target, name, data):
    os.makedirs(f"seeds/{target}", exist_ok=True)
    with open(f"seeds/{target}/{name}.bin", "wb") as f:
        f.write(data)


def commit(header, entries):
    return header + b"\0".join(k + b"\1" + v for k, v in entries)


def main():
    hdr = ip4(REMOTE) + struct.pack("!HBB", 443, 6, 8)
    write("rules_commit", "accept_all", commit(hdr, [(b"policy", b"accept"), (b"0000", b"action=accept")]))
    write("rules_commit", "mixed", commit(hdr, [
        (b"policy", b"drop"),
        (b"0000", b"action=accept specialtarget=dns"),
        (b"0001", b"action=accept dsthost=www.qubes-os.org proto=tcp dstports=443-443"),
        (b"0002", b"action=drop dst4=93.184.216.0/24 proto=udp dstports=1-1024"),
        (b"0003", b"action=accept proto=icmp icmptype=8 expire=1700000000"),
        (b"0004", b"action=accept dst6=fd09:24ef:4179::a89:5/64 comment=v6 only"),
        (b"0005", b"action=drop dpi=NO"),
    ]))
    write("rules_commit", "bad", commit(hdr, [(b"policy", b"drop"), (b"0000", b"action=maybe")]))

    seqs = {}
    syn = ipv4(CLIENT1, REMOTE, 6, tcp(CLIENT1, 40001, REMOTE, 80, 0x02))
    synack = ipv4(REMOTE, UPLINK, 6, tcp(REMOTE, 80, UPLINK, 40001, 0x12, seq=5000, ack=1001))
    ack = ipv4(CLIENT1, REMOTE, 6, tcp(CLIENT1, 40001, REMOTE, 80, 0x10, seq=1001, ack=5001))
    fin = ipv4(REMOTE, UPLINK, 6, tcp(REMOTE, 80, UPLINK, 40001, 0x11, seq=5001, ack=1001))
    seqs["tcp_handshake"] = [chunk(0, c1(syn)), chunk(2, up(synack)), chunk(0, c1(ack)), chunk(2, up(fin), 200)]
    q = ipv4(CLIENT1, REMOTE, 17, udp(CLIENT1, 40000, REMOTE, 53, dns_query("example.org")))
    a = ipv4(REMOTE, UPLINK, 17, udp(REMOTE, 53, UPLINK, 40000, b"answer"))
    # The error quotes the datagram as it left (translated, TTL decremented).
    q_out = ipv4(UPLINK, REMOTE, 17, udp(UPLINK, 40000, REMOTE, 53, dns_query("example.org")), ttl=63)
    err = ipv4(REMOTE, UPLINK, 1, icmp(3, 3, b"\0\0\0\0", q_out[:28]))
    seqs["udp_reply_error"] = [chunk(0, c1(q)), chunk(2, up(a)), chunk(2, up(err)), chunk(0, c1(q), 255)]
    echo = ipv4(CLIENT2, REMOTE, 1, icmp(8, 0, struct.pack("!HH", 77, 1), b"ping"))
    pong = ipv4(REMOTE, UPLINK, 1, icmp(0, 0, struct.pack("!HH", 77, 1), b"ping"))
    gw = ipv4(CLIENT2, GATEWAY, 1, icmp(8, 0, struct.pack("!HH", 78, 1), b"gw"))
    https = ipv4(CLIENT2, REMOTE, 6, tcp(CLIENT2, 40002, REMOTE, 443, 0x02))
    blocked = ipv4(CLIENT2, REMOTE, 17, udp(CLIENT2, 40003, REMOTE, 123, b"ntp"))
    dns = ipv4(CLIENT2, DNS1, 17, udp(CLIENT2, 40004, DNS1, 53, dns_query("www.qubes-os.org")))
    seqs["client2_policy"] = [chunk(1, c2(echo)), chunk(2, up(pong)), chunk(1, c2(gw)), chunk(1, c2(https)),
                              chunk(1, c2(blocked)), chunk(1, c2(dns)), chunk(3, b"", 10)]
    # The resolver's query (the engine's deterministic ids) and an answer from DNS1.
    ans = dns_query("www.qubes-os.org", 0)
    ans = ans[:2] + struct.pack("!HHH", 0x8180, 1, 1) + ans[8:] + bytes.fromhex("c00c000100010000003c0004") + ip4(REMOTE)
    reply = ipv4(DNS1, UPLINK, 17, udp(DNS1, 53, UPLINK, 5353, ans))
    seqs["resolver"] = [chunk(3, b""), chunk(2, up(reply)), chunk(1, c2(https)), chunk(3, b"", 255)]
    big = ipv4(CLIENT1, REMOTE, 17, udp(CLIENT1, 40005, REMOTE, 9, bytes(2000)), df=False)
    big_df = ipv4(CLIENT1, REMOTE, 17, udp(CLIENT1, 40006, REMOTE, 9, bytes(1600)))
    ttl1 = ipv4(CLIENT1, REMOTE, 17, udp(CLIENT1, 40007, REMOTE, 9, b"x"), ttl=1)
    seqs["mtu_ttl"] = [chunk(0, c1(big)), chunk(0, c1(big_df)), chunk(0, c1(ttl1)), chunk(8, c1(q)),
                       chunk(6, up(a))]
    whole = udp(CLIENT1, 40008, REMOTE, 9, bytes(range(48)))
    f1 = ipv4(CLIENT1, REMOTE, 17, whole[:24], df=False, mf=True, ident=99)
    f2 = ipv4(CLIENT1, REMOTE, 17, whole[24:], df=False, off=24, ident=99)
    seqs["fragments"] = [chunk(0, c1(f1)), chunk(0, c1(f2)), chunk(0, c1(f1), 200)]
    for name, chunks in seqs.items():
        write("engine_process", name, b"".join(chunks))


main()
