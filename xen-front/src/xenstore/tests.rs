//! Client tests against a fake xenstored on the other side of the same shared page.

use super::ring::offsets;
use super::wire::{AllegedHeader, HEADER_LEN, Header};
use super::*;
use grant_pool::{PageCell, SharedPage};
use std::collections::{BTreeMap, VecDeque};

const DOMID: u16 = 5;
const TIMEOUT: u64 = 1_000_000;

/// xenstored, as much as these tests need: a flat key/value store with perms, watches,
/// transaction ids and scripted errors. It streams both rings in pieces no larger than
/// `chunk`, like a real peer that is not always scheduled.
struct FakeXenstored {
    page: SharedPage,
    req_cons: u32,
    rsp_prod: u32,
    /// Request bytes read but not yet parsed.
    inbox: Vec<u8>,
    /// Response bytes not yet written.
    outbox: VecDeque<u8>,
    /// Most bytes moved per ring per pump.
    chunk: usize,
    /// Answer requests (true) or only record them in `received` (false).
    auto: bool,
    received: Vec<(Header, Vec<u8>)>,
    store: BTreeMap<String, Vec<u8>>,
    perms: BTreeMap<String, Vec<u8>>,
    watches: Vec<(String, String)>,
    next_tx: u32,
    /// errno names answered to the next requests, before any store logic.
    fail_next: VecDeque<&'static str>,
    /// errno names answered to the next committing TRANSACTION_ENDs.
    fail_commit: VecDeque<&'static str>,
}

impl FakeXenstored {
    fn new(page: SharedPage) -> Self {
        FakeXenstored {
            page,
            req_cons: page.read_u32(offsets::REQ_CONS),
            rsp_prod: page.read_u32(offsets::RSP_PROD),
            inbox: Vec::new(),
            outbox: VecDeque::new(),
            chunk: 1024,
            auto: true,
            received: Vec::new(),
            store: BTreeMap::new(),
            perms: BTreeMap::new(),
            watches: Vec::new(),
            next_tx: 40,
            fail_next: VecDeque::new(),
            fail_commit: VecDeque::new(),
        }
    }

    /// Moves bytes both ways and answers whole requests; true if anything moved.
    fn pump(&mut self) -> bool {
        let mut moved = false;
        let prod = self.page.read_u32(offsets::REQ_PROD);
        let avail = (prod.wrapping_sub(self.req_cons) as usize).min(self.chunk);
        for _ in 0..avail {
            self.inbox.push(self.page.read_u8(offsets::REQ + (self.req_cons & 1023) as usize));
            self.req_cons = self.req_cons.wrapping_add(1);
        }
        if avail > 0 {
            self.page.write_u32(offsets::REQ_CONS, self.req_cons);
            moved = true;
        }
        while self.inbox.len() >= HEADER_LEN {
            let alleged = AllegedHeader::parse(self.inbox[..HEADER_LEN].try_into().unwrap());
            let header = alleged.validate().expect("client sent a bad header");
            let end = HEADER_LEN + header.len as usize;
            if self.inbox.len() < end {
                break;
            }
            let payload: Vec<u8> = self.inbox.drain(..end).skip(HEADER_LEN).collect();
            if self.auto {
                self.answer(header, &payload);
            } else {
                self.received.push((header, payload));
            }
        }
        let cons = self.page.read_u32(offsets::RSP_CONS);
        let space = 1024 - self.rsp_prod.wrapping_sub(cons) as usize;
        let n = space.min(self.chunk).min(self.outbox.len());
        for _ in 0..n {
            let b = self.outbox.pop_front().unwrap();
            self.page.write_u8(offsets::RSP + (self.rsp_prod & 1023) as usize, b);
            self.rsp_prod = self.rsp_prod.wrapping_add(1);
        }
        if n > 0 {
            self.page.write_u32(offsets::RSP_PROD, self.rsp_prod);
            moved = true;
        }
        moved
    }

    /// Queues a message with any type number and claimed length.
    fn send_raw(&mut self, raw_type: u32, req_id: u32, tx_id: u32, len: u32, payload: &[u8]) {
        for v in [raw_type, req_id, tx_id, len] {
            self.outbox.extend(v.to_le_bytes());
        }
        self.outbox.extend(payload);
    }

    fn send(&mut self, t: MsgType, req_id: u32, tx_id: u32, payload: &[u8]) {
        self.send_raw(t.raw(), req_id, tx_id, payload.len() as u32, payload);
    }

    fn event(&mut self, path: &str, token: &str) {
        let payload = [path.as_bytes(), b"\0", token.as_bytes(), b"\0"].concat();
        self.send(MsgType::WatchEvent, 0, 0, &payload);
    }

    fn absolute(path: &str) -> String {
        if path.starts_with('/') { path.to_string() } else { format!("/local/domain/{DOMID}/{path}") }
    }

