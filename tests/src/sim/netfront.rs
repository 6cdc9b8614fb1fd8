//! A simulated netfront: Linux `xen-netfront` as a backend sees it, written from `io/netif.h`,
//! `io/xenbus.h` and xen-abi.md §7 (not from our netback), with hostile variants; libxl's
//! part of `xl network-attach`/`-detach` for a vif served by a driver domain; and
//! [`Portcullis`], a domain running the real `xen_front::netback::Netback` on the simulator.
//!
//! # Playing libxl
//!
//! [`VifDevice::attach`] creates the backend directory
//! `/local/domain/<be>/backend/vif/<fe>/<devid>/` (owner the backend, read for the frontend)
//! and the frontend directory `/local/domain/<fe>/device/vif/<devid>/` (owner the frontend,
//! read for the backend) with libxl's keys, `online = 1` and `state = 1`.
//! [`VifDevice::detach`] writes `online = 0` and `state = 5` into the backend directory, as
//! `libxl__initiate_device_generic_remove` does; the test then waits for the backend to reach
//! Closed and remove its directory ([`VifDevice::backend_gone`]), and
//! [`VifDevice::remove_frontend`] finishes libxl's part.
//!
//! # Playing the frontend
//!
//! [`SimNetfront::step`] is one pass of Linux's `netback_changed`: on backend InitWait (while
//! Initialising) it checks `feature-rx-copy`, allocates and initialises both rings, grants
//! them, allocates an unbound event channel, writes `tx-ring-ref`, `rx-ring-ref`,
//! `event-channel`, `request-rx-copy=1`, `feature-rx-notify=1`, `feature-sg=1` in one
//! transaction (retried on `EAGAIN`), goes Connected and posts its RX buffers. On backend
//! Closing or Closed it revokes its grants (a revoke that fails because the backend still
//! maps the page is counted in [`SimNetfront::leaked_grants`]) and goes Closed.
//! [`SimNetfront::send`] sends a frame in one slot with the given flags (Linux sends TCP/UDP
//! with `NETTXF_csum_blank | NETTXF_data_validated`), [`SimNetfront::send_multi`] splits it
//! over several slots with `more_data` and adds extra-info slots, and
//! [`SimNetfront::push_raw`] writes any request at all. Responses are checked as Linux does
//! (no more responses than requests, one per slot).
//!
//! # Hostile variants
//!
//! [`FrontConfig`] grants the rings read-only, omits `request-rx-copy`, or writes garbage
//! values for any key; [`SimNetfront::push_raw`] sends bad grant references, offsets and sizes
//! past the page, chains that never end, reused ids; [`SimNetfront::jump_req_prod`] moves the
//! producer index where no correct frontend can; [`Sim::destroy_domain`] makes the frontend
//! vanish at any point, also between posting requests and the backend's copy.

use std::collections::VecDeque;

use grant_pool::{GrantPool, PAGE_SIZE, PageCell, SharedPage};
use xen_front::netback::{FrameMeta, LinkChange, Netback, VifId};
use xen_front::platform::{DomId, EventChannels, GrantRef, Port};
use xen_front::xenbus::XenbusState;
use xen_front::xenstore::Client;

use super::{Sim, SimDomain, XsTool};

/// Shared-ring header size (`io/ring.h`).
const RING_HEADER: usize = 64;
/// Entries per netif ring.
const RING_SIZE: u32 = 256;
/// TX slot bytes (`netif_tx_request`).
const TX_SLOT: usize = 12;
/// RX slot bytes (`netif_rx_request` / `netif_rx_response`).
const RX_SLOT: usize = 8;
const REQ_PROD: usize = 0;
const REQ_EVENT: usize = 4;
const RSP_PROD: usize = 8;
const RSP_EVENT: usize = 12;

/// `NETTXF_*`.
pub mod txf {
    /// Blank L4 checksum (pseudo-header sum only).
    pub const CSUM_BLANK: u16 = 1 << 0;
    /// Data validated.
    pub const DATA_VALIDATED: u16 = 1 << 1;
    /// More slots follow.
    pub const MORE_DATA: u16 = 1 << 2;
    /// An extra-info slot follows.
    pub const EXTRA_INFO: u16 = 1 << 3;
}

/// `NETRXF_*` (checksum bits swapped against TX).
pub mod rxf {
    /// Data validated.
    pub const DATA_VALIDATED: u16 = 1 << 0;
    /// Blank L4 checksum.
    pub const CSUM_BLANK: u16 = 1 << 1;
}

