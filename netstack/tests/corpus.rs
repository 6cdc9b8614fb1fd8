//! Cross-check against an independent implementation: every frame in `tests/data/corpus`
//! was built by scapy, and beside it is scapy's own dissection of the raw bytes. netstack
//! parses each frame, describes what it found in scapy's vocabulary, and must agree field
//! by field, layer by layer, checksum verdicts included.
//!
//! Regenerate with `python3 netstack/tests/data/gen_corpus.py`. This test fails (it does not
//! skip) if the corpus or a dissection is missing.

use netstack::*;
use serde_json::{Map, Value, json};
use std::fs;
use std::path::PathBuf;

struct Layer {
    name: &'static str,
    fields: Map<String, Value>,
    checksum_valid: Option<bool>,
}

fn layer(name: &'static str, fields: Value, checksum_valid: Option<bool>) -> Layer {
    let Value::Object(fields) = fields else { panic!() };
    Layer { name, fields, checksum_valid }
}

fn hex(b: &[u8]) -> Value {
    json!({ "hex": b.iter().map(|x| format!("{x:02x}")).collect::<String>() })
}

fn raw_layer(out: &mut Vec<Layer>, name: &'static str, data: &[u8]) {
    if !data.is_empty() {
        out.push(layer(name, json!({ "load": hex(data) }), None));
    }
}

fn ipv4_fields(p: &ipv4::Packet<&[u8]>) -> Value {
    json!({
        "version": p.version(), "ihl": p.header_len() / 4, "tos": p.dscp() << 2 | p.ecn(),
        "len": p.total_len(), "id": p.ident(), "flags": p.flags(), "frag": p.frag_offset(),
        "ttl": p.ttl(), "proto": u8::from(p.next_header()), "chksum": p.checksum(),
        "src": p.src_addr().to_string(), "dst": p.dst_addr().to_string(),
    })
}

fn ipv6_fields(p: &ipv6::Packet<&[u8]>) -> Value {
    json!({
        "version": p.version(), "tc": p.traffic_class(), "fl": p.flow_label(),
        "plen": p.payload_len(), "nh": u8::from(p.next_header()), "hlim": p.hop_limit(),
        "src": p.src_addr().to_string(), "dst": p.dst_addr().to_string(),
    })
}

fn tcp_options(p: &tcp::Packet<&[u8]>) -> Value {
    let mut v = vec![];
    for o in p.option_iter() {
        v.push(match o.expect("tcp option") {
            tcp::TcpOption::EndOfList => json!(["EOL", null]),
            tcp::TcpOption::NoOperation => json!(["NOP", null]),
            tcp::TcpOption::MaxSegmentSize(m) => json!(["MSS", m]),
            tcp::TcpOption::WindowScale(w) => json!(["WScale", w]),
            tcp::TcpOption::SackPermitted => json!(["SAckOK", hex(&[])]),
            tcp::TcpOption::Sack(d) => {
                let edges: Vec<u32> = d.chunks(4).map(|c| u32::from_be_bytes(c.try_into().unwrap())).collect();
                json!(["SAck", edges])
            }
            tcp::TcpOption::Timestamps { tsval, tsecr } => json!(["Timestamp", [tsval, tsecr]]),
            tcp::TcpOption::Unknown { kind, data } => json!([kind, hex(data)]),
        });
    }
    Value::Array(v)
}

fn dns_name(n: &dns::Name<'_>) -> Value {
    let mut b = [0u8; 300];
    let l = n.write_dotted(&mut b).unwrap();
    let mut s = b[..l].to_vec();
    s.push(b'.');
    hex(&s)
}

