//! Unit tests of the netback's own pieces (the protocol runs against the simulated Xen in
//! `tests/tests/netback*.rs`).

use super::*;

#[test]
fn a_netback_fits_its_documented_size() {
    let size = core::mem::size_of::<Netback>();
    assert!(size < 96 * 1024, "Netback is {size} bytes");
}

#[test]
fn window_gfns_are_distinct_per_slot_and_ring() {
    let base = Gfn(0x10_0000);
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..MAX_VIFS {
        let (a, b) = link::window_gfns(base, i);
        assert!(seen.insert(a.0) && seen.insert(b.0));
        assert!(b.0 < base.0 + u64::from(WINDOW_FRAMES));
    }
}

#[test]
fn a_new_netback_holds_nothing() {
    let nb = Box::new(Netback::new(Gfn(0x10_0000)));
    assert!(nb.resources().is_zero());
    assert_eq!(nb.vifs_in_use(), 0);
}
