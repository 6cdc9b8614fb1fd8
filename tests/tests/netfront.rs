//! The uplink netfront (`xen_front::netfront`) against the simulated Linux netback
//! (`tests::sim::netback`, written from io/netif.h): handshake, frames both ways byte-exact,
//! checksum-offload flags, and each hostile backend behaviour with its expected outcome:
//! counted and survived, or the connection torn down and everything reclaimed.

use grant_pool::{GrantPool, PoolCounts, SharedPage};
use tests::sim::netback::wire::{rxf, txf};
use tests::sim::netback::{Fault, Ring, SimNetback, SimNetbackConfig};
use tests::sim::{Sim, SimDomain};
use xen_front::netfront::{Netfront, NetfrontEvent, Phase, RX_BUFFERS, RxVerdict};
use xen_front::netif::ChecksumOffload;
use xen_front::platform::{Gfn, Port};
use xen_front::xenstore::Client;

const MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0x5e, 0x00, 0x02];
const POOL: usize = 320;

struct Rig {
    sim: Sim,
    dom: SimDomain,
    xs: Box<Client>,
    pool: Box<GrantPool<SimDomain, POOL>>,
    nf: Box<Netfront>,
    nb: SimNetback,
    now: u64,
    events: Vec<NetfrontEvent>,
    received: Vec<(Vec<u8>, ChecksumOffload)>,
}

impl Rig {
    fn new(config: SimNetbackConfig) -> Rig {
        let sim = Sim::new();
        let dom = sim.create_domain("portcullis");
        Self::with_backend(sim.clone(), dom, &sim.dom0(), config)
    }

    fn with_backend(sim: Sim, dom: SimDomain, backend: &SimDomain, config: SimNetbackConfig) -> Rig {
        let mut xs = Box::new(Client::new());
        xs.attach(dom.store_page().unwrap());
        let pages: Vec<(Gfn, SharedPage)> = (0..POOL).map(|_| dom.alloc_page()).collect();
        // Safety: fresh pages of the simulated domain, used only through this pool.
        let pool = unsafe { GrantPool::from_pages(dom.clone(), 8, |i| (pages[i].1.addr(), pages[i].0.0)) }.unwrap();
        let mut nf = Box::new(Netfront::new());
        nf.start(&mut xs, 0);
        let nb = SimNetback::attach_with(&sim, backend, dom.domid(), 0, MAC, config);
        Rig { sim, dom, xs, pool: Box::new(pool), nf, nb, now: 0, events: Vec::new(), received: Vec::new() }
    }

    /// One pass of the appliance's loop, then one step of the backend.
    fn turn(&mut self) {
        self.now += 10_000_000;
        for _ in 0..3 {
            self.sim.pump(&self.dom, &mut self.xs, self.now);
            if self.xs.events_lost() {
                self.nf.on_events_lost();
            }
            while let Some(ev) = self.xs.pop_event() {
                assert!(self.nf.on_watch(ev.path, ev.token), "only the netfront watches here");
            }
            if let Some(e) = self.nf.poll_control(&mut self.xs, &self.dom, &mut self.pool, self.now) {
                self.events.push(e);
            }
        }
        let received = &mut self.received;
        self.nf.receive(&mut self.pool, 64, |_, slot, frame| {
            received.push((slot.bytes()[frame.range()].to_vec(), frame.csum));
            RxVerdict::Recycle
        });
        self.nf.reap_tx(&mut self.pool);
        self.nf.flush(&self.dom);
        self.sim.pump(&self.dom, &mut self.xs, self.now);
        self.nb.step();
    }

    fn run(&mut self, turns: usize) {
        for _ in 0..turns {
            self.turn();
        }
    }

    fn connect(&mut self) {
        for _ in 0..100 {
            self.turn();
            if self.nf.is_up() {
                return;
            }
        }
        panic!("no connection: netfront {:?}, backend {:?}", self.nf.phase(), self.nb.state());
    }

    fn send(&mut self, frame: &[u8], csum: ChecksumOffload) -> bool {
        let mut slot = self.pool.take().unwrap();
        slot.bytes_mut()[100..100 + frame.len()].copy_from_slice(frame);
        match self.nf.transmit(&mut self.pool, slot, 100, frame.len() as u16, csum) {
            Ok(()) => true,
            Err(slot) => {
                self.pool.put_back(slot);
                false
            }
        }
    }

