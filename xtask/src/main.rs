//! `cargo xtask`: build the appliance, run it under real Xen (Xen 4.17 + Debian dom0 inside
//! QEMU), and run the harness scenarios.
//!
//! ```text
//! cargo xtask build                 build target/release/portcullis and check it
//! cargo xtask run                   build, boot Xen, start portcullis, show its console
//! cargo xtask xen-test [SCENARIO…]  build, boot Xen once, run the scenarios (default: all)
//! cargo xtask harness-image         build (or reuse) the cached Xen/dom0 image
//! cargo xtask test [ARGS…]          install test prerequisites, then cargo test --workspace
//! ```
//!
//! Everything is built before QEMU starts: libxl's fixed 10 s timeouts under emulation turn
//! host load into flaky failures. The harness image is cached outside the repository
//! (`$PORTCULLIS_CACHE`, default `~/.cache/portcullis`), keyed by a hash of its inputs.

use std::collections::hash_map::DefaultHasher;
use std::env;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

/// All scenarios, in the order they run by default.
const SCENARIOS: &[&str] = &[
    "boot",
    "shutdown",
    "crash",
    "uplink",
    "uplink-reconnect",
    "clients",
    "client-churn",
    "clients-scale",
    "forward",
    "vchan",
    "qrexec",
    "qubesdb",
];

/// Files the harness image is built from (relative to tests/harness).
const IMAGE_INPUTS: &[&str] =
    &["build-image.sh", "dom0-init.sh", "domu-init.sh", "xl-run-guest.sh", "xen-selftest.sh", "domu.cfg"];

