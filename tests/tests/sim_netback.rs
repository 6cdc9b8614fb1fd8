//! The simulated netback against a tiny frontend written here, a literal translation of the
//! netif frontend steps of xen-abi.md §7.4/§7.5 (scaffolding, not our netfront): handshake,
//! both data paths byte-exact, Linux netback's validation, event indices, detach, and each
//! hostile knob.

use grant_pool::SharedPage;
use tests::sim::evtchn::Channel;
use tests::sim::netback::wire::{rsp, rxf, txf};
use tests::sim::netback::{Fault, Ring, SimDomainMaps, SimNetback, SimNetbackConfig, XenbusState};
use tests::sim::xenstored::Errno;
use tests::sim::{Sim, SimDomain, XsTool};
use xen_front::platform::{DomId, EventChannels, GrantRef, Port};

const PAGE: usize = 4096;
const RING: u32 = 256;
// Shared ring header (io/ring.h) and entry sizes (io/netif.h).
const REQ_PROD: usize = 0;
const REQ_EVENT: usize = 4;
const RSP_PROD: usize = 8;
const RSP_EVENT: usize = 12;
const HDR: usize = 64;
const TX_ENTRY: usize = 12;
const RX_ENTRY: usize = 8;
const MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0x5e, 0x6c, 0x01];

/// One side of a frontend ring: the shared page and the private indices.
struct FrontRing {
    page: SharedPage,
    entry: usize,
    req_prod_pvt: u32,
    rsp_cons: u32,
}

impl FrontRing {
    /// SHARED_RING_INIT.
    fn init(page: SharedPage, entry: usize) -> Self {
        page.write_u32(REQ_PROD, 0);
        page.write_u32(RSP_PROD, 0);
        page.write_u32(REQ_EVENT, 1);
        page.write_u32(RSP_EVENT, 1);
        FrontRing { page, entry, req_prod_pvt: 0, rsp_cons: 0 }
    }

    fn slot(&self, idx: u32) -> usize {
        HDR + (idx % RING) as usize * self.entry
    }

    /// RING_PUSH_REQUESTS_AND_CHECK_NOTIFY.
    fn push(&mut self) -> bool {
        let old = self.page.read_u32(REQ_PROD);
        let new = self.req_prod_pvt;
        self.page.write_u32(REQ_PROD, new);
        let event = self.page.read_u32(REQ_EVENT);
        new.wrapping_sub(event) < new.wrapping_sub(old)
    }

    /// Responses published and not consumed, with their ring indices; then
    /// RING_FINAL_CHECK_FOR_RESPONSES's `rsp_event = rsp_cons + 1`.
    fn take_responses(&mut self) -> Vec<u32> {
        let prod = self.page.read_u32(RSP_PROD);
        let idx: Vec<u32> =
            (0..prod.wrapping_sub(self.rsp_cons).min(4 * RING)).map(|i| self.rsp_cons.wrapping_add(i)).collect();
        self.rsp_cons = prod;
        self.page.write_u32(RSP_EVENT, self.rsp_cons.wrapping_add(1));
        idx
    }
}

/// An RX response as the frontend reads it, with the data it points at (if in range).
#[derive(Debug)]
struct RxRsp {
    idx: u32,
    id: u16,
    offset: u16,
    flags: u16,
    status: i16,
    data: Option<Vec<u8>>,
}

/// The tiny frontend.
struct Front {
    dom: SimDomain,
    xs: XsTool,
    dir: String,
    backend_id: DomId,
    backend_path: String,
    tx: FrontRing,
    rx: FrontRing,
    tx_gref: GrantRef,
    rx_gref: GrantRef,
    port: Port,
    next_gref: u32,
    /// RX buffer per ring slot.
    rx_bufs: Vec<Option<(GrantRef, SharedPage)>>,
    /// TX grant per request id.
    tx_grants: Vec<(u16, GrantRef)>,
    next_tx_id: u16,
}

impl Front {
    fn new(sim: &Sim, dom: &SimDomain, devid: u32) -> Front {
        let xs = sim.xs_tool(dom.domid());
        let dir = format!("device/vif/{devid}");
        let backend_path = xs.read_str(&format!("{dir}/backend")).unwrap();
        let backend_id = xs.read_str(&format!("{dir}/backend-id")).unwrap().parse().unwrap();
        let (_, tx_page) = dom.alloc_page();
        let (_, rx_page) = dom.alloc_page();
        Front {
            dom: dom.clone(),
            xs,
            dir,
            backend_id,
            backend_path,
            tx: FrontRing::init(tx_page, TX_ENTRY),
            rx: FrontRing::init(rx_page, RX_ENTRY),
            tx_gref: GrantRef(0),
            rx_gref: GrantRef(0),
            port: Port(0),
            next_gref: 8,
            rx_bufs: vec![None; RING as usize],
            tx_grants: Vec::new(),
            next_tx_id: 0,
        }
    }

    fn alloc_gref(&mut self) -> GrantRef {
        self.next_gref += 1;
        GrantRef(self.next_gref - 1)
    }

    fn backend_state(&self) -> String {
        self.xs.read_str(&format!("{}/state", self.backend_path)).unwrap_or_default()
    }

    fn set_state(&self, s: u32) {
        self.xs.write(&format!("{}/state", self.dir), s.to_string().as_bytes()).unwrap();
    }

