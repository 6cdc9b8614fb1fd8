//! The netback (`xen_front::netback`) against simulated Linux netfronts and libxl: the
//! handshake, frames both ways, multi-slot TX, teardown, and that every resource comes back.

use grant_pool::GrantPool;
use tests::sim::netfront::{
    Extra, FrontConfig, POOL_FIRST_REF, POOL_PAGES, Portcullis, SimNetfront, VifDevice, pool_pages, rsp, rxf, txf,
};
use tests::sim::{Sim, SimDomain};
use xen_front::netback::{FrameMeta, LinkChange, Resources, TxDrop};
use xen_front::xenbus::XenbusState;

fn pool(dom: &SimDomain) -> GrantPool<SimDomain, POOL_PAGES> {
    let pages = pool_pages(dom, POOL_PAGES);
    // Safety: `pool_pages` leaked these pages (distinct, page-aligned, alive for the rest of
    // the program) and made them RAM of `dom`; from now on only this pool and the simulated
    // Xen (through grants and copies the pool's users request) touch them.
    unsafe { GrantPool::from_pages(dom.clone(), POOL_FIRST_REF, |i| pages[i]) }.expect("pool")
}

fn boot() -> (Sim, Portcullis) {
    let sim = Sim::new();
    let pc = Portcullis::boot(&sim, pool);
    (sim, pc)
}

/// A client domain with one vif, attached by libxl.
fn client(sim: &Sim, pc: &Portcullis, name: &str, ip: &str) -> SimNetfront {
    client_with(sim, pc, name, ip, FrontConfig::default())
}

fn client_with(sim: &Sim, pc: &Portcullis, name: &str, ip: &str, cfg: FrontConfig) -> SimNetfront {
    let dom = sim.create_domain(name);
    let mac = format!("00:16:3e:5e:6c:{:02x}", dom.domid());
    let dev = VifDevice::attach(sim, pc.domid(), dom.domid(), 0, &mac, Some(ip));
    SimNetfront::new(sim, &dom, &dev, cfg)
}

/// Runs the netback and the frontends until both sides stop moving.
fn run(pc: &mut Portcullis, fronts: &mut [&mut SimNetfront]) {
    for _ in 0..30 {
        pc.settle();
        for f in fronts.iter_mut() {
            f.step();
        }
    }
    pc.settle();
}

fn connect(pc: &mut Portcullis, f: &mut SimNetfront) -> xen_front::netback::VifId {
    run(pc, &mut [f]);
    assert_eq!(f.state(), XenbusState::Connected);
    assert_eq!(f.dev.backend_state(), Some(XenbusState::Connected));
    pc.nb.find(f.dom.domid(), f.dev.devid).expect("connected vif")
}

fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn baseline(pc: &Portcullis) -> Resources {
    // backend/vif and @releaseDomain
    let r = Resources { watches: 2, ..Resources::default() };
    assert_eq!(pc.nb.resources(), r);
    r
}

#[test]
fn handshake_reaches_connected_with_the_keys_linux_needs() {
    let (sim, mut pc) = boot();
    let mut f = client(&sim, &pc, "work", "10.137.0.5 fd09:24ef:4179::a89:5");
    let vif = connect(&mut pc, &mut f);
    let dev = &f.dev;
    assert_eq!(dev.backend_key("feature-rx-copy").as_deref(), Some(&b"1"[..]));
    assert_eq!(dev.backend_key("feature-sg").as_deref(), Some(&b"1"[..]));
    assert_eq!(dev.backend_key("hotplug-status").as_deref(), Some(&b"connected"[..]));
    for absent in ["feature-gso-tcpv4", "feature-split-event-channels", "multi-queue-max-queues"] {
        assert!(dev.backend_key(absent).is_none(), "{absent} must not be offered");
    }
    let info = pc.nb.info(vif).unwrap();
    assert_eq!(info.domid, f.dom.domid());
    assert_eq!(info.mac, [0, 0x16, 0x3e, 0x5e, 0x6c, f.dom.domid() as u8]);
    assert_eq!(info.ipv4, Some("10.137.0.5".parse().unwrap()));
    assert_eq!(info.ipv6, Some("fd09:24ef:4179::a89:5".parse().unwrap()));
    assert!(info.csum_offload);
    assert_eq!(pc.changes, vec![LinkChange::Up(vif)]);
    let r = pc.nb.vif_resources(f.dom.domid(), 0);
    assert_eq!((r.mapped_pages, r.event_channels, r.in_flight_copies, r.watches), (2, 1, 0, 0));
    assert_eq!(r.xs_nodes, 3);
    assert_eq!(pc.nb.stats().connects, 1);
}

