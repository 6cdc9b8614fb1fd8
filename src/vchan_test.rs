//! The vchan test mode (`vchan-test=…`): streams a fixed byte pattern both ways over real
//! vchans against dom0's `vchan-peer` (tests/harness/dom0-tools) and reports the byte counts
//! and FNV-1a checksums of both directions, so the harness can compare them with the peer's.
//!
//! Byte `i` of the server→client stream is `pattern(i, 0x5a)`, of the client→server stream
//! `pattern(i, 0xa5)` (dom0-tools/README.md). Every received byte is checked against the
//! pattern as it arrives.

use core::fmt;

use qubes::channel::ByteChannel;
use xen_front::platform::{DomId, Gfn};
use xen_front::vchan::{ClientParams, Endpoint, Error, Io, Options, ServerParams, SharePool, State};

use crate::qubes_link::channel::VchanChannel;

/// Most channels one test runs at once.
pub const MAX_TEST_CHANNELS: usize = 4;
/// Bytes each way unless `vchan-bytes=` says otherwise: 10 MiB.
pub const DEFAULT_TEST_BYTES: u64 = 10 << 20;
/// Seed of the server→client stream.
pub const SEED_SERVER_TO_CLIENT: u8 = 0x5a;
/// Seed of the client→server stream.
pub const SEED_CLIENT_TO_SERVER: u8 = 0xa5;
/// Bytes moved per direction and channel in one call of [`Stream::pump`], so a fast peer
/// cannot keep the poll loop in one place.
pub const PUMP_BUDGET: usize = 256 * 1024;
/// How long a finished channel waits for the peer to close first (then it closes anyway).
const PEER_CLOSE_WAIT_NS: u64 = 10_000_000_000;

/// Byte `i` of a test stream.
pub const fn pattern(i: u64, seed: u8) -> u8 {
    ((i ^ (i >> 8) ^ (i >> 16)) as u8).wrapping_mul(31).wrapping_add(seed)
}

/// 64-bit FNV-1a.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fnv1a(pub u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv1a {
    /// The offset basis.
    pub const fn new() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }

    /// Adds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// Which side of the test streams we play.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestRole {
    /// We connect to dom0's servers on the listed ports.
    Client,
    /// We serve dom0 on the listed port, with these ring minimums (libxenvchan's rule).
    Server {
        /// Bytes of the ring we read, at least.
        read_min: u32,
        /// Bytes of the ring we write, at least.
        write_min: u32,
    },
}

/// What `vchan-test=` asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestSpec {
    /// Our role.
    pub role: TestRole,
    /// The vchan ports (only the first `count` are meaningful).
    pub ports: [u32; MAX_TEST_CHANNELS],
    /// How many ports.
    pub count: usize,
}

impl TestSpec {
    /// Parses `client:PORT[,PORT…]` or `server:PORT:READ_MIN:WRITE_MIN`.
    pub fn parse(s: &str) -> Option<TestSpec> {
        let port = |p: &str| p.parse::<u32>().ok().filter(|&p| p > 0);
        if let Some(list) = s.strip_prefix("client:") {
            let mut spec = TestSpec { role: TestRole::Client, ports: [0; MAX_TEST_CHANNELS], count: 0 };
            for p in list.split(',') {
                if spec.count == MAX_TEST_CHANNELS {
                    return None;
                }
                spec.ports[spec.count] = port(p)?;
                spec.count += 1;
            }
            return Some(spec);
        }
        let mut it = s.strip_prefix("server:")?.split(':');
        let (p, r, w) = (it.next()?, it.next()?, it.next()?);
        if it.next().is_some() {
            return None;
        }
        let size = |v: &str| v.parse::<u32>().ok().filter(|&v| (1..=1 << 16).contains(&v));
        let role = TestRole::Server { read_min: size(r)?, write_min: size(w)? };
        let mut ports = [0; MAX_TEST_CHANNELS];
        ports[0] = port(p)?;
        Some(TestSpec { role, ports, count: 1 })
    }

