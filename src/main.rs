//! The portcullis PVH appliance: boot glue and the poll loop.
//!
//! Unsafe here is limited to the boot glue: the entry assembly, reading the start info
//! through the identity map, the panic handler and the `mem*` functions the compiler needs.
#![no_std]
#![no_main]

mod rt;

/// A line of a counters dump. A dump is asked for by an operator (or a test) and must arrive
/// whole: each line waits (briefly, at most 20 ms) for the console ring to drain instead of
/// being dropped when the ring is full, as ordinary log lines are.
macro_rules! dump {
    ($($arg:tt)*) => {{
        log::info!($($arg)*);
        spin_wait_drained(20_000_000);
    }};
}

use core::fmt::Write;
use core::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use firewall::conntrack::Timeouts;
use firewall::forward::{ClientConfig, DownlinkConfig, Firewall, UplinkConfig};
use grant_pool::{GrantPool, PageCell, SharedPage};
use netstack::ethernet::EthernetAddress;
use portcullis::config::{self, ApplianceFirewall};
use portcullis::control::{Control, ControlAction};
use portcullis::counters::Registry;
use portcullis::datapath::{Datapath, PassIo};
use portcullis::downlink::{Downlink, LINK_MAC};
use portcullis::options::{DebugCrash, Ignored, LogLevel, Options};
use portcullis::qubes_link::apply::{self, Applied, Targets};
use portcullis::qubes_link::{QubesEvent, QubesLink, clock};
use portcullis::static_config::RuleEntries;
use portcullis::uplink::{UplinkAddress, UplinkHost};
use portcullis::vchan_test::{TestEvent, VchanTest};
use qubes::qubesdb::store::DefaultStore;
use xen_front::abi::{ShutdownReason, hvm_param, mapspace, virq, xenfeat};
use xen_front::arch::{cpu, idt, paging};
use xen_front::console::{self, ConsoleRing};
use xen_front::entropy::Entropy;
use xen_front::events::PendingEvents;
use xen_front::gnttab::GrantTableFrames;
use xen_front::hypercall;
use xen_front::netback::{LinkChange, Netback};
use xen_front::netfront::{LOCAL_FRAME, Netfront, NetfrontEvent};
use xen_front::platform::{EventChannels, Port, XEN_FOREIGN_WINDOW, Xen};
use xen_front::start_info::BootInfo;
use xen_front::time;
use xen_front::vchan::Io;
use xen_front::xenstore::{Client, ClientState};

core::arch::global_asm!(include_str!("boot/entry.s"), options(att_syntax));

unsafe extern "C" {
    static boot_stack_guard: u8;
    static boot_stack: u8;
    static boot_stack_top: u8;
    static __image_start: u8;
    static __image_end: u8;
    static __bss_start: u8;
}

/// The shared_info page Xen maps over this RAM page.
static SHARED_INFO: PageCell = PageCell::new();
/// Our grant table frames.
static GRANT_FRAMES: [PageCell; config::GRANT_TABLE_FRAMES] = [const { PageCell::new() }; config::GRANT_TABLE_FRAMES];
static XENSTORE: spin::Mutex<Client> = spin::Mutex::new(Client::new());
/// The grant pool's pages: borrowed once, mutably, by the pool in `kmain`.
static mut POOL_PAGES: [PageCell; config::GRANT_POOL_PAGES] = [const { PageCell::new() }; config::GRANT_POOL_PAGES];
static UPLINK: spin::Mutex<Netfront> = spin::Mutex::new(Netfront::new());
/// The client netback: its vifs map their rings at the start of the foreign-mapping window.
static NETBACK: spin::Mutex<Netback> = spin::Mutex::new(Netback::new(XEN_FOREIGN_WINDOW.0));
/// The firewall engine (conntrack, rules, NAT): one client per vif slot.
static FIREWALL: spin::Mutex<ApplianceFirewall> = spin::Mutex::new(Firewall::new());
/// The data path between the netback and the uplink.
static DATAPATH: spin::Mutex<Datapath> = spin::Mutex::new(Datapath::new());
static COUNTERS: spin::Mutex<Registry> = spin::Mutex::new(Registry::new());
/// The CSPRNG (NAT ports, DNS ids, hash keys), seeded at boot.
static ENTROPY: spin::Once<spin::Mutex<Entropy>> = spin::Once::new();
/// dom0's QubesDB, mirrored (~816 KiB of .bss).
static QUBESDB_STORE: spin::Mutex<DefaultStore> = spin::Mutex::new(DefaultStore::new());
/// The QubesDB session and the qrexec agent.
static QUBES: spin::Mutex<QubesLink<Pool>> =
    spin::Mutex::new(QubesLink::new(config::QUBESDB_WINDOW, config::QREXEC_DATA_WINDOWS));
