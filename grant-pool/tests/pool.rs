//! The pool's state transitions, its grant entries as Xen reads them, and its accounting
//! under random sequences of lends, reclaims and peer mappings.

use std::sync::atomic::Ordering;

use grant_pool::grant::{grant_entry, gtf};
use grant_pool::{
    Access, GrantEntries, GrantPool, GrantRef, PAGE_SIZE, PageCell, PoolCounts, PoolError, Private, Slot, TableFrames,
};
use proptest::prelude::*;

const N: usize = 16;
const FIRST: u32 = 8;
const PEER: u16 = 7;

fn table(frames: usize) -> TableFrames {
    TableFrames::new(Box::leak((0..frames).map(|_| PageCell::new()).collect::<Vec<_>>().into_boxed_slice()))
}

fn pool() -> GrantPool<TableFrames, N> {
    let pages = Box::leak(Box::new([const { PageCell::new() }; N]));
    GrantPool::from_static(table(1), FIRST, pages, |addr| addr as u64 >> 12).expect("pool")
}

/// The entry as Xen sees it: (flags, domid, frame).
fn entry(pool: &GrantPool<TableFrames, N>, gref: GrantRef) -> (u16, u16, u32) {
    let (page, off) = pool.entries().grant_entry(gref).unwrap();
    (
        page.read_u16(off + grant_entry::FLAGS),
        page.read_u16(off + grant_entry::DOMID),
        page.read_u32(off + grant_entry::FRAME),
    )
}

/// The peer maps the page (Xen sets `GTF_reading`, and `GTF_writing` for a writable map).
fn peer_maps(pool: &GrantPool<TableFrames, N>, gref: GrantRef, write: bool) {
    let (page, off) = pool.entries().grant_entry(gref).unwrap();
    let bits = gtf::READING | if write { gtf::WRITING } else { 0 };
    page.atomic_u16(off).fetch_or(bits, Ordering::SeqCst);
}

fn peer_unmaps(pool: &GrantPool<TableFrames, N>, gref: GrantRef) {
    let (page, off) = pool.entries().grant_entry(gref).unwrap();
    page.atomic_u16(off).fetch_and(!(gtf::READING | gtf::WRITING), Ordering::SeqCst);
}

fn counts(free: u32, private: u32, lent: u32, shared: u32, quarantined: u32) -> PoolCounts {
    PoolCounts { capacity: N as u32, free, private, lent, shared, quarantined }
}

#[test]
fn a_new_pool_is_all_free_with_invalid_entries() {
    let p = pool();
    assert_eq!(p.counts(), counts(16, 0, 0, 0, 0));
    for i in 0..N as u16 {
        assert_eq!(p.gref_of(i), GrantRef(FIRST + u32::from(i)));
        assert_eq!(entry(&p, p.gref_of(i)).0, 0);
    }
}

#[test]
fn take_and_put_back() {
    let mut p = pool();
    let mut s = p.take().unwrap();
    assert_eq!(p.counts(), counts(15, 1, 0, 0, 0));
    s.bytes_mut()[..4].copy_from_slice(b"abcd");
    assert_eq!(&s.bytes()[..4], b"abcd");
    assert_eq!(s.gfn(), s.bytes().as_ptr() as u64 >> 12);
    p.put_back(s);
    assert_eq!(p.counts(), counts(16, 0, 0, 0, 0));
}

#[test]
fn lend_writes_the_entry_frame_and_domid_then_flags() {
    let mut p = pool();
    let s = p.take().unwrap();
    let gfn = s.gfn();
    let ro = p.lend(s, PEER, Access::ReadOnly);
    assert_eq!(entry(&p, ro.gref()), (gtf::PERMIT_ACCESS | gtf::READONLY, PEER, gfn as u32));
    assert_eq!((ro.grantee(), ro.access()), (PEER, Access::ReadOnly));
    let s2 = p.take().unwrap();
    let rw = p.lend(s2, PEER + 1, Access::Writable);
    assert_eq!(entry(&p, rw.gref()).0, gtf::PERMIT_ACCESS);
    assert_eq!(entry(&p, rw.gref()).1, PEER + 1);
    assert_eq!(p.counts(), counts(14, 0, 2, 0, 0));
    let back = p.reclaim(ro).unwrap();
    assert_eq!(entry(&p, p.gref_of(back.index())).0, 0, "reclaim invalidates the entry");
    assert_eq!(p.counts(), counts(14, 1, 1, 0, 0));
    p.put_back(back);
    let back = p.reclaim(rw).unwrap();
    p.put_back(back);
    assert_eq!(p.counts(), counts(16, 0, 0, 0, 0));
    assert_eq!(p.stats().grants, 2);
    assert_eq!(p.stats().reclaims, 2);
}

