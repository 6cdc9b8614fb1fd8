//! The time `qubes.SetDateTime` receives on stdin: `date -u -Iseconds` output, e.g.
//! `2014-09-29T22:59:21+0000` (older coreutils) or `2014-09-29T22:59:21+00:00`, followed by a
//! newline.

/// Why a time does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadTime;

fn num(s: &[u8]) -> Result<i64, BadTime> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return Err(BadTime);
    }
    Ok(s.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS` with a `Z`, `±HHMM` or `±HH:MM` offset (or none, meaning
/// UTC), surrounded by optional ASCII whitespace; returns seconds since the Unix epoch.
///
/// # Errors
///
/// [`BadTime`] for anything else, including out-of-range fields.
pub fn parse_iso8601(text: &[u8]) -> Result<i64, BadTime> {
    let t = text.trim_ascii();
    if t.len() < 19 || t[4] != b'-' || t[7] != b'-' || !matches!(t[10], b'T' | b' ') || t[13] != b':' || t[16] != b':' {
        return Err(BadTime);
    }
    let (y, mo, d) = (num(&t[0..4])?, num(&t[5..7])?, num(&t[8..10])?);
    let (h, mi, s) = (num(&t[11..13])?, num(&t[14..16])?, num(&t[17..19])?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 60 {
        return Err(BadTime);
    }
    let offset = match &t[19..] {
        b"" | b"Z" => 0,
        [sign @ (b'+' | b'-'), hh @ ..] => {
            let (oh, om) = match hh {
                [a, b, c, d] => (num(&[*a, *b])?, num(&[*c, *d])?),
                [a, b, b':', c, d] => (num(&[*a, *b])?, num(&[*c, *d])?),
                _ => return Err(BadTime),
            };
            if oh > 23 || om > 59 {
                return Err(BadTime);
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return Err(BadTime),
    };
    Ok(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dom0_sends() {
        assert_eq!(parse_iso8601(b"2014-09-29T22:59:21+0000\n"), Ok(1_412_031_561));
        assert_eq!(parse_iso8601(b"2014-09-29T22:59:21+00:00"), Ok(1_412_031_561));
        assert_eq!(parse_iso8601(b"2014-09-29T22:59:21Z"), Ok(1_412_031_561));
        assert_eq!(parse_iso8601(b"2014-09-30T00:59:21+02:00"), Ok(1_412_031_561));
        assert_eq!(parse_iso8601(b"2014-09-29T21:59:21-0100"), Ok(1_412_031_561));
        assert_eq!(parse_iso8601(b"1970-01-01T00:00:00+0000"), Ok(0));
        assert_eq!(parse_iso8601(b"2024-02-29T12:00:00+0000"), Ok(1_709_208_000));
    }

    #[test]
    fn rejects_malformed_and_out_of_range() {
        for bad in [
            &b""[..],
            b"yesterday",
            b"2014-09-29",
            b"2014-13-01T00:00:00Z",
            b"2014-02-29T00:00:00Z",
            b"2014-09-31T00:00:00Z",
            b"2014-09-29T24:00:00Z",
            b"2014-09-29T22:60:00Z",
            b"2014-09-29T22:59:21+25:00",
            b"2014-09-29T22:59:21+000",
            b"2014-09-29T22:59:21 junk",
            b"+014-09-29T22:59:21Z",
            b"2014-09-29T22:5:211Z",
        ] {
            assert_eq!(parse_iso8601(bad), Err(BadTime), "{}", std::string::String::from_utf8_lossy(bad));
        }
    }
}