/// `NETIF_RSP_*`.
pub mod rsp {
    /// Error.
    pub const ERROR: i16 = -1;
    /// Okay.
    pub const OKAY: i16 = 0;
    /// Answer to an extra-info slot.
    pub const NULL: i16 = 1;
}

/// Grant references one vif of a domain uses: `8 + devid * REFS_PER_VIF ..`.
const REFS_PER_VIF: u32 = 40;

/// A raw `netif_tx_request`, as a hostile frontend may write it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawTx {
    /// Grant reference.
    pub gref: u32,
    /// Offset in the page.
    pub offset: u16,
    /// `NETTXF_*`.
    pub flags: u16,
    /// Id echoed in the response.
    pub id: u16,
    /// Size (first slot: whole frame).
    pub size: u16,
}

/// A `netif_extra_info` slot: type, flags, 6 bytes of union.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extra {
    /// `XEN_NETIF_EXTRA_TYPE_*`.
    pub kind: u8,
    /// `XEN_NETIF_EXTRA_FLAG_*` (`MORE` is set by [`SimNetfront::send_multi`] as needed).
    pub flags: u8,
    /// The union bytes.
    pub data: [u8; 6],
}

/// A TX response as read from the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxRsp {
    /// The request's id.
    pub id: u16,
    /// `NETIF_RSP_*`.
    pub status: i16,
}

/// A received frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RxFrame {
    /// Bytes (empty for an error status).
    pub data: Vec<u8>,
    /// `NETRXF_*`.
    pub flags: u16,
    /// Bytes in the slot, or a negative `NETIF_RSP_*`.
    pub status: i16,
}

/// How the frontend behaves.
#[derive(Clone, Debug)]
pub struct FrontConfig {
    /// RX buffers granted and posted at connect (at most 16).
    pub rx_buffers: u32,
    /// Grant the ring pages read-only (a backend must refuse to map them writable).
    pub readonly_rings: bool,
    /// Leave out `request-rx-copy`.
    pub no_request_rx_copy: bool,
    /// Write `feature-no-csum-offload = 1`.
    pub no_csum_offload: bool,
    /// Extra `(key, value)` writes in the connect transaction, after the normal keys (garbage
    /// values override them).
    pub overrides: Vec<(String, Vec<u8>)>,
    /// Never react to the backend (a stuck HVM stub-domain vif).
    pub passive: bool,
}

impl Default for FrontConfig {
    fn default() -> Self {
        FrontConfig {
            rx_buffers: 16,
            readonly_rings: false,
            no_request_rx_copy: false,
            no_csum_offload: false,
            overrides: Vec::new(),
            passive: false,
        }
    }
}

/// libxl's view of one vif device.
#[derive(Clone, Debug)]
pub struct VifDevice {
    sim: Sim,
    /// The toolstack's xenstore connection (one per device lineage: connections are not
    /// cheap in the simulated xenstored).
    tool: std::sync::Arc<std::sync::Mutex<XsTool>>,
    /// Backend domain.
    pub be: DomId,
    /// Frontend domain.
    pub fe: DomId,
    /// Device number.
    pub devid: u32,
}

impl VifDevice {
    /// `xl network-attach`: libxl's directories, keys and permissions for a vif of `fe` served
    /// by `be`. `ip` is the backend's `ip` key (e.g. `"10.137.0.5 fd09::5"`).
    pub fn attach(sim: &Sim, be: DomId, fe: DomId, devid: u32, mac: &str, ip: Option<&str>) -> VifDevice {
        let tool = std::sync::Arc::new(std::sync::Mutex::new(sim.xs_tool(0)));
        Self::attach_with(sim, tool, be, fe, devid, mac, ip)
    }

    /// Attaches the same device again (`xl network-attach` after a detach), reusing the
    /// toolstack connection.
    pub fn reattach(&self, mac: &str, ip: Option<&str>) -> VifDevice {
        Self::attach_with(&self.sim, self.tool.clone(), self.be, self.fe, self.devid, mac, ip)
    }

