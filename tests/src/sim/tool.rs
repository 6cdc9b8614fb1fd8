//! [`XsTool`]: a test acting as a program in some domain that talks to xenstored directly
//! (`xenstore-write` and `xl` in dom0, a backend's xenbus driver), with synchronous calls.
//! Permissions, quotas and watches apply exactly as to the domain's ring.

use std::sync::{Arc, Mutex};

use xen_front::platform::DomId;

use super::world::World;
use super::xenstored::{ConnId, Errno, NodePerm, XsResult, msg};

/// A synchronous xenstore connection acting as one domain.
#[derive(Debug)]
pub struct XsTool {
    pub(crate) world: Arc<Mutex<World>>,
    pub(crate) conn: ConnId,
    pub(crate) domid: DomId,
    /// Transaction id sent with requests (0: none). Set by [`XsTool::start`].
    pub tx: u32,
}

fn with_nul(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

impl XsTool {
    /// The domain this tool acts as.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    fn call(&self, msg_type: u32, payload: &[u8]) -> XsResult<Vec<u8>> {
        let mut world = self.world.lock().unwrap_or_else(|e| e.into_inner());
        let r = world.xenstored_tool_request(self.conn, msg_type, self.tx, payload);
        // Replies and events for ring connections go out at once.
        world.xenstored_run();
        r
    }

    /// `XS_READ`.
    pub fn read(&self, path: &str) -> XsResult<Vec<u8>> {
        self.call(msg::READ, &with_nul(path))
    }

    /// `XS_READ` as a string (lossy).
    pub fn read_str(&self, path: &str) -> XsResult<String> {
        self.read(path).map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    /// `XS_WRITE`.
    pub fn write(&self, path: &str, value: &[u8]) -> XsResult<()> {
        let mut p = with_nul(path);
        p.extend_from_slice(value);
        self.call(msg::WRITE, &p).map(drop)
    }

    /// `XS_MKDIR`.
    pub fn mkdir(&self, path: &str) -> XsResult<()> {
        self.call(msg::MKDIR, &with_nul(path)).map(drop)
    }

    /// `XS_RM`.
    pub fn rm(&self, path: &str) -> XsResult<()> {
        self.call(msg::RM, &with_nul(path)).map(drop)
    }

    /// `XS_DIRECTORY`.
    pub fn directory(&self, path: &str) -> XsResult<Vec<String>> {
        let r = self.call(msg::DIRECTORY, &with_nul(path))?;
        Ok(r.split(|&b| b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect())
    }

    /// `XS_GET_PERMS`.
    pub fn get_perms(&self, path: &str) -> XsResult<Vec<NodePerm>> {
        let r = self.call(msg::GET_PERMS, &with_nul(path))?;
        r.split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| std::str::from_utf8(s).ok().and_then(NodePerm::parse).ok_or(Errno::EINVAL))
            .collect()
    }

    /// `XS_SET_PERMS` from strings like `["n0", "r5"]`.
    pub fn set_perms(&self, path: &str, perms: &[&str]) -> XsResult<()> {
        let mut p = with_nul(path);
        for perm in perms {
            p.extend_from_slice(&with_nul(perm));
        }
        self.call(msg::SET_PERMS, &p).map(drop)
    }

    /// `XS_WATCH`; the initial event is queued at once.
    pub fn watch(&self, path: &str, token: &str) -> XsResult<()> {
        let mut p = with_nul(path);
        p.extend_from_slice(&with_nul(token));
        self.call(msg::WATCH, &p).map(drop)
    }

    /// `XS_UNWATCH`.
    pub fn unwatch(&self, path: &str, token: &str) -> XsResult<()> {
        let mut p = with_nul(path);
        p.extend_from_slice(&with_nul(token));
        self.call(msg::UNWATCH, &p).map(drop)
    }

    /// `XS_TRANSACTION_START`; later calls run in it until [`XsTool::commit`]/[`XsTool::abort`].
    pub fn start(&mut self) -> XsResult<u32> {
        let r = self.call(msg::TRANSACTION_START, b"\0")?;
        let id = std::str::from_utf8(r.strip_suffix(b"\0").unwrap_or(&r)).ok().and_then(|s| s.parse().ok());
        self.tx = id.ok_or(Errno::EINVAL)?;
        Ok(self.tx)
    }

    /// `XS_TRANSACTION_END T`; `Err(EAGAIN)` on a conflict.
    pub fn commit(&mut self) -> XsResult<()> {
        let r = self.call(msg::TRANSACTION_END, b"T\0").map(drop);
        self.tx = 0;
        r
    }

    /// `XS_TRANSACTION_END F`.
    pub fn abort(&mut self) -> XsResult<()> {
        let r = self.call(msg::TRANSACTION_END, b"F\0").map(drop);
        self.tx = 0;
        r
    }

    /// Any request, raw (for malformed-request tests).
    pub fn raw(&self, msg_type: u32, payload: &[u8]) -> XsResult<Vec<u8>> {
        self.call(msg_type, payload)
    }

    /// The next watch event `(path, token)` delivered to this tool.
    pub fn pop_event(&self) -> Option<(String, String)> {
        self.world.lock().unwrap_or_else(|e| e.into_inner()).xenstored.pop_socket_event(self.conn)
    }

    /// Drains the queued watch events.
    pub fn events(&self) -> Vec<(String, String)> {
        std::iter::from_fn(|| self.pop_event()).collect()
    }
}
