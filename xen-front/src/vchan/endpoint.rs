//! The vchan endpoint: server and client roles, the rendezvous state machine, the data path,
//! peer-gone detection and close. Everything is non-blocking; the appliance's poll loop drives
//! it through [`Endpoint::poll`].

use core::sync::atomic::Ordering;

use grant_pool::SharedPage;
use grant_pool::shared::{full_barrier, write_barrier};

use super::layout::{
    self, MAX_PAGES, MAX_RING_PAGES, NOTIFY_READ, NOTIFY_WRITE, OrderError, Orders, Placement, live, off,
};
use super::rendezvous::{self, Node};
use super::ring::{ReadRing, RingBytes, RingFault, Storage, VolatileRead, WriteRing};
use super::sys::{SharePool, VchanPlatform};
use crate::hypercall::XenError;
use crate::platform::PortState;
use crate::platform::{DomId, Gfn, GrantHandle, GrantRef, GrantStatus, Port};
use crate::xenstore::{Access, Client as XsClient, Error as XsError, Perm, ReqId, Request, TxId, TxnRetry, TxnStep};

/// What the endpoint uses below it, for one call: the platform, the shared xenstore client, the
/// page pool (only the server shares pages) and the time.
pub struct Io<'a, S: SharePool> {
    /// Event channels, grant maps, port status.
    pub xen: &'a dyn VchanPlatform,
    /// The domain's xenstore client (shared with the rest of the appliance).
    pub xs: &'a mut XsClient,
    /// Pages for the server's control page and rings.
    pub pool: &'a mut S,
    /// Now, in the appliance's clock (ns).
    pub now_ns: u64,
}

/// Timing policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Deadline of each xenstore request.
    pub xs_timeout_ns: u64,
    /// Give up connecting after this long (`None`: wait for ever, as Qubes' daemons do).
    pub connect_timeout_ns: Option<u64>,
    /// Client: interval between reads of the server's xenstore nodes while they are absent.
    pub lookup_retry_ns: u64,
    /// Interval between checks of the event channel's state (peer death).
    pub liveness_interval_ns: u64,
    /// Server close: how long to wait for the client to unmap before quarantining pages.
    pub close_timeout_ns: u64,
}

impl Options {
    /// 10 s xenstore timeout, no connect timeout, 100 ms lookup retry, 1 s liveness, 10 s
    /// close timeout.
    pub const DEFAULT: Options = Options {
        xs_timeout_ns: 10_000_000_000,
        connect_timeout_ns: None,
        lookup_retry_ns: 100_000_000,
        liveness_interval_ns: 1_000_000_000,
        close_timeout_ns: 10_000_000_000,
    };
}

impl Default for Options {
    fn default() -> Self {
        Options::DEFAULT
    }
}

/// Server role: we share the pages, the peer maps them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerParams {
    /// Our own domid (owner of the xenstore nodes).
    pub self_domid: DomId,
    /// The client domain.
    pub client: DomId,
    /// The vchan port number (111 QubesDB, 512 qrexec, ...).
    pub port: u32,
    /// Minimum bytes of the ring we read (left).
    pub read_min: usize,
    /// Minimum bytes of the ring we write (right).
    pub write_min: usize,
}

/// Client role: we map the server's pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientParams {
    /// Our own domid (part of the server's xenstore path).
    pub self_domid: DomId,
    /// The server domain.
    pub server: DomId,
    /// The vchan port number.
    pub port: u32,
    /// Where to map the server's pages: first GFN and frame count, inside the platform's
    /// foreign window and used by nothing else (a GFN mapped twice crashes the domain).
    /// [`MAX_PAGES`] frames fit any channel.
    pub window: (Gfn, u32),
}

/// Why a channel could not be set up, or why it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// `listen`/`connect` on an endpoint that is not idle or closed.
    Busy,
    /// Ring orders requested or found are unacceptable.
    Orders(OrderError),
    /// The pool had no free page.
    NoPages,
    /// An event-channel operation failed.
    EventChannel(XenError),
    /// A xenstore request of the rendezvous failed.
    Xenstore(XsError),
    /// The server's `ring-ref` is not a usable grant reference.
    BadRingRef,
    /// The server's `event-channel` is not a usable port.
    BadEventChannel,
    /// Mapping one of the server's pages failed.
    Map(GrantStatus),
    /// The caller's window cannot hold all the server's pages.
    WindowTooSmall {
        /// Frames needed.
        needed: usize,
        /// Frames given.
        have: u32,
    },
    /// Nobody connected (or no server appeared) in time.
    ConnectTimeout,
    /// The peer went away without closing (its domain died or it closed the event channel).
    PeerGone,
    /// The peer wrote an impossible ring index.
    Fault(RingFault),
    /// The client set an impossible `cli_live` value while we waited for it.
    BadLiveFlag(u8),
}

