//! The Qubes side of the appliance on real vchans: the QubesDB session (vchan client of dom0
//! port 111) and the qrexec agent (vchan server on port 512, a data vchan client per request).
//!
//! [`QubesLink`] owns the vchan endpoints and the protocol state machines of the `qubes`
//! crate; it sets channels up, reconnects after errors, and turns what happens into
//! [`QubesEvent`]s for the poll loop:
//!
//! ```text
//! let mut io = Io { xen: &Xen, xs: &mut xs, pool: &mut pool, now_ns: t };
//! link.poll(&mut io, &mut store, self_domid);
//! while let Some(ev) = link.next_event(&mut store) { log it / act on it }
//! ```
//!
//! A client's committed rule set is checked here (parsed into a scratch
//! [`ClientRules`]); a set that fails is reported in `/qubes-iptables-error`, which is emptied
//! again when no client's rules fail. Whoever enforces the rules commits them again into its
//! own [`ClientRules`] with [`Config::commit_rules`] on [`QubesEvent::RulesCommitted`].

pub mod apply;
pub mod channel;
pub mod clock;

use core::fmt;
use core::net::IpAddr;
use core::str::FromStr;

use firewall::rules::{ClientRules, Family};
use heapless::{Deque, String, Vec};
use qubes::config::{
    COMMIT_QUEUE, Config, ConfigEvent, Downstream, FIREWALL_PREFIX, IPTABLES_ERROR_KEY, RulesFailure,
    TRACKED_ADDRESSES, Uplink, iptables_error,
};
use qubes::qrexec::agent::{Agent, AgentError, AgentEvent, MAX_REQUESTS, RequestId};
use qubes::qrexec::data::{DataError, DataEvent};
use qubes::qubesdb::client::{self as db, Path, WriteError};
use qubes::qubesdb::store::Store;
use xen_front::platform::{DomId, Gfn};
use xen_front::vchan::{ClientParams, Endpoint, Error as VchanError, Io, Options, ServerParams, SharePool, State};

use self::channel::VchanChannel;

/// QubesDB's vchan port on dom0.
pub const QUBESDB_PORT: u32 = qubes::qubesdb::wire::VCHAN_PORT;
/// The qrexec agent's vchan port.
pub const QREXEC_PORT: u32 = qubes::qrexec::wire::VCHAN_PORT;
/// Ring sizes of the qrexec control channel (as the Linux agent: 4096/4096).
pub const QREXEC_RING: usize = 4096;
/// Wait before connecting to QubesDB again after the session ended.
pub const DB_RECONNECT_NS: u64 = 1_000_000_000;
/// Wait before listening for dom0's qrexec daemon again.
pub const QREXEC_RELISTEN_NS: u64 = 100_000_000;
/// A request's data channel must be up within this (dom0 serves it before asking).
pub const DATA_CONNECT_TIMEOUT_NS: u64 = 10_000_000_000;
/// Messages handled per channel and pass, so one busy peer cannot hold the loop.
pub const MESSAGES_PER_POLL: usize = 64;
/// Events waiting for [`QubesLink::next_event`]; more are counted and dropped.
pub const EVENT_QUEUE: usize = 16;
/// Clients whose failing rule sets are remembered for `/qubes-iptables-error`.
pub const FAILING_CLIENTS: usize = 32;
/// Addresses shown in a [`QubesEvent::ConnectedIps`] line.
pub const SHOWN_IPS: usize = 4;
/// Domain ids from here on are Xen's special ids (`DOMID_FIRST_RESERVED`, `DOMID_SELF`, ...).
const DOMID_FIRST_RESERVED: DomId = 0x7ff0;
/// How often an endpoint that is looking for its server is polled.
const LOOKUP_POLL_NS: u64 = 100_000_000;

/// Why a session ended or could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkError {
    /// The vchan could not be set up, or it failed (peer gone, ring fault, ...).
    Vchan(VchanError),
    /// The vchan closed without an error of its own (the peer closed it).
    Closed,
    /// QubesDB protocol error (the client has reset itself).
    Db(db::Error),
    /// qrexec control-channel error (the agent has reset itself).
    Agent(AgentError),
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Vchan(e) => write!(f, "vchan: {e:?}"),
            Self::Closed => f.write_str("vchan closed by the peer"),
            Self::Db(e) => write!(f, "{e}"),
            Self::Agent(e) => write!(f, "qrexec: {e:?}"),
        }
    }
}