fn dns_layer(out: &mut Vec<Layer>, data: &[u8]) {
    let p = dns::Packet::new_checked(data).expect("dns header");
    let f = p.flags();
    let qd: Vec<Value> = p
        .questions()
        .map(|q| {
            let q = q.expect("question");
            json!({ "qname": dns_name(&q.name), "qtype": u16::from(q.qtype), "qclass": q.qclass })
        })
        .collect();
    let mut sections = [vec![], vec![], vec![]];
    for r in p.records() {
        let (s, r) = r.expect("record");
        let rdata = match r.data {
            dns::RecordData::A(a) => json!(a.to_string()),
            dns::RecordData::Aaaa(a) => json!(a.to_string()),
            dns::RecordData::Cname(n) => dns_name(&n),
            dns::RecordData::Other(d) => hex(d),
        };
        let v = json!({ "rrname": dns_name(&r.name), "type": u16::from(r.rtype), "rclass": r.rclass, "ttl": r.ttl, "rdata": rdata });
        sections[s as usize].push(v);
    }
    let bit = |m: u16| u8::from(f & m != 0);
    out.push(layer(
        "DNS",
        json!({
            "id": p.id(), "qr": bit(dns::flags::QR), "opcode": p.opcode(), "aa": bit(dns::flags::AA),
            "tc": bit(dns::flags::TC), "rd": bit(dns::flags::RD), "ra": bit(dns::flags::RA),
            "z": bit(dns::flags::Z), "ad": bit(dns::flags::AD), "cd": bit(dns::flags::CD),
            "rcode": u8::from(p.rcode()), "qdcount": p.question_count(), "ancount": p.answer_count(),
            "nscount": p.authority_count(), "arcount": p.additional_count(),
            "qd": qd, "an": sections[0], "ns": sections[1], "ar": sections[2],
        }),
        None,
    ));
}

/// The transport layer (and what follows) of an IP packet; `whole` is false for the first
/// fragment of a fragmented datagram (header present, checksum not checkable).
fn transport(out: &mut Vec<Layer>, proto: IpProtocol, src: IpAddr, dst: IpAddr, data: &[u8], whole: bool) {
    let cv = |v: bool| if whole { Some(v) } else { None };
    match proto {
        IpProtocol::Tcp => {
            let p = tcp::Packet::new_checked(data).expect("tcp");
            out.push(layer(
                "TCP",
                json!({
                    "sport": p.src_port(), "dport": p.dst_port(), "seq": p.seq_number(), "ack": p.ack_number(),
                    "dataofs": p.header_len() / 4, "reserved": p.reserved(), "flags": p.flags(),
                    "window": p.window_len(), "chksum": p.checksum(), "urgptr": p.urgent_at(),
                    "options": tcp_options(&p),
                }),
                cv(p.verify_checksum(src, dst)),
            ));
            raw_layer(out, "Raw", p.payload());
        }
        IpProtocol::Udp => {
            let (fields, payload, valid) = if whole {
                let p = udp::Packet::new_checked(data).expect("udp");
                let f = json!({ "sport": p.src_port(), "dport": p.dst_port(), "len": p.len(), "chksum": p.checksum() });
                (f, p.payload(), Some(p.verify_checksum(src, dst)))
            } else {
                assert!(data.len() >= 8);
                let p = udp::Packet::new_unchecked(data);
                let f = json!({ "sport": p.src_port(), "dport": p.dst_port(), "len": p.len(), "chksum": p.checksum() });
                (f, &data[8..], None)
            };
            let is_dns = fields["sport"] == 53 || fields["dport"] == 53;
            out.push(layer("UDP", fields, valid));
            if is_dns && whole {
                dns_layer(out, payload);
            } else {
                raw_layer(out, "Raw", payload);
            }
        }
        IpProtocol::Icmp => icmpv4_layers(out, data),
        IpProtocol::Icmpv6 => {
            let (IpAddr::V6(s), IpAddr::V6(d)) = (src, dst) else { panic!("icmpv6 over v4") };
            icmpv6_layers(out, data, s, d)
        }
        _ => raw_layer(out, "Raw", data),
    }
}

fn quoted_l4(out: &mut Vec<Layer>, proto: IpProtocol, d: &[u8]) {
    match proto {
        IpProtocol::Tcp if d.len() >= 8 => {
            let s = u16::from_be_bytes([d[0], d[1]]);
            let t = u16::from_be_bytes([d[2], d[3]]);
            let seq = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
            out.push(layer("TCPerror", json!({ "sport": s, "dport": t, "seq": seq }), None));
            raw_layer(out, "Raw", &d[8..]);
        }
        IpProtocol::Udp if d.len() >= 8 => {
            let p = udp::Packet::new_unchecked(d);
            out.push(layer(
                "UDPerror",
                json!({ "sport": p.src_port(), "dport": p.dst_port(), "len": p.len(), "chksum": p.checksum() }),
                None,
            ));
            raw_layer(out, "Raw", &d[8..]);
        }
        IpProtocol::Icmp if d.len() >= 8 => {
            let p = icmpv4::Packet::new_checked(d).unwrap();
            out.push(layer(
                "ICMPerror",
                json!({ "type": u8::from(p.msg_type()), "code": p.msg_code(), "chksum": p.checksum(), "id": p.echo_ident(), "seq": p.echo_seq_no() }),
                None,
            ));
            raw_layer(out, "Raw", &d[8..]);
        }
        _ => raw_layer(out, "Raw", d),
    }
}

