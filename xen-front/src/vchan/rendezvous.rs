//! The xenstore side of the rendezvous: the paths Qubes' libvchan-xen uses and strict parsing
//! of the two values the server publishes.
//!
//! The server writes `/local/domain/<server>/data/vchan/<client>/<port>/ring-ref` (grant
//! reference of the control page) and `.../event-channel` (its unbound port), both owned by
//! itself and readable by the client, and removes them (and the then-empty `<client>`
//! directory) once the client has connected.

use crate::platform::{DomId, GrantRef, Port};
use crate::xenbus::parse_u32;
use crate::xenstore::PathBuf;
use crate::xs_path;

/// Longest path we build: `/local/domain/65535/data/vchan/65535/4294967295/event-channel`.
const PATH_MAX: usize = 72;

/// A rendezvous path. Every one we build fits [`PATH_MAX`] (u16 domids, u32 ports), so
/// `as_str()` is always `Some`.
pub type XsPath = PathBuf<PATH_MAX>;

/// Which node of the rendezvous directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    /// The directory `data/vchan/<client>/<port>` itself.
    Dir,
    /// `ring-ref`.
    RingRef,
    /// `event-channel`.
    EventChannel,
}

fn leaf(node: Node) -> &'static str {
    match node {
        Node::Dir => "",
        Node::RingRef => "/ring-ref",
        Node::EventChannel => "/event-channel",
    }
}

/// The server's path of `node`, relative to its home.
pub fn server_path(client: DomId, port: u32, node: Node) -> XsPath {
    xs_path!(PATH_MAX; "data/vchan/{client}/{port}{}", leaf(node))
}

/// The server's `data/vchan/<client>` directory (removed when it becomes empty).
pub fn server_client_dir(client: DomId) -> XsPath {
    xs_path!(PATH_MAX; "data/vchan/{client}")
}

/// The client's absolute path of the server's `node`.
pub fn client_path(server: DomId, me: DomId, port: u32, node: Node) -> XsPath {
    xs_path!(PATH_MAX; "/local/domain/{server}/data/vchan/{me}/{port}{}", leaf(node))
}

/// Formats a decimal value for xenstore.
pub fn decimal(v: u32) -> PathBuf<10> {
    xs_path!(10; "{v}")
}

/// The `ring-ref` value, checked: decimal, non-zero (libxenvchan refuses 0), and not one of
/// the toolstack's reserved references.
pub fn parse_ring_ref(value: &[u8]) -> Option<GrantRef> {
    parse_u32(value).filter(|&r| r >= crate::abi::GNTTAB_NR_RESERVED_ENTRIES).map(GrantRef)
}

/// The `event-channel` value, checked: decimal and non-zero (port 0 is never valid).
pub fn parse_event_channel(value: &[u8]) -> Option<Port> {
    parse_u32(value).filter(|&p| p != 0).map(Port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_libvchan_xen() {
        assert_eq!(server_path(0, 512, Node::RingRef).as_str(), Some("data/vchan/0/512/ring-ref"));
        assert_eq!(server_path(7, 513, Node::Dir).as_str(), Some("data/vchan/7/513"));
        assert_eq!(server_client_dir(7).as_str(), Some("data/vchan/7"));
        assert_eq!(
            client_path(0, 5, 111, Node::EventChannel).as_str(),
            Some("/local/domain/0/data/vchan/5/111/event-channel")
        );
        let longest = client_path(65535, 65535, u32::MAX, Node::EventChannel);
        assert_eq!(
            longest.as_str().map(str::len),
            Some("/local/domain/65535/data/vchan/65535/4294967295/event-channel".len())
        );
    }

    #[test]
    fn values_are_strict() {
        assert_eq!(parse_ring_ref(b"1234"), Some(GrantRef(1234)));
        assert_eq!(parse_ring_ref(b"0"), None);
        assert_eq!(parse_ring_ref(b"3"), None, "reserved refs are never a vchan page");
        assert_eq!(parse_ring_ref(b"-1"), None);
        assert_eq!(parse_ring_ref(b"12x"), None);
        assert_eq!(parse_ring_ref(b"99999999999"), None);
        assert_eq!(parse_event_channel(b"17"), Some(Port(17)));
        assert_eq!(parse_event_channel(b"0"), None);
        assert_eq!(parse_event_channel(b""), None);
        assert_eq!(decimal(0).as_str(), Some("0"));
        assert_eq!(decimal(4_294_967_295).as_str(), Some("4294967295"));
    }
}
