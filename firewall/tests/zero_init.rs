//! A new engine is all zero bytes: `Firewall::new()` (and `Conntrack::new()`) is the value
//! the appliance keeps in a `static`, and a `static` whose initial value has a single nonzero
//! byte goes to `.data` whole (megabytes written into the image) instead of `.bss`.
//!
//! The engines are kept as the appliance keeps its engine: in a `static` behind a mutex (a
//! `const` this big would overflow the test thread's stack; and an immutable all-zero static
//! goes to `.rodata`, which is in the image too, while one with interior mutability goes to
//! `.bss`). The scan reads their bytes through a raw pointer: that is why this file allows
//! `unsafe` (the crate itself forbids it; an integration test is a crate of its own). Padding
//! bytes are part of the scan: in a `static` they are emitted as zero, and the check is on
//! the bytes the linker sees. On Linux the test also checks where the linker put the statics:
//! between `__bss_start` and `_end`.
//!
//! The documented bound is no nonzero byte at all: one would put the whole engine into the
//! image's `.data`, so a "small nonzero header" would not help.
#![allow(unsafe_code)]

use std::sync::Mutex;

use firewall::config::{CONNTRACK_CAPACITY, CONNTRACK_INDEX_BUCKETS};
use firewall::conntrack::DefaultConntrack;
use firewall::forward::{DefaultFirewall, Firewall};

/// The appliance's engine (128 clients).
type ApplianceFirewall = Firewall<CONNTRACK_CAPACITY, CONNTRACK_INDEX_BUCKETS, 128>;

static DEFAULT_FW: Mutex<DefaultFirewall> = Mutex::new(DefaultFirewall::new());
static APPLIANCE_FW: Mutex<ApplianceFirewall> = Mutex::new(ApplianceFirewall::new());
static EXPLICIT_FW: Mutex<Firewall<65536, 262144, 128>> = Mutex::new(Firewall::new());
static SMALL_FW: Mutex<Firewall<64, 256, 4>> = Mutex::new(Firewall::new());
static CONNTRACK: Mutex<DefaultConntrack> = Mutex::new(DefaultConntrack::new());

/// The bytes of `v`.
fn bytes_of<T>(v: &T) -> &[u8] {
    // SAFETY: `v` is a valid value of `size_of::<T>()` bytes, borrowed shared for the
    // slice's lifetime (and the engines have no interior mutability). Its padding bytes are
    // uninitialised for the language, but a static's bytes are all emitted by the compiler
    // (padding as zero), and those emitted bytes are what this test checks.
    unsafe { core::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

/// The nonzero bytes of `b`: their count and the first few ranges (offset, length), for the
/// failure message.
fn nonzero(b: &[u8]) -> (usize, Vec<(usize, usize)>) {
    let count = b.iter().filter(|&&x| x != 0).count();
    let mut ranges = Vec::new();
    let mut i = 0;
    while i < b.len() && ranges.len() < 16 {
        if b[i] == 0 {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i] != 0 {
            i += 1;
        }
        ranges.push((start, i - start));
    }
    (count, ranges)
}

fn assert_zero<T>(name: &str, v: &'static Mutex<T>) {
    let guard = v.lock().unwrap();
    let b = bytes_of(&*guard);
    let (count, ranges) = nonzero(b);
    assert!(count == 0, "{name}: {count} of {} bytes nonzero; first ranges (offset, len): {ranges:x?}", b.len());
}

#[test]
fn default_firewall_is_all_zero() {
    assert_zero("DefaultFirewall", &DEFAULT_FW);
}

#[test]
fn appliance_firewall_is_all_zero() {
    assert_zero("Firewall<CONNTRACK_CAPACITY, CONNTRACK_INDEX_BUCKETS, 128>", &APPLIANCE_FW);
    assert_zero("Firewall<65536, 262144, 128>", &EXPLICIT_FW);
}

#[test]
fn small_firewall_is_all_zero() {
    assert_zero("Firewall<64, 256, 4>", &SMALL_FW);
}

#[test]
fn conntrack_is_all_zero() {
    assert_zero("DefaultConntrack", &CONNTRACK);
}

/// The scan itself sees a nonzero byte (so a passing scan means something).
#[test]
fn scan_finds_nonzero_bytes() {
    let one: [u64; 4] = [0, 0, 1 << 40, 0];
    assert_eq!(nonzero(bytes_of(&one)), (1, vec![(21, 1)]));
}

/// Where the linker put the engines: in `.bss` (GNU ld and lld define `__bss_start` and
/// `_end` around it on Linux).
#[cfg(target_os = "linux")]
#[test]
fn engines_are_in_bss() {
    unsafe extern "C" {
        static __bss_start: u8;
        static _end: u8;
    }
    // Addresses only; nothing is read through them.
    let (start, end) = (&raw const __bss_start as usize, &raw const _end as usize);
    let in_bss = |name: &str, addr: usize, size: usize| {
        assert!(
            start <= addr && addr + size <= end,
            "{name} at {addr:#x}+{size:#x} is outside .bss {start:#x}..{end:#x}"
        );
    };
    in_bss("DefaultFirewall", &raw const DEFAULT_FW as usize, size_of_val(&DEFAULT_FW));
    in_bss("appliance Firewall", &raw const APPLIANCE_FW as usize, size_of_val(&APPLIANCE_FW));
    in_bss("DefaultConntrack", &raw const CONNTRACK as usize, size_of_val(&CONNTRACK));
    // A mutable static with a nonzero byte is not: the check can fail.
    static NOT_ZERO: Mutex<[u8; 4096]> = Mutex::new([1; 4096]);
    let addr = &raw const NOT_ZERO as usize;
    assert!(!(start <= addr && addr < end), "a nonzero static in .bss?");
}