fn icmpv4_layers(out: &mut Vec<Layer>, data: &[u8]) {
    let p = icmpv4::Packet::new_checked(data).expect("icmp");
    let mut f = json!({ "type": u8::from(p.msg_type()), "code": p.msg_code(), "chksum": p.checksum() });
    match p.msg_type() {
        icmpv4::Message::EchoRequest | icmpv4::Message::EchoReply => {
            f["id"] = json!(p.echo_ident());
            f["seq"] = json!(p.echo_seq_no());
        }
        icmpv4::Message::DstUnreachable if p.msg_code() == 4 => f["nexthopmtu"] = json!(p.next_hop_mtu()),
        icmpv4::Message::ParamProblem => f["ptr"] = json!(p.pointer()),
        _ => {}
    }
    out.push(layer("ICMP", f, Some(p.verify_checksum())));
    match p.quoted_packet() {
        Ok(q) => {
            out.push(layer("IPerror", ipv4_fields(&q), None));
            quoted_l4(out, q.next_header(), q.payload());
        }
        Err(_) => raw_layer(out, "Raw", p.data()),
    }
}

fn icmpv6_layers(out: &mut Vec<Layer>, data: &[u8], src: Ipv6Addr, dst: Ipv6Addr) {
    let p = icmpv6::Packet::new_checked(data).expect("icmpv6");
    let ok = Some(p.verify_checksum(src, dst));
    let mut f = json!({ "type": u8::from(p.msg_type()), "code": p.msg_code(), "cksum": p.checksum() });
    let name = match p.msg_type() {
        icmpv6::Message::EchoRequest | icmpv6::Message::EchoReply => {
            f["id"] = json!(p.echo_ident());
            f["seq"] = json!(p.echo_seq_no());
            f["data"] = hex(p.data());
            if p.msg_type() == icmpv6::Message::EchoRequest { "ICMPv6EchoRequest" } else { "ICMPv6EchoReply" }
        }
        icmpv6::Message::DstUnreachable => "ICMPv6DestUnreach",
        icmpv6::Message::PktTooBig => {
            f["mtu"] = json!(p.mtu());
            "ICMPv6PacketTooBig"
        }
        icmpv6::Message::TimeExceeded => "ICMPv6TimeExceeded",
        icmpv6::Message::ParamProblem => {
            f["ptr"] = json!(p.pointer());
            "ICMPv6ParamProblem"
        }
        icmpv6::Message::NeighborSolicit => {
            f["tgt"] = json!(p.target_addr().unwrap().to_string());
            "ICMPv6ND_NS"
        }
        icmpv6::Message::NeighborAdvert => {
            let fl = p.na_flags();
            f["R"] = json!(u8::from(fl & icmpv6::na_flags::ROUTER != 0));
            f["S"] = json!(u8::from(fl & icmpv6::na_flags::SOLICITED != 0));
            f["O"] = json!(u8::from(fl & icmpv6::na_flags::OVERRIDE != 0));
            f["tgt"] = json!(p.target_addr().unwrap().to_string());
            "ICMPv6ND_NA"
        }
        other => panic!("icmpv6 type {other:?} not in corpus handler"),
    };
    out.push(layer(name, f, ok));
    if let Ok(q) = p.quoted_packet() {
        out.push(layer("IPerror6", ipv6_fields(&q), None));
        quoted_l4(out, q.next_header(), q.payload());
        return;
    }
    for o in p.ndp_options() {
        match o.expect("ndp option") {
            icmpv6::NdpOption::SourceLinkLayerAddr(a) => {
                out.push(layer("ICMPv6NDOptSrcLLAddr", json!({ "type": 1, "len": 1, "lladdr": a.to_string() }), None))
            }
            icmpv6::NdpOption::TargetLinkLayerAddr(a) => {
                out.push(layer("ICMPv6NDOptDstLLAddr", json!({ "type": 2, "len": 1, "lladdr": a.to_string() }), None))
            }
            other => panic!("ndp option {other:?} not in corpus handler"),
        }
    }
    if !matches!(
        p.msg_type(),
        icmpv6::Message::NeighborSolicit
            | icmpv6::Message::NeighborAdvert
            | icmpv6::Message::EchoRequest
            | icmpv6::Message::EchoReply
    ) {
        raw_layer(out, "Raw", p.data());
    }
}