    /// Pool counts of a connected, idle netfront: two ring pages and the RX buffers.
    fn idle_counts() -> PoolCounts {
        PoolCounts {
            capacity: POOL as u32,
            free: (POOL - 2 - RX_BUFFERS) as u32,
            private: 0,
            lent: RX_BUFFERS as u32,
            shared: 2,
            quarantined: 0,
        }
    }

    fn empty_counts() -> PoolCounts {
        PoolCounts { capacity: POOL as u32, free: POOL as u32, ..PoolCounts::default() }
    }
}

fn frame(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

#[test]
fn handshake_then_frames_both_ways_byte_exact() {
    let mut r = Rig::new(SimNetbackConfig::default());
    r.connect();
    assert_eq!(r.events, [NetfrontEvent::LinkUp]);
    let f = r.nb.frontend_features().unwrap();
    assert!(f.rx_notify && !f.sg && !f.gso_tcpv4, "{f:?}");
    assert_eq!(r.nf.mac(), MAC);
    r.run(2);
    assert_eq!(r.nb.rx_posted(), RX_BUFFERS);
    assert_eq!(r.pool.counts(), Rig::idle_counts());

    // Backend → us, with each checksum flag combination.
    let sizes = [60usize, 1514, 4096, 14];
    let flags = [0, rxf::CSUM_BLANK | rxf::DATA_VALIDATED, rxf::DATA_VALIDATED, 0];
    for (i, (&n, &fl)) in sizes.iter().zip(&flags).enumerate() {
        assert!(r.nb.inject(&frame(n, i as u8), fl));
    }
    r.run(3);
    assert_eq!(r.received.len(), 4);
    for (i, (bytes, csum)) in r.received.iter().enumerate() {
        assert_eq!(bytes, &frame(sizes[i], i as u8));
        assert_eq!(*csum, ChecksumOffload::from_rx_flags(flags[i]));
    }
    // Us → backend.
    let blank = ChecksumOffload { blank: true, validated: true };
    assert!(r.send(&frame(1514, 9), blank));
    assert!(r.send(&frame(42, 10), ChecksumOffload::default()));
    r.run(3);
    let sent = r.nb.sent_frames();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].bytes, frame(1514, 9));
    assert_eq!(sent[0].flags, txf::CSUM_BLANK | txf::DATA_VALIDATED);
    assert_eq!(sent[1].bytes, frame(42, 10));
    assert_eq!(sent[1].flags, 0);
    assert_eq!(r.nf.in_flight(), (RX_BUFFERS, 0));
    assert_eq!(r.pool.counts(), Rig::idle_counts(), "every TX slot came home");
    let c = r.nf.counters();
    assert_eq!((c.rx_frames, c.tx_frames, c.ring_faults), (4, 2, 0));
}

#[test]
fn many_frames_keep_the_rx_ring_full_and_the_pool_balanced() {
    let mut r = Rig::new(SimNetbackConfig::default());
    r.connect();
    for round in 0..20u8 {
        for i in 0..50u8 {
            r.nb.inject(&frame(64 + usize::from(i) * 20, round ^ i), 0);
            assert!(r.send(&frame(60 + usize::from(i), i), ChecksumOffload::default()));
        }
        r.run(4);
    }
    assert_eq!(r.received.len(), 1000);
    assert_eq!(r.nb.sent_frames().len(), 1000);
    assert_eq!(r.pool.counts(), Rig::idle_counts());
    assert_eq!(r.nb.rx_posted(), RX_BUFFERS);
}

#[test]
fn detach_tears_down_and_returns_everything() {
    let mut r = Rig::new(SimNetbackConfig::default());
    r.connect();
    let port = r.nf.port().unwrap();
    r.nb.detach();
    r.run(20);
    assert_eq!(r.events, [NetfrontEvent::LinkUp, NetfrontEvent::LinkDown]);
    assert!(r.nb.is_removed(), "the toolstack removed the device after the backend closed");
    assert_eq!(r.nf.phase(), Phase::NoDevice);
    assert_eq!(r.pool.counts(), Rig::empty_counts());
    assert!(matches!(r.dom.channel(port), None | Some(tests::sim::evtchn::Channel::Free)), "event channel closed");
}