/// Where an endpoint is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Never used.
    Idle,
    /// Server: shared and advertised, waiting for the client to set `cli_live`.
    Listening,
    /// Client: waiting for the server's xenstore nodes.
    Looking,
    /// Bytes flow both ways.
    Connected,
    /// The peer closed or went away: what it sent can still be read; writes take nothing.
    /// Call [`Endpoint::close`] when done ([`Endpoint::error`] says whether it was clean).
    PeerClosed,
    /// Closing: waiting for the peer to unmap our pages, or for our own unmaps and xenstore
    /// clean-up. Keep polling.
    Closing,
    /// Every page, mapping, port and xenstore node is released. [`Endpoint::error`] says why
    /// it ended if it was not a local close.
    Closed,
}

/// Counters of one endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VchanStats {
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Event-channel notifications sent.
    pub notifies: u64,
    /// Peer index faults (each closed the channel).
    pub faults: u64,
    /// Connections made.
    pub connects: u64,
    /// xenstore clean-up requests that failed (the nodes may linger).
    pub cleanup_errors: u64,
    /// Unmaps refused (retried).
    pub unmap_failures: u64,
    /// Pages quarantined because the peer kept them mapped past the close timeout.
    pub quarantined: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Server { me: DomId },
    Client { me: DomId, window: (Gfn, u32) },
}

/// Client lookup of the server's nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lookup {
    /// Read `event-channel` at this time.
    Due(u64),
    ReadingPort(ReqId),
    ReadingRef(ReqId, Port),
}

/// Body of the transaction that removes the empty `data/vchan/<client>` directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Body {
    Idle,
    Listing(ReqId),
    Removing(ReqId),
    Ending,
}

/// Server's removal of its rendezvous nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cleanup {
    NotNeeded,
    Due,
    RmPort(ReqId),
    Parent(TxnRetry, Body),
    Done,
}

const ADVERTISE_OPS: usize = 4;

/// A vchan endpoint (either role). See the [module docs](super) for the call sequence.
pub struct Endpoint<S: SharePool> {
    opts: Options,
    role: Option<Role>,
    state: State,
    error: Option<Error>,
    peer: DomId,
    port_num: u32,
    evtchn: Option<Port>,
    ctrl: Option<SharedPage>,
    rd: Option<ReadRing>,
    wr: Option<WriteRing>,
    shared: [Option<S::Shared>; MAX_PAGES],
    maps: [Option<(Gfn, GrantHandle)>; MAX_PAGES],
    advertise: [Option<ReqId>; ADVERTISE_OPS],
    lookup: Lookup,
    cleanup: Cleanup,
    deadline: Option<u64>,
    next_liveness: u64,
    notify_pending: u8,
    fault: Option<RingFault>,
    stats: VchanStats,
}

impl<S: SharePool> Default for Endpoint<S> {
    fn default() -> Self {
        Self::new(Options::DEFAULT)
    }
}

impl<S: SharePool> Endpoint<S> {
    /// An idle endpoint.
    pub const fn new(opts: Options) -> Self {
        Endpoint {
            opts,
            role: None,
            state: State::Idle,
            error: None,
            peer: 0,
            port_num: 0,
            evtchn: None,
            ctrl: None,
            rd: None,
            wr: None,
            shared: [const { None }; MAX_PAGES],
            maps: [None; MAX_PAGES],
            advertise: [None; ADVERTISE_OPS],
            lookup: Lookup::Due(0),
            cleanup: Cleanup::NotNeeded,
            deadline: None,
            next_liveness: 0,
            notify_pending: 0,
            fault: None,
            stats: VchanStats {
                bytes_in: 0,
                bytes_out: 0,
                notifies: 0,
                faults: 0,
                connects: 0,
                cleanup_errors: 0,
                unmap_failures: 0,
                quarantined: 0,
            },
        }
    }

    /// Where the endpoint is.
    pub fn state(&self) -> State {
        self.state
    }

    /// Why the channel failed or ended other than by our own close (sticky until the next
    /// `listen`/`connect`).
    pub fn error(&self) -> Option<Error> {
        self.error
    }

    /// Our event-channel port, to route its events to [`poll`](Self::poll).
    pub fn port(&self) -> Option<Port> {
        self.evtchn
    }

    /// The counters.
    pub fn stats(&self) -> &VchanStats {
        &self.stats
    }