/// netstack's description of a frame, in scapy's vocabulary.
fn ours(raw: &[u8]) -> Vec<Layer> {
    let mut out = vec![];
    let f = ethernet::Frame::new_checked(raw).expect("ethernet");
    out.push(layer(
        "Ether",
        json!({ "dst": f.dst_addr().to_string(), "src": f.src_addr().to_string(), "type": u16::from(f.ethertype()) }),
        None,
    ));
    let padding;
    match f.ethertype() {
        ethernet::EtherType::Arp => {
            let p = arp::Packet::new_checked(f.payload()).expect("arp");
            let r = arp::Repr::parse(&p).expect("arp repr");
            out.push(layer(
                "ARP",
                json!({
                    "hwtype": u16::from(p.hardware_type()), "ptype": u16::from(p.protocol_type()),
                    "hwlen": p.hardware_len(), "plen": p.protocol_len(), "op": u16::from(r.operation),
                    "hwsrc": r.source_hardware_addr.to_string(), "psrc": r.source_protocol_addr.to_string(),
                    "hwdst": r.target_hardware_addr.to_string(), "pdst": r.target_protocol_addr.to_string(),
                }),
                None,
            ));
            padding = &f.payload()[arp::ETHERNET_IPV4_LEN..];
        }
        ethernet::EtherType::Ipv4 => {
            let p = ipv4::Packet::new_checked(f.payload()).expect("ipv4");
            out.push(layer("IP", ipv4_fields(&p), Some(p.verify_checksum())));
            if p.is_non_first_fragment() {
                raw_layer(&mut out, "Raw", p.payload());
            } else {
                transport(
                    &mut out,
                    p.next_header(),
                    p.src_addr().into(),
                    p.dst_addr().into(),
                    p.payload(),
                    !p.is_fragment(),
                );
            }
            padding = &f.payload()[usize::from(p.total_len())..];
        }
        ethernet::EtherType::Ipv6 => {
            let p = ipv6::Packet::new_checked(f.payload()).expect("ipv6");
            out.push(layer("IPv6", ipv6_fields(&p), None));
            let (u, rest) = p.upper_layer_payload().expect("ext headers");
            if u.ext_headers > 0 {
                let mut e = json!({ "count": u.ext_headers, "size": u.offset, "nh": u8::from(u.protocol) });
                if let Some(fr) = u.fragment {
                    e["offset"] = json!(fr.offset);
                    e["m"] = json!(u8::from(fr.more_frags));
                    e["id"] = json!(fr.ident);
                }
                out.push(layer("IPv6ExtHeaders", e, None));
            }
            if u.is_non_first_fragment() {
                raw_layer(&mut out, "Raw", rest);
            } else {
                transport(
                    &mut out,
                    u.protocol,
                    p.src_addr().into(),
                    p.pseudo_header_dst().into(),
                    rest,
                    u.fragment.is_none(),
                );
            }
            padding = &f.payload()[ipv6::HEADER_LEN + usize::from(p.payload_len())..];
        }
        _ => padding = f.payload(),
    }
    // scapy calls trailing bytes after an unknown EtherType "Raw", after a known one "Padding".
    if matches!(f.ethertype(), ethernet::EtherType::Unknown(_)) {
        raw_layer(&mut out, "Raw", padding);
    } else {
        raw_layer(&mut out, "Padding", padding);
    }
    out
}

/// Collapse scapy's IPv6 extension-header layers into one pseudo-layer like ours.
fn collapse_ext_headers(layers: &[Value]) -> Vec<Value> {
    let mut out: Vec<Value> = vec![];
    for l in layers {
        let name = l["layer"].as_str().unwrap();
        let f = &l["fields"];
        let (size, frag) = match name {
            "IPv6ExtHdrHopByHop" | "IPv6ExtHdrDestOpt" | "IPv6ExtHdrRouting" => {
                ((f["len"].as_u64().unwrap() + 1) * 8, false)
            }
            "IPv6ExtHdrFragment" => (8, true),
            _ => {
                out.push(l.clone());
                continue;
            }
        };
        if out.last().map(|x| x["layer"] != "IPv6ExtHeaders").unwrap_or(true) {
            out.push(json!({ "layer": "IPv6ExtHeaders", "fields": { "count": 0, "size": 0 } }));
        }
        let e = out.last_mut().unwrap();
        let c = e["fields"]["count"].as_u64().unwrap();
        let s = e["fields"]["size"].as_u64().unwrap();
        e["fields"]["count"] = json!(c + 1);
        e["fields"]["size"] = json!(s + size);
        e["fields"]["nh"] = f["nh"].clone();
        if frag {
            for k in ["offset", "m", "id"] {
                e["fields"][k] = f[k].clone();
            }
        }
    }
    out
}

