//! A xenstored (modelled on C xenstored of Xen 4.17): the node tree with owners and
//! permissions, watches, transactions, per-domain quotas, and the wire protocol served over
//! each domain's ring page, plus "socket" connections through which tests act as tools in a
//! domain (`xenstore-write` in dom0, a backend's xenbus).
//!
//! Ring connections are serviced only after the guest notifies the store event channel (C
//! xenstored also re-checks other rings whenever it wakes; the simulator is stricter, so a
//! missing notification shows up as a stall). Replies and watch events are written whenever
//! there is room.

mod ring;
mod store;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use grant_pool::SharedPage;
use xen_front::platform::{DomId, Port};

pub use ring::{BadIndices, RING_SIZE, offsets};
pub use store::{Access, Errno, NodePerm, XsResult, quota};
use store::{Store, Want, allowed, is_under, privileged};

use super::world::World;

/// Header bytes of a message.
const HEADER_LEN: usize = 16;
/// Largest payload; more kills the connection.
pub const PAYLOAD_MAX: usize = 4096;

/// Message types used here (`xsd_sockmsg_type`).
pub mod msg {
    /// `XS_DIRECTORY`.
    pub const DIRECTORY: u32 = 1;
    /// `XS_READ`.
    pub const READ: u32 = 2;
    /// `XS_GET_PERMS`.
    pub const GET_PERMS: u32 = 3;
    /// `XS_WATCH`.
    pub const WATCH: u32 = 4;
    /// `XS_UNWATCH`.
    pub const UNWATCH: u32 = 5;
    /// `XS_TRANSACTION_START`.
    pub const TRANSACTION_START: u32 = 6;
    /// `XS_TRANSACTION_END`.
    pub const TRANSACTION_END: u32 = 7;
    /// `XS_INTRODUCE`.
    pub const INTRODUCE: u32 = 8;
    /// `XS_RELEASE`.
    pub const RELEASE: u32 = 9;
    /// `XS_GET_DOMAIN_PATH`.
    pub const GET_DOMAIN_PATH: u32 = 10;
    /// `XS_WRITE`.
    pub const WRITE: u32 = 11;
    /// `XS_MKDIR`.
    pub const MKDIR: u32 = 12;
    /// `XS_RM`.
    pub const RM: u32 = 13;
    /// `XS_SET_PERMS`.
    pub const SET_PERMS: u32 = 14;
    /// `XS_WATCH_EVENT`.
    pub const WATCH_EVENT: u32 = 15;
    /// `XS_ERROR`.
    pub const ERROR: u32 = 16;
    /// `XS_IS_DOMAIN_INTRODUCED`.
    pub const IS_DOMAIN_INTRODUCED: u32 = 17;
    /// `XS_RESET_WATCHES`.
    pub const RESET_WATCHES: u32 = 21;
}

/// The special watch path fired when a domain is destroyed.
pub const RELEASE_DOMAIN: &str = "@releaseDomain";
/// The special watch path fired when a domain is introduced.
pub const INTRODUCE_DOMAIN: &str = "@introduceDomain";

/// Names one connection to xenstored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u32);

#[derive(Debug)]
enum Transport {
    /// The domain's ring page; `port` is xenstored's end (in dom0) of the store channel.
    Ring { page: SharedPage, port: Port },
    /// A tool's connection: watch events are queued for the test to pop.
    Socket { events: VecDeque<(String, String)> },
}

#[derive(Debug)]
struct Connection {
    domid: DomId,
    transport: Transport,
    /// The guest notified the store channel since we last read its ring.
    kicked: bool,
    /// A protocol violation made xenstored drop the connection.
    broken: bool,
    /// Bytes of the request being read.
    input: Vec<u8>,
    /// Bytes waiting for room in the response ring.
    output: VecDeque<u8>,
    /// Output stream positions where queued replies end, and bytes written so far.
    reply_ends: VecDeque<u64>,
    written: u64,
    queued: u64,
}

impl Connection {
    fn outstanding(&self) -> usize {
        self.reply_ends.len()
    }