    /// The peer domain.
    pub fn peer(&self) -> DomId {
        self.peer
    }

    /// Sizes of the ring we read and the ring we write, while set up.
    pub fn ring_sizes(&self) -> Option<(usize, usize)> {
        Some((self.rd?.size() as usize, self.wr?.size() as usize))
    }

    /// Whether bytes flow both ways (libvchan's `is_open` = CONNECTED).
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    fn start(&mut self, role: Role, peer: DomId, port_num: u32) -> Result<(), Error> {
        if !matches!(self.state, State::Idle | State::Closed) {
            return Err(Error::Busy);
        }
        let stats = self.stats;
        *self = Endpoint::new(self.opts);
        self.stats = stats;
        self.role = Some(role);
        self.peer = peer;
        self.port_num = port_num;
        Ok(())
    }

    // ----- server -------------------------------------------------------------------------

    /// Server: shares a control page and ring pages with `p.client`, allocates an unbound
    /// event channel and advertises both in xenstore. Then poll until
    /// [`State::Connected`]. On `Err` nothing is left allocated.
    pub fn listen(&mut self, io: &mut Io<'_, S>, p: ServerParams) -> Result<(), Error> {
        self.start(Role::Server { me: p.self_domid }, p.client, p.port)?;
        match self.listen_inner(io, p) {
            Ok(()) => {
                self.state = State::Listening;
                self.deadline = self.opts.connect_timeout_ns.map(|t| io.now_ns.saturating_add(t));
                Ok(())
            }
            Err(e) => {
                // Nothing was advertised or mapped yet: the pages were never mapped by anyone.
                self.close_port(io);
                self.release_shared(io, true);
                self.state = State::Closed;
                self.error = Some(e);
                Err(e)
            }
        }
    }

    fn listen_inner(&mut self, io: &mut Io<'_, S>, p: ServerParams) -> Result<(), Error> {
        let orders = Orders::for_sizes(p.read_min, p.write_min).map_err(Error::Orders)?;
        let (lp, rp) = orders.pages();
        for i in 0..1 + lp + rp {
            self.shared[i] = Some(io.pool.share(p.client).ok_or(Error::NoPages)?);
        }
        let page = |s: &Option<S::Shared>| s.as_ref().map(S::page).expect("shared above");
        let ctrl = page(&self.shared[0]);
        // `share` zeroed the page: indices start at 0.
        ctrl.write_u16(off::LEFT_ORDER, u16::from(orders.left));
        ctrl.write_u16(off::RIGHT_ORDER, u16::from(orders.right));
        for i in 0..lp + rp {
            let gref = self.shared[1 + i].as_ref().map(S::gref).expect("shared above");
            ctrl.write_u32(layout::grant_offset(i), gref.0);
        }
        let ring_pages = |first: usize, n: usize| {
            let mut pages = [None; MAX_RING_PAGES];
            for (k, p) in pages.iter_mut().enumerate().take(n) {
                *p = Some(page(&self.shared[first + k]));
            }
            pages
        };
        let left = storage(ctrl, orders.left, ring_pages(1, lp));
        let right = storage(ctrl, orders.right, ring_pages(1 + lp, rp));
        self.rd = Some(ReadRing::new(ctrl, off::LEFT_CONS, off::LEFT_PROD, left).map_err(Error::Fault)?);
        self.wr = Some(WriteRing::new(ctrl, off::RIGHT_CONS, off::RIGHT_PROD, right).map_err(Error::Fault)?);
        ctrl.write_u8(off::CLI_NOTIFY, NOTIFY_WRITE);
        ctrl.write_u8(off::SRV_NOTIFY, 0);
        ctrl.write_u8(off::SRV_LIVE, live::CONNECTED);
        ctrl.write_u8(off::CLI_LIVE, live::WAITING);
        write_barrier();
        self.ctrl = Some(ctrl);

        let port = io.xen.alloc_unbound(p.client).map_err(Error::EventChannel)?;
        self.evtchn = Some(port);
        let _ = io.xen.unmask(port);

        let ctrl_ref = self.shared[0].as_ref().map(S::gref).expect("shared above");
        self.advertise_nodes(io, p, ctrl_ref, port)
    }

