//! The appliance's Qubes link (`portcullis::qubes_link`) on real vchan endpoints against
//! libxenvchan peers in the simulated Xen: dom0's qrexec daemon and `qrexec-client` (written
//! here from qubes-protocols.md §2), and dom0's QubesDB daemon (§1). Hostile inputs: garbage
//! on either channel costs that connection only, and the link comes back.

use std::net::{IpAddr, Ipv4Addr};

use portcullis::qubes_link::{DataFailure, LinkError, QubesEvent, QubesLink};
use qubes::qubesdb::store::DefaultStore;
use tests::sim::Sim;
use tests::sim::gnttab::WINDOW_START;
use tests::sim::vchan_peer::{ServerOpts, SimSharePool, VchanGuest, VchanPeer};
use xen_front::platform::Gfn;

type Link = QubesLink<SimSharePool>;

fn window(k: u64) -> (Gfn, u32) {
    (Gfn(WINDOW_START.0 + 33 * k), 33)
}

fn new_link(qubesdb: bool, qrexec: bool) -> Box<Link> {
    let mut link = Box::new(Link::new(window(0), [window(1), window(2), window(3), window(4)]));
    link.enable(qubesdb, qrexec);
    link
}

struct World {
    sim: Sim,
    g: VchanGuest,
    link: Box<Link>,
    store: Box<DefaultStore>,
    events: Vec<QubesEvent>,
}

impl World {
    fn new(qubesdb: bool, qrexec: bool) -> World {
        let sim = Sim::new();
        let g = VchanGuest::new(&sim, "fw");
        World { sim, g, link: new_link(qubesdb, qrexec), store: Box::new(DefaultStore::new()), events: vec![] }
    }

    /// Polls the link (and xenstored) a few times, collecting its events.
    fn run(&mut self) {
        for _ in 0..3 {
            let me = Some(self.g.domid());
            self.link.poll(&mut self.g.io(), &mut self.store, me);
            self.g.sim.pump(&self.g.dom, &mut self.g.xs, self.g.now);
            self.link.poll(&mut self.g.io(), &mut self.store, me);
            while let Some(ev) = self.link.next_event(&mut self.store) {
                self.events.push(ev);
            }
        }
    }

    fn take(&mut self) -> Vec<QubesEvent> {
        std::mem::take(&mut self.events)
    }
}

fn hdr(t: u32, len: u32) -> Vec<u8> {
    let mut v = t.to_le_bytes().to_vec();
    v.extend_from_slice(&len.to_le_bytes());
    v
}

fn msg(t: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = hdr(t, payload.len() as u32);
    v.extend_from_slice(payload);
    v
}

const HELLO: u32 = 0x300;
const EXEC_CMDLINE: u32 = 0x200;
const CONNECTION_TERMINATED: u32 = 0x211;
const STDIN: u32 = 0x190;
const STDOUT: u32 = 0x191;
const STDERR: u32 = 0x192;
const EXIT_CODE: u32 = 0x193;