#[test]
fn reattach_with_a_new_device_id_and_a_new_backend_domain_reconnects() {
    let sim = Sim::new();
    let dom = sim.create_domain("portcullis");
    let sysnet = sim.create_domain("sys-net");
    let mut r = Rig::with_backend(sim.clone(), dom, &sim.dom0(), SimNetbackConfig::default());
    r.connect();
    let mut devid = 0;
    for cycle in 0..10 {
        devid += 1;
        let backend = if cycle % 2 == 0 { sysnet.clone() } else { sim.dom0() };
        let nb = std::mem::replace(&mut r.nb, SimNetback::attach(&sim, &sim.dom0(), 999, 99, MAC));
        r.nb.force_remove();
        r.nb = nb.reattach(&backend, devid);
        r.connect();
        assert_eq!(r.nf.devid(), Some(devid));
        assert_eq!(r.nf.backend_id(), backend.domid());
        r.nb.inject(&frame(100, cycle), 0);
        assert!(r.send(&frame(80, cycle), ChecksumOffload::default()));
        r.run(3);
        assert_eq!(r.received.last().unwrap().0, frame(100, cycle));
        assert_eq!(r.nb.sent_frames().len(), 1);
        assert_eq!(r.pool.counts(), Rig::idle_counts(), "cycle {cycle}");
    }
    assert_eq!(r.nf.counters().connects, 11);
    assert_eq!(r.nf.counters().quarantined, 0);
}

#[test]
fn a_backend_that_stays_in_initwait_never_connects_and_holds_nothing() {
    let mut r = Rig::new(SimNetbackConfig::default());
    r.nb.fault(Fault::StayInInitWait);
    r.run(50);
    assert!(!r.nf.is_up());
    assert_eq!(r.nf.phase(), Phase::Connecting, "we published and wait");
    assert!(!r.send(&frame(60, 0), ChecksumOffload::default()), "no TX while not connected");
    r.nb.force_remove();
    r.run(10);
    assert_eq!(r.pool.counts(), Rig::empty_counts());
}

#[test]
fn a_backend_without_rx_copy_is_refused() {
    let mut r = Rig::new(SimNetbackConfig { feature_rx_copy: false, ..SimNetbackConfig::default() });
    r.run(30);
    assert_eq!(r.nf.phase(), Phase::Unsupported);
    assert_eq!(r.pool.counts(), Rig::empty_counts());
}

#[test]
fn tx_responses_with_unknown_ids_are_counted_and_the_slot_comes_home_at_teardown() {
    let mut r = Rig::new(SimNetbackConfig::default());
    r.connect();
    r.nb.fault(Fault::TxUnknownId { count: 1 });
    assert!(r.send(&frame(60, 1), ChecksumOffload::default()));
    r.run(3);
    assert_eq!(r.nf.counters().tx_bad_id, 1);
    assert_eq!(r.nf.in_flight().1, 1, "the real id was never answered");
    r.nb.detach();
    r.run(20);
    assert_eq!(r.pool.counts(), Rig::empty_counts());
}

#[test]
fn tx_error_statuses_are_counted_and_slots_reclaimed() {
    let mut r = Rig::new(SimNetbackConfig::default());
    r.connect();
    r.nb.fault(Fault::TxStatus { status: -1, count: 3 });
    for i in 0..3 {
        assert!(r.send(&frame(60, i), ChecksumOffload::default()));
    }
    r.run(3);
    assert_eq!(r.nf.counters().tx_error_status, 3);
    assert_eq!(r.pool.counts(), Rig::idle_counts());
}

#[test]
fn duplicate_tx_responses_are_a_ring_fault_and_the_connection_is_dropped() {
    let mut r = Rig::new(SimNetbackConfig::default());
    r.connect();
    r.nb.fault(Fault::TxDuplicate { count: 1 });
    assert!(r.send(&frame(60, 1), ChecksumOffload::default()));
    r.run(10);
    let c = *r.nf.counters();
    assert_eq!(c.ring_faults, 1, "{c:?}");
    assert!(r.events.contains(&NetfrontEvent::LinkDown));
}

