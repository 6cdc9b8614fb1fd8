//! The simulator's grant-table rules: each violation is refused with Xen's `GNTST_*` code.

use tests::sim::gnttab::WINDOW_START;
use tests::sim::{Sim, SimDomain};
use xen_front::abi::DOMID_SELF;
use xen_front::platform::{Gfn, GnttabCopy, GnttabCopyPtr, GrantEntries, GrantRef, GrantStatus, GrantTables, gtf};

const GREF: GrantRef = GrantRef(8);

fn pair() -> (Sim, SimDomain, SimDomain) {
    let sim = Sim::new();
    let front = sim.create_domain("front");
    let back = sim.create_domain("back");
    (sim, front, back)
}

fn flags(dom: &SimDomain, gref: GrantRef) -> u16 {
    let (page, off) = dom.grant_entry(gref).unwrap();
    page.read_u16(off)
}

#[test]
fn a_granted_page_maps_and_both_sides_see_the_same_bytes() {
    let (_sim, front, back) = pair();
    let (gfn, page) = front.alloc_page();
    assert!(front.grant(GREF, back.domid(), gfn, false));
    let m = back.map_grant_ref(WINDOW_START, front.domid(), GREF, false).unwrap();
    m.page.write_u32(0, 0xdead_beef);
    assert_eq!(page.read_u32(0), 0xdead_beef);
    assert_eq!(flags(&front, GREF) & (gtf::READING | gtf::WRITING), gtf::READING | gtf::WRITING);
    back.unmap_grant_ref(WINDOW_START, m.handle).unwrap();
    assert_eq!(flags(&front, GREF), gtf::PERMIT_ACCESS);
}

#[test]
fn revoke_fails_while_mapped_and_succeeds_after_unmap() {
    let (_sim, front, back) = pair();
    let (gfn, _) = front.alloc_page();
    front.grant(GREF, back.domid(), gfn, true);
    let m = back.map_grant_ref(WINDOW_START, front.domid(), GREF, true).unwrap();
    assert_eq!(flags(&front, GREF) & gtf::WRITING, 0, "read-only map sets only GTF_reading");
    assert!(!front.revoke(GREF), "GTF_reading makes the compare-exchange revoke fail");
    assert_eq!(front.grant_pins(GREF), 1);
    back.unmap_grant_ref(WINDOW_START, m.handle).unwrap();
    assert!(front.revoke(GREF));
    assert_eq!(flags(&front, GREF), 0);
}

#[test]
fn an_entry_without_permit_access_is_a_general_error() {
    let (_sim, front, back) = pair();
    let (gfn, _) = front.alloc_page();
    front.grant(GREF, back.domid(), gfn, false);
    assert!(front.revoke(GREF));
    let err = back.map_grant_ref(WINDOW_START, front.domid(), GREF, false).unwrap_err();
    assert_eq!(err, GrantStatus::GENERAL_ERROR);
}

#[test]
fn a_grant_to_another_domain_is_a_general_error() {
    let (sim, front, back) = pair();
    let third = sim.create_domain("third");
    let (gfn, _) = front.alloc_page();
    front.grant(GREF, back.domid(), gfn, false);
    assert_eq!(third.map_grant_ref(WINDOW_START, front.domid(), GREF, true).unwrap_err(), GrantStatus::GENERAL_ERROR);
}

#[test]
fn a_writable_map_of_a_readonly_grant_is_a_general_error() {
    let (_sim, front, back) = pair();
    let (gfn, _) = front.alloc_page();
    front.grant(GREF, back.domid(), gfn, true);
    assert_eq!(back.map_grant_ref(WINDOW_START, front.domid(), GREF, false).unwrap_err(), GrantStatus::GENERAL_ERROR);
    assert_eq!(flags(&front, GREF), gtf::PERMIT_ACCESS | gtf::READONLY, "nothing left pinned");
}

#[test]
fn out_of_range_refs_and_unknown_domains_are_refused() {
    let (_sim, front, back) = pair();
    let past = GrantRef(front.grant_entries());
    assert_eq!(back.map_grant_ref(WINDOW_START, front.domid(), past, true).unwrap_err(), GrantStatus::BAD_GNTREF);
    assert_eq!(back.map_grant_ref(WINDOW_START, 77, GREF, true).unwrap_err(), GrantStatus::BAD_DOMAIN);
}

#[test]
fn a_frame_that_is_not_the_granters_is_a_bad_page() {
    let (_sim, front, back) = pair();
    front.grant(GREF, back.domid(), Gfn(0xdead), false);
    assert_eq!(back.map_grant_ref(WINDOW_START, front.domid(), GREF, false).unwrap_err(), GrantStatus::BAD_PAGE);
    assert_eq!(front.grant_pins(GREF), 0);
}

