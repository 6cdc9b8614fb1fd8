use std::boxed::Box;

use firewall::forward::ClientConfig;
use netstack::ethernet::EthernetAddress;
use qubes::qubesdb::Event as DbEvent;
use qubes::qubesdb::client::Path;

use super::*;

type Fw = Firewall<64, 256, 8>;
type S = Store<128, 16384>;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 20);
const OTHER: Ipv4Addr = Ipv4Addr::new(10, 137, 0, 21);

/// The configuration model and the store, fed as the QubesDB client feeds them.
struct Db {
    cfg: Config,
    store: Box<S>,
}

impl Db {
    fn new() -> Db {
        Db { cfg: Config::new(), store: Box::new(S::new()) }
    }
    fn synced(entries: &[(&str, &str)]) -> Db {
        let mut db = Db::new();
        db.cfg.on_db_event(&*db.store, &DbEvent::SyncStarted);
        for (k, v) in entries {
            db.write(k, v);
        }
        db.cfg.on_db_event(&*db.store, &DbEvent::Synced);
        while db.cfg.next_event().is_some() {}
        db
    }
    fn write(&mut self, k: &str, v: &str) {
        self.store.insert(k, v.as_bytes()).unwrap();
        self.cfg.on_db_event(&*self.store, &DbEvent::Written(Path::try_from(k).unwrap()));
    }
    fn rm_subtree(&mut self, k: &str) {
        self.store.remove_prefix(k);
        self.cfg.on_db_event(&*self.store, &DbEvent::RemovedSubtree(Path::try_from(k).unwrap()));
    }
    fn rm(&mut self, k: &str) {
        self.store.remove(k);
        self.cfg.on_db_event(&*self.store, &DbEvent::Removed(Path::try_from(k).unwrap()));
    }
}

struct Appliance {
    fw: Box<Fw>,
    host: UplinkHost,
    down: Downlink,
}

impl Appliance {
    fn new() -> Appliance {
        let mut fw = Box::new(Fw::new());
        fw.rekey(*b"0123456789abcdef");
        Appliance { fw, host: UplinkHost::new(None, false), down: Downlink::new(None, false) }
    }
    fn connect(&mut self, n: u16, addr: Ipv4Addr) -> ClientId {
        let id = ClientId::new(n).unwrap();
        self.fw.add_client(id, ClientConfig { addr, mac: EthernetAddress([0, 0x16, 0x3e, 0, 0, n as u8]) }).unwrap();
        id
    }
    fn apply(&mut self, ev: QubesEvent, db: &Db) -> Applied {
        let mut to = Targets { fw: &mut self.fw, host: &mut self.host, down: &mut self.down };
        apply(&ev, &db.cfg, &db.store, &mut to, 1_000)
    }
    fn rule_count(&self, id: ClientId) -> Option<usize> {
        self.fw.rules(id)?.active().map(|s| s.rules().len())
    }
}

fn committed(ip: Ipv4Addr) -> QubesEvent {
    QubesEvent::RulesCommitted { client: IpAddr::V4(ip), rules: 0 }
}

const RULES: [(&str, &str); 4] = [
    ("/qubes-firewall/10.137.0.20/policy", "drop"),
    ("/qubes-firewall/10.137.0.20/0000", "action=accept proto=tcp dstports=443-443"),
    ("/qubes-firewall/10.137.0.20/0001", "action=accept specialtarget=dns"),
    ("/qubes-firewall/10.137.0.20", ""),
];

#[test]
fn uplink_addresses_and_dns_are_put_in_force_once() {
    let db = Db::synced(&[]);
    let mut a = Appliance::new();
    let u = Uplink {
        ip: Ipv4Addr::new(10, 137, 0, 6),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        gateway: Ipv4Addr::new(10, 137, 0, 1),
        mac: None,
        primary_dns: Some(Ipv4Addr::new(10, 139, 1, 1)),
        secondary_dns: None,
    };
    let want = UplinkAddress { ip: u.ip, prefix_len: 24, gateway: u.gateway };
    assert_eq!(a.apply(QubesEvent::Uplink(Some(u)), &db), Applied::Uplink(want));
    assert_eq!(a.host.address(), Some(want));
    assert_eq!(a.apply(QubesEvent::Uplink(Some(u)), &db), Applied::Nothing, "the same again: nothing to redo");
    let moved = Uplink { gateway: Ipv4Addr::new(10, 137, 0, 2), ..u };
    assert!(matches!(a.apply(QubesEvent::Uplink(Some(moved)), &db), Applied::Uplink(x) if x.gateway == moved.gateway));
    assert_eq!(a.host.next_deadline(), Some(1_000), "the new gateway is looked for at once");
    let waiting = a.apply(QubesEvent::Uplink(None), &db);
    assert_eq!(waiting, Applied::Waiting(Missing { ip: true, gateway: true, netvm_gateway: true, sync: false }));
    assert_eq!(
        waiting.to_string(),
        "config: waiting for QubesDB /qubes-ip /qubes-gateway /qubes-netvm-gateway (nothing is forwarded meanwhile)"
    );
    assert_eq!(a.host.address(), None);
    assert_eq!(
        Applied::Uplink(want).to_string(),
        "uplink: address 10.137.0.6/24 gateway 10.137.0.1 from QubesDB; looking for the gateway"
    );
}

