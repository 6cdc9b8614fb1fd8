//! The Internet checksum (RFC 1071), pseudo-header sums, and incremental updates (RFC 1624).
//!
//! Vocabulary used throughout:
//!
//! * a **sum** is the 16-bit one's-complement sum of some 16-bit big-endian words, folded
//!   (end-around carry), *not* complemented; sums of pieces combine with [`add`] / [`combine`];
//! * a **checksum** is the complement of the sum of everything it covers (with the checksum
//!   field itself taken as zero). A packet verifies when the sum over everything, checksum
//!   field included, is `0xffff`.
//!
//! **Partial checksums (checksum offload, Xen's `csum_blank`).** A packet whose checksum is
//! left to the receiver/hardware carries in the TCP/UDP checksum field only the *sum* of the
//! pseudo-header (not complemented); whoever completes it adds the sum of the L4 header and
//! data and complements. When NAT changes an address of such a packet, the field must be
//! updated as a plain sum with [`update_partial16`] and friends, and a port change needs no
//! fix-up at all (ports are not in the pseudo-header). See [`crate::nat`].
//!
//! **UDP.** Over IPv4, a UDP checksum field of 0 means "no checksum" (RFC 768); a computed
//! checksum of 0 is therefore transmitted as `0xffff` (the other one's-complement zero), see
//! [`udp_final`]. Over IPv6 the checksum is mandatory (RFC 8200 §8.1).

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Fold a wide accumulator of 16-bit-aligned partial sums into a 16-bit one's-complement sum.
#[inline]
fn fold(mut acc: u64) -> u16 {
    // Two folds bring any u64 below 2^17 + ..., the loop finishes the end-around carries.
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The one's-complement sum of `data` as big-endian 16-bit words (a trailing odd byte is
/// padded with a zero byte), folded but not complemented.
///
/// The loop consumes 32 bytes per step as four 64-bit words, each split into two 32-bit
/// halves added to 64-bit accumulators. Because 2^16 ≡ 1 (mod 2^16 - 1), sums of 32-bit
/// words fold to the same 16-bit one's-complement sum as sums of 16-bit words, and a 64-bit
/// accumulator cannot overflow for any slice shorter than 2^33 bytes.
pub fn data(data: &[u8]) -> u16 {
    let mut acc0: u64 = 0;
    let mut acc1: u64 = 0;
    let mut chunks = data.chunks_exact(32);
    for c in &mut chunks {
        let a = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        let b = u64::from_be_bytes([c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15]]);
        let d = u64::from_be_bytes([c[16], c[17], c[18], c[19], c[20], c[21], c[22], c[23]]);
        let e = u64::from_be_bytes([c[24], c[25], c[26], c[27], c[28], c[29], c[30], c[31]]);
        acc0 += (a >> 32) + (a & 0xffff_ffff) + (d >> 32) + (d & 0xffff_ffff);
        acc1 += (b >> 32) + (b & 0xffff_ffff) + (e >> 32) + (e & 0xffff_ffff);
    }
    let rest = chunks.remainder();
    let mut words = rest.chunks_exact(4);
    for w in &mut words {
        acc0 += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let tail = words.remainder();
    let mut pairs = tail.chunks_exact(2);
    for p in &mut pairs {
        acc1 += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        acc1 += u64::from(*last) << 8;
    }
    fold(acc0 + acc1)
}

/// One's-complement addition of two sums.
#[inline]
pub const fn add(a: u16, b: u16) -> u16 {
    let s = a as u32 + b as u32;
    ((s & 0xffff) + (s >> 16)) as u16
}

/// One's-complement sum of several sums.
pub fn combine(sums: &[u16]) -> u16 {
    let acc: u64 = sums.iter().map(|&s| u64::from(s)).sum();
    fold(acc)
}

/// The Internet checksum of `data`: the complement of [`data`].
#[inline]
pub fn checksum(bytes: &[u8]) -> u16 {
    !data(bytes)
}

#[inline]
fn sum_v4(addr: Ipv4Addr) -> u32 {
    let o = addr.octets();
    u32::from(u16::from_be_bytes([o[0], o[1]])) + u32::from(u16::from_be_bytes([o[2], o[3]]))
}

#[inline]
fn sum_v6(addr: Ipv6Addr) -> u64 {
    addr.segments().iter().map(|&s| u64::from(s)).sum()
}

/// The sum of the IPv4 pseudo-header (RFC 793/768): source, destination, zero, protocol,
/// and the upper-layer length.
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u16 {
    let acc = sum_v4(src) + sum_v4(dst) + u32::from(protocol) + u32::from(length);
    fold(u64::from(acc))
}

/// The sum of the IPv6 pseudo-header (RFC 8200 §8.1): source, destination, 32-bit
/// upper-layer length, zeros, next header.
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, length: u32) -> u16 {
    let acc = sum_v6(src) + sum_v6(dst) + u64::from(length >> 16) + u64::from(length & 0xffff) + u64::from(next_header);
    fold(acc)
}