    fn fire(&mut self, path: &str) {
        let abs = Self::absolute(path);
        let hits: Vec<(String, String)> = self
            .watches
            .iter()
            .filter(|(w, _)| {
                let w = Self::absolute(w);
                abs == w || abs.starts_with(&format!("{w}/"))
            })
            .cloned()
            .collect();
        for (_, token) in hits {
            self.event(path, &token);
        }
    }

    fn answer(&mut self, h: Header, payload: &[u8]) {
        let (id, tx) = (h.req_id, h.tx_id);
        if let Some(errno) = self.fail_next.pop_front() {
            return self.send(MsgType::Error, id, tx, &[errno.as_bytes(), b"\0"].concat());
        }
        let mut fields = payload.split(|&b| b == 0).map(|f| String::from_utf8(f.to_vec()).unwrap());
        let path = fields.next().unwrap_or_default();
        let ok = |me: &mut Self| me.send(h.msg_type, id, tx, b"OK\0");
        let enoent = |me: &mut Self| me.send(MsgType::Error, id, tx, b"ENOENT\0");
        let abs = Self::absolute(&path);
        match h.msg_type {
            MsgType::Read => match self.store.get(&abs).cloned() {
                Some(v) => self.send(MsgType::Read, id, tx, &v),
                None => enoent(self),
            },
            MsgType::Write => {
                let value = &payload[path.len() + 1..];
                self.store.insert(abs, value.to_vec());
                ok(self);
                self.fire(&path);
            }
            MsgType::Mkdir => {
                self.store.entry(abs).or_default();
                ok(self);
                self.fire(&path);
            }
            MsgType::Rm => {
                let before = self.store.len();
                let prefix = format!("{abs}/");
                self.store.retain(|k, _| *k != abs && !k.starts_with(&prefix));
                if self.store.len() == before {
                    return enoent(self);
                }
                ok(self);
                self.fire(&path);
            }
            MsgType::Directory => {
                if !self.store.contains_key(&abs) {
                    return enoent(self);
                }
                let prefix = format!("{abs}/");
                let mut out = Vec::new();
                for k in self.store.keys().filter_map(|k| k.strip_prefix(&prefix)) {
                    if !k.contains('/') {
                        out.extend(k.as_bytes());
                        out.push(0);
                    }
                }
                self.send(MsgType::Directory, id, tx, &out);
            }
            MsgType::GetPerms => {
                if !self.store.contains_key(&abs) {
                    return enoent(self);
                }
                let perms = self.perms.get(&abs).cloned().unwrap_or(b"n0\0".to_vec());
                self.send(MsgType::GetPerms, id, tx, &perms);
            }
            MsgType::SetPerms => {
                self.perms.insert(abs, payload[path.len() + 1..].to_vec());
                ok(self);
            }
            MsgType::Watch => {
                let token = fields.next().unwrap();
                self.watches.push((path.clone(), token.clone()));
                ok(self);
                self.event(&path, &token); // watches fire once on registration
            }
            MsgType::Unwatch => {
                let token = fields.next().unwrap();
                self.watches.retain(|(p, t)| !(*p == path && *t == token));
                ok(self);
            }
            MsgType::TransactionStart => {
                assert_eq!(tx, 0, "START must carry tx 0");
                self.next_tx += 1;
                self.send(MsgType::TransactionStart, id, 0, format!("{}\0", self.next_tx).as_bytes());
            }
            MsgType::TransactionEnd => {
                let failure = if payload == b"T\0" { self.fail_commit.pop_front() } else { None };
                if let Some(errno) = failure {
                    return self.send(MsgType::Error, id, tx, &[errno.as_bytes(), b"\0"].concat());
                }
                ok(self);
            }
            MsgType::GetDomainPath => {
                self.send(MsgType::GetDomainPath, id, tx, format!("/local/domain/{path}\0").as_bytes())
            }
            _ => self.send(MsgType::Error, id, tx, b"ENOSYS\0"),
        }
    }
}

/// A page with all four indices at `start` (guests must not assume zero), a client and a peer.
fn setup_at(start: u32) -> (Box<Client>, FakeXenstored, SharedPage) {
    let page = SharedPage::from_static(Box::leak(Box::new(PageCell::new())));
    for off in [offsets::REQ_CONS, offsets::REQ_PROD, offsets::RSP_CONS, offsets::RSP_PROD] {
        page.write_u32(off, start);
    }
    let mut client = Box::new(Client::new());
    client.attach(page);
    (client, FakeXenstored::new(page), page)
}

fn setup() -> (Box<Client>, FakeXenstored, SharedPage) {
    setup_at(1000) // the first messages cross the 1024 boundary
}

