//! vchan against hostile or failing peers: each case has one specific outcome, and whatever
//! happens, every page, port, mapping and xenstore node comes back.

use tests::sim::Sim;
use tests::sim::vchan_peer::{
    CLI_LIVE, CLIENT_WINDOW, ServerOpts, SimSharePool, VchanGuest, VchanPeer, connect_our_client, connect_our_server,
    exchange, pattern,
};
use xen_front::platform::GrantStatus;
use xen_front::vchan::layout::OrderError;
use xen_front::vchan::{ClientParams, Endpoint, Error, Options, RingFault, ServerParams, State};

fn opts() -> Options {
    Options {
        liveness_interval_ns: 0,
        connect_timeout_ns: Some(1_000_000_000),
        close_timeout_ns: 1_000_000_000,
        ..Options::DEFAULT
    }
}

fn assert_server_baseline(g: &VchanGuest, client: u16) {
    assert!(g.pool.at_baseline(), "pool: free {}, shared {}", g.pool.free(), g.pool.shared);
    assert_eq!(g.sim.peek(&format!("/local/domain/{}/data/vchan/{client}", g.domid())), None);
}

fn client_against(opts_server: ServerOpts, sizes: (usize, usize)) -> (VchanGuest, Endpoint<SimSharePool>, VchanPeer) {
    let sim = Sim::new();
    let mut g = VchanGuest::new(&sim, "fw");
    let peer = VchanPeer::server(&sim, sim.dom0(), g.domid(), 111, sizes, opts_server);
    let mut ep: Endpoint<SimSharePool> = Endpoint::new(opts());
    let params = ClientParams { self_domid: g.domid(), server: 0, port: 111, window: CLIENT_WINDOW };
    ep.connect(&mut g.io(), params).unwrap();
    g.poll_until(&mut ep, State::Closed, 20, 1_000_000);
    (g, ep, peer)
}

/// A failed client connect left no port bound and nothing mapped.
fn assert_client_released(g: &VchanGuest, peer: &mut VchanPeer) {
    assert_eq!(g.dom.port_status_count(), 0, "no vchan port left open");
    assert!(peer.close().is_empty(), "no page of the server still mapped");
}

trait Ports {
    fn port_status_count(&self) -> usize;
}

impl Ports for tests::sim::SimDomain {
    /// Interdomain ports other than the xenstore one.
    fn port_status_count(&self) -> usize {
        let store = self.store_port();
        (1..64)
            .map(xen_front::platform::Port)
            .filter(|&p| Some(p) != store)
            .filter(|&p| matches!(self.channel(p), Some(tests::sim::evtchn::Channel::Interdomain { .. })))
            .count()
    }
}

#[test]
fn producer_jumping_past_the_ring_is_a_fault_and_closes() {
    for server in [true, false] {
        let sim = Sim::new();
        let mut g = VchanGuest::new(&sim, "fw");
        let mut ep: Endpoint<SimSharePool> = Endpoint::new(opts());
        let mut peer = if server {
            connect_our_server(&mut g, &mut ep, sim.dom0(), 512, (4096, 4096))
        } else {
            connect_our_client(&mut g, &mut ep, sim.dom0(), 111, (4096, 4096))
        };
        peer.set_prod(peer.prod().wrapping_add(4097));
        assert_eq!(ep.read(&mut [0u8; 64]), 0, "nothing is read from a lying ring");
        g.poll_until(&mut ep, State::Closing, 2, 1);
        assert_eq!(ep.error(), Some(Error::Fault(RingFault::Overrun { claimed: 4097, size: 4096 })));
        assert_eq!(ep.stats().faults, 1);
        assert_eq!(peer.is_open(), 0, "the peer is told");
        let left = peer.close();
        assert_eq!(g.poll_until(&mut ep, State::Closed, 10, 1), State::Closed);
        if server {
            assert!(left.is_empty());
            assert_server_baseline(&g, 0);
        } else {
            assert!(left.iter().all(|&r| peer.dom.revoke(r)), "we unmapped everything");
        }
    }
}

#[test]
fn producer_moving_backwards_is_a_fault() {
    let sim = Sim::new();
    let mut g = VchanGuest::new(&sim, "fw");
    let mut ep: Endpoint<SimSharePool> = Endpoint::new(opts());
    let mut peer = connect_our_server(&mut g, &mut ep, sim.dom0(), 512, (4096, 4096));
    assert_eq!(peer.write(&[1; 100]), 100);
    assert_eq!(ep.data_ready(), 100);
    peer.set_prod(50);
    assert_eq!(ep.data_ready(), 0);
    g.poll(&mut ep);
    assert_eq!(ep.error(), Some(Error::Fault(RingFault::Backwards { before: 100, now: 50 })));
}

