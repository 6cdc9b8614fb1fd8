//! The real xenstore client and the appliance's control plane against the simulated
//! xenstored: registration, `xl shutdown`-style requests, the dump trigger, quota errors and
//! a conflicting transaction.

use portcullis::control::{Control, ControlAction, DUMP_KEY, STATE_KEY};
use tests::sim::{Sim, SimDomain};
use xen_front::abi::ShutdownReason;
use xen_front::xenstore::{Client, Error, Request, TxId, TxnRetry, TxnStep};

const NOW: u64 = 1;
const TIMEOUT: u64 = 5_000_000_000;

struct Guest {
    sim: Sim,
    dom: SimDomain,
    xs: Box<Client>,
    control: Control,
}

impl Guest {
    fn boot(name: &str) -> Guest {
        let sim = Sim::new();
        let dom = sim.create_domain(name);
        let mut xs = Box::new(Client::new());
        xs.attach(dom.store_page().unwrap());
        Guest { sim, dom, xs, control: Control::new() }
    }

    /// Runs the control plane until it has nothing more to say.
    fn actions(&mut self) -> Vec<ControlAction> {
        let mut out = Vec::new();
        for _ in 0..50 {
            self.sim.pump(&self.dom, &mut self.xs, NOW);
            match self.control.poll(&mut self.xs, NOW) {
                Some(a) => out.push(a),
                None => {
                    self.sim.pump(&self.dom, &mut self.xs, NOW);
                    if self.xs.in_flight() == 0 && self.control.poll(&mut self.xs, NOW).is_none() {
                        return out;
                    }
                }
            }
        }
        out
    }

    fn registered(name: &str) -> Guest {
        let mut g = Guest::boot(name);
        g.control.start(&mut g.xs, NOW);
        assert_eq!(g.actions(), vec![ControlAction::Registered]);
        g
    }

    fn home(&self, key: &str) -> String {
        format!("/local/domain/{}/{key}", self.dom.domid())
    }

    /// A request on the real client, pumped to completion.
    fn request(&mut self, tx: TxId, req: Request<'_>) -> Result<Vec<u8>, Error> {
        let id = self.xs.submit(NOW, TIMEOUT, tx, req).expect("submitted");
        self.sim.pump(&self.dom, &mut self.xs, NOW);
        self.xs.take_reply(id).expect("answered").map(|r| r.payload().to_vec())
    }
}

#[test]
fn registration_reads_identity_and_advertises_features() {
    let g = Guest::registered("sys-portcullis");
    assert_eq!(g.control.domid, Some(g.dom.domid()));
    assert_eq!(g.control.name(), "sys-portcullis");
    assert_eq!(g.sim.peek(&g.home("control/feature-poweroff")).as_deref(), Some(&b"1"[..]));
    assert_eq!(g.sim.peek(&g.home("control/feature-reboot")).as_deref(), Some(&b"1"[..]));
    assert_eq!(g.control.errors, 0);
}

#[test]
fn state_key_is_written_under_our_home() {
    let mut g = Guest::registered("fw");
    g.control.set_state(&mut g.xs, NOW, "ready");
    g.actions();
    assert_eq!(g.sim.peek(&g.home(STATE_KEY)).as_deref(), Some(&b"ready"[..]));
}

#[test]
fn xl_shutdown_poweroff_is_acknowledged_then_acted_on() {
    let mut g = Guest::registered("fw");
    let dom0 = g.sim.xs_tool(0);
    dom0.write(&g.home("control/shutdown"), b"poweroff").unwrap();
    assert_eq!(g.actions(), vec![ControlAction::Shutdown(ShutdownReason::Poweroff)]);
    // The toolstack waits for the empty value before it expects the domain to go.
    assert_eq!(dom0.read(&g.home("control/shutdown")).unwrap(), b"");
}

#[test]
fn xl_reboot_is_acknowledged_then_acted_on() {
    let mut g = Guest::registered("fw");
    g.sim.xs_tool(0).write(&g.home("control/shutdown"), b"reboot").unwrap();
    assert_eq!(g.actions(), vec![ControlAction::Shutdown(ShutdownReason::Reboot)]);
    assert_eq!(g.sim.peek(&g.home("control/shutdown")).as_deref(), Some(&b""[..]));
}

#[test]
fn an_unknown_shutdown_value_is_ignored() {
    let mut g = Guest::registered("fw");
    g.sim.xs_tool(0).write(&g.home("control/shutdown"), b"suspend").unwrap();
    assert_eq!(g.actions(), vec![]);
    assert_eq!(g.control.ignored_requests, 1);
    assert_eq!(g.sim.peek(&g.home("control/shutdown")).as_deref(), Some(&b"suspend"[..]), "not acknowledged");
}

