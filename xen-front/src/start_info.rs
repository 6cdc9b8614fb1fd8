//! `hvm_start_info`: what the domain builder tells a PVH guest at entry.
//!
//! The structure, the command line and the memory map live in RAM right after our image,
//! which nothing marks as in use. They are parsed and **copied** into a `BootInfo` before
//! anything else runs, so nothing later depends on those pages. Modules (Qubes passes an
//! initramfs) are only recorded as reserved ranges; portcullis does not read them.
//!
//! Parsing goes through a `read(paddr, buf)` callback so that it runs on the host against a
//! fake memory in tests; every address and count from the structure is bounded first.

use crate::abi::HVM_START_MAGIC;

/// Longest command line kept (longer ones are truncated and flagged).
pub const CMDLINE_MAX: usize = 1024;
/// Memory-map entries kept.
pub const MEMMAP_MAX: usize = 32;
/// Modules recorded.
pub const MODULES_MAX: usize = 4;

/// One memory-map entry (E820 types: 1 RAM, 2 reserved, 3 ACPI, 4 NVS, 5 unusable).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryRegion {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// E820 type.
    pub kind: u32,
}

/// A boot module (e.g. an initramfs), recorded so its memory is never reused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Module {
    /// Start address.
    pub paddr: u64,
    /// Length in bytes.
    pub size: u64,
}

/// Why the start info could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartInfoError {
    /// Magic value mismatch: not booted by a PVH loader.
    BadMagic(u32),
}

/// The copied boot information.
#[derive(Clone, Debug)]
pub struct BootInfo {
    /// `hvm_start_info.version`.
    pub version: u32,
    /// `SIF_*` flags.
    pub flags: u32,
    cmdline: [u8; CMDLINE_MAX],
    cmdline_len: usize,
    /// The command line did not fit and was cut.
    pub cmdline_truncated: bool,
    memmap: [MemoryRegion; MEMMAP_MAX],
    memmap_len: usize,
    /// Memory-map entries beyond `MEMMAP_MAX` that were not kept.
    pub memmap_dropped: u32,
    modules: [Module; MODULES_MAX],
    modules_len: usize,
    /// Modules reported beyond `MODULES_MAX`.
    pub modules_dropped: u32,
    /// The lowest and highest address of start_info, its strings and tables, so the region
    /// can be reported and kept out of any later use.
    pub boot_data: (u64, u64),
}

fn le_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn le_u64(b: &[u8], off: usize) -> u64 {
    u64::from(le_u32(b, off)) | u64::from(le_u32(b, off + 4)) << 32
}

impl BootInfo {
    /// Parses the start info at `paddr`, reading memory through `read`.
    pub fn parse(paddr: u64, mut read: impl FnMut(u64, &mut [u8])) -> Result<Self, StartInfoError> {
        let mut si = [0u8; 56];
        read(paddr, &mut si);
        let magic = le_u32(&si, 0);
        if magic != HVM_START_MAGIC {
            return Err(StartInfoError::BadMagic(magic));
        }
        let mut info = BootInfo {
            version: le_u32(&si, 4),
            flags: le_u32(&si, 8),
            cmdline: [0; CMDLINE_MAX],
            cmdline_len: 0,
            cmdline_truncated: false,
            memmap: [MemoryRegion::default(); MEMMAP_MAX],
            memmap_len: 0,
            memmap_dropped: 0,
            modules: [Module::default(); MODULES_MAX],
            modules_len: 0,
            modules_dropped: 0,
            boot_data: (paddr, paddr + 56),
        };
        let extend = |info: &mut BootInfo, start: u64, len: u64| {
            if start != 0 && len != 0 {
                info.boot_data.0 = info.boot_data.0.min(start);
                info.boot_data.1 = info.boot_data.1.max(start.saturating_add(len));
            }
        };

        let cmdline_paddr = le_u64(&si, 24);
        if cmdline_paddr != 0 {
            // Read in chunks until NUL, bounded by CMDLINE_MAX.
            let mut chunk = [0u8; 64];
            'outer: while info.cmdline_len < CMDLINE_MAX {
                read(cmdline_paddr + info.cmdline_len as u64, &mut chunk);
                for &b in &chunk {
                    if b == 0 {
                        break 'outer;
                    }
                    if info.cmdline_len == CMDLINE_MAX {
                        info.cmdline_truncated = true;
                        break 'outer;
                    }
                    info.cmdline[info.cmdline_len] = b;
                    info.cmdline_len += 1;
                }
            }
            if info.cmdline_len == CMDLINE_MAX {
                info.cmdline_truncated = true;
            }
            let len = info.cmdline_len as u64 + 1;
            extend(&mut info, cmdline_paddr, len);
        }

        let nr_modules = le_u32(&si, 12);
        let modlist = le_u64(&si, 16);
        if modlist != 0 {
            for i in 0..nr_modules {
                if i as usize >= MODULES_MAX {
                    info.modules_dropped = nr_modules - MODULES_MAX as u32;
                    break;
                }
                let mut e = [0u8; 32];
                read(modlist + u64::from(i) * 32, &mut e);
                let m = Module { paddr: le_u64(&e, 0), size: le_u64(&e, 8) };
                info.modules[info.modules_len] = m;
                info.modules_len += 1;
            }
            extend(&mut info, modlist, u64::from(nr_modules.min(MODULES_MAX as u32)) * 32);
        }