    fn advertise_nodes(
        &mut self,
        io: &mut Io<'_, S>,
        p: ServerParams,
        gref: GrantRef,
        port: Port,
    ) -> Result<(), Error> {
        let perms =
            [Perm { access: Access::None, domid: p.self_domid }, Perm { access: Access::Read, domid: p.client }];
        let ring_ref = rendezvous::server_path(p.client, p.port, Node::RingRef);
        let event_channel = rendezvous::server_path(p.client, p.port, Node::EventChannel);
        let (ring_ref, event_channel) = (ring_ref.as_str().unwrap_or(""), event_channel.as_str().unwrap_or(""));
        let (a, b) = (rendezvous::decimal(gref.0), rendezvous::decimal(port.0));
        // ring-ref first: Qubes clients wait for event-channel, then read ring-ref.
        let requests = [
            Request::Write(ring_ref, a.as_str().unwrap_or("").as_bytes()),
            Request::SetPerms(ring_ref, &perms),
            Request::Write(event_channel, b.as_str().unwrap_or("").as_bytes()),
            Request::SetPerms(event_channel, &perms),
        ];
        for (i, r) in requests.into_iter().enumerate() {
            match io.xs.submit(io.now_ns, self.opts.xs_timeout_ns, TxId::NONE, r) {
                Ok(id) => {
                    self.advertise[i] = Some(id);
                    self.cleanup = Cleanup::Due;
                }
                Err(e) => return Err(Error::Xenstore(e)),
            }
        }
        Ok(())
    }

    // ----- client -------------------------------------------------------------------------

    /// Client: looks for the server's nodes (re-reading until they appear), then binds the
    /// event channel, maps the pages into `p.window` and sets `cli_live`. Poll until
    /// [`State::Connected`].
    pub fn connect(&mut self, io: &mut Io<'_, S>, p: ClientParams) -> Result<(), Error> {
        self.start(Role::Client { me: p.self_domid, window: p.window }, p.server, p.port)?;
        self.state = State::Looking;
        self.lookup = Lookup::Due(io.now_ns);
        self.deadline = self.opts.connect_timeout_ns.map(|t| io.now_ns.saturating_add(t));
        Ok(())
    }

    fn poll_lookup(&mut self, io: &mut Io<'_, S>) {
        let Some(Role::Client { me, window }) = self.role else { return };
        let path = |node| rendezvous::client_path(self.peer, me, self.port_num, node);
        let retry = io.now_ns.saturating_add(self.opts.lookup_retry_ns);
        match self.lookup {
            Lookup::Due(at) if io.now_ns >= at => {
                let p = path(Node::EventChannel);
                match io.xs.submit(
                    io.now_ns,
                    self.opts.xs_timeout_ns,
                    TxId::NONE,
                    Request::Read(p.as_str().unwrap_or("")),
                ) {
                    Ok(id) => self.lookup = Lookup::ReadingPort(id),
                    Err(_) => self.lookup = Lookup::Due(retry),
                }
            }
            Lookup::Due(_) => {}
            Lookup::ReadingPort(id) => match io.xs.take_reply(id) {
                None => {}
                Some(Ok(reply)) if reply.payload().is_empty() => self.lookup = Lookup::Due(retry),
                Some(Ok(reply)) => match rendezvous::parse_event_channel(reply.payload()) {
                    None => self.fail(io, Error::BadEventChannel),
                    Some(port) => {
                        let p = path(Node::RingRef);
                        match io.xs.submit(
                            io.now_ns,
                            self.opts.xs_timeout_ns,
                            TxId::NONE,
                            Request::Read(p.as_str().unwrap_or("")),
                        ) {
                            Ok(id) => self.lookup = Lookup::ReadingRef(id, port),
                            Err(_) => self.lookup = Lookup::Due(retry),
                        }
                    }
                },
                // Absent or not yet readable (written before its permissions): look again.
                Some(Err(_)) => self.lookup = Lookup::Due(retry),
            },
            Lookup::ReadingRef(id, port) => match io.xs.take_reply(id) {
                None => {}
                Some(Ok(reply)) => match rendezvous::parse_ring_ref(reply.payload()) {
                    None => self.fail(io, Error::BadRingRef),
                    Some(gref) => {
                        if let Err(e) = self.attach(io, window, gref, port) {
                            self.fail(io, e);
                        }
                    }
                },
                Some(Err(_)) => self.lookup = Lookup::Due(retry),
            },
        }
    }

