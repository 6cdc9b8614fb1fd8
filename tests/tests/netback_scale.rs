//! The netback at scale: 1000 attach/detach cycles with every counter back to its baseline,
//! 128 clients with the 129th refused, and xenstored's node quota refusing cleanly.

use grant_pool::GrantPool;
use tests::sim::netfront::{
    FrontConfig, POOL_FIRST_REF, POOL_PAGES, Portcullis, SimNetfront, VifDevice, pool_pages, rsp,
};
use tests::sim::xenstored::quota;
use tests::sim::{Sim, SimDomain};
use xen_front::netback::{FrameMeta, MAX_VIFS, Resources};
use xen_front::platform::Port;
use xen_front::xenbus::XenbusState;

fn pool(dom: &SimDomain) -> GrantPool<SimDomain, POOL_PAGES> {
    let pages = pool_pages(dom, POOL_PAGES);
    // Safety: `pool_pages` leaked these pages (distinct, page-aligned, alive for the rest of
    // the program) and made them RAM of `dom`; from now on only this pool and the simulated
    // Xen (through grants and copies the pool's users request) touch them.
    unsafe { GrantPool::from_pages(dom.clone(), POOL_FIRST_REF, |i| pages[i]) }.expect("pool")
}

fn open_channels(dom: &SimDomain) -> usize {
    (1..=1023).filter(|&p| dom.channel(Port(p)).is_some_and(|c| c != tests::sim::evtchn::Channel::Free)).count()
}

/// Everything a test compares before and after.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    resources: Resources,
    channels: usize,
    watches: usize,
    nodes: usize,
    pool_free: u32,
    vifs: usize,
}

fn snapshot(sim: &Sim, pc: &Portcullis) -> Snapshot {
    Snapshot {
        resources: pc.nb.resources(),
        channels: open_channels(&pc.dom),
        watches: sim.with_xenstored(|x| x.watches_of(pc.domid())),
        nodes: sim.with_xenstored(|x| x.nodes_owned_by(pc.domid())),
        pool_free: pc.pool.counts().free,
        vifs: pc.nb.vifs_in_use(),
    }
}

/// Steps the netback and `fronts` until `done` holds (at most `limit` rounds).
fn until(pc: &mut Portcullis, fronts: &mut [&mut SimNetfront], limit: usize, done: impl Fn(&Portcullis) -> bool) {
    for round in 0..limit {
        // 100 ms per idle round: connected vifs re-read their frontends every SWEEP_NS.
        if round > 0 {
            pc.advance(100_000_000);
        }
        for f in fronts.iter_mut() {
            f.step();
        }
        pc.settle();
        if done(pc) {
            return;
        }
    }
    panic!("did not settle: vifs {} stats {:?}", pc.nb.vifs_in_use(), pc.nb.stats());
}

#[test]
fn a_thousand_attach_detach_cycles_return_every_counter_to_baseline() {
    let sim = Sim::new();
    let mut pc = Portcullis::boot(&sim, pool);
    let before = snapshot(&sim, &pc);
    assert_eq!(before.resources.watches, 2);
    let dom = sim.create_domain("churn");
    let fe = dom.domid();
    let mut connects = 0;
    let mut dev = VifDevice::attach(&sim, pc.domid(), fe, 0, "00:16:3e:5e:6c:01", Some("10.137.0.9"));
    let mut f = SimNetfront::new(&sim, &dom, &dev, FrontConfig::default());
    for cycle in 0..1000u32 {
        if cycle > 0 {
            dev = dev.reattach("00:16:3e:5e:6c:01", Some("10.137.0.9"));
            f.reset(&dev);
        }
        until(&mut pc, &mut [&mut f], 20, |pc| pc.nb.find(fe, 0).is_some());
        connects += 1;
        let vif = pc.nb.find(fe, 0).unwrap();
        if cycle % 50 == 0 {
            // Traffic both ways now and then.
            f.send(&[cycle as u8; 100], 0);
            assert_eq!(pc.receive().len(), 1);
            assert_eq!(f.tx_responses()[0].status, rsp::OKAY);
            pc.transmit(vif, &[7; 64], FrameMeta::default()).unwrap();
            assert_eq!(f.rx_frames(false).len(), 1);
        }
        // Who starts the teardown: mostly the toolstack, every tenth time the frontend.
        let frontend_first = cycle % 10 == 5;
        if frontend_first {
            f.close();
        } else {
            dev.detach();
        }
        until(&mut pc, &mut [&mut f], 20, |pc| pc.nb.find(fe, 0).is_none());
        assert_eq!(f.state(), XenbusState::Closed);
        if frontend_first {
            dev.detach();
        }
        until(&mut pc, &mut [&mut f], 20, |_| dev.backend_gone());
        dev.remove_frontend();
        pc.settle();
        f.step();
        assert_eq!(f.leaked_grants, 0, "cycle {cycle}: a ring page was still mapped");
        if cycle % 100 == 99 {
            assert_eq!(snapshot(&sim, &pc), before, "after {} cycles", cycle + 1);
        }
    }
    assert_eq!(pc.nb.stats().connects, connects);
    assert_eq!(pc.nb.stats().disconnects, connects);
    assert_eq!(snapshot(&sim, &pc), before);
    assert!(pc.pool.counts().balanced());
    // Domain destruction as well: the client dies while connected.
    for k in 0..20 {
        let dom = sim.create_domain(&format!("dying{k}"));
        let dev = VifDevice::attach(&sim, pc.domid(), dom.domid(), 0, "00:16:3e:5e:6c:02", None);
        let mut f = SimNetfront::new(&sim, &dom, &dev, FrontConfig::default());
        until(&mut pc, &mut [&mut f], 20, |pc| pc.nb.find(dom.domid(), 0).is_some());
        sim.destroy_domain(dom.domid());
        // libxl: the domain's home goes, the backend is asked to close.
        sim.xs_tool(0).rm(&format!("/local/domain/{}", dom.domid())).unwrap();
        dev.detach();
        until(&mut pc, &mut [], 20, |_| dev.backend_gone());
        assert!(!sim.exists(dom.domid()), "no page of the dead client is still mapped");
    }
    assert_eq!(snapshot(&sim, &pc), before);
}