/// Symbols that would mean the allocator got linked into the appliance.
const ALLOC_SYMBOLS: &[&str] = &["__rust_alloc", "__rdl_alloc", "__rg_alloc"];

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let t0 = Instant::now();
    let result = match args.first().map(String::as_str) {
        Some("build") => build().map(|_| true),
        Some("harness-image") => harness_image().map(|_| true),
        Some("xen-test") => xen_test(&args[1..]),
        Some("run") => run_console(),
        Some("test") => host_tests(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask build | run | test [ARGS...] | xen-test [SCENARIO...] | harness-image");
            eprintln!("scenarios: {}", SCENARIOS.join(" "));
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(true) => {
            step(&t0, "done");
            ExitCode::SUCCESS
        }
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, String>;

fn step(t0: &Instant, what: &str) {
    println!("[xtask {:6.1}s] {what}", t0.elapsed().as_secs_f64());
    let _ = std::io::stdout().flush();
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

fn cache_dir() -> PathBuf {
    if let Some(d) = env::var_os("PORTCULLIS_CACHE") {
        return PathBuf::from(d);
    }
    let home = env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache").join("portcullis")
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().map_err(|e| format!("{cmd:?}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{cmd:?} failed: {status}")) }
}

/// Debian packages the host tests need: scapy is the independent implementation the netstack
/// cross-checks run against.
const TEST_PACKAGES: &[(&str, &str)] = &[("python3-scapy", "python3 -c 'import scapy'")];

/// Installs missing test prerequisites (as root, with apt), then runs the host tests.
fn host_tests(extra: &[String]) -> Result<bool> {
    let t0 = Instant::now();
    let missing: Vec<&str> = TEST_PACKAGES
        .iter()
        .filter(|(_, check)| {
            !Command::new("sh").args(["-c", check]).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
        })
        .map(|(pkg, _)| *pkg)
        .collect();
    if !missing.is_empty() {
        step(&t0, &format!("installing {}", missing.join(" ")));
        run(Command::new("apt-get").args(["update", "-q"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    step(&t0, "cargo test --workspace");
    let status = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root())
        .args(["test", "--workspace"])
        .args(extra)
        .status()
        .map_err(|e| e.to_string())?;
    Ok(status.success())
}

/// Builds the appliance and checks what must hold of the image.
fn build() -> Result<PathBuf> {
    let t0 = Instant::now();
    step(&t0, "cargo build --release (appliance)");
    run(Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into())).current_dir(root()).args([
        "build",
        "--release",
        "--package",
        "portcullis",
        "--bin",
        "portcullis",
    ]))?;
    let elf = target_dir().join("release").join("portcullis");
    let nm = Command::new("nm").arg(&elf).output().map_err(|e| format!("nm: {e}"))?;
    let symbols = String::from_utf8_lossy(&nm.stdout);
    for s in ALLOC_SYMBOLS {
        if symbols.lines().any(|l| l.ends_with(s)) {
            return Err(format!("{} links the allocator ({s})", elf.display()));
        }
    }
    // No crate in the appliance may have its `alloc` or `std` feature on.
    let tree = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root())
        .args(["tree", "--package", "portcullis", "--edges", "normal,features", "--prefix", "none"])
        .output()
        .map_err(|e| format!("cargo tree: {e}"))?;
    let tree = String::from_utf8_lossy(&tree.stdout);
    if let Some(l) = tree.lines().find(|l| l.contains("feature \"alloc\"") || l.contains("feature \"std\"")) {
        return Err(format!("the appliance's dependencies enable alloc/std: {l}"));
    }
    let size = image_bytes(&elf)?;
    // The static memory budget (src/config.rs) promises the image fits its allowance.
    if size > portcullis::config::budget_total() as u64 {
        return Err(format!("image of {size} bytes exceeds the static memory budget"));
    }
    println!(
        "appliance: {} ({} KiB loaded image, no allocator symbols, no alloc/std features)",
        elf.display(),
        size / 1024
    );
    Ok(elf)
}

/// Bytes the ELF occupies in memory (highest PT_LOAD end minus lowest start).
fn image_bytes(elf: &Path) -> Result<u64> {
    let out = Command::new("readelf").args(["-lW"]).arg(elf).output().map_err(|e| format!("readelf: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    for l in text.lines().filter(|l| l.trim_start().starts_with("LOAD")) {
        let f: Vec<&str> = l.split_whitespace().collect();
        let addr = u64::from_str_radix(f[3].trim_start_matches("0x"), 16).map_err(|e| e.to_string())?;
        let memsz = u64::from_str_radix(f[5].trim_start_matches("0x"), 16).map_err(|e| e.to_string())?;
        lo = lo.min(addr);
        hi = hi.max(addr + memsz);
    }
    if hi == 0 {
        return Err("no PT_LOAD in the appliance".into());
    }
    Ok(hi - lo)
}

/// Builds the harness image unless a cached one for the same inputs exists.
fn harness_image() -> Result<PathBuf> {
    let t0 = Instant::now();
    let harness = root().join("tests").join("harness");
    let mut h = DefaultHasher::new();
    for f in IMAGE_INPUTS {
        let bytes = fs::read(harness.join(f)).map_err(|e| format!("{f}: {e}"))?;
        f.hash(&mut h);
        bytes.hash(&mut h);
    }
    let key = format!("{:016x}", h.finish());
    let base = cache_dir().join("harness");
    let out = base.join(format!("image-{key}"));
    if out.join(".complete").exists() {
        step(&t0, &format!("harness image: reusing {}", out.display()));
        return Ok(out);
    }
    step(&t0, &format!("harness image: building {} (debootstrap on first use)", out.display()));
    fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    run(Command::new("bash")
        .arg(harness.join("build-image.sh"))
        .env("OUT", &out)
        // The debootstrapped root file system does not depend on our scripts: share it.
        .env("WORK", base.join("work")))?;
    fs::write(out.join(".complete"), key).map_err(|e| e.to_string())?;
    step(&t0, "harness image: built");
    Ok(out)
}

/// Copies the scenario scripts and the appliance into a fresh guest directory.
fn guest_dir(elf: &Path, scenarios: &[&str]) -> Result<PathBuf> {
    let dir = target_dir().join("xen-test-guest");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("scenarios")).map_err(|e| e.to_string())?;
    let src = root().join("tests").join("harness").join("guest");
    copy_tree(&src, &dir)?;
    fs::copy(elf, dir.join("portcullis")).map_err(|e| e.to_string())?;
    // For xenctx's symbolic backtraces when a scenario fails.
    let map = Command::new("nm").args(["-n"]).arg(elf).output().map_err(|e| format!("nm: {e}"))?;
    fs::write(dir.join("portcullis.map"), map.stdout).map_err(|e| e.to_string())?;
    build_tools(&dir.join("tools"))?;
    client_overlay(&dir)?;
    fs::write(dir.join("scenarios.list"), scenarios.join("\n") + "\n").map_err(|e| e.to_string())?;
    Ok(dir)
}

/// Builds the harness's dom0 test tools (`tests/harness/tools/*.c`) as static binaries: the
/// harness dom0 has no compiler. The vchan doubles (`tests/harness/dom0-tools`) link against
/// Debian's libxenvchan (build.sh installs `libxen-dev`); the harness dom0 has the same
/// bookworm libraries (xen-utils-4.17 depends on them), so they are linked dynamically.
fn build_tools(out: &Path) -> Result<()> {
    fs::create_dir_all(out).map_err(|e| e.to_string())?;
    let src = root().join("tests").join("harness").join("tools");
    for entry in fs::read_dir(&src).map_err(|e| format!("{}: {e}", src.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|e| e == "c") {
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("tool");
            run(Command::new("cc").args(["-O2", "-static", "-Wall", "-Werror", "-o"]).arg(out.join(stem)).arg(&path))?;
        }
    }
    let doubles = root().join("tests").join("harness").join("dom0-tools").join("build.sh");
    run(Command::new("sh").arg(doubles).arg(out))
}

/// Packs the harness client VM's files (`tests/harness/client/`: its `/init` and role scripts,
/// plus the static test tools) into `client-overlay.cpio.gz`; scenarios append it to the
/// image's busybox domU initramfs (Linux unpacks concatenated archives in order).
fn client_overlay(guest: &Path) -> Result<()> {
    let stage = target_dir().join("xen-test-client");
    let _ = fs::remove_dir_all(&stage);
    fs::create_dir_all(stage.join("client")).map_err(|e| e.to_string())?;
    let src = root().join("tests").join("harness").join("client");
    copy_tree(&src, &stage.join("client"))?;
    fs::rename(stage.join("client").join("init"), stage.join("init")).map_err(|e| format!("client init: {e}"))?;
    // The static tools only (the dom0 doubles next to them need dom0's libxenvchan).
    for tool in fs::read_dir(root().join("tests").join("harness").join("tools")).map_err(|e| e.to_string())? {
        let path = tool.map_err(|e| e.to_string())?.path();
        if let Some(stem) = path.file_stem().filter(|_| path.extension().is_some_and(|e| e == "c")) {
            fs::copy(guest.join("tools").join(stem), stage.join("client").join(stem)).map_err(|e| e.to_string())?;
        }
    }
    let out = guest.join("client-overlay.cpio.gz");
    let script =
        format!("cd {} && find . | cpio -o -H newc --quiet -R 0:0 | gzip -9 > {}", stage.display(), out.display());
    run(Command::new("sh").args(["-c", &script]))
}

fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    for entry in fs::read_dir(src).map_err(|e| format!("{}: {e}", src.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let to = dst.join(entry.file_name());
        if entry.path().is_dir() {
            fs::create_dir_all(&to).map_err(|e| e.to_string())?;
            copy_tree(&entry.path(), &to)?;
        } else {
            fs::copy(entry.path(), &to).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Boots Xen once and runs the scenarios; prints a PASS/FAIL line per scenario.
fn xen_test(names: &[String]) -> Result<bool> {
    let selected: Vec<&str> =
        if names.is_empty() { SCENARIOS.to_vec() } else { names.iter().map(String::as_str).collect() };
    for s in &selected {
        if !SCENARIOS.contains(s) && *s != "console" {
            return Err(format!("unknown scenario {s:?} (known: {})", SCENARIOS.join(" ")));
        }
    }
    let elf = build()?;
    let image = harness_image()?;
    let guest = guest_dir(&elf, &selected)?;
    boot_xen(&image, &guest, &selected)
}

/// The README's main job: boot portcullis under Xen and show its console.
fn run_console() -> Result<bool> {
    let elf = build()?;
    let image = harness_image()?;
    let guest = guest_dir(&elf, &["console"])?;
    boot_xen(&image, &guest, &["console"])
}

fn boot_xen(image: &Path, guest: &Path, scenarios: &[&str]) -> Result<bool> {
    let t0 = Instant::now();
    let log_path = target_dir().join("xen-test.log");
    step(&t0, &format!("booting Xen + dom0 in QEMU (full log: {})", log_path.display()));
    let mut child = Command::new("bash")
        .arg(root().join("tests").join("harness").join("run.sh"))
        .arg(guest)
        .env("OUT", image)
        .env("LOG", &log_path)
        .env("TIMEOUT", env::var("XEN_TEST_TIMEOUT").unwrap_or_else(|_| "1500".into()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("run.sh: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let (mut passed, mut failed) = (0u32, 0u32);
    let mut seen = Vec::new();
    let mut in_failure = false;
    let show_all = scenarios == ["console"];
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| e.to_string())?;
        // run.sh prefixes "[host  12.34] "; strip it for matching.
        let body = line.split_once("] ").map(|(_, b)| b).unwrap_or(&line).trim_end();
        if let Some(rest) = body.strip_prefix("@@ ") {
            in_failure = false;
            if let Some(s) = rest.strip_prefix("SCENARIO-START ") {
                step(&t0, &format!("scenario {s}"));
            } else if let Some(r) = rest.strip_prefix("PASS ") {
                println!("PASS {r}");
                passed += 1;
                seen.push(r.split_whitespace().next().unwrap_or("").to_string());
            } else if let Some(r) = rest.strip_prefix("FAIL ") {
                println!("FAIL {r}");
                failed += 1;
                in_failure = true;
                seen.push(r.split(':').next().unwrap_or("").to_string());
            } else if rest.starts_with("DOM0-TOOLSTACK-READY") {
                step(&t0, "dom0 toolstack ready");
            }
        } else if show_all && body.starts_with("[console] ") {
            println!("{}", &body["[console] ".len()..]);
        } else if in_failure {
            println!("{body}");
        } else if scenarios.iter().any(|s| body.starts_with(&format!("[{s}] "))) {
            // Scenario output lines ("[boot] …").
            println!("  {body}");
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    // A scenario that never reported (Xen panic, dom0 hang, timeout) is a failure too.
    for s in scenarios {
        if *s != "console" && !seen.iter().any(|x| x == s) {
            println!("FAIL {s}: never reported (QEMU exit {status}; see {})", log_path.display());
            failed += 1;
        }
    }
    if failed > 0 || !status.success() {
        print_tail(&log_path, 60);
    }
    if scenarios != ["console"] {
        println!("{passed} passed, {failed} failed");
    }
    step(&t0, "Xen powered off");
    Ok(failed == 0 && status.success())
}

fn print_tail(path: &Path, n: usize) {
    if let Ok(text) = fs::read_to_string(path) {
        let lines: Vec<&str> = text.lines().collect();
        println!("----- last {n} lines of {}", path.display());
        for l in &lines[lines.len().saturating_sub(n)..] {
            println!("{l}");
        }
    }
}
