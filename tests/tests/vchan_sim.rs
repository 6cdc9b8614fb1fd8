//! vchan against a libxenvchan peer in the simulated Xen: both roles, every ring order,
//! wrap-around, partial reads and writes, multi-megabyte transfers with checksums, messages
//! larger than the ring, notifications, clean close back to baseline.

use tests::sim::Sim;
use tests::sim::vchan_peer::{
    SimSharePool, VchanGuest, checksum, connect_our_client, connect_our_server, exchange, pattern,
};
use xen_front::platform::Port;
use xen_front::vchan::{Endpoint, Options, State};

/// (server read_min, server write_min) → (left, right) orders 10/11, 11/10, 12/12, 16/16, 11/16.
const SIZES: [((usize, usize), (usize, usize)); 5] = [
    ((1024, 2048), (1024, 2048)),
    ((2048, 1024), (2048, 1024)),
    ((4096, 4096), (4096, 4096)),
    ((65536, 65536), (65536, 65536)),
    ((2048, 65536), (2048, 65536)),
];

fn opts() -> Options {
    Options { liveness_interval_ns: 0, ..Options::DEFAULT }
}

/// Nothing of the channel is left: pool pages, the port, xenstore nodes.
fn assert_baseline(g: &VchanGuest, port: Option<Port>, client: u16) {
    assert!(g.pool.at_baseline(), "pool pages not all home: free {}, shared {}", g.pool.free(), g.pool.shared);
    assert!(g.pool.quarantined.is_empty());
    if let Some(p) = port {
        assert_eq!(g.dom.channel(p), Some(tests::sim::evtchn::Channel::Free), "event channel closed");
    }
    let dir = format!("/local/domain/{}/data/vchan/{client}", g.domid());
    assert_eq!(g.sim.peek(&dir), None, "rendezvous nodes removed");
}

#[test]
fn our_server_with_a_libxenvchan_client_in_every_ring_order() {
    for (i, (sizes, expect)) in SIZES.into_iter().enumerate() {
        let sim = Sim::new();
        let mut g = VchanGuest::new(&sim, "fw");
        let mut ep: Endpoint<SimSharePool> = Endpoint::new(opts());
        let mut peer = connect_our_server(&mut g, &mut ep, sim.dom0(), 512, sizes);
        assert_eq!(ep.ring_sizes(), Some(expect), "case {i}");
        assert_eq!(peer.ring_sizes(), (expect.1, expect.0), "the client sees the same rings");
        // The nodes are gone once the client is in, as Qubes does it.
        g.poll(&mut ep);
        assert_eq!(sim.peek(&format!("/local/domain/{}/data/vchan/0/512", g.domid())), None);
        let (a, b) = (pattern(200_000, 1 + i as u64), pattern(150_000, 100 + i as u64));
        let (got_us, got_peer) = exchange(&mut g, &mut ep, &mut peer, &a, &b, 7 + i as u64);
        assert_eq!(checksum(&got_peer), checksum(&a));
        assert_eq!(got_peer, a);
        assert_eq!(got_us, b);
        let port = ep.port();
        ep.close(&mut g.io());
        assert_eq!(ep.state(), State::Closing, "the client still maps our pages");
        assert!(g.pool.shared > 0);
        assert_eq!(peer.is_open(), 0, "the client sees srv_live = 0");
        assert!(peer.close().is_empty());
        assert_eq!(g.poll_until(&mut ep, State::Closed, 10, 1), State::Closed);
        assert_eq!(ep.error(), None);
        assert_baseline(&g, port, 0);
    }
}

#[test]
fn our_client_with_a_libxenvchan_server_in_every_ring_order() {
    for (i, (sizes, expect)) in SIZES.into_iter().enumerate() {
        let sim = Sim::new();
        let mut g = VchanGuest::new(&sim, "fw");
        let mut ep: Endpoint<SimSharePool> = Endpoint::new(opts());
        let mut peer = connect_our_client(&mut g, &mut ep, sim.dom0(), 111, sizes);
        // The client reads the right ring and writes the left one.
        assert_eq!(ep.ring_sizes(), Some((expect.1, expect.0)), "case {i}");
        let (a, b) = (pattern(120_000, 3 + i as u64), pattern(180_000, 30 + i as u64));
        let (got_us, got_peer) = exchange(&mut g, &mut ep, &mut peer, &a, &b, 11 + i as u64);
        assert_eq!(got_peer, a);
        assert_eq!(got_us, b);
        let port = ep.port();
        ep.close(&mut g.io());
        assert_eq!(ep.state(), State::Closed, "a client closes at once");
        assert_eq!(peer.is_open(), 0, "the server sees cli_live = 0");
        assert!(peer.close().is_empty(), "every page of the server unmapped: its grants revoke");
        assert_eq!(g.dom.channel(port.unwrap()), Some(tests::sim::evtchn::Channel::Free));
        assert!(g.pool.at_baseline(), "a client shares nothing");
    }
}