/// Added to Xen's wall clock; set by dom0's `qubes.SetDateTime`.
static WALL_OFFSET_NS: AtomicI64 = AtomicI64::new(0);

static LOOP_PASSES: AtomicU64 = AtomicU64::new(0);
static IDLE_SLEEPS: AtomicU64 = AtomicU64::new(0);
static XS_NOTIFIES: AtomicU64 = AtomicU64::new(0);
static UPLINK_NOT_FOR_US: AtomicU64 = AtomicU64::new(0);
static UPLINK_LOCAL_TX_DROPS: AtomicU64 = AtomicU64::new(0);

type Pool = GrantPool<GrantTableFrames, { config::GRANT_POOL_PAGES }>;

/// Flows looked at for expiry per pass.
const EXPIRE_BUDGET: usize = 64;

fn shared_info() -> SharedPage {
    SharedPage::from_static(&SHARED_INFO)
}

fn now() -> u64 {
    time::system_time(&shared_info(), cpu::rdtsc)
}

fn crash() -> ! {
    // Give xenconsoled a moment to read the report, then die with reason crash.
    spin_wait_drained(50_000_000);
    let _refused = hypercall::shutdown(ShutdownReason::Crash);
    idt::debug_port_write("FATAL: SCHEDOP_shutdown(crash) refused\n");
    cpu::halt_forever()
}

fn spin_wait_drained(max_ns: u64) {
    if !hypercall::ready() {
        return;
    }
    let start = now();
    while !console::drained() && now().wrapping_sub(start) < max_ns {
        hypercall::sched_yield();
    }
}

/// Reads guest-physical memory through the identity map (boot data only).
fn read_phys(paddr: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        // Safety: the boot identity map covers 0–4 GiB and Xen places start info, command
        // line, module list and memory map below 4 GiB; the reads are volatile byte loads.
        *b = unsafe { core::ptr::read_volatile((paddr + i as u64) as *const u8) };
    }
}

fn boot_fail(msg: &str) -> ! {
    idt::debug_port_write("portcullis: fatal boot error: ");
    idt::debug_port_write(msg);
    idt::debug_port_write("\n");
    console::write_line(msg);
    if hypercall::ready() {
        crash()
    }
    cpu::halt_forever()
}