    fn attach_with(
        sim: &Sim,
        tool: std::sync::Arc<std::sync::Mutex<XsTool>>,
        be: DomId,
        fe: DomId,
        devid: u32,
        mac: &str,
        ip: Option<&str>,
    ) -> VifDevice {
        let dev = VifDevice { sim: sim.clone(), tool, be, fe, devid };
        let mut xs = dev.tool.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            xs.start().expect("transaction");
            let be_path = dev.backend_path();
            let fe_path = dev.frontend_path();
            let _ = xs.rm(&be_path);
            xs.mkdir(&be_path).expect("mkdir backend");
            xs.set_perms(&be_path, &[&format!("n{be}"), &format!("r{fe}")]).expect("backend perms");
            let mut keys: Vec<(&str, String)> = vec![
                ("frontend", fe_path.clone()),
                ("frontend-id", fe.to_string()),
                ("online", "1".into()),
                ("state", "1".into()),
                ("script", "/etc/xen/scripts/vif-route-qubes".into()),
                ("mac", mac.into()),
                ("handle", devid.to_string()),
                ("type", "vif".into()),
            ];
            if let Some(ip) = ip {
                keys.push(("ip", ip.into()));
            }
            for (k, v) in keys {
                xs.write(&format!("{be_path}/{k}"), v.as_bytes()).expect("backend key");
            }
            let _ = xs.rm(&fe_path);
            xs.mkdir(&fe_path).expect("mkdir frontend");
            xs.set_perms(&fe_path, &[&format!("n{fe}"), &format!("r{be}")]).expect("frontend perms");
            for (k, v) in [
                ("backend", be_path.clone()),
                ("backend-id", be.to_string()),
                ("state", "1".into()),
                ("handle", devid.to_string()),
                ("mac", mac.into()),
                ("trusted", "1".into()),
            ] {
                xs.write(&format!("{fe_path}/{k}"), v.as_bytes()).expect("frontend key");
            }
            match xs.commit() {
                Ok(()) => {
                    drop(xs);
                    return dev;
                }
                Err(e) if e.0 == "EAGAIN" => continue,
                Err(e) => panic!("attach commit: {e:?}"),
            }
        }
    }

    /// Like [`attach`](Self::attach), but the toolstack's own keys stay owned by dom0
    /// (readable by the backend), so only the directory, `state` and `online` count against
    /// the backend's xenstored node quota: what raising that quota in dom0 achieves, for
    /// tests of the netback's own capacity limit.
    pub fn attach_lean(sim: &Sim, be: DomId, fe: DomId, devid: u32, mac: &str, ip: Option<&str>) -> VifDevice {
        let dev = Self::attach(sim, be, fe, devid, mac, ip);
        let xs = dev.tool.lock().unwrap_or_else(|e| e.into_inner());
        for k in ["frontend", "frontend-id", "script", "mac", "handle", "type", "ip"] {
            let _ = xs.set_perms(&format!("{}/{k}", dev.backend_path()), &["n0", &format!("r{be}")]);
        }
        drop(xs);
        dev
    }

    /// `/local/domain/<be>/backend/vif/<fe>/<devid>`.
    pub fn backend_path(&self) -> String {
        format!("/local/domain/{}/backend/vif/{}/{}", self.be, self.fe, self.devid)
    }

    /// `/local/domain/<fe>/device/vif/<devid>`.
    pub fn frontend_path(&self) -> String {
        format!("/local/domain/{}/device/vif/{}", self.fe, self.devid)
    }

    /// The backend's `state`, as xenstored holds it.
    pub fn backend_state(&self) -> Option<XenbusState> {
        self.sim.peek(&format!("{}/state", self.backend_path())).and_then(|v| XenbusState::parse(&v))
    }

    /// A backend key's value.
    pub fn backend_key(&self, key: &str) -> Option<Vec<u8>> {
        self.sim.peek(&format!("{}/{key}", self.backend_path()))
    }

    /// Whether the backend removed its directory.
    pub fn backend_gone(&self) -> bool {
        self.sim.peek(&self.backend_path()).is_none()
    }

    /// libxl's removal request: `online = 0`, `state = 5` in the backend directory.
    pub fn detach(&self) {
        let xs = self.tool.lock().unwrap_or_else(|e| e.into_inner());
        let p = self.backend_path();
        // The backend may have removed it already (then there is nothing to ask).
        if self.backend_gone() {
            return;
        }
        xs.write(&format!("{p}/online"), b"0").expect("online");
        xs.write(&format!("{p}/state"), b"5").expect("state");
    }

    /// libxl's last step: the frontend directory goes.
    pub fn remove_frontend(&self) {
        let _ = self.tool.lock().unwrap_or_else(|e| e.into_inner()).rm(&self.frontend_path());
    }

    /// The toolstack forcibly removes the backend directory (e.g. `xl destroy` of a frontend
    /// whose backend did not answer).
    pub fn force_remove_backend(&self) {
        let _ = self.tool.lock().unwrap_or_else(|e| e.into_inner()).rm(&self.backend_path());
    }
}