/// Reads whole qrexec messages the peer has, as (type, payload).
fn read_msgs(peer: &mut VchanPeer, buf: &mut Vec<u8>) -> Vec<(u32, Vec<u8>)> {
    let mut tmp = [0u8; 70_000];
    loop {
        let n = peer.read(&mut tmp);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let mut out = vec![];
    while buf.len() >= 8 {
        let t = u32::from_le_bytes(buf[0..4].try_into().unwrap());
        let len = u32::from_le_bytes(buf[4..8].try_into().unwrap()) as usize;
        if buf.len() < 8 + len {
            break;
        }
        out.push((t, buf[8..8 + len].to_vec()));
        buf.drain(..8 + len);
    }
    out
}

/// dom0's qrexec-daemon connected and through the handshake at `version`.
fn qrexec_daemon(w: &mut World, version: u32) -> (VchanPeer, Vec<u8>) {
    w.run();
    let mut ctrl = VchanPeer::client(&w.sim, w.sim.dom0(), w.g.domid(), 512).expect("our nodes are there");
    w.run();
    let mut buf = vec![];
    let got = read_msgs(&mut ctrl, &mut buf);
    assert_eq!(got, vec![(HELLO, 4u32.to_le_bytes().to_vec())], "the agent says HELLO first, version 4");
    assert_eq!(ctrl.write(&msg(HELLO, &version.to_le_bytes())), 12);
    w.run();
    assert!(w.take().contains(&QubesEvent::QrexecConnected { version: version.min(4) }));
    (ctrl, buf)
}

/// Runs `service` as dom0's qrexec-client would: data server on `port`, EXEC_CMDLINE, HELLO,
/// stdin, then collects (stdout, stderr, exit code) and the CONNECTION_TERMINATED port.
fn run_service(
    w: &mut World,
    ctrl: &mut VchanPeer,
    ctrl_buf: &mut Vec<u8>,
    port: u32,
    service: &str,
    stdin: &[u8],
) -> (Vec<u8>, Vec<u8>, Option<i32>, Option<u32>) {
    let mut data = VchanPeer::server(&w.sim, w.sim.dom0(), w.g.domid(), port, (65536, 65536), ServerOpts::default());
    let mut p = 0u32.to_le_bytes().to_vec();
    p.extend_from_slice(&port.to_le_bytes());
    p.extend_from_slice(format!("user:QUBESRPC {service} dom0\0").as_bytes());
    ctrl.write(&msg(EXEC_CMDLINE, &p));
    for _ in 0..5 {
        w.g.now += 100_000_000;
        w.run();
    }
    assert!(data.server_accept(), "the agent connected to the data port");
    data.write(&msg(HELLO, &4u32.to_le_bytes()));
    if !stdin.is_empty() {
        data.write(&msg(STDIN, stdin));
    }
    data.write(&hdr(STDIN, 0));
    let (mut out, mut err, mut code, mut term) = (vec![], vec![], None, None);
    let mut dbuf = vec![];
    for _ in 0..10 {
        w.run();
        for (t, pl) in read_msgs(&mut data, &mut dbuf) {
            match t {
                HELLO => {}
                STDOUT => out.extend(pl),
                STDERR => err.extend(pl),
                EXIT_CODE => code = Some(i32::from_le_bytes(pl[..4].try_into().unwrap())),
                other => panic!("unexpected data message {other:#x}"),
            }
        }
        for (t, pl) in read_msgs(ctrl, ctrl_buf) {
            assert_eq!((t, pl.len()), (CONNECTION_TERMINATED, 8));
            assert_eq!(u32::from_le_bytes(pl[0..4].try_into().unwrap()), 0);
            term = Some(u32::from_le_bytes(pl[4..8].try_into().unwrap()));
        }
    }
    assert!(data.close().is_empty(), "the agent unmapped the data pages");
    (out, err, code, term)
}

#[test]
fn qrexec_handshake_then_wait_for_session_set_date_time_and_an_unknown_service() {
    for version in [3, 4] {
        let mut w = World::new(false, true);
        let (mut ctrl, mut cbuf) = qrexec_daemon(&mut w, version);
        let (out, err, code, term) = run_service(&mut w, &mut ctrl, &mut cbuf, 513, "qubes.WaitForSession", b"");
        assert_eq!((out, err, code, term), (vec![], vec![], Some(0), Some(513)));
        let evs = w.take();
        assert!(evs.contains(&QubesEvent::QrexecFinished { id: 0, exit_code: 0 }), "{evs:?}");

        let (_, err, code, term) =
            run_service(&mut w, &mut ctrl, &mut cbuf, 514, "qubes.SetDateTime", b"2030-01-02T03:04:05+00:00\n");
        assert_eq!((err, code, term), (vec![], Some(0), Some(514)));
        assert!(w.take().contains(&QubesEvent::WallClock(1_893_553_445)));

        let (_, err, code, _) = run_service(&mut w, &mut ctrl, &mut cbuf, 515, "qubes.NoSuchService", b"");
        assert_eq!(code, Some(1));
        assert!(String::from_utf8_lossy(&err).contains("not supported"), "{err:?}");
        // Every data channel's pages are back: only the control channel's three are shared.
        assert_eq!(w.g.pool.shared, 3);
    }
}

#[test]
fn a_malformed_control_message_drops_that_connection_and_the_agent_listens_again() {
    let mut w = World::new(false, true);
    let (mut ctrl, _) = qrexec_daemon(&mut w, 4);
    // A message far longer than any the protocol has.
    ctrl.write(&hdr(EXEC_CMDLINE, 0x7fff_ffff));
    w.run();
    let evs = w.take();
    assert!(evs.iter().any(|e| matches!(e, QubesEvent::QrexecLost(LinkError::Agent(_)))), "{evs:?}");
    assert!(ctrl.is_open() == 0, "our side closed");
    assert!(ctrl.close().is_empty());
    for _ in 0..5 {
        w.g.now += 50_000_000;
        w.run();
    }
    assert!(w.take().contains(&QubesEvent::QrexecListening));
    assert_eq!(w.g.pool.shared, 3, "old pages released, new ones shared");
    let (mut ctrl, mut cbuf) = qrexec_daemon(&mut w, 4);
    let (_, _, code, _) = run_service(&mut w, &mut ctrl, &mut cbuf, 513, "qubes.WaitForSession", b"");
    assert_eq!(code, Some(0));
}

#[test]
fn dom0_closing_the_control_channel_is_survived_too() {
    let mut w = World::new(false, true);
    let (mut ctrl, _) = qrexec_daemon(&mut w, 3);
    ctrl.close();
    for _ in 0..5 {
        w.g.now += 50_000_000;
        w.run();
    }
    let evs = w.take();
    assert!(evs.iter().any(|e| matches!(e, QubesEvent::QrexecLost(_))), "{evs:?}");
    assert!(evs.contains(&QubesEvent::QrexecListening));
    let (mut ctrl, mut cbuf) = qrexec_daemon(&mut w, 4);
    assert_eq!(run_service(&mut w, &mut ctrl, &mut cbuf, 513, "qubes.WaitForSession", b"").2, Some(0));
}

#[test]
fn garbage_on_a_data_channel_drops_only_that_request() {
    let mut w = World::new(false, true);
    let (mut ctrl, mut cbuf) = qrexec_daemon(&mut w, 4);
    let mut data = VchanPeer::server(&w.sim, w.sim.dom0(), w.g.domid(), 513, (65536, 65536), ServerOpts::default());
    let mut p = 0u32.to_le_bytes().to_vec();
    p.extend_from_slice(&513u32.to_le_bytes());
    p.extend_from_slice(b"user:QUBESRPC qubes.SetDateTime dom0\0");
    ctrl.write(&msg(EXEC_CMDLINE, &p));
    for _ in 0..3 {
        w.g.now += 100_000_000;
        w.run();
    }
    assert!(data.server_accept());
    data.write(&hdr(0xdead_beef, 0xffff_ffff));
    w.run();
    let evs = w.take();
    assert!(
        evs.iter().any(|e| matches!(e, QubesEvent::QrexecDataFailed { id: 0, reason: DataFailure::Protocol(_) })),
        "{evs:?}"
    );
    assert_eq!(data.is_open(), 0, "the agent closed the data channel");
    let term = read_msgs(&mut ctrl, &mut cbuf);
    assert_eq!(term.len(), 1, "dom0 is told the port is free: {term:?}");
    assert!(data.close().is_empty());
    // The control channel is still up and serves the next request.
    assert_eq!(run_service(&mut w, &mut ctrl, &mut cbuf, 514, "qubes.WaitForSession", b"").2, Some(0));
    assert!(!w.take().iter().any(|e| matches!(e, QubesEvent::QrexecLost(_))));
}

#[test]
fn a_request_naming_a_reserved_domain_is_refused_without_a_vchan() {
    let mut w = World::new(false, true);
    let (mut ctrl, mut cbuf) = qrexec_daemon(&mut w, 4);
    let mut p = 0x7ff0u32.to_le_bytes().to_vec();
    p.extend_from_slice(&600u32.to_le_bytes());
    p.extend_from_slice(b"user:QUBESRPC qubes.WaitForSession dom0\0");
    ctrl.write(&msg(EXEC_CMDLINE, &p));
    w.run();
    let evs = w.take();
    assert!(evs.contains(&QubesEvent::QrexecDataFailed { id: 0, reason: DataFailure::BadDomain(0x7ff0) }), "{evs:?}");
    let term = read_msgs(&mut ctrl, &mut cbuf);
    assert_eq!(term.len(), 1);
    assert_eq!(u32::from_le_bytes(term[0].1[4..8].try_into().unwrap()), 600);
}

// ----- QubesDB ------------------------------------------------------------------------------

const QDB_WRITE: u8 = 1;
const QDB_MULTIREAD: u8 = 2;
const QDB_RM: u8 = 4;
const QDB_RESP_OK: u8 = 7;
const QDB_RESP_MULTIREAD: u8 = 11;

fn qdb(t: u8, path: &str, data: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 72];
    v[0] = t;
    v[1..1 + path.len()].copy_from_slice(path.as_bytes());
    v[68..72].copy_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    v
}

