//! Event delivery: the 2-level pending bitmaps in `shared_info`, harvested by the poll loop.
//!
//! The upcall handler only counts and returns with interrupts off (see `arch::idt`); the loop calls
//! [`PendingEvents::harvest`] after every wake-up, which moves the pending, unmasked bits
//! into a private bitmap, and each driver then asks [`PendingEvents::take`] about its ports.
//! Bits are cleared atomically because Xen sets them concurrently.

use core::sync::atomic::Ordering;

use grant_pool::SharedPage;

use crate::abi::{shared_info as si, vcpu_info};
use crate::platform::Port;

/// Number of ports of the 2-level ABI on x86-64.
pub const NR_PORTS: u32 = 4096;

/// Ports seen pending and not yet taken by their driver.
pub struct PendingEvents {
    shared_info: SharedPage,
    harvested: [u64; 64],
    /// Harvest passes that found at least one event.
    pub harvests: u64,
}

impl PendingEvents {
    /// Events of vCPU 0 in `shared_info`.
    pub fn new(shared_info: SharedPage) -> Self {
        PendingEvents { shared_info, harvested: [0; 64], harvests: 0 }
    }

    /// Collects every pending, unmasked port. Returns whether any was found.
    pub fn harvest(&mut self) -> bool {
        let page = self.shared_info;
        // Clear the upcall flag first: an event after this point sets it again and the
        // next `sti; hlt` wakes at once.
        page.atomic_u8(vcpu_info::UPCALL_PENDING).store(0, Ordering::SeqCst);
        let mut sel = page.atomic_u64(vcpu_info::PENDING_SEL).swap(0, Ordering::SeqCst);
        let mut found = false;
        while sel != 0 {
            let word = sel.trailing_zeros() as usize;
            sel &= sel - 1;
            let pending = page.atomic_u64(si::EVTCHN_PENDING + word * 8);
            let mask = page.read_u64(si::EVTCHN_MASK + word * 8);
            let bits = pending.load(Ordering::SeqCst) & !mask;
            if bits != 0 {
                pending.fetch_and(!bits, Ordering::SeqCst);
                self.harvested[word] |= bits;
                found = true;
            }
        }
        if found {
            self.harvests += 1;
        }
        found
    }

    /// Whether `port` fired since the last `take` of it (clears it).
    pub fn take(&mut self, port: Port) -> bool {
        if port.0 == 0 || port.0 >= NR_PORTS {
            return false;
        }
        let (w, b) = ((port.0 / 64) as usize, port.0 % 64);
        let was = self.harvested[w] & (1 << b) != 0;
        self.harvested[w] &= !(1 << b);
        was
    }

    /// Whether any harvested port is still untaken.
    pub fn any(&self) -> bool {
        self.harvested.iter().any(|&w| w != 0)
    }

    /// Forgets harvested events of ports nobody takes (a closed port's late event).
    pub fn clear_untaken(&mut self) {
        self.harvested = [0; 64];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grant_pool::PageCell;

    fn raise(page: SharedPage, port: u32) {
        // What Xen does (event_2l.c): pending bit, then selector, then upcall flag.
        let (w, b) = ((port / 64) as usize, port % 64);
        page.atomic_u64(si::EVTCHN_PENDING + w * 8).fetch_or(1 << b, Ordering::SeqCst);
        page.atomic_u64(vcpu_info::PENDING_SEL).fetch_or(1 << w, Ordering::SeqCst);
        page.write_u8(vcpu_info::UPCALL_PENDING, 1);
    }

    #[test]
    fn harvest_moves_unmasked_pending_ports_and_clears_flags() {
        let page = SharedPage::from_static(Box::leak(Box::new(PageCell::new())));
        let mut ev = PendingEvents::new(page);
        raise(page, 3);
        raise(page, 130);
        // Port 131 masked: stays pending in shared_info, not harvested.
        page.write_u64(si::EVTCHN_MASK + 2 * 8, 1 << 3);
        raise(page, 131);
        assert!(ev.harvest());
        assert_eq!(page.read_u8(vcpu_info::UPCALL_PENDING), 0);
        assert_eq!(page.read_u64(vcpu_info::PENDING_SEL), 0);
        assert!(ev.take(Port(3)));
        assert!(!ev.take(Port(3)), "taken once");
        assert!(ev.take(Port(130)));
        assert!(!ev.take(Port(131)));
        assert_eq!(page.read_u64(si::EVTCHN_PENDING + 2 * 8), 1 << 3, "masked port still pending");
        assert!(!ev.harvest());
    }

    #[test]
    fn out_of_range_ports_are_never_pending() {
        let page = SharedPage::from_static(Box::leak(Box::new(PageCell::new())));
        let mut ev = PendingEvents::new(page);
        assert!(!ev.take(Port(0)));
        assert!(!ev.take(Port(NR_PORTS)));
        assert!(!ev.take(Port(u32::MAX)));
    }
}