/// The rings and buffers of a connected frontend.
#[derive(Debug)]
struct Rings {
    tx: SharedPage,
    rx: SharedPage,
    port: Port,
    tx_prod: u32,
    tx_cons: u32,
    rx_prod: u32,
    rx_cons: u32,
    /// `(gref, page)` per TX buffer id.
    tx_bufs: Vec<(GrantRef, SharedPage)>,
    tx_free: VecDeque<u16>,
    /// `(gref, page)` per RX buffer id.
    rx_bufs: Vec<(GrantRef, SharedPage)>,
    /// Ring index -> RX buffer id posted there.
    rx_posted: VecDeque<(u32, u16)>,
    refs: Vec<GrantRef>,
}

/// A Linux-like netfront in a simulated domain. See the [module docs](self).
#[derive(Debug)]
pub struct SimNetfront {
    /// The frontend's domain.
    pub dom: SimDomain,
    /// Its device.
    pub dev: VifDevice,
    xs: XsTool,
    cfg: FrontConfig,
    state: XenbusState,
    rings: Option<Rings>,
    /// Our pages (2 rings, 16 RX and 16 TX buffers), allocated once and reused by every
    /// connection so thousands of reconnects do not grow the domain.
    pages: Vec<(xen_front::platform::Gfn, SharedPage)>,
    /// Grants the backend still held when we tried to end them and still holds now (retried
    /// on every [`step`](SimNetfront::step), like Linux's deferred grant list).
    pub leaked_grants: u32,
    deferred: Vec<GrantRef>,
    /// Responses that broke the protocol (more than requested, bad RX offsets...).
    pub protocol_errors: u32,
}

impl SimNetfront {
    /// A frontend for `dev` (libxl already attached it), in domain `dom`.
    pub fn new(sim: &Sim, dom: &SimDomain, dev: &VifDevice, cfg: FrontConfig) -> SimNetfront {
        assert!(cfg.rx_buffers <= 16, "at most 16 RX buffers");
        SimNetfront {
            dom: dom.clone(),
            dev: dev.clone(),
            xs: sim.xs_tool(dom.domid()),
            cfg,
            state: XenbusState::Initialising,
            rings: None,
            pages: Vec::new(),
            leaked_grants: 0,
            deferred: Vec::new(),
            protocol_errors: 0,
        }
    }

    /// Serves `dev` (the same device attached again) from Initialising, keeping this
    /// frontend's pages and xenstore connection.
    pub fn reset(&mut self, dev: &VifDevice) {
        self.teardown();
        self.dev = dev.clone();
        self.state = XenbusState::Initialising;
    }

    /// Our own xenbus state.
    pub fn state(&self) -> XenbusState {
        self.state
    }

    /// The event channel port (once connected).
    pub fn port(&self) -> Option<Port> {
        self.rings.as_ref().map(|r| r.port)
    }

    fn key(&self, k: &str) -> String {
        format!("{}/{k}", self.dev.frontend_path())
    }

    fn set_state(&mut self, s: XenbusState) {
        self.state = s;
        let _ = self.xs.write(&self.key("state"), s.as_str().as_bytes());
    }

    fn backend_read(&self, k: &str) -> Option<Vec<u8>> {
        self.xs.read(&format!("{}/{k}", self.dev.backend_path())).ok()
    }

    /// One pass of `netback_changed`: reacts to the backend's state.
    pub fn step(&mut self) {
        let dom = self.dom.clone();
        self.deferred.retain(|&r| !dom.revoke(r));
        self.leaked_grants = self.deferred.len() as u32;
        if self.cfg.passive {
            return;
        }
        let be = self.backend_read("state").and_then(|v| XenbusState::parse(&v));
        match (be, self.state) {
            (Some(XenbusState::InitWait), XenbusState::Initialising) => {
                if self.backend_read("feature-rx-copy").as_deref() != Some(b"1") {
                    return; // Linux: "backend does not support copying receive path"
                }
                self.connect();
            }
            (Some(XenbusState::Closing | XenbusState::Closed), s) if s != XenbusState::Closed => {
                self.teardown();
                self.set_state(XenbusState::Closed);
            }
            (None, s) if s != XenbusState::Closed && s != XenbusState::Initialising => {
                self.teardown();
                self.set_state(XenbusState::Closed);
            }
            _ => {}
        }
    }

    /// Frontend-initiated close (`xennet_remove`): Closing now, Closed once the backend
    /// follows (in later [`step`](Self::step)s).
    pub fn close(&mut self) {
        self.set_state(XenbusState::Closing);
    }

