//! The writer thread: a bounded queue in front of a serial port or standard output.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Line;

/// How long one serial write may block before the line is counted as lost.
const WRITE_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause between attempts to reopen a serial port that failed.
const REOPEN_INTERVAL: Duration = Duration::from_secs(2);

/// Where the lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkTarget {
    /// A serial device at a baud rate.
    Serial {
        /// Device path (`/dev/ttyAMA0`, `/dev/ttyUSB0`, a pty).
        port: PathBuf,
        /// Speed.
        baud: u32,
    },
    /// Standard output.
    Stdout,
}

/// Errors starting the link.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The writer thread could not be spawned.
    #[error("cannot start the alert writer thread: {0}")]
    Spawn(std::io::Error),
}

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
}

/// The sending side of the alert link. Sending never blocks.
#[derive(Debug)]
pub struct AlertLink {
    tx: Option<SyncSender<Line>>,
    counters: Arc<Counters>,
    writer: Option<JoinHandle<()>>,
}

impl AlertLink {
    /// Starts the writer thread with a queue of `capacity` lines.
    pub fn start(target: LinkTarget, capacity: usize) -> Result<AlertLink, LinkError> {
        let (tx, rx) = sync_channel::<Line>(capacity);
        let counters = Arc::new(Counters::default());
        let shared = counters.clone();
        let writer = std::thread::Builder::new()
            .name("alert-writer".into())
            .spawn(move || write_loop(target, rx, &shared))
            .map_err(LinkError::Spawn)?;
        Ok(AlertLink {
            tx: Some(tx),
            counters,
            writer: Some(writer),
        })
    }

    /// Queues a line; returns `false` (and counts it) if the queue is full.
    pub fn send(&self, line: Line) -> bool {
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(line) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Lines lost so far (queue full or write failed).
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Lines written to the link so far.
    pub fn written(&self) -> u64 {
        self.counters.written.load(Ordering::Relaxed)
    }

    /// Stops accepting lines, lets the writer drain the queue, waits for it, and returns the
    /// final count of lost lines.
    pub fn close(mut self) -> u64 {
        self.shutdown();
        self.dropped()
    }

    fn shutdown(&mut self) {
        drop(self.tx.take());
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                log::error!("the alert writer thread panicked");
            }
        }
    }
}

impl Drop for AlertLink {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The open output, reopened after failures.
struct Output {
    target: LinkTarget,
    sink: Option<Box<dyn Write + Send>>,
    last_attempt: Option<Instant>,
    // A write failed part-way: start the next write with a newline so the torn line stays a line
    // of its own, which receivers discard, and the next alert starts clean.
    torn: bool,
}

impl Output {
    fn sink(&mut self) -> Option<&mut (dyn Write + Send + 'static)> {
        if self.sink.is_none() {
            let due = self
                .last_attempt
                .is_none_or(|t| t.elapsed() >= REOPEN_INTERVAL);
            if due {
                self.last_attempt = Some(Instant::now());
                self.sink = open(&self.target);
            }
        }
        self.sink.as_deref_mut()
    }
}

fn open(target: &LinkTarget) -> Option<Box<dyn Write + Send>> {
    match target {
        LinkTarget::Stdout => Some(Box::new(std::io::stdout())),
        LinkTarget::Serial { port, baud } => {
            let path = port.to_string_lossy();
            let e = match serialport::new(path.as_ref(), *baud)
                .timeout(WRITE_TIMEOUT)
                .open_native()
            {
                Ok(p) => {
                    log::info!("serial link open on {path} at {baud} baud");
                    return Some(Box::new(p));
                }
                Err(e) => e,
            };
            // serialport configures through termios2, which some drivers (and qemu-user) lack.
            #[cfg(target_os = "linux")]
            if let Ok(p) = super::tty::RawTty::open(port, *baud, WRITE_TIMEOUT) {
                log::info!("serial link open on {path} at {baud} baud (plain termios: {e})");
                return Some(Box::new(p));
            }
            log::warn!("cannot open serial port {path}: {e}; retrying");
            None
        }
    }
}

fn write_loop(target: LinkTarget, rx: Receiver<Line>, counters: &Counters) {
    let mut out = Output {
        target,
        sink: None,
        last_attempt: None,
        torn: false,
    };
    for line in rx {
        let lead: &[u8] = if out.torn { b"\n" } else { b"" };
        let Some(sink) = out.sink() else {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let result = sink
            .write_all(lead)
            .and_then(|()| sink.write_all(line.as_bytes()))
            .and_then(|()| sink.write_all(b"\n"))
            .and_then(|()| sink.flush());
        match result {
            Ok(()) => {
                counters.written.fetch_add(1, Ordering::Relaxed);
                out.torn = false;
            }
            Err(e) => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                log::warn!("alert link write failed: {e}; reopening");
                out.sink = None;
                out.torn = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serialport::SerialPort;
    use std::io::Read;

    fn line(s: &str) -> Line {
        let mut l = Line::new();
        l.push_str(s).unwrap();
        l
    }

    #[test]
    fn lines_reach_a_real_pty_in_order() {
        let (mut master, slave) = serialport::TTYPort::pair().unwrap();
        let port = PathBuf::from(slave.name().unwrap());
        let link = AlertLink::start(LinkTarget::Serial { port, baud: 115200 }, 8).unwrap();
        for i in 0..5 {
            assert!(link.send(line(&format!("{{\"n\":{i}}}"))));
        }
        link.close();
        master.set_timeout(Duration::from_secs(2)).unwrap();
        let mut got = String::new();
        let mut buf = [0u8; 256];
        while got.lines().count() < 5 {
            let n = master.read(&mut buf).unwrap();
            got.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(
            lines,
            [
                "{\"n\":0}",
                "{\"n\":1}",
                "{\"n\":2}",
                "{\"n\":3}",
                "{\"n\":4}"
            ]
        );
        drop(slave);
    }

    #[test]
    fn lines_to_an_absent_port_are_counted_lost_without_blocking() {
        // A port that cannot be opened: the writer drops what it takes, a full queue refuses the
        // rest, and `send` returns at once either way (a blocking send would hang this test).
        let link = AlertLink::start(
            LinkTarget::Serial {
                port: PathBuf::from("/nonexistent/tty"),
                baud: 115200,
            },
            2,
        )
        .unwrap();
        for i in 0..1000 {
            link.send(line(&i.to_string()));
        }
        let counters = link.counters.clone();
        assert_eq!(link.close(), 1000);
        assert_eq!(counters.written.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_reader_that_never_reads_costs_lines_not_time() {
        // Nobody reads the pty: once its buffer is full every write times out. `send` must still
        // return at once, and every line must end up either written or counted as lost.
        let (_master, slave) = serialport::TTYPort::pair().unwrap();
        let port = PathBuf::from(slave.name().unwrap());
        let link = AlertLink::start(LinkTarget::Serial { port, baud: 115200 }, 4).unwrap();
        let payload = "x".repeat(400);
        let total = 2000;
        for _ in 0..total {
            link.send(line(&payload));
        }
        let counters = link.counters.clone();
        let dropped = link.close();
        let written = counters.written.load(Ordering::Relaxed);
        assert_eq!(written + dropped, total);
        assert!(
            dropped > 0,
            "a stalled reader cannot take {total} x 400 bytes"
        );
        drop(slave);
    }
}