/// Polls both sides until nothing moves; panics (instead of hanging) if that never happens.
fn run(client: &mut Client, fake: &mut FakeXenstored, now: u64) {
    let mut quiet = 0;
    for _ in 0..10_000 {
        let out = client.poll(now);
        let moved = fake.pump();
        quiet = if out.notify_peer || moved { 0 } else { quiet + 1 };
        if quiet == 2 {
            return;
        }
    }
    panic!("client and peer never settled");
}

/// Submits, runs to completion, and returns the reply payload (or error) as owned data.
fn call(client: &mut Client, fake: &mut FakeXenstored, tx: TxId, req: Request<'_>) -> Result<Vec<u8>, Error> {
    let id = client.submit(0, TIMEOUT, tx, req).unwrap();
    run(client, fake, 0);
    let reply = client.take_reply(id).expect("request completed");
    reply.map(|r| r.payload().to_vec())
}

fn events(client: &mut Client) -> Vec<(Vec<u8>, Vec<u8>)> {
    std::iter::from_fn(|| client.pop_event().map(|e| (e.path.to_vec(), e.token.to_vec()))).collect()
}

fn ev(path: &str, token: &str) -> (Vec<u8>, Vec<u8>) {
    (path.as_bytes().to_vec(), token.as_bytes().to_vec())
}

#[test]
fn every_operation_round_trips() {
    let (mut c, mut f, _) = setup();
    let none = TxId::NONE;
    assert_eq!(call(&mut c, &mut f, none, Request::GetDomainPath(DOMID)), Ok(b"/local/domain/5\0".to_vec()));
    assert_eq!(call(&mut c, &mut f, none, Request::Mkdir("device")), Ok(b"OK\0".to_vec()));
    assert_eq!(call(&mut c, &mut f, none, Request::Write("device/vif", b"")), Ok(b"OK\0".to_vec()));
    assert_eq!(call(&mut c, &mut f, none, Request::Write("device/vif/0", b"up")), Ok(b"OK\0".to_vec()));
    assert_eq!(call(&mut c, &mut f, none, Request::Write("device/vbd", b"")), Ok(b"OK\0".to_vec()));
    assert_eq!(call(&mut c, &mut f, none, Request::Read("device/vif/0")), Ok(b"up".to_vec()));
    // Absolute and relative paths name the same node.
    assert_eq!(call(&mut c, &mut f, none, Request::Read("/local/domain/5/device/vif/0")), Ok(b"up".to_vec()));
    assert_eq!(call(&mut c, &mut f, none, Request::Directory("device")), Ok(b"vbd\0vif\0".to_vec()));
    let perms = [Perm { access: Access::None, domid: DOMID }, Perm { access: Access::Read, domid: 0 }];
    assert_eq!(call(&mut c, &mut f, none, Request::SetPerms("device/vif", &perms)), Ok(b"OK\0".to_vec()));
    assert_eq!(call(&mut c, &mut f, none, Request::GetPerms("device/vif")), Ok(b"n5\0r0\0".to_vec()));
    assert_eq!(call(&mut c, &mut f, none, Request::Watch { path: "device", token: "dev" }), Ok(b"OK\0".to_vec()));
    assert_eq!(events(&mut c), [ev("device", "dev")], "a watch fires once on registration");
    assert_eq!(call(&mut c, &mut f, none, Request::Unwatch { path: "device", token: "dev" }), Ok(b"OK\0".to_vec()));
    assert_eq!(call(&mut c, &mut f, none, Request::Rm("device/vbd")), Ok(b"OK\0".to_vec()));
    assert_eq!(call(&mut c, &mut f, none, Request::Read("device/vbd")), Err(Error::NotFound));
    let start = call(&mut c, &mut f, none, Request::TransactionStart).unwrap();
    assert_eq!(start, b"41\0");
    assert_eq!(call(&mut c, &mut f, TxId(41), Request::Write("x", b"1")), Ok(b"OK\0".to_vec()));
    assert_eq!(call(&mut c, &mut f, TxId(41), Request::TransactionEnd { commit: true }), Ok(b"OK\0".to_vec()));
    assert!(events(&mut c).is_empty(), "no watch after unwatch");
    assert_eq!(c.in_flight(), 0);
    assert_eq!(c.state(), ClientState::Running);
    assert_eq!(c.stats().requests, c.stats().replies);
}