    fn queue(&mut self, msg_type: u32, req_id: u32, tx_id: u32, payload: &[u8], is_reply: bool) {
        let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
        for v in [msg_type, req_id, tx_id, payload.len() as u32] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes.extend_from_slice(payload);
        self.queued += bytes.len() as u64;
        self.output.extend(bytes);
        if is_reply {
            self.reply_ends.push_back(self.queued);
        }
    }
}

#[derive(Clone, Debug)]
struct Watch {
    conn: ConnId,
    domid: DomId,
    /// Absolute path or `@special`.
    path: String,
    token: String,
    /// Registered relative to the domain's home: events carry relative paths.
    relative: bool,
}

#[derive(Debug)]
struct Txn {
    conn: ConnId,
    domid: DomId,
    snapshot: Store,
    /// Every node the transaction looked at or changed, with its generation when first
    /// touched (`None`: absent). Any difference at commit is a conflict.
    accessed: BTreeMap<String, Option<u64>>,
    written: BTreeSet<String>,
}

/// The simulated xenstored. See the [module docs](self).
#[derive(Debug)]
pub struct Xenstored {
    store: Store,
    generation: u64,
    conns: BTreeMap<ConnId, Connection>,
    next_conn: u32,
    watches: Vec<Watch>,
    txns: BTreeMap<u32, Txn>,
    next_tx: u32,
    /// Events produced by the request being handled, delivered after its reply.
    pending_events: Vec<(ConnId, String, String)>,
    /// Requests handled, for tests that count round trips.
    pub requests: u64,
}

/// The home of a domain's relative paths.
pub fn home(domid: DomId) -> String {
    format!("/local/domain/{domid}")
}

fn valid_chars(path: &str) -> bool {
    path.bytes().all(|b| b.is_ascii_alphanumeric() || b"-/_@".contains(&b))
}

/// Makes `raw` absolute for `domid` and checks it as xenstored does (`is_valid_nodename`).
fn canonical(domid: DomId, raw: &str) -> XsResult<String> {
    let abs = if raw.starts_with('/') {
        if raw.len() > 3072 {
            return Err(Errno::EINVAL);
        }
        raw.to_string()
    } else {
        if raw.is_empty() || raw.len() > 2048 {
            return Err(Errno::EINVAL);
        }
        format!("{}/{raw}", home(domid))
    };
    if !valid_chars(&abs) || abs.contains("//") || (abs.len() > 1 && abs.ends_with('/')) {
        return Err(Errno::EINVAL);
    }
    Ok(abs)
}

/// Splits a payload of NUL-terminated strings; the last must be terminated.
fn strings(payload: &[u8]) -> XsResult<Vec<&str>> {
    let body = payload.strip_suffix(b"\0").ok_or(Errno::EINVAL)?;
    body.split(|&b| b == 0).map(|s| std::str::from_utf8(s).map_err(|_| Errno::EINVAL)).collect()
}

/// The first NUL-terminated string of `payload`, and the rest.
fn first_string(payload: &[u8]) -> XsResult<(&str, &[u8])> {
    let nul = payload.iter().position(|&b| b == 0).ok_or(Errno::EINVAL)?;
    let s = std::str::from_utf8(&payload[..nul]).map_err(|_| Errno::EINVAL)?;
    Ok((s, &payload[nul + 1..]))
}

fn ok() -> Vec<u8> {
    b"OK\0".to_vec()
}

impl Default for Xenstored {
    fn default() -> Self {
        Self::new()
    }
}

impl Xenstored {
    /// An empty store with the base directories.
    pub fn new() -> Self {
        Xenstored {
            store: Store::new(),
            generation: 1,
            conns: BTreeMap::new(),
            next_conn: 1,
            watches: Vec::new(),
            txns: BTreeMap::new(),
            next_tx: 1,
            pending_events: Vec::new(),
            requests: 0,
        }
    }

