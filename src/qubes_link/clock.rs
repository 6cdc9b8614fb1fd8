//! The wall clock dom0 sets with `qubes.SetDateTime`: the offset to Xen's wall clock, and
//! dates for log lines.

use core::fmt;

/// The offset (ns) that makes `xen_wall_ns` (Xen's wall clock now, ns since the epoch) read
/// `target_secs`. Saturates instead of overflowing on absurd inputs.
pub fn wall_offset_ns(target_secs: i64, xen_wall_ns: i128) -> i64 {
    let target = i128::from(target_secs) * 1_000_000_000;
    (target - xen_wall_ns).clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Seconds since the Unix epoch, shown as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Utc(pub i64);

/// Howard Hinnant's `civil_from_days`: (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

impl fmt::Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // i64 seconds span far more than 4-digit years; very large values print as they are.
        let days = self.0.div_euclid(86_400);
        let secs = self.0.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(f, "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qubes::qrexec::time::parse_iso8601;

    #[test]
    fn dates_print_and_parse_back() {
        assert_eq!(Utc(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(Utc(951_782_400).to_string(), "2000-02-29T00:00:00Z");
        assert_eq!(Utc(1_893_553_445).to_string(), "2030-01-02T03:04:05Z");
        assert_eq!(Utc(-1).to_string(), "1969-12-31T23:59:59Z");
        for t in (0..4_102_444_800i64).step_by(7_654_321) {
            assert_eq!(parse_iso8601(Utc(t).to_string().as_bytes()), Ok(t), "{t}");
        }
    }

    #[test]
    fn offsets() {
        assert_eq!(wall_offset_ns(100, 99_500_000_000), 500_000_000);
        assert_eq!(wall_offset_ns(0, 5_000_000_000), -5_000_000_000);
        assert_eq!(wall_offset_ns(i64::MAX, 0), i64::MAX);
        assert_eq!(wall_offset_ns(i64::MIN, i128::from(i64::MAX)), i64::MIN);
    }
}
