use std::vec::Vec;

use firewall::rules::{ErrorKind, Location, RuleNumber, RulesStatus};

use super::*;
use crate::qubesdb::client::Path;

type S = Store<128, 16384>;

fn p(s: &str) -> Path {
    Path::try_from(s).unwrap()
}

struct Rig {
    cfg: Config,
    db: std::boxed::Box<S>,
}

impl Rig {
    fn synced(entries: &[(&str, &str)]) -> Rig {
        let mut r = Rig { cfg: Config::new(), db: std::boxed::Box::new(S::new()) };
        r.cfg.on_db_event(&*r.db, &DbEvent::SyncStarted);
        for (k, v) in entries {
            r.db.insert(k, v.as_bytes()).unwrap();
            r.cfg.on_db_event(&*r.db, &DbEvent::Written(p(k)));
        }
        r.cfg.on_db_event(&*r.db, &DbEvent::Synced);
        r
    }
    fn write(&mut self, k: &str, v: &str) {
        self.db.insert(k, v.as_bytes()).unwrap();
        self.cfg.on_db_event(&*self.db, &DbEvent::Written(p(k)));
    }
    fn rm(&mut self, k: &str) {
        if k.ends_with('/') {
            self.db.remove_prefix(k);
            self.cfg.on_db_event(&*self.db, &DbEvent::RemovedSubtree(p(k)));
        } else {
            self.db.remove(k);
            self.cfg.on_db_event(&*self.db, &DbEvent::Removed(p(k)));
        }
    }
    fn events(&mut self) -> Vec<ConfigEvent> {
        core::iter::from_fn(|| self.cfg.next_event()).collect()
    }
}

const SEED: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==";

fn full_vm() -> Vec<(&'static str, &'static str)> {
    std::vec![
        ("/qubes-ip", "10.137.0.6"),
        ("/qubes-netmask", "255.255.255.255"),
        ("/qubes-gateway", "10.137.0.1"),
        ("/qubes-primary-dns", "10.139.1.1"),
        ("/qubes-secondary-dns", "10.139.1.2"),
        ("/qubes-mac", "00:16:3e:5e:6c:00"),
        ("/qubes-netvm-network", "10.137.0.6"),
        ("/qubes-netvm-gateway", "10.137.0.6"),
        ("/qubes-netvm-netmask", "255.255.255.255"),
        ("/qubes-netvm-primary-dns", "10.139.1.1"),
        ("/qubes-netvm-secondary-dns", "10.139.1.2"),
        ("/qubes-random-seed", SEED),
        ("/connected-ips", "10.137.0.5 10.137.0.7"),
        ("/connected-ips6", "fd09:24ef:4179::a89:5"),
        ("/mapped-ip/10.137.0.5/visible-ip", "10.137.0.55"),
        ("/mapped-ip/10.137.0.5/visible-gateway", "10.137.0.66"),
        ("/qubes-firewall/10.137.0.5", ""),
        ("/qubes-firewall/10.137.0.5/policy", "drop"),
        ("/qubes-firewall/10.137.0.5/0000", "action=accept proto=tcp dstports=443-443"),
        ("/qubes-firewall/10.137.0.5/0002", "action=accept specialtarget=dns"),
    ]
}

const C5: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 137, 0, 5));