#[test]
fn consumer_index_of_our_ring_jumping_is_a_fault() {
    let sim = Sim::new();
    let mut g = VchanGuest::new(&sim, "fw");
    let mut ep: Endpoint<SimSharePool> = Endpoint::new(opts());
    let peer = connect_our_client(&mut g, &mut ep, sim.dom0(), 111, (4096, 4096));
    assert_eq!(ep.write(&[2; 10]), 10);
    peer.set_cons(11); // consumes a byte we never wrote
    assert_eq!(ep.write(&[3; 10]), 0);
    g.poll(&mut ep);
    assert!(matches!(ep.error(), Some(Error::Fault(RingFault::Overrun { .. }))), "{:?}", ep.error());
    assert_eq!(ep.state(), State::Closed);
}

#[test]
fn garbage_ring_ref_is_refused_without_mapping() {
    for (value, expect) in [(&b"abc"[..], Error::BadRingRef), (b"0", Error::BadRingRef), (b"-5", Error::BadRingRef)] {
        let (g, ep, mut peer) =
            client_against(ServerOpts { ring_ref: Some(value.to_vec()), ..Default::default() }, (4096, 4096));
        assert_eq!((ep.state(), ep.error()), (State::Closed, Some(expect)), "{value:?}");
        assert_client_released(&g, &mut peer);
    }
    // Well-formed references that grant nothing to us: Xen refuses the map.
    for (value, status) in [(&b"1000"[..], GrantStatus::GENERAL_ERROR), (b"4000", GrantStatus::BAD_GNTREF)] {
        let (g, ep, mut peer) =
            client_against(ServerOpts { ring_ref: Some(value.to_vec()), ..Default::default() }, (4096, 4096));
        assert_eq!(ep.error(), Some(Error::Map(status)));
        assert_client_released(&g, &mut peer);
    }
}

#[test]
fn garbage_event_channel_is_refused() {
    for value in [&b"x1"[..], b"0", b"4294967296"] {
        let (g, ep, mut peer) =
            client_against(ServerOpts { event_channel: Some(value.to_vec()), ..Default::default() }, (4096, 4096));
        assert_eq!(ep.error(), Some(Error::BadEventChannel), "{value:?}");
        assert_client_released(&g, &mut peer);
    }
    // A port number that is not an unbound port for us: the bind fails.
    let (g, ep, mut peer) =
        client_against(ServerOpts { event_channel: Some(b"999".to_vec()), ..Default::default() }, (4096, 4096));
    assert_eq!(ep.error(), Some(Error::BadEventChannel));
    assert_client_released(&g, &mut peer);
}

#[test]
fn impossible_ring_orders_are_refused_and_unmapped() {
    for (orders, expect) in [
        ((10, 10), OrderError::Invalid { left: 10, right: 10 }),
        ((9, 12), OrderError::Invalid { left: 9, right: 12 }),
        ((12, 0xffff), OrderError::Invalid { left: 12, right: 0xffff }),
        ((17, 12), OrderError::Unsupported { order: 17 }),
    ] {
        let (g, ep, mut peer) =
            client_against(ServerOpts { fake_orders: Some(orders), ..Default::default() }, (4096, 4096));
        assert_eq!(ep.error(), Some(Error::Orders(expect)));
        assert_client_released(&g, &mut peer);
    }
}

#[test]
fn a_window_too_small_for_the_rings_is_refused() {
    let sim = Sim::new();
    let mut g = VchanGuest::new(&sim, "fw");
    let mut peer = VchanPeer::server(&sim, sim.dom0(), g.domid(), 111, (65536, 65536), ServerOpts::default());
    let mut ep: Endpoint<SimSharePool> = Endpoint::new(opts());
    let params = ClientParams { self_domid: g.domid(), server: 0, port: 111, window: (CLIENT_WINDOW.0, 8) };
    ep.connect(&mut g.io(), params).unwrap();
    assert_eq!(g.poll_until(&mut ep, State::Closed, 5, 1), State::Closed);
    assert_eq!(ep.error(), Some(Error::WindowTooSmall { needed: 33, have: 8 }));
    assert_client_released(&g, &mut peer);
}

#[test]
fn a_client_that_never_comes_times_out_and_everything_is_released() {
    let sim = Sim::new();
    let mut g = VchanGuest::new(&sim, "fw");
    let mut ep: Endpoint<SimSharePool> = Endpoint::new(opts());
    let params = ServerParams { self_domid: g.domid(), client: 0, port: 512, read_min: 65536, write_min: 65536 };
    ep.listen(&mut g.io(), params).unwrap();
    assert_eq!(g.poll(&mut ep), State::Listening);
    assert_eq!(g.pool.shared, 33);
    let node = format!("/local/domain/{}/data/vchan/0/512/event-channel", g.domid());
    assert!(g.sim.peek(&node).is_some(), "advertised");
    let perms = g.sim.xs_tool(0).get_perms(&node).unwrap();
    assert_eq!(perms.len(), 2, "owner and the client's read: {perms:?}");
    let port = ep.port().unwrap();
    assert_eq!(g.poll_until(&mut ep, State::Closed, 20, 100_000_000), State::Closed);
    assert_eq!(ep.error(), Some(Error::ConnectTimeout));
    assert_eq!(g.dom.channel(port), Some(tests::sim::evtchn::Channel::Free));
    assert_server_baseline(&g, 0);
}