#[test]
fn the_dump_key_triggers_one_counters_dump_and_is_cleared() {
    let mut g = Guest::registered("fw");
    let dom0 = g.sim.xs_tool(0);
    dom0.write(&g.home(DUMP_KEY), b"1").unwrap();
    assert_eq!(g.actions(), vec![ControlAction::DumpCounters]);
    assert_eq!(dom0.read(&g.home(DUMP_KEY)).unwrap(), b"");
    // Our own clearing write fires the watch again; the empty value does nothing.
    assert_eq!(g.actions(), vec![]);
    dom0.write(&g.home(DUMP_KEY), b"again").unwrap();
    assert_eq!(g.actions(), vec![ControlAction::DumpCounters]);
}

#[test]
fn the_guest_may_not_write_outside_its_writable_keys() {
    let mut g = Guest::boot("fw");
    // The home itself is dom0's (n0 r<id>): readable, not writable.
    assert_eq!(g.request(TxId::NONE, Request::Read("name")).unwrap(), b"fw");
    assert_eq!(g.request(TxId::NONE, Request::Write("name", b"evil")), Err(Error::AccessDenied));
    assert_eq!(g.request(TxId::NONE, Request::Write("/local/domain/0/x", b"1")), Err(Error::AccessDenied));
    assert_eq!(g.request(TxId::NONE, Request::Read("/local/domain/0/name")), Err(Error::AccessDenied));
    assert_eq!(g.request(TxId::NONE, Request::Write("data/x", b"1")), Ok(b"OK\0".to_vec()));
}

#[test]
fn node_quota_is_refused_with_enospc() {
    let mut g = Guest::boot("fw");
    let owned = g.sim.with_xenstored(|x| x.nodes_owned_by(g.dom.domid()));
    let mut refused = None;
    for i in 0..1100 {
        let path = format!("data/n{i}");
        match g.request(TxId::NONE, Request::Write(&path, b"")) {
            Ok(_) => {}
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (i, e) = refused.expect("the quota stops us");
    assert_eq!(e, Error::NoSpace);
    assert!(e.is_quota());
    assert_eq!(owned + i, 1000, "1000 nodes per domain");
    // Removing one makes room again.
    g.request(TxId::NONE, Request::Rm("data/n0")).unwrap();
    assert!(g.request(TxId::NONE, Request::Write("data/again", b"")).is_ok());
}

#[test]
fn watch_quota_is_refused_with_e2big() {
    let mut g = Guest::boot("fw");
    let mut ok = 0;
    let err = loop {
        let token = format!("t{ok}");
        match g.request(TxId::NONE, Request::Watch { path: "data", token: &token }) {
            Ok(_) => ok += 1,
            Err(e) => break e,
        }
        while g.xs.pop_event().is_some() {}
        let _ = g.xs.take_events_lost();
        assert!(ok < 200, "no watch quota");
    };
    assert_eq!(err, Error::TooBig, "C xenstored answers E2BIG for the watch quota");
    assert!(err.is_quota());
    assert_eq!(ok, 129, "C xenstored refuses once a domain holds more than 128");
}

#[test]
fn a_conflicting_transaction_gets_eagain_and_the_retry_commits() {
    let mut g = Guest::boot("fw");
    let dom0 = g.sim.xs_tool(0);
    let key = g.home("data/counter");
    dom0.write(&key, b"1").unwrap();
    let mut txn = TxnRetry::new(3, TIMEOUT);
    let mut conflicted = false;
    for _ in 0..20 {
        g.sim.pump(&g.dom, &mut g.xs, NOW);
        match txn.poll(&mut g.xs, NOW) {
            TxnStep::Begin(tx) => {
                let value = g.request(tx, Request::Read("data/counter")).unwrap();
                let n: u32 = String::from_utf8(value).unwrap().parse().unwrap();
                g.request(tx, Request::Write("data/counter", (n + 1).to_string().as_bytes())).unwrap();
                if !conflicted {
                    // dom0 changes the key behind the transaction's back.
                    conflicted = true;
                    dom0.write(&key, b"10").unwrap();
                }
                txn.commit(&mut g.xs, NOW).unwrap();
            }
            TxnStep::Committed => break,
            TxnStep::Failed(e) => panic!("transaction failed: {e:?}"),
            _ => {}
        }
    }
    assert_eq!(txn.attempts(), 2, "one EAGAIN, then success");
    assert_eq!(dom0.read(&key).unwrap(), b"11");
}

#[test]
fn transaction_end_conflict_is_eagain_on_the_wire() {
    let mut g = Guest::boot("fw");
    let tx = g.request(TxId::NONE, Request::TransactionStart).unwrap();
    let tx = TxId(std::str::from_utf8(&tx[..tx.len() - 1]).unwrap().parse().unwrap());
    g.request(tx, Request::Read("data")).unwrap();
    g.request(tx, Request::Write("data/a", b"1")).unwrap();
    g.sim.xs_tool(0).write(&g.home("data/b"), b"2").unwrap();
    assert_eq!(g.request(tx, Request::TransactionEnd { commit: true }), Err(Error::Again));
    assert_eq!(g.sim.peek(&g.home("data/a")), None, "nothing of a failed transaction lands");
}
