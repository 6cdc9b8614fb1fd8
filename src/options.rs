//! The appliance's command line: `key=value` words. Qubes passes its own kernel options too,
//! so unknown words are reported back (to be warned about) and otherwise ignored.

use core::net::Ipv4Addr;

use crate::vchan_test::{DEFAULT_TEST_BYTES, TestSpec};

/// Log verbosity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// The default.
    Info,
    /// Debugging detail.
    Debug,
    /// Everything.
    Trace,
}

/// A deliberate fault for the crash test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebugCrash {
    /// Write to an unmapped address (page fault).
    PageFault,
    /// Overflow the boot stack into its guard page.
    StackOverflow,
}

/// Parsed options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// `loglevel=error|warn|info|debug|trace`.
    pub log_level: LogLevel,
    /// `seed=N`: a fixed entropy seed for reproducible tests (replaces the hardware sources).
    pub seed: Option<u64>,
    /// `stats=SECONDS`: periodic one-line counter summary (0 = off, the default).
    pub stats_interval_s: u32,
    /// `debug-crash=pagefault|stack`: fault on purpose once booted.
    pub debug_crash: Option<DebugCrash>,
    /// `ip=A.B.C.D/LEN`: the uplink address; giving it makes the command line the configuration
    /// (QubesDB off unless `qubesdb=1`).
    pub uplink_ip: Option<(Ipv4Addr, u8)>,
    /// `gw=A.B.C.D`: the uplink gateway.
    pub gateway: Option<Ipv4Addr>,
    /// `debug-echo=1`: answer ICMP echo and UDP port 7 on our own addresses (testing only;
    /// Linux sys-firewall answers neither on its uplink).
    pub debug_echo: bool,
    /// `client-gw=A.B.C.D`: the gateway address clients use (Qubes' `/qubes-netvm-gateway`).
    pub client_gateway: Option<Ipv4Addr>,
    /// `dns=A.B.C.D[,A.B.C.D]`: the DNS servers clients' `specialtarget=dns` rules name.
    pub dns: [Option<Ipv4Addr>; 2],
    /// `udp-timeout=SECONDS`: idle timeout of UDP flows, replied or not (Linux: 30/120 s).
    pub udp_timeout_s: Option<u32>,
    /// `vchan-test=client:PORT[,PORT…]` or `vchan-test=server:PORT:READ_MIN:WRITE_MIN`: stream
    /// the test pattern with dom0's `vchan-peer` (testing only).
    pub vchan_test: Option<TestSpec>,
    /// `vchan-bytes=N`: bytes each way of the vchan test (default 10 MiB).
    pub vchan_bytes: u64,
    /// `qubesdb=1`: read the configuration (addresses, DNS, clients' rules) from QubesDB (dom0
    /// port 111), as on Qubes. The default unless `ip=` is given: a command line with `ip=`
    /// configures the appliance itself (tests, Xen without Qubes).
    pub qubesdb: bool,
    /// `qrexec=0`: do not run the qrexec agent (on by default, as Qubes expects).
    pub qrexec: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            log_level: LogLevel::Info,
            seed: None,
            stats_interval_s: 0,
            debug_crash: None,
            uplink_ip: None,
            gateway: None,
            debug_echo: false,
            client_gateway: None,
            dns: [None; 2],
            udp_timeout_s: None,
            vchan_test: None,
            vchan_bytes: DEFAULT_TEST_BYTES,
            qubesdb: true,
            qrexec: true,
        }
    }
}

/// Something on the command line we did not use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignored<'a> {
    /// An option we do not know (e.g. one of Qubes' kernel options).
    Unknown(&'a str),
    /// A known option with a value we cannot use.
    BadValue(&'a str),
}

impl Options {
    /// Parses `cmdline`, calling `ignored` for each word not used.
    pub fn parse<'a>(cmdline: &'a str, mut ignored: impl FnMut(Ignored<'a>)) -> Options {
        let mut o = Options::default();
        let mut qubesdb = None;
        for word in cmdline.split_ascii_whitespace() {
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            let ok = match key {
                "loglevel" => match value {
                    "error" => Some(LogLevel::Error),
                    "warn" => Some(LogLevel::Warn),
                    "info" => Some(LogLevel::Info),
                    "debug" => Some(LogLevel::Debug),
                    "trace" => Some(LogLevel::Trace),
                    _ => None,
                }
                .map(|l| o.log_level = l),
                "seed" => parse_u64(value).map(|s| o.seed = Some(s)),
                "stats" => value.parse::<u32>().ok().map(|s| o.stats_interval_s = s),
                "debug-crash" => match value {
                    "pagefault" => Some(DebugCrash::PageFault),
                    "stack" => Some(DebugCrash::StackOverflow),
                    _ => None,
                }
                .map(|c| o.debug_crash = Some(c)),
                "ip" => parse_cidr(value).map(|a| o.uplink_ip = Some(a)),
                "gw" => value.parse().ok().map(|g| o.gateway = Some(g)),
                "debug-echo" => parse_bool(value).map(|e| o.debug_echo = e),
                "vchan-test" => TestSpec::parse(value).map(|t| o.vchan_test = Some(t)),
                "vchan-bytes" => parse_u64(value).filter(|&n| n > 0).map(|n| o.vchan_bytes = n),
                "qubesdb" => parse_bool(value).map(|b| qubesdb = Some(b)),
                "qrexec" => parse_bool(value).map(|b| o.qrexec = b),
                "client-gw" => value.parse().ok().map(|g| o.client_gateway = Some(g)),
                "dns" => parse_dns(value).map(|d| o.dns = d),
                "udp-timeout" => value.parse::<u32>().ok().filter(|&t| t > 0).map(|t| o.udp_timeout_s = Some(t)),
                // Per-client rules: read by `static_config` when the client connects.
                "rules" => crate::static_config::parse_rules_word(value).map(|_| ()),
                _ => {
                    ignored(Ignored::Unknown(word));
                    continue;
                }
            };
            if ok.is_none() {
                ignored(Ignored::BadValue(word));
            }
        }
        o.qubesdb = qubesdb.unwrap_or(o.uplink_ip.is_none());
        o
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "on" | "" => Some(true),
        "0" | "off" => Some(false),
        _ => None,
    }
}

fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let len: u8 = len.parse().ok().filter(|l| (1..=32).contains(l))?;
    Some((ip.parse().ok()?, len))
}

