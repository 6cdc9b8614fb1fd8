//! Link arguments for the appliance binary only (`rustc-link-arg-bins`): the library and
//! every host test in the workspace link normally.
use std::env;
use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let script = dir.join("link.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-changed=src/boot/entry.s");
    println!("cargo:rerun-if-changed=build.rs");
    for arg in [
        // Load at 1 MiB with explicit PHDRS (PT_NOTE for the Xen notes), no .eh_frame.
        format!("-T{}", script.display()),
        // No C runtime: the entry is pvh_start32.
        "-nostartfiles".into(),
        "-nostdlib".into(),
        // Position-dependent static executable (the 32-bit entry uses absolute addresses).
        "-static".into(),
        "-no-pie".into(),
        "-Wl,--build-id=none".into(),
        "-Wl,-z,norelro".into(),
        "-Wl,--no-dynamic-linker".into(),
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}
