//! Hostile netfronts against the netback: each abuse has its specific outcome (an error
//! response and a counter, or the disconnection of that client only), and a well-behaved
//! client next to it keeps working.

use grant_pool::GrantPool;
use tests::sim::netfront::{
    Extra, FrontConfig, POOL_FIRST_REF, POOL_PAGES, Portcullis, RawTx, SimNetfront, VifDevice, pool_pages, rsp, txf,
};
use tests::sim::{Sim, SimDomain};
use xen_front::netback::{ABUSE_LIMIT, FrameMeta, VifId};
use xen_front::xenbus::XenbusState;

fn pool(dom: &SimDomain) -> GrantPool<SimDomain, POOL_PAGES> {
    let pages = pool_pages(dom, POOL_PAGES);
    // Safety: `pool_pages` leaked these pages (distinct, page-aligned, alive for the rest of
    // the program) and made them RAM of `dom`; from now on only this pool and the simulated
    // Xen (through grants and copies the pool's users request) touch them.
    unsafe { GrantPool::from_pages(dom.clone(), POOL_FIRST_REF, |i| pages[i]) }.expect("pool")
}

struct World {
    sim: Sim,
    pc: Portcullis,
    good: SimNetfront,
    bad: SimNetfront,
}

fn front(sim: &Sim, pc: &Portcullis, name: &str, cfg: FrontConfig) -> SimNetfront {
    let dom = sim.create_domain(name);
    let mac = format!("00:16:3e:5e:6c:{:02x}", dom.domid());
    let ip = format!("10.137.0.{}", dom.domid());
    let dev = VifDevice::attach(sim, pc.domid(), dom.domid(), 0, &mac, Some(&ip));
    SimNetfront::new(sim, &dom, &dev, cfg)
}

fn run(w: &mut World) {
    for _ in 0..30 {
        w.pc.settle();
        w.good.step();
        w.bad.step();
    }
    w.pc.settle();
}

fn world(bad_cfg: FrontConfig) -> World {
    let sim = Sim::new();
    let pc = Portcullis::boot(&sim, pool);
    let good = front(&sim, &pc, "good", FrontConfig::default());
    let bad = front(&sim, &pc, "bad", bad_cfg);
    let mut w = World { sim, pc, good, bad };
    run(&mut w);
    assert_eq!(w.good.dev.backend_state(), Some(XenbusState::Connected));
    w
}

fn vif(w: &World, f: &SimNetfront) -> Option<VifId> {
    w.pc.nb.find(f.dom.domid(), 0)
}

fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed)).collect()
}

/// The good client still sends and receives byte-exact frames.
fn good_still_works(w: &mut World) {
    let v = vif(w, &w.good).expect("good client connected");
    w.good.send(&frame(600, 1), txf::CSUM_BLANK);
    let got = w.pc.receive();
    let mine: Vec<_> = got.iter().filter(|d| d.vif == v).collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].data, frame(600, 1));
    assert!(w.good.tx_responses().iter().all(|r| r.status == rsp::OKAY));
    w.pc.transmit(v, &frame(700, 2), FrameMeta::default()).unwrap();
    let rx = w.good.rx_frames(true);
    assert_eq!(rx.len(), 1);
    assert_eq!(rx[0].data, frame(700, 2));
}

fn bad_sends(w: &mut World, reqs: &[RawTx]) -> Vec<i16> {
    for r in reqs {
        w.bad.push_raw(*r);
    }
    w.bad.publish_tx();
    let got = w.pc.receive();
    let bv = vif(w, &w.bad);
    assert!(got.iter().all(|d| Some(d.vif) != bv), "nothing from the bad client is delivered");
    w.bad.tx_responses().iter().map(|r| r.status).collect()
}

fn good_buffer(w: &World) -> u32 {
    w.bad.tx_grant(0).0.0
}