#[test]
fn reclaim_fails_while_the_peer_maps_then_quarantine_and_retry() {
    let mut p = pool();
    let s = p.take().unwrap();
    let lent = p.lend(s, PEER, Access::Writable);
    let gref = lent.gref();
    peer_maps(&p, gref, true);
    let lent = p.reclaim(lent).expect_err("still mapped");
    assert_eq!(p.stats().reclaims_busy, 1);
    assert_eq!(entry(&p, gref).0 & gtf::PERMIT_ACCESS, gtf::PERMIT_ACCESS, "the grant stays valid");
    p.quarantine(lent);
    assert_eq!(p.counts(), counts(15, 0, 0, 0, 1));
    // Never handed out meanwhile.
    let mut taken: Vec<Slot<Private>> = (0..15).map(|_| p.take().unwrap()).collect();
    assert!(p.take().is_none());
    assert_eq!(p.stats().exhausted, 1);
    assert!(taken.iter().all(|s| p.gref_of(s.index()) != gref));
    assert_eq!(p.retry_quarantined(), 0, "still mapped");
    peer_unmaps(&p, gref);
    assert_eq!(p.retry_quarantined(), 1);
    assert_eq!(entry(&p, gref).0, 0);
    assert_eq!(p.counts(), counts(1, 15, 0, 0, 0));
    for s in taken.drain(..) {
        p.put_back(s);
    }
    assert_eq!(p.counts(), counts(16, 0, 0, 0, 0));
    assert_eq!((p.stats().quarantined, p.stats().released), (1, 1));
}

#[test]
fn a_readonly_copy_in_progress_also_blocks_the_reclaim() {
    let mut p = pool();
    let s = p.take().unwrap();
    let lent = p.lend(s, PEER, Access::ReadOnly);
    peer_maps(&p, lent.gref(), false);
    let lent = p.reclaim(lent).unwrap_err();
    peer_unmaps(&p, lent.gref());
    let back = p.reclaim(lent).unwrap();
    p.put_back(back);
}

#[test]
fn share_zeroes_and_grants_writable_for_a_connection() {
    let mut p = pool();
    let mut s = p.take().unwrap();
    s.bytes_mut().fill(0xee);
    let shared = p.share(s, PEER);
    assert_eq!(p.counts(), counts(15, 0, 0, 1, 0));
    let page = shared.page();
    assert!((0..PAGE_SIZE).step_by(8).all(|o| page.read_u64(o) == 0), "old bytes never reach the peer");
    assert_eq!(entry(&p, shared.gref()), (gtf::PERMIT_ACCESS, PEER, (page.addr() >> 12) as u32));
    page.write_u32(0, 42);
    peer_maps(&p, shared.gref(), true);
    let shared = p.unshare(shared).unwrap_err();
    p.quarantine_shared(shared);
    assert_eq!(p.counts(), counts(15, 0, 0, 0, 1));
    peer_unmaps(&p, p.gref_of(0));
    assert_eq!(p.retry_quarantined(), 1);
    let s = p.take().unwrap();
    let shared = p.share(s, PEER);
    let back = p.unshare(shared).unwrap();
    assert_eq!(back.bytes()[0], 0);
    p.put_back(back);
    assert_eq!(p.counts(), counts(16, 0, 0, 0, 0));
}

#[test]
fn a_peer_changing_flags_during_the_revoke_is_seen() {
    // The compare-exchange reloads when Xen changed the flags between load and exchange; here
    // the peer pinned it before the reclaim, unpinned after: first refused, then accepted.
    let mut p = pool();
    let s = p.take().unwrap();
    let lent = p.lend(s, PEER, Access::Writable);
    peer_maps(&p, lent.gref(), false);
    let lent = p.reclaim(lent).unwrap_err();
    peer_unmaps(&p, lent.gref());
    assert!(p.reclaim(lent).is_ok());
}

#[test]
fn construction_checks_the_table_and_the_refs() {
    let pages = Box::leak(Box::new([const { PageCell::new() }; N]));
    let small = GrantPool::<_, N>::from_static(table(1), 500, pages, |a| a as u64 >> 12);
    assert_eq!(small.err(), Some(PoolError::TableTooSmall { needed: 516, entries: 512 }));
    let pages = Box::leak(Box::new([const { PageCell::new() }; N]));
    let reserved = GrantPool::<_, N>::from_static(table(1), 1, pages, |a| a as u64 >> 12);
    assert_eq!(reserved.err(), Some(PoolError::ReservedRef(1)));
    // Safety: the addresses are rejected before anything touches them.
    let bad = unsafe { GrantPool::<_, 2>::from_pages(table(1), 8, |i| (0x1000 * i + 1, 0)) };
    assert!(matches!(bad.err(), Some(PoolError::BadPage(_))));
}

