//! Capacities and the static memory budget, in one place.
//!
//! Everything portcullis uses is reserved at link time (`.bss`); there is no heap. The
//! budget below adds the large statics up; a host test checks it against the documented VM
//! size, and `cargo xtask` checks the built image against [`IMAGE_ALLOWANCE`].

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
/// xen-front's fixed statics: hypercall page, shared_info, three 16 KiB IST stacks, IDT.
pub const PLATFORM_STATICS: usize = 4096 + 4096 + 3 * 16 * 1024 + 4096 + 256;
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

/// One line of the budget.
#[derive(Clone, Copy, Debug)]
pub struct BudgetLine {
    /// What it is.
    pub what: &'static str,
    /// Bytes.
    pub bytes: usize,
}

/// The static memory budget, line by line.
pub fn budget() -> [BudgetLine; 10] {
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
    fn xenstore_budget_covers_the_real_client() {
        assert!(core::mem::size_of::<xen_front::xenstore::Client>() <= XENSTORE_STATICS);
    }
}
