//! The link thread's loop: open the port (with backoff), read commands, pick the next message
//! (replies, then alerts in sequence order, then the latest status, then evidence), write it
//! without blocking, and send again what the peer did not acknowledge in time.

use std::collections::{BTreeSet, VecDeque};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use inspect_protocol::signing::{counter_at, Direction, SignatureError, Signer, Verifier};
use inspect_protocol::wire::{Deframer, EncodeError, Wire};
use inspect_protocol::DeviceMessage;

use super::super::command::{Command, Rejected, Reply};
use super::super::port::{Port, Ready};
use super::transfer::Transfer;
use super::{Control, LinkSettings, LinkTarget, Shared};
use crate::backoff::Backoff;

/// How long the link thread waits on the port per turn (bounds the latency of a new alert).
const TURN: Duration = Duration::from_millis(10);
/// Error replies per second at most (a peer sending garbage gets this many answers).
const ERROR_REPLIES_PER_S: f64 = 5.0;
/// Error replies that may go out at once.
const ERROR_REPLY_BURST: f64 = 10.0;
/// First and longest pause between attempts to reopen a port.
const REOPEN_FIRST: Duration = Duration::from_millis(250);
const REOPEN_MAX: Duration = Duration::from_secs(8);

/// What the bytes being written are, so completion can be accounted.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Sending {
    Alert(u64),
    Other,
}

enum Output {
    Stdout(std::io::Stdout),
    Serial(Port),
}

pub(super) struct Worker {
    pub(super) settings: LinkSettings,
    pub(super) shared: Arc<Shared>,
    pub(super) controls: SyncSender<Control>,
    output: Option<Output>,
    next_open: Instant,
    backoff: Backoff,
    deframer: Deframer,
    // With a link key: signs what is sent, checks what is received.
    pub(super) signer: Option<Signer>,
    verifier: Option<Verifier>,
    // The message being written and how far it got.
    wire: Wire,
    written: usize,
    sending: Sending,
    // The last write broke off mid-message: start the next with a terminator so the peer
    // discards the fragment.
    pub(super) torn: bool,
    // Next sequence number to send, and alerts sent and not yet ACKed, oldest first.
    cursor: u64,
    in_flight: VecDeque<(u64, Instant)>,
    // Alerts written whole on this connection: only these may be acknowledged.
    pub(super) sent_here: BTreeSet<u64>,
    // Replies and alerts take turns; true when a reply may go next.
    reply_turn: bool,
    // Error replies allowed now (refilled at ERROR_REPLIES_PER_S up to ERROR_REPLY_BURST).
    pub(super) error_tokens: f64,
    error_tokens_at: Instant,
    pub(super) replies: VecDeque<Reply>,
    pub(super) transfers: VecDeque<u64>,
    pub(super) transfer: Option<Transfer>,
    pub(super) threshold: f32,
}

impl Worker {
    pub(super) fn new(
        settings: LinkSettings,
        shared: Arc<Shared>,
        controls: SyncSender<Control>,
    ) -> Worker {
        let signer = settings
            .key
            .clone()
            .map(|key| Signer::new(key, settings.link_id, Direction::FromDevice));
        // Commands signed more than a minute before the start are refused: a restart does not
        // reopen the past to replays.
        let floor = counter_at(SystemTime::now()).saturating_sub(60 * 100_000);
        let verifier = settings
            .key
            .clone()
            .map(|key| Verifier::new(key, Direction::ToDevice, floor));
        Worker {
            deframer: Deframer::new(settings.framing),
            signer,
            verifier,
            threshold: settings.threshold,
            settings,
            shared,
            controls,
            output: None,
            next_open: Instant::now(),
            backoff: Backoff::new(REOPEN_FIRST, REOPEN_MAX),
            wire: Wire::new(),
            written: 0,
            sending: Sending::Other,
            torn: false,
            cursor: 0,
            in_flight: VecDeque::new(),
            sent_here: BTreeSet::new(),
            reply_turn: true,
            error_tokens: ERROR_REPLY_BURST,
            error_tokens_at: Instant::now(),
            replies: VecDeque::new(),
            transfers: VecDeque::new(),
            transfer: None,
        }
    }

    pub(super) fn run(mut self) {
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
                self.backoff.reset();
                self.shared.counters.opens.fetch_add(1, Ordering::Relaxed);
                // A new connection: whatever was in flight may be lost, send it all again.
                self.cursor = 0;
                self.in_flight.clear();
                self.sent_here.clear();
                self.deframer = Deframer::new(self.settings.framing);
            }
            Err(e) => {
                if self.backoff.is_fresh() {
                    log::warn!("alert link: {e}; retrying with backoff");
                }
                self.next_open = Instant::now() + self.backoff.failed();
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
        self.next_open = Instant::now() + self.backoff.current();
    }