    /// §7.4 steps 2–4 with the standard keys, `keys` overriding or adding (`None`: omit).
    fn handshake(&mut self, nb: &mut SimNetback, keys: &[(&str, Option<&str>)]) {
        for _ in 0..3 {
            nb.step();
        }
        assert_eq!(self.backend_state(), "2", "backend reaches InitWait");
        assert_eq!(self.xs.read_str(&format!("{}/feature-rx-copy", self.backend_path)).unwrap(), "1");
        self.tx_gref = self.alloc_gref();
        self.rx_gref = self.alloc_gref();
        let tx_gfn = xen_front::platform::GrantTables::gfn_of(&self.dom, self.tx.page);
        let rx_gfn = xen_front::platform::GrantTables::gfn_of(&self.dom, self.rx.page);
        assert!(self.dom.grant(self.tx_gref, self.backend_id, tx_gfn, false));
        assert!(self.dom.grant(self.rx_gref, self.backend_id, rx_gfn, false));
        self.port = self.dom.alloc_unbound(self.backend_id).unwrap();
        let mut all: Vec<(String, Option<String>)> = vec![
            ("tx-ring-ref".into(), Some(self.tx_gref.0.to_string())),
            ("rx-ring-ref".into(), Some(self.rx_gref.0.to_string())),
            ("event-channel".into(), Some(self.port.0.to_string())),
            ("request-rx-copy".into(), Some("1".into())),
            ("feature-rx-notify".into(), Some("1".into())),
            ("feature-sg".into(), Some("1".into())),
        ];
        for (k, v) in keys {
            all.retain(|(key, _)| key != k);
            all.push((k.to_string(), v.map(str::to_string)));
        }
        loop {
            self.xs.start().unwrap();
            for (k, v) in &all {
                if let Some(v) = v {
                    self.xs.write(&format!("{}/{k}", self.dir), v.as_bytes()).unwrap();
                }
            }
            match self.xs.commit() {
                Err(Errno::EAGAIN) => continue,
                r => break r.unwrap(),
            }
        }
        self.set_state(4);
        nb.step();
    }

    fn connect(&mut self, nb: &mut SimNetback) {
        self.handshake(nb, &[]);
        assert_eq!(nb.state(), XenbusState::Connected);
        assert_eq!(self.backend_state(), "4");
    }

    fn notify(&self) {
        self.dom.send(self.port).unwrap();
    }

    /// Posts `n` RX buffers (id = ring slot, full page granted writable); push and check.
    fn post_rx(&mut self, n: u32) -> bool {
        for _ in 0..n {
            let idx = self.rx.req_prod_pvt;
            let (gfn, page) = self.dom.alloc_page();
            let gref = self.alloc_gref();
            assert!(self.dom.grant(gref, self.backend_id, gfn, false));
            let off = self.rx.slot(idx);
            self.rx.page.write_u16(off, (idx % RING) as u16);
            self.rx.page.write_u32(off + 4, gref.0);
            self.rx_bufs[(idx % RING) as usize] = Some((gref, page));
            self.rx.req_prod_pvt = idx.wrapping_add(1);
        }
        self.rx.push()
    }

    /// Writes one TX data request: `data` at `offset` of a fresh page granted read-only.
    fn tx_data(&mut self, offset: u16, data: &[u8], flags: u16, size: u16) -> u16 {
        let (gfn, page) = self.dom.alloc_page();
        page.copy_in(usize::from(offset), &data[..data.len().min(PAGE - usize::from(offset))]);
        let gref = self.alloc_gref();
        assert!(self.dom.grant(gref, self.backend_id, gfn, true));
        let id = self.next_tx_id;
        self.next_tx_id += 1;
        let off = self.tx.slot(self.tx.req_prod_pvt);
        self.tx.page.write_u32(off, gref.0);
        self.tx.page.write_u16(off + 4, offset);
        self.tx.page.write_u16(off + 6, flags);
        self.tx.page.write_u16(off + 8, id);
        self.tx.page.write_u16(off + 10, size);
        self.tx.req_prod_pvt += 1;
        self.tx_grants.push((id, gref));
        id
    }

    /// Writes one raw extra-info slot.
    fn tx_extra(&mut self, bytes: [u8; 8]) {
        let off = self.tx.slot(self.tx.req_prod_pvt);
        self.tx.page.copy_in(off, &bytes);
        self.tx.req_prod_pvt += 1;
    }

    /// A frame split at page boundaries over `more_data` slots (first size = whole length).
    fn tx_frame(&mut self, frame: &[u8], flags: u16) -> Vec<u16> {
        let chunks: Vec<&[u8]> = frame.chunks(PAGE).collect();
        let mut ids = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let more = if i + 1 < chunks.len() { txf::MORE_DATA } else { 0 };
            let (f, size) = if i == 0 { (flags | more, frame.len() as u16) } else { (more, c.len() as u16) };
            ids.push(self.tx_data(0, c, f, size));
        }
        ids
    }

    /// Push; notify if the backend asked.
    fn push_tx(&mut self) -> bool {
        let notify = self.tx.push();
        if notify {
            self.notify();
        }
        notify
    }

    /// TX responses `(id, status)` in ring order.
    fn tx_responses(&mut self) -> Vec<(u16, i16)> {
        let page = self.tx.page;
        self.tx
            .take_responses()
            .into_iter()
            .map(|i| {
                let off = HDR + (i % RING) as usize * TX_ENTRY;
                (page.read_u16(off), page.read_u16(off + 2) as i16)
            })
            .collect()
    }

    fn rx_responses(&mut self) -> Vec<RxRsp> {
        let page = self.rx.page;
        let idx = self.rx.take_responses();
        idx.into_iter()
            .map(|i| {
                let off = HDR + (i % RING) as usize * RX_ENTRY;
                let (offset, status) = (page.read_u16(off + 2), page.read_u16(off + 6) as i16);
                let data = self.rx_bufs[(i % RING) as usize].and_then(|(_, buf)| {
                    let end = usize::from(offset) + status.max(0) as usize;
                    (status >= 0 && end <= PAGE).then(|| {
                        let mut v = vec![0u8; status as usize];
                        buf.copy_out(usize::from(offset), &mut v);
                        v
                    })
                });
                RxRsp { idx: i, id: page.read_u16(off), offset, flags: page.read_u16(off + 4), status, data }
            })
            .collect()
    }

    fn tx_gref_of(&self, id: u16) -> GrantRef {
        self.tx_grants.iter().find(|(i, _)| *i == id).unwrap().1
    }
}