#[test]
fn a_full_sync_gives_the_typed_config_and_one_round_of_events() {
    let mut r = Rig::synced(&full_vm());
    let up = Uplink {
        ip: Ipv4Addr::new(10, 137, 0, 6),
        netmask: Ipv4Addr::BROADCAST,
        gateway: Ipv4Addr::new(10, 137, 0, 1),
        mac: Some([0x00, 0x16, 0x3e, 0x5e, 0x6c, 0x00]),
        primary_dns: Some(Ipv4Addr::new(10, 139, 1, 1)),
        secondary_dns: Some(Ipv4Addr::new(10, 139, 1, 2)),
    };
    let down = Downstream {
        gateway: Ipv4Addr::new(10, 137, 0, 6),
        netmask: Ipv4Addr::BROADCAST,
        primary_dns: Some(Ipv4Addr::new(10, 139, 1, 1)),
        secondary_dns: Some(Ipv4Addr::new(10, 139, 1, 2)),
        gateway6: None,
    };
    let mut seed = Seed { bytes: [0; 64], len: 64 };
    for (i, b) in seed.bytes.iter_mut().enumerate() {
        *b = i as u8;
    }
    assert_eq!(
        r.events(),
        [
            ConfigEvent::UplinkChanged(Some(up)),
            ConfigEvent::DownstreamChanged(Some(down)),
            ConfigEvent::Reseed(seed),
            ConfigEvent::ConnectedIpsChanged,
            ConfigEvent::MappedIpsChanged,
            ConfigEvent::AllRulesCommitted,
        ]
    );
    assert!(r.cfg.missing(&*r.db).is_empty());
    let ips: Vec<IpAddr> = r.cfg.connected_ips(&*r.db).collect();
    assert_eq!(ips, [C5, "10.137.0.7".parse().unwrap(), "fd09:24ef:4179::a89:5".parse().unwrap()]);
    assert_eq!(
        r.cfg.mapped_ip(&*r.db, C5),
        Some(MappedIp {
            visible_ip: Some("10.137.0.55".parse().unwrap()),
            visible_gateway: Some("10.137.0.66".parse().unwrap())
        })
    );
    assert_eq!(r.cfg.mapped_ip(&*r.db, "10.137.0.7".parse().unwrap()), None);
    // Rules with a numbering gap are in force after the commit.
    let mut rules = ClientRules::new(Family::V4);
    assert_eq!(r.cfg.commit_rules(&*r.db, C5, &mut rules), Ok(()));
    let set = rules.active().unwrap();
    assert_eq!(set.rules().len(), 2);
    assert_eq!(set.rules()[1].number, RuleNumber::new(2).unwrap());
}

#[test]
fn only_real_changes_are_reported() {
    let mut r = Rig::synced(&full_vm());
    let _ = r.events();
    r.write("/qubes-ip", "10.137.0.6");
    r.write("/name", "sys-firewall");
    assert_eq!(r.events(), []);
    r.write("/qubes-gateway", "10.137.0.2");
    let ev = r.events();
    assert!(matches!(ev[..], [ConfigEvent::UplinkChanged(Some(u))] if u.gateway == Ipv4Addr::new(10, 137, 0, 2)));
    r.write("/connected-ips", "10.137.0.5");
    r.write("/mapped-ip/10.137.0.7/visible-ip", "10.137.0.77");
    assert_eq!(r.events(), [ConfigEvent::ConnectedIpsChanged, ConfigEvent::MappedIpsChanged]);
    r.rm("/qubes-gateway");
    assert_eq!(r.events(), [ConfigEvent::UplinkChanged(None)]);
    assert_eq!(r.cfg.missing(&*r.db).keys().collect::<Vec<_>>(), ["/qubes-gateway"]);
}

#[test]
fn missing_and_invalid_keys_are_awaited() {
    let mut r = Rig { cfg: Config::new(), db: std::boxed::Box::new(S::new()) };
    assert_eq!(r.cfg.missing(&*r.db).keys().count(), 4);
    let mut r2 = Rig::synced(&[("/qubes-ip", "10.137.0.300"), ("/qubes-gateway", "10.137.0.1"), ("/qubes-mac", "zz")]);
    assert_eq!(r2.cfg.uplink(), None);
    assert!(r2.cfg.invalid_values >= 2);
    assert_eq!(r2.cfg.missing(&*r2.db).keys().collect::<Vec<_>>(), ["/qubes-ip", "/qubes-netvm-gateway"]);
    let _ = r2.events();
    r2.write("/qubes-ip", "10.137.0.6");
    assert!(matches!(r2.events()[..], [ConfigEvent::UplinkChanged(Some(Uplink { mac: None, .. }))]));
    r.cfg.on_db_event(&*r.db, &DbEvent::Synced);
    r.write("/qubes-random-seed", "not base64!");
    assert!(!r.events().iter().any(|e| matches!(e, ConfigEvent::Reseed(_))));
}