/// Why a request's data channel ended without the service finishing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataFailure {
    /// dom0 named a domain we cannot connect to.
    BadDomain(u32),
    /// The data vchan failed or could not be set up.
    Vchan(Option<VchanError>),
    /// The data stream broke the protocol.
    Protocol(DataError),
}

/// What the link reports to the poll loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QubesEvent {
    /// The QubesDB vchan is up; a full sync has started.
    DbConnected,
    /// The full sync is complete.
    DbSynced {
        /// Keys in the store.
        keys: usize,
    },
    /// The QubesDB session ended; a new one starts after [`DB_RECONNECT_NS`].
    DbLost(LinkError),
    /// dom0 changed a key after the sync (the change was acknowledged).
    DbChanged {
        /// The key (or subtree, ending in `/`).
        path: Path,
        /// Whether it was removed.
        removed: bool,
    },
    /// dom0 refused one of our writes.
    DbWriteRefused(Path),
    /// The uplink configuration (`/qubes-ip`, ...) changed, or became incomplete (`None`).
    Uplink(Option<Uplink>),
    /// What we are to clients (`/qubes-netvm-*`) changed.
    Downstream(Option<Downstream>),
    /// `/connected-ips` changed.
    ConnectedIps {
        /// Addresses listed.
        count: usize,
        /// The first few.
        first: Vec<IpAddr, SHOWN_IPS>,
    },
    /// `/mapped-ip/` changed.
    MappedIps,
    /// A client's committed rule set parses and may be put in force.
    RulesCommitted {
        /// The client.
        client: IpAddr,
        /// Its numbered rules.
        rules: usize,
    },
    /// A client's rule set failed (its traffic must be dropped); reported to dom0.
    RulesFailed {
        /// The client.
        client: IpAddr,
        /// Why.
        failure: RulesFailure,
    },
    /// dom0 withdrew a client's rules (no commit marker any more).
    RulesWithdrawn(IpAddr),
    /// `/qubes-iptables-error` was written with this text.
    IptablesError(String<256>),
    /// `/qubes-random-seed` arrived: mix it into the entropy pool.
    Reseed(qubes::config::Seed),
    /// The qrexec agent is listening for dom0's daemon.
    QrexecListening,
    /// dom0's qrexec daemon completed the handshake.
    QrexecConnected {
        /// The protocol version in use.
        version: u32,
    },
    /// The qrexec control channel ended; the agent listens again.
    QrexecLost(LinkError),
    /// dom0 asked for a service; its data channel is being opened.
    QrexecRequest {
        /// Request slot.
        id: u8,
        /// dom0's data port.
        port: u32,
    },
    /// A request's service finished and its output was handed to dom0.
    QrexecFinished {
        /// Request slot.
        id: u8,
        /// The exit code sent.
        exit_code: i32,
    },
    /// A request was dropped.
    QrexecDataFailed {
        /// Request slot.
        id: u8,
        /// Why.
        reason: DataFailure,
    },
    /// `qubes.SetDateTime`: dom0 says it is this many seconds since the epoch.
    WallClock(i64),
}

