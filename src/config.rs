//! Capacities and the static memory budget, in one place.
//!
//! Everything portcullis uses is reserved at link time (`.bss`); there is no heap. The
//! budget below adds the large statics up; a host test checks it against the documented VM
//! size, and `cargo xtask` checks the built image against [`IMAGE_ALLOWANCE`].

use xen_front::platform::{Gfn, XEN_FOREIGN_WINDOW};

/// The VM size portcullis is documented to run in (`memory = 16` in the xl config).
pub const VM_MEMORY: usize = 16 << 20;
/// Space the image's code, read-only data and data may take (checked on the built ELF).
pub const IMAGE_ALLOWANCE: usize = 1 << 20;
/// Room kept for what Xen puts in our RAM besides the image: start info, command line,
/// memory map, a Qubes initramfs module, and the page tables Xen does not count as ours.
pub const BOOT_DATA_RESERVE: usize = 1 << 20;
/// The boot stack (see `src/boot/entry.s`) and its guard page.
pub const BOOT_STACK: usize = 128 * 1024 + 4096;
/// Boot page tables: PML4, PDPT, five PDs (RAM below 4 GiB and the foreign-mapping window),
/// and the guard-page table.
pub const PAGE_TABLES: usize = 8 * 4096;
/// Grant table frames we map (512 entries each).
pub const GRANT_TABLE_FRAMES: usize = 4;
/// xen-front's fixed statics: hypercall page, shared_info, two 16 KiB IST stacks (faults, double faults), IDT.
pub const PLATFORM_STATICS: usize = 4096 + 4096 + 2 * 16 * 1024 + 4096 + 256;
/// Pages of the grant pool (packet slots and ring pages): 2.5 MiB. In use at once at most:
/// 128 uplink RX buffers, 128 uplink TX frames in flight, a pass's outbox (192) and the
/// netback's copy batch (64), and vchan rings; an empty pool degrades (counted), never stalls.
pub const GRANT_POOL_PAGES: usize = 640;
/// The uplink netfront's slot tables and the pool's page table (generous).
pub const DRIVER_STATICS: usize = 64 * 1024;
/// The xenstore client: 16 request slots of 4 KiB plus its event queue (about 20 KiB).
pub const XENSTORE_STATICS: usize = 16 * 4096 + 24 * 1024;

/// The firewall engine as the appliance sizes it: one client per vif slot.
pub type ApplianceFirewall = firewall::forward::Firewall<
    { firewall::config::CONNTRACK_CAPACITY },
    { firewall::config::CONNTRACK_INDEX_BUCKETS },
    { xen_front::netback::MAX_VIFS },
>;

/// The firewall engine's static (conntrack table and index, per-client rules).
pub const FIREWALL_STATICS: usize = core::mem::size_of::<ApplianceFirewall>();
/// The client netback and the data path (pipeline scratch, outbox).
pub const NETBACK_STATICS: usize =
    core::mem::size_of::<xen_front::netback::Netback>() + core::mem::size_of::<crate::datapath::Datapath>();
/// The QubesDB store (~816 KiB: 4096 keys, 768 KiB of paths and values) and the Qubes link
/// (QubesDB client, qrexec agent, their vchan endpoints, a scratch rule set).
pub const QUBES_STATICS: usize = 960 * 1024;

/// Frames at the start of the foreign-mapping window that the client netback maps into.
pub const NETBACK_WINDOW_FRAMES: u64 = 256;
/// Frames one vchan client maps at most: the control page and two order-16 rings.
pub const VCHAN_WINDOW_FRAMES: u32 = xen_front::vchan::layout::MAX_PAGES as u32;

/// The `slot`th vchan client window, after the netback's frames. Each GFN is mapped by one
/// endpoint only (a GFN mapped twice crashes the domain).
pub const fn vchan_window(slot: u64) -> (Gfn, u32) {
    let start = XEN_FOREIGN_WINDOW.0.0 + NETBACK_WINDOW_FRAMES + slot * VCHAN_WINDOW_FRAMES as u64;
    (Gfn(start), VCHAN_WINDOW_FRAMES)
}