struct Setup {
    sim: Sim,
    fe: SimDomain,
    be: SimDomain,
    nb: SimNetback,
    front: Front,
}

fn setup_with(config: SimNetbackConfig) -> Setup {
    let sim = Sim::new();
    let be = sim.create_domain("sys-net");
    let fe = sim.create_domain("client");
    let nb = SimNetback::attach_with(&sim, &be, fe.domid(), 0, MAC, config);
    let front = Front::new(&sim, &fe, 0);
    Setup { sim, fe, be, nb, front }
}

fn connected_with(config: SimNetbackConfig) -> Setup {
    let mut s = setup_with(config);
    s.front.connect(&mut s.nb);
    s
}

fn connected() -> Setup {
    connected_with(SimNetbackConfig::default())
}

fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

// ---------------------------------------------------------------- handshake and layout

#[test]
fn attach_writes_libxls_directories_with_libxls_permissions() {
    let s = setup_with(SimNetbackConfig::default());
    let (fe, be) = (s.fe.domid(), s.be.domid());
    let fe_dir = format!("/local/domain/{fe}/device/vif/0");
    let be_dir = format!("/local/domain/{be}/backend/vif/{fe}/0");
    assert_eq!(s.nb.frontend_path(), fe_dir);
    assert_eq!(s.nb.backend_path(), be_dir);
    let peek = |p: &str| String::from_utf8(s.sim.peek(p).unwrap_or_else(|| panic!("{p} missing"))).unwrap();
    assert_eq!(peek(&format!("{fe_dir}/backend")), be_dir);
    assert_eq!(peek(&format!("{fe_dir}/backend-id")), be.to_string());
    assert_eq!(peek(&format!("{fe_dir}/state")), "1");
    assert_eq!(peek(&format!("{fe_dir}/handle")), "0");
    assert_eq!(peek(&format!("{fe_dir}/mac")), "00:16:3e:5e:6c:01");
    assert_eq!(peek(&format!("{be_dir}/frontend")), fe_dir);
    assert_eq!(peek(&format!("{be_dir}/frontend-id")), fe.to_string());
    assert_eq!(peek(&format!("{be_dir}/online")), "1");
    assert_eq!(peek(&format!("{be_dir}/state")), "1");
    assert_eq!(peek(&format!("{be_dir}/type")), "vif");
    assert_eq!(peek(&format!("{be_dir}/hotplug-status")), "");
    let dom0 = s.sim.xs_tool(0);
    let perms = |p: &str| dom0.get_perms(p).unwrap().iter().map(|p| p.to_wire()).collect::<Vec<_>>();
    assert_eq!(perms(&fe_dir), [format!("n{fe}"), format!("r{be}")]);
    assert_eq!(perms(&format!("{fe_dir}/mac")), [format!("n{fe}"), format!("r{be}")], "keys inherit");
    assert_eq!(perms(&be_dir), [format!("n{be}"), format!("r{fe}")]);
    let fe_tool = s.sim.xs_tool(fe);
    assert_eq!(fe_tool.write(&format!("{be_dir}/state"), b"4"), Err(Errno::EACCES), "frontend only reads");
    assert_eq!(s.nb.state(), XenbusState::Initialising, "nothing happens before a step");
}

#[test]
fn handshake_goes_initwait_then_connected_and_maps_both_rings() {
    let mut s = setup_with(SimNetbackConfig::default());
    s.nb.step();
    assert_eq!(s.nb.state(), XenbusState::InitWait);
    let be_dir = s.nb.backend_path().to_string();
    assert_eq!(s.sim.peek(&format!("{be_dir}/feature-sg")).unwrap(), b"1");
    assert_eq!(s.sim.peek(&format!("{be_dir}/feature-rx-copy")).unwrap(), b"1");
    s.front.set_state(3);
    s.nb.step();
    assert_eq!(s.nb.state(), XenbusState::InitWait, "Initialised is ignored, as Linux netback does");
    s.front.connect(&mut s.nb);
    assert_eq!(s.sim.peek(&format!("{be_dir}/hotplug-status")).unwrap(), b"connected");
    let mut maps = s.be.foreign_mappings();
    maps.sort();
    assert_eq!(maps, vec![(s.fe.domid(), s.front.tx_gref), (s.fe.domid(), s.front.rx_gref)]);
    let port = s.nb.port().unwrap();
    assert_eq!(s.be.channel(port), Some(Channel::Interdomain { remote: s.fe.domid(), remote_port: s.front.port }));
    let f = s.nb.frontend_features().unwrap();
    assert!(f.rx_notify && f.sg && !f.no_csum_offload);
    assert_eq!(s.nb.counters().connects, 1);
}

#[test]
fn a_frontend_without_request_rx_copy_is_refused_like_linux() {
    let mut s = setup_with(SimNetbackConfig::default());
    s.front.handshake(&mut s.nb, &[("request-rx-copy", None)]);
    assert_eq!(s.nb.state(), XenbusState::Closing);
    assert_eq!(s.front.backend_state(), "5");
    assert!(s.nb.fatal_reason().unwrap().contains("request-rx-copy"));
    let err = format!("/local/domain/{}/error/backend/vif/{}/0/error", s.be.domid(), s.fe.domid());
    assert!(s.sim.peek(&err).is_some(), "xenbus_dev_fatal writes the error node");
    assert!(s.be.foreign_mappings().is_empty());
}

