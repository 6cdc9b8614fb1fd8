//! The simulated Xen: several domains in one process, with Xen's rules, so everything above
//! the hypercall line runs on the host in milliseconds, deterministically, against peers
//! that real Linux never plays.
//!
//! # What it models
//!
//! - **Memory** ([`memory`]): each domain's RAM pages are [`grant_pool::PageCell`]s leaked
//!   from the heap, seen through [`grant_pool::SharedPage`] exactly like real shared pages,
//!   and named by GFN. Every page counts the foreign mappings of it: a destroyed domain with
//!   pages still mapped elsewhere stays a zombie ([`Sim::is_zombie`]) until the last unmap.
//! - **Grant tables v1** ([`gnttab`]): entries live in the granter's own table frames and are
//!   written directly by it; map, unmap and copy enforce `GTF_permit_access`, the grantee
//!   domid, `GTF_readonly`, `GTF_reading`/`GTF_writing` while mapped or copying (so a revoke
//!   by compare-exchange fails meanwhile), out-of-range refs, the `offset + len <= 4096` copy
//!   rule with a status per op, and maps into the mapper's foreign window. Errors are
//!   `GNTST_*` as `common/grant_table.c` returns them.
//! - **Event channels** ([`evtchn`]): interdomain binding, VIRQs, sends, closes (the peer's end
//!   becomes unbound), unmask; pending, selector and upcall bits in each domain's simulated
//!   `shared_info` set in `event_2l.c`'s order. Errors are Xen's errnos.
//! - **xenstored** ([`xenstored`]): nodes with owners and permissions, watches (node and
//!   ancestors, the initial event, `@releaseDomain`/`@introduceDomain` for dom0), transactions
//!   that conflict with `EAGAIN`, Xen 4.17's per-domain quotas (1000 nodes → `ENOSPC`; watches:
//!   more than 128 → `E2BIG`, as C xenstored answers; 10 transactions → `ENOSPC`; 20
//!   outstanding replies → xenstored stops reading the ring until the guest consumes), the wire
//!   protocol over each domain's ring page so `xen_front::xenstore::Client` runs unchanged.
//! - **A netback** ([`netback`]): Linux `xen-netback` as a frontend sees it (libxl's device
//!   directories, the xenbus handshake, TX/RX rings by grant copy), honest or hostile, running
//!   in a backend domain the test may destroy, for testing our netfront against.
//!
//! # What it does not model
//!
//! Time and scheduling (nothing runs unless the test drives it: [`Sim::run_xenstored`]), vCPUs
//! other than 0, FIFO event channels, grant tables v2, transitive grants and grant transfer,
//! table growth (tables have [`gnttab::DEFAULT_GRANT_FRAMES`] frames from the start), the
//! maptrack frame limit beyond a flat [`gnttab::MAX_MAPTRACK`], xenstored's memory quotas,
//! per-transaction node quota, ownership hand-over of a dead domain's nodes, `XS_INTRODUCE` and
//! the other privileged control messages (the simulator introduces domains itself), and
//! permissions on `@releaseDomain` (only dom0 hears it). Transactions see a snapshot taken at
//! `TRANSACTION_START`, slightly stricter than C xenstored's first-access generations.
//!
//! # Playing another domain
//!
//! [`Sim::new`] makes dom0; [`Sim::create_domain`] makes a guest the way libxl does (xenstore
//! home with `n0 r<id>` permissions, `name`, `domid`, writable `control/shutdown`, `data`, a
//! ring page and a bound store channel), returning a [`SimDomain`] that implements the
//! hypercall-line traits for that domain. A test plays a peer either through a `SimDomain`
//! (event channels, grants, its own pages) or through an [`XsTool`]: a synchronous xenstore
//! connection acting as any domain, e.g. dom0's `xl shutdown` writing `control/shutdown`, or a
//! backend writing its `state`. The code under test runs a real
//! `xen_front::xenstore::Client` on the domain's ring page; [`Sim::pump`] moves its bytes.
//!
//! # Faults
//!
//! [`Sim::garbage_into_ring`] scribbles into a ring page, [`SimDomain`]'s grant entries can be
//! held mapped by a peer so revokes fail, and [`Sim::destroy_domain`] kills a domain at any
//! point (its channels close, its mappings go, `@releaseDomain` fires, its pages linger while
//! mapped).
//!
//! # Netfront
//!
//! [`netfront`] plays Linux netfronts (honest and hostile) and libxl's vif attach/detach
//! against our netback (`xen_front::netback`), which runs in a [`netfront::Portcullis`].
//!
//! # vchan
//!
//! [`vchan_peer`] plays a libxenvchan peer (server or client, any ring orders, hostile knobs)
//! against `xen_front::vchan`, which runs in a [`vchan_peer::VchanGuest`].

pub mod domain;
pub mod evtchn;
pub mod gnttab;
mod memory;
pub mod netback;
pub mod netfront;
pub mod tool;
pub mod vchan_peer;
mod world;
pub mod xenstored;

use std::sync::{Arc, Mutex, MutexGuard};

use grant_pool::{PageCell, SharedPage};
use xen_front::platform::{DomId, EventChannels};
use xen_front::xenstore::Client;

pub use domain::SimDomain;
pub use tool::XsTool;

use evtchn::{DEFAULT_MAX_PORTS, EventChannelTable};
use gnttab::{DEFAULT_GRANT_FRAMES, GrantTable};
use memory::Memory;
use world::{DomainState, World};

/// The simulated machine. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Sim {
    world: Arc<Mutex<World>>,
    next_domid: Arc<Mutex<DomId>>,
}

impl Default for Sim {
    fn default() -> Self {
        Self::new()
    }
}