    /// The ports in use.
    pub fn ports(&self) -> &[u32] {
        &self.ports[..self.count]
    }
}

/// Both directions of one test stream: what we sent and what we received, checked.
#[derive(Clone, Copy, Debug)]
pub struct Stream {
    total: u64,
    out_seed: u8,
    in_seed: u8,
    /// Bytes the channel took from us.
    pub sent: u64,
    /// Bytes received.
    pub received: u64,
    /// FNV-1a of what we sent.
    pub fnv_out: Fnv1a,
    /// FNV-1a of what we received.
    pub fnv_in: Fnv1a,
    /// The first received byte that did not match the pattern.
    pub mismatch: Option<u64>,
}

impl Stream {
    /// A stream of `total` bytes each way; `client` selects the seeds.
    pub const fn new(total: u64, client: bool) -> Stream {
        let (out_seed, in_seed) = if client {
            (SEED_CLIENT_TO_SERVER, SEED_SERVER_TO_CLIENT)
        } else {
            (SEED_SERVER_TO_CLIENT, SEED_CLIENT_TO_SERVER)
        };
        Stream {
            total,
            out_seed,
            in_seed,
            sent: 0,
            received: 0,
            fnv_out: Fnv1a::new(),
            fnv_in: Fnv1a::new(),
            mismatch: None,
        }
    }

    /// Whether both directions are complete.
    pub fn is_done(&self) -> bool {
        self.sent == self.total && self.received == self.total
    }

    /// Whether everything received so far matched and both directions are complete.
    pub fn is_ok(&self) -> bool {
        self.is_done() && self.mismatch.is_none()
    }

    /// Writes and reads what the channel takes now (at most [`PUMP_BUDGET`] each way); returns
    /// the bytes moved. Never reads past the stream's end.
    pub fn pump<C: ByteChannel + ?Sized>(&mut self, chan: &mut C) -> usize {
        let mut buf = [0u8; 4096];
        let mut moved = 0;
        let mut budget = PUMP_BUDGET;
        while self.sent < self.total && budget > 0 {
            let n = (self.total - self.sent).min(buf.len() as u64) as usize;
            for (k, b) in buf[..n].iter_mut().enumerate() {
                *b = pattern(self.sent + k as u64, self.out_seed);
            }
            let w = chan.write(&buf[..n]).min(n);
            if w == 0 {
                break;
            }
            self.fnv_out.update(&buf[..w]);
            self.sent += w as u64;
            moved += w;
            budget = budget.saturating_sub(w);
        }
        budget = PUMP_BUDGET;
        while self.received < self.total && budget > 0 {
            let n = (self.total - self.received).min(buf.len() as u64) as usize;
            let r = chan.read(&mut buf[..n]).min(n);
            if r == 0 {
                break;
            }
            if self.mismatch.is_none()
                && let Some(k) =
                    buf[..r].iter().enumerate().position(|(k, &b)| b != pattern(self.received + k as u64, self.in_seed))
            {
                self.mismatch = Some(self.received + k as u64);
            }
            self.fnv_in.update(&buf[..r]);
            self.received += r as u64;
            moved += r;
            budget = budget.saturating_sub(r);
        }
        moved
    }
}

/// One channel's result: the line the harness compares with `vchan-peer`'s.
#[derive(Clone, Copy, Debug)]
pub struct Report {
    /// Our role.
    pub role: TestRole,
    /// The vchan port.
    pub port: u32,
    /// Sizes of the rings we read and write.
    pub rings: (usize, usize),
    /// The stream's counts and checksums.
    pub stream: Stream,
    /// From connection to completion (or failure), in ms.
    pub elapsed_ms: u64,
    /// Why the channel ended early, if it did.
    pub error: Option<Error>,
}

