//! The link thread: sends journalled alerts until the peer acknowledges them, answers the peer's
//! commands, and reopens a serial port that went away.
//!
//! Inference hands alerts to [`AlertLink::send_alert`], which journals them (see [`Journal`]) and
//! returns at once; the link thread sends them in sequence order. With `require_ack`, an alert
//! stays pending until the peer ACKs its sequence number: after `ack_timeout` without one, or
//! after the port is reopened, everything pending is sent again from the oldest (duplicates on
//! the wire are expected; the peer deduplicates by `seq`). Without ACKs, an alert is delivered
//! once written. Replies go first, then alerts, then the latest status, then evidence chunks.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::cobs;
use super::command::{Command, ErrorCode, EvidenceChunk, Part, Rejected, Reply, EVIDENCE_CHUNK};
use super::journal::Journal;
use super::message::{Alert, DeviceId, Status, LINE_CAPACITY};
use super::port::Port;
use super::Framing;
use crate::evidence::evidence_path;

/// How long the link thread waits on the port per turn (bounds the latency of a new alert).
const TURN: Duration = Duration::from_millis(10);
/// First and longest pause between attempts to reopen a port.
const REOPEN_FIRST: Duration = Duration::from_millis(250);
const REOPEN_MAX: Duration = Duration::from_secs(8);
/// Evidence requests waiting behind the one being sent.
const EVIDENCE_QUEUE: usize = 4;

/// Where the link writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkTarget {
    /// A serial device at a baud rate (also reads commands from it).
    Serial {
        /// Device path (`/dev/ttyAMA0`, `/dev/serial/by-id/...`, a pty).
        port: PathBuf,
        /// Speed.
        baud: u32,
    },
    /// Standard output, for demos and pipes (no commands, no ACKs).
    Stdout,
}

/// Everything the link needs to know.
#[derive(Clone, Debug)]
pub struct LinkSettings {
    /// Where to write.
    pub target: LinkTarget,
    /// Wire format.
    pub framing: Framing,
    /// Keep alerts until the peer ACKs them (otherwise: until written).
    pub require_ack: bool,
    /// Re-send pending alerts after this long without an ACK.
    pub ack_timeout: Duration,
    /// The alert threshold in force at start.
    pub threshold: f32,
    /// Thresholds a peer may set, inclusive.
    pub threshold_range: (f32, f32),
    /// Device id for replies and evidence.
    pub device: DeviceId,
    /// Folder of the evidence store (`<seq>-tile.jpg`, `<seq>-heatmap.png`), if any.
    pub evidence_dir: Option<PathBuf>,
}

/// What the peer asked the daemon to do (already validated by the link).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Control {
    /// Use this threshold from now on.
    SetThreshold(f32),
    /// Stop inspecting.
    Pause,
    /// Inspect again.
    Resume,
    /// Send a status report now.
    StatusNow,
}

/// Errors starting the link.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The link thread could not be spawned.
    #[error("cannot start the alert link thread: {0}")]
    Spawn(std::io::Error),
}

/// Counters of the link, readable while it runs.
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Alert messages written (re-sends included).
    pub alerts_written: AtomicU64,
    /// ACKs received for pending alerts.
    pub acked: AtomicU64,
    /// Commands answered with an error.
    pub rejected: AtomicU64,
    /// Times the port was (re)opened.
    pub opens: AtomicU64,
}

struct Shared {
    journal: Mutex<Journal>,
    status: Mutex<Option<Status>>,
    counters: LinkCounters,
    stop: AtomicBool,
    // Set by `close`: deliver what is pending until this instant, then stop.
    drain_until: Mutex<Option<Instant>>,
}

impl Shared {
    fn journal(&self) -> MutexGuard<'_, Journal> {
        // A poisoned lock means the other side panicked mid-update; the journal is still
        // consistent record by record, so go on with it.
        self.journal.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The daemon's side of the link.
pub struct AlertLink {
    shared: Arc<Shared>,
    controls: Receiver<Control>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AlertLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertLink").finish_non_exhaustive()
    }
}