#[test]
fn capacity_is_max_vifs_and_the_next_client_is_refused() {
    let sim = Sim::new();
    let mut pc = Portcullis::boot(&sim, pool);
    let before = snapshot(&sim, &pc);
    // 43 domains with 3 vifs each: 129 vifs.
    let mut fronts = Vec::new();
    for d in 0..43 {
        let dom = sim.create_domain(&format!("client{d}"));
        for devid in 0..3 {
            let mac = format!("00:16:3e:5e:{d:02x}:{devid:02x}");
            let dev = VifDevice::attach_lean(&sim, pc.domid(), dom.domid(), devid, &mac, Some("10.137.1.1"));
            fronts.push(SimNetfront::new(&sim, &dom, &dev, FrontConfig { rx_buffers: 2, ..FrontConfig::default() }));
        }
    }
    let mut refs: Vec<&mut SimNetfront> = fronts.iter_mut().collect();
    until(&mut pc, &mut refs, 200, |pc| pc.nb.connected().count() == MAX_VIFS);
    assert_eq!(pc.nb.stats().refused_capacity, 1);
    assert_eq!(pc.nb.vifs_in_use(), MAX_VIFS);
    let refused: Vec<_> = fronts.iter().filter(|f| pc.nb.find(f.dom.domid(), f.dev.devid).is_none()).collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].dev.backend_state(), Some(XenbusState::Initialising), "a refused vif is left alone");
    let watches = sim.with_xenstored(|x| x.watches_of(pc.domid()));
    assert_eq!(watches, 2, "connected vifs hold no watch");
    // Every client works.
    for f in fronts.iter_mut().filter(|f| f.state() == XenbusState::Connected).take(8) {
        f.send(&[1; 60], 0);
    }
    assert_eq!(pc.receive().len(), 8);
    // One leaves: the refused one gets its slot.
    let leaving = fronts.iter().position(|f| f.state() == XenbusState::Connected).unwrap();
    fronts[leaving].dev.detach();
    let waiting = fronts.iter().position(|f| pc.nb.find(f.dom.domid(), f.dev.devid).is_none()).unwrap();
    let mut refs: Vec<&mut SimNetfront> = fronts.iter_mut().collect();
    let (fe, devid) = (refs[waiting].dom.domid(), refs[waiting].dev.devid);
    until(&mut pc, &mut refs, 50, |pc| pc.nb.find(fe, devid).is_some());
    assert_eq!(pc.nb.connected().count(), MAX_VIFS);
    // All leave: back to the baseline.
    for f in &fronts {
        f.dev.detach();
    }
    let mut refs: Vec<&mut SimNetfront> = fronts.iter_mut().collect();
    until(&mut pc, &mut refs, 100, |pc| pc.nb.vifs_in_use() == 0);
    for f in &fronts {
        assert!(f.dev.backend_gone());
        f.dev.remove_frontend();
    }
    pc.settle();
    assert_eq!(snapshot(&sim, &pc), before);
}

#[test]
fn xenstored_node_quota_refuses_the_newcomer_cleanly() {
    let sim = Sim::new();
    let mut pc = Portcullis::boot(&sim, pool);
    let good_dom = sim.create_domain("early");
    let good_dev = VifDevice::attach(&sim, pc.domid(), good_dom.domid(), 0, "00:16:3e:5e:6c:01", None);
    let mut good = SimNetfront::new(&sim, &good_dom, &good_dev, FrontConfig::default());
    until(&mut pc, &mut [&mut good], 20, |pc| pc.nb.find(good_dom.domid(), 0).is_some());
    // Other nodes charged to us fill the quota (as ~60 libxl backend directories would).
    let tool = sim.xs_tool(0);
    let owned = sim.with_xenstored(|x| x.nodes_owned_by(pc.domid()));
    let home = format!("/local/domain/{}", pc.domid());
    // Leave room for the newcomer's directory (written by dom0) but not for our writes.
    for k in 0..quota::NODES - owned - 10 {
        let p = format!("{home}/data/filler{k}");
        tool.write(&p, b"x").unwrap();
        tool.set_perms(&p, &[&format!("n{}", pc.domid())]).unwrap();
    }
    let dom = sim.create_domain("late");
    let dev = VifDevice::attach(&sim, pc.domid(), dom.domid(), 0, "00:16:3e:5e:6c:02", None);
    let mut late = SimNetfront::new(&sim, &dom, &dev, FrontConfig::default());
    until(&mut pc, &mut [&mut late, &mut good], 20, |_| dev.backend_state() == Some(XenbusState::Closed));
    assert_eq!(pc.nb.stats().refused_quota, 1);
    assert!(pc.nb.find(dom.domid(), 0).is_none());
    let r = pc.nb.vif_resources(dom.domid(), 0);
    assert_eq!((r.mapped_pages, r.event_channels, r.watches), (0, 0, 0));
    late.step();
    assert_eq!(late.state(), XenbusState::Closed, "the frontend sees the refusal");
    // The early client is unaffected.
    good.send(&[3; 80], 0);
    assert_eq!(pc.receive().len(), 1);
    // The toolstack gives up on the refused vif; its directory goes.
    dev.detach();
    until(&mut pc, &mut [&mut late, &mut good], 20, |_| dev.backend_gone());
    assert_eq!(pc.nb.vifs_in_use(), 1);
}
