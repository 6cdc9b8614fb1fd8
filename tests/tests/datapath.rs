//! The appliance's data path (`portcullis::datapath`) end to end on the simulated Xen: a
//! client's netfront (simulated Linux, written from io/netif.h) → our netback → the firewall
//! engine (NAT) → our netfront → `sys-net`'s netback (simulated Linux), and back. Checks that
//! every forwarded byte is copied exactly once, that checksum offload is carried, that a
//! client without RX buffers loses frames without stalling anyone, and that every pool slot
//! comes home.

use core::net::Ipv4Addr;

use firewall::forward::{ClientConfig, DownlinkConfig, Firewall, UplinkConfig};
use grant_pool::GrantPool;
use netstack::ethernet::EthernetAddress;
use netstack::{builder, ipv4, udp};
use portcullis::datapath::{Datapath, PassIo};
use portcullis::downlink::{Downlink, LINK_MAC};
use portcullis::uplink::{UplinkAddress, UplinkHost};
use tests::sim::netback::wire::{rxf as up_rxf, txf as up_txf};
use tests::sim::netback::{SimNetback, SimNetbackConfig};
use tests::sim::netfront::{FrontConfig, POOL_FIRST_REF, POOL_PAGES, SimNetfront, VifDevice, pool_pages, rxf, txf};
use tests::sim::{Sim, SimDomain};
use xen_front::netback::{LinkChange, Netback};
use xen_front::netfront::Netfront;
use xen_front::xenstore::Client;

type Fw = Firewall<1024, 4096, 8>;

const UPLINK_MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0x5e, 0x00, 0x02];
const UP_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const UP_GW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const GW_MAC: EthernetAddress = EthernetAddress([0x00, 0x16, 0x3e, 0, 0, 1]);
const CLIENT_GW: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 1);
const C_IP: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 10);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

struct Appliance {
    sim: Sim,
    dom: SimDomain,
    xs: Box<Client>,
    pool: Box<GrantPool<SimDomain, POOL_PAGES>>,
    uplink: Box<Netfront>,
    host: UplinkHost,
    nb: Box<Netback>,
    down: Downlink,
    fw: Box<Fw>,
    dp: Box<Datapath>,
    now: u64,
}

impl Appliance {
    fn boot(sim: &Sim) -> Appliance {
        let dom = sim.create_domain("portcullis");
        let mut xs = Box::new(Client::new());
        xs.attach(dom.store_page().unwrap());
        let pages = pool_pages(&dom, POOL_PAGES);
        // Safety: `pool_pages` leaked these pages and made them RAM of `dom`; only this pool
        // and the simulated Xen touch them.
        let pool = unsafe { GrantPool::from_pages(dom.clone(), POOL_FIRST_REF, |i| pages[i]) }.unwrap();
        let (window, _) = xen_front::platform::GrantTables::foreign_window(&dom);
        let mut nb = Box::new(Netback::new(window));
        nb.start();
        let mut uplink = Box::new(Netfront::new());
        uplink.start(&mut xs, 0);
        let mut fw = Box::new(Fw::new());
        fw.rekey([3; 16]);
        fw.set_downlink(Some(DownlinkConfig::qubes(CLIENT_GW)));
        let host = UplinkHost::new(Some(UplinkAddress { ip: UP_IP, prefix_len: 24, gateway: UP_GW }), false);
        Appliance {
            sim: sim.clone(),
            dom,
            xs,
            pool: Box::new(pool),
            uplink,
            host,
            nb,
            down: Downlink::new(Some(CLIENT_GW), false),
            fw,
            dp: Box::new(Datapath::new()),
            now: 1,
        }
    }

