//! The node tree: values, permissions, generations, and the permission and quota rules of C
//! xenstored (`xenstored_core.c`) for reading, creating, writing and removing nodes.

use std::collections::BTreeMap;

use xen_front::platform::DomId;

/// An errno name xenstored answers with (`XS_ERROR` payload without the NUL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub &'static str);

impl Errno {
    /// Malformed request.
    pub const EINVAL: Errno = Errno("EINVAL");
    /// Permissions forbid it.
    pub const EACCES: Errno = Errno("EACCES");
    /// Already exists (a duplicate watch).
    pub const EEXIST: Errno = Errno("EEXIST");
    /// No such node, watch or transaction.
    pub const ENOENT: Errno = Errno("ENOENT");
    /// Node or transaction quota, or a value too large.
    pub const ENOSPC: Errno = Errno("ENOSPC");
    /// The transaction conflicted.
    pub const EAGAIN: Errno = Errno("EAGAIN");
    /// Watch quota (C xenstored's answer for watches).
    pub const E2BIG: Errno = Errno("E2BIG");
    /// Not permitted (changing a node's owner unprivileged).
    pub const EPERM: Errno = Errno("EPERM");
    /// Operation not implemented here.
    pub const ENOSYS: Errno = Errno("ENOSYS");
    /// A transaction inside a transaction.
    pub const EBUSY: Errno = Errno("EBUSY");
}

/// Result of a store operation.
pub type XsResult<T> = Result<T, Errno>;

/// What a permission entry allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `n`.
    None,
    /// `r`.
    Read,
    /// `w`.
    Write,
    /// `b`.
    Both,
}

/// One permission entry (`r5`); the first of a node's list is its owner and default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodePerm {
    /// Access granted.
    pub access: Access,
    /// Domain it applies to.
    pub domid: DomId,
}

impl NodePerm {
    /// Parses `r5`, `b0`, ...
    pub fn parse(s: &str) -> Option<NodePerm> {
        let mut chars = s.chars();
        let access = match chars.next()? {
            'n' => Access::None,
            'r' => Access::Read,
            'w' => Access::Write,
            'b' => Access::Both,
            _ => return None,
        };
        let digits = chars.as_str();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(NodePerm { access, domid: digits.parse().ok()? })
    }

    /// The wire form.
    pub fn to_wire(self) -> String {
        let letter = match self.access {
            Access::None => 'n',
            Access::Read => 'r',
            Access::Write => 'w',
            Access::Both => 'b',
        };
        format!("{letter}{}", self.domid)
    }
}

/// One node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) value: Vec<u8>,
    pub(crate) perms: Vec<NodePerm>,
    /// Bumped on every change to the value, permissions or children list.
    pub(crate) generation: u64,
}

/// Which access a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Want {
    Read,
    Write,
}

/// Is `domid` privileged (dom0: exempt from permissions and quotas)?
pub(crate) fn privileged(domid: DomId) -> bool {
    domid == 0
}

/// May `domid` access a node with `perms` this way? Owner: everything; listed: its entry;
/// others: the owner entry's letter.
pub(crate) fn allowed(perms: &[NodePerm], domid: DomId, want: Want) -> bool {
    if privileged(domid) {
        return true;
    }
    let Some(owner) = perms.first() else { return false };
    if owner.domid == domid {
        return true;
    }
    let access = perms[1..].iter().find(|p| p.domid == domid).map_or(owner.access, |p| p.access);
    match want {
        Want::Read => matches!(access, Access::Read | Access::Both),
        Want::Write => matches!(access, Access::Write | Access::Both),
    }
}

/// The parent of an absolute path (`None` for `/`).
pub(crate) fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    let i = path.rfind('/')?;
    Some(if i == 0 { "/" } else { &path[..i] })
}

/// Is `path` `ancestor` itself or below it?
pub(crate) fn is_under(path: &str, ancestor: &str) -> bool {
    ancestor == "/"
        || path == ancestor
        || (path.len() > ancestor.len() && path.starts_with(ancestor) && path.as_bytes()[ancestor.len()] == b'/')
}

/// The whole tree. Cloned to snapshot a transaction.
#[derive(Clone, Debug)]
pub(crate) struct Store {
    pub(crate) nodes: BTreeMap<String, Node>,
}

/// xenstored's per-domain defaults in Xen 4.17 (`xenstored_core.c`).
pub mod quota {
    /// Nodes a domain may own (`-N`, `quota_nb_entry_per_domain`).
    pub const NODES: usize = 1000;
    /// Watches a domain may hold (`-W`); C xenstored refuses only once a domain holds *more*
    /// than this (`domain_watch(conn) > quota`), so 129 succeed.
    pub const WATCHES: usize = 128;
    /// Transactions open at once (`-t`, `quota_max_transaction`).
    pub const TRANSACTIONS: usize = 10;
    /// Requests whose replies are not yet in the ring before xenstored stops reading a
    /// domain's ring (`-Q`, `quota_req_outstanding`).
    pub const OUTSTANDING: usize = 20;
    /// Largest value (`-S`, `quota_max_entry_size`).
    pub const VALUE_SIZE: usize = 2048;
}