    /// Starts over after Closed (driver reload): Initialising.
    pub fn restart(&mut self) {
        self.teardown();
        self.set_state(XenbusState::Initialising);
    }

    fn grant_ref(&self, n: u32) -> GrantRef {
        GrantRef(8 + self.dev.devid * REFS_PER_VIF + n)
    }

    fn connect(&mut self) {
        let be = self.dev.be;
        if self.pages.is_empty() {
            self.pages = (0..34).map(|_| self.dom.alloc_page()).collect();
        }
        let (tx_gfn, tx) = self.pages[0];
        let (rx_gfn, rx) = self.pages[1];
        for p in [tx, rx] {
            // SHARED_RING_INIT
            p.fill(0, PAGE_SIZE, 0);
            p.write_u32(REQ_EVENT, 1);
            p.write_u32(RSP_EVENT, 1);
        }
        let (tx_ref, rx_ref) = (self.grant_ref(0), self.grant_ref(1));
        assert!(self.dom.grant(tx_ref, be, tx_gfn, self.cfg.readonly_rings));
        assert!(self.dom.grant(rx_ref, be, rx_gfn, self.cfg.readonly_rings));
        let port = self.dom.alloc_unbound(be).expect("alloc_unbound");
        let mut refs = vec![tx_ref, rx_ref];
        let mut rx_bufs = Vec::new();
        for i in 0..16 {
            let (gfn, page) = self.pages[2 + i as usize];
            let r = self.grant_ref(2 + i);
            assert!(self.dom.grant(r, be, gfn, false));
            refs.push(r);
            rx_bufs.push((r, page));
        }
        let mut tx_bufs = Vec::new();
        for i in 0..16 {
            let (gfn, page) = self.pages[18 + i as usize];
            let r = self.grant_ref(18 + i);
            assert!(self.dom.grant(r, be, gfn, true)); // Linux grants TX pages read-only
            refs.push(r);
            tx_bufs.push((r, page));
        }
        self.rings = Some(Rings {
            tx,
            rx,
            port,
            tx_prod: 0,
            tx_cons: 0,
            rx_prod: 0,
            rx_cons: 0,
            tx_bufs,
            tx_free: (0..16).collect(),
            rx_bufs,
            rx_posted: VecDeque::new(),
            refs,
        });
        let mut keys: Vec<(String, Vec<u8>)> = vec![
            ("tx-ring-ref".into(), tx_ref.0.to_string().into_bytes()),
            ("rx-ring-ref".into(), rx_ref.0.to_string().into_bytes()),
            ("event-channel".into(), port.0.to_string().into_bytes()),
            ("feature-rx-notify".into(), b"1".to_vec()),
            ("feature-sg".into(), b"1".to_vec()),
        ];
        if !self.cfg.no_request_rx_copy {
            keys.push(("request-rx-copy".into(), b"1".to_vec()));
        }
        if self.cfg.no_csum_offload {
            keys.push(("feature-no-csum-offload".into(), b"1".to_vec()));
        }
        keys.extend(self.cfg.overrides.iter().cloned());
        loop {
            self.xs.start().expect("transaction");
            for (k, v) in &keys {
                self.xs.write(&self.key(k), v).expect("frontend key");
            }
            match self.xs.commit() {
                Ok(()) => break,
                Err(e) if e.0 == "EAGAIN" => continue,
                Err(e) => panic!("netfront commit: {e:?}"),
            }
        }
        self.set_state(XenbusState::Connected);
        let n = self.cfg.rx_buffers;
        self.post_rx(n);
    }

    fn teardown(&mut self) {
        let Some(r) = self.rings.take() else { return };
        let _ = self.dom.close(r.port);
        for gref in r.refs {
            if !self.dom.revoke(gref) {
                self.deferred.push(gref);
            }
        }
        self.leaked_grants = self.deferred.len() as u32;
    }

    fn rings(&mut self) -> &mut Rings {
        self.rings.as_mut().expect("netfront is connected")
    }

    fn notify(&self) {
        if let Some(r) = &self.rings {
            let _ = self.dom.send(r.port);
        }
    }

    /// `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY` on `page` with our private producer `new`.
    fn push(page: SharedPage, new: u32) -> bool {
        let old = page.read_u32(REQ_PROD);
        grant_pool::shared::write_barrier();
        page.write_u32(REQ_PROD, new);
        grant_pool::shared::full_barrier();
        let event = page.read_u32(REQ_EVENT);
        new.wrapping_sub(event) < new.wrapping_sub(old)
    }