        if info.version >= 1 {
            let memmap = le_u64(&si, 40);
            let entries = le_u32(&si, 48);
            if memmap != 0 {
                for i in 0..entries {
                    if i as usize >= MEMMAP_MAX {
                        info.memmap_dropped = entries - MEMMAP_MAX as u32;
                        break;
                    }
                    let mut e = [0u8; 24];
                    read(memmap + u64::from(i) * 24, &mut e);
                    info.memmap[info.memmap_len] =
                        MemoryRegion { addr: le_u64(&e, 0), size: le_u64(&e, 8), kind: le_u32(&e, 16) };
                    info.memmap_len += 1;
                }
                extend(&mut info, memmap, u64::from(entries.min(MEMMAP_MAX as u32)) * 24);
            }
        }
        Ok(info)
    }

    /// The command line (lossy: invalid UTF-8 yields the valid prefix).
    pub fn cmdline(&self) -> &str {
        let bytes = &self.cmdline[..self.cmdline_len];
        match core::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
        }
    }

    /// The memory map.
    pub fn memmap(&self) -> &[MemoryRegion] {
        &self.memmap[..self.memmap_len]
    }

    /// The boot modules.
    pub fn modules(&self) -> &[Module] {
        &self.modules[..self.modules_len]
    }

    /// Total RAM in the memory map, in bytes.
    pub fn ram_bytes(&self) -> u64 {
        self.memmap().iter().filter(|r| r.kind == 1).map(|r| r.size).sum()
    }

    /// End of RAM (highest RAM address + 1).
    pub fn ram_end(&self) -> u64 {
        self.memmap().iter().filter(|r| r.kind == 1).map(|r| r.addr.saturating_add(r.size)).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeMemory(Vec<u8>);
    impl FakeMemory {
        fn put(&mut self, at: usize, bytes: &[u8]) {
            self.0[at..at + bytes.len()].copy_from_slice(bytes);
        }
        fn read(&self, paddr: u64, buf: &mut [u8]) {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = self.0.get(paddr as usize + i).copied().unwrap_or(0);
            }
        }
    }

    fn start_info(cmdline: u64, nr_mod: u32, modlist: u64, memmap: u64, entries: u32) -> [u8; 56] {
        let mut s = [0u8; 56];
        s[0..4].copy_from_slice(&HVM_START_MAGIC.to_le_bytes());
        s[4..8].copy_from_slice(&1u32.to_le_bytes());
        s[12..16].copy_from_slice(&nr_mod.to_le_bytes());
        s[16..24].copy_from_slice(&modlist.to_le_bytes());
        s[24..32].copy_from_slice(&cmdline.to_le_bytes());
        s[40..48].copy_from_slice(&memmap.to_le_bytes());
        s[48..52].copy_from_slice(&entries.to_le_bytes());
        s
    }

    #[test]
    fn parses_and_copies_cmdline_memmap_and_modules() {
        let mut m = FakeMemory(vec![0; 0x4000]);
        m.put(0x1000, &start_info(0x1100, 1, 0x1200, 0x1300, 2));
        m.put(0x1100, b"loglevel=debug seed=42\0");
        let mut module = [0u8; 32];
        module[0..8].copy_from_slice(&0x2000u64.to_le_bytes());
        module[8..16].copy_from_slice(&0x800u64.to_le_bytes());
        m.put(0x1200, &module);
        for (i, (addr, size, kind)) in [(0u64, 0x9fc00u64, 1u32), (0x100000, 0xf00000, 1)].iter().enumerate() {
            let mut e = [0u8; 24];
            e[0..8].copy_from_slice(&addr.to_le_bytes());
            e[8..16].copy_from_slice(&size.to_le_bytes());
            e[16..20].copy_from_slice(&kind.to_le_bytes());
            m.put(0x1300 + i * 24, &e);
        }
        let info = BootInfo::parse(0x1000, |a, b| m.read(a, b)).unwrap();
        assert_eq!(info.cmdline(), "loglevel=debug seed=42");
        assert_eq!(info.modules(), &[Module { paddr: 0x2000, size: 0x800 }]);
        assert_eq!(info.memmap().len(), 2);
        assert_eq!(info.ram_end(), 0x1000000);
        assert_eq!(info.boot_data, (0x1000, 0x1300 + 48));
        // Copied: the source memory can be reused.
        m.0.iter_mut().for_each(|b| *b = 0xff);
        assert_eq!(info.cmdline(), "loglevel=debug seed=42");
    }

    #[test]
    fn bad_magic_is_refused() {
        let m = FakeMemory(vec![0; 0x100]);
        assert_eq!(BootInfo::parse(0, |a, b| m.read(a, b)).unwrap_err(), StartInfoError::BadMagic(0));
    }

    #[test]
    fn huge_counts_and_endless_cmdline_are_bounded() {
        let mut m = FakeMemory(vec![b'x'; 0x8000]);
        m.put(0, &start_info(0x100, u32::MAX, 0x2000, 0x3000, u32::MAX));
        let info = BootInfo::parse(0, |a, b| m.read(a, b)).unwrap();
        assert_eq!(info.cmdline().len(), CMDLINE_MAX);
        assert!(info.cmdline_truncated);
        assert_eq!(info.modules().len(), MODULES_MAX);
        assert_eq!(info.memmap().len(), MEMMAP_MAX);
        assert_eq!(info.memmap_dropped, u32::MAX - MEMMAP_MAX as u32);
    }
}