impl fmt::Display for QubesEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |a: Option<core::net::Ipv4Addr>| {
            a.map_or(String::<16>::new(), |a| {
                let mut s = String::new();
                let _ = fmt::write(&mut s, format_args!("{a}"));
                s
            })
        };
        match self {
            Self::DbConnected => f.write_str("qubesdb: connected; full sync started"),
            Self::DbSynced { keys } => write!(f, "qubesdb: synced, {keys} keys"),
            Self::DbLost(e) => write!(f, "qubesdb: session lost ({e}); reconnecting in 1 s"),
            Self::DbChanged { path, removed: false } => write!(f, "qubesdb: dom0 wrote {path} (acknowledged)"),
            Self::DbChanged { path, removed: true } => write!(f, "qubesdb: dom0 removed {path} (acknowledged)"),
            Self::DbWriteRefused(p) => write!(f, "qubesdb: dom0 refused our write of {p}"),
            Self::Uplink(None) => f.write_str("config: uplink incomplete (no /qubes-ip or /qubes-gateway)"),
            Self::Uplink(Some(u)) => write!(
                f,
                "config: uplink address {} netmask {} gateway {} dns {} {}",
                u.ip,
                u.netmask,
                u.gateway,
                opt(u.primary_dns),
                opt(u.secondary_dns)
            ),
            Self::Downstream(None) => f.write_str("config: downstream incomplete (no /qubes-netvm-gateway)"),
            Self::Downstream(Some(d)) => write!(
                f,
                "config: clients' gateway {} netmask {} dns {} {}",
                d.gateway,
                d.netmask,
                opt(d.primary_dns),
                opt(d.secondary_dns)
            ),
            Self::ConnectedIps { count, first } => {
                write!(f, "config: {count} connected clients:")?;
                for ip in first {
                    write!(f, " {ip}")?;
                }
                if *count > first.len() { f.write_str(" ...") } else { Ok(()) }
            }
            Self::MappedIps => f.write_str("config: mapped client addresses changed"),
            Self::RulesCommitted { client, rules } => write!(f, "rules: {client}: committed, {rules} rules"),
            Self::RulesFailed { client, failure } => write!(f, "rules: {client}: FAILED: {failure}"),
            Self::RulesWithdrawn(ip) => write!(f, "rules: {ip}: withdrawn by dom0"),
            Self::IptablesError(t) => write!(f, "qubesdb: wrote {IPTABLES_ERROR_KEY} = {:?}", t.as_str()),
            Self::Reseed(s) => write!(f, "entropy: {} bytes of /qubes-random-seed", s.len),
            Self::QrexecListening => write!(f, "qrexec: listening on vchan port {QREXEC_PORT}"),
            Self::QrexecConnected { version } => write!(f, "qrexec: dom0 connected, protocol version {version}"),
            Self::QrexecLost(e) => write!(f, "qrexec: control channel lost ({e}); listening again"),
            Self::QrexecRequest { id, port } => write!(f, "qrexec: request {id}: data channel to dom0 port {port}"),
            Self::QrexecFinished { id, exit_code } => {
                write!(f, "qrexec: request {id}: finished, exit code {exit_code}")
            }
            Self::QrexecDataFailed { id, reason } => write!(f, "qrexec: request {id}: dropped: {reason:?}"),
            Self::WallClock(t) => write!(f, "qrexec: qubes.SetDateTime: {}", clock::Utc(*t)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Not started (disabled, or our domid is unknown yet).
    Off,
    /// The endpoint is connecting, listening or connected.
    Active,
    /// Closing after an error; then waiting until the given time.
    Closing { retry_at_delay: u64 },
    /// Closed; start again at this time.
    Waiting { until: u64 },
}

/// Counters (read by a dump).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// QubesDB sessions started.
    pub db_sessions: u64,
    /// QubesDB sessions lost.
    pub db_lost: u64,
    /// qrexec control channels lost.
    pub qrexec_lost: u64,
    /// Requests whose data channel failed.
    pub data_failures: u64,
    /// Events dropped because the queue was full.
    pub events_dropped: u64,
    /// Writes of `/qubes-iptables-error` postponed (outbox busy).
    pub error_writes_postponed: u64,
    /// Clients left out of a full recheck (more than tracked).
    pub recheck_overflows: u64,
}

/// The QubesDB session and the qrexec agent over real vchans. See the [module docs](self).
pub struct QubesLink<S: SharePool> {
    qubesdb: bool,
    qrexec: bool,
    db_ep: Endpoint<S>,
    db_phase: Phase,
    db_window: (Gfn, u32),
    db: db::Client,
    config: Config,
    scratch: ClientRules,
    failing: Vec<(IpAddr, RulesFailure), FAILING_CLIENTS>,
    error_key_dirty: bool,
    recheck: Vec<IpAddr, TRACKED_ADDRESSES>,
    ctrl: Endpoint<S>,
    ctrl_phase: Phase,
    agent: Agent,
    data: [Endpoint<S>; MAX_REQUESTS],
    data_windows: [(Gfn, u32); MAX_REQUESTS],
    events: Deque<QubesEvent, EVENT_QUEUE>,
    busy: bool,
    wake_at: Option<u64>,
    /// What the link saw.
    pub counters: LinkCounters,
}

