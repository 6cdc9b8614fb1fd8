//! The simulator's xenstored rules and faults: errno names as C xenstored answers them.

use tests::sim::xenstored::{Errno, RELEASE_DOMAIN, msg, offsets, quota};
use tests::sim::{Sim, SimDomain};
use xen_front::platform::EventChannels;
use xen_front::xenstore::{Client, ClientState, Error, Request, TxId};

fn guest() -> (Sim, SimDomain) {
    let sim = Sim::new();
    let dom = sim.create_domain("g");
    (sim, dom)
}

#[test]
fn permissions_owner_first_entry_is_the_default() {
    let (sim, dom) = guest();
    let dom0 = sim.xs_tool(0);
    let g = sim.xs_tool(dom.domid());
    dom0.write("/shared", b"v").unwrap();
    assert_eq!(g.read("/shared"), Err(Errno::EACCES), "n0: others get nothing");
    dom0.set_perms("/shared", &["r0"]).unwrap();
    assert_eq!(g.read("/shared").unwrap(), b"v", "r0: others may read");
    assert_eq!(g.write("/shared", b"x"), Err(Errno::EACCES));
    dom0.set_perms("/shared", &["r0", &format!("n{}", dom.domid())]).unwrap();
    assert_eq!(g.read("/shared"), Err(Errno::EACCES), "a listed entry overrides the default");
    assert_eq!(g.read("/shared/missing"), Err(Errno::EACCES), "absence under an unreadable node is EACCES");
    assert_eq!(dom0.read("/nothing/here"), Err(Errno::ENOENT));
}

#[test]
fn unprivileged_creators_own_what_they_create_and_may_not_give_it_away() {
    let (sim, dom) = guest();
    let id = dom.domid();
    let g = sim.xs_tool(id);
    g.write("data/mine/deep", b"1").unwrap();
    let perms = g.get_perms("data/mine/deep").unwrap();
    assert_eq!(perms[0].domid, id);
    assert_eq!(g.set_perms("data/mine", &["n0"]), Err(Errno::EPERM));
    g.set_perms("data/mine", &[&format!("n{id}"), "r0"]).unwrap();
    assert_eq!(g.set_perms("name", &[&format!("b{id}")]), Err(Errno::EACCES), "not the owner");
}

#[test]
fn malformed_requests_are_einval() {
    let (sim, dom) = guest();
    let g = sim.xs_tool(dom.domid());
    assert_eq!(g.read("bad//path"), Err(Errno::EINVAL));
    assert_eq!(g.read("trailing/"), Err(Errno::EINVAL));
    assert_eq!(g.read("sp ace"), Err(Errno::EINVAL));
    assert_eq!(g.raw(msg::READ, b"no-nul"), Err(Errno::EINVAL));
    assert_eq!(g.raw(999, b"x\0"), Err(Errno::EINVAL));
    assert_eq!(g.set_perms("data", &["x1"]), Err(Errno::EINVAL));
    assert_eq!(g.watch("@bogus", "t"), Err(Errno::EINVAL));
    assert_eq!(g.raw(msg::INTRODUCE, b"1\0"), Err(Errno::EACCES));
    assert_eq!(g.rm("/"), Err(Errno::EINVAL));
}

#[test]
fn watches_fire_for_the_node_and_its_ancestors_after_the_initial_event() {
    let (sim, dom) = guest();
    let dom0 = sim.xs_tool(0);
    let w = sim.xs_tool(dom.domid());
    w.watch("data", "tok").unwrap();
    assert_eq!(w.events(), vec![("data".to_string(), "tok".to_string())], "initial event, path as registered");
    dom0.write(&format!("/local/domain/{}/data/a/b", dom.domid()), b"1").unwrap();
    assert_eq!(w.events(), vec![("data/a/b".to_string(), "tok".to_string())], "relative watch, relative path");
    dom0.write("/elsewhere", b"1").unwrap();
    assert_eq!(w.events(), vec![]);
    w.unwatch("data", "tok").unwrap();
    assert_eq!(w.unwatch("data", "tok"), Err(Errno::ENOENT));
    w.watch("data", "t2").unwrap();
    assert_eq!(w.watch("data", "t2"), Err(Errno::EEXIST));
}

