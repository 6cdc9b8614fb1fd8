//! The PV console: our output ring to xenconsoled, and the `log` backend on top of it.
//!
//! Writing never blocks the data path: a line that does not fit in the free part of the
//! 2 KiB ring is dropped whole and counted, and the next line that fits is preceded by a note
//! saying how many were lost.

use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

use grant_pool::SharedPage;
use grant_pool::shared::{full_barrier, write_barrier};

use crate::abi::console as c;

/// Writer side of the console ring.
pub struct ConsoleRing {
    page: SharedPage,
    /// Lines dropped because the ring was full, not yet reported on the console.
    unreported_drops: u64,
}

/// Lines dropped since boot (all reasons).
pub static LINES_DROPPED: AtomicU64 = AtomicU64::new(0);
/// Lines written since boot.
pub static LINES_WRITTEN: AtomicU64 = AtomicU64::new(0);

impl ConsoleRing {
    /// The console ring on `page`.
    pub fn new(page: SharedPage) -> Self {
        ConsoleRing { page, unreported_drops: 0 }
    }

    fn free(&self) -> u32 {
        let cons = self.page.read_u32(c::OUT_CONS);
        let prod = self.page.read_u32(c::OUT_PROD);
        // A consumer that ran ahead of us (peer garbage) leaves no trustworthy space.
        let used = prod.wrapping_sub(cons);
        c::OUT_SIZE.saturating_sub(used)
    }

    fn put(&mut self, bytes: &[u8]) {
        let mut prod = self.page.read_u32(c::OUT_PROD);
        for &b in bytes {
            self.page.write_u8(c::OUT + (prod & (c::OUT_SIZE - 1)) as usize, b);
            prod = prod.wrapping_add(1);
        }
        write_barrier();
        self.page.write_u32(c::OUT_PROD, prod);
    }

    /// Writes one line (the caller's text, `\n` → `\r\n`, plus a line end) if it fits
    /// whole; otherwise drops it. Returns whether the peer should be notified.
    pub fn write_line(&mut self, line: &str) -> bool {
        let body = line.trim_end_matches('\n');
        let needed = body.len() + body.matches('\n').count() + 2;
        let mut note = LineBuffer::default();
        if self.unreported_drops > 0 {
            let _ = write!(note, "[console: {} lines dropped]\r\n", self.unreported_drops);
        }
        full_barrier();
        let note = note.as_str().as_bytes();
        if (needed + note.len()) as u32 > self.free() {
            self.unreported_drops += 1;
            LINES_DROPPED.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if !note.is_empty() {
            self.put(note);
            self.unreported_drops = 0;
        }
        for (i, part) in body.split('\n').enumerate() {
            if i > 0 {
                self.put(b"\r\n");
            }
            self.put(part.as_bytes());
        }
        self.put(b"\r\n");
        LINES_WRITTEN.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Writes raw text if it fits (used by the fault reporter). Returns whether it did.
    pub fn write_raw(&mut self, text: &str) -> bool {
        full_barrier();
        if text.len() as u32 > self.free() {
            return false;
        }
        self.put(text.as_bytes());
        true
    }

    /// Whether xenconsoled has caught up with everything we wrote.
    pub fn drained(&self) -> bool {
        self.free() == c::OUT_SIZE
    }
}

/// A line being formatted for the console (fixed size; longer lines are cut with "…").
pub struct LineBuffer {
    buf: [u8; 512],
    len: usize,
    cut: bool,
}

impl Default for LineBuffer {
    fn default() -> Self {
        LineBuffer { buf: [0; 512], len: 0, cut: false }
    }
}

impl LineBuffer {
    /// The text so far (cut at a character boundary).
    pub fn as_str(&self) -> &str {
        match core::str::from_utf8(&self.buf[..self.len]) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&self.buf[..e.valid_up_to()]).unwrap_or(""),
        }
    }

    /// Whether text was cut off.
    pub fn was_cut(&self) -> bool {
        self.cut
    }
}

