//! A fixed-capacity xenstore path, built with `write!` (no heap).

use core::fmt;

/// A path of at most `N` bytes. Writing past `N` marks it overflowed: [`as_str`](Self::as_str)
/// then returns `None`, so a too-long path is never sent cut short.
#[derive(Clone, Copy)]
pub struct PathBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
    overflow: bool,
}

impl<const N: usize> PathBuf<N> {
    /// An empty path.
    pub const fn new() -> Self {
        PathBuf { buf: [0; N], len: 0, overflow: false }
    }

    /// A path holding `s` (overflowed if it does not fit).
    pub fn copy_of(s: &str) -> Self {
        let mut p = Self::new();
        let _ = fmt::Write::write_str(&mut p, s);
        p
    }

    /// The path, unless it overflowed.
    pub fn as_str(&self) -> Option<&str> {
        if self.overflow {
            return None;
        }
        // Only whole `&str`s are appended, so the bytes are UTF-8.
        core::str::from_utf8(&self.buf[..self.len]).ok()
    }

    /// True if nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0 && !self.overflow
    }

    /// Empties it.
    pub fn clear(&mut self) {
        self.len = 0;
        self.overflow = false;
    }
}

impl<const N: usize> Default for PathBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Write for PathBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.overflow || s.len() > N - self.len {
            self.overflow = true;
            return Err(fmt::Error);
        }
        self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
        self.len += s.len();
        Ok(())
    }
}

impl<const N: usize> fmt::Debug for PathBuf<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            Some(s) => write!(f, "{s:?}"),
            None => f.write_str("<overflowed path>"),
        }
    }
}

/// Formats a path: `xs_path!(N; "{}/state", backend)` → `PathBuf<N>`.
#[macro_export]
macro_rules! xs_path {
    ($n:expr; $($arg:tt)*) => {{
        let mut p = $crate::xenstore::PathBuf::<$n>::new();
        let _ = core::fmt::Write::write_fmt(&mut p, format_args!($($arg)*));
        p
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_refuses_overflow() {
        let p = crate::xs_path!(32; "device/vif/{}/state", 12);
        assert_eq!(p.as_str(), Some("device/vif/12/state"));
        let long = crate::xs_path!(8; "device/vif/{}", 1);
        assert_eq!(long.as_str(), None);
        assert_eq!(PathBuf::<4>::copy_of("abcd").as_str(), Some("abcd"));
        assert_eq!(PathBuf::<4>::copy_of("abcde").as_str(), None);
    }
}
