//! A libxenvchan peer for the simulated Xen, and the harness that runs portcullis' vchan
//! endpoint against it.
//!
//! [`VchanPeer`] is written from `xen/include/public/io/libxenvchan.h` and the algorithm of
//! `tools/libs/vchan/{init.c,io.c}` (as Qubes' libvchan-xen uses it), independently of
//! `xen_front::vchan`: its own offsets, its own order rules, libxenvchan's `request_notify` /
//! `send_notify` and its habit of reading both indices from the shared page. It plays either
//! role with any ring orders, and has hostile knobs: arbitrary orders and xenstore values,
//! raw index writes, dying (destroy its domain), never connecting.
//!
//! [`VchanGuest`] is the domain running the code under test: a [`SimDomain`], its xenstore
//! client, and a [`SimSharePool`] (pages of that domain granted as `xen_front::vchan`'s
//! [`SharePool`] wants them), with `Io` built on demand.

use std::sync::atomic::Ordering;

use grant_pool::SharedPage;
use grant_pool::shared::{full_barrier, read_barrier, write_barrier};
use xen_front::hypercall::XenResult;
use xen_front::platform::{DomId, EventChannels, Gfn, GrantHandle, GrantRef, GrantTables, Port};
use xen_front::vchan::{Endpoint, Io, PortState, PortStatus, SharePool, State};
use xen_front::xenstore::Client;

use super::evtchn::Channel;
use super::gnttab::WINDOW_START;
use super::{Sim, SimDomain, XsTool};

// ----- struct vchan_interface (libxenvchan.h) ---------------------------------------------
const LEFT_CONS: usize = 0;
const LEFT_PROD: usize = 4;
const RIGHT_CONS: usize = 8;
const RIGHT_PROD: usize = 12;
const LEFT_ORDER: usize = 16;
const RIGHT_ORDER: usize = 18;
/// `cli_live` offset (public for hostile tests).
pub const CLI_LIVE: usize = 20;
/// `srv_live` offset.
pub const SRV_LIVE: usize = 21;
const CLI_NOTIFY: usize = 22;
const SRV_NOTIFY: usize = 23;
const GRANTS: usize = 24;
const VCHAN_NOTIFY_WRITE: u8 = 1;
const VCHAN_NOTIFY_READ: u8 = 2;
const PAGE_SHIFT: u32 = 12;
const SMALL_RING_SHIFT: u32 = 10;
const LARGE_RING_SHIFT: u32 = 11;
const MAX_RING_SHIFT: u32 = 20;

impl PortStatus for SimDomain {
    fn port_status(&self, port: Port) -> XenResult<PortState> {
        Ok(match self.channel(port) {
            None | Some(Channel::Free) => PortState::Closed,
            Some(Channel::Unbound { remote }) => PortState::Unbound { remote },
            Some(Channel::Interdomain { remote, remote_port }) => PortState::Interdomain { remote, remote_port },
            Some(Channel::Virq(_)) => PortState::Other,
        })
    }
}

/// One ring as libxenvchan sees it (`struct libxenvchan_ring`): the index pair in the shared
/// page, the order, and the buffer (pages, or the control page at an offset).
#[derive(Clone, Debug)]
struct PeerRing {
    cons: usize,
    prod: usize,
    order: u32,
    /// Ring bytes: for an in-page ring, the control page and 1024/2048; else the pages.
    pages: Vec<SharedPage>,
    base: usize,
}

impl PeerRing {
    fn size(&self) -> u32 {
        1 << self.order
    }

    fn at(&self, pos: usize) -> (SharedPage, usize) {
        let p = self.base + pos;
        (self.pages[p / 4096], p % 4096)
    }

    fn copy_out(&self, start: u32, dst: &mut [u8]) {
        let mask = self.size() - 1;
        for (i, b) in dst.iter_mut().enumerate() {
            let (page, off) = self.at((start.wrapping_add(i as u32) & mask) as usize);
            *b = page.read_u8(off);
        }
    }