impl Sim {
    /// A machine with dom0 (privileged, runs xenstored).
    pub fn new() -> Sim {
        let sim = Sim { world: Arc::new(Mutex::new(World::new())), next_domid: Arc::new(Mutex::new(1)) };
        sim.add_domain(0);
        sim
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add_domain(&self, domid: DomId) -> SharedPage {
        let shared_info = SharedPage::from_static(Box::leak(Box::new(PageCell::new())));
        let state = DomainState {
            dying: false,
            memory: Memory::new(),
            grants: GrantTable::new(DEFAULT_GRANT_FRAMES),
            events: EventChannelTable::new(shared_info, DEFAULT_MAX_PORTS),
            maptrack: Default::default(),
        };
        self.lock().domains.insert(domid, state);
        shared_info
    }

    /// dom0.
    pub fn dom0(&self) -> SimDomain {
        let shared_info = self.lock().domains[&0].events.shared_info;
        SimDomain { world: self.world.clone(), domid: 0, shared_info, store: None }
    }

    /// Creates a guest as libxl does and introduces it to xenstored.
    pub fn create_domain(&self, name: &str) -> SimDomain {
        let domid = {
            let mut next = self.next_domid.lock().unwrap_or_else(|e| e.into_inner());
            let d = *next;
            *next += 1;
            d
        };
        let shared_info = self.add_domain(domid);
        let (store_page, guest_port) = {
            let mut w = self.lock();
            let (_, page) = w.domains.get_mut(&domid).expect("just added").memory.alloc();
            let guest_port = w.evtchn_alloc_unbound(domid, 0).expect("fresh table");
            let xs_port = w.evtchn_bind_interdomain(0, domid, guest_port).expect("unbound for dom0");
            w.xenstored.introduce(domid, page, xs_port);
            (page, guest_port)
        };
        let toolstack = self.xs_tool(0);
        let home = xenstored::home(domid);
        let ro = ["n0".to_string(), format!("r{domid}")];
        let rw = [format!("n{domid}")];
        let set = |path: &str, perms: &[String]| {
            let perms: Vec<&str> = perms.iter().map(String::as_str).collect();
            toolstack.set_perms(path, &perms).expect("toolstack set_perms");
        };
        toolstack.mkdir(&home).expect("mkdir home");
        set(&home, &ro);
        toolstack.write(&format!("{home}/name"), name.as_bytes()).expect("name");
        toolstack.write(&format!("{home}/domid"), domid.to_string().as_bytes()).expect("domid");
        toolstack.mkdir(&format!("{home}/control")).expect("control");
        for key in ["control/shutdown", "control/feature-poweroff", "control/feature-reboot", "data", "device", "error"]
        {
            let path = format!("{home}/{key}");
            toolstack.mkdir(&path).expect("mkdir");
            set(&path, &rw);
        }
        SimDomain { world: self.world.clone(), domid, shared_info, store: Some((store_page, guest_port)) }
    }

    /// A synchronous xenstore connection acting as `domid` (dom0: the toolstack).
    pub fn xs_tool(&self, domid: DomId) -> XsTool {
        let conn = self.lock().xenstored.connect_socket(domid);
        XsTool { world: self.world.clone(), conn, domid, tx: 0 }
    }

    /// Lets xenstored handle everything notified so far and write what it can.
    pub fn run_xenstored(&self) {
        self.lock().xenstored_run();
    }

    /// Drives `client` on `dom`'s ring until neither side moves: polls it, notifies the store
    /// channel when it asks to, runs xenstored. `now` is the client's clock.
    pub fn pump(&self, dom: &SimDomain, client: &mut Client, now: u64) {
        let port = dom.store_port().expect("domain has a xenstore ring");
        for _ in 0..1000 {
            let outcome = client.poll(now);
            let before = self.lock().xenstored.requests;
            if outcome.notify_peer {
                dom.send(port).expect("store channel is bound");
            }
            self.run_xenstored();
            let handled = self.lock().xenstored.requests != before;
            if !outcome.notify_peer && !handled {
                let again = client.poll(now);
                if !again.notify_peer {
                    return;
                }
                dom.send(port).expect("store channel is bound");
                self.run_xenstored();
            }
        }
        panic!("pump: the xenstore conversation did not settle");
    }

    /// Reads a node as xenstored stores it, ignoring permissions.
    pub fn peek(&self, path: &str) -> Option<Vec<u8>> {
        self.lock().xenstored.peek(path)
    }

    /// Runs `f` on xenstored (statistics, quotas).
    pub fn with_xenstored<T>(&self, f: impl FnOnce(&xenstored::Xenstored) -> T) -> T {
        f(&self.lock().xenstored)
    }

    /// Destroys `domid` now, whatever it was doing.
    pub fn destroy_domain(&self, domid: DomId) {
        self.lock().destroy(domid);
    }

    /// Whether `domid` is destroyed but kept alive by foreign mappings of its pages.
    pub fn is_zombie(&self, domid: DomId) -> bool {
        self.lock().domains.get(&domid).is_some_and(|d| d.dying)
    }

    /// Whether `domid` still exists in any form.
    pub fn exists(&self, domid: DomId) -> bool {
        self.lock().domains.contains_key(&domid)
    }

    /// Raises `virq` in `domid` (e.g. `VIRQ_TIMER`).
    pub fn raise_virq(&self, domid: DomId, virq: u32) {
        self.lock().raise_virq(domid, virq);
    }

    /// Fault: writes `bytes` into `page` at `offset` (ring contents or indices) as a hostile
    /// peer would.
    pub fn garbage_into_ring(&self, page: SharedPage, offset: usize, bytes: &[u8]) {
        page.copy_in(offset, bytes);
    }
}