const DATA_OPTIONS: Options = Options { connect_timeout_ns: Some(DATA_CONNECT_TIMEOUT_NS), ..Options::DEFAULT };

impl<S: SharePool> QubesLink<S> {
    /// A link that starts nothing until [`enable`](Self::enable)d; client channels map into
    /// the given windows.
    pub const fn new(db_window: (Gfn, u32), data_windows: [(Gfn, u32); MAX_REQUESTS]) -> Self {
        QubesLink {
            qubesdb: false,
            qrexec: false,
            db_ep: Endpoint::new(Options::DEFAULT),
            db_phase: Phase::Off,
            db_window,
            db: db::Client::new(),
            config: Config::new(),
            scratch: ClientRules::new(Family::V4),
            failing: Vec::new(),
            error_key_dirty: false,
            recheck: Vec::new(),
            ctrl: Endpoint::new(Options::DEFAULT),
            ctrl_phase: Phase::Off,
            agent: Agent::new(),
            data: [const { Endpoint::new(DATA_OPTIONS) }; MAX_REQUESTS],
            data_windows,
            events: Deque::new(),
            busy: false,
            wake_at: None,
            counters: LinkCounters {
                db_sessions: 0,
                db_lost: 0,
                qrexec_lost: 0,
                data_failures: 0,
                events_dropped: 0,
                error_writes_postponed: 0,
                recheck_overflows: 0,
            },
        }
    }

    /// Chooses what runs: the QubesDB session and/or the qrexec agent.
    pub fn enable(&mut self, qubesdb: bool, qrexec: bool) {
        self.qubesdb = qubesdb;
        self.qrexec = qrexec;
    }

    /// The configuration model (for [`Config::commit_rules`], [`Config::connected_ips`], ...).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether the last poll left work undone (do not sleep).
    pub fn is_busy(&self) -> bool {
        self.busy || !self.events.is_empty()
    }

    /// When the link next needs a poll without an event (reconnect timers, lookups).
    pub fn next_deadline(&self) -> Option<u64> {
        self.wake_at
    }

    fn push(&mut self, ev: QubesEvent) {
        if self.events.push_back(ev).is_err() {
            self.counters.events_dropped += 1;
        }
    }

    /// Does what is due: sets channels up, moves messages, reconnects. `self_domid` is our
    /// domid once known (nothing starts before).
    pub fn poll<const E: usize, const B: usize>(
        &mut self,
        io: &mut Io<'_, S>,
        store: &mut Store<E, B>,
        self_domid: Option<DomId>,
    ) {
        self.busy = false;
        self.wake_at = None;
        if let Some(me) = self_domid {
            if self.qubesdb {
                self.poll_db(io, store, me);
            }
            if self.qrexec {
                self.poll_data(io);
                self.poll_ctrl(io, me);
            }
        }
    }

