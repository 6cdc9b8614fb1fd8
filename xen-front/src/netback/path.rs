//! The netback's xenstore paths, in fixed buffers ([`PathBuf`]): ours are short and bounded.

use crate::platform::DomId;
use crate::xenstore::PathBuf;
use crate::xs_path;

/// Longest path we build: `/local/domain/65535/device/vif/4294967295/feature-no-csum-offload`
/// is 65 bytes; the rest is slack.
pub(super) const PATH_MAX: usize = 96;

/// A netback path.
pub(super) type Path = PathBuf<PATH_MAX>;

/// `backend/vif/<fe>/<devid>[/<key>]`, relative to our home.
pub(super) fn backend_path(fe: DomId, devid: u32, key: Option<&str>) -> Path {
    match key {
        Some(k) => xs_path!(PATH_MAX; "backend/vif/{fe}/{devid}/{k}"),
        None => xs_path!(PATH_MAX; "backend/vif/{fe}/{devid}"),
    }
}

/// `/local/domain/<fe>/device/vif/<devid>[/<key>]`, the frontend directory libxl makes.
pub(super) fn frontend_path(fe: DomId, devid: u32, key: Option<&str>) -> Path {
    match key {
        Some(k) => xs_path!(PATH_MAX; "/local/domain/{fe}/device/vif/{devid}/{k}"),
        None => xs_path!(PATH_MAX; "/local/domain/{fe}/device/vif/{devid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(backend_path(5, 0, Some("state")).as_str(), Some("backend/vif/5/0/state"));
        assert_eq!(frontend_path(5, 1, None).as_str(), Some("/local/domain/5/device/vif/1"));
        let longest = frontend_path(65535, u32::MAX, Some("feature-no-csum-offload"));
        assert_eq!(longest.as_str().map(str::len), Some(65));
        assert_eq!(xs_path!(PATH_MAX; "{:200}", "x").as_str(), None);
    }
}