#[test]
fn a_server_that_never_appears_times_out() {
    let sim = Sim::new();
    let mut g = VchanGuest::new(&sim, "fw");
    let mut ep: Endpoint<SimSharePool> = Endpoint::new(opts());
    let params = ClientParams { self_domid: g.domid(), server: 0, port: 111, window: CLIENT_WINDOW };
    ep.connect(&mut g.io(), params).unwrap();
    assert_eq!(g.poll_until(&mut ep, State::Closed, 30, 100_000_000), State::Closed);
    assert_eq!(ep.error(), Some(Error::ConnectTimeout));
    assert!(g.xs.in_flight() == 0, "no xenstore request left behind");
}

#[test]
fn an_impossible_cli_live_while_listening_closes() {
    let sim = Sim::new();
    let mut g = VchanGuest::new(&sim, "fw");
    let mut ep: Endpoint<SimSharePool> = Endpoint::new(opts());
    let params = ServerParams { self_domid: g.domid(), client: 0, port: 512, read_min: 4096, write_min: 4096 };
    ep.listen(&mut g.io(), params).unwrap();
    g.poll(&mut ep);
    let peer = VchanPeer::client(&sim, sim.dom0(), g.domid(), 512).unwrap();
    peer.ctrl.write_u8(CLI_LIVE, 7);
    g.poll(&mut ep);
    assert_eq!(ep.error(), Some(Error::BadLiveFlag(7)));
}

#[test]
fn a_client_dying_mid_transfer_is_detected_and_our_pages_come_home() {
    let sim = Sim::new();
    let mut g = VchanGuest::new(&sim, "fw");
    let peer_dom = sim.create_domain("qrexec-client");
    let mut ep: Endpoint<SimSharePool> = Endpoint::new(opts());
    let mut peer = connect_our_server(&mut g, &mut ep, peer_dom.clone(), 512, (65536, 65536));
    let (a, b) = (pattern(100_000, 1), pattern(100_000, 2));
    exchange(&mut g, &mut ep, &mut peer, &a, &b, 3);
    assert_eq!(ep.write(&a[..5000]), 5000);
    sim.destroy_domain(peer_dom.domid());
    assert_eq!(g.poll(&mut ep), State::PeerClosed);
    assert_eq!(ep.error(), Some(Error::PeerGone));
    ep.close(&mut g.io());
    assert_eq!(g.poll_until(&mut ep, State::Closed, 10, 1), State::Closed);
    assert_server_baseline(&g, peer_dom.domid());
}

#[test]
fn a_server_dying_mid_transfer_is_detected_and_its_pages_are_unmapped() {
    let sim = Sim::new();
    let mut g = VchanGuest::new(&sim, "fw");
    let peer_dom = sim.create_domain("qubesdb-server");
    let mut ep: Endpoint<SimSharePool> = Endpoint::new(opts());
    let mut peer = connect_our_client(&mut g, &mut ep, peer_dom.clone(), 111, (4096, 4096));
    let (a, b) = (pattern(50_000, 1), pattern(50_000, 2));
    exchange(&mut g, &mut ep, &mut peer, &a, &b, 4);
    assert_eq!(peer.write(b"last words"), 10);
    sim.destroy_domain(peer_dom.domid());
    assert!(sim.is_zombie(peer_dom.domid()), "we still map its pages");
    assert_eq!(g.poll(&mut ep), State::PeerClosed);
    assert_eq!(ep.error(), Some(Error::PeerGone));
    let mut buf = [0u8; 32];
    assert_eq!(ep.read(&mut buf), 10, "what it sent before dying is still readable");
    ep.close(&mut g.io());
    assert_eq!(ep.state(), State::Closed);
    assert!(!sim.exists(peer_dom.domid()), "our unmaps let the dead domain go");
}

#[test]
fn pages_the_client_keeps_mapped_are_quarantined_after_the_close_timeout() {
    let sim = Sim::new();
    let mut g = VchanGuest::new(&sim, "fw");
    let mut ep: Endpoint<SimSharePool> = Endpoint::new(opts());
    let _peer = connect_our_server(&mut g, &mut ep, sim.dom0(), 512, (4096, 4096));
    ep.close(&mut g.io());
    assert_eq!(g.poll(&mut ep), State::Closing, "waits for the client to unmap");
    assert_eq!(g.pool.shared, 3);
    assert_eq!(g.poll_until(&mut ep, State::Closed, 20, 100_000_000), State::Closed);
    assert_eq!(g.pool.quarantined.len(), 3, "never reused while the peer maps them");
    assert_eq!(ep.stats().quarantined, 3);
    assert_eq!(g.pool.shared, 0);
}