#[test]
fn typed_reply_helpers() {
    let (mut c, mut f, _) = setup();
    f.store.insert("/local/domain/5/backend".into(), vec![]);
    f.store.insert("/local/domain/5/backend/vif".into(), vec![]);
    f.store.insert("/local/domain/5/backend/vbd".into(), vec![]);
    f.perms.insert("/local/domain/5/backend".into(), b"b5\0w0\0".to_vec());
    let dir = c.submit(0, TIMEOUT, TxId::NONE, Request::Directory("backend")).unwrap();
    let perms = c.submit(0, TIMEOUT, TxId::NONE, Request::GetPerms("backend")).unwrap();
    let tx = c.submit(0, TIMEOUT, TxId(9), Request::TransactionStart).unwrap();
    let home = c.submit(0, TIMEOUT, TxId::NONE, Request::GetDomainPath(7)).unwrap();
    run(&mut c, &mut f, 0);
    let reply = c.take_reply(dir).unwrap().unwrap();
    assert_eq!(reply.msg_type(), MsgType::Directory);
    assert_eq!(reply.entries().collect::<Vec<_>>(), [&b"vbd"[..], b"vif"]);
    let mut copy = [0u8; 8];
    assert_eq!(reply.copy_to(&mut copy), Some(8));
    assert_eq!(reply.copy_to(&mut [0u8; 7]), None);
    let reply = c.take_reply(perms).unwrap().unwrap();
    let perms: Vec<Perm> = reply.perms().collect();
    assert_eq!(perms, [Perm { access: Access::Both, domid: 5 }, Perm { access: Access::Write, domid: 0 }]);
    let reply = c.take_reply(tx).unwrap().unwrap();
    assert_eq!((reply.tx_started(), reply.tx()), (Some(TxId(41)), TxId::NONE));
    assert_eq!(c.take_reply(home).unwrap().unwrap().domain_path(), Some(&b"/local/domain/7"[..]));
    assert!(c.take_reply(home).is_none(), "a result is taken once");
}

#[test]
fn messages_split_at_every_ring_offset() {
    // Start the indices at each offset near the boundary (and at the u32 wrap), so headers
    // and bodies get cut at every byte position.
    let starts = (990..1024).chain([u32::MAX - 20, u32::MAX, 0]);
    for start in starts {
        let (mut c, mut f, _) = setup_at(start);
        f.chunk = 7;
        assert_eq!(call(&mut c, &mut f, TxId::NONE, Request::Watch { path: "a", token: "t" }), Ok(b"OK\0".to_vec()));
        assert_eq!(call(&mut c, &mut f, TxId::NONE, Request::Write("a/b", b"value")), Ok(b"OK\0".to_vec()));
        assert_eq!(call(&mut c, &mut f, TxId::NONE, Request::Read("a/b")), Ok(b"value".to_vec()));
        assert_eq!(events(&mut c), [ev("a", "t"), ev("a/b", "t")], "start {start}");
        assert_eq!(*c.stats(), XsStats { requests: 3, replies: 3, events: 2, ..XsStats::default() });
    }
}

#[test]
fn payload_of_4096_bytes_streams_through_the_1k_ring_both_ways() {
    let (mut c, mut f, _) = setup();
    f.chunk = 100; // the peer drains and fills in small pieces
    let value: Vec<u8> = (0..XENSTORE_PAYLOAD_MAX - 2).map(|i| (i * 7) as u8).collect();
    assert_eq!(call(&mut c, &mut f, TxId::NONE, Request::Write("p", &value)), Ok(b"OK\0".to_vec()));
    assert_eq!(f.store["/local/domain/5/p"], value);
    let full: Vec<u8> = (0..XENSTORE_PAYLOAD_MAX).map(|i| (i * 13) as u8).collect();
    f.store.insert("/local/domain/5/big".into(), full.clone());
    f.chunk = 1024;
    assert_eq!(call(&mut c, &mut f, TxId::NONE, Request::Read("big")), Ok(full));
    let too_big = vec![0u8; XENSTORE_PAYLOAD_MAX - 1];
    assert_eq!(c.submit(0, TIMEOUT, TxId::NONE, Request::Write("p", &too_big)), Err(Error::RequestTooLarge));
    assert_eq!(c.in_flight(), 0, "a refused request takes no slot");
}

#[test]
fn watch_events_interleave_with_out_of_order_replies() {
    let (mut c, mut f, _) = setup();
    f.auto = false;
    let ids: Vec<ReqId> =
        ["a", "b", "c"].iter().map(|p| c.submit(0, TIMEOUT, TxId::NONE, Request::Read(p)).unwrap()).collect();
    run(&mut c, &mut f, 0);
    assert_eq!(f.received.len(), 3);
    f.event("x", "1");
    f.send(MsgType::Read, ids[2].raw(), 0, b"C");
    f.event("y", "2");
    f.send(MsgType::Error, ids[0].raw(), 0, b"EACCES\0");
    f.send(MsgType::Read, ids[1].raw(), 0, b"B");
    f.event("z", "3");
    run(&mut c, &mut f, 0);
    assert_eq!(c.take_reply(ids[1]).unwrap().unwrap().payload(), b"B");
    assert_eq!(c.take_reply(ids[0]).unwrap(), Err(Error::AccessDenied));
    assert_eq!(c.take_reply(ids[2]).unwrap().unwrap().payload(), b"C");
    assert_eq!(events(&mut c), [ev("x", "1"), ev("y", "2"), ev("z", "3")]);
    assert!(!c.events_lost());
}

