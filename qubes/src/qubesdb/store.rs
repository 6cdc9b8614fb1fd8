//! The local copy of QubesDB: a fixed-capacity sorted map from paths to values.
//!
//! Paths and values live in one byte arena, records appended at its end; the index is kept
//! sorted by path, so a subtree (`/qubes-firewall/<ip>/…`) is one contiguous run of it and is
//! found by binary search. Space freed by removals and overwrites is reclaimed by compacting
//! the arena in place when an append does not fit.
//!
//! # Sizing ([`DefaultStore`])
//!
//! Sized for 128 clients, each with both address families: per family a commit marker, a
//! `policy`, about 8 rules and the two `/mapped-ip/<ip>/…` keys — 12 keys, 24 per client,
//! 3,072 for 128 clients — plus about 50 keys of the VM itself. [`DEFAULT_ENTRIES`] = 4,096
//! keys. A key and its value take their own length (paths ≤ 63 bytes, rule strings typically
//! 30–80 bytes, `/connected-ips` 16 bytes per client), about 100 bytes a key on average:
//! [`DEFAULT_ARENA_BYTES`] = 768 KiB covers 4,096 keys at nearly 200 bytes each. The whole
//! store is about 800 KiB. A full store refuses the write ([`StoreError::Full`]); the client
//! reports it and the configuration fails the affected client closed.

use core::cmp::Ordering;

use super::wire::{MAX_DATA_LEN, MAX_PATH_LEN, is_key};

/// Keys held by [`DefaultStore`].
pub const DEFAULT_ENTRIES: usize = 4096;
/// Bytes of paths and values held by [`DefaultStore`].
pub const DEFAULT_ARENA_BYTES: usize = 768 * 1024;

/// The store the appliance uses.
pub type DefaultStore = Store<DEFAULT_ENTRIES, DEFAULT_ARENA_BYTES>;

/// Why a write was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// No room for another key, or for the bytes of this one. The old value of the key, if
    /// any, has been removed (the store never keeps a value dom0 has since replaced).
    Full,
    /// The path is not a key (must start with `/`, must not end with `/`, at most 63
    /// bytes), or the value is longer than QubesDB allows.
    Invalid,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    off: u32,
    path_len: u8,
    value_len: u16,
}

impl Slot {
    const fn len(self) -> usize {
        self.path_len as usize + self.value_len as usize
    }
}

/// A fixed-capacity map of up to `E` keys whose paths and values total at most `B` bytes.
#[derive(Clone)]
pub struct Store<const E: usize, const B: usize> {
    index: heapless::Vec<Slot, E>,
    arena: [u8; B],
    /// End of the appended records.
    used: usize,
    /// Bytes of records still referenced by the index.
    live: usize,
}

impl<const E: usize, const B: usize> Default for Store<E, B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const E: usize, const B: usize> core::fmt::Debug for Store<E, B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Store").field("keys", &self.index.len()).field("bytes", &self.live).finish()
    }
}

impl<const E: usize, const B: usize> Store<E, B> {
    const FITS_U32: () = assert!(B <= u32::MAX as usize, "arena offsets are u32");

    /// An empty store.
    #[must_use]
    pub const fn new() -> Self {
        let () = Self::FITS_U32;
        Self { index: heapless::Vec::new(), arena: [0; B], used: 0, live: 0 }
    }

    /// Number of keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the store holds no key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes of paths and values held.
    #[must_use]
    pub const fn bytes(&self) -> usize {
        self.live
    }

    /// Removes every key (before a full re-sync).
    pub fn clear(&mut self) {
        self.index.clear();
        self.used = 0;
        self.live = 0;
    }

    fn path_of(&self, s: Slot) -> &[u8] {
        &self.arena[s.off as usize..s.off as usize + s.path_len as usize]
    }

    fn value_of(&self, s: Slot) -> &[u8] {
        let start = s.off as usize + s.path_len as usize;
        &self.arena[start..start + s.value_len as usize]
    }

    fn search(&self, path: &[u8]) -> Result<usize, usize> {
        self.index.binary_search_by(|s| self.path_of(*s).cmp(path))
    }