impl Report {
    /// Whether the stream completed with every byte as expected.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.stream.is_ok()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = match self.role {
            TestRole::Client => "client",
            TestRole::Server { .. } => "server",
        };
        let s = &self.stream;
        let ms = self.elapsed_ms.max(1);
        write!(
            f,
            "vchan-test: role={role} port={} rings={}/{} sent={} fnv_out={:016x} received={} fnv_in={:016x} ms={} KBps={}",
            self.port,
            self.rings.0,
            self.rings.1,
            s.sent,
            s.fnv_out.0,
            s.received,
            s.fnv_in.0,
            self.elapsed_ms,
            (s.sent + s.received) / ms
        )?;
        if let Some(m) = s.mismatch {
            write!(f, " MISMATCH at byte {m}")?;
        }
        if let Some(e) = self.error {
            write!(f, " error={e:?}")?;
        }
        f.write_str(if self.ok() { " OK" } else { " FAIL" })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Unused,
    Running {
        since: Option<u64>,
    },
    /// Reported; waiting for the peer to close (until the deadline).
    Finished {
        deadline: u64,
    },
    Closing,
    Done,
}

/// Runs a [`TestSpec`] on vchan endpoints from the poll loop.
pub struct VchanTest<S: SharePool> {
    spec: TestSpec,
    bytes: u64,
    windows: [(Gfn, u32); MAX_TEST_CHANNELS],
    endpoints: [Endpoint<S>; MAX_TEST_CHANNELS],
    streams: [Stream; MAX_TEST_CHANNELS],
    phases: [Phase; MAX_TEST_CHANNELS],
    started: bool,
}

/// What one [`VchanTest::poll`] saw.
#[derive(Clone, Copy, Debug)]
pub enum TestEvent {
    /// A channel could not be set up.
    SetupFailed {
        /// Its port.
        port: u32,
        /// Why.
        error: Error,
    },
    /// A channel connected.
    Connected {
        /// Its port.
        port: u32,
    },
    /// A channel's streams finished (or failed).
    Finished(Report),
    /// A finished channel is closed and released.
    Closed {
        /// Its port.
        port: u32,
        /// Whether the peer closed first.
        by_peer: bool,
    },
}

impl<S: SharePool> VchanTest<S> {
    /// A test of `bytes` each way on `spec`'s ports; client channels map into `windows`.
    pub const fn new(spec: TestSpec, bytes: u64, windows: [(Gfn, u32); MAX_TEST_CHANNELS]) -> Self {
        let client = matches!(spec.role, TestRole::Client);
        VchanTest {
            spec,
            bytes,
            windows,
            endpoints: [const { Endpoint::new(Options::DEFAULT) }; MAX_TEST_CHANNELS],
            streams: [Stream::new(bytes, client); MAX_TEST_CHANNELS],
            phases: [Phase::Unused; MAX_TEST_CHANNELS],
            started: false,
        }
    }

    /// Whether every channel is done.
    pub fn is_done(&self) -> bool {
        self.started && self.phases.iter().all(|p| matches!(p, Phase::Unused | Phase::Done))
    }

    /// Whether a channel is moving bytes (the caller should not sleep).
    pub fn is_busy(&self) -> bool {
        self.phases.iter().any(|p| matches!(p, Phase::Running { since: Some(_) }))
    }

    /// Sets up the channels on the first call, then moves bytes; returns at most one event.
    pub fn poll(&mut self, io: &mut Io<'_, S>, self_domid: DomId) -> Option<TestEvent> {
        if !self.started {
            self.started = true;
            for i in 0..self.spec.count {
                let port = self.spec.ports[i];
                let r = match self.spec.role {
                    TestRole::Client => self.endpoints[i]
                        .connect(io, ClientParams { self_domid, server: 0, port, window: self.windows[i] }),
                    TestRole::Server { read_min, write_min } => self.endpoints[i].listen(
                        io,
                        ServerParams {
                            self_domid,
                            client: 0,
                            port,
                            read_min: read_min as usize,
                            write_min: write_min as usize,
                        },
                    ),
                };
                match r {
                    Ok(()) => self.phases[i] = Phase::Running { since: None },
                    Err(error) => {
                        self.phases[i] = Phase::Done;
                        return Some(TestEvent::SetupFailed { port, error });
                    }
                }
            }
        }
        for i in 0..self.spec.count {
            if let Some(ev) = self.poll_one(i, io) {
                return Some(ev);
            }
        }
        None
    }