#[unsafe(no_mangle)]
extern "C" fn kmain(start_info_paddr: u64) -> ! {
    // 1. Faults must be reportable before anything else can go wrong.
    let (guard, stack, stack_top) =
        (&raw const boot_stack_guard as usize, &raw const boot_stack as usize, &raw const boot_stack_top as usize);
    // Safety: first thing at boot, interrupts off; the tables describe the running segments.
    unsafe { idt::init(stack..stack_top) };
    // Safety: the guard page is reserved in entry.s for exactly this and nothing uses it.
    let guard_ok = unsafe { paging::unmap_guard_page(guard) };

    // 2. Copy the boot data before anything could reuse the memory after our image.
    let boot = match BootInfo::parse(start_info_paddr, read_phys) {
        Ok(b) => b,
        Err(_) => boot_fail("not started by a PVH loader (bad hvm_start_info magic)"),
    };

    // 3. Hypervisor.
    let Some(xen) = hypercall::detect() else { boot_fail("Xen not detected (CPUID)") };
    if !hypercall::init(&xen) {
        boot_fail("hypercall page not installed");
    }
    idt::set_fault_sink(idt::FaultSink { write: console::write_fault_text, crash });
    if let Err(e) = hypercall::add_to_physmap(mapspace::SHARED_INFO, 0, SHARED_INFO.addr() as u64 >> 12) {
        boot_fail_xen("mapping shared_info", e);
    }

    // 4. Console and logging.
    let console_pfn = hvm_param_or_fail(hvm_param::CONSOLE_PFN, "console page");
    let console_port = Port(hvm_param_or_fail(hvm_param::CONSOLE_EVTCHN, "console event channel") as u32);
    // Safety: Xen's console page is a special page in the identity-mapped reserved region,
    // shared with xenconsoled for the domain's lifetime; only SharedPage accesses it.
    let console_page = unsafe { SharedPage::from_addr((console_pfn << 12) as usize) };
    let mut ignored_opts: [Option<Ignored<'_>>; 16] = [None; 16];
    let mut n_ignored = 0usize;
    let opts = Options::parse(boot.cmdline(), |i| {
        if n_ignored < ignored_opts.len() {
            ignored_opts[n_ignored] = Some(i);
        }
        n_ignored += 1;
    });
    console::install(ConsoleRing::new(console_page), console_port, level_filter(opts.log_level), now);

    let (major, minor) = hypercall::xen_version();
    let mut extra = [0u8; 16];
    let n = hypercall::xen_extraversion(&mut extra).unwrap_or(0);
    log::info!(
        "portcullis {} starting on Xen {}.{}{}",
        portcullis::VERSION,
        major,
        minor,
        core::str::from_utf8(&extra[..n]).unwrap_or("")
    );
    log::info!("command line: \"{}\"{}", boot.cmdline(), if boot.cmdline_truncated { " (truncated)" } else { "" });
    for i in ignored_opts.iter().flatten() {
        match i {
            Ignored::Unknown(w) => log::warn!("ignoring unknown option {:?}", w),
            Ignored::BadValue(w) => log::warn!("ignoring option with a bad value {:?}", w),
        }
    }
    if n_ignored > ignored_opts.len() {
        log::warn!("{} more options ignored", n_ignored - ignored_opts.len());
    }
    for r in boot.memmap() {
        log::info!("memory {:#012x}-{:#012x} type {}", r.addr, r.addr + r.size.saturating_sub(1), r.kind);
    }
    for m in boot.modules() {
        log::info!("boot module {:#x}+{:#x} (reserved, unused)", m.paddr, m.size);
    }
    log::info!("boot data {:#x}-{:#x} copied", boot.boot_data.0, boot.boot_data.1);
    let image = (&raw const __image_start as usize, &raw const __image_end as usize);
    let bss_start = &raw const __bss_start as usize;
    log::info!(
        "memory budget: image {} KiB ({} KiB .bss) of {} MiB RAM; static budget {} KiB (allowance, see config)",
        (image.1 - image.0) / 1024,
        (image.1 - bss_start) / 1024,
        boot.ram_bytes() >> 20,
        config::budget_total() / 1024
    );
    for line in config::budget() {
        log::debug!("  budget: {:<28} {:>8} KiB", line.what, line.bytes / 1024);
    }
    match guard_ok {
        Ok(()) => log::info!("stack guard page at {:#x}", guard),
        Err(e) => log::warn!("stack guard page not set up: {:?}", e),
    }
    if let Some(d) = xen.domid {
        log::info!("domid {} (from CPUID)", d);
    }

    // Entropy: hardware sources unless a fixed test seed was given.
    let rng = match opts.seed {
        Some(seed) => {
            log::warn!("entropy: fixed seed {} from the command line (tests only: predictable)", seed);
            Entropy::from_fixed_seed(seed)
        }
        None => {
            let mut extra = [0u8; 16];
            extra[..8].copy_from_slice(&cpu::rdtsc().to_le_bytes());
            extra[8..10].copy_from_slice(&xen.domid.unwrap_or(0).to_le_bytes());
            let (rng, src) = Entropy::from_hardware(&extra);
            log::info!("entropy: {} RDSEED, {} RDRAND, {} TSC jitter samples", src.rdseed, src.rdrand, src.tsc_samples);
            rng
        }
    };
    ENTROPY.call_once(|| spin::Mutex::new(rng));

    log::info!(
        "clock: system time {} ms, wall clock {} s since the epoch",
        now() / 1_000_000,
        time::wall_clock_secs(&shared_info(), now(), 0)
    );

    // 5. Events: upcall vector, timer.
    let features = hypercall::xen_features();
    if features & (1 << xenfeat::HVM_CALLBACK_VECTOR) == 0 {
        boot_fail("Xen does not offer the HVM callback vector");
    }
    if let Err(e) = hypercall::hvm_set_param(
        hvm_param::CALLBACK_IRQ,
        (hvm_param::CALLBACK_TYPE_VECTOR << 56) | u64::from(idt::UPCALL_VECTOR),
    ) {
        boot_fail_xen("setting the callback vector", e);
    }
    let mut events = PendingEvents::new(shared_info());
    let timer_port = match Xen.bind_virq(virq::TIMER) {
        Ok(p) => p,
        Err(e) => boot_fail_xen("binding VIRQ_TIMER", e),
    };

    // 6. Grant table and the grant pool.
    let grant_table = match GrantTableFrames::map(&GRANT_FRAMES) {
        Ok(gt) => gt,
        Err(e) => boot_fail_xen("mapping the grant table", e),
    };
    log::info!(
        "grant table: {} entries mapped ({} frames of max {}), refs from {}",
        grant_table.entries(),
        grant_table.entries() / 512,
        grant_table.max_frames,
        grant_table.first_free_ref()
    );
    let first_ref = grant_table.first_free_ref();
    // Safety: the only reference ever made to POOL_PAGES, taken once here at boot; the pool
    // owns the pages from now on.
    let Some(pool_pages) = (unsafe { (&raw mut POOL_PAGES).as_mut() }) else { boot_fail("grant pool pages") };
    let mut pool: Pool = match GrantPool::from_static(grant_table, first_ref, pool_pages, |a| a as u64 >> 12) {
        Ok(p) => p,
        Err(e) => {
            let mut line = console::LineBuffer::default();
            let _ = write!(line, "grant pool: {:?}", e);
            boot_fail(line.as_str())
        }
    };
    log::info!(
        "grant pool: {} pages, refs {}..{}",
        config::GRANT_POOL_PAGES,
        first_ref,
        first_ref + config::GRANT_POOL_PAGES as u32
    );

    let static_config = !opts.qubesdb;
    if opts.qubesdb {
        log::info!("config: from QubesDB (a command line with ip= configures the appliance instead)");
        let cmdline = boot.cmdline();
        for key in ["ip=", "gw=", "client-gw=", "dns=", "rules="] {
            if cmdline.split_ascii_whitespace().any(|w| w.starts_with(key)) {
                log::warn!("config: {}... ignored: QubesDB gives the configuration", key);
            }
        }
    }
    let uplink_addr = match (opts.uplink_ip, opts.gateway) {
        (Some((ip, prefix_len)), Some(gateway)) if static_config => Some(UplinkAddress { ip, prefix_len, gateway }),
        _ if static_config => {
            log::warn!("uplink: no ip=/gw= on the command line; the uplink has no address");
            None
        }
        _ => None,
    };
    let mut host = UplinkHost::new(uplink_addr, opts.debug_echo);
    if opts.debug_echo {
        log::warn!("debug-echo: answering ICMP echo and UDP port 7 on our addresses (testing only)");
    }
    let mut down = Downlink::new(opts.client_gateway.filter(|_| static_config), opts.debug_echo);
    {
        let mut fw = FIREWALL.lock();
        let mut key = [0u8; 16];
        with_rng(|r| r.fill(&mut key));
        fw.rekey(key);
        if static_config {
            match opts.client_gateway {
                Some(gw) => fw.set_downlink(Some(DownlinkConfig::qubes(gw))),
                None => log::warn!("clients: no client-gw= on the command line; clients have no gateway address"),
            }
            fw.set_dns_servers(opts.dns[0], opts.dns[1]);
        }
        if let Some(t) = opts.udp_timeout_s {
            let secs = u64::from(t) * 1_000_000_000;
            let timeouts = Timeouts { udp_unreplied: secs, udp_replied: secs, ..Timeouts::LINUX };
            fw.conntrack_mut().set_timeouts(timeouts);
            log::info!("conntrack: UDP flows expire after {} s idle", t);
        }
    }

    // 7. Xenstore and the control plane.
    let store_pfn = hvm_param_or_fail(hvm_param::STORE_PFN, "xenstore page");
    let store_port = Port(hvm_param_or_fail(hvm_param::STORE_EVTCHN, "xenstore event channel") as u32);
    // Safety: the xenstore page is a special page shared with xenstored for our lifetime.
    XENSTORE.lock().attach(unsafe { SharedPage::from_addr((store_pfn << 12) as usize) });
    for p in [console_port, store_port, timer_port] {
        let _ = Xen.unmask(p);
    }
    register_counters();

    QUBES.lock().enable(opts.qubesdb, opts.qrexec);
    let mut vchan_test =
        opts.vchan_test.map(|s| VchanTest::<Pool>::new(s, opts.vchan_bytes, config::VCHAN_TEST_WINDOWS));
    let mut control = Control::new();
    control.start(&mut XENSTORE.lock(), now());
    UPLINK.lock().start(&mut XENSTORE.lock(), now());
    NETBACK.lock().start();
    let mut next_quarantine_retry = 0u64;
    let stats_every = u64::from(opts.stats_interval_s) * 1_000_000_000;
    let mut next_stats = if stats_every > 0 { now() + stats_every } else { u64::MAX };
    let mut ready = false;
    let mut xs_broken_reported = false;

    loop {
        LOOP_PASSES.fetch_add(1, Ordering::Relaxed);
        // Client vifs are looked at when their port fired; the other consumers poll anyway.
        events.harvest();
        NETBACK.lock().take_events(|p| events.take(p));
        events.clear_untaken();

        let t = now();
        let mut xs = XENSTORE.lock();
        let outcome = xs.poll(t);
        if outcome.notify_peer {
            XS_NOTIFIES.fetch_add(1, Ordering::Relaxed);
            let _ = Xen.send(store_port);
        }
        if let ClientState::Broken(fault) = xs.state()
            && !xs_broken_reported
        {
            xs_broken_reported = true;
            log::error!("xenstore connection broken by a protocol error ({:?}); control plane stopped", fault);
        }
        let mut uplink = UPLINK.lock();
        let mut netback = NETBACK.lock();
        if xs.events_lost() {
            uplink.on_events_lost();
            netback.on_events_lost();
        }
        while let Some(action) = control.poll_with(&mut xs, t, |path, token| {
            if !uplink.on_watch(path, token) {
                netback.on_watch_event(path, token);
            }
        }) {
            match action {
                ControlAction::Registered => {
                    log::info!("xenstore: domid {:?}, name \"{}\"", control.domid, control.name());
                    if let (Some(a), Some(b)) = (control.domid, xen.domid)
                        && a != b
                    {
                        log::warn!("xenstore domid {} differs from CPUID domid {}", a, b);
                    }
                    control.set_state(&mut xs, t, "ready");
                    if !ready {
                        ready = true;
                        log::info!("ready: idle, waiting for events");
                    }
                    if let Some(c) = opts.debug_crash {
                        drop(xs);
                        debug_crash(c);
                    }
                }
                ControlAction::Shutdown(reason) => {
                    log::info!("shutdown requested by dom0: {:?}", reason);
                    drop(xs);
                    spin_wait_drained(200_000_000);
                    let e = hypercall::shutdown(reason);
                    boot_fail_xen("SCHEDOP_shutdown", e);
                }
                ControlAction::DumpCounters => {
                    dump_counters(&xs, &control, &uplink, &pool, &host);
                    dump_datapath(&netback, &down);
                    dump!("counters dump end");
                }
            }
        }
        match uplink.poll_control(&mut xs, &Xen, &mut pool, t) {
            Some(NetfrontEvent::LinkUp) => {
                let mut frame = [0u8; 64];
                if let Some(n) = host.on_link_up(uplink.mac(), t, &mut frame) {
                    send_local(&mut uplink, &mut pool, &frame[..n]);
                }
            }
            Some(NetfrontEvent::LinkDown) => log::info!("uplink: link down; waiting for the backend"),
            None => {}
        }
        netback.poll(&mut xs, &Xen, t);
        let mut fw = FIREWALL.lock();
        let (qubes_busy, qubes_deadline) = {
            let mut to = Targets { fw: &mut fw, host: &mut host, down: &mut down };
            poll_qubes(&mut xs, &mut pool, &mut to, t, xen.domid.or(control.domid))
        };
        let vchan_test_busy = vchan_test.as_mut().is_some_and(|v| poll_vchan_test(v, &mut xs, &mut pool, t, xen.domid));
        let outcome = xs.poll(t);
        if outcome.notify_peer {
            XS_NOTIFIES.fetch_add(1, Ordering::Relaxed);
            let _ = Xen.send(store_port);
        }
        let mut busy = outcome.replies_ready || outcome.events_ready || qubes_busy || vchan_test_busy;
        drop(xs);

        // Client links coming and going.
        let mut datapath = DATAPATH.lock();
        let rules_from = if static_config { RulesFrom::CommandLine(boot.cmdline()) } else { RulesFrom::QubesDb };
        while let Some(change) = netback.take_change() {
            on_link_change(change, &mut netback, &mut fw, &mut datapath, rules_from);
        }
        sync_uplink_config(&mut fw, &host, &uplink);

        // The data path.
        let passed = with_rng(|r| {
            let io = PassIo {
                xen: &Xen,
                pool: &mut pool,
                uplink: &mut uplink,
                host: &mut host,
                netback: &mut netback,
                down: &mut down,
                fw: &mut fw,
            };
            datapath.pass(io, t, &mut || r.next_u32())
        });
        busy |= passed;
        drop(datapath);
        if uplink.is_up() {
            let mut frame = [0u8; 64];
            if let Some(n) = host.poll(t, &mut frame) {
                send_local(&mut uplink, &mut pool, &frame[..n]);
            }
            let mut query = [0u8; 600];
            if let Some(n) = with_rng(|r| fw.poll_resolver(t, &mut query, &mut || r.next_u32())) {
                send_local(&mut uplink, &mut pool, &query[..n]);
            }
        }
        fw.expire(t, EXPIRE_BUDGET);
        drop(fw);
        uplink.flush(&Xen);
        let nb_deadline = netback.next_deadline();
        drop(netback);
        drop(uplink);
        if t >= next_quarantine_retry {
            next_quarantine_retry = t + 1_000_000_000;
            if pool.retry_quarantined() > 0 {
                log::info!("grant pool: quarantined pages released");
            }
        }

        if t >= next_stats {
            next_stats = t + stats_every;
            summary_line(&pool);
        }
        if busy {
            continue;
        }
        // Idle: wake for the next deadline (stats, xenstore timeouts) or any event.
        let deadline = next_stats
            .min(t + 1_000_000_000)
            .min(host.next_deadline().unwrap_or(u64::MAX).max(t + 1_000_000))
            .min(nb_deadline.unwrap_or(u64::MAX).max(t + 1_000_000))
            .min(qubes_deadline.unwrap_or(u64::MAX).max(t + 1_000_000));
        let _ = hypercall::set_timer_op(deadline);
        if !events.harvest() {
            IDLE_SLEEPS.fetch_add(1, Ordering::Relaxed);
            cpu::idle_until_interrupt();
        }
    }
}

/// Runs `f` with the CSPRNG.
fn with_rng<R>(f: impl FnOnce(&mut Entropy) -> R) -> R {
    match ENTROPY.get() {
        Some(e) => f(&mut e.lock()),
        // Seeded before anything asks; a fixed seed is better than a crash if not.
        None => f(&mut Entropy::from_fixed_seed(0)),
    }
}

/// Where clients' rules come from.
#[derive(Clone, Copy)]
enum RulesFrom<'a> {
    /// `rules=` words of this command line.
    CommandLine(&'a str),
    /// QubesDB's `/qubes-firewall/<ip>/` (the store as synced so far).
    QubesDb,
}

/// A client link came up or went down: tell the data path and the firewall.
fn on_link_change(
    change: LinkChange,
    netback: &mut Netback,
    fw: &mut ApplianceFirewall,
    datapath: &mut Datapath,
    rules_from: RulesFrom<'_>,
) {
    match change {
        LinkChange::Up(vif) => {
            let Some(info) = netback.info(vif).copied() else { return };
            if let Some(p) = netback.port(vif) {
                let _ = Xen.unmask(p);
            }
            let Some(id) = datapath.link_up(vif, &info) else { return };
            let (domid, devid) = (info.domid, info.devid);
            let Some(ip) = info.ipv4 else {
                log::warn!("client vif{}.{}: no IPv4 address in its ip key; its traffic is dropped", domid, devid);
                return;
            };
            let cfg = ClientConfig { addr: ip, mac: EthernetAddress(info.mac) };
            if let Err(e) = fw.add_client(id, cfg) {
                log::error!("client vif{}.{} ({}): refused by the firewall: {:?}", domid, devid, ip, e);
                return;
            }
            let cmdline = match rules_from {
                RulesFrom::QubesDb => {
                    let store = QUBESDB_STORE.lock();
                    let rules = apply::client_rules(QUBES.lock().config(), &store, fw, id, ip);
                    log::info!("client vif{}.{} ({}): up, {} (QubesDB)", domid, devid, ip, rules);
                    return;
                }
                RulesFrom::CommandLine(c) => c,
            };
            match RuleEntries::from_cmdline(cmdline, ip) {
                Some(rules) => match fw.commit_rules(id, rules.entries()) {
                    Ok(_) => log::info!("client vif{}.{} ({}): up, {} rules", domid, devid, ip, rules.len()),
                    Err(e) => log::error!(
                        "client vif{}.{} ({}): up; its rules do not parse ({:?}): all its traffic is dropped",
                        domid,
                        devid,
                        ip,
                        e
                    ),
                },
                None => log::info!(
                    "client vif{}.{} ({}): up, no rules (give rules=): only its gateway answers",
                    domid,
                    devid,
                    ip
                ),
            }
        }
        LinkChange::Down(vif) => {
            if let Some(id) = datapath.link_down(vif) {
                fw.remove_client(id);
            }
        }
    }
}

/// Keeps the engine's view of the uplink in step with the link and what ARP learned.
fn sync_uplink_config(fw: &mut ApplianceFirewall, host: &UplinkHost, uplink: &Netfront) {
    let want = match (host.address(), host.gateway_mac(), uplink.is_up()) {
        (Some(a), Some(gateway_mac), true) => Some(UplinkConfig {
            addr: a.ip,
            netmask: netmask(a.prefix_len),
            gateway: a.gateway,
            mac: EthernetAddress(uplink.mac()),
            gateway_mac,
            mtu: 1500,
        }),
        _ => None,
    };
    if fw.uplink() != want.as_ref() {
        match want {
            Some(u) => log::info!("firewall: uplink {} via {} ({:02x?})", u.addr, u.gateway, u.gateway_mac.0),
            None => log::info!("firewall: no uplink"),
        }
        fw.set_uplink(want);
    }
}

fn netmask(prefix_len: u8) -> core::net::Ipv4Addr {
    core::net::Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix_len.min(32))).unwrap_or(0))
}