#[test]
fn a_non_contiguous_netmask_counts_its_leading_ones() {
    let u = Uplink {
        ip: Ipv4Addr::new(10, 0, 0, 2),
        netmask: Ipv4Addr::new(255, 0, 255, 0),
        gateway: Ipv4Addr::new(10, 0, 0, 1),
        mac: None,
        primary_dns: None,
        secondary_dns: None,
    };
    assert_eq!(uplink_address(&u).prefix_len, 8);
    assert_eq!(uplink_address(&Uplink { netmask: Ipv4Addr::BROADCAST, ..u }).prefix_len, 32);
    assert_eq!(uplink_address(&Uplink { netmask: Ipv4Addr::UNSPECIFIED, ..u }).prefix_len, 0);
}

#[test]
fn the_clients_gateway_goes_to_the_links_and_the_engine() {
    let db = Db::synced(&[]);
    let mut a = Appliance::new();
    let d = Downstream {
        gateway: Ipv4Addr::new(10, 137, 0, 1),
        netmask: Ipv4Addr::BROADCAST,
        primary_dns: None,
        secondary_dns: None,
        gateway6: None,
    };
    assert_eq!(a.apply(QubesEvent::Downstream(Some(d)), &db), Applied::ClientsGateway(d.gateway));
    assert_eq!(a.down.gateway(), Some(d.gateway));
    assert_eq!(a.fw.downlink().gateway, d.gateway);
    assert_eq!(a.apply(QubesEvent::Downstream(Some(d)), &db), Applied::Nothing);
    assert!(matches!(a.apply(QubesEvent::Downstream(None), &db), Applied::Waiting(m) if m.netvm_gateway));
    assert_eq!(a.down.gateway(), None);
    assert_eq!(a.fw.downlink(), Fw::DEFAULT_DOWNLINK, "no gateway answered any more");
}

#[test]
fn committed_rules_of_a_connected_client_are_put_in_force() {
    let db = Db::synced(&RULES);
    let mut a = Appliance::new();
    let id = a.connect(1, CLIENT);
    let got = a.apply(committed(CLIENT), &db);
    assert_eq!(got, Applied::Client { ip: CLIENT, rules: ClientRules::InForce { rules: 2, flows_removed: 0 } });
    assert_eq!(a.rule_count(id), Some(2));
    assert_eq!(got.to_string(), "firewall: client 10.137.0.20: 2 rules in force, 0 flows removed");
    // Rules of a client not connected here wait for its vif; IPv6 is not forwarded.
    assert_eq!(a.apply(committed(OTHER), &db), Applied::Nothing);
    let v6 = QubesEvent::RulesCommitted { client: "fd09:24ef:4179::a89:14".parse().unwrap(), rules: 1 };
    assert_eq!(a.apply(v6, &db), Applied::Nothing);
}

#[test]
fn a_client_connecting_after_its_commit_gets_the_same_rules() {
    let db = Db::synced(&RULES);
    let mut a = Appliance::new();
    let id = a.connect(3, CLIENT);
    assert_eq!(a.rule_count(id), None, "a new client drops everything until its rules are in force");
    assert_eq!(
        client_rules(&db.cfg, &db.store, &mut a.fw, id, CLIENT),
        ClientRules::InForce { rules: 2, flows_removed: 0 }
    );
    assert_eq!(a.rule_count(id), Some(2));
}

#[test]
fn before_the_sync_a_new_client_stays_blocked_and_the_sync_brings_its_rules() {
    let mut db = Db::new();
    let mut a = Appliance::new();
    let id = a.connect(1, CLIENT);
    assert_eq!(client_rules(&db.cfg, &db.store, &mut a.fw, id, CLIENT), ClientRules::Kept(RulesFailure::NotSynced));
    assert_eq!(a.rule_count(id), None);
    db.cfg.on_db_event(&*db.store, &DbEvent::SyncStarted);
    for (k, v) in RULES {
        db.write(k, v);
    }
    db.cfg.on_db_event(&*db.store, &DbEvent::Synced);
    assert!(matches!(a.apply(committed(CLIENT), &db), Applied::Client { rules: ClientRules::InForce { .. }, .. }));
    assert_eq!(a.rule_count(id), Some(2));
}