impl AlertLink {
    /// Starts the link thread over `journal`; pending alerts in it are sent first.
    pub fn start(settings: LinkSettings, journal: Journal) -> Result<AlertLink, LinkError> {
        let shared = Arc::new(Shared {
            journal: Mutex::new(journal),
            status: Mutex::new(None),
            counters: LinkCounters::default(),
            stop: AtomicBool::new(false),
            drain_until: Mutex::new(None),
        });
        let (tx, controls) = sync_channel(16);
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("alert-link".into())
                .spawn(move || Worker::new(settings, shared, tx).run())
                .map_err(LinkError::Spawn)?
        };
        Ok(AlertLink {
            shared,
            controls,
            thread: Some(thread),
        })
    }

    /// Journals `alert` (giving it its sequence number) for sending; never blocks on the link.
    pub fn send_alert(&self, alert: &mut Alert) -> u64 {
        let mut journal = self.shared.journal();
        if let Err(e) = journal.append(alert) {
            log::error!("alert {} kept in memory only: {e}", alert.seq);
        }
        alert.seq
    }

    /// Sets the status report to send next (a newer one replaces one not yet sent).
    pub fn send_status(&self, status: Status) {
        *self.shared.status.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
    }

    /// The next command from the peer, if one came.
    pub fn next_control(&self) -> Option<Control> {
        self.controls.try_recv().ok()
    }

    /// The sequence number the next alert will get.
    pub fn next_seq(&self) -> u64 {
        self.shared.journal().next_seq()
    }

    /// Alerts not yet delivered.
    pub fn unacked(&self) -> u64 {
        self.shared.journal().unacked()
    }

    /// Alerts lost: evicted from a full journal before delivery.
    pub fn dropped(&self) -> u64 {
        self.shared.journal().evicted()
    }

    /// The link's counters.
    pub fn counters(&self) -> &LinkCounters {
        &self.shared.counters
    }

    /// Delivers what is pending for at most `drain`, stops the thread, syncs the journal, and
    /// returns the alerts still undelivered (they stay in the journal for the next start).
    pub fn close(mut self, drain: Duration) -> u64 {
        self.shutdown(drain);
        self.unacked()
    }

    fn shutdown(&mut self, drain: Duration) {
        *self
            .shared
            .drain_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + drain);
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("the alert link thread panicked");
            }
        }
        if let Err(e) = self.shared.journal().sync() {
            log::error!("{e}");
        }
    }
}

impl Drop for AlertLink {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shutdown(Duration::ZERO);
        }
    }
}

/// Bytes of one message on the wire, framing included.
type Wire = heapless::Vec<u8, { LINE_CAPACITY + 2 }>;

/// What the bytes being written are, so completion can be accounted.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Sending {
    Alert(u64),
    Other,
}

/// An evidence file being sent in chunks.
struct Transfer {
    seq: u64,
    parts: Vec<(Part, Vec<u8>)>,
    part: usize,
    chunk: usize,
}

/// Splits the incoming byte stream into commands.
// One decoder lives as long as the link; its buffer inline is the point (no allocation).
#[allow(clippy::large_enum_variant)]
enum Decoder {
    Json {
        line: heapless::Vec<u8, LINE_CAPACITY>,
        overflow: bool,
    },
    Cobs(cobs::Splitter),
}

impl Decoder {
    fn new(framing: Framing) -> Decoder {
        match framing {
            Framing::Json => Decoder::Json {
                line: heapless::Vec::new(),
                overflow: false,
            },
            Framing::Cobs => Decoder::Cobs(cobs::Splitter::new()),
        }
    }

    /// Feeds one byte; returns a command (or why it was refused) at a message end.
    fn push(&mut self, byte: u8) -> Option<Result<Command, Rejected>> {
        match self {
            Decoder::Json { line, overflow } => {
                if byte != b'\n' {
                    if line.push(byte).is_err() {
                        *overflow = true;
                    }
                    return None;
                }
                let result = if *overflow {
                    Some(Err(Rejected::new(
                        "?",
                        ErrorCode::Malformed,
                        format_args!("line longer than {LINE_CAPACITY} bytes"),
                    )))
                } else {
                    let text = line.strip_suffix(b"\r").unwrap_or(line);
                    // Blank lines (a torn line's remainder, keep-alives) are not commands.
                    (!text.iter().all(u8::is_ascii_whitespace)).then(|| Command::from_json(text))
                };
                line.clear();
                *overflow = false;
                result
            }
            Decoder::Cobs(s) => s.push(byte).map(|frame| match frame {
                Ok(payload) => Command::from_binary(&payload),
                Err(e) => Err(Rejected::new(
                    "?",
                    ErrorCode::Malformed,
                    format_args!("{e}"),
                )),
            }),
        }
    }
}