impl Store {
    /// The tree xenstored starts with: `/`, `/local`, `/local/domain`, `/tool` (dom0's, `n0`).
    pub(crate) fn new() -> Self {
        let mut store = Store { nodes: BTreeMap::new() };
        for p in ["/", "/local", "/local/domain", "/tool"] {
            store.nodes.insert(
                p.to_string(),
                Node { value: Vec::new(), perms: vec![NodePerm { access: Access::None, domid: 0 }], generation: 0 },
            );
        }
        store
    }

    pub(crate) fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Direct children's names.
    pub(crate) fn children(&self, path: &str) -> Vec<String> {
        let prefix = if path == "/" { "/".to_string() } else { format!("{path}/") };
        self.nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| &k[prefix.len()..])
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .map(str::to_string)
            .collect()
    }

    /// Nodes owned by `domid` (what the node quota counts).
    pub(crate) fn owned_by(&self, domid: DomId) -> usize {
        self.nodes.values().filter(|n| n.perms.first().is_some_and(|p| p.domid == domid)).count()
    }

    /// Finds `path` for `want`, or explains its absence as C xenstored does: `EACCES` if the
    /// nearest existing ancestor forbids `want`, `ENOENT` otherwise.
    pub(crate) fn lookup(&self, domid: DomId, path: &str, want: Want) -> XsResult<&Node> {
        match self.nodes.get(path) {
            Some(node) if allowed(&node.perms, domid, want) => Ok(node),
            Some(_) => Err(Errno::EACCES),
            None => {
                let mut p = parent(path);
                while let Some(anc) = p {
                    if let Some(node) = self.nodes.get(anc) {
                        return Err(if allowed(&node.perms, domid, want) { Errno::ENOENT } else { Errno::EACCES });
                    }
                    p = parent(anc);
                }
                Err(Errno::ENOENT)
            }
        }
    }

    /// Writes (or with `value == None`, makes sure it exists like `MKDIR`) `path`, creating
    /// missing parents. New nodes inherit their parent's permissions; an unprivileged creator
    /// becomes their owner. Returns the paths created or changed.
    pub(crate) fn write(
        &mut self,
        domid: DomId,
        path: &str,
        value: Option<&[u8]>,
        generation: u64,
    ) -> XsResult<Vec<String>> {
        if let Some(v) = value
            && !privileged(domid)
            && v.len() > quota::VALUE_SIZE
        {
            return Err(Errno::ENOSPC);
        }
        if let Some(node) = self.nodes.get_mut(path) {
            if !allowed(&node.perms, domid, Want::Write) {
                return Err(Errno::EACCES);
            }
            if let Some(v) = value {
                node.value = v.to_vec();
                node.generation = generation;
            }
            return Ok(vec![path.to_string()]);
        }
        // Missing: walk up to the nearest existing ancestor, which must be writable.
        let mut missing = vec![path.to_string()];
        let mut anc = parent(path).ok_or(Errno::EINVAL)?;
        while !self.nodes.contains_key(anc) {
            missing.push(anc.to_string());
            anc = parent(anc).ok_or(Errno::EINVAL)?;
        }
        let anc_node = &self.nodes[anc];
        if !allowed(&anc_node.perms, domid, Want::Write) {
            return Err(Errno::EACCES);
        }
        let mut perms = anc_node.perms.clone();
        if !privileged(domid) {
            perms[0].domid = domid;
            if !privileged(domid) && self.owned_by(domid) + missing.len() > quota::NODES {
                return Err(Errno::ENOSPC);
            }
        }
        let owner = perms[0].domid;
        if !privileged(owner) && !privileged(domid) && self.owned_by(owner) + missing.len() > quota::NODES {
            return Err(Errno::ENOSPC);
        }
        // The ancestor's children list changes.
        self.nodes.get_mut(anc).expect("exists").generation = generation;
        let mut changed = Vec::new();
        for p in missing.iter().rev() {
            let v = if p == path { value.unwrap_or_default().to_vec() } else { Vec::new() };
            self.nodes.insert(p.clone(), Node { value: v, perms: perms.clone(), generation });
            changed.push(p.clone());
        }
        Ok(changed)
    }

    /// Removes `path` and everything below it; returns the removed nodes (for watches).
    pub(crate) fn remove(&mut self, domid: DomId, path: &str, generation: u64) -> XsResult<Vec<(String, Node)>> {
        let parent_path = parent(path).ok_or(Errno::EINVAL)?;
        let Some(node) = self.nodes.get(path) else {
            // Removing an absent node succeeds if its parent exists (C xenstored).
            return self.lookup(domid, parent_path, Want::Write).map(|_| Vec::new());
        };
        if !allowed(&node.perms, domid, Want::Write) {
            return Err(Errno::EACCES);
        }
        let doomed: Vec<String> = self.nodes.keys().filter(|k| is_under(k, path)).cloned().collect();
        let removed = doomed.into_iter().map(|k| (k.clone(), self.nodes.remove(&k).expect("listed"))).collect();
        if let Some(p) = self.nodes.get_mut(parent_path) {
            p.generation = generation;
        }
        Ok(removed)
    }
}