    /// One pass of the appliance's loop (as src/main.rs runs it).
    fn pass(&mut self) {
        self.now += 1_000_000;
        for _ in 0..2 {
            self.sim.pump(&self.dom, &mut self.xs, self.now);
            if self.xs.take_events_lost() {
                self.uplink.on_events_lost();
                self.nb.on_events_lost();
            }
            while let Some(ev) = self.xs.pop_event() {
                let (path, token) = (ev.path.to_vec(), ev.token.to_vec());
                if !self.uplink.on_watch(&path, &token) {
                    assert!(self.nb.on_watch_event(&path, &token), "nobody's watch");
                }
            }
            if self.uplink.poll_control(&mut self.xs, &self.dom, &mut self.pool, self.now).is_some() {
                let mut buf = [0u8; 64];
                self.host.on_link_up(self.uplink.mac(), self.now, &mut buf);
            }
            self.nb.poll(&mut self.xs, &self.dom, self.now);
        }
        self.sim.pump(&self.dom, &mut self.xs, self.now);
        while let Some(c) = self.nb.take_change() {
            match c {
                LinkChange::Up(vif) => {
                    let info = *self.nb.info(vif).unwrap();
                    let id = self.dp.link_up(vif, &info).unwrap();
                    self.fw
                        .add_client(id, ClientConfig { addr: info.ipv4.unwrap(), mac: EthernetAddress(info.mac) })
                        .unwrap();
                    let rules = [(&b"policy"[..], &b"drop"[..]), (b"0000", b"action=accept proto=udp")];
                    self.fw.commit_rules(id, rules).unwrap();
                }
                LinkChange::Down(vif) => {
                    if let Some(id) = self.dp.link_down(vif) {
                        self.fw.remove_client(id);
                    }
                }
            }
        }
        if self.uplink.is_up() && self.fw.uplink().is_none() {
            self.fw.set_uplink(Some(UplinkConfig {
                addr: UP_IP,
                netmask: Ipv4Addr::new(255, 255, 255, 0),
                gateway: UP_GW,
                mac: EthernetAddress(self.uplink.mac()),
                gateway_mac: GW_MAC,
                mtu: 1500,
            }));
        }
        let dom = self.dom.clone();
        self.nb.take_events(|p| dom.take_pending(p));
        let io = PassIo {
            xen: &self.dom,
            pool: &mut self.pool,
            uplink: &mut self.uplink,
            host: &mut self.host,
            netback: &mut self.nb,
            down: &mut self.down,
            fw: &mut self.fw,
        };
        let mut seed = 0x9e37_79b9u32;
        self.dp.pass(io, self.now, &mut || {
            seed = seed.rotate_left(5).wrapping_mul(0x2545_f491);
            seed
        });
        self.sim.pump(&self.dom, &mut self.xs, self.now);
    }
}

struct World {
    app: Appliance,
    sys_net: SimNetback,
    client: SimNetfront,
}

impl World {
    fn new(client_rx_buffers: u32) -> World {
        let sim = Sim::new();
        let mut app = Appliance::boot(&sim);
        let sys_net =
            SimNetback::attach_with(&sim, &sim.dom0(), app.dom.domid(), 0, UPLINK_MAC, SimNetbackConfig::default());
        let cdom = sim.create_domain("work");
        let dev = VifDevice::attach(&sim, app.dom.domid(), cdom.domid(), 0, "00:16:3e:5e:6c:0a", Some("10.137.0.10"));
        let client = SimNetfront::new(
            &sim,
            &cdom,
            &dev,
            FrontConfig { rx_buffers: client_rx_buffers, ..FrontConfig::default() },
        );
        app.pass();
        let mut w = World { app, sys_net, client };
        for _ in 0..200 {
            w.turn();
            if w.app.uplink.is_up() && w.app.nb.connected().count() == 1 && w.app.fw.uplink().is_some() {
                // ARP and the like from the handshake: drain.
                w.run(10);
                w.sys_net.sent_frames();
                return w;
            }
        }
        panic!("not connected: uplink {:?}, vifs {}", w.app.uplink.phase(), w.app.nb.connected().count());
    }

    fn turn(&mut self) {
        self.app.pass();
        self.sys_net.step();
        self.client.step();
        self.app.pass();
    }

    fn run(&mut self, n: usize) {
        for _ in 0..n {
            self.turn();
        }
    }
}

fn udp(
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    n: usize,
) -> Vec<u8> {
    let payload: Vec<u8> = (0..n).map(|i| (i * 7 + n) as u8).collect();
    let mut b = vec![0u8; 2048];
    let len = builder::udp_ipv4(&mut b, src_mac, dst_mac, src, dst, &payload).unwrap();
    b.truncate(len);
    b
}

/// Replaces a complete UDP checksum by the pseudo-header sum (what `csum_blank` senders put).
fn blank(frame: &mut [u8]) {
    let ip = ipv4::Packet::new_checked(&frame[14..]).unwrap();
    let (s, d, l) = (ip.src_addr(), ip.dst_addr(), ip.payload().len() as u16);
    let sum = netstack::checksum::pseudo_header_v4(s, d, 17, l);
    frame[40..42].copy_from_slice(&sum.to_be_bytes());
}