    fn wake(&mut self, at: u64) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }

    // ----- QubesDB ----------------------------------------------------------------------

    fn poll_db<const E: usize, const B: usize>(&mut self, io: &mut Io<'_, S>, store: &mut Store<E, B>, me: DomId) {
        match self.db_phase {
            Phase::Off => self.db_start(io, me),
            Phase::Waiting { until } if io.now_ns >= until => self.db_start(io, me),
            Phase::Waiting { until } => return self.wake(until),
            _ => {}
        }
        if self.db_phase == Phase::Active && matches!(self.db_ep.state(), State::Connected | State::PeerClosed) {
            for n in 0.. {
                if n == MESSAGES_PER_POLL {
                    self.busy = true;
                    break;
                }
                match self.db.poll(&mut VchanChannel(&mut self.db_ep), store) {
                    Ok(Some(ev)) => self.on_db_event(store, ev),
                    Ok(None) => break,
                    Err(e) => {
                        self.db_fail(io, LinkError::Db(e));
                        break;
                    }
                }
            }
        }
        let state = self.db_ep.poll(io);
        match (self.db_phase, state) {
            (Phase::Active, State::Looking) => self.wake(io.now_ns.saturating_add(LOOKUP_POLL_NS)),
            (Phase::Active, State::Closed | State::Closing) => {
                let e = self.db_ep.error().map_or(LinkError::Closed, LinkError::Vchan);
                self.db_fail(io, e);
            }
            (Phase::Closing { retry_at_delay }, State::Closed) => {
                let until = io.now_ns.saturating_add(retry_at_delay);
                self.db_phase = Phase::Waiting { until };
                self.wake(until);
            }
            _ => {}
        }
    }

    fn db_start(&mut self, io: &mut Io<'_, S>, me: DomId) {
        self.db.reset();
        let params = ClientParams { self_domid: me, server: 0, port: QUBESDB_PORT, window: self.db_window };
        match self.db_ep.connect(io, params) {
            Ok(()) => {
                self.db_phase = Phase::Active;
                self.counters.db_sessions += 1;
            }
            Err(e) => {
                self.push(QubesEvent::DbLost(LinkError::Vchan(e)));
                self.counters.db_lost += 1;
                self.db_phase = Phase::Closing { retry_at_delay: DB_RECONNECT_NS };
            }
        }
    }

    fn db_fail(&mut self, io: &mut Io<'_, S>, e: LinkError) {
        if self.db_phase != Phase::Active {
            return;
        }
        self.counters.db_lost += 1;
        self.push(QubesEvent::DbLost(e));
        self.db.reset();
        self.db_ep.close(io);
        self.db_phase = Phase::Closing { retry_at_delay: DB_RECONNECT_NS };
    }

    fn on_db_event<const E: usize, const B: usize>(&mut self, store: &mut Store<E, B>, ev: db::Event) {
        self.config.on_db_event(store, &ev);
        match ev {
            db::Event::SyncStarted => {
                self.recheck.clear();
                self.push(QubesEvent::DbConnected);
            }
            db::Event::Synced => self.push(QubesEvent::DbSynced { keys: store.len() }),
            db::Event::WriteRefused(p) => self.push(QubesEvent::DbWriteRefused(p)),
            db::Event::Written(path) | db::Event::StoreFull(path) if self.db.is_synced() => {
                self.push(QubesEvent::DbChanged { path, removed: false })
            }
            db::Event::Removed(path) | db::Event::RemovedSubtree(path) if self.db.is_synced() => {
                self.push(QubesEvent::DbChanged { path, removed: true })
            }
            _ => {}
        }
    }

    /// The next event, if any. Configuration changes are turned into events here, one at a
    /// time (rule sets are checked as they come out), so no queue has to hold them all.
    pub fn next_event<const E: usize, const B: usize>(&mut self, store: &mut Store<E, B>) -> Option<QubesEvent> {
        loop {
            if let Some(ev) = self.events.pop_front() {
                return Some(ev);
            }
            if self.error_key_dirty {
                self.write_error_key(store);
                if let Some(ev) = self.events.pop_front() {
                    return Some(ev);
                }
            }
            if let Some(ip) = self.recheck.pop() {
                self.check_rules(store, ip);
                continue;
            }
            let ev = match self.config.next_event()? {
                ConfigEvent::UplinkChanged(u) => QubesEvent::Uplink(u),
                ConfigEvent::DownstreamChanged(d) => QubesEvent::Downstream(d),
                ConfigEvent::ConnectedIpsChanged => {
                    let mut first = Vec::new();
                    let mut count = 0;
                    for ip in self.config.connected_ips(store) {
                        let _ = first.push(ip);
                        count += 1;
                    }
                    QubesEvent::ConnectedIps { count, first }
                }
                ConfigEvent::MappedIpsChanged => QubesEvent::MappedIps,
                ConfigEvent::Reseed(s) => QubesEvent::Reseed(s),
                ConfigEvent::RulesCommitted(ip) => {
                    self.check_rules(store, ip);
                    continue;
                }
                ConfigEvent::AllRulesCommitted => {
                    self.collect_all_clients(store);
                    continue;
                }
            };
            return Some(ev);
        }
    }

    /// Every client with a commit marker, and every client whose rules failed before.
    fn collect_all_clients<const E: usize, const B: usize>(&mut self, store: &Store<E, B>) {
        self.recheck.clear();
        let markers = store.prefixed(FIREWALL_PREFIX).filter_map(|(k, _)| {
            let rest = &k[FIREWALL_PREFIX.len()..];
            if rest.contains('/') { None } else { IpAddr::from_str(rest).ok() }
        });
        let failing = self.failing.iter().map(|(ip, _)| *ip);
        for ip in markers.chain(failing) {
            if !self.recheck.contains(&ip) && self.recheck.push(ip).is_err() {
                // The enforcer's own commits still fail such clients closed.
                self.counters.recheck_overflows += 1;
                break;
            }
        }
        // `next_event` pops from the end: check them in the order found.
        self.recheck.reverse();
    }

    fn check_rules<const E: usize, const B: usize>(&mut self, store: &Store<E, B>, client: IpAddr) {
        self.scratch.clear();
        match self.config.commit_rules(store, client, &mut self.scratch) {
            Ok(()) => {
                let rules = self.scratch.active().map_or(0, |s| s.rules().len());
                self.set_failing(client, None);
                self.push(QubesEvent::RulesCommitted { client, rules });
            }
            // Nothing changes in force; the commit or the sync will come.
            Err(RulesFailure::NotSynced | RulesFailure::UpdateInProgress) => {}
            Err(RulesFailure::NotCommitted) => {
                self.set_failing(client, None);
                self.push(QubesEvent::RulesWithdrawn(client));
            }
            Err(failure) => {
                self.set_failing(client, Some(failure));
                self.push(QubesEvent::RulesFailed { client, failure });
            }
        }
    }

    fn set_failing(&mut self, client: IpAddr, failure: Option<RulesFailure>) {
        let at = self.failing.iter().position(|(ip, _)| *ip == client);
        match (at, failure) {
            (Some(i), None) => {
                self.failing.remove(i);
            }
            (Some(i), Some(f)) => {
                // Most recent last: it is the one reported.
                self.failing.remove(i);
                let _ = self.failing.push((client, f));
            }
            (None, Some(f)) => {
                if self.failing.is_full() {
                    self.failing.remove(0);
                }
                let _ = self.failing.push((client, f));
            }
            (None, None) => {}
        }
        self.error_key_dirty = true;
    }

    /// Makes `/qubes-iptables-error` say the most recent failure, or nothing when no client's
    /// rules fail; writes only when dom0's copy differs.
    fn write_error_key<const E: usize, const B: usize>(&mut self, store: &mut Store<E, B>) {
        let text = self.failing.last().map_or(String::new(), |(ip, f)| iptables_error(*ip, f));
        if store.get(IPTABLES_ERROR_KEY) == Some(text.as_bytes()) {
            self.error_key_dirty = false;
            return;
        }
        match self.db.write(store, IPTABLES_ERROR_KEY, text.as_bytes()) {
            Ok(()) | Err(WriteError::StoreFull) => {
                self.error_key_dirty = false;
                self.push(QubesEvent::IptablesError(text));
            }
            // Not synced: the sync ends with a recheck of every client. Busy: next time.
            Err(WriteError::NotSynced) => self.error_key_dirty = false,
            Err(WriteError::Busy) => {
                self.counters.error_writes_postponed += 1;
                self.error_key_dirty = true;
            }
            Err(WriteError::Invalid) => self.error_key_dirty = false,
        }
    }

    // ----- qrexec -----------------------------------------------------------------------

    fn poll_ctrl(&mut self, io: &mut Io<'_, S>, me: DomId) {
        match self.ctrl_phase {
            Phase::Off => self.ctrl_start(io, me),
            Phase::Waiting { until } if io.now_ns >= until => self.ctrl_start(io, me),
            Phase::Waiting { until } => return self.wake(until),
            _ => {}
        }
        if self.ctrl_phase == Phase::Active && matches!(self.ctrl.state(), State::Connected | State::PeerClosed) {
            for n in 0.. {
                if n == MESSAGES_PER_POLL {
                    self.busy = true;
                    break;
                }
                match self.agent.poll_control(&mut VchanChannel(&mut self.ctrl)) {
                    Ok(Some(AgentEvent::Connected { version })) => {
                        self.push(QubesEvent::QrexecConnected { version });
                    }
                    Ok(Some(AgentEvent::OpenData { id, domain, port })) => self.open_data(io, me, id, domain, port),
                    Ok(None) => break,
                    Err(e) => {
                        self.ctrl_fail(io, LinkError::Agent(e));
                        break;
                    }
                }
            }
        }
        let state = self.ctrl.poll(io);
        match (self.ctrl_phase, state) {
            (Phase::Active, State::Closed | State::Closing) => {
                let e = self.ctrl.error().map_or(LinkError::Closed, LinkError::Vchan);
                self.ctrl_fail(io, e);
            }
            (Phase::Closing { retry_at_delay }, State::Closed) => {
                let until = io.now_ns.saturating_add(retry_at_delay);
                self.ctrl_phase = Phase::Waiting { until };
                self.wake(until);
            }
            (Phase::Closing { .. }, _) => self.wake(io.now_ns.saturating_add(LOOKUP_POLL_NS)),
            _ => {}
        }
    }

    fn ctrl_start(&mut self, io: &mut Io<'_, S>, me: DomId) {
        self.agent.reset();
        let params = ServerParams {
            self_domid: me,
            client: 0,
            port: QREXEC_PORT,
            read_min: QREXEC_RING,
            write_min: QREXEC_RING,
        };
        match self.ctrl.listen(io, params) {
            Ok(()) => {
                self.ctrl_phase = Phase::Active;
                self.push(QubesEvent::QrexecListening);
            }
            Err(e) => {
                self.counters.qrexec_lost += 1;
                self.push(QubesEvent::QrexecLost(LinkError::Vchan(e)));
                self.ctrl_phase = Phase::Closing { retry_at_delay: DB_RECONNECT_NS };
            }
        }
    }

    fn ctrl_fail(&mut self, io: &mut Io<'_, S>, e: LinkError) {
        if self.ctrl_phase != Phase::Active {
            return;
        }
        self.counters.qrexec_lost += 1;
        self.push(QubesEvent::QrexecLost(e));
        // The agent forgot its requests with the channel (dom0's daemon is gone with it).
        self.agent.reset();
        for ep in &mut self.data {
            ep.close(io);
        }
        self.ctrl.close(io);
        self.ctrl_phase = Phase::Closing { retry_at_delay: QREXEC_RELISTEN_NS };
    }

    fn open_data(&mut self, io: &mut Io<'_, S>, me: DomId, id: RequestId, domain: u32, port: u32) {
        let i = usize::from(id.0);
        let fail = |link: &mut Self, reason| {
            link.agent.data_failed(id);
            link.counters.data_failures += 1;
            link.push(QubesEvent::QrexecDataFailed { id: id.0, reason });
        };
        let Some(&window) = self.data_windows.get(i) else {
            return fail(self, DataFailure::Vchan(None));
        };
        let server = match DomId::try_from(domain) {
            Ok(d) if d < DOMID_FIRST_RESERVED => d,
            _ => return fail(self, DataFailure::BadDomain(domain)),
        };
        self.push(QubesEvent::QrexecRequest { id: id.0, port });
        match self.data[i].connect(io, ClientParams { self_domid: me, server, port, window }) {
            Ok(()) => {}
            Err(e) => fail(self, DataFailure::Vchan(Some(e))),
        }
    }

    fn poll_data(&mut self, io: &mut Io<'_, S>) {
        for i in 0..MAX_REQUESTS {
            let id = RequestId(i as u8);
            let ep = &mut self.data[i];
            if matches!(ep.state(), State::Idle | State::Closed) {
                continue;
            }
            let running = self.agent.is_running(id);
            if running && matches!(ep.state(), State::Connected | State::PeerClosed) {
                for _ in 0..MESSAGES_PER_POLL {
                    match self.agent.poll_data(id, &mut VchanChannel(ep)) {
                        Ok(Some(DataEvent::SetWallClock(t))) => {
                            let _ = self.events.push_back(QubesEvent::WallClock(t));
                        }
                        Ok(Some(DataEvent::Finished { exit_code })) => {
                            let _ = self.events.push_back(QubesEvent::QrexecFinished { id: id.0, exit_code });
                            ep.close(io);
                            break;
                        }
                        Ok(None) => break,
                        Err(e) => {
                            self.counters.data_failures += 1;
                            let _ = self
                                .events
                                .push_back(QubesEvent::QrexecDataFailed { id: id.0, reason: DataFailure::Protocol(e) });
                            ep.close(io);
                            break;
                        }
                    }
                }
            } else if !running && !matches!(ep.state(), State::Closing) {
                // The agent dropped the request (control channel reset): let go of the channel.
                ep.close(io);
            }
            let state = ep.poll(io);
            let error = ep.error();
            if state == State::Looking {
                self.wake(io.now_ns.saturating_add(LOOKUP_POLL_NS));
            }
            if matches!(state, State::Closed | State::Closing) && self.agent.is_running(id) {
                let reason = DataFailure::Vchan(error);
                self.agent.data_failed(id);
                self.counters.data_failures += 1;
                let _ = self.events.push_back(QubesEvent::QrexecDataFailed { id: id.0, reason });
            }
        }
    }

    /// Calls `line` with the lines of a counters dump (short: the console ring is 2 KiB; the
    /// QubesDB line only when QubesDB is enabled).
    pub fn dump(&self, mut line: impl FnMut(fmt::Arguments<'_>)) {
        let (c, d, a) = (&self.counters, &self.db.counters, &self.agent.counters);
        if self.qubesdb {
            line(format_args!(
                "qubes.db: {:?} synced={} sessions={} lost={} msgs={} errors={} store_full={} failing={} dropped_events={}",
                self.db_ep.state(),
                self.db.is_synced(),
                c.db_sessions,
                c.db_lost,
                d.messages,
                d.errors,
                d.store_full,
                self.failing.len(),
                c.events_dropped
            ));
        }
        line(format_args!(
            "qubes.qrexec: {:?} version={:?} requests={} busy={} resets={} data_failures={} lost={}",
            self.ctrl.state(),
            self.agent.version(),
            a.requests,
            a.busy,
            a.resets,
            c.data_failures,
            c.qrexec_lost
        ));
    }
}