    fn add_conn(&mut self, domid: DomId, transport: Transport) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        let conn = Connection {
            domid,
            transport,
            kicked: false,
            broken: false,
            input: Vec::new(),
            output: VecDeque::new(),
            reply_ends: VecDeque::new(),
            written: 0,
            queued: 0,
        };
        self.conns.insert(id, conn);
        id
    }

    /// Opens a tool connection acting as `domid`.
    pub(crate) fn connect_socket(&mut self, domid: DomId) -> ConnId {
        self.add_conn(domid, Transport::Socket { events: VecDeque::new() })
    }

    /// Starts serving `domid`'s ring page, with `port` xenstored's end of its channel.
    pub(crate) fn introduce(&mut self, domid: DomId, page: SharedPage, port: Port) -> ConnId {
        let id = self.add_conn(domid, Transport::Ring { page, port });
        self.fire_special(INTRODUCE_DOMAIN);
        id
    }

    /// Forgets every connection, watch and transaction of `domid` and fires `@releaseDomain`.
    pub(crate) fn domain_gone(&mut self, domid: DomId) {
        let gone: Vec<ConnId> = self.conns.iter().filter(|(_, c)| c.domid == domid).map(|(id, _)| *id).collect();
        for id in gone {
            self.drop_conn(id);
        }
        self.fire_special(RELEASE_DOMAIN);
    }

    fn drop_conn(&mut self, id: ConnId) {
        self.conns.remove(&id);
        self.watches.retain(|w| w.conn != id);
        self.txns.retain(|_, t| t.conn != id);
    }

    /// Pops a watch event queued for a tool connection.
    pub(crate) fn pop_socket_event(&mut self, id: ConnId) -> Option<(String, String)> {
        match &mut self.conns.get_mut(&id)?.transport {
            Transport::Socket { events } => events.pop_front(),
            Transport::Ring { .. } => None,
        }
    }

    /// Reads a node without any permission check (what a test inspects).
    pub fn peek(&self, path: &str) -> Option<Vec<u8>> {
        self.store.get(path).map(|n| n.value.clone())
    }

    /// Nodes owned by `domid`.
    pub fn nodes_owned_by(&self, domid: DomId) -> usize {
        self.store.owned_by(domid)
    }

    /// Watches held by `domid`.
    pub fn watches_of(&self, domid: DomId) -> usize {
        self.watches.iter().filter(|w| w.domid == domid).count()
    }

    /// Whether xenstored dropped `domid`'s ring connection for a protocol violation.
    pub fn ring_broken(&self, domid: DomId) -> bool {
        self.conns.values().any(|c| c.domid == domid && c.broken)
    }

    /// Replies queued for `domid`'s ring but not yet written.
    pub fn outstanding(&self, domid: DomId) -> usize {
        self.conns.values().filter(|c| c.domid == domid).map(Connection::outstanding).sum()
    }

    // ----- watches -----

    fn deliver(&mut self, conn: ConnId, path: String, token: String) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        match &mut c.transport {
            Transport::Socket { events } => events.push_back((path, token)),
            Transport::Ring { .. } => {
                let mut payload = path.into_bytes();
                payload.push(0);
                payload.extend_from_slice(token.as_bytes());
                payload.push(0);
                c.queue(msg::WATCH_EVENT, 0, 0, &payload, false);
            }
        }
    }

    fn event_path(w: &Watch, path: &str) -> String {
        let h = home(w.domid);
        if w.relative && path.len() > h.len() + 1 && path.starts_with(&h) && path.as_bytes()[h.len()] == b'/' {
            path[h.len() + 1..].to_string()
        } else {
            path.to_string()
        }
    }

    /// Queues events for a change of `path` (whose permissions are `perms`): watches on it or
    /// an ancestor fire with `path`; with `recursive` (a removal) watches below it fire with
    /// their own path. Watchers that may not read the node get nothing.
    fn fire(&mut self, path: &str, perms: &[NodePerm], recursive: bool) {
        for w in &self.watches {
            if w.path.starts_with('@') || !allowed(perms, w.domid, Want::Read) {
                continue;
            }
            let fired = if is_under(path, &w.path) {
                path
            } else if recursive && is_under(&w.path, path) {
                &w.path
            } else {
                continue;
            };
            self.pending_events.push((w.conn, Self::event_path(w, fired), w.token.clone()));
        }
    }

    /// Fires a special watch; only privileged watchers hear of other domains' lifecycles.
    fn fire_special(&mut self, special: &str) {
        let events: Vec<_> = self
            .watches
            .iter()
            .filter(|w| w.path == special && privileged(w.domid))
            .map(|w| (w.conn, w.path.clone(), w.token.clone()))
            .collect();
        for (conn, path, token) in events {
            self.deliver(conn, path, token);
        }
    }

    fn flush_events(&mut self) {
        for (conn, path, token) in std::mem::take(&mut self.pending_events) {
            self.deliver(conn, path, token);
        }
    }

    // ----- requests -----

    fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// Handles one request from `conn` and returns the reply payload or error, as a tool
    /// would get it. Events it causes are queued after it.
    pub(crate) fn request(&mut self, conn: ConnId, msg_type: u32, tx_id: u32, payload: &[u8]) -> XsResult<Vec<u8>> {
        self.requests += 1;
        self.dispatch(conn, msg_type, tx_id, payload)
    }

    fn dispatch(&mut self, conn: ConnId, msg_type: u32, tx_id: u32, payload: &[u8]) -> XsResult<Vec<u8>> {
        let domid = self.conns.get(&conn).map(|c| c.domid).ok_or(Errno::EINVAL)?;
        match msg_type {
            msg::WATCH => return self.watch(conn, domid, payload),
            msg::UNWATCH => return self.unwatch(conn, domid, payload),
            msg::TRANSACTION_START => return self.transaction_start(conn, domid, tx_id),
            msg::TRANSACTION_END => return self.transaction_end(conn, tx_id, payload),
            msg::RESET_WATCHES => {
                self.watches.retain(|w| w.conn != conn);
                self.txns.retain(|_, t| t.conn != conn);
                return Ok(ok());
            }
            msg::GET_DOMAIN_PATH => {
                let s = strings(payload)?;
                let id: DomId = s.first().and_then(|s| s.parse().ok()).ok_or(Errno::EINVAL)?;
                let mut p = home(id).into_bytes();
                p.push(0);
                return Ok(p);
            }
            msg::INTRODUCE | msg::RELEASE | msg::IS_DOMAIN_INTRODUCED => {
                return Err(if privileged(domid) { Errno::ENOSYS } else { Errno::EACCES });
            }
            msg::DIRECTORY | msg::READ | msg::GET_PERMS | msg::WRITE | msg::MKDIR | msg::RM | msg::SET_PERMS => {}
            _ => return Err(Errno::EINVAL),
        }
        // Node operations: on the store, or on the transaction's snapshot.
        if tx_id == 0 {
            let gen_ = self.next_generation();
            let mut store = std::mem::replace(&mut self.store, Store { nodes: BTreeMap::new() });
            let result = Self::node_op(&mut store, domid, msg_type, payload, gen_, None);
            self.store = store;
            let (reply, changes) = result?;
            for (path, perms, recursive) in changes {
                self.fire(&path, &perms, recursive);
            }
            Ok(reply)
        } else {
            let mut txn = self.txns.remove(&tx_id).filter(|t| t.conn == conn).ok_or(Errno::ENOENT)?;
            let gen_ = self.next_generation();
            let mut snapshot = std::mem::replace(&mut txn.snapshot, Store { nodes: BTreeMap::new() });
            let result = Self::node_op(&mut snapshot, domid, msg_type, payload, gen_, Some(&mut txn));
            txn.snapshot = snapshot;
            self.txns.insert(tx_id, txn);
            result.map(|(reply, _)| reply)
        }
    }

    /// A node operation on `store`; returns the reply and the changes to fire watches for.
    #[allow(clippy::type_complexity)]
    fn node_op(
        store: &mut Store,
        domid: DomId,
        msg_type: u32,
        payload: &[u8],
        gen_: u64,
        mut txn: Option<&mut Txn>,
    ) -> XsResult<(Vec<u8>, Vec<(String, Vec<NodePerm>, bool)>)> {
        let (raw_path, rest) = first_string(payload)?;
        let path = canonical(domid, raw_path)?;
        // A transaction records what it looks at, before it changes anything.
        let mut touch = |store: &Store, p: &str| {
            if let Some(t) = txn.as_deref_mut() {
                let seen = store.get(p).map(|n| n.generation);
                t.accessed.entry(p.to_string()).or_insert(seen);
            }
        };
        let touch_up = |store: &Store, p: &str, touch: &mut dyn FnMut(&Store, &str)| {
            let mut cur = Some(p.to_string());
            while let Some(c) = cur {
                touch(store, &c);
                if store.get(&c).is_some() {
                    break;
                }
                cur = store::parent(&c).map(str::to_string);
            }
        };
        match msg_type {
            msg::READ => {
                touch(store, &path);
                Ok((store.lookup(domid, &path, Want::Read)?.value.clone(), Vec::new()))
            }
            msg::DIRECTORY => {
                touch(store, &path);
                store.lookup(domid, &path, Want::Read)?;
                let mut out = Vec::new();
                for c in store.children(&path) {
                    out.extend_from_slice(c.as_bytes());
                    out.push(0);
                }
                Ok((out, Vec::new()))
            }
            msg::GET_PERMS => {
                touch(store, &path);
                let node = store.lookup(domid, &path, Want::Read)?;
                let mut out = Vec::new();
                for p in &node.perms {
                    out.extend_from_slice(p.to_wire().as_bytes());
                    out.push(0);
                }
                Ok((out, Vec::new()))
            }
            msg::WRITE | msg::MKDIR => {
                touch_up(store, &path, &mut touch);
                if let Some(p) = store::parent(&path) {
                    touch(store, p);
                }
                let value = (msg_type == msg::WRITE).then_some(rest);
                if msg_type == msg::MKDIR && store.get(&path).is_some() {
                    // MKDIR of an existing node changes nothing (but still needs write access).
                    store.lookup(domid, &path, Want::Write)?;
                    return Ok((ok(), Vec::new()));
                }
                let changed = store.write(domid, &path, value, gen_)?;
                if let Some(t) = txn.as_deref_mut() {
                    t.written.extend(changed.iter().cloned());
                    if let Some(p) = store::parent(&path) {
                        t.written.insert(p.to_string());
                    }
                }
                let fires = changed
                    .into_iter()
                    .filter(|p| p == &path)
                    .map(|p| {
                        let perms = store.get(&p).map(|n| n.perms.clone()).unwrap_or_default();
                        (p, perms, false)
                    })
                    .collect();
                Ok((ok(), fires))
            }
            msg::RM => {
                touch(store, &path);
                if let Some(p) = store::parent(&path) {
                    touch(store, p);
                }
                let removed = store.remove(domid, &path, gen_)?;
                for (p, _) in &removed {
                    touch(store, p);
                }
                if let Some(t) = txn.as_deref_mut() {
                    for (p, _) in &removed {
                        t.accessed.entry(p.clone()).or_insert(None);
                        t.written.insert(p.clone());
                    }
                    if let Some(p) = store::parent(&path) {
                        t.written.insert(p.to_string());
                    }
                }
                let fires = removed.into_iter().filter(|(p, _)| p == &path).map(|(p, n)| (p, n.perms, true)).collect();
                Ok((ok(), fires))
            }
            msg::SET_PERMS => {
                touch(store, &path);
                let perms: Vec<NodePerm> =
                    strings(rest)?.into_iter().map(NodePerm::parse).collect::<Option<_>>().ok_or(Errno::EINVAL)?;
                if perms.is_empty() {
                    return Err(Errno::EINVAL);
                }
                let node = store.lookup(domid, &path, Want::Write)?;
                if !privileged(domid) {
                    if node.perms[0].domid != domid {
                        return Err(Errno::EACCES); // only the owner may change permissions
                    }
                    if perms[0].domid != domid {
                        return Err(Errno::EPERM); // and it may not give the node away
                    }
                }
                let node = store.nodes.get_mut(&path).expect("looked up");
                node.perms = perms.clone();
                node.generation = gen_;
                if let Some(t) = txn {
                    t.written.insert(path.clone());
                }
                Ok((ok(), vec![(path, perms, false)]))
            }
            _ => Err(Errno::EINVAL),
        }
    }

    fn watch(&mut self, conn: ConnId, domid: DomId, payload: &[u8]) -> XsResult<Vec<u8>> {
        let s = strings(payload)?;
        let [raw_path, token] = s[..] else { return Err(Errno::EINVAL) };
        let (path, relative) = if raw_path.starts_with('@') {
            if raw_path != RELEASE_DOMAIN && raw_path != INTRODUCE_DOMAIN {
                return Err(Errno::EINVAL);
            }
            (raw_path.to_string(), false)
        } else {
            (canonical(domid, raw_path)?, !raw_path.starts_with('/'))
        };
        if self.watches.iter().any(|w| w.conn == conn && w.path == path && w.token == token) {
            return Err(Errno::EEXIST);
        }
        if !privileged(domid) && self.watches_of(domid) > quota::WATCHES {
            return Err(Errno::E2BIG);
        }
        self.watches.push(Watch { conn, domid, path, token: token.to_string(), relative });
        // The initial event, sent after the acknowledgement, with the path as registered.
        self.pending_events.push((conn, raw_path.to_string(), token.to_string()));
        Ok(ok())
    }

    fn unwatch(&mut self, conn: ConnId, domid: DomId, payload: &[u8]) -> XsResult<Vec<u8>> {
        let s = strings(payload)?;
        let [raw_path, token] = s[..] else { return Err(Errno::EINVAL) };
        let path = if raw_path.starts_with('@') { raw_path.to_string() } else { canonical(domid, raw_path)? };
        let i = self
            .watches
            .iter()
            .position(|w| w.conn == conn && w.path == path && w.token == token)
            .ok_or(Errno::ENOENT)?;
        self.watches.remove(i);
        Ok(ok())
    }

    fn transaction_start(&mut self, conn: ConnId, domid: DomId, tx_id: u32) -> XsResult<Vec<u8>> {
        if tx_id != 0 {
            return Err(Errno::EBUSY);
        }
        if !privileged(domid) && self.txns.values().filter(|t| t.domid == domid).count() >= quota::TRANSACTIONS {
            return Err(Errno::ENOSPC);
        }
        let id = self.next_tx;
        self.next_tx += 1;
        let txn =
            Txn { conn, domid, snapshot: self.store.clone(), accessed: BTreeMap::new(), written: BTreeSet::new() };
        self.txns.insert(id, txn);
        Ok(format!("{id}\0").into_bytes())
    }

    fn transaction_end(&mut self, conn: ConnId, tx_id: u32, payload: &[u8]) -> XsResult<Vec<u8>> {
        let commit = match payload {
            b"T\0" => true,
            b"F\0" => false,
            _ => return Err(Errno::EINVAL),
        };
        let txn = self.txns.remove(&tx_id).filter(|t| t.conn == conn).ok_or(Errno::ENOENT)?;
        if !commit {
            return Ok(ok());
        }
        let conflict = txn.accessed.iter().any(|(p, seen)| self.store.get(p).map(|n| n.generation) != *seen);
        if conflict {
            return Err(Errno::EAGAIN);
        }
        let gen_ = self.next_generation();
        for p in &txn.written {
            match txn.snapshot.get(p) {
                Some(node) => {
                    let mut node = node.clone();
                    node.generation = gen_;
                    self.fire(p, &node.perms.clone(), false);
                    self.store.nodes.insert(p.clone(), node);
                }
                None => {
                    if let Some(old) = self.store.nodes.remove(p) {
                        self.fire(p, &old.perms, true);
                    }
                }
            }
        }
        Ok(ok())
    }

    // ----- rings -----

    /// Marks the ring connection whose xenstored port is `port` as notified.
    fn notified(&mut self, port: Port) {
        for c in self.conns.values_mut() {
            if matches!(c.transport, Transport::Ring { port: p, .. } if p == port) {
                c.kicked = true;
            }
        }
    }

    /// One pass over every ring: writes queued output, reads and handles requests of notified
    /// rings. Returns the xenstored ports to notify, and whether anything moved.
    fn service_rings(&mut self) -> (Vec<Port>, bool) {
        let mut notify = Vec::new();
        let mut progress = false;
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let (moved, kick) = self.service_ring(id);
            progress |= moved;
            if kick && let Some(Connection { transport: Transport::Ring { port, .. }, .. }) = self.conns.get(&id) {
                notify.push(*port);
            }
        }
        (notify, progress)
    }

    fn service_ring(&mut self, id: ConnId) -> (bool, bool) {
        let Some(c) = self.conns.get_mut(&id) else { return (false, false) };
        let Transport::Ring { page, .. } = c.transport else { return (false, false) };
        if c.broken {
            return (false, false);
        }
        let mut moved = false;
        let mut kick = false;
        // Output first: replies free up the outstanding quota.
        if !c.output.is_empty() {
            let bytes: Vec<u8> = c.output.iter().copied().collect();
            match ring::put_responses(page, &bytes) {
                Ok(n) if n > 0 => {
                    c.output.drain(..n);
                    c.written += n as u64;
                    while c.reply_ends.front().is_some_and(|&end| end <= c.written) {
                        c.reply_ends.pop_front();
                    }
                    moved = true;
                    kick = true;
                }
                Ok(_) => {}
                Err(BadIndices) => {
                    c.broken = true;
                    return (true, false);
                }
            }
        }
        if !c.kicked {
            return (moved, kick);
        }
        // Input: stop reading while too many replies are outstanding (unprivileged only).
        loop {
            let c = self.conns.get_mut(&id).expect("present");
            if !privileged(c.domid) && c.outstanding() >= quota::OUTSTANDING {
                return (moved, kick);
            }
            let want = if c.input.len() < HEADER_LEN {
                HEADER_LEN - c.input.len()
            } else {
                let len = u32::from_le_bytes(c.input[12..16].try_into().expect("4 bytes")) as usize;
                if len > PAYLOAD_MAX {
                    c.broken = true; // xenstored drops the connection
                    return (true, kick);
                }
                HEADER_LEN + len - c.input.len()
            };
            let got = if want == 0 {
                Vec::new()
            } else {
                match ring::take_requests(page, want) {
                    Ok(b) => b,
                    Err(BadIndices) => {
                        c.broken = true;
                        return (true, kick);
                    }
                }
            };
            if want > 0 && got.is_empty() {
                c.kicked = false;
                return (moved, kick);
            }
            if !got.is_empty() {
                kick = true; // the guest may be waiting for room
                moved = true;
            }
            c.input.extend_from_slice(&got);
            if c.input.len() >= HEADER_LEN {
                let len = u32::from_le_bytes(c.input[12..16].try_into().expect("4 bytes")) as usize;
                if len <= PAYLOAD_MAX && c.input.len() == HEADER_LEN + len {
                    let msg = std::mem::take(&mut c.input);
                    let field = |i: usize| u32::from_le_bytes(msg[i..i + 4].try_into().expect("4 bytes"));
                    let (ty, req_id, tx_id) = (field(0), field(4), field(8));
                    let result = self.request(id, ty, tx_id, &msg[HEADER_LEN..]);
                    let c = self.conns.get_mut(&id).expect("present");
                    match result {
                        Ok(reply) => c.queue(ty, req_id, tx_id, &reply, true),
                        Err(Errno(name)) => {
                            let mut p = name.as_bytes().to_vec();
                            p.push(0);
                            c.queue(msg::ERROR, req_id, tx_id, &p, true);
                        }
                    }
                    self.flush_events();
                }
            }
        }
    }
}

impl World {
    /// Called on every event-channel send: a send to xenstored's end of a store channel wakes
    /// it for that ring.
    pub(crate) fn xenstored_notified(&mut self, dom: DomId, port: Port) {
        if dom == 0 {
            self.xenstored.notified(port);
        }
    }

    /// Runs xenstored until no ring moves; notifies guests whose rings it changed.
    pub(crate) fn xenstored_run(&mut self) {
        loop {
            let (notify, progress) = self.xenstored.service_rings();
            for port in notify {
                let _ = self.evtchn_send(0, port);
            }
            if !progress {
                break;
            }
        }
    }

    pub(crate) fn xenstored_domain_gone(&mut self, dom: DomId) {
        self.xenstored.domain_gone(dom);
    }

    /// A request on a tool connection: handled at once, events delivered.
    pub(crate) fn xenstored_tool_request(
        &mut self,
        conn: ConnId,
        msg_type: u32,
        tx_id: u32,
        payload: &[u8],
    ) -> XsResult<Vec<u8>> {
        let r = self.xenstored.request(conn, msg_type, tx_id, payload);
        self.xenstored.flush_events();
        r
    }
}
