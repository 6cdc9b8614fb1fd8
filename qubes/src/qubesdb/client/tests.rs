use std::vec::Vec;

use super::*;
use crate::testing::Pipe;

type TestStore = Store<64, 16384>;

fn msg(t: u8, path: &str, data: &[u8]) -> Vec<u8> {
    let mut b = std::vec![0u8; 72 + data.len()];
    b[0] = t;
    b[1..1 + path.len()].copy_from_slice(path.as_bytes());
    b[68..72].copy_from_slice(&(data.len() as u32).to_le_bytes());
    b[72..].copy_from_slice(data);
    b
}

const WRITE: u8 = 1;
const MULTIREAD: u8 = 2;
const RM: u8 = 4;
const RESP_OK: u8 = 7;
const RESP_ERROR: u8 = 9;
const RESP_MULTIREAD: u8 = 11;

struct Rig {
    client: std::boxed::Box<Client>,
    store: std::boxed::Box<TestStore>,
    vm: Pipe,
    dom0: Pipe,
    /// Bytes dom0 still has to send (written as the ring drains).
    backlog: Vec<u8>,
}

impl Rig {
    fn new(ring: usize) -> Rig {
        let (vm, dom0) = Pipe::pair(ring);
        Rig {
            client: std::boxed::Box::new(Client::new()),
            store: std::boxed::Box::new(TestStore::new()),
            vm,
            dom0,
            backlog: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.backlog.extend_from_slice(bytes);
    }

    /// Polls until nothing moves; returns the events, or the first error.
    fn run(&mut self) -> Result<Vec<Event>, Error> {
        let mut events = Vec::new();
        let mut idle = 0;
        while idle < 3 {
            let n = self.dom0.write(&self.backlog);
            self.backlog.drain(..n);
            match self.client.poll(&mut self.vm, &mut *self.store)? {
                Some(e) => {
                    events.push(e);
                    idle = 0;
                }
                None => idle += usize::from(n == 0),
            }
        }
        Ok(events)
    }

    /// Connects and completes a sync of `entries` (sent in reverse order, like dom0).
    fn synced(ring: usize, entries: &[(&str, &[u8])]) -> Rig {
        let mut rig = Rig::new(ring);
        assert_eq!(rig.client.poll(&mut rig.vm, &mut *rig.store), Ok(Some(Event::SyncStarted)));
        assert_eq!(rig.dom0.read_all(), msg(MULTIREAD, "", b""));
        for (k, v) in entries.iter().rev() {
            rig.send(&msg(RESP_MULTIREAD, k, v));
        }
        rig.send(&msg(RESP_MULTIREAD, "", b""));
        let events = rig.run().unwrap();
        assert_eq!(events.last(), Some(&Event::Synced));
        assert_eq!(events.len(), entries.len() + 1);
        assert!(rig.client.is_synced());
        rig
    }
}

fn p(s: &str) -> Path {
    Path::try_from(s).unwrap()
}

#[test]
fn full_sync_streams_values_larger_than_the_ring() {
    let big = std::vec![b'b'; 3071];
    let rig = Rig::synced(1024, &[("/a", b"1"), ("/big", &big), ("/qubes-ip", b"10.137.0.5")]);
    assert_eq!(rig.store.get("/big"), Some(&big[..]));
    assert_eq!(rig.store.get("/qubes-ip"), Some(&b"10.137.0.5"[..]));
    assert_eq!(rig.store.len(), 3);
}

#[test]
fn pushes_are_applied_and_acknowledged_byte_exactly() {
    let mut rig = Rig::synced(2048, &[("/qubes-firewall/10.137.0.5/0000", b"action=accept"), ("/x", b"1")]);
    rig.send(&msg(WRITE, "/qubes-firewall/10.137.0.5/policy", b"drop"));
    rig.send(&msg(RM, "/x", b""));
    rig.send(&msg(RM, "/qubes-firewall/10.137.0.5/", b""));
    rig.send(&msg(WRITE, "/qubes-firewall/10.137.0.5", b""));
    let events = rig.run().unwrap();
    assert_eq!(
        events,
        [
            Event::Written(p("/qubes-firewall/10.137.0.5/policy")),
            Event::Removed(p("/x")),
            Event::RemovedSubtree(p("/qubes-firewall/10.137.0.5/")),
            Event::Written(p("/qubes-firewall/10.137.0.5")),
        ]
    );
    let mut want = msg(RESP_OK, "/qubes-firewall/10.137.0.5/policy", b"");
    want.extend(msg(RESP_OK, "/x", b""));
    want.extend(msg(RESP_OK, "/qubes-firewall/10.137.0.5/", b""));
    want.extend(msg(RESP_OK, "/qubes-firewall/10.137.0.5", b""));
    assert_eq!(rig.dom0.read_all(), want);
    let keys: Vec<_> = rig.store.iter().map(|(k, _)| k.to_owned()).collect();
    assert_eq!(keys, ["/qubes-firewall/10.137.0.5"]);
}

#[test]
fn own_writes_go_to_dom0_and_the_store() {
    let mut rig = Rig::new(1024);
    assert_eq!(rig.client.write(&mut *rig.store, "/qubes-iptables-error", b""), Err(WriteError::NotSynced));
    let mut rig2 = Rig::synced(1024, &[]);
    let rig = &mut rig2;
    assert_eq!(rig.client.write(&mut *rig.store, "/bad path", b""), Err(WriteError::Invalid));
    assert_eq!(rig.client.write(&mut *rig.store, "/a/", b""), Err(WriteError::Invalid));
    assert_eq!(rig.client.write(&mut *rig.store, "/a", b"x\0"), Err(WriteError::Invalid));
    rig.client.write(&mut *rig.store, "/qubes-iptables-error", b"10.137.0.5: rule 0001: bad").unwrap();
    assert_eq!(rig.run().unwrap(), []);
    assert_eq!(rig.dom0.read_all(), msg(WRITE, "/qubes-iptables-error", b"10.137.0.5: rule 0001: bad"));
    assert_eq!(rig.store.get("/qubes-iptables-error"), Some(&b"10.137.0.5: rule 0001: bad"[..]));
    rig.client.write(&mut *rig.store, "/qubes-iptables-error", b"").unwrap();
    rig.send(&msg(RESP_OK, "/qubes-iptables-error", b""));
    rig.send(&msg(RESP_ERROR, "/qubes-iptables-error", b""));
    assert_eq!(rig.run().unwrap(), [Event::WriteRefused(p("/qubes-iptables-error"))]);
    // A third response answers nothing we sent.
    rig.send(&msg(RESP_OK, "/qubes-iptables-error", b""));
    assert_eq!(rig.run(), Err(Error::Unexpected(MsgType::RespOk)));
}

#[test]
fn hostile_messages_reset_and_resync() {
    let mut long_path = msg(WRITE, "/a", b"");
    long_path[1..65].fill(b'a');
    let mut big_len = msg(WRITE, "/a", b"");
    big_len[68..72].copy_from_slice(&0x8000_0000u32.to_le_bytes());
    let cases: [(Vec<u8>, Error); 10] = [
        (msg(0, "/a", b""), Error::Wire(WireError::TypeNotAllowed(0))),
        (msg(13, "/a", b""), Error::Wire(WireError::TypeNotAllowed(13))),
        (msg(200, "/a", b""), Error::Wire(WireError::TypeNotAllowed(200))),
        (long_path, Error::Wire(WireError::PathNotTerminated)),
        (msg(WRITE, "/a\n", b""), Error::Wire(WireError::PathBadChar(2))),
        (msg(WRITE, "/a", b"v\0"), Error::Wire(WireError::DataHasNul(1))),
        (big_len, Error::Frame(FrameError::Header(WireError::DataTooLong(0x8000_0000)))),
        (msg(MULTIREAD, "", b""), Error::Unexpected(MsgType::Multiread)),
        (msg(RESP_MULTIREAD, "/late", b"x"), Error::Unexpected(MsgType::RespMultiread)),
        (msg(RM, "rel/", b""), Error::Wire(WireError::PathNotAKey)),
    ];
    for (bytes, err) in cases {
        let mut rig = Rig::synced(1024, &[("/keep", b"1")]);
        rig.send(&bytes);
        assert_eq!(rig.run(), Err(err));
        assert!(!rig.client.is_synced());
        assert_eq!(rig.client.counters.errors, 1);
        // Reconnect: a new channel, a new dump request, the old store is dropped.
        let (vm, dom0) = Pipe::pair(1024);
        (rig.vm, rig.dom0) = (vm, dom0);
        rig.backlog.clear();
        assert_eq!(rig.client.poll(&mut rig.vm, &mut *rig.store), Ok(Some(Event::SyncStarted)));
        assert!(rig.store.is_empty());
        assert_eq!(rig.dom0.read_all(), msg(MULTIREAD, "", b""));
    }
}

#[test]
fn closed_channel_is_reported() {
    let mut rig = Rig::synced(1024, &[]);
    rig.dom0.close();
    assert_eq!(rig.run(), Err(Error::Closed));
    // A closed channel does not start a new sync.
    assert_eq!(rig.client.poll(&mut rig.vm, &mut *rig.store), Ok(None));
}

#[test]
fn store_full_is_reported_and_answered_with_an_error() {
    let mut rig = Rig::new(1024);
    let mut small: Store<2, 64> = Store::new();
    rig.client.poll(&mut rig.vm, &mut small).unwrap();
    let _ = rig.dom0.read_all();
    rig.dom0.write_all(&msg(RESP_MULTIREAD, "/b", b"1"));
    rig.dom0.write_all(&msg(RESP_MULTIREAD, "/a", b"1"));
    rig.dom0.write_all(&msg(RESP_MULTIREAD, "/c", b"1"));
    rig.dom0.write_all(&msg(RESP_MULTIREAD, "", b""));
    let mut events = Vec::new();
    for _ in 0..10 {
        if let Some(e) = rig.client.poll(&mut rig.vm, &mut small).unwrap() {
            events.push(e);
        }
    }
    assert_eq!(events, [Event::Written(p("/b")), Event::Written(p("/a")), Event::StoreFull(p("/c")), Event::Synced]);
    rig.dom0.write_all(&msg(WRITE, "/d", b"1"));
    rig.dom0.write_all(&msg(WRITE, "/a", &[b'x'; 80]));
    let mut events = Vec::new();
    for _ in 0..10 {
        if let Some(e) = rig.client.poll(&mut rig.vm, &mut small).unwrap() {
            events.push(e);
        }
    }
    assert_eq!(events, [Event::StoreFull(p("/d")), Event::StoreFull(p("/a"))]);
    assert_eq!(small.get("/a"), None, "a value dom0 replaced must not survive");
    let mut want = msg(RESP_ERROR, "/d", b"");
    want.extend(msg(RESP_ERROR, "/a", b""));
    assert_eq!(rig.dom0.read_all(), want);
    assert_eq!(rig.client.counters.store_full, 3);
}

#[test]
fn a_peer_that_does_not_read_gets_back_pressure_not_lost_acks() {
    let mut rig = Rig::synced(256, &[]);
    let n = 400;
    for i in 0..n {
        rig.send(&msg(WRITE, &std::format!("/k{}", i % 8), b"v"));
    }
    // dom0 never reads: the 256-byte ring and the outbox fill, then the client stops.
    let events = rig.run().unwrap();
    assert!(events.len() < n);
    let stalled = events.len();
    // Once dom0 reads, everything proceeds and every WRITE gets exactly one RESP_OK.
    let mut acks = Vec::new();
    let mut total = stalled;
    for _ in 0..10_000 {
        acks.extend(rig.dom0.read_all());
        let w = rig.dom0.write(&rig.backlog);
        rig.backlog.drain(..w);
        if rig.client.poll(&mut rig.vm, &mut *rig.store).unwrap().is_some() {
            total += 1;
        }
    }
    acks.extend(rig.dom0.read_all());
    assert_eq!(total, n);
    assert_eq!(acks.len(), n * 72);
    for (i, a) in acks.chunks(72).enumerate() {
        assert_eq!(a, msg(RESP_OK, &std::format!("/k{}", i % 8), b""));
    }
}

#[test]
fn seeded_garbage_never_panics() {
    let mut x: u64 = 0x243f_6a88_85a3_08d3;
    let mut errors = 0;
    for round in 0..300 {
        let mut rig = Rig::synced(1024, &[]);
        let mut junk = Vec::new();
        // Half the rounds start with a plausible header so the parser goes deeper.
        if round % 2 == 0 {
            junk.extend(msg((x % 14) as u8, "/a", b""));
        }
        for _ in 0..(x % 4000) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            junk.push(x as u8);
        }
        rig.send(&junk);
        if rig.run().is_err() {
            errors += 1;
        }
    }
    assert!(errors > 250, "garbage must almost always be refused ({errors})");
}