/// Whole QubesDB messages the peer has, as (type, path, data).
fn qdb_read(peer: &mut VchanPeer, buf: &mut Vec<u8>) -> Vec<(u8, String, Vec<u8>)> {
    let mut tmp = [0u8; 8192];
    loop {
        let n = peer.read(&mut tmp);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let mut out = vec![];
    while buf.len() >= 72 {
        let len = u32::from_le_bytes(buf[68..72].try_into().unwrap()) as usize;
        if buf.len() < 72 + len {
            break;
        }
        let end = buf[1..65].iter().position(|&b| b == 0).unwrap_or(64);
        out.push((buf[0], String::from_utf8_lossy(&buf[1..1 + end]).into_owned(), buf[72..72 + len].to_vec()));
        buf.drain(..72 + len);
    }
    out
}

const KEYS: &[(&str, &str)] = &[
    ("/qubes-ip", "10.137.0.6"),
    ("/qubes-gateway", "10.137.0.1"),
    ("/qubes-netmask", "255.255.255.255"),
    ("/qubes-primary-dns", "10.139.1.1"),
    ("/qubes-secondary-dns", "10.139.1.2"),
    ("/qubes-netvm-gateway", "10.137.0.6"),
    ("/qubes-netvm-primary-dns", "10.139.1.1"),
    ("/qubes-netvm-secondary-dns", "10.139.1.2"),
    ("/connected-ips", "10.137.0.20 10.137.0.21"),
    ("/qubes-iptables-error", ""),
    ("/qubes-firewall/10.137.0.20/policy", "drop"),
    ("/qubes-firewall/10.137.0.20/0000", "action=accept proto=tcp dstports=443-443"),
    ("/qubes-firewall/10.137.0.20/0001", "action=accept specialtarget=dns"),
    ("/qubes-firewall/10.137.0.20", ""),
    ("/qubes-firewall/10.137.0.21/policy", "drop"),
    ("/qubes-firewall/10.137.0.21/0000", "action=accept proto=tcp dstports=80-70"),
    ("/qubes-firewall/10.137.0.21", ""),
];

/// dom0's qubesdb-daemon: serves port 111, answers the MULTIREAD with `keys` (reversed).
fn qubesdb_daemon(w: &mut World, keys: &[(&str, &str)]) -> (VchanPeer, Vec<u8>) {
    let mut db = VchanPeer::server(&w.sim, w.sim.dom0(), w.g.domid(), 111, (4096, 4096), ServerOpts::default());
    for _ in 0..3 {
        w.g.now += 100_000_000;
        w.run();
    }
    assert!(db.server_accept(), "the link connected");
    let mut buf = vec![];
    assert_eq!(qdb_read(&mut db, &mut buf), vec![(QDB_MULTIREAD, String::new(), vec![])]);
    let mut dump = vec![];
    for (k, v) in keys.iter().rev() {
        dump.extend(qdb(QDB_RESP_MULTIREAD, k, v.as_bytes()));
    }
    dump.extend(qdb(QDB_RESP_MULTIREAD, "", b""));
    let mut sent = 0;
    while sent < dump.len() {
        sent += db.write(&dump[sent..]);
        w.run();
    }
    w.run();
    (db, buf)
}

/// dom0 pushes `m` and expects RESP_OK for `path`.
fn push(w: &mut World, db: &mut VchanPeer, buf: &mut Vec<u8>, m: Vec<u8>, path: &str) -> Vec<(u8, String, Vec<u8>)> {
    assert_eq!(db.write(&m), m.len());
    w.run();
    let got = qdb_read(db, buf);
    assert!(got.iter().any(|(t, p, _)| *t == QDB_RESP_OK && p == path), "no RESP_OK for {path}: {got:?}");
    got
}

#[test]
fn qubesdb_sync_gives_the_configuration_checks_rules_and_reports_the_bad_set() {
    let mut w = World::new(true, false);
    let (mut db, mut buf) = qubesdb_daemon(&mut w, KEYS);
    let evs = w.take();
    let ip = |s: &str| IpAddr::V4(s.parse::<Ipv4Addr>().unwrap());
    assert!(evs.contains(&QubesEvent::DbConnected));
    assert!(evs.contains(&QubesEvent::DbSynced { keys: KEYS.len() }), "{evs:?}");
    let up = evs.iter().find_map(|e| if let QubesEvent::Uplink(u) = e { *u } else { None }).expect("uplink");
    assert_eq!((up.ip, up.gateway), ("10.137.0.6".parse().unwrap(), "10.137.0.1".parse().unwrap()));
    assert_eq!(up.primary_dns, Some("10.139.1.1".parse().unwrap()));
    assert!(evs.iter().any(|e| matches!(e, QubesEvent::ConnectedIps { count: 2, .. })));
    assert!(evs.contains(&QubesEvent::RulesCommitted { client: ip("10.137.0.20"), rules: 2 }), "{evs:?}");
    assert!(evs.iter().any(|e| matches!(e, QubesEvent::RulesFailed { client, .. } if *client == ip("10.137.0.21"))));
    // The reason went to dom0.
    let got = qdb_read(&mut db, &mut buf);
    let err = got.iter().find(|(t, p, _)| *t == QDB_WRITE && p == "/qubes-iptables-error").expect("error written");
    let text = String::from_utf8_lossy(&err.2).into_owned();
    assert!(text.starts_with("10.137.0.21: ") && text.len() > 14, "{text:?}");
    db.write(&qdb(QDB_RESP_OK, "/qubes-iptables-error", b""));

    // dom0 fixes the rule set the way it rewrites rules (§5.1): every step is acknowledged.
    push(&mut w, &mut db, &mut buf, qdb(QDB_RM, "/qubes-firewall/10.137.0.21/", b""), "/qubes-firewall/10.137.0.21/");
    push(
        &mut w,
        &mut db,
        &mut buf,
        qdb(QDB_WRITE, "/qubes-firewall/10.137.0.21/policy", b"accept"),
        "/qubes-firewall/10.137.0.21/policy",
    );
    let got = push(
        &mut w,
        &mut db,
        &mut buf,
        qdb(QDB_WRITE, "/qubes-firewall/10.137.0.21", b""),
        "/qubes-firewall/10.137.0.21",
    );
    let evs = w.take();
    assert!(evs.contains(&QubesEvent::RulesCommitted { client: ip("10.137.0.21"), rules: 0 }), "{evs:?}");
    assert!(
        got.iter().any(|(t, p, d)| *t == QDB_WRITE && p == "/qubes-iptables-error" && d.is_empty()),
        "emptied once no rule set fails: {got:?}"
    );
    // A plain key change is acknowledged and reported.
    push(&mut w, &mut db, &mut buf, qdb(QDB_WRITE, "/qubes-gateway", b"10.137.0.2"), "/qubes-gateway");
    let evs = w.take();
    assert!(evs.iter().any(|e| matches!(e, QubesEvent::Uplink(Some(u)) if u.gateway == Ipv4Addr::new(10, 137, 0, 2))));
}

#[test]
fn qubesdb_garbage_drops_the_session_and_the_link_reconnects() {
    let mut w = World::new(true, false);
    let (mut db, _) = qubesdb_daemon(&mut w, &KEYS[..3]);
    assert!(w.take().contains(&QubesEvent::DbSynced { keys: 3 }));
    // A header announcing more than QDB_MAX_DATA.
    let mut bad = qdb(QDB_WRITE, "/x", b"");
    bad[68..72].copy_from_slice(&100_000u32.to_le_bytes());
    db.write(&bad);
    w.run();
    let evs = w.take();
    assert!(evs.iter().any(|e| matches!(e, QubesEvent::DbLost(LinkError::Db(_)))), "{evs:?}");
    assert_eq!(db.is_open(), 0);
    assert!(db.close().is_empty(), "our mappings are gone");
    // A second daemon (dom0 restarted it); the link is back after its 1 s delay.
    w.g.now += 1_000_000_000;
    let (_db, _) = qubesdb_daemon(&mut w, &KEYS[..5]);
    let evs = w.take();
    assert!(evs.contains(&QubesEvent::DbSynced { keys: 5 }), "{evs:?}");
    assert_eq!(w.link.counters.db_sessions, 2);
}

#[test]
fn qubesdb_peer_that_vanishes_is_noticed() {
    let mut w = World::new(true, false);
    let (mut db, _) = qubesdb_daemon(&mut w, &KEYS[..2]);
    db.close();
    w.run();
    assert!(w.take().iter().any(|e| matches!(e, QubesEvent::DbLost(_))));
}

#[test]
fn a_data_port_nobody_serves_times_out_and_is_released() {
    let mut w = World::new(false, true);
    let (mut ctrl, mut cbuf) = qrexec_daemon(&mut w, 4);
    let mut p = 0u32.to_le_bytes().to_vec();
    p.extend_from_slice(&777u32.to_le_bytes());
    p.extend_from_slice(b"user:QUBESRPC qubes.WaitForSession dom0\0");
    ctrl.write(&msg(EXEC_CMDLINE, &p));
    w.run();
    assert!(w.take().contains(&QubesEvent::QrexecRequest { id: 0, port: 777 }));
    assert!(read_msgs(&mut ctrl, &mut cbuf).is_empty(), "still trying");
    for _ in 0..11 {
        w.g.now += 1_000_000_000;
        w.run();
    }
    let evs = w.take();
    assert!(
        evs.iter().any(|e| matches!(
            e,
            QubesEvent::QrexecDataFailed {
                id: 0,
                reason: DataFailure::Vchan(Some(xen_front::vchan::Error::ConnectTimeout))
            }
        )),
        "{evs:?}"
    );
    let term = read_msgs(&mut ctrl, &mut cbuf);
    assert_eq!(term.len(), 1);
    assert_eq!(u32::from_le_bytes(term[0].1[4..8].try_into().unwrap()), 777);
    // The slot is free again.
    assert_eq!(run_service(&mut w, &mut ctrl, &mut cbuf, 513, "qubes.WaitForSession", b"").2, Some(0));
}