#[test]
fn rx_responses_past_the_page_or_negative_are_dropped_and_the_buffer_reposted() {
    let mut r = Rig::new(SimNetbackConfig::default());
    r.connect();
    r.nb.fault(Fault::RxBadOffset { count: 2 });
    r.nb.inject(&frame(200, 1), 0);
    r.nb.inject(&frame(200, 2), 0);
    r.run(3);
    r.nb.fault(Fault::RxStatus { status: -1, count: 1 });
    r.nb.inject(&frame(200, 3), 0);
    r.run(3);
    r.nb.inject(&frame(200, 4), 0);
    r.run(3);
    let c = *r.nf.counters();
    assert_eq!((c.rx_bad_length, c.rx_error_status, c.rx_frames), (2, 1, 1));
    assert_eq!(r.received, [(frame(200, 4), ChecksumOffload::default())]);
    assert_eq!(r.nb.rx_posted(), RX_BUFFERS);
    assert_eq!(r.pool.counts(), Rig::idle_counts());
}

#[test]
fn rx_responses_with_unknown_ids_are_counted() {
    let mut r = Rig::new(SimNetbackConfig::default());
    r.connect();
    r.nb.fault(Fault::RxUnknownId { count: 1 });
    r.nb.inject(&frame(100, 1), 0);
    r.run(3);
    assert!(r.nf.counters().rx_bad_id >= 1);
    assert!(r.received.is_empty());
}

#[test]
fn a_jumping_response_index_drops_the_connection_and_reclaims_everything() {
    for ring in [Ring::Tx, Ring::Rx] {
        let mut r = Rig::new(SimNetbackConfig::default());
        r.connect();
        r.nb.fault(Fault::ProducerJump { ring, by: 1000 });
        r.run(20);
        assert_eq!(r.nf.counters().ring_faults, 1, "{ring:?}");
        assert!(r.events.contains(&NetfrontEvent::LinkDown), "{ring:?}");
        r.nb.detach();
        r.run(20);
        assert_eq!(r.pool.counts(), Rig::empty_counts(), "{ring:?}");
    }
}

#[test]
fn unsolicited_responses_are_a_ring_fault() {
    for ring in [Ring::Tx, Ring::Rx] {
        let mut r = Rig::new(SimNetbackConfig::default());
        r.connect();
        r.nb.fault(Fault::UnsolicitedResponses { ring, count: 300 });
        r.run(5);
        assert_eq!(r.nf.counters().ring_faults, 1, "{ring:?}");
    }
}

#[test]
fn an_rx_flood_is_taken_in_budgets_and_never_starves_the_pool() {
    let mut r = Rig::new(SimNetbackConfig::default());
    r.connect();
    r.nb.fault(Fault::RxFlood { frame: frame(1514, 7), flags: 0 });
    r.run(20);
    assert!(r.received.len() >= 20 * 64 / 2, "{}", r.received.len());
    assert!(r.received.iter().all(|(b, _)| *b == frame(1514, 7)));
    assert!(r.send(&frame(60, 1), ChecksumOffload::default()), "TX still has slots during the flood");
    r.nb.clear_faults();
    r.run(5);
    assert_eq!(r.pool.counts(), Rig::idle_counts());
}

#[test]
fn a_backend_closing_mid_transfer_is_followed_by_a_reconnect() {
    let mut r = Rig::new(SimNetbackConfig::default());
    r.connect();
    r.nb.fault(Fault::NeverConsume);
    for i in 0..5 {
        assert!(r.send(&frame(60, i), ChecksumOffload::default()));
    }
    r.run(2);
    r.nb.fault(Fault::GoClosing);
    r.nb.clear_faults();
    r.run(60);
    assert!(r.events.starts_with(&[NetfrontEvent::LinkUp, NetfrontEvent::LinkDown]), "{:?}", r.events);
    assert!(r.nf.is_up(), "reconnected: {:?} / backend {:?}", r.nf.phase(), r.nb.state());
    assert_eq!(r.pool.counts(), Rig::idle_counts());
    r.nb.inject(&frame(99, 1), 0);
    r.run(3);
    assert_eq!(r.received.last().unwrap().0, frame(99, 1));
}