    // ----- TX -----

    /// Writes a request into the next TX slot (not yet published).
    pub fn push_raw(&mut self, req: RawTx) {
        let r = self.rings();
        let off = RING_HEADER + (r.tx_prod & (RING_SIZE - 1)) as usize * TX_SLOT;
        r.tx.write_u32(off, req.gref);
        r.tx.write_u16(off + 4, req.offset);
        r.tx.write_u16(off + 6, req.flags);
        r.tx.write_u16(off + 8, req.id);
        r.tx.write_u16(off + 10, req.size);
        r.tx_prod = r.tx_prod.wrapping_add(1);
    }

    fn push_extra(&mut self, e: Extra) {
        let d = e.data;
        self.push_raw(RawTx {
            gref: u32::from_le_bytes([e.kind, e.flags, d[0], d[1]]),
            offset: u16::from_le_bytes([d[2], d[3]]),
            flags: u16::from_le_bytes([d[4], d[5]]),
            id: 0,
            size: 0,
        });
    }

    /// Publishes TX requests and notifies the backend if it asked.
    pub fn publish_tx(&mut self) -> bool {
        let r = self.rings();
        let notify = Self::push(r.tx, r.tx_prod);
        if notify {
            self.notify();
        }
        notify
    }

    /// A TX buffer: its id, grant reference and page.
    fn tx_buffer(&mut self) -> (u16, GrantRef, SharedPage) {
        let r = self.rings();
        let id = r.tx_free.pop_front().expect("a free TX buffer");
        let (gref, page) = r.tx_bufs[usize::from(id)];
        (id, gref, page)
    }

    /// Sends `frame` in one slot at offset 0 with `flags`; returns the id used.
    pub fn send(&mut self, frame: &[u8], flags: u16) -> u16 {
        self.send_multi(frame, &[], 0, &[], flags)[0]
    }

    /// Sends `frame` cut at the byte positions `cuts` into several slots (each in its own
    /// page at `offset`), with `extras` after the first slot; publishes. Returns the data
    /// slots' ids.
    pub fn send_multi(&mut self, frame: &[u8], cuts: &[usize], offset: u16, extras: &[Extra], flags: u16) -> Vec<u16> {
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(frame.len());
        let pieces: Vec<&[u8]> = bounds.windows(2).map(|w| &frame[w[0]..w[1]]).collect();
        let mut ids = Vec::new();
        for (k, piece) in pieces.iter().enumerate() {
            let (id, gref, page) = self.tx_buffer();
            page.copy_in(usize::from(offset), piece);
            let more = if k + 1 < pieces.len() { txf::MORE_DATA } else { 0 };
            let (size, f) = if k == 0 {
                let extra = if extras.is_empty() { 0 } else { txf::EXTRA_INFO };
                (frame.len() as u16, flags | more | extra)
            } else {
                (piece.len() as u16, more)
            };
            self.push_raw(RawTx { gref: gref.0, offset, flags: f, id, size });
            if k == 0 {
                for (j, e) in extras.iter().enumerate() {
                    let more = if j + 1 < extras.len() { 1 } else { 0 };
                    self.push_extra(Extra { flags: e.flags | more, ..*e });
                }
            }
            ids.push(id);
        }
        self.publish_tx();
        ids
    }

    /// A TX buffer's grant reference (for hand-made requests) and its page.
    pub fn tx_grant(&self, id: u16) -> (GrantRef, SharedPage) {
        self.rings.as_ref().expect("connected").tx_bufs[usize::from(id)]
    }

    /// Hostile: sets `req_prod` to `value` directly.
    pub fn jump_req_prod(&mut self, value: u32) {
        let r = self.rings();
        r.tx_prod = value;
        r.tx.write_u32(REQ_PROD, value);
        self.notify();
    }