    fn copy_in(&self, start: u32, src: &[u8]) {
        let mask = self.size() - 1;
        for (i, &b) in src.iter().enumerate() {
            let (page, off) = self.at((start.wrapping_add(i as u32) & mask) as usize);
            page.write_u8(off, b);
        }
    }
}

/// Server options: which orders to put in the page and what to publish in xenstore.
#[derive(Clone, Debug, Default)]
pub struct ServerOpts {
    /// Write these orders into the page instead of the real ones (hostile).
    pub fake_orders: Option<(u16, u16)>,
    /// Publish this as `ring-ref` instead of the real reference (hostile).
    pub ring_ref: Option<Vec<u8>>,
    /// Publish this as `event-channel` instead of the real port (hostile).
    pub event_channel: Option<Vec<u8>>,
}

/// A libxenvchan endpoint in a simulated domain.
#[derive(Debug)]
pub struct VchanPeer {
    /// Its domain.
    pub dom: SimDomain,
    xs: XsTool,
    is_server: bool,
    remote: DomId,
    /// The control page.
    pub ctrl: SharedPage,
    /// Its event-channel port.
    pub port: Port,
    read: PeerRing,
    write: PeerRing,
    granted: Vec<GrantRef>,
    mapped: Vec<(Gfn, GrantHandle)>,
    xs_path: String,
}

fn ring_in(ctrl: SharedPage, cons: usize, prod: usize, order: u32, pages: Vec<SharedPage>) -> PeerRing {
    match order {
        SMALL_RING_SHIFT => PeerRing { cons, prod, order, pages: vec![ctrl], base: 1024 },
        LARGE_RING_SHIFT => PeerRing { cons, prod, order, pages: vec![ctrl], base: 2048 },
        _ => PeerRing { cons, prod, order, pages, base: 0 },
    }
}

/// `libxenvchan_server_init`'s order choice for `left_min` (server read) / `right_min`.
pub fn libxenvchan_orders(left_min: usize, right_min: usize) -> (u32, u32) {
    let min_order = |n: usize| {
        let mut o = PAGE_SHIFT;
        while (1usize << o) < n {
            o += 1;
        }
        o
    };
    let (mut l, mut r) = (min_order(left_min), min_order(right_min));
    if left_min <= 1024 && right_min <= 2048 {
        (l, r) = (SMALL_RING_SHIFT, LARGE_RING_SHIFT);
    } else if left_min <= 2048 && right_min <= 1024 {
        (l, r) = (LARGE_RING_SHIFT, SMALL_RING_SHIFT);
    } else if left_min <= 2048 {
        l = LARGE_RING_SHIFT;
    } else if right_min <= 2048 {
        r = LARGE_RING_SHIFT;
    }
    (l, r)
}