#[test]
fn garbage_ring_refs_and_channels_from_the_frontend_are_fatal_not_panics() {
    for (key, value, reason) in [
        ("tx-ring-ref", "99999999", "mapping tx-ring-ref"),
        ("rx-ring-ref", "banana", "reading rx-ring-ref"),
        ("event-channel", "4000000000", "binding event-channel"),
        ("multi-queue-num-queues", "4", "queues"),
    ] {
        let mut s = setup_with(SimNetbackConfig::default());
        s.front.handshake(&mut s.nb, &[(key, Some(value))]);
        assert_eq!(s.nb.state(), XenbusState::Closing, "{key}={value}");
        assert!(s.nb.fatal_reason().unwrap().contains(reason), "{key}: {:?}", s.nb.fatal_reason());
        assert!(s.be.foreign_mappings().is_empty(), "{key}: nothing left mapped");
    }
}

#[test]
fn a_garbage_frontend_state_reads_as_unknown_and_unregisters() {
    let mut s = connected();
    s.front.xs.write(&format!("{}/state", s.front.dir), b"banana").unwrap();
    s.nb.step();
    assert_eq!(s.nb.state(), XenbusState::Closed);
    assert!(s.nb.is_removed());
    assert!(s.be.foreign_mappings().is_empty());
    assert!(s.sim.peek(s.nb.backend_path()).is_some(), "online=1: the directories stay for the toolstack");
}

#[test]
fn the_frontend_can_close_and_reconnect() {
    let mut s = connected();
    s.front.set_state(5);
    s.nb.step();
    assert_eq!(s.nb.state(), XenbusState::Closing);
    assert!(s.be.foreign_mappings().is_empty(), "rings unmapped on Closing");
    s.front.set_state(6);
    s.nb.step();
    assert_eq!(s.nb.state(), XenbusState::Closed);
    assert!(!s.nb.is_removed(), "online=1 keeps the device");
    s.front.set_state(1);
    s.nb.step();
    assert_eq!(s.nb.state(), XenbusState::InitWait);
    let mut front = Front::new(&s.sim, &s.fe, 0);
    front.next_gref = 100;
    front.connect(&mut s.nb);
    assert_eq!(s.nb.counters().connects, 2);
    front.tx_frame(&frame(60, 1), 0);
    front.push_tx();
    s.nb.step();
    assert_eq!(s.nb.sent_frames()[0].bytes, frame(60, 1));
}

// ---------------------------------------------------------------- TX

#[test]
fn a_single_slot_tx_frame_arrives_byte_exact_with_its_flags() {
    let mut s = connected();
    let f = frame(1514, 7);
    let ids = s.front.tx_frame(&f, txf::CSUM_BLANK | txf::DATA_VALIDATED);
    assert!(s.front.push_tx(), "the backend's final check asked for an event");
    s.nb.step();
    let sent = s.nb.sent_frames();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].bytes, f);
    assert_eq!(sent[0].flags, txf::CSUM_BLANK | txf::DATA_VALIDATED);
    assert_eq!(s.front.tx_responses(), vec![(ids[0], rsp::OKAY)]);
    assert!(s.fe.take_pending(s.front.port), "rsp_event asked for it");
    assert_eq!(s.fe.grant_pins(s.front.tx_gref_of(ids[0])), 0, "copied, not kept mapped");
    assert!(s.fe.revoke(s.front.tx_gref_of(ids[0])));
}

#[test]
fn a_tx_frame_at_an_offset_and_multi_slot_frames_arrive_byte_exact() {
    let mut s = connected();
    let small = frame(100, 3);
    let id = s.front.tx_data(3000, &small, 0, 100);
    let big = frame(9000, 9);
    let ids = s.front.tx_frame(&big, 0);
    assert_eq!(ids.len(), 3);
    s.front.push_tx();
    s.nb.step();
    let sent = s.nb.sent_frames();
    assert_eq!(sent.iter().map(|f| &f.bytes).collect::<Vec<_>>(), vec![&small, &big]);
    assert_eq!(sent[1].slots, 3);
    let expected: Vec<(u16, i16)> = std::iter::once(id).chain(ids).map(|i| (i, rsp::OKAY)).collect();
    assert_eq!(s.front.tx_responses(), expected, "one response per slot, in order");
    assert_eq!(s.nb.counters().tx_copies, 4);
}

#[test]
fn extra_info_slots_get_rsp_null_after_the_first_response() {
    let mut s = connected();
    let f = frame(5000, 1);
    let gso = [1u8, 0, 0xa8, 0x05, 1, 0, 0, 0]; // type GSO, no more; size 1448, TCPv4
    let first = s.front.tx_data(0, &f[..PAGE], txf::MORE_DATA | txf::EXTRA_INFO, 5000);
    s.front.tx_extra(gso);
    let second = s.front.tx_data(0, &f[PAGE..], 0, (5000 - PAGE) as u16);
    s.front.push_tx();
    s.nb.step();
    let r = s.front.tx_responses();
    assert_eq!(r.len(), 3);
    assert_eq!(r[0], (first, rsp::OKAY));
    assert_eq!(r[1].1, rsp::NULL);
    assert_eq!(r[2], (second, rsp::OKAY));
    let sent = s.nb.sent_frames();
    assert_eq!(sent[0].bytes, f);
    assert_eq!(sent[0].gso, Some((1448, 1)));
    assert_eq!(s.nb.counters().tx_rsp_null, 1);
}