#[test]
fn a_rule_update_commits_once_at_the_marker() {
    let mut r = Rig::synced(&full_vm());
    let _ = r.events();
    let mut rules = ClientRules::new(Family::V4);
    r.cfg.commit_rules(&*r.db, C5, &mut rules).unwrap();
    // dom0: rm subtree, write policy and rules, empty write of the marker.
    r.rm("/qubes-firewall/10.137.0.5/");
    assert_eq!(r.cfg.commit_rules(&*r.db, C5, &mut rules), Err(RulesFailure::UpdateInProgress));
    assert!(rules.active().is_some(), "the rules in force stay during an update");
    r.write("/qubes-firewall/10.137.0.5/policy", "accept");
    r.write("/qubes-firewall/10.137.0.5/0000", "action=drop proto=udp");
    assert_eq!(r.events(), []);
    r.write("/qubes-firewall/10.137.0.5", "");
    assert_eq!(r.events(), [ConfigEvent::RulesCommitted(C5)]);
    r.cfg.commit_rules(&*r.db, C5, &mut rules).unwrap();
    assert_eq!(rules.active().unwrap().rules().len(), 1);
    // Withdrawn: the marker is removed.
    r.rm("/qubes-firewall/10.137.0.5");
    assert_eq!(r.events(), [ConfigEvent::RulesCommitted(C5)]);
    assert_eq!(r.cfg.commit_rules(&*r.db, C5, &mut rules), Err(RulesFailure::NotCommitted));
    assert!(matches!(rules.status(), RulesStatus::NotCommitted));
}

#[test]
fn a_bad_rule_fails_the_client_closed_with_a_reason() {
    let mut r = Rig::synced(&full_vm());
    let _ = r.events();
    let mut rules = ClientRules::new(Family::V4);
    r.write("/qubes-firewall/10.137.0.5/0003", "action=accept dstports=80-80");
    r.write("/qubes-firewall/10.137.0.5", "");
    assert_eq!(r.events(), [ConfigEvent::RulesCommitted(C5)]);
    let err = r.cfg.commit_rules(&*r.db, C5, &mut rules).unwrap_err();
    assert_eq!(
        err,
        RulesFailure::Parse(RuleSetError {
            location: Location::Rule(RuleNumber::new(3).unwrap()),
            kind: ErrorKind::PortsWithoutTcpOrUdp
        })
    );
    assert!(matches!(rules.status(), RulesStatus::Invalid(_)));
    assert_eq!(iptables_error(C5, &err).as_str(), "10.137.0.5: rule 0003: 'dstports' needs proto=tcp or udp");
}

#[test]
fn ipv6_rule_sets_use_the_v6_family() {
    let mut r = Rig::synced(&full_vm());
    let _ = r.events();
    let c6: IpAddr = "fd09:24ef:4179::a89:5".parse().unwrap();
    r.write("/qubes-firewall/fd09:24ef:4179::a89:5/policy", "drop");
    r.write("/qubes-firewall/fd09:24ef:4179::a89:5/0000", "action=accept dst6=fd00::/8");
    r.write("/qubes-firewall/fd09:24ef:4179::a89:5", "");
    assert_eq!(r.events(), [ConfigEvent::RulesCommitted(c6)]);
    let mut rules = ClientRules::new(Family::V6);
    r.cfg.commit_rules(&*r.db, c6, &mut rules).unwrap();
    assert_eq!(rules.active().unwrap().family(), Family::V6);
}

