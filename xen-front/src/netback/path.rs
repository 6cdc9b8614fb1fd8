//! Xenstore paths built in a fixed buffer (no heap): ours are short and bounded.

use core::fmt::{self, Write};

use crate::platform::DomId;

/// Longest path we build: `/local/domain/65535/device/vif/4294967295/feature-no-csum-offload`
/// is 65 bytes; the rest is slack.
const PATH_MAX: usize = 96;

/// A path in a fixed buffer. Formatting past [`PATH_MAX`] marks it overflowed, and an
/// overflowed path reads as empty (xenstored refuses an empty path; we never send one).
pub(super) struct Path {
    buf: [u8; PATH_MAX],
    len: usize,
    overflow: bool,
}

impl Path {
    pub(super) fn new() -> Path {
        Path { buf: [0; PATH_MAX], len: 0, overflow: false }
    }

    /// `backend/vif/<fe>/<devid>[/<key>]`, relative to our home.
    pub(super) fn backend(fe: DomId, devid: u32, key: Option<&str>) -> Path {
        let mut p = Path::new();
        let _ = write!(p, "backend/vif/{fe}/{devid}");
        if let Some(k) = key {
            let _ = write!(p, "/{k}");
        }
        p
    }

    /// `/local/domain/<fe>/device/vif/<devid>[/<key>]`, the frontend directory libxl makes.
    pub(super) fn frontend(fe: DomId, devid: u32, key: Option<&str>) -> Path {
        let mut p = Path::new();
        let _ = write!(p, "/local/domain/{fe}/device/vif/{devid}");
        if let Some(k) = key {
            let _ = write!(p, "/{k}");
        }
        p
    }

    pub(super) fn as_str(&self) -> &str {
        if self.overflow { "" } else { core::str::from_utf8(&self.buf[..self.len]).unwrap_or("") }
    }
}

impl Write for Path {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > PATH_MAX {
            self.overflow = true;
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(Path::backend(5, 0, Some("state")).as_str(), "backend/vif/5/0/state");
        assert_eq!(Path::frontend(5, 1, None).as_str(), "/local/domain/5/device/vif/1");
        let longest = Path::frontend(65535, u32::MAX, Some("feature-no-csum-offload"));
        assert_eq!(longest.as_str().len(), 65);
        let mut p = Path::new();
        assert!(write!(p, "{:200}", "x").is_err());
        assert_eq!(p.as_str(), "");
    }
}