    /// The value of `path`.
    #[must_use]
    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.search(path.as_bytes()).ok().map(|i| self.value_of(self.index[i]))
    }

    /// Whether `path` is a key.
    #[must_use]
    pub fn contains(&self, path: &str) -> bool {
        self.search(path.as_bytes()).is_ok()
    }

    /// Sets `path` to `value`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] for a path that is not a key or an over-long value (nothing
    /// changes); [`StoreError::Full`] when it does not fit (the old value is removed).
    pub fn insert(&mut self, path: &str, value: &[u8]) -> Result<(), StoreError> {
        if !is_key(path) || path.len() > MAX_PATH_LEN || value.len() > MAX_DATA_LEN {
            return Err(StoreError::Invalid);
        }
        let (p, v) = (path.as_bytes(), value.len());
        match self.search(p) {
            Ok(i) => {
                let old = self.index[i];
                if v <= old.value_len as usize {
                    // Overwrite in place; the tail of the old value becomes dead space.
                    let start = old.off as usize + old.path_len as usize;
                    self.arena[start..start + v].copy_from_slice(value);
                    self.live -= old.value_len as usize - v;
                    self.index[i].value_len = v as u16;
                    return Ok(());
                }
                self.index.remove(i);
                self.live -= old.len();
                self.append(p, value)
            }
            Err(_) => self.append(p, value),
        }
    }

    fn append(&mut self, path: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let need = path.len() + value.len();
        if self.index.is_full() || self.live + need > B {
            return Err(StoreError::Full);
        }
        if self.used + need > B {
            self.compact();
        }
        let off = self.used;
        self.arena[off..off + path.len()].copy_from_slice(path);
        self.arena[off + path.len()..off + need].copy_from_slice(value);
        let slot = Slot { off: off as u32, path_len: path.len() as u8, value_len: value.len() as u16 };
        let at = self.search(path).unwrap_or_else(|at| at);
        // Cannot fail: checked `is_full` above.
        self.index.insert(at, slot).map_err(|_| StoreError::Full)?;
        self.used += need;
        self.live += need;
        Ok(())
    }

    /// Moves every record to the front of the arena, in offset order, closing the holes.
    fn compact(&mut self) {
        self.index.sort_unstable_by_key(|s| s.off);
        let mut to = 0usize;
        for i in 0..self.index.len() {
            let s = self.index[i];
            let from = s.off as usize;
            self.arena.copy_within(from..from + s.len(), to);
            self.index[i].off = to as u32;
            to += s.len();
        }
        self.used = to;
        let (index, arena) = (&mut self.index, &self.arena);
        let path = |s: &Slot| &arena[s.off as usize..s.off as usize + s.path_len as usize];
        index.sort_unstable_by(|a, b| path(a).cmp(path(b)));
    }

    /// Removes `path`; returns whether it was there.
    pub fn remove(&mut self, path: &str) -> bool {
        match self.search(path.as_bytes()) {
            Ok(i) => {
                let s = self.index.remove(i);
                self.live -= s.len();
                true
            }
            Err(_) => false,
        }
    }

    fn prefix_range(&self, prefix: &[u8]) -> core::ops::Range<usize> {
        let start = self.index.partition_point(|s| self.path_of(*s) < prefix);
        let len = self.index[start..].partition_point(|s| self.path_of(*s).starts_with(prefix));
        start..start + len
    }

    /// Removes every key that starts with `prefix` (QubesDB's RM of a path ending in `/`);
    /// returns how many.
    pub fn remove_prefix(&mut self, prefix: &str) -> usize {
        let r = self.prefix_range(prefix.as_bytes());
        let n = r.len();
        let freed: usize = self.index[r.clone()].iter().map(|s| s.len()).sum();
        // Shift the tail down over the removed run.
        let len = self.index.len();
        for i in r.start..len - n {
            self.index[i] = self.index[i + n];
        }
        self.index.truncate(len - n);
        self.live -= freed;
        n
    }

    /// Every key starting with `prefix`, in path order, as `(path, value)`.
    pub fn prefixed<'s>(&'s self, prefix: &str) -> impl Iterator<Item = (&'s str, &'s [u8])> + 's {
        let r = self.prefix_range(prefix.as_bytes());
        self.index[r].iter().map(move |s| (self.path_str(*s), self.value_of(*s)))
    }

    /// Every key, in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.index.iter().map(move |s| (self.path_str(*s), self.value_of(*s)))
    }

    fn path_str(&self, s: Slot) -> &str {
        // Paths are inserted from `&str` only.
        core::str::from_utf8(self.path_of(s)).unwrap_or("")
    }

    /// Compares two stores' contents (for tests and re-sync checks).
    #[must_use]
    pub fn same_contents<const E2: usize, const B2: usize>(&self, other: &Store<E2, B2>) -> bool {
        self.len() == other.len() && self.iter().zip(other.iter()).all(|(a, b)| a.cmp(&b) == Ordering::Equal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Small = Store<8, 256>;

    #[test]
    fn insert_get_overwrite_remove() {
        let mut s = Small::new();
        assert_eq!(s.insert("/b", b"2"), Ok(()));
        assert_eq!(s.insert("/a", b"1"), Ok(()));
        assert_eq!(s.get("/a"), Some(&b"1"[..]));
        assert_eq!(s.insert("/a", b"longer value"), Ok(()));
        assert_eq!(s.get("/a"), Some(&b"longer value"[..]));
        assert_eq!(s.insert("/a", b"x"), Ok(()));
        assert_eq!(s.get("/a"), Some(&b"x"[..]));
        assert_eq!(s.bytes(), 6);
        assert!(s.remove("/a"));
        assert!(!s.remove("/a"));
        assert_eq!(s.get("/a"), None);
        assert_eq!(s.iter().collect::<std::vec::Vec<_>>(), [("/b", &b"2"[..])]);
    }

    #[test]
    fn refuses_non_keys() {
        let mut s = Small::new();
        for p in ["", "a", "/a/", &"/x".repeat(32)] {
            assert_eq!(s.insert(p, b""), Err(StoreError::Invalid), "{p}");
        }
        assert_eq!(s.insert("/a", &[b'v'; 3072]), Err(StoreError::Invalid));
    }

    #[test]
    fn subtree_removal_and_iteration() {
        let mut s = Small::new();
        for (k, v) in [("/fw/1", "m"), ("/fw/1/0000", "a"), ("/fw/1/policy", "p"), ("/fw/10/0000", "x"), ("/fw/2", "")]
        {
            s.insert(k, v.as_bytes()).unwrap();
        }
        let sub: std::vec::Vec<_> = s.prefixed("/fw/1/").map(|(k, _)| k).collect();
        assert_eq!(sub, ["/fw/1/0000", "/fw/1/policy"]);
        assert_eq!(s.remove_prefix("/fw/1/"), 2);
        let all: std::vec::Vec<_> = s.iter().map(|(k, _)| k).collect();
        assert_eq!(all, ["/fw/1", "/fw/10/0000", "/fw/2"]);
        assert_eq!(s.remove_prefix("/nothing/"), 0);
    }

    #[test]
    fn full_by_keys_and_by_bytes_and_compaction_reclaims_space() {
        let mut s = Store::<4, 30>::new();
        for k in ["/a", "/b", "/c", "/d"] {
            s.insert(k, b"").unwrap();
        }
        assert_eq!(s.insert("/e", b""), Err(StoreError::Full));
        s.clear();
        // 30 bytes: three 10-byte records fit, a fourth does not.
        s.insert("/a", b"12345678").unwrap();
        s.insert("/b", b"12345678").unwrap();
        s.insert("/c", b"12345678").unwrap();
        assert_eq!(s.insert("/d", b"12345678"), Err(StoreError::Full));
        // Growing /a fails for lack of room: its old value must be gone.
        assert_eq!(s.insert("/a", b"123456789"), Err(StoreError::Full));
        assert_eq!(s.get("/a"), None);
        // Now the hole left by /a is reclaimed by compaction.
        s.insert("/d", b"12345678").unwrap();
        assert_eq!(s.get("/b"), Some(&b"12345678"[..]));
        assert_eq!(s.get("/c"), Some(&b"12345678"[..]));
        assert_eq!(s.get("/d"), Some(&b"12345678"[..]));
    }

    #[test]
    fn churn_matches_a_model() {
        // Seeded xorshift churn against a std BTreeMap model.
        let mut s = Store::<64, 2048>::new();
        let mut model = std::collections::BTreeMap::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = std::format!("/k/{}", x % 80);
            let vlen = ((x >> 8) % 60) as usize;
            match (x >> 20) % 4 {
                0 => {
                    assert_eq!(s.remove(&key), model.remove(&key).is_some());
                }
                1 if (x >> 24).is_multiple_of(16) => {
                    let pre = std::format!("/k/{}", x % 8);
                    s.remove_prefix(&pre);
                    model.retain(|k: &std::string::String, _| !k.starts_with(&pre));
                }
                _ => {
                    let v = std::vec![b'a' + (x % 26) as u8; vlen];
                    match s.insert(&key, &v) {
                        Ok(()) => {
                            model.insert(key, v);
                        }
                        Err(StoreError::Full) => {
                            model.remove(&key);
                        }
                        Err(e) => panic!("{e:?}"),
                    }
                }
            }
            assert!(s.len() <= 64 && s.bytes() <= 2048);
        }
        let got: std::vec::Vec<_> = s.iter().map(|(k, v)| (k.to_owned(), v.to_vec())).collect();
        let want: std::vec::Vec<_> = model.into_iter().collect();
        assert_eq!(got, want);
    }

    #[test]
    fn default_store_stays_within_its_budget() {
        assert!(core::mem::size_of::<DefaultStore>() <= 2 << 20);
        assert!(core::mem::size_of::<DefaultStore>() >= DEFAULT_ARENA_BYTES);
    }
}