#[test]
fn frames_flow_both_ways_byte_exact() {
    let (sim, mut pc) = boot();
    let mut f = client(&sim, &pc, "work", "10.137.0.5");
    let vif = connect(&mut pc, &mut f);
    // Client -> us, single slots of several sizes, csum_blank like Linux's TCP/UDP.
    let sizes = [14, 60, 1514, 4096];
    for (k, &n) in sizes.iter().enumerate() {
        f.send(&frame(n, k as u8), txf::CSUM_BLANK | txf::DATA_VALIDATED);
    }
    let got = pc.receive();
    assert_eq!(got.len(), sizes.len());
    for (k, d) in got.iter().enumerate() {
        assert_eq!(d.vif, vif);
        assert_eq!(d.data, frame(sizes[k], k as u8));
        assert_eq!(d.meta, FrameMeta { len: sizes[k] as u16, csum_blank: true, data_validated: true });
    }
    let rsps = f.tx_responses();
    assert_eq!(rsps.len(), sizes.len());
    assert!(rsps.iter().all(|r| r.status == rsp::OKAY));
    // Us -> client.
    let blank = FrameMeta { len: 0, csum_blank: true, data_validated: false };
    let plain = FrameMeta::default();
    pc.transmit(vif, &frame(1500, 7), blank).unwrap();
    pc.transmit(vif, &frame(60, 8), plain).unwrap();
    let validated = FrameMeta { data_validated: true, ..plain };
    pc.transmit(vif, &frame(4096, 9), validated).unwrap();
    let rx = f.rx_frames(true);
    assert_eq!(rx.len(), 3);
    assert_eq!(rx[0].data, frame(1500, 7));
    assert_eq!(rx[0].flags, rxf::CSUM_BLANK | rxf::DATA_VALIDATED);
    assert_eq!(rx[1].data, frame(60, 8));
    assert_eq!(rx[1].flags, 0);
    assert_eq!(rx[2].data, frame(4096, 9));
    assert_eq!(rx[2].flags, rxf::DATA_VALIDATED);
    assert_eq!(f.protocol_errors, 0);
    let c = pc.nb.counters(vif).unwrap();
    assert_eq!((c.rx_frames, c.tx_frames), (4, 3));
    assert!(pc.pool.counts().balanced() && pc.pool.counts().free == POOL_PAGES as u32);
}

#[test]
fn multi_slot_frames_with_extra_info_are_gathered_into_one_slot() {
    let (sim, mut pc) = boot();
    let mut f = client(&sim, &pc, "work", "10.137.0.5");
    let vif = connect(&mut pc, &mut f);
    let data = frame(3000, 3);
    let mcast = Extra { kind: 2, flags: 0, data: [1, 0, 0x5e, 0, 0, 1] };
    let hash = Extra { kind: 4, flags: 0, data: [1, 1, 2, 3, 4, 5] };
    // Three data slots at an offset, two extra-info slots after the first.
    f.send_multi(&data, &[100, 2000], 96, &[mcast, hash], txf::CSUM_BLANK);
    // Sixteen slots (the simulated frontend has 16 TX buffers; 18 is the protocol minimum).
    let cuts: Vec<usize> = (1..18).map(|k| k * 100).collect();
    let long = frame(2000, 4);
    let rsps_before = f.tx_responses().len();
    assert_eq!(rsps_before, 0);
    let got = pc.receive();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, data);
    assert!(got[0].meta.csum_blank && !got[0].meta.data_validated);
    let rsps = f.tx_responses();
    let statuses: Vec<i16> = rsps.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![rsp::OKAY, rsp::NULL, rsp::NULL, rsp::OKAY, rsp::OKAY]);
    // Only 16 TX buffers: send the 18-slot frame in pieces of buffers freed above.
    f.send_multi(&long, &cuts[..15], 0, &[], 0);
    let got = pc.receive();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, long);
    assert_eq!(got[0].vif, vif);
    assert_eq!(f.tx_responses().len(), 16);
    assert_eq!(pc.nb.counters(vif).unwrap().malformed, 0);
}

