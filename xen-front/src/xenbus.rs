//! The xenbus device states (`io/xenbus.h`) written as decimal strings to `<dir>/state`.

/// `enum xenbus_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum XenbusState {
    /// 0: unknown (or the node is gone).
    Unknown,
    /// 1: created by the toolstack, driver not ready.
    Initialising,
    /// 2: backend ready for the frontend's details.
    InitWait,
    /// 3: frontend details written (Linux frontends skip it).
    Initialised,
    /// 4: connected.
    Connected,
    /// 5: closing down.
    Closing,
    /// 6: closed.
    Closed,
    /// 7: reconfiguring (unused by netif).
    Reconfiguring,
    /// 8: reconfigured (unused by netif).
    Reconfigured,
}

impl XenbusState {
    /// Parses a peer's `state` value: a decimal number 0–8, tolerating surrounding
    /// whitespace or a trailing NUL. Anything else is `None` (a garbage state is treated as
    /// the peer being broken, never as a valid transition).
    pub fn parse(value: &[u8]) -> Option<Self> {
        let trimmed = value.trim_ascii();
        let trimmed = trimmed.strip_suffix(b"\0").unwrap_or(trimmed);
        let [digit] = trimmed else { return None };
        Some(match digit {
            b'0' => XenbusState::Unknown,
            b'1' => XenbusState::Initialising,
            b'2' => XenbusState::InitWait,
            b'3' => XenbusState::Initialised,
            b'4' => XenbusState::Connected,
            b'5' => XenbusState::Closing,
            b'6' => XenbusState::Closed,
            b'7' => XenbusState::Reconfiguring,
            b'8' => XenbusState::Reconfigured,
            _ => return None,
        })
    }

    /// The value to write.
    pub fn as_str(self) -> &'static str {
        match self {
            XenbusState::Unknown => "0",
            XenbusState::Initialising => "1",
            XenbusState::InitWait => "2",
            XenbusState::Initialised => "3",
            XenbusState::Connected => "4",
            XenbusState::Closing => "5",
            XenbusState::Closed => "6",
            XenbusState::Reconfiguring => "7",
            XenbusState::Reconfigured => "8",
        }
    }
}

/// Parses a decimal `u32` xenstore value (ring refs, event channels, domids); `None` for
/// anything else, including empty, signs, overflow, or more than 10 digits.
pub fn parse_u32(value: &[u8]) -> Option<u32> {
    let v = value.trim_ascii();
    let v = v.strip_suffix(b"\0").unwrap_or(v);
    if v.is_empty() || v.len() > 10 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u32, |acc, &d| acc.checked_mul(10)?.checked_add(u32::from(d - b'0')))
}

/// Parses a MAC address `xx:xx:xx:xx:xx:xx` (hex, either case).
pub fn parse_mac(value: &[u8]) -> Option<[u8; 6]> {
    let v = value.trim_ascii();
    if v.len() != 17 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (i, part) in v.split(|&b| b == b':').enumerate() {
        if i >= 6 || part.len() != 2 {
            return None;
        }
        let s = core::str::from_utf8(part).ok()?;
        mac[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_garbage_is_refused() {
        for n in 0..=8u8 {
            let s = XenbusState::parse(&[b'0' + n]).unwrap();
            assert_eq!(s.as_str().as_bytes(), &[b'0' + n]);
        }
        assert_eq!(XenbusState::parse(b"4\0"), Some(XenbusState::Connected));
        assert_eq!(XenbusState::parse(b" 6\n"), Some(XenbusState::Closed));
        for bad in [&b""[..], b"9", b"44", b"-1", b"x", b"\xff", b"4 4"] {
            assert_eq!(XenbusState::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn numbers_are_strict() {
        assert_eq!(parse_u32(b"0"), Some(0));
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        for bad in [&b""[..], b"4294967296", b"99999999999", b"-1", b"+1", b"1x", b"0x10", b" "] {
            assert_eq!(parse_u32(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn macs() {
        assert_eq!(parse_mac(b"00:16:3e:5E:6c:01"), Some([0, 0x16, 0x3e, 0x5e, 0x6c, 1]));
        for bad in [&b"00:16:3e:5e:6c"[..], b"00:16:3e:5e:6c:01:02", b"0:16:3e:5e:6c:001", b"zz:16:3e:5e:6c:01"] {
            assert_eq!(parse_mac(bad), None);
        }
    }
}