impl Write for LineBuffer {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.buf.len() - self.len;
        let n = if s.len() > room {
            self.cut = true;
            let mut n = room;
            while !s.is_char_boundary(n) {
                n -= 1;
            }
            n
        } else {
            s.len()
        };
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// The console the `log` backend writes to, with its event channel.
static CONSOLE: spin::Mutex<Option<(ConsoleRing, crate::platform::Port)>> = spin::Mutex::new(None);
static CLOCK: spin::Once<fn() -> u64> = spin::Once::new();

struct ConsoleLogger;

impl log::Log for ConsoleLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = LineBuffer::default();
        let ns = CLOCK.get().map(|f| f()).unwrap_or(0);
        let _ = write!(
            line,
            "[{:5}.{:03}] {:5} {}",
            ns / 1_000_000_000,
            ns / 1_000_000 % 1000,
            record.level(),
            record.args()
        );
        write_line(line.as_str());
    }

    fn flush(&self) {}
}

/// Writes one line to the console (dropped and counted if the ring is full, or if the console
/// is busy because we interrupted a writer).
pub fn write_line(line: &str) {
    use crate::platform::EventChannels;
    let Some(mut guard) = CONSOLE.try_lock() else {
        LINES_DROPPED.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let Some((ring, port)) = guard.as_mut() else {
        crate::arch::idt::debug_port_write(line);
        crate::arch::idt::debug_port_write("\n");
        return;
    };
    if ring.write_line(line) {
        let _ = crate::platform::Xen.send(*port);
    }
}

/// Writes raw text for the fault reporter (no locking beyond a try; falls back to Xen's
/// debug port).
pub fn write_fault_text(text: &str) {
    use crate::platform::EventChannels;
    if let Some(mut guard) = CONSOLE.try_lock()
        && let Some((ring, port)) = guard.as_mut()
        && ring.write_raw(text)
    {
        let _ = crate::platform::Xen.send(*port);
        return;
    }
    crate::arch::idt::debug_port_write(text);
}

/// Whether xenconsoled has read everything (used before shutting down so the last lines
/// reach the log).
pub fn drained() -> bool {
    CONSOLE.lock().as_ref().is_none_or(|(ring, _)| ring.drained())
}

/// Makes `ring` the console and installs the `log` backend at `level`. `clock` gives the
/// time stamp of each line in ns.
pub fn install(ring: ConsoleRing, port: crate::platform::Port, level: log::LevelFilter, clock: fn() -> u64) {
    *CONSOLE.lock() = Some((ring, port));
    CLOCK.call_once(|| clock);
    static LOGGER: ConsoleLogger = ConsoleLogger;
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

#[cfg(test)]
mod tests {
    use super::*;
    use grant_pool::PageCell;

    fn ring() -> (SharedPage, ConsoleRing) {
        let p = SharedPage::from_static(Box::leak(Box::new(PageCell::new())));
        (p, ConsoleRing::new(p))
    }

    fn drain(p: &SharedPage) -> String {
        let (cons, prod) = (p.read_u32(c::OUT_CONS), p.read_u32(c::OUT_PROD));
        let mut s = String::new();
        let mut i = cons;
        while i != prod {
            s.push(p.read_u8(c::OUT + (i & 2047) as usize) as char);
            i = i.wrapping_add(1);
        }
        p.write_u32(c::OUT_CONS, prod);
        s
    }

    #[test]
    fn lines_get_crlf_and_wrap_around_the_ring() {
        let (p, mut r) = ring();
        p.write_u32(c::OUT_CONS, u32::MAX - 3);
        p.write_u32(c::OUT_PROD, u32::MAX - 3);
        assert!(r.write_line("hello\nworld"));
        assert_eq!(drain(&p), "hello\r\nworld\r\n");
    }

    #[test]
    fn full_ring_drops_whole_lines_and_reports_them_later() {
        let (p, mut r) = ring();
        let long = "x".repeat(1000);
        assert!(r.write_line(&long));
        assert!(r.write_line(&long));
        assert!(!r.write_line(&long), "third line does not fit: dropped, never blocks");
        drain(&p);
        assert!(r.write_line("next"));
        let out = drain(&p);
        assert!(out.starts_with("[console: "), "{out}");
        assert!(out.ends_with("next\r\n"));
    }

    #[test]
    fn consumer_ahead_of_producer_means_no_space() {
        let (p, mut r) = ring();
        p.write_u32(c::OUT_CONS, 100); // peer garbage: consumer past producer
        assert!(!r.write_line("x"));
    }

    #[test]
    fn line_buffer_cuts_at_char_boundaries() {
        let mut b = LineBuffer::default();
        let _ = write!(b, "{}", "é".repeat(300));
        assert!(b.was_cut());
        assert_eq!(b.as_str().len(), 512);
    }
}