    fn attach(&mut self, io: &mut Io<'_, S>, window: (Gfn, u32), gref: GrantRef, remote: Port) -> Result<(), Error> {
        let server = self.peer;
        if window.1 == 0 {
            return Err(Error::WindowTooSmall { needed: 1, have: 0 });
        }
        let port = io.xen.bind_interdomain(server, remote).map_err(|_| Error::BadEventChannel)?;
        self.evtchn = Some(port);
        let _ = io.xen.unmask(port);
        let m = io.xen.map_grant_ref(window.0, server, gref, false).map_err(Error::Map)?;
        self.maps[0] = Some((window.0, m.handle));
        let ctrl = m.page;
        self.ctrl = Some(ctrl);
        // Everything below comes from the server's page: read each field once.
        let orders =
            Orders::check(ctrl.read_u16(off::LEFT_ORDER), ctrl.read_u16(off::RIGHT_ORDER)).map_err(Error::Orders)?;
        let (lp, rp) = orders.pages();
        let needed = 1 + lp + rp;
        if needed > window.1 as usize {
            return Err(Error::WindowTooSmall { needed, have: window.1 });
        }
        let mut grants = [0u32; 2 * MAX_RING_PAGES];
        for (i, g) in grants.iter_mut().enumerate().take(lp + rp) {
            *g = ctrl.read_u32(layout::grant_offset(i));
        }
        let mut pages = [[None; MAX_RING_PAGES]; 2];
        for (i, &gref) in grants.iter().enumerate().take(lp + rp) {
            let at = Gfn(window.0.0 + 1 + i as u64);
            // We write the left ring, and only read the right one.
            let readonly = i >= lp;
            let m = io.xen.map_grant_ref(at, server, GrantRef(gref), readonly).map_err(Error::Map)?;
            self.maps[1 + i] = Some((at, m.handle));
            let (ring, k) = if i < lp { (0, i) } else { (1, i - lp) };
            pages[ring][k] = Some(m.page);
        }
        let left = storage(ctrl, orders.left, pages[0]);
        let right = storage(ctrl, orders.right, pages[1]);
        self.wr = Some(WriteRing::new(ctrl, off::LEFT_CONS, off::LEFT_PROD, left).map_err(Error::Fault)?);
        self.rd = Some(ReadRing::new(ctrl, off::RIGHT_CONS, off::RIGHT_PROD, right).map_err(Error::Fault)?);
        if ctrl.read_u8(off::SRV_LIVE) == live::EXITED {
            return Err(Error::PeerGone);
        }
        ctrl.write_u8(off::SRV_NOTIFY, NOTIFY_WRITE);
        write_barrier();
        ctrl.write_u8(off::CLI_LIVE, live::CONNECTED);
        full_barrier();
        let _ = io.xen.send(port);
        self.stats.notifies += 1;
        self.connected(io);
        Ok(())
    }

    fn connected(&mut self, io: &Io<'_, S>) {
        self.state = State::Connected;
        self.deadline = None;
        self.next_liveness = io.now_ns.saturating_add(self.opts.liveness_interval_ns);
        self.stats.connects += 1;
    }

    // ----- poll ---------------------------------------------------------------------------

    /// Does everything due now: rendezvous steps, liveness checks, pending notifications,
    /// xenstore clean-up, close progress. Call it once per loop pass (after reading and
    /// writing) and whenever [`port`](Self::port) fires. Never blocks.
    pub fn poll(&mut self, io: &mut Io<'_, S>) -> State {
        self.poll_advertise(io);
        if let Some(f) = self.fault.take() {
            self.fail(io, Error::Fault(f));
        }
        match self.state {
            State::Idle | State::Closed => {}
            State::Listening => self.poll_listening(io),
            State::Looking => {
                self.poll_lookup(io);
                if self.state == State::Looking && self.deadline.is_some_and(|d| io.now_ns >= d) {
                    self.fail(io, Error::ConnectTimeout);
                }
            }
            State::Connected => self.poll_connected(io),
            State::PeerClosed => {}
            State::Closing => self.poll_closing(io),
        }
        self.poll_cleanup(io);
        self.flush(io.xen);
        if self.state == State::Closing {
            self.poll_closing(io);
        }
        self.state
    }

    fn poll_advertise(&mut self, io: &mut Io<'_, S>) {
        for i in 0..ADVERTISE_OPS {
            let Some(id) = self.advertise[i] else { continue };
            match io.xs.take_reply(id) {
                None => {}
                Some(Ok(_)) => self.advertise[i] = None,
                Some(Err(e)) => {
                    self.advertise[i] = None;
                    if self.state == State::Listening {
                        self.fail(io, Error::Xenstore(e));
                    }
                }
            }
        }
    }