#[test]
fn non_canonical_addresses_in_paths_are_ignored() {
    let mut r = Rig::synced(&full_vm());
    let _ = r.events();
    for k in
        ["/qubes-firewall/010.137.0.5", "/qubes-firewall/FD09::1", "/qubes-firewall/10.137.0.5x", "/qubes-firewall/"]
    {
        if k.ends_with('/') {
            continue;
        }
        r.write(k, "");
    }
    assert_eq!(r.events(), []);
}

#[test]
fn entries_lost_to_a_full_store_fail_the_client_closed_until_rewritten() {
    let mut r = Rig::synced(&full_vm());
    let _ = r.events();
    let mut rules = ClientRules::new(Family::V4);
    r.cfg.commit_rules(&*r.db, C5, &mut rules).unwrap();
    r.rm("/qubes-firewall/10.137.0.5/");
    r.write("/qubes-firewall/10.137.0.5/policy", "accept");
    // This rule did not fit: the client would otherwise get `policy accept` alone.
    r.cfg.on_db_event(&*r.db, &DbEvent::StoreFull(p("/qubes-firewall/10.137.0.5/0000")));
    r.write("/qubes-firewall/10.137.0.5", "");
    assert_eq!(r.events(), [ConfigEvent::RulesCommitted(C5)]);
    let err = r.cfg.commit_rules(&*r.db, C5, &mut rules).unwrap_err();
    assert_eq!(err, RulesFailure::StoreFull);
    assert!(rules.active().is_none());
    assert_eq!(iptables_error(C5, &err).as_str(), "10.137.0.5: rules lost: QubesDB store full");
    // dom0 rewrites the whole set (after making room): in force again.
    r.rm("/qubes-firewall/10.137.0.5/");
    r.write("/qubes-firewall/10.137.0.5/policy", "accept");
    r.write("/qubes-firewall/10.137.0.5", "");
    assert_eq!(r.events(), [ConfigEvent::RulesCommitted(C5)]);
    assert_eq!(r.cfg.commit_rules(&*r.db, C5, &mut rules), Ok(()));
}

#[test]
fn commits_wait_for_the_sync_and_overflow_into_all() {
    let mut r = Rig { cfg: Config::new(), db: std::boxed::Box::new(S::new()) };
    r.cfg.on_db_event(&*r.db, &DbEvent::SyncStarted);
    r.write("/qubes-firewall/10.137.0.5", "");
    assert_eq!(r.events(), []);
    let mut rules = ClientRules::new(Family::V4);
    assert_eq!(r.cfg.commit_rules(&*r.db, C5, &mut rules), Err(RulesFailure::NotSynced));
    r.cfg.on_db_event(&*r.db, &DbEvent::Synced);
    assert!(r.events().contains(&ConfigEvent::AllRulesCommitted));
    for i in 0..(COMMIT_QUEUE + 5) {
        r.write(&std::format!("/qubes-firewall/10.138.0.{i}"), "");
    }
    assert_eq!(r.events(), [ConfigEvent::AllRulesCommitted]);
}

#[test]
fn base64_and_mac_parsers() {
    assert_eq!(base64_64(b"AAEC").map(|s| (s.len, s.bytes[..3].to_vec())), Some((3, std::vec![0, 1, 2])));
    assert_eq!(base64_64(b"AAE=").map(|s| s.len), Some(2));
    assert_eq!(base64_64(b"AA==").map(|s| s.len), Some(1));
    assert!(base64_64(b"A===").is_none());
    assert!(base64_64(b"AA=A").is_none());
    assert!(base64_64(b"AAA").is_none());
    assert!(base64_64(b"").is_none());
    assert!(base64_64(&[b'A'; 92]).is_none(), "more than 64 bytes");
    assert_eq!(parse_mac(b"fe:ff:ff:ff:ff:ff"), Some([0xfe, 0xff, 0xff, 0xff, 0xff, 0xff]));
    assert_eq!(parse_mac(b"fe:ff:ff:ff:ff"), None);
    assert_eq!(parse_mac(b"fe:ff:ff:ff:ff:ff:00"), None);
    assert_eq!(parse_mac(b"fe:ff:ff:ff:ff:+f"), None);
}