enum Output {
    Stdout(std::io::Stdout),
    Serial(Port),
}

struct Worker {
    settings: LinkSettings,
    shared: Arc<Shared>,
    controls: SyncSender<Control>,
    output: Option<Output>,
    next_open: Instant,
    backoff: Duration,
    decoder: Decoder,
    // The message being written and how far it got.
    wire: Wire,
    written: usize,
    sending: Sending,
    // The last write broke off mid-message: start the next with a terminator so the peer
    // discards the fragment.
    torn: bool,
    // Next sequence number to send, and alerts sent and not yet ACKed, oldest first.
    cursor: u64,
    in_flight: VecDeque<(u64, Instant)>,
    replies: VecDeque<Reply>,
    transfers: VecDeque<u64>,
    transfer: Option<Transfer>,
    threshold: f32,
}

impl Worker {
    fn new(settings: LinkSettings, shared: Arc<Shared>, controls: SyncSender<Control>) -> Worker {
        Worker {
            decoder: Decoder::new(settings.framing),
            threshold: settings.threshold,
            settings,
            shared,
            controls,
            output: None,
            next_open: Instant::now(),
            backoff: REOPEN_FIRST,
            wire: Wire::new(),
            written: 0,
            sending: Sending::Other,
            torn: false,
            cursor: 0,
            in_flight: VecDeque::new(),
            replies: VecDeque::new(),
            transfers: VecDeque::new(),
            transfer: None,
        }
    }

    fn run(mut self) {
        loop {
            if self.shared.stop.load(Ordering::Relaxed) && self.drained() {
                return;
            }
            self.ensure_open();
            let want_write = self.fill();
            let ready = self.wait(want_write);
            if ready.readable || ready.hangup {
                self.read();
            }
            if self.output.is_some() && (ready.writable || want_write) {
                self.write();
            }
            self.check_timeouts();
            if let Err(e) = self.shared.journal().sync_if_due() {
                log::error!("{e}");
            }
        }
    }

    /// Whether the thread may stop: nothing pending, or the drain deadline passed.
    fn drained(&self) -> bool {
        let deadline = *self
            .shared
            .drain_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let idle = self.wire.is_empty()
            && self.replies.is_empty()
            && self.shared.journal().unacked() == 0
            && self
                .shared
                .status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none();
        idle || deadline.is_none_or(|d| Instant::now() >= d)
    }

    fn ensure_open(&mut self) {
        if self.output.is_some() || Instant::now() < self.next_open {
            return;
        }
        let opened = match &self.settings.target {
            LinkTarget::Stdout => Ok(Output::Stdout(std::io::stdout())),
            LinkTarget::Serial { port, baud } => Port::open(port, *baud).map(Output::Serial),
        };
        match opened {
            Ok(out) => {
                if let LinkTarget::Serial { port, baud } = &self.settings.target {
                    log::info!("serial link open on {} at {baud} baud", port.display());
                }
                self.output = Some(out);
                self.backoff = REOPEN_FIRST;
                self.shared.counters.opens.fetch_add(1, Ordering::Relaxed);
                // A new connection: whatever was in flight may be lost, send it all again.
                self.cursor = 0;
                self.in_flight.clear();
                self.decoder = Decoder::new(self.settings.framing);
            }
            Err(e) => {
                if self.backoff == REOPEN_FIRST {
                    log::warn!("alert link: {e}; retrying with backoff");
                }
                self.next_open = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(REOPEN_MAX);
            }
        }
    }

    fn disconnect(&mut self, why: &str) {
        if self.output.take().is_some() {
            log::warn!("alert link lost ({why}); reopening");
        }
        if self.written > 0 {
            self.torn = true;
        }
        self.wire.clear();
        self.written = 0;
        self.next_open = Instant::now() + self.backoff;
    }

    fn wait(&mut self, want_write: bool) -> super::port::Ready {
        match &self.output {
            Some(Output::Serial(port)) => match port.poll(want_write, TURN) {
                Ok(r) => r,
                Err(e) => {
                    self.disconnect(&e.to_string());
                    Default::default()
                }
            },
            Some(Output::Stdout(_)) if want_write => super::port::Ready {
                writable: true,
                ..Default::default()
            },
            _ => {
                std::thread::sleep(TURN);
                Default::default()
            }
        }
    }