    fn poll_listening(&mut self, io: &mut Io<'_, S>) {
        let Some(ctrl) = self.ctrl else { return };
        match ctrl.read_u8(off::CLI_LIVE) {
            live::WAITING => {
                if self.deadline.is_some_and(|d| io.now_ns >= d) {
                    self.fail(io, Error::ConnectTimeout);
                }
            }
            live::CONNECTED => {
                self.connected(io);
                // Qubes removes the nodes once the client is in.
                if self.cleanup == Cleanup::NotNeeded {
                    self.cleanup = Cleanup::Due;
                }
            }
            live::EXITED => {
                self.state = State::PeerClosed;
                self.error = Some(Error::PeerGone);
            }
            other => self.fail(io, Error::BadLiveFlag(other)),
        }
    }

    fn poll_connected(&mut self, io: &mut Io<'_, S>) {
        let Some(ctrl) = self.ctrl else { return };
        let peer_live = match self.role {
            Some(Role::Server { .. }) => off::CLI_LIVE,
            _ => off::SRV_LIVE,
        };
        if ctrl.read_u8(peer_live) == live::EXITED {
            self.state = State::PeerClosed;
            return;
        }
        if io.now_ns >= self.next_liveness {
            self.next_liveness = io.now_ns.saturating_add(self.opts.liveness_interval_ns);
            let alive = match (self.evtchn, self.evtchn.map(|p| io.xen.port_status(p))) {
                (Some(_), Some(Ok(PortState::Interdomain { remote, .. }))) => remote == self.peer,
                _ => false,
            };
            if !alive {
                self.state = State::PeerClosed;
                self.error = Some(Error::PeerGone);
            }
        }
    }

    // ----- data path ----------------------------------------------------------------------

    fn readable(&self) -> bool {
        matches!(self.state, State::Connected | State::PeerClosed) && self.fault.is_none()
    }

    /// Asks the peer to notify us on `bit` (in the peer's notify byte), as libxenvchan's
    /// `request_notify`.
    fn request(&self, bit: u8) {
        let (Some(ctrl), Some(role)) = (self.ctrl, self.role) else { return };
        let byte = match role {
            Role::Server { .. } => off::CLI_NOTIFY,
            Role::Client { .. } => off::SRV_NOTIFY,
        };
        ctrl.atomic_u8(byte).fetch_or(bit, Ordering::SeqCst);
        full_barrier();
    }

    /// Bytes ready to read. When there are none, asks the peer for an event on its next write.
    pub fn data_ready(&mut self) -> usize {
        if !self.readable() {
            return 0;
        }
        let Some(rd) = self.rd.as_mut() else { return 0 };
        let mut r = rd.ready();
        if r == Ok(0) {
            self.request(NOTIFY_WRITE);
            r = self.rd.as_mut().map_or(Ok(0), |rd| rd.ready());
        }
        match r {
            Ok(n) => n as usize,
            Err(f) => {
                self.set_fault(f);
                0
            }
        }
    }

    /// Bytes [`write`](Self::write) would take now. When the ring is full, asks the peer for
    /// an event when it consumes.
    pub fn space(&mut self) -> usize {
        if self.state != State::Connected || self.fault.is_some() {
            return 0;
        }
        let Some(wr) = self.wr.as_mut() else { return 0 };
        let mut r = wr.space();
        if r == Ok(0) {
            self.request(NOTIFY_READ);
            r = self.wr.as_mut().map_or(Ok(0), |wr| wr.space());
        }
        match r {
            Ok(n) => n as usize,
            Err(f) => {
                self.set_fault(f);
                0
            }
        }
    }

    /// Lends the ready bytes, in place, to `f`, which copies what it wants and returns how
    /// many it consumed (clamped to the view). Returns that count.
    pub fn with_readable(&mut self, f: impl FnOnce(VolatileRead<'_>) -> usize) -> usize {
        let ready = self.data_ready();
        let Some(rd) = self.rd.as_mut() else { return 0 };
        if ready == 0 {
            return 0;
        }
        let n = f(rd.view(ready as u32)).min(ready);
        if n > 0 {
            rd.consume(n as u32);
            self.notify_pending |= NOTIFY_READ;
            self.stats.bytes_in += n as u64;
        }
        n
    }

    /// Copies up to `buf.len()` ready bytes into `buf`; returns how many (0: none ready).
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        self.with_readable(|view| view.copy_to(0, buf))
    }

    /// Copies as much of `src` as fits into the ring; returns how many bytes (0: full, or not
    /// connected). The peer is notified at the next [`poll`](Self::poll)/[`flush`](Self::flush).
    pub fn write(&mut self, src: &[u8]) -> usize {
        if src.is_empty() {
            return 0;
        }
        let mut space = self.space();
        if space < src.len() && space > 0 {
            // Ask for an event when it drains, then look again (a consume may have raced us).
            self.request(NOTIFY_READ);
            space = self.space();
        }
        let n = space.min(src.len());
        let Some(wr) = self.wr.as_mut() else { return 0 };
        if n == 0 {
            return 0;
        }
        wr.produce(&src[..n]);
        self.notify_pending |= NOTIFY_WRITE;
        self.stats.bytes_out += n as u64;
        n
    }