/// QubesDB's vchan (client of dom0 port 111).
pub const QUBESDB_WINDOW: (Gfn, u32) = vchan_window(0);
/// The qrexec data vchans (client of dom0's `qrexec-client`), one per request slot.
pub const QREXEC_DATA_WINDOWS: [(Gfn, u32); qubes::qrexec::agent::MAX_REQUESTS] =
    [vchan_window(1), vchan_window(2), vchan_window(3), vchan_window(4)];
/// The vchan test mode's client channels.
pub const VCHAN_TEST_WINDOWS: [(Gfn, u32); crate::vchan_test::MAX_TEST_CHANNELS] =
    [vchan_window(5), vchan_window(6), vchan_window(7), vchan_window(8)];

/// One line of the budget.
#[derive(Clone, Copy, Debug)]
pub struct BudgetLine {
    /// What it is.
    pub what: &'static str,
    /// Bytes.
    pub bytes: usize,
}

/// The static memory budget, line by line.
pub fn budget() -> [BudgetLine; 11] {
    [
        BudgetLine { what: "image (code+data) allowance", bytes: IMAGE_ALLOWANCE },
        BudgetLine { what: "boot stack + guard", bytes: BOOT_STACK },
        BudgetLine { what: "page tables", bytes: PAGE_TABLES },
        BudgetLine { what: "grant table frames", bytes: GRANT_TABLE_FRAMES * 4096 },
        BudgetLine { what: "platform statics", bytes: PLATFORM_STATICS },
        BudgetLine { what: "xenstore client", bytes: XENSTORE_STATICS },
        BudgetLine { what: "grant pool", bytes: GRANT_POOL_PAGES * 4096 },
        BudgetLine { what: "driver statics", bytes: DRIVER_STATICS },
        BudgetLine { what: "firewall engine", bytes: FIREWALL_STATICS },
        BudgetLine { what: "netback + data path", bytes: NETBACK_STATICS },
        BudgetLine { what: "QubesDB store + Qubes link", bytes: QUBES_STATICS },
    ]
}

/// Total of [`budget`].
pub fn budget_total() -> usize {
    budget().iter().map(|l| l.bytes).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_budget_fits_the_documented_vm_with_room_for_stack_and_boot_data() {
        assert!(budget_total() + BOOT_DATA_RESERVE <= VM_MEMORY, "{} bytes", budget_total());
    }

    #[test]
    fn driver_budget_covers_the_netfront_and_the_pool() {
        let pool = core::mem::size_of::<grant_pool::GrantPool<grant_pool::TableFrames, GRANT_POOL_PAGES>>();
        assert!(core::mem::size_of::<xen_front::netfront::Netfront>() + pool <= DRIVER_STATICS);
    }

    #[test]
    fn qubes_budget_covers_the_store_and_the_link() {
        type Pool = grant_pool::GrantPool<grant_pool::TableFrames, GRANT_POOL_PAGES>;
        let store = core::mem::size_of::<qubes::qubesdb::store::DefaultStore>();
        let link = core::mem::size_of::<crate::qubes_link::QubesLink<Pool>>();
        assert!(store + link <= QUBES_STATICS, "store {store} + link {link}");
    }

    #[test]
    fn vchan_windows_are_disjoint_inside_the_foreign_window_and_after_the_netback() {
        let mut all = vec![QUBESDB_WINDOW];
        all.extend(QREXEC_DATA_WINDOWS);
        all.extend(VCHAN_TEST_WINDOWS);
        let (start, frames) = XEN_FOREIGN_WINDOW;
        for (i, &(g, n)) in all.iter().enumerate() {
            assert_eq!(n as usize, xen_front::vchan::layout::MAX_PAGES);
            assert!(g.0 >= start.0 + NETBACK_WINDOW_FRAMES);
            assert!(g.0 + u64::from(n) <= start.0 + u64::from(frames));
            for &(h, m) in &all[i + 1..] {
                assert!(g.0 + u64::from(n) <= h.0 || h.0 + u64::from(m) <= g.0, "{g:?} overlaps {h:?}");
            }
        }
    }

    #[test]
    fn xenstore_budget_covers_the_real_client() {
        assert!(core::mem::size_of::<xen_front::xenstore::Client>() <= XENSTORE_STATICS);
    }
}