#[test]
fn an_update_in_progress_keeps_the_rules_then_the_commit_replaces_them() {
    let mut db = Db::synced(&RULES);
    let mut a = Appliance::new();
    let id = a.connect(1, CLIENT);
    a.apply(committed(CLIENT), &db);
    db.rm_subtree("/qubes-firewall/10.137.0.20/");
    db.write("/qubes-firewall/10.137.0.20/policy", "accept");
    let got = a.apply(committed(CLIENT), &db);
    assert_eq!(got, Applied::Client { ip: CLIENT, rules: ClientRules::Kept(RulesFailure::UpdateInProgress) });
    assert_eq!(a.rule_count(id), Some(2), "the old rules stay in force meanwhile");
    db.write("/qubes-firewall/10.137.0.20", "");
    let got = a.apply(committed(CLIENT), &db);
    assert_eq!(got, Applied::Client { ip: CLIENT, rules: ClientRules::InForce { rules: 0, flows_removed: 0 } });
    assert_eq!(a.rule_count(id), Some(0));
}

#[test]
fn withdrawn_or_unparsable_rules_block_the_client() {
    let mut db = Db::synced(&RULES);
    let mut a = Appliance::new();
    let id = a.connect(1, CLIENT);
    a.apply(committed(CLIENT), &db);
    db.rm("/qubes-firewall/10.137.0.20");
    let got = a.apply(QubesEvent::RulesWithdrawn(IpAddr::V4(CLIENT)), &db);
    assert_eq!(got, Applied::Client { ip: CLIENT, rules: ClientRules::Blocked(RulesFailure::NotCommitted) });
    assert_eq!(a.rule_count(id), None);
    assert_eq!(
        got.to_string(),
        "firewall: client 10.137.0.20: blocked (no rules committed): all its traffic is dropped"
    );

    db.rm_subtree("/qubes-firewall/10.137.0.20/");
    db.write("/qubes-firewall/10.137.0.20/policy", "drop");
    db.write("/qubes-firewall/10.137.0.20/0000", "action=accept proto=tcp dstports=80-70");
    db.write("/qubes-firewall/10.137.0.20", "");
    let failure = QubesEvent::RulesFailed { client: IpAddr::V4(CLIENT), failure: RulesFailure::NotCommitted };
    let got = a.apply(failure, &db);
    assert!(matches!(got, Applied::Client { rules: ClientRules::Invalid(_), .. }), "{got:?}");
    assert_eq!(a.rule_count(id), None);
    assert!(got.to_string().contains("rules do not parse"), "{got}");
}

#[test]
fn garbage_rule_entries_never_open_the_client() {
    let garbage: [&[u8]; 6] =
        [b"", b"\xff\xfe", b"action=accept proto=tcp dstports=0-99999", b"policy", b"action==accept", &[b'a'; 3000]];
    for g in garbage {
        let mut db = Db::synced(&[]);
        let text = core::str::from_utf8(g).unwrap_or("\u{fffd}");
        db.write("/qubes-firewall/10.137.0.20/policy", "drop");
        db.write("/qubes-firewall/10.137.0.20/0000", text);
        db.write("/qubes-firewall/10.137.0.20", "");
        let mut a = Appliance::new();
        let id = a.connect(1, CLIENT);
        let got = a.apply(committed(CLIENT), &db);
        assert!(matches!(got, Applied::Client { rules: ClientRules::Invalid(_), .. }), "{text:?}: {got:?}");
        assert_eq!(a.rule_count(id), None);
    }
}

#[test]
fn a_new_sync_blocks_connected_clients_dom0_no_longer_gives_rules() {
    let mut db = Db::synced(&RULES);
    let mut a = Appliance::new();
    let id = a.connect(1, CLIENT);
    let other = a.connect(2, OTHER);
    a.apply(committed(CLIENT), &db);
    assert_eq!(a.rule_count(id), Some(2));
    // dom0's daemon restarted with no rules for either client.
    db.cfg.on_db_event(&*db.store, &DbEvent::SyncStarted);
    db.store.remove_prefix("/");
    db.write("/qubes-ip", "10.0.0.7");
    db.cfg.on_db_event(&*db.store, &DbEvent::Synced);
    let got = a.apply(QubesEvent::DbSynced { keys: 1 }, &db);
    let only_ip = Missing { ip: false, gateway: true, netvm_gateway: true, sync: false };
    assert_eq!(got, Applied::Resynced { in_force: 0, blocked: 2, missing: only_ip });
    assert_eq!((a.rule_count(id), a.rule_count(other)), (None, None));
    // And with rules for one of them, that one is put in force.
    db.cfg.on_db_event(&*db.store, &DbEvent::SyncStarted);
    for (k, v) in RULES {
        db.write(k, v);
    }
    db.cfg.on_db_event(&*db.store, &DbEvent::Synced);
    assert_eq!(
        a.apply(QubesEvent::DbSynced { keys: 5 }, &db),
        Applied::Resynced { in_force: 1, blocked: 1, missing: only_ip }
    );
    assert_eq!(a.rule_count(id), Some(2));
    assert_eq!(
        Applied::Resynced { in_force: 1, blocked: 1, missing: Missing::default() }.to_string(),
        "firewall: QubesDB synced: connected clients' rules read again, 1 in force, 1 blocked"
    );
}