#[test]
fn a_backend_domain_destroyed_mid_transfer_releases_everything() {
    let sim = Sim::new();
    let dom = sim.create_domain("portcullis");
    let sysnet = sim.create_domain("sys-net");
    let mut r = Rig::with_backend(sim.clone(), dom, &sysnet, SimNetbackConfig::default());
    r.connect();
    for i in 0..5 {
        assert!(r.send(&frame(60, i), ChecksumOffload::default()));
        r.nb.inject(&frame(70, i), 0);
    }
    sim.destroy_domain(sysnet.domid());
    // libxl removes the dead domain's home, its backend directories with it.
    let _ = sim.xs_tool(0).rm(&format!("/local/domain/{}", sysnet.domid()));
    r.run(300); // at most one backend re-check period (2 s) of simulated time
    assert!(r.events.contains(&NetfrontEvent::LinkDown), "{:?} {:?}", r.nf.phase(), r.nf.counters());
    assert!(!r.nf.is_up());
    assert_eq!(r.nf.port(), None);
    assert_eq!(r.pool.counts(), Rig::empty_counts());
}

#[test]
fn a_tx_page_the_backend_keeps_mapped_is_quarantined_until_released() {
    let mut r = Rig::new(SimNetbackConfig::default());
    r.connect();
    r.nb.fault(Fault::HoldTxMappings { count: 1 });
    assert!(r.send(&frame(60, 1), ChecksumOffload::default()));
    r.run(3);
    assert_eq!(r.nf.counters().quarantined, 1);
    assert_eq!(r.pool.counts().quarantined, 1);
    assert_eq!(r.pool.retry_quarantined(), 0, "still mapped");
    assert_eq!(r.nb.release_held_mappings(), 1);
    assert_eq!(r.pool.retry_quarantined(), 1);
    assert_eq!(r.pool.counts(), Rig::idle_counts());
}

#[test]
fn a_garbage_backend_state_is_treated_as_the_backend_going_away() {
    let mut r = Rig::new(SimNetbackConfig::default());
    r.connect();
    r.nb.fault(Fault::WriteBackendKey { key: "state".into(), value: b"\xffjunk".to_vec() });
    r.run(2);
    assert!(r.nf.counters().bad_xenstore_values >= 1);
    assert_eq!(r.events, [NetfrontEvent::LinkUp, NetfrontEvent::LinkDown]);
    // The backend follows our Closed and writes a sane state again: we reconnect.
    r.run(40);
    assert!(r.nf.is_up(), "{:?} / {:?}", r.nf.phase(), r.nb.state());
    assert_eq!(r.pool.counts(), Rig::idle_counts());
}

#[test]
fn garbage_device_keys_are_refused_without_connecting() {
    let sim = Sim::new();
    let dom = sim.create_domain("portcullis");
    let tool = sim.xs_tool(0);
    let home = format!("/local/domain/{}/device/vif/0", dom.domid());
    tool.write(&format!("{home}/backend"), b"relative/path").unwrap();
    tool.write(&format!("{home}/backend-id"), b"99999999999").unwrap();
    tool.write(&format!("{home}/mac"), b"zz:zz").unwrap();
    tool.write(&format!("{home}/state"), b"1").unwrap();
    let mut xs = Box::new(Client::new());
    xs.attach(dom.store_page().unwrap());
    let mut nf = Box::new(Netfront::new());
    let pages: Vec<(Gfn, SharedPage)> = (0..8).map(|_| dom.alloc_page()).collect();
    // Safety: fresh pages of the simulated domain, used only through this pool.
    let mut pool =
        unsafe { GrantPool::<_, 8>::from_pages(dom.clone(), 8, |i| (pages[i].1.addr(), pages[i].0.0)) }.unwrap();
    nf.start(&mut xs, 0);
    for t in 0..20 {
        sim.pump(&dom, &mut xs, t);
        while let Some(ev) = xs.pop_event() {
            nf.on_watch(ev.path, ev.token);
        }
        assert_eq!(nf.poll_control(&mut xs, &dom, &mut pool, t), None);
    }
    assert_eq!(nf.phase(), Phase::Unsupported);
    assert!(nf.counters().bad_xenstore_values >= 1);
    assert_eq!(pool.counts().free, 8);
    let _ = Port(0);
}