/// The pseudo-header sum for either family. Mixed families are not a valid pseudo-header;
/// they are summed anyway (giving a sum that matches nothing) rather than panicking.
pub fn pseudo_header(src: IpAddr, dst: IpAddr, protocol: u8, length: u32) -> u16 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            add(pseudo_header_v4(s, d, protocol, 0), fold(u64::from(length >> 16) + u64::from(length & 0xffff)))
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => pseudo_header_v6(s, d, protocol, length),
        (s, d) => {
            let a = match s {
                IpAddr::V4(a) => u64::from(sum_v4(a)),
                IpAddr::V6(a) => sum_v6(a),
            };
            let b = match d {
                IpAddr::V4(b) => u64::from(sum_v4(b)),
                IpAddr::V6(b) => sum_v6(b),
            };
            fold(a + b + u64::from(protocol) + u64::from(length >> 16) + u64::from(length & 0xffff))
        }
    }
}

/// RFC 1624 eqn. 3: the new checksum after a 16-bit word covered by `checksum` changed from
/// `old` to `new`: `HC' = ~(~HC + ~m + m')`.
#[inline]
pub const fn update16(checksum: u16, old: u16, new: u16) -> u16 {
    !add(add(!checksum, !old), new)
}

/// [`update16`] for a changed 32-bit field (two adjacent 16-bit words).
#[inline]
pub const fn update32(checksum: u16, old: u32, new: u32) -> u16 {
    let c = update16(checksum, (old >> 16) as u16, (new >> 16) as u16);
    update16(c, old as u16, new as u16)
}

/// [`update16`] for a changed IPv4 address.
#[inline]
pub fn update_v4_addr(checksum: u16, old: Ipv4Addr, new: Ipv4Addr) -> u16 {
    update32(checksum, old.to_bits(), new.to_bits())
}

/// [`update16`] for a changed IPv6 address.
pub fn update_v6_addr(checksum: u16, old: Ipv6Addr, new: Ipv6Addr) -> u16 {
    let mut acc = u64::from(!checksum);
    for (o, n) in old.segments().iter().zip(new.segments().iter()) {
        acc += u64::from(!*o) + u64::from(*n);
    }
    !fold(acc)
}

/// The partial-checksum counterpart of [`update16`]: `sum` is a plain one's-complement sum
/// (e.g. the pseudo-header sum held in the checksum field of a `csum_blank` packet), so the
/// update is `S' = S + ~m + m'` with no complement.
#[inline]
pub const fn update_partial16(sum: u16, old: u16, new: u16) -> u16 {
    add(add(sum, !old), new)
}

/// [`update_partial16`] for a changed 32-bit field.
#[inline]
pub const fn update_partial32(sum: u16, old: u32, new: u32) -> u16 {
    let s = update_partial16(sum, (old >> 16) as u16, (new >> 16) as u16);
    update_partial16(s, old as u16, new as u16)
}

/// [`update_partial16`] for a changed IPv4 address.
#[inline]
pub fn update_partial_v4_addr(sum: u16, old: Ipv4Addr, new: Ipv4Addr) -> u16 {
    update_partial32(sum, old.to_bits(), new.to_bits())
}

/// [`update_partial16`] for a changed IPv6 address.
pub fn update_partial_v6_addr(sum: u16, old: Ipv6Addr, new: Ipv6Addr) -> u16 {
    let mut acc = u64::from(sum);
    for (o, n) in old.segments().iter().zip(new.segments().iter()) {
        acc += u64::from(!*o) + u64::from(*n);
    }
    fold(acc)
}

/// UDP's transmission rule: a computed checksum of 0 is sent as `0xffff`, because 0 in the
/// field means "no checksum" (RFC 768).
#[inline]
pub const fn udp_final(checksum: u16) -> u16 {
    if checksum == 0 { 0xffff } else { checksum }
}

#[cfg(test)]
mod test {
    use super::*;

    fn naive(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        let mut i = 0;
        while i + 1 < data.len() {
            acc += u32::from(data[i]) << 8 | u32::from(data[i + 1]);
            i += 2;
        }
        if i < data.len() {
            acc += u32::from(data[i]) << 8;
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
        assert_eq!(data(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), 0xddf2);
        assert_eq!(checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), !0xddf2);
    }

    #[test]
    fn empty_and_odd() {
        assert_eq!(data(&[]), 0);
        assert_eq!(data(&[0xab]), 0xab00);
        assert_eq!(data(&[0xff; 3]), naive(&[0xff; 3]));
    }

    #[test]
    fn all_lengths_match_naive() {
        let buf: [u8; 300] = core::array::from_fn(|i| (i as u8).wrapping_mul(151).wrapping_add(7));
        for start in 0..8 {
            for end in start..buf.len() {
                assert_eq!(data(&buf[start..end]), naive(&buf[start..end]), "{start}..{end}");
            }
        }
        let ff = [0xffu8; 9000];
        assert_eq!(data(&ff), naive(&ff));
    }