#[test]
fn a_second_pool_starts_from_invalid_entries() {
    // Stale valid entries from an earlier life (e.g. a previous table user) grant nothing.
    let t = table(1);
    let (page, off) = t.grant_entry(GrantRef(9)).unwrap();
    page.write_u16(off, gtf::PERMIT_ACCESS);
    let pages = Box::leak(Box::new([const { PageCell::new() }; N]));
    let p = GrantPool::<_, N>::from_static(t, FIRST, pages, |a| a as u64 >> 12).unwrap();
    assert_eq!(entry(&p, GrantRef(9)).0, 0);
}

#[derive(Clone, Debug)]
enum Op {
    Take,
    PutBack(usize),
    Lend(usize, bool),
    Reclaim(usize),
    PeerMap(usize),
    PeerUnmap(usize),
    Quarantine(usize),
    Retry,
    Share(usize),
    Unshare(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Take),
        (0..N).prop_map(Op::PutBack),
        (0..N, any::<bool>()).prop_map(|(i, w)| Op::Lend(i, w)),
        (0..N).prop_map(Op::Reclaim),
        (0..N).prop_map(Op::PeerMap),
        (0..N).prop_map(Op::PeerUnmap),
        (0..N).prop_map(Op::Quarantine),
        Just(Op::Retry),
        (0..N).prop_map(Op::Share),
        (0..N).prop_map(Op::Unshare),
    ]
}

proptest! {
    /// Random lend/reclaim/peer-map sequences: every page is in exactly one state, a page is
    /// never handed out while the peer may still touch it, and after the peer lets go and we
    /// reclaim everything, the pool is whole again.
    #[test]
    fn accounting_holds_under_random_sequences(ops in proptest::collection::vec(op(), 1..200)) {
        let mut p = pool();
        let mut private: Vec<Slot<Private>> = Vec::new();
        let mut lent = Vec::new();
        let mut shared = Vec::new();
        let mut mapped: Vec<GrantRef> = Vec::new();
        for op in ops {
            match op {
                Op::Take => {
                    if let Some(s) = p.take() {
                        prop_assert!(!mapped.contains(&p.gref_of(s.index())), "handed out a mapped page");
                        private.push(s);
                    }
                }
                Op::PutBack(i) if !private.is_empty() => {
                    let s = private.swap_remove(i % private.len());
                    p.put_back(s);
                }
                Op::Lend(i, w) if !private.is_empty() => {
                    let s = private.swap_remove(i % private.len());
                    lent.push(p.lend(s, PEER, if w { Access::Writable } else { Access::ReadOnly }));
                }
                Op::Reclaim(i) if !lent.is_empty() => {
                    let l = lent.swap_remove(i % lent.len());
                    let gref = l.gref();
                    match p.reclaim(l) {
                        Ok(s) => { prop_assert!(!mapped.contains(&gref)); private.push(s) }
                        Err(l) => { prop_assert!(mapped.contains(&gref)); lent.push(l) }
                    }
                }
                Op::PeerMap(i) if !lent.is_empty() => {
                    let l = &lent[i % lent.len()];
                    if !mapped.contains(&l.gref()) {
                        peer_maps(&p, l.gref(), l.access() == Access::Writable);
                        mapped.push(l.gref());
                    }
                }
                Op::PeerUnmap(i) if !mapped.is_empty() => {
                    let g = mapped.swap_remove(i % mapped.len());
                    peer_unmaps(&p, g);
                }
                Op::Quarantine(i) if !lent.is_empty() => {
                    let l = lent.swap_remove(i % lent.len());
                    p.quarantine(l);
                }
                Op::Retry => { p.retry_quarantined(); }
                Op::Share(i) if !private.is_empty() => {
                    let s = private.swap_remove(i % private.len());
                    shared.push(p.share(s, PEER));
                }
                Op::Unshare(i) if !shared.is_empty() => {
                    let s = shared.swap_remove(i % shared.len());
                    match p.unshare(s) { Ok(s) => private.push(s), Err(s) => shared.push(s) }
                }
                _ => {}
            }
            let c = p.counts();
            prop_assert!(c.balanced(), "{:?}", c);
            prop_assert_eq!(c.private as usize, private.len());
            prop_assert_eq!(c.lent as usize, lent.len());
            prop_assert_eq!(c.shared as usize, shared.len());
        }
        // The peer goes away; everything comes home.
        for g in mapped.drain(..) { peer_unmaps(&p, g); }
        for l in lent.drain(..) { private.push(p.reclaim(l).map_err(|_| ()).unwrap()); }
        for s in shared.drain(..) { private.push(p.unshare(s).map_err(|_| ()).unwrap()); }
        p.retry_quarantined();
        for s in private.drain(..) { p.put_back(s); }
        prop_assert_eq!(p.counts(), counts(16, 0, 0, 0, 0));
    }
}