    fn read(&mut self) {
        let Some(Output::Serial(port)) = &mut self.output else {
            return;
        };
        let mut buf = [0u8; 256];
        let mut commands: heapless::Vec<Result<Command, Rejected>, 64> = heapless::Vec::new();
        let outcome = loop {
            match port.read(&mut buf) {
                Ok(Some(0)) => break Err("end of file".to_string()),
                Ok(Some(n)) => {
                    for &b in &buf[..n] {
                        if let Some(c) = self.decoder.push(b) {
                            // More than 64 commands in one read: the rest are dropped (a peer
                            // flooding the link); the ACKs among them come again with re-sends.
                            let _ = commands.push(c);
                        }
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e.to_string()),
            }
        };
        for c in commands {
            self.handle(c);
        }
        if let Err(why) = outcome {
            self.disconnect(&why);
        }
    }

    fn handle(&mut self, command: Result<Command, Rejected>) {
        let command = match command {
            Ok(Command::Ack { seq }) => {
                match self.shared.journal().ack(seq) {
                    Ok(true) => {
                        self.shared.counters.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(false) => {}
                    Err(e) => log::error!("{e}"),
                }
                return;
            }
            other => other,
        };
        let name = match &command {
            Ok(c) => c.name(),
            Err(r) => r.cmd,
        };
        // Replies carry the threshold in force.
        let outcome = match command {
            Err(rejected) => Err(rejected),
            Ok(c @ Command::SetThreshold { value }) => {
                let (lo, hi) = self.settings.threshold_range;
                if value.is_finite() && value >= lo && value <= hi {
                    self.forward(c, Control::SetThreshold(value)).map(|()| {
                        self.threshold = value;
                        value
                    })
                } else {
                    Err(Rejected::new(
                        c.name(),
                        ErrorCode::OutOfRange,
                        format_args!("threshold {value} outside {lo} to {hi}; unchanged"),
                    ))
                }
            }
            Ok(c @ Command::Pause) => self.forward(c, Control::Pause).map(|()| self.threshold),
            Ok(c @ Command::Resume) => self.forward(c, Control::Resume).map(|()| self.threshold),
            Ok(c @ Command::GetStatus) => {
                self.forward(c, Control::StatusNow).map(|()| self.threshold)
            }
            Ok(c @ Command::GetEvidence { seq }) => self.queue_evidence(c, seq),
            Ok(Command::Ack { .. }) => return,
        };
        let cmd = match &outcome {
            Err(r) => r.cmd,
            Ok(_) => name,
        };
        if outcome.is_err() {
            self.shared
                .counters
                .rejected
                .fetch_add(1, Ordering::Relaxed);
        }
        // A bounded backlog of replies: a flood of bad input cannot grow memory.
        if self.replies.len() < 32 {
            self.replies.push_back(Reply { cmd, outcome });
        }
    }

    fn forward(&self, c: Command, control: Control) -> Result<(), Rejected> {
        self.controls.try_send(control).map_err(|_| {
            Rejected::new(
                c.name(),
                ErrorCode::Busy,
                format_args!("the daemon is not taking commands now"),
            )
        })
    }

    fn queue_evidence(&mut self, c: Command, seq: u64) -> Result<f32, Rejected> {
        let Some(dir) = &self.settings.evidence_dir else {
            return Err(Rejected::new(
                c.name(),
                ErrorCode::NotFound,
                format_args!("this device keeps no evidence (no [evidence] in its config)"),
            ));
        };
        if !evidence_path(dir, seq, Part::Tile).exists() {
            return Err(Rejected::new(
                c.name(),
                ErrorCode::NotFound,
                format_args!("no evidence for alert {seq} (never kept, or evicted)"),
            ));
        }
        if self.transfers.len() >= EVIDENCE_QUEUE {
            return Err(Rejected::new(
                c.name(),
                ErrorCode::Busy,
                format_args!("{EVIDENCE_QUEUE} evidence transfers already queued"),
            ));
        }
        self.transfers.push_back(seq);
        Ok(self.threshold)
    }

    /// Puts the next message into `wire` if it is empty; returns whether there is one to write.
    fn fill(&mut self) -> bool {
        if !self.wire.is_empty() {
            return true;
        }
        if self.output.is_none() {
            return false;
        }
        let device = self.settings.device.clone();
        let now = SystemTime::now();
        if let Some(reply) = self.replies.pop_front() {
            let framed = self.frame(|f| match f {
                Framing::Json => reply.to_line(&device, now).map(Body::Line),
                Framing::Cobs => Ok(Body::Binary(reply.to_binary())),
            });
            return self.load(framed, Sending::Other);
        }
        let next = self.shared.journal().pending_from(self.cursor).cloned();
        if let Some(alert) = next {
            self.cursor = alert.seq + 1;
            let framed = self.frame(|f| match f {
                Framing::Json => alert.to_line().map(Body::Line),
                Framing::Cobs => Ok(Body::Binary(alert.to_binary())),
            });
            return self.load(framed, Sending::Alert(alert.seq));
        }
        let status = self
            .shared
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(status) = status {
            let framed = self.frame(|f| match f {
                Framing::Json => status.to_line().map(Body::Line),
                Framing::Cobs => Ok(Body::Binary(status.to_binary())),
            });
            return self.load(framed, Sending::Other);
        }
        if let Some(chunk) = self.next_chunk() {
            return self.load(Ok(chunk), Sending::Other);
        }
        false
    }

    fn frame(
        &self,
        body: impl FnOnce(Framing) -> Result<Body, super::message::LineTooLong>,
    ) -> Result<Wire, String> {
        let mut wire = Wire::new();
        fn full<E>(_: E) -> String {
            "message too long".to_string()
        }
        match body(self.settings.framing).map_err(|e| e.to_string())? {
            Body::Line(line) => {
                if self.torn {
                    wire.push(b'\n').map_err(full)?;
                }
                wire.extend_from_slice(line.as_bytes()).map_err(full)?;
                wire.push(b'\n').map_err(full)?;
            }
            Body::Binary(payload) => {
                if self.torn {
                    wire.push(0).map_err(full)?;
                }
                let frame = cobs::encode(&payload).map_err(|e| e.to_string())?;
                wire.extend_from_slice(&frame).map_err(full)?;
            }
        }
        Ok(wire)
    }

    fn load(&mut self, framed: Result<Wire, String>, sending: Sending) -> bool {
        match framed {
            Ok(wire) => {
                self.wire = wire;
                self.written = 0;
                self.sending = sending;
                self.torn = false;
                true
            }
            Err(e) => {
                log::error!("message not sent: {e}");
                if let Sending::Alert(seq) = sending {
                    // It can never be encoded: do not retry it forever.
                    let _ = self.shared.journal().ack(seq);
                }
                false
            }
        }
    }

    fn next_chunk(&mut self) -> Option<Wire> {
        if self.transfer.is_none() {
            let seq = self.transfers.pop_front()?;
            let dir = self.settings.evidence_dir.as_deref()?;
            let parts: Vec<(Part, Vec<u8>)> = [Part::Tile, Part::Heatmap]
                .into_iter()
                .filter_map(|p| {
                    std::fs::read(evidence_path(dir, seq, p))
                        .ok()
                        .map(|b| (p, b))
                })
                .collect();
            if parts.is_empty() {
                return None;
            }
            self.transfer = Some(Transfer {
                seq,
                parts,
                part: 0,
                chunk: 0,
            });
        }
        let t = self.transfer.as_mut()?;
        let (part, bytes) = &t.parts[t.part];
        let count = bytes.len().div_ceil(EVIDENCE_CHUNK).max(1);
        let start = t.chunk * EVIDENCE_CHUNK;
        let chunk = EvidenceChunk {
            seq: t.seq,
            part: *part,
            index: t.chunk as u16,
            count: count as u16,
            data: &bytes[start.min(bytes.len())..(start + EVIDENCE_CHUNK).min(bytes.len())],
        };
        let device = self.settings.device.clone();
        let body = match self.settings.framing {
            Framing::Json => chunk.to_line(&device, SystemTime::now()).map(Body::Line),
            Framing::Cobs => Ok(Body::Binary(chunk.to_binary())),
        };
        t.chunk += 1;
        if t.chunk >= count {
            t.chunk = 0;
            t.part += 1;
            if t.part >= t.parts.len() {
                self.transfer = None;
            }
        }
        self.frame(|_| body).ok()
    }

    fn write(&mut self) {
        if self.wire.is_empty() {
            return;
        }
        let result = match &mut self.output {
            Some(Output::Serial(port)) => port.write(&self.wire[self.written..]),
            Some(Output::Stdout(out)) => {
                let r = out
                    .write_all(&self.wire[self.written..])
                    .and_then(|()| out.flush());
                r.map(|()| Some(self.wire.len() - self.written))
            }
            None => return,
        };
        match result {
            Ok(Some(n)) => {
                self.written += n;
                if self.written >= self.wire.len() {
                    self.wire.clear();
                    self.written = 0;
                    self.sent();
                }
            }
            Ok(None) => {}
            Err(e) => self.disconnect(&e.to_string()),
        }
    }

    /// The message in `wire` has been written whole.
    fn sent(&mut self) {
        let Sending::Alert(seq) = self.sending else {
            return;
        };
        self.shared
            .counters
            .alerts_written
            .fetch_add(1, Ordering::Relaxed);
        if self.settings.require_ack {
            self.in_flight.push_back((seq, Instant::now()));
        } else if let Err(e) = self.shared.journal().ack(seq) {
            log::error!("{e}");
        }
    }

    /// Go-back-N: when the oldest unacknowledged alert waited too long, send all pending again.
    fn check_timeouts(&mut self) {
        if !self.settings.require_ack {
            return;
        }
        let journal = self.shared.journal();
        while let Some(&(seq, at)) = self.in_flight.front() {
            if !journal.is_pending(seq) {
                self.in_flight.pop_front();
            } else if at.elapsed() >= self.settings.ack_timeout {
                log::debug!("no ACK for alert {seq}: sending pending alerts again");
                self.in_flight.clear();
                self.cursor = 0;
                break;
            } else {
                break;
            }
        }
    }
}

// Short-lived, on the stack while one message is framed.
#[allow(clippy::large_enum_variant)]
enum Body {
    Line(super::message::Line),
    Binary(cobs::Payload),
}

#[cfg(test)]
mod tests {
    use super::*;
    use inspect_protocol::fixtures::id;
    use serialport::SerialPort;
    use std::io::Read;

    fn alert(frame: u64) -> Alert {
        inspect_protocol::fixtures::alert(0, frame)
    }

    fn settings(port: PathBuf, framing: Framing, require_ack: bool) -> LinkSettings {
        LinkSettings {
            target: LinkTarget::Serial { port, baud: 115200 },
            framing,
            require_ack,
            ack_timeout: Duration::from_millis(300),
            threshold: 1.0,
            threshold_range: (0.5, 2.0),
            device: id("bench"),
            evidence_dir: None,
        }
    }

    /// The peer's end of a pty: reads JSON lines, sends commands.
    struct Peer {
        master: serialport::TTYPort,
        buf: Vec<u8>,
    }

    impl Peer {
        fn lines_until(
            &mut self,
            done: impl Fn(&[serde_json::Value]) -> bool,
        ) -> Vec<serde_json::Value> {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut got = Vec::new();
            let mut chunk = [0u8; 512];
            while !done(&got) {
                assert!(Instant::now() < deadline, "timed out; got {got:?}");
                if let Ok(n) = self.master.read(&mut chunk) {
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = self.buf.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_slice(&line) {
                        got.push(v);
                    }
                }
            }
            got
        }

        fn send(&mut self, c: Command) {
            self.master.write_all(c.to_json().as_bytes()).unwrap();
            self.master.write_all(b"\n").unwrap();
        }
    }

    fn pair() -> (Peer, PathBuf, serialport::TTYPort) {
        let (mut master, slave) = serialport::TTYPort::pair().unwrap();
        master.set_timeout(Duration::from_millis(50)).unwrap();
        let path = PathBuf::from(slave.name().unwrap());
        (
            Peer {
                master,
                buf: Vec::new(),
            },
            path,
            slave,
        )
    }

    fn seqs(lines: &[serde_json::Value], kind: &str) -> Vec<u64> {
        lines
            .iter()
            .filter(|v| v["type"] == kind)
            .filter_map(|v| v["seq"].as_u64())
            .collect()
    }

    #[test]
    fn unacked_alerts_are_sent_again_until_acked() {
        let (mut peer, path, _slave) = pair();
        let link = AlertLink::start(
            settings(path, Framing::Json, true),
            Journal::in_memory(1 << 20),
        )
        .unwrap();
        for f in 0..5 {
            link.send_alert(&mut alert(f));
        }
        let first = peer.lines_until(|l| seqs(l, "alert").len() >= 5);
        assert_eq!(seqs(&first, "alert"), [0, 1, 2, 3, 4]);
        for seq in [0, 2, 4] {
            peer.send(Command::Ack { seq });
        }
        // After the timeout only the unacknowledged come again.
        let again = peer.lines_until(|l| seqs(l, "alert").len() >= 2);
        assert_eq!(seqs(&again, "alert")[..2], [1, 3]);
        for seq in [1, 3] {
            peer.send(Command::Ack { seq });
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while link.unacked() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(link.unacked(), 0);
        assert_eq!(link.counters().acked.load(Ordering::Relaxed), 5);
        assert_eq!(link.close(Duration::ZERO), 0);
    }

    #[test]
    fn commands_are_validated_answered_and_forwarded() {
        let (mut peer, path, _slave) = pair();
        let link = AlertLink::start(
            settings(path, Framing::Json, false),
            Journal::in_memory(1 << 20),
        )
        .unwrap();
        peer.send(Command::SetThreshold { value: 9.0 });
        peer.master
            .write_all(b"{\"type\":\"reboot\"}\nnot json\n\n")
            .unwrap();
        peer.send(Command::SetThreshold { value: 1.5 });
        peer.send(Command::Pause);
        peer.send(Command::GetEvidence { seq: 3 });
        let replies = peer.lines_until(|l| l.iter().filter(|v| v["type"] == "reply").count() >= 6);
        let r: Vec<(&str, bool, &str)> = replies
            .iter()
            .map(|v| {
                (
                    v["cmd"].as_str().unwrap(),
                    v["ok"].as_bool().unwrap(),
                    v["error"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            r,
            [
                ("set_threshold", false, "out_of_range"),
                ("?", false, "unknown_command"),
                ("?", false, "malformed"),
                ("set_threshold", true, ""),
                ("pause", true, ""),
                // No evidence store: a clear refusal.
                ("get_evidence", false, "not_found"),
            ]
        );
        assert_eq!(replies[3]["threshold"], 1.5);
        assert!(replies[0]["message"].as_str().unwrap().contains("0.5 to 2"));
        // Only the accepted commands reach the daemon, in order.
        let got: Vec<Control> = std::iter::from_fn(|| link.next_control()).collect();
        assert_eq!(got, [Control::SetThreshold(1.5), Control::Pause]);
        link.close(Duration::ZERO);
    }

    #[test]
    fn cobs_framing_carries_alerts_and_binary_acks() {
        let (mut peer, path, _slave) = pair();
        let link = AlertLink::start(
            settings(path, Framing::Cobs, true),
            Journal::in_memory(1 << 20),
        )
        .unwrap();
        for f in 0..3 {
            link.send_alert(&mut alert(10 + f));
        }
        let mut splitter = cobs::Splitter::new();
        let mut alerts = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut chunk = [0u8; 256];
        while alerts.len() < 3 {
            assert!(Instant::now() < deadline);
            let Ok(n) = peer.master.read(&mut chunk) else {
                continue;
            };
            for &b in &chunk[..n] {
                if let Some(Ok(payload)) = splitter.push(b) {
                    alerts.push(Alert::from_binary(&payload).unwrap());
                }
            }
        }
        assert_eq!(
            alerts.iter().map(|a| (a.seq, a.frame)).collect::<Vec<_>>(),
            [(0, 10), (1, 11), (2, 12)]
        );
        for a in &alerts {
            let frame = cobs::encode(&Command::Ack { seq: a.seq }.to_binary()).unwrap();
            peer.master.write_all(&frame).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while link.unacked() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(link.unacked(), 0);
        link.close(Duration::ZERO);
    }

    #[test]
    fn an_absent_port_costs_no_time_and_alerts_wait_bounded() {
        let link = AlertLink::start(
            settings(PathBuf::from("/nonexistent/tty"), Framing::Json, false),
            Journal::in_memory(8192),
        )
        .unwrap();
        let started = Instant::now();
        for f in 0..1000 {
            link.send_alert(&mut alert(f));
        }
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(link.next_seq(), 1000);
        assert!(link.dropped() > 0, "a bounded journal must evict");
        assert_eq!(link.dropped() + link.unacked(), 1000);
        let undelivered = link.close(Duration::from_millis(50));
        assert!(undelivered > 0);
    }
}