    fn poll_one(&mut self, i: usize, io: &mut Io<'_, S>) -> Option<TestEvent> {
        let port = self.spec.ports[i];
        let ep = &mut self.endpoints[i];
        match self.phases[i] {
            Phase::Unused | Phase::Done => None,
            Phase::Running { since } => {
                if matches!(ep.state(), State::Connected | State::PeerClosed) {
                    self.streams[i].pump(&mut VchanChannel(ep));
                }
                let state = ep.poll(io);
                if since.is_none() && matches!(state, State::Connected | State::PeerClosed) {
                    self.phases[i] = Phase::Running { since: Some(io.now_ns) };
                    return Some(TestEvent::Connected { port });
                }
                let failed = match state {
                    State::PeerClosed => {
                        // Take what the peer left, then judge.
                        self.streams[i].pump(&mut VchanChannel(ep));
                        !self.streams[i].is_done()
                    }
                    State::Closed | State::Closing => true,
                    _ => false,
                };
                if self.streams[i].is_done() || failed {
                    let error = if failed { Some(ep.error().unwrap_or(Error::PeerGone)) } else { None };
                    let report = Report {
                        role: self.spec.role,
                        port,
                        rings: ep.ring_sizes().unwrap_or((0, 0)),
                        stream: self.streams[i],
                        elapsed_ms: since.map_or(0, |s| io.now_ns.saturating_sub(s) / 1_000_000),
                        error,
                    };
                    self.phases[i] = Phase::Finished { deadline: io.now_ns.saturating_add(PEER_CLOSE_WAIT_NS) };
                    return Some(TestEvent::Finished(report));
                }
                None
            }
            Phase::Finished { deadline } => {
                let state = ep.poll(io);
                let by_peer = state != State::Connected;
                if by_peer || io.now_ns >= deadline {
                    ep.close(io);
                    self.phases[i] = Phase::Closing;
                    if ep.state() == State::Closed {
                        self.phases[i] = Phase::Done;
                        return Some(TestEvent::Closed { port, by_peer });
                    }
                }
                None
            }
            Phase::Closing => {
                if ep.poll(io) == State::Closed {
                    self.phases[i] = Phase::Done;
                    return Some(TestEvent::Closed { port, by_peer: true });
                }
                None
            }
        }
    }

    /// Bytes each way.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::rc::Rc;

    /// One end of an in-memory duplex pipe holding at most `cap` bytes each way.
    struct Pipe {
        rx: Rc<RefCell<VecDeque<u8>>>,
        tx: Rc<RefCell<VecDeque<u8>>>,
        cap: usize,
    }

    impl Pipe {
        fn pair(cap: usize) -> (Pipe, Pipe) {
            let (a, b) = (Rc::new(RefCell::new(VecDeque::new())), Rc::new(RefCell::new(VecDeque::new())));
            (Pipe { rx: a.clone(), tx: b.clone(), cap }, Pipe { rx: b, tx: a, cap })
        }

        fn write_all(&mut self, data: &[u8]) {
            assert_eq!(self.write(data), data.len());
        }

        fn read_all(&mut self) -> Vec<u8> {
            self.rx.borrow_mut().drain(..).collect()
        }
    }

    impl ByteChannel for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> usize {
            let mut rx = self.rx.borrow_mut();
            let n = buf.len().min(rx.len());
            for (b, x) in buf.iter_mut().zip(rx.drain(..n)) {
                *b = x;
            }
            n
        }

        fn write(&mut self, buf: &[u8]) -> usize {
            let mut tx = self.tx.borrow_mut();
            let n = buf.len().min(self.cap - tx.len());
            tx.extend(&buf[..n]);
            n
        }