fn dump_datapath(netback: &Netback, down: &Downlink) {
    dump!("  netback.stats = {:?}", netback.stats());
    dump!("  netback.resources = {:?} vifs_in_use={}", netback.resources(), netback.vifs_in_use());
    for (vif, info) in netback.connected() {
        dump!(
            "  vif{}.{}: mac={:02x?} ip={:?} counters={:?}",
            info.domid,
            info.devid,
            info.mac,
            info.ipv4,
            netback.counters(vif)
        );
    }
    dump!("  downlink = {:?} mac={:02x?}", down.counters, LINK_MAC.0);
    let dp = DATAPATH.lock();
    dump!("  datapath = {:?}", dp.counters);
    dump!("  pipeline = {:?}", dp.pipeline.counters);
    let c = dp.counters;
    let ratio_milli = (c.forwarded_copied_bytes * 1000).checked_div(c.forwarded_bytes).unwrap_or(0);
    dump!(
        "  datapath.copies: forwarded_bytes={} copied_bytes={} copies_per_byte={}.{:03}",
        c.forwarded_bytes,
        c.forwarded_copied_bytes,
        ratio_milli / 1000,
        ratio_milli % 1000
    );
    drop(dp);
    let fw = FIREWALL.lock();
    let fc = fw.counters();
    dump!(
        "  firewall: to_uplink={} to_clients={} echo_replies={} icmp_errors={} fragmented={} dropped={} flows={}",
        fc.forwarded_to_uplink,
        fc.forwarded_to_clients,
        fc.echo_replies,
        fc.icmp_errors,
        fc.fragmented,
        fc.dropped_total(),
        fw.conntrack().len()
    );
    let mut line = console::LineBuffer::default();
    let _ = write!(line, "  firewall.drops:");
    for (i, n) in fc.drops.iter().enumerate().filter(|(_, n)| **n > 0) {
        let _ = write!(line, " {}={}", firewall::forward::DropCause::name_of(i), n);
    }
    dump!("{}", line.as_str());
}