    #[test]
    fn ipv4_header_checksum() {
        // A header from RFC 1071-style worked examples (Wikipedia "IPv4 header checksum").
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
            0x00, 0xc7,
        ];
        assert_eq!(checksum(&hdr), 0xb861);
    }

    #[test]
    fn incremental_matches_recompute() {
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
            0x00, 0xc7,
        ];
        let old = Ipv4Addr::new(192, 168, 0, 1);
        let new = Ipv4Addr::new(10, 137, 0, 5);
        let c = update_v4_addr(0xb861, old, new);
        hdr[12..16].copy_from_slice(&new.octets());
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(data(&hdr), 0xffff);
        hdr[10..12].fill(0);
        assert_eq!(checksum(&hdr), c);
    }

    #[test]
    fn pseudo_headers() {
        let s = Ipv4Addr::new(10, 0, 0, 1);
        let d = Ipv4Addr::new(10, 0, 0, 2);
        let mut ph = [0u8; 12];
        ph[0..4].copy_from_slice(&s.octets());
        ph[4..8].copy_from_slice(&d.octets());
        ph[9] = 17;
        ph[10..12].copy_from_slice(&1234u16.to_be_bytes());
        assert_eq!(pseudo_header_v4(s, d, 17, 1234), naive(&ph));
        assert_eq!(pseudo_header(s.into(), d.into(), 17, 1234), naive(&ph));

        let s6: Ipv6Addr = "fe80::1".parse().unwrap();
        let d6: Ipv6Addr = "ff02::1:ff00:2".parse().unwrap();
        let mut ph6 = [0u8; 40];
        ph6[0..16].copy_from_slice(&s6.octets());
        ph6[16..32].copy_from_slice(&d6.octets());
        ph6[32..36].copy_from_slice(&70000u32.to_be_bytes());
        ph6[39] = 58;
        assert_eq!(pseudo_header_v6(s6, d6, 58, 70000), naive(&ph6));
        assert_eq!(pseudo_header(s6.into(), d6.into(), 58, 70000), naive(&ph6));
        // Mixed families do not panic.
        let _ = pseudo_header(s.into(), d6.into(), 6, 1);
    }

    #[test]
    fn partial_update_tracks_pseudo_header() {
        let s = Ipv4Addr::new(10, 137, 0, 17);
        let d = Ipv4Addr::new(93, 184, 216, 34);
        let n = Ipv4Addr::new(10, 138, 1, 1);
        let partial = pseudo_header_v4(s, d, 6, 40);
        assert_eq!(update_partial_v4_addr(partial, s, n), pseudo_header_v4(n, d, 6, 40));
        let s6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let d6: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let n6: Ipv6Addr = "fd00::abcd:1".parse().unwrap();
        let p6 = pseudo_header_v6(s6, d6, 17, 8);
        assert_eq!(update_partial_v6_addr(p6, d6, n6), pseudo_header_v6(s6, n6, 17, 8));
        let full = !p6;
        assert_eq!(update_v6_addr(full, d6, n6), !pseudo_header_v6(s6, n6, 17, 8));
    }

    #[test]
    fn udp_zero_rule() {
        assert_eq!(udp_final(0), 0xffff);
        assert_eq!(udp_final(0x1234), 0x1234);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn fast_equals_naive(v in proptest::collection::vec(any::<u8>(), 0..2000)) {
                prop_assert_eq!(data(&v), naive(&v));
            }

            #[test]
            fn update16_equals_recompute(
                mut v in proptest::collection::vec(any::<u8>(), 4..200),
                idx in any::<proptest::sample::Index>(),
                new in any::<u16>(),
            ) {
                if v.len() % 2 == 1 { v.push(0); }
                let words = v.len() / 2;
                let at = idx.index(words - 1) * 2;
                // The last word is the checksum field.
                let n = v.len();
                v[n - 2] = 0; v[n - 1] = 0;
                let c = checksum(&v);
                let old = u16::from_be_bytes([v[at], v[at + 1]]);
                v[at..at + 2].copy_from_slice(&new.to_be_bytes());
                let c2 = update16(c, old, new);
                v[n - 2..].copy_from_slice(&c2.to_be_bytes());
                prop_assert_eq!(data(&v), 0xffff);
            }

            #[test]
            fn partial32_equals_recompute(a in any::<u32>(), b in any::<u32>(), x in any::<u32>()) {
                let (a, b, x) = (Ipv4Addr::from_bits(a), Ipv4Addr::from_bits(b), Ipv4Addr::from_bits(x));
                let p = pseudo_header_v4(a, b, 17, 99);
                let q = update_partial_v4_addr(p, a, x);
                let want = pseudo_header_v4(x, b, 17, 99);
                // One's-complement zero has two forms.
                prop_assert!(q == want || (q == 0 && want == 0xffff) || (q == 0xffff && want == 0));
            }
        }
    }
}