#[test]
fn maps_must_land_on_a_free_gfn_of_the_window() {
    let (_sim, front, back) = pair();
    let (gfn, _) = front.alloc_page();
    front.grant(GREF, back.domid(), gfn, false);
    assert_eq!(back.map_grant_ref(Gfn(5), front.domid(), GREF, false).unwrap_err(), GrantStatus::BAD_VIRT_ADDR);
    let m = back.map_grant_ref(WINDOW_START, front.domid(), GREF, false).unwrap();
    assert_eq!(back.map_grant_ref(WINDOW_START, front.domid(), GREF, false).unwrap_err(), GrantStatus::GENERAL_ERROR);
    assert_eq!(back.unmap_grant_ref(Gfn(WINDOW_START.0 + 1), m.handle).unwrap_err(), GrantStatus::GENERAL_ERROR);
    back.unmap_grant_ref(WINDOW_START, m.handle).unwrap();
    assert_eq!(back.unmap_grant_ref(WINDOW_START, m.handle).unwrap_err(), GrantStatus::BAD_HANDLE);
}

#[test]
fn copy_has_a_status_per_op_and_enforces_the_page_boundary() {
    let (_sim, front, back) = pair();
    let (fgfn, fpage) = front.alloc_page();
    let (bgfn, bpage) = back.alloc_page();
    fpage.copy_in(100, b"hello");
    front.grant(GREF, back.domid(), fgfn, true);
    let src = GnttabCopyPtr::gref(front.domid(), GREF, 100);
    let mut ops = [
        GnttabCopy::new(src, true, GnttabCopyPtr::local(bgfn, 0), false, 5),
        GnttabCopy::new(src, true, GnttabCopyPtr::local(bgfn, 4094), false, 5), // crosses the page
        GnttabCopy::new(GnttabCopyPtr::local(bgfn, 0), false, GnttabCopyPtr::gref(front.domid(), GREF, 0), true, 5), // into a r/o grant
        GnttabCopy::new(GnttabCopyPtr { u: bgfn.0, domid: front.domid(), offset: 0 }, false, src, true, 1), // frame side not DOMID_SELF
        GnttabCopy::new(src, true, GnttabCopyPtr::local(Gfn(0xbad), 0), false, 1), // not our page
        GnttabCopy::new(src, true, GnttabCopyPtr::local(bgfn, 10), false, 5),
    ];
    back.copy(&mut ops).unwrap();
    let statuses: Vec<GrantStatus> = ops.iter().map(GnttabCopy::status).collect();
    assert_eq!(
        statuses,
        [
            GrantStatus::OKAY,
            GrantStatus::BAD_COPY_ARG,
            GrantStatus::GENERAL_ERROR,
            GrantStatus::PERMISSION_DENIED,
            GrantStatus::BAD_PAGE,
            GrantStatus::OKAY
        ]
    );
    let mut out = [0u8; 5];
    bpage.copy_out(0, &mut out);
    assert_eq!(&out, b"hello");
    bpage.copy_out(10, &mut out);
    assert_eq!(&out, b"hello");
    assert_eq!(flags(&front, GREF), gtf::PERMIT_ACCESS | gtf::READONLY, "copies leave no pin behind");
    assert_eq!(DOMID_SELF, ops[0].dest.domid);
}

#[test]
fn a_dead_domains_pages_stay_alive_while_mapped() {
    let (sim, front, back) = pair();
    let (gfn, _) = front.alloc_page();
    front.grant(GREF, back.domid(), gfn, false);
    let m = back.map_grant_ref(WINDOW_START, front.domid(), GREF, false).unwrap();
    sim.destroy_domain(front.domid());
    assert!(sim.is_zombie(front.domid()), "kept alive by the mapping");
    m.page.write_u8(0, 1); // the page is still valid memory
    let (gfn2, _) = back.alloc_page();
    let mut op =
        [GnttabCopy::new(GnttabCopyPtr::gref(front.domid(), GREF, 0), true, GnttabCopyPtr::local(gfn2, 0), false, 1)];
    back.copy(&mut op).unwrap();
    assert_eq!(op[0].status(), GrantStatus::BAD_DOMAIN, "no new access to a dying domain");
    back.unmap_grant_ref(WINDOW_START, m.handle).unwrap();
    assert!(!sim.exists(front.domid()), "reaped after the last unmap");
}

#[test]
fn a_mapper_that_dies_releases_its_mappings() {
    let (sim, front, back) = pair();
    let (gfn, _) = front.alloc_page();
    front.grant(GREF, back.domid(), gfn, false);
    back.map_grant_ref(WINDOW_START, front.domid(), GREF, false).unwrap();
    assert!(!front.revoke(GREF));
    sim.destroy_domain(back.domid());
    assert!(front.revoke(GREF), "Xen unmaps a destroyed domain's foreign mappings");
    assert!(!sim.exists(back.domid()));
}

#[test]
fn query_size_reports_the_table_and_xens_maximum() {
    let (_sim, front, _back) = pair();
    let (frames, max) = front.query_size().unwrap();
    assert_eq!(front.grant_entries(), frames * 512);
    assert_eq!(max, 64);
}