/// QubesDB and qrexec: one pass, then their events (logged; the configuration put in force,
/// the seed and the clock acted on). Returns whether work is left and when the link wants to
/// run next.
fn poll_qubes(
    xs: &mut Client,
    pool: &mut Pool,
    to: &mut Targets<
        '_,
        { firewall::config::CONNTRACK_CAPACITY },
        { firewall::config::CONNTRACK_INDEX_BUCKETS },
        { xen_front::netback::MAX_VIFS },
    >,
    t: u64,
    domid: Option<u16>,
) -> (bool, Option<u64>) {
    let mut io = Io { xen: &Xen, xs, pool, now_ns: t };
    let mut store = QUBESDB_STORE.lock();
    let mut link = QUBES.lock();
    link.poll(&mut io, &mut store, domid);
    while let Some(ev) = link.next_event(&mut store) {
        let applied = apply::apply(&ev, link.config(), &store, to, t);
        match &ev {
            QubesEvent::Reseed(seed) => {
                if let Some(rng) = ENTROPY.get() {
                    rng.lock().reseed(&seed.bytes[..seed.len.min(seed.bytes.len())]);
                }
            }
            QubesEvent::WallClock(secs) => {
                let (sec, nsec) = time::wall_clock_base(&shared_info());
                let xen_wall = i128::from(sec) * 1_000_000_000 + i128::from(nsec) + i128::from(now());
                WALL_OFFSET_NS.store(clock::wall_offset_ns(*secs, xen_wall), Ordering::Relaxed);
            }
            _ => {}
        }
        log::info!("{}", ev);
        if applied != Applied::Nothing {
            log::info!("{}", applied);
        }
        if let QubesEvent::WallClock(_) = ev {
            let offset = WALL_OFFSET_NS.load(Ordering::Relaxed);
            let wall = time::wall_clock_secs(&shared_info(), now(), offset);
            log::info!("clock: wall clock now {} (offset {} s)", clock::Utc(wall as i64), offset / 1_000_000_000);
        }
    }
    (link.is_busy(), link.next_deadline())
}