/// `ours` must be a sub-structure of `theirs`: every key we give exists there and matches.
fn subset(ours: &Value, theirs: &Value, path: &str) -> std::result::Result<(), String> {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let t = b.get(k).ok_or_else(|| format!("{path}.{k}: scapy has no such field"))?;
                subset(v, t, &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                return Err(format!("{path}: {} items vs scapy's {}", a.len(), b.len()));
            }
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                subset(x, y, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        (a, b) if a == b => Ok(()),
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => Ok(()),
        (a, b) => Err(format!("{path}: netstack {a} vs scapy {b}")),
    }
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/corpus")
}

#[test]
fn corpus_matches_scapy_dissection() {
    let dir = data_dir();
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus directory {} missing ({e}); run tests/data/gen_corpus.py", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|n| n.strip_suffix(".bin").map(str::to_owned))
        .collect();
    names.sort();
    assert!(names.len() >= 40, "corpus has only {} frames; run tests/data/gen_corpus.py", names.len());
    let mut failures = vec![];
    let mut seen_layers = std::collections::BTreeSet::new();
    for name in &names {
        let raw = fs::read(dir.join(format!("{name}.bin"))).unwrap();
        let json_path = dir.join(format!("{name}.json"));
        let text = fs::read_to_string(&json_path).unwrap_or_else(|e| {
            panic!("dissection {} missing ({e}); run tests/data/gen_corpus.py", json_path.display())
        });
        let diss: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(diss["length"].as_u64().unwrap() as usize, raw.len(), "{name}: length");
        let theirs = collapse_ext_headers(diss["layers"].as_array().unwrap());
        let mine = ours(&raw);
        let mut errs = vec![];
        if mine.len() != theirs.len() {
            errs.push(format!(
                "layers: netstack {:?} vs scapy {:?}",
                mine.iter().map(|l| l.name).collect::<Vec<_>>(),
                theirs.iter().map(|l| l["layer"].as_str().unwrap()).collect::<Vec<_>>()
            ));
        }
        for (m, t) in mine.iter().zip(&theirs) {
            seen_layers.insert(m.name);
            if m.name != t["layer"] {
                errs.push(format!("layer {} vs scapy {}", m.name, t["layer"]));
                continue;
            }
            if let Err(e) = subset(&Value::Object(m.fields.clone()), &t["fields"], m.name) {
                errs.push(e);
            }
            match (m.checksum_valid, t.get("checksum_valid").and_then(Value::as_bool)) {
                (Some(a), Some(b)) if a != b => errs.push(format!("{}: checksum valid netstack {a} scapy {b}", m.name)),
                (None, Some(_)) if !name.contains("fragment") => {
                    errs.push(format!("{}: scapy judged a checksum netstack did not", m.name))
                }
                _ => {}
            }
        }
        if !errs.is_empty() {
            failures.push(format!("{name}:\n  {}", errs.join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} frames disagree with scapy:\n{}",
        failures.len(),
        names.len(),
        failures.join("\n")
    );
    // Every format is covered.
    for want in [
        "Ether",
        "ARP",
        "IP",
        "IPv6",
        "IPv6ExtHeaders",
        "TCP",
        "UDP",
        "DNS",
        "ICMP",
        "IPerror",
        "TCPerror",
        "UDPerror",
        "ICMPerror",
        "ICMPv6EchoRequest",
        "ICMPv6EchoReply",
        "ICMPv6DestUnreach",
        "ICMPv6PacketTooBig",
        "ICMPv6TimeExceeded",
        "ICMPv6ParamProblem",
        "IPerror6",
        "ICMPv6ND_NS",
        "ICMPv6ND_NA",
        "ICMPv6NDOptSrcLLAddr",
        "ICMPv6NDOptDstLLAddr",
        "Raw",
        "Padding",
    ] {
        assert!(seen_layers.contains(want), "corpus lacks a {want} layer");
    }
    println!("{} frames agree with scapy", names.len());
}
