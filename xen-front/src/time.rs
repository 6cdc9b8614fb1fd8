//! Time from Xen's pvclock: monotonic system time (ns since the domain's boot) and the wall
//! clock, both read from `shared_info` under their seqlocks.

use grant_pool::SharedPage;

use crate::abi::{shared_info as si, vcpu_info, vcpu_time};

/// Nanoseconds of Xen system time.
pub type Nanos = u64;

/// Converts a TSC delta to nanoseconds with pvclock's shift and 32.32 multiplier.
pub fn scale_delta(delta: u64, mul: u32, shift: i8) -> u64 {
    let d = if shift >= 0 { delta << shift } else { delta >> -shift };
    ((u128::from(d) * u128::from(mul)) >> 32) as u64
}

/// Monotonic time from `vcpu_info[0].time`, given a TSC reader.
pub fn system_time(shared_info: &SharedPage, rdtsc: impl Fn() -> u64) -> Nanos {
    let base = vcpu_info::TIME;
    loop {
        let v1 = shared_info.read_u32(base + vcpu_time::VERSION);
        grant_pool::shared::read_barrier();
        let tsc_ts = shared_info.read_u64(base + vcpu_time::TSC_TIMESTAMP);
        let sys = shared_info.read_u64(base + vcpu_time::SYSTEM_TIME);
        let mul = shared_info.read_u32(base + vcpu_time::TSC_TO_SYSTEM_MUL);
        let shift = shared_info.read_u8(base + vcpu_time::TSC_SHIFT) as i8;
        let tsc = rdtsc();
        grant_pool::shared::read_barrier();
        let v2 = shared_info.read_u32(base + vcpu_time::VERSION);
        if v1 == v2 && v1 & 1 == 0 {
            return sys.wrapping_add(scale_delta(tsc.wrapping_sub(tsc_ts), mul, shift));
        }
    }
}

/// Wall-clock time at Xen system time 0: `(seconds, nanoseconds)` since the Unix epoch.
pub fn wall_clock_base(shared_info: &SharedPage) -> (u64, u32) {
    loop {
        let v1 = shared_info.read_u32(si::WC_VERSION);
        grant_pool::shared::read_barrier();
        let sec = u64::from(shared_info.read_u32(si::WC_SEC)) | u64::from(shared_info.read_u32(si::WC_SEC_HI)) << 32;
        let nsec = shared_info.read_u32(si::WC_NSEC);
        grant_pool::shared::read_barrier();
        let v2 = shared_info.read_u32(si::WC_VERSION);
        if v1 == v2 && v1 & 1 == 0 {
            return (sec, nsec);
        }
    }
}

/// Wall-clock seconds since the Unix epoch at system time `now`, plus an offset set by
/// `qubes.SetDateTime` (in ns, may be negative).
pub fn wall_clock_secs(shared_info: &SharedPage, now: Nanos, offset_ns: i64) -> u64 {
    let (sec, nsec) = wall_clock_base(shared_info);
    let total = i128::from(sec) * 1_000_000_000 + i128::from(nsec) + i128::from(now) + i128::from(offset_ns);
    (total.max(0) / 1_000_000_000) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use grant_pool::PageCell;

    #[test]
    fn pvclock_scaling() {
        // mul = 2^31 means 0.5 ns per (shifted) tick.
        assert_eq!(scale_delta(1000, 1 << 31, 0), 500);
        assert_eq!(scale_delta(1000, 1 << 31, 1), 1000);
        assert_eq!(scale_delta(1000, 1 << 31, -1), 250);
        assert_eq!(
            scale_delta(u64::MAX >> 1, u32::MAX, 1),
            ((u128::from(u64::MAX - 1) * u128::from(u32::MAX)) >> 32) as u64
        );
    }

    #[test]
    fn system_time_adds_the_scaled_tsc_delta() {
        let p = SharedPage::from_static(Box::leak(Box::new(PageCell::new())));
        let b = vcpu_info::TIME;
        p.write_u32(b + vcpu_time::VERSION, 2);
        p.write_u64(b + vcpu_time::TSC_TIMESTAMP, 1_000);
        p.write_u64(b + vcpu_time::SYSTEM_TIME, 5_000_000);
        p.write_u32(b + vcpu_time::TSC_TO_SYSTEM_MUL, 1 << 31);
        p.write_u8(b + vcpu_time::TSC_SHIFT, 1);
        assert_eq!(system_time(&p, || 3_000), 5_000_000 + 2_000);
        p.write_u32(si::WC_SEC, 1_700_000_000);
        p.write_u32(si::WC_NSEC, 500_000_000);
        assert_eq!(wall_clock_secs(&p, 1_600_000_000, 0), 1_700_000_002);
        assert_eq!(wall_clock_secs(&p, 0, -3_000_000_000), 1_699_999_997);
    }
}