/// Drives a transaction that writes `n` under `tx` until it ends.
fn run_txn(c: &mut Client, f: &mut FakeXenstored, txn: &mut TxnRetry) -> (TxnStep, Vec<TxId>) {
    let mut began = Vec::new();
    let mut body: Option<ReqId> = None;
    for _ in 0..100 {
        run(c, f, 0);
        match txn.poll(c, 0) {
            TxnStep::Begin(tx) => {
                began.push(tx);
                body = Some(c.submit(0, TIMEOUT, tx, Request::Write("n", b"v")).unwrap());
            }
            TxnStep::Open(_) => {
                let result = body.and_then(|id| c.take_reply(id).map(|r| r.is_ok()));
                if let Some(ok) = result {
                    assert!(ok);
                    body = None;
                    txn.commit(c, 0).unwrap();
                }
            }
            TxnStep::Pending => {}
            done => return (done, began),
        }
    }
    panic!("transaction never finished");
}

#[test]
fn eagain_on_commit_restarts_the_whole_transaction() {
    let (mut c, mut f, _) = setup();
    f.fail_commit.push_back("EAGAIN");
    let mut txn = TxnRetry::new(3, TIMEOUT);
    let (step, began) = run_txn(&mut c, &mut f, &mut txn);
    assert_eq!(step, TxnStep::Committed);
    assert_eq!(began, [TxId(41), TxId(42)], "the body ran again in a fresh transaction");
    assert_eq!(txn.attempts(), 2);
    assert_eq!(txn.poll(&mut c, 0), TxnStep::Committed, "final state is sticky");
    assert_eq!(c.in_flight(), 0);

    // Attempts are bounded.
    f.fail_commit.extend(["EAGAIN", "EAGAIN"]);
    let mut txn = TxnRetry::new(2, TIMEOUT);
    assert_eq!(run_txn(&mut c, &mut f, &mut txn).0, TxnStep::Failed(Error::Again));
    assert_eq!(c.in_flight(), 0);
}

#[test]
fn commit_eagain_is_visible_to_a_plain_caller() {
    let (mut c, mut f, _) = setup();
    f.fail_commit.push_back("EAGAIN");
    assert_eq!(call(&mut c, &mut f, TxId(3), Request::TransactionEnd { commit: true }), Err(Error::Again));
}

#[test]
fn transaction_abort_and_start_failure() {
    let (mut c, mut f, _) = setup();
    let mut txn = TxnRetry::new(3, TIMEOUT);
    assert_eq!(txn.commit(&mut c, 0), Err(Error::InvalidArgument), "nothing open yet");
    assert_eq!(txn.poll(&mut c, 0), TxnStep::Pending);
    run(&mut c, &mut f, 0);
    assert_eq!(txn.poll(&mut c, 0), TxnStep::Begin(TxId(41)));
    assert_eq!(txn.tx(), Some(TxId(41)));
    txn.abort(&mut c, 0).unwrap();
    run(&mut c, &mut f, 0);
    assert_eq!(txn.poll(&mut c, 0), TxnStep::Aborted);

    f.fail_next.push_back("EQUOTA");
    let mut txn = TxnRetry::new(3, TIMEOUT);
    assert_eq!(txn.poll(&mut c, 0), TxnStep::Pending);
    run(&mut c, &mut f, 0);
    assert_eq!(txn.poll(&mut c, 0), TxnStep::Failed(Error::Quota));
}

#[test]
fn quota_errors_are_typed() {
    let (mut c, mut f, _) = setup();
    f.fail_next.extend(["EQUOTA", "ENOSPC", "E2BIG", "EWEIRD"]);
    let results: Vec<_> =
        (0..4).map(|_| call(&mut c, &mut f, TxId::NONE, Request::Watch { path: "backend/vif", token: "t" })).collect();
    assert_eq!(results, [Err(Error::Quota), Err(Error::NoSpace), Err(Error::TooBig), Err(Error::Unknown)]);
    assert!(results[..3].iter().all(|r| r.as_ref().unwrap_err().is_quota()));
}