impl VchanPeer {
    /// `libxenvchan_server_init(dom, client, "data/vchan/<client>/<port>", left_min, right_min)`
    /// as Qubes calls it, with hostile `opts`.
    pub fn server(
        sim: &Sim,
        dom: SimDomain,
        client: DomId,
        port: u32,
        sizes: (usize, usize),
        opts: ServerOpts,
    ) -> Self {
        let (left_order, right_order) = libxenvchan_orders(sizes.0, sizes.1);
        let pages = |o: u32| if o >= PAGE_SHIFT { 1usize << (o - PAGE_SHIFT) } else { 0 };
        let (pl, pr) = (pages(left_order), pages(right_order));
        let evport = dom.alloc_unbound(client).expect("alloc_unbound");
        let mut next_ref = 200u32;
        let mut share = |dom: &SimDomain| {
            let (gfn, page) = dom.alloc_page();
            let gref = GrantRef(next_ref);
            next_ref += 1;
            assert!(dom.grant(gref, client, gfn, false));
            (gref, page)
        };
        let (ctrl_ref, ctrl) = share(&dom);
        let mut granted = vec![ctrl_ref];
        ctrl.fill(0, 4096, 0);
        let (fake_l, fake_r) = opts.fake_orders.unwrap_or((left_order as u16, right_order as u16));
        ctrl.write_u16(LEFT_ORDER, fake_l);
        ctrl.write_u16(RIGHT_ORDER, fake_r);
        ctrl.write_u8(CLI_LIVE, 2);
        ctrl.write_u8(SRV_LIVE, 1);
        ctrl.write_u8(CLI_NOTIFY, VCHAN_NOTIFY_WRITE);
        let mut left_pages = vec![];
        let mut right_pages = vec![];
        for i in 0..pl + pr {
            let (gref, page) = share(&dom);
            granted.push(gref);
            ctrl.write_u32(GRANTS + 4 * i, gref.0);
            if i < pl { left_pages.push(page) } else { right_pages.push(page) }
        }
        let read = ring_in(ctrl, LEFT_CONS, LEFT_PROD, left_order, left_pages);
        let write = ring_in(ctrl, RIGHT_CONS, RIGHT_PROD, right_order, right_pages);
        let xs = sim.xs_tool(dom.domid());
        let xs_path = format!("/local/domain/{}/data/vchan/{client}/{port}", dom.domid());
        let perms = [format!("n{}", dom.domid()), format!("r{client}")];
        let perms: Vec<&str> = perms.iter().map(String::as_str).collect();
        let ring_ref = opts.ring_ref.unwrap_or_else(|| ctrl_ref.0.to_string().into_bytes());
        let event_channel = opts.event_channel.unwrap_or_else(|| evport.0.to_string().into_bytes());
        xs.write(&format!("{xs_path}/ring-ref"), &ring_ref).expect("write ring-ref");
        xs.set_perms(&format!("{xs_path}/ring-ref"), &perms).expect("perms");
        xs.write(&format!("{xs_path}/event-channel"), &event_channel).expect("write event-channel");
        xs.set_perms(&format!("{xs_path}/event-channel"), &perms).expect("perms");
        VchanPeer {
            dom,
            xs,
            is_server: true,
            remote: client,
            ctrl,
            port: evport,
            read,
            write,
            granted,
            mapped: vec![],
            xs_path,
        }
    }

    /// `libxenvchan_client_init`: reads the server's nodes, binds, maps (read ring read-only),
    /// sets `cli_live` and notifies. `Err` says which step refused, as libxenvchan would fail.
    pub fn client(sim: &Sim, dom: SimDomain, server: DomId, port: u32) -> Result<Self, String> {
        let xs = sim.xs_tool(dom.domid());
        let xs_path = format!("/local/domain/{server}/data/vchan/{}/{port}", dom.domid());
        let num = |key: &str| -> Result<u32, String> {
            let v = xs.read_str(&format!("{xs_path}/{key}")).map_err(|e| format!("{key}: {e:?}"))?;
            v.parse::<u32>().ok().filter(|&n| n != 0).ok_or(format!("{key}: bad value {v:?}"))
        };
        let remote_port = Port(num("event-channel")?);
        let ring_ref = GrantRef(num("ring-ref")?);
        let evport = dom.bind_interdomain(server, remote_port).map_err(|e| format!("bind: {e:?}"))?;
        let mut next_gfn = WINDOW_START.0 + 200;
        let mut mapped = vec![];
        let mut map = |dom: &SimDomain, gref: GrantRef, ro: bool, mapped: &mut Vec<(Gfn, GrantHandle)>| {
            let at = Gfn(next_gfn);
            next_gfn += 1;
            let m = dom.map_grant_ref(at, server, gref, ro).map_err(|e| format!("map {gref:?}: {e:?}"))?;
            mapped.push((at, m.handle));
            Ok::<_, String>(m.page)
        };
        let ctrl = map(&dom, ring_ref, false, &mut mapped)?;
        let write_order = u32::from(ctrl.read_u16(LEFT_ORDER));
        let read_order = u32::from(ctrl.read_u16(RIGHT_ORDER));
        let ok = |o: u32| (SMALL_RING_SHIFT..=MAX_RING_SHIFT).contains(&o);
        if !ok(write_order) || !ok(read_order) || (read_order == write_order && read_order < PAGE_SHIFT) {
            return Err(format!("bad orders {write_order}/{read_order}"));
        }
        let pages = |o: u32| if o >= PAGE_SHIFT { 1usize << (o - PAGE_SHIFT) } else { 0 };
        let (pw, pr) = (pages(write_order), pages(read_order));
        let mut wpages = vec![];
        let mut rpages = vec![];
        for i in 0..pw + pr {
            let gref = GrantRef(ctrl.read_u32(GRANTS + 4 * i));
            if i < pw {
                wpages.push(map(&dom, gref, false, &mut mapped)?);
            } else {
                rpages.push(map(&dom, gref, true, &mut mapped)?);
            }
        }
        let write = ring_in(ctrl, LEFT_CONS, LEFT_PROD, write_order, wpages);
        let read = ring_in(ctrl, RIGHT_CONS, RIGHT_PROD, read_order, rpages);
        ctrl.write_u8(CLI_LIVE, 1);
        ctrl.write_u8(SRV_NOTIFY, VCHAN_NOTIFY_WRITE);
        full_barrier();
        dom.send(evport).map_err(|e| format!("notify: {e:?}"))?;
        Ok(VchanPeer {
            dom,
            xs,
            is_server: false,
            remote: server,
            ctrl,
            port: evport,
            read,
            write,
            granted: vec![],
            mapped,
            xs_path,
        })
    }