    /// Reads the TX responses published so far (checking there are no more than requests)
    /// and frees the buffers of answered data slots.
    pub fn tx_responses(&mut self) -> Vec<TxRsp> {
        let mut out = Vec::new();
        let mut errors = 0;
        {
            let r = self.rings();
            let prod = r.tx.read_u32(RSP_PROD);
            grant_pool::shared::read_barrier();
            if prod.wrapping_sub(r.tx_cons) > r.tx_prod.wrapping_sub(r.tx_cons) {
                errors += 1;
            } else {
                while r.tx_cons != prod {
                    let off = RING_HEADER + (r.tx_cons & (RING_SIZE - 1)) as usize * TX_SLOT;
                    let rsp = TxRsp { id: r.tx.read_u16(off), status: r.tx.read_u16(off + 2) as i16 };
                    r.tx_cons = r.tx_cons.wrapping_add(1);
                    if rsp.status != rsp::NULL && usize::from(rsp.id) < r.tx_bufs.len() && !r.tx_free.contains(&rsp.id)
                    {
                        r.tx_free.push_back(rsp.id);
                    }
                    out.push(rsp);
                }
                r.tx.write_u32(RSP_EVENT, r.tx_cons.wrapping_add(1));
            }
        }
        self.protocol_errors += errors;
        out
    }

    // ----- RX -----

    /// Posts up to `n` free RX buffers and notifies if the backend asked.
    pub fn post_rx(&mut self, n: u32) {
        let r = self.rings();
        for _ in 0..n {
            let posted: Vec<u16> = r.rx_posted.iter().map(|(_, id)| *id).collect();
            let Some(id) = (0..r.rx_bufs.len() as u16).find(|i| !posted.contains(i)) else { break };
            let off = RING_HEADER + (r.rx_prod & (RING_SIZE - 1)) as usize * RX_SLOT;
            r.rx.write_u16(off, id);
            r.rx.write_u16(off + 2, 0);
            r.rx.write_u32(off + 4, r.rx_bufs[usize::from(id)].0.0);
            r.rx_posted.push_back((r.rx_prod, id));
            r.rx_prod = r.rx_prod.wrapping_add(1);
        }
        let (page, prod) = (r.rx, r.rx_prod);
        if Self::push(page, prod) {
            self.notify();
        }
    }

    /// RX buffers posted and not yet answered.
    pub fn rx_posted(&self) -> usize {
        self.rings.as_ref().map_or(0, |r| r.rx_posted.len())
    }

    /// Reads the frames the backend delivered (each response must sit at the ring index of
    /// the request it used, as Linux netfront assumes) and re-posts their buffers if
    /// `repost`.
    pub fn rx_frames(&mut self, repost: bool) -> Vec<RxFrame> {
        let mut out = Vec::new();
        let mut errors = 0;
        let reposts;
        {
            let r = self.rings();
            let prod = r.rx.read_u32(RSP_PROD);
            grant_pool::shared::read_barrier();
            if prod.wrapping_sub(r.rx_cons) > r.rx_posted.len() as u32 {
                errors += 1;
            } else {
                while r.rx_cons != prod {
                    let off = RING_HEADER + (r.rx_cons & (RING_SIZE - 1)) as usize * RX_SLOT;
                    let (index, id) = r.rx_posted.pop_front().expect("checked against posted");
                    let rsp_id = r.rx.read_u16(off);
                    let offset = r.rx.read_u16(off + 2);
                    let flags = r.rx.read_u16(off + 4);
                    let status = r.rx.read_u16(off + 6) as i16;
                    if index != r.rx_cons || rsp_id != id {
                        errors += 1;
                    }
                    let mut data = Vec::new();
                    if status > 0 {
                        if usize::from(offset) + status as usize > PAGE_SIZE {
                            errors += 1;
                        } else {
                            data = vec![0; status as usize];
                            r.rx_bufs[usize::from(id)].1.copy_out(usize::from(offset), &mut data);
                        }
                    }
                    out.push(RxFrame { data, flags, status });
                    r.rx_cons = r.rx_cons.wrapping_add(1);
                }
                r.rx.write_u32(RSP_EVENT, r.rx_cons.wrapping_add(1));
            }
            reposts = out.len() as u32;
        }
        self.protocol_errors += errors;
        if repost && reposts > 0 {
            self.post_rx(reposts);
        }
        out
    }
}

/// Grant references a [`Portcullis`] pool starts at.
pub const POOL_FIRST_REF: u32 = 8;

/// Leaks `n` zeroed pages and makes them RAM of `dom`: the backing of a grant pool (the
/// simulator's stand-in for the appliance's `.bss` pages). Returns each page's address and
/// GFN, for `GrantPool::from_pages`. The pages live for the rest of the program and are
/// reachable only through the returned addresses and the simulated Xen.
pub fn pool_pages(dom: &SimDomain, n: usize) -> Vec<(usize, u64)> {
    let mut w = dom.lock();
    let d = w.domains.get_mut(&dom.domid()).expect("domain exists");
    (0..n)
        .map(|_| {
            let cell: &'static PageCell = Box::leak(Box::new(PageCell::new()));
            (cell.addr(), d.memory.adopt(SharedPage::from_static(cell)).0)
        })
        .collect()
}