#[test]
fn removing_a_parent_fires_watches_below_it_with_their_own_path() {
    let (sim, dom) = guest();
    let g = sim.xs_tool(dom.domid());
    g.write("data/x/y", b"1").unwrap();
    g.watch("data/x/y", "deep").unwrap();
    g.events();
    g.rm("data/x").unwrap();
    assert_eq!(g.events(), vec![("data/x/y".to_string(), "deep".to_string())]);
    assert_eq!(g.rm("data/x"), Ok(()), "removing an absent node under an existing parent is OK");
    assert_eq!(g.rm("data/x/y/z"), Err(Errno::ENOENT));
}

#[test]
fn watchers_that_may_not_read_a_node_hear_nothing_of_it() {
    let (sim, dom) = guest();
    let dom0 = sim.xs_tool(0);
    let g = sim.xs_tool(dom.domid());
    g.watch("/secret", "t").unwrap();
    g.events();
    dom0.write("/secret", b"1").unwrap(); // inherits n0 from /
    assert_eq!(g.events(), vec![]);
}

#[test]
fn release_domain_fires_for_dom0_when_a_domain_dies() {
    let (sim, dom) = guest();
    let dom0 = sim.xs_tool(0);
    dom0.watch(RELEASE_DOMAIN, "gone").unwrap();
    dom0.events();
    sim.destroy_domain(dom.domid());
    assert_eq!(dom0.events(), vec![(RELEASE_DOMAIN.to_string(), "gone".to_string())]);
}

#[test]
fn transactions_conflict_only_on_what_they_touched() {
    let (sim, dom) = guest();
    let id = dom.domid();
    let dom0 = sim.xs_tool(0);
    let mut g = sim.xs_tool(id);
    g.write("data/a", b"1").unwrap();
    g.start().unwrap();
    g.read("data/a").unwrap();
    dom0.write("/unrelated", b"1").unwrap();
    g.write("data/a", b"2").unwrap();
    assert_eq!(g.read("data/a").unwrap(), b"2", "a transaction sees its own writes");
    g.commit().unwrap();
    g.start().unwrap();
    g.read("data/a").unwrap();
    dom0.write(&format!("/local/domain/{id}/data/a"), b"9").unwrap();
    g.write("data/a", b"3").unwrap();
    assert_eq!(g.commit(), Err(Errno::EAGAIN));
    assert_eq!(dom0.read(&format!("/local/domain/{id}/data/a")).unwrap(), b"9");
    g.tx = 12345;
    assert_eq!(g.read("data/a"), Err(Errno::ENOENT), "unknown transaction");
}

#[test]
fn transaction_quota_is_enospc() {
    let (sim, dom) = guest();
    let mut tools: Vec<_> = (0..quota::TRANSACTIONS).map(|_| sim.xs_tool(dom.domid())).collect();
    for t in &mut tools {
        t.start().unwrap();
    }
    assert_eq!(sim.xs_tool(dom.domid()).start(), Err(Errno::ENOSPC));
}

#[test]
fn values_over_the_size_quota_are_enospc() {
    let (sim, dom) = guest();
    let g = sim.xs_tool(dom.domid());
    assert_eq!(g.write("data/big", &vec![b'x'; quota::VALUE_SIZE + 1]), Err(Errno::ENOSPC));
    g.write("data/ok", &vec![b'x'; quota::VALUE_SIZE]).unwrap();
}

#[test]
fn xenstored_stops_reading_a_ring_at_20_outstanding_replies() {
    let (sim, dom) = guest();
    let page = dom.store_page().unwrap();
    // A guest that never consumes replies: the response ring is full from the start.
    page.write_u32(offsets::RSP_PROD, 1024);
    // 25 READ requests of 21 bytes each, written straight into the request ring.
    let mut stream = Vec::new();
    for req_id in 0..25u32 {
        for v in [msg::READ, req_id, 0, 5] {
            stream.extend_from_slice(&v.to_le_bytes());
        }
        stream.extend_from_slice(b"name\0");
    }
    page.copy_in(offsets::REQ, &stream);
    page.write_u32(offsets::REQ_PROD, stream.len() as u32);
    dom.send(dom.store_port().unwrap()).unwrap();
    sim.run_xenstored();
    assert_eq!(sim.with_xenstored(|x| x.outstanding(dom.domid())), quota::OUTSTANDING);
    assert_eq!(page.read_u32(offsets::REQ_CONS), 20 * 21, "the rest stays unread in the ring");
    // The guest consumes the ring: xenstored writes replies and reads on.
    page.write_u32(offsets::RSP_CONS, 1024);
    dom.send(dom.store_port().unwrap()).unwrap();
    sim.run_xenstored();
    assert_eq!(page.read_u32(offsets::REQ_CONS), 25 * 21);
}