    /// Server: whether the client set `cli_live = 1`; then the nodes go, as Qubes'
    /// `libvchan_wait` removes them.
    pub fn server_accept(&mut self) -> bool {
        if self.ctrl.read_u8(CLI_LIVE) != 1 {
            return false;
        }
        let _ = self.xs.rm(&self.xs_path);
        true
    }

    /// `libxenvchan_is_open`: the other side's live byte.
    pub fn is_open(&self) -> u8 {
        self.ctrl.read_u8(if self.is_server { CLI_LIVE } else { SRV_LIVE })
    }

    fn request_notify(&self, bit: u8) {
        let byte = if self.is_server { CLI_NOTIFY } else { SRV_NOTIFY };
        self.ctrl.atomic_u8(byte).fetch_or(bit, Ordering::SeqCst);
        full_barrier();
    }

    fn send_notify(&self, bit: u8) {
        full_barrier();
        let byte = if self.is_server { SRV_NOTIFY } else { CLI_NOTIFY };
        let prev = self.ctrl.atomic_u8(byte).fetch_and(!bit, Ordering::SeqCst);
        if prev & bit != 0 {
            let _ = self.dom.send(self.port);
        }
    }

    fn raw_data_ready(&self) -> u32 {
        let ready = self.ctrl.read_u32(self.read.prod).wrapping_sub(self.ctrl.read_u32(self.read.cons));
        full_barrier();
        if ready > self.read.size() { 0 } else { ready }
    }

    fn raw_buffer_space(&self) -> u32 {
        let used = self.ctrl.read_u32(self.write.prod).wrapping_sub(self.ctrl.read_u32(self.write.cons));
        full_barrier();
        if used > self.write.size() { 0 } else { self.write.size() - used }
    }