// The commit queue of the configuration model is drained here one event at a time; the
// recheck list must hold at least as many addresses as the model tracks.
const _: () = assert!(TRACKED_ADDRESSES >= COMMIT_QUEUE);

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    /// The harness scenarios match these lines.
    #[test]
    fn log_lines() {
        let u = Uplink {
            ip: Ipv4Addr::new(10, 137, 0, 6),
            netmask: Ipv4Addr::BROADCAST,
            gateway: Ipv4Addr::new(10, 137, 0, 1),
            mac: None,
            primary_dns: Some(Ipv4Addr::new(10, 139, 1, 1)),
            secondary_dns: None,
        };
        assert_eq!(
            QubesEvent::Uplink(Some(u)).to_string(),
            "config: uplink address 10.137.0.6 netmask 255.255.255.255 gateway 10.137.0.1 dns 10.139.1.1 "
        );
        let ip = IpAddr::V4(Ipv4Addr::new(10, 137, 0, 20));
        let mut first = Vec::new();
        first.push(ip).unwrap();
        assert_eq!(
            QubesEvent::ConnectedIps { count: 5, first }.to_string(),
            "config: 5 connected clients: 10.137.0.20 ..."
        );
        assert_eq!(
            QubesEvent::RulesCommitted { client: ip, rules: 2 }.to_string(),
            "rules: 10.137.0.20: committed, 2 rules"
        );
        assert_eq!(
            QubesEvent::RulesFailed { client: ip, failure: RulesFailure::NotSynced }.to_string(),
            "rules: 10.137.0.20: FAILED: QubesDB not synchronised"
        );
        assert_eq!(QubesEvent::WallClock(1_893_553_445).to_string(), "qrexec: qubes.SetDateTime: 2030-01-02T03:04:05Z");
        assert_eq!(QubesEvent::IptablesError(String::new()).to_string(), "qubesdb: wrote /qubes-iptables-error = \"\"");
    }
}