    /// Sends the notifications the peer asked for since the last flush (libxenvchan's
    /// `send_notify`): one event at most. [`poll`](Self::poll) calls it.
    pub fn flush(&mut self, xen: &dyn VchanPlatform) {
        let pending = core::mem::take(&mut self.notify_pending);
        let (Some(ctrl), Some(role), Some(port)) = (self.ctrl, self.role, self.evtchn) else { return };
        if pending == 0 {
            return;
        }
        let mine = match role {
            Role::Server { .. } => off::SRV_NOTIFY,
            Role::Client { .. } => off::CLI_NOTIFY,
        };
        // Our index updates are visible before we look at what the peer asked for.
        full_barrier();
        let asked = ctrl.atomic_u8(mine).fetch_and(!pending, Ordering::SeqCst);
        if asked & pending != 0 && xen.send(port).is_ok() {
            self.stats.notifies += 1;
        }
    }

    fn set_fault(&mut self, f: RingFault) {
        self.stats.faults += 1;
        self.fault = Some(f);
    }

    // ----- close --------------------------------------------------------------------------

    /// Closes the channel (any state): clears our live flag and notifies, releases the event
    /// channel, unmaps (client) or unshares (server, once the client has unmapped; pages it
    /// keeps past the close timeout are quarantined), and removes the xenstore nodes. Poll
    /// until [`State::Closed`].
    pub fn close(&mut self, io: &mut Io<'_, S>) {
        if matches!(self.state, State::Idle | State::Closed | State::Closing) {
            return;
        }
        self.begin_close(io);
        self.poll(io);
    }

    fn fail(&mut self, io: &mut Io<'_, S>, e: Error) {
        if self.error.is_none() {
            self.error = Some(e);
        }
        if !matches!(self.state, State::Closing | State::Closed) {
            self.begin_close(io);
        }
    }

    fn begin_close(&mut self, io: &mut Io<'_, S>) {
        if let Some(ctrl) = self.ctrl {
            let own = match self.role {
                Some(Role::Server { .. }) => off::SRV_LIVE,
                _ => off::CLI_LIVE,
            };
            ctrl.write_u8(own, live::EXITED);
            full_barrier();
            if let Some(port) = self.evtchn {
                let _ = io.xen.send(port);
            }
        }
        self.close_port(io);
        self.rd = None;
        self.wr = None;
        self.notify_pending = 0;
        self.fault = None;
        if let Role::Client { .. } = self.role.unwrap_or(Role::Server { me: 0 }) {
            self.ctrl = None;
            if let Lookup::ReadingPort(id) | Lookup::ReadingRef(id, _) = self.lookup {
                io.xs.discard(id);
            }
        }
        for id in self.advertise.iter_mut().filter_map(Option::take) {
            io.xs.discard(id);
        }
        self.deadline = Some(io.now_ns.saturating_add(self.opts.close_timeout_ns));
        self.state = State::Closing;
    }

    fn close_port(&mut self, io: &mut Io<'_, S>) {
        if let Some(port) = self.evtchn.take() {
            let _ = io.xen.close(port);
        }
    }

    fn poll_closing(&mut self, io: &mut Io<'_, S>) {
        let expired = self.deadline.is_some_and(|d| io.now_ns >= d);
        // Client: our mappings of the server's pages.
        for m in self.maps.iter_mut() {
            if let Some((at, handle)) = *m {
                match io.xen.unmap_grant_ref(at, handle) {
                    Ok(()) => *m = None,
                    Err(_) => self.stats.unmap_failures += 1,
                }
            }
        }
        // Server: our pages, once the client let go of them.
        self.release_shared(io, expired);
        let pages_done = self.shared.iter().all(Option::is_none) && self.maps.iter().all(Option::is_none);
        let xs_done = matches!(self.cleanup, Cleanup::NotNeeded | Cleanup::Done);
        if pages_done && xs_done {
            self.ctrl = None;
            self.state = State::Closed;
        }
    }

    /// Unshares every shared page that the peer no longer maps; with `force`, quarantines the
    /// others.
    fn release_shared(&mut self, io: &mut Io<'_, S>, force: bool) {
        for i in 0..MAX_PAGES {
            let Some(s) = self.shared[i].take() else { continue };
            match io.pool.unshare(s) {
                Ok(()) => {}
                Err(s) if force => {
                    io.pool.quarantine(s);
                    self.stats.quarantined += 1;
                }
                Err(s) => self.shared[i] = Some(s),
            }
        }
    }