    fn wait(&mut self, want_write: bool) -> Ready {
        match &self.output {
            Some(Output::Serial(port)) => match port.poll(want_write, TURN) {
                Ok(r) => r,
                Err(e) => {
                    self.disconnect(&e.to_string());
                    Default::default()
                }
            },
            Some(Output::Stdout(_)) if want_write => Ready {
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
        let mut buf = [0u8; 256];
        let outcome = loop {
            let Some(Output::Serial(port)) = &mut self.output else {
                return;
            };
            match port.read(&mut buf) {
                Ok(Some(0)) => break Err("end of file".to_string()),
                // Every command is handled as it arrives: none is dropped, however many come.
                Ok(Some(n)) => buf[..n].iter().for_each(|&b| self.receive(b)),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e.to_string()),
            }
        };
        if let Err(why) = outcome {
            self.disconnect(&why);
        }
    }

    /// Whether an error reply may go out now (rate-limited: garbage earns few answers).
    pub(super) fn error_reply_allowed(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.error_tokens_at).as_secs_f64() * ERROR_REPLIES_PER_S;
        self.error_tokens = (self.error_tokens + refill).min(ERROR_REPLY_BURST);
        self.error_tokens_at = now;
        if self.error_tokens >= 1.0 {
            self.error_tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Feeds one received byte; handles the command it completes. Frames that fail COBS or CRC,
    /// or (with a key) their signature, are counted and not answered.
    fn receive(&mut self, byte: u8) {
        use inspect_protocol::wire::DeframeError;
        let counters = &self.shared.counters;
        let command = match self.deframer.push(byte) {
            None => return,
            Some(Err(DeframeError::Frame(_))) => {
                counters.garbled.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Some(Err(e)) => Err(Rejected::from(e)),
            Some(Ok(unframed)) => match &mut self.verifier {
                None => Command::decode(unframed),
                Some(verifier) => match verifier.verify(unframed) {
                    Ok(plain) => Command::decode(plain),
                    Err(e) => {
                        let counter = match e {
                            SignatureError::Unsigned => &counters.refused_unsigned,
                            SignatureError::Stale { .. } => &counters.refused_stale,
                            SignatureError::BadTag | SignatureError::Malformed => {
                                &counters.refused_forged
                            }
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        log::debug!("command refused: {e}");
                        return;
                    }
                },
            },
        };
        self.handle(command);
    }

    /// Puts the next message into `wire` if it is empty; returns whether there is one to write.
    fn fill(&mut self) -> bool {
        if !self.wire.is_empty() {
            return true;
        }
        if self.output.is_none() {
            return false;
        }
        let next = self.shared.journal().sendable_from(self.cursor).cloned();
        // Replies and alerts take turns: a flood of commands cannot hold alerts back.
        if !self.replies.is_empty() && (self.reply_turn || next.is_none()) {
            if let Some(reply) = self.replies.pop_front() {
                self.reply_turn = false;
                let framed = self.encode(&DeviceMessage::Reply(reply));
                return self.load(framed, Sending::Other);
            }
        }
        if let Some(alert) = next {
            self.reply_turn = true;
            self.cursor = alert.seq + 1;
            let seq = alert.seq;
            let framed = self.encode(&DeviceMessage::Alert(alert));
            return self.load(framed, Sending::Alert(seq));
        }
        let status = self
            .shared
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(status) = status {
            let framed = self.encode(&DeviceMessage::Status(status));
            return self.load(framed, Sending::Other);
        }
        if let Some(framed) = self.next_chunk() {
            return self.load(framed, Sending::Other);
        }
        false
    }

    fn encode(&mut self, message: &DeviceMessage<'_>) -> Result<Wire, EncodeError> {
        encode(&self.settings, self.signer.as_mut(), self.torn, message)
    }

    fn load(&mut self, framed: Result<Wire, EncodeError>, sending: Sending) -> bool {
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
        self.sent_here.insert(seq);
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

/// `message` framed for the link; after a terminator when the last write broke off (`torn`), so
/// the peer drops the fragment instead of joining it to this message.
pub(super) fn encode(
    settings: &LinkSettings,
    signer: Option<&mut Signer>,
    torn: bool,
    message: &DeviceMessage<'_>,
) -> Result<Wire, EncodeError> {
    let (framing, device, now) = (settings.framing, &settings.device, SystemTime::now());
    match signer {
        Some(signer) => message.encode_signed(framing, device, now, torn, signer),
        None => message.encode(framing, device, now, torn),
    }
}
