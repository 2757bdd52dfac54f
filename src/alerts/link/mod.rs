//! The link thread: sends journalled alerts until the peer acknowledges them, answers the peer's
//! commands, and reopens a serial port that went away.
//!
//! Inference hands alerts to [`AlertLink::send_alert`], which journals them (see [`Journal`]) and
//! returns at once; the link thread sends them in sequence order. With `require_ack`, an alert
//! stays pending until the peer ACKs its sequence number: after `ack_timeout` without one, or
//! after the port is reopened, everything pending is sent again from the oldest (duplicates on
//! the wire are expected; the peer deduplicates by `seq`). Without ACKs, an alert is delivered
//! once written. Replies go first, then alerts, then the latest status, then evidence chunks.

//!
//! The parts: this module is the daemon's handle ([`AlertLink`]) and what it shares with the
//! thread; `worker` runs the thread (port lifecycle, what to send next, writing, re-sends);
//! `commands` answers the peer; `transfer` reads evidence files and cuts them into chunks. Every
//! message is framed and every command deframed by `inspect_protocol::wire`, the codec
//! inspect-monitor uses too.

mod commands;
#[cfg(test)]
mod tests;
mod transfer;
mod worker;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::journal::{Journal, PeerThreshold};
use super::message::{Alert, DeviceId, Status};
use super::Framing;
use inspect_protocol::signing::LinkKey;
use worker::Worker;

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
    /// The link key: sign what is sent, accept only signed, fresh commands.
    pub key: Option<LinkKey>,
    /// This link's id in signatures.
    pub link_id: u8,
    /// This start's boot id: carried by every alert and status, and by the peer's ACKs.
    pub boot: u64,
}

/// A fresh boot id: 64 random bits (never 0, which stands for "unknown" on the wire), so an ACK
/// meant for another start of the device, or another device, is refused.
pub fn new_boot_id() -> u64 {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    let id = match random {
        Ok(()) => u64::from_le_bytes(bytes),
        // No urandom (not Linux): the clock's nanoseconds and the process id, unique enough
        // between two starts of one device.
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nanos ^ (u64::from(std::process::id()) << 40)
        }
    };
    id.max(1)
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
    /// Commands refused without an answer: unsigned (with a key configured).
    pub refused_unsigned: AtomicU64,
    /// Commands refused: bad signature tag (forged, or another key) or unreadable signature.
    pub refused_forged: AtomicU64,
    /// Commands refused: counter not newer than the last accepted (replayed or stale).
    pub refused_stale: AtomicU64,
    /// Frames that failed COBS decoding or their CRC (noise), not answered.
    pub garbled: AtomicU64,
    /// ACKs for alerts this connection did not carry (not delivered by it), or carrying
    /// another boot id: ignored.
    pub acks_refused: AtomicU64,
    /// Replies not sent: error replies past the rate limit, or a full reply queue.
    pub replies_suppressed: AtomicU64,
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
    boot: u64,
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
        let boot = settings.boot;
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("alert-link".into())
                .spawn(move || Worker::new(settings, shared, tx).run())
                .map_err(LinkError::Spawn)?
        };
        Ok(AlertLink {
            boot,
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

    /// This start's boot id.
    pub fn boot(&self) -> u64 {
        self.boot
    }

    /// Journals a threshold the peer set, for the next start.
    pub fn record_threshold(&self, threshold: PeerThreshold) {
        if let Err(e) = self.shared.journal().record_threshold(threshold) {
            log::error!("the new threshold is in force but not journalled: {e}");
        }
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

    /// Commands refused by their signature or by the connection (unsigned, forged, replayed,
    /// ACKs of alerts not sent on it).
    pub fn refused_commands(&self) -> u64 {
        let c = &self.shared.counters;
        [
            &c.refused_unsigned,
            &c.refused_forged,
            &c.refused_stale,
            &c.acks_refused,
        ]
        .iter()
        .map(|n| n.load(Ordering::Relaxed))
        .sum()
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
        if let Err(e) = self.shared.journal().close() {
            log::error!("{e}");
        }
        let c = &self.shared.counters;
        let count = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let refused = [
            &c.refused_unsigned,
            &c.refused_forged,
            &c.refused_stale,
            &c.garbled,
        ];
        if refused.iter().any(|n| count(n) > 0) {
            log::warn!(
                "link: refused {} unsigned, {} forged and {} replayed or stale commands; {} \
                 garbled frames",
                count(&c.refused_unsigned),
                count(&c.refused_forged),
                count(&c.refused_stale),
                count(&c.garbled)
            );
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