/// The `vchan-test=` mode: one pass; returns whether bytes are moving.
fn poll_vchan_test(test: &mut VchanTest<Pool>, xs: &mut Client, pool: &mut Pool, t: u64, domid: Option<u16>) -> bool {
    let Some(me) = domid else { return false };
    let mut io = Io { xen: &Xen, xs, pool, now_ns: t };
    while let Some(ev) = test.poll(&mut io, me) {
        match ev {
            TestEvent::SetupFailed { port, error } => {
                log::error!("vchan-test: port {} set-up failed: {:?}", port, error)
            }
            TestEvent::Connected { port } => log::info!("vchan-test: port {} connected", port),
            TestEvent::Finished(report) => log::info!("{}", report),
            TestEvent::Closed { port, by_peer } => {
                log::info!("vchan-test: port {} closed{}", port, if by_peer { " after the peer" } else { "" });
                if test.is_done() {
                    let c = io.pool.counts();
                    log::info!(
                        "vchan-test: all done; pool free={} shared={} quarantined={}",
                        c.free,
                        c.shared,
                        c.quarantined
                    );
                }
            }
        }
    }
    test.is_busy()
}

fn debug_crash(c: DebugCrash) -> ! {
    log::warn!("debug-crash={:?}: faulting on purpose", c);
    spin_wait_drained(100_000_000);
    match c {
        // Safety: deliberately invalid — the address is the unmapped guard page; the fault
        // handler reports it and crashes the domain, which is the point of this option.
        DebugCrash::PageFault => unsafe {
            core::ptr::write_volatile(&raw const boot_stack_guard as *mut u8, 1);
        },
        DebugCrash::StackOverflow => {
            recurse(0);
        }
    }
    boot_fail("debug crash did not fault")
}