#[test]
fn a_first_fragment_under_14_bytes_is_answered_error() {
    let mut s = connected();
    let short = s.front.tx_data(0, &frame(10, 0), 0, 10);
    // Multi-slot: first slot says 100 in all, the follow-on takes 90: the first fragment is 10.
    let a = s.front.tx_data(0, &frame(10, 0), txf::MORE_DATA, 100);
    let b = s.front.tx_data(0, &frame(90, 0), 0, 90);
    let good = s.front.tx_frame(&frame(60, 2), 0)[0];
    s.front.push_tx();
    s.nb.step();
    assert_eq!(s.front.tx_responses(), vec![(short, rsp::ERROR), (a, rsp::ERROR), (b, rsp::ERROR), (good, rsp::OKAY)]);
    assert_eq!(s.nb.sent_frames().len(), 1);
    assert_eq!(s.nb.counters().tx_malformed, 2);
    assert!(!s.nb.is_disabled());
}

#[test]
fn a_follow_on_slot_larger_than_the_rest_drops_the_packet_with_errors() {
    let mut s = connected();
    let a = s.front.tx_data(0, &frame(100, 0), txf::MORE_DATA, 100);
    let b = s.front.tx_data(0, &frame(200, 0), 0, 200);
    s.front.push_tx();
    s.nb.step();
    assert_eq!(s.front.tx_responses(), vec![(a, rsp::ERROR), (b, rsp::ERROR)]);
    assert!(s.nb.sent_frames().is_empty());
    assert!(!s.nb.is_disabled(), "buggy frontends do this: not fatal");
}

#[test]
fn a_slot_crossing_its_page_is_fatal_and_never_answered() {
    for follow_on in [false, true] {
        let mut s = connected();
        if follow_on {
            s.front.tx_data(0, &frame(100, 0), txf::MORE_DATA, 300);
            s.front.tx_data(4000, &frame(200, 0), 0, 200);
        } else {
            s.front.tx_data(4000, &frame(200, 0), 0, 200);
        }
        s.front.push_tx();
        s.nb.step();
        assert!(s.nb.is_disabled());
        assert!(s.nb.fatal_reason().unwrap().contains("cross page"));
        assert!(s.front.tx_responses().is_empty(), "Linux answers nothing after a fatal error");
        s.front.tx_frame(&frame(60, 0), 0);
        s.front.push_tx();
        s.front.notify();
        s.nb.step();
        assert!(s.front.tx_responses().is_empty(), "the interface stays disabled");
        assert_eq!(s.nb.state(), XenbusState::Connected, "the xenbus state does not change");
    }
}

/// A packet with `follow` follow-on slots of 20 bytes each after a 20-byte first fragment.
fn long_packet(front: &mut Front, follow: usize) -> Vec<u16> {
    let total = 20 * (follow + 1);
    let mut ids = vec![front.tx_data(0, &frame(20, 0), txf::MORE_DATA, total as u16)];
    for i in 0..follow {
        let flags = if i + 1 < follow { txf::MORE_DATA } else { 0 };
        ids.push(front.tx_data(0, &frame(20, i as u8), flags, 20));
    }
    ids
}

#[test]
fn too_many_slots_drop_the_packet_and_far_too_many_are_fatal() {
    let mut s = connected();
    let ok = long_packet(&mut s.front, 17);
    let dropped = long_packet(&mut s.front, 19);
    s.front.push_tx();
    s.nb.step();
    let r = s.front.tx_responses();
    assert_eq!(r.len(), ok.len() + dropped.len());
    assert!(r[..ok.len()].iter().all(|&(_, st)| st == rsp::OKAY));
    assert!(r[ok.len()..].iter().all(|&(_, st)| st == rsp::ERROR), "more than 18 follow-on slots: dropped");
    assert_eq!(s.nb.sent_frames().len(), 1);

    let mut s = connected();
    long_packet(&mut s.front, 21);
    s.front.push_tx();
    s.nb.step();
    assert!(s.nb.is_disabled());
    assert!(s.nb.fatal_reason().unwrap().contains("malicious"));
}

#[test]
fn an_impossible_request_producer_is_fatal() {
    let mut s = connected();
    s.front.tx.page.write_u32(REQ_PROD, 1000);
    s.front.notify();
    s.nb.step();
    assert!(s.nb.is_disabled());
    assert!(s.nb.fatal_reason().unwrap().contains("impossible"));
}

#[test]
fn notifications_follow_the_event_indices() {
    let mut s = connected();
    s.fe.take_pending(s.front.port);
    // The frontend wants to hear only once three responses are out.
    s.front.tx.page.write_u32(RSP_EVENT, 3);
    for i in 0..3u8 {
        s.front.tx_frame(&frame(60, i), 0);
        s.front.push_tx();
        s.nb.step();
        let pending = s.fe.take_pending(s.front.port);
        assert_eq!(pending, i == 2, "response {} notified: {pending}", i + 1);
    }
    // After draining, the backend asks for an event on the next request (req_event = cons + 1).
    assert_eq!(s.front.tx.page.read_u32(REQ_EVENT), 4);
    // A request pushed without an event is not seen: Linux netback waits for the interrupt.
    s.front.tx_frame(&frame(60, 9), 0);
    s.front.tx.push();
    s.nb.step();
    assert_eq!(s.nb.tx_pending(), 1, "no event, no work");
    s.front.notify();
    s.nb.step();
    assert_eq!(s.nb.tx_pending(), 0);
    assert_eq!(s.nb.sent_frames().len(), 4);
}

#[test]
fn a_polling_backend_sees_requests_without_events() {
    let config = SimNetbackConfig { event_driven: false, ..Default::default() };
    let mut s = connected_with(config);
    s.front.tx_frame(&frame(60, 9), 0);
    s.front.tx.push();
    s.nb.step();
    assert_eq!(s.nb.sent_frames().len(), 1);
}

// ---------------------------------------------------------------- RX