#[test]
fn a_bad_grant_reference_is_answered_with_an_error_and_counted() {
    let mut w = world(FrontConfig::default());
    let statuses = bad_sends(&mut w, &[RawTx { gref: 1_000_000, offset: 0, flags: 0, id: 0, size: 60 }]);
    assert_eq!(statuses, vec![rsp::ERROR]);
    // A reference inside the table but not granted to us.
    let statuses = bad_sends(&mut w, &[RawTx { gref: 2000, offset: 0, flags: 0, id: 1, size: 60 }]);
    assert_eq!(statuses, vec![rsp::ERROR]);
    let bv = vif(&w, &w.bad).expect("still connected");
    assert_eq!(w.pc.nb.counters(bv).unwrap().copy_errors, 2);
    assert_eq!(w.pc.nb.resources().in_flight_copies, 0);
    assert!(w.pc.pool.counts().balanced() && w.pc.pool.counts().free == POOL_PAGES as u32);
    good_still_works(&mut w);
}

#[test]
fn offsets_and_sizes_past_the_page_are_malformed() {
    let mut w = world(FrontConfig::default());
    let g = good_buffer(&w);
    let cases = [
        RawTx { gref: g, offset: 4000, flags: 0, id: 0, size: 200 }, // crosses the page
        RawTx { gref: g, offset: 0, flags: 0, id: 1, size: 5000 },   // larger than a page
        RawTx { gref: g, offset: 0, flags: 0, id: 2, size: 10 },     // shorter than Ethernet
        RawTx { gref: g, offset: 0, flags: 0, id: 300, size: 60 },   // id beyond the ring
    ];
    for (k, c) in cases.iter().enumerate() {
        assert_eq!(bad_sends(&mut w, &[*c]), vec![rsp::ERROR], "case {k}");
    }
    // Follow-on slots larger than the frame size.
    let chain = [
        RawTx { gref: g, offset: 0, flags: txf::MORE_DATA, id: 3, size: 100 },
        RawTx { gref: g, offset: 0, flags: 0, id: 4, size: 200 },
    ];
    assert_eq!(bad_sends(&mut w, &chain), vec![rsp::ERROR, rsp::ERROR]);
    let bv = vif(&w, &w.bad).expect("still connected");
    assert_eq!(w.pc.nb.counters(bv).unwrap().malformed, 5);
    assert_eq!(w.pc.nb.stats().malformed, 5);
    good_still_works(&mut w);
}

#[test]
fn ids_reused_within_a_frame_are_malformed_but_across_frames_are_answered() {
    let mut w = world(FrontConfig::default());
    let g = good_buffer(&w);
    w.bad.tx_grant(0).1.copy_in(0, &frame(100, 5));
    let same = [
        RawTx { gref: g, offset: 0, flags: txf::MORE_DATA, id: 7, size: 100 },
        RawTx { gref: g, offset: 50, flags: 0, id: 7, size: 50 },
    ];
    assert_eq!(bad_sends(&mut w, &same), vec![rsp::ERROR, rsp::ERROR]);
    // The same id in two frames: each frame is answered (the frontend only confuses itself).
    let frames = [
        RawTx { gref: g, offset: 0, flags: 0, id: 9, size: 60 },
        RawTx { gref: g, offset: 0, flags: 0, id: 9, size: 60 },
    ];
    for r in frames {
        w.bad.push_raw(r);
    }
    w.bad.publish_tx();
    let got = w.pc.receive();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].data, frame(60, 5));
    let rs: Vec<_> = w.bad.tx_responses().iter().map(|r| (r.id, r.status)).collect();
    assert_eq!(rs, vec![(9, rsp::OKAY), (9, rsp::OKAY)]);
    good_still_works(&mut w);
}

#[test]
fn unknown_or_unoffered_extra_info_is_malformed() {
    let mut w = world(FrontConfig::default());
    let gso = Extra { kind: 1, flags: 0, data: [0xa8, 5, 1, 0, 0, 0] };
    w.bad.send_multi(&frame(100, 1), &[], 0, &[gso], 0);
    let unknown = Extra { kind: 9, flags: 0, data: [0; 6] };
    w.bad.send_multi(&frame(100, 1), &[], 0, &[unknown], 0);
    let got = w.pc.receive();
    assert!(got.is_empty());
    let statuses: Vec<i16> = w.bad.tx_responses().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![rsp::ERROR, rsp::NULL, rsp::ERROR, rsp::NULL]);
    good_still_works(&mut w);
}