#[inline(never)]
#[allow(unconditional_recursion)] // the point: run into the guard page
fn recurse(depth: u64) -> u64 {
    let pad = core::hint::black_box([depth; 64]);
    recurse(depth + 1) + pad[3]
}

fn level_filter(l: LogLevel) -> log::LevelFilter {
    match l {
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Trace => log::LevelFilter::Trace,
    }
}

fn hvm_param_or_fail(index: u32, what: &str) -> u64 {
    match hypercall::hvm_get_param(index) {
        Ok(v) if v != 0 => v,
        Ok(_) => boot_fail(what),
        Err(e) => boot_fail_xen(what, e),
    }
}

fn boot_fail_xen(what: &str, e: hypercall::XenError) -> ! {
    let mut line = console::LineBuffer::default();
    let _ = write!(line, "{}: {}", what, e);
    boot_fail(line.as_str())
}

fn register_counters() {
    let mut r = COUNTERS.lock();
    r.register("loop.passes", &LOOP_PASSES);
    r.register("loop.idle_sleeps", &IDLE_SLEEPS);
    r.register("xenstore.notifies", &XS_NOTIFIES);
    r.register("uplink.not_for_us", &UPLINK_NOT_FOR_US);
    r.register("uplink.local_tx_drops", &UPLINK_LOCAL_TX_DROPS);
    r.register("console.lines_written", &console::LINES_WRITTEN);
    r.register("console.lines_dropped", &console::LINES_DROPPED);
}

