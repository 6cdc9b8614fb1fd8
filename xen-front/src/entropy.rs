//! Unpredictable numbers for NAT ports, DNS ids and hash keys.
//!
//! A ChaCha20 CSPRNG (`rand_chacha`, from the rand project) keyed with SHA-256 (RustCrypto
//! `sha2`) over everything we could gather: RDSEED and RDRAND when CPUID has them, TSC jitter
//! around hypercalls, and the domain's own identity. No cryptography is written here; this
//! module only decides what goes into the hash. `reseed` folds new material (QubesDB's
//! `/qubes-random-seed`) into the key without losing what was there.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use crate::arch::cpu;

/// Where the seed came from, for the boot log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeedSources {
    /// 64-bit values from RDSEED.
    pub rdseed: u32,
    /// 64-bit values from RDRAND.
    pub rdrand: u32,
    /// TSC jitter samples.
    pub tsc_samples: u32,
    /// A fixed seed from the command line replaced everything else (tests only).
    pub fixed: bool,
}

/// The CSPRNG.
pub struct Entropy {
    rng: ChaCha20Rng,
    /// Times new material was folded in after boot.
    pub reseeds: u64,
}

impl Entropy {
    /// A generator keyed with SHA-256 over `parts`.
    pub fn from_material(parts: &[&[u8]]) -> Self {
        let mut h = Sha256::new();
        h.update(b"portcullis entropy v1");
        for p in parts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p);
        }
        Entropy { rng: ChaCha20Rng::from_seed(h.finalize().into()), reseeds: 0 }
    }

    /// A deterministic generator for tests (`seed=` on the command line).
    pub fn from_fixed_seed(seed: u64) -> Self {
        Self::from_material(&[b"fixed", &seed.to_le_bytes()])
    }

    /// Gathers what the CPU offers (`extra`: e.g. our domid and boot time stamps).
    pub fn from_hardware(extra: &[u8]) -> (Self, SeedSources) {
        let mut src = SeedSources::default();
        let mut buf = [0u8; 8 * 8 + 8 * 8 + 64 * 8];
        let mut n = 0;
        for _ in 0..8 {
            if let Some(v) = cpu::rdseed() {
                buf[n..n + 8].copy_from_slice(&v.to_le_bytes());
                n += 8;
                src.rdseed += 1;
            }
        }
        for _ in 0..8 {
            if let Some(v) = cpu::rdrand() {
                buf[n..n + 8].copy_from_slice(&v.to_le_bytes());
                n += 8;
                src.rdrand += 1;
            }
        }
        // TSC deltas around a CPUID (a VM exit under Xen): their low bits jitter.
        for _ in 0..64 {
            let t0 = cpu::rdtsc();
            let _ = cpu::cpuid(0, 0);
            let d = cpu::rdtsc().wrapping_sub(t0) ^ t0.rotate_left(17);
            buf[n..n + 8].copy_from_slice(&d.to_le_bytes());
            n += 8;
            src.tsc_samples += 1;
        }
        (Self::from_material(&[&buf[..n], extra]), src)
    }

    /// Folds new material into the key: the new key is a hash of 32 bytes of the current
    /// stream and `material`, so neither alone determines it.
    pub fn reseed(&mut self, material: &[u8]) {
        let mut current = [0u8; 32];
        self.rng.fill_bytes(&mut current);
        *self = Entropy { reseeds: self.reseeds + 1, ..Self::from_material(&[b"reseed", &current, material]) };
    }

    /// A random `u32`.
    pub fn next_u32(&mut self) -> u32 {
        self.rng.next_u32()
    }

    /// A random `u64`.
    pub fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        self.rng.fill_bytes(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_seed_is_reproducible_and_seeds_differ() {
        let (mut a, mut b, mut c) =
            (Entropy::from_fixed_seed(7), Entropy::from_fixed_seed(7), Entropy::from_fixed_seed(8));
        let (x, y, z) = (a.next_u64(), b.next_u64(), c.next_u64());
        assert_eq!(x, y);
        assert_ne!(x, z);
    }

    #[test]
    fn reseed_changes_the_stream_and_depends_on_the_material() {
        let (mut a, mut b) = (Entropy::from_fixed_seed(1), Entropy::from_fixed_seed(1));
        a.reseed(b"qubes-random-seed A");
        b.reseed(b"qubes-random-seed B");
        assert_ne!(a.next_u64(), b.next_u64());
        assert_eq!(a.reseeds, 1);
    }

    #[test]
    fn material_boundaries_matter() {
        // Length-prefixed parts: ("ab","c") and ("a","bc") must not collide.
        let mut a = Entropy::from_material(&[b"ab", b"c"]);
        let mut b = Entropy::from_material(&[b"a", b"bc"]);
        assert_ne!(a.next_u64(), b.next_u64());
    }

    #[test]
    fn hardware_gathering_runs_on_the_host() {
        let (mut e, src) = Entropy::from_hardware(b"test");
        assert_eq!(src.tsc_samples, 64);
        let mut buf = [0u8; 64];
        e.fill(&mut buf);
        assert!(buf.iter().any(|&b| b != 0));
    }
}
