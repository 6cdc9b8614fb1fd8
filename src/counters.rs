//! One registry of named counters: drops, errors, pool states, … Counters are plain atomics
//! owned by the code that bumps them; the registry only knows their names, so a dump or the
//! periodic summary can walk them all.

use core::sync::atomic::{AtomicU64, Ordering};

/// Registry capacity.
pub const MAX_COUNTERS: usize = 96;

/// A registry of `(name, counter)` pairs.
pub struct Registry {
    entries: [Option<(&'static str, &'static AtomicU64)>; MAX_COUNTERS],
    len: usize,
    /// Registrations refused because the registry was full.
    pub refused: u64,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// An empty registry.
    pub const fn new() -> Self {
        Registry { entries: [None; MAX_COUNTERS], len: 0, refused: 0 }
    }

    /// Adds a counter; returns false (and counts the refusal) when full.
    pub fn register(&mut self, name: &'static str, counter: &'static AtomicU64) -> bool {
        if self.len == MAX_COUNTERS {
            self.refused += 1;
            return false;
        }
        self.entries[self.len] = Some((name, counter));
        self.len += 1;
        true
    }

    /// Calls `f(name, value)` for each counter, in registration order.
    pub fn for_each(&self, mut f: impl FnMut(&'static str, u64)) {
        for (name, c) in self.entries[..self.len].iter().flatten() {
            f(name, c.load(Ordering::Relaxed));
        }
    }

    /// Calls `f(name, value)` for each counter that is not zero.
    pub fn for_each_nonzero(&self, mut f: impl FnMut(&'static str, u64)) {
        self.for_each(|n, v| {
            if v != 0 {
                f(n, v)
            }
        });
    }

    /// Number of registered counters.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no counter is registered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_walks_counters_and_refuses_when_full() {
        static A: AtomicU64 = AtomicU64::new(0);
        static B: AtomicU64 = AtomicU64::new(7);
        let mut r = Registry::new();
        assert!(r.register("a", &A));
        assert!(r.register("b", &B));
        A.fetch_add(2, Ordering::Relaxed);
        let mut seen = Vec::new();
        r.for_each(|n, v| seen.push((n, v)));
        assert_eq!(seen, [("a", 2), ("b", 7)]);
        for _ in 2..MAX_COUNTERS {
            assert!(r.register("x", &A));
        }
        assert!(!r.register("overflow", &A));
        assert_eq!(r.refused, 1);
        assert_eq!(r.len(), MAX_COUNTERS);
    }
}