/// Pool pages of a [`Portcullis`].
pub const POOL_PAGES: usize = 256;

/// A frame the netback delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// From which vif.
    pub vif: VifId,
    /// Its bytes.
    pub data: Vec<u8>,
    /// Its checksum state.
    pub meta: FrameMeta,
}

/// A domain running the real netback (`xen_front::netback`) with a real xenstore client and
/// a grant pool, driven by the test: the appliance's poll loop in miniature.
pub struct Portcullis {
    /// The machine.
    pub sim: Sim,
    /// Our domain.
    pub dom: SimDomain,
    /// The xenstore client.
    pub xs: Box<Client>,
    /// The netback under test.
    pub nb: Box<Netback>,
    /// Its pool.
    pub pool: Box<GrantPool<SimDomain, POOL_PAGES>>,
    /// The clock given to the netback.
    pub now: u64,
    /// Link changes seen.
    pub changes: Vec<LinkChange>,
}

impl Portcullis {
    /// Creates the domain, builds its pool with `make_pool` (over [`pool_pages`]), and
    /// starts the netback.
    pub fn boot(sim: &Sim, make_pool: impl FnOnce(&SimDomain) -> GrantPool<SimDomain, POOL_PAGES>) -> Portcullis {
        let dom = sim.create_domain("portcullis");
        let mut xs = Box::new(Client::new());
        xs.attach(dom.store_page().expect("ring"));
        let (window, _) = xen_front::platform::GrantTables::foreign_window(&dom);
        let mut nb = Box::new(Netback::new(window));
        nb.start();
        let pool = Box::new(make_pool(&dom));
        let mut p = Portcullis { sim: sim.clone(), dom, xs, nb, pool, now: 1, changes: Vec::new() };
        p.settle();
        p
    }

    /// Our domid.
    pub fn domid(&self) -> DomId {
        self.dom.domid()
    }

    /// One control pass: xenstore I/O, watch events routed, the netback's poll.
    pub fn control_pass(&mut self) {
        self.sim.pump(&self.dom, &mut self.xs, self.now);
        if self.xs.take_events_lost() {
            self.nb.on_events_lost();
        }
        while let Some(ev) = self.xs.pop_event() {
            let (path, token) = (ev.path.to_vec(), ev.token.to_vec());
            assert!(self.nb.on_watch_event(&path, &token), "a token that is not the netback's");
        }
        self.nb.poll(&mut self.xs, &self.dom, self.now);
        self.sim.pump(&self.dom, &mut self.xs, self.now);
        while let Some(c) = self.nb.take_change() {
            self.changes.push(c);
        }
    }

    /// Control passes until nothing is in flight and nothing changes (at most `n`).
    pub fn settle(&mut self) {
        for _ in 0..200 {
            self.control_pass();
            if self.xs.in_flight() == 0 {
                // Once more: the last replies may have produced events or new requests.
                self.control_pass();
                if self.xs.in_flight() == 0 {
                    return;
                }
            }
        }
    }

    /// Advances the clock by `ns` and settles.
    pub fn advance(&mut self, ns: u64) {
        self.now += ns;
        self.settle();
    }

    /// Routes pending event-channel ports to the netback.
    pub fn route_events(&mut self) {
        let ports: Vec<Port> = self.nb.ports().collect();
        for p in ports {
            if self.dom.take_pending(p) {
                self.nb.on_event(p);
            }
        }
    }

    /// Takes client frames: events routed, `receive` until nothing more comes.
    pub fn receive(&mut self) -> Vec<Delivered> {
        self.route_events();
        let mut out = Vec::new();
        loop {
            let n = self.nb.receive(&self.dom, &mut self.pool, 64, |pool, vif, slot, meta| {
                out.push(Delivered { vif, data: slot.bytes()[..usize::from(meta.len)].to_vec(), meta });
                pool.put_back(slot);
            });
            if n == 0 {
                return out;
            }
        }
    }

    /// Sends `data` to `vif` from a pool slot.
    pub fn transmit(&mut self, vif: VifId, data: &[u8], meta: FrameMeta) -> Result<(), xen_front::netback::TxDrop> {
        let mut slot = self.pool.take().expect("a free pool slot");
        slot.bytes_mut()[..data.len()].copy_from_slice(data);
        let r = self.nb.transmit(&self.dom, vif, &slot, data.len(), meta);
        self.pool.put_back(slot);
        r
    }
}