#[test]
fn udp_both_ways_through_nat_with_one_copy_per_forwarded_byte() {
    let mut w = World::new(16);
    let cmac = EthernetAddress([0x00, 0x16, 0x3e, 0x5e, 0x6c, 0x0a]);
    let mut sent_bytes = 0u64;
    let mut nat_ports = Vec::new();
    for k in 0..200usize {
        let n = 8 + (k * 37) % 1400;
        let mut f = udp(cmac, LINK_MAC, (C_IP, 40000 + k as u16 % 4), (SERVER, 7777), n);
        blank(&mut f);
        w.client.send(&f, txf::CSUM_BLANK | txf::DATA_VALIDATED);
        sent_bytes += f.len() as u64;
        if k % 16 == 15 {
            w.run(3);
            w.client.tx_responses();
        }
    }
    w.run(20);
    w.client.tx_responses();
    let out = w.sys_net.sent_frames();
    assert_eq!(out.len(), 200, "{:?} {:?}", w.app.dp.counters, w.app.fw.counters());
    for f in &out {
        assert_eq!(f.flags & up_txf::CSUM_BLANK, up_txf::CSUM_BLANK, "partial checksum carried to sys-net");
        let ip = ipv4::Packet::new_checked(&f.bytes[14..]).unwrap();
        assert_eq!(ip.src_addr(), UP_IP, "NATed");
        let u = udp::Packet::new_checked(ip.payload()).unwrap();
        let expected = netstack::checksum::pseudo_header_v4(UP_IP, SERVER, 17, ip.payload().len() as u16);
        assert_eq!(u.checksum(), expected, "the partial sum follows the NAT address");
        if !nat_ports.contains(&u.src_port()) {
            nat_ports.push(u.src_port());
        }
    }
    let c = w.app.dp.counters;
    assert_eq!(c.forwarded_bytes, sent_bytes);
    assert_eq!(c.forwarded_copied_bytes, sent_bytes, "one copy per forwarded byte, client to uplink");

    // Answers from the server, complete checksums (sys-net validated them).
    // (The client posts 16 RX buffers at a time: answers come in groups it can take.)
    let mut back_bytes = 0u64;
    let mut got = Vec::new();
    for (k, &port) in nat_ports.iter().cycle().take(200).enumerate() {
        let f = udp(GW_MAC, EthernetAddress(UPLINK_MAC), (SERVER, 7777), (UP_IP, port), 8 + (k * 53) % 1400);
        assert!(w.sys_net.inject(&f, up_rxf::DATA_VALIDATED));
        back_bytes += f.len() as u64;
        if k % 8 == 7 {
            w.run(3);
            got.extend(w.client.rx_frames(true));
        }
    }
    w.run(20);
    got.extend(w.client.rx_frames(true));
    assert_eq!(got.len(), 200, "{:?} {:?}", w.app.dp.counters, w.app.fw.counters());
    for f in &got {
        assert_eq!(f.flags & rxf::CSUM_BLANK, 0);
        let ip = ipv4::Packet::new_checked(&f.data[14..]).unwrap();
        assert_eq!((ip.src_addr(), ip.dst_addr()), (SERVER, C_IP));
        let u = udp::Packet::new_checked(ip.payload()).unwrap();
        assert!(u.verify_checksum(SERVER.into(), C_IP.into()), "checksum valid after reverse NAT");
    }
    let c = w.app.dp.counters;
    assert_eq!(c.forwarded_bytes, sent_bytes + back_bytes);
    assert_eq!(c.forwarded_copied_bytes, sent_bytes + back_bytes, "one copy per forwarded byte, both ways");
    assert_eq!(w.app.dp.pipeline.counters.internal_copy_bytes, 0);
    assert_eq!(w.app.dp.queued(), 0);
    let p = w.app.pool.counts();
    assert!(p.balanced());
    assert_eq!(p.private, 0, "no slot held between passes");
}

#[test]
fn a_client_without_rx_buffers_loses_frames_and_stalls_nobody() {
    let mut w = World::new(0);
    let cmac = EthernetAddress([0x00, 0x16, 0x3e, 0x5e, 0x6c, 0x0a]);
    let f = udp(cmac, LINK_MAC, (C_IP, 40000), (SERVER, 7777), 100);
    w.client.send(&f, 0);
    w.run(10);
    let out = w.sys_net.sent_frames();
    assert_eq!(out.len(), 1);
    let port =
        udp::Packet::new_checked(ipv4::Packet::new_checked(&out[0].bytes[14..]).unwrap().payload()).unwrap().src_port();
    let rx_before = w.app.uplink.counters().rx_frames;
    for _ in 0..300 {
        let back = udp(GW_MAC, EthernetAddress(UPLINK_MAC), (SERVER, 7777), (UP_IP, port), 200);
        w.sys_net.inject(&back, 0);
        w.turn();
    }
    w.run(10);
    let c = w.app.dp.counters;
    assert_eq!(c.client_no_buffer, 300, "{c:?}");
    assert_eq!(w.app.uplink.counters().rx_frames - rx_before, 300);
    // The uplink kept going: every injected frame was taken from sys-net.
    assert_eq!(w.sys_net.rx_queued(), 0);
    assert!(w.app.pool.counts().balanced());
    assert_eq!(w.app.pool.counts().private, 0);
    // Once the client posts buffers, frames reach it again.
    w.client.post_rx(16);
    w.run(3);
    let back = udp(GW_MAC, EthernetAddress(UPLINK_MAC), (SERVER, 7777), (UP_IP, port), 200);
    w.sys_net.inject(&back, 0);
    w.run(10);
    assert_eq!(w.client.rx_frames(true).len(), 1);
}