fn parse_dns(s: &str) -> Option<[Option<Ipv4Addr>; 2]> {
    let mut it = s.split(',');
    let first = it.next()?.parse().ok()?;
    let second = match it.next() {
        Some(a) => Some(a.parse().ok()?),
        None => None,
    };
    it.next().is_none().then_some([Some(first), second])
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_options_parse_and_unknown_ones_are_reported() {
        let mut ignored = Vec::new();
        let o =
            Options::parse("loglevel=debug root=/dev/xvda seed=0x2a stats=5 nopat loglevel=loud", |i| ignored.push(i));
        assert_eq!(o.log_level, LogLevel::Debug);
        assert_eq!(o.seed, Some(42));
        assert_eq!(o.stats_interval_s, 5);
        assert_eq!(o.debug_crash, None);
        assert_eq!(
            ignored,
            [Ignored::Unknown("root=/dev/xvda"), Ignored::Unknown("nopat"), Ignored::BadValue("loglevel=loud")]
        );
    }

    #[test]
    fn empty_and_garbage_command_lines_give_defaults() {
        assert_eq!(Options::parse("", |_| panic!()), Options::default());
        let mut n = 0;
        let o = Options::parse("seed= stats=-1 debug-crash=maybe = ==", |_| n += 1);
        assert_eq!(o, Options::default());
        assert_eq!(n, 5);
    }

    #[test]
    fn uplink_options() {
        let o = Options::parse("ip=10.137.0.5/24 gw=10.137.0.1 debug-echo=1", |_| panic!());
        assert_eq!(o.uplink_ip, Some((Ipv4Addr::new(10, 137, 0, 5), 24)));
        assert_eq!(o.gateway, Some(Ipv4Addr::new(10, 137, 0, 1)));
        assert!(o.debug_echo);
        let mut bad = 0;
        let o = Options::parse("ip=10.0.0.1 ip=10.0.0.1/33 ip=300.1.1.1/8 gw=x debug-echo=maybe", |_| bad += 1);
        assert_eq!((o.uplink_ip, o.gateway, o.debug_echo, bad), (None, None, false, 5));
    }

    #[test]
    fn forwarding_options() {
        let o = Options::parse(
            "client-gw=10.137.0.1 dns=10.139.1.1,10.139.1.2 udp-timeout=5 rules=10.137.0.10;accept",
            |_| panic!(),
        );
        assert_eq!(o.client_gateway, Some(Ipv4Addr::new(10, 137, 0, 1)));
        assert_eq!(o.dns, [Some(Ipv4Addr::new(10, 139, 1, 1)), Some(Ipv4Addr::new(10, 139, 1, 2))]);
        assert_eq!(o.udp_timeout_s, Some(5));
        assert_eq!(Options::parse("dns=10.0.0.53", |_| panic!()).dns, [Some(Ipv4Addr::new(10, 0, 0, 53)), None]);
        let mut bad = 0;
        let o =
            Options::parse("client-gw=1 dns=1.1.1.1,2.2.2.2,3.3.3.3 dns= udp-timeout=0 rules=x;accept rules=", |_| {
                bad += 1
            });
        assert_eq!((o.client_gateway, o.dns, o.udp_timeout_s, bad), (None, [None; 2], None, 6));
    }

    #[test]
    fn qubes_and_vchan_test_options() {
        let o = Options::parse("qubesdb=1 qrexec=0 vchan-test=client:7000,7001 vchan-bytes=0x100000", |_| panic!());
        assert!(o.qubesdb && !o.qrexec);
        assert_eq!(o.vchan_test.map(|t| t.count), Some(2));
        assert_eq!(o.vchan_bytes, 1 << 20);
        let d = Options::default();
        assert!(d.qubesdb && d.qrexec && d.vchan_test.is_none() && d.vchan_bytes == 10 << 20);
        assert_eq!(Options::parse("", |_| panic!()), d, "on Qubes: everything from QubesDB");
        let mut bad = 0;
        let o = Options::parse("qubesdb=yes vchan-test=server:1 vchan-bytes=0 qrexec=2", |_| bad += 1);
        assert_eq!((o, bad), (Options::default(), 4));
    }

    #[test]
    fn an_address_on_the_command_line_turns_qubesdb_off_unless_asked_for() {
        assert!(!Options::parse("ip=10.0.0.2/24 gw=10.0.0.1", |_| panic!()).qubesdb);
        assert!(Options::parse("ip=10.0.0.2/24 qubesdb=1", |_| panic!()).qubesdb);
        assert!(!Options::parse("qubesdb=0", |_| panic!()).qubesdb);
        assert!(Options::parse("gw=10.0.0.1 client-gw=10.137.0.1", |_| panic!()).qubesdb);
        assert!(Options::parse("ip=garbage", |_| ()).qubesdb, "an address that does not parse is no address");
    }

    #[test]
    fn crash_option() {
        let o = Options::parse("debug-crash=pagefault", |_| panic!());
        assert_eq!(o.debug_crash, Some(DebugCrash::PageFault));
    }
}