#[test]
fn a_slot_chain_that_never_ends_is_refused_and_the_client_disconnected() {
    let mut w = world(FrontConfig::default());
    let g = good_buffer(&w);
    // 255 slots all saying "more data follows".
    let chain: Vec<RawTx> =
        (0..255).map(|i| RawTx { gref: g, offset: 0, flags: txf::MORE_DATA, id: i % 200, size: 100 }).collect();
    let statuses = bad_sends(&mut w, &chain);
    // Every consumed slot is answered with an error, nineteen at a time.
    assert!(statuses.len() >= 19 * 13, "{} answers", statuses.len());
    assert!(statuses.iter().all(|&s| s == rsp::ERROR));
    assert!(w.pc.nb.stats().malformed >= 13);
    // Keep going: the client is disconnected once it has been refused ABUSE_LIMIT times.
    for _ in 0..3 {
        let chain: Vec<RawTx> =
            (0..60).map(|i| RawTx { gref: g, offset: 0, flags: txf::MORE_DATA, id: i, size: 100 }).collect();
        if vif(&w, &w.bad).is_some() {
            bad_sends(&mut w, &chain);
        }
        run(&mut w);
    }
    assert!(w.pc.nb.stats().abuse_disconnects >= 1);
    assert!(vif(&w, &w.bad).is_none(), "the abusive client is disconnected");
    assert_eq!(w.bad.state(), XenbusState::Closed);
    let r = w.pc.nb.vif_resources(w.bad.dom.domid(), 0);
    assert_eq!((r.mapped_pages, r.event_channels, r.in_flight_copies), (0, 0, 0));
    good_still_works(&mut w);
}

#[test]
fn repeated_malformed_frames_disconnect_only_that_client() {
    let mut w = world(FrontConfig::default());
    let g = good_buffer(&w);
    for k in 0..ABUSE_LIMIT {
        let bad = [RawTx { gref: g, offset: 4095, flags: 0, id: k as u16, size: 60 }];
        bad_sends(&mut w, &bad);
    }
    run(&mut w);
    assert_eq!(w.pc.nb.stats().abuse_disconnects, 1);
    assert!(vif(&w, &w.bad).is_none());
    assert_eq!(w.bad.dev.backend_state(), Some(XenbusState::Closed));
    good_still_works(&mut w);
}

#[test]
fn a_request_index_jump_disconnects_the_client() {
    let mut w = world(FrontConfig::default());
    w.bad.jump_req_prod(1000);
    w.pc.receive();
    run(&mut w);
    assert_eq!(w.pc.nb.stats().ring_faults, 1);
    assert!(vif(&w, &w.bad).is_none());
    assert_eq!(w.bad.state(), XenbusState::Closed);
    assert_eq!(w.bad.leaked_grants, 0, "the rings were unmapped");
    good_still_works(&mut w);
}

#[test]
fn rings_granted_read_only_are_refused() {
    let mut w = world(FrontConfig { readonly_rings: true, ..FrontConfig::default() });
    assert!(vif(&w, &w.bad).is_none());
    assert_eq!(w.pc.nb.stats().refused_map, 1);
    assert_eq!(w.bad.dev.backend_state(), Some(XenbusState::Closed));
    let r = w.pc.nb.vif_resources(w.bad.dom.domid(), 0);
    assert_eq!((r.mapped_pages, r.event_channels), (0, 0));
    good_still_works(&mut w);
}

#[test]
fn garbage_frontend_values_are_refused_cleanly() {
    let cases: Vec<(&str, &[u8])> = vec![
        ("tx-ring-ref", b"twelve"),
        ("rx-ring-ref", b"-1"),
        ("event-channel", b"99999999999"),
        ("request-rx-copy", b"0"),
        ("multi-queue-num-queues", b"4"),
        ("feature-no-csum-offload", b"maybe"),
    ];
    for (key, value) in cases {
        let cfg = FrontConfig { overrides: vec![(key.to_string(), value.to_vec())], ..FrontConfig::default() };
        let mut w = world(cfg);
        assert!(vif(&w, &w.bad).is_none(), "{key}");
        assert_eq!(w.pc.nb.stats().refused_config, 1, "{key}");
        assert_eq!(w.bad.dev.backend_state(), Some(XenbusState::Closed), "{key}");
        good_still_works(&mut w);
    }
    let mut w = world(FrontConfig { no_request_rx_copy: true, ..FrontConfig::default() });
    assert!(vif(&w, &w.bad).is_none());
    good_still_works(&mut w);
}