    /// `libxenvchan_read` in non-blocking mode.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let mut avail = self.raw_data_ready();
        if (avail as usize) < buf.len() {
            self.request_notify(VCHAN_NOTIFY_WRITE);
            avail = self.raw_data_ready();
        }
        let n = buf.len().min(avail as usize);
        if n == 0 {
            return 0;
        }
        let cons = self.ctrl.read_u32(self.read.cons);
        read_barrier();
        self.read.copy_out(cons, &mut buf[..n]);
        full_barrier();
        self.ctrl.write_u32(self.read.cons, cons.wrapping_add(n as u32));
        self.send_notify(VCHAN_NOTIFY_READ);
        n
    }

    /// `libxenvchan_write` in non-blocking mode (partial writes).
    pub fn write(&mut self, data: &[u8]) -> usize {
        let mut space = self.raw_buffer_space();
        if (space as usize) < data.len() {
            self.request_notify(VCHAN_NOTIFY_READ);
            space = self.raw_buffer_space();
        }
        let n = data.len().min(space as usize);
        if n == 0 {
            return 0;
        }
        let prod = self.ctrl.read_u32(self.write.prod);
        full_barrier();
        self.write.copy_in(prod, &data[..n]);
        write_barrier();
        self.ctrl.write_u32(self.write.prod, prod.wrapping_add(n as u32));
        self.send_notify(VCHAN_NOTIFY_WRITE);
        n
    }

    /// Ring sizes (read, write) as this side sees them.
    pub fn ring_sizes(&self) -> (usize, usize) {
        (self.read.size() as usize, self.write.size() as usize)
    }

    /// Hostile: writes `value` into this side's producer index (of the ring it writes).
    pub fn set_prod(&self, value: u32) {
        self.ctrl.write_u32(self.write.prod, value);
    }

    /// This side's producer index.
    pub fn prod(&self) -> u32 {
        self.ctrl.read_u32(self.write.prod)
    }

    /// Hostile: writes `value` into this side's consumer index (of the ring it reads).
    pub fn set_cons(&self, value: u32) {
        self.ctrl.write_u32(self.read.cons, value);
    }

    /// This side's consumer index.
    pub fn cons(&self) -> u32 {
        self.ctrl.read_u32(self.read.cons)
    }

    /// `libxenvchan_close`: clears our live byte, notifies, closes the port, and unmaps
    /// (client) or ends the grants and removes the nodes (server). Returns the server's grant
    /// references that could not be revoked yet (the client still maps them).
    pub fn close(&mut self) -> Vec<GrantRef> {
        self.ctrl.write_u8(if self.is_server { SRV_LIVE } else { CLI_LIVE }, 0);
        full_barrier();
        let _ = self.dom.send(self.port);
        let _ = self.dom.close(self.port);
        for (at, h) in self.mapped.drain(..) {
            let _ = self.dom.unmap_grant_ref(at, h);
        }
        if self.is_server {
            let _ = self.xs.rm(&self.xs_path);
        }
        let dom = self.dom.clone();
        self.granted.retain(|g| !dom.revoke(*g));
        self.granted.clone()
    }

    /// The remote domain.
    pub fn remote(&self) -> DomId {
        self.remote
    }
}

// ----- the side under test ----------------------------------------------------------------

/// A page of [`SimSharePool`], shared with a peer.
#[derive(Debug)]
pub struct SimShared {
    gref: GrantRef,
    gfn: Gfn,
    page: SharedPage,
}

/// Pages of a simulated domain with fixed grant references, shared the way the grant pool
/// does it (zeroed, granted writable; ended by compare-exchange, refused while mapped).
#[derive(Debug)]
pub struct SimSharePool {
    dom: SimDomain,
    free: Vec<SimShared>,
    /// Pages shared now.
    pub shared: usize,
    /// Pages quarantined (never reused).
    pub quarantined: Vec<SimShared>,
    capacity: usize,
}

impl SimSharePool {
    /// `capacity` pages of `dom` with grant references from `first_ref`.
    pub fn new(dom: &SimDomain, first_ref: u32, capacity: usize) -> Self {
        let free = (0..capacity)
            .map(|i| {
                let (gfn, page) = dom.alloc_page();
                SimShared { gref: GrantRef(first_ref + i as u32), gfn, page }
            })
            .collect();
        SimSharePool { dom: dom.clone(), free, shared: 0, quarantined: vec![], capacity }
    }

    /// Free pages.
    pub fn free(&self) -> usize {
        self.free.len()
    }

    /// Every page free, none shared or quarantined, every grant entry invalid.
    pub fn at_baseline(&self) -> bool {
        use xen_front::platform::GrantEntries;
        self.free.len() == self.capacity
            && self.free.iter().all(|s| self.dom.grant_entry(s.gref).is_some_and(|(p, off)| p.read_u16(off) == 0))
    }
}