#[test]
fn garbage_ring_indices_make_xenstored_drop_the_connection() {
    let (sim, dom) = guest();
    let page = dom.store_page().unwrap();
    sim.garbage_into_ring(page, offsets::REQ_PROD, &5000u32.to_le_bytes());
    dom.send(dom.store_port().unwrap()).unwrap();
    sim.run_xenstored();
    assert!(sim.with_xenstored(|x| x.ring_broken(dom.domid())));
}

#[test]
fn an_oversized_header_makes_xenstored_drop_the_connection() {
    let (sim, dom) = guest();
    let page = dom.store_page().unwrap();
    let mut header = Vec::new();
    for v in [msg::READ, 1, 0, 5000] {
        header.extend_from_slice(&u32::to_le_bytes(v));
    }
    sim.garbage_into_ring(page, offsets::REQ, &header);
    sim.garbage_into_ring(page, offsets::REQ_PROD, &16u32.to_le_bytes());
    dom.send(dom.store_port().unwrap()).unwrap();
    sim.run_xenstored();
    assert!(sim.with_xenstored(|x| x.ring_broken(dom.domid())));
}

#[test]
fn garbage_in_the_response_ring_breaks_the_client_not_the_process() {
    let (sim, dom) = guest();
    let mut xs = Box::new(Client::new());
    let page = dom.store_page().unwrap();
    xs.attach(page);
    let id = xs.submit(0, u64::MAX, TxId::NONE, Request::Read("name")).unwrap();
    // A hostile "xenstored" claims an impossible response producer index.
    sim.garbage_into_ring(page, offsets::RSP_PROD, &4000u32.to_le_bytes());
    let _ = xs.poll(0);
    assert!(matches!(xs.state(), ClientState::Broken(_)));
    assert_eq!(xs.take_reply(id).unwrap().unwrap_err(), Error::Broken);
}

#[test]
fn a_domain_that_dies_mid_request_leaves_xenstored_serving_the_others() {
    let sim = Sim::new();
    let dying = sim.create_domain("dying");
    let other = sim.create_domain("other");
    let mut xs = Box::new(Client::new());
    xs.attach(dying.store_page().unwrap());
    xs.submit(0, u64::MAX, TxId::NONE, Request::Write("data/half", b"x")).unwrap();
    let _ = xs.poll(0);
    sim.destroy_domain(dying.domid()); // before xenstored read the request
    sim.run_xenstored();
    assert_eq!(sim.peek(&format!("/local/domain/{}/data/half", dying.domid())), None);
    let mut xs2 = Box::new(Client::new());
    xs2.attach(other.store_page().unwrap());
    let id = xs2.submit(0, u64::MAX, TxId::NONE, Request::Read("name")).unwrap();
    sim.pump(&other, &mut xs2, 0);
    assert_eq!(xs2.take_reply(id).unwrap().unwrap().payload(), b"other");
}

#[test]
fn a_request_without_a_notification_is_not_served() {
    let (sim, dom) = guest();
    let mut xs = Box::new(Client::new());
    xs.attach(dom.store_page().unwrap());
    let id = xs.submit(0, u64::MAX, TxId::NONE, Request::Read("name")).unwrap();
    let _ = xs.poll(0); // published, but the test "forgets" EVTCHNOP_send
    sim.run_xenstored();
    let _ = xs.poll(0);
    assert!(xs.take_reply(id).is_none(), "xenstored was never woken");
    dom.send(dom.store_port().unwrap()).unwrap();
    sim.pump(&dom, &mut xs, 0);
    assert!(xs.take_reply(id).unwrap().is_ok());
}