#[test]
fn rx_frames_land_in_posted_buffers_at_the_requests_ring_index() {
    let mut s = connected();
    assert!(s.front.post_rx(4));
    s.nb.step();
    assert_eq!(s.nb.rx_posted(), 4);
    let a = frame(60, 1);
    let b = frame(1514, 2);
    assert!(s.nb.inject(&a, rxf::CSUM_BLANK | rxf::DATA_VALIDATED));
    assert!(s.nb.inject(&b, rxf::DATA_VALIDATED));
    s.nb.step();
    assert!(s.fe.take_pending(s.front.port));
    let r = s.front.rx_responses();
    assert_eq!(r.len(), 2);
    assert_eq!((r[0].idx, r[0].id, r[0].offset, r[0].status), (0, 0, 0, 60));
    assert_eq!(r[0].flags, rxf::CSUM_BLANK | rxf::DATA_VALIDATED);
    assert_eq!(r[0].data.as_deref(), Some(&a[..]));
    assert_eq!((r[1].idx, r[1].id, r[1].status, r[1].flags), (1, 1, 1514, rxf::DATA_VALIDATED));
    assert_eq!(r[1].data.as_deref(), Some(&b[..]));
    assert_eq!(s.nb.rx_posted(), 2);
}

#[test]
fn rx_frames_over_a_page_span_slots_with_sg_and_are_dropped_without() {
    let mut s = connected();
    s.front.post_rx(4);
    let big = frame(6000, 5);
    s.nb.inject(&big, 0);
    s.nb.step();
    let r = s.front.rx_responses();
    assert_eq!(r.len(), 2);
    assert_eq!((r[0].status, r[0].flags), (4096, rxf::MORE_DATA));
    assert_eq!((r[1].status, r[1].flags), (6000 - 4096, 0));
    let got: Vec<u8> = r.iter().flat_map(|r| r.data.clone().unwrap()).collect();
    assert_eq!(got, big);

    let mut s = setup_with(SimNetbackConfig::default());
    s.front.handshake(&mut s.nb, &[("feature-sg", None)]);
    s.front.post_rx(4);
    s.nb.inject(&big, 0);
    s.nb.inject(&frame(60, 0), 0);
    s.nb.step();
    let r = s.front.rx_responses();
    assert_eq!(r.len(), 1, "only the small frame");
    assert_eq!(r[0].status, 60);
    assert_eq!(s.nb.counters().rx_dropped, 1);
}

#[test]
fn rx_waits_for_requests_and_their_notification() {
    let mut s = connected();
    assert!(!s.nb.inject(&[], 0), "empty frames are refused");
    assert!(s.nb.inject(&frame(60, 1), 0));
    s.nb.step();
    assert_eq!(s.nb.rx_queued(), 1, "no buffer posted");
    let prod = s.front.rx.page.read_u32(REQ_PROD);
    assert_eq!(s.front.rx.page.read_u32(REQ_EVENT), prod + 1, "asks to hear about the next request");
    // Posted but not notified: the backend sleeps on.
    s.front.post_rx(1);
    s.fe.take_pending(s.front.port);
    s.nb.step();
    assert_eq!(s.nb.rx_queued(), 1);
    s.front.notify();
    s.nb.step();
    assert_eq!(s.nb.rx_queued(), 0);
    assert_eq!(s.front.rx_responses()[0].data.as_deref(), Some(&frame(60, 1)[..]));
}

#[test]
fn without_feature_rx_notify_rx_polls() {
    let mut s = setup_with(SimNetbackConfig::default());
    s.front.handshake(&mut s.nb, &[("feature-rx-notify", None)]);
    s.nb.inject(&frame(60, 1), 0);
    s.nb.step();
    s.front.post_rx(1);
    s.fe.take_pending(s.front.port);
    s.nb.step();
    assert_eq!(s.nb.rx_queued(), 0, "delivered without an event");
}

#[test]
fn injecting_while_not_connected_drops() {
    let mut s = setup_with(SimNetbackConfig::default());
    assert!(!s.nb.inject(&frame(60, 0), 0));
    assert_eq!(s.nb.counters().rx_dropped, 1);
}

#[test]
fn a_failed_rx_copy_reports_the_grant_status() {
    let mut s = connected();
    s.front.post_rx(1);
    let (gref, _) = s.front.rx_bufs[0].unwrap();
    assert!(s.fe.revoke(gref));
    s.nb.inject(&frame(60, 0), 0);
    s.nb.step();
    let r = s.front.rx_responses();
    assert_eq!(r[0].status, -1, "GNTST_general_error, as xenvif_rx_copy_flush writes it");
    assert_eq!(s.nb.counters().rx_copy_errors, 1);
}

// ---------------------------------------------------------------- detach

#[test]
fn detach_closes_unmaps_and_removes_both_directories() {
    let mut s = connected();
    let (fe_dir, be_dir) = (s.nb.frontend_path().to_string(), s.nb.backend_path().to_string());
    let be_port = s.nb.port().unwrap();
    s.nb.detach();
    assert_eq!(s.front.backend_state(), "5", "libxl writes Closing into the backend dir");
    assert_eq!(s.nb.state(), XenbusState::Connected, "the backend itself has not moved yet");
    s.front.set_state(5);
    s.nb.step();
    assert_eq!(s.nb.state(), XenbusState::Closing);
    assert!(s.be.foreign_mappings().is_empty(), "both rings unmapped");
    assert_eq!(s.be.channel(be_port), Some(Channel::Free));
    assert_eq!(s.fe.channel(s.front.port), Some(Channel::Unbound { remote: s.be.domid() }));
    assert!(s.fe.revoke(s.front.tx_gref) && s.fe.revoke(s.front.rx_gref), "ring grants come back");
    s.front.set_state(6);
    s.nb.step();
    assert_eq!(s.nb.state(), XenbusState::Closed);
    assert!(s.nb.is_removed());
    assert_eq!(s.sim.peek(&be_dir), None);
    assert_eq!(s.sim.peek(&fe_dir), None);
    assert_eq!(s.sim.peek(&format!("/local/domain/{}/backend/vif/{}", s.be.domid(), s.fe.domid())), None);
}