fn summary_line(pool: &Pool) {
    let mut line = console::LineBuffer::default();
    let _ = write!(line, "stats:");
    COUNTERS.lock().for_each_nonzero(|n, v| {
        let _ = write!(line, " {}={}", n, v);
    });
    let _ = write!(line, " upcalls={} spurious={}", idt::upcalls(), idt::spurious_interrupts());
    {
        let xs = XENSTORE.lock();
        let s = xs.stats();
        let _ = write!(
            line,
            " xs.in_flight={} xs.requests={} xs.replies={} xs.busy={} xs.timeouts={}",
            xs.in_flight(),
            s.requests,
            s.replies,
            s.refused_busy,
            s.timeouts
        );
    }
    let nb = NETBACK.lock();
    let st = nb.stats();
    let _ = write!(
        line,
        " nb.vifs={} nb.rx={} nb.tx={} nb.xs_busy={} nb.pool_exhausted={}",
        nb.vifs_in_use(),
        st.rx_frames,
        st.tx_frames,
        st.xs_busy,
        st.pool_exhausted
    );
    drop(nb);
    let _ = write!(line, " pool.free={}", pool.counts().free);
    log::info!("{}", line.as_str());
}

/// Sends a frame we built ourselves (ARP) on the uplink, in a fresh pool slot.
fn send_local(uplink: &mut Netfront, pool: &mut Pool, frame: &[u8]) {
    let Some(mut slot) = pool.take() else {
        UPLINK_LOCAL_TX_DROPS.fetch_add(1, Ordering::Relaxed);
        return;
    };
    slot.bytes_mut()[..frame.len()].copy_from_slice(frame);
    if let Err(slot) = uplink.transmit(pool, slot, 0, frame.len() as u16, LOCAL_FRAME) {
        UPLINK_LOCAL_TX_DROPS.fetch_add(1, Ordering::Relaxed);
        pool.put_back(slot);
    }
}

fn dump_counters(xs: &Client, control: &Control, uplink: &Netfront, pool: &Pool, host: &UplinkHost) {
    dump!("counters dump begin");
    COUNTERS.lock().for_each(|n, v| dump!("  {} = {}", n, v));
    dump!("  irq.upcalls = {}", idt::upcalls());
    dump!("  irq.spurious = {}", idt::spurious_interrupts());
    let s = xs.stats();
    dump!("  xenstore.stats = {:?}", s);
    dump!("  xenstore.in_flight = {}", xs.in_flight());
    dump!("  control.errors = {}", control.errors);
    dump!("  control.ignored_requests = {}", control.ignored_requests);
    let c = pool.counts();
    dump!(
        "  pool: capacity={} free={} private={} lent={} shared={} quarantined={}",
        c.capacity,
        c.free,
        c.private,
        c.lent,
        c.shared,
        c.quarantined
    );
    dump!("  pool.stats = {:?}", pool.stats());
    let (rx_posted, tx_in_flight) = uplink.in_flight();
    dump!(
        "  uplink: phase={:?} devid={:?} backend={} rx_posted={} tx_in_flight={} port={:?}",
        uplink.phase(),
        uplink.devid(),
        uplink.backend_id(),
        rx_posted,
        tx_in_flight,
        uplink.port()
    );
    dump!("  uplink.counters = {:?}", uplink.counters());
    dump!("  uplink.host = {:?}", host.counters);
    QUBES.lock().dump(|line| dump!("  {}", line));
}