#[test]
fn seventeenth_request_is_refused_not_queued() {
    let (mut c, mut f, _) = setup();
    let ids: Vec<ReqId> =
        (0..MAX_IN_FLIGHT).map(|_| c.submit(0, TIMEOUT, TxId::NONE, Request::Read("x")).unwrap()).collect();
    assert_eq!(c.submit(0, TIMEOUT, TxId::NONE, Request::Read("x")), Err(Error::TooManyInFlight));
    assert_eq!(c.stats().refused_busy, 1);
    run(&mut c, &mut f, 0);
    // Completed but not taken still holds the slot; taking frees it.
    assert_eq!(c.submit(0, TIMEOUT, TxId::NONE, Request::Read("x")), Err(Error::TooManyInFlight));
    assert_eq!(c.take_reply(ids[3]), Some(Err(Error::NotFound)));
    let id = c.submit(0, TIMEOUT, TxId::NONE, Request::Read("x")).unwrap();
    assert!(ids.iter().all(|&old| old != id), "ids are not reused");
    // Discarding also frees a slot, for fire-and-forget requests.
    assert!(c.discard(ids[4]));
    assert!(!c.discard(ids[4]));
    assert_eq!(c.in_flight(), MAX_IN_FLIGHT - 1);
}

#[test]
fn timeout_then_late_reply_is_dropped_and_counted() {
    let (mut c, mut f, _) = setup();
    f.auto = false;
    let id = c.submit(100, 50, TxId::NONE, Request::Read("slow")).unwrap();
    run(&mut c, &mut f, 100);
    assert!(c.is_pending(id));
    run(&mut c, &mut f, 149);
    assert!(c.take_reply(id).is_none(), "not yet expired");
    let out = c.poll(150);
    assert!(out.replies_ready);
    assert_eq!(c.take_reply(id), Some(Err(Error::Timeout)));
    assert_eq!(c.stats().timeouts, 1);
    // xenstored answers after all: dropped, counted, and the stream carries on.
    f.send(MsgType::Read, id.raw(), 0, b"late");
    f.auto = true;
    run(&mut c, &mut f, 200);
    assert_eq!(c.stats().dropped_late, 1);
    assert_eq!(c.stats().dropped_unknown_id, 0);
    assert_eq!(call(&mut c, &mut f, TxId::NONE, Request::Write("k", b"v")), Ok(b"OK\0".to_vec()));
    assert_eq!(c.state(), ClientState::Running);
}

#[test]
fn timeout_mid_write_keeps_the_stream_whole() {
    let (mut c, mut f, _) = setup();
    f.chunk = 0; // xenstored is not consuming
    let value = vec![b'x'; 3000];
    let id = c.submit(0, 10, TxId::NONE, Request::Write("w", &value)).unwrap();
    run(&mut c, &mut f, 0);
    run(&mut c, &mut f, 10);
    assert_eq!(c.take_reply(id), Some(Err(Error::Timeout)));
    assert_eq!(c.in_flight(), 1, "its remaining bytes must still go out");
    f.chunk = 1024;
    run(&mut c, &mut f, 20);
    assert_eq!(c.in_flight(), 0);
    assert_eq!(c.stats().dropped_late, 1, "its reply came and was dropped");
    assert_eq!(f.store["/local/domain/5/w"], value, "the request arrived whole");
    assert_eq!(call(&mut c, &mut f, TxId::NONE, Request::Read("w")), Ok(value));
}

#[test]
fn stalled_reply_body_times_out() {
    let (mut c, mut f, page) = setup();
    f.auto = false;
    let id = c.submit(0, 10, TxId::NONE, Request::Read("x")).unwrap();
    run(&mut c, &mut f, 0);
    // Header promising 100 bytes, then only 10 of them.
    f.send_raw(MsgType::Read.raw(), id.raw(), 0, 100, &[b'a'; 10]);
    run(&mut c, &mut f, 5);
    assert!(c.is_pending(id));
    run(&mut c, &mut f, 10);
    assert_eq!(c.take_reply(id), Some(Err(Error::Timeout)));
    // The rest arrives: skipped in step; the next message is read correctly.
    f.outbox.extend([b'a'; 90]);
    f.auto = true;
    assert_eq!(call(&mut c, &mut f, TxId::NONE, Request::Write("k", b"v")), Ok(b"OK\0".to_vec()));
    assert_eq!(page.read_u32(offsets::RSP_CONS), page.read_u32(offsets::RSP_PROD));
}

#[test]
fn event_queue_overflow_sets_sticky_lost_flag() {
    let (mut c, mut f, _) = setup();
    for i in 0..EVENT_QUEUE_LEN + 3 {
        f.event(&format!("p/{i}"), "t");
    }
    run(&mut c, &mut f, 0);
    assert!(c.events_lost());
    assert_eq!(c.stats().events_lost, 3);
    assert_eq!(events(&mut c).len(), EVENT_QUEUE_LEN);
    assert!(c.events_lost(), "sticky until taken");
    assert!(c.take_events_lost());
    assert!(!c.events_lost());
    // Oversized and malformed events are lost too.
    f.event(&"q".repeat(EVENT_PAYLOAD_MAX), "t");
    f.send(MsgType::WatchEvent, 0, 0, b"no-token");
    f.event("ok", "t");
    run(&mut c, &mut f, 0);
    assert_eq!(events(&mut c), [ev("ok", "t")]);
    assert!(c.take_events_lost());
    assert_eq!((c.stats().events_lost, c.stats().malformed_events), (5, 1));
}