#[test]
fn a_forced_removal_tears_the_backend_down() {
    let mut s = connected();
    s.nb.force_remove();
    s.nb.step();
    assert!(s.nb.is_removed());
    assert!(s.be.foreign_mappings().is_empty());
    assert_eq!(s.sim.peek(s.nb.frontend_path()), None);
}

#[test]
fn a_dom0_backend_works_too() {
    let sim = Sim::new();
    let dom0 = sim.dom0();
    let fe = sim.create_domain("client");
    let mut nb = SimNetback::attach(&sim, &dom0, fe.domid(), 3, MAC);
    let mut front = Front::new(&sim, &fe, 3);
    front.connect(&mut nb);
    front.tx_frame(&frame(64, 0), 0);
    front.push_tx();
    nb.step();
    assert_eq!(nb.sent_frames().len(), 1);
}

// ---------------------------------------------------------------- hostile knobs

#[test]
fn tx_responses_with_ids_never_posted() {
    let mut s = connected();
    s.nb.fault(Fault::TxUnknownId { count: 1 });
    let ids: Vec<u16> = (0..2).map(|i| s.front.tx_frame(&frame(60, i), 0)[0]).collect();
    s.front.push_tx();
    s.nb.step();
    let r = s.front.tx_responses();
    assert!(!ids.contains(&r[0].0), "id {} was never posted", r[0].0);
    assert_eq!(r[1], (ids[1], rsp::OKAY), "only the next one");
}

#[test]
fn duplicate_tx_responses() {
    let mut s = connected();
    s.nb.fault(Fault::TxDuplicate { count: 1 });
    let id = s.front.tx_frame(&frame(60, 0), 0)[0];
    s.front.push_tx();
    s.nb.step();
    assert_eq!(s.front.tx_responses(), vec![(id, rsp::OKAY), (id, rsp::OKAY)], "two responses, one request");
}

#[test]
fn bad_statuses_in_tx_and_rx_responses() {
    let mut s = connected();
    s.nb.fault(Fault::TxStatus { status: -77, count: 1 });
    s.nb.fault(Fault::RxStatus { status: -5, count: 1 });
    s.front.tx_frame(&frame(60, 0), 0);
    s.front.push_tx();
    s.front.post_rx(2);
    s.nb.inject(&frame(60, 0), 0);
    s.nb.inject(&frame(60, 0), 0);
    s.nb.step();
    assert_eq!(s.front.tx_responses()[0].1, -77);
    let r = s.front.rx_responses();
    assert_eq!((r[0].status, r[1].status), (-5, 60));
}

#[test]
fn rx_responses_with_offset_past_the_page_and_unknown_ids() {
    let mut s = connected();
    s.nb.fault(Fault::RxBadOffset { count: 1 });
    s.nb.fault(Fault::RxUnknownId { count: 1 });
    s.front.post_rx(1);
    s.nb.inject(&frame(1000, 0), 0);
    s.nb.step();
    let r = s.front.rx_responses();
    assert!(usize::from(r[0].offset) + r[0].status as usize > PAGE, "{r:?}");
    assert_ne!(r[0].id, 0);
    assert_eq!(r[0].data, None);
}

#[test]
fn a_response_producer_jumping_past_the_ring() {
    let mut s = connected();
    s.fe.take_pending(s.front.port);
    assert!(s.nb.fault(Fault::ProducerJump { ring: Ring::Rx, by: 300 }));
    assert!(s.fe.take_pending(s.front.port), "and it says so");
    let prod = s.front.rx.page.read_u32(RSP_PROD);
    assert!(prod.wrapping_sub(s.front.rx.rsp_cons) > RING, "RING_RESPONSE_PROD_OVERFLOW");
}

#[test]
fn responses_without_requests() {
    let mut s = connected();
    assert!(s.nb.fault(Fault::UnsolicitedResponses { ring: Ring::Tx, count: 2 }));
    assert_eq!(s.front.tx.page.read_u32(RSP_PROD), 2, "two responses, no request ever made");
    assert_eq!(s.front.tx_responses(), vec![(0xdead, rsp::OKAY), (0xdead, rsp::OKAY)]);
    assert!(s.nb.fault(Fault::UnsolicitedResponses { ring: Ring::Rx, count: 1 }));
    assert_eq!(s.front.rx.page.read_u32(RSP_PROD), 1);
    let mut idle = setup_with(SimNetbackConfig::default());
    assert!(!idle.nb.fault(Fault::UnsolicitedResponses { ring: Ring::Rx, count: 1 }), "needs a connection");
    idle.nb.step();
}

#[test]
fn an_rx_flood_fills_every_posted_buffer_at_once() {
    let mut s = connected();
    assert!(!s.nb.fault(Fault::RxFlood { frame: Vec::new(), flags: 0 }), "an empty flood would never end");
    assert!(s.nb.fault(Fault::RxFlood { frame: frame(60, 0), flags: 0 }));
    s.front.rx.push(); // nothing posted yet
    s.front.post_rx(200);
    s.fe.take_pending(s.front.port);
    s.nb.step();
    assert_eq!(s.front.rx_responses().len(), 200);
    s.front.post_rx(56);
    s.nb.step();
    assert_eq!(s.front.rx_responses().len(), 56, "again, without waiting for events");
    s.nb.clear_faults();
    s.front.post_rx(10);
    s.nb.step();
    assert!(s.front.rx_responses().is_empty());
}