#[test]
fn megabytes_each_way_with_checksums_both_roles() {
    for server in [true, false] {
        for sizes in [(1024, 2048), (4096, 4096), (65536, 65536)] {
            let sim = Sim::new();
            let mut g = VchanGuest::new(&sim, "fw");
            let mut ep: Endpoint<SimSharePool> = Endpoint::new(opts());
            let mut peer = if server {
                connect_our_server(&mut g, &mut ep, sim.dom0(), 600, sizes)
            } else {
                connect_our_client(&mut g, &mut ep, sim.dom0(), 600, sizes)
            };
            let (a, b) = (pattern(2 << 20, 5), pattern(2 << 20, 6));
            let (got_us, got_peer) = exchange(&mut g, &mut ep, &mut peer, &a, &b, 99);
            assert_eq!((checksum(&got_peer), checksum(&got_us)), (checksum(&a), checksum(&b)));
            assert!(got_peer == a && got_us == b);
            assert!(ep.stats().bytes_in == b.len() as u64 && ep.stats().bytes_out == a.len() as u64);
        }
    }
}

#[test]
fn partial_writes_and_reads_across_the_wrap() {
    let sim = Sim::new();
    let mut g = VchanGuest::new(&sim, "fw");
    let mut ep: Endpoint<SimSharePool> = Endpoint::new(opts());
    let mut peer = connect_our_server(&mut g, &mut ep, sim.dom0(), 512, (1024, 2048));
    // We write the 2 KiB right ring: a 3000-byte write takes 2048.
    let data = pattern(3000, 42);
    assert_eq!(ep.space(), 2048);
    assert_eq!(ep.write(&data), 2048);
    assert_eq!(ep.write(&data[2048..]), 0, "full");
    g.poll(&mut ep);
    let mut got = vec![0u8; 1500];
    assert_eq!(peer.read(&mut got), 1500);
    assert_eq!(ep.space(), 1500);
    assert_eq!(ep.write(&data[2048..]), 952, "the rest wraps around the ring's end");
    g.poll(&mut ep);
    let mut rest = vec![0u8; 2000];
    assert_eq!(peer.read(&mut rest), 1500);
    got.extend_from_slice(&rest[..1500]);
    assert_eq!(got, data);
    // Peer → us over the 1 KiB left ring; the lending read consumes only part of its view.
    assert_eq!(peer.write(&data[..1024]), 1024);
    let mut first = [0u8; 10];
    let n = ep.with_readable(|view| {
        assert_eq!(view.len(), 1024);
        assert_eq!(view.byte(1023), Some(data[1023]));
        assert_eq!(view.copy_to(1020, &mut [0u8; 10]), 4, "copies stop at the view's end");
        view.copy_to(0, &mut first)
    });
    assert_eq!((n, first.as_slice()), (10, &data[..10]));
    assert_eq!(ep.data_ready(), 1014);
    let mut rest = vec![0u8; 2000];
    assert_eq!(ep.read(&mut rest), 1014);
    assert_eq!(&rest[..1014], &data[10..1024]);
    // Now the peer's next 600 bytes wrap in the 1 KiB ring.
    assert_eq!(peer.write(&data[..600]), 600);
    let n = ep.with_readable(|view| view.copy_to(0, &mut rest));
    assert_eq!(&rest[..n], &data[..600]);
}

#[test]
fn a_message_larger_than_the_ring_streams_into_the_callers_buffer() {
    // A framed message (u32 length + body) of 10 KiB through a 1 KiB ring: the header is
    // copied out once, the body straight into the message buffer, as the framed reader does.
    let sim = Sim::new();
    let mut g = VchanGuest::new(&sim, "fw");
    let mut ep: Endpoint<SimSharePool> = Endpoint::new(opts());
    let mut peer = connect_our_server(&mut g, &mut ep, sim.dom0(), 512, (1024, 2048));
    let body = pattern(10_000, 9);
    let mut wire = (body.len() as u32).to_le_bytes().to_vec();
    wire.extend_from_slice(&body);
    let mut header = [0u8; 4];
    let (mut hgot, mut msg, mut got, mut sent) = (0, vec![0u8; 16_384], 0, 0);
    let mut rounds = 0;
    let total = loop {
        sent += peer.write(&wire[sent..]);
        if hgot < 4 {
            hgot += ep.read(&mut header[hgot..]);
        }
        if hgot == 4 {
            let len = u32::from_le_bytes(header) as usize;
            assert!(len <= msg.len());
            got += ep.with_readable(|view| view.copy_to(0, &mut msg[got..len]));
            if got == len {
                break len;
            }
        }
        g.poll(&mut ep);
        rounds += 1;
        assert!(rounds < 100);
    };
    assert!(rounds >= 9, "10 KiB cannot pass a 1 KiB ring in fewer rounds");
    assert_eq!(&msg[..total], &body[..]);
}