#[test]
fn garbage_length_5000_breaks_the_client() {
    let (mut c, mut f, _) = setup();
    f.auto = false;
    let id = c.submit(0, TIMEOUT, TxId::NONE, Request::Read("x")).unwrap();
    run(&mut c, &mut f, 0);
    f.send_raw(MsgType::Read.raw(), id.raw(), 0, 5000, b"");
    run(&mut c, &mut f, 0);
    assert_eq!(c.state(), ClientState::Broken(Fault::PayloadTooLong(5000)));
    assert_eq!(c.take_reply(id), Some(Err(Error::Broken)));
    assert_eq!(c.submit(0, TIMEOUT, TxId::NONE, Request::Read("x")), Err(Error::Broken));
    assert_eq!(c.stats().protocol_errors, 1);
    assert_eq!(c.poll(0), PollOutcome::default(), "a broken client leaves the ring alone");
}

#[test]
fn unknown_type_99_is_skipped() {
    let (mut c, mut f, _) = setup();
    f.auto = false;
    let id = c.submit(0, TIMEOUT, TxId::NONE, Request::Read("x")).unwrap();
    run(&mut c, &mut f, 0);
    f.send_raw(99, id.raw(), 0, 10, b"0123456789");
    f.send(MsgType::Read, id.raw(), 0, b"real");
    run(&mut c, &mut f, 0);
    assert_eq!(c.stats().dropped_unknown_type, 1);
    assert_eq!(c.take_reply(id).unwrap().unwrap().payload(), b"real");
}

#[test]
fn unknown_req_id_is_skipped() {
    let (mut c, mut f, _) = setup();
    f.send(MsgType::Read, 12345, 0, b"nobody asked");
    f.send(MsgType::Write, 0, 0, b"OK\0");
    run(&mut c, &mut f, 0);
    assert_eq!(c.stats().dropped_unknown_id, 2);
    assert_eq!(call(&mut c, &mut f, TxId::NONE, Request::Mkdir("d")), Ok(b"OK\0".to_vec()));
    // A duplicate reply to a finished request is unknown too.
    f.send(MsgType::Mkdir, c.stats().requests as u32, 0, b"OK\0");
    run(&mut c, &mut f, 0);
    assert_eq!(c.stats().dropped_unknown_id, 3);
    assert_eq!(c.state(), ClientState::Running);
}

#[test]
fn reply_malformed_for_its_request_fails_only_that_request() {
    let (mut c, mut f, _) = setup();
    f.auto = false;
    let w = c.submit(0, TIMEOUT, TxId::NONE, Request::Write("a", b"1")).unwrap();
    let t = c.submit(0, TIMEOUT, TxId::NONE, Request::TransactionStart).unwrap();
    let r = c.submit(0, TIMEOUT, TxId::NONE, Request::Read("a")).unwrap();
    run(&mut c, &mut f, 0);
    f.send(MsgType::Write, w.raw(), 0, b"KO\0");
    f.send(MsgType::TransactionStart, t.raw(), 0, b"zero\0");
    f.send(MsgType::Directory, r.raw(), 0, b"a\0"); // wrong type for a READ
    run(&mut c, &mut f, 0);
    for id in [w, t, r] {
        assert_eq!(c.take_reply(id), Some(Err(Error::MalformedReply)));
    }
    assert_eq!(c.stats().malformed_replies, 3);
    assert_eq!(c.state(), ClientState::Running);
}

#[test]
fn reply_before_request_fully_written_is_refused() {
    let (mut c, mut f, _) = setup();
    f.chunk = 0;
    let id = c.submit(0, TIMEOUT, TxId::NONE, Request::Write("w", &[b'x'; 2000])).unwrap();
    run(&mut c, &mut f, 0);
    f.send(MsgType::Write, id.raw(), 0, b"OK\0");
    f.chunk = 0;
    // Deliver the forged reply without consuming the request ring.
    for b in f.outbox.drain(..).collect::<Vec<_>>() {
        f.page.write_u8(offsets::RSP + (f.rsp_prod & 1023) as usize, b);
        f.rsp_prod = f.rsp_prod.wrapping_add(1);
    }
    f.page.write_u32(offsets::RSP_PROD, f.rsp_prod);
    let _ = c.poll(0);
    assert_eq!(c.stats().dropped_unknown_id, 1);
    assert!(c.is_pending(id));
    f.chunk = 1024;
    run(&mut c, &mut f, 0);
    assert_eq!(c.take_reply(id).unwrap().unwrap().payload(), b"OK\0");
}