        fn is_open(&self) -> bool {
            true
        }
    }

    /// The C double's `pattern()`, transcribed: `(u8)((u8)(i ^ (i >> 8) ^ (i >> 16)) * 31u + seed)`.
    fn c_pattern(i: u64, seed: u8) -> u8 {
        let x = (i ^ (i >> 8) ^ (i >> 16)) as u8 as u32;
        (x * 31 + u32::from(seed)) as u8
    }

    #[test]
    fn pattern_matches_the_dom0_double() {
        for i in (0..70_000u64).chain([1 << 24, (1 << 32) + 5, u64::MAX - 3]) {
            assert_eq!(pattern(i, 0x5a), c_pattern(i, 0x5a));
            assert_eq!(pattern(i, 0xa5), c_pattern(i, 0xa5));
        }
    }

    #[test]
    fn fnv1a_known_vectors() {
        // From the FNV reference test suite.
        let h = |s: &[u8]| {
            let mut f = Fnv1a::new();
            f.update(s);
            f.0
        };
        assert_eq!(h(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(h(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(h(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn spec_parses_both_roles_and_refuses_garbage() {
        let c = TestSpec::parse("client:7000,7001,7002").unwrap();
        assert_eq!((c.role, c.ports()), (TestRole::Client, &[7000, 7001, 7002][..]));
        let s = TestSpec::parse("server:7003:4096:65536").unwrap();
        assert_eq!(s.role, TestRole::Server { read_min: 4096, write_min: 65536 });
        assert_eq!(s.ports(), &[7003]);
        for bad in [
            "",
            "client:",
            "client:0",
            "client:1,2,3,4,5",
            "client:7000,",
            "server:7003",
            "server:7003:4096",
            "server:7003:0:4096",
            "server:7003:4096:4096:1",
            "server:x:1:1",
            "peer:1",
            "server:7003:4096:1048577",
        ] {
            assert_eq!(TestSpec::parse(bad), None, "{bad:?}");
        }
    }

    /// Plays the other end through a small pipe: its stream generator with the other seeds.
    #[test]
    fn two_streams_through_a_small_pipe_agree_on_counts_and_checksums() {
        let (mut a, mut b) = Pipe::pair(1000);
        let total = 300_001;
        let (mut us, mut peer) = (Stream::new(total, true), Stream::new(total, false));
        let mut rounds = 0;
        while !(us.is_done() && peer.is_done()) {
            let moved = us.pump(&mut a) + peer.pump(&mut b);
            assert!(moved > 0, "stalled");
            rounds += 1;
        }
        assert!(rounds > 100, "the pipe forced many rounds");
        assert!(us.is_ok() && peer.is_ok());
        assert_eq!((us.sent, us.received), (total, total));
        assert_eq!(us.fnv_out, peer.fnv_in);
        assert_eq!(us.fnv_in, peer.fnv_out);
    }

    #[test]
    fn a_corrupted_byte_is_found_and_the_stream_never_reads_past_its_end() {
        let (mut a, mut b) = Pipe::pair(65536);
        let mut us = Stream::new(5000, true);
        let mut bytes: Vec<u8> = (0..5000u64).map(|i| pattern(i, SEED_SERVER_TO_CLIENT)).collect();
        bytes[1234] ^= 0x40;
        bytes.extend_from_slice(b"extra bytes past the end");
        b.write_all(&bytes);
        us.pump(&mut a);
        assert_eq!(us.received, 5000);
        assert_eq!(us.mismatch, Some(1234));
        assert!(!us.is_ok());
        assert_eq!(a.read_all(), b"extra bytes past the end");
        let r =
            Report { role: TestRole::Client, port: 7000, rings: (1024, 2048), stream: us, elapsed_ms: 0, error: None };
        let line = r.to_string();
        assert!(line.contains("MISMATCH at byte 1234") && line.ends_with(" FAIL"), "{line}");
    }
}