#[test]
fn notifications_only_when_the_peer_asked() {
    let sim = Sim::new();
    let mut g = VchanGuest::new(&sim, "fw");
    let mut ep: Endpoint<SimSharePool> = Endpoint::new(opts());
    let mut peer = connect_our_server(&mut g, &mut ep, sim.dom0(), 512, (4096, 4096));
    peer.dom.take_pending(peer.port);
    // The client asked for WRITE at connect (srv_notify = WRITE): our first write notifies.
    assert_eq!(ep.write(b"one"), 3);
    g.poll(&mut ep);
    assert!(peer.dom.take_pending(peer.port), "first write notifies");
    // The request bit is consumed: a second write without a new request does not.
    assert_eq!(ep.write(b"two"), 3);
    g.poll(&mut ep);
    assert!(!peer.dom.take_pending(peer.port), "no request, no event");
    // The peer drains and asks again (its read found less than it wanted).
    let mut buf = [0u8; 16];
    assert_eq!(peer.read(&mut buf), 6);
    assert_eq!(ep.write(b"three"), 5);
    g.poll(&mut ep);
    assert!(peer.dom.take_pending(peer.port), "requested again, notified again");
    // Our empty read asks the client to notify us on its next write.
    let port = ep.port().unwrap();
    g.dom.take_pending(port);
    assert_eq!(ep.read(&mut buf), 0);
    assert_eq!(peer.write(b"x"), 1);
    assert!(g.dom.take_pending(port), "the peer saw our request in its notify byte");
}

#[test]
fn the_peer_closing_first_leaves_its_last_bytes_readable() {
    for server in [true, false] {
        let sim = Sim::new();
        let mut g = VchanGuest::new(&sim, "fw");
        let mut ep: Endpoint<SimSharePool> = Endpoint::new(opts());
        let mut peer = if server {
            connect_our_server(&mut g, &mut ep, sim.dom0(), 512, (4096, 4096))
        } else {
            connect_our_client(&mut g, &mut ep, sim.dom0(), 111, (4096, 4096))
        };
        assert_eq!(peer.write(b"goodbye"), 7);
        let leftover = peer.close();
        assert_eq!(g.poll(&mut ep), State::PeerClosed);
        assert_eq!(ep.error(), None, "a clean close is not an error");
        assert_eq!(ep.write(b"late"), 0, "nothing is written to a closed peer");
        let mut buf = [0u8; 16];
        assert_eq!(ep.read(&mut buf), 7);
        assert_eq!(&buf[..7], b"goodbye");
        let port = ep.port();
        ep.close(&mut g.io());
        assert_eq!(g.poll_until(&mut ep, State::Closed, 10, 1), State::Closed);
        if server {
            assert!(leftover.is_empty());
            assert_baseline(&g, port, 0);
        } else {
            // Our close unmapped the server's pages: its grants now revoke.
            assert!(leftover.iter().all(|&r| peer.dom.revoke(r)));
        }
    }
}

#[test]
fn reconnect_after_close_reuses_the_same_pages_and_window() {
    let sim = Sim::new();
    let mut g = VchanGuest::new(&sim, "fw");
    let mut ep: Endpoint<SimSharePool> = Endpoint::new(opts());
    for round in 0..3u64 {
        let mut peer = connect_our_client(&mut g, &mut ep, sim.dom0(), 111, (65536, 65536));
        let (a, b) = (pattern(70_000, round), pattern(70_000, round + 50));
        let (got_us, got_peer) = exchange(&mut g, &mut ep, &mut peer, &a, &b, round);
        assert!(got_us == b && got_peer == a);
        ep.close(&mut g.io());
        assert_eq!(ep.state(), State::Closed);
        assert!(peer.close().is_empty());
    }
    assert_eq!(ep.stats().connects, 3);
}
