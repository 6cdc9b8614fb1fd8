//! The xenstore side of the rendezvous: the paths Qubes' libvchan-xen uses and strict parsing
//! of the two values the server publishes.
//!
//! The server writes `/local/domain/<server>/data/vchan/<client>/<port>/ring-ref` (grant
//! reference of the control page) and `.../event-channel` (its unbound port), both owned by
//! itself and readable by the client, and removes them (and the then-empty `<client>`
//! directory) once the client has connected.

use core::fmt::Write;

use crate::platform::{DomId, GrantRef, Port};
use crate::xenbus::parse_u32;

/// Longest path we build: `/local/domain/65535/data/vchan/65535/4294967295/event-channel`.
const PATH_MAX: usize = 72;

/// A xenstore path in a fixed buffer.
#[derive(Clone, Copy)]
pub struct XsPath {
    buf: [u8; PATH_MAX],
    len: usize,
}

impl Write for XsPath {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(core::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl core::fmt::Debug for XsPath {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl XsPath {
    fn build(args: core::fmt::Arguments<'_>) -> XsPath {
        let mut p = XsPath { buf: [0; PATH_MAX], len: 0 };
        // Every path we format is bounded by PATH_MAX (u16 domids, u32 ports).
        p.write_fmt(args).expect("vchan paths fit PATH_MAX");
        p
    }

    /// The path.
    pub fn as_str(&self) -> &str {
        // Only `&str`s were written.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

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
    XsPath::build(format_args!("data/vchan/{client}/{port}{}", leaf(node)))
}

/// The server's `data/vchan/<client>` directory (removed when it becomes empty).
pub fn server_client_dir(client: DomId) -> XsPath {
    XsPath::build(format_args!("data/vchan/{client}"))
}

/// The client's absolute path of the server's `node`.
pub fn client_path(server: DomId, me: DomId, port: u32, node: Node) -> XsPath {
    XsPath::build(format_args!("/local/domain/{server}/data/vchan/{me}/{port}{}", leaf(node)))
}

/// Formats a decimal value for xenstore.
pub fn decimal(v: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut n = v;
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
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
        assert_eq!(server_path(0, 512, Node::RingRef).as_str(), "data/vchan/0/512/ring-ref");
        assert_eq!(server_path(7, 513, Node::Dir).as_str(), "data/vchan/7/513");
        assert_eq!(server_client_dir(7).as_str(), "data/vchan/7");
        assert_eq!(
            client_path(0, 5, 111, Node::EventChannel).as_str(),
            "/local/domain/0/data/vchan/5/111/event-channel"
        );
        let longest = client_path(65535, 65535, u32::MAX, Node::EventChannel);
        assert_eq!(longest.as_str().len(), "/local/domain/65535/data/vchan/65535/4294967295/event-channel".len());
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
        let mut buf = [0; 10];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(4_294_967_295, &mut buf), b"4294967295");
    }
}