#[test]
fn a_backend_that_never_connects_or_never_consumes() {
    let mut s = setup_with(SimNetbackConfig::default());
    s.nb.fault(Fault::StayInInitWait);
    s.front.handshake(&mut s.nb, &[]);
    for _ in 0..5 {
        s.nb.step();
    }
    assert_eq!(s.front.backend_state(), "2");
    assert!(s.be.foreign_mappings().is_empty());

    let mut s = connected();
    s.nb.fault(Fault::NeverConsume);
    s.front.tx_frame(&frame(60, 0), 0);
    s.front.push_tx();
    s.front.post_rx(4);
    s.nb.inject(&frame(60, 0), 0);
    for _ in 0..5 {
        s.front.notify();
        s.nb.step();
    }
    assert_eq!(s.nb.tx_pending(), 1);
    assert_eq!(s.nb.rx_posted(), 4);
    assert!(s.front.tx_responses().is_empty() && s.front.rx_responses().is_empty());
}

#[test]
fn a_backend_going_closing_mid_transfer() {
    let mut s = connected();
    s.front.tx_frame(&frame(60, 0), 0);
    s.front.push_tx();
    s.nb.fault(Fault::GoClosing);
    assert_eq!(s.front.backend_state(), "5");
    assert!(s.be.foreign_mappings().is_empty());
    assert!(s.front.tx_responses().is_empty(), "the pending request is never answered");
    s.front.set_state(5);
    s.nb.step();
    s.front.set_state(6);
    s.nb.step();
    assert_eq!(s.front.backend_state(), "6");
}

#[test]
fn the_backend_domain_destroyed_mid_transfer() {
    let mut s = connected();
    let id = s.front.tx_frame(&frame(60, 0), 0)[0];
    s.front.push_tx();
    s.front.post_rx(2);
    s.sim.destroy_domain(s.be.domid());
    s.nb.step();
    assert!(s.nb.is_removed());
    assert!(!s.nb.inject(&frame(60, 0), 0));
    assert!(s.front.tx_responses().is_empty());
    assert_eq!(s.fe.channel(s.front.port), Some(Channel::Unbound { remote: s.be.domid() }));
    assert!(s.fe.revoke(s.front.tx_gref), "Xen released the dead backend's ring mappings");
    assert!(s.fe.revoke(s.front.tx_gref_of(id)));
    assert!(s.sim.peek(s.nb.frontend_path()).is_some(), "the toolstack has not cleaned up yet");
    s.nb.force_remove();
    assert_eq!(s.sim.peek(s.nb.frontend_path()), None);
}

#[test]
fn a_backend_keeping_a_tx_page_mapped_makes_the_revoke_fail() {
    let mut s = connected();
    s.nb.fault(Fault::HoldTxMappings { count: 1 });
    let id = s.front.tx_frame(&frame(60, 0), 0)[0];
    s.front.push_tx();
    s.nb.step();
    assert_eq!(s.front.tx_responses(), vec![(id, rsp::OKAY)], "answered as if done");
    let gref = s.front.tx_gref_of(id);
    assert!(!s.fe.revoke(gref), "still mapped: must be quarantined");
    assert_eq!(s.nb.held_mappings(), 1);
    assert_eq!(s.nb.release_held_mappings(), 1);
    assert!(s.fe.revoke(gref));
}

#[test]
fn the_toolstack_recreates_the_device_with_a_new_devid_or_rewrites_backend_id() {
    let s = connected();
    let old_fe = s.nb.frontend_path().to_string();
    let old_be = s.nb.backend_path().to_string();
    s.nb.rewrite_backend_id(42);
    assert_eq!(s.sim.peek(&format!("{old_fe}/backend-id")).unwrap(), b"42");
    let sys_net2 = s.sim.create_domain("sys-net2");
    let mut nb = s.nb.reattach(&sys_net2, 1);
    assert!(s.be.foreign_mappings().is_empty(), "the old backend tore down");
    assert_eq!(s.sim.peek(&old_fe), None);
    assert_eq!(s.sim.peek(&old_be), None);
    assert_eq!(nb.devid(), 1);
    assert_eq!(
        s.sim.peek(&format!("{}/backend-id", nb.frontend_path())).unwrap(),
        sys_net2.domid().to_string().as_bytes()
    );
    let mut front = Front::new(&s.sim, &s.fe, 1);
    front.next_gref = 200;
    front.connect(&mut nb);
    front.tx_frame(&frame(60, 3), 0);
    front.push_tx();
    nb.step();
    assert_eq!(nb.sent_frames()[0].bytes, frame(60, 3));
}

#[test]
fn garbage_xenstore_values_from_the_backend() {
    let mut s = connected();
    assert!(s.nb.fault(Fault::WriteBackendKey { key: "state".into(), value: b"banana".to_vec() }));
    assert_eq!(s.front.backend_state(), "banana");
    assert!(
        s.nb.fault(Fault::WriteBackendKey { key: "feature-rx-copy".into(), value: b"99999999999999999999".to_vec() })
    );
    assert_eq!(s.sim.peek(&format!("{}/feature-rx-copy", s.nb.backend_path())).unwrap(), b"99999999999999999999");
    s.nb.step();
    assert_eq!(s.nb.state(), XenbusState::Connected, "its own garbage does not change its mind");
}

#[test]
fn a_destroyed_frontend_stays_a_zombie_until_the_backend_unmaps() {
    let mut s = connected();
    s.front.tx_frame(&frame(60, 0), 0);
    s.front.push_tx();
    s.sim.destroy_domain(s.fe.domid());
    assert!(s.sim.is_zombie(s.fe.domid()), "the backend still maps its ring pages");
    s.nb.step();
    assert_eq!(s.nb.counters().tx_copy_errors, 1, "the copy from a dead granter fails");
    assert!(s.nb.sent_frames().is_empty());
    s.nb.force_remove();
    s.nb.step();
    assert!(s.be.foreign_mappings().is_empty());
    assert!(!s.sim.exists(s.fe.domid()), "reaped once the last mapping went");
}