#[test]
fn a_garbage_frontend_state_closes_the_vif() {
    let mut w = world(FrontConfig::default());
    assert!(vif(&w, &w.bad).is_some());
    let xs = w.sim.xs_tool(w.bad.dom.domid());
    xs.write(&format!("{}/state", w.bad.dev.frontend_path()), b"banana").unwrap();
    // Connected vifs hold no watch: the periodic sweep notices.
    w.pc.advance(xen_front::netback::SWEEP_NS);
    w.pc.settle();
    assert!(vif(&w, &w.bad).is_none());
    good_still_works(&mut w);
}

#[test]
fn a_frontend_that_vanishes_mid_copy_is_torn_down() {
    let mut w = world(FrontConfig::default());
    let bad_dom = w.bad.dom.domid();
    // Requests posted, then the domain dies before the backend copies.
    w.bad.send(&frame(300, 1), 0);
    w.bad.send(&frame(300, 2), 0);
    w.sim.destroy_domain(bad_dom);
    // `xl destroy` removes the domain's xenstore home (its frontend directories).
    w.sim.xs_tool(0).rm(&format!("/local/domain/{bad_dom}")).unwrap();
    let got = w.pc.receive();
    assert!(got.is_empty());
    assert_eq!(w.pc.nb.stats().copy_errors, 2);
    // The copy failures make the netback look at the frontend (the simulated xenstored tells
    // only dom0 about @releaseDomain): gone, so it closes.
    w.pc.settle();
    assert!(vif(&w, &w.bad).is_none());
    let r = w.pc.nb.vif_resources(bad_dom, 0);
    assert_eq!((r.mapped_pages, r.event_channels, r.in_flight_copies), (0, 0, 0));
    // Nothing of the dead domain is mapped any more: it is reaped, not a zombie.
    assert!(!w.sim.exists(bad_dom), "no ring page of the dead client left mapped");
    // libxl cleans up; the directory goes.
    w.bad.dev.detach();
    w.pc.settle();
    w.pc.advance(xen_front::netback::REMOVE_DELAY_NS);
    assert!(w.bad.dev.backend_gone());
    good_still_works(&mut w);
}

#[test]
fn a_client_that_never_completes_its_handshake_blocks_nobody() {
    let sim = Sim::new();
    let pc = Portcullis::boot(&sim, pool);
    // Forty stuck vifs (HVM stub domains that never connect) first, then a normal client.
    let mut stuck = Vec::new();
    for k in 0..40 {
        stuck.push(front(&sim, &pc, &format!("stub{k}"), FrontConfig { passive: true, ..FrontConfig::default() }));
    }
    let good = front(&sim, &pc, "good", FrontConfig::default());
    let bad = front(&sim, &pc, "unused", FrontConfig { passive: true, ..FrontConfig::default() });
    let mut w = World { sim, pc, good, bad };
    run(&mut w);
    // More stuck vifs than frontend watches: the rest, the good one included, are polled.
    for _ in 0..3 {
        w.pc.advance(xen_front::netback::FRONT_POLL_NS);
        run(&mut w);
    }
    for s in &stuck {
        assert_eq!(s.dev.backend_state(), Some(XenbusState::InitWait));
    }
    assert_eq!(w.good.dev.backend_state(), Some(XenbusState::Connected));
    // Watches stay bounded although 42 vifs wait for their frontends.
    let watches = w.sim.with_xenstored(|x| x.watches_of(w.pc.domid()));
    assert!(watches <= 2 + xen_front::netback::FRONT_WATCH_MAX as usize, "{watches} watches");
    // The stuck ones without a watch are polled; time passing costs nothing else.
    w.pc.advance(xen_front::netback::FRONT_POLL_NS);
    good_still_works(&mut w);
}