impl SharePool for SimSharePool {
    type Shared = SimShared;

    fn share(&mut self, peer: DomId) -> Option<SimShared> {
        let s = self.free.pop()?;
        s.page.fill(0, 4096, 0);
        assert!(self.dom.grant(s.gref, peer, s.gfn, false));
        self.shared += 1;
        Some(s)
    }

    fn page(s: &SimShared) -> SharedPage {
        s.page
    }

    fn gref(s: &SimShared) -> GrantRef {
        s.gref
    }

    fn unshare(&mut self, s: SimShared) -> Result<(), SimShared> {
        if !self.dom.revoke(s.gref) {
            return Err(s);
        }
        self.shared -= 1;
        self.free.push(s);
        Ok(())
    }

    fn quarantine(&mut self, s: SimShared) {
        self.shared -= 1;
        self.quarantined.push(s);
    }
}

/// The domain running `xen_front::vchan` under test.
pub struct VchanGuest {
    /// The machine.
    pub sim: Sim,
    /// The domain.
    pub dom: SimDomain,
    /// Its xenstore client (boxed: it is large).
    pub xs: Box<Client>,
    /// Its pages to share.
    pub pool: SimSharePool,
    /// Its clock (ns); tests move it.
    pub now: u64,
}

impl VchanGuest {
    /// A new guest `name` with a 40-page pool (refs 64..) and an attached xenstore client.
    pub fn new(sim: &Sim, name: &str) -> Self {
        let dom = sim.create_domain(name);
        let mut xs = Box::new(Client::new());
        xs.attach(dom.store_page().expect("guest has a store ring"));
        let pool = SimSharePool::new(&dom, 64, 40);
        VchanGuest { sim: sim.clone(), dom, xs, pool, now: 0 }
    }

    /// The `Io` for one endpoint call.
    pub fn io(&mut self) -> Io<'_, SimSharePool> {
        Io { xen: &self.dom, xs: &mut self.xs, pool: &mut self.pool, now_ns: self.now }
    }

    /// Polls `ep`, lets xenstored answer, polls again.
    pub fn poll(&mut self, ep: &mut Endpoint<SimSharePool>) -> State {
        ep.poll(&mut self.io());
        self.sim.pump(&self.dom, &mut self.xs, self.now);
        ep.poll(&mut self.io())
    }

    /// Polls until `ep` reaches `want` or `max` polls passed (advancing the clock by `step` ns
    /// each time); returns the final state.
    pub fn poll_until(&mut self, ep: &mut Endpoint<SimSharePool>, want: State, max: usize, step: u64) -> State {
        let mut s = self.poll(ep);
        for _ in 0..max {
            if s == want {
                break;
            }
            self.now += step;
            s = self.poll(ep);
        }
        s
    }

    /// The guest's domid.
    pub fn domid(&self) -> DomId {
        self.dom.domid()
    }
}

// ----- scenarios --------------------------------------------------------------------------

/// Our foreign window for client endpoints in these scenarios.
pub const CLIENT_WINDOW: (Gfn, u32) = (WINDOW_START, xen_front::vchan::layout::MAX_PAGES as u32);

/// Our server to a libxenvchan client in `peer_dom`, connected. Panics if it does not connect.
pub fn connect_our_server(
    g: &mut VchanGuest,
    ep: &mut Endpoint<SimSharePool>,
    peer_dom: SimDomain,
    port: u32,
    sizes: (usize, usize),
) -> VchanPeer {
    let params = xen_front::vchan::ServerParams {
        self_domid: g.domid(),
        client: peer_dom.domid(),
        port,
        read_min: sizes.0,
        write_min: sizes.1,
    };
    ep.listen(&mut g.io(), params).expect("listen");
    assert_eq!(g.poll(ep), State::Listening);
    let peer = VchanPeer::client(&g.sim, peer_dom, g.domid(), port).expect("libxenvchan client connects");
    assert_eq!(g.poll(ep), State::Connected);
    peer
}

