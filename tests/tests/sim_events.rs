//! The simulator's event-channel rules: bits set as `event_2l.c` does, errors as Xen's.

use std::sync::atomic::Ordering;

use tests::sim::evtchn::{Channel, EEXIST, EINVAL, ESRCH};
use tests::sim::{Sim, SimDomain};
use xen_front::abi::{shared_info as si, vcpu_info};
use xen_front::events::PendingEvents;
use xen_front::platform::{EventChannels, Port};

fn connected() -> (Sim, SimDomain, SimDomain, Port, Port) {
    let sim = Sim::new();
    let a = sim.create_domain("a");
    let b = sim.create_domain("b");
    let pa = a.alloc_unbound(b.domid()).unwrap();
    let pb = b.bind_interdomain(a.domid(), pa).unwrap();
    (sim, a, b, pa, pb)
}

#[test]
fn send_sets_pending_selector_and_upcall_and_pending_events_harvests_it() {
    let (_sim, a, b, pa, pb) = connected();
    assert!(b.take_pending(pb), "bind_interdomain sets the new port pending");
    let info = a.shared_info();
    info.write_u8(vcpu_info::UPCALL_PENDING, 0);
    info.write_u64(vcpu_info::PENDING_SEL, 0);
    b.send(pb).unwrap();
    assert!(a.is_pending(pa));
    assert_eq!(info.read_u8(vcpu_info::UPCALL_PENDING), 1);
    let mut events = PendingEvents::new(info);
    assert!(events.harvest());
    assert!(events.take(pa));
}

#[test]
fn a_masked_port_stays_pending_until_unmasked() {
    let (_sim, a, b, pa, pb) = connected();
    let info = a.shared_info();
    let word = (pa.0 / 64) as usize;
    info.atomic_u64(si::EVTCHN_MASK + word * 8).fetch_or(1 << (pa.0 % 64), Ordering::SeqCst);
    info.write_u8(vcpu_info::UPCALL_PENDING, 0);
    info.write_u64(vcpu_info::PENDING_SEL, 0);
    b.send(pb).unwrap();
    assert!(a.is_pending(pa));
    assert_eq!(info.read_u8(vcpu_info::UPCALL_PENDING), 0, "masked: no upcall");
    a.unmask(pa).unwrap();
    assert_eq!(info.read_u8(vcpu_info::UPCALL_PENDING), 1, "unmask re-delivers");
}

#[test]
fn binding_needs_an_unbound_port_offered_to_us() {
    let sim = Sim::new();
    let a = sim.create_domain("a");
    let b = sim.create_domain("b");
    let c = sim.create_domain("c");
    let offered_to_c = a.alloc_unbound(c.domid()).unwrap();
    assert_eq!(b.bind_interdomain(a.domid(), offered_to_c), Err(EINVAL));
    assert_eq!(b.bind_interdomain(a.domid(), Port(999)), Err(EINVAL));
    assert_eq!(b.bind_interdomain(42, Port(1)), Err(ESRCH));
    c.bind_interdomain(a.domid(), offered_to_c).unwrap();
    assert_eq!(c.bind_interdomain(a.domid(), offered_to_c), Err(EINVAL), "already bound");
}

#[test]
fn invalid_ports_are_einval() {
    let (_sim, a, _b, _pa, _pb) = connected();
    assert_eq!(a.send(Port(0)), Err(EINVAL));
    assert_eq!(a.send(Port(500)), Err(EINVAL));
    assert_eq!(a.close(Port(500)), Err(EINVAL));
    assert_eq!(a.unmask(Port(5000)), Err(EINVAL));
}

#[test]
fn a_peer_closing_its_end_leaves_ours_unbound_and_sends_are_dropped() {
    let (_sim, a, b, pa, pb) = connected();
    b.take_pending(pb);
    a.close(pa).unwrap();
    assert_eq!(b.channel(pb), Some(Channel::Unbound { remote: a.domid() }));
    assert_eq!(b.send(pb), Ok(()), "sending on an unbound port is not an error");
    assert_eq!(a.send(pa), Err(EINVAL), "the closed port is gone");
    // The domain that closed may bind again to the now-unbound end.
    let again = a.bind_interdomain(b.domid(), pb).unwrap();
    b.send(pb).unwrap();
    assert!(a.is_pending(again));
}

#[test]
fn a_destroyed_peer_leaves_our_end_unbound() {
    let (sim, a, b, _pa, pb) = connected();
    sim.destroy_domain(a.domid());
    assert_eq!(b.channel(pb), Some(Channel::Unbound { remote: a.domid() }));
    assert_eq!(b.send(pb), Ok(()));
    assert_eq!(a.send(Port(1)), Err(ESRCH), "a dead domain makes no hypercalls");
}

#[test]
fn virqs_bind_once_and_fire() {
    let sim = Sim::new();
    let a = sim.create_domain("a");
    let p = a.bind_virq(0).unwrap();
    assert_eq!(a.bind_virq(0), Err(EEXIST));
    assert_eq!(a.bind_virq(1000), Err(EINVAL));
    assert_eq!(a.send(p), Err(EINVAL), "no sending on a VIRQ");
    sim.raise_virq(a.domid(), 0);
    assert!(a.take_pending(p));
}