    // ----- xenstore clean-up (server) -----------------------------------------------------

    fn poll_cleanup(&mut self, io: &mut Io<'_, S>) {
        // The nodes go once the client is connected, or when we close.
        let wanted = matches!(self.state, State::Connected | State::PeerClosed | State::Closing | State::Closed);
        if !wanted {
            return;
        }
        let client = self.peer;
        let t = self.opts.xs_timeout_ns;
        let now = io.now_ns;
        for _ in 0..4 {
            let before = self.cleanup;
            self.cleanup = match self.cleanup {
                Cleanup::NotNeeded | Cleanup::Done => return,
                Cleanup::Due => {
                    let dir = rendezvous::server_path(client, self.port_num, Node::Dir);
                    match io.xs.submit(now, t, TxId::NONE, Request::Rm(dir.as_str().unwrap_or(""))) {
                        Ok(id) => Cleanup::RmPort(id),
                        Err(XsError::TooManyInFlight) => Cleanup::Due,
                        Err(_) => {
                            self.stats.cleanup_errors += 1;
                            Cleanup::Done
                        }
                    }
                }
                Cleanup::RmPort(id) => match io.xs.take_reply(id) {
                    None => Cleanup::RmPort(id),
                    Some(r) => {
                        if matches!(r, Err(e) if e != XsError::NotFound) {
                            self.stats.cleanup_errors += 1;
                        }
                        Cleanup::Parent(TxnRetry::new(5, t), Body::Idle)
                    }
                },
                Cleanup::Parent(mut txn, body) => {
                    let next = self.cleanup_parent(io, &mut txn, body, client);
                    match next {
                        Some(body) => Cleanup::Parent(txn, body),
                        None => Cleanup::Done,
                    }
                }
            };
            if self.cleanup == before {
                return;
            }
        }
    }

    /// One step of the transaction removing `data/vchan/<client>` if it is empty; `None` when
    /// it has finished.
    fn cleanup_parent(&mut self, io: &mut Io<'_, S>, txn: &mut TxnRetry, body: Body, client: DomId) -> Option<Body> {
        let dir = rendezvous::server_client_dir(client);
        let (now, t) = (io.now_ns, self.opts.xs_timeout_ns);
        match txn.poll(io.xs, now) {
            TxnStep::Pending => Some(body),
            TxnStep::Begin(tx) => match io.xs.submit(now, t, tx, Request::Directory(dir.as_str().unwrap_or(""))) {
                Ok(id) => Some(Body::Listing(id)),
                Err(_) => {
                    let _ = txn.abort(io.xs, now);
                    Some(Body::Ending)
                }
            },
            TxnStep::Open(tx) => match body {
                Body::Listing(id) => match io.xs.take_reply(id) {
                    None => Some(body),
                    Some(Ok(reply)) if reply.entries().next().is_none() => {
                        match io.xs.submit(now, t, tx, Request::Rm(dir.as_str().unwrap_or(""))) {
                            Ok(id) => Some(Body::Removing(id)),
                            Err(_) => {
                                let _ = txn.abort(io.xs, now);
                                Some(Body::Ending)
                            }
                        }
                    }
                    // Another channel to the same client still has nodes there, or it is gone.
                    Some(_) => {
                        let _ = txn.abort(io.xs, now);
                        Some(Body::Ending)
                    }
                },
                Body::Removing(id) => match io.xs.take_reply(id) {
                    None => Some(body),
                    Some(_) => {
                        let _ = txn.commit(io.xs, now);
                        Some(Body::Ending)
                    }
                },
                Body::Idle | Body::Ending => Some(body),
            },
            TxnStep::Committed | TxnStep::Aborted => None,
            TxnStep::Failed(_) => {
                self.stats.cleanup_errors += 1;
                None
            }
        }
    }
}

/// The storage of a ring of `order` given the control page and (for paged rings) its pages.
fn storage(ctrl: SharedPage, order: u8, pages: [Option<SharedPage>; MAX_RING_PAGES]) -> RingBytes {
    let s = match layout::placement(order) {
        Some(Placement::InPage(offset)) => Storage::InPage { page: ctrl, offset },
        Some(Placement::Pages(_)) => Storage::Pages { pages },
        // Orders are checked (`Orders::check`/`for_sizes`) before rings are built.
        None => unreachable!("ring order checked before use"),
    };
    RingBytes::new(s, order)
}