/// Our client to a libxenvchan server in `peer_dom`, connected.
pub fn connect_our_client(
    g: &mut VchanGuest,
    ep: &mut Endpoint<SimSharePool>,
    peer_dom: SimDomain,
    port: u32,
    sizes: (usize, usize),
) -> VchanPeer {
    let mut peer = VchanPeer::server(&g.sim, peer_dom, g.domid(), port, sizes, ServerOpts::default());
    let params =
        xen_front::vchan::ClientParams { self_domid: g.domid(), server: peer.dom.domid(), port, window: CLIENT_WINDOW };
    ep.connect(&mut g.io(), params).expect("connect");
    assert_eq!(g.poll_until(ep, State::Connected, 10, 1_000_000), State::Connected);
    assert!(peer.server_accept());
    peer
}

/// Deterministic test bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// FNV-1a, the checksum the scenarios report.
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// Sends `to_peer` from our endpoint and `to_us` from the peer at the same time, in chunks
/// of varying sizes, each side acting only when it made progress or its event channel fired
/// (as a blocking libxenvchan program and an event-driven appliance do): a missing
/// notification stalls the exchange and panics with "lost wake-up". Our side alternates
/// `read` and `with_readable` (consuming part of the view). Returns what each side received
/// `(ours, peer's)`.
pub fn exchange(
    g: &mut VchanGuest,
    ep: &mut Endpoint<SimSharePool>,
    peer: &mut VchanPeer,
    to_peer: &[u8],
    to_us: &[u8],
    seed: u64,
) -> (Vec<u8>, Vec<u8>) {
    let mut rng = seed | 1;
    let mut next = move |max: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        1 + (rng as usize) % max
    };
    let our_port = ep.port().expect("connected endpoint has a port");
    let (mut sent_us, mut sent_peer) = (0, 0);
    let (mut got_us, mut got_peer) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 70_000];
    let (mut our_turn, mut peer_turn) = (true, true);
    while got_us.len() < to_us.len() || got_peer.len() < to_peer.len() {
        let (mut moved_us, mut moved_peer) = (0, 0);
        if our_turn {
            if sent_us < to_peer.len() {
                let end = (sent_us + next(9000)).min(to_peer.len());
                let n = ep.write(&to_peer[sent_us..end]);
                sent_us += n;
                moved_us += n;
            }
            loop {
                let want = next(9000);
                let n = if next(2) == 1 {
                    ep.read(&mut buf[..want])
                } else {
                    ep.with_readable(|view| {
                        let k = view.len().min(want);
                        view.copy_to(0, &mut buf[..k])
                    })
                };
                if n == 0 {
                    break;
                }
                got_us.extend_from_slice(&buf[..n]);
                moved_us += n;
            }
            g.poll(ep);
        }
        if peer_turn {
            if sent_peer < to_us.len() {
                let end = (sent_peer + next(9000)).min(to_us.len());
                let n = peer.write(&to_us[sent_peer..end]);
                sent_peer += n;
                moved_peer += n;
            }
            loop {
                let want = next(9000);
                let n = peer.read(&mut buf[..want]);
                if n == 0 {
                    break;
                }
                got_peer.extend_from_slice(&buf[..n]);
                moved_peer += n;
            }
        }
        our_turn = moved_us > 0 || g.dom.take_pending(our_port);
        peer_turn = moved_peer > 0 || peer.dom.take_pending(peer.port);
        assert!(
            our_turn || peer_turn,
            "lost wake-up: us sent {sent_us}/{} got {}/{}, peer sent {sent_peer}/{} got {}/{}",
            to_peer.len(),
            got_us.len(),
            to_us.len(),
            to_us.len(),
            got_peer.len(),
            to_peer.len()
        );
        assert_eq!(ep.state(), State::Connected, "channel failed: {:?}", ep.error());
    }
    (got_us, got_peer)
}