#[test]
fn frames_for_a_client_without_rx_buffers_are_dropped_and_counted() {
    let (sim, mut pc) = boot();
    let cfg = FrontConfig { rx_buffers: 2, ..FrontConfig::default() };
    let mut f = client_with(&sim, &pc, "work", "10.137.0.5", cfg);
    let vif = connect(&mut pc, &mut f);
    let m = FrameMeta::default();
    assert_eq!(pc.transmit(vif, &frame(100, 1), m), Ok(()));
    assert_eq!(pc.transmit(vif, &frame(100, 2), m), Ok(()));
    assert_eq!(pc.transmit(vif, &frame(100, 3), m), Err(TxDrop::NoBuffer));
    assert_eq!(pc.nb.counters(vif).unwrap().no_rx_buffer, 1);
    assert_eq!(pc.nb.stats().tx_no_buffer, 1);
    assert_eq!(f.rx_frames(true).len(), 2);
    assert_eq!(pc.transmit(vif, &frame(100, 4), m), Ok(()));
    assert_eq!(pc.transmit(vif, &frame(0, 4), m), Err(TxDrop::BadLength));
}

#[test]
fn a_client_refusing_checksum_offload_gets_no_blank_checksums() {
    let (sim, mut pc) = boot();
    let cfg = FrontConfig { no_csum_offload: true, ..FrontConfig::default() };
    let mut f = client_with(&sim, &pc, "work", "10.137.0.5", cfg);
    let vif = connect(&mut pc, &mut f);
    assert!(!pc.nb.info(vif).unwrap().csum_offload);
    let blank = FrameMeta { csum_blank: true, ..FrameMeta::default() };
    assert_eq!(pc.transmit(vif, &frame(100, 1), blank), Err(TxDrop::ChecksumRequired));
    assert_eq!(pc.transmit(vif, &frame(100, 1), FrameMeta::default()), Ok(()));
}

#[test]
fn detach_closes_removes_the_directory_and_frees_everything() {
    let (sim, mut pc) = boot();
    let base = baseline(&pc);
    let nodes_before = sim.with_xenstored(|x| x.nodes_owned_by(pc.domid()));
    let mut f = client(&sim, &pc, "work", "10.137.0.5");
    let vif = connect(&mut pc, &mut f);
    f.dev.detach();
    run(&mut pc, &mut [&mut f]);
    // libxl waits for Closed, then for the directory: Closed stays readable a moment.
    assert_eq!(f.dev.backend_state(), Some(XenbusState::Closed), "Closed before the directory goes");
    pc.advance(xen_front::netback::REMOVE_DELAY_NS);
    run(&mut pc, &mut [&mut f]);
    assert!(f.dev.backend_gone(), "backend directory removed");
    assert_eq!(f.state(), XenbusState::Closed);
    assert_eq!(f.leaked_grants, 0, "every grant came back once the backend unmapped");
    f.dev.remove_frontend();
    pc.settle();
    assert_eq!(pc.nb.resources(), base);
    assert_eq!(pc.nb.vifs_in_use(), 0);
    assert_eq!(pc.changes, vec![LinkChange::Up(vif), LinkChange::Down(vif)]);
    assert_eq!(sim.with_xenstored(|x| x.nodes_owned_by(pc.domid())), nodes_before);
    assert_eq!(sim.with_xenstored(|x| x.watches_of(pc.domid())), 2);
    assert!(pc.nb.info(vif).is_none());
    assert_eq!(pc.transmit(vif, &frame(60, 0), FrameMeta::default()), Err(TxDrop::NotConnected));
}
