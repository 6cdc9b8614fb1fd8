#!/usr/bin/env python3
"""Independent check of frames built by netstack's builders (run by tests/builders.rs).

usage: check_frames.py DIR
For every DIR/NAME.bin with DIR/NAME.expect.json beside it, scapy dissects the frame and
this script checks that
  * the layers scapy finds are exactly the expected list;
  * every expected field has the expected value (as scapy decodes it);
  * every checksum scapy can recompute (IP, TCP, UDP, ICMP, ICMPv6; not the quoted copies
    inside ICMP errors) equals the one in the frame, and no UDP checksum is 0.
Prints one line per problem and "N passed, M failed"; exits non-zero on any problem.
"""
import json
import os
import sys

try:
    from scapy.all import Ether
except ImportError:
    sys.exit("scapy is missing: apt-get install -y python3-scapy (or pip install scapy)")


def layer_at(pkt, k):
    l = pkt
    for _ in range(k):
        l = l.payload
    return l


def check(raw, expect):
    problems = []
    pkt = Ether(raw)
    names = []
    l = pkt
    while l.__class__.__name__ != "NoPayload":
        names.append(l.__class__.__name__)
        l = l.payload
    if names != expect["layers"]:
        problems.append("layers %s, expected %s" % (names, expect["layers"]))
    for lname, fields in expect.get("fields", {}).items():
        if lname not in names:
            continue
        layer = layer_at(pkt, names.index(lname))
        for f, want in fields.items():
            got = layer.getfieldval(f)
            if isinstance(got, bytes):
                got = got.hex()
            elif not isinstance(got, (str, int)):
                try:
                    got = int(got)
                except Exception:
                    got = str(got)
            if got != want:
                problems.append("%s.%s = %r, expected %r" % (lname, f, got, want))
    in_error = False
    for k, n in enumerate(names):
        layer = layer_at(pkt, k)
        ck = "chksum" if "chksum" in layer.fields else ("cksum" if "cksum" in layer.fields else None)
        if ck and not in_error:
            p2 = Ether(raw)
            setattr(layer_at(p2, k), ck, None)
            want = getattr(layer_at(Ether(bytes(p2)), k), ck)
            got = layer.fields[ck]
            if n == "UDP" and got == 0:
                problems.append("UDP checksum 0")
            elif got != want:
                problems.append("%s checksum %#06x, scapy computes %#06x" % (n, got, want))
        if (n == "ICMP" and layer.type in (3, 4, 5, 11, 12)) or (n.startswith("ICMPv6") and getattr(layer, "type", 200) < 128):
            in_error = True
    if "max_len" in expect and len(raw) > expect["max_len"]:
        problems.append("frame is %d bytes, more than %d" % (len(raw), expect["max_len"]))
    return problems


def main():
    d = sys.argv[1]
    passed = failed = 0
    for name in sorted(os.listdir(d)):
        if not name.endswith(".bin"):
            continue
        base = name[:-4]
        with open(os.path.join(d, name), "rb") as fh:
            raw = fh.read()
        with open(os.path.join(d, base + ".expect.json")) as fh:
            expect = json.load(fh)
        problems = check(raw, expect)
        if problems:
            failed += 1
            for p in problems:
                print("%s: %s" % (base, p))
        else:
            passed += 1
    if passed + failed == 0:
        print("no frames found in %s" % d)
        sys.exit(2)
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