#[test]
fn rsp_prod_jumping_by_2000_breaks_the_client() {
    let (mut c, mut f, page) = setup();
    f.auto = false;
    let id = c.submit(0, TIMEOUT, TxId::NONE, Request::Read("x")).unwrap();
    run(&mut c, &mut f, 0);
    page.write_u32(offsets::RSP_PROD, f.rsp_prod.wrapping_add(2000));
    let _ = c.poll(0);
    assert!(matches!(c.state(), ClientState::Broken(Fault::Ring(RingFault::RspProdJump { .. }))));
    assert_eq!(c.take_reply(id), Some(Err(Error::Broken)));
}

#[test]
fn req_cons_moving_backwards_or_past_prod_breaks_the_client() {
    for delta in [-10i64, 10] {
        let (mut c, mut f, page) = setup();
        f.auto = false;
        let id = c.submit(0, TIMEOUT, TxId::NONE, Request::Read("abc")).unwrap();
        run(&mut c, &mut f, 0);
        page.write_u32(offsets::REQ_CONS, f.req_cons.wrapping_add_signed(delta as i32));
        let _ = c.poll(0);
        assert!(
            matches!(c.state(), ClientState::Broken(Fault::Ring(RingFault::ReqConsOutOfRange { .. }))),
            "delta {delta}"
        );
        assert_eq!(c.take_reply(id), Some(Err(Error::Broken)));
    }
}

#[test]
fn poll_notifies_only_when_an_index_moved() {
    let (mut c, mut f, _) = setup();
    assert!(!c.poll(0).notify_peer);
    c.submit(0, TIMEOUT, TxId::NONE, Request::Read("x")).unwrap();
    assert!(c.poll(0).notify_peer, "req_prod published");
    assert!(!c.poll(0).notify_peer);
    f.pump();
    f.pump();
    let out = c.poll(0);
    assert!(out.notify_peer && out.replies_ready, "rsp_cons published");
}

#[test]
fn detached_and_reattached() {
    let mut c = Box::new(Client::new());
    assert_eq!(c.state(), ClientState::Detached);
    assert_eq!(c.submit(0, 1, TxId::NONE, Request::Read("x")), Err(Error::NotAttached));
    assert_eq!(c.poll(0), PollOutcome::default());
    let (mut c, _f, page) = setup();
    let id = c.submit(0, TIMEOUT, TxId::NONE, Request::Read("x")).unwrap();
    c.attach(page);
    assert_eq!(c.take_reply(id), Some(Err(Error::Broken)), "old requests end, not hang");
    assert_eq!(c.state(), ClientState::Running);
}

/// xorshift64*: deterministic garbage without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn random_garbage_never_panics_or_hangs() {
    let (mut broken, mut total) = (0, XsStats::default());
    for seed in 1..300u64 {
        let (mut c, mut f, page) = setup_at(seed as u32 * 77);
        let mut rng = Rng(seed);
        for step in 0..40u64 {
            let _ = c.submit(step, 5, TxId::NONE, Request::Read("x"));
            match rng.next() % 64 {
                // Index corruption is fatal, so keep it rare to reach the other paths too.
                0 => page.write_u32(offsets::RSP_PROD, rng.next() as u32),
                1 => page.write_u32(offsets::REQ_CONS, rng.next() as u32),
                // A header with random fields; whatever follows becomes its payload.
                2..=5 => {
                    let (t, len) = (rng.next() % 30, rng.next() % 4500);
                    let id = if rng.next().is_multiple_of(2) { rng.next() % 40 } else { rng.next() };
                    f.send_raw(t as u32, id as u32, 0, len as u32, &[]);
                }
                6..=9 => f.outbox.extend((0..rng.next() % 300).map(|_| rng.next() as u8)),
                _ => {}
            }
            for _ in 0..4 {
                let _ = c.poll(step);
                f.pump();
            }
            while let Some(_e) = c.pop_event() {}
        }
        // Whatever happened, every request has ended by its deadline: no hang.
        let _ = c.poll(1_000);
        assert!(c.slots_all_settled(), "seed {seed}");
        broken += matches!(c.state(), ClientState::Broken(_)) as u32;
        let s = c.stats();
        total.dropped_unknown_type += s.dropped_unknown_type;
        total.dropped_unknown_id += s.dropped_unknown_id;
        total.timeouts += s.timeouts;
    }
    // The garbage reached both the fatal and the skip-and-count paths.
    assert!(broken > 0 && broken < 299, "{broken} broken");
    assert!(total.dropped_unknown_type > 0 && total.dropped_unknown_id > 0, "{total:?}");
    assert!(total.timeouts > 0, "{total:?}");
}
